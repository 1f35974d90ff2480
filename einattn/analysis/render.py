"""Readable reports: rich tables in the manner of opt_einsum's ``contract_path`` printout, without colour."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table

from ..ir import size_name
from .ops import CLASSES
from .report import Report, format_bytes
from .symbols import SizeModel

SWEEP = (1024, 4096, 16384, 65536, 262144, 1048576)
"""Default sizes of the streamed rank in ``--compare``: 1K to 1M."""


def num(n) -> str:
    if n is None:
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:.4g}"
    n = int(n)
    return str(n) if abs(n) < 10**7 else f"{n:.4g}"


def _console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        markup=False,  # cells are plain text: `[b, h]` is not rich markup
        emoji=False,
    )
    return console, buf


def _text(buf: io.StringIO) -> str:
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _table(title: str, *columns: str, justify: dict | None = None) -> Table:
    t = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in columns:
        t.add_column(c, justify=(justify or {}).get(c, "left"), overflow="fold")
    return t


def _sizes_line(r: Report) -> str:
    known = ", ".join(f"{k}={num(v)}" for k, v in r.sizes.items()) or "none (all symbolic)"
    rel = "; ".join(f"{k} = {v}" for k, v in r.relations.items())
    return f"sizes: {known}" + (f"; {rel}" if rel else "")


def _per(r: Report) -> str:
    return f"({', '.join(r.footprint_per)})" if r.footprint_per else "the whole cascade"


def render_report(r: Report, width: int = 100) -> str:
    console, buf = _console(width)
    say = _say(console)
    say(r.name)
    say(f"  {r.classification}")
    say(f"  {_sizes_line(r)}")
    for note in r.notes:
        say(f"  note: {note}")
    if r.stabilizers:
        names = ", ".join(r.stabilizers)
        say(f"  stabilizers: {names} (no output depends on their value: their gradient is zero)")
    say("")

    passes = _table(
        "Passes per rank", "rank", "passes", "barriers (reduction -> re-read)", justify={"passes": "right"}
    )
    for rank, n in r.passes.items():
        bs = [b for b in r.barriers if b.rank == rank]
        text = "; ".join(f"{b.reduction} -> {b.einsum} re-reads {b.tensor} (pass {b.pass_})" for b in bs)
        mark = " *" if rank == r.rank else ""
        passes.add_row(rank + mark, str(n), text)
    console.print(passes)
    say("  * the streamed rank of this report (choose another with --rank)")
    say("")

    if r.barriers:
        say(f"Barriers (at line:column of {r.name})")
        bt = _table("", "rank", "pass", "must finish", "before", "re-reads")
        for b in r.barriers:
            bt.add_row(
                b.rank,
                str(b.pass_),
                f"{b.reduction} at {_loc(b.reduction_at)}",
                f"{b.einsum} at {_loc(b.einsum_at)}",
                f"{b.tensor} at {_loc(b.read_at)}",
            )
        console.print(bt)
        say("")

    if r.rank is not None and not r.groups.get(r.rank):
        say(f"Fusion groups over {r.rank}: none (no Einsum traverses {r.rank})")
        say("")
    elif r.rank is not None:
        gt = _table(f"Fusion groups over {r.rank}", "pass", "Einsums (fusable within a pass, not across)")
        for k, g in enumerate(r.groups.get(r.rank, ()), 1):
            gt.add_row(str(k), ", ".join(g))
        console.print(gt)
        say("")

    total = r.value(r.footprint)
    head = f"Live footprint per {_per(r)}: {r.footprint}"
    if total is not None:
        head += f" = {num(total)} elements, {format_bytes(total * r.elem_bytes)} at {r.elem_bytes} B"
    say(head)
    ft = _table("", "tensor", "elements", "value", "why", justify={"value": "right"})
    for t in r.footprint_terms:
        ft.add_row(t.tensor, str(t.expr), num(r.value(t.expr)), t.reason)
    if r.footprint_terms:
        console.print(ft)
    if any(t.kind == "barrier" for t in r.footprint_terms):
        say("  of the tensors live at pass boundaries, the largest set at one boundary counts, per rank")
    if r.buffer is not None:
        say(f"  {_buffer_line(r)}")
    say("")

    classes = [c for c in CLASSES if c in r.ops]
    if classes:
        ot = _table("Operations", "Einsum", *classes)
        for label, counts in r.einsum_ops.items():
            ot.add_row(label, *(str(counts[c]) if c in counts else "" for c in classes))
        ot.add_row("total", *(str(r.ops[c]) for c in classes), end_section=True)
        if any(r.value(r.ops[c]) is not None for c in classes):
            ot.add_row("value", *(num(r.value(r.ops[c])) for c in classes))
        console.print(ot)
    else:  # a table of no columns would wrap its title to the width of the `Einsum` column
        say("Operations: none (the Einsums only copy values and set constants)")
    flops, moved, ai = r.value(r.flops), r.value(r.compulsory_bytes), r.value(r.intensity)
    say(f"  flops (madd = 2): {r.flops}" + (f" = {num(flops)}" if flops is not None else ""))
    say(
        f"  compulsory traffic ({r.elem_bytes} B per element): {r.compulsory_bytes}"
        + (f" = {format_bytes(moved)}" if moved is not None else "")
    )
    say(
        f"  arithmetic intensity: {num(ai)} flops/byte"
        if ai is not None
        else "  arithmetic intensity: give every size (--size) for a number"
    )
    return _text(buf)


def _say(console: Console):
    def say(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False)

    return say


def _loc(at: str) -> str:
    """``file:line:col`` -> ``line:col`` (the file is named in the table's title)."""
    parts = at.rsplit(":", 2)
    return ":".join(parts[1:]) if len(parts) == 3 else at


def _buffer_line(r: Report) -> str:
    size = format_bytes(r.buffer)
    if r.fits is None:
        return (
            f"buffer {size}: give every size (--size) to decide whether it fits; spilling costs "
            f"{r.extra_traffic} bytes"
        )
    if r.fits:
        return f"buffer {size}: fits ({num(r.rows_in_buffer)} points of {_per(r)} at once); no extra traffic"
    extra = r.value(r.extra_traffic)
    return (
        f"buffer {size}: does not fit; spilling costs {r.extra_traffic} bytes"
        + (f" = {format_bytes(extra)}" if extra is not None else "")
        + " of extra traffic"
    )


def render_compare(a: Report, b: Report, width: int = 100, sweep: tuple[int, ...] | None = None) -> str:
    """Two cascades side by side: passes, footprint (symbolic, and at each size of the streamed rank), ops."""
    console, buf = _console(width)
    rank = a.rank or b.rank  # the streamed rank of A; B's when A is a cascade of scalars
    size = size_name(rank) if rank is not None else None
    t = _table(f"{a.name}  vs  {b.name}", "", "A", "B")
    t.add_row("file", a.name, b.name)
    t.add_row("class", a.classification, b.classification)
    for r in dict.fromkeys([*a.passes, *b.passes]):
        t.add_row(f"passes over {r}", num(a.passes.get(r)), num(b.passes.get(r)))
    t.add_row("footprint per point", f"{a.footprint}  per {_per(a)}", f"{b.footprint}  per {_per(b)}")
    given = {k: v for k, v in a.model.given.items() if k != size}
    points = sweep if sweep is not None else ((a.sizes[size],) if size in a.sizes else SWEEP)
    for n in points if size is not None else ():  # no rank in either cascade: nothing to sweep
        t.add_row(f"  at {size}={num(n)}", _at(a, given, size, n), _at(b, given, size, n))
    for c in CLASSES:
        if c in a.ops or c in b.ops:
            t.add_row(f"ops {c}", str(a.ops.get(c, 0)), str(b.ops.get(c, 0)))
    t.add_row("flops", str(a.flops), str(b.flops))
    fa, fb = a.value(a.flops), b.value(b.flops)
    if fa is not None or fb is not None:
        t.add_row("flops at sizes", num(fa), num(fb))
    t.add_row("flops/byte", num(a.value(a.intensity)), num(b.value(b.intensity)))
    console.print(t)
    return _text(buf)


def _at(r: Report, given: dict, size: str, n: int) -> str:
    """The footprint of ``r`` at streamed size ``n`` (partly symbolic if other sizes are unknown)."""
    names = {str(s) for s in r.model.sym.values()} - set(r.model.prog.param_values)
    if size not in names:
        return "-"
    model = SizeModel(r.model.prog, {**{k: v for k, v in given.items() if k in names}, size: n})
    value = model.number(r.footprint)
    return f"{num(value)} elements" if value is not None else str(model.partial(r.footprint))
