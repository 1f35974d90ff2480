"""Reviewer (session 18), the analysis: per-tile values that a split-K merge re-reads after the max over the
chunks are live at the end of the one pass over the keys, for every chunk (docs/analysis.md, section 4).
They were left out of the footprint, so a split-K spec with ``param S0`` (a chunk length; the number of
chunks grows with M) was classified 'live buffer is free of M'."""

from __future__ import annotations

import einattn

SPLITK = """
input  q[b, e], K[b, m, e], V[b, m, f]
param  S0 = 4
rank   M = S1 * S0
output O
S[b, s1, s0]  = q[b, e] * K[b, s1 * S0 + s0, e]
LM[b, s1]     = S[b, s1, s0] :: max(s0)
EX[b, s1, s0] = exp(S[b, s1, s0] - LM[b, s1])
LD[b, s1]     = EX[b, s1, s0]
LN[b, s1, f]  = EX[b, s1, s0] * V[b, s1 * S0 + s0, f]
GM[b]         = LM[b, s1] :: max(s1)
CF[b, s1]     = exp(LM[b, s1] - GM[b])
D[b]          = LD[b, s1] * CF[b, s1]
O[b, f]       = LN[b, s1, f] * CF[b, s1] / D[b]
"""


def test_splitk_chunk_partials_are_held_for_every_chunk():
    r = einattn.analyze(SPLITK, sizes={"M": 4096, "F": 64})
    assert r.passes["m"] == 1 and r.passes["s1"] == 3
    assert str(r.footprint) == "F*S1 + F + S0 + 2*S1 + 2"
    assert "grows with M" in r.classification
    assert {"LM", "LD", "LN", "CF"} <= {t.tensor for t in r.footprint_terms}


def test_splitk_example_with_a_fixed_number_of_chunks():
    r = einattn.analyze("examples/variants/14_splitk_decode.ein", sizes={"M": 4096, "F": 64})
    # M1 = 4 chunks of M0 = 1024 keys: F + M0 + 2, and 4 * (F + 2) for the chunks' partials
    assert str(r.footprint) == "F*M1 + F + M0 + 2*M1 + 2"
    assert r.value(r.footprint) == 64 + 1024 + 2 + 4 * (64 + 2)


def test_two_pass_form_counts_the_correction_once():
    # the parent has a boundary of its own: CF crosses it and is counted there, LM is not added again
    r = einattn.analyze("examples/attention_2pass.ein")
    assert str(r.footprint) == "F + M + M0 + M1 + 2"


def test_cascade5_stays_free_of_m():
    r = einattn.analyze("examples/attention_1pass.ein", sizes={"M": 4096, "F": 64})
    assert "live buffer is free of M" in r.classification
    assert r.value(r.footprint) == 130
