"""A fourth reviewer's conformance cases (session 12): specs a researcher would write, in the format of
``../shared/conformance/cases.py``, every oracle hand-written NumPy. Roadmap-shaped cascades (KV-cache offsets
with a scalar int position, cross attention, sinks as logits and as initial states, differential attention,
retention in parallel and chunked forms, ALiBi slopes and position ids, segment ids, per-batch prefixes,
dilated/strided/shifted/2-D/chunked windows, split-K with partial states and int bounds, merging partials by
their log-sum-exp, a ring-attention step, MLA's two score contractions, QK-norm, gpt-oss), non-softmax
normalisers (softpick, stick-breaking, sigmoid, softmax plus one, linear feature maps), 3-pass specs the
rewrite must stream or leave alone, hand-written 1-pass cascades with small tiles over FlexAttention-style
masks, recurrences (RWKV, GLA, a selective scan, shift registers), and language corners (params and scalar
ints in indices, gathers in index functions, filter logic, ``??`` chains, nested calls, multi-rank min/max,
names that collide with generated code). ``tests/test_conformance_more.py`` runs them with the earlier sets.

A case whose oracle holds NaN or infinities is checked position for position there (``nonfinite``).
"""

from conformance_sets import collect

from . import cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8

CASES = collect((cases1, cases2, cases3, cases4, cases5, cases6, cases7, cases8))
