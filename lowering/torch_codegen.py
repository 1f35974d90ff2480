"""PyTorch source from a program: one statement per Einsum, named after its tensor.

The generator walks :func:`einattn.fusion.fused_schedule` and writes a function ``program`` whose body reads
like the spec: each Einsum becomes a comment (the statement, re-printed from the IR) and an assignment to
``t_<TENSOR>`` (its values) and, only for tensors that :mod:`einattn.absence` says can have absent points,
``m_<TENSOR>`` (its presence mask). Decisions are made here, in Python; the generated text holds only
identifiers of the spec (always behind a prefix), numbers, and calls to ``torch`` and to the helpers of
``lowering/torch_runtime.py``.

Evaluating one Einsum (every value is laid out over the statement's iteration space, one axis per rank, in
``Einsum.space`` order: left-hand ranks first, then reduced ranks; a value has size 1 on axes it does not
depend on):

* **reads** ``T[i, j]`` are views when every index is a rank of the space (permute, new axes), slices of one
  dimension for ``r + c`` (padded where out of range: ragged tiles, shifted reads), a reshape for a partition
  ``m1 * M0 + m0``, and a gather (advanced indexing) for anything else;
* **sums of products** (``+`` over ranks of a product of factors) are one ``torch.einsum`` call, batch ranks
  kept as batch dimensions; the other reductions evaluate the expression over the space and reduce it;
* **absent points**: masks are combined only where they can exist; functions that could overflow see a safe
  argument at absent points, reductions skip absent points, an output's absent points become 0;
* **loops** (iterative ranks) run in Python over the steps, the state in ``t_X`` (before the step) and
  ``n_X`` (after it); statements fused into the loop compute one step's slice. When the loop's rows are
  independent (:func:`einattn.skip.row_ranks`), the whole loop runs for one block of rows at a time
  (``c_p .. c_p + w_p - 1``, option ``row_block``), so that a step's tile stays in cache; with a
  :class:`TileSkip`, each step computes only the rows it must (``a_p .. a_p + l_p - 1``), skips the step when
  there are none, and drops the tile's filter mask when every point of the tile is present for those rows.
* **finite values**: each value carries whether it is finite everywhere given finite inputs; then absent
  points are filled by arithmetic (``finite=True``), else by ``torch.where``.

Generated names: ``t_`` values, ``m_`` masks, ``n_``/``nm_`` next states, ``h_``/``hm_`` histories,
``z_``/``zm_`` whole initial states and ``b_``/``bm_`` per-block final states of a blocked loop, ``s_`` sizes,
``i_`` loop indices, ``a_``/``l_`` a step's rows, ``c_``/``w_`` a block of rows, ``fn_`` functions; the
generator's temporaries start with ``_``. No prefix is a prefix of another, so spec names never collide with
these or with builtins.
"""

from __future__ import annotations

import collections
import math
import re
from dataclasses import dataclass, field

from einattn import syntax as S
from einattn.absence import ALWAYS, Lin, analyse, num
from einattn.errors import InternalError
from einattn.format import format_einsum
from einattn.fusion import fused_schedule, loop_states
from einattn.graph import Dense, Loop
from einattn.ir import Einsum, Program, coords
from einattn.skip import TileSkip, constant_value, row_ranks, tile_skip
from einattn.stabilizers import floored, stabilizers

UNSAFE = frozenset({"exp", "exp2", "log", "log2", "sqrt", "rsqrt"})  # as torch_runtime.UNSAFE
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---- symbolic quantities as code ---------------------------------------------------------------------------


def atom_code(atom) -> str:
    kind = atom[0]
    if kind == "prod":
        return f"{atom_code(atom[1])} * {atom_code(atom[2])}"
    prefix = {"size": "s_", "index": "i_", "start": "a_", "len": "l_", "bstart": "c_", "blen": "w_"}[kind]
    return prefix + atom[1]


def lin_code(x: Lin) -> str:
    parts = []
    for atom, c in x.terms:
        name = atom_code(atom)
        term = name if abs(c) == 1 else f"{abs(c)} * {name}"
        parts.append(("- " if c < 0 else "+ ") + term)
    if x.const or not parts:
        parts.append(("- " if x.const < 0 else "+ ") + str(abs(x.const)))
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def number_code(v: int | float) -> str:
    if isinstance(v, bool):
        raise InternalError("a bool is not a number")
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "math.inf" if v > 0 else "-math.inf"
    if math.isnan(v):
        return "math.nan"
    return repr(float(v))


def shape_code(lengths) -> str:
    items = [lin_code(x) for x in lengths]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def tuple_code(items) -> str:
    items = [str(x) for x in items]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


# ---- what the generator knows about values -----------------------------------------------------------------


@dataclass
class Var:
    """Where a tensor's values live: a variable holding a window of the tensor, per dimension."""

    value: str
    mask: str | None  # None: the tensor has no absent points
    origin: tuple[Lin, ...]
    length: tuple[Lin, ...]
    extent: tuple[Lin, ...]
    zero: bool = False  # its values are 0 wherever it is absent (sums need not fill them)
    finite: bool = False  # no infinity or NaN anywhere, given finite inputs (fills may use arithmetic)
    fresh: bool = False  # memory of its own, computed by its statement (not a view of another tensor)
    neg_inf: bool = False  # -inf at its absent points (_neg_fill): for max and exp only (not finite then)


@dataclass
class Space:
    """The iteration space of one statement: each rank's first coordinate and length."""

    ranks: tuple[str, ...]
    start: dict[str, Lin]
    length: dict[str, Lin]
    fixed: frozenset[str]

    @property
    def ndim(self) -> int:
        return len(self.ranks)

    def axis(self, r: str) -> int:
        return self.ranks.index(r)


@dataclass
class Val:
    """Code of a value over a space: a tensor (or a Python number when ``scalar``), its mask code (None when
    statically present) and the ranks it may vary along."""

    code: str
    mask: str | None = None
    scalar: bool = False
    ranks: frozenset = field(default_factory=frozenset)
    zero: bool = False  # 0 wherever ``mask`` is false
    zero_filtered: bool = False  # also 0 wherever the statement's filter is false
    finite: bool = False  # no infinity or NaN anywhere, given finite inputs
    neg_inf: bool = False  # -inf wherever ``mask`` is false
    # ``a - b`` computed in the memory of ``a`` (a temporary): the two operands' codes, which ``exp`` of it
    # takes apart (``_exp_diff``: the subtraction fused with the product by log2 e)
    diff: tuple[str, str] | None = None


@dataclass
class ReadCode:
    """A read before placement: value and mask codes whose dimensions are the space ranks ``axes``."""

    value: str
    mask: str | None
    axes: tuple[str, ...]
    zero: bool = False
    finite: bool = False
    neg_inf: bool = False  # -inf at the absent points (a view of a whole variable that holds -inf there)
    # the ranks the value varies along, where fewer than ``axes`` (a gather has every axis of the space, of
    # size 1 where its indices do not vary: `A[abs(m - 2), m]` under `[p, m]` is constant along p)
    ranks: frozenset[str] | None = None


# ---- the generator ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reduced:
    """A reduction's definition read through :func:`definition`: the statement and its rank mapping."""

    einsum: Einsum
    mapping: dict

    @property
    def expr(self) -> S.Expr:
        return self.einsum.expr


def definition(prog: Program, rd: S.Read) -> S.Expr | None:
    """The expression that ``rd`` reads, its ranks replaced by ``rd``'s indices; None for an input, a
    reduction other than max (see :func:`dominates`), an initial state, or indices it cannot match."""
    for e in prog.einsums:
        if e.tensor != rd.tensor or any(ix.kind == "init" for ix in e.index) or e.filter is not None:
            continue
        mapping: dict[str, S.Expr] = {}
        for ix, got in zip(e.index, rd.indices):
            if ix.kind == "step":
                step = isinstance(got, S.Binary) and got.op == "+" and got.b == S.Const(1)
                if not step:
                    break
                got = got.a
            mapping[ix.rank] = got
        else:
            if any(op not in ("+", "max") for _, op in e.reduce):
                return None
            return S.subst(e.expr, mapping) if not e.reduce else _Reduced(e, mapping)
    return None


def dominates(prog: Program, b: S.Expr, a: S.Expr, depth: int = 6) -> bool:
    """Whether ``b >= a`` wherever ``a`` is present: ``b`` reads a max over some ranks of ``a``'s tensor
    (the other indices equal), or a max one of whose arguments does, or ``x ?? y`` whose ``x`` is such a
    max (``x`` is absent only where every value of the max, ``a`` among them, is)."""
    if depth == 0:
        return False
    if isinstance(b, S.Default):
        return _max_of(prog, b.a, a) or (
            dominates(prog, b.a, a, depth - 1) and dominates(prog, b.b, a, depth - 1)
        )
    if _max_of(prog, b, a):
        return True
    if isinstance(b, S.Read):
        d = definition(prog, b)
        return d is not None and not isinstance(d, _Reduced) and dominates(prog, d, a, depth - 1)
    if isinstance(b, S.Call) and b.fn == "max":
        return any(dominates(prog, x, a, depth - 1) for x in b.args)
    return False


def _max_of(prog: Program, b: S.Expr, a: S.Expr) -> bool:
    """``b`` reads ``X :: max(ranks)`` where ``X`` is ``a`` at the reduced ranks' coordinates."""
    if not (isinstance(b, S.Read) and isinstance(a, S.Read)):
        return False
    d = definition(prog, b)
    if not isinstance(d, _Reduced) or not isinstance(d.expr, S.Read) or d.expr.tensor != a.tensor:
        return False
    reduced = {r for r, op in d.einsum.reduce}
    if any(op != "max" for _, op in d.einsum.reduce):
        return False
    mine = S.subst(d.expr, d.mapping)
    return all(
        x == y or (isinstance(x, S.Coord) and x.rank in reduced) for x, y in zip(mine.indices, a.indices)
    )


def _at_least_one(prog: Program, b: S.Expr) -> bool:
    """``b`` reads a sum over ranks ``S`` of ``exp(x - y)`` where ``y`` is the max of ``x`` over ranks within
    ``S`` (a softmax denominator): the term at the argmax is 1 and none is negative."""
    d = definition(prog, b) if isinstance(b, S.Read) else None
    if not isinstance(d, _Reduced) or any(op != "+" for _, op in d.einsum.reduce):
        return False
    summed = {r for r, _ in d.einsum.reduce}
    x = d.expr
    if isinstance(x, S.Read) and x.tensor not in prog.inputs:
        x = definition(prog, S.subst(x, d.mapping))
        if x is None or isinstance(x, _Reduced):
            return False
    if not (isinstance(x, S.Call) and x.fn == "exp" and isinstance(x.args[0], S.Binary)):
        return False
    arg = x.args[0]
    if arg.op != "-" or not _max_of(prog, arg.b, arg.a):
        return False
    m = definition(prog, arg.b)
    return {r for r, _ in m.einsum.reduce} <= summed


def _guarded(e: S.Expr) -> bool:
    """Every function of ``e`` that may overflow has an argument over ranks (which the generator guards
    where other factors are absent: a scalar argument gets no guard)."""
    return all(
        any(
            isinstance(x, (S.Coord, S.Read)) and (not isinstance(x, S.Read) or x.indices)
            for x in n.args[0].walk()
        )
        for n in e.walk()
        if isinstance(n, S.Call) and n.fn in UNSAFE
    )


def _unsafe_calls(e: S.Expr) -> bool:
    return any(isinstance(n, S.Call) and n.fn in UNSAFE for n in e.walk())


def bounded(prog: Program, e: S.Expr, depth: int = 6) -> bool:
    """Whether ``e`` is finite wherever it is present, given finite inputs: the exponential of ``a - b``
    where ``b`` dominates ``a`` (:func:`dominates`: softmax's ``exp(QK - GM)``, at most 1) and sums and
    products of bounded values. Reads follow definitions; an input is finite."""
    if depth == 0:
        return False
    if isinstance(e, (S.Const, S.Param)):
        return math.isfinite(e.value) if isinstance(e, S.Const) else True
    if isinstance(e, (S.Coord, S.Size)):
        return True
    if isinstance(e, S.Read):
        if e.tensor in prog.inputs:
            return True
        d = definition(prog, e)
        return d is not None and bounded(prog, d.expr if isinstance(d, _Reduced) else d, depth - 1)
    if isinstance(e, S.Call) and e.fn == "exp":
        x = e.args[0]
        return isinstance(x, S.Binary) and x.op == "-" and dominates(prog, x.b, x.a)
    if isinstance(e, S.Binary) and e.op in "+-*":
        return bounded(prog, e.a, depth - 1) and bounded(prog, e.b, depth - 1)
    if isinstance(e, S.Binary) and e.op == "/":  # softmax's `SN / SD`: SD >= 1 where present
        return bounded(prog, e.a, depth - 1) and _at_least_one(prog, e.b)
    if isinstance(e, S.Default):
        return bounded(prog, e.a, depth - 1) and bounded(prog, e.b, depth - 1)
    if isinstance(e, S.Unary):
        return bounded(prog, e.x, depth - 1)
    return False


class Generator:
    def __init__(
        self,
        prog: Program,
        empty: bool = False,
        skipping: bool = True,
        row_block: int | str = "auto",
        recompute: bool = True,
        floor_stabilizers: bool = False,
        finite_inputs: bool = True,
    ):
        """``floor_stabilizers``: ``prog`` is einattn.rewrite's streamed form of a spec, whose derivation
        takes its running maxes to be finite (see ``torch_runtime._stable``). ``finite_inputs``: the inputs
        hold no infinity or NaN (the caller checks: ``torch_runtime._all_finite``), so absent points that
        hold input values may be filled by arithmetic."""
        self.prog = prog
        self.finite_inputs = finite_inputs
        self.row_block = row_block
        # the rows of a block of the loop being generated: a number, or ("auto") the rows without and with a
        # gradient recorded (auto_row_block)
        self.block_now: int | tuple[int, int] = 256
        # the rank each loop blocks and the fewest rows of its blocks (the loop's tiles hold at most that many
        # rows: torch_backend's one-tile dispatch keeps within them)
        self.row_blocks: dict[str, int] = {}
        self.recompute = recompute
        self.A = analyse(prog, empty)
        self.empty = empty
        self.skipping = skipping
        self.steps = fused_schedule(prog)
        self.lines: list[str] = []
        self.depth = 1
        self.vars: dict[str, Var] = {}
        self.next: dict[str, Var] = {}
        self.counter = 0
        self.functions: set[str] = set()
        self.masks: dict[str, str] = {}  # mask code -> temporary (within one statement)
        self.ctx_fixed: dict[str, Lin] = {}
        self.ctx_rows: dict[str, tuple[Lin, Lin]] = {}
        self.filter_now: str | None = None  # the filter mask of the statement being generated
        self.extra_guard: str | None = None  # where a contraction's other factors are absent (see there)
        self.finite_now = False  # whether the statement's value is finite everywhere
        self.reads: dict[str, tuple[str, str | None]] = {}  # slices taken in the current scope
        self.whole_tiles: set[str] = set()  # tile statements whose filter a step may find all true
        self.dying = dying_reads(prog, self.steps)
        self.pooled = pooled_tiles(prog, self.steps, self.dying)
        self.dying_states = dying_states(prog, self.steps)
        self.prefill = prefilled_tiles(prog, self.A)
        self.stable = stabilizers(prog)  # computed without a gradient (`_stable`)
        # the inputs that reach the outputs only through `??` defaults, which a run may skip
        # (defaulted_inputs), the inputs each tensor carries, and those of defaults left out (no mask)
        self.defaulted = defaulted_inputs(prog, self.stable)
        self.carried = _carried(prog, self.stable)
        self.dropped: set[str] = set()
        # the maxes among them floored at the dtype's lowest value in a rewritten program (see `_stable`)
        self.floored = floored(prog) if floor_stabilizers else frozenset()
        self.state_updates = updated_states(prog, self.steps)
        self.acc_into = accumulated_into(prog, self.steps, self.dying, self.state_updates)
        self.updating: dict[str, str] = {}  # statement label -> the state it updates in place (this loop)
        self.deferred: dict[str, tuple[str, str]] = {}  # tensor -> (spec, operands and alpha) of its matmul
        self.last_mm: tuple[str, str, str] | None = None  # (code, spec, arguments) of the last `_mm` made
        self.fusing: str | None = None  # the deferred tensor being read into its reader's sum
        self.summing: str | None = None  # Y of the sum of present terms being generated (sum_of_present)
        self.summed_now = False  # the current statement's value is such a sum (memory of its own)
        self.owning = False  # a `??` being generated may write its default into its operand's memory
        self.pooling = False  # whether the program uses the buffer pool `_pool`
        self.dying_now: frozenset[str] = frozenset()  # tensors the current statement reads last
        self.fresh_now = False  # whether the current statement's value is memory of its own
        self.label_now = ""  # the label of the statement being generated
        self.output_expr: S.Expr | None = None
        self.hoisted: dict[str, str] = {}  # loop-invariant code -> its name, computed once before any loop

    # ---- output ----------------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def hoist(self, code: str) -> str:
        """``code``, computed once at the start of the program when it is inside a loop and reads nothing but
        sizes, constants and whole inputs (attention's ``rsqrt(E)``, the matmul's alpha: a tensor made and a
        function called at every step otherwise); else ``code`` itself."""
        if not self.ctx_fixed:
            return code
        names = re.findall(r"(?<![\w.])([A-Za-z_]\w*)", code)
        inputs = {f"t_{n}" for n in self.prog.inputs}
        if not all(n in ("_c", "_o", "math") or n.startswith(("fn_", "s_")) or n in inputs for n in names):
            return code
        if code not in self.hoisted:
            self.hoisted[code] = f"_h{len(self.hoisted) + 1}"
        return self.hoisted[code]

    def temp(self, stem: str = "_r") -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def size(self, r: str) -> Lin:
        return self.A.size(r)

    def extent(self, tensor: str) -> tuple[Lin, ...]:
        t = self.prog.tensor(tensor)
        return tuple(self.size(r) + num(int(k == t.iterative)) for k, r in enumerate(t.ranks))

    def has_mask(self, tensor: str) -> bool:
        return self.A.may_be_absent(tensor)

    # ---- the whole program -----------------------------------------------------------------------------
    def program(self) -> str:
        prog = self.prog
        for name in prog.inputs:
            ext = self.extent(name)
            # inputs taken to be finite (the program run when they are: absent points filled by arithmetic),
            # or not (``program_any``: by torch.where, exact whatever an absent point holds)
            self.vars[name] = Var(
                f"t_{name}", None, tuple(num(0) for _ in ext), ext, ext, finite=self.finite_inputs
            )
        for step in self.steps:
            if isinstance(step, Dense):
                self.statement(step.einsum)
            else:
                self.loop(step)
        outs = []
        for name in prog.outputs:
            v = self.vars[name]
            if v.length != v.extent:
                raise InternalError(f"output `{name}` is not whole after its loop")
            # (a value that may be a view of an input or of another output is copied under torch.compile,
            # where `_unaliased` cannot compare memory)
            outs.append(f"_out({v.value}, {v.mask}, _o[2]{'' if v.fresh else ', view=True'})")
        ret = tuple_code(outs)
        ret = f"_keep_pool(_pool, {ret})" if self.pooling else ret
        cut = set(gradless_inputs(prog, self.stable)) | self.dropped
        cut = tuple(n for n in prog.inputs if n in cut)
        if cut:  # inputs no output depends on but through stabilizers (or defaults never needed): zeros
            ret = f"_joined({ret}, ({', '.join(f't_{n}' for n in cut)},))"
        self.emit(f"return {ret}")
        args = [f"t_{n}" for n in prog.inputs] + [f"s_{r}" for r in prog.ranks] + ["_o", "_inplace"]
        head = [
            "def program(" + ", ".join(args) + "):",
            '    """The cascade. Sizes are Python ints; ``_o`` = (compute dtype, device, output dtype)."""',
        ]
        if self.pooling:
            head.append(
                "    _pool = _new_pool(__name__, _o) if _inplace else None  # tiles reused by the next step"
            )
        for code, name in self.hoisted.items():
            head.append(f"    {name} = {code}  # the same at every step of a loop")
        return "\n".join(head + dead_masks_removed(self.lines)) + "\n"

    # ---- spaces and contexts ------------------------------------------------------------------------------
    def space(self, e: Einsum) -> Space:
        start, length = {}, {}
        for r in e.space:
            if r in self.ctx_fixed:
                start[r], length[r] = self.ctx_fixed[r], num(1)
            elif r in self.ctx_rows:
                start[r], length[r] = self.ctx_rows[r]
            else:
                start[r], length[r] = num(0), self.size(r)
        return Space(e.space, start, length, frozenset(r for r in e.space if r in self.ctx_fixed))

    def window(self, tensor: str, iter_origin: Lin | None = None) -> tuple[tuple[Lin, ...], tuple[Lin, ...]]:
        """(origin, length) of a tensor written in the current context."""
        t = self.prog.tensor(tensor)
        origin, length = [], []
        for k, r in enumerate(t.ranks):
            if k == t.iterative:
                origin.append(iter_origin if iter_origin is not None else num(0))
                length.append(num(1))
            elif r in self.ctx_fixed:
                origin.append(self.ctx_fixed[r])
                length.append(num(1))
            elif r in self.ctx_rows:
                origin.append(self.ctx_rows[r][0])
                length.append(self.ctx_rows[r][1])
            else:
                origin.append(num(0))
                length.append(self.size(r))
        return tuple(origin), tuple(length)

    # ---- masks ------------------------------------------------------------------------------------------
    def name_mask(self, code: str | None) -> str | None:
        """A mask code as a name (computed once per statement)."""
        if code is None or code.isidentifier():
            return code
        if code not in self.masks:
            name = self.temp("_k")
            self.emit(f"{name} = {code}")
            self.masks[code] = name
        return self.masks[code]

    def and_masks(self, *codes: str | None) -> str | None:
        codes = tuple(dict.fromkeys(c for c in codes if c is not None))
        if not codes:
            return None
        if len(codes) == 1:
            return codes[0]
        return self.name_mask(f"_and({', '.join(codes)})")

    # ---- reads --------------------------------------------------------------------------------------------
    def var_of(self, rd: S.Read) -> Var:
        t = self.prog.tensor(rd.tensor)
        after = t.iterative is not None and rd.indices[t.iterative] == S.Binary(
            "+", S.Coord(t.iter_rank), S.Const(1)
        )
        if after and rd.tensor in self.next:
            return self.next[rd.tensor]
        if rd.tensor not in self.vars:
            raise InternalError(f"`{rd.tensor}` is read before it is computed")
        return self.vars[rd.tensor]

    def read(self, rd: S.Read, sp: Space) -> ReadCode:
        """The values (and, where it can be absent, the presence) of a read, before placement."""
        if rd.tensor in self.deferred and rd.tensor != self.fusing:
            self.materialize(rd.tensor)
        var = self.var_of(rd)
        absent = self.A.read(rd) != ALWAYS
        plan = []
        seen: list[str] = []
        gather = False
        for d, ix in enumerate(rd.indices):
            step = self._dim_plan(var, d, ix, sp)
            if step is None:
                gather = True
                break
            if step[0] == "axis" and step[1][0] in sp.fixed and step[1][0] in seen:
                step = ("squeeze", (), ())  # a second dimension at the same fixed index
            for r in step[1]:
                if r in seen:
                    gather = True
                seen.append(r)
            plan.append(step)
        if gather:
            return self._gather(rd, var, sp, absent)
        value, mask = var.value, (var.mask if absent else None)
        zero = var.mask is None or var.zero  # padding reads 0: out-of-range points are zero too
        for d in reversed(range(len(plan))):
            kind, _, args = plan[d]
            if kind == "axis":
                continue
            if kind == "squeeze":
                value = f"{value}.squeeze({d})"
                mask = None if mask is None else f"_sq({mask}, {d})"
                continue
            call = {"take": "_take", "at": "_take", "split": "_split"}[kind]
            extra = ", squeeze=True" if kind == "at" else ""
            text = f"{call}({value}, {mask if absent else None}, {d}, {', '.join(args)}{extra})"
            if text in self.reads:  # the same slice already taken in this step
                value, mask = self.reads[text]
                continue
            name = self.temp()
            if absent:
                self.emit(f"{name}, {name}m = {text}")
                value, mask = name, f"{name}m"
            else:
                self.emit(f"{name} = {text}[0]")
                value = name
            self.reads[text] = (value, mask)
        axes = tuple(r for _, rs, _ in plan for r in rs)
        whole = all(kind == "axis" for kind, _, _ in plan)  # a view of the variable: no padding read
        return ReadCode(value, mask, axes, zero, var.finite, var.neg_inf and whole and mask is not None)

    def _dim_plan(self, var: Var, d: int, ix: S.Expr, sp: Space):
        """How dimension ``d`` is read: (kind, ranks of the result dims, call arguments), or None: gather."""
        aff = self.A.affine(ix, sp.fixed)
        if aff is None:
            return None
        origin, length, extent = var.origin[d], var.length[d], var.extent[d]
        whole = origin == num(0) and length == extent
        terms = aff.coefs
        if not terms:
            rel = aff.const - origin
            if length == num(1) and rel == num(0):
                fixed = [r for r in coords(ix) if r in sp.fixed]
                return ("axis", tuple(fixed), ()) if len(fixed) == 1 else ("squeeze", (), ())
            if not whole:
                raise InternalError("a read outside the window of a loop tensor")
            return ("at", (), (lin_code(rel), "1", lin_code(extent)))
        if len(terms) == 1 and terms[0][1] == 1:
            ((r, _),) = terms
            start = sp.start[r] + aff.const - origin
            if start == num(0) and sp.length[r] == length:
                return ("axis", (r,), ())
            # (inside a window of a loop tensor, a step's rows: in range by construction)
            return (
                "take",
                (r,),
                (lin_code(start), lin_code(sp.length[r]), lin_code(extent if whole else length)),
            )
        if len(terms) == 2 and whole and aff.const == num(0):
            (r1, c1), (r2, c2) = sorted(terms, key=lambda t: t[1], reverse=True)
            ok = c2 == 1 and num(c1) == sp.length[r2] and sp.start[r1] == num(0) == sp.start[r2]
            if ok:
                return ("split", (r1, r2), (str(c1), lin_code(sp.length[r1]), lin_code(extent)))
        return None

    def _gather(self, rd: S.Read, var: Var, sp: Space, absent: bool) -> ReadCode:
        t = self.prog.tensor(rd.tensor)
        idx, checks, masks = [], [], []
        for k, ix in enumerate(rd.indices):
            code, mask, _ = self.int_code(ix, sp)
            masks.append(mask)
            if var.origin[k] != num(0) or var.length[k] != var.extent[k]:
                # a window of a loop tensor: fusion guarantees the index falls inside it
                idx.append(f"({code} - ({lin_code(var.origin[k])}))")
                checks.append("False")
                continue
            idx.append(code)
            if self.A.in_bounds(t, k, ix):
                checks.append("False")
            else:
                iv = self.interval(ix, sp)
                checks.append("True" if iv is None else f"_outside({iv}, {lin_code(var.extent[k])})")
        name = self.temp()
        text = (
            f"_gather({var.value}, {var.mask if absent else None}, {tuple_code(idx)}, "
            f"{shape_code(var.length)}, {tuple_code(checks)}, {sp.ndim})"
        )
        if absent:
            self.emit(f"{name}, {name}m = {text}")
            mask = self.and_masks(f"{name}m", *masks)
        else:
            self.emit(f"{name} = {text}[0]")
            mask = None
        varies = frozenset(r for ix in rd.indices for r in coords(ix) if r in sp.ranks)
        return ReadCode(name, mask, sp.ranks, finite=var.finite, ranks=varies)

    def place(self, rc: ReadCode, sp: Space) -> tuple[str, str | None]:
        """Value and mask codes of a read over the whole space."""
        axes = tuple(sp.axis(r) for r in rc.axes)
        order = sorted(range(len(axes)), key=axes.__getitem__)
        value = rc.value
        if order != list(range(len(axes))):
            value = f"{value}.permute({', '.join(map(str, order))})"
        present = sorted(axes)
        if present and len(present) != sp.ndim:  # (a 0-dim value broadcasts as it is)
            items = ["None" if a not in present else ":" for a in range(sp.ndim)]
            while items and items[-1] == ":":
                items.pop()
            value = f"{value}[{', '.join(items)}]"
        mask = rc.mask  # (a mask keeps one axis per space rank, even when it does not vary)
        if mask is not None and (order != list(range(len(axes))) or len(present) != sp.ndim):
            mask = self.name_mask(f"_place({mask}, {tuple_code(axes) if axes else '()'}, {sp.ndim})")
        return value, mask

    # ---- integer expressions (indices, filters) ------------------------------------------------------------
    def int_code(self, e: S.Expr, sp: Space) -> tuple[str, str | None, bool]:
        """(code, mask, scalar) of an integer expression over the space."""
        if isinstance(e, S.Const):
            return number_code(e.value), None, True
        if isinstance(e, S.Coord):
            if e.rank in sp.fixed:
                return lin_code(sp.start[e.rank]), None, True
            r = e.rank
            code = f"_ci({lin_code(sp.start[r])}, {lin_code(sp.length[r])}, {sp.axis(r)}, {sp.ndim}, _o)"
            return code, None, False
        if isinstance(e, S.Size):
            return lin_code(self.size(e.rank)), None, True
        if isinstance(e, S.Param):
            return number_code(self.prog.param_values[e.name]), None, True
        if isinstance(e, S.Read):
            rc = self.read(e, sp)
            value, mask = self.place(rc, sp)
            return value, mask, False
        if isinstance(e, S.Unary):
            a, m, s = self.int_code(e.x, sp)
            return f"(-{a})", m, s
        if isinstance(e, S.Binary):
            a, ma, sa = self.int_code(e.a, sp)
            b, mb, sb = self.int_code(e.b, sp)
            known = isinstance(e.b, (S.Const, S.Param)) and self._value(e.b) != 0
            if e.op in ("//", "%") and not known:  # a zero divisor makes the point absent
                name = self.temp()
                self.emit(f"{name}, {name}m = _idiv({a}, {b}, {e.op!r}, _o)")
                return name, self.and_masks(ma, mb, f"{name}m"), sa and sb
            return f"({a} {e.op} {b})", self.and_masks(ma, mb), sa and sb
        if isinstance(e, S.Call):
            args = [self.int_code(x, sp) for x in e.args]
            codes = [a for a, _, _ in args]
            scalar = all(s for _, _, s in args)
            mask = self.and_masks(*(m for _, m, _ in args))
            if e.fn == "clamp":
                x, lo, hi = codes
                code = f"min(max({x}, {lo}), {hi})" if scalar else f"_imin(_imax({x}, {lo}), {hi})"
            else:
                code = f"{e.fn}({', '.join(codes)})" if scalar else f"_i{e.fn}({', '.join(codes)})"
            return code, mask, scalar
        raise InternalError(f"not an integer expression: {type(e).__name__}")

    def interval(self, e: S.Expr, sp: Space) -> str | None:
        """Code of (lo, hi) bounds of an index expression, or None when it reads tensors."""
        if isinstance(e, (S.Const, S.Size, S.Param)):
            return self.int_code(e, sp)[0]
        if isinstance(e, S.Coord):
            start = lin_code(sp.start[e.rank])
            if e.rank in sp.fixed:
                return start
            return f"({start}, {lin_code(sp.start[e.rank] + sp.length[e.rank] - num(1))})"
        if isinstance(e, S.Unary):
            a = self.interval(e.x, sp)
            return None if a is None else f"_iv('neg', {a})"
        if isinstance(e, S.Binary):
            a, b = self.interval(e.a, sp), self.interval(e.b, sp)
            return None if a is None or b is None else f"_iv('{e.op}', {a}, {b})"
        if isinstance(e, S.Call):
            args = [self.interval(x, sp) for x in e.args]
            if None in args:
                return None
            if e.fn == "clamp":
                return f"_iv('min', _iv('max', {args[0]}, {args[1]}), {args[2]})"
            return f"_iv('{e.fn}', {', '.join(args)})"
        return None

    def condition(self, f: S.Expr, sp: Space) -> tuple[str, str | None]:
        """(truth, presence) codes of a filter over the space."""
        if isinstance(f, S.Compare):
            a, ma, sa = self.int_code(f.a, sp)
            b, mb, sb = self.int_code(f.b, sp)
            code = f"({a} {f.op} {b})"
            if sa and sb:
                code = f"_cond({code}, _o, {sp.ndim})"
            return code, self.and_masks(ma, mb)
        if isinstance(f, S.Logic):
            a, ma = self.condition(f.a, sp)
            b, mb = self.condition(f.b, sp)
            return f"({a} {'&' if f.op == 'and' else '|'} {b})", self.and_masks(ma, mb)
        if isinstance(f, S.Not):
            a, ma = self.condition(f.x, sp)
            return f"(~{a})", ma
        raise InternalError(f"not a condition: {type(f).__name__}")

    def filter_mask(self, e: Einsum, sp: Space) -> str | None:
        if e.filter is None:
            return None
        truth, mask = self.condition(e.filter, sp)
        if all(r in self.ctx_fixed for r in coords(e.filter)):  # (`g[t] > 0` at the loop's step: 0-d)
            truth = f"_cond({truth}, _o, {sp.ndim})"
        key = self.mask_key(e.filter, sp, e.label) if self.ctx_fixed else None
        if key is not None:  # a step's filter that an earlier step may have computed already
            self.pooling = True
            truth = f"_memo(_pool, {key}, lambda: {truth})"
        if e.label in self.whole_tiles:  # the step's rows see the whole tile: the filter holds everywhere
            truth = f"(None if _whole else {truth})"
        return self.and_masks(self.name_mask(truth), mask)

    def mask_key(self, f: S.Expr, sp: Space, label: str) -> str | None:
        """Code of a key that determines a filter's mask over the space, or None. When every comparison of
        the filter is affine in the coordinates with constant coefficients (``m1 * M0 + m0 <= p``,
        ``p - W < m``), its truth at a point is ``off + sum c_r * local_r >= 0`` (``local_r`` counted from
        the start of rank ``r`` in the space): the mask depends only on each comparison's offset ``off``
        (its two sides' difference at the space's first point) and on the space's lengths. The tiles of a
        loop repeat those (causal attention's diagonal tiles share one mask, a sliding window's two), so a
        step reuses the mask an earlier step made (``_memo``, in the call's pool)."""
        offsets: list[str] = []

        def atoms(g: S.Expr) -> bool:
            if isinstance(g, S.Compare):
                a, b = self.affine_offset(g.a, sp), self.affine_offset(g.b, sp)
                if a is None or b is None:
                    return False
                offsets.append(f"({a}) - ({b})")
                return True
            if isinstance(g, S.Logic):
                return atoms(g.a) and atoms(g.b)
            if isinstance(g, S.Not):
                return atoms(g.x)
            return False

        if not atoms(f):
            return None
        lengths = [lin_code(sp.length[r]) for r in sp.ranks if r not in sp.fixed]
        return tuple_code((f'"mask of {label}"', *offsets, *lengths))

    def affine_offset(self, e: S.Expr, sp: Space) -> str | None:
        """Code of an integer expression's value at the space's first point, when the expression is affine in
        the coordinates with constant coefficients; else None."""
        if isinstance(e, S.Const):
            return number_code(e.value) if isinstance(e.value, int) else None
        if isinstance(e, S.Coord):
            return lin_code(sp.start[e.rank])
        if isinstance(e, S.Size):
            return lin_code(self.size(e.rank))
        if isinstance(e, S.Param):
            v = self.prog.param_values[e.name]
            return number_code(v) if isinstance(v, int) else None
        if isinstance(e, S.Unary):
            x = self.affine_offset(e.x, sp)
            return None if x is None else f"(-{x})"
        if isinstance(e, S.Binary) and e.op in "+-*":
            a, b = self.affine_offset(e.a, sp), self.affine_offset(e.b, sp)
            if a is None or b is None:
                return None
            if e.op == "*" and coords(e.a) and coords(e.b):
                return None  # a product of coordinates: not affine
            return f"({a} {e.op} {b})"
        return None

    # ---- values --------------------------------------------------------------------------------------------
    def tensor_code(self, v: Val) -> str:
        return f"_c({v.code}, _o)" if v.scalar else v.code

    def val(self, e: S.Expr, sp: Space) -> Val:
        absent = self.A.expr(e) != ALWAYS
        if isinstance(e, S.Const):
            return Val(number_code(float(e.value)), scalar=True, finite=math.isfinite(e.value))
        if isinstance(e, S.Size):
            return Val(lin_code(self.size(e.rank)), scalar=True, finite=True)
        if isinstance(e, S.Param):
            v = self.prog.param_values[e.name]
            return Val(number_code(v), scalar=True, finite=math.isfinite(v))
        if isinstance(e, S.Coord):
            r = e.rank
            if r in sp.fixed:
                return Val(lin_code(sp.start[r]), scalar=True, finite=True)
            code = f"_cf({lin_code(sp.start[r])}, {lin_code(sp.length[r])}, {sp.axis(r)}, {sp.ndim}, _o)"
            return Val(code, ranks=frozenset({r}), finite=True)
        if isinstance(e, S.Read):
            rc = self.read(e, sp)
            value, mask = self.place(rc, sp)
            if self.prog.tensor(e.tensor).dtype == "int":
                value = f"{value}.to(_o[0])"
            mask = mask if absent else None
            zero_filtered = self.filter_now is None
            return Val(
                value,
                mask,
                ranks=rc.ranks if rc.ranks is not None else frozenset(rc.axes),
                zero=rc.zero,
                zero_filtered=zero_filtered,
                finite=rc.finite,
                neg_inf=rc.neg_inf and mask is not None,
            )
        if isinstance(e, S.Call):
            self.functions.add(e.fn)
            args = [self.val(a, sp) for a in e.args]
            codes = [self.tensor_code(a) for a in args]
            guard = self.and_masks(
                args[0].mask, *((self.filter_now, self.extra_guard) if args[0].ranks else ())
            )
            zero = False
            temporary = e.fn == "exp" and isinstance(e.args[0], S.Binary) and not args[0].scalar
            if temporary:
                # the argument is a temporary of its own: exp (and the -inf at absent points) in its memory
                extra = "" if guard is None else f", {guard}" + (", finite=True" if args[0].finite else "")
                if args[0].neg_inf and guard == args[0].mask:
                    extra = ""  # -inf there already
                if args[0].diff is not None:
                    codes[0] = f"_exp_diff({', '.join(args[0].diff)}, _inplace{extra})"
                else:
                    codes[0] = f"_exp_fresh({codes[0]}, _inplace{extra})"
                zero = guard is not None
            elif e.fn in UNSAFE and guard is not None:
                fin = ", finite=True" if args[0].finite else ""
                if e.fn in ("exp", "exp2"):  # -inf there: exactly 0 wherever the value is absent
                    codes[0] = f"_safe({codes[0]}, {guard}, -math.inf{fin})"
                    zero = True
                else:
                    codes[0] = f"_safe({codes[0]}, {guard}{fin})"
            mask = self.and_masks(*(a.mask for a in args)) if absent else None
            ranks = frozenset().union(*(a.ranks for a in args))
            finite = all(a.finite for a in args) and (e.fn not in UNSAFE or self._finite_scalar(e))
            code = codes[0] if temporary else f"fn_{e.fn}({', '.join(codes)})"
            # 0 outside the filter too only where the filter guarded the argument (a constant argument is
            # not guarded by it: `T2 = exp(T1)  where ...` summed over the filter's ranks)
            filtered = zero and (bool(args[0].ranks) or self.filter_now is None)
            return Val(code, mask, ranks=ranks, zero=zero, zero_filtered=filtered, finite=finite)
        if isinstance(e, S.Unary):
            a = self.val(e.x, sp)
            return Val(f"(-{a.code})", a.mask, a.scalar, a.ranks, a.zero, a.zero_filtered, a.finite)
        if isinstance(e, S.Binary):
            fused = self.accumulate(e, sp) if e.op == "+" else None
            if fused is not None:
                return fused
            a, b = self.val(e.a, sp), self.val(e.b, sp)
            if e.op == "-" and e.a == e.b and a.mask is not None and absent and not a.scalar:
                # `XM - XM` (einattn.rewrite.exact): 0 at absent points, not `-inf - -inf` (see _self_diff)
                code = f"_self_diff({a.code}, {a.mask})"
                return Val(code, a.mask, False, a.ranks, zero=True, finite=a.finite)
            left, right = a.code, b.code
            ma, mb = a.mask, b.mask  # an operand present wherever the other is adds nothing to the mask
            if ma is not None and mb is not None and absent:
                if self.A.implies(e.a, e.b):
                    mb = None
                elif self.A.implies(e.b, e.a):
                    ma = None
            if e.op in ("/", "//", "%"):
                if a.scalar and b.scalar:
                    left = f"_c({left}, _o)"
                guard = self.and_masks(b.mask, self.filter_now if b.ranks else None)
                if guard is not None:
                    fin = ", finite=True" if b.finite else ""
                    right = f"_safe({self.tensor_code(b)}, {guard}{fin})"
            mask = self.and_masks(ma, mb) if absent else None
            scalar = a.scalar and b.scalar and e.op not in ("/", "//", "%")
            product = e.op == "*"
            # 0 where absent: 0 (an absent factor's) times a finite value (the other's, present or not:
            # `S * exp(B * 1000)` with S a masked sum is NaN where S is absent and the exp overflows)
            zero = product and all((x.mask is None or x.zero) and x.finite for x in (a, b))
            zero_filtered = product and (a.zero_filtered or b.zero_filtered)
            finite = e.op in "+-*" and a.finite and b.finite  # (a division may divide by zero)
            neg_inf = e.op == "-" and a.neg_inf and mb is None and self.filter_now is None
            if neg_inf:  # -inf - y stays -inf at absent points once y > -inf
                right = f"_above({right})"
            code = f"({left} {e.op} {right})"
            dies = isinstance(e.a, S.Read) and e.a.tensor in self.dying_now and self.var_of(e.a).fresh
            state = isinstance(e.a, S.Read) and self.updating.get(self.label_now) == e.a.tensor
            diff = None
            if (dies or state) and e.op in _IN_PLACE:
                # the statement reads `a` last: when no gradient is recorded, compute in its memory
                code = f"{_IN_PLACE[e.op]}({left}, {right}, _inplace)"
                diff = (left, right) if e.op == "-" and not (a.scalar or b.scalar) else None
            elif e is self.output_expr and e.op in _IN_PLACE and not (a.scalar and b.scalar):
                # the output's own memory, laid out as returned: `_out` copies nothing (a transposed
                # state divided by its denominator is one pass, not a division and then a copy)
                code = f"_dense_op({_IN_PLACE[e.op]}, {left}, {right}, _inplace)"
            return Val(code, mask, scalar, a.ranks | b.ranks, zero, zero_filtered, finite, neg_inf, diff)
        if isinstance(e, S.Default):
            summed = self.sum_of_present(e, sp)
            if summed is not None:
                return summed
            a, b = self.val(e.a, sp), self.val(e.b, sp)
            keep = self.defaulted & set().union(*(self.carried.get(t, set()) for t in _value_reads(e.b)))
            if a.mask is None:  # (never absent: the default's inputs are joined to the outputs instead)
                self.dropped |= keep
                return a
            ma = self.name_mask(a.mask)
            mask = None if b.mask is None or not absent else self.name_mask(f"_or({ma}, {b.mask})")
            finite = a.finite and b.finite
            if a.zero and b.code == "0.0":  # absent points already hold the default
                return Val(a.code, mask, ranks=a.ranks, finite=finite)
            fin = ", finite=True" if a.finite else ""
            if self.owning and b.scalar:  # (see accumulate)
                fin += ", own=_inplace"
            if keep:  # (a run that needs no default keeps its inputs in the graph, see _dflt)
                fin += ", keep=True"
            code = f"_dflt({self.tensor_code(a)}, {ma}, {b.code}{fin})"
            return Val(code, mask, ranks=a.ranks | b.ranks, finite=finite)
        raise InternalError(f"no PyTorch lowering for {type(e).__name__}")

    def sum_of_present(self, e: S.Default, sp: Space) -> Val | None:
        """``(X + (Y ?? 0)) ?? Y`` (:func:`present_sum`: the sum of the present terms, the rewrite's running
        sums) as ``X + (Y ?? 0)``, present where either is, when ``X`` holds 0 at its absent points (or has
        none): where ``X`` is absent the sum is then ``Y`` already. No ``where`` pass, and a deferred matmul
        ``X`` accumulates into ``Y``'s memory (:meth:`accumulate`), as in the hand-written ``(X ?? 0) + Y``.
        None when the form does not apply (the general ``??`` then)."""
        parts = present_sum(e)
        if parts is None:
            return None
        x, y = parts
        var = self.vars.get(x.tensor)
        if var is None or not (var.mask is None or var.zero) or x.tensor in self.next:
            return None
        if any(self._dim_plan(var, d, ix, sp) is None for d, ix in enumerate(x.indices)):
            return None  # a gather clamps its indices: where it is absent it reads another point, not 0
        self.summing = y.tensor
        s = self.val(e.a, sp)
        self.summing = None
        b = self.val(y, sp)
        mask = None
        if self.A.expr(e) != ALWAYS and s.mask is not None and b.mask is not None:
            mask = self.name_mask(f"_or({self.name_mask(s.mask)}, {self.name_mask(b.mask)})")
        self.summed_now = True
        return Val(s.code, mask, ranks=s.ranks | b.ranks, zero=True, finite=s.finite and b.finite)

    def materialize(self, tensor: str) -> None:
        """Compute a deferred matmul after all (its reader could not take it into a sum)."""
        spec, args = self.deferred.pop(tensor)
        self.emit(f'{self.vars[tensor].value} = _mm("{spec}", {args})')

    def accumulate(self, e: S.Binary, sp: Space) -> Val | None:
        """``C + T`` (or ``(C ?? 0) + T``) where ``C`` is a deferred matmul (:func:`accumulated_into`): one
        ``_mm(..., acc=T)``, the matmul accumulating into ``T`` (in ``T``'s memory when this statement reads
        ``T`` last and no gradient is recorded): no tensor for ``C``, no pass to add it. None when ``C`` is
        not read as the whole of its variable (it is then computed as usual)."""
        for side, other in ((e.a, e.b), (e.b, e.a)):
            rd = side.a if isinstance(side, S.Default) else side
            if not (isinstance(rd, S.Read) and rd.tensor in self.deferred):
                continue
            if self.acc_into.get(rd.tensor) != self.label_now:
                continue  # (an earlier reader: the read computes it, for this one and its own reader)
            mark, reads, masks = len(self.lines), dict(self.reads), dict(self.masks)
            self.fusing = rd.tensor
            c = self.val(side, sp)
            self.fusing = None
            if c.code != self.vars[rd.tensor].value:  # a slice, or a default filled in: undo, compute it
                del self.lines[mark:]
                self.reads, self.masks = reads, masks
                self.materialize(rd.tensor)
                return None
            own = isinstance(other, S.Read) and other.tensor in self.dying_now and self.var_of(other).fresh
            summed = isinstance(other, S.Default) and isinstance(other.a, S.Read)
            if summed and other.a.tensor == self.summing:
                # `Y ?? 0` of a sum of the present terms: Y itself (or a `where` of it), whose value nothing
                # reads after this sum (its second read in the form is for its presence only); the 0 is
                # written into Y's memory where Y is absent, which then stays a term to accumulate into
                own = other.a.tensor in self.dying_now and self.var_of(other.a).fresh
                self.owning = own
            t = self.val(other, sp)
            self.owning = False
            spec, args = self.deferred.pop(rd.tensor)
            tail = ", inplace=_inplace)" if own else ")"
            code = f'_mm("{spec}", {args}, acc={self.tensor_code(t)}{tail}'
            absent = self.A.expr(e) != ALWAYS
            mask = self.and_masks(c.mask, t.mask) if absent else None
            return Val(code, mask, False, c.ranks | t.ranks, finite=c.finite and t.finite)
        return None

    def _finite_scalar(self, e: S.Call) -> bool:
        """An unsafe function of a constant that is finite: ``rsqrt(E)`` (sizes are >= 1), ``exp(0.5)``."""
        x = e.args[0]
        if any(isinstance(n, (S.Coord, S.Read)) for n in x.walk()):
            return False
        if not any(isinstance(n, S.Size) for n in x.walk()):
            v = constant_value(self.prog, e, {})
            return v is not None and math.isfinite(v)
        positive = all(
            isinstance(n, S.Size)
            or (isinstance(n, S.Binary) and n.op in "*+")
            or (isinstance(n, (S.Const, S.Param)) and self._value(n) > 0)
            for n in x.walk()
        )
        return positive and not self.empty and e.fn in ("rsqrt", "sqrt", "log", "log2")

    def _value(self, n: S.Expr) -> float:
        return n.value if isinstance(n, S.Const) else self.prog.param_values[n.name]

    # ---- statements ----------------------------------------------------------------------------------------
    def statement(self, e: Einsum) -> None:
        self.masks = {}
        self.emit(f"# {format_einsum(e)}")
        sp = self.space(e)
        self.dying_now = self.dying.get(e.label, frozenset()) | self.dying_states.get(e.label, frozenset())
        self.label_now = e.label
        top = e.kind == "plain" and not e.reduce and not self.ctx_fixed and e.tensor in self.prog.outputs
        self.output_expr = e.expr if top else None  # an output's elementwise value: born contiguous
        # points outside the filter are absent: functions that could overflow see a safe value there too,
        # so that every value at an absent point is finite (the runtime fills absent points arithmetically)
        self.filter_now = self.filter_mask(e, sp)
        sums = tuple(r for r, op in e.reduce if op == "+")
        factors = _factors(e.expr)
        if sums and factors is not None and sum(1 for f, _ in factors if coords(f) or _reads(f)) >= 2:
            value, mask, ranks, zero = self.contraction(e, sp, factors, sums)
        else:
            value, mask, ranks, zero = self.evaluate(e, sp, sums)
        if self.A.statement(e) == ALWAYS:
            mask = None
        self.filter_now = None
        self.dying_now = frozenset()
        self.write(e, value, mask, ranks, zero, self.finite_now)

    def evaluate(self, e: Einsum, sp: Space, sums: tuple[str, ...]):
        """Elementwise over the space, then the reductions (sums first, then ``::`` max/min)."""
        v = self.val(e.expr, sp)
        mask = self.and_masks(v.mask, self.filter_now)
        code, ranks = self.tensor_code(v), set(v.ranks)
        zero = (v.mask is None or v.zero) and (self.filter_now is None or v.zero_filtered)
        self.finite_now = v.finite
        computed = not v.scalar and (isinstance(e.expr, (S.Binary, S.Unary)) or self.summed_now)
        self.summed_now = False
        self.fresh_now = bool(e.reduce) or computed or _fresh_call(e.expr)
        if not e.reduce:
            return code, mask, ranks, zero
        layout = list(sp.ranks)
        shape = shape_code(sp.length[r] for r in sp.ranks)
        if not v.ranks:  # a value constant over the space, reduced: a (broadcast) tensor over the space first
            code = f"_store({code}, {shape}, _o)"
        stages = [("+", sums)] + [
            (op, tuple(r for r, o in e.reduce if o == op)) for op in ("max", "min") if op != "+"
        ]
        for op, ranks_ in stages:
            if not ranks_:
                continue
            dims = tuple(layout.index(r) for r in ranks_)
            inline = mask is None and not self.empty and (op != "+" or set(ranks_) <= ranks)
            if inline:
                method = {"+": "sum", "max": "amax", "min": "amin"}[op]
                code = f"{code}.{method}(dim={tuple_code(dims)})"
            else:
                fn = {"+": "_rsum", "max": "_rmax", "min": "_rmin"}[op]
                name = self.temp()
                extra = ", zero=True" if op == "+" and zero else ""
                extra += ", finite=True" if v.finite else ""
                if op == "max" and v.neg_inf and self.filter_now is None:
                    extra += ", filled=True"  # absent points already -inf: no masked copy
                extra += self.scratch(name)
                self.emit(f"{name}, {name}m = {fn}({code}, {mask}, {tuple_code(dims)}, {shape}{extra})")
                code, mask = name, f"{name}m"
            # a sum leaves 0 where no point was present; a max or min only when its mask is computed, which
            # dead_masks_removed skips where nothing reads it (`Y ?? 0` then reads it: not taken as 0), and
            # then it leaves -inf or inf there: not finite (`exp(S - G)` of an empty row's G)
            zero = op == "+"
            if op != "+" and not inline:
                self.finite_now = False
            shape = shape_code(sp.length[r] for r in layout if r not in ranks_)
            layout = [r for r in layout if r not in ranks_]
            ranks -= set(ranks_)
        return code, mask, ranks, zero

    def contraction(self, e: Einsum, sp: Space, factors, sums: tuple[str, ...]):
        """A sum of products over ``sums`` as one torch.einsum, then any ``::`` reduction."""
        letters = _letters(sp.ranks)
        scalars, operands, outer, inner = [], [], [], []
        result_zero = True  # 0 where absent: every mask's factor is 0 there (or zero-filled)
        all_finite = True
        # per operand: (safe: finite wherever another factor is absent; its mask if the sum skips its absent
        # points; its axes; the ranks along which that mask varies) -- see unbounded_factors_zeroed
        kinds = []
        outer_ranks: set[str] = set()  # the ranks along which the masks in `outer` vary
        # (for inputs that may hold an infinity or NaN, any factor may: `V` past a cache's length, which the
        # scores' filter removes, is zeroed there, as 0 * NaN would put NaN into the sum)
        unbounded = {id(f) for f, _ in factors if not (self.finite_inputs and bounded(self.prog, f))}
        # A computed factor with a function that may overflow (Lightning's `exp(log(lam) * (p - m))`) is
        # evaluated last, its function seeing a safe argument wherever another factor is absent (the
        # double `where` of `_safe`): 0 * inf would be NaN in the sum, and in the gradient
        late_ids = {
            id(f)
            for f, _ in factors
            if id(f) in unbounded and not isinstance(f, S.Read) and _unsafe_calls(f) and len(factors) > 1
        }
        # a divisor too: `/ (p - m + 1)` is 0 where m = p + 1, which a causal factor makes absent, and
        # `/ (T[m] - T[p])` where m = p, which a factor's `where m < p` makes absent
        late_ids |= {id(f) for f, inverse in factors if inverse and len(factors) > 1}
        factors = [x for x in factors if id(x[0]) not in late_ids] + [
            x for x in factors if id(x[0]) in late_ids
        ]
        for f, inverse in factors:
            if id(f) in late_ids and self.extra_guard is None:
                self.extra_guard = self.and_masks(*(m for m in inner))
            absent = self.A.expr(f) != ALWAYS
            plain_read = isinstance(f, S.Read) and f.indices and self.prog.tensor(f.tensor).dtype != "int"
            if plain_read and not inverse:
                rc = self.read(f, sp)
                code, axes, mask = rc.value, rc.axes, (rc.mask if absent else None)
                axes_code = tuple_code(tuple(sp.axis(r) for r in axes)) if axes else "()"
                placed = None if mask is None else f"_place({mask}, {axes_code}, {sp.ndim})"
                # (a gather has every axis, of size 1 where it does not vary: the result is broadcast there)
                ranks = set(axes) if rc.ranks is None else set(rc.ranks)
                zero, finite = rc.zero, rc.finite
            else:
                v = self.val(f, sp)
                code = self.tensor_code(v) if inverse else v.code
                if inverse:  # (1 where the factor is absent, the statement's filter drops the point, or an
                    # earlier factor is absent: the sum skips it, and 1 / 0 there would be 0 * inf, NaN, in
                    # the sum and its gradient)
                    # (a divisor without ranks is one number: 0 everywhere or nowhere, and a mask would
                    # broadcast it to the mask's shape)
                    late = self.extra_guard if id(f) in late_ids and v.ranks else None
                    guard = self.and_masks(v.mask, self.filter_now if v.ranks else None, late)
                    if guard is not None:  # (a value without ranks stays 0-d: its mask is placed in the
                        # space, of size 1 along every rank)
                        code = f"_safe({code}, {self.name_mask(guard)})" + ("" if v.ranks else ".reshape(())")
                    code = f"(1.0 / {code})"
                if not v.ranks and v.mask is None:
                    scalars.append(self.hoist(code))
                    all_finite &= v.finite and not inverse
                    continue
                axes = sp.ranks if v.ranks else ()
                mask = placed = v.mask
                ranks, zero, finite = set(v.ranks), v.zero and not inverse, v.finite and not inverse
            skipped, varying = None, self._mask_ranks(f) if mask is not None else set()
            if mask is not None:
                if varying & set(sums):
                    if not zero:
                        fin = ", finite=True" if finite else ""
                        code = f"_zf({code}, {self.name_mask(mask)}{fin})"
                    inner.append(placed)
                    skipped = placed
                else:
                    outer.append(placed)
                    outer_ranks |= varying
                    result_zero &= zero
            operands.append([code, "".join(letters[r] for r in axes), ranks])
            # (a late factor is finite wherever the others are absent: its functions saw a safe argument)
            late = id(f) in late_ids and self.extra_guard is not None and (_guarded(f) or inverse)
            kinds.append((finite or id(f) not in unbounded or late, skipped, tuple(axes), varying))
            all_finite &= finite
        self.finite_now = all_finite
        self.fresh_now = True  # a matmul's or einsum's result
        fm = self.filter_now
        if fm is not None:
            if set(coords(e.filter)) & set(sums):
                subs = "".join(letters[r] for r in sp.ranks)
                operands.append([f"_fmask({fm}, {sp.ndim}, _o)", subs, set(coords(e.filter))])
                inner.append(fm)
                kinds.append((True, fm, tuple(sp.ranks), set(coords(e.filter))))
            else:
                outer.append(fm)
                outer_ranks |= set(coords(e.filter))
                result_zero = False
        self.extra_guard = None
        self.unbounded_factors_zeroed(operands, kinds, sp)
        if not self.finite_inputs:
            self.unread_operands_zeroed(operands, kinds, outer, outer_ranks, sp)
        keep = [r for r in sp.ranks if r not in sums]
        operands = self._order(operands, keep)
        call = "_mm" if len(operands) == 2 else "torch.einsum"  # two operands: one batched matmul
        alpha = ""
        if scalars and call == "_mm":  # the matmul's alpha where it can be (see _mm)
            alpha = f", alpha={' * '.join(scalars)}"
        elif scalars:
            k = min(range(len(operands)), key=lambda i: self._weight(operands[i][2], prefer_local=True))
            operands[k][0] = f"{operands[k][0]} * {' * '.join(scalars)}"
        made = [r for r in keep if any(letters[r] in o[1] for o in operands)]
        named = [(r, op) for r, op in e.reduce if op != "+"]  # `::` reductions, after the sum of products
        last = self.reduced_by_readers(e) if call == "_mm" and not named else None
        if last in made and made[-1] != last:  # the rank its readers reduce innermost (see the method)
            made = [r for r in made if r != last] + [last]
        spec = ",".join(o[1] for o in operands) + "->" + "".join(letters[r] for r in made)
        pool = ""
        if call == "_mm" and self.ctx_fixed and e.tensor in self.pooled:  # a tile dead by the next step
            pool, self.pooling = f', _pool, "t_{e.tensor}"', True  # keys: generated names, never clash
        code = f'{call}("{spec}", {", ".join(o[0] for o in operands)}{pool}{alpha})'
        if call == "_mm" and made == keep:
            self.last_mm = (code, spec, f"{', '.join(o[0] for o in operands)}{alpha}")
        if made != keep:
            axes_code = tuple_code(tuple(keep.index(r) for r in made)) if made else "()"
            code = f"_place({code}, {axes_code}, {len(keep)})"
        mask = None
        if self.A.statement(e) != ALWAYS:
            dims = tuple(sp.axis(r) for r in sums)
            if self.empty:
                shape = shape_code(sp.length[r] for r in sp.ranks)
                outer.append(f"_nonempty({tuple_code(dims)}, {shape}, _o)")
            if outer or inner:
                mask = self.name_mask(
                    f"_cmask({tuple_code(dims)}, {tuple_code(outer) if outer else '()'}, "
                    f"{tuple_code(inner) if inner else '()'})"
                )
        ranks = set().union(*(o[2] for o in operands)) - set(sums)
        if not named:
            return code, mask, ranks, result_zero
        op = named[0][1]
        dims = tuple(keep.index(r) for r, _ in named)
        shape = shape_code(sp.length[r] for r in keep)
        name = self.temp()
        fn = "_rmax" if op == "max" else "_rmin"
        fin = (", finite=True" if all_finite else "") + self.scratch(name)
        self.emit(f"{name}, {name}m = {fn}({code}, {mask}, {tuple_code(dims)}, {shape}{fin})")
        return name, f"{name}m", ranks - {r for r, _ in named}, True

    def unbounded_factors_zeroed(self, operands, kinds, sp: Space) -> None:
        """A factor that may be infinite (``exp(log(lam) * (p - m))`` grows without bound where ``m > p``) is
        zeroed where another factor is absent: the sum skips those products, but the zero-filled factor
        times an infinity would put NaN into it (Lightning attention's decay, filtered out by the causal
        scores it multiplies, overflows float32 beyond 128 positions). Finite factors need nothing: a
        zero-filled factor times a finite one is 0; nor does a factor bounded where it is present
        (:func:`bounded`: softmax's ``exp(BQK - RM)``), which its own zero fill covers where it is not.

        The other factors' masks are taken in the factor's own dimensions (``_zf_own``) when their presence
        varies only along ranks the factor has (the analysis says so); otherwise the factor is widened to
        the statement's space, which costs memory but stays exact."""
        for k, (safe, own, axes, _) in enumerate(kinds):
            others = [(m, v) for _, m, _, v in kinds if m is not None and m is not own]
            if safe or not others:
                continue
            code = operands[k][0]
            varying = set().union(*(v for _, v in others))
            mask = self.and_masks(*(m for m, _ in others))
            if varying <= set(axes):
                dims = tuple_code(tuple(sp.axis(r) for r in axes))
                operands[k][0] = f"_zf_own({code}, {mask}, {dims})"
                continue
            if tuple(axes) != tuple(sp.ranks):  # the masks are over the whole space
                axes_code = tuple_code(tuple(sp.axis(r) for r in axes)) if axes else "()"
                code = f"_place({code}, {axes_code}, {sp.ndim})"
                operands[k][1] = "".join(_letters(sp.ranks)[r] for r in sp.ranks)
                operands[k][2] = set(axes) | varying  # (size 1 along the others: broadcast at the write)
            operands[k][0] = f"_zf({code}, {mask})"

    def unread_operands_zeroed(self, operands, kinds, outer, outer_ranks: set[str], sp: Space) -> None:
        """For inputs that may hold an infinity or NaN (``program_any``): each operand that may be
        non-finite is zeroed where the result is absent (the ``outer`` masks: a filter or factors' masks
        that do not vary along the summed ranks) for every point that reads it, before the product, when a
        gradient is recorded (``_zero_unread``). The sum at an absent point is masked in the forward pass,
        but autograd multiplies the other operand by its gradient there, 0, and ``0 * NaN`` is NaN: ``K``
        NaN past a KV cache's length (``QK[m, p] = Q[p, e] * K[m, e] where m < n``) gave NaN for every row
        of ``Q``'s gradient, and for ``K``'s padding. Only operands that have a rank the masks vary along
        (``K``'s ``m``, not ``Q``); a point that some present result reads keeps its value (a key that a
        causal filter hides from earlier rows only), and so its exception (docs/backends.md)."""
        if not outer:
            return
        mask = self.and_masks(*outer)
        rank_of = {c: r for r, c in _letters(sp.ranks).items()}
        for k, (safe, _, _, _) in enumerate(kinds):
            code, subs, ranks = operands[k]
            if safe or not ranks & outer_ranks:
                continue
            dims = tuple_code(tuple(sp.axis(rank_of[c]) for c in subs))  # (the operand's axes, in order)
            held = tuple_code(tuple(sp.axis(r) for r in sp.ranks if r in ranks))
            operands[k][0] = f"_zero_unread({code}, {mask}, {dims}, {held}, _inplace)"

    def reduced_by_readers(self, e: Einsum) -> str | None:
        """The rank of a loop's tile that its readers reduce (attention's keys ``m0`` of ``BQK[m1, m0, p]``,
        by its max, and by the sum and the ``P V`` of its exponential), to be laid out innermost: the
        reductions then run along contiguous memory, and ``P V`` multiplies ``[rows, keys]`` by ``[keys,
        features]`` with no transposed operand whichever layout the running sum has. On CPU the step runs
        5-13 % faster than with ``[keys, rows]`` tiles. Only for a tile of a loop body that is neither an
        output nor a state (a permuted view of a matmul's result is what its readers see)."""
        state = self.prog.tensor(e.tensor).iterative is not None
        if not self.ctx_fixed or state or e.tensor in self.prog.outputs or e.kind != "plain":
            return None
        votes: dict[str, int] = {}
        for reader in self.prog.einsums:
            for rd in reader.reads():
                if rd.tensor != e.tensor:
                    continue
                for k, ix in enumerate(rd.indices):
                    if isinstance(ix, S.Coord) and ix.rank in reader.reduced:
                        votes[e.index[k].rank] = votes.get(e.index[k].rank, 0) + 1
        return max(votes, key=votes.__getitem__) if votes else None

    def state_layout(self, s: str) -> str:
        """Arguments laying state ``s`` out in memory as the output statement that reads its final value
        wants it (``, order=(...)``, see ``torch_runtime._own``), or "" for its logical order. Attention's
        running sum ``RNV[b, h, f, m1, p]`` is divided into ``AV[b, h, p, f]``: laid out ``[p, f]``, every
        step's ``P V`` accumulates into it with no transposed operand (``_mm_into`` follows the layout), and
        the division writes the output in one contiguous pass instead of a transposing one (on CPU the
        transpose of ``[f, p]`` to ``[p, f]`` costs as much as a step)."""
        t = self.prog.tensor(s)
        for e in self.prog.einsums:
            if e.tensor not in self.prog.outputs:
                continue
            place = {ix.rank: k for k, ix in enumerate(e.index)}
            for rd in e.reads():
                if rd.tensor != s or len(rd.indices) != len(t.ranks):
                    continue
                dims = [d for d in range(len(t.ranks)) if d != t.iterative]
                if not all(isinstance(rd.indices[d], S.Coord) and rd.indices[d].rank in place for d in dims):
                    return ""
                moved = iter(sorted(dims, key=lambda d: place[rd.indices[d].rank]))
                # (the step's dimension has one position: it stays where it is)
                order = tuple(d if d == t.iterative else next(moved) for d in range(len(t.ranks)))
                return "" if order == tuple(range(len(order))) else f", order={tuple_code(order)}"
        return ""

    def scratch(self, key: str) -> str:
        """Arguments giving a reduction helper a buffer for its masked copy of the tile, reused by the next
        steps (inside a loop, when no gradient is recorded; the copy is dead when the helper returns)."""
        if not self.ctx_fixed:
            return ""
        self.pooling = True
        return f', pool=_pool, key="{key}"'

    def _mask_ranks(self, f: S.Expr) -> set[str]:
        """Ranks along which the presence of ``f`` may vary."""
        p = self.A.expr(f)
        if p is None:
            return set(coords(f))
        return {r for c in p for r in c.ranks}

    def _weight(self, ranks, prefer_local: bool = False) -> float:
        """A guess of the number of elements over ``ranks`` (sizes are not known when generating)."""
        w = 1.0
        for r in ranks:
            if r in self.ctx_fixed:
                continue
            v = self.prog.param_values.get(r.upper())
            w *= v if isinstance(v, int) else 64
        if prefer_local and self.ctx_fixed and not set(self.ctx_fixed) & set(ranks):
            w *= 2  # inside a loop, a value that does not change with the step is the larger one
        return w

    def _order(self, operands, keep):
        """Operands in an order where torch's left-to-right contraction keeps intermediates small."""
        if len(operands) <= 2:
            return operands
        rest = list(range(len(operands)))
        best = None
        for i in rest:
            for j in rest:
                if i < j:
                    later = set(keep).union(*(operands[k][2] for k in rest if k not in (i, j)))
                    w = self._weight((operands[i][2] | operands[j][2]) & later)
                    if best is None or w < best[0]:
                        best = (w, [i, j])
        order = best[1]
        acc = operands[order[0]][2] | operands[order[1]][2]
        while len(order) < len(operands):
            cands = [k for k in rest if k not in order]
            scores = []
            for k in cands:
                later = set(keep).union(*(operands[x][2] for x in cands if x != k))
                scores.append((self._weight((acc | operands[k][2]) & later), k))
            _, k = min(scores)
            order.append(k)
            acc |= operands[k][2]
        return [operands[k] for k in order]

    # ---- writing results ----------------------------------------------------------------------------------
    def write(self, e: Einsum, value: str, mask: str | None, ranks, zero: bool = False, finite: bool = False):
        t = self.prog.tensor(e.tensor)
        has_mask = self.has_mask(e.tensor)
        if e.kind == "step":
            r = t.iter_rank
            origin, length = self.window(e.tensor, self.ctx_fixed[r] + num(1))
            vname, mname = f"n_{e.tensor}", f"nm_{e.tensor}"
        else:
            origin, length = self.window(e.tensor)
            vname, mname = f"t_{e.tensor}", f"m_{e.tensor}"
        lhs = [ix.rank for ix in e.index if ix.kind != "init"]
        fresh, self.fresh_now = self.fresh_now and e.kind == "plain", False
        if e.kind == "init":  # the state's dimension of the iterative rank is inserted
            value = f"_store_init({value}, {t.iterative}, {shape_code(length)}, _o)"
            mask = None if mask is None else f"_usq({mask}, {t.iterative})"
        elif lhs and (not ranks or not set(lhs) <= set(ranks) | set(self.ctx_fixed)):
            value = f"_store({value}, {shape_code(length)}, _o)"
            fresh = False  # a broadcast view
        if e.tensor in self.acc_into and fresh and self.last_mm is not None and value == self.last_mm[0]:
            # its one reader adds it to a term of its own: the matmul accumulates into that term there
            self.deferred[e.tensor] = self.last_mm[1:]
            reader = self.acc_into[e.tensor]
            self.emit(f"# (computed in `{reader}`: its matmul accumulates into the other term)")
        else:
            if e.tensor in self.stable and e.kind != "init":  # no output depends on its value
                value = f"_stable({value}, floor=True)" if e.tensor in self.floored else f"_stable({value})"
            elif e.tensor in self.floored and e.kind != "init":  # a shift only (einattn.rewrite.exact)
                value = f"_floored({value})"
            self.emit(f"{vname} = {value}")
        self.last_mm = None
        if has_mask:
            self.emit(f"{mname} = {mask}")
        # a state's variable holds every step: whether it is 0 where absent is not followed through the loop
        zero = zero and has_mask and t.iterative is None
        finite = finite and t.iterative is None
        neg_inf = e.tensor in self.prefill and fresh and finite and has_mask and mask is not None
        if neg_inf:  # -inf at absent points, for its max and its exponential (see prefilled_tiles)
            pool = ", _pool" if self.ctx_fixed else ""
            self.pooling |= bool(pool)
            self.emit(f"{vname} = _neg_fill({vname}, {mname}, _inplace{pool})")
            zero = finite = False
        mvar = mname if has_mask else None
        var = Var(vname, mvar, origin, length, self.extent(e.tensor), zero, finite, fresh, neg_inf)
        if e.kind == "step":
            self.next[e.tensor] = var
        else:
            self.vars[e.tensor] = var

    # ---- loops ---------------------------------------------------------------------------------------------
    def loop(self, step: Loop) -> None:
        """A Python loop over the steps of an iterative rank (in blocks of rows when rows are independent)."""
        prog, r = self.prog, step.rank
        states = loop_states(prog, step)
        members = {e.label for e in step.body}
        local = {e.tensor for e in step.body}
        history, exported = set(), set()
        for e in prog.einsums:
            if e.label in members:
                continue
            for rd in e.reads():
                if rd.tensor in local:
                    t = prog.tensor(rd.tensor)
                    if rd.tensor in states:
                        if rd.indices[t.iterative] != S.Size(r):
                            history.add(rd.tensor)
                    else:
                        exported.add(rd.tensor)
        for name in prog.outputs:
            if name in states:
                history.add(name)
            elif name in local:
                exported.add(name)
        # (no blocks when a size may be 0: an empty rank of rows would give no block, and no state)
        blocked = self.row_block and not (history or exported or self.empty)
        rows = row_ranks(prog, step) if blocked else []
        skip = tile_skip(prog, step) if self.skipping and rows else None
        self.block_now = self.row_block if self.row_block != "auto" else auto_row_block(skip)
        # block the innermost independent rank (the query rows `p` of attention rather than the batch `b`), so
        # that the blocks bound a step's tile whatever the batch and head counts
        p = skip.row if skip is not None else (rows[-1] if rows else None)
        self.emit(f"# loop over {r}: {', '.join(e.label for e in step.body)}")
        if p is not None:
            least = min(self.block_now) if isinstance(self.block_now, tuple) else self.block_now
            self.row_blocks[p] = min(least, self.row_blocks.get(p, least))
            self.block_open(step, states, p, skip)
        for s in sorted(history):
            v = self.vars[s]
            self.emit(f"h_{s}, hm_{s} = [{v.value}], [{v.mask}]")
        for x in sorted(exported):
            self.emit(f"h_{x}, hm_{x} = [], []")
        # a state whose last reader in the step computes in its memory (see updated_states)
        self.updating = {
            label: s for label, s in self.state_updates.items() if label in members and s not in history
        }
        if skip is None:  # (with skipping, the blocks' states are memory of their own already)
            for s in sorted(set(self.updating.values())):
                value, order = self.vars[s].value, self.state_layout(s)
                self.emit(f"{value} = _mine({value}, _inplace{order})  # updated in place")
        self.emit(f"for i_{r} in range({lin_code(self.size(r))}):")
        self.depth += 1
        self.reads = {}
        self.ctx_fixed[r] = Lin.of(("index", r))
        for s in states:  # the state before the step: a window at index r
            v = self.vars[s]
            origin = list(v.origin)
            origin[prog.tensor(s).iterative] = Lin.of(("index", r))
            self.vars[s] = Var(v.value, v.mask, tuple(origin), v.length, v.extent)
        if skip is not None:
            bounds = tuple_code(f"({lin_code(low)}, {a})" for low, a in skip.bounds) if skip.bounds else "()"
            conds = tuple_code(lin_code(c) for c in skip.conds) if skip.conds else "()"
            n = lin_code(self.size(p))
            self.emit(f"_lo, _hi = _alive({bounds}, {conds}, {n})")
            self.emit(f"a_{p}, _e = _rows(_lo, _hi, _est, {n}, {skip.trailing}, {skip.leading})")
            self.emit(f"a_{p}, _e = max(a_{p}, c_{p}), min(_e, c_{p} + w_{p})  # within this block of rows")
            self.emit(f"if a_{p} >= _e:")
            self.emit("    continue")
            self.emit(f"l_{p} = _e - a_{p}")
            if skip.whole:  # rows where the tile is whole: no mask to compute or apply
                whole = tuple_code(f"({lin_code(low)}, {a})" for low, a in skip.whole)
                self.emit(f"_wlo, _whi = _alive({whole}, (), {n})")
                self.emit(f"_whole = _wlo <= a_{p} and _e <= _whi")
                self.whole_tiles = {skip.tile}
            self.ctx_rows = {p: (Lin.of(("start", p)), Lin.of(("len", p)))}
        elif p is not None:
            self.ctx_rows = {p: (Lin.of(("bstart", p)), Lin.of(("blen", p)))}
        for e in step.body:
            self.statement(e)
        self.whole_tiles = set()
        self.updating = {}
        for x in sorted(exported):
            v = self.vars[x]
            self.emit(f"h_{x}.append({v.value})")
            self.emit(f"hm_{x}.append({v.mask})")
        if skip is not None:
            self.emit("_est = _grow(_est, _lo, _hi)")
        for s in states:
            v, n = self.vars[s], self.next[s]
            if skip is not None:  # the step computed rows a_p.. of the block: put them in the block's state
                d = prog.tensor(s).ranks.index(p)
                start = lin_code(n.origin[d] - v.origin[d])
                self.emit(f"{v.value} = _put({v.value}, {n.value}, {d}, {start}, _inplace)")
                if v.mask is not None:
                    full, length = shape_code(v.length), lin_code(n.length[d])
                    self.emit(
                        f"{v.mask} = _putm({v.mask}, {n.mask}, {d}, {start}, {length}, {full}, _inplace)"
                    )
            else:
                self.emit(f"{v.value} = {n.value}")
                if v.mask is not None:
                    self.emit(f"{v.mask} = {n.mask}")
            if s in history:
                self.emit(f"h_{s}.append({v.value})")
                self.emit(f"hm_{s}.append({v.mask})")
        self.depth -= 1
        self.reads = {}
        del self.ctx_fixed[r]
        self.ctx_rows = {}
        if p is not None:
            self.block_close(states, p, skip)
        size = self.size(r)
        for s in states:
            v = self.vars[s]
            t = prog.tensor(s)
            origin, length = list(v.origin), list(v.length)
            if s in history:
                k = t.iterative
                self.emit(f"{v.value} = _cat(h_{s}, {k})")
                if v.mask is not None:
                    self.emit(f"{v.mask} = _catm(hm_{s}, {k}, h_{s})")
                origin[k], length[k] = num(0), size + num(1)
            else:
                origin[t.iterative] = size
            fresh = v.fresh and s not in history
            self.vars[s] = Var(v.value, v.mask, tuple(origin), tuple(length), v.extent, fresh=fresh)
            del self.next[s]
        for x in sorted(exported):
            v = self.vars[x]
            k = prog.tensor(x).ranks.index(r)
            self.emit(f"t_{x} = _cat(h_{x}, {k})")
            if v.mask is not None:
                self.emit(f"m_{x} = _catm(hm_{x}, {k}, h_{x})")
            origin, length = list(v.origin), list(v.length)
            origin[k], length[k] = num(0), size
            self.vars[x] = Var(f"t_{x}", v.mask, tuple(origin), tuple(length), v.extent)
        for x in local - set(states) - exported:
            self.vars.pop(x, None)

    def block_open(self, step: Loop, states, p: str, skip: TileSkip | None) -> None:
        """Rows of ``p`` are independent: run the whole loop for one block of rows at a time, so that a step's
        values stay in cache; with a :class:`TileSkip`, each step computes only the rows it must."""
        n = lin_code(self.size(p))
        if skip is not None:
            self.emit(
                f"# tiles of `{skip.tile}` with no present point are skipped (einattn.skip): rows that had "
                f"one {'are skipped' if skip.trailing else 'are computed'}, the others "
                f"{'are skipped' if skip.leading else 'are computed'}"
            )
        if isinstance(self.block_now, tuple):  # ("auto": more rows when no gradient is recorded)
            fast, recorded = self.block_now
            self.emit(
                f"# rows of `{p}` are independent: the loop runs for blocks of {fast} rows "
                f"({recorded} when a gradient is recorded)"
            )
            self.emit(f"_rb_{p} = {fast} if _inplace else {recorded}")
        else:
            self.emit(f"# rows of `{p}` are independent: the loop runs for blocks of {self.block_now} rows")
        for s in states:
            v = self.vars[s]
            if skip is not None:
                # updated in place row by row: memory of its own, which each block updates through a view
                self.emit(
                    "# the whole state, in memory of its own that the blocks update (no gradient recorded)"
                )
                own = f"_own({v.value}, None, {shape_code(v.length)}{self.state_layout(s)})[0]"
                self.emit(f"z_{s}, b_{s} = {own} if _inplace else {v.value}, []")
                if v.mask is not None:  # (a block's presence is its own: see _own)
                    self.emit(f"zm_{s}, bm_{s} = {v.mask}, []")
            elif v.mask is None:
                self.emit(
                    f"z_{s}, b_{s} = {v.value}, []  # the whole initial state; the blocks' final states"
                )
            else:
                self.emit(f"z_{s}, zm_{s}, b_{s}, bm_{s} = {v.value}, {v.mask}, [], []")
        self.emit(f"def _block_{p}(c_{p}, w_{p}):")
        self.depth += 1
        self.emit(f'"""Rows c_{p} .. c_{p} + w_{p} - 1 of `{p}`: the whole loop."""')
        for s in states:
            v = self.vars[s]
            d = self.prog.tensor(s).ranks.index(p)
            origin, length = list(v.origin), list(v.length)
            origin[d], length[d] = Lin.of(("bstart", p)), Lin.of(("blen", p))
            if v.mask is None:
                self.emit(f"t_{s} = _take(z_{s}, None, {d}, c_{p}, w_{p}, {n})[0]")
                if skip is not None:  # updated in place, row by row: memory of its own
                    own = f"_own(t_{s}, None, {shape_code(length)}{self.state_layout(s)})[0]"
                    self.emit(f"t_{s} = t_{s} if _inplace else {own}")
            else:
                self.emit(f"t_{s}, m_{s} = _take(z_{s}, zm_{s}, {d}, c_{p}, w_{p}, {n})")
                if skip is not None:  # (the rows of the whole state's memory when no gradient is recorded)
                    own = f"{shape_code(length)}{self.state_layout(s)}, view=_inplace"
                    self.emit(f"t_{s}, m_{s} = _own(t_{s}, m_{s}, {own})")
            self.vars[s] = Var(v.value, v.mask, tuple(origin), tuple(length), v.extent)
        if skip is not None:
            self.emit("_est = ()  # the rows established so far (see _grow)")

    def block_close(self, states, p: str, skip: TileSkip | None) -> None:
        finals = []
        for s in states:
            v = self.vars[s]
            finals += [v.value] if v.mask is None else [v.value, v.mask]
        self.emit(f"return {tuple_code(finals)}")
        self.depth -= 1
        n = lin_code(self.size(p))
        block = f"_rb_{p}" if isinstance(self.block_now, tuple) else self.block_now
        self.emit(f"for c_{p} in range(0, {n}, {block}):")
        self.depth += 1
        rows = f"c_{p}, min({block}, {n} - c_{p})"
        if self.recompute:  # under autograd, through a checkpoint
            ins = tuple_code(f"t_{n}" for n in self.prog.inputs)
            self.emit(f"_f = _rows_block(_block_{p}, {rows}, _inplace, {ins})")
        else:
            self.emit(f"_f = _block_{p}({rows})")
        k = 0
        for s in states:
            v = self.vars[s]
            self.emit(f"b_{s}.append(_f[{k}])")
            if v.mask is not None:
                self.emit(f"bm_{s}.append(_f[{k + 1}])")
            k += 1 if v.mask is None else 2
        self.depth -= 1
        for s in states:
            v = self.vars[s]
            d = self.prog.tensor(s).ranks.index(p)
            owned = skip is not None  # (see block_open)
            self.emit(f"{v.value} = _cat(b_{s}, {d}{f', z_{s}' if owned else ''})")
            if v.mask is not None:
                self.emit(f"{v.mask} = _catm(bm_{s}, {d}, b_{s})")
            origin, length = list(v.origin), list(v.length)
            origin[d], length[d] = num(0), v.extent[d]
            self.vars[s] = Var(v.value, v.mask, tuple(origin), tuple(length), v.extent, fresh=owned)


# ---- helpers --------------------------------------------------------------------------------------------


def gradless_inputs(prog: Program, stable: frozenset[str]) -> tuple[str, ...]:
    """The float inputs whose values reach no output but through a stabilizer (computed detached, see
    ``torch_runtime._stable``) or not at all: autograd would leave them out of the graph, and
    ``torch.autograd.grad(out, [X])`` would fail where the gradient is exactly 0 (``C = max(GM, FLOOR)``,
    ``exp(S - C)``: FLOOR only stabilizes). Reads in filters and indices carry no gradient either."""
    reached = _reached(prog, _carried(prog, stable))
    return tuple(n for n in prog.inputs if prog.tensor(n).dtype != "int" and n not in reached)


def defaulted_inputs(prog: Program, stable: frozenset[str]) -> frozenset[str]:
    """The float inputs that reach the outputs, but only through the defaults of ``??`` (``X`` of ``O = S
    ?? X``): when no point needs a default (every row saw a key), the generated code skips it (no mask at
    run time: ``torch_runtime._dflt``; none at all: the generator returns ``S``), and such an input would
    be left out of the graph. Those defaults keep it in the graph with a zero gradient when one is recorded
    (``_dflt(..., keep=True)``, or joined to the outputs where the generator dropped the default)."""
    every = _reached(prog, _carried(prog, stable))
    sure = _reached(prog, _carried(prog, stable, defaults=False))
    return frozenset(every - sure)


def _carried(prog: Program, stable: frozenset[str], defaults: bool = True) -> dict[str, set[str]]:
    """Per tensor, the float inputs its value depends on with a gradient (not through a stabilizer);
    ``defaults=False``: not counting what is read only as the default of a ``??``."""
    carried: dict[str, set[str]] = {n: {n} for n in prog.inputs if prog.tensor(n).dtype != "int"}
    changed = True
    while changed:
        changed = False
        for e in prog.einsums:
            if e.tensor in stable:
                continue
            reads = _value_reads(e.expr, defaults) - {e.tensor}
            got = set().union(*(carried.get(r, set()) for r in reads)) | carried.get(e.tensor, set())
            if got != carried.get(e.tensor, set()):
                carried[e.tensor] = got
                changed = True
    return carried


def _reached(prog: Program, carried: dict[str, set[str]]) -> set[str]:
    return set().union(*(carried.get(o, set()) for o in prog.outputs))


def _value_reads(e: S.Expr, defaults: bool = True) -> set[str]:
    """The tensors ``e`` reads (in indices too); ``defaults=False``: not in the default ``b`` of ``a ??
    b``."""
    if not defaults and isinstance(e, S.Default):
        return _value_reads(e.a, defaults)
    out = {e.tensor} if isinstance(e, S.Read) else set()
    for c in e.children():
        out |= _value_reads(c, defaults)
    return out


def auto_row_block(skip: TileSkip | None) -> tuple[int, int]:
    """``row_block="auto"``: (rows of a block when no gradient is recorded, rows when one is).

    Without a gradient, a step computes only the rows its tile is alive for, so the block bounds a step's
    tile only where those rows are unbounded: a causal loop (its rows stay alive from their first tile on)
    takes 512; a sliding window (each tile alive for a band of rows, :func:`_windowed`) takes 4096, so that a
    band is one step rather than cut into two or three by blocks; a dense loop takes 1024. Measured on the
    2-core CPU after the per-step costs fell (session 7, M0 = 256): the window at N = 1024 / 2048 / 4096 is
    0.89 / 0.89 / 0.84x its time with 256-row blocks, plain softmax 0.95 / 0.95 / 0.96x with 1024 against
    512, and causal attention 1.11 / 1.02 / 0.98x with 1024 against 512 (kept at 512).

    With a gradient, each block is a checkpoint whose backward holds all its steps' tiles at once: 256 rows
    for a window and 512 otherwise bound training memory as before."""
    if _windowed(skip):
        return 4096, 256
    return (512, 512) if skip is not None else (1024, 512)


def _windowed(skip: TileSkip | None) -> bool:
    """A loop whose alive rows are bounded from above by a bound that moves with the step (a sliding
    window: each tile is alive for a band of rows): ``row_block="auto"`` takes 256 rows there, where a
    smaller block computes less of each band. A dense loop, or one whose rows stay alive from their first
    tile on (causal), takes 512: fewer steps, each paying the per-step dispatch once (N = 2048 / 4096,
    against 256 rows: causal 0.94 / 0.92, the rewritten natural causal spec 0.90 / 0.91; the sliding window
    1.07 / 1.04)."""

    def moves(atom) -> bool:
        return atom[0] == "index" or (atom[0] == "prod" and any(moves(a) for a in atom[1:]))

    return skip is not None and any(a < 0 and any(moves(x) for x, _ in low.terms) for low, a in skip.bounds)


def _factors(expr: S.Expr):
    """``a * b / c`` -> [(a, False), (b, False), (c, True)]; None if the top is not a product."""
    if isinstance(expr, S.Binary) and expr.op in ("*", "/"):
        left = _factors(expr.a) or [(expr.a, False)]
        right = [(expr.b, True)] if expr.op == "/" else (_factors(expr.b) or [(expr.b, False)])
        return left + right
    return None


def _reads(e: S.Expr) -> bool:
    return any(isinstance(n, S.Read) and n.indices for n in e.walk())


def _letters(ranks: tuple[str, ...]) -> dict[str, str]:
    """An einsum letter per rank: the rank's own name when it is one free letter."""
    out: dict[str, str] = {}
    for r in ranks:
        if len(r) == 1 and r in LETTERS and r not in out.values():
            out[r] = r
    for r in ranks:
        if r not in out:
            pick = r[0] if r[0] in LETTERS and r[0] not in out.values() else None
            out[r] = pick or next(c for c in LETTERS if c not in out.values())
    return out


_IN_PLACE = {"+": "_ip_add", "-": "_ip_sub", "*": "_ip_mul", "/": "_ip_div"}


def _fresh_call(e: S.Expr) -> bool:
    """A function call whose result is a new tensor (``_safe`` of a read may return the read: not ``fn``)."""
    return isinstance(e, S.Call) and bool(e.args) and any(_reads(a) or coords(a) for a in e.args)


def present_sum(e: S.Expr) -> tuple[S.Read, S.Read] | None:
    """(X, Y) of ``(X + (Y ?? 0)) ?? Y`` (the terms of the sum in either order), the sum of the present
    terms: the form of einattn.rewrite's running sums, ``RD[m1 + 1] = SLD + (SPD ?? 0) ?? SPD``. None
    otherwise. The generator computes it as ``X + (Y ?? 0)`` where it can (``Generator.sum_of_present``),
    reading ``Y``'s value once."""
    if not (isinstance(e, S.Default) and isinstance(e.b, S.Read)):
        return None
    if not (isinstance(e.a, S.Binary) and e.a.op == "+"):
        return None
    for x, y in ((e.a.a, e.a.b), (e.a.b, e.a.a)):
        zero = isinstance(y, S.Default) and isinstance(y.b, S.Const) and y.b.value == 0
        if zero and y.a == e.b and isinstance(x, S.Read) and x.tensor != e.b.tensor:
            return x, e.b
    return None


def _read_count(e: S.Expr, name: str) -> int:
    """Reads of tensor ``name`` in ``e`` whose value is used: ``Y`` of a :func:`present_sum` counts once."""
    parts = present_sum(e)
    if parts is not None:
        return _read_count(e.a, name)
    own = 1 if isinstance(e, S.Read) and e.tensor == name else 0
    return own + sum(_read_count(c, name) for c in e.children())


def _aliased(e: S.Expr) -> set[str]:
    """Tensors whose memory the value of ``e`` may be: a read is a view, ``a ?? b`` returns ``a`` (or ``b``)
    where nothing is absent; anything else computes a new tensor (a :func:`present_sum` too: its value is
    the sum, computed in the memory of a term only where that term dies)."""
    if isinstance(e, S.Read):
        return {e.tensor}
    if present_sum(e) is not None:
        return set()
    if isinstance(e, S.Default):
        return _aliased(e.a) | _aliased(e.b)
    return set()


def dying_reads(prog: Program, steps) -> dict[str, frozenset[str]]:
    """Statement label -> the tensors it reads for the last time, which it may overwrite (in place, when no
    gradient is recorded). A tensor qualifies when it is neither an input, an output nor a loop state, is
    defined by one statement, is read in the same scope (top level, or the same loop body) as it is defined,
    is read once by its last reader, and no statement copies it as it is (a plain read, or an operand of a
    ``??``, stored as a view)."""
    order = _statement_order(steps)
    defs: dict[str, list[int]] = {}
    for k, e in order:
        defs.setdefault(e.tensor, []).append(k)
    candidates = {
        name
        for name, ks in defs.items()
        if len(ks) == 1
        and name not in prog.outputs
        and name not in prog.inputs
        and prog.tensor(name).iterative is None
    }
    last: dict[str, tuple[int, Einsum]] = {}
    for k, e in order:
        if not e.reduce:
            candidates.difference_update(_aliased(e.expr))  # a view of it may live on under another name
        for rd in e.reads():
            if rd.tensor in candidates:
                if k != defs[rd.tensor][0]:
                    candidates.discard(rd.tensor)  # read by another loop, or from inside one
                last[rd.tensor] = (k, e)
    return _read_once_last({name: last[name][1] for name in candidates if name in last})


def dying_states(prog: Program, steps) -> dict[str, frozenset[str]]:
    """Statement label -> the loop states whose final value it reads for the last time, once, at the top
    level after their loop. The generator lets it overwrite one where the loop's blocks of rows updated
    memory of the program's own (``Var.fresh``, see ``Generator.block_close``): attention's ``AV = RNV / RD``
    divides in the memory of ``RNV``, which is laid out as ``AV`` (``Generator.state_layout``)."""
    states = {
        t.name
        for t in prog.tensors
        if t.iterative is not None and t.name not in prog.outputs and t.name not in prog.inputs
    }
    last: dict[str, tuple[int, Einsum]] = {}
    for k, e in _statement_order(steps):
        if not e.reduce:
            states.difference_update(_aliased(e.expr))  # a view of it may live on under another name
        for rd in e.reads():
            if rd.tensor in states:
                last[rd.tensor] = (k, e)
    return _read_once_last({name: last[name][1] for name in states if name in last and last[name][0] == -1})


def _statement_order(steps) -> list[tuple[int, Einsum]]:
    """(scope: -1 at the top level, else the loop's step number; statement), in program order."""
    order: list[tuple[int, Einsum]] = []
    for k, step in enumerate(steps):
        order += [(-1, step.einsum)] if isinstance(step, Dense) else [(k, e) for e in step.body]
    return order


def _read_once_last(last: dict[str, Einsum]) -> dict[str, frozenset[str]]:
    """Label -> the tensors (of ``last``: tensor -> its last reader) that their last reader reads once."""
    out: dict[str, set[str]] = {}
    for name, e in last.items():
        used = _read_count(e.expr, name) + (_read_count(e.filter, name) if e.filter is not None else 0)
        if used == 1:
            out.setdefault(e.label, set()).add(name)
    return {label: frozenset(names) for label, names in out.items()}


_MASK_NAME = r"(?:_k\d+|n?m_[A-Za-z0-9_]+|_r\d+m)"
_MASK_LINE = re.compile(rf"^(\s*)({_MASK_NAME}) = (.*)$")
_REDUCED = re.compile(rf"^(\s*)(_r\d+), ({_MASK_NAME}) = (_rsum|_rmax|_rmin)\((.*)\)$")


def dead_masks_removed(lines: list[str]) -> list[str]:
    """The generated lines without the masks nothing reads: an assignment of a mask name (``_k3``, ``m_X``,
    ``nm_X``, ``_r5m``) that appears in no other line is dropped, and a reduction whose mask nobody reads is
    told not to compute it (``mask=False``), until nothing changes. Masks are pure, so dropping one changes
    no value: it saves their work at run time (an ``any`` over a tile's mask, a few Python calls) where the
    consumer needed no presence, as ``SLD ?? 0`` of a sum that is 0 where absent."""
    lines = list(lines)
    while True:
        words = collections.Counter(w for line in lines for w in re.findall(r"\b\w+\b", line))
        changed = False
        for k, line in enumerate(lines):
            m = _MASK_LINE.match(line)
            if m and words[m.group(2)] == 1 and not m.group(3).startswith("_take("):
                lines[k] = None
                changed = True
                continue
            r = _REDUCED.match(line)
            if r and words[r.group(3)] == 1 and not r.group(5).endswith("mask=False"):
                lines[k] = f"{r.group(1)}{r.group(2)}, {r.group(3)} = {r.group(4)}({r.group(5)}, mask=False)"
                changed = True
        lines = [line for line in lines if line is not None]
        if not changed:
            return lines


def updated_states(prog: Program, steps) -> dict[str, str]:
    """Statement label -> the loop state it may compute in the memory of (when no gradient is recorded): the
    statement is the last of its step to read the state's value before the step, reads it once, as the left
    operand of ``+ - * /`` (attention's ``SPNV = RNV * PRM``: the running sum rescaled in place), no
    statement stores it as it is (a view), and the step's new value is computed (memory of its own, never a
    view of something else). The generator also requires that no history of the state is kept."""
    out: dict[str, str] = {}
    for step in steps:
        if not isinstance(step, Loop):
            continue
        r = step.rank
        for s in loop_states(prog, step):
            t = prog.tensor(s)
            before = [
                (e, rd)
                for e in step.body
                for rd in e.reads()
                if rd.tensor == s and rd.indices[t.iterative] == S.Coord(r)
            ]
            if not before:
                continue
            last, rd = before[-1]
            x = last.expr
            once = sum(1 for e, _ in before if e is last) == 1
            left = isinstance(x, S.Binary) and x.op in _IN_PLACE and x.a is rd and not last.reduce
            views = any(s in _aliased(e.expr) for e in step.body if not e.reduce)
            computed = all(not _aliased(e.expr) for e in step.body if e.tensor == s and e.kind == "step")
            if once and left and last.kind == "plain" and not views and computed:
                out[last.label] = s
    return out


def accumulated_into(
    prog: Program, steps, dying: dict[str, frozenset[str]], updates: dict[str, str] | None = None
) -> dict[str, str]:
    """Tensor -> the label of its one reader, for sums of products (a matmul) whose reader adds them to
    another term: ``RNV[m1 + 1] = (SLNV ?? 0) + SPNV``. The generator defers the matmul to the reader, where
    it accumulates into the other term (``torch.baddbmm`` with ``beta = 1``): the tile's ``P V`` product
    needs no memory of its own and no pass to be added. A tensor qualifies when its statement sums (and
    takes no max or min) without a filter, and its reader reads it last (:func:`dying_reads`) as a term of
    ``+``, alone or as ``x ?? 0``, in the same loop body (or both at the top level), and no statement between
    them may overwrite what it reads (reads it last, so may compute in its memory, or updates it as a loop
    state in place: ``updates``, from :func:`updated_states`)."""
    out: dict[str, str] = {}
    scopes = [[s.einsum for s in steps if isinstance(s, Dense)]]  # the top level, then each loop body
    scopes += [list(s.body) for s in steps if isinstance(s, Loop)]
    for body in scopes:
        where = {e.tensor: i for i, e in enumerate(body) if e.kind == "plain"}
        for j, z in enumerate(body):
            parts = present_sum(z.expr)  # (its Y is read again, for its presence: never deferred)
            x, kept = (z.expr.a, parts[1].tensor) if parts is not None else (z.expr, None)
            if not (isinstance(x, S.Binary) and x.op == "+"):
                continue
            for side in (x.a, x.b):
                zero = isinstance(side, S.Default) and isinstance(side.b, S.Const) and side.b.value == 0
                rd = side.a if zero else side
                last = isinstance(rd, S.Read) and rd.tensor in dying.get(z.label, ()) and rd.tensor != kept
                if not last or rd.tensor not in where:
                    continue
                i = where[rd.tensor]
                c = body[i]
                summed = c.reduce and all(op == "+" for _, op in c.reduce) and c.filter is None
                operands = {r.tensor for r in c.reads()}
                between = set().union(*(dying.get(w.label, frozenset()) for w in body[i + 1 : j]))
                between |= {(updates or {})[w.label] for w in body[i + 1 : j] if w.label in (updates or {})}
                if summed and i < j and not operands & between:
                    out[rd.tensor] = z.label
    return out


def prefilled_tiles(prog: Program, A) -> frozenset[str]:
    """Tensors that may hold ``-inf`` at their absent points (``_neg_fill``, once, where they are computed):
    every read of one is either the whole value of a statement that takes its max (which then needs no
    masked copy) or the left operand of ``x - y`` inside ``exp`` with ``y`` present wherever ``x`` is (the
    exponential then needs no mask: ``exp(-inf - y)`` is 0 once ``-inf`` is kept out of ``y``, see ``_above``;
    where ``y`` is absent, ``x`` is too), in
    statements without a filter. Attention's scores are the case: one fill instead of a masked copy for the
    running max and a masked fill for the exponential. No other reader may see the infinities: arithmetic on
    absent points (``0 * -inf``) could put NaN into a gradient.

    The generator fills a candidate only where its value is fresh memory and finite given finite inputs."""
    defs: dict[str, list[Einsum]] = {}
    for e in prog.einsums:
        defs.setdefault(e.tensor, []).append(e)
    candidates = {
        name
        for name, es in defs.items()
        if len(es) == 1
        and es[0].kind == "plain"
        and name not in prog.outputs
        and name not in prog.inputs
        and prog.tensor(name).iterative is None
        and A.statement(es[0]) != ALWAYS
    }
    used: set[str] = set()
    for e in prog.einsums:
        allowed: set[int] = set()  # ids of the reads in a position that ignores (or keeps) -inf
        if e.filter is None:
            if isinstance(e.expr, S.Read) and e.reduce and all(op == "max" for _, op in e.reduce):
                allowed.add(id(e.expr))
            for n in e.expr.walk():
                if isinstance(n, S.Call) and n.fn == "exp" and len(n.args) == 1:
                    x = n.args[0]
                    minus = isinstance(x, S.Binary) and x.op == "-" and isinstance(x.a, S.Read)
                    if minus and A.implies(x.a, x.b):  # `y` present wherever `x` is (or everywhere)
                        allowed.add(id(x.a))
        for rd in e.reads():
            if rd.tensor in candidates:
                if id(rd) in allowed:
                    used.add(rd.tensor)
                else:
                    candidates.discard(rd.tensor)
    return frozenset(candidates & used)


def pooled_tiles(prog: Program, steps, dying: dict[str, frozenset[str]]) -> frozenset[str]:
    """Tensors of a loop body whose memory is dead when the step ends, so that the next step may compute
    into it (``_mm(..., _pool, name)``, when no gradient is recorded). A tensor qualifies when it is read
    only in its loop body and last read there (:func:`dying_reads`), and so is every tensor that may compute
    in its memory after it (the statement that reads it last as the left operand of ``+ - * /``, or inside
    ``exp``, without reducing; also under ``??``, which returns an operand itself where nothing is absent)."""
    candidates = set().union(*dying.values()) if dying else set()
    inherits: dict[str, str] = {}

    def tops(x: S.Expr):  # the subexpressions whose memory the statement's value may be
        if isinstance(x, S.Default):
            yield from tops(x.a)
            yield from tops(x.b)
        elif isinstance(x, S.Call) and x.fn == "exp" and len(x.args) == 1:
            yield x.args[0]
        else:
            yield x

    for step in steps:
        if isinstance(step, Dense):
            continue
        for e in step.body:
            if e.reduce:  # (a statement that reduces makes a new tensor of its result)
                continue
            for top in tops(e.expr):
                binary = isinstance(top, S.Binary) and top.op in _IN_PLACE and isinstance(top.a, S.Read)
                if binary and top.a.tensor in dying.get(e.label, ()):
                    inherits[top.a.tensor] = e.tensor
                if isinstance(top, S.Binary) and top.op == "+":  # a matmul accumulates into the other term
                    for side in (top.a, top.b):
                        rd = side.a if isinstance(side, S.Default) else side
                        if isinstance(rd, S.Read) and rd.tensor in dying.get(e.label, ()):
                            inherits.setdefault(rd.tensor, e.tensor)
    local = {e.tensor for step in steps if not isinstance(step, Dense) for e in step.body}
    out = set()
    for name in candidates & local:
        chain, ok = name, True
        while chain in inherits and ok:
            chain = inherits[chain]
            ok = chain in candidates and chain in local
        if ok:
            out.add(name)
    return frozenset(out)
