"""What the rewrites share: expression surgery, the side conditions they check, refusals, and naming.

Side conditions are tables and small proofs, not assumptions:

* :func:`shift_multiplicative` proves ``f(a - c) = f(a - b) * f(b - c)`` for a shift's function (a
  :class:`ShiftFn`: ``exp(d)``, ``exp(d / T)``, ...) with sympy (a numeric counterexample disproves it first,
  quickly); exp and exp2 of the difference, scaled, pass; relu, sigmoid, tanh do not.
* :data:`DISTRIBUTES` lists which reductions commute with scaling by a value constant along the reduced rank
  (the division-deferral rule), :data:`RUNNING` which reductions can run tile by tile.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .. import syntax as S
from ..errors import EinError, Span
from ..format import format_expr
from ..functions import FUNCTIONS, sympy_function
from ..ir import Einsum, coords
from ..syntax import rebuild, rewrite_expr, subst

# ---- side conditions ------------------------------------------------------------------------------------

DISTRIBUTES: dict[tuple[str, str], str] = {
    ("+", "*"): "sum(x * c) = sum(x) * c",
    ("+", "/"): "sum(x / c) = sum(x) / c",
}
"""(reduction over R, scaling operator) pairs where a factor constant along R moves out of the reduction."""

RUNNING: dict[str, str] = {
    "max": "max is associative and commutative: the max over {r} is the max over tiles of each tile's max",
    "+": "+ is associative and commutative: the sum over {r} is the sum over tiles of each tile's sum",
}
"""Reductions that may be evaluated tile by tile, with the law that allows it."""


HOLE = "<d>"
"""The name of the difference ``d = X - c`` in a shift's function: no spec can spell it."""


def hole() -> S.Read:
    return S.Read(HOLE, ())


@dataclass(frozen=True)
class ShiftFn:
    """The function ``f`` of a shift ``SN = f(X - c)``: an expression ``body`` of the difference (a read of
    :data:`HOLE`), whose other reads are in the frame of the max's ranks: ``exp(d)``, ``exp(d / T)``,
    ``exp2(d * 1.4426950408889634)``, ``exp(d * rsqrt(E))``. :func:`shift_multiplicative` proves that it
    rescales."""

    body: S.Expr

    @property
    def name(self) -> str | None:
        """The function's name where ``f`` is one function of the difference (``exp``), else None."""
        b = self.body
        return b.fn if isinstance(b, S.Call) and b.args == (hole(),) else None

    @property
    def key(self) -> str:
        """``f(d)`` as text (for messages: two functions are the same when their bodies are)."""
        return format_expr(self.apply(S.Coord("d")))

    def apply(self, d: S.Expr, rho: dict[str, S.Expr] | None = None) -> S.Expr:
        """``f(d)``, the max's ranks in the body mapped by ``rho`` into the frame where it is used."""
        body = subst(self.body, rho) if rho else self.body
        return rewrite_expr(body, lambda n: d if isinstance(n, S.Read) and n.tensor == HOLE else None)

    def reads(self) -> list[S.Expr]:
        """What the body reads besides the difference: tensors, params and sizes."""
        return [
            n
            for n in self.body.walk()
            if (isinstance(n, S.Read) and n.tensor != HOLE) or isinstance(n, (S.Param, S.Size))
        ]

    def law(self) -> str:
        """The identity that lets a running sum be rescaled, as the derivation states it."""
        n = self.name
        if n is not None:
            return f"{n}(a - c) = {n}(a - b) * {n}(b - c)"
        return f"f(a - c) = f(a - b) * f(b - c) for f(d) = {self.key}"


def _to_sympy(e: S.Expr, d, symbols: dict, values: dict[str, float] | None = None):
    """``e`` as a sympy expression, the difference as ``d`` and every other read, param, size or coordinate a
    symbol of its own (sizes positive, the rest real); None where the language's meaning is not a field
    operation sympy knows (integer division, comparisons, absent points, infinities). A param in ``values``
    is its value."""
    import sympy as sp

    def sym(key, **assumptions):
        if key not in symbols:
            symbols[key] = sp.Symbol(f"x{len(symbols)}", **assumptions)
        return symbols[key]

    if isinstance(e, S.Read):
        return d if e.tensor == HOLE else sym(e, real=True)
    if isinstance(e, S.Param) and values and e.name in values:
        v = values[e.name]
        return sp.Rational(v) if math.isfinite(v) else None
    if isinstance(e, (S.Param, S.Coord)):
        return sym(e, real=True)
    if isinstance(e, S.Size):
        return sym(e, positive=True)
    if isinstance(e, S.Const):
        return sp.Rational(e.value) if math.isfinite(e.value) else None
    kids = [_to_sympy(c, d, symbols, values) for c in e.children()]
    if any(k is None for k in kids):
        return None
    if isinstance(e, S.Call) and e.fn in FUNCTIONS and FUNCTIONS[e.fn].arity == len(kids):
        return sympy_function(e.fn)(*kids)
    if isinstance(e, S.Unary) and e.op == "-":
        return -kids[0]
    if isinstance(e, S.Binary) and e.op in ("+", "-", "*", "/"):
        x, y = kids
        return {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[e.op]
    return None


@functools.cache
def shift_vanishes(f: ShiftFn, params: tuple[tuple[str, float], ...] = ()) -> bool:
    """Does ``f(d) -> 0`` as ``d -> -inf`` (sympy, every read a real of unknown sign, sizes positive, the
    program's ``params`` their values)? Then a running sum that has seen nothing (0, its max at ``-inf`` or
    the lowest float) is rescaled to 0 by ``f(-inf - new)``; else (``exp(d / T)`` with an input ``T`` that
    may be negative: ``0 * inf``) the running states must start absent. True for ``exp(d)``, ``exp2(d * k)``
    with ``k > 0``, ``exp(d * rsqrt(E))``, ``exp(d / T)`` with ``param T = 0.7``."""
    import sympy as sp

    d = sp.Symbol("d", real=True)
    g = _to_sympy(f.body, d, {}, dict(params))
    if g is None:
        return False
    g = g.replace(
        lambda e: e.is_Pow and e.base.is_positive and e.base.is_number,
        lambda e: sp.exp(e.exp * sp.log(e.base)),
    )
    try:
        return bool(sp.limit(g, d, -sp.oo) == 0)
    except Exception:  # sympy could not decide (the sign of a factor): not proved
        return False


def shift_at_zero(f: ShiftFn):
    """``f(0)`` as a sympy number or expression (None where sympy cannot say)."""
    import sympy as sp

    v = _to_sympy(f.body, sp.Integer(0), {})
    return None if v is None else sp.simplify(v)


@functools.cache
def shift_multiplicative(f: ShiftFn) -> bool:
    """Does ``f(a - c) = f(a - b) * f(b - c)`` hold for all real a, b, c and every value of what else ``f``
    reads? Proved with sympy; a numeric counterexample disproves it first, quickly. exp and exp2 of the
    difference times or over a factor pass; relu, sigmoid, tanh, and ``exp(d - k)`` (``f(0) != 1``) do not."""
    import random

    import sympy as sp

    a, b, c = sp.symbols("a b c", real=True)
    symbols: dict = {}
    fa = _to_sympy(f.body, a - c, symbols)
    fb = _to_sympy(f.body, a - b, symbols)
    fc = _to_sympy(f.body, b - c, symbols)
    if fa is None or fb is None or fc is None:
        return False
    identity = fa - fb * fc
    rng = random.Random(0)
    others = list(symbols.values())
    for point in ((0.3, 1.7, -0.4), (2.5, -1.25, 0.75), (-3.0, 0.5, 1.5)):  # a counterexample disproves fast
        values = dict(zip((a, b, c), point)) | {s: rng.uniform(0.5, 2.0) for s in others}
        try:  # (relative: exp(d / 0.05) reaches e^90 at these points)
            left, right = (complex(x.subs(values).evalf(30)) for x in (fa, fb * fc))
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        if not abs(left - right) <= 1e-9 * max(1.0, abs(left), abs(right)):  # (NaN too)
            return False
    try:
        return bool(sp.simplify(identity) == 0)
    except Exception:  # sympy could not decide: refuse rather than assume
        return False


# ---- refusals ----------------------------------------------------------------------------------------------


class RewriteError(EinError):
    """A rewrite that einattn cannot prove correct: which Einsum, which condition, where."""


def refuse(rank: str, why: str, at: Einsum | S.Expr | None = None, hint: str | None = None) -> RewriteError:
    span: Span | None = getattr(at, "span", None)
    return RewriteError(f"cannot stream over {rank}: {why}", span, hint)


def text(e: S.Expr | None) -> str:
    return "" if e is None else format_expr(e)


def named_reductions(e: Einsum) -> tuple[tuple[str, str], ...]:
    """The ``:: op(ranks)`` of ``e`` as ``(rank, op)`` pairs (what :func:`make_einsum` takes as ``named``)."""
    from ..format import reduction_clause

    clause = reduction_clause(e)
    return tuple((r, clause[0]) for r in clause[1]) if clause else ()


def stmt_text(e: Einsum) -> str:
    from ..format import format_einsum

    return format_einsum(e)


# ---- expression surgery (rebuild, rewrite_expr and subst live in einattn.syntax) -------------------------


def reads(e: S.Expr | None) -> list[S.Read]:
    return [] if e is None else [n for n in e.walk() if isinstance(n, S.Read)]


def tensors_read(e: S.Expr | None) -> set[str]:
    return {r.tensor for r in reads(e)}


def mentions(e: S.Expr | None, rank: str) -> bool:
    return rank in coords(e)


def factors(e: S.Expr, negations: bool = False) -> list[tuple[S.Expr, bool]]:
    """``a * b / c`` -> ``[(a, False), (b, False), (c, True)]``: a product's factors, and which divide.
    ``negations``: ``-(x)`` is the factor ``-1`` times ``x``'s (the same value in IEEE arithmetic, signed
    zeros included)."""
    if negations and isinstance(e, S.Unary) and e.op == "-":
        return [(S.Const(-1), False), *factors(e.x, negations)]
    if isinstance(e, S.Binary) and e.op in ("*", "/"):
        right = factors(e.b, negations)
        if e.op == "/":
            right = [(f, not inv) for f, inv in right]
        return factors(e.a, negations) + right
    return [(e, False)]


def product(fs: list[tuple[S.Expr, bool]]) -> S.Expr:
    """The inverse of :func:`factors`: multiply the numerators left to right, then divide by the others."""
    out: S.Expr | None = None
    for f, inv in fs:
        if not inv:
            out = f if out is None else S.Binary("*", out, f)
    if out is None:
        out = S.Const(1)
    for f, inv in fs:
        if inv:
            out = S.Binary("/", out, f)
    return out


def conj(a: S.Expr | None, b: S.Expr | None) -> S.Expr | None:
    if a is None:
        return b
    if b is None:
        return a
    return S.Logic("and", a, b)


def unify(pattern: S.Expr, e: S.Expr, variables: set[str], binding: dict[str, S.Expr]) -> bool:
    """Match ``pattern`` against ``e``; ``Coord(v)`` for ``v`` in ``variables`` binds to any subexpression."""
    if isinstance(pattern, S.Coord) and pattern.rank in variables:
        if pattern.rank in binding:
            return binding[pattern.rank] == e
        binding[pattern.rank] = e
        return True
    if type(pattern) is not type(e):
        return False
    pk, ek = pattern.children(), e.children()
    if len(pk) != len(ek):
        return False
    if not pk:
        return pattern == e
    if rebuild(pattern, ek) != e:  # same operator, function or tensor
        return False
    return all(unify(p, x, variables, binding) for p, x in zip(pk, ek))


def coord_tuple(ranks) -> tuple[S.Expr, ...]:
    return tuple(S.Coord(r) for r in ranks)


def insert(seq, pos: int, item) -> tuple:
    seq = tuple(seq)
    return (*seq[:pos], item, *seq[pos:])


NEVER = S.Compare("!=", S.Const(0), S.Const(0))
"""A filter that holds nowhere: the initial state of a running reduction that has seen no point is absent."""


def union_max(a: S.Expr, b: S.Expr) -> S.Expr:
    """``max`` over the union of present points: absent only where both are."""
    return S.Call("max", (S.Default(a, b), S.Default(b, a)))


def union_add(a: S.Expr, b: S.Expr) -> S.Expr:
    """``+`` over the union of present points: ``a + (b ?? 0) ?? b``."""
    return S.Default(S.Binary("+", a, S.Default(b, S.Const(0))), b)


# ---- naming: the paper's conventions where the spec uses them ----------------------------------------------


def local_name(t: str) -> str:
    """The per-tile value: GM -> LM, SN -> SLN, SD -> SLD, SNV -> SLNV, other T -> LT."""
    if len(t) > 1 and t[0] == "S":
        return "SL" + t[1:]
    if len(t) > 1 and t[0] == "G":
        return "L" + t[1:]
    return "L" + t


def running_name(t: str) -> str:
    """The running state: GM -> RM, SD -> RD, SNV -> RNV, other T -> RT."""
    return "R" + t[1:] if len(t) > 1 and t[0] in "SG" else "R" + t


def scaled_name(t: str) -> str:
    """The previous running sum, rescaled: SD -> SPD, SNV -> SPNV, other T -> PT."""
    return "SP" + t[1:] if len(t) > 1 and t[0] == "S" else "P" + t
