"""An eleventh reviewer's conformance cases (session 19), in the format of ``../shared/conformance/cases.py``,
every oracle hand-written NumPy from the math: the language reference read construct by construct (items in
any order, continuations, lower-case tensor and param names, a param that is a value and a size at once,
partitions whose outer part is the param, aliases checked against an input, ``??`` chains, ``not`` against
``and``/``or``, zero and negative divisors, gathers inside filters and index functions, outputs that other
statements read), recurrences (an iterative index in the middle, states over a partition part returned in
full, states read reversed), the FuseMax cascades in the paper's rank order with params overridden, and
attention variants (agent attention, a dense mixture of heads, heads split by a partition for GQA, decode
with a fixed number of splits). ``tests/test_conformance_more.py`` runs them with the earlier sets;
``tests/test_review_s19_analysis.py`` runs the negative cases of ``errors.py`` and the analysis checks.
Cases named ``s19_bug_*`` exposed bugs.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5

CASES = collect((cases1, cases2, cases3, cases4, cases5))
