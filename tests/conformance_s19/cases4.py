"""Attention variants (../shared/reference/fusemax.md and peers.md): the FuseMax cascades in the paper's rank
order (deferred division returning its statistics, the TileFlow 2-pass form with its tile overridden,
Cascade 5 under a causal filter with ragged tiles), agent attention (agents pooled from the queries by a
partition, two softmaxes), a dense mixture of heads routed by a softmax over heads, GQA with the heads split
by a partition, decode with a fixed number of splits merged by their log-sum-exps, non-causal linear
attention, sigmoid attention with a softcap inside a symmetric window, cross attention with key padding per
batch and packed documents, and ALiBi from coordinates on a bottom-right causal mask."""

import numpy as np

from .common import any_row, att, elu, lse, make_rn, pm, registry, sig, softmax

rn, rng = make_rn(1904)
CASES, case = registry()


# --- Cascade 4 with deferred division, in the paper's rank order, returning GM and SD too
def deferred_ref(Q, K, V):
    s = Q.T @ K  # [p, m]
    gm = s.max(1)
    sd = np.exp(s - gm[:, None]).sum(1)
    return (softmax(s) @ V.T).T, gm, sd


case(
    "s19_att_cascade4_deferred_paper_order_statistics_out",
    """
# FuseMax Cascade 4 with FlashAttention-2's deferred division
input  Q[e, p], K[e, m], V[f, m]
output AV, GM, SD
QK[m, p]  = Q[e, p] * K[e, m]
GM[p]     = QK[m, p] :: max(m)
SN[m, p]  = exp(QK[m, p] - GM[p])
SD[p]     = SN[m, p]
SNV[f, p] = SN[m, p] * V[f, m]
AV[f, p]  = SNV[f, p] / SD[p]
""",
    dict(Q=rn(4, 5), K=rn(4, 9), V=rn(3, 9)),
    deferred_ref,
    passes={"m": 2, "e": 1, "f": 1},
)


# --- the TileFlow 2-pass cascade of fusemax.md, M = 11 ragged in tiles of M0 = 5 (overridden from 4)
case(
    "s19_att_tileflow_2pass_paper_order_tile_overridden",
    """
input  Q[e, p], K[e, m], V[f, m]
param  M0 = 4
rank   M = M1 * M0
output AV
BK[e, m1, m0] = K[e, m1 * M0 + m0]
BV[f, m1, m0] = V[f, m1 * M0 + m0]
BQK[m1, m0, p] = Q[e, p] * BK[e, m1, m0]                 # pass 1
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - LM[m1, p])
SLD[m1, p]     = SLN[m1, m0, p]
GM[p]          = LM[m1, p] :: max(m1)
CF[m1, p]      = exp(LM[m1, p] - GM[p])                  # correction factor
SD[p]          = SLD[m1, p] * CF[m1, p]                  # sum over m1
SN[m1, m0, p]  = SLN[m1, m0, p] * CF[m1, p]              # pass 2
A[m1, m0, p]   = SN[m1, m0, p] / SD[p]
AV[f, p]       = A[m1, m0, p] * BV[f, m1, m0]
""",
    dict(Q=rn(4, 6), K=rn(4, 11), V=rn(3, 11)),
    lambda Q, K, V: (softmax(Q.T @ K) @ V.T).T,
    params={"M0": 5},
    passes={"m": 2},
)


# --- Cascade 5 under a causal filter, ragged tiles (M = P = 10, M0 = 4): the first tile always holds key 0,
# so every running max is finite from the first step; an empty tile leaves the state as it is
case(
    "s19_att_cascade5_causal_ragged_tiles_guarded",
    """
input  Q[e, p], K[e, m], V[f, m]
param  M0 = 4
rank   M = M1 * M0
output AV, LSE
BK[e, m1, m0]     = K[e, m1 * M0 + m0]
BV[f, m1, m0]     = V[f, m1 * M0 + m0]
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[f, 0, p]      = 0
BQK[m1, m0, p]    = Q[e, p] * BK[e, m1, m0] * rsqrt(E)  where m1 * M0 + m0 <= p
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[f, m1, p]    = SLN[m1, m0, p] * BV[f, m1, m0]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]     = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = (SLNV[f, m1, p] ?? 0) + RNV[f, m1, p] * PRM[m1, p]
AV[f, p]          = RNV[f, M1, p] / RD[M1, p]
LSE[p]            = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=rn(4, 10), K=rn(4, 10), V=rn(3, 10)),
    lambda Q, K, V: (
        (softmax(Q.T @ K / 2, np.tril(np.ones((10, 10), bool))) @ V.T).T,
        lse(Q.T @ K / 2, np.tril(np.ones((10, 10), bool))),
    ),
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- agent attention (Han et al.): agents are the queries mean-pooled in groups of P0; the agents attend
# the keys, then the queries attend the agents, whose values are the first softmax's outputs
def agent_ref(Q, K, V, P0=2):
    P, E = Q.shape
    A = Q.reshape(P // P0, P0, E).mean(1)
    AV = softmax(A @ K.T / np.sqrt(E)) @ V
    return softmax(Q @ A.T / np.sqrt(E)) @ AV


case(
    "s19_att_agent_attention_pooled_queries_two_softmaxes",
    """
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 2
rank   P = P1 * P0
output O
AG[p1, e]     = Q[p1 * P0 + p0, e] / P0                  # agent tokens: the mean of each group of queries
S1[p1, m]     = AG[p1, e] * K[m, e] * rsqrt(E)
G1[p1]        = S1[p1, m] :: max(m)
X1[p1, m]     = exp(S1[p1, m] - G1[p1])
D1[p1]        = X1[p1, m]
AV[p1, f]     = X1[p1, m] * V[m, f] / D1[p1]
S2[p, p1]     = Q[p, e] * AG[p1, e] * rsqrt(E)
G2[p]         = S2[p, p1] :: max(p1)
X2[p, p1]     = exp(S2[p, p1] - G2[p])
D2[p]         = X2[p, p1]
O[p, f]       = X2[p, p1] * AV[p1, f] / D2[p]
""",
    dict(Q=rn(6, 4), K=rn(5, 4), V=rn(5, 3)),
    agent_ref,
)


# --- a dense mixture of heads: a router softmax over heads (per query) weights each head's attention output
def moh_ref(X, WQ, WK, WV, WR):
    P = X.shape[0]
    H = WQ.shape[0]
    logits = X @ WR  # [p, h]
    w = softmax(logits, axis=1)
    O = np.zeros((P, WV.shape[2]))
    for h in range(H):
        q, k, v = X @ WQ[h], X @ WK[h], X @ WV[h]
        O += w[:, h : h + 1] * (softmax(q @ k.T / np.sqrt(q.shape[1])) @ v)
    return O


case(
    "s19_att_mixture_of_heads_softmax_router",
    """
input  X[t, d], WQ[h, d, e], WK[h, d, e], WV[h, d, f], WR[d, h]
rank   P = T
rank   M = T
output O
Q[h, p, e]  = X[p, d] * WQ[h, d, e]
K[h, m, e]  = X[m, d] * WK[h, d, e]
V[h, m, f]  = X[m, d] * WV[h, d, f]
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
HO[h, p, f] = EX[h, p, m] * V[h, m, f] / SD[h, p]
RL[p, h]    = X[p, d] * WR[d, h]
RG[p]       = RL[p, h] :: max(h)
RE[p, h]    = exp(RL[p, h] - RG[p])
RS[p]       = RE[p, h]
O[p, f]     = RE[p, h] / RS[p] * HO[h, p, f]
""",
    dict(X=rn(5, 4), WQ=rn(3, 4, 2), WK=rn(3, 4, 2), WV=rn(3, 4, 3), WR=rn(4, 3)),
    moh_ref,
)


# --- GQA with the query heads split by a partition: head h = g * R + r reads the key/value head g; the
# output keeps the two parts; G comes from the partition and must agree with K's declared size
def gqa_part_ref(Q, K, V, R=3):
    H = Q.shape[0]
    G = H // R
    O = att(Q, np.repeat(K, R, axis=0), np.repeat(V, R, axis=0))
    return O.reshape(G, R, *O.shape[1:])


case(
    "s19_att_gqa_heads_split_by_partition",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  R = 3
rank   H = G * R
output O
S[g, r, m, p]  = Q[g * R + r, p, e] * K[g, m, e] * rsqrt(E)
GM[g, r, p]    = S[g, r, m, p] :: max(m)
EX[g, r, m, p] = exp(S[g, r, m, p] - GM[g, r, p])
SD[g, r, p]    = EX[g, r, m, p]
O[g, r, p, f]  = EX[g, r, m, p] * V[g, m, f] / SD[g, r, p]
""",
    dict(Q=rn(6, 3, 4), K=rn(2, 5, 4), V=rn(2, 5, 2)),
    gqa_part_ref,
)


# --- decode with a fixed number of splits S1 = 3 over M = 10 keys (S0 = 4, the last split ragged), each
# split's partial output and log-sum-exp, merged by a softmax over the splits
def splits_ref(q, K, V):
    E = q.shape[0]
    s = K @ q / np.sqrt(E)
    return softmax(s) @ V, lse(s)


case(
    "s19_att_decode_fixed_split_count_merged_by_lse",
    """
input  q[e], K[m, e], V[m, f]
param  S1 = 3
rank   M = S1 * S0
output O, L
S[s1, s0]  = q[e] * K[s1 * S0 + s0, e] * rsqrt(E)
LM[s1]     = S[s1, s0] :: max(s0)
EX[s1, s0] = exp(S[s1, s0] - LM[s1])
LD[s1]     = EX[s1, s0]
PO[s1, f]  = EX[s1, s0] * V[s1 * S0 + s0, f] / LD[s1]
PL[s1]     = LM[s1] + log(LD[s1])
GL         = PL[s1] :: max(s1)
W[s1]      = exp(PL[s1] - GL)
WS         = W[s1]
O[f]       = W[s1] * PO[s1, f] / WS
L          = GL + log(WS)
""",
    dict(q=rn(4), K=rn(10, 4), V=rn(10, 3)),
    lambda q, K, V: splits_ref(q, K, V),
)


# --- non-causal linear attention with batch and heads, elu + 1 features: 1-pass over m, state E*F
def linear_ref(Q, K, V):
    fq, fk = elu(Q) + 1, elu(K) + 1
    kv = np.einsum("bhme,bhmf->bhef", fk, V)
    z = fk.sum(2)
    return np.einsum("bhpe,bhef->bhpf", fq, kv) / np.einsum("bhpe,bhe->bhp", fq, z)[..., None]


case(
    "s19_att_linear_noncausal_elu_features",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
FQ[b, h, p, e]  = elu(Q[b, h, p, e]) + 1
FK[b, h, m, e]  = elu(K[b, h, m, e]) + 1
KV[b, h, e, f]  = FK[b, h, m, e] * V[b, h, m, f]
Z[b, h, e]      = FK[b, h, m, e]
NUM[b, h, p, f] = FQ[b, h, p, e] * KV[b, h, e, f]
DEN[b, h, p]    = FQ[b, h, p, e] * Z[b, h, e]
O[b, h, p, f]   = NUM[b, h, p, f] / DEN[b, h, p]
""",
    dict(Q=rn(2, 2, 4, 3), K=rn(2, 2, 6, 3), V=rn(2, 2, 6, 2)),
    linear_ref,
    passes={"m": 1},
)


# --- sigmoid attention with a softcap inside a symmetric window abs(p - m) <= W, and a bias of -log(M)
def sig_cap_ref(Q, K, V, C=3.0, W=1):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = C * np.tanh(Q @ K.T / np.sqrt(Q.shape[1]) / C) - np.log(M)
    return (sig(s) * (np.abs(p - m) <= W)) @ V


case(
    "s19_att_sigmoid_softcap_symmetric_window",
    """
input  Q[p, e], K[m, e], V[m, f]
param  C = 3.0
param  W = 1
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = C * tanh(QK[p, m] / C) - log(M)
O[p, f] = sigmoid(S[p, m]) * V[m, f]  where abs(p - m) <= W
""",
    dict(Q=rn(5, 4, scale=3), K=rn(6, 4, scale=3), V=rn(6, 2)),
    sig_cap_ref,
    passes={"m": 1},
)


# --- cross attention over packed documents with key padding per batch: keys at or past klen[b] are absent,
# a query sees the keys of its document; batch 1 has no key of document 2, so its row gives 0
def cross_doc_ref(Q, K, V, qd, kd, klen):
    B, P, E = Q.shape
    M = K.shape[1]
    O = np.zeros((B, P, V.shape[2]))
    L = np.zeros((B, P))
    for b in range(B):
        mask = (qd[b][:, None] == kd[b][None, :]) & (np.arange(M)[None, :] < klen[b])
        s = Q[b] @ K[b].T / np.sqrt(E)
        O[b] = softmax(s, mask) @ V[b]
        L[b] = np.where(any_row(mask), lse(s, mask), 0)
    return O, L


case(
    "s19_att_cross_packed_docs_key_padding_empty_rows",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], qd[b, p] : int, kd[b, m] : int, klen[b] : int
output O, L
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where qd[b, p] == kd[b, m] and m < klen[b]
GM[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * V[b, m, f] / SD[b, p]
L[b, p]     = GM[b, p] + log(SD[b, p])
""",
    dict(
        Q=rn(2, 4, 3),
        K=rn(2, 6, 3),
        V=rn(2, 6, 5),
        qd=np.array([[0, 0, 1, 2], [0, 1, 1, 2]]),
        kd=np.array([[0, 1, 1, 2, 2, 2], [0, 0, 1, 1, 2, 2]]),
        klen=np.array([6, 4]),
    ),
    cross_doc_ref,
    passes={"m": 3},
)


# --- ALiBi from coordinates on a bottom-right causal mask (P = 3 new queries after M - P cached keys),
# slopes 2^-(h + 1) from the head coordinate
def alibi_br_ref(Q, K, V):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = Q[h] @ K[h].T / np.sqrt(E) - 2.0 ** (-(h + 1)) * (p + M - P - m)
        O[h] = softmax(s, m <= p + M - P) @ V[h]
    return O


case(
    "s19_att_alibi_coordinates_bottom_right_causal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, p, m]  = QK[h, p, m] - exp2(-(h + 1)) * (p + M - P - m)  where m <= p + M - P
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(2, 3, 4), K=rn(2, 7, 4), V=rn(2, 7, 3)),
    alibi_br_ref,
)
