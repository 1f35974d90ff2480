"""A third reviewer's conformance cases (session 11), written from docs/language.md alone: 120 specs in the
format of ``../shared/conformance/cases.py``, every oracle hand-written NumPy. FuseMax's cascades in other
rank orders and with ragged tiles, filters (offsets, ``and``/``or``/``not``, ``%``, ``//`` with negative
operands, int position ids, tree masks, key-padding lengths), ``??`` and absent points, every reduction and
function, variants (ALiBi, softcap, sigmoid, talking heads, differential, cosine, agent, mixture of heads,
sinks, split-K with empty chunks, LSE), gathers (GQA, paged caches, nested), recurrences (linear attention,
retention, the delta rule, an SSM dual form, power iteration, two chained recurrences), sizes 0 and 1.
``tests/test_conformance_more.py`` runs them with the earlier reviewers'.

A case whose oracle holds NaN or infinities is checked position for position there (``nonfinite``).
"""

import numpy as np

from . import cases1, cases2, cases3, cases4, cases5

_EARLIER = {"gqa_head_past_groups", "all_functions"}  # names the earlier reviewers' sets use too

CASES = []
for _module in (cases1, cases2, cases3, cases4, cases5):
    for _case in _module.CASES:
        with np.errstate(all="ignore"):
            _want = _case["oracle"](**_case["inputs"])
        _outs = _want if isinstance(_want, tuple) else (_want,)
        _nonfinite = not all(np.isfinite(np.asarray(w, dtype=float)).all() for w in _outs)
        _name = _case["name"] + "_s11" * (_case["name"] in _EARLIER)
        CASES.append(dict(_case, name=_name, passes={}, nonfinite=_nonfinite))
