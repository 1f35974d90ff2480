"""Contractions over two ranks split into two, so that a fused kernel sees one ``tl.dot`` per statement.

Causal linear attention streamed over its keys (rule 3 of docs/rewrite.md) sums a three-factor product over
a tile's keys ``m0`` and the features ``e`` in one statement::

    LNUM[p, m1, f] = FQ[p, e] * BFK[m1, m0, e] * BV[m1, m0, f]  where m1 * M0 + m0 <= p
    LDEN[p, m1]    = FQ[p, e] * BFK[m1, m0, e]  where m1 * M0 + m0 <= p

The fused kernel contracts one tile axis per statement (a ``tl.dot`` or a reduction), so it could not place
these. Summing over ``e`` first is the same sum in another order (``BV`` does not depend on ``e``), and the
inner sum is shared::

    S_LNUM[p, m1, m0] = FQ[p, e] * BFK[m1, m0, e]  where m1 * M0 + m0 <= p
    LNUM[p, m1, f]    = S_LNUM[p, m1, m0] * BV[m1, m0, f]
    LDEN[p, m1]       = S_LNUM[p, m1, m0]

which is sigmoid attention's shape: scores per tile, then ``P V``. Presence is the same: a point of the
outer sum is present where the filter holds and some ``e`` term is, and the factors outside the inner sum
do not vary along ``e``. Only the triton backend's fused path applies it (the torch backend's ``einsum``
picks its own order)."""

from __future__ import annotations

import dataclasses

from einattn import syntax as S
from einattn.ir import Einsum, LhsIndex, Program, Tensor, coords
from einattn.rewrite.rules import factors as rule_factors
from einattn.rewrite.rules import product


def factors(e: S.Expr) -> list[tuple[S.Expr, bool]]:
    """A product's factors (:func:`einattn.rewrite.rules.factors`), through negations: a gradient's ``dO[p,
    f] * (-(N[m, p] * V[m, f] / D[p]) / D[p])`` summed over ``m`` and ``f`` then splits into ``tl.dot(dO,
    V)`` scaled per tile, not one value over three tile axes."""
    return rule_factors(e, negations=True)


def _inner(e: Einsum, parts: set[str]) -> str | None:
    """The rank to sum first: one of exactly two ``+`` reductions, not read by the filter, and where both
    qualify the one that is not a partition's part (the other, the streamed tile, is summed by the outer
    statement); None if there is none."""
    if len(e.reduce) != 2 or any(op != "+" for _, op in e.reduce):
        return None
    free = [r for r, _ in e.reduce if r not in coords(e.filter)]
    free.sort(key=lambda r: r in parts)  # (stable: a feature rank first)
    return free[0] if free else None


def _operand_groups(e: Einsum) -> list[list[tuple[S.Expr, bool]]] | None:
    """A one-rank sum of three or more factors along the summed rank (Lightning attention's ``BQK[m0, p] *
    exp(log(lam) * (p - m)) * BV[m0, f]``), cut into the factors of its two ``tl.dot`` operands: those
    that mention an output rank ``y`` and those that do not, whichever ``y`` cuts them that way (the
    factors that do not vary along the summed rank stay outside: a per-row scale of the product). None if no
    rank cuts them in two."""
    if len(e.reduce) != 1 or e.reduce[0][1] != "+":
        return None
    r = e.reduce[0][0]
    fs = factors(e.expr)
    along = [(f, inv) for f, inv in fs if r in coords(f)]
    if len(along) < 3 or any(isinstance(n, S.Default) for f, _ in along for n in f.walk()):
        return None
    for y in reversed(e.lhs_ranks):  # (innermost first: V's feature rank, not a batch rank they share)
        side = [x for x in along if y in coords(x[0])]
        rest = [x for x in along if x not in side]
        if side and rest and all(y not in coords(f) for f, _ in rest):
            return [side, rest]
    return None


def _fresh(stem: str, names: set[str]) -> str:
    """``stem``, or ``stem1``, ``stem2``, ...: a tensor name ``prog`` does not use (then taken)."""
    name, k = stem, 0
    while name in names:
        k += 1
        name = f"{stem}{k}"
    names.add(name)
    return name


def split_contractions(prog: Program) -> Program:
    """``prog`` with each two-rank sum of a product split as in the module docstring (shared inner sums),
    and the statements that makes split again while they can be (``Q * K * K * V`` summed over ``e`` and
    ``m0``: the inner sum is a three-factor product); the program itself where no statement has that form."""
    for _ in range(8):  # (each round takes a factor or a reduction out of a statement: a few at most)
        split = _split_once(prog)
        if split is prog:
            break
        prog = split
    return prog


def _split_once(prog: Program) -> Program:
    parts = {r for p in prog.partitions for r in (p.outer, p.inner)}
    einsums: list[Einsum] = []
    tensors = list(prog.tensors)
    names = {t.name for t in prog.tensors}
    made: dict[tuple, str] = {}

    def part(e: Einsum, stem: str, group, ranks: tuple[str, ...], summed: str | None) -> tuple[S.Read, bool]:
        """A read of the statement computing the product of ``group`` over ``ranks`` (summed over
        ``summed``), made once per product, filter and ranks; and whether ``e``'s filter moved into it."""
        moved = e.filter is not None and set(coords(e.filter)) <= set(ranks)
        key = (tuple(group), e.filter if moved else None, ranks, summed)
        if key not in made:
            made[key] = name = _fresh(f"{e.tensor}_{stem}", names)
            tensors.append(Tensor(name, ranks))
            reduce, space = (((summed, "+"),), (*ranks, summed)) if summed else ((), ranks)
            index = tuple(LhsIndex(x) for x in ranks)
            filt = e.filter if moved else None
            einsums.append(Einsum(name, index, product(group), reduce, filt, space, e.span))
        return S.Read(made[key], tuple(S.Coord(x) for x in ranks)), moved

    changed = False
    for e in prog.einsums:
        groups = _operand_groups(e) if e.kind == "plain" else None
        if groups is not None:  # a tl.dot's operands, each made of one factor
            (r,) = [x for x, _ in e.reduce]
            reads: list[tuple[S.Expr, bool]] = [x for x in factors(e.expr) if r not in coords(x[0])]
            for group in groups:
                if len(group) == 1:
                    reads += group
                    continue
                ranks = tuple(x for x in e.space if any(x in coords(f) for f, _ in group))
                reads.append((part(e, "W", group, ranks, None)[0], False))
            einsums.append(dataclasses.replace(e, expr=product(reads)))
            changed = True
            continue
        r = _inner(e, parts) if e.kind == "plain" else None
        fs = factors(e.expr) if r is not None else []
        inner = [(f, inv) for f, inv in fs if r in coords(f)]
        outer = [(f, inv) for f, inv in fs if r not in coords(f)]
        (other,) = [x for x, _ in e.reduce if x != r] if r is not None else (None,)
        if r is None or not inner or any(isinstance(n, S.Default) for f, _ in inner for n in f.walk()):
            einsums.append(e)
            continue
        ranks = tuple(x for x in e.space if x != r and any(x in coords(f) for f, _ in inner))
        if other not in ranks:
            einsums.append(e)
            continue
        read, moved = part(e, "S", inner, ranks, r)  # the sum over `r` first
        expr = product([(read, False), *outer])
        space = tuple(x for x in e.space if x != r)
        filt = None if moved else e.filter
        einsums.append(dataclasses.replace(e, expr=expr, reduce=((other, "+"),), filter=filt, space=space))
        changed = True
    if not changed:
        return prog
    return dataclasses.replace(prog, tensors=tuple(tensors), einsums=tuple(einsums))
