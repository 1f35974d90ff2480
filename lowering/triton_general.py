"""The general Triton path: one generated kernel per Einsum, intermediates in global memory.

Every valid program runs this way. The host code follows ``einattn.graph.schedule``: a Dense step is one
launch over the statement's whole iteration space, a Loop step launches its statements once per step of the
iterative rank (the step number is a runtime argument). Each kernel:

* maps program ids to blocks of the *flattened* output coordinates (``BLOCK_O`` points per program) and
  recovers each rank's coordinate with runtime sizes (``offs_o // pitch % size``);
* loops over the flattened reduced coordinates in blocks of ``BLOCK_R``, reducing with ``tl.sum``/``tl.max``/
  ``tl.min`` over the present points only;
* reads every tensor by pointer arithmetic with runtime strides (any layout), masking out-of-bounds reads,
  which are absent points;
* writes values, and a presence mask (int8) for tensors that can hold absent points (``triton_absent``).

A statement that reduces with two operators (``+`` over some ranks, then ``max`` over others) is split into
two kernels through an internal buffer ``T__partial``. Sizes are always runtime arguments: no size, stride or
step number changes the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from einattn import syntax as S
from einattn.graph import Dense, schedule
from einattn.ir import LhsIndex, Program, Tensor

from .triton_absent import absent_tensors
from .triton_expr import Env, Renderer, Tile, Value, drop_unused, fmt_einsum, in_bounds

IDENTITY = {"+": "0.0", "max": '-float("inf")', "min": 'float("inf")'}
REDUCE_FN = {"+": "tl.sum", "max": "_rmax", "min": "_rmin"}  # (NaN kept: see HELPERS)
COMBINE = {"+": "{acc} + {x}", "max": "_max({acc}, {x})", "min": "_min({acc}, {x})"}


@dataclass(frozen=True)
class KStmt:
    """One kernel: evaluate ``expr`` over ``out_ranks`` x ``red_ranks``, reduce ``red_ranks`` with ``op``."""

    name: str  # kernel name
    target: str  # the buffer written
    index: tuple[LhsIndex, ...]
    expr: S.Expr
    filter: S.Expr | None
    out_ranks: tuple[str, ...]
    red_ranks: tuple[str, ...]
    op: str | None
    text: str  # the Einsum, for comments
    loop: str | None  # the iterative rank fixed by the host loop (its coordinate is `step`)


@dataclass
class GeneralPlan:
    """The host program: ``("dense", [KStmt])`` and ``("loop", rank, [KStmt])`` items, in order."""

    items: list = field(default_factory=list)
    buffers: dict[str, Tensor] = field(default_factory=dict)  # every non-input tensor, partials included
    absent: frozenset[str] = frozenset()
    program: Program | None = None  # the program with the partial buffers declared

    @property
    def statements(self) -> list[KStmt]:
        out = []
        for item in self.items:
            out.extend(item[-1])
        return out


def plan(prog: Program) -> GeneralPlan:
    p = GeneralPlan()
    for t in prog.tensors:
        if not t.is_input:
            p.buffers[t.name] = t
    names: set[str] = set()

    def kname(stem: str) -> str:
        name = f"{stem}_kernel"
        k = 1
        while name in names:
            k += 1
            name = f"{stem}_kernel{k}"
        names.add(name)
        return name

    def split(e, loop: str | None) -> list[KStmt]:
        text = fmt_einsum(e)
        out = tuple(r for r in e.lhs_ranks if r != loop)
        groups: list[tuple[str, list[str]]] = []
        for r, op in e.reduce:
            if groups and groups[-1][0] == op:
                groups[-1][1].append(r)
            else:
                groups.append((op, [r]))
        stem = e.label.replace(".", "_")
        if len(groups) <= 1:
            op, red = groups[0] if groups else (None, [])
            return [KStmt(kname(stem), e.tensor, e.index, e.expr, e.filter, out, tuple(red), op, text, loop)]
        (op1, red1), (op2, red2) = groups
        partial = f"{e.tensor}__partial"
        pranks = tuple(e.lhs_ranks) + tuple(red2)
        p.buffers[partial] = Tensor(partial, pranks)
        first = KStmt(
            kname(f"{stem}_partial"),
            partial,
            tuple(LhsIndex(r) for r in pranks),
            e.expr,
            e.filter,
            out + tuple(red2),
            tuple(red1),
            op1,
            f"{partial}[{', '.join(pranks)}] = the {op1}-reduction over {', '.join(red1)} of: {text}",
            loop,
        )
        second = KStmt(
            kname(stem),
            e.tensor,
            e.index,
            S.Read(partial, tuple(S.Coord(r) for r in pranks)),
            None,
            out,
            tuple(red2),
            op2,
            f"{text}  (its {op2}-reduction over {', '.join(red2)})",
            loop,
        )
        return [first, second]

    for step in schedule(prog):
        if isinstance(step, Dense):
            p.items.append(("dense", split(step.einsum, None)))
        else:
            p.items.append(("loop", step.rank, [k for e in step.body for k in split(e, step.rank)]))
    p.program = _with_buffers(prog, p)
    p.absent = absent_tensors(p.program, p.statements, empty=True)  # a rank of size 0 reduces to absent
    return p


def _with_buffers(prog: Program, p: GeneralPlan) -> Program:
    """The program with the internal partial buffers declared, so that reads of them resolve."""
    extra = tuple(t for n, t in p.buffers.items() if n not in {t.name for t in prog.tensors})
    if not extra:
        return prog
    from dataclasses import replace

    return replace(prog, tensors=prog.tensors + extra)


class GeneralEnv(Env):
    """Coordinates and reads of one general-path kernel: axes ``o`` (outputs) and ``r`` (reduced)."""

    axes = ("o", "r")

    def __init__(self, prog: Program, st: KStmt, absent: frozenset[str]):
        self.prog, self.st, self.absent = prog, st, absent
        self.lines: list[str] = []
        self.indent = "    "
        self.tensors: list[str] = []  # pointer arguments, in order of first use
        self.sizes: set[str] = set()
        self.counter = 0
        self.uses_step = False

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)

    def temp(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def extent(self, axis: str) -> str:
        return "BLOCK_O" if axis == "o" else "BLOCK_R"

    def size(self, rank: str) -> str:
        self.sizes.add(rank)
        return f"size_{rank}"

    def coord(self, rank: str) -> Tile:
        if rank == self.st.loop:
            self.uses_step = True
            return Tile("step")
        if rank in self.st.out_ranks:
            return Tile(f"i_{rank}", ("o",))
        return Tile(f"i_{rank}", ("r",))

    def use(self, tensor: str) -> None:
        if tensor not in self.tensors:
            self.tensors.append(tensor)

    def read(self, r: Renderer, node: S.Read, ctx: str) -> Value:
        self.use(node.tensor)
        t = self.prog.tensor(node.tensor)
        present = f"{node.tensor}_present_ptr" if node.tensor in self.absent else None
        if not node.indices:
            name = self.temp(node.tensor)
            self.emit(f"{name} = tl.load({node.tensor}_ptr)")
            mask = None
            if present:
                self.emit(f"{name}_present = tl.load({present}) != 0")
                mask = Tile(f"{name}_present")
            kind = "i" if (t.dtype == "int" and ctx in ("i", "c")) else "f"
            val = Tile(name) if kind == "i" else Tile(f"{name}.to({r.compute})")
            return Value(val, mask, kind=kind)
        extents = []
        for k, ix in enumerate(node.indices):
            if in_bounds(self.prog, node.tensor, k, ix):
                extents.append(None)
            else:
                extent = self.size(t.ranks[k])
                extents.append(f"({extent} + 1)" if t.iterative == k else extent)
        strides = [f"{node.tensor}_stride{k}" for k in range(len(node.indices))]
        return r.pointer_load(node, f"{node.tensor}_ptr", strides, extents, ctx, presence_ptr=present)


def kernel_source(
    prog: Program, st: KStmt, absent: frozenset[str], floor: bool = False
) -> tuple[str, list[str]]:
    """The Triton source of one general-path kernel, and the host expressions of its arguments.

    ``prog`` must declare the internal partial buffers (:attr:`GeneralPlan.program`). ``floor``: the value
    is a running max of einattn.rewrite's form, stored at least the dtype's lowest finite value
    (:func:`einattn.stabilizers.floored`).
    """
    env = GeneralEnv(prog, st, absent)
    r = Renderer(env, prog)
    tracked = st.target in absent
    emit = env.emit
    n_out = " * ".join(env.size(x) for x in st.out_ranks) or "1"
    emit("# program -> a block of BLOCK_O points of the flattened output coordinates")
    emit("offs_o = tl.program_id(0).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)")
    emit(f"lane_o = offs_o < {n_out}")
    _unflatten(env, "offs_o", st.out_ranks)
    if st.red_ranks:
        op = st.op
        n_red = " * ".join(env.size(x) for x in st.red_ranks)
        emit(f"acc = tl.full([BLOCK_O], {IDENTITY[op]}, CD)")
        if tracked:
            emit("seen = tl.zeros([BLOCK_O], tl.int1)")
        emit(
            f"# reduce {', '.join(st.red_ranks)} with {op}, BLOCK_R points at a time, skipping absent points"
        )
        emit(f"for red0 in range(0, {n_red}, BLOCK_R):")
        env.indent += "    "
        emit("offs_r = red0 + tl.arange(0, BLOCK_R)")
        emit(f"lane_r = offs_r < {n_red}")
        _unflatten(env, "offs_r", st.red_ranks)
        v = r.value(st.expr)
        ok = r.mask_and(r.mask_and(Tile("lane_r", ("r",)), v.mask), r.filtered(st.filter))
        full = ("o", "r")
        emit(f"ok = {env.full(ok, full, 'tl.int1')}")
        vals = r.where(Tile("ok", full), v.val, Tile(IDENTITY[op]))
        reduced = f"{REDUCE_FN[op]}({env.full(vals, full, 'CD')}, 1)"
        emit(f"acc = {COMBINE[op].format(acc='acc', x=reduced)}")
        if tracked:
            emit("seen = seen | (tl.max(ok.to(tl.int32), 1) > 0)")
        env.indent = env.indent[:-4]
        value, mask = Tile("acc", ("o",)), (Tile("seen", ("o",)) if tracked else None)
    else:
        v = r.value(st.expr)
        value, mask = v.val, r.mask_and(v.mask, r.filtered(st.filter))
    if mask is not None and not tracked:
        from einattn.errors import InternalError

        raise InternalError(f"`{st.target}` can hold absent points but carries no presence mask")
    if floor:
        value = Tile(f"_floor({env.full(value, ('o',), 'CD')})", ("o",))
    off = _offsets(env, st)
    emit(
        f"tl.store({st.target}_ptr + {off}, "
        f"{env.full(value, ('o',), 'CD')}.to({st.target}_ptr.dtype.element_ty), mask=lane_o)"
    )
    if tracked:
        m = env.full(mask, ("o",), "tl.int1") if mask is not None else "tl.full([BLOCK_O], 1, tl.int1)"
        emit(f"tl.store({st.target}_present_ptr + {off}, {m}.to(tl.int8), mask=lane_o)")
    env.use(st.target)
    return _assemble(prog, st, env)


def _unflatten(env: GeneralEnv, flat: str, ranks: tuple[str, ...]) -> None:
    """Coordinates of ``ranks`` (row-major) from a flattened index: ``i_x = rest_o % size_x``.

    The remainder is named after the index (``rest_o``, ``rest_r``): one name for both would make it a
    loop-carried variable of the reduction loop whose type changes (int64 rows, int32 lanes), which Triton's
    compiler rejects (its interpreter does not check)."""
    if not ranks:
        return
    if len(ranks) == 1:
        env.emit(f"i_{ranks[0]} = {flat} % {env.size(ranks[0])}")
        return
    rest = "rest_" + flat.removeprefix("offs_")
    env.emit(f"{rest} = {flat}")
    for k, x in enumerate(reversed(ranks)):
        env.emit(f"i_{x} = {rest} % {env.size(x)}")
        if k < len(ranks) - 1:
            env.emit(f"{rest} = {rest} // {env.size(x)}")


def _offsets(env: GeneralEnv, st: KStmt) -> str:
    terms = []
    for k, ix in enumerate(st.index):
        if ix.kind == "init":
            continue
        c = env.coord(ix.rank).code
        if ix.kind == "step":
            c = f"({c} + 1)"
        terms.append(f"{c} * {st.target}_stride{k}")
    if not any(st.index[k].kind != "init" and st.index[k].rank in st.out_ranks for k in range(len(st.index))):
        terms.append("offs_o * 0")  # a single point: still one address per lane (lane 0 stores it)
    return " + ".join(terms)


def _assemble(prog: Program, st: KStmt, env: GeneralEnv) -> tuple[str, list[str]]:
    """The kernel's source and the host expressions of its runtime arguments, in signature order."""
    params, host, nospec = [], [], []
    for name in env.tensors:
        params.append(f"{name}_ptr")
        host.append(name)
        if name in env.absent:
            params.append(f"{name}_present_ptr")
            host.append(f"{name}_present")
        ndim = len(prog.tensor(name).ranks)
        for k in range(ndim):
            params.append(f"{name}_stride{k}")
            host.append(f"{name}.stride({k})")
            if k < ndim - 1:  # the innermost stride (usually 1) stays specialised
                nospec.append(f"{name}_stride{k}")
    order = {r: i for i, r in enumerate(prog.ranks)}
    for x in sorted(env.sizes, key=lambda x: order.get(x, len(order))):
        params.append(f"size_{x}")
        host.append(f"size_{x}")
        nospec.append(f"size_{x}")
    if st.loop is not None:
        params.append("step")
        host.append("step")
        nospec.append("step")
    params += ["CD: tl.constexpr", "BLOCK_O: tl.constexpr", "BLOCK_R: tl.constexpr"]
    head = f"@triton.jit(do_not_specialize={nospec!r})\ndef {st.name}(\n"
    head += "".join(f"    {a},\n" for a in params) + "):\n"
    head += f'    """{st.text}"""\n'
    return head + "\n".join(drop_unused(env.lines)) + "\n", host


GENERAL_CONFIG = """\
# Launch configuration of the general path: BLOCK_O output points per program, BLOCK_R reduced points a step.
GENERAL_CONFIG = (
    dict(BLOCK_O=128, BLOCK_R=16) if INTERPRET else dict(BLOCK_O=128, BLOCK_R=32, num_warps=4, num_stages=2)
)
"""


def general_symbols(prog: Program, p: GeneralPlan) -> list[tuple[str, str]]:
    from .triton_module import decl

    syms = [(decl(prog, n), "input") for n in prog.inputs]
    for name, t in p.buffers.items():
        what = "output" if name in prog.outputs else "intermediate in global memory (compute dtype)"
        if name in p.absent:
            what += f"; {name}_present: its presence (int8, 1 = present)"
        syms.append((name + (f"[{', '.join(t.ranks)}]" if t.ranks else ""), what))
    syms += [
        ("t_X", "tensor X of the spec (only the launcher's parameters are the spec's names)"),
        ("size_x", "the size of rank x: a runtime argument, never part of the source"),
        ("T_ptr, T_stride<k>", "tensor T's base pointer and the stride of its dimension k (any layout)"),
        ("i_x", "the coordinate of rank x in a kernel"),
        ("offs_o, lane_o", "a program's flattened output points, and which of them exist"),
        ("offs_r, lane_r", "a block of flattened reduced points, and which of them exist"),
        ("acc, seen", "a reduction's running value, and whether any point was present"),
        ("step", "the step of the iterative rank that a loop kernel computes"),
        ("CD", "the compute dtype: float32 (float64 for float64 inputs)"),
        ("BLOCK_O, BLOCK_R", "points per program and per reduction step (compile-time)"),
    ]
    return syms


def general_module(
    prog: Program,
    options: dict,
    name: str,
    floor: frozenset[str] = frozenset(),
    public: Program | None = None,
) -> tuple[str, GeneralPlan]:
    """The whole standalone module of the general path, and its plan (``floor``, ``public``: as in
    ``fused_module``)."""
    from . import triton_module as M

    public = public if public is not None else prog
    p = plan(prog)
    full = p.program
    kernels, calls = [], {}
    for st in p.statements:
        src, host = kernel_source(full, st, p.absent, st.target in floor)
        kernels.append(src)
        calls[st.name] = host
    out = [
        M.header(
            prog,
            options,
            "general (one kernel per Einsum, intermediates in global memory)",
            general_symbols(prog, p),
            name,
            public,
        )
    ]
    out.append(
        M.tables(
            public,
            empty_ok=options.get("form", "as written") == "as written",
            float32=options.get("float32", ()),
        )
    )
    out.append(GENERAL_CONFIG)
    out.append("\n" + M.helpers())
    out += ["\n" + k for k in kernels]
    out.append("\n" + M.HOST_HELPERS)
    out.append("\n" + M.GENERAL_LAUNCH)
    out.append("\n" + _launcher(prog, p, calls, name, public, tuple(options.get("float32", ()))))
    return "\n".join(out), p


def _launcher(
    prog: Program, p: GeneralPlan, calls: dict[str, list[str]], name: str, public: Program, float32=()
) -> str:
    from . import triton_module as M

    ind = "    "
    lines, launch = M.public_launcher(public, name)
    lines.append(f"def {launch}({', '.join(prog.inputs)}):")
    inputs = M.inputs_by_name(prog, public)
    lines += [ind + ln for ln in M.size_lines(prog, inputs)]
    lines.append(f"{ind}out_dtype = _float_dtype({inputs})")
    lines.append(f"{ind}CD, acc_dtype = _compute(out_dtype)")
    if prog.inputs:
        lines.append(f"{ind}device = {prog.inputs[0]}.device")
    else:  # (nothing to take it from: the interpreter's CPU, else the current GPU)
        lines.append(f"{ind}device = torch.device('cpu' if INTERPRET else 'cuda')")
    lines.append(f"{ind}# buffers of the intermediates and outputs (compute dtype), and presence masks")
    for bname, t in p.buffers.items():
        dims = [f"size_{r}" + (" + 1" if t.iterative == k else "") for k, r in enumerate(t.ranks)]
        shape = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        lines.append(f"{ind}{bname} = torch.zeros({shape}, device=device, dtype=acc_dtype)")
        if bname in p.absent:
            lines.append(f"{ind}{bname}_present = torch.zeros({shape}, device=device, dtype=torch.int8)")
    for item in p.items:
        if item[0] == "dense":
            body, pre = item[1], ind
        else:
            lines.append(f"{ind}for step in range(size_{item[1]}):  # the recurrence over {item[1]}")
            body, pre = item[2], ind * 2
        for st in body:
            n_out = " * ".join(f"size_{r}" for r in st.out_ranks) or "1"
            lines.append(f"{pre}# {st.text}")
            lines.append(f"{pre}_launch({st.name}, {n_out}, CD, {', '.join(calls[st.name])})")
    results = []
    wide = {o for o, po in zip(prog.outputs, public.outputs) if po in float32}
    for o in prog.outputs:
        dtype = "torch.promote_types(out_dtype, torch.float32)" if o in wide else "out_dtype"
        if o in p.absent:
            results.append(f"torch.where({o}_present != 0, {o}, 0).to({dtype})")
        else:
            results.append(f"{o}.to({dtype})")
    lines.append(f"{ind}# outputs: absent points are delivered as 0")
    lines.append(f"{ind}return {', '.join(results)}")
    return "\n".join(lines) + "\n"
