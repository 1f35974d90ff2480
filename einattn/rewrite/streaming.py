"""Streaming a 1-pass cascade's sums: a sum over the keys of values that pair every key with every query.

Sigmoid attention, ReLU attention and causal linear attention are 1-pass over the keys ``m`` as written (no
max to normalise by), so the pass rules leave them alone; but a backend that computes them as written holds
the whole ``[M, P]`` matrix of their scores, where the analysis promises a buffer free of ``M``. This rule
splits ``m`` into tiles (``rank M = M1 * M0``) and turns each sum over ``m`` into a running sum over the
tiles::

    AV[p, f] = A[m, p] * V[m, f]        ->   LAV[m1, p, f] = BA[m1, m0, p] * BV[m1, m0, f]   (a tile's sum)
                                             RAV[0, p, f] = 0
                                             RAV[m1 + 1, p, f] = RAV[m1, p, f] + LAV[m1, p, f]
                                             AV[p, f] = RAV[M1, p, f]

``+`` is associative and commutative, so the order of the keys does not matter: exact up to rounding. The
values along ``m`` that the sums read are computed tile by tile (``BA``). Where a tile can be absent for a
row (a filter along ``m``), the running sum starts absent and adds over the union of present points
(``a + (b ?? 0) ?? b``), so a row that sees no key stays absent, as the sum of nothing is.

It applies where it helps (:func:`pairs_keys_with_queries`: some sum's summand spans ``m`` and an output
rank that no input carries together with ``m``) and only to a cascade that is already 1-pass over ``m`` with
no max, min or recurrence along it; otherwise it leaves the draft as it is (the pass rules own those).
"""

from __future__ import annotations

from .. import syntax as S
from ..ir import Einsum, LhsIndex, size_name
from .derivation import Derivation
from .draft import Draft, make_einsum, plain_index
from .rules import (
    NEVER,
    RUNNING,
    coord_tuple,
    insert,
    local_name,
    running_name,
    stmt_text,
    union_add,
)
from .tiling import absence_varies, note_partition, setup_tiles, tile_position, upstream


def _sums(draft: Draft, rank: str) -> list[Einsum] | None:
    """The full ``+`` reductions over ``rank``; None where any reduction over it is not a sum, or where a
    statement that sums over it also reduces another rank by a named max or min (``S[p] = X[p] * V[m, j]
    :: max(j)`` is the max over j of the sum over m: tile by tile it would be a sum of per-tile maxes)."""
    out = []
    for e in draft.einsums:
        ops = {op for r, op in e.reduce if r == rank}
        if not ops:
            continue
        if ops != {"+"} or any(op != "+" for _, op in e.reduce):
            return None
        out.append(e)
    return out


def pairs_keys_with_queries(draft: Draft, rank: str, sums: list[Einsum]) -> bool:
    """Whether some sum over ``rank`` ranges over ``rank`` and an output rank that no input carries with it
    (sigmoid attention's ``A[m, p] * V[m, f]``: ``p`` and ``m`` meet only in computed values). Linear
    attention's ``K[m, e] * V[m, f]`` pairs nothing new: its inputs hold the same points."""
    together = {r for t in draft.inputs if rank in t.ranks for r in t.ranks}
    return any(set(e.lhs_ranks) - together for e in sums if rank in e.space)


def stream_sums(draft: Draft, rank: str, tile: int, deriv: Derivation, always: bool = False) -> bool:
    """Turn the sums over ``rank`` into running sums over its tiles; False where the rule does not apply
    (the draft is then unchanged). ``always``: also where the sums pair no new ranks (the caller knows that
    the values summed span two sequence ranks, as a bias ``B[h, p, m]`` read beside them does too)."""
    if any(p.parent == rank or rank in (p.outer, p.inner) for p in draft.partitions):
        return False
    aliases = dict(draft.aliases)
    if not any(rank in t.ranks for t in draft.inputs) or rank in aliases or rank in aliases.values():
        return False
    if any(ix.kind != "rank" and ix.rank == rank for e in draft.einsums for ix in e.index):
        return False  # a recurrence along it
    if any(e.kind != "plain" and rank in e.space for e in draft.einsums):
        return False
    sums = _sums(draft, rank)
    if not sums or not (always or pairs_keys_with_queries(draft, rank, sums)):
        return False
    up = upstream(draft, rank, sums, set())
    if any(rank in draft.ranks_of(o) for o in draft.outputs):
        return False  # an output along the rank keeps its values whole
    along = [e for e in draft.einsums if rank in e.lhs_ranks]
    readers = {id(e) for e in up} | {id(e) for e in sums}
    if any(id(e) not in {id(u) for u in up} for e in along):
        return False  # a value along the rank that no sum reads
    computed = [(e, rd) for e in draft.einsums for rd in e.reads() if draft.input(rd.tensor) is None]
    if any(id(e) not in readers and rank in draft.ranks_of(rd.tensor) for e, rd in computed):
        return False  # something else reads a value along the rank
    t = setup_tiles(draft, rank, tile, sums[0])
    outer, inner = t.outer, t.inner
    state, final = S.Coord(outer), S.Size(outer)
    _, tiled_up = t.tile_upstream(up, set())
    guarded = absence_varies(rank, up + sums, draft)
    taken = t.names()
    inits, block, finals = [], list(tiled_up), {}
    for te in sums:
        pt, lt = tile_position(te, rank), te.lhs_ranks
        lname = draft.fresh(local_name(te.tensor), taken)
        rname = draft.fresh(running_name(te.tensor), taken | {lname})
        taken |= {lname, rname}
        tidx, here = plain_index(lt), coord_tuple(lt)
        local = t.statement(lname, insert(tidx, pt, LhsIndex(outer)), te.expr, te.filter, t.named(te, True))
        start = NEVER if guarded else None  # (absent: no key seen yet)
        init = make_einsum(rname, insert(tidx, pt, LhsIndex(outer, "init")), S.Const(0), start)
        a, b = S.Read(rname, insert(here, pt, state)), S.Read(lname, insert(here, pt, S.Coord(outer)))
        added = union_add(b, a) if guarded else S.Binary("+", a, b)
        step = make_einsum(rname, insert(tidx, pt, LhsIndex(outer, "step")), added)
        inits.append(init)
        block += [local, step]
        last = S.Read(rname, insert(here, pt, final))
        finals[id(te)] = make_einsum(te.tensor, te.index, last, span=te.span)
        draft.notes.update({lname: f"{te.tensor} of this tile", f"{rname}.init": f"running {te.tensor}"})
        deriv.step(
            "running sum",
            te,
            f"`{te.tensor}` sums over {rank}: each tile of {size_name(inner)} = {tile} adds its local sum "
            f"`{lname}` to the running sum `{rname}` over the tiles {outer}",
            [stmt_text(local), stmt_text(step)],
            [RUNNING["+"].format(r=rank)]
            + (
                [
                    f"a tile can be entirely absent (a filter or index along {rank}): the running sum starts "
                    "absent and adds over the union of present points"
                ]
                if guarded
                else []
            ),
        )
    if tiled_up:
        note_partition(deriv, rank, t, up, tiled_up)
    gone = {id(e) for e in up} | set(finals)
    first = min(k for k, e in enumerate(draft.einsums) if id(e) in gone)
    head = draft.einsums[:first]
    rest = [finals.get(id(e), e) for e in draft.einsums[first:] if id(e) not in gone or id(e) in finals]
    draft.einsums = head + t.blocks + inits + block + rest
    draft.dce()
    return True


__all__ = ["pairs_keys_with_queries", "stream_sums"]
