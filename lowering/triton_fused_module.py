"""The host side of the fused path: launch configurations, resource checks, autotuning, the launcher.

Everything here is emitted into the generated module (which needs only torch and triton): :data:`FUSED_HOST`
is its fixed part, :func:`fused_module` assembles the whole module around the kernel of
:func:`~lowering.triton_fused.generate`.
"""

from __future__ import annotations

from einattn.ir import Program

from .triton_fused import (
    WIDE,
    FusedKernel,
    FusedPlan,
    Refusal,
    Unsupported,
    block_name,
    full_name,
    generate,
    match,
)
from .triton_split import split_contractions

FUSED_HOST = '''\
# Launch configurations of the fused kernel: rows per program (BLOCK_{ROW}), warps and pipeline stages. On a
# GPU the ones that fit the device (by _footprint) are timed once per spec, size bucket, dtype and device;
# under the interpreter one small configuration is used.
CONFIGS = [  # (ordered by an H200's timings, docs/benchmarks.md: the first ones win most often)
    dict(BLOCK_{ROW}=64, num_warps=4, num_stages=3),
    dict(BLOCK_{ROW}=128, num_warps=8, num_stages=3),
    dict(BLOCK_{ROW}=128, num_warps=4, num_stages=3),  # spills at head dim 128, sm_90 (test_triton_aot)
    dict(BLOCK_{ROW}=64, num_warps=4, num_stages=2),  # sliding window, head dim 64: 1.12x 64/4w/3s
    dict(BLOCK_{ROW}=64, num_warps=4, num_stages=4),
    dict(BLOCK_{ROW}=128, num_warps=8, num_stages=2),
    dict(BLOCK_{ROW}=64, num_warps=8, num_stages=2),
    dict(BLOCK_{ROW}=64, num_warps=4, num_stages=1),  # large float32 tiles: no room for a second stage
]
INTERPRET_CONFIGS = [dict(BLOCK_{ROW}=16, num_warps=4, num_stages=2)]
_TUNED = {{}}


def _pad(n):
    """A feature or tile extent padded to a power of two, at least 16 (tl.dot's smallest)."""
    return max(16, triton.next_power_of_2(int(n)))


def _footprint(cfg, shape, elem):
    """(shared memory bytes, 32-bit registers per thread) of one program: the tiles loaded per step times the
    pipeline stages plus the loop-invariant tiles, times the element size; the running state and the largest
    per-tile values (float32) spread over the program's threads."""
{FOOTPRINT}


def _limits(device):
    if device.type != "cuda":
        return None
    props = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
    return props["max_shared_mem"], 255


MAX_NUMEL = 1 << 20  # Triton's largest tensor (TRITON_MAX_TENSOR_NUMEL)


def _largest_tile(cfg, shape):
    """Elements of the largest two-dimensional tile the kernel makes (rows x keys, keys x features...)."""
    items = list(cfg.items()) + list(shape.items())
    dims = sorted((v for k, v in items if k.startswith(("BLOCK_", "PAD_"))), reverse=True)
    return dims[0] * dims[1] if len(dims) > 1 else (dims[0] if dims else 1)


def fitting_configs(shape, dtype, device, limits=None):
    """The configurations whose footprint fits the device (or ``limits``: shared memory bytes, registers per
    thread); a ValueError naming the smallest footprint if none does."""
    every = INTERPRET_CONFIGS if INTERPRET else CONFIGS
    configs = [c for c in every if _largest_tile(c, shape) <= MAX_NUMEL]
    if not configs:
        raise ValueError(
            f"no launch configuration fits: a tile of {{_largest_tile(CONFIGS[0], shape)}} elements exceeds "
            f"Triton's limit of {{MAX_NUMEL}} per tensor (tiles {{shape}}): lower the tile param or the head "
            f"dimension"
        )
    limits = limits or _limits(device)
    if limits is None:
        return list(configs)
    elem = torch.empty((), dtype=dtype).element_size()
    fits = []
    for cfg in configs:
        smem, regs = _footprint(cfg, shape, elem)
        if smem <= limits[0] and regs <= limits[1]:
            fits.append(cfg)
    if not fits:
        need = min((_footprint(c, shape, elem) for c in configs), key=lambda f: f[0])
        raise ValueError(
            f"no launch configuration fits the device: the smallest needs {{need[0]}} bytes of shared "
            f"memory and about {{need[1]}} registers per thread "
            f"(limits {{limits[0] if limits[0] < 1 << 30 else 'none'}} "
            f"and {{limits[1] if limits[1] < 1 << 30 else 'none'}}); "
            f"tiles {{shape}}, {{dtype}}: lower the tile param or the head dimension"
        )
    return fits


def _wide_offsets(*xs):
    """Whether some tensor's largest offset is 2**31 elements or more: then the kernel's tile offsets are
    int64 (the compile-time flag WIDE), which int32 products of a coordinate and a stride would wrap."""
    return any(sum((n - 1) * abs(s) for n, s in zip(x.shape, x.stride())) >= 2**31 for x in xs if x.numel())


def _bucket(n):
    return triton.next_power_of_2(max(int(n), 1))


def _config(launch, sizes, shape, dtype, device):
    """The launch configuration: fixed under the interpreter, else the fastest fitting one (cached)."""
    key = (tuple(_bucket(n) for n in sizes), tuple(sorted(shape.items())), str(dtype), str(device))
    if key not in _TUNED:
        fits = fitting_configs(shape, dtype, device)
        if len(fits) == 1 or INTERPRET:
            _TUNED[key] = fits[0]
        else:
            # (the median: one slow repetition of a kernel of a few microseconds skews a mean)
            bench = triton.testing.do_bench
            times = [bench(lambda c=c: launch(c), warmup=3, rep=10, return_mode="median") for c in fits]
            _TUNED[key] = fits[min(range(len(fits)), key=times.__getitem__)]
    return _TUNED[key]


def _up(x):
    return x.float() if x.dtype == torch.bfloat16 else x


def _as(x, dtype):
    """A float input in the outputs' dtype: tl.dot multiplies operands of one dtype, and a float32 key
    rounded to a float16 query's dtype (or float64 values to float32) would lose what the output keeps."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def _dot_precision(dtype):
    """tl.dot's input precision: exact products ("ieee", no TF32) for float32 and float64 inputs; for 16-bit
    inputs the products are exact anyway and Triton's default applies."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"
'''


def fused_symbols(plan: FusedPlan) -> list[tuple[str, str]]:
    from .triton_module import decl

    prog = plan.prog
    syms = [(decl(prog, n), "input") for n in prog.inputs]
    syms += [(decl(prog, n), "output") for n in prog.outputs]
    R, C = block_name(plan, plan.row), block_name(plan, plan.col)
    syms += [
        (", ".join(f"i_{x}" for x in plan.par) or "-", "this program's parallel coordinates"),
        (f"offs_{plan.row}, lane_{plan.row}", f"this program's {R} rows of `{plan.row}`, and which exist"),
        (
            f"offs_{plan.col}, lane_{plan.col}",
            f"the lanes of one tile of `{plan.parent}` ({C} >= M0), and which exist",
        ),
        (f"{plan.it}, lo, hi", "the tile being visited, and the range of tiles visited"),
    ]
    for f in plan.feats:
        syms.append(
            (f"offs_{f}, lane_{f}", f"feature rank `{f}` padded to PAD_{f.upper()}, and which lanes exist")
        )
    for s in plan.states:
        syms.append((f"{s}, {s}_next", "running state (registers) before and after the current tile"))
    for e in plan.body:
        if e.kind == "plain":
            syms.append((e.tensor, "a per-tile value (registers)"))
    for e in plan.prologue + plan.epilogue:
        syms.append((e.tensor, "computed once per program (registers)"))
    if plan.inlined:
        syms.append((", ".join(plan.inlined), "re-indexed inputs: loaded where they are read"))
    syms += [
        ("X_ok", "where X is present (only for values that can hold absent points)"),
        ("t_X", "tensor X of the spec (only the launcher's parameters are the spec's names)"),
        ("size_x", "the size of rank x: a runtime argument, never part of the source"),
        ("T_ptr, T_stride<k>", "tensor T's base pointer and the stride of its dimension k (any layout)"),
        ("CD, DOT", "compute dtype (float32; float64 for float64 inputs) and tl.dot precision"),
        (WIDE, "compile time: some tensor spans 2**31 elements or more (int64 offsets: _wide)"),
        (f"{R}, {C}, " + ", ".join(f"PAD_{f.upper()}" for f in plan.feats), "compile-time tile extents"),
        (", ".join(full_name(f) for f in plan.feats) or "-", "compile time: the feature rank is not padded"),
    ]
    return syms


def fused_module(
    prog: Program,
    options: dict,
    name: str,
    floor: frozenset[str] = frozenset(),
    public: Program | None = None,
) -> tuple[str, FusedPlan] | Refusal:
    """The whole standalone module of the fused path, or why the program does not fit it. ``floor``: the
    running maxes stored at least the dtype's lowest value (``einattn.stabilizers.lowest``; the rewrite's
    form: ``floored``).
    ``public``: ``prog`` with the spec's tensor names (``prog`` names tensor ``X`` ``t_X``, see
    ``triton_backend.build``): the launcher's parameters, its docstring and the tables use them."""
    public = public if public is not None else prog
    from . import triton_module as M

    prog = split_contractions(prog)  # (causal linear attention's three-factor sums: two statements)
    plan = match(prog)
    if isinstance(plan, Refusal):
        return plan
    plan.skip_tiles = bool(options.get("skip_tiles", True))
    plan.floored = floor & set(plan.states)
    try:
        k = generate(plan, f"{name}_kernel")
    except Unsupported as e:
        return Refusal(str(e))
    R = block_name(plan, plan.row)
    out = [M.header(prog, options, "fused (" + plan.describe() + ")", fused_symbols(plan), name, public)]
    out.append(M.tables(public, empty_ok=False, float32=options.get("float32", ())))
    host = FUSED_HOST.replace("{ROW}", plan.row.upper()).replace("{FOOTPRINT}", k.footprint)
    host = host.replace("{{", "{").replace("}}", "}")
    out.append(host)
    out.append("\n" + M.helpers())
    out.append("\n" + k.source)
    out.append("\n" + M.HOST_HELPERS)
    out.append("\n" + _launcher(prog, plan, k, name, R, public, tuple(options.get("float32", ()))))
    return "\n".join(out), plan


def _launcher(
    prog: Program, plan: FusedPlan, k: FusedKernel, name: str, R: str, public: Program, float32=()
) -> str:
    from . import triton_module as M

    ind = "    "
    inputs = M.inputs_by_name(prog, public)
    shape = [f"{block_name(plan, plan.col)}=_pad(sizes[{plan.col!r}])"]
    shape += [f"{block_name(plan, f)}=_pad(sizes[{f!r}])" for f in plan.feats]
    shape += [f"{full_name(f)}=_pad(sizes[{f!r}]) == sizes[{f!r}]" for f in plan.feats]
    for flag, (code, rank, coords) in plan.proved.items():  # monotone in each coordinate: the box's corners
        loops = " ".join(f"for c_{x} in {{0, max(sizes[{x!r}] - 1, 0)}}" for x in coords)
        check = f"0 <= {code} < sizes[{rank!r}]"
        shape.append(f"{flag}=all({check} {loops})" if loops else f"{flag}=({check})")
    lines = [
        "def tile_shape(sizes):",
        f'{ind}"""Compile-time extents: the tile and the feature ranks, padded to powers of two >= 16, and'
        f' whether\n{ind}each feature rank fills its padded extent."""',
        f"{ind}return dict({', '.join(shape)})",
        "",
        "",
    ]
    wrapper, launch = M.public_launcher(public, name)
    lines += [*wrapper, f"def {launch}({', '.join(prog.inputs)}):"]
    lines += [ind + ln for ln in M.size_lines(prog, inputs)]
    lines.append(f"{ind}out_dtype = _float_dtype({inputs})")
    lines.append(
        f"{ind}if INTERPRET and out_dtype == torch.bfloat16:  # the interpreter has no bfloat16 arithmetic"
    )
    up = ", ".join(f"_up({n})" for n in prog.inputs)
    wide = set(float32)
    public_in = dict(zip(prog.inputs, public.inputs))
    public_out = dict(zip(prog.outputs, public.outputs))
    kept = [o for o in prog.outputs if public_out[o] in wide]  # (not rounded back to bfloat16)
    if len(prog.outputs) == 1:
        back = "" if kept else ".to(torch.bfloat16)"
        lines.append(f"{ind * 2}return {launch}({up}){back}")
    else:
        flags = tuple(o not in kept for o in prog.outputs)
        back = f"zip({launch}({up}), {flags!r})"
        lines.append(f"{ind * 2}return tuple(o.to(torch.bfloat16) if b else o for o, b in {back})")
    plain = [n for n in prog.inputs if public_in[n] not in wide]
    if plain:
        names = ", ".join(plain)
        lines.append(f"{ind}{names}, = (_as(x, out_dtype) for x in ({names},))  # one float dtype for tl.dot")
    for n in prog.inputs:  # (statistics read elementwise, never by tl.dot: kept in float32 at least)
        if public_in[n] in wide:
            lines.append(f"{ind}{n} = _as({n}, torch.promote_types(out_dtype, torch.float32))")
    lines.append(f"{ind}CD, _ = _compute(out_dtype)")
    lines.append(f"{ind}device = {prog.inputs[0]}.device")
    for o in prog.outputs:
        t = prog.tensor(o)
        dims = ", ".join(f"size_{r}" for r in t.ranks) + ("," if len(t.ranks) == 1 else "")
        dtype = "torch.promote_types(out_dtype, torch.float32)" if o in kept else "out_dtype"
        lines.append(f"{ind}{o} = torch.empty(({dims}), device=device, dtype={dtype})")
    tensors = ", ".join([*prog.inputs, *prog.outputs])
    lines.append(f"{ind}shape = dict(tile_shape(sizes), {WIDE}=_wide_offsets({tensors}))")
    lines.append(f"{ind}args = ({', '.join(k.params)},)")
    n_par = " * ".join(f"size_{x}" for x in plan.par) or "1"
    lines.append("")
    lines.append(f"{ind}def launch(cfg):")
    lines.append(f"{ind * 2}n = triton.cdiv(size_{plan.row}, cfg[{R!r}]) * {n_par}")
    lines.append(f"{ind * 2}if n > 0:")
    # (fused multiply-adds asked for: Triton 3.9 warns that its default will be off from 3.10)
    lines.append(
        f"{ind * 3}{k.name}[(n,)](*args, CD=CD, DOT=_dot_precision(out_dtype), **shape, **cfg, "
        "enable_fp_fusion=True)"
    )
    lines.append("")
    seq = f"(size_{plan.row}, size_{plan.parent})"
    lines.append(f"{ind}launch(_config(launch, {seq}, shape, out_dtype, device))")
    lines.append(f"{ind}return {', '.join(prog.outputs)}")
    return "\n".join(lines) + "\n"
