"""Loop fusion: move per-step Einsums into the recurrence loop of their iterative rank.

:func:`einattn.graph.schedule` runs a recurrence over an iterative rank ``r`` as a
:class:`~einattn.graph.Loop` that holds only the statements of the cycle
(``RM[m1 + 1, p] = max(RM[m1, p], LM[m1, p])``); everything else, ``BQK[m1, m0, p]`` and ``LM[m1, p]``
included, is a :class:`~einattn.graph.Dense` step over all of ``r`` at once.
That is right for a reference, but it materialises the whole score matrix: the memory of a 1-pass cascade
becomes that of a 3-pass one. :func:`fused_schedule` rewrites the schedule so that such statements are
computed one step of ``r`` at a time, inside the loop; a backend then needs only the slice of the step alive.

The rule (a pure function of the program, so it is cached like :func:`~einattn.graph.schedule`):

* All loops over the same rank merge into one, with the Dense statements that can join it.
* A Dense statement ``X`` joins the loop over ``r`` when

  1. ``r`` is a plain index of its left-hand side (not ``0`` or ``r + 1``) and ``X`` is not an output;
  2. every statement that reads ``X`` is in the loop and reads it at index ``r`` in the dimension of ``r``
     (``LM[m1, p] = BQK[m1, m0, p] :: max(m0)``), so that each step needs only its own slice of ``X``;
  3. its own inputs are available per step: a tensor of the loop read at index ``r`` (a state also at
     ``r + 1``, the state after the step), or a tensor computed before the loop, which must not depend on
     anything in the loop.

  Removing a statement that fails can make another fail, so the rule is applied until nothing changes.
* The loop's own statements (those of the cycle) stay in it whatever they read; when one of them reads a
  tensor of the loop at another index (a state at its final index ``RM[M1, p]``, say), loops over the same
  rank cannot merge and the schedule is left as :func:`~einattn.graph.schedule` made it.
* Statements in the fused loop are ordered by their same-step dependencies, ties broken by source order; the
  other steps keep their dependency order around the loop.

Statements of the loop may still be read after it (an output ``O[t, f] = RN[t + 1, f] / RD[t + 1]`` reads
every state): a backend then keeps the history of those tensors, which the plain schedule keeps anyway.

>>> import einattn
>>> from einattn.graph import Loop
>>> prog = einattn.load("examples/attention_1pass.ein")
>>> [[e.label for e in s.body] for s in fused_schedule(prog) if isinstance(s, Loop)]
[['BK', 'BV', 'BQK', 'LM', 'RM.step', 'SLN', 'SLD', 'SLNV', 'PRM', 'SPD', 'RD.step', 'SPNV', 'RNV.step']]
"""

from __future__ import annotations

import functools

import networkx as nx

from . import syntax as S
from .graph import Dense, Loop, Step, build_graph, schedule
from .ir import Einsum, Program


@functools.lru_cache(maxsize=256)
def fused_schedule(prog: Program) -> tuple[Step, ...]:
    """:func:`einattn.graph.schedule` with per-step Einsums moved into the loops of their iterative rank."""
    steps = schedule(prog)
    for r in prog.iterative_ranks:
        steps = _fuse_rank(prog, steps, r)
    return steps


def loop_states(prog: Program, loop: Loop) -> tuple[str, ...]:
    """The iterative tensors that ``loop`` updates (their ``step`` statement is in its body)."""
    return tuple(e.tensor for e in loop.body if e.kind == "step")


def reads_at_step(prog: Program, rd: S.Read, rank: str, states: frozenset[str]) -> bool:
    """Whether ``rd`` reads only the current step's slice of a tensor of the loop over ``rank``.

    A state is read at ``rank`` (before the step) or ``rank + 1`` (after it); any other tensor of the loop at
    ``rank`` in the dimension of ``rank``.
    """
    t = prog.tensor(rd.tensor)
    if rd.tensor in states:
        ix = rd.indices[t.iterative]
        return ix == S.Coord(rank) or ix == S.Binary("+", S.Coord(rank), S.Const(1))
    if rank not in t.ranks:
        return False
    return rd.indices[t.ranks.index(rank)] == S.Coord(rank)


def _fuse_rank(prog: Program, steps: tuple[Step, ...], r: str) -> tuple[Step, ...]:
    loops = [s for s in steps if isinstance(s, Loop) and s.rank == r]
    if not loops:
        return steps
    core = {e.label for s in loops for e in s.body}
    states = frozenset(e.tensor for s in loops for e in s.body if e.kind == "step")
    candidates = {
        s.einsum.label
        for s in steps
        if isinstance(s, Dense)
        and s.einsum.kind == "plain"
        and r in s.einsum.lhs_ranks
        and s.einsum.tensor not in prog.outputs
    }
    g = build_graph(prog)
    einsum = {e.label: e for e in prog.einsums}
    writer = {e.tensor: e.label for e in prog.einsums if e.kind != "init"}
    readers: dict[str, list[tuple[str, S.Read]]] = {}
    for e in prog.einsums:
        for rd in e.reads():
            readers.setdefault(rd.tensor, []).append((e.label, rd))

    members = core | candidates
    while True:
        drop: set[str] = set()
        for label in members:
            e = einsum[label]
            for rd in e.reads():
                w = writer.get(rd.tensor)
                if w in members:
                    if reads_at_step(prog, rd, r, states):
                        continue
                    if w in candidates:
                        drop.add(w)
                    elif label in candidates:
                        drop.add(label)
                    else:
                        return steps  # two statements of the cycles read each other across steps
                elif w is not None and nx.ancestors(g, w) & members:
                    if label not in candidates:
                        return steps  # a cycle member needs what the whole loop computes first
                    drop.add(label)
        for label in members & candidates:
            t = einsum[label].tensor
            for reader, rd in readers.get(t, ()):
                if reader not in members or not reads_at_step(prog, rd, r, states):
                    drop.add(label)
        if not drop:
            break
        members -= drop

    order = {e.label: k for k, e in enumerate(prog.einsums)}
    inner = nx.DiGraph([(u, v) for u, v, c in g.subgraph(members).edges(data="carried") if not c])
    inner.add_nodes_from(members)
    body = tuple(einsum[n] for n in nx.lexicographical_topological_sort(inner, key=order.get))
    fused = Loop(r, body)

    # The remaining steps around the fused loop, in dependency order (ties: source order).
    outside = [s for s in steps if not (isinstance(s, Loop) and s.rank == r)]
    outside = [s for s in outside if not (isinstance(s, Dense) and s.einsum.label in members)]
    nodes: dict[int, Step] = dict(enumerate([*outside, fused]))
    owner = {e.label: k for k, s in nodes.items() for e in _einsums(s)}
    dag = nx.DiGraph()
    dag.add_nodes_from(nodes)
    for u, v in g.edges:
        if owner[u] != owner[v]:
            dag.add_edge(owner[u], owner[v])
    if not nx.is_directed_acyclic_graph(dag):
        return steps
    key = {k: min(order[e.label] for e in _einsums(s)) for k, s in nodes.items()}
    return tuple(nodes[k] for k in nx.lexicographical_topological_sort(dag, key=key.get))


def _einsums(step: Step) -> tuple[Einsum, ...]:
    return (step.einsum,) if isinstance(step, Dense) else step.body
