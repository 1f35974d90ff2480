"""A twelfth reviewer's conformance cases (session 20), in the format of ``tests/conformance_s19/``, every
oracle hand-written NumPy from the math: attention variants the earlier sets did not cover (differential
attention, sinks, stick-breaking, ReLU and softpick normalisers, scalable softmax, softcaps on scores and
output, temperatures, cosine attention, QK-norm), masks and positions (T5 buckets read from int tables,
prefix-LM, dilated, chunked and block-sparse patterns, sparse index tables, neighbourhood windows, forgetting
gates, RoPE), structure (MQA cross attention, agents given as an input, mixtures of heads selected by index,
talking heads, decode with one query and long keys, empty ranks, head dims 1 and 3, int32 tables, params
overridden), layouts and forms kernel writers use (BSHD, transposed keys, exp(S - LSE), exp2, masked_fill
with -inf, weights returned, slot attention), and int tensors as values (position ids, int8 KV codes).
``tests/test_conformance_more.py`` runs them with the earlier sets; ``tests/test_review_s20_cli.py`` checks
the CLI's errors. None of these cases failed when written (no ``s20_bug_*`` case).
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5

CASES = collect((cases1, cases2, cases3, cases4, cases5))
