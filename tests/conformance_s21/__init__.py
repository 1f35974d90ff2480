"""A thirteenth reviewer's conformance cases (session 21), in the format of ``tests/conformance_s20/``, every
oracle hand-written NumPy from the math: FuseMax's cascades in other rank orders, names and spellings (Cascade
4 spelled out, deferred with a negated-min stabiliser, through its log-sum-exp; the 2-pass cascade with the
tile count as the param; Cascade 5 with the iterative index last, condensed and out of order, with GQA, with
the query rank tiled too; the teaching cascades; split-K decode with named parts), attention variants (MQA
decode, GQA with projections, relative bias tables, sigmoid, online softmax one key per step, agents, a
mixture of heads, concatenated key sources, entropy, ALiBi over int positions, per-head windows, thresholded
ReLU-max, blends, mean stabiliser, softmax twice, ReLU^2, score_mod of every coordinate, L1 distance), the
language (unary minus under reductions, terms counted per present point, floor and modulo filters, ``??``
unions, nested functions, multi-letter ranks, scalar outputs, recurrence states, histograms, param spellings),
recurrences (chunked linear attention, RetNet's two forms, scans against filters, the online normaliser) and
integers as values. ``tests/test_conformance_more.py`` runs them with the earlier sets.

One case failed when written: ``s21_bug_passes_alias_row_norm_counted_as_reduction_of_declared_rank`` (the
analysis counted a pointwise value read through the declared rank's alias, ``N[s]`` of ``N[s] =
square(X[s, c])``, as a full reduction of the declared rank: 2 passes over ``t`` where 1 is right; every
backend's values were right). Fixed in ``einattn.analysis.passes``.
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6))
