"""The 2-pass sibling of online normalisation: local maxima and correction factors (TileFlow's cascade).

Each max over R is split into a per-tile max ``LM`` and a max over the tiles; each tile is normalised by its
own max and corrected by ``CF = f(LM - GM)``. Sums of a shift become sums over tiles of per-tile sums times
``CF``; other readers re-read the tiles. Outputs along R keep their shape
(``A[m, p] = BA[m // M0, m % M0, p]``). Absent tiles need no guard here: ``LM`` and ``CF`` are absent with
them and every reduction skips them.
"""

from __future__ import annotations

from .. import syntax as S
from ..ir import Einsum, LhsIndex
from .derivation import Derivation
from .draft import Draft, make_einsum, plain_index
from .pattern import analyse, reads_any
from .rules import (
    RUNNING,
    coord_tuple,
    insert,
    local_name,
    stmt_text,
    subst,
    text,
)
from .tiling import setup_tiles, tile_position, untile, upstream

# ---- 2 passes: local maxima and correction factors ---------------------------------------------------------


def two_level(draft: Draft, rank: str, tile: int, deriv: Derivation) -> bool:
    """Split each max over ``rank`` into a max per tile and a max over tiles (TileFlow's 2-pass cascade)."""
    groups = analyse(draft, rank, strict=False)
    if not groups:
        return False
    t = setup_tiles(draft, rank, tile, groups[0].mx)
    outer, inner = t.outer, t.inner
    affected: set[int] = set()
    kept: set[int] = set()
    blocks: list[Einsum] = []
    taken: set[str] = set()
    for g in groups:
        mx = g.mx
        shift_ids = {id(s.e) for s in g.shifts}
        sums = {id(s.e): s for s in g.sums}
        down = [
            e for e in draft.einsums if rank in e.space and reads_any(e, g.dep) and id(e) not in shift_ids
        ]
        up = upstream(draft, rank, [mx, *(s.e for s in g.shifts), *down], g.dep)
        # downstream statements also read values along rank that are not the max's: tile them as well
        others = [e for e in down if id(e) not in sums and e is not mx]
        affected |= {id(e) for e in [*up, mx, *(s.e for s in g.shifts), *down]}
        kept |= {id(e) for e in up}
        _, tiled_up = t.tile_upstream(up, taken)  # another group may have tiled some of them
        pos, lhs = tile_position(mx, rank), mx.lhs_ranks
        own = coord_tuple(lhs)
        lm = draft.fresh(local_name(mx.tensor), t.names() | taken)
        lm_e = t.statement(
            lm, insert(plain_index(lhs), pos, LhsIndex(outer)), mx.expr, mx.filter, ((inner, "max"),)
        )
        gm_e = make_einsum(
            mx.tensor, mx.index, S.Read(lm, insert(own, pos, S.Coord(outer))), None, ((outer, "max"),)
        )
        local, level2, factors_, tiled_shifts = [], [], [], []
        taken |= t.names() | {lm}  # names are unique across groups, not only within one
        for sh in g.shifts:
            sn = sh.e
            sln = draft.fresh(local_name(sn.tensor), taken)
            cf = draft.fresh("CF", taken | {sln})
            taken |= {sln, cf}
            sig = tuple(sh.sigma[r] for r in lhs)
            lm_here = S.Read(lm, insert(sig, pos, S.Coord(outer)))
            local.append(
                t.statement(
                    sln, t.index(sn.index), sh.f.apply(S.Binary("-", sh.x, lm_here), sh.sigma), sn.filter
                )
            )
            cf_index = tuple(LhsIndex(outer) if ix.rank == rank else ix for ix in sn.index)
            factors_.append(make_einsum(cf, cf_index, sh.f.apply(S.Binary("-", lm_here, sh.c), sh.sigma)))
            cf_own = tuple(S.Coord(outer if r == rank else r) for r in sn.lhs_ranks)
            sn_pos = sn.lhs_ranks.index(rank)
            for sm in g.sums:
                if sm.shift is not sh:
                    continue
                te = sm.e
                pt, lt = tile_position(te, rank), te.lhs_ranks
                slt = draft.fresh(local_name(te.tensor), taken)
                taken.add(slt)
                here = coord_tuple(lt)
                local.append(
                    t.statement(
                        slt,
                        insert(plain_index(lt), pt, LhsIndex(outer)),
                        te.expr,
                        te.filter,
                        t.named(te, True),
                        override={sn.tensor: (sln, sn_pos)},
                    )
                )
                cf_there = tuple(
                    S.Coord(outer) if r == rank else subst(S.Coord(r), sm.tau) for r in sn.lhs_ranks
                )
                level2.append(
                    make_einsum(
                        te.tensor,
                        te.index,
                        S.Binary("*", S.Read(slt, insert(here, pt, S.Coord(outer))), S.Read(cf, cf_there)),
                    )
                )
            output = sn.tensor in draft.outputs
            if output or any(id(r) not in sums for r in draft.readers(sn.tensor)):
                name = draft.fresh("B" + sn.tensor, taken) if output else sn.tensor
                taken.add(name)
                tiled_sn = S.Read(sln, coord_tuple(ix.rank for ix in t.index(sn.index)))
                tiled_shifts.append(
                    make_einsum(name, t.index(sn.index), S.Binary("*", tiled_sn, S.Read(cf, cf_own)))
                )
                if output:
                    tiled_shifts.append(untile(sn, name, t))
                t.tiled[sn.tensor] = (name, sn_pos)
        tiled_down = []
        for e in others:
            if rank in e.lhs_ranks:
                name = e.tensor if e.tensor not in draft.outputs else draft.fresh("B" + e.tensor, taken)
                taken.add(name)
                t.tiled[e.tensor] = (name, e.lhs_ranks.index(rank))
        for e in others:
            if rank in e.lhs_ranks:
                name = t.tiled[e.tensor][0]
                tiled_down.append(t.statement(name, t.index(e.index), e.expr, e.filter, t.named(e, False)))
                if name != e.tensor:
                    tiled_down.append(untile(e, name, t))
            else:
                tiled_down.append(t.statement(e.tensor, e.index, e.expr, e.filter, t.named(e, False)))
        blocks += [*tiled_up, lm_e, *local, gm_e, *factors_, *level2, *tiled_shifts, *tiled_down]
        deriv.step(
            "two-level max",
            mx,
            f"the max over {rank} is the max over tiles {outer} of each tile's max `{lm}`; each tile is "
            f"normalised by its own max and corrected by `CF = f({lm} - {mx.tensor})`",
            [stmt_text(e) for e in [lm_e, gm_e, *local, *factors_, *level2]],
            [
                RUNNING["max"].format(r=rank),
                *(f"`{text(s.e.expr)}`: {s.f.law()} (sympy)" for s in g.shifts),
            ],
        )
    first = min(k for k, e in enumerate(draft.einsums) if id(e) in affected)
    rest = [e for e in draft.einsums[first:] if id(e) not in affected or id(e) in kept]
    draft.einsums = draft.einsums[:first] + t.blocks + blocks + rest
    draft.dce()
    return True
