"""A fifth reviewer's conformance cases (session 13): specs a user would write, in the format of
``../shared/conformance/cases.py``, every oracle hand-written NumPy. Packed documents, prefix-LM masks, masks
given as float inputs, per-head biases and slopes, temperatures and caps as scalar inputs, differential and
mixture-of-heads attention, outputs with their statistics; the same math written several ways (transposed,
reversed and tiled views for the max, log-sum-exp subtraction, masks from filters and defaults); numerically
hard inputs (logits of +-1e4, -inf biases, fully masked rows); ragged and size-1 ranks, specs with many ranks;
chained layers, projections inside the spec, iterative normalisations. ``tests/test_conformance_more.py`` runs
them with the earlier sets.

A case whose oracle holds NaN or infinities is checked position for position there (``nonfinite``).
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8))
