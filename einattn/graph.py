"""The dataflow graph of a program, its validation, and its evaluation schedule.

One node per Einsum, keyed by :attr:`Einsum.label` (``QK``, ``RM.init``, ``RM.step``), with attributes
``einsum``, ``tensor``, ``kind``, ``space``, ``reduced`` and ``filter``. One edge per tensor dependency
from the statement that writes a tensor to one that reads it, with ``tensor`` and ``carried``: a carried
edge reads the state *before* the current step of an iterative rank (``RM[m1, p]`` read by the update of
``RM[m1 + 1, p]``), so it does not order statements within one step.

A cycle is legal only when every cycle runs through a carried edge: that is a recurrence over one iterative
rank, evaluated as a loop (:class:`Loop`). Everything else runs once over its whole iteration space
(:class:`Dense`), in dependency order.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from . import syntax as S
from .errors import EinError
from .ir import Einsum, Program, program_cache


@dataclass(frozen=True)
class Dense:
    """Evaluate one Einsum over its whole iteration space."""

    einsum: Einsum


@dataclass(frozen=True)
class Loop:
    """Evaluate ``body`` once per step of iterative rank ``rank`` (0 .. R-1), in this order within a step."""

    rank: str
    body: tuple[Einsum, ...]


Step = Dense | Loop


def _is_carried(prog: Program, read: S.Read) -> bool:
    t = prog.tensor(read.tensor)
    if t.iterative is None:
        return False
    ix = read.indices[t.iterative]
    return isinstance(ix, S.Coord) and ix.rank == t.iter_rank


@program_cache()
def build_graph(prog: Program) -> nx.DiGraph:
    """The dataflow graph; raises :class:`EinError` for a cycle that is not a recurrence."""
    g = nx.DiGraph(name=prog.name)
    writers: dict[str, list[Einsum]] = {}
    for e in prog.einsums:
        g.add_node(
            e.label, einsum=e, tensor=e.tensor, kind=e.kind, space=e.space, reduced=e.reduced, filter=e.filter
        )
        writers.setdefault(e.tensor, []).append(e)
    for e in prog.einsums:
        for rd in e.reads():
            for w in writers.get(rd.tensor, ()):
                carried = w.kind == "step" and _is_carried(prog, rd)
                if g.has_edge(w.label, e.label):
                    g.edges[w.label, e.label]["carried"] &= carried
                else:
                    g.add_edge(w.label, e.label, tensor=rd.tensor, carried=carried)
    _validate_cycles(prog, g)
    return g


def _validate_cycles(prog: Program, g: nx.DiGraph) -> None:
    order = {e.label: k for k, e in enumerate(prog.einsums)}
    sccs = sorted(nx.strongly_connected_components(g), key=lambda c: min(order[n] for n in c))
    for scc in sccs:
        if len(scc) == 1 and not any(g.has_edge(n, n) for n in scc):
            continue
        members = sorted(scc, key=order.get)  # deterministic: report the first problem in source order
        steps = {g.nodes[n]["einsum"] for n in members if g.nodes[n]["kind"] == "step"}
        ranks = sorted({prog.tensor(e.tensor).iter_rank for e in steps})
        if not ranks:
            _cycle_error(prog, g, members)
        if len(ranks) > 1:
            e = g.nodes[members[0]]["einsum"]
            shown = ", ".join(f"`{r}`" for r in ranks)
            raise EinError(f"a recurrence may run over only one iterative rank, not {shown}", e.span)
        (r,) = ranks
        for n in members:
            e = g.nodes[n]["einsum"]
            if r not in e.lhs_ranks:
                raise EinError(
                    f"`{e.tensor}` is computed inside the recurrence over `{r}` but is not indexed by `{r}`",
                    e.span,
                    hint=f"index it by `{r}` so that each step has its own value",
                )
        for n in members:
            e = g.nodes[n]["einsum"]
            for rd in e.reads():
                if _writer_label(prog, rd.tensor, scc) is None:
                    continue
                t = prog.tensor(rd.tensor)
                pos = t.ranks.index(r) if t.iterative is None else t.iterative
                ix = rd.indices[pos]
                before = isinstance(ix, S.Coord) and ix.rank == r
                after = t.iterative is not None and ix == S.Binary("+", S.Coord(r), S.Const(1))
                if after and e.kind == "step" and e.tensor == rd.tensor:
                    prev = f"{rd.tensor}[{r}, ...]"
                    raise EinError(
                        f"the update of `{rd.tensor}` reads the state it is computing",
                        rd.span,
                        hint=f"read the previous state `{prev}`; this update defines `{r} + 1`",
                    )
                if not (before or after):
                    allowed = f"`{r}` or `{r} + 1`" if t.iterative is not None else f"`{r}`"
                    raise EinError(
                        f"inside the recurrence over `{r}`, `{rd.tensor}` must be read at {allowed}",
                        rd.span,
                        hint="each step may read only the previous state and this step's values",
                    )
        _cycle_error(prog, g, members, only_same_step=True)


def _cycle_error(prog: Program, g: nx.DiGraph, members: list[str], only_same_step: bool = False) -> None:
    """Raise for a dependency cycle (among same-step edges only, for a recurrence), located at a read."""
    sub = g.subgraph(members)
    same_step = nx.DiGraph([(u, v) for u, v, c in sub.edges(data="carried") if not (c and only_same_step)])
    same_step.add_nodes_from(members)
    try:
        cycle = nx.find_cycle(same_step, source=members)
    except nx.NetworkXNoCycle:
        return
    u, v = cycle[-1][:2]  # the edge back into the first statement of the cycle: point at its read
    tensor = g.edges[u, v]["tensor"]
    e = g.nodes[v]["einsum"]
    span = next((rd.span for rd in e.reads() if rd.tensor == tensor), e.span)
    chain = [g.nodes[v]["tensor"]] + [g.nodes[a]["tensor"] for a, *_ in reversed(cycle)]
    if len(cycle) == 1:
        what = f"`{e.tensor}` is defined in terms of itself"
    else:
        first, *rest = (f"`{t}`" for t in chain)
        what = f"cycle: {first} reads " + ", which reads ".join(rest)
    raise EinError(
        f"{what}, and not through an iterative rank",
        span,
        hint="a recurrence initialises `T[0, ...]` and updates `T[r + 1, ...]` from `T[r, ...]`",
    )


def _writer_label(prog: Program, tensor: str, scc) -> str | None:
    for e in prog.definitions(tensor):
        if e.label in scc and e.kind != "init":
            return e.label
    return None


@program_cache()
def schedule(prog: Program) -> tuple[Step, ...]:
    """Dense steps and recurrence loops in an order that respects every dependency.

    Ties are broken by source order, so the schedule is deterministic and reads like the spec.
    """
    g = build_graph(prog)
    order = {e.label: i for i, e in enumerate(prog.einsums)}
    cond = nx.condensation(g)
    steps: list[Step] = []
    for c in nx.lexicographical_topological_sort(
        cond, key=lambda c: min(order[n] for n in cond.nodes[c]["members"])
    ):
        members = cond.nodes[c]["members"]
        if len(members) == 1 and not any(g.has_edge(n, n) for n in members):
            (n,) = members
            steps.append(Dense(g.nodes[n]["einsum"]))
            continue
        sub = nx.DiGraph([(u, v) for u, v, c2 in g.subgraph(members).edges(data="carried") if not c2])
        sub.add_nodes_from(members)
        body = tuple(g.nodes[n]["einsum"] for n in nx.lexicographical_topological_sort(sub, key=order.get))
        rank = next(
            prog.tensor(g.edges[u, v]["tensor"]).iter_rank
            for u, v in g.subgraph(members).edges
            if g.edges[u, v]["carried"]
        )
        steps.append(Loop(rank, body))
    return tuple(steps)
