"""Minimum live footprint of a cascade over its streamed rank, and the traffic of spilling it.

Counted per point of the *parallel ranks* Π: the output ranks that nothing reduces (directly, or through an
alias coordinate outside the streamed family: :func:`parallel_ranks`) and that every reduction of the
streamed rank iterates over (``b, h, p`` for attention: per query row). Three kinds of terms:

* **running state**: each iterative tensor over the streamed rank (or one of its parts): one state, over
  its ranks outside Π (``RM``: 1, ``RD``: 1, ``RNV``: F in Cascade 5);
* **accumulators**: each full reduction of the streamed rank, over its output ranks outside Π (``GM``,
  ``SD``: 1; ``AV``: F; streamed over a parent, ``CS[m0, p]`` summed over the tiles: M0);
* **re-read across a barrier**: each tensor whose fiber over the rank (or over the tile rank of a partition)
  is read again in a later pass must be held, or spilled and re-read, from the pass that produced (or first
  read) it to the pass that re-reads it: its fiber over the rank, times its other ranks outside Π. At each
  boundary between passes the live fibers add up; the largest boundary counts. A running state re-read
  along its own rank after a barrier over that rank holds every state whichever rank is streamed; streamed
  over a partition parent read in one pass, a per-tile value merged after it (split-K's ``LN[m1, f]``) is
  held for every tile.

A fiber over both parts of a partition counts ``M``.

So Cascade 4 needs ``M + F + 2`` per query row (grows with M) and Cascade 5 ``F + M0 + 2`` (free of M).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ir import Einsum, Program, coords
from .passes import Family, Flows, alias_reads, family, via_alias
from .symbols import SizeModel


@dataclass(frozen=True)
class Term:
    """One tensor that must stay live: ``expr`` elements per point of Π."""

    tensor: str
    expr: sp.Expr
    kind: str  # "state" | "accumulator" | "barrier"
    rank: str  # the rank whose passes make it live
    cut: int = 0  # for "barrier": live from pass ``cut`` into pass ``cut + 1``

    @property
    def reason(self) -> str:
        if self.kind == "state":
            return f"running state over {self.rank}"
        if self.kind == "accumulator":
            return f"accumulator of the {self.rank} reduction"
        return f"live from pass {self.cut} to {self.cut + 1} over {self.rank}"


@dataclass(frozen=True)
class Footprint:
    expr: sp.Expr
    per: tuple[str, ...]  # the parallel ranks Π
    terms: tuple[Term, ...]
    spill: sp.Expr  # elements per point of Π written and re-read when the barrier terms are spilled
    points: sp.Expr  # how many points Π has


def _is_reducer(fam: Family, e: Einsum, prog: Program) -> bool:
    """Whether ``e`` reduces ``fam``'s rank (or a part): over it, over a coordinate that reads its fibers
    (an alias), or by a step along it."""
    if set(e.reduced) & fam.members or via_alias(prog, fam, e):
        return True
    return e.kind == "step" and any(ix.kind == "step" and ix.rank in fam.members for ix in e.index)


def parallel_ranks(prog: Program, rank: str) -> tuple[str, ...]:
    """Π: output ranks never reduced, not iterative, present in every reduction of ``rank``'s family.

    A rank is reduced when an Einsum reduces it, or reduces a coordinate outside the streamed family that
    reads a dimension of that rank (an alias): in a power iteration ``X[t + 1, i] = A[i, j] * X[t, j]``
    (``rank J = I``) each element needs every element of the previous state, so the points of ``i`` are
    not independent. A read through the streamed rank itself (self-attention's keys ``X[m, e]`` with ``X``
    declared ``X[p, e]``, summed over ``m``) walks the stream, and leaves each query row its own.
    """
    fam = family(prog, rank)
    out_ranks: list[str] = []
    for name in prog.outputs:
        t = prog.tensor(name)
        out_ranks += [r for k, r in enumerate(t.ranks) if k != t.iterative and r not in out_ranks]
    reduced = {r for e in prog.einsums for r in e.reduced}
    reduced |= {r for e in prog.einsums for r, cs in alias_reads(prog, e) if not cs & fam.members}
    iterative = set(prog.iterative_ranks)
    reducers = [e for e in prog.einsums if _is_reducer(fam, e, prog)]
    return tuple(
        r
        for r in out_ranks
        if r not in fam.members
        and r not in reduced
        and r not in iterative
        and all(r in e.space for e in reducers)
    )


def _extent(
    prog: Program, sizes: SizeModel, tensor: str, skip: set, cut_rank: str | None, states: bool = False
) -> sp.Expr:
    """Elements of ``tensor`` per point of the skipped ranks, its iterative dimension held once (with
    ``states``: every state, a fiber of its rank).

    ``cut_rank``'s family is counted as a fiber of that rank: a partition parent as M (both parts) or one
    part; a tile part as its tile (the parent counts M0, the sibling part is the current tile: 1).
    """
    t = prog.tensor(tensor)
    dims = [r for k, r in enumerate(t.ranks) if (states or k != t.iterative) and r not in skip]
    out = sp.Integer(1)
    part = prog.partition_of(cut_rank) if cut_rank is not None else None
    if part is not None and cut_rank == part.parent:
        fam = [r for r in dims if r in (part.parent, part.outer, part.inner)]
        dims = [r for r in dims if r not in fam]
        if part.parent in fam or (part.outer in fam and part.inner in fam):
            out *= sizes.sym[part.parent]
        elif fam:
            out *= sizes.sym[fam[0]]
    elif part is not None:
        sibling = part.inner if cut_rank == part.outer else part.outer
        if part.parent in dims:
            dims = [cut_rank if r == part.parent else r for r in dims]
        dims = list(dict.fromkeys(r for r in dims if r != sibling))
    for r in dims:
        out *= sizes.sym[r]
    return out


def _states_read(prog: Program, name: str) -> bool:
    """Whether iterative tensor ``name`` is read along its iterative rank outside its own recurrence
    (``R[t + 1, i]``, not only a final state ``R[T, i]``): a buffer of it then holds every state."""
    t = prog.tensor(name)
    if t.iterative is None:
        return False
    return any(
        rd.tensor == name and coords(rd.indices[t.iterative])
        for e in prog.einsums
        if e.tensor != name
        for rd in e.reads()
    )


def _cuts(flows: Flows, sizes: SizeModel, cut_rank: str, per: set, counted: set) -> dict[int, list[Term]]:
    """Tensors re-read across each boundary between passes over ``cut_rank``: a fiber produced (or first
    read) in pass a and read again in pass b is live across the boundaries a|a+1 .. b-1|b."""
    prog = flows.prog
    span: dict[str, tuple[int, int]] = {}
    for v in flows(cut_rank, True).values():
        for tensor, a, b in v.rereads:
            lo, hi = span.get(tensor, (a, b))
            span[tensor] = (min(lo, a), max(hi, b))
    cuts: dict[int, list[Term]] = {}
    for name in dict.fromkeys([*prog.inputs, *(t.name for t in prog.tensors)]):
        if name not in span:
            continue
        # a running state read again along its rank in a later pass (``Y[t] = R[t + 1] / R[T]``) holds
        # every state (or what recomputes them), not the one its own term counts
        a, b = span[name]
        size = _extent(prog, sizes, name, per, cut_rank, states=_states_read(prog, name))
        for k in range(a, b):
            cuts.setdefault(k, []).append(Term(name, size, "barrier", cut_rank, k))
    return dict(sorted(cuts.items()))


def footprint(flows: Flows, rank: str | None, sizes: SizeModel) -> Footprint:
    prog = flows.prog
    if rank is None:
        return Footprint(sp.Integer(0), (), (), sp.Integer(0), sp.Integer(1))
    fam = family(prog, rank)
    per = parallel_ranks(prog, rank)
    skip = set(per)
    # state and accumulators are held once per fiber of the rank, over their other ranks outside Π: without
    # the rank itself (and a state without its iterative dimension); for a tile rank also without the tile
    # index (the sibling part: the current tile) and the parent. Streamed over a partition parent, a part
    # they keep is held whole: ``CS[m0, p] = BX[m1, m0, p]`` (a sum over the tiles) is M0 accumulators.
    part = prog.partition_of(rank)
    own = {rank} if fam.is_parent or part is None else {part.parent, part.outer, part.inner}
    terms: list[Term] = []
    for t in prog.tensors:
        if t.iterative is not None and t.iter_rank in fam.members:
            terms.append(Term(t.name, _extent(prog, sizes, t.name, skip | own, None), "state", t.iter_rank))
    for e in prog.einsums:
        if fam.reduces_fully(e, via_alias(prog, fam, e)) and e.tensor not in {x.tensor for x in terms}:
            extent = _extent(prog, sizes, e.tensor, skip | own, None)
            terms.append(Term(e.tensor, extent, "accumulator", rank))
    counted = {x.tensor for x in terms}
    total = sp.Add(*(x.expr for x in terms))
    spill = sp.Integer(0)
    cut_ranks = [rank] + ([fam.inner] if fam.is_parent else [])
    parent_cut = False
    for c in cut_ranks:
        cuts = _cuts(flows, sizes, c, skip, counted)
        if not cuts:
            continue
        parent_cut |= c == rank
        sums = []
        for items in cuts.values():
            terms.extend(items)
            sums.append(sp.Add(*(x.expr for x in items)))
            if c == rank:
                spill += sp.Add(*(x.expr * (1 if x.tensor in prog.inputs else 2) for x in items))
        total += sp.Max(*sums)
    held = {x.tensor for x in terms if x.kind == "barrier"}
    # per-tile values merged after a cascade's only pass over a partition parent (split-K: a max, a
    # denominator and a numerator per chunk, re-read by the merge after the max over the chunks) are live at
    # the end of that pass, for every tile: streamed over m (1 pass: the merge walks tiles, not elements), a
    # tensor over the outer part and not the tile, re-read across a pass over the outer part, is held whole
    # (M1 values, times its other ranks outside Π). Where the parent has passes of its own, what the later
    # passes need of such values crosses the parent's boundaries and is counted there (`CF` of the 2-pass
    # form); running states are counted below.
    if fam.is_parent and not parent_cut:
        tile = {fam.rank, fam.inner}
        cuts = {
            k: kept
            for k, items in _cuts(flows, sizes, fam.outer, skip, counted).items()
            if (
                kept := [
                    x
                    for x in items
                    if x.tensor not in counted
                    and prog.tensor(x.tensor).iterative is None
                    and not tile & set(prog.tensor(x.tensor).ranks)
                ]
            )
        }
        if cuts:
            sums = []
            for items in cuts.values():
                terms.extend(items)
                sums.append(sp.Add(*(x.expr for x in items)))
                spill += sp.Add(*(x.expr * (1 if x.tensor in prog.inputs else 2) for x in items))
            total += sp.Max(*sums)
            held |= {x.tensor for items in cuts.values() for x in items}
    # a running state read again along its own rank in a later pass over that rank holds every state,
    # whichever rank is streamed: ``Y[m1] = R[m1 + 1] / R[M1]`` streamed over m (1 pass: Y walks tiles, not
    # elements) still holds the M1 states between the two passes over m1 (streamed over the state's own
    # rank, or when the streamed rank's cuts hold the state already, it is counted above)
    for it in prog.iterative_ranks:
        if it in cut_ranks:
            continue
        cuts = {
            k: kept
            for k, items in _cuts(flows, sizes, it, skip, counted).items()
            if (
                kept := [
                    x
                    for x in items
                    if prog.tensor(x.tensor).iter_rank == it
                    and x.tensor not in held
                    and _states_read(prog, x.tensor)
                ]
            )
        }
        if cuts:
            sums = []
            for items in cuts.values():
                terms.extend(items)
                sums.append(sp.Add(*(x.expr for x in items)))
                spill += sp.Add(*(2 * x.expr for x in items))
            total += sp.Max(*sums)
    return Footprint(total, per, tuple(terms), spill, sizes.points(per))
