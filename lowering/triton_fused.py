"""The fused Triton path: a 1-pass cascade over a streamed rank becomes one kernel.

**What is recognised** (:func:`match`), structurally, from the IR: exactly one iterative rank ``it`` that is
the outer part of a partition ``rank M = M1 * M0`` (the streamed rank ``m``, tiles of ``M0``), as in FuseMax's
Cascade 5 (``examples/attention_1pass.ein``) and in what the pass-reduction rewrite derives. The statements
fall into four groups:

* *prologue*: statements without ``it`` that do not depend on the loop (a scaled Q tile, a per-head scalar);
* *inits*: ``T[.., 0, ..] = ...``, the running state before the first tile;
* *body*: every statement indexed by ``it`` (per-tile values and state updates), in dependency order; the
  ones that only re-index inputs (``BK[.., m1, m0, e] = K[.., m1 * M0 + m0, e]``) are inlined into their
  readers as loads;
* *epilogue*: statements that read the final state (``RNV[.., M1, ..]``), and the outputs' stores.

Ranks take roles: the *parallel* ranks (on every per-tile statement: batch, head) are fixed per program; the
*row* rank (on every running state: the query ``p``) is a block of ``BLOCK_<ROW>`` rows per program; the *col*
rank is the tile ``m0`` (``BLOCK_<COL>`` lanes, ``M0`` padded to a power of two >= 16); every other rank is a
*feature* (``e``, ``f``: padded to a power of two >= 16 at launch, ``PAD_<F>``). Every value is a register
tile of at most two of these axes.

**The kernel** is a fixed skeleton with the variant's code spliced in: (1) program id -> parallel
coordinates and a row block; (2) prologue: loop-invariant loads (hoisted out of the loop), prologue
statements, initial state; (3) the tile range ``[lo, hi)`` of ``it``, narrowed per program by interval
arithmetic on affine filters when an empty tile provably leaves the state unchanged; (4) the loop over tiles
(contractions of two tiles are ``tl.dot``, reductions over a tile axis ``tl.max``/``tl.sum``, elementwise
chains inline, ``??`` and filters masks); (5) epilogue and stores (absent points stored as 0).

Anything else raises :class:`~lowering.triton_expr.Unsupported` while generating, and :func:`fused_module`
returns a :class:`Refusal` naming the reason; the backend then uses the general path.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import networkx as nx

from einattn import syntax as S
from einattn.errors import InternalError, Span
from einattn.graph import build_graph
from einattn.ir import Einsum, Program, coords
from einattn.skip import never_present

from .torch_codegen import _at_least_one, _Reduced, definition, dominates
from .triton_absent import absent_tensors
from .triton_expr import (
    ASSIGN,
    HELPERS,
    NEG_INF,
    Env,
    Renderer,
    Tile,
    Unsupported,
    Value,
    atom,
    drop_unused,
    fmt_einsum,
    fmt_expr,
    in_bounds,
    in_dtype,
    is_literal,
    nonnegative,
)
from .triton_raw_max import LOG2E, RawMax, exp_operands, plan_raw_max, raw_constants
from .triton_tiles import UNKNOWN, _pick, _sum, affine, empty_step_identity, tile_range

# the compile-time flag of int64 offsets: some tensor's largest offset is 2**31 elements or more (the launcher
# computes it from the shapes and strides; int32 tile offsets cost fewer instructions, and wrapped past it)
WIDE = "WIDE"
IDENTITY = {"+": "0.0", "max": '-float("inf")', "min": 'float("inf")'}
REDUCE_FN = {"+": "tl.sum", "max": "_rmax", "min": "_rmin"}  # (NaN kept: see HELPERS)
# the kernel's own names: its variables, the globals it reads (the module's jitted helpers, triton's
# modules, Python builtins the interpreter needs), and the prefixes of its numbered flags
INTERNAL = {
    *("pid", "rest", "lo", "hi", "row_block", "row_lo", "row_hi", "n_row_blocks", "CD", "DOT", WIDE),
    *("seen", "whole_lo", "whole_hi", "tl", "triton", "torch", "float", "int", "range", "min", "max"),
    *re.findall(r"^def (\w+)\(", HELPERS, re.M),
}
INTERNAL_PREFIX = re.compile(r"INB|t\d*_")  # numbered flags; tensors' names (triton_backend.safe_names)


def _name_clash(prog: Program) -> str | None:
    """A name the kernel would define twice, or None. Tensor names are the spec's behind ``t_`` (see
    triton_backend.safe_names); a rank ``r`` is itself a loop variable (the tile rank) and gives ``size_r``,
    ``offs_r``, ``lane_r``, ``i_r``, ``c_r`` and ``BLOCK_R``, ``PAD_R``, ``FULL_R``: a rank named ``offs_p``
    beside a rank ``p`` would be both, and a rank named ``whole_hi`` or ``_max`` would hide the kernel's own
    (the general path, which names no variable after a rank, then computes the spec)."""
    seen: dict[str, str] = {n: "the skeleton" for n in INTERNAL}
    for t in prog.tensors:
        seen.setdefault(t.name, t.name)
    for r in prog.ranks:
        if INTERNAL_PREFIX.match(r):
            return r
        for name in (r, *(f"{pre}_{r}" for pre in ("size", "offs", "lane", "i", "c"))):
            if seen.setdefault(name, r) != r:
                return name
        for name in (f"{pre}_{r.upper()}" for pre in ("BLOCK", "PAD", "FULL")):
            if seen.setdefault(name, r) != r:
                return name
    return None


@dataclass(frozen=True)
class Refusal:
    """Why the fused path does not apply (the general path is used instead)."""

    reason: str
    span: Span | None = None

    def __str__(self) -> str:
        return f"{self.span}: {self.reason}" if self.span is not None else self.reason


@dataclass
class FusedPlan:
    prog: Program
    it: str
    col: str
    parent: str
    row: str
    par: tuple[str, ...]
    feats: tuple[str, ...]
    states: tuple[str, ...]
    inlined: dict[str, Einsum]
    prologue: tuple[Einsum, ...]
    inits: tuple[Einsum, ...]
    body: tuple[Einsum, ...]
    epilogue: tuple[Einsum, ...]
    absent: frozenset[str] = frozenset()
    narrowed: str = "no filter on the streamed tiles"
    whole: tuple[str, str] | None = None  # (lo, hi) code of the tiles with no masked point
    skip_tiles: bool = True
    floored: frozenset = frozenset()  # running maxes floored (stabilizers.floored, lowest)
    loads: dict = field(default_factory=dict)  # read -> (tile axes, loaded per tile?)
    tiles: list[tuple[str, ...]] = field(default_factory=list)  # axes of per-tile register values
    # compile-time flags the launcher computes: an index of program coordinates stays in bounds.
    # flag -> (the index as Python code over coordinates `c_<rank>`, the rank it indexes, the coordinates)
    proved: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    # the tile bounds read runtime values (program_constant): computed in int64, then narrowed to the tile
    # number's own type (lo, hi, whole_lo, whole_hi lie in 0..M1), so the loop variable stays int32
    runtime_bounds: bool = False

    def describe(self) -> str:
        return (
            f"one kernel; programs over ({', '.join(self.par)}) x blocks of {self.row}; "
            f"loop over tiles {self.it} of {self.parent} (tile {self.col}); "
            f"features {', '.join(self.feats)}; "
            f"running state {', '.join(self.states)}; {self.narrowed}"
        )


# ---- matching --------------------------------------------------------------------------------------


def _order(prog: Program) -> list[Einsum]:
    """Statements in dependency order within one step (carried edges dropped), ties by source order."""
    g = build_graph(prog)
    same = nx.DiGraph([(u, v) for u, v, c in g.edges(data="carried") if not c])
    same.add_nodes_from(g.nodes)
    order = {e.label: i for i, e in enumerate(prog.einsums)}
    return [g.nodes[n]["einsum"] for n in nx.lexicographical_topological_sort(same, key=order.get)]


def match(prog: Program) -> FusedPlan | Refusal:
    """The roles and groups of a 1-pass streaming cascade, or why the program is not one."""
    its = prog.iterative_ranks
    if not its:
        return Refusal("no iterative rank: the cascade is not a 1-pass loop over tiles")
    if len(its) > 1:
        return Refusal(f"{len(its)} iterative ranks ({', '.join(its)}); the fused kernel streams over one")
    it = its[0]
    part = next((p for p in prog.partitions if p.outer == it), None)
    if part is None:
        return Refusal(
            f"iterative rank `{it}` is not the outer part of a partition `rank M = M1 * M0`: "
            "a scan over single points, not a loop over tiles"
        )
    if part.tile != "inner":
        return Refusal(f"the tile of `{part.parent}` must be its inner part (a param such as M0)")
    col, parent = part.inner, part.parent
    order = _order(prog)
    for e in order:
        if it in e.reduced:
            return Refusal(f"`{e.tensor}` reduces over the streamed rank `{it}`: a second pass", e.span)
        if parent in e.space:
            return Refusal(
                f"`{e.tensor}` iterates over the whole rank `{parent}`, not over its tiles", e.span
            )
    states = tuple(t.name for t in prog.tensors if t.iterative is not None)
    per_step = [e for e in order if it in e.lhs_ranks]
    inits = [e for e in order if e.kind == "init"]
    step_tensors = {e.tensor for e in per_step}
    prologue, epilogue, late = [], [], set()
    for e in order:
        if e in per_step or e in inits:
            continue
        final = False
        for rd in e.reads():
            if rd.tensor in states:
                t = prog.tensor(rd.tensor)
                if rd.indices[t.iterative] != S.Size(it):
                    return Refusal(
                        f"`{e.tensor}` reads `{rd.tensor}` at a step other than the last "
                        f"(`{rd.tensor}[.., {it.upper()}, ..]`)",
                        e.span,
                    )
                final = True
            elif rd.tensor in step_tensors:
                return Refusal(
                    f"`{e.tensor}` reads the per-tile tensor `{rd.tensor}` after the loop: a second pass "
                    f"over `{it}`",
                    e.span,
                )
            elif rd.tensor in late:
                final = True
        if final:
            epilogue.append(e)
            late.add(e.tensor)
        else:
            prologue.append(e)
    for e in inits + per_step:
        for rd in e.reads():
            if rd.tensor in late:
                return Refusal(f"`{e.tensor}` reads `{rd.tensor}`, which needs the final state", e.span)
            if e.kind == "init" and (rd.tensor in step_tensors):
                return Refusal(
                    f"the initial state `{e.tensor}` reads the per-tile tensor `{rd.tensor}`", e.span
                )
    inlined = {
        e.tensor: e
        for e in per_step
        if e.kind == "plain"
        and not e.reduce
        and e.filter is None
        and e.tensor not in prog.outputs
        and all(prog.tensor(rd.tensor).is_input for rd in e.reads())
    }
    core = [e for e in per_step if e.tensor not in inlined]
    if not core:
        return Refusal(f"nothing is computed per tile of `{it}`")
    # parallel ranks index the K/V tiles a step reads (reads along the tile and a feature); the row does not
    kside = {
        e.tensor for e in core if all(prog.tensor(rd.tensor).is_input for rd in _tile_reads(prog, inlined, e))
    }
    kside &= {
        e.tensor
        for e in core
        if not any(rd.tensor in step_tensors and rd.tensor not in inlined for rd in e.reads())
    }  # (a feature map of the K tile, `elu(BK) + 1`, reads only the inlined re-indexing of K)
    for group in (core, [e for e in core if e.tensor not in kside]):  # K-side tiles computed per step aside
        if not group:
            continue
        par, rows = _roles(prog, inlined, group, states, it, col, parent)
        if len(rows) == 1:
            break
    if len(rows) != 1:
        what = ", ".join(sorted(rows)) if rows else "none"
        return Refusal(
            f"cannot tell the query rank: the per-tile statements share the ranks {{{what}}} that do not "
            "index the streamed tiles; the fused kernel needs exactly one"
        )
    (row,) = rows
    if col in par:
        return Refusal(
            f"every per-tile statement keeps the tile rank `{col}`: nothing is reduced over a tile"
        )
    used: set[str] = set()
    for e in prologue + inits + core + epilogue:
        used |= set(e.space) | set(e.lhs_ranks)
        for rd in _tile_reads(prog, inlined, e):
            used |= set(coords(rd))
    fixed = par | {row, col, it, parent}
    feats = tuple(r for r in prog.ranks if r in used and r not in fixed)
    for name in prog.outputs:
        t = prog.tensor(name)
        missing = (par | {row}) - set(t.ranks)
        if name in step_tensors:
            return Refusal(f"output `{name}` is a per-tile tensor")
        if missing:
            return Refusal(
                f"output `{name}` lacks rank{'s' * (len(missing) > 1)} {', '.join(sorted(missing))}; "
                "the fused kernel writes each output once per program"
            )
    clash = _name_clash(prog)
    if clash:
        return Refusal(f"the name `{clash}` is used by the kernel skeleton")
    statements = [_St(e.tensor, e.expr, e.filter) for e in prologue + inits + per_step + epilogue]
    return FusedPlan(
        prog=prog,
        it=it,
        col=col,
        parent=parent,
        row=row,
        par=tuple(r for r in prog.ranks if r in par),
        feats=feats,
        states=states,
        inlined=inlined,
        prologue=tuple(prologue),
        inits=tuple(inits),
        body=tuple(core),
        epilogue=tuple(epilogue),
        absent=absent_tensors(prog, statements),
    )


def _roles(prog, inlined, group, states, it, col, parent) -> tuple[set[str], set[str]]:
    """(parallel ranks, row candidates) from the per-step statements ``group``."""
    cand = set.intersection(*(set(e.lhs_ranks) for e in group)) - {it}
    kv: set[str] = set()
    for e in group:
        for rd in _tile_reads(prog, inlined, e):
            mentioned = set(coords(rd))
            if mentioned & {it, col} and mentioned - cand - {it, col, parent}:  # a K/V tile: tile x feature
                kv |= mentioned
    par = cand & kv
    rows = (cand - kv) & set.intersection(*(set(prog.tensor(s).ranks) for s in states))
    if len(rows) > 1:
        # several query-like ranks (multi-query attention: K/V shared by the heads): the row is the one the
        # first output varies fastest along, the others are parallel
        first = prog.tensor(prog.outputs[0]).ranks
        ranked = [r for r in first if r in rows]
        if ranked:
            par |= rows - {ranked[-1]}
            rows = {ranked[-1]}
    return par, rows


def _tile_reads(prog: Program, inlined: dict[str, Einsum], e: Einsum):
    """The input reads of ``e`` after inlining the re-indexing statements."""
    roots = [e.expr] + ([e.filter] if e.filter is not None else [])
    todo = list(roots)
    while todo:
        root = todo.pop()
        for n in root.walk():
            if isinstance(n, S.Read):
                if n.tensor in inlined:
                    d = inlined[n.tensor]
                    t = prog.tensor(n.tensor)
                    todo.append(substitute(d.expr, dict(zip(t.ranks, n.indices))))
                elif prog.tensor(n.tensor).is_input:
                    yield n


@dataclass(frozen=True)
class _St:
    target: str
    expr: S.Expr
    filter: S.Expr | None


# ---- expression substitution (inlining) ----------------------------------------------------------------


def substitute(e: S.Expr, mapping: dict[str, S.Expr]) -> S.Expr:
    """``e`` with each coordinate ``Coord(r)`` replaced by ``mapping[r]``."""
    if isinstance(e, S.Coord):
        return mapping.get(e.rank, e)
    if isinstance(e, S.Read):
        return S.Read(e.tensor, tuple(substitute(i, mapping) for i in e.indices), span=e.span)
    if isinstance(e, S.Call):
        return S.Call(e.fn, tuple(substitute(a, mapping) for a in e.args), span=e.span)
    if isinstance(e, S.Unary):
        return S.Unary(e.op, substitute(e.x, mapping), span=e.span)
    if isinstance(e, S.Binary):
        return S.Binary(e.op, substitute(e.a, mapping), substitute(e.b, mapping), span=e.span)
    if isinstance(e, S.Default):
        return S.Default(substitute(e.a, mapping), substitute(e.b, mapping), span=e.span)
    return e


def factors(expr: S.Expr) -> list[tuple[S.Expr, bool]]:
    """``a * b / c`` -> [(a, False), (b, False), (c, True)]; a single factor otherwise."""
    if isinstance(expr, S.Binary) and expr.op in ("*", "/"):
        left = factors(expr.a)
        right = [(expr.b, True)] if expr.op == "/" else factors(expr.b)
        return left + right
    return [(expr, False)]


# ---- the kernel ----------------------------------------------------------------------------------------


class FusedEnv(Env):
    def __init__(self, plan: FusedPlan):
        self.plan = plan
        self.prog = plan.prog
        self.axes = (plan.row, plan.col, *plan.feats)
        scopes = ("setup", "prologue", "bounds", "body", "body_full", "body_steady", "body_tail", "epilogue")
        self.lines: dict[str, list[str]] = {s: [] for s in scopes}
        self.conjunctions = {}
        self.filter_terms: set[str] = set()  # the codes of the terms of statements' filters
        self.full_tiles = False  # rendering the body for tiles that a filter and the bounds leave whole
        m0 = plan.prog.param_values.get(plan.col.upper())
        self.col_padded = not (isinstance(m0, int) and m0 >= 16 and m0 & (m0 - 1) == 0)
        self.scope = "prologue"
        self.values: dict[str, Value] = {}
        self.cur: dict[str, Value] = {}
        self.steady = False  # a whole tile leaves every state present (see generate)
        self.tail = False  # and so does a masked tile where they were present
        self.neg_fill: set[str] = set()  # filtered tiles held -inf where absent (the tail scope)
        # the states start present (_identity_start): L, the tile max whose presence is every state's
        self.seen: Value | None = None
        self.next: dict[str, Value] = {}
        self.hoisted: dict[tuple, Value] = {}
        self.inputs: list[str] = []
        self.sizes: set[str] = set()
        self.counter = 0
        self.raw = RawMax()  # running maxes held in the raw scores' units (lowering.triton_raw_max)

    # ---- Env interface ----------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        pad = "        " if self.scope.startswith("body") else "    "
        self.lines[self.scope].append(pad + line)

    def temp(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def size(self, rank: str) -> str:
        self.sizes.add(rank)
        return f"size_{rank}"

    def extent(self, axis: str) -> str:
        return block_name(self.plan, axis)

    def coord(self, rank: str) -> Tile:
        p = self.plan
        if rank in p.par:
            return Tile(f"i_{rank}")
        if rank == p.it:
            if not self.scope.startswith("body"):
                raise Unsupported(f"the tile number `{rank}` is used outside the loop")
            return Tile(rank)
        if rank == p.col and not self.scope.startswith("body"):
            raise Unsupported(f"the tile rank `{rank}` is used outside the loop")
        if rank in self.axes:
            self.size(rank)
            return Tile(f"offs_{rank}", (rank,))
        raise Unsupported(f"rank `{rank}` has no place in the fused kernel")

    def as_float(self, code: str, dtype: str) -> str:
        if code == self.plan.it:  # the loop variable is a Python int under the interpreter
            return f"({code} + tl.zeros([], {dtype}))"
        return super().as_float(code, dtype)

    def lane(self, axis: str) -> Tile | None:
        """Which lanes of ``axis`` exist (None: all of them, a tile M0 that is a power of two >= 16)."""
        if axis == self.plan.col and not self.col_padded:
            return None
        self.size(axis)
        return Tile(f"lane_{axis}", (axis,))

    def read(self, r: Renderer, node: S.Read, ctx: str) -> Value:
        p, prog = self.plan, self.prog
        t = prog.tensor(node.tensor)
        if t.is_input:
            return self._read_input(r, node, ctx)
        if node.tensor in p.inlined:
            return self._read_inlined(r, node, ctx)
        if t.iterative is not None:
            for k, ix in enumerate(node.indices):
                if k != t.iterative and ix != S.Coord(t.ranks[k]):
                    raise Unsupported(f"`{node.tensor}` is read at a shifted index")
            ix = node.indices[t.iterative]
            if ix == S.Coord(p.it) and self.scope.startswith("body"):
                return self.cur[node.tensor]
            if ix == S.Binary("+", S.Coord(p.it), S.Const(1)) and node.tensor in self.next:
                return self.next[node.tensor]
            if ix == S.Size(p.it) and self.scope == "epilogue":
                return self.cur[node.tensor]
            raise Unsupported(f"`{node.tensor}` is read at state `{ix}` where the kernel does not hold it")
        if any(ix != S.Coord(r_) for ix, r_ in zip(node.indices, t.ranks)):
            raise Unsupported(
                f"`{node.tensor}` is read at shifted indices; only its own coordinates are in registers"
            )
        if node.tensor not in self.values:
            raise Unsupported(f"`{node.tensor}` is not available where it is read")
        return self.values[node.tensor]

    def exp_raw_max(self, r: Renderer, e: S.Call) -> Value | None:
        """``exp(a - b)`` where ``b`` reads a running max held in the raw scores' units
        (lowering.triton_raw_max): ``exp2((a - b) * c)``, ``c`` the scale times log2 e, where ``a`` is such
        a max too (the correction ``exp(RM - RM')``) or a score tile computed without its scale."""
        pair = exp_operands(e, self.raw.states)
        if pair is None:
            return None
        _, b = pair
        d = r.value(e.args[0])  # the difference: its presence and its value at absent points, as written
        factor = f"{self.raw.scale[b.tensor]}_log2"
        val = Tile(f"tl.exp2({atom(d.val.code)} * {factor})", d.val.axes)
        fill = "0.0" if d.fill == NEG_INF else None  # exp(-inf) = 0
        return Value(val, d.mask, fill=fill, folded=d.folded if fill else None)

    # ---- reads ----------------------------------------------------------------------------------------
    def _read_input(self, r: Renderer, node: S.Read, ctx: str) -> Value:
        p = self.plan
        key = (node, ctx)
        if key in self.hoisted:
            return self.hoisted[key]
        if node.tensor not in self.inputs:
            self.inputs.append(node.tensor)
        if not node.indices:
            name = self.temp(node.tensor)
            scope, self.scope = self.scope, "prologue"
            t = self.prog.tensor(node.tensor)
            integer = t.dtype == "int" and ctx in ("i", "c")
            # an integer scalar in int64 whatever its dtype: `m >= n - 1` and the tile bounds computed from
            # it (`-n`) must not wrap at an int32 input near -2**31, as the general path and NumPy do not
            widened = ".to(tl.int64)" if t.dtype == "int" else ""
            self.emit(f"{name} = tl.load({node.tensor}_ptr){widened}")
            self.scope = scope
            v = Value(
                Tile(name) if integer else Tile(f"{name}.to({r.compute})"), kind="i" if integer else "f"
            )
            self.hoisted[key] = v
            return v
        mentioned = set(coords(node))
        varying = bool(mentioned & {p.it, p.col})
        lanes = None
        for x in self.order([x for x in mentioned if x in self.axes]):
            lanes = r.mask_and(lanes, self.lane(x))
        t = self.prog.tensor(node.tensor)
        extents = [
            None
            if in_bounds(self.prog, node.tensor, k, ix)
            or (self.full_tiles and self.tile_index(t.ranks[k], ix))
            else self.size(t.ranks[k])
            for k, ix in enumerate(node.indices)
        ]
        proved = [
            self._prove_in_bounds(ix, t.ranks[k]) if ext is not None else None
            for k, (ix, ext) in enumerate(zip(node.indices, extents))
        ]
        strides = [f"{node.tensor}_stride{k}" for k in range(len(node.indices))]
        scope = self.scope
        if not varying:
            self.scope = "prologue"
        try:
            v = r.pointer_load(
                node,
                f"{node.tensor}_ptr",
                strides,
                extents,
                ctx,
                lanes=lanes,
                wide=False,  # (int32 tile offsets, int64 where a tensor spans 2**31 elements: WIDE)
                proved=proved,
                widen=WIDE,
            )
        finally:
            self.scope = scope
        v.lane_zero = True
        if t.dtype == "int" and v.kind == "i" and not varying and not v.val.axes:
            # one integer per program (`klen[b]`): int64 whatever its dtype, as the scalar above
            self.lines["prologue"].append(f"    {v.val.code} = {v.val.code}.to(tl.int64)")
        self.plan.loads[(node, ctx)] = (v.val.axes, varying)  # each read once, whatever the body
        if not varying:
            self.hoisted[key] = v
        return v

    def _prove_in_bounds(self, ix: S.Expr, rank: str) -> str | None:
        """A compile-time flag that says index ``ix`` of rank ``rank`` is in bounds for every program, when
        ``ix`` depends only on the program's parallel coordinates and is monotone in each (sums, products
        with constants, floor division by a positive constant): the launcher checks it at the corners of
        the coordinates' box (GQA's ``h // R < G`` once per call), and the compiler folds the per-tile
        bounds masks away. None when the form does not allow it: the runtime check stays alone."""
        p = self.plan
        code = _host_index(ix, set(p.par), self.prog.param_values)
        if code is None:
            return None
        used = tuple(sorted({n.rank for n in ix.walk() if isinstance(n, S.Coord)}))
        for flag, have in p.proved.items():
            if have == (code, rank, used):
                return flag
        flag = f"INB{len(p.proved)}"
        p.proved[flag] = (code, rank, used)
        return flag

    def tile_index(self, rank: str, ix: S.Expr) -> bool:
        """``ix`` is ``it * M0 + col`` into the streamed rank: in bounds on every whole tile."""
        p = self.plan
        if rank != p.parent:
            return False
        d = affine(ix, self.prog.param_values)
        m0 = self.prog.param_values.get(p.col.upper())
        return d is not None and d[0] == {p.it: m0, p.col: 1} and _sum(d[1]) == "0"

    def program_constant(self, node: S.Read) -> str | None:
        """Kernel code of ``node`` where it is a ``: int`` input read in bounds at the program's parallel
        coordinates only (``klen[b]``): one value per program, loaded in the prologue, which the tile bounds
        can use (a padding mask skips the tiles past each sequence's end). None otherwise."""
        t = self.prog.tensor(node.tensor)
        if not t.is_input or t.dtype != "int" or not set(coords(node)) <= set(self.plan.par):
            return None
        if not all(in_bounds(self.prog, node.tensor, k, ix) for k, ix in enumerate(node.indices)):
            return None
        scope = self.scope
        try:
            v = self._read_input(Renderer(self, self.prog), node, "c")
        finally:
            self.scope = scope
        if v.mask is None and v.kind == "i":
            self.plan.runtime_bounds = True
            return v.val.code
        return None

    def _read_inlined(self, r: Renderer, node: S.Read, ctx: str) -> Value:
        e = self.plan.inlined[node.tensor]
        t = self.prog.tensor(node.tensor)
        mapping = {rank: ix for rank, ix in zip(t.ranks, node.indices)}
        mask = None
        implied = _implied_bounds(self.prog, e)
        for k, ix in enumerate(node.indices):
            if not in_bounds(self.prog, node.tensor, k, ix) and k not in implied:
                v = r.value(ix, "i")
                inb = Tile(f"({v.val.code} < {self.size(t.ranks[k])})", v.val.axes)
                if not nonnegative(ix, self.prog.param_values):
                    inb = r.logic("&", Tile(f"({v.val.code} >= 0)", v.val.axes), inb)
                mask = r.mask_and(mask, r.mask_and(v.mask, inb))
        v = r.value(substitute(e.expr, mapping), ctx)
        if mask is None:
            return v
        out = Value(v.val, r.mask_and(v.mask, mask), fill=None, kind=v.kind)
        out.raw, out.lane_zero = getattr(v, "raw", None), getattr(v, "lane_zero", False)
        return out

    # ---- statements -----------------------------------------------------------------------------------
    def var(self, tensor: str) -> str:
        return tensor

    def tile_axes(self, e: Einsum) -> tuple[str, ...]:
        p = self.plan
        ranks = [x for x in e.lhs_ranks if x not in p.par and x != p.it]
        return self.order(ranks)

    def statement(self, e: Einsum, name: str) -> Value:
        """Render ``e`` into variable ``name`` (and ``name_ok`` when it can be absent)."""
        r = Renderer(self, self.prog)
        p = self.plan
        axes = self.tile_axes(e)
        filt = None if self.full_tiles else r.filtered(e.filter)
        if filt is not None:
            self.filter_terms |= {t.code for t in self._terms(filt)}
        if filt is not None and any(a in p.feats for a in filt.axes):
            raise Unsupported(f"the filter of `{e.tensor}` depends on a feature rank")
        folded, kind = None, "f"
        if not e.reduce:
            v = r.value(e.expr)
            kind = v.kind
            mask = r.mask_and(v.mask, filt)
            val, fill = v.val, (v.fill if mask is v.mask else None)
            folded = v.folded if fill is not None else None
        elif len(e.reduce) == 1 and e.reduce[0][0] in (p.col, *p.feats):
            ((red, op),) = e.reduce
            done = self._dot(r, e, red, filt) if op == "+" else None
            if done is None:
                done = self._reduce(r, e, red, op, filt)
            val, mask, fill = done
        else:
            raise Unsupported(
                f"`{e.tensor}` reduces over {', '.join(e.reduced)}; the fused kernel reduces one tile axis "
                "at a time, never a parallel or query rank"
            )
        if not set(val.axes) <= set(axes) or (mask is not None and not set(mask.axes) <= set(axes)):
            raise Unsupported(f"`{e.tensor}` varies along a rank it is not indexed by")
        if filt is not None and e.tensor in self.neg_fill and self.lane(p.col) is None and fill is None:
            # -inf where the filter removes a point: its max and its exponential need no select
            val, fill, folded = r.where(mask, val, Tile(NEG_INF)), NEG_INF, mask
        if not val.axes and is_literal(val.code):
            out = Value(val, None, fill=fill)  # a constant stays a literal (tl.full needs one)
        else:
            # (a scalar of constants, `T * 3.0` of params, in the compute dtype: see triton_expr.in_dtype)
            self.emit(
                f"{name} = {in_dtype(val.code, r.compute) if not val.axes and kind == 'f' else val.code}"
            )
            out = Value(Tile(name, val.axes), None, fill=fill, folded=folded)
        if mask is not None:
            if any(a in p.feats for a in mask.axes):
                raise Unsupported(f"`{e.tensor}` is absent at points that depend on a feature rank")
            if not mask.axes and mask.code in ("True", "False"):
                out.mask = mask
            else:
                self.emit(f"{name}_ok = {mask.code}")
                out.mask = Tile(f"{name}_ok", mask.axes)
                if name not in self.plan.states and not name.endswith("_next"):
                    self.conjunctions[f"{name}_ok"] = (mask, None)  # a name for this tile's mask
        return out

    def _leaves(self, m: Tile) -> set[str]:
        """The codes of the innermost terms of a conjunction."""
        if m.code in self.conjunctions:
            a, b = self.conjunctions[m.code]
            return self._leaves(a) | (self._leaves(b) if b is not None else set())
        return {m.code}

    def _terms(self, m: Tile) -> list[Tile]:
        """The innermost terms of conjunction ``m``, through the names bound to masks."""
        if m.code not in self.conjunctions:
            return [m]
        a, b = self.conjunctions[m.code]
        return self._terms(a) + (self._terms(b) if b is not None else [])

    def _split(self, m: Tile, red: str) -> tuple[list[Tile], list[Tile]]:
        """The terms of conjunction ``m`` that span ``red`` and those that do not. A name bound to a mask
        stays whole when all its terms span ``red`` (so equal reductions read one name)."""
        if m.code not in self.conjunctions:
            return ([m], []) if red in m.axes else ([], [m])
        a, b = self.conjunctions[m.code]
        if b is None:
            inner, outer = self._split(a, red)
            return ([m], []) if not outer else (inner, outer)
        ia, oa = self._split(a, red)
        ib, ob = self._split(b, red)
        return ia + ib, oa + ob

    def _along(self, r: Renderer, m: Tile | None, red: str) -> tuple[Tile | None, Tile | None]:
        """``m`` split into the conjunction of its terms that span ``red`` and that of the others (per-row
        terms); a term already implied by an earlier one is left out."""
        if m is None:
            return None, None
        inner_terms, outer_terms = self._split(m, red)
        inner = outer = None
        seen: set[str] = set()
        for t in inner_terms:
            leaves = self._leaves(t)
            if not leaves <= seen:
                inner, seen = r.mask_and(inner, t), seen | leaves
        for t in outer_terms:
            outer = r.mask_and(outer, t)
        return inner, outer

    def any_over(self, r: Renderer, m: Tile, red: str) -> Tile:
        """Whether any point along ``red`` is present. The terms of ``m`` that do not span ``red`` are
        factored out of the reduction (``any(a & b[:, None]) = any(a) & b``), so the reductions of masks
        that differ only by per-row terms are one and the same (the compiler shares them), and fewer 2-D
        masks stay live in registers."""
        inner, outer = self._along(r, m, red)
        if inner is None:
            return outer
        axes = self.order(set(inner.axes) | {red})
        k = axes.index(red)
        full = self.full(inner, axes, "tl.int1")
        anyt = Tile(f"(tl.max({full}.to(tl.int32), {k}) > 0)", tuple(a for a in axes if a != red))
        return r.mask_and(outer, anyt)

    def _reduce(self, r: Renderer, e: Einsum, red: str, op: str, filt: Tile | None):
        v = r.value(e.expr)
        presence = r.mask_and(v.mask, filt)
        ok = r.mask_and(presence, self.lane(red))
        axes = self.order(set(self.tile_axes(e)) | {red} | set(v.val.axes) | set(ok.axes if ok else ()))
        k = axes.index(red)
        # only the terms of the mask along `red` select what is reduced; the others (per-row presence) make
        # the result absent where they fail, whatever its value, so they are not applied to the tile
        inner, dropped = self._along(r, ok, red)  # dropped: the per-row terms
        if inner is not None and filt is None and self.lane(red) is None and v.fill == IDENTITY[op]:
            inner = None  # the value holds the identity where it is absent already (a -inf filled tile)
        vals = self.full(r.where(inner, v.val, Tile(IDENTITY[op])) if inner else v.val, axes, "CD")
        val = Tile(f"{REDUCE_FN[op]}({vals}, {k})", tuple(a for a in axes if a != red))
        mask = None
        if presence is not None:
            mask = self.any_over(r, ok, red)
            if mask is not None and set(mask.axes) != set(val.axes):  # present along every other axis
                mask = Tile(self.full(mask, val.axes, "tl.int1"), val.axes)
        return val, mask, (None if dropped is not None else IDENTITY[op])

    def _dot(self, r: Renderer, e: Einsum, red: str, filt: Tile | None):
        """A sum over ``red`` of a product of two tiles that share ``red``, as ``tl.dot``; else None."""
        parts = [(r.value(f), inv) for f, inv in factors(e.expr)]
        spans = [k for k, (v, _) in enumerate(parts) if red in v.val.axes or (v.mask and red in v.mask.axes)]
        if len(spans) != 2 or any(parts[k][1] for k in spans):
            return None
        (a, _), (b, _) = parts[spans[0]], parts[spans[1]]
        if len(a.val.axes) != 2 or len(b.val.axes) != 2:
            return None
        xa = [x for x in a.val.axes if x != red]
        xb = [x for x in b.val.axes if x != red]
        if len(xa) != 1 or len(xb) != 1 or xa == xb:
            return None
        # tl.dot takes one dtype: a computed operand is rounded to the loaded one's (float16: P of softmax)
        # only where its values are within the inputs' range; else the load is widened to the compute dtype
        exprs = [f for f, _ in factors(e.expr)]
        narrow = all(
            getattr(v, "raw", None) is not None or _within_inputs(self.prog, exprs[k])
            for v, k in ((a, spans[0]), (b, spans[1]))
        )
        if not narrow:
            a, b = (_widened(v) for v in (a, b))
        out_axes = self.order([xa[0], xb[0]])
        if out_axes[0] != xa[0]:
            a, b, xa, xb = b, a, xb, xa
        x, y = xa[0], xb[0]
        za, zb = [], []  # masks that zero each operand
        red_masks, point_masks = [], []
        for v, zs in ((a, za), (b, zb)):
            if v.mask is not None:
                (red_masks if red in v.mask.axes else point_masks).append(v.mask)
                if v.fill != "0.0":
                    zs.append(v.mask)
        if filt is not None:
            (red_masks if red in filt.axes else point_masks).append(filt)
            if red in filt.axes:
                if set(filt.axes) <= set(a.val.axes):
                    za.append(filt)
                elif set(filt.axes) <= set(b.val.axes):
                    zb.append(filt)
                else:
                    raise Unsupported(f"the filter of `{e.tensor}` spans three tile axes")
        for v, zs in ((a, za), (b, zb)):
            if not getattr(v, "lane_zero", False):
                zs.append(self.lane(red))
        # the per-key operand (`V`, or a computed `V / N`) is zeroed at the keys a filter of the weights
        # removes for every row (its terms along `red` alone, `m < n` past a cache's length):
        # 0 * inf or 0 * NaN there would be NaN in the dot, where the sum skips those keys. (Attention's
        # usual masks, `m <= p`, have no such term: its loops get no extra `where`.)
        # (only a filter's terms: bounds are the loads' own, which are 0 beyond them)
        weights = a.mask if a.mask is not None else a.folded  # (a -inf filled tile's exp: its fold)
        if weights is not None:
            zb.extend(t for t in self._terms(weights) if set(t.axes) <= {red} and t.code in self.filter_terms)
        lane = self.lane(red) if red == self.plan.col else None

        dropped = []

        def operand(v: Value, zs: list[Tile], other: Value, want: tuple[str, str], second: bool) -> str:
            raw = getattr(v, "raw", None)
            base = Tile(raw, v.val.axes) if raw else v.val
            m = None
            for z in zs:  # rows (or columns) of the product that a mask removes are absent in the result:
                inner, out = self._along(r, z, red)  # only the terms along `red` need zeroing
                dropped.append(out is not None)
                m = r.mask_and(m, inner)
            if m is not None:
                base = r.where(m, base, Tile("0.0"))
            code = self.full(base, self.order(want), "CD") if base.axes != self.order(want) else base.code
            other_raw = getattr(other, "raw", None)
            if other_raw and (not raw or second):  # tl.dot needs one dtype: the loaded operand's
                code = f"{_atom(code)}.to({other_raw}.dtype)"
            if self.order(want) != want:
                code = f"tl.trans({code})"
            return code

        code_a = operand(a, za, b, (x, red), False)
        code_b = operand(b, zb, a, (red, y), True)
        val = Tile(f"tl.dot({code_a}, {code_b}, input_precision=DOT, out_dtype=CD)", (x, y))
        mask = None
        for m in point_masks:
            mask = r.mask_and(mask, m)
        if red_masks:
            allm = lane
            for m in red_masks:
                allm = r.mask_and(allm, m)
            if len(allm.axes) > 2:
                raise Unsupported(f"the presence of `{e.tensor}` spans three tile axes")
            mask = r.mask_and(mask, self.any_over(r, allm, red))
        # 0 at the absent points where the operands are zeroed there; a filter that removes points
        # without spanning `red` (`m <= p` of a product over `e`) leaves the product's value in them
        fill = None if any(dropped) or (filt is not None and red not in filt.axes) else "0.0"
        for k, (v, inv) in enumerate(parts):
            if k in spans:
                continue
            val = r.binary("/" if inv else "*", val, v.val)
            mask = r.mask_and(mask, v.mask)
            fill = None
        return val, mask, fill


def _widened(v: Value) -> Value:
    """``v`` without its raw load: its value in the compute dtype is the tl.dot operand."""
    return dataclasses.replace(v, raw=None) if v.raw is not None else v


def _within_inputs(prog: Program, e: S.Expr, depth: int = 6) -> bool:
    """Whether ``e`` stays within the range of the inputs' dtype: an input's value, or a value at most 1 in
    magnitude (:func:`_unit`) times one. A sum or a product of two inputs may not (float16's largest value
    is 65504: linear attention's scores of large queries)."""
    if depth == 0:
        return False
    if isinstance(e, S.Read):
        if e.tensor in prog.inputs:
            return True
        d = definition(prog, e)
        return d is not None and not isinstance(d, _Reduced) and _within_inputs(prog, d, depth - 1)
    if isinstance(e, S.Binary) and e.op == "*":
        return (_unit(prog, e.a) and _within_inputs(prog, e.b, depth - 1)) or (
            _unit(prog, e.b) and _within_inputs(prog, e.a, depth - 1)
        )
    return _unit(prog, e)


def _unit(prog: Program, e: S.Expr, depth: int = 6) -> bool:
    """Whether ``|e| <= 1`` wherever it is present: softmax's ``exp(x - max)`` (a running max too), its
    quotient by a denominator at least 1, ``sigmoid`` and ``tanh`` of anything (sigmoid attention's
    weights), ``clamp`` between such bounds, negations, and products of such values."""
    if depth == 0:
        return False
    if isinstance(e, S.Const):
        return abs(e.value) <= 1
    if isinstance(e, S.Read) and e.tensor not in prog.inputs:
        d = definition(prog, e)
        return d is not None and not isinstance(d, _Reduced) and _unit(prog, d, depth - 1)
    if isinstance(e, S.Call) and e.fn == "exp":
        x = e.args[0]
        return isinstance(x, S.Binary) and x.op == "-" and dominates(prog, x.b, x.a)
    if isinstance(e, S.Call) and e.fn in ("sigmoid", "tanh"):  # of any argument (NaN stays NaN)
        return True
    if isinstance(e, S.Call) and e.fn == "clamp":
        return all(_unit(prog, b, depth - 1) for b in e.args[1:])
    if isinstance(e, S.Unary) and e.op == "-":
        return _unit(prog, e.x, depth - 1)
    if isinstance(e, S.Binary) and e.op == "*":
        return _unit(prog, e.a, depth - 1) and _unit(prog, e.b, depth - 1)
    if isinstance(e, S.Binary) and e.op == "/":
        return _unit(prog, e.a, depth - 1) and _at_least_one(prog, e.b)
    return False


def _implied_bounds(prog: Program, e: Einsum) -> set[int]:
    """Dimensions of an inlined ``T[.., r, ..] = X[.., r, ..]`` whose bounds the read of ``X`` checks."""
    if not isinstance(e.expr, S.Read):
        return set()
    x = prog.tensor(e.expr.tensor)
    out = set()
    for k, ix in enumerate(e.index):
        for j, jx in enumerate(e.expr.indices):
            if jx == S.Coord(ix.rank) and x.ranks[j] == ix.rank:
                out.add(k)
    return out


def _atom(code: str) -> str:
    from .triton_expr import atom

    return atom(code)


def _host_index(e: S.Expr, par: set[str], params: dict) -> str | None:
    """Python code of an index expression over parallel coordinates ``c_<rank>``, when it is monotone in
    each coordinate (so its extremes over a box are at the box's corners); else None."""
    if isinstance(e, S.Coord):
        return f"c_{e.rank}" if e.rank in par else None
    if isinstance(e, S.Const):
        return repr(e.value) if isinstance(e.value, int) else None
    if isinstance(e, S.Param):
        v = params.get(e.name)
        return repr(v) if isinstance(v, int) else None
    if isinstance(e, S.Size):
        return f"sizes[{e.rank!r}]"
    if isinstance(e, S.Unary) and e.op == "-":
        a = _host_index(e.x, par, params)
        return None if a is None else f"(-{a})"
    if isinstance(e, S.Binary) and e.op in ("+", "-", "*", "//"):
        a, b = _host_index(e.a, par, params), _host_index(e.b, par, params)
        if a is None or b is None:
            return None
        constant = not any(isinstance(n, S.Coord) for n in e.b.walk())
        if e.op == "*" and not (constant or not any(isinstance(n, S.Coord) for n in e.a.walk())):
            return None  # a product of two coordinates is not monotone in each
        if e.op == "//" and not (constant and isinstance(e.b, (S.Const, S.Param)) and int(b) > 0):
            return None
        return f"({a} {e.op} {b})"
    return None


def full_name(axis: str) -> str:
    """The compile-time flag saying feature rank ``axis`` fills its padded extent (no lane is masked)."""
    return f"FULL_{axis.upper()}"


def block_name(plan: FusedPlan, axis: str) -> str:
    if axis == plan.row or axis == plan.col:
        return f"BLOCK_{axis.upper()}"
    return f"PAD_{axis.upper()}"


# ---- generation --------------------------------------------------------------------------------------------


@dataclass
class FusedKernel:
    plan: FusedPlan
    name: str
    source: str  # the @triton.jit kernel
    params: list[str]  # host expressions of its runtime arguments, in order
    constexprs: list[str]  # names of its compile-time arguments
    footprint: str  # the body of _footprint()


def generate(plan: FusedPlan, name: str) -> FusedKernel:
    """The fused kernel's source; raises :class:`Unsupported` when a statement does not fit the skeleton."""
    env = FusedEnv(plan)
    p, prog = plan, plan.prog
    row, col = p.row, p.col
    R, C = block_name(p, row), block_name(p, col)

    env.scope = "setup"
    env.emit(
        f"# program -> ({', '.join((*p.par, row))} block)" if p.par else f"# program -> a block of {row}"
    )
    env.emit("pid = tl.program_id(0)")
    env.emit(f"n_row_blocks = tl.cdiv({env.size(row)}, {R})")
    env.emit("row_block = pid % n_row_blocks")
    row_block_line = len(env.lines["setup"]) - 1
    if p.par:
        env.emit("rest = pid // n_row_blocks")
        for k, x in enumerate(reversed(p.par)):
            env.emit(f"i_{x} = (rest % {env.size(x)}).to(tl.int64)")
            if k < len(p.par) - 1:
                env.emit(f"rest = rest // size_{x}")
    env.emit(f"offs_{row} = row_block * {R} + tl.arange(0, {R})")
    env.emit(f"lane_{row} = offs_{row} < size_{row}")
    env.emit(f"offs_{col} = tl.arange(0, {C})  # lanes of one tile of {p.parent}")
    env.emit(f"lane_{col} = offs_{col} < {env.size(col)}")
    for f in p.feats:
        env.emit(f"offs_{f} = tl.arange(0, {block_name(p, f)})")
        # FULL_<F> (compile time: the size is its padded extent) folds the mask away, so that loads along
        # the feature rank stay vectorised and the compiler can pipeline them
        env.emit(f"lane_{f} = (offs_{f} < {env.size(f)}) | {full_name(f)}")

    env.scope = "prologue"
    for e in p.prologue:
        env.emit(f"# {fmt_einsum(e)}")
        env.values[e.tensor] = env.statement(e, e.tensor)
    env.raw = plan_raw_max(p)
    for source, (_, scalar) in sorted(env.raw.folded.items()):
        env.emit(f"# {source} is computed without the factor {fmt_expr(scalar)}, which joins log2 e here")
        code = Renderer(env, prog).value(scalar).val.code
        env.emit(f"{source}_log2 = {atom(in_dtype(code, 'CD'))} * {LOG2E}")  # (`(0.7) * log2 e` was float32)
    for e in p.inits:
        env.emit(f"# {fmt_einsum(e)}")
        if e.tensor in env.raw.states:  # (in the raw scores' units: divided by their scale)
            source = env.raw.scale[e.tensor]
            scalar = env.raw.folded[source][1]
            units = f"as every {e.tensor} below: in raw {source}'s units"
            env.emit(f"# (held divided by {fmt_expr(scalar)}, {units})")
            e = dataclasses.replace(e, expr=raw_constants(e.expr, scalar))
        env.cur[e.tensor] = _state(env, e, e.tensor, carried=True)

    _body(env, "body")  # every tile: filters and bounds as masks
    _body(env, "body_full")  # tiles that the filters and the bounds leave whole: no masks
    env.steady = all(env.next[s].mask is None for s in p.states) and any(
        env.cur[s].mask is not None for s in p.states
    )
    if env.steady:  # after one whole tile every state is present: the later tiles know it
        _body(env, "body_steady")
        env.neg_fill = _max_or_exp_operands(p)
        _body(env, "body_tail")
        env.neg_fill = set()
        # (a masked tile must keep them present, for the next masked tile to know it)
        env.tail = all(env.next[s].mask is None for s in p.states)
        seen = _identity_start(p) if env.tail else None
        rows = {
            tuple(env.order([x for x in prog.tensor(s).ranks if x not in (*p.par, p.it, *p.feats)]))
            for s in p.states
        }
        if seen is not None and rows == {(row,)}:
            # every state starts present at its identity; one flag per row says where it really is
            env.seen = env.values[seen]
            env.scope = "prologue"
            env.emit(f"seen = tl.full([{R}], False, tl.int1)  # rows that a tile has reached (every state)")
            for s in p.states:
                env.cur[s] = Value(env.cur[s].val, Tile("seen", (row,)))

    env.scope = "epilogue"
    for e in p.epilogue:
        env.emit(f"# {fmt_einsum(e)}")
        env.values[e.tensor] = env.statement(e, e.tensor)
    outputs = []
    for o in prog.outputs:
        outputs.append(o)
        _store(env, o)

    if _bounds(env) == "grows":
        # the work per row block grows with the row (causal): the heaviest blocks start first, so that the
        # last wave of programs is short
        env.lines["setup"][row_block_line] = (
            "    row_block = n_row_blocks - 1 - pid % n_row_blocks  # heaviest row blocks first"
        )
    return _assemble(env, name, outputs)


def _body(env: FusedEnv, scope: str) -> None:
    p = env.plan
    env.scope, env.full_tiles = scope, scope in ("body_full", "body_steady")
    env.next = {}
    carried = dict(env.cur)
    if scope in ("body_steady", "body_tail"):
        for s in p.states:
            env.cur[s] = Value(env.cur[s].val, None)
    env.conjunctions = {}  # names and `&`s of masks are per scope
    for e in p.body:
        env.emit(f"# {fmt_einsum(e)}")
        if e.kind == "step":
            if e.tensor in env.raw.states:  # max(RM, LM ?? k): LM raw, k divided by the scale
                scalar = env.raw.folded[env.raw.scale[e.tensor]][1]
                e = dataclasses.replace(e, expr=raw_constants(e.expr, scalar))
            env.next[e.tensor] = _state(env, e, f"{e.tensor}_next")
            if e.tensor in p.floored:  # a running max of the rewrite's form: finite (stabilizers.floored)
                env.emit(f"{e.tensor}_next = _floor({e.tensor}_next)")
                env.next[e.tensor].above = True
        else:
            folded = env.raw.folded.get(e.tensor)
            v = env.statement(folded[0] if folded else e, e.tensor)
            env.values[e.tensor] = v
            p.tiles.append(v.val.axes)
    missing = [s for s in p.states if s not in env.next]
    if missing:
        raise Unsupported(f"the running state `{missing[0]}` is not updated in the loop")
    env.emit("# the running state moves on to the next tile")
    for s in p.states:
        env.emit(f"{s} = {s}_next")
        if s in p.absent:
            env.emit(f"{s}_ok = {s}_next_ok")
    env.full_tiles = False
    env.cur = carried


def _max_or_exp_operands(p: FusedPlan) -> set[str]:
    """The filtered tiles of the loop that a max reduction or an exponential ``exp(T - X)`` reads: held
    -inf where a filter removes a point, they need no select there (and the exponential is 0)."""
    found: set[str] = set()

    def visit(x: S.Expr, in_exp: bool) -> None:
        if isinstance(x, S.Read) and in_exp:
            found.add(x.tensor)
        elif isinstance(x, S.Call):
            for a in x.args:
                visit(a, x.fn == "exp" or (in_exp and x.fn in ("max", "min")))
        elif isinstance(x, S.Binary):
            visit(x.a, in_exp and x.op in ("-", "+"))
            visit(x.b, in_exp and x.op == "+")
        elif isinstance(x, S.Unary | S.Default):
            for a in (x.x,) if isinstance(x, S.Unary) else (x.a, x.b):
                visit(a, False)

    for e in p.body:
        if e.reduce and [op for _, op in e.reduce] == ["max"] and isinstance(e.expr, S.Read):
            found.add(e.expr.tensor)
        visit(e.expr, False)
    return {e.tensor for e in p.body if e.filter is not None and e.tensor in found}


def _identity_start(p: FusedPlan) -> str | None:
    """The online softmax's running state can start *present*, at the identities its ``??`` stand for:
    returns the tensor ``L`` whose presence decides every state's (a row's state is present once one of its
    tiles had a present point of ``L``), or None where that is not proved.

    The rewrite's loop is ``M' = max(M ?? L, L ?? M)`` (``M`` floored, starting absent at -inf), and per sum
    ``S' = A + (B ?? 0) ?? B`` with ``B = S * F``, ``F = exp(M - M')`` (``S`` starting absent at 0) and
    ``A`` a sum over the tile. Started present at -inf and 0 instead, the same statements without their
    ``??`` compute the same values wherever the spec's state is present, and the identities where it is
    absent: ``max(-inf, L) = L``; ``F`` lies in [0, 1] (``M' >= M`` and ``M'`` is finite), so an absent
    ``S`` gives ``B = 0 * F = 0``, as ``B ?? 0`` does; a row with no present point in the tile sums to ``A =
    0`` (the kernel's sums skip absent points), so ``A + B = B``; and a row no tile has reached keeps
    ``-inf``/lowest and 0. Every state is present exactly where some tile had a present point of ``L``:
    the kernel tracks that one flag per row (``seen``) instead of a mask per state, and no tile needs the
    general loop body with its selects (whose registers, sm_90, cost a third of the occupancy)."""
    it = p.it
    defs = {e.tensor: e for e in p.body}
    steps = {e.tensor: e for e in p.body if e.kind == "step"}
    inits = {e.tensor: e for e in p.inits}
    if set(steps) != set(p.states) or set(inits) != set(p.states) or not set(p.states) <= p.absent:
        return None

    def ref(x: S.Expr) -> tuple[str, str] | None:
        """(state, "cur" | "next") for a read of a running state at step m or m + 1."""
        if not isinstance(x, S.Read) or x.tensor not in p.states:
            return None
        ranks = p.prog.tensor(x.tensor).ranks
        if len(ranks) != len(x.indices):
            return None
        step = None
        for r, i in zip(ranks, x.indices):
            if r == it and i == S.Coord(it):
                step = "cur"
            elif r == it and i == S.Binary("+", S.Coord(it), S.Const(1)):
                step = "next"
            elif i != S.Coord(r):  # another row, head or feature than the state's own: not the form
                return None
        return None if step is None else (x.tensor, step)

    def read_of(x: S.Expr) -> str | None:
        return x.tensor if isinstance(x, S.Read) and x.tensor not in p.states else None

    # the max state: M' = max(M ?? L, L ?? M), M floored, starting absent at -inf
    maxes = [s for s in p.states if s in p.floored]
    if len(maxes) != 1:
        return None
    (m,) = maxes
    e = steps[m]
    if not (isinstance(e.expr, S.Call) and e.expr.fn == "max" and len(e.expr.args) == 2) or e.filter:
        return None
    a, b = e.expr.args
    if not (isinstance(a, S.Default) and isinstance(b, S.Default)):
        return None
    if ref(a.a) == (m, "cur") and read_of(a.b) and a.b == b.a and ref(b.b) == (m, "cur"):
        lt = a.b.tensor
    elif ref(b.a) == (m, "cur") and read_of(b.b) and b.b == a.a and ref(a.b) == (m, "cur"):
        lt = b.b.tensor
    else:
        return None
    init = inits[m]
    if not (never_present(p.prog, init.filter) and init.expr == S.Const(float("-inf"))):
        return None
    le = defs.get(lt)  # L: a max over the tile, so -inf in a row with no present point
    if le is None or le.reduce != ((p.col, "max"),) or le.filter is not None:
        return None
    source = read_of(le.expr)
    if source is None or defs.get(source) is None:
        return None
    # the sum states: S' = A + (B ?? 0) ?? B, B = S * F, F = exp(M - M'), A a sum over the tile of
    # something read from exp(T - M') where T is L's source (absent exactly where it is)
    factors_ok = {
        f
        for f, fe in defs.items()
        if (d := _exp_diff(fe)) and (ref(d[0]), ref(d[1])) == ((m, "cur"), (m, "next"))
    }
    allowed: dict[str, set[tuple[str, str]]] = {m: {(m, "cur")}}  # statement -> the state reads it may make
    for f in factors_ok:
        allowed[f] = {(m, "cur"), (m, "next")}
    for st in p.states:
        if st == m:
            continue
        e = steps[st]
        x = e.expr
        if e.filter is not None or not (
            never_present(p.prog, inits[st].filter) and inits[st].expr == S.Const(0)
        ):
            return None
        if not (
            isinstance(x, S.Default)
            and isinstance(x.a, S.Binary)
            and x.a.op == "+"
            and isinstance(x.a.b, S.Default)
            and x.a.b.b == S.Const(0)
            and read_of(x.a.b.a)
            and x.a.b.a == x.b
            and read_of(x.a.a)
        ):
            return None
        bt, at = x.b.tensor, x.a.a.tensor
        be, ae = defs.get(bt), defs.get(at)
        if be is None or ae is None or be.reduce or be.filter is not None:
            return None
        y = be.expr  # B = S * F or F * S
        if not (isinstance(y, S.Binary) and y.op == "*"):
            return None
        pair = [(ref(y.a), y.b), (ref(y.b), y.a)]
        if not any(r == (st, "cur") and read_of(o) in factors_ok for r, o in pair):
            return None
        allowed[bt] = {(st, "cur")}
        # A: a sum over the tile of Z or Z * X, Z = exp(T - M') with T the source of L
        if ae.reduce != ((p.col, "+"),) or ae.filter is not None:
            return None
        z = ae.expr
        terms = (
            [z] if isinstance(z, S.Read) else [z.a, z.b] if isinstance(z, S.Binary) and z.op == "*" else []
        )
        zs = [
            t.tensor
            for t in terms
            if read_of(t)
            and t.tensor in defs
            and (d := _exp_diff(defs[t.tensor]))
            and d[0] == le.expr  # the very scores whose max L is, at the same points
            and ref(d[1]) == (m, "next")
        ]  # Z = exp(T - M'): the scores of L's source less the new running max
        others = [t for t in terms if not (read_of(t) and t.tensor in zs)]
        if len(zs) != 1 or any(read_of(t) is None or t.tensor in defs for t in others):
            return None  # (another factor: an input's tile, present wherever the tile's lanes are)
        allowed[zs[0]] = {(m, "next")}
    for e in p.body:  # the states are read nowhere else
        reads = {r for x in e.expr.walk() if (r := ref(x))}
        if e.filter is not None:
            reads |= {r for x in e.filter.walk() if (r := ref(x))}
        if e.kind == "step":
            reads -= {(e.tensor, "cur")}
        if reads and not reads <= allowed.get(e.tensor, set()):
            return None
    return lt


def _exp_diff(e: Einsum) -> tuple[S.Expr, S.Expr] | None:
    """``(a, b)`` where ``e`` is ``exp(a - b)``, unreduced and unfiltered; else None."""
    x = e.expr
    if e.reduce or e.filter is not None or not (isinstance(x, S.Call) and x.fn == "exp"):
        return None
    d = x.args[0]
    return (d.a, d.b) if isinstance(d, S.Binary) and d.op == "-" else None


def _state(env: FusedEnv, e: Einsum, name: str, carried: bool = False) -> Value:
    """A running state's value, materialised on its whole tile (loop-carried values keep one shape).

    ``carried``: the value is the loop-carried variable itself (the initial state), which later steps
    overwrite: when the state can hold absent points its mask is read even if the initial state has none."""
    p = env.plan
    t = p.prog.tensor(e.tensor)
    axes = env.order([x for x in t.ranks if x not in p.par and x != p.it])
    v = env.statement(e, name)
    if v.val.axes != axes:
        env.emit(f"{name} = {env.full(v.val, axes, 'CD')}")
    if v.val.axes == axes and v.val.code == name:
        pass
    tracked = e.tensor in p.absent
    out = Value(Tile(name, axes))
    if tracked:
        maxes = tuple(a for a in axes if a not in p.feats)  # presence never depends on a feature
        shape = ", ".join(env.extent(a) for a in maxes)
        if v.mask is None:
            # present everywhere: later statements of this step know it; the loop carries an all-true mask
            env.emit(f"{name}_ok = tl.full([{shape}], 1, tl.int1)" if maxes else f"{name}_ok = True")
            if carried:
                out.mask = Tile(f"{name}_ok", maxes)
            return out
        if v.mask.axes != maxes:
            env.emit(f"{name}_ok = {env.full(v.mask, maxes, 'tl.int1')}")
        out.mask = Tile(f"{name}_ok", maxes)
    elif v.mask is not None:
        raise InternalError(f"running state `{e.tensor}` can be absent but carries no mask")
    return out


def _store(env: FusedEnv, o: str) -> None:
    p, prog = env.plan, env.plan.prog
    t = prog.tensor(o)
    if o not in env.values:
        raise Unsupported(f"output `{o}` is not computed by the kernel")
    v = env.values[o]
    axes = env.order([x for x in t.ranks if x not in p.par])
    r = Renderer(env, prog)
    terms: Tile = Tile("0")
    for k, x in enumerate(t.ranks):
        c = f"i_{x}" if x in p.par else f"_wide(offs_{x}, {WIDE})"
        term = Tile(f"{c} * {o}_stride{k}", () if x in p.par else (x,))
        terms = term if terms.code == "0" else r.binary("+", terms, term)
    lanes = None
    for a in axes:
        lanes = r.mask_and(lanes, env.lane(a))
    val = v.val if v.mask is None else r.where(v.mask, v.val, Tile("0.0"))
    env.emit(f"# {o}: absent points are stored as 0")
    mask = f", mask={env.expand(lanes, axes)}" if lanes is not None else ""
    env.emit(
        f"tl.store({o}_ptr + {env.expand(terms, axes) if terms.axes else terms.code}, "
        f"{env.full(val, axes, 'CD')}.to({o}_ptr.dtype.element_ty){mask})"
    )


def _bounds(env: FusedEnv) -> str | None:
    """Emit the range of tiles each program visits; "grows" when only its end depends on the rows (the
    number of tiles grows with the row block, as in causal attention)."""
    p = env.plan
    env.scope = "bounds"
    filtered = [e for e in p.body if e.filter is not None]
    lo = hi = None
    if filtered and not p.skip_tiles:
        p.narrowed = "no tile skipping (skip_tiles=False)"
    elif filtered:
        ranges = [tile_range(p, e.filter, runtime=env.program_constant) for e in filtered]
        finite, initial = empty_step_identity(p, {e.tensor for e in filtered})
        if finite and all(h is not None for _, h in ranges):
            for _, h in ranges:
                hi = h if hi is None else f"tl.maximum({hi}, {h})"
        if initial and all(lo_ is not None for lo_, _ in ranges):
            for lo_, _ in ranges:
                lo = lo_ if lo is None else f"tl.minimum({lo}, {lo_})"
        skipped = []
        if lo is not None:
            skipped.append("before")
        if hi is not None:
            skipped.append("after")
        if skipped:
            p.narrowed = (
                f"tiles {' and '.join(skipped)} the filter's range skipped per program "
                "(an empty tile provably leaves the running state unchanged)"
            )
        elif not finite or not initial:
            p.narrowed = "no tile skipping: an empty tile would change the running state as written"
        else:
            p.narrowed = "no tile skipping: the filter is not affine in the tile number"
    # whole tiles: every filter holds at every point, and the tile lies inside the streamed rank
    whole_lo, whole_hi = None, f"{env.size(p.parent)} // {env.size(p.col)}"
    for e in filtered:
        rng = tile_range(p, e.filter, forall=True, runtime=env.program_constant)
        if rng == UNKNOWN:
            whole_hi = None
            break
        whole_lo = _pick(whole_lo, rng[0], "tl.maximum")
        whole_hi = _pick(whole_hi, rng[1], "tl.minimum")
    p.whole = None if whole_hi is None else (whole_lo or "lo", whole_hi)
    sz = env.size(p.it)
    R = block_name(p, p.row)
    if filtered:
        env.emit("# rows row_lo..row_hi: the filters are checked per tile over them")
        env.emit(f"row_lo = row_block * {R}")
        env.emit(f"row_hi = tl.minimum(row_lo + {R}, size_{p.row}) - 1")
    if lo is None and hi is None:
        env.emit(f"lo, hi = 0, {sz}")
        return
    env.emit(f"# the tiles of {p.it} whose points can pass the filter for these rows: the others are skipped")
    if p.runtime_bounds:
        # bounds from runtime values are int64 (program_constant): clamped to 0..M1 and narrowed to the
        # tile number's type, which keeps the loop variable (and the tiles' offsets) int32
        env.emit(
            f"lo = {_narrow(f'tl.minimum(tl.maximum({lo}, 0), {sz})', sz)}" if lo is not None else "lo = 0"
        )
        env.emit(
            f"hi = {_narrow(f'tl.maximum(tl.minimum({hi}, {sz}), 0)', sz)}"
            if hi is not None
            else f"hi = {sz}"
        )
    else:
        env.emit(f"lo = tl.maximum({lo}, 0)" if lo is not None else "lo = 0")
        env.emit(f"hi = tl.minimum({hi}, {sz})" if hi is not None else f"hi = {sz}")
    if hi is not None and not initial:
        # an empty step changes a row's initial state (`RM = -inf` unguarded: exp(-inf - -inf) is NaN), so
        # rows that no tile reaches are not left alone: a block with none reached runs every tile, as the
        # cascade says (rows of a block that others reach run its tiles from the first)
        env.emit(f"hi = tl.where(hi > 0, hi, {sz})")
    return "grows" if lo is None and hi is not None and "row_hi" in hi else None


def _assemble(env: FusedEnv, name: str, outputs: list[str]) -> FusedKernel:
    p, prog = env.plan, env.plan.prog
    params, host, nospec = [], [], []
    for t in env.inputs + outputs:
        params.append(f"{t}_ptr")
        host.append(t)
        nd = len(prog.tensor(t).ranks)
        for k in range(nd):  # strides stay specialised: Triton's divisibility-by-16 hint is what lets
            params.append(f"{t}_stride{k}")  # loads be vectorised and pipelined; sizes never are
            host.append(f"{t}.stride({k})")
    order = {r: i for i, r in enumerate(prog.ranks)}
    for x in sorted(env.sizes, key=lambda x: order.get(x, len(order))):
        params.append(f"size_{x}")
        host.append(f"size_{x}")
        nospec.append(f"size_{x}")
    constexprs = ["CD", "DOT", WIDE, block_name(p, p.row), block_name(p, p.col)]
    constexprs += [block_name(p, f) for f in p.feats] + [full_name(f) for f in p.feats] + list(p.proved)
    params += [f"{c}: tl.constexpr" for c in constexprs]
    doc = "\n".join(f"    {fmt_einsum(e)}" for e in prog.einsums)
    lines = [
        f"@triton.jit(do_not_specialize={nospec!r})",
        f"def {name}(",
        *(f"    {a}," for a in params),
        "):",
    ]
    lines.append(
        f'    """One program: rows {block_name(p, p.row)} of `{p.row}` for one ({", ".join(p.par)}); '
        f'loops over the tiles `{p.it}`.\n\n{doc}\n    """'
    )
    lines += env.lines["setup"]
    lines.append("    # ---- prologue: loop-invariant tiles and the initial running state")
    lines += env.lines["prologue"]
    lines.append(f"    # ---- the tiles of {p.it} to visit")
    lines += env.lines["bounds"]
    lines.append(
        f"    # ---- the streamed loop: one tile of {block_name(p, p.col)} lanes of {p.parent} per step"
    )
    split = env.lines["body_full"] != env.lines["body"] and p.whole is not None
    if env.seen is not None:
        # the states start present (see _identity_start): no tile needs the general body. Masked tiles
        # run the tail body, which also notes the rows it reaches; whole tiles reach every row
        first = list(env.lines["body_tail"])
        # a row is reached where the tile's max is above -inf: a compare, where the mask's own reduction
        # over the tile costs 60 registers (sm_90). That holds where the max is -inf wherever it is absent
        # (its fill); where it is not (a per-row term of the filter left out of the reduced values, or
        # padding lanes), the compare is taken with the mask. Rows left (all -inf, NaN, or none present)
        # are decided after the loop by the masks
        k = first.index("        # the running state moves on to the next tile")
        reached = f"({env.seen.val.code} > {NEG_INF})"
        if env.seen.fill != NEG_INF and env.seen.mask is not None:
            reached = f"{reached} & {env.seen.mask.code}"
        first.insert(k, f"        seen = seen | {reached}")
        if p.whole is None:
            lines.append(f"    for {p.it} in range(lo, hi):")
            lines += first
        else:
            lines += _three_loops(p, first, env.lines["body_steady"])
            lines.append("    seen = seen | (whole_lo < whole_hi)")
        lines += _recheck(env, first)
    elif split:
        steady = env.steady and env.lines["body_steady"] != env.lines["body_full"]
        if not steady:
            lines += _three_loops(p, env.lines["body"], env.lines["body_full"])
        else:
            lines += _whole_bounds(p)
            # the first whole tile runs with the masked tiles before it (its states may still be absent: a
            # loop of its own cost registers, sm_90: 217 -> 255, and spills); with `tail`, the masked tiles
            # after the whole ones know every state present too, and without a whole tile the first loop
            # runs them all
            lines.append("    steady = tl.minimum(whole_lo + 1, whole_hi)")
            first_end, tail_start, note = "steady", "whole_hi", ""
            if env.tail:
                first_end = "tl.where(whole_lo < whole_hi, steady, hi)"
                tail_start = "tl.where(whole_lo < whole_hi, whole_hi, hi)"
                note = "  # every state present"
            lines.append(f"    for {p.it} in range(lo, {first_end}):")
            lines += env.lines["body"]
            lines.append(
                f"    for {p.it} in range(steady, whole_hi):  # whole tiles after a whole tile: no masks, "
                "every state present"
            )
            lines += env.lines["body_steady"]
            lines.append(f"    for {p.it} in range({tail_start}, hi):{note}")
            lines += env.lines["body_tail" if env.tail else "body"]
    else:
        lines.append(f"    for {p.it} in range(lo, hi):")
        lines += env.lines["body"]
    lines.append("    # ---- epilogue: final values from the running state, and the stores")
    lines += env.lines["epilogue"]
    if env.seen is not None:  # no state carries a mask of its own: `seen` is every state's
        carried = {f"{s}{x}_ok" for s in p.states for x in ("", "_next")}
        lines = [ln for ln in lines if not (m := ASSIGN.match(ln)) or m.group(1) not in carried]
        if any(w in carried for ln in lines for w in re.findall(r"\w+", ln)):
            raise InternalError("a state's mask is read although every state starts present")
    lines = drop_unused(lines)
    return FusedKernel(p, name, "\n".join(lines) + "\n", host, constexprs, _footprint(env))


def _whole_bounds(p: FusedPlan) -> list[str]:
    """Lines binding ``whole_lo .. whole_hi - 1``: the tiles of this program with no masked point."""
    start = "lo" if p.whole[0] == "lo" else f"tl.maximum(lo, {p.whole[0]})"
    whole_lo, whole_hi = f"tl.minimum({start}, hi)", f"tl.maximum(whole_lo, tl.minimum(hi, {p.whole[1]}))"
    if p.runtime_bounds:  # (both lie in lo..hi: narrowed as lo and hi are, see _bounds)
        whole_lo, whole_hi = _narrow(whole_lo, f"size_{p.it}"), _narrow(whole_hi, f"size_{p.it}")
    return [
        "    # tiles lo..whole_lo-1 and whole_hi..hi-1 have masked points; whole_lo..whole_hi-1 none",
        f"    whole_lo = {whole_lo}",
        f"    whole_hi = {whole_hi}",
    ]


def _narrow(code: str, size: str) -> str:
    """``code``, a tile number within 0..``size``, in the type of ``size`` (int32 below 2**31 tiles)."""
    return f"({code}).to({size}.dtype)"


def _three_loops(p: FusedPlan, masked: list[str], whole: list[str]) -> list[str]:
    """The masked tiles before the whole ones, the whole ones, and the masked ones after them."""
    return [
        *_whole_bounds(p),
        f"    for {p.it} in range(lo, whole_lo):",
        *masked,
        f"    for {p.it} in range(whole_lo, whole_hi):  # whole tiles: no masks",
        *whole,
        f"    for {p.it} in range(whole_hi, hi):",
        *masked,
    ]


def _recheck(env: FusedEnv, body: list[str]) -> list[str]:
    """After the loop: rows whose tiles' maxes were all -inf (or NaN), or that no tile reached, are present
    where a tile had a present point; the masks decide, tile by tile (only the lines that make them)."""
    p = env.plan
    lane = f"lane_{p.row}"
    mask = env.seen.mask
    if mask is None:  # every visited tile has a present point in every row
        return ["    seen = seen | (lo < hi)  # rows whose tiles' maxes were -inf (or NaN) are present too"]
    needed, kept = {mask.code}, []
    for ln in reversed(body):
        m = ASSIGN.match(ln)
        if m and m.group(1) in needed:
            kept.append("    " + ln)
            needed |= set(re.findall(r"[A-Za-z_]\w*", ln[m.end() :]))
    # names of their own (the loops' masks stay unread there, and go)
    names = {ASSIGN.match(ln).group(1) for ln in kept}

    def own(ln: str) -> str:
        return re.sub(r"\b\w+\b", lambda w: w.group(0) + "_again" if w.group(0) in names else w.group(0), ln)

    return [
        "    # rows whose tiles' maxes were all -inf (or NaN), or that no tile reached: present where a tile",
        "    # had a present point (the masks decide, tile by tile; only such rows pay for it)",
        f"    if tl.max(({lane} & ~seen).to(tl.int32), 0) > 0:",
        f"        for {p.it} in range(lo, hi):",
        *(own(ln) for ln in reversed(kept)),
        f"            seen = seen | {own(mask.code)}",
    ]


def _footprint(env: FusedEnv) -> str:
    """Python lines computing (shared memory bytes, registers per thread) of one program."""
    p = env.plan

    def elems(axes) -> str:
        return " * ".join(block_name(p, a) for a in axes) if axes else "1"

    tile_loads = [elems(a) for a, varying in p.loads.values() if varying and a]
    fixed_loads = [elems(a) for a, varying in p.loads.values() if not varying and a]
    states = []
    for s in p.states:
        t = p.prog.tensor(s)
        states.append(elems(env.order([x for x in t.ranks if x not in p.par and x != p.it])))
    biggest = max(p.tiles, key=len, default=())
    names = [block_name(p, p.row), block_name(p, p.col)] + [block_name(p, f) for f in p.feats]
    lines = [f"{n} = cfg.get({n!r}) or shape[{n!r}]" for n in names]
    lines += [
        'stages, threads = cfg.get("num_stages", 2), 32 * cfg.get("num_warps", 4)',
        f"smem = (stages * ({' + '.join(tile_loads) or '0'}) + ({' + '.join(fixed_loads) or '0'})) * elem",
        "smem += 2048  # the compiler's scratch for reductions and layout changes (measured: 1 KiB at sm_90)",
        f"regs = ({' + '.join(states) or '0'} + 2 * {elems(biggest)}) // threads",
        "return smem, regs",
    ]
    return "\n".join("    " + ln for ln in lines)
