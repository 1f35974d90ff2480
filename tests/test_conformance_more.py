"""The reviewers' conformance cases (``tests/conformance_more.py``, ``tests/conformance_s8.py``,
``tests/conformance_s11/`` to ``tests/conformance_s21/``) on every backend, against their independent NumPy
oracles: the NumPy reference as written and rewritten (``passes="auto"``, small tiles), the torch backend
in float64 (default options, and small tiles with blocks of rows), the triton backend under the interpreter
in float32; and the passes the analysis reports.

Tolerances: 1e-9 relative for NumPy and torch (float64), 1e-4 for triton (float32). A case marked
``nonfinite`` must match NaN and infinities position for position. A case's ``limits`` names backends whose
documented limits it meets (docs/backends.md): there it is a strict expected failure, so a fix is noticed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conformance_more import CASES as FIRST
from conformance_s8 import CASES as SECOND
from conformance_s11 import CASES as THIRD
from conformance_s12 import CASES as FOURTH
from conformance_s13 import CASES as FIFTH
from conformance_s14 import CASES as SIXTH
from conformance_s15 import CASES as SEVENTH
from conformance_s16 import CASES as EIGHTH
from conformance_s17 import CASES as NINTH
from conformance_s18 import CASES as TENTH
from conformance_s19 import CASES as ELEVENTH
from conformance_s20 import CASES as TWELFTH
from conformance_s21 import CASES as THIRTEENTH
from triton_cases import DEVICE

import einattn

CASES = (
    FIRST
    + SECOND
    + THIRD
    + FOURTH
    + FIFTH
    + SIXTH
    + SEVENTH
    + EIGHTH
    + NINTH
    + TENTH
    + ELEVENTH
    + TWELFTH
    + THIRTEENTH
)
CONFIGS = {
    "numpy": [{}, {"passes": "auto", "tile": 3}],
    "torch": [{}, {"tile": 3, "row_block": 3, "library": False}],
    "triton": [{}],
}
TOL = {"numpy": 1e-9, "torch": 1e-9, "triton": 1e-4}


def _inputs(case: dict, backend: str) -> dict:
    if backend == "numpy":
        return case["inputs"]
    out = {}
    for name, v in case["inputs"].items():
        a = np.asarray(v)
        dtype = (
            torch.int64 if a.dtype.kind in "iu" else (torch.float64 if backend == "torch" else torch.float32)
        )
        out[name] = torch.tensor(a, dtype=dtype, device="cpu" if backend == "torch" else DEVICE)
    return out


def _check(got, want, tol: float, nonfinite: bool, what: str) -> None:
    gots = got if isinstance(got, tuple) else (got,)
    wants = want if isinstance(want, tuple) else (want,)
    assert len(gots) == len(wants), what
    for k, (g, w) in enumerate(zip(gots, wants)):
        g = g.detach().cpu().double().numpy() if isinstance(g, torch.Tensor) else np.asarray(g, dtype=float)
        w = np.asarray(w, dtype=float)
        assert g.shape == w.shape, f"{what}: output {k} has shape {g.shape}, the oracle {w.shape}"
        if nonfinite:
            assert np.array_equal(np.isnan(g), np.isnan(w)), f"{what}: NaN where the oracle has none"
            assert np.array_equal(g[np.isinf(w)], w[np.isinf(w)]), f"{what}: infinities differ"
            fin = np.isfinite(w)
            g, w = g[fin], w[fin]
        assert np.isfinite(g).all(), f"{what}: output {k} is not finite"
        if g.size:
            err = np.max(np.abs(g - w) / (1 + np.abs(w)))
            assert err <= tol, f"{what}: output {k} is {err:.2e} off"


@pytest.mark.parametrize("backend", ["numpy", "torch", "triton"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_case(case, backend, request):
    if backend in case.get("limits", {}):  # a documented limit of that backend: must still fail as documented
        request.applymarker(pytest.mark.xfail(reason=case["limits"][backend], strict=True))
    with np.errstate(all="ignore"):  # (oracles of IEEE cases divide by 0 on purpose)
        want = case["oracle"](**case["inputs"])
    for options in CONFIGS[backend]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", einattn.EinWarning)
            kern = einattn.compile(case["spec"], backend=backend, params=case["params"] or None, **options)
            got = kern(**_inputs(case, backend))
        _check(got, want, TOL[backend], case.get("nonfinite", False), f"{case['name']} {backend} {options}")


@pytest.mark.parametrize("case", [c for c in CASES if c["passes"]], ids=lambda c: c["name"])
def test_passes(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        report = einattn.analyze(einattn.parse(case["spec"]).with_params(case["params"] or {}))
    assert {r: report.passes.get(r) for r in case["passes"]} == case["passes"]
