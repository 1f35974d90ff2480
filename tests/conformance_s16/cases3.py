"""Names: tensors whose names extend others' (``RM`` and ``RM_next``, ``S`` and ``S_ok``, ``X`` and
``X_present``, ``SLN`` and ``SLN_ok``), tensors and params spelled like the names the rewrites generate
(``BK``, ``BV``, ``BQK``, ``BA``, ``LAV``, ``RAV``, ``M0``), ranks named ``lo``, ``hi``, ``seen``, and a head
rank named ``m1`` with a feature rank ``m0`` in a spec whose keys the streaming rewrite splits into tiles."""

import numpy as np

from .common import make_rn, pm, registry, sig, softmax

rn, rng = make_rn(1603)
CASES, case = registry()


# --- softmax attention with names that extend each other, and a keep flag per key
_FLAGS = np.array([1, 0, 1, 1, 0, 0, 1])


def ext_ref(X, K, V, X_present):
    _P, E = X.shape
    s = X @ K.T / np.sqrt(E)
    keep = np.broadcast_to(X_present[None, :] == 1, s.shape)
    mx = np.where(keep, s, -np.inf).max(1)
    return softmax(s, keep) @ V, mx, mx + 1


case(
    "s16_names_rm_rm_next_s_s_ok_x_x_present",
    """
# softmax attention over the keys whose flag is set; names extend other names
input  X[p, e], K[m, e], V[m, f], X_present[m] : int
output O, RM, RM_next
S[p, m]    = X[p, e] * K[m, e] * rsqrt(E)
S_ok[p, m] = S[p, m]  where X_present[m] == 1
RM[p]      = S_ok[p, m] :: max(m)
RM_next[p] = RM[p] + 1
E_x[p, m]  = exp(S_ok[p, m] - RM[p])
E_x_sum[p] = E_x[p, m]
O[p, f]    = E_x[p, m] * V[m, f] / E_x_sum[p]
""",
    dict(X=rn(5, 4), K=rn(7, 4), V=rn(7, 3), X_present=_FLAGS),
    ext_ref,
    passes={"m": 3},
)


# --- ranks named lo (queries), seen (keys) and hi (values), softmax, causal
def lohi_ref(Q, K, V):
    L, E = Q.shape
    p, m = pm(L, K.shape[0])
    return softmax(Q @ K.T / np.sqrt(E), m <= p) @ V


case(
    "s16_names_ranks_lo_seen_hi_softmax_causal",
    """
# causal softmax attention; queries lo, keys seen, value features hi
input  Q[lo, e], K[seen, e], V[seen, hi]
output O
S[lo, seen]  = Q[lo, e] * K[seen, e] * rsqrt(E)  where seen <= lo
G[lo]        = S[lo, seen] :: max(seen)
X[lo, seen]  = exp(S[lo, seen] - G[lo])
D[lo]        = X[lo, seen]
O[lo, hi]    = X[lo, seen] * V[seen, hi] / D[lo]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    lohi_ref,
    passes={"seen": 3},
)


# --- the same names in a sigmoid spec the streaming rewrite tiles (keys seen, a lag making rows empty)
def lohi_sig_ref(Q, K, V):
    L = Q.shape[0]
    p, m = pm(L, K.shape[0])
    return np.where(m < p, sig(Q @ K.T), 0.0) @ V, np.where(m < p, 1.0, 0.0).sum(1)


case(
    "s16_names_ranks_lo_seen_hi_sigmoid_streamed",
    """
# strictly causal sigmoid attention; queries lo, keys seen, value features hi; a count per row
input  Q[lo, e], K[seen, e], V[seen, hi]
output O, CNT
S[lo, seen]  = Q[lo, e] * K[seen, e]  where seen < lo
A[lo, seen]  = sigmoid(S[lo, seen])
O[lo, hi]    = A[lo, seen] * V[seen, hi]
ONE[lo, seen] = A[lo, seen] * 0 + 1
CNT[lo]      = ONE[lo, seen]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    lohi_sig_ref,
    passes={"seen": 1},
)


# --- a rank named hi over the keys and lo over the values, seen over the queries, in a ReLU spec
def hilo_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    return np.where(m >= p - 2, np.maximum(Q @ K.T, 0), 0.0) @ V


case(
    "s16_names_ranks_hi_keys_lo_values_relu",
    """
# ReLU attention over keys hi >= seen - 2; values indexed by lo
input  Q[seen, e], K[hi, e], V[hi, lo]
output O
S[seen, hi] = Q[seen, e] * K[hi, e]  where hi >= seen - 2
O[seen, lo] = relu(S[seen, hi]) * V[hi, lo]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    hilo_ref,
)


# --- user tensors named like the streaming rewrite's own (BK, BV, BQK, BA, LAV, RAV) and an int param M0
# used as a value; the rewrite's tile rank m0 / size M0 must not be confused with them
def gen_names_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    bk = K * 2
    a = np.where(m <= p, sig(Q @ bk.T - 2), 0.0)
    lav = a @ V
    return lav, lav.sum(1)


case(
    "s16_names_user_tensors_like_rewrite_names",
    """
# causal sigmoid attention whose tensors are spelled like generated ones
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 2
output RAV, BV
BK[m, e]   = K[m, e] * 2
BQK[p, m]  = Q[p, e] * BK[m, e]  where m <= p
BA[p, m]   = sigmoid(BQK[p, m] - M0)
LAV[p, f]  = BA[p, m] * V[m, f]
RAV[p, f]  = LAV[p, f] ?? 0
BV[p]      = LAV[p, f]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    gen_names_ref,
)


# --- a head rank named m1 and a feature rank named m0, in a sigmoid spec whose keys m get tiled
def m1m0_ref(Q, K, V):
    H, P, D = Q.shape
    p, m = pm(P, K.shape[1])
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        out[h] = np.where(m <= p, sig(Q[h] @ K[h].T / np.sqrt(D)), 0.0) @ V[h]
    return out


case(
    "s16_names_head_rank_m1_feature_rank_m0_streamed",
    """
# causal sigmoid attention with heads m1 and head features m0 (the keys m are what gets tiled)
input  Q[m1, p, m0], K[m1, m, m0], V[m1, m, f]
output O
S[m1, p, m] = Q[m1, p, m0] * K[m1, m, m0] * rsqrt(M0)  where m <= p
O[m1, p, f] = sigmoid(S[m1, p, m]) * V[m1, m, f]
""",
    dict(Q=rn(2, 7, 4), K=rn(2, 7, 4), V=rn(2, 7, 3)),
    m1m0_ref,
    passes={"m": 1},
)


# --- a hand-written 1-pass loop (tiles of 3, causal, ragged M = 8) with RM and RM_next, S and S_ok, SLN and
# SLN_ok; empty tiles leave the state unchanged through ?? guards
def hand_ref(Q, K, V):
    P, E = Q.shape
    p, m = pm(P, K.shape[0])
    return softmax(Q @ K.T / np.sqrt(E), m <= p) @ V


case(
    "s16_names_hand_1pass_rm_next_sln_ok",
    """
# a guarded 1-pass (FlashAttention-2 style) causal loop, names extending each other
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
BK[m1, m0, e]    = K[m1 * M0 + m0, e]
BV[m1, m0, f]    = V[m1 * M0 + m0, f]
RM[0, p]         = -inf
RD[0, p]         = 0
RN[0, p, f]      = 0
S[m1, m0, p]     = Q[p, e] * BK[m1, m0, e] * rsqrt(E)
S_ok[m1, m0, p]  = S[m1, m0, p]  where m1 * M0 + m0 <= p
LM[m1, p]        = S_ok[m1, m0, p] :: max(m0)
RM_next[m1, p]   = max(RM[m1, p], LM[m1, p]) ?? RM[m1, p]
RM[m1 + 1, p]    = RM_next[m1, p]
SLN[m1, m0, p]   = exp(S_ok[m1, m0, p] - RM_next[m1, p])
SLN_ok[m1, p]    = SLN[m1, m0, p]
SLNV[m1, p, f]   = SLN[m1, m0, p] * BV[m1, m0, f]
PRM[m1, p]       = exp(RM[m1, p] - RM_next[m1, p])
RD[m1 + 1, p]    = RD[m1, p] * PRM[m1, p] + (SLN_ok[m1, p] ?? 0)
RN[m1 + 1, p, f] = RN[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O[p, f]          = RN[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    hand_ref,
    passes={"m": 1},
)


# --- sigmoid attention whose tensors extend each other (A, A_ok, AV, AV_sum) over keys flagged by an int
# tensor X_present, with an input X (the values) beside it
_XP = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0])


def a_ok_ref(Q, K, X, X_present):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    keep = (X_present[m] == 1) & (m <= p)
    a = np.where(keep, sig(Q @ K.T), 0.0)
    av = a @ X
    # the default is inside the summand: every filtered (m, f) point adds -5
    per_point = np.where(keep[:, :, None], a[:, :, None] * X[None, :, :], -5.0)
    return av, per_point.sum((1, 2))


case(
    "s16_names_a_a_ok_av_av_sum_streamed",
    """
# causal sigmoid attention over flagged keys (the first rows see none); a sum whose summand defaults to -5
input  Q[p, e], K[m, e], X[m, f], X_present[m] : int
output AV, AV_sum
S[p, m]     = Q[p, e] * K[m, e]
A[p, m]     = sigmoid(S[p, m])
A_ok[p, m]  = A[p, m]  where X_present[m] == 1 and m <= p
AV[p, f]    = A_ok[p, m] * X[m, f]
AV_sum[p]   = A_ok[p, m] * X[m, f] ?? -5
""",
    dict(Q=rn(9, 3), K=rn(9, 3), X=rn(9, 2), X_present=_XP),
    a_ok_ref,
)
