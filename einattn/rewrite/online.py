"""FuseMax's second transformation: iterative construction (online normalisation), the 1-pass form.

The pattern, for a rank R split into tiles ``R = R1 * R0``::

    GM[p]    = X[m, p] :: max(m)          the max      ->  a running max RM over the tiles m1
    SN[m, p] = f(X[m, p] - GM[p])         a shift      ->  SLN = f(X - RM[m1 + 1]) within a tile
    T[p, ..] = SN[m, p] * G[m, ..]        a sum        ->  RT[m1 + 1] = SLT + RT[m1] * f(RM[m1] - RM[m1 + 1])
    ... reads GM or T, not m ...          a final      ->  reads RM[M1] and RT[M1]

Side conditions, each checked (a failure is a located :class:`RewriteError`):

* the max is one ``max`` reduction over R (associative and commutative, so it runs tile by tile);
* every statement that reads the max along R is a shift ``f(X - c)`` with ``f(a - c) = f(a - b) * f(b - c)``
  (sympy), ``c`` the max or a value computed from it without R, and ``X`` the very values whose max is taken
  (so the running max bounds each tile: nothing overflows that the original would not);
* every reader of a shift is a ``+``-reduction over R that uses it once, as a factor, with the other factors
  independent of the max (so rescaling the running sum by ``f(old - new)`` is exact);
* whatever else reads these values does so without R (a final), and no output carries R.

Where a filter or an index expression can make a whole tile absent along R, the generated cascade keeps the
language's absent-point semantics exactly: the running states start absent (nothing seen yet) and are combined
over the union of present points (``max(a ?? b, b ?? a)`` and ``a + (b ?? 0) ?? b``). A fully masked tile then
leaves the state unchanged, and a fully masked row stays absent (an output delivers 0), never NaN.

The pattern and its side conditions are in :mod:`einattn.rewrite.pattern`, the tiling in
:mod:`einattn.rewrite.tiling`; the 2-pass form is :mod:`einattn.rewrite.twopass`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import syntax as S
from ..errors import Span
from ..ir import Einsum, LhsIndex, size_name
from .derivation import Derivation
from .draft import Draft, make_einsum, plain_index
from .pattern import analyse, name_inline_shifts, weights_into_readers
from .rules import (
    NEVER,
    RUNNING,
    RewriteError,
    ShiftFn,
    coord_tuple,
    insert,
    local_name,
    running_name,
    scaled_name,
    shift_vanishes,
    stmt_text,
    subst,
    text,
    union_add,
    union_max,
)
from .tiling import absence_varies, note_partition, replace_reads, setup_tiles, tile_position, upstream

# ---- the running states it creates ---------------------------------------------------------------------


@dataclass
class RunningSum:
    """A running sum created by :func:`online`: ``name`` with the tile rank at ``pos`` of ``ranks``; ``frame``
    locates the running max in the sum's frame, ``f`` rescales it (in the max's frame)."""

    name: str
    ranks: tuple[str, ...]
    pos: int
    f: ShiftFn
    frame: tuple[S.Expr, ...]
    span: Span | None = None  # the shift's statement in the spec (for a refusal that concerns f)


@dataclass
class RunningMax:
    """A running max created by :func:`online`, with the running sums rescaled by it."""

    name: str
    ranks: tuple[str, ...]
    pos: int
    sums: list[RunningSum]


# ---- 1 pass: the running max -------------------------------------------------------------------------------


def _reads_tensor(f: ShiftFn) -> bool:
    return any(isinstance(n, S.Read) for n in f.reads())


def online(draft: Draft, rank: str, tile: int, deriv: Derivation, guard: bool = False) -> list[RunningMax]:
    """Rule 2: replace each max over ``rank`` and everything normalised by it with running states.

    ``guard``: states start absent even where no tile can be (split-K's parts, which may be empty: their
    states are then absent, and the presence flag 0, rather than -inf and NaN). Returns the running states it
    created (empty: the rule did not apply).
    """
    moved = name_inline_shifts(draft, rank, deriv) + weights_into_readers(draft, rank, deriv)
    try:
        groups = analyse(draft, rank, strict=True)
    except RewriteError as e:
        if not moved:
            raise
        # a statement it quotes may be a reader that took the weights: say so (the caret shows the spec's)
        raise RewriteError(f"{e.message} (after {'; '.join(moved)})", e.span, e.hint) from None
    states: list[RunningMax] = []
    if not groups:
        return states
    t = setup_tiles(draft, rank, tile, groups[0].mx)
    outer, inner = t.outer, t.inner
    state, nxt, final = S.Coord(outer), S.Binary("+", S.Coord(outer), S.Const(1)), S.Size(outer)
    affected: set[int] = set()
    kept: set[int] = set()  # original statements along the rank: still there for any other reader
    new_block: list[Einsum] = []
    inits: list[Einsum] = []
    finals: dict[int, list[Einsum]] = {}  # id(original statement) -> what replaces it among the finals
    read_map = {}
    taken: set[str] = set()
    notes = draft.notes
    for g in groups:
        mx = g.mx
        up = upstream(draft, rank, [mx, *(s.e for s in g.shifts), *(s.e for s in g.sums)], g.dep)
        stmts = [*up, mx, *(s.e for s in g.shifts), *(s.e for s in g.sums)]
        affected |= {id(e) for e in stmts}
        kept |= {id(e) for e in up}
        # states start absent where a tile can be, and where f(-inf - new) is not provably 0 (exp(d / T))
        values = tuple(draft.params)
        growing = [s.f.key for s in g.shifts if not shift_vanishes(s.f, values)]
        by_value = [s.f for s in g.shifts if s.f.key not in growing and not shift_vanishes(s.f)]
        # ... and where f reads a tensor: f(-inf - new) is 0, but its derivative in that tensor is 0 * inf
        learned = [s.f.key for s in g.shifts if s.f.key not in growing and _reads_tensor(s.f)]
        tiles_absent = absence_varies(rank, stmts, draft)
        guarded = guard or tiles_absent or bool(growing) or bool(learned)
        up_new, tiled_up = t.tile_upstream(up, taken)  # another group may have tiled some of them
        pos, lhs = tile_position(mx, rank), mx.lhs_ranks
        own = coord_tuple(lhs)
        taken |= t.names()  # names are unique across groups, not only within one
        rm = draft.fresh(running_name(mx.tensor), taken)
        lm = draft.fresh(local_name(mx.tensor), taken | {rm})
        taken |= {rm, lm}

        def at(name, frame, it, pos=pos):
            return S.Read(name, insert(frame, pos, it))

        lm_e = t.statement(
            lm, insert(plain_index(lhs), pos, LhsIndex(outer)), mx.expr, mx.filter, ((inner, "max"),)
        )
        rm0 = make_einsum(
            rm,
            insert(plain_index(lhs), pos, LhsIndex(outer, "init")),
            S.Const(-math.inf),
            NEVER if guarded else None,
        )
        cur, new = at(rm, own, state), at(lm, own, S.Coord(outer))
        rm1 = make_einsum(
            rm,
            insert(plain_index(lhs), pos, LhsIndex(outer, "step")),
            union_max(cur, new) if guarded else S.Call("max", (cur, new)),
        )
        notes.update(
            {lm: "local max", rm0.label: "running max" + (": absent, no point seen yet" if guarded else "")}
        )
        inits.append(rm0)
        states.append(RunningMax(rm, insert(lhs, pos, outer), pos, []))
        block = [*tiled_up, lm_e, rm1]
        local_sums, corrections, updates, sum_steps = [], [], [], []
        prms: dict[ShiftFn, str] = {}
        for sh in g.shifts:
            sn = sh.e
            sln = draft.fresh(local_name(sn.tensor), taken)
            taken.add(sln)
            t.tiled[sn.tensor] = (sln, sn.lhs_ranks.index(rank))
            sig = tuple(sh.sigma[r] for r in lhs)
            shifted = sh.f.apply(S.Binary("-", sh.x, at(rm, sig, nxt)), sh.sigma)
            block.append(t.statement(sln, t.index(sn.index), shifted, sn.filter))
            notes[sln] = "local numerator"
            if sh.f not in prms:
                prm = draft.fresh("P" + rm if not prms else f"P{rm}{sh.f.name or 'F'}", taken)
                taken.add(prm)
                prms[sh.f] = prm
                corr = sh.f.apply(S.Binary("-", at(rm, own, state), at(rm, own, nxt)))
                corrections.append(make_einsum(prm, insert(plain_index(lhs), pos, LhsIndex(outer)), corr))
                notes[prm] = "correction for the previous max"
        for sm in g.sums:
            te, sh = sm.e, sm.shift
            pt, lt = tile_position(te, rank), te.lhs_ranks
            slt = draft.fresh(local_name(te.tensor), taken)
            rt = draft.fresh(running_name(te.tensor), taken | {slt})
            spt = draft.fresh(scaled_name(te.tensor), taken | {slt, rt})
            taken |= {slt, rt, spt}
            tidx = plain_index(lt)
            local_sums.append(
                t.statement(slt, insert(tidx, pt, LhsIndex(outer)), te.expr, te.filter, t.named(te, True))
            )
            inits.append(
                make_einsum(
                    rt, insert(tidx, pt, LhsIndex(outer, "init")), S.Const(0), NEVER if guarded else None
                )
            )
            frame = tuple(subst(sh.sigma[r], sm.tau) for r in lhs)
            here = coord_tuple(lt)
            scaled = S.Binary("*", S.Read(rt, insert(here, pt, state)), at(prms[sh.f], frame, S.Coord(outer)))
            spt_e = make_einsum(spt, insert(tidx, pt, LhsIndex(outer)), scaled)
            a, b = (
                S.Read(slt, insert(here, pt, S.Coord(outer))),
                S.Read(spt, insert(here, pt, S.Coord(outer))),
            )
            rt1 = make_einsum(
                rt,
                insert(tidx, pt, LhsIndex(outer, "step")),
                union_add(a, b) if guarded else S.Binary("+", a, b),
            )
            updates += [spt_e, rt1]
            states[-1].sums.append(RunningSum(rt, insert(lt, pt, outer), pt, sh.f, frame, sh.e.span))
            notes.update({slt: f"{te.tensor} of this tile", f"{rt}.init": f"running {te.tensor}"})
            if sh.direct:
                read_map[te.tensor] = lambda rd, rt=rt, pt=pt: S.Read(rt, insert(rd.indices, pt, final))
                if te.tensor in draft.outputs:
                    finals[id(te)] = [make_einsum(te.tensor, te.index, S.Read(rt, insert(here, pt, final)))]
            else:  # the spec shifts by a value computed from the max: rescale once, at the end
                rho = dict(zip(lhs, frame))
                fix = sh.f.apply(S.Binary("-", at(rm, frame, final), subst(sh.c, sm.tau)), rho)
                finals[id(te)] = [
                    make_einsum(te.tensor, te.index, S.Binary("*", S.Read(rt, insert(here, pt, final)), fix))
                ]
            sum_steps.append(
                (
                    "running sum",
                    te,
                    f"`{te.tensor}` sums `{sh.e.tensor}` over {rank}: each tile adds its local sum to the "
                    "running "
                    f"sum `{rt}`, rescaled by `{prms[sh.f]}` when the running max grows",
                    [stmt_text(local_sums[-1]), stmt_text(spt_e), stmt_text(rt1)],
                    [
                        RUNNING["+"].format(r=rank),
                        f"`{sh.e.tensor}` is one factor of the summand; the other factors do not depend on "
                        f"`{mx.tensor}`",
                        "sum(x * c) = sum(x) * c",
                    ],
                )
            )
        read_map[mx.tensor] = lambda rd, rm=rm, pos=pos: S.Read(rm, insert(rd.indices, pos, final))
        if mx.tensor in draft.outputs:
            finals[id(mx)] = [make_einsum(mx.tensor, mx.index, at(rm, own, final))]
        new_block += block + local_sums + corrections + updates
        if up_new:
            note_partition(deriv, rank, t, up_new, tiled_up)
        deriv.step(
            "online max",
            mx,
            f"the max over {rank} becomes the running max `{rm}` over the tiles {outer} (rank "
            f"{size_name(rank)} = {size_name(outer)} * {size_name(inner)}, {size_name(inner)} = {tile}); "
            + ", ".join(f"`{s.e.tensor}` is computed per tile against it" for s in g.shifts),
            [stmt_text(lm_e), stmt_text(rm1)]
            + [stmt_text(e) for e in block[len(tiled_up) + 2 :]]
            + [stmt_text(e) for e in corrections],
            [
                RUNNING["max"].format(r=rank),
                *(f"`{text(s.e.expr)}`: {s.f.law()} (sympy)" for s in g.shifts),
                *(f"`{s.e.tensor}` shifts the very values whose max is `{mx.tensor}`" for s in g.shifts),
                "every other reader of the max and of the sums is free of " + rank,
            ]
            + (
                [
                    "a tile can be entirely absent (a filter or index along "
                    f"{rank}): states start absent and combine over the union of present points"
                ]
                if tiles_absent
                else []
            )
            + (
                [
                    f"f(d) = {growing[0]} is not proved to vanish as d -> -inf (sympy; the sign of its "
                    "factor is not known): states start absent, not at -inf and 0 (0 * f(-inf) may be NaN)"
                ]
                if growing and not tiles_absent
                else []
            )
            + (
                [
                    f"f(d) = {learned[0]} reads a tensor: states start absent, not at -inf and 0 (the "
                    "gradient of f(-inf - new) in that tensor would be 0 * inf)"
                ]
                if learned and not growing and not tiles_absent
                else []
            )
            + [
                f"f(d) = {f.key} vanishes as d -> -inf for "
                + ", ".join(
                    f"{n} = {v}"
                    for n, v in draft.params
                    if any(n == r.name for r in f.reads() if isinstance(r, S.Param))
                )
                + " (sympy): this form assumes those values (einattn.compile sets params before deriving)"
                for f in by_value
            ],
        )
        for args in sum_steps:
            deriv.step(*args)
    # assemble: untouched statements before the first affected one, the streaming block, then the rest
    first = min(k for k, e in enumerate(draft.einsums) if id(e) in affected)
    rest = []
    for e in draft.einsums[first:]:
        if id(e) in finals:
            rest += finals[id(e)]
        elif id(e) not in affected:
            rest.append(replace_reads(e, read_map))
        elif id(e) in kept:
            rest.append(e)  # dropped below unless something else still reads it
    # a statement may read the max or a sum before the spec defines them (statements are a dataflow graph,
    # in any order): it reads the final states too
    head = [replace_reads(e, read_map) for e in draft.einsums[:first]]
    draft.einsums = head + t.blocks + inits + new_block + rest
    draft.dce()
    return states
