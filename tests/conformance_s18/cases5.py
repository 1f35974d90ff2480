"""Outputs computed after the attention output (a gated residual, a transposed copy, a count of the kept
keys, the lse), two value tensors under one softmax (one read a key behind), sparsemax by bisection over an
iterative rank (a step function made of clamp), sigmoid attention biased by -log of a length read from an
integer tensor, xPos-style multiplicative distance decay, and pass counts of small cascades whose roots
decide the count (docs/analysis.md, section 2), each with its values."""

import numpy as np

from .common import lse, make_rn, pm, registry, sig, softmax

rn, rng = make_rn(1805)
CASES, case = registry()


# --- the output gated and added to a residual, returned transposed too, the number of kept keys per row
# (a sum of ones over the scores' present points) and the lse
def after_ref(Q, K, V, G, X):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    mask = m <= p + 1
    s = Q @ K.T / np.sqrt(Q.shape[1])
    O = softmax(s, mask) @ V
    return O * sig(G) + X, O, O.T, mask.sum(1).astype(float), lse(s, mask)


case(
    "s18_out_gated_residual_copy_count_lse",
    """
# outputs read after O: a gated residual Y, O itself, O transposed, the kept-key count and the lse
input  Q[p, e], K[m, e], V[m, f], G[p, f], X[p, f]
output Y, O, O2, CNT, L
S[m, p]   = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + 1
GM[p]     = S[m, p] :: max(m)
EX[m, p]  = exp(S[m, p] - GM[p])
SD[p]     = EX[m, p]
O[p, f]   = EX[m, p] * V[m, f] / SD[p]
Y[p, f]   = O[p, f] * sigmoid(G[p, f]) + X[p, f]
O2[f, p]  = O[p, f]
ONE[m, p] = S[m, p] * 0 + 1
CNT[p]    = ONE[m, p]
L[p]      = log(SD[p]) + GM[p]
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2), G=rn(5, 2), X=rn(5, 2)),
    after_ref,
    passes={"m": 3},
)


# --- one softmax, two value tensors: V at the key, W one key behind (key 0 gets 0 from W)
def two_values_ref(Q, K, V, W):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    a = softmax(Q @ K.T, m <= p)
    Wp = np.vstack([np.zeros((1, W.shape[1])), W[:-1]])
    return a @ V, a @ Wp


case(
    "s18_out_two_value_tensors_one_lagged",
    """
# O and U share the weights; U reads W[m - 1] (absent at key 0, defaulted to 0)
input  Q[p, e], K[m, e], V[m, f], W[m, g]
output O, U
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
U[p, g]  = EX[m, p] * (W[m - 1, g] ?? 0) / SD[p]
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2), W=rn(7, 3)),
    two_values_ref,
    passes={"m": 3},
)


# --- sparsemax by bisection: tau in [max - 1, max], T = 40 halvings; the branch is a step made of clamp
# (F * 1e30 clamped to [0, 1]: 1 where the mass above the midpoint exceeds 1)
def sparsemax_ref(S, T=40):
    lo = S.max(1) - 1
    hi = S.max(1)
    for _ in range(T):
        mid = (lo + hi) * 0.5
        f = np.maximum(S - mid[:, None], 0).sum(1) - 1
        st = np.clip(f * 1e30, 0, 1)
        lo = lo + st * (mid - lo)
        hi = hi - (1 - st) * (hi - mid)
    tau = (lo + hi) * 0.5
    return np.maximum(S - tau[:, None], 0), tau


case(
    "s18_rec_sparsemax_bisection_clamp_step",
    """
# sparsemax: W = relu(S - tau) with sum_m W = 1; tau found by bisection over the iterative rank t
input  S[p, m]
param  T = 40
output W, TAU
MX[p]        = S[p, m] :: max(m)
LO[0, p]     = MX[p] - 1
HI[0, p]     = MX[p]
MID[t, p]    = (LO[t, p] + HI[t, p]) * 0.5
RS[t, p]     = relu(S[p, m] - MID[t, p])
F[t, p]      = RS[t, p] - 1
STEP[t, p]   = clamp(F[t, p] * 1e30, 0, 1)
LO[t + 1, p] = LO[t, p] + STEP[t, p] * (MID[t, p] - LO[t, p])
HI[t + 1, p] = HI[t, p] - (1 - STEP[t, p]) * (HI[t, p] - MID[t, p])
TAU[p]       = (LO[T, p] + HI[T, p]) * 0.5
W[p, m]      = relu(S[p, m] - TAU[p])
""",
    dict(S=rn(3, 5, scale=1.5)),
    sparsemax_ref,
)


# --- sigmoid attention with the bias -log(n) of Ramapuram et al., n the key length of each batch read
# from an integer tensor as a value
def sig_logn_ref(Q, K, V, n):
    B, P, _ = Q.shape
    O = np.zeros((B, P, V.shape[2]))
    for b in range(B):
        s = Q[b] @ K[b, : n[b]].T - np.log(n[b])
        O[b] = sig(s) @ V[b, : n[b]]
    return O


case(
    "s18_att_sigmoid_minus_log_length_int_value",
    """
# sigmoid(QK - log n[b]) over the first n[b] keys; n is an integer tensor used as a value and in a filter
input  Q[b, p, e], K[b, m, e], V[b, m, f], n[b] : int
output O
QK[b, m, p] = Q[b, p, e] * K[b, m, e]
O[b, p, f]  = sigmoid(QK[b, m, p] - log(n[b])) * V[b, m, f]  where m < n[b]
""",
    dict(Q=rn(2, 3, 2), K=rn(2, 5, 2), V=rn(2, 5, 2), n=np.array([5, 2])),
    sig_logn_ref,
    passes={"m": 1},
)


# --- xPos-style decay: the score times 2^((m - p) / G), causal (so the factor is at most 1)
def xpos_ref(Q, K, V, G=3.0):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T * 2.0 ** ((m - p) / G)
    return softmax(s, m <= p) @ V, lse(s, m <= p)


case(
    "s18_att_xpos_multiplicative_distance_decay",
    """
# a multiplicative relative-position factor exp2((m - p) / G) on each score
input  Q[p, e], K[m, e], V[m, f]
param  G = 3.0
output O, L
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] * exp2((m - p) / G)  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(7, 3, scale=2), K=rn(7, 3, scale=2), V=rn(7, 2)),
    xpos_ref,
    passes={"m": 3},
)


# --- pass counts decided by roots: a max of A does not order a sum over B (1 pass)
case(
    "s18_passes_max_of_one_input_scales_sum_of_other",
    """
# Y reduces A; Z reads B's fiber with Y: no fiber is read twice
input  A[k], B[k]
output Z
Y = A[k] :: max(k)
Z = B[k] * Y
""",
    dict(A=rn(6), B=rn(6)),
    lambda A, B: np.array(B.sum() * A.max()),
    passes={"k": 1},
)


case(
    "s18_passes_sum_reread_through_mixed_tensor",
    """
# X mixes A and B along k; Z reads X with Y, a sum over A: A's fiber again (2 passes)
input  A[k], B[k]
output Z
Y    = A[k]
X[k] = A[k] + B[k]
Z    = X[k] * Y
""",
    dict(A=rn(6), B=rn(6)),
    lambda A, B: np.array((A + B).sum() * A.sum()),
    passes={"k": 2},
)


case(
    "s18_passes_scaled_by_other_sum_then_own_sum",
    """
# W sums X = 2 B scaled by Y (a sum over A): pass 1; Z re-reads X after W, its own sum: pass 2
input  A[k], B[k]
output Z
Y    = A[k]
X[k] = B[k] * 2
W    = X[k] * Y
Z[k] = X[k] * W
""",
    dict(A=rn(6), B=rn(6)),
    lambda A, B: 2 * B * (2 * B.sum() * A.sum()),
    passes={"k": 2},
)


case(
    "s18_passes_min_max_normalisation",
    """
# min-max scaling: two reductions in pass 1, the re-read in pass 2
input  A[k]
output Z
Y    = A[k] :: max(k)
N    = A[k] :: min(k)
Z[k] = (A[k] - N) / (Y - N)
""",
    dict(A=rn(7)),
    lambda A: (A - A.min()) / (A.max() - A.min()),
    passes={"k": 2},
)
