"""A mixture of two temperatures blended by a gate per head, block-local softmaxes over a user partition
of the keys blended by a weight per block (the last block ragged), a stabiliser over every key under sums
over the causal keys only (rows whose kept scores all sit 1e4 below the global max underflow to 0 / 0:
NaN), and a softmax whose scores are read through reversed, strided queries."""

import numpy as np

from .common import make_rn, pm, registry, sig, softmax

rn, rng = make_rn(1808)
CASES, case = registry()


# --- two softmaxes of the same causal scores, at temperatures 0.5 and 2, blended by sigmoid(g[h])
def two_temp_ref(Q, K, V, g):
    H, P, _ = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = Q[h] @ K[h].T
        a = sig(g[h]) * softmax(s / 0.5, m <= p) + (1 - sig(g[h])) * softmax(s / 2.0, m <= p)
        O[h] = a @ V[h]
    return O


case(
    "s18_att_two_temperatures_gated_per_head",
    """
# a sharp and a smooth softmax of one score tensor, mixed per head
input  Q[h, p, e], K[h, m, e], V[h, m, f], g[h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
E1[h, m, p] = exp((S[h, m, p] - GM[h, p]) / 0.5)
E2[h, m, p] = exp((S[h, m, p] - GM[h, p]) / 2.0)
D1[h, p]    = E1[h, m, p]
D2[h, p]    = E2[h, m, p]
O1[h, p, f] = E1[h, m, p] * V[h, m, f] / D1[h, p]
O2[h, p, f] = E2[h, m, p] * V[h, m, f] / D2[h, p]
O[h, p, f]  = sigmoid(g[h]) * O1[h, p, f] + (1 - sigmoid(g[h])) * O2[h, p, f]
""",
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), g=np.array([1.5, -0.5])),
    two_temp_ref,
    passes={"m": 3},
)


# --- softmax within each block of M0 = 3 keys, each block's output weighted by w[m1] and summed (M = 8:
# the last block has 2 keys)
def block_local_ref(Q, K, V, w, M0=3):
    P, M = Q.shape[0], K.shape[0]
    O = np.zeros((P, V.shape[1]))
    for j, a in enumerate(range(0, M, M0)):
        s = Q @ K[a : a + M0].T
        O += w[j] * softmax(s) @ V[a : a + M0]
    return O


case(
    "s18_att_block_local_softmax_weighted_blocks_ragged",
    """
# a softmax inside each block of keys; the blocks' outputs mixed by a weight per block
input  Q[p, e], K[m, e], V[m, f], w[j]
param  M0 = 3
rank   M = M1 * M0
output O
S[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e]
LM[m1, p]     = S[m1, m0, p] :: max(m0)
EX[m1, m0, p] = exp(S[m1, m0, p] - LM[m1, p])
LD[m1, p]     = EX[m1, m0, p]
LO[m1, p, f]  = EX[m1, m0, p] * V[m1 * M0 + m0, f] / LD[m1, p]
O[p, f]       = w[m1] * LO[m1, p, f]
""",
    dict(Q=rn(4, 3), K=rn(8, 3), V=rn(8, 2), w=rn(3)),
    block_local_ref,
)


# --- the max over every key, the sums over the causal keys: row p's kept scores are T[p, m] for m <= p;
# rows 1 and 3 keep only scores 1e4 below a later key's, so exp underflows everywhere and 0 / 0 is NaN
def _T():
    T = rn(5, 5)
    T[1, :2] = -1e4
    T[1, 4] = 3.0
    T[3, :4] = -2e4
    T[3, 4] = 5.0
    return T


def underflow_ref(T, V):
    P, M = T.shape
    p, m = pm(P, M)
    gm = T.max(1, keepdims=True)
    ex = np.where(m <= p, np.exp(T - gm), 0)
    return ex @ V / ex.sum(1)[:, None]


case(
    "s18_ieee_global_max_causal_sums_underflow_nan",
    """
# GM is taken over all keys, EX only over m <= p: a row whose kept keys are far below GM gets 0 / 0
input  T[p, m], V[m, f]
output O
GM[p]    = T[p, m] :: max(m)
EX[m, p] = exp(T[p, m] - GM[p])  where m <= p
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(T=_T(), V=rn(5, 2)),
    underflow_ref,
    passes={"m": 3},
)


# --- queries read reversed and strided (Q[2 * (P - 1 - p)]): the output's row p is the query row
# 2 * (P - 1 - p) of a longer Q; causal against the output row
def strided_q_ref(Q, K, V, P=3):
    M = K.shape[0]
    p, m = pm(P, M)
    q = Q[[2 * (P - 1 - i) for i in range(P)]]
    return softmax(q @ K.T, m <= p + 1) @ V


case(
    "s18_att_queries_read_reversed_and_strided",
    """
# row p of the output uses query 2 (P - 1 - p) of Q (whose length N = 6 is not P = 3)
input  Q[n, e], K[m, e], V[m, f]
param  P = 3
output O
S[m, p]  = Q[2 * (P - 1 - p), e] * K[m, e]  where m <= p + 1
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(6, 3), K=rn(5, 3), V=rn(5, 2)),
    strided_q_ref,
    passes={"m": 3},
)
