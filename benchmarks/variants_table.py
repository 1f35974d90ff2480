"""Generate docs/variants.md: the variants einattn expresses, their passes, and the backends that run them.

    python benchmarks/variants_table.py                 # writes docs/variants.md
    python benchmarks/variants_table.py --out -         # prints it instead
    python benchmarks/variants_table.py --backends numpy,torch

Nothing in the table is typed by hand. For every spec in examples/variants/ the script reads its header
comment (variant, paper, formula, notes), analyses it with ``einattn.analyze`` as written and after the
rewrite (``einattn.compile(..., passes="auto")``, whose kernel's ``program`` is the rewritten cascade), and
runs the comparisons of tests/test_variants.py on each backend (NumPy float64 with every extra run of the
case, torch float64, Triton float32 under TRITON_INTERPRET=1 at tiny sizes). The variants that have no spec
come from ``NOT_EXPRESSIBLE`` in the same test module. Where the analysis, the rewrite or a backend does not
exist yet, the cell says so; rerun the script once it does.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton column is checked under the interpreter

import test_variants as TV  # noqa: E402

import einattn  # noqa: E402
from einattn.kernel import BACKENDS  # noqa: E402

ALL_BACKENDS = ("numpy", "torch", "triton")


def analyzer():
    """``einattn.analyze`` (or the analysis package before it is exported), or None."""
    fn = getattr(einattn, "analyze", None)
    if fn is None:
        try:
            from einattn.analysis import analyze as fn
        except ImportError:
            return None
    return fn


@functools.cache
def rewrite_backend() -> str | None:
    """A backend whose ``compile`` takes ``passes=`` (issue 5's API), or None.

    ``compile`` hands unknown options to the backend, which may ignore them or reject them as unknown, so the
    probe asks for a meaningless ``passes`` value: a backend that implements the option rejects the value.
    """
    probe = "input X[i]\noutput Y\nY = X[i]\n"
    for backend in ("torch", "triton", "numpy"):
        if not backend_available(backend):
            continue
        try:
            einattn.compile(probe, backend=backend, passes="no-such-value")
        except einattn.EinError as e:
            if "no-such-value" in str(e):
                return backend
        except Exception:
            continue
    return None


def rewritten_program(path: Path, params: dict):
    """(the cascade the rewrite derives, its refusals), or None when there is no rewrite yet.

    The rewrite is ``einattn.rewrite.auto_rewrite`` (what ``passes="auto"`` compiles), else the program of a
    kernel compiled with ``passes="auto"``.
    """
    prog = einattn.load(path).with_params(params or None)
    try:
        from einattn.rewrite import auto_rewrite
    except ImportError:
        backend = rewrite_backend()
        if backend is None:
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kernel = einattn.compile(prog, backend=backend, passes="auto")
        return kernel.program, [str(w.message) for w in caught]
    new, refusals = auto_rewrite(prog)
    return new, [str(w) for w in refusals]


def short_error(e: BaseException) -> str:
    last = (str(e).strip().splitlines() or [""])[0].replace(f"{ROOT}/", "")
    if isinstance(e, AssertionError) and " on " in last:
        last = last.split(": ", 1)[-1]  # the test's message names the spec and backend already
    return f"{type(e).__name__}: {last}"[:120]


def passes_cell(report, ranks) -> str:
    return ", ".join(f"{r}: {report.passes[r]}" for r in ranks if r in report.passes) or "-"


def analyse(name: str) -> tuple[str, str, str, str]:
    """(passes as written, passes after rewrite, footprint per output row, op counts as written)."""
    fn = analyzer()
    if fn is None:
        na = "n/a (analysis not available)"
        return na, na, na, na
    case = TV.CASES[name]
    path = TV.VARIANTS / name
    try:
        report = fn(path)
        written = passes_cell(report, case.seq)
        per = ", ".join(getattr(report, "footprint_per", ()) or ())
        footprint = f"{report.footprint}" + (f" per ({per})" if per else "")
        ops = ", ".join(f"{k}: {v}" for k, v in (getattr(report, "ops", None) or {}).items()) or "n/a"
    except Exception as e:  # a failure is a finding: it goes in the table
        return f"analysis failed: {short_error(e)}", "n/a", "n/a", "n/a"
    try:
        result = rewritten_program(path, case.params)
        if result is None:
            after = "n/a (rewrite not available)"
        else:
            prog, refusals = result
            rewritten = fn(prog)
            after = passes_cell(rewritten, case.seq)
            if str(rewritten.footprint) != str(report.footprint):
                footprint += f"; after rewrite: {rewritten.footprint}"
            relevant = [r for r in refusals if any(f"stream over {s}:" in r for s in case.seq)]
            if relevant:  # why the rewrite left a sequence rank multi-pass
                first = relevant[0].splitlines()[0].replace(f"{ROOT}/", "")
                after += f" (refused: {first.split('warning: ', 1)[-1][:150]})"
    except Exception as e:
        after = f"rewrite failed: {short_error(e)}"
    return written, after, footprint, ops


def backend_available(backend: str) -> bool:
    """Registered in ``einattn.kernel.BACKENDS`` and its module importable."""
    return backend in BACKENDS and importlib.util.find_spec(BACKENDS[backend].split(":")[0]) is not None


def run_backend(name: str, backend: str) -> tuple[bool | None, str]:
    """(passed, detail): None when the backend is not available."""
    if not backend_available(backend):
        return None, "not available"
    case = TV.CASES[name]
    try:
        if backend == "numpy":
            worst = TV.check(name)
            for k, (sizes, params) in enumerate(case.runs):
                worst = max(worst, TV.check(name, sizes=sizes, params=params, seed=k + 1))
        elif backend == "torch":
            worst = TV.check(name, "torch")
        else:
            worst = TV.check(name, "triton", tiny=True)
        return True, f"{worst:.0e}"
    except Exception as e:
        if os.environ.get("VARIANTS_TRACEBACK"):
            traceback.print_exc()
        return False, short_error(e)


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def short_paper(paper: str) -> str:
    """The first cited title and its arXiv id (citations are separated by `;`)."""
    first = paper.split(";")[0]
    title = re.search(r'"([^"]+)"', first)
    arxiv = re.search(r"arXiv (\d{4}\.\d{4,5})", first)
    out = title.group(1) if title else first.split(",")[0]
    return out + (f" (arXiv {arxiv.group(1)})" if arxiv else "")


def build(backends) -> str:
    specs = sorted(p.name for p in TV.VARIANTS.glob("*.ein"))
    available = [b for b in backends if backend_available(b)]
    missing = [b for b in backends if b not in available]
    rows, failures = [], []
    for name in specs:
        head = TV.header(TV.VARIANTS / name)
        if name not in TV.CASES:
            rows.append((name, head, ("no test case",) * 4, "no test case: add it to tests/test_variants.py"))
            continue
        analysis = analyse(name)
        results = {b: run_backend(name, b) for b in backends}
        passed = [b for b, (ok, _) in results.items() if ok]
        for b, (ok, detail) in results.items():
            if ok is False:
                failures.append(f"- `{name}` on {b}: {detail}")
        rows.append((name, head, analysis, ", ".join(passed) or "none"))

    out = [
        "# The variants library",
        "",
        "Generated by `python benchmarks/variants_table.py` from the specs in `examples/variants/` and",
        "the comparisons of `tests/test_variants.py`; do not edit by hand. Every spec is written in the",
        "natural form of its paper (the 3-pass softmax where the paper writes a softmax) and checked against",
        "an independent NumPy implementation of the paper's formula (`tests/references/variants.py`).",
        "",
        "- **passes**: passes over the sequence rank(s) of the variant, from `einattn.analyze`, as written",
        '  and after the rewrite (`passes="auto"`).',
        "- **footprint**: the minimum live elements per point of the output's parallel ranks (per query",
        "  row), as written and, where it changes, after the rewrite.",
        "- **backends**: those whose output equals the reference: NumPy in float64 within 1e-12 of the",
        "  largest output (all the case's sizes and params), torch in float64 within 1e-10, Triton in",
        "  float32 under `TRITON_INTERPRET=1` within 1e-4 at tiny sizes.",
        f"  Checked here: {', '.join(available) or 'none'}"
        + (f"; not available yet: {', '.join(missing)}." if missing else "."),
        "",
        "| # | variant | paper | spec | passes as written | after rewrite | footprint | backends | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table = []  # (variant number, cells)
    for name, head, (written, after, footprint, _), passed in rows:
        num, _, title = head.get("variant", name).partition(". ")
        link = f"[{name}](../examples/variants/{name})"
        paper = short_paper(head.get("paper", ""))
        table.append(
            (num, (num, title, paper, link, written, after, footprint, passed, head.get("notes", "")))
        )
    for variant, (paper, reason) in TV.NOT_EXPRESSIBLE.items():
        num, _, title = variant.partition(". ")
        cells = (num, title, short_paper(paper), "none", "-", "-", "-", "-", f"not expressible: {reason}")
        table.append((num, cells))
    for _, cells in sorted(table, key=lambda row: int(row[0]) if row[0].isdigit() else 99):
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    out += ["", "## Failures", ""] + (failures or ["None."])
    out += ["", "## Formulas, citations and operation counts (as written)", ""]
    for name, head, analysis, _ in rows:
        out += [
            f"- `{name}`: {head.get('formula', '')}",
            f"  ({head.get('paper', '')})",
            f"  Operations: {analysis[3]}.",
        ]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "variants.md"), help="output file, or - for stdout")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma-separated backends to check")
    args = ap.parse_args(argv)
    text = build([b for b in args.backends.split(",") if b])
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
