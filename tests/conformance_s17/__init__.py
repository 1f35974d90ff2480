"""A ninth reviewer's conformance cases (session 17), in the format of ``../shared/conformance/cases.py``,
every oracle hand-written NumPy from the math: softmax attention in unusual shapes (heads cut from a flat
dimension by a partition, slot attention, distance scores, gathered key lists, negative temperatures, joint
softmaxes), cascades that are not attention (norms, gated MLPs, losses, routers, pooling, convolutions),
every construct of docs/language.md in unusual combinations, recurrences and partitions, the analysis's pass
counts, and numerically hard data. ``tests/test_conformance_more.py`` runs them with the earlier sets;
cases named ``s17_bug_*`` exposed bugs.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6, cases7

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6, cases7))
