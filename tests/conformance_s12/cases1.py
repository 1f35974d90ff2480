"""Roadmap-shaped attention variants: KV-cache offsets (a scalar int position), sinks, differential attention,
retention, ALiBi slopes, packed cross attention with segment ids, per-batch prefixes and key lengths,
dilated and strided windows, a temperature tensor, GQA index arithmetic, gated outputs, linear feature maps
(cosFormer, Performer)."""

import numpy as np

from .common import att, causal, make_rn, registry, softmax

rn, rng = make_rn(1201)
CASES, case = registry()

# --- KV-cache decoding with an offset: P new queries at the end of M keys (bottom-right causal), 3-pass
case(
    "s12_kv_cache_offset_3pass",
    """
# P new queries see the cache and themselves: m <= p + M - P
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p + M - P
G[h, p]    = S[h, p, m] :: max(m)
N[h, p, m] = exp(S[h, p, m] - G[h, p])
D[h, p]    = N[h, p, m]
A[h, p, m] = N[h, p, m] / D[h, p]
O[h, p, f] = A[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(2, 5, 6), K=rn(2, 37, 6), V=rn(2, 37, 3)),
    lambda Q, K, V: att(Q, K, V, mask=causal(5, 37, 32)),
    passes={"m": 3},
)

# --- decoding with a scalar int position: the cache has M slots, only 0 .. pos + p are valid
case(
    "s12_kv_cache_scalar_int_pos",
    """
# pos: number of tokens already in the cache (a scalar int input); slots after pos + p hold garbage
input  Q[p, e], K[m, e], V[m, f], pos : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= pos + p
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
NV[p, f] = N[p, m] * V[m, f]
D[p]     = N[p, m]
O[p, f]  = NV[p, f] / D[p]
""",
    dict(Q=rn(4, 5), K=rn(37, 5), V=rn(37, 2), pos=np.array(20)),
    lambda Q, K, V, pos: att(Q, K, V, mask=causal(4, 37, int(pos))),
    passes={"m": 2},
)


# --- attention sink: one learned logit per head joins the normaliser, with a sliding window
def sink_window_ref(Q, K, V, SINK, W=4):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    P, M = s.shape[-2:]
    d = np.arange(P)[:, None] - np.arange(M)[None, :]
    mask = (d >= 0) & (d < W)
    s = np.where(mask, s, -np.inf)
    sk = np.broadcast_to(SINK[None, :, None, None], (*s.shape[:-1], 1))
    full = np.concatenate([s, sk], axis=-1)
    mx = full.max(-1, keepdims=True)
    ex = np.exp(full - mx)
    w = ex / ex.sum(-1, keepdims=True)
    return np.einsum("bhpm,bhmf->bhpf", w[..., :-1], V)


case(
    "s12_sink_sliding_window",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], SINK[h]
param  W = 4
output O
S[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where 0 <= p - m < W
L[b, h, p]    = S[b, h, p, m] :: max(m)
G[b, h, p]    = max(L[b, h, p], SINK[h])
N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
D[b, h, p]    = N[b, h, p, m]
DS[b, h, p]   = D[b, h, p] + exp(SINK[h] - G[b, h, p])
O[b, h, p, f] = N[b, h, p, m] * V[b, h, m, f] / DS[b, h, p]
""",
    dict(Q=rn(1, 2, 11, 4), K=rn(1, 2, 11, 4), V=rn(1, 2, 11, 3), SINK=np.array([0.5, 3.0])),
    sink_window_ref,
    passes={"m": 3},
)


# --- differential attention with lambda re-parameterised from four vectors (Ye et al., 2024)
def diff_ref(Q1, K1, Q2, K2, V, LQ1, LK1, LQ2, LK2, LINIT=0.8):
    lam = np.exp(LQ1 @ LK1) - np.exp(LQ2 @ LK2) + LINIT
    P, M = Q1.shape[0], K1.shape[0]
    mask = causal(P, M)
    a1 = att(Q1, K1, V, mask=mask)
    a2 = att(Q2, K2, V, mask=mask)
    return (a1 - lam * a2) * (1 - LINIT)


case(
    "s12_differential_lambda_reparam",
    """
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f], LQ1[e], LK1[e], LQ2[e], LK2[e]
param  LINIT = 0.8
output O
L1         = LQ1[e] * LK1[e]
L2         = LQ2[e] * LK2[e]
LAM        = exp(L1) - exp(L2) + LINIT
S1[p, m]   = Q1[p, e] * K1[m, e] * rsqrt(E)  where m <= p
S2[p, m]   = Q2[p, e] * K2[m, e] * rsqrt(E)  where m <= p
G1[p]      = S1[p, m] :: max(m)
G2[p]      = S2[p, m] :: max(m)
N1[p, m]   = exp(S1[p, m] - G1[p])
N2[p, m]   = exp(S2[p, m] - G2[p])
D1[p]      = N1[p, m]
D2[p]      = N2[p, m]
A[p, m]    = N1[p, m] / D1[p] - LAM * N2[p, m] / D2[p]
O[p, f]    = A[p, m] * V[m, f] * (1 - LINIT)
""",
    dict(
        Q1=rn(7, 4),
        K1=rn(7, 4),
        Q2=rn(7, 4),
        K2=rn(7, 4),
        V=rn(7, 3),
        LQ1=rn(4, scale=0.3),
        LK1=rn(4, scale=0.3),
        LQ2=rn(4, scale=0.3),
        LK2=rn(4, scale=0.3),
    ),
    diff_ref,
)


# --- retention (RetNet) in its parallel form: per-head gamma, decay gamma^(p - m), |row sum| normaliser
def retention_ref(Q, K, V, GAM):
    _H, P, E = Q.shape
    M = K.shape[1]
    d = np.arange(P)[:, None] - np.arange(M)[None, :]
    dec = np.where(d >= 0, GAM[:, None, None] ** np.maximum(d, 0), 0.0)
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E) * dec
    den = np.maximum(np.abs(s.sum(-1)), 1.0)
    return np.einsum("hpm,hmf->hpf", s, V) / den[..., None]


case(
    "s12_retention_per_head_gamma",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], GAM[h]
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, p, m]  = QK[h, p, m] * exp(log(GAM[h]) * (p - m))
D0[h, p]    = S[h, p, m]
DN[h, p]    = max(abs(D0[h, p]), 1)
O[h, p, f]  = S[h, p, m] * V[h, m, f] / DN[h, p]
""",
    dict(Q=rn(2, 9, 4), K=rn(2, 9, 4), V=rn(2, 9, 3), GAM=np.array([0.9, 0.5])),
    retention_ref,
    passes={"m": 2},
)


# --- ALiBi with per-head slopes as an input tensor, written as a guarded causal 1-pass cascade, ragged tiles
def alibi_ref(Q, K, V, SL):
    _H, P, _E = Q.shape
    M = K.shape[1]
    bias = SL[:, None, None] * (np.arange(M)[None, None, :] - np.arange(P)[None, :, None])
    return att(Q, K, V, mask=causal(P, M), bias=bias)


case(
    "s12_alibi_slopes_1pass_ragged",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], SL[h]
param  M0 = 8
rank   M = M1 * M0
output AV
QK[h, m1, m0, p]  = Q[h, p, e] * K[h, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
BQK[h, m1, m0, p] = QK[h, m1, m0, p] + SL[h] * (m1 * M0 + m0 - p)
RM[h, 0, p]       = -inf
RD[h, 0, p]       = 0
RNV[h, 0, p, f]   = 0
LM[h, m1, p]      = BQK[h, m1, m0, p] :: max(m0)
RM[h, m1 + 1, p]  = max(RM[h, m1, p], LM[h, m1, p] ?? -inf)
SLN[h, m1, m0, p] = exp(BQK[h, m1, m0, p] - RM[h, m1 + 1, p])
SLD[h, m1, p]     = SLN[h, m1, m0, p]
SLNV[h, m1, p, f] = SLN[h, m1, m0, p] * V[h, m1 * M0 + m0, f]
PRM[h, m1, p]     = exp(RM[h, m1, p] - RM[h, m1 + 1, p])
RD[h, m1 + 1, p]  = (SLD[h, m1, p] ?? 0) + RD[h, m1, p] * PRM[h, m1, p]
RNV[h, m1 + 1, p, f] = (SLNV[h, m1, p, f] ?? 0) + RNV[h, m1, p, f] * PRM[h, m1, p]
AV[h, p, f]       = RNV[h, M1, p, f] / RD[h, M1, p]
""",
    dict(Q=rn(2, 37, 4), K=rn(2, 37, 4), V=rn(2, 37, 3), SL=np.array([0.25, 0.0625])),
    alibi_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- packed cross attention: integer segment ids for the queries and for the keys; a query whose segment has
# no key gets 0
def seg_ref(Q, K, V, qseg, kseg):
    return att(Q, K, V, mask=qseg[:, None] == kseg[None, :])


case(
    "s12_segments_queries_and_keys",
    """
input  Q[p, e], K[m, e], V[m, f], qseg[p] : int, kseg[m] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where qseg[p] == kseg[m]
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(
        Q=rn(6, 4),
        K=rn(37, 4),
        V=rn(37, 2),
        qseg=np.array([0, 0, 1, 3, 2, 2]),
        kseg=np.repeat([0, 1, 2], [13, 11, 13]),
    ),
    seg_ref,
)


# --- prefix-LM with a per-batch prefix length (an int tensor): bidirectional within the prefix
def plen_ref(Q, K, V, plen):
    _B, P, _E = Q.shape
    M = K.shape[1]
    mask = (np.arange(M)[None, None, :] < plen[:, None, None]) | causal(P, M)[None]
    return att(Q, K, V, mask=mask)


case(
    "s12_prefix_lm_per_batch_length",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], plen[b] : int
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < plen[b] or m <= p
G[b, p]     = S[b, p, m] :: max(m)
N[b, p, m]  = exp(S[b, p, m] - G[b, p])
D[b, p]     = N[b, p, m]
O[b, p, f]  = N[b, p, m] * V[b, m, f] / D[b, p]
""",
    dict(Q=rn(3, 10, 4), K=rn(3, 10, 4), V=rn(3, 10, 2), plen=np.array([0, 4, 10])),
    plen_ref,
)


# --- dilated sliding window: W keys, every DL-th position
def dilated_ref(Q, K, V, W=3, DL=2):
    P, M = Q.shape[0], K.shape[0]
    d = np.arange(P)[:, None] - np.arange(M)[None, :]
    return att(Q, K, V, mask=(d >= 0) & (d < W * DL) & (d % DL == 0))


case(
    "s12_dilated_window",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
param  DL = 2
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where 0 <= p - m < W * DL and (p - m) % DL == 0
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(13, 4), K=rn(13, 4), V=rn(13, 3)),
    dilated_ref,
)
case(
    "s12_dilated_window_override",
    CASES[-1]["spec"],
    dict(Q=rn(17, 3), K=rn(17, 3), V=rn(17, 2)),
    lambda Q, K, V: dilated_ref(Q, K, V, W=2, DL=5),
    params={"W": 2, "DL": 5},
)


# --- strided sparse attention (Child et al.): causal, same block or a multiple of the stride back
def strided_ref(Q, K, V, ST=4):
    P, M = Q.shape[0], K.shape[0]
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    mask = (m <= p) & (((p - m) % ST == 0) | (p // ST == m // ST))
    return att(Q, K, V, mask=mask)


case(
    "s12_strided_sparse_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  ST = 4
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p and ((p - m) % ST == 0 or p // ST == m // ST)
G[p]     = S[p, m] :: max(m)
N[p, m]  = exp(S[p, m] - G[p])
D[p]     = N[p, m]
O[p, f]  = N[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(19, 4), K=rn(19, 4), V=rn(19, 2)),
    strided_ref,
)


# --- key padding per batch, one batch with no valid key at all (its rows are 0)
def lens_ref(Q, K, V, lens):
    M = K.shape[2]
    mask = (np.arange(M)[None, :] < lens[:, None])[:, None, None, :]
    return att(Q, K, V, mask=mask)


case(
    "s12_key_lengths_one_empty_batch",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], lens[b] : int
output O
S[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < lens[b]
G[b, h, p]    = S[b, h, p, m] :: max(m)
N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
D[b, h, p]    = N[b, h, p, m]
O[b, h, p, f] = N[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
""",
    dict(Q=rn(3, 2, 3, 4), K=rn(3, 2, 37, 4), V=rn(3, 2, 37, 2), lens=np.array([0, 5, 37])),
    lens_ref,
)

# --- softmax temperature as an input tensor, per head and query
case(
    "s12_temperature_tensor_causal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], TEMP[h, p]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] / TEMP[h, p]  where m <= p
G[h, p]    = S[h, p, m] :: max(m)
N[h, p, m] = exp(S[h, p, m] - G[h, p])
D[h, p]    = N[h, p, m]
O[h, p, f] = N[h, p, m] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 6, 4), K=rn(2, 6, 4), V=rn(2, 6, 3), TEMP=np.exp(rn(2, 6))),
    lambda Q, K, V, TEMP: np.einsum(
        "hpm,hmf->hpf",
        softmax(np.einsum("hpe,hme->hpm", Q, K) / TEMP[..., None], mask=causal(6, 6)[None]),
        V,
    ),
)


# --- GQA with an interleaved head map h % G (G from K's shape), causal
case(
    "s12_gqa_interleaved_mod",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
output O
S[b, h, p, m] = Q[b, h, p, e] * K[b, h % G, m, e] * rsqrt(E)  where m <= p
G2[b, h, p]   = S[b, h, p, m] :: max(m)
N[b, h, p, m] = exp(S[b, h, p, m] - G2[b, h, p])
D[b, h, p]    = N[b, h, p, m]
O[b, h, p, f] = N[b, h, p, m] * V[b, h % G, m, f] / D[b, h, p]
""",
    dict(Q=rn(1, 6, 5, 4), K=rn(1, 2, 5, 4), V=rn(1, 2, 5, 3)),
    lambda Q, K, V: att(Q, np.tile(K, (1, 3, 1, 1)), np.tile(V, (1, 3, 1, 1)), mask=causal(5, 5)),
)


# --- gated output: softmax attention times a sigmoid gate computed from the input by a projection
def gated_ref(X, WQ, WK, WV, WG):
    q, k, v = X @ WQ, X @ WK, X @ WV
    o = att(q, k, v, mask=causal(len(X), len(X)))
    return o / (1 + np.exp(-(X @ WG)))


case(
    "s12_gated_output_projection",
    """
input  X[p, d], WQ[d, e], WK[d, e], WV[d, f], WG[d, f]
rank   M = P
output O
Q[p, e]   = X[p, d] * WQ[d, e]
K[m, e]   = X[m, d] * WK[d, e]
V[m, f]   = X[m, d] * WV[d, f]
GT[p, f]  = X[p, d] * WG[d, f]
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
G[p]      = S[p, m] :: max(m)
N[p, m]   = exp(S[p, m] - G[p])
D[p]      = N[p, m]
O[p, f]   = N[p, m] * V[m, f] / D[p] * sigmoid(GT[p, f])
""",
    dict(X=rn(7, 6), WQ=rn(6, 4), WK=rn(6, 4), WV=rn(6, 3), WG=rn(6, 3)),
    gated_ref,
)


# --- cosFormer: relu features re-weighted by cos/sin position tables (inputs), linear attention
def cosformer_ref(Q, K, V, CQ, SQ, CK, SK):
    fq, fk = np.maximum(Q, 0) + 0.01, np.maximum(K, 0) + 0.01
    num = (fq * CQ[:, None]) @ ((fk * CK[:, None]).T @ V) + (fq * SQ[:, None]) @ ((fk * SK[:, None]).T @ V)
    den = (fq * CQ[:, None]) @ (fk * CK[:, None]).sum(0) + (fq * SQ[:, None]) @ (fk * SK[:, None]).sum(0)
    return num / den[:, None]


_pp = np.pi / 2 * np.arange(9) / 9
case(
    "s12_cosformer_tables",
    """
input  Q[p, e], K[m, e], V[m, f], CQ[p], SQ[p], CK[m], SK[m]
output O
FQ[p, e]  = relu(Q[p, e]) + 0.01
FK[m, e]  = relu(K[m, e]) + 0.01
KVC[e, f] = FK[m, e] * CK[m] * V[m, f]
KVS[e, f] = FK[m, e] * SK[m] * V[m, f]
KC[e]     = FK[m, e] * CK[m]
KS[e]     = FK[m, e] * SK[m]
NUM[p, f] = FQ[p, e] * CQ[p] * KVC[e, f] + FQ[p, e] * SQ[p] * KVS[e, f]
DEN[p]    = FQ[p, e] * CQ[p] * KC[e] + FQ[p, e] * SQ[p] * KS[e]
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(9, 4), K=rn(9, 4), V=rn(9, 3), CQ=np.cos(_pp), SQ=np.sin(_pp), CK=np.cos(_pp), SK=np.sin(_pp)),
    cosformer_ref,
    passes={"m": 1},
)


# --- Performer / FAVOR+ positive random features, W given
def performer_ref(Q, K, V, W):
    R = W.shape[0]
    pq = np.exp(Q @ W.T - 0.5 * (Q**2).sum(1, keepdims=True)) / np.sqrt(R)
    pk = np.exp(K @ W.T - 0.5 * (K**2).sum(1, keepdims=True)) / np.sqrt(R)
    return (pq @ (pk.T @ V)) / (pq @ pk.sum(0))[:, None]


case(
    "s12_performer_positive_features",
    """
input  Q[p, e], K[m, e], V[m, f], W[r, e]
output O
QN[p]     = square(Q[p, e]) * 0.5
KN[m]     = square(K[m, e]) * 0.5
WQ[p, r]  = Q[p, e] * W[r, e]
WK[m, r]  = K[m, e] * W[r, e]
PQ[p, r]  = exp(WQ[p, r] - QN[p]) * rsqrt(R)
PK[m, r]  = exp(WK[m, r] - KN[m]) * rsqrt(R)
KV[r, f]  = PK[m, r] * V[m, f]
KS[r]     = PK[m, r]
NUM[p, f] = PQ[p, r] * KV[r, f]
DEN[p]    = PQ[p, r] * KS[r]
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(6, 3, scale=0.5), K=rn(11, 3, scale=0.5), V=rn(11, 2), W=rn(5, 3)),
    performer_ref,
    passes={"m": 1},
)
