"""What the rewrites share: expression surgery, the side conditions they check, refusals, and naming.

Side conditions are tables and small proofs, not assumptions:

* :func:`shift_multiplicative` proves ``f(a - c) = f(a - b) * f(b - c)`` for a registry function with sympy
  (a numeric counterexample disproves it first, quickly); exp and exp2 pass, relu, sigmoid, tanh do not.
* :data:`DISTRIBUTES` lists which reductions commute with scaling by a value constant along the reduced rank
  (the division-deferral rule), :data:`RUNNING` which reductions can run tile by tile.
"""

from __future__ import annotations

import functools

from .. import syntax as S
from ..errors import EinError, Span
from ..format import format_expr
from ..functions import FUNCTIONS, sympy_function
from ..ir import Einsum, coords
from ..syntax import rebuild, rewrite_expr, subst  # noqa: F401 (re-exported for the rules)

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


@functools.cache
def shift_multiplicative(fn: str) -> bool:
    """Does ``f(a - c) = f(a - b) * f(b - c)`` hold for all real a, b, c? (``fn`` from the registry.)"""
    f = FUNCTIONS.get(fn)
    if f is None or f.arity != 1:
        return False
    import sympy as sp

    a, b, c = sp.symbols("a b c", real=True)
    g = sympy_function(fn)
    identity = g(a - c) - g(a - b) * g(b - c)
    for point in ((0.3, 1.7, -0.4), (2.5, -1.25, 0.75), (-3.0, 0.5, 1.5)):  # a counterexample disproves fast
        value = complex(identity.subs(dict(zip((a, b, c), point))).evalf())
        if abs(value) > 1e-9:
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


def factors(e: S.Expr) -> list[tuple[S.Expr, bool]]:
    """``a * b / c`` -> ``[(a, False), (b, False), (c, True)]``: a product's factors, and which divide."""
    if isinstance(e, S.Binary) and e.op in ("*", "/"):
        right = factors(e.b)
        if e.op == "/":
            right = [(f, not inv) for f, inv in right]
        return factors(e.a) + right
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
