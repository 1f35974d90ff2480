"""Numerically hard inputs: logits of +-1e4 with document masks and a log-sum-exp, -inf biases at kept and
filtered points, one key biased +1e4, every score the same huge value, sigmoid and softcap on +-1e4,
rows left empty by a strict shifted filter with every statistic as an output (and `?? -inf`), an
unstabilised softmax that overflows to NaN as IEEE says."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1303)
CASES, case = registry()


# --- logits of +-1e4 (a bias input) under a document mask, with the log-sum-exp; Q and K hold quarters, so
# 1e4 + Q.K / 2 is exact in float32 too
def quarters(*shape):
    return rng.integers(-6, 7, size=shape) / 4.0


def big_bias():
    return rng.choice([-1e4, 0.0, 1e4], size=(9, 9), p=[0.4, 0.3, 0.3])


def big_doc_ref(Q, K, V, B, doc):
    mask = (doc[:, None] == doc[None, :]) & causal(9, 9)
    s = scores(Q, K) + B
    return softmax(s, mask) @ V, lse(s, mask)


case(
    "s13_logits_1e4_doc_mask_with_lse",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m], doc[n] : int
output O, L
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = QK[p, m] + B[p, m]  where doc[m] == doc[p] and m <= p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(
        Q=quarters(9, 4),
        K=quarters(9, 4),
        V=rn(9, 3),
        B=big_bias(),
        doc=np.array([0, 0, 0, 0, 1, 1, 1, 1, 1]),
    ),
    big_doc_ref,
)


# --- a -inf bias at some kept points and at some filtered points (no row loses every kept key)
def ninf_bias():
    b = np.zeros((8, 8))
    b[3, 0:3] = -np.inf  # kept keys of row 3 except m = 3
    b[6, [1, 2, 5]] = -np.inf
    b[1, 4:] = -np.inf  # filtered points
    b[0, 1] = -np.inf  # filtered
    return b


case(
    "s13_neg_inf_bias_at_kept_and_filtered_points",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
T[p, m]  = S[p, m] + B[p, m]  where m <= p
GM[p]    = T[p, m] :: max(m)
EX[p, m] = exp(T[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(8, 4), K=rn(8, 4), V=rn(8, 3), B=ninf_bias()),
    lambda Q, K, V, B: att(Q, K, V, mask=causal(8, 8), bias=B),
)


# --- one key per row biased by +1e4: the output is that key's value row (exactly, to rounding)
def onehot_bias():
    b = np.zeros((6, 10))
    b[np.arange(6), [9, 0, 4, 4, 7, 2]] = 1e4
    return b


case(
    "s13_one_key_biased_1e4",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], B[p, m]
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)
T[b, p, m]  = S[b, p, m] + B[p, m]
GM[b, p]    = T[b, p, m] :: max(m)
EX[b, p, m] = exp(T[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * V[b, m, f] / SD[b, p]
""",
    dict(Q=rn(2, 6, 4), K=rn(2, 10, 4), V=rn(2, 10, 3), B=onehot_bias()),
    lambda Q, K, V, B: V[:, [9, 0, 4, 4, 7, 2], :],
)


# --- every score the same huge value (1e4 plus exactly representable offsets of 0): uniform weights over a
# window of 3 (fewer at the start)
def uniform_ref(V, C):
    M = V.shape[0]
    d = rel(M, M)
    w = ((d >= 0) & (d < 3)).astype(float)
    return (w / w.sum(1, keepdims=True)) @ V


case(
    "s13_all_scores_equal_huge",
    """
input  V[m, f], C
param  W = 3
rank   P = M
output O
S[p, m]  = C + 0 * V[m, 0]  where 0 <= p - m < W
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(V=rn(7, 3), C=np.array(1e4)),
    uniform_ref,
)


# --- sigmoid attention and a softcapped softmax on logits of +-1e4
def sig_cap_ref(S, V, CAP=20.0):
    so = (1 / (1 + np.exp(-S))) @ V
    c = CAP * np.tanh(S / CAP)
    return so, softmax(c) @ V


case(
    "s13_sigmoid_and_softcap_on_1e4",
    """
input  S[p, m], V[m, f]
param  CAP = 20.0
output SO, CO
SO[p, f] = sigmoid(S[p, m]) * V[m, f]
C[p, m]  = CAP * tanh(S[p, m] / CAP)
GM[p]    = C[p, m] :: max(m)
EX[p, m] = exp(C[p, m] - GM[p])
SD[p]    = EX[p, m]
CO[p, f] = EX[p, m] * V[m, f] / SD[p]
""",
    dict(S=rng.choice([-1e4, -3.0, 0.0, 2.0, 1e4], size=(5, 7)), V=rn(7, 3)),
    sig_cap_ref,
    passes={"m": 3},
)


# --- rows 0 and 1 have no key (m <= p - 2): every statistic is an output, absent (0) there; `?? -inf` turns
# the log-sum-exp of an empty row into -inf
def empty_rows_ref(Q, K, V):
    mask = causal(6, 6, -2)
    s = scores(Q, K)
    any_ = mask.any(1)
    mx = np.where(any_, np.where(mask, s, -np.inf).max(1), 0.0)
    ex = np.where(mask, np.exp(s - mx[:, None]), 0.0)
    sd = ex.sum(1)
    nv = ex @ V
    lo = lse(s, mask)
    return att(Q, K, V, mask=mask), np.where(any_, lo, 0.0), lo, nv, sd, mx


case(
    "s13_empty_rows_every_statistic",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, L, SAFE, NV, SD, GM
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p - 2
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
NV[p, f] = EX[p, m] * V[m, f]
O[p, f]  = NV[p, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
SAFE[p]  = L[p] ?? -inf
""",
    dict(Q=rn(6, 4), K=rn(6, 4), V=rn(6, 3)),
    empty_rows_ref,
    passes={"m": 2},
)


# --- an unstabilised softmax: rows whose scores reach 800 overflow exp to inf, and inf / inf is NaN; other
# rows are finite; a log of a sum of exp(-800) is log(0) = -inf
def unstab_ref(S, V):
    ex = np.exp(S)
    return (ex @ V) / ex.sum(1, keepdims=True), np.log(np.exp(-np.abs(S) * 40).sum(1))


def unstab_inputs():
    s = rng.uniform(-3, 3, size=(4, 6))
    s[1, 2] = 800.0
    s[3] = 20.0 + rng.uniform(-1, 1, size=6)
    return s


case(
    "s13_unstabilised_softmax_overflow_nan",
    """
input  S[p, m], V[m, f]
output O, LZ
EX[p, m] = exp(S[p, m])
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
SD[p]    = EX[p, m]
ZS[p]    = exp(0 - abs(S[p, m]) * 40)
LZ[p]    = log(ZS[p])
""",
    dict(
        S=unstab_inputs(),
        V=np.array([[1.0, -1.0], [2.0, 0.5], [-1.0, 1.0], [0.5, 2.0], [1.0, 1.0], [-2.0, 3.0]]),
    ),
    unstab_ref,
    passes={"m": 2},
)
