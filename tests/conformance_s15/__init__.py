"""A seventh reviewer's conformance cases (session 15), in the format of ``../shared/conformance/cases.py``,
every oracle hand-written NumPy: attention variants from the literature (differential, stick-breaking,
forgetting transformer, Swin v2, talking heads, sparsemax, varlen cu_seqlens, NSA, Infini-attention, MTA,
CoPE, FIRE, MLA), hand-written 1-pass and 2-pass cascades over ragged sizes 1, 2, 3 and 17, linear
recurrences (gated DeltaNet, RWKV-6, Mamba-2 scan and dual form, HGRN), numerically hard inputs and params
overridden at call. ``tests/test_conformance_more.py`` runs them with the earlier sets; cases named
``s15_bug_*`` exposed bugs.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6))
