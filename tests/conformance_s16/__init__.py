"""An eighth reviewer's conformance cases (session 16), in the format of ``../shared/conformance/cases.py``,
every oracle hand-written NumPy: 1-pass sums that pair keys with queries and have no max (sigmoid, ReLU,
squared ReLU, tanh, causal linear, retention-like decays, Lightning intra-block), which ``passes="auto"``
now streams over tiles (docs/rewrite.md, rule 3), with filters that empty whole tiles for some rows, ``??``
defaults on the sums, several sums, GQA, ALiBi-like biases and per-batch lengths; KV caches holding NaN and
inf past their length under softmax; tensor and rank names that extend others or mimic generated code; and
the analysis's pass counts of chains, constant-index reads of sums and pointwise values read at ``I - 1``.
``tests/test_conformance_more.py`` runs them with the earlier sets; cases named ``s16_bug_*`` exposed bugs.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5

CASES = collect((cases1, cases2, cases3, cases4, cases5))
