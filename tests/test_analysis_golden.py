"""Golden files of the analysis report (text and JSON) for every example, and of a comparison.

Regenerate after an intended change with ``EINATTN_UPDATE_GOLDEN=1 pytest tests/test_analysis_golden.py``
and review the diff. The specs are parsed under their repository-relative name, so locations do not depend
on where the checkout lives.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import warnings

import pytest
from conftest import EXAMPLES, ROOT

import einattn
from einattn.analysis.render import render_compare
from einattn.ir import size_name

SIZES = {"B": 1, "H": 8, "G": 4, "P": 4096, "M": 4096, "E": 64, "F": 64}
MAIN = ("attention_3pass", "attention_deferred", "attention_2pass", "attention_1pass")
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.ein"))


def load(name: str) -> einattn.Program:
    text = (EXAMPLES / f"{name}.ein").read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text, f"examples/{name}.ein")


def sizes_for(prog: einattn.Program) -> dict[str, int]:
    names = {size_name(r) for r in prog.ranks}
    return {k: v for k, v in SIZES.items() if k in names}


def test_the_main_examples_exist():
    assert set(MAIN) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_text_report(golden, name):
    prog = load(name)
    report = einattn.analyze(prog, sizes=sizes_for(prog), buffer="16MiB")
    golden.check(f"analysis/{name}.txt", report.to_text())


@pytest.mark.parametrize("name", NAMES)
def test_json_report(golden, name):
    prog = load(name)
    report = einattn.analyze(prog, sizes=sizes_for(prog), buffer="16MiB")
    golden.check(f"analysis/{name}.json", json.dumps(report.to_json(), indent=2) + "\n")


@pytest.mark.parametrize("name", MAIN)
def test_symbolic_text_report(golden, name):
    golden.check(f"analysis/{name}.symbolic.txt", einattn.analyze(load(name)).to_text())


def test_compare_3_pass_with_1_pass(golden):
    a, b = (einattn.analyze(load(n), sizes={"F": 64}) for n in ("attention_3pass", "attention_1pass"))
    golden.check("analysis/compare_3pass_1pass.txt", render_compare(a, b))


def test_docs_table_is_the_generators_output():
    """docs/analysis.md pastes the output of benchmarks/analysis_table.py: regenerate it when this fails."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(ROOT / "benchmarks" / "analysis_table.py"), run_name="analysis_table")["main"](
            EXAMPLES
        )
    assert out.getvalue().strip() in (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
