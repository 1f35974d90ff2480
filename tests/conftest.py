"""Shared test configuration: hypothesis profiles and golden files.

Golden files live in tests/golden/ and are never edited by hand: run
``EINATTN_UPDATE_GOLDEN=1 pytest`` to regenerate them, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


class Golden:
    """Compare text with tests/golden/<name>; rewrite it instead when EINATTN_UPDATE_GOLDEN=1."""

    def check(self, name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("EINATTN_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"golden file {path} is missing: run with EINATTN_UPDATE_GOLDEN=1 to create it")
        assert text == path.read_text(encoding="utf-8"), f"output differs from golden file {path}"


@pytest.fixture
def golden() -> Golden:
    return Golden()


def edit(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced by ``new``, where a run of spaces in ``old``
    matches any run (so that an edit of a spec survives its layout: `einattn fmt` aligns `=`). A test that
    edits a shipped spec fails here, loudly, if the text it edits is gone."""
    import re

    pattern = re.sub(r"(\\ )+", " +", re.escape(old))
    out, n = re.subn(pattern, lambda _: new, text)
    assert n == 1, f"{old!r} occurs {n} times"
    return out


def pytest_runtest_logreport(report):
    """With EINATTN_FAILURE_LOG=path, each failure is appended there as it happens (a time-boxed run, such
    as a lent GPU's, that is cut off before pytest's summary still reports what failed and why)."""
    path = os.environ.get("EINATTN_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"==== {report.nodeid} ({report.when})\n{report.longreprtext[-4000:]}\n")
