"""FuseMax's first transformation: division deferral (reassociation), as a table of two patterns.

A factor that is constant along rank R and depends on a full reduction over R (the softmax denominator) is
moved past a later ``+``-reduction over R::

    A[m, p]  = SN[m, p] / SD[p]              SNV[f, p] = SN[m, p] * V[f, m]
    AV[f, p] = A[m, p] * V[f, m]       ->    AV[f, p]  = SNV[f, p] / SD[p]

    O[p, f]  = EX[m, p] * V[m, f] / D[p]  ->  EXV[p, f] = EX[m, p] * V[m, f];  O[p, f] = EXV[p, f] / D[p]

Side conditions, each checked: the moved factor's ranks are output ranks of the reduction (it does not carry R
or any other reduced rank); every reduction of the consumer is ``+`` and the factor scales the whole summand
(``DISTRIBUTES``: sum(x / c) = sum(x) / c); for the first pattern, every reader of ``A`` reads it as such a
factor (otherwise ``A`` is still needed at every point of R, and the rule records why in ``draft.blocked``).
Absent points agree: a row with no present point is absent before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import syntax as S
from ..ir import Einsum
from .derivation import Derivation
from .draft import Draft, full_reductions, make_einsum
from .rules import (
    DISTRIBUTES,
    conj,
    coord_tuple,
    factors,
    named_reductions,
    product,
    stmt_text,
    subst,
    tensors_read,
    text,
)


@dataclass
class _Split:
    """The factors of a product split into those that stay and those moved out (with their operators)."""

    keep: list[tuple[S.Expr, bool]]
    moved: list[tuple[S.Expr, bool]]


def _split(expr: S.Expr, movable) -> _Split | None:
    fs = factors(expr)
    moved = [(f, inv) for f, inv in fs if movable(f)]
    if not moved or len(moved) == len(fs):
        return None
    return _Split([(f, inv) for f, inv in fs if not movable(f)], moved)


def _numerator_name(draft: Draft, fs: list[tuple[S.Expr, bool]], fallback: str) -> str:
    names = [f.tensor for f, inv in fs if isinstance(f, S.Read) and not inv]
    base = "".join(names) if names and len("".join(names)) <= 12 else fallback
    return draft.fresh(base)


def _reduction_ok(e: Einsum, rank: str) -> str | None:
    """Why ``e`` cannot take a factor out of its reduction over ``rank`` (None: it can)."""
    if e.kind != "plain":
        return f"`{e.label}` is an iterative update"
    if rank not in e.reduced:
        return f"`{e.tensor}` does not sum over {rank}"
    ops = {op for _, op in e.reduce}
    if ops != {"+"}:
        bad = next(op for op in ops if op != "+")
        return f"`{e.tensor}` reduces with `{bad}`, which does not distribute over `/` (only `+` does)"
    return None


def _hoist_within(draft: Draft, rank: str, full: set[str], deriv: Derivation) -> bool:
    """Pattern 2: ``R = sum_R (X * V / D)`` with D constant along the reduction -> ``(sum_R X * V) / D``."""
    for r in draft.einsums:
        if _reduction_ok(r, rank) is not None:
            continue
        reduced = set(r.reduced)

        def movable(f: S.Expr, reduced=reduced) -> bool:
            return not (set(_coords(f)) & reduced) and bool(tensors_read(f) & full)

        split = _split(r.expr, movable)
        if split is None:
            continue
        num = _numerator_name(draft, split.keep, r.tensor + "N")
        lhs = coord_tuple(r.lhs_ranks)
        n_e = make_einsum(num, r.index, product(split.keep), r.filter, named_reductions(r), span=r.span)
        r_e = make_einsum(r.tensor, r.index, product([(S.Read(num, lhs), False), *split.moved]), span=r.span)
        draft.replace(r, [n_e, r_e])
        ops = sorted({"/" if inv else "*" for _, inv in split.moved})
        deriv.step(
            "defer division",
            r,
            f"`{_moved_text(split)}` is constant along {rank}: it leaves the sum over {rank} in `{r.tensor}`",
            [stmt_text(n_e), stmt_text(r_e)],
            [
                f"{_moved_text(split)} carries only output ranks of `{r.tensor}` ({', '.join(r.lhs_ranks)})",
                *(DISTRIBUTES[("+", op)] for op in ops),
            ],
        )
        return True
    return False


def _defer_elementwise(draft: Draft, rank: str, full: set[str], deriv: Derivation) -> bool:
    """Pattern 1: ``A = SN / SD`` read only as a factor of sums over R -> each sum takes SN; SD moves out."""
    for a in draft.einsums:
        if a.kind != "plain" or rank not in a.lhs_ranks or a.reduce:
            continue

        def movable(f: S.Expr) -> bool:
            return rank not in _coords(f) and bool(tensors_read(f) & full)

        split = _split(a.expr, movable)
        if split is None:
            continue
        why = _readers_ok(draft, a, rank, split)
        if why is not None:
            draft.blocked.setdefault(a.tensor, why)
            continue
        made = []
        for r in draft.readers(a.tensor):
            fs = factors(r.expr)
            k = next(i for i, (f, _) in enumerate(fs) if isinstance(f, S.Read) and f.tensor == a.tensor)
            rho = {x: fs[k][0].indices[i] for i, x in enumerate(a.lhs_ranks)}
            inner = [(subst(f, rho), inv) for f, inv in split.keep]
            moved = [(subst(f, rho), inv) for f, inv in split.moved]
            new_fs = fs[:k] + inner + fs[k + 1 :]
            num = _numerator_name(draft, new_fs, r.tensor + "N")
            filt = conj(r.filter, subst(a.filter, rho))
            n_e = make_einsum(num, r.index, product(new_fs), filt, named_reductions(r), span=r.span)
            r_e = make_einsum(
                r.tensor,
                r.index,
                product([(S.Read(num, coord_tuple(r.lhs_ranks)), False), *moved]),
                span=r.span,
            )
            draft.replace(r, [n_e, r_e])
            made += [n_e, r_e]
        draft.remove(a)
        ops = sorted({"/" if inv else "*" for _, inv in split.moved})
        deriv.step(
            "defer division",
            a,
            f"`{stmt_text(a)}` is moved past the sum over {rank} in "
            + ", ".join(f"`{e.tensor}`" for e in made[1::2]),
            [stmt_text(e) for e in made],
            [
                f"`{_moved_text(split)}` does not carry {rank}",
                *(DISTRIBUTES[("+", op)] for op in ops),
                f"every reader of `{a.tensor}` sums it over {rank} as a factor",
            ],
        )
        return True
    return False


def _readers_ok(draft: Draft, a: Einsum, rank: str, split: _Split) -> str | None:
    if a.tensor in draft.outputs:
        return f"`{a.tensor}` is an output: it is needed at every point of {rank}"
    readers = draft.readers(a.tensor)
    if not readers:
        return f"`{a.tensor}` has no reader"
    for r in readers:
        why = _reduction_ok(r, rank)
        if why is not None:
            return why
        fs = factors(r.expr)
        hits = [f for f, inv in fs if isinstance(f, S.Read) and f.tensor == a.tensor and not inv]
        total = sum(1 for rd in r.reads() if rd.tensor == a.tensor)
        if len(hits) != 1 or total != 1:
            return f"`{r.tensor}` does not read `{a.tensor}` as one factor of its summand: `{text(r.expr)}`"
        idx = hits[0].indices
        if not all(isinstance(i, S.Coord) for i in idx) or len({i.rank for i in idx}) != len(idx):
            return f"`{r.tensor}` reads `{a.tensor}` at computed indices"
        rho = {x: idx[i] for i, x in enumerate(a.lhs_ranks)}
        for f, _ in split.moved:
            if not set(_coords(subst(f, rho))) <= set(r.lhs_ranks):
                return f"`{text(f)}` would carry a rank that `{r.tensor}` reduces"
    return None


def _coords(e: S.Expr) -> tuple[str, ...]:
    from ..ir import coords

    return coords(e)


def _moved_text(split: _Split) -> str:
    return " * ".join(("1 / " if inv else "") + text(f) for f, inv in split.moved)


RULES = (_defer_elementwise, _hoist_within)
"""Pattern -> rewrite table of the deferral rule, tried in order until none applies."""


def defer(draft: Draft, rank: str, deriv: Derivation) -> bool:
    """Apply the deferral patterns until none matches; True if anything changed."""
    changed = False
    while True:
        full = full_reductions(draft.einsums, rank)
        if not any(rule(draft, rank, full, deriv) for rule in RULES):
            return changed
        changed = True
