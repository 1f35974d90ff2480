"""Skipping dead tiles in a fused recurrence loop, only where that provably changes nothing.

In the 1-pass causal cascade, step ``m1`` of the loop over key tiles reads ``BQK[m1, m0, p]``, which is
absent for every ``m0`` when the whole tile lies after query ``p`` (``m1 * M0 > p``). Real kernels do not
compute such tiles. A backend may skip them when the step, given that its tile is absent, leaves the running
state of that row exactly as it is. This module decides that, from the program alone.

**Alive rows.** For a *row rank* ``p`` and a *tile statement* ``T`` of the loop over ``r`` (a per-step
statement whose presence, from :mod:`einattn.absence`, is an exact conjunction of affine constraints), the
rows alive at step ``k`` are those ``p`` for which some point of ``T[k, ..., p]`` is present. Fourier-Motzkin
elimination of ``T``'s other ranks turns the constraints into bounds ``lo(k) <= p <= hi(k)`` plus conditions
on ``k`` alone, which a backend evaluates at each step (:class:`TileSkip`).

**Which dead rows may be skipped.** At a dead row, every value of the step that depends on ``T`` is absent.
Evaluating the state updates with that knowledge (absence propagates, ``x ?? v`` becomes ``v``) gives each
state's *dead update*. Two cases:

* *established rows*, which had a present point at an earlier step: skipped when every dead update
  simplifies to the unchanged state with identities valid for finite values (``max(x, -inf) = x``,
  ``x + 0 = x``, ``x * 1 = x``, ``exp(0) = 1`` and ``x - x = 0``). The running state of such a row is built
  from present data, so it is finite when the inputs are: a row whose state is not finite (an input holding
  inf or NaN) may differ from the reference; with finite inputs the result is exact
  (``TileSkip.trailing``).
* *rows not yet established* still hold the initial state: skipped when the dead update, evaluated exactly
  (IEEE, with infinities and NaN) on the constant initial values, returns them unchanged
  (``TileSkip.leading``). The 1-pass cascade initialised with ``RM = -inf`` fails this test, as it should:
  ``exp(-inf - -inf)`` is NaN, so the reference itself computes NaN for a row whose first tiles are dead.
  Where every initial state is absent (the rewritten cascade's ``RM[0] = -inf where 0 != 0``), the test is
  that the dead update of absent states is absent: ``max(RM ?? LM, LM ?? RM)`` with ``LM`` absent is ``RM``.

A row rank qualifies when every state of the loop is indexed by it, no statement of the loop reduces it, every
read of a loop tensor indexes it plainly, and nothing of the loop but final states is read after the loop:
then rows are independent and a backend can compute a step on the interval of rows it needs.

>>> import einattn
>>> from einattn.fusion import fused_schedule
>>> from einattn.graph import Loop
>>> prog = einattn.load("examples/causal_1pass.ein")
>>> loop = next(s for s in fused_schedule(prog) if isinstance(s, Loop))
>>> sk = tile_skip(prog, loop)
>>> sk.row, sk.tile, sk.trailing, sk.leading
('p', 'BQK', True, False)
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from . import syntax as S
from .absence import Affine, Lin, analyse, num
from .fusion import loop_states
from .graph import Loop
from .ir import Einsum, Program


@dataclass(frozen=True)
class TileSkip:
    """How to find the rows a step must compute.

    Rows ``p`` alive at step ``k`` satisfy ``a * p + L >= 0`` for every ``(L, a)`` in ``bounds`` (``L`` a
    :class:`~einattn.absence.Lin` over the atoms ``("index", r)`` for ``k`` and ``("size", x)``) and every
    ``conds`` is ``>= 0``.
    """

    rank: str  # the loop's iterative rank
    row: str
    tile: str  # label of the tile statement
    bounds: tuple[tuple[Lin, int], ...]
    conds: tuple[Lin, ...]
    trailing: bool  # dead rows that were alive before may be skipped (finite states)
    leading: bool  # dead rows never alive so far may be skipped (exact on the initial state)
    # rows where the tile statement's filter holds at every point (same form as ``bounds``; None: unknown):
    # there its filter mask is all true, and a backend may drop it
    whole: tuple[tuple[Lin, int], ...] | None = None


def tile_skip(prog: Program, loop: Loop) -> TileSkip | None:
    """The skipping rule of a fused loop, or None when no tile can be skipped provably."""
    states = loop_states(prog, loop)
    if not states:
        return None
    for row in row_ranks(prog, loop):
        for e in loop.body:
            if e.kind != "plain" or row not in e.lhs_ranks:
                continue
            alive = _alive(prog, loop.rank, row, e)
            if alive is None or not alive[0]:
                continue  # not exact, or no bound on the rows: nothing worth skipping
            trailing = _dead_update_is_identity(prog, loop, e.label, finite=True)
            leading = _dead_update_keeps_init(prog, loop, e.label)
            if trailing or leading:
                whole = _whole(prog, loop.rank, row, e)
                return TileSkip(loop.rank, row, e.label, *alive, trailing, leading, whole)
    return None


# ---- rows -------------------------------------------------------------------------------------------------


def row_ranks(prog: Program, loop: Loop) -> list[str]:
    """Ranks whose points (rows) a fused loop computes independently of each other (see the module doc)."""
    states = loop_states(prog, loop)
    if not states:
        return []
    members = {e.label for e in loop.body}
    local = {e.tensor for e in loop.body}
    if local & set(prog.outputs):
        return []
    for e in prog.einsums:
        if e.label in members:
            continue
        for rd in e.reads():
            if rd.tensor not in local:
                continue
            t = prog.tensor(rd.tensor)
            if rd.tensor not in states or rd.indices[t.iterative] != S.Size(loop.rank):
                return []  # a per-step value or a past state is read after the loop
    candidates = [r for r in prog.tensor(states[0]).ranks if r != loop.rank]
    out = []
    for row in candidates:
        if not all(row in prog.tensor(s).ranks for s in states):
            continue
        if any(row in e.reduced for e in loop.body):
            continue
        plain = True
        for e in loop.body:
            for rd in e.reads():
                t = prog.tensor(rd.tensor)
                if rd.tensor in local and row in t.ranks:
                    plain &= rd.indices[t.ranks.index(row)] == S.Coord(row)
        if plain:
            out.append(row)
    return out


def _alive(prog: Program, rank: str, row: str, tile: Einsum):
    """(bounds, conds) of the rows with a present point of ``tile`` at a step, or None if not exact."""
    a = analyse(prog)
    pres = a.statement(tile)
    if not pres or not any(c.coef(row) or c.coef(rank) for c in pres):
        return None
    step = Affine.make({}, Lin.of(("index", rank)))
    facts = {("index", rank): a.size(rank) - num(1)}
    p = frozenset(c.substitute(rank, step) for c in pres)
    for r in tile.lhs_ranks:
        if r not in (rank, row):
            p = a.eliminate(p, r, facts)
            if p is None:
                return None
    bounds = tuple(sorted((c.const, c.coef(row)) for c in p if c.coef(row)))
    conds = tuple(sorted(c.const for c in p if not c.coef(row)))
    if not bounds and not conds:
        return None
    return bounds, conds


def _whole(prog: Program, rank: str, row: str, tile: Einsum):
    """Bounds on the rows where ``tile``'s filter holds for every point of its other ranks, or None."""
    a = analyse(prog)
    cons = a.filter(tile.filter)
    if not cons:
        return None
    step = Affine.make({}, Lin.of(("index", rank)))
    out = []
    for c in cons:
        c = c.substitute(rank, step)
        low = c.const
        for r, k in c.coefs:  # the worst point of each other rank's range
            if r != row and k < 0:
                low = low + (a.size(r) - num(1)).scale(k)
        if not c.coef(row):
            return None  # a condition on the step alone: keep the mask
        out.append((low, c.coef(row)))
    return tuple(sorted(out))


# ---- the dead update --------------------------------------------------------------------------------------


class _Opaque:
    """A value the evaluation cannot follow (present or not)."""


ABSENT, OPAQUE = object(), _Opaque()


class _DeadStep:
    """Evaluate one step of the loop symbolically, the tile statement's values all absent."""

    def __init__(self, prog: Program, loop: Loop, tile: str, finite: bool, absent_states: bool = False):
        self.prog, self.loop, self.finite = prog, loop, finite
        self.r = loop.rank
        self.states = set(loop_states(prog, loop))
        self.absent_states = absent_states  # the states read before the step are absent
        self.local: dict[str, object] = {}  # per-step tensor -> ABSENT | OPAQUE | inlined expression
        self.lhs: dict[str, tuple[S.Expr, ...]] = {}
        self.next: dict[str, object] = {}  # state -> its value after the step
        self.ok = True
        for e in loop.body:
            if e.label == tile:
                self.local[e.tensor] = ABSENT
                continue
            value = self.eval(e.expr)
            if e.kind == "step":
                if e.filter is not None:
                    self.ok = False
                self.next[e.tensor] = self.reduced(e, value)
                self.lhs[e.tensor] = tuple(S.Coord(ix.rank) for ix in e.index if ix.kind == "rank")
            elif value is ABSENT:
                self.local[e.tensor] = ABSENT
            else:
                inline = not e.reduce and e.filter is None and value is not OPAQUE
                self.local[e.tensor] = value if inline else OPAQUE
                self.lhs[e.tensor] = tuple(S.Coord(ix.rank) for ix in e.index)

    @staticmethod
    def reduced(e: Einsum, value):
        """A step's value after its own reduction: a ``+`` over ranks adds one copy per point
        (``R[m1 + 1] = R[m1] + (B[m1, m0] ?? 0)`` summed over ``m0``, with ``B`` absent, is ``M0 * R``), so
        only an absent or a zero summand is known; ``max``/``min`` keep a summand that does not vary along
        the reduced ranks."""
        if not e.reduce or value is ABSENT or value is OPAQUE or _is(value, 0):
            return value
        over = {r for r, _ in e.reduce}
        if all(op in ("max", "min") for _, op in e.reduce) and not over & {
            n.rank for n in value.walk() if isinstance(n, S.Coord)
        }:
            return value
        return OPAQUE

    def previous(self, state: str) -> S.Read:
        e = next(x for x in self.prog.definitions(state) if x.kind == "step")
        return S.Read(state, tuple(S.Coord(ix.rank) for ix in e.index))

    def read(self, rd: S.Read):
        if rd.tensor in self.states:
            t = self.prog.tensor(rd.tensor)
            ix = rd.indices[t.iterative]
            rest = tuple(x for k, x in enumerate(rd.indices) if k != t.iterative)
            if ix == S.Coord(self.r):
                return ABSENT if self.absent_states else S.Read(rd.tensor, rd.indices)
            if rd.tensor not in self.next:
                return OPAQUE
            value = self.next[rd.tensor]
            return value if rest == self.lhs.get(rd.tensor) or value is ABSENT else OPAQUE
        if rd.tensor in self.local:
            value = self.local[rd.tensor]
            if value is ABSENT or value is OPAQUE:
                return value
            return value if rd.indices == self.lhs[rd.tensor] else OPAQUE
        return rd  # data from before the loop: a fixed symbol

    def eval(self, e: S.Expr):
        if isinstance(e, (S.Const, S.Coord, S.Size, S.Param)):
            return e
        if isinstance(e, S.Read):
            return self.read(e)
        if isinstance(e, S.Default):
            a = self.eval(e.a)
            if a is ABSENT:
                return self.eval(e.b)
            b = self.eval(e.b)
            if a is OPAQUE or b is OPAQUE:
                return OPAQUE
            return a if b is ABSENT else S.Default(a, b)
        kids = [self.eval(c) for c in e.children()]
        if any(k is ABSENT for k in kids):
            return ABSENT
        if any(k is OPAQUE for k in kids):
            return OPAQUE
        if isinstance(e, S.Call):
            return _simplify(S.Call(e.fn, tuple(kids)), self.finite)
        if isinstance(e, S.Unary):
            return _simplify(S.Unary(e.op, kids[0]), self.finite)
        if isinstance(e, S.Binary):
            return _simplify(S.Binary(e.op, kids[0], kids[1]), self.finite)
        return OPAQUE


def _is(e, value: float) -> bool:
    return isinstance(e, S.Const) and e.value == value


def _simplify(e: S.Expr, finite: bool) -> S.Expr:
    """Identities valid for all IEEE values, plus ``x - x = 0`` when ``finite``."""
    if isinstance(e, S.Binary):
        a, b = e.a, e.b
        if e.op == "+" and _is(a, 0):
            return b
        if e.op in "+-" and _is(b, 0):
            return a
        if e.op == "*" and _is(a, 1):
            return b
        if e.op in ("*", "/") and _is(b, 1):
            return a
        if e.op == "-" and finite and a == b:
            return S.Const(0.0)
    if isinstance(e, S.Call):
        args = e.args
        if e.fn in ("max", "min") and args[0] == args[1]:
            return args[0]
        if e.fn == "max" and (_is(args[1], -math.inf) or _is(args[0], -math.inf)):
            return args[0] if _is(args[1], -math.inf) else args[1]
        if e.fn == "min" and (_is(args[1], math.inf) or _is(args[0], math.inf)):
            return args[0] if _is(args[1], math.inf) else args[1]
        if e.fn in ("exp", "exp2") and _is(args[0], 0):
            return S.Const(1.0)
    return e


def _dead_update_is_identity(prog: Program, loop: Loop, tile: str, finite: bool) -> bool:
    step = _DeadStep(prog, loop, tile, finite)
    return step.ok and all(step.next[s] == step.previous(s) for s in step.states)


def _dead_update_keeps_init(prog: Program, loop: Loop, tile: str) -> bool:
    """The dead update, evaluated exactly on constant initial states, returns them unchanged; or every
    initial state is absent (the rewritten cascade's ``RM[0] = -inf where 0 != 0``) and the dead update of
    absent states is absent (``max(RM ?? LM, LM ?? RM)`` with ``LM`` absent is ``RM``: still absent)."""
    inits = {s: next(x for x in prog.definitions(s) if x.kind == "init") for s in loop_states(prog, loop)}
    if all(never_present(prog, e.filter) for e in inits.values()):
        step = _DeadStep(prog, loop, tile, finite=False, absent_states=True)
        return step.ok and all(step.next[s] is ABSENT for s in step.states)
    step = _DeadStep(prog, loop, tile, finite=False)
    if not step.ok:
        return False
    init = {}
    for s in step.states:
        e = inits[s]
        v = constant_value(prog, e.expr, {}) if e.filter is None else None
        if v is None:
            return False
        init[s] = v
    for s in step.states:
        v = step.next[s]
        got = None if v is ABSENT or v is OPAQUE else constant_value(prog, v, init)
        if got is None or math.isnan(got) or got != init[s]:
            return False
    return True


_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def never_present(prog: Program, f: S.Expr | None) -> bool:
    """Whether filter ``f`` is false everywhere by its constants alone (``where 0 != 0``)."""
    if isinstance(f, S.Compare):
        if isinstance(f.a, S.Const) and isinstance(f.b, S.Const):  # (no sympy for the common case)
            a, b = f.a.value, f.b.value
        else:
            a, b = constant_value(prog, f.a, {}), constant_value(prog, f.b, {})
        return a is not None and b is not None and not _COMPARE[f.op](a, b)
    if isinstance(f, S.Logic):
        never = never_present(prog, f.a), never_present(prog, f.b)
        return all(never) if f.op == "or" else any(never)
    return False


def constant_value(prog: Program, e: S.Expr, states: dict[str, float]) -> float | None:
    """The exact value of a constant expression (states read by name), or None; uses the sympy table."""
    import sympy as sp

    from .functions import sympy_function

    def exact(v: float):
        return (
            sp.nan
            if math.isnan(v)
            else sp.oo
            if v == math.inf
            else -sp.oo
            if v == -math.inf
            else sp.nsimplify(v)
        )

    def tame(v):
        """``v``, or the float64 it rounds to where that is infinite or 0: exact values far beyond float64's
        range would grow without bound (`square(square(...(1e300)))`, `exp2(exp2(exp2(30)))` has 2^(2^30)
        bits: a fuzzed spec took 24 GB computing it)."""
        if isinstance(v, sp.Rational) and v != 0:
            bits = v.p.bit_length() - v.q.bit_length()  # log2 |v|, within 1
            if bits > _BITS:
                return sp.oo if v > 0 else -sp.oo
            if bits < -_BITS:
                return sp.Integer(0)
        return v

    def ev(x: S.Expr):
        if isinstance(x, S.Const):
            return exact(x.value)
        if isinstance(x, S.Param):
            return exact(prog.param_values[x.name])
        if isinstance(x, S.Read) and x.tensor in states:
            return exact(states[x.tensor])
        if isinstance(x, S.Unary):
            return -ev(x.x)
        if isinstance(x, S.Binary) and x.op in "+-*/":
            a, b = ev(x.a), ev(x.b)
            return tame({"+": a + b, "-": a - b, "*": a * b, "/": a / b if b != 0 else sp.nan}[x.op])
        if isinstance(x, S.Call):
            args = [ev(a) for a in x.args]
            if x.fn in ("exp", "exp2") and args[0].is_extended_real and abs(args[0]) > _BITS:
                return sp.oo if args[0] > 0 else sp.Integer(0)  # (2^x, e^x: beyond float64 either way)
            return tame(sympy_function(x.fn)(*args))
        raise _NotConstant

    try:
        v = ev(e)
        if v in (sp.oo, -sp.oo):
            return float(v)
        return float(v) if v.is_real else math.nan
    except (_NotConstant, TypeError, ValueError, OverflowError):
        return None


_BITS = 1100  # beyond 2^1100 (or below 2^-1100) a value is infinite (or 0) in float64 by far


class _NotConstant(Exception):
    pass
