"""A sixth reviewer's conformance cases (session 14): specs a demanding user would write, in the format of
``../shared/conformance/cases.py``, every oracle hand-written NumPy. Recurrences other than online softmax
(segmented scans, log-space HMM forward and Viterbi, mLSTM with its stabiliser, bias-corrected EMA, coupled
states), index expressions (cyclic and reversed keys, de-interleaving, proportional head groups, clamps with
crossed bounds), every function at its IEEE edges inside cascades, min/max reductions with ties and
all-absent rows, scalar params of both kinds, masks that kill whole tiles for some rows only, attention
variants (bidirectional blocks, dilated windows with sinks, ring-buffer caches, decoding), numerically hard
inputs, and hand-written 1-pass loops with unusual states (cases8.py, with the cases that found bugs:
``s14_bug_*``, ``s14_max_min_ties_neg_inf_present_and_absent_rows`` and
``s14_block_sparse_int_layout_hand_1pass``). ``tests/test_conformance_more.py`` runs them with the earlier
sets.

A case whose oracle holds NaN or infinities is checked position for position there (``nonfinite``).
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8))
