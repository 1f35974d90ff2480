"""A mixture of two temperatures blended by a gate per head, block-local softmaxes over a user partition
of the keys blended by a weight per block (the last block ragged), a stabiliser over every key under sums
over the causal keys only (rows whose kept scores all sit 1e4 below the global max underflow to 0 / 0:
NaN), a softmax whose scores are read through reversed, strided queries, a spec with CRLF line endings,
scalar outputs of empty reductions, and one decode step with GQA, a sink and a window at a cache position."""

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


# --- a spec with CRLF line endings, a backslash continuation before CRLF, tabs and a comment-only line
def crlf_ref(X, w):
    return np.maximum(X @ w, 0), (X @ w).max()


case(
    "s18_lang_crlf_line_endings_continuation_tabs",
    "# CRLF line endings throughout\r\n"
    "input\tX[i, j], w[j]\r\n"
    "output Y, MX\r\n"
    "#\r\n"
    "XW[i] = X[i, j] * \\\r\n"
    "        w[j]\r\n"
    "Y[i]  = relu(XW[i])\t# a tab before the comment\r\n"
    "MX    = XW[i] :: max(i)\r\n",
    dict(X=rn(4, 3), w=rn(3)),
    crlf_ref,
)


# --- scalar outputs over empty reductions: absent, so the caller gets 0; ?? turns one into -1
case(
    "s18_lang_scalar_outputs_of_empty_reductions",
    """
# no i satisfies i > I (nor i < 0): the max, the min and the sum are absent (0 to the caller); D defaults A
input  X[i]
output A, B, C, D
A = X[i] :: max(i)  where i > I
B = X[i] :: min(i)  where i < 0
C = X[i]  where i > I
D = A ?? -1
""",
    dict(X=rn(5)),
    lambda X: (np.array(0.0), np.array(0.0), np.array(0.0), np.array(-1.0)),
)


# --- one decode step (P = 1) per batch at cache position pos[b]: GQA (3 query heads per KV head), a sink
# per head, a window of W = 4 keys ending at the query, keys past the position absent
def decode_ref(q, K, V, sink, pos, R=3, W=4):
    B, H, E = q.shape
    M = K.shape[2]
    O = np.zeros((B, H, V.shape[3]))
    for b in range(B):
        keep = (np.arange(M) <= pos[b]) & (pos[b] - np.arange(M) < W)
        for h in range(H):
            s = K[b, h // R][keep] @ q[b, h] / np.sqrt(E)
            gm = max(s.max(), sink[h]) if keep.any() else sink[h]
            ex = np.exp(s - gm)
            O[b, h] = ex @ V[b, h // R][keep] / (ex.sum() + np.exp(sink[h] - gm))
    return O


case(
    "s18_att_decode_step_gqa_sink_window_cache_position",
    """
# decoding: one query per batch at position pos[b], GQA, a sink per head, a window of W keys
input  q[b, h, e], K[b, g, m, e], V[b, g, m, f], sink[h], pos[b] : int
param  R = 3
param  W = 4
output O
S[b, h, m]  = q[b, h, e] * K[b, h // R, m, e] * rsqrt(E)  where 0 <= pos[b] - m < W
MX[b, h]    = S[b, h, m] :: max(m)
GM[b, h]    = max(MX[b, h] ?? sink[h], sink[h])
EX[b, h, m] = exp(S[b, h, m] - GM[b, h])
SD[b, h]    = EX[b, h, m]
DEN[b, h]   = (SD[b, h] ?? 0) + exp(sink[h] - GM[b, h])
O[b, h, f]  = EX[b, h, m] * V[b, h // R, m, f] / DEN[b, h]
""",
    dict(
        q=rn(3, 6, 4),
        K=rn(3, 2, 9, 4),
        V=rn(3, 2, 9, 2),
        sink=rn(6),
        pos=np.array([8, 2, -1]),
    ),
    decode_ref,
    passes={"m": 3},
)
