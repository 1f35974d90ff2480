"""Reproduce FuseMax's Table I from einattn's analysis of the examples, as Markdown for docs/analysis.md.

usage: python benchmarks/analysis_table.py [EXAMPLES_DIR]

For every example: passes over its streamed rank, the Table I class, the minimum live footprint per point of
the parallel ranks (symbolic, and at M = 4096, E = F = 64), and whether it grows with the sequence. Then the
paper's table with the examples filed under each class.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import einattn
from einattn.analysis.pipeline import TABLE_I
from einattn.ir import size_name

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"M": 4096, "E": 64, "F": 64}


def main(folder: Path) -> None:
    rows, classes = [], {3: [], 2: [], 1: []}
    for path in sorted(folder.glob("*.ein")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", einattn.EinWarning)
            prog = einattn.parse(path.read_text(encoding="utf-8"), f"examples/{path.name}")
        names = {size_name(r) for r in prog.ranks}
        r = einattn.analyze(prog, sizes={k: v for k, v in SIZES.items() if k in names})
        n = r.passes[r.rank]
        per = ", ".join(r.footprint_per) or "-"
        grows = "grows" if r.model.depends_on(r.footprint, r.rank) else "bounded"
        parts = ", ".join(f"{k}: {v}" for k, v in r.passes.items() if k != r.rank and v > 1)
        value = r.value(r.footprint)
        rows.append(
            f"| `{path.name}` | {n} over {r.rank}{f' ({parts})' if parts else ''} "
            f"| `{r.footprint}` per ({per}) | {'-' if value is None else value} | {grows} |"
        )
        classes.setdefault(n, []).append(f"`{path.stem}`")
    print("| example | passes | live footprint | at M=4096, E=F=64 | with M |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    cols = sorted(classes, reverse=True)
    print("| " + " | ".join(f"{n}-pass" for n in cols) + " |")
    print("|" + "---|" * len(cols))
    print("| " + " | ".join(TABLE_I.get(n, "-") for n in cols) + " |")
    print("| " + " | ".join(", ".join(classes[n]) or "-" for n in cols) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples")
