"""Numerically hard data and the statistics of a softmax returned beside it: an additive bias holding +inf
(one key, two keys), -inf everywhere but one key, a whole row of -inf (NaN by IEEE arithmetic) and 1e4
offsets, with the max and the denominator as outputs; an anti-causal softmax (the first tiles of late rows
absent) under a temperature with its statistics returned; a sink folded into one max and a second softmax
over the complementary filter sharing one score tensor; a softmin written as exp of the negated shift; a
numerator over a causal subset under a denominator over every key; the shift defaulted to 0 before the
sums; a clamped stabiliser with the +1 of quiet attention; ties at +-1e4."""

import numpy as np

from .common import lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1802)
CASES, case = registry()

_SM = """
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
"""


# --- an additive bias with +inf (row 0: one key, row 4: two keys), -inf everywhere (row 1), -inf but the
# last key (row 2), -inf at every other key (row 3), 1e4 with one -1e4 and a zero query (row 5: exact ties);
# max and denominator returned
def _ieee_bias():
    B = rn(6, 8)
    B[0, 5] = np.inf
    B[1, :] = -np.inf
    B[2, :7] = -np.inf
    B[3, ::2] = -np.inf
    B[4, 3] = B[4, 6] = np.inf
    B[5, :] = 1e4
    B[5, 0] = -1e4
    return B


def ieee_bias_ref(Q, K, V, B):
    s = Q @ K.T + B
    gm = s.max(1)
    ex = np.exp(s - gm[:, None])
    sd = ex.sum(1)
    return ex @ V / sd[:, None], gm + np.log(sd), gm, sd


case(
    "s18_ieee_bias_pos_inf_neg_inf_rows_stats_out",
    """
# a bias that is +inf at some keys, -inf at others; the max, the denominator and the lse returned
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O, L, GM, SD
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + B[p, m]
"""
    + _SM
    + """O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=np.concatenate([rn(5, 3), np.zeros((1, 3))]), K=rn(8, 3), V=rn(8, 2), B=_ieee_bias()),
    ieee_bias_ref,
    passes={"m": 3},
)


# --- anti-causal rows (key m >= p): under tiles of 3, rows 3.. have an absent first tile; max and
# denominator returned; a temperature param of 0.5
def anti_ref(Q, K, V, T=0.5):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    mask = m >= p
    gm = np.where(mask, s, -np.inf).max(1)
    ex = np.where(mask, np.exp((s - gm[:, None]) / T), 0)
    sd = ex.sum(1)
    return ex @ V / sd[:, None], gm, sd


case(
    "s18_ieee_anticausal_temperature_stats_out",
    """
# keys at or after the query; softmax(S / T) written exp((S - GM) / T); GM and SD returned
input  Q[p, e], K[m, e], V[m, f]
param  T = 0.5
output O, GM, SD
S[m, p]  = Q[p, e] * K[m, e]  where m >= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp((S[m, p] - GM[p]) / T)
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 3, scale=2), K=rn(8, 3, scale=2), V=rn(8, 2)),
    anti_ref,
    passes={"m": 3},
)


# --- one score tensor, two softmaxes: causal with a sink in its max (G1 = max(M1, sink)), and strictly
# anti-causal (the last row has no key: G2, D2 and O2 are 0 there); both statistics returned
def two_filters_ref(Q, K, V, sink):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    m1 = np.where(m <= p, s, -np.inf).max(1)
    g1 = np.maximum(m1, sink)
    e1 = np.where(m <= p, np.exp(s - g1[:, None]), 0)
    O1 = e1 @ V / (e1.sum(1) + np.exp(sink - g1))[:, None]
    mk = m > p
    O2 = softmax(s, mk) @ V
    g2 = np.where(mk, s, -np.inf).max(1)
    g2 = np.where(np.isfinite(g2), g2, 0)
    d2 = np.where(mk, np.exp(s - g2[:, None]), 0).sum(1)
    return O1, O2, g1, g2, d2


case(
    "s18_ieee_sink_max_and_complement_filter_share_scores",
    """
# causal softmax with a sink, and the strictly anti-causal softmax, from one score tensor
input  Q[p, e], K[m, e], V[m, f], sink
output O1, O2, G1, G2, D2
S[m, p]  = Q[p, e] * K[m, e]
S1[m, p] = S[m, p]  where m <= p
S2[m, p] = S[m, p]  where m > p
M1[p]    = S1[m, p] :: max(m)
G1[p]    = max(M1[p], sink)
G2[p]    = S2[m, p] :: max(m)
E1[m, p] = exp(S1[m, p] - G1[p])
E2[m, p] = exp(S2[m, p] - G2[p])
D1[p]    = E1[m, p]
D2[p]    = E2[m, p]
O1[p, f] = E1[m, p] * V[m, f] / (D1[p] + exp(sink - G1[p]))
O2[p, f] = E2[m, p] * V[m, f] / D2[p]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), sink=np.array(0.7)),
    two_filters_ref,
    passes={"m": 3},
)


# --- a softmin over the keys written with the max: exp((S - GM) * -1) is exp(GM - S) >= 1
case(
    "s18_ieee_softmin_as_negated_shift_of_max",
    """
# the weights exp(-(S - GM)) normalised are softmax(-S), though GM is the max, not the min
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp((S[m, p] - GM[p]) * -1.0)
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 3), K=rn(8, 3), V=rn(8, 2)),
    lambda Q, K, V: softmax(-(Q @ K.T)) @ V,
    passes={"m": 3},
)


# --- the denominator over every key, the numerator over keys up to the query only, and the mass beyond
# two keys ahead as a second output
def subset_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    w = np.exp(s - s.max(1, keepdims=True))
    return (w * (m <= p)) @ V / w.sum(1)[:, None], (w * (m > p + 2)).sum(1)


case(
    "s18_ieee_causal_numerator_full_denominator",
    """
# a numerator filtered by its own reader; the unnormalised mass beyond p + 2 (0 where there is none)
input  Q[p, e], K[m, e], V[m, f]
output O, TAIL
S[m, p]   = Q[p, e] * K[m, e]
"""
    + _SM
    + """NUM[p, f] = EX[m, p] * V[m, f]  where m <= p
O[p, f]   = NUM[p, f] / SD[p]
TAIL[p]   = EX[m, p]  where m > p + 2
""",
    dict(Q=rn(7, 3, scale=2), K=rn(8, 3, scale=2), V=rn(8, 2)),
    subset_ref,
    passes={"m": 2},
)


# --- the shift defaulted to 0 where the causal filter removed the score, then summed over every key
def causal_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    return softmax(Q @ K.T, m <= p) @ V


case(
    "s18_ieee_shift_defaulted_zero_before_sums",
    """
# EX is present everywhere (0 where masked); the sums then run over every key
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p]) ?? 0
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 3, scale=3), K=rn(8, 3, scale=3), V=rn(8, 2)),
    causal_ref,
    passes={"m": 3},
)


# --- quiet attention (softmax with +1 in the denominator) stabilised by max(GM, 0), causal, with its lse
def quiet_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    ex = np.exp(s) * (m <= p)
    den = ex.sum(1) + 1
    return ex @ V / den[:, None], np.log(den)


case(
    "s18_ieee_quiet_attention_clamped_stabiliser",
    """
# softmax_1: exp(S) / (1 + sum exp(S)), stabilised by max(GM, 0) so that the 1 is exp(0 - GM)
input  Q[p, e], K[m, e], V[m, f]
output O, L
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
MX[p]    = S[m, p] :: max(m)
GM[p]    = max(MX[p], 0)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / (SD[p] + exp(-GM[p]))
L[p]     = GM[p] + log(SD[p] + exp(-GM[p]))
""",
    dict(Q=rn(7, 3, scale=2), K=rn(8, 3, scale=2), V=rn(8, 2)),
    quiet_ref,
    passes={"m": 3},
)


# --- exact ties at +-1e4: each row's scores are one of +1e4, -1e4 and 1e4 - 1, so the weights are exact
# (ties share equally, a gap of 1 is e^-1, a gap of 2e4 underflows to 0); sliding window of 4
def ties_ref(S, V, W=4):
    P, M = S.shape
    p, m = pm(P, M)
    mask = (p - m >= 0) & (p - m < W)
    return softmax(S, mask) @ V, lse(S, mask)


_T = rng.choice([1e4, -1e4, 1e4 - 1], size=(9, 9))
_T[3, :] = -1e4

case(
    "s18_ieee_ties_at_1e4_window_lse",
    """
# given scores at +-1e4 with exact ties, a window of 4 keys, softmax and lse
input  T[p, m], V[m, f]
param  W = 4
output O, L
S[m, p]  = T[p, m]  where 0 <= p - m < W
"""
    + _SM
    + """O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(T=_T, V=rn(9, 2)),
    lambda T, V: ties_ref(T, V),
    passes={"m": 3},
)
