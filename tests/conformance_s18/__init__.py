"""A tenth reviewer's conformance cases (session 18), in the format of ``../shared/conformance/cases.py``,
every oracle hand-written NumPy from the math: attention variants as researchers write them (softcapping,
ALiBi and windows together on a decode step with a cache offset, sinks beside document masks, T5-style
buckets from integer index math, split-K with a combine step), every construct of docs/language.md in
unusual combinations (names that start like keywords, number spellings, zero-step recurrences, empty
ranks), and numerically hard data. ``tests/test_conformance_more.py`` runs them with the earlier sets;
cases named ``s18_bug_*`` exposed bugs.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8))
