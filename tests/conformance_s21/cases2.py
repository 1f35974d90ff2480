"""Attention variants: MQA decode with ALiBi and a softcap overridden, GQA with projections in the spec and a
head count that R does not divide, a relative bias table with key padding in the BSHD layout, sigmoid
attention (1 pass), an online softmax over the unpartitioned key rank with a softcap and a causal filter,
agent attention with agents pooled from ragged key tiles, a dense mixture of heads, keys concatenated from a
cache and new tokens with ``??``, entropy statistics down to a scalar, ALiBi over integer positions with
padding, per-head window widths from ``h // R`` in the filter."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, scores, sig, softmax, weighted

rn, rng = make_rn(2102)
CASES, case = registry()


# --- MQA decode: one query per head at the last position, keys shared by every head, ALiBi slopes as an
# input, a tanh softcap (the param overridden to 2)
def mqa_ref(q, K, V, slope, CAP=2.0):
    M = K.shape[0]
    d = q @ K.T / np.sqrt(q.shape[1])
    s = CAP * np.tanh(d / CAP) - slope[:, None] * (M - 1 - np.arange(M))[None, :]
    return softmax(s) @ V


case(
    "s21_att_mqa_decode_alibi_softcap_overridden",
    """
input  q[h, e], K[m, e], V[m, f], slope[h]
param  CAP = 20.0
output O
D[h, m]  = q[h, e] * K[m, e] * rsqrt(E)
S[h, m]  = CAP * tanh(D[h, m] / CAP) - slope[h] * (M - 1 - m)
GM[h]    = S[h, m] :: max(m)
EX[h, m] = exp(S[h, m] - GM[h])
O[h, f]  = EX[h, m] * V[m, f] / ED[h]
ED[h]    = EX[h, m]
""",
    dict(q=rn(3, 4, scale=3), K=rn(9, 4, scale=3), V=rn(9, 2), slope=np.array([0.5, 0.25, 0.125])),
    mqa_ref,
    params={"CAP": 2.0},
)


# --- GQA self-attention with the projections in the spec: 5 query heads, R = 2, so 3 KV heads (the last one
# serves one query head); causal through a rank alias
def gqa_proj_ref(X, WQ, WK, WV, R=2):
    Q = np.einsum("tc,hce->hte", X, WQ)
    K = np.einsum("tc,gce->gte", X, WK)[np.arange(WQ.shape[0]) // R]
    V = np.einsum("tc,gcf->gtf", X, WV)[np.arange(WQ.shape[0]) // R]
    p, m = pm(X.shape[0], X.shape[0])
    return att(Q, K, V, mask=m <= p)


case(
    "s21_att_gqa_projections_in_spec_five_heads_three_groups",
    """
input  X[t, c], WQ[h, c, e], WK[g, c, e], WV[g, c, f]
rank   S = T
param  R = 2
output O
QP[h, t, e]  = X[t, c] * WQ[h, c, e]
KP[g, s, e]  = X[s, c] * WK[g, c, e]
VP[g, s, f]  = X[s, c] * WV[g, c, f]
SC[h, t, s]  = QP[h, t, e] * KP[h // R, s, e] * rsqrt(E)  where s <= t
GM[h, t]     = SC[h, t, s] :: max(s)
EX[h, t, s]  = exp(SC[h, t, s] - GM[h, t])
DN[h, t]     = EX[h, t, s]
O[h, t, f]   = EX[h, t, s] * VP[h // R, s, f] / DN[h, t]
""",
    dict(X=rn(6, 5), WQ=rn(5, 5, 3, scale=0.5), WK=rn(3, 5, 3, scale=0.5), WV=rn(3, 5, 2)),
    gqa_proj_ref,
    passes={"t": 1, "s": 3},  # (a key's projection is one row of X: no pass over t before the scores)
)


# --- BSHD layout, a per-head relative bias table indexed by clamp(m - p, -W, W) + W, key padding per batch
def relbias_ref(Q, K, V, rel, klen, W=3):
    q, k, v = (np.transpose(x, (0, 2, 1, 3)) for x in (Q, K, V))  # b h p e
    p, m = pm(Q.shape[1], K.shape[1])
    bias = rel[:, np.clip(m - p, -W, W) + W]  # h p m
    mask = m[None, None] < klen[:, None, None, None]
    out = att(q, k, v, mask=mask, bias=bias[None])
    return np.transpose(out, (0, 2, 1, 3))


case(
    "s21_att_bshd_relative_bias_table_clamped_key_padding",
    """
input  Q[b, p, h, e], K[b, m, h, e], V[b, m, h, f], rel[h, r], klen[b] : int
param  W = 3
output O
S[b, h, p, m]  = Q[b, p, h, e] * K[b, m, h, e] * rsqrt(E)  where m < klen[b]
B[b, h, p, m]  = S[b, h, p, m] + rel[h, clamp(m - p, -W, W) + W]
GM[b, h, p]    = B[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(B[b, h, p, m] - GM[b, h, p])
DN[b, h, p]    = EX[b, h, p, m]
O[b, p, h, f]  = EX[b, h, p, m] * V[b, m, h, f] / DN[b, h, p]
""",
    dict(Q=rn(2, 5, 2, 3), K=rn(2, 8, 2, 3), V=rn(2, 8, 2, 2), rel=rn(2, 7), klen=np.array([8, 3])),
    relbias_ref,
)


# --- sigmoid attention with a per-head bias: no reduction is re-read, 1 pass over m
case(
    "s21_att_sigmoid_per_head_bias_one_pass",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
O[h, p, f] = sigmoid(S[h, p, m] + bias[h]) * V[h, m, f]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 9, 3), V=rn(2, 9, 2), bias=np.array([-np.log(9), 0.5])),
    lambda Q, K, V, bias: weighted(sig(scores(Q, K) + bias[:, None, None]), V),
    passes={"m": 1},
)


# --- online softmax over the unpartitioned key rank (one key per step), softcapped scores, causal: a step
# past the query is absent and every state is carried over with ??
def online_ref(Q, K, V, CAP=5.0):
    s = CAP * np.tanh((Q @ K.T) / CAP)
    p, m = pm(Q.shape[0], K.shape[0])
    return softmax(s, m <= p) @ V


case(
    "s21_att_online_softmax_per_key_steps_softcap_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  CAP = 5.
output O
D[m, p]         = Q[p, e] * K[m, e]
S[m, p]         = CAP * tanh(D[m, p] / CAP)  where m <= p
RM[0, p]        = -inf
RD[0, p]        = 0
RN[0, p, f]     = 0
RM[m + 1, p]    = max(RM[m, p], S[m, p]) ?? RM[m, p]
C[m, p]         = exp(RM[m, p] - RM[m + 1, p])
RD[m + 1, p]    = RD[m, p] * C[m, p] + exp(S[m, p] - RM[m + 1, p]) ?? RD[m, p]
RN[m + 1, p, f] = RN[m, p, f] * C[m, p] + exp(S[m, p] - RM[m + 1, p]) * V[m, f] ?? RN[m, p, f]
O[p, f]         = RN[M, p, f] / RD[M, p]
""",
    dict(Q=rn(7, 3, scale=2), K=rn(7, 3, scale=2), V=rn(7, 2)),
    online_ref,
    passes={"m": 1},
)


# --- agent attention: agents are the means of tiles of M0 = 3 keys (M = 10: the last tile holds one key, its
# count from `absent * 0 + 1`); agents attend to the keys, queries attend to the agents
def agent_ref(Q, K, V, M0=3):
    M = K.shape[0]
    ag = np.array([K[i : i + M0].mean(0) for i in range(0, M, M0)])
    av = att(ag, K, V)
    return att(Q, ag, av)


case(
    "s21_att_agent_attention_agents_pooled_from_ragged_key_tiles",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = N * M0
output O
ONE[n, m0] = K[n * M0 + m0, 0] * 0 + 1
CNT[n]     = ONE[n, m0]
AG[n, e]   = K[n * M0 + m0, e] / CNT[n]
SA[n, m]   = AG[n, e] * K[m, e] * rsqrt(E)
GA[n]      = SA[n, m] :: max(m)
EA[n, m]   = exp(SA[n, m] - GA[n])
DA[n]      = EA[n, m]
AV[n, f]   = EA[n, m] * V[m, f] / DA[n]
SQ[p, n]   = Q[p, e] * AG[n, e] * rsqrt(E)
GQ[p]      = SQ[p, n] :: max(n)
EQ[p, n]   = exp(SQ[p, n] - GQ[p])
DQ[p]      = EQ[p, n]
O[p, f]    = EQ[p, n] * AV[n, f] / DQ[p]
""",
    dict(Q=rn(5, 4), K=rn(10, 4), V=rn(10, 3)),
    agent_ref,
)


# --- a dense mixture of heads: a router softmax over heads (temperature param overridden) weighs per-head
# attention outputs; the router weights are a second output
def moh_ref(X, WQ, K, V, WR, TAU=0.25):
    g = softmax((X @ WR.T) / TAU)  # p h
    Q = np.einsum("pc,hce->hpe", X, WQ)
    oh = att(Q, K, V)  # h p f
    return np.einsum("ph,hpf->pf", g, oh), g


case(
    "s21_att_dense_mixture_of_heads_router_temperature",
    """
input  X[p, c], WQ[h, c, e], K[h, m, e], V[h, m, f], WR[h, c]
param  TAU = 0.5
output O, G
RL[p, h]    = X[p, c] * WR[h, c] / TAU
RG[p]       = RL[p, h] :: max(h)
RE[p, h]    = exp(RL[p, h] - RG[p])
RS[p]       = RE[p, h]
G[p, h]     = RE[p, h] / RS[p]
QH[h, p, e] = X[p, c] * WQ[h, c, e]
S[h, p, m]  = QH[h, p, e] * K[h, m, e] * rsqrt(E)
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
DN[h, p]    = EX[h, p, m]
OH[h, p, f] = EX[h, p, m] * V[h, m, f] / DN[h, p]
O[p, f]     = G[p, h] * OH[h, p, f]
""",
    dict(X=rn(4, 3), WQ=rn(3, 3, 4), K=rn(3, 6, 4), V=rn(3, 6, 2), WR=rn(3, 3)),
    moh_ref,
    params={"TAU": 0.25},
)


# --- keys and values concatenated from a cache (N = 5) and new tokens (J = 4) with ??: c < N reads the cache,
# the rest the new tokens; a new query p sits at position N + p and sees c <= N + p
def concat_ref(Q, KA, VA, KB, VB):
    K = np.concatenate([KA, KB])
    V = np.concatenate([VA, VB])
    N = KA.shape[0]
    p, c = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, mask=c <= N + p)


case(
    "s21_att_cache_and_new_keys_concatenated_by_default",
    """
input  Q[p, e], KA[n, e], VA[n, f], KB[j, e], VB[j, f]
param  C = 9
output O
K[c, e]  = KA[c, e] ?? KB[c - N, e]
V[c, f]  = VA[c, f] ?? VB[c - N, f]
S[p, c]  = Q[p, e] * K[c, e] * rsqrt(E)  where c <= p + N
GM[p]    = S[p, c] :: max(c)
EX[p, c] = exp(S[p, c] - GM[p])
DN[p]    = EX[p, c]
O[p, f]  = EX[p, c] * V[c, f] / DN[p]
""",
    dict(Q=rn(4, 3), KA=rn(5, 3), VA=rn(5, 2), KB=rn(4, 3), VB=rn(4, 2)),
    concat_ref,
)


# --- attention with its log-sum-exp, the entropy of every row and the mean entropy as a scalar output
def entropy_ref(Q, K, V):
    s = scores(Q, K)
    a = softmax(s)
    h = -(a * np.log(a)).sum(-1)
    return a @ V, lse(s), h, h.mean()


case(
    "s21_att_entropy_per_row_and_mean_scalar_output",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, LSE, H, HBAR
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
LSE[p]   = GM[p] + log(SD[p])
A[p, m]  = EX[p, m] / SD[p]
O[p, f]  = A[p, m] * V[m, f]
H[p]     = -A[p, m] * (S[p, m] - LSE[p])
HBAR     = H[p] / P
""",
    dict(Q=rn(5, 4), K=rn(7, 4), V=rn(7, 3)),
    entropy_ref,
    passes={"m": 3},
)


# --- symmetric ALiBi over integer positions (keys of position -1 are padding): slopes 2^-(h+1) from the head
# coordinate, abs of a difference of int tensors as a value
def alibi_pos_ref(Q, K, V, qpos, kpos):
    H = Q.shape[0]
    slope = 2.0 ** -(np.arange(H) + 1)
    dist = np.abs(qpos[:, None] - kpos[None, :])
    bias = -slope[:, None, None] * dist[None]
    return att(Q, K, V, mask=(kpos >= 0)[None, None, :], bias=bias)


case(
    "s21_att_symmetric_alibi_int_positions_padding_keys",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], qpos[p] : int, kpos[m] : int
output O
D[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, p, m]  = D[h, p, m] - exp2(-(h + 1)) * abs(qpos[p] - kpos[m])  where kpos[m] >= 0
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
DN[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / DN[h, p]
""",
    dict(
        Q=rn(3, 4, 3),
        K=rn(3, 8, 3),
        V=rn(3, 8, 2),
        qpos=np.array([3, 9, 0, 5]),
        kpos=np.array([0, 1, -1, 4, 7, -1, 9, 12]),
    ),
    alibi_pos_ref,
)


# --- per-head sliding windows from the head coordinate: head h sees 0 <= p - m <= 2 * (h // R) + 1
def head_window_ref(Q, K, V, R=2):
    H = Q.shape[0]
    p, m = pm(Q.shape[1], K.shape[1])
    wid = 2 * (np.arange(H) // R) + 1
    mask = (p - m >= 0)[None] & ((p - m)[None] <= wid[:, None, None])
    return att(Q, K, V, mask=mask)


case(
    "s21_att_per_head_window_width_from_floor_div_in_filter",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  R = 2
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where 0 <= p - m <= 2 * (h // R) + 1
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
DN[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / DN[h, p]
""",
    dict(Q=rn(5, 8, 3), K=rn(5, 8, 3), V=rn(5, 8, 2)),
    head_window_ref,
)
