"""Attention variants as researchers write them (../shared/reference/peers.md): softcapping, an in-spec
ALiBi slope and a sliding window on decode queries at a cache offset; sigmoid attention with a bias per
head under GQA and a bottom-right causal mask; learned sinks beside a document mask with empty rows;
T5-style bidirectional buckets from integer index math; differential attention read at constant component
indices; split-K decoding over a partition with a combine step; a prefix-LM window; a window per head from
an integer tensor; cog attention (signed weights); a temperature per query computed in the spec; Hedgehog
feature maps (softmaxes over the feature rank)."""

import numpy as np

from .common import any_row, lse, make_rn, pm, registry, sig, softmax, softplus

rn, rng = make_rn(1801)
CASES, case = registry()


# --- Gemma-2-style softcap, ALiBi with slopes 2^(-8 (h + 1) / H) computed from the head coordinate, and a
# sliding window, on P decode queries at cache offset `off` (query p is token p + off)
def capped_alibi_window_ref(Q, K, V, off, C=5.0, W=4):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    d = p + int(off) - m
    mask = (d >= 0) & (d < W)
    O = np.zeros((H, P, V.shape[2]))
    L = np.zeros((H, P))
    for h in range(H):
        s = C * np.tanh(Q[h] @ K[h].T / np.sqrt(E) / C) + 2.0 ** (-8.0 * (h + 1) / H) * (m - p - int(off))
        O[h] = softmax(s, mask) @ V[h]
        L[h] = np.where(any_row(mask), lse(s, mask), 0)
    return O, L


case(
    "s18_att_softcap_alibi_window_decode_offset",
    """
# softcap (C), ALiBi with a geometric slope per head, window W; query p sits at position p + off
input  Q[h, p, e], K[h, m, e], V[h, m, f], off : int
param  C = 5.0
param  W = 4
output O, L
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = C * tanh(QK[h, m, p] / C) + exp2(-8.0 * (h + 1) / H) * (m - p - off)  where 0 <= p + off - m < W
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / SD[h, p]
L[h, p]     = GM[h, p] + log(SD[h, p])
""",
    dict(Q=rn(3, 4, 4, scale=3), K=rn(3, 9, 4, scale=3), V=rn(3, 9, 2), off=np.array(5)),
    capped_alibi_window_ref,
    passes={"m": 3},
)


# --- sigmoid attention (no normaliser), a bias per query head, GQA (3 query heads per KV head), the
# bottom-right causal mask of P = 3 new queries against M = 5 keys
def sigmoid_gqa_ref(Q, K, V, b, R=3):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    mask = m <= p + M - P
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        w = sig(Q[h] @ K[h // R].T / np.sqrt(E) + b[h]) * mask
        O[h] = w @ V[h // R]
    return O


case(
    "s18_att_sigmoid_head_bias_gqa_bottom_right",
    """
# sigmoid attention (Ramapuram et al.): a bias per head, no normaliser, keys up to p + M - P
input  Q[h, p, e], K[g, m, e], V[g, m, f], b[h]
param  R = 3
output O
QK[h, m, p] = Q[h, p, e] * K[h // R, m, e] * rsqrt(E)
O[h, p, f]  = sigmoid(QK[h, m, p] + b[h]) * V[h // R, m, f]  where m <= p + M - P
""",
    dict(Q=rn(6, 3, 4), K=rn(2, 5, 4), V=rn(2, 5, 3), b=rn(6) - 2),
    sigmoid_gqa_ref,
    passes={"m": 1},
)


# --- a learned sink logit per head in the max and the denominator, beside a causal document mask; query 3
# (document 2) and query 5 (document -1) see no key: their output is 0 and L is the sink itself
def sink_doc_ref(Q, K, V, sink, qd, kd):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    mask = (qd[:, None] == kd[None, :]) & (m <= p)
    O = np.zeros((H, P, V.shape[2]))
    L = np.zeros((H, P))
    for h in range(H):
        s = Q[h] @ K[h].T / np.sqrt(E)
        for i in range(P):
            keep = mask[i]
            gm = max(s[i, keep].max(), sink[h]) if keep.any() else sink[h]
            ex = np.exp(s[i, keep] - gm)
            den = ex.sum() + np.exp(sink[h] - gm)
            O[h, i] = ex @ V[h][keep] / den
            L[h, i] = gm + np.log(den)
    return O, L


case(
    "s18_att_sink_per_head_with_doc_mask_empty_rows",
    """
# attention sinks (a logit per head that takes weight but has no value) beside packed documents
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h], qd[p] : int, kd[m] : int
output O, L
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where qd[p] == kd[m] and m <= p
MX[h, p]    = S[h, m, p] :: max(m)
GM[h, p]    = max(MX[h, p] ?? sink[h], sink[h])
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
DEN[h, p]   = (SD[h, p] ?? 0) + exp(sink[h] - GM[h, p])
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
L[h, p]     = GM[h, p] + log(DEN[h, p])
""",
    dict(
        Q=rn(2, 6, 3, scale=2),
        K=rn(2, 6, 3, scale=2),
        V=rn(2, 6, 2),
        sink=np.array([3.0, -2.0]),
        qd=np.array([0, 0, 1, 2, 1, -1]),
        kd=np.array([0, 1, 1, 1, 0, 0]),
    ),
    sink_doc_ref,
    passes={"m": 3},
)


# --- T5-style bidirectional buckets from integer index math: direction (m > p) * 7, then exact distances
# below 4 and coarser ones (3 + |d| // 4) above, capped at bucket 6
def t5_ref(Q, K, V, bias):
    H, P, _ = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    ad = np.abs(p - m)
    idx = (m > p) * 7 + np.clip(np.minimum(ad, 3 + ad // 4), 0, 6)
    return np.stack([softmax(Q[h] @ K[h].T + bias[h][idx]) @ V[h] for h in range(H)])


case(
    "s18_att_t5_bidirectional_buckets_index_math",
    """
# a relative-position bias table of 14 buckets per head, the bucket computed in the index
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h, k]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e]
S[h, m, p]  = (QK[h, m, p]
               + bias[h, (m - p + M - 1) // M * 7 + clamp(min(abs(p - m), 3 + abs(p - m) // 4), 0, 6)])
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(2, 13, 3), K=rn(2, 13, 3), V=rn(2, 13, 2), bias=rn(2, 14, scale=2)),
    t5_ref,
    passes={"m": 3},
)


# --- differential attention: two softmaxes (component c = 0, 1 of Q and K) subtracted with a lambda given
# at call time (negative here), GQA, causal; the components are read at constant indices
def diff_ref(Q, K, V, lam, R=2):
    H, P, _, E = Q.shape
    M = K.shape[2]
    p, m = pm(P, M)
    mask = m <= p
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        a0 = softmax(Q[h, :, 0] @ K[h // R, 0].T / np.sqrt(E), mask)
        a1 = softmax(Q[h, :, 1] @ K[h // R, 1].T / np.sqrt(E), mask)
        O[h] = (a0 - lam * a1) @ V[h // R]
    return O


case(
    "s18_att_differential_constant_component_reads_gqa",
    """
# Diff Transformer: softmax(Q1 K1) - lambda softmax(Q2 K2), the two maps components c of one tensor
input  Q[h, p, c, e], K[g, c, m, e], V[g, m, f], lam
param  R = 2
output O
S[h, c, m, p]  = Q[h, p, c, e] * K[h // R, c, m, e] * rsqrt(E)  where m <= p
GM[h, c, p]    = S[h, c, m, p] :: max(m)
EX[h, c, m, p] = exp(S[h, c, m, p] - GM[h, c, p])
SD[h, c, p]    = EX[h, c, m, p]
A[h, c, m, p]  = EX[h, c, m, p] / SD[h, c, p]
O[h, p, f]     = (A[h, 0, m, p] - lam * A[h, 1, m, p]) * V[h // R, m, f]
""",
    dict(Q=rn(4, 5, 2, 3), K=rn(2, 2, 5, 3), V=rn(2, 5, 2), lam=np.array(-0.3)),
    diff_ref,
)


# --- split-K decoding: the keys of each batch in splits of S0 = 4 (a partition), a max, a sum and a
# numerator per split, then a combine over the splits; lengths n[b] = 0, 9 (split 2 empty), 11
def splitk_ref(q, K, V, n, S0=4):
    B = q.shape[0]
    O = np.zeros((B, V.shape[2]))
    for b in range(B):
        s = K[b, : n[b]] @ q[b]
        if n[b] == 0:
            continue
        w = np.exp(s - s.max())
        O[b] = w @ V[b, : n[b]] / w.sum()
    return O


case(
    "s18_att_splitk_decode_partition_combine_lengths",
    """
# flash-decoding: per split s1 a local max, denominator and numerator; the combine rescales each split
input  q[b, e], K[b, m, e], V[b, m, f], n[b] : int
param  S0 = 4
rank   M = S1 * S0
output O
S[b, s1, s0]   = q[b, e] * K[b, s1 * S0 + s0, e]  where s1 * S0 + s0 < n[b]
LM[b, s1]      = S[b, s1, s0] :: max(s0)
EX[b, s1, s0]  = exp(S[b, s1, s0] - LM[b, s1])
LD[b, s1]      = EX[b, s1, s0]
LN[b, s1, f]   = EX[b, s1, s0] * V[b, s1 * S0 + s0, f]
GM[b]          = LM[b, s1] :: max(s1)
CF[b, s1]      = exp(LM[b, s1] - GM[b])
D[b]           = LD[b, s1] * CF[b, s1]
O[b, f]        = LN[b, s1, f] * CF[b, s1] / D[b]
""",
    dict(q=rn(3, 4, scale=2), K=rn(3, 11, 4), V=rn(3, 11, 2), n=np.array([0, 9, 11])),
    splitk_ref,
)


# --- prefix-LM with a prefix length per batch (bidirectional inside it) and a sliding window of W = 3 on
# the causal part; plen = 0 (window only), 3, and 9 > M (everything visible)
def prefix_window_ref(Q, K, V, plen, W=3):
    B, P, _ = Q.shape
    p, m = pm(P, K.shape[1])
    O = np.zeros((B, P, V.shape[2]))
    for b in range(B):
        mask = (m < plen[b]) | ((m <= p) & (p - m < W))
        O[b] = softmax(Q[b] @ K[b].T * 0.5, mask) @ V[b]
    return O


case(
    "s18_att_prefix_lm_per_batch_or_windowed_causal",
    """
# PrefixLM: a key in the prefix is always visible; otherwise causal within a window
input  Q[b, p, e], K[b, m, e], V[b, m, f], plen[b] : int
param  W = 3
output O
S[b, m, p]  = Q[b, p, e] * K[b, m, e] * 0.5  where m < plen[b] or (m <= p and p - m < W)
GM[b, p]    = S[b, m, p] :: max(m)
EX[b, m, p] = exp(S[b, m, p] - GM[b, p])
SD[b, p]    = EX[b, m, p]
O[b, p, f]  = EX[b, m, p] * V[b, m, f] / SD[b, p]
""",
    dict(Q=rn(3, 7, 3), K=rn(3, 7, 3), V=rn(3, 7, 2), plen=np.array([0, 3, 9])),
    prefix_window_ref,
    passes={"m": 3},
)


# --- a window width per head from an integer tensor (head 1: width 0, every row absent), softcapped
def head_window_ref(Q, K, V, w):
    H, P, _ = Q.shape
    p, m = pm(P, K.shape[1])
    O = np.zeros((H, P, V.shape[2]))
    L = np.zeros((H, P))
    for h in range(H):
        mask = (p - m >= 0) & (p - m < w[h])
        s = 2.0 * np.tanh(Q[h] @ K[h].T / 2.0)
        O[h] = softmax(s, mask) @ V[h]
        L[h] = np.where(any_row(mask), lse(s, mask), 0)
    return O, L


case(
    "s18_att_window_width_per_head_int_tensor",
    """
# mixture of attention spans: head h looks back over w[h] keys (w = 0: nothing)
input  Q[h, p, e], K[h, m, e], V[h, m, f], w[h] : int
output O, L
QK[h, m, p] = Q[h, p, e] * K[h, m, e]
S[h, m, p]  = 2 * tanh(QK[h, m, p] / 2)  where 0 <= p - m < w[h]
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / SD[h, p]
L[h, p]     = GM[h, p] + log(SD[h, p])
""",
    dict(Q=rn(3, 6, 2, scale=2), K=rn(3, 6, 2, scale=2), V=rn(3, 6, 2), w=np.array([2, 0, 9])),
    head_window_ref,
)


# --- cog attention: weights sign(s) exp(|s|) / sum exp(|s|), causal; the sign written S / |S|
def cog_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    a = softmax(np.abs(s), m <= p) * np.sign(s)
    return a @ V


case(
    "s18_att_cog_signed_weights_sign_as_ratio",
    """
# cog attention: a softmax of |S| carrying the sign of S, so weights can be negative
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
A[m, p]  = abs(S[m, p])
GM[p]    = A[m, p] :: max(m)
EX[m, p] = exp(A[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * S[m, p] / A[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(6, 3, scale=2), K=rn(6, 3, scale=2), V=rn(6, 2)),
    cog_ref,
    passes={"m": 3},
)


# --- a temperature per query computed in the spec (1 + softplus of a projection of the query), causal
def query_temp_ref(Q, K, V, w):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    T = 1 + softplus(Q @ w)
    return softmax(Q @ K.T / T[:, None], m <= p) @ V


case(
    "s18_att_temperature_per_query_from_softplus",
    """
# each query picks its own temperature; exp((S - GM) / T) normalised is softmax(S / T)
input  Q[p, e], K[m, e], V[m, f], w[e]
output O
QW[p]    = Q[p, e] * w[e]
TQ[p]    = 1 + softplus(QW[p])
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp((S[m, p] - GM[p]) / TQ[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 3, scale=3), K=rn(7, 3, scale=3), V=rn(7, 2), w=rn(3)),
    query_temp_ref,
    passes={"m": 3},
)


# --- Hedgehog feature maps: phi(x) = [softmax_d(x W), softmax_d(-x W)], causal linear attention on them
def hedgehog_ref(Q, K, V, Wf):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)

    def phi(X):
        Y = X @ Wf
        return softmax(Y, axis=1), softmax(-Y, axis=1)

    qp, qn = phi(Q)
    kp, kn = phi(K)
    w = (qp @ kp.T + qn @ kn.T) * (m <= p)
    return (w @ V) / w.sum(1)[:, None]


case(
    "s18_att_hedgehog_softmax_feature_maps_causal_linear",
    """
# Hedgehog: each query and key mapped by two softmaxes over the feature rank d, then causal linear attention
input  Q[p, e], K[m, e], V[m, f], Wf[e, d]
output O
XQ[p, d]  = Q[p, e] * Wf[e, d]
XK[m, d]  = K[m, e] * Wf[e, d]
QMX[p]    = XQ[p, d] :: max(d)
QMN[p]    = XQ[p, d] :: min(d)
KMX[m]    = XK[m, d] :: max(d)
KMN[m]    = XK[m, d] :: min(d)
EQP[p, d] = exp(XQ[p, d] - QMX[p])
EQN[p, d] = exp(QMN[p] - XQ[p, d])
EKP[m, d] = exp(XK[m, d] - KMX[m])
EKN[m, d] = exp(KMN[m] - XK[m, d])
SQP[p]    = EQP[p, d]
SQN[p]    = EQN[p, d]
SKP[m]    = EKP[m, d]
SKN[m]    = EKN[m, d]
FQP[p, d] = EQP[p, d] / SQP[p]
FQN[p, d] = EQN[p, d] / SQN[p]
FKP[m, d] = EKP[m, d] / SKP[m]
FKN[m, d] = EKN[m, d] / SKN[m]
W[m, p]   = FQP[p, d] * FKP[m, d] + FQN[p, d] * FKN[m, d]  where m <= p
NUM[p, f] = W[m, p] * V[m, f]
DEN[p]    = W[m, p]
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), Wf=rn(3, 4)),
    hedgehog_ref,
)
