"""Passes per rank: the counting rule of FuseMax (reference fusemax.md, section 2) as a dataflow.

A *pass* over rank R is one traversal of an R fiber. Per rank, every Einsum is one of:

* **traversing** R: R is in its iteration space (for a partition parent ``m``: ``m`` itself, or both parts
  ``m1`` and ``m0``). It runs inside some pass over R.
* **not traversing**: it runs between passes, or is fused into one, without walking an R fiber (the
  running-state updates of Cascade 5 touch only ``m1``: per tile, not per element of ``m``).

Each value carries two facts, per *root* (an input fiber it derives from, e.g. ``K``):

* ``vis``: the pass in which its elements along R are produced (it still carries R);
* ``done``: the pass after which a *full R-reduction* it depends on is complete.

A full R-reduction reduces R (for a parent: the parent or its outer part, which enumerates the tiles), or
reduces a coordinate that reads R's dimension of a tensor without keeping R (an alias reduction,
:func:`via_alias`: ``T[p] = X[j, p]`` with ``X`` declared ``X[i, p]``). An iterative update
``RM[m1 + 1] = max(RM[m1], ...)`` keeps its rank: it is not a full reduction. Reading an iterative tensor's
final state (``RNV[f, M1, p]``), or any R-indexed tensor at an index without an R coordinate, reads a
completed value: its ``vis`` turns into ``done``. A read of the state before a step (``RM[m1, p]``) by an
Einsum of the recurrence's own loop is a fiber of its own within the step; outside the loop
(``Y[t] = R[t] - C``) it is one of the states, like ``R[t + 1]``.

A traversing Einsum visits each root r it reads at pass ``max(vis(r), done(r) + 1)``: reading a fiber together
with a value that needs a full reduction *of that fiber* starts a new pass (a *barrier*); otherwise it joins
the latest pass among its inputs. A value that is reduced and then combined only with R-free values adds no
pass. Passes over R are the largest visit. Recurrences make the graph cyclic; the facts only grow, so the
analysis iterates to a fixed point.

The same flow with a single root for every input gives the *sweep* of each Einsum (which traversal of R it can
be fused into, counting traversals that read fresh fibers too): these are the fusion groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import syntax as S
from ..errors import InternalError
from ..graph import Dense, schedule
from ..ir import Einsum, Program, coords
from .report import Barrier

CARRY, EARLY, FINAL, NONE = "carry", "early", "final", "none"


@dataclass(frozen=True)
class Family:
    """The ranks that stand for rank ``rank``: itself, and for a partition parent its two parts."""

    rank: str
    members: frozenset
    outer: str | None = None  # set only for a partition parent
    inner: str | None = None

    @property
    def is_parent(self) -> bool:
        return self.outer is not None

    def traverses(self, space, via=()) -> bool:
        """Whether an Einsum over ``space`` walks the rank's fibers; ``via``: the members whose fibers it
        reduces under another coordinate (:func:`via_alias`)."""
        s = set(space) | set(via)
        return self.rank in s or (self.is_parent and self.outer in s and self.inner in s)

    def touches(self, space) -> bool:
        return bool(self.members & set(space))

    def reduces_fully(self, e: Einsum, via=()) -> bool:
        red = set(e.reduced) | set(via)
        return self.rank in red or (self.is_parent and self.outer in red)


def alias_reads(prog: Program, e: Einsum):
    """``(rank, coordinates)`` for each dimension ``e`` reads at coordinates it reduces that are neither
    the dimension's own rank nor a part of it: with ``X`` declared ``X[i, p]`` and ``rank J = I``,
    ``T[p] = X[j, p]`` (a sum over j) reduces X's i fibers, as ``T[p] = X[i, p]`` would."""
    red = set(e.reduced)
    for rd in e.reads():
        t = prog.tensor(rd.tensor)
        for r, ix in zip(t.ranks, rd.indices):
            cs = frozenset(coords(ix))
            part = prog.partition_of(r)
            own = {part.parent, part.outer, part.inner} if part is not None else {r}
            if cs & red and not cs & own:
                yield r, cs


def via_alias(prog: Program, fam: Family, e: Einsum) -> frozenset:
    """The members of ``fam`` whose fibers ``e`` reduces under a coordinate outside the family (an alias),
    and that its own space does not keep: for the counting rule, ``e`` then traverses and reduces them as
    if it iterated over them (``T[p] = X[j, p]``: a full reduction of X's i fibers). An Einsum that keeps
    the rank (self-attention's ``O[p, e] = SN[m, p] * X[m, e] / SD[p]`` with ``X`` declared ``X[p, e]``,
    ``rank M = P``) makes one point per point of it and is no full reduction of it: a residual
    ``Y[p, e] = O[p, e] + X[p, e]`` re-reads each row's own element after its own reduction, as when ``X``
    is declared ``X[m, e]``."""
    space = set(e.space)
    return frozenset(
        r for r, cs in alias_reads(prog, e) if r in fam.members and r not in space and not cs & fam.members
    )


def family(prog: Program, rank: str) -> Family:
    for p in prog.partitions:
        if p.parent == rank:
            return Family(rank, frozenset((rank, p.outer, p.inner)), p.outer, p.inner)
    return Family(rank, frozenset((rank,)))


def read_kind(prog: Program, rd: S.Read, fam: Family) -> str:
    """How a read sees the fibers of ``fam``: ``carry`` (walks them), ``final`` (a completed value, e.g.
    ``RNV[f, M1, p]``, or one point of a tensor, ``S[I - 1]``), ``early`` (a constant index of an iterative
    tensor: the initial state ``RM[0, p]``) or ``none``."""
    t = prog.tensor(rd.tensor)
    fam_dims = []
    for r, ix in zip(t.ranks, rd.indices):
        cs = set(coords(ix))
        if cs & fam.members or (r in fam.members and cs):
            return CARRY
        if r in fam.members:
            fam_dims.append(ix)
    if not fam_dims:
        return NONE
    if t.iterative is not None and all(isinstance(ix, S.Const) for ix in fam_dims):
        return EARLY  # (a constant point of any other tensor is FINAL: `S[0]` of a sum is complete)
    return FINAL


@dataclass(frozen=True)
class Raise:
    """A traversing Einsum pushed to a later pass: ``reads`` re-read ``root`` after ``origin`` finished."""

    root: str
    to_pass: int
    origin: str
    reads: tuple[S.Read, ...]


@dataclass(frozen=True)
class Visit:
    """What the flow found for one Einsum and one rank."""

    einsum: Einsum
    traversing: bool
    full: bool  # a full reduction of the rank
    pass_: int  # the traversal it runs in (traversing) or the earliest one it can be fused into
    visit: tuple[tuple[str, int], ...]  # root -> pass (traversing only)
    raised: tuple[Raise, ...] = ()
    # (tensor, pass it was produced in, pass it is re-read in); an input's every read (pass, pass)
    rereads: tuple[tuple[str, int, int], ...] = ()
    repeats: tuple[tuple[str, str], ...] = ()  # (input, iterative rank): a fiber re-read at every step


def order(prog: Program) -> tuple[Einsum, ...]:
    """Einsums in evaluation order (recurrence bodies in place).

    ``schedule`` is cached on program equality, which ignores source spans: map its labels back to this
    program's own Einsums so that locations name this file.
    """
    own = {e.label: e for e in prog.einsums}
    out: list[Einsum] = []
    for st in schedule(prog):
        out.extend(own[e.label] for e in ([st.einsum] if isinstance(st, Dense) else st.body))
    return tuple(out)


def loops(prog: Program) -> dict[str, int]:
    """Label -> the recurrence loop whose body holds it (Einsums outside every loop are absent): the
    Einsums that run *within* a step, as ``schedule`` nests them."""
    out: dict[str, int] = {}
    for k, st in enumerate(schedule(prog)):
        if not isinstance(st, Dense):
            out.update(dict.fromkeys((e.label for e in st.body), k))
    return out


def _merge_vis(into: dict, new: dict) -> bool:
    changed = False
    for r, v in new.items():
        if v > into.get(r, 0):
            into[r] = v
            changed = True
    return changed


def _merge_done(into: dict, new: dict) -> bool:
    changed = False
    for r, d in new.items():
        if r not in into or d[0] > into[r][0]:
            into[r] = d
            changed = True
    return changed


class Flows:
    """The pass dataflow of one program, computed on demand per (rank, per-root) and kept."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.order = order(prog)
        self.reads = {e.label: e.reads() for e in self.order}
        self.loops = loops(prog)
        self._cache: dict[tuple[str, bool], dict[str, Visit]] = {}

    def __call__(self, rank: str, per_root: bool = True) -> dict[str, Visit]:
        key = (rank, per_root)
        if key not in self._cache:
            self._cache[key] = self._flow(rank, per_root)
        return self._cache[key]

    def _flow(self, rank: str, per_root: bool) -> dict[str, Visit]:
        """Run the pass dataflow for ``rank``; returns a :class:`Visit` per Einsum label."""
        prog, einsums = self.prog, self.order
        fam = family(prog, rank)
        vis: dict[str, dict] = {}
        done: dict[str, dict] = {}
        completer: dict[str, str] = {}
        for e in einsums:
            vis.setdefault(e.tensor, {})
            done.setdefault(e.tensor, {})
            if e.kind != "init" or e.tensor not in completer:
                completer[e.tensor] = e.label

        def root_of(name: str) -> str:
            return name if per_root else "*"

        # a read of the state before a step (``RM[m1, p]``) is a fiber of its own only within the step, in
        # an Einsum of the recurrence's own loop; outside it (``Y[t] = R[t] - C``) it is one of R's states
        step_loop = {e.tensor: self.loops.get(e.label) for e in einsums if e.kind == "step"}

        def carried(e: Einsum, rd: S.Read) -> str | None:
            inside = self.loops.get(e.label)
            if inside is None or step_loop.get(rd.tensor) != inside:
                return None
            return carried_rank(prog, rd)

        reads = {
            e.label: tuple(
                (rd, prog.tensor(rd.tensor), read_kind(prog, rd, fam), carried(e, rd))
                for rd in self.reads[e.label]
            )
            for e in einsums
        }
        via = {e.label: via_alias(prog, fam, e) for e in einsums}
        pointwise = _pointwise(prog, fam, reads)
        result: dict[str, Visit] = {}
        for _round in range(4 * len(einsums) + 8):
            changed = False
            for e in einsums:
                v, out_vis, out_done = _step(
                    prog, fam, e, reads[e.label], vis, done, completer, root_of, pointwise, via[e.label]
                )
                result[e.label] = v
                changed |= _merge_vis(vis[e.tensor], out_vis)
                changed |= _merge_done(done[e.tensor], out_done)
            if not changed:
                return result
        raise InternalError(f"pass analysis of `{rank}` in {prog.name} did not reach a fixed point")


def _pointwise(prog: Program, fam: Family, reads) -> frozenset:
    """Computed tensors one of whose points is computed from one point of each fiber of ``fam``'s rank that
    they read.

    Reading such a tensor at a point without a coordinate of the rank (``X2[I - 1]`` with
    ``X2[i] = 2 * X[i]``) needs no traversal before it: a mapping computes that point first, as it reads
    ``X[I - 1]`` of an input. Not pointwise: a reduction over the rank (or over a coordinate that reads
    the rank's fibers, an alias), a walk along the rank (its iterative tensors), and anything that reads
    one of those along the rank. A reduction over another rank (``S[i] = A[i, k]``) or a recurrence over
    another rank (``R[t + 1, i]``) keeps its points apart. Reductions it reads without the rank (``GM[p]``)
    still order it, through their own completion. The largest such set: a recurrence may read itself.
    """
    by_tensor: dict[str, list] = {}
    for e in prog.einsums:
        by_tensor.setdefault(e.tensor, []).append(e)

    def walks(e: Einsum) -> bool:  # reduces the rank, or a coordinate that reads its fibers (an alias)
        red = set(e.reduced)
        return bool(red & fam.members) or any(
            r in fam.members and set(coords(ix)) & red
            for rd, t, _, _ in reads[e.label]
            for r, ix in zip(t.ranks, rd.indices)
        )

    out = {
        n
        for n, es in by_tensor.items()
        if not (prog.tensor(n).iterative is not None and prog.tensor(n).iter_rank in fam.members)
        and not any(walks(e) for e in es)
    }
    changed = True
    while changed:
        changed = False
        for name in sorted(out):
            if any(
                not t.is_input and kind == CARRY and t.name not in out
                for e in by_tensor[name]
                for _, t, kind, _ in reads[e.label]
            ):
                out.discard(name)
                changed = True
    return frozenset(out)


def carried_rank(prog: Program, rd: S.Read) -> str | None:
    """The iterative rank, when ``rd`` reads the state *before* the current step (``RM[m1, p]``)."""
    t = prog.tensor(rd.tensor)
    if t.iterative is None:
        return None
    ix = rd.indices[t.iterative]
    return t.iter_rank if isinstance(ix, S.Coord) and ix.rank == t.iter_rank else None


def _step_invariant(prog: Program, root: str, rank: str) -> bool:
    """Whether input ``root`` is the same at every step of iterative ``rank`` (not indexed by it)."""
    if root not in prog.inputs:
        return False
    part = prog.partition_of(rank)
    step_ranks = {rank} | ({part.parent} if part is not None and rank != part.parent else set())
    return not step_ranks & set(prog.tensor(root).ranks)


def _walks_through(fam: Family, e: Einsum, reads) -> bool:
    """Whether ``e`` walks the fibers of ``fam``'s rank under another coordinate of its space after a full
    reduction that all of them wait for: ``Y[p, e] = X[p, e] * rsqrt(NRM)`` with ``X`` declared ``X[m, e]``
    (``rank P = M``) and ``NRM`` a sum over all of ``X`` re-reads ``X``'s ``m`` fibers as it iterates over
    ``p``: a second pass over ``m``, as when ``X`` is declared ``X[p, e]``, whichever of the two ranks the
    declaration names.

    Not a walk: a dimension of a part (``T[m1]``: one value per tile, as for ``Family.traverses``), and a
    read combined only with completed values of its own point of the walking coordinate (a residual
    ``O[p, e] = RNV[e, M1, p] / RD[M1, p] + X[p, e]``: each row re-reads its own element, which no buffer
    along ``m`` has to keep)."""
    space = set(e.space)
    walking: set[str] = set()
    for rd, t, kind, _ in reads:
        if kind != CARRY:
            continue
        for r, ix in zip(t.ranks, rd.indices):
            cs = set(coords(ix))
            if r == fam.rank and cs & space and not cs & fam.members:
                walking |= cs & space
    if not walking:
        return False
    return any(
        not t.is_input and kind != CARRY and not any(set(coords(ix)) & walking for ix in rd.indices)
        for rd, t, kind, _ in reads
    )


def _step(prog, fam, e: Einsum, reads, vis, done, completer, root_of, pointwise, via=frozenset()):
    vis_in: dict[str, int] = {}
    done_in: dict[str, tuple[int, str]] = {}
    carrying: list[tuple[S.Read, dict]] = []
    previous: dict[str, str] = {}  # roots reduced in earlier steps of a recurrence -> its rank
    for rd, t, kind, carried in reads:
        if t.is_input:
            tv = {root_of(t.name): 1} if kind == CARRY else {}
            td: dict = {}
        else:
            tv, td = vis[t.name], done[t.name]
        if carried is not None:
            # The state before this step was made by earlier steps, from their fibers: within this step it
            # is a fiber of its own, like an input, and orders nothing. (An input that every step reads
            # again after a reduction of it is noted as a repeat.)
            previous.update(dict.fromkeys(list(td) + (list(tv) if kind != CARRY else []), carried))
            if kind == CARRY:
                state = {root_of(f"{t.name}[{carried}]"): 1}
                carrying.append((rd, state))
                _merge_vis(vis_in, state)
            continue
        _merge_done(done_in, td)
        if kind == CARRY:
            carrying.append((rd, tv))
            _merge_vis(vis_in, tv)
        elif kind != EARLY and not (kind in (FINAL, NONE) and t.name in pointwise):
            # (a pointwise value read without the rank's coordinate, at a point of an alias that walks the
            # same fibers (`N[s]` of `N[s] = square(X[s, c])`, `rank S = T`) or at a constant one, is made
            # from the points it reads, by a mapping: no full reduction it completes)
            _merge_done(done_in, {r: (p, completer[t.name]) for r, p in tv.items()})
    full = fam.reduces_fully(e, via)
    if fam.traverses(e.space, via) or _walks_through(fam, e, reads):
        roots = dict(vis_in) or {root_of(e.label): 1}
        visit: dict[str, int] = {}
        raised = []
        for r, base in roots.items():
            p = max(base, 1)
            if r in done_in and done_in[r][0] + 1 > p:
                p, origin = done_in[r][0] + 1, done_in[r][1]
                reread = tuple(rd for rd, tv in carrying if r in tv and tv[r] < p)
                raised.append(Raise(r, p, origin, reread))
            visit[r] = p
        pass_ = max(visit.values())
        if full:  # complete when its pass ends, for every fiber it reduces (FuseMax: 1 + its pass)
            out_vis, out_done = {}, dict(done_in)
            _merge_done(out_done, {r: (pass_, e.label) for r in visit})
        else:
            out_vis, out_done = visit, done_in
        direct = {root_of(t.name) for _, t, kind, _ in reads if t.is_input and kind == CARRY}
        repeats = tuple((r, it) for r, it in previous.items() if r in direct and _step_invariant(prog, r, it))
        # a computed tensor is made in one pass, its producer's (the latest of its roots), whichever root
        # raises the pass that reads it again
        # (an input is held from the pass that first reads it to the last: each read is noted, in the pass
        # its Einsum runs in, see footprint._cuts)
        made = {id(tv): max(tv.values(), default=1) for _, tv in carrying}
        inputs = dict.fromkeys(rd.tensor for rd, _ in carrying if prog.tensor(rd.tensor).is_input)
        rereads = tuple(
            dict.fromkeys(
                (rd.tensor, made[id(tv)], visit[r])
                for rd, tv in carrying
                if rd.tensor not in inputs
                for r in tv
                if r in visit and made[id(tv)] < visit[r]
            )
        ) + tuple((x, pass_, pass_) for x in inputs)
        v = Visit(e, True, full, pass_, tuple(visit.items()), tuple(raised), rereads, repeats)
        return v, out_vis, out_done
    pass_ = max([1, *vis_in.values(), *(d[0] for d in done_in.values())])
    if full:
        out_vis, out_done = {}, dict(done_in)
        last = max(vis_in.values(), default=1)
        _merge_done(out_done, {r: (last, e.label) for r in vis_in})
    else:
        out_vis, out_done = vis_in, done_in
    return Visit(e, False, full, pass_, ()), out_vis, out_done


# ---- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankPasses:
    rank: str
    passes: int
    analysed: bool  # False: a rank no Einsum iterates over (read only through index expressions)
    barriers: tuple[Barrier, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()  # Einsum labels per sweep: fusable together
    repeats: tuple[tuple[str, str], ...] = ()  # (input, iterative rank): its fiber is re-read at every step
    sweep: dict = field(default_factory=dict, compare=False)  # label -> sweep (single-root flow)


def _at(span) -> str:
    return str(span) if span is not None else "?"


def analysed_ranks(prog: Program) -> tuple[str, ...]:
    """Ranks the dataflow runs over: every rank in some iteration space, and every partition parent."""
    in_space = {r for e in prog.einsums for r in e.space}
    parents = {p.parent for p in prog.partitions}
    return tuple(r for r in prog.ranks if r in in_space or r in parents)


def count(prog: Program, flows: Flows | None = None) -> dict[str, RankPasses]:
    """Passes, barriers and fusion groups for every rank of ``prog`` (in ``prog.ranks`` order)."""
    flow = flows or Flows(prog)
    out: dict[str, RankPasses] = {}
    labels = {e.label: e for e in prog.einsums}
    pos = {e.label: i for i, e in enumerate(prog.einsums)}
    for rank in analysed_ranks(prog):
        per_root = flow(rank, True)
        sweeps = flow(rank, False)
        traversing = [v for v in per_root.values() if v.traversing]
        passes = max([1, *(v.pass_ for v in traversing)]) if traversing else 1
        barriers: dict[tuple, Barrier] = {}
        for v in per_root.values():
            for r in v.raised:
                for rd in r.reads:
                    key = (r.origin, v.einsum.label, rd.tensor)
                    b = Barrier(
                        rank,
                        r.to_pass,
                        r.origin,
                        _at(labels[r.origin].span),
                        v.einsum.label,
                        _at(v.einsum.span),
                        rd.tensor,
                        _at(rd.span),
                    )
                    if key not in barriers or barriers[key].pass_ < b.pass_:
                        barriers[key] = b
        blist = sorted(barriers.values(), key=lambda b: (b.pass_, pos[b.einsum], b.tensor))
        sweep = {label: v.pass_ for label, v in sweeps.items()}
        n = max([passes, *sweep.values()])
        groups = tuple(tuple(e.label for e in prog.einsums if sweep[e.label] == k) for k in range(1, n + 1))
        repeats = tuple(dict.fromkeys(x for v in per_root.values() for x in v.repeats))
        out[rank] = RankPasses(rank, passes, True, tuple(blist), groups, repeats, sweep)
    for rank in prog.ranks:
        if rank in out:
            continue
        proxies = set()
        read = False
        for e in prog.einsums:
            for rd in flow.reads[e.label]:
                t = prog.tensor(rd.tensor)
                for r, ix in zip(t.ranks, rd.indices):
                    if r == rank:
                        read = True
                        proxies |= set(coords(ix)) & set(out)
        passes = max([out[c].passes for c in proxies], default=1 if read else 0)
        out[rank] = RankPasses(rank, passes, False)
    return {r: out[r] for r in prog.ranks}
