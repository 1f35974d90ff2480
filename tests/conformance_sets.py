"""Collecting a reviewer's conformance set (``tests/conformance_s12/`` and later): every case of its modules,
each marked ``nonfinite`` when its oracle holds NaN or infinities (``tests/test_conformance_more.py`` then
checks those position for position)."""

import numpy as np


def collect(modules) -> list[dict]:
    cases = []
    for module in modules:
        for case in module.CASES:
            with np.errstate(all="ignore"):
                want = case["oracle"](**case["inputs"])
            outs = want if isinstance(want, tuple) else (want,)
            nonfinite = not all(np.isfinite(np.asarray(w, dtype=float)).all() for w in outs)
            cases.append(dict(case, nonfinite=nonfinite))
    assert len({c["name"] for c in cases}) == len(cases), "duplicate case names"
    return cases
