"""The same softmax written different ways, as a careful user might: the max taken over a transposed copy,
over keys read in reverse, over a user-tiled view (one two-rank max, or two levels), the weights as
exp(S - LSE), a scaled or offset stabiliser, exp2 with log2(e), a stabiliser raised by a per-row floor, the
exponentials recomputed inline in each reader, causal written four ways, masks built from a filter and a
default, sums over heads and keys at once, and heads in odd layouts. Logits are large (spreads of hundreds)
where a wrong stabiliser would overflow."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1302)
CASES, case = registry()

BIG = 12.0  # inputs scaled so scores spread over hundreds: exp of an unstabilised score overflows


# --- the max over a transposed copy of the scores
case(
    "s13_max_over_transposed_copy",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)
ST[p, m] = S[m, p]
GM[p]    = ST[p, m] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(4, 4, scale=BIG), K=rn(10, 4, scale=BIG), V=rn(10, 3)),
    lambda Q, K, V: att(Q, K, V),
)


# --- the max over the keys read in reverse (the same set of values), causal scores
case(
    "s13_max_over_reversed_keys",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
GM[p]    = S[p, M - 1 - m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(10, 4, scale=BIG), K=rn(10, 4, scale=BIG), V=rn(10, 3)),
    lambda Q, K, V: att(Q, K, V, mask=causal(10, 10)),
)


# --- the max over a view the user tiled: one max over both tile ranks, M = 10 in tiles of 4 (ragged)
case(
    "s13_max_over_user_tiled_view",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output O
S[p, m]       = Q[p, e] * K[m, e] * rsqrt(E)
BS[p, m1, m0] = S[p, m1 * M0 + m0]
GM[p]         = BS[p, m1, m0] :: max(m1, m0)
EX[p, m]      = exp(S[p, m] - GM[p])
SD[p]         = EX[p, m]
O[p, f]       = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 4, scale=BIG), K=rn(10, 4, scale=BIG), V=rn(10, 3)),
    lambda Q, K, V: att(Q, K, V),
    passes={"m": 3, "m1": 1, "m0": 1},
)


# --- the same with a two-level max (per tile, then over tiles), and the tile max also an output
def two_level_ref(Q, K, V, M0=4):
    s = scores(Q, K)
    M = s.shape[1]
    M1 = -(-M // M0)
    lm = np.stack([s[:, t * M0 : (t + 1) * M0].max(1) for t in range(M1)], 1)
    return att(Q, K, V), lm


case(
    "s13_max_two_level_user_tiles",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output O, LM
S[p, m]    = Q[p, e] * K[m, e] * rsqrt(E)
LM[p, m1]  = S[p, m1 * M0 + m0] :: max(m0)
GM[p]      = LM[p, m1] :: max(m1)
EX[p, m]   = exp(S[p, m] - GM[p])
SD[p]      = EX[p, m]
O[p, f]    = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 4, scale=BIG), K=rn(10, 4, scale=BIG), V=rn(10, 3)),
    two_level_ref,
)


# --- weights as exp(S - LSE), LSE = GM + log(SD): the normaliser inside the exponential; window mask
def lse_form_ref(Q, K, V, W=3):
    d = rel(8, 8)
    mask = (d >= 0) & (d < W)
    return att(Q, K, V, mask=mask), lse(scores(Q, K), mask)


case(
    "s13_weights_as_exp_minus_lse",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
output O, L
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where 0 <= p - m < W
GM[p]    = S[p, m] :: max(m)
SD[p]    = exp(S[p, m] - GM[p])
L[p]     = GM[p] + log(SD[p])
O[p, f]  = exp(S[p, m] - L[p]) * V[m, f]
""",
    dict(Q=rn(8, 4, scale=3.0), K=rn(8, 4, scale=3.0), V=rn(8, 3)),
    lse_form_ref,
)


# --- a scaled stabiliser: the scores doubled, and the max doubled after the reduction
case(
    "s13_stabiliser_scaled_after_max",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
S2[p, m] = S[p, m] * 2
G2[p]    = GM[p] * 2
EX[p, m] = exp(S2[p, m] - G2[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(4, 4, scale=BIG / 2), K=rn(9, 4, scale=BIG / 2), V=rn(9, 3)),
    lambda Q, K, V: att(Q, K, V, scale=2 / np.sqrt(4)),
)


# --- a stabiliser offset by a constant and one raised by a per-row floor (max(GM, FL[p])): both exact
def offset_ref(Q, K, V, FL):
    o = att(Q, K, V, mask=causal(6, 6))
    return o, o


case(
    "s13_stabiliser_offset_and_floored",
    """
input  Q[p, e], K[m, e], V[m, f], FL[p]
output O1, O2
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
GM[p]    = S[p, m] :: max(m)
C1[p]    = GM[p] + 5
C2[p]    = max(GM[p], FL[p])
E1[p, m] = exp(S[p, m] - C1[p])
E2[p, m] = exp(S[p, m] - C2[p])
O1[p, f] = E1[p, m] * V[m, f] / D1[p]
D1[p]    = E1[p, m]
O2[p, f] = E2[p, m] * V[m, f] / D2[p]
D2[p]    = E2[p, m]
""",
    dict(Q=rn(6, 4), K=rn(6, 4), V=rn(6, 3), FL=np.array([-3.0, 0.0, 2.0, -1.0, 1.0, 0.5])),
    offset_ref,
)


# --- exp2 on scores scaled by log2(e): the same softmax, with the log-sum-exp in base 2 and converted
LOG2E = 1.4426950408889634


def exp2_ref(Q, K, V):
    return att(Q, K, V, mask=causal(7, 9, 2)), lse(scores(Q, K), causal(7, 9, 2))


case(
    "s13_exp2_log2e_lse_converted",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LOG2E = 1.4426950408889634
output O, L
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E) * LOG2E  where m <= p + M - P
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp2(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
L[p]     = (GM[p] + log2(SD[p])) / LOG2E
""",
    dict(Q=rn(7, 4, scale=3.0), K=rn(9, 4, scale=3.0), V=rn(9, 3)),
    exp2_ref,
)


# --- no shared numerator tensor: each reader recomputes exp(S - GM) inline
case(
    "s13_exponentials_inline_in_each_reader",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
output O
S[b, p, m] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m <= p
GM[b, p]   = S[b, p, m] :: max(m)
SD[b, p]   = exp(S[b, p, m] - GM[b, p])
NV[b, p, f] = exp(S[b, p, m] - GM[b, p]) * V[b, m, f]
O[b, p, f] = NV[b, p, f] / SD[b, p]
""",
    dict(Q=rn(2, 7, 4, scale=BIG), K=rn(2, 7, 4, scale=BIG), V=rn(2, 7, 3)),
    lambda Q, K, V: att(Q, K, V, mask=causal(7, 7)),
    passes={"m": 2},
)


# --- causal written four ways, one output each
def four_ref(Q, K, V):
    o = att(Q, K, V, mask=causal(6, 8, 1))
    return o, o, o, o


_four = "\n".join(
    f"""S{i}[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where {flt}
G{i}[p] = S{i}[p, m] :: max(m)
X{i}[p, m] = exp(S{i}[p, m] - G{i}[p])
D{i}[p] = X{i}[p, m]
O{i}[p, f] = X{i}[p, m] * V[m, f] / D{i}[p]"""
    for i, flt in enumerate(
        ["m <= p + 1", "not m > p + 1", "max(m, p + 1) == p + 1", "min(p + 1 - m, 0) == 0 and m >= 0"], 1
    )
)

case(
    "s13_causal_four_spellings",
    "input  Q[p, e], K[m, e], V[m, f]\noutput O1, O2, O3, O4\n" + _four,
    dict(Q=rn(6, 4), K=rn(8, 4), V=rn(8, 3)),
    four_ref,
)


# --- a mask built from a filter and a default: -1e30 where m > p, 0 elsewhere, added to the scores
case(
    "s13_mask_bias_from_filter_and_default",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
NEG[p, m] = -1e30  where m > p
MB[p, m]  = NEG[p, m] ?? 0
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
T[p, m]   = S[p, m] + MB[p, m]
GM[p]     = T[p, m] :: max(m)
EX[p, m]  = exp(T[p, m] - GM[p])
SD[p]     = EX[p, m]
O[p, f]   = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 4), K=rn(7, 4), V=rn(7, 3)),
    lambda Q, K, V: att(Q, K, V, mask=causal(7, 7)),
)


# --- masked scores replaced by a -inf sentinel with ?? before the softmax (no row is fully masked)
case(
    "s13_sentinel_neg_inf_default_before_softmax",
    """
input  Q[p, e], K[m, e], V[m, f], doc[n] : int
output O
SM[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where doc[m] == doc[p] and m <= p
SF[p, m] = SM[p, m] ?? -inf
GM[p]    = SF[p, m] :: max(m)
EX[p, m] = exp(SF[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(8, 4), K=rn(8, 4), V=rn(8, 3), doc=np.array([0, 0, 0, 1, 1, 2, 2, 2])),
    lambda Q, K, V, doc: att(Q, K, V, mask=(doc[:, None] == doc[None, :]) & causal(8, 8)),
)


# --- explicit `:: +(m)` on the denominator and `:: +(m, f)` on a total weight check
def plus_ref(Q, K, V):
    a = softmax(scores(Q, K))
    return a @ V, a.sum(-1) * V.shape[1]


case(
    "s13_explicit_plus_reductions",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, TOT
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - GM[p])
SD[p]     = EX[p, m] :: +(m)
A[p, m]   = EX[p, m] / SD[p]
O[p, f]   = A[p, m] * V[m, f] :: +(m)
ONE[m, f] = V[m, f] * 0 + 1
TOT[p]    = A[p, m] * ONE[m, f] :: +(m, f)
""",
    dict(Q=rn(4, 3), K=rn(9, 3), V=rn(9, 2)),
    plus_ref,
)


# --- the output sums over heads and keys at once (each head's attention, added up)
def heads_sum_ref(Q, K, V):
    return att(Q, K, V, mask=causal(6, 6)).sum(0)


case(
    "s13_sum_over_heads_and_keys",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
A[h, p, m]  = EX[h, p, m] / SD[h, p]
O[p, f]     = A[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(3, 6, 4, scale=3.0), K=rn(3, 6, 4, scale=3.0), V=rn(3, 6, 2)),
    heads_sum_ref,
)


# --- heads and features in odd layouts: Q[e, p, h], K[m, h, e], V[h, f, m], O[f, h, p]
def odd_ref(Q, K, V):
    q = Q.transpose(2, 1, 0)  # h p e
    k = K.transpose(1, 0, 2)  # h m e
    v = V.transpose(0, 2, 1)  # h m f
    o = att(q, k, v, mask=causal(5, 7, 2))  # h p f
    return o.transpose(2, 0, 1)


case(
    "s13_odd_layouts_heads_inner",
    """
input  Q[e, p, h], K[m, h, e], V[h, f, m]
output O
S[m, h, p]  = Q[e, p, h] * K[m, h, e] * rsqrt(E)  where m - 2 <= p
GM[h, p]    = S[m, h, p] :: max(m)
EX[p, m, h] = exp(S[m, h, p] - GM[h, p])
SD[p, h]    = EX[p, m, h]
O[f, h, p]  = EX[p, m, h] * V[h, f, m] / SD[p, h]
""",
    dict(Q=rn(4, 5, 2), K=rn(7, 2, 4), V=rn(2, 3, 7)),
    odd_ref,
)
