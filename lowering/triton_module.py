"""Assembling a complete, standalone Python module around the generated Triton kernels.

The module needs only torch and triton. It holds, in this order: a header docstring naming the spec, the
options and every symbol; the tables the host code reads (inputs, params, partitions, launch configurations);
the Triton helpers; the kernels; the host helpers (size binding, dtypes, launching); and the launcher
``def <name>(<inputs in declaration order>)``, one launch per Einsum with the Einsum as a comment above it.
The einattn ``triton`` backend loads exactly this module, and ``einattn compile --backend triton`` writes it.
"""

from __future__ import annotations

import keyword

from einattn.ir import Program

from .triton_expr import HELPERS

HOST_HELPERS = '''\
def _numbers(*xs):
    """The inputs with a Python number for a scalar input made a 0-d tensor: of the float tensors' dtype
    and device (as torch promotes Python scalars), an integer one for a `: int` input; and a `: int` tensor
    of another integer dtype than int32 and int64 (int8, uint8, int16, bool...) widened to int64: the kernels
    compute indices and filters in the loaded dtype, where `idx[m] + 100` of an int8 table wrapped."""
    tensors = [x for x in xs if isinstance(x, torch.Tensor)]
    floats = [x.dtype for x in tensors if x.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floats) if floats else torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    out = []
    for name, x in zip(INPUTS, xs):
        if isinstance(x, (int, float)) and not isinstance(x, bool) and not INPUTS[name]:
            x = torch.tensor(x, device=device, dtype=None if name in INT_INPUTS else dtype)
        narrow = isinstance(x, torch.Tensor) and x.dtype not in (torch.int32, torch.int64)
        if name in INT_INPUTS and narrow and not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.int64)
        out.append(x)
    return out


class _ForwardOnly(torch.autograd.Function):
    """A call that records a gradient: the outputs of the forward kernels, whose backward raises. This module
    has no backward kernels; an error there beats inputs silently left without a gradient."""

    @staticmethod
    def forward(ctx, launch, *xs):
        return launch(*xs)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{SPEC}: this standalone module has forward kernels only, no backward. To train, call the "
            "kernel of einattn.compile(spec, backend='triton') (its backward runs generated backward "
            "kernels, or recomputes with the torch backend) or the module that `einattn compile --backend "
            "torch` writes"
        )


def _forward(launch, xs):
    """``launch(*xs)``, the outputs tied to the inputs by _ForwardOnly where a gradient is recorded."""
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs):
        return _ForwardOnly.apply(launch, *xs)
    return launch(*xs)


def _sizes(inputs):
    """Rank sizes from the inputs' shapes, the params and the partitions; a mismatch is a ValueError, as
    are a value that is not a tensor and a tensor of the wrong kind (integer for float, or the reverse)."""
    sizes, origin = {}, {}
    for name, ranks in INPUTS.items():
        x = inputs[name]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"input {name} must be a torch tensor, got {type(x).__name__}")
        if name in INT_INPUTS and (x.is_floating_point() or x.is_complex()):
            raise ValueError(f"input {name} is declared `: int` but was given {x.dtype} values")
        if name not in INT_INPUTS and not x.is_floating_point():
            raise ValueError(f"input {name} must be a floating-point tensor, got {x.dtype}")
        if x.dim() != len(ranks):
            raise ValueError(
                f"input {name} is declared [{', '.join(ranks)}] ({len(ranks)} dimensions) "
                f"but was given shape {tuple(x.shape)}"
            )
        for k, r in enumerate(ranks):
            n = x.shape[k]
            if r in sizes and sizes[r] != n:
                raise ValueError(f"rank {r} has size {sizes[r]} in {origin[r]} but {n} in {name} (dim {k})")
            sizes[r], origin[r] = n, f"{name} (dimension {k})"
    for r, value in RANK_PARAMS.items():
        if r in sizes and sizes[r] != value:
            raise ValueError(f"rank {r} has size {sizes[r]} in {origin[r]} but the param says {value}")
        sizes[r] = value
    for parent, outer, inner, tiled, value in PARTITIONS:
        if tiled == "inner":
            sizes[inner], sizes[outer] = value, -(-sizes[parent] // value)
        else:
            sizes[outer], sizes[inner] = value, -(-sizes[parent] // value)
    for s, t in ALIASES:
        if s in sizes and sizes[s] != sizes[t]:
            where = origin.get(s, "a param or a partition")
            raise ValueError(f"rank {s} has size {sizes[s]} in {where} but `{s} = {t}` makes it {sizes[t]}")
        sizes[s] = sizes[t]
    if not EMPTY_RANKS and 0 in sizes.values():
        empty = ", ".join(r for r, n in sizes.items() if n == 0)
        raise ValueError(
            f"rank {empty} has size 0: this module's kernels stream over tiles and cannot compute it; "
            "einattn.compile(spec, backend='triton') runs such a call on the spec as written"
        )
    return sizes


def output_shapes(sizes):
    """The shape of each output, in `output` order."""
    return [tuple(sizes[r] + (k == it) for k, r in enumerate(ranks)) for ranks, it in OUTPUTS.values()]


def _float_dtype(inputs):
    """The dtype of the outputs: the float inputs' common dtype (float32 without float inputs); the inputs
    kept in float32 (FLOAT32: row statistics between kernels) do not count."""
    dtype = None
    for kept in (False, True):  # (the statistics decide only for a kernel that reads nothing else)
        for name in INPUTS:
            x = inputs[name]
            if name in INT_INPUTS or (name in FLOAT32) != kept:
                continue
            dtype = x.dtype if dtype is None else torch.promote_types(dtype, x.dtype)
        if dtype is not None:
            break
    return dtype if dtype is not None and dtype.is_floating_point else torch.float32


def _compute(dtype):
    """(Triton compute dtype, torch dtype of intermediates): float64 for float64, else float32."""
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)
'''

GENERAL_LAUNCH = '''\
def _launch(kernel, n, cd, *args):
    """One general-path kernel over n flattened output points (nothing to do for n = 0)."""
    if n == 0:
        return
    cfg = GENERAL_CONFIG
    # (fused multiply-adds asked for: Triton 3.9 warns that its default will be off from 3.10)
    kernel[(triton.cdiv(n, cfg["BLOCK_O"]),)](*args, CD=cd, **cfg, enable_fp_fusion=True)
'''


# Names the generated module defines or imports at its top level, besides those beginning with `_` and the
# kernels' and launchers' (`<name>_kernel`, `t_X_kernel`, `<name>_launch`): a launcher named so would replace
# one of them (`torch.ein` would define `def torch(...)` in a module that calls `torch.empty`).
# tests/test_triton_module.py checks the list against generated modules.
MODULE_GLOBALS = frozenset(
    {
        *("ALIASES", "CONFIGS", "EMPTY_RANKS", "GENERAL_CONFIG", "INPUTS", "INTERPRET_CONFIGS", "INT_INPUTS"),
        "FLOAT32",
        *(
            "MAX_NUMEL",
            "OUTPUTS",
            "PARTITIONS",
            "RANK_PARAMS",
            "SPEC",
            "fitting_configs",
            "functools",
            "math",
        ),
        *("np", "os", "output_shapes", "tile_shape", "tl", "torch", "triton"),
    }
)


def module_name(prog: Program) -> str:
    """A Python identifier for the launcher: the spec's file stem (``attention_1pass``), prefixed with
    ``ein_`` where the stem is no identifier of its own or would replace a name of the generated module."""
    import os

    stem = os.path.splitext(os.path.basename(prog.name))[0] if prog.source is not None else "attention"
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in stem) or "attention"
    taken = name in MODULE_GLOBALS or name.endswith(("_kernel", "_launch")) or keyword.iskeyword(name)
    if name[0].isdigit() or taken or name.startswith("_"):
        name = "ein_" + name.lstrip("_")
    return name


def tables(prog: Program, empty_ok: bool = True, float32: tuple[str, ...] = ()) -> str:
    """The module-level tables the host helpers read. ``empty_ok``: the kernels compute a rank of size 0
    as the spec says (the general path of the spec as written, which einattn itself runs for such a call);
    otherwise (a fused kernel, a rewritten cascade: a sum over no tile would divide 0 by 0) the launcher
    refuses one."""
    inputs = {n: prog.tensor(n).ranks for n in prog.inputs}
    ints = tuple(n for n in prog.inputs if prog.tensor(n).dtype == "int")
    params = prog.param_values
    rank_params = {
        r: params[r.upper()] for r in prog.ranks if r.upper() in params and r not in _part_ranks(prog)
    }
    parts = tuple(
        (p.parent, p.outer, p.inner, p.tile, params[(p.inner if p.tile == "inner" else p.outer).upper()])
        for p in prog.partitions
    )
    outputs = {n: (prog.tensor(n).ranks, prog.tensor(n).iterative) for n in prog.outputs}
    aliases, pending = [], dict(prog.aliases)
    while pending:  # in an order that resolves chains (`rank U = S`, `rank S = T`): targets first
        ready = [(a, b) for a, b in pending.items() if b not in pending]
        if not ready:
            break
        aliases += ready
        for a, _ in ready:
            del pending[a]
    lines = [
        f"INPUTS = {inputs!r}  # declared ranks of each input, in declaration order",
        f"INT_INPUTS = {ints!r}  # inputs declared `: int`",
        f"FLOAT32 = {tuple(float32)!r}  # inputs and outputs kept in float32 at least (row statistics)",
        f"RANK_PARAMS = {rank_params!r}  # ranks sized by a param",
        f"PARTITIONS = {parts!r}  # (parent, outer, inner, tiled part, tile size)",
        f"ALIASES = {tuple(aliases)!r}  # (s, t) of `rank S = T`: s takes t's size",
        f"OUTPUTS = {outputs!r}  # ranks of each output, and its iterative dimension (extent + 1) or None",
        f"EMPTY_RANKS = {empty_ok!r}  # whether a rank of size 0 is computed (else refused)",
    ]
    return "\n".join(lines) + "\n"


def _part_ranks(prog: Program) -> set[str]:
    return {r for p in prog.partitions for r in (p.outer, p.inner)}


def decl(prog: Program, name: str) -> str:
    t = prog.tensor(name)
    return name + (f"[{', '.join(t.ranks)}]" if t.ranks else "") + (" : int" if t.dtype == "int" else "")


def launcher_doc(prog: Program, name: str) -> str:
    """The launcher's docstring: the call, each input's shape and dtype, each output's."""
    ins = ", ".join(prog.inputs)
    outs = ", ".join(prog.outputs)
    lines = [f"{outs} = {name}({ins})", "", *io_doc(prog)]
    lines.append(
        "Forward only: where a gradient is recorded, the backward of the outputs raises (no backward"
    )
    lines.append("kernels here; einattn.compile(..., backend='triton') has them, or recomputes with torch).")
    return "\n".join("    " + ln if ln else "" for ln in lines)


def io_doc(prog: Program) -> list[str]:
    """Lines of a standalone module's docstring: each input's shape and dtype, each output's shape."""
    lines = ["Inputs (torch tensors on one device, any strides):"]
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = f"[{', '.join(r.upper() for r in t.ranks)}]" if t.ranks else "a scalar (0-d tensor)"
        kind = "integer tensor" if t.dtype == "int" else "float16, bfloat16, float32 or float64"
        lines.append(f"    {n}: {shape}, {kind}")
    lines.append("Outputs (the float inputs' dtype; absent points are 0):")
    for n in prog.outputs:
        t = prog.tensor(n)
        dims = []
        for k, r in enumerate(t.ranks):
            dims.append(f"{r.upper()} + 1" if t.iterative == k else r.upper())
        lines.append(f"    {n}: [{', '.join(dims)}]" if dims else f"    {n}: a scalar")
    return lines


def size_lines(prog: Program, inputs_dict: str) -> list[str]:
    lines = [f"sizes = _sizes({inputs_dict})"]
    if not prog.ranks:  # scalars only
        return lines
    ranks = ", ".join(f"size_{r}" for r in prog.ranks)
    if len(prog.ranks) == 1:
        ranks += ","
    lines.append(f"{ranks} = ({', '.join(f'sizes[{r!r}]' for r in prog.ranks)},)")
    return lines


def public_launcher(public: Program, name: str) -> tuple[list[str], str]:
    """The launcher users call, ``def <name>(<inputs as the spec names them>)``, and the name of the function
    it calls. Generated code names tensor ``X`` ``t_X`` (a spec may name a tensor ``torch``, ``tl`` or
    ``size_p``): only this wrapper's parameters are the spec's names, and its body reads nothing else but the
    launching function, whose name is chosen to differ from every input's."""
    launch = f"{name}_launch"
    while launch in public.inputs:
        launch += "_"
    lines, called = [], {}
    for helper in ("_forward", "_numbers"):  # an input may be named so: the body reads an alias then
        alias = helper
        while alias in public.inputs or alias == launch:
            alias += "_"
        if alias != helper:
            lines.append(f"{alias} = {helper}  # (an input is named `{helper}`)")
        called[helper] = alias
    ind = "    "
    lines += [
        f"def {name}({', '.join(public.inputs)}):",
        f'{ind}"""{launcher_doc(public, name).lstrip()}\n{ind}"""',
        f"{ind}return {called['_forward']}({launch}, {called['_numbers']}({', '.join(public.inputs)}))",
        "",
        "",
    ]
    return lines, launch


def inputs_by_name(prog: Program, public: Program) -> str:
    """``{'Q': t_Q, ...}``: the launching function's inputs by the spec's names (tables and messages use
    those)."""
    return "{" + ", ".join(f"{n!r}: {s}" for n, s in zip(public.inputs, prog.inputs)) + "}"


def spec_name(prog: Program) -> str:
    """The spec's file name, without its directory (generated source must not depend on where it lives),
    made safe for a docstring or comment (:func:`doc_safe`). A file name is text from outside the spec's
    validated identifiers."""
    import os

    name = os.path.basename(prog.name) if prog.source is not None else prog.name
    return doc_safe(name)


def doc_safe(text: str) -> str:
    """``text`` made safe for a docstring or comment: non-printable characters escaped, no quote or
    backslash left that could end the docstring (``ascii`` doubles every backslash). For any text that
    is not made of validated names and numbers: file names, and messages that quote them."""
    return ascii(text)[1:-1].replace('"', "'")


def header(
    prog: Program, options: dict, path: str, symbols: list[tuple[str, str]], name: str, public: Program
) -> str:
    """The module docstring and imports. ``options`` may carry ``spec`` (the name shown) and ``rewritten``.
    ``public``: ``prog`` with the spec's names (those of the launcher's call)."""
    import einattn

    options = dict(options)
    spec = options.pop("spec", spec_name(prog))
    form = options.pop("form", "as written")
    note = options.pop("note", None)

    opts = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "none"
    params = ", ".join(f"{k}={v!r}" for k, v in prog.params) or "none"
    width = max(len(s) for s, _ in symbols)
    sym = "\n".join(f"    {s.ljust(width)}  {d}" for s, d in symbols)
    return (
        f'"""Triton kernels for `{spec}`, generated by einattn {einattn.__version__}: do not edit.\n\n'
        f"Spec: {spec} ({form})\n"
        + _wrap(f"Path: {path}")
        + "\n"
        + (f"{_wrap(doc_safe(note))}\n" if note else "")
        + f"Params: {params}\n"
        f"Options: {opts}\n"
        f"Needs only torch and triton. Call it as:\n\n"
        f"    {', '.join(public.outputs)} = {name}({', '.join(public.inputs)})\n\n"
        f"Symbols:\n{sym}\n"
        '"""\n\n'
        "import functools\nimport os\n\n"
        "import torch\n"
        "import triton\n"
        "import triton.language as tl\n\n"
        f"SPEC = {spec!r}\n"
        "try:\n"
        "    INTERPRET = bool(triton.knobs.runtime.interpret)  # TRITON_INTERPRET=1: kernels run on the CPU\n"
        "except AttributeError:  # an older Triton\n"
        '    INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"\n'
    )


def helpers() -> str:
    return HELPERS


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent="    "))
