"""Integers, normalisers and forms a kernel writer reaches for: integer tensors and scalars as values (true
division), a thresholded ReLU-max attention (sparse without a top-k), a blend of softmax and sigmoid
attention, a softmax stabilised by the mean score, a softmax applied twice, ReLU^2 attention normalised with
an epsilon, a FlexAttention-style score_mod of every coordinate, an integer window width given at call time,
negative L1 distance scores, and a pass count of a projected Gram matrix through a rank alias."""

import numpy as np

from .common import att, make_rn, pm, registry, relu, scores, sig, softmax, weighted

rn, rng = make_rn(2105)
CASES, case = registry()


# --- integer tensors and an integer scalar as values: `/` is true division, sums of ints, exp of an int
def int_values_ref(X, cnt, M2, n):
    return (
        cnt / 2,
        (M2 * X).sum(1) / n,
        M2.sum(1).astype(float),
        -M2 / (cnt[:, None] + 1) + np.exp(cnt[:, None] * 0.5),
    )


case(
    "s21_int_values_true_division_sums_and_scalar",
    """
input  X[i, j], cnt[i] : int, M2[i, j] : int, n : int
output A, B, C, D
A[i]    = cnt[i] / 2                          # -3 / 2 is -1.5
B[i]    = M2[i, j] * X[i, j] / n
C[i]    = M2[i, j]                            # a sum of ints
D[i, j] = -M2[i, j] / (cnt[i] + 1) + exp(cnt[i] * 0.5)
""",
    dict(
        X=rn(4, 3),
        cnt=np.array([-3, 5, 7, 0]),
        M2=np.array([[1, -2, 3], [4, 5, -7], [0, 1, 1], [-1, -1, 2]]),
        n=np.array(3),
    ),
    int_values_ref,
)


# --- thresholded ReLU-max attention: weights relu(S - max + TH) normalised (the best key always has weight
# TH > 0; keys more than TH below it get none): 3 passes over m
def thresh_ref(Q, K, V, TH=1.5):
    s = scores(Q, K)
    w = relu(s - s.max(-1, keepdims=True) + TH)
    return weighted(w / w.sum(-1, keepdims=True), V)


case(
    "s21_att_thresholded_relu_max_sparse_weights",
    """
input  Q[p, e], K[m, e], V[m, f]
param  TH = 1.5
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
W[p, m]  = relu(S[p, m] - GM[p] + TH)
SW[p]    = W[p, m]
A[p, m]  = W[p, m] / SW[p]
O[p, f]  = A[p, m] * V[m, f]
""",
    dict(Q=rn(5, 4, scale=2), K=rn(9, 4, scale=2), V=rn(9, 3)),
    thresh_ref,
    passes={"m": 3},
)


# --- a blend of softmax attention and sigmoid attention (bias -log M), LAM overridden
def blend_ref(Q, K, V, LAM=0.25):
    s = scores(Q, K)
    M = K.shape[0]
    return LAM * weighted(softmax(s), V) + (1 - LAM) * weighted(sig(s - np.log(M)), V)


case(
    "s21_att_softmax_sigmoid_blend_lambda_overridden",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LAM = 0.5
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
DN[p]    = EX[p, m]
SM[p, f] = EX[p, m] * V[m, f]
SG[p, f] = sigmoid(S[p, m] - log(M)) * V[m, f]
O[p, f]  = LAM * SM[p, f] / DN[p] + (1 - LAM) * SG[p, f]
""",
    dict(Q=rn(4, 3), K=rn(8, 3), V=rn(8, 2)),
    blend_ref,
    params={"LAM": 0.25},
    passes={"m": 2},
)


# --- a softmax stabilised by the mean score instead of the max (exact for scores this small), deferred
case(
    "s21_att_softmax_stabilised_by_mean_score_deferred",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
MU[p]     = S[p, m] / M
EX[p, m]  = exp(S[p, m] - MU[p])
DN[p]     = EX[p, m]
NV[p, f]  = EX[p, m] * V[m, f]
O[p, f]   = NV[p, f] / DN[p]
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda Q, K, V: att(Q, K, V),
    passes={"m": 2},
)


# --- a softmax applied twice (softmax of the softmax weights), the second division deferred: 4 passes over m
def double_ref(Q, K, V):
    a = softmax(scores(Q, K))
    return weighted(softmax(a), V)


case(
    "s21_att_softmax_applied_twice_four_passes",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
G1[p]     = S[p, m] :: max(m)
X1[p, m]  = exp(S[p, m] - G1[p])
D1[p]     = X1[p, m]
A1[p, m]  = X1[p, m] / D1[p]
G2[p]     = A1[p, m] :: max(m)
X2[p, m]  = exp(A1[p, m] - G2[p])
D2[p]     = X2[p, m]
NV[p, f]  = X2[p, m] * V[m, f]
O[p, f]   = NV[p, f] / D2[p]
""",
    dict(Q=rn(4, 3, scale=2), K=rn(6, 3, scale=2), V=rn(6, 2)),
    double_ref,
    passes={"m": 4},
)


# --- causal ReLU^2 attention normalised by its sum plus an epsilon (row 0 may have a zero sum)
def relu2_ref(Q, K, V, EPS=1e-3):
    s = scores(Q, K)
    p, m = pm(Q.shape[0], K.shape[0])
    w = np.where(m <= p, relu(s) ** 2, 0.0)
    return weighted(w, V) / (w.sum(-1, keepdims=True) + EPS)


case(
    "s21_att_causal_relu_squared_normalised_with_epsilon",
    """
input  Q[p, e], K[m, e], V[m, f]
param  EPS = 1e-3
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
W[p, m]  = square(relu(S[p, m]))
SW[p]    = W[p, m]
NV[p, f] = W[p, m] * V[m, f]
O[p, f]  = NV[p, f] / (SW[p] + EPS)
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    relu2_ref,
    passes={"m": 1},
)


# --- a score_mod of every coordinate (FlexAttention's score_mod(score, b, h, q, kv)): a batch offset, a head
# scale, a distance penalty through abs and a query-position tilt
def score_mod_ref(Q, K, V):
    B, H, P, _ = Q.shape
    M = K.shape[2]
    s = scores(Q, K)
    b = np.arange(B)[:, None, None, None]
    h = np.arange(H)[None, :, None, None]
    p = np.arange(P)[None, None, :, None]
    m = np.arange(M)[None, None, None, :]
    s = s * (1 + 0.5 * h) + 0.25 * b - 0.1 * np.abs(p - m) + 0.05 * p * m
    return att(np.zeros_like(Q), K, V, bias=s)


case(
    "s21_att_score_mod_of_every_coordinate",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
D[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = D[b, h, p, m] * (1 + 0.5 * h) + 0.25 * b - 0.1 * abs(p - m) + 0.05 * p * m
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
DN[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / DN[b, h, p]
""",
    dict(Q=rn(2, 2, 4, 3), K=rn(2, 2, 5, 3), V=rn(2, 2, 5, 2)),
    score_mod_ref,
)


# --- an integer window width given at call time, in the filter and as a value (the scores scaled by 1 / w)
def int_window_ref(Q, K, V, w):
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, mask=(m <= p) & (p - m < w), scale=1.0 / int(w))


case(
    "s21_int_scalar_window_width_in_filter_and_value",
    """
input  Q[p, e], K[m, e], V[m, f], w : int
output O
S[p, m]  = Q[p, e] * K[m, e] / w  where m <= p and p - m < w
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
DN[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / DN[p]
""",
    dict(Q=rn(7, 3, scale=2), K=rn(7, 3, scale=2), V=rn(7, 2), w=np.array(3)),
    int_window_ref,
)


# --- negative L1 distance scores: the sum over e of -|q - k| (the function of a difference summed)
def l1_ref(Q, K, V):
    s = -np.abs(Q[:, None, :] - K[None, :, :]).sum(-1)
    return weighted(softmax(s), V)


case(
    "s21_att_negative_l1_distance_scores",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = -abs(Q[p, e] - K[m, e])
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
DN[p]    = EX[p, m]
NV[p, f] = EX[p, m] * V[m, f]
O[p, f]  = NV[p, f] / DN[p]
""",
    dict(Q=rn(5, 3), K=rn(8, 3), V=rn(8, 2)),
    l1_ref,
    passes={"m": 2},
)
