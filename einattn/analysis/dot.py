"""The dataflow graph as Graphviz DOT text, Einsums coloured by the pass over the report's rank.

Inputs are dashed ellipses; each Einsum is a box labelled with its left-hand side and pass; an edge per tensor
dependency (dotted: a recurrence's carried edge, the state before the step); barriers are red: the reduction
that must finish, to the Einsum that then re-reads a tensor (bold when it is also a data edge).
"""

from __future__ import annotations

from ..graph import build_graph
from .report import Report

PALETTE = ("#cfe2f3", "#fde9c9", "#f4cccc", "#d9d2e9", "#d9ead3", "#fff2cc")


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _barrier_label(bs) -> str:
    return f"barrier: pass {bs[0].pass_}, re-reads {', '.join(b.tensor for b in bs)}"


def to_dot(report: Report) -> str:
    prog = report.program
    g = build_graph(prog)
    rank = report.rank
    sweep = {label: k for k, group in enumerate(report.groups.get(rank, ()), 1) for label in group}
    title = f"{report.name}: {report.classification}"
    lines = [
        f"digraph {_q(prog.name)} {{",
        "  rankdir=TB;",
        f"  label={_q(title)}; labelloc=t; fontname=Helvetica; fontsize=11;",
        "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];",
    ]
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = f"{name}[{', '.join(t.ranks)}]" if t.ranks else name
        lines.append(f"  {_q('input ' + name)} [shape=ellipse, style=dashed, label={_q(shape)}];")
    for e in prog.einsums:
        k = sweep.get(e.label, 1)
        lhs = f"{e.tensor}[{', '.join(str(ix) for ix in e.index)}]" if e.index else e.tensor
        red = f"\nreduces {', '.join(f'{r} ({op})' for r, op in e.reduce)}" if e.reduce else ""
        label = f"{lhs}{red}" + (f"\npass {k} over {rank}" if rank is not None else "")  # (None: no rank)
        color = PALETTE[(k - 1) % len(PALETTE)]
        lines.append(
            f'  {_q(e.label)} [shape=box, style="rounded,filled", fillcolor={_q(color)}, label={_q(label)}];'
        )
    barriers: dict[tuple[str, str], list] = {}
    for b in report.barriers:
        if b.rank == rank:
            barriers.setdefault((b.reduction, b.einsum), []).append(b)
    for e in prog.einsums:
        for name in dict.fromkeys(rd.tensor for rd in e.reads()):
            if prog.tensor(name).is_input:
                lines.append(f"  {_q('input ' + name)} -> {_q(e.label)};")
    for u, v, data in g.edges(data=True):
        attrs = [f"label={_q(data['tensor'])}"]
        if data["carried"]:
            attrs.append("style=dotted, constraint=false")
        bs = barriers.pop((u, v), None)
        if bs:
            attrs.append(f"color=red, penwidth=2, xlabel={_q(_barrier_label(bs))}")
        lines.append(f"  {_q(u)} -> {_q(v)} [{', '.join(attrs)}];")
    for (u, v), bs in barriers.items():
        label = _barrier_label(bs)
        lines.append(f"  {_q(u)} -> {_q(v)} [color=red, style=dashed, constraint=false, label={_q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
