"""Masks and positions: T5 relative-position buckets read from int tables (given per pair, and through a
relative-position table: a gather inside a gather), prefix-LM masks, dilated windows, chunked
(block-diagonal) attention, a sparse pattern given as an index table with -1 holes, BigBird's global tokens
and block-sparse layouts from an int table, NATTEN's clamped 1-D neighbourhood, 2-D neighbourhood attention
(two reduced key ranks), the forgetting transformer's cumulative log-gates, RoPE written with index
arithmetic, ALiBi with slopes computed from the head coordinate, dropout from an int keep mask and an
additive float mask holding -inf."""

import numpy as np

from .common import make_rn, pm, registry, softmax, softplus

rn, rng = make_rn(2002)
CASES, case = registry()


def scores(Q, K):
    return np.einsum("...pe,...me->...pm", Q, K) / np.sqrt(Q.shape[-1])


SOFTMAX_TAIL = """
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
"""


# --- T5 relative-position bias: bias[h, bucket[p, m]], the buckets given per pair as an int table
def t5_ref(Q, K, V, tb, bucket):
    s = np.einsum("hpe,hme->hpm", Q, K) + tb[:, bucket]  # T5 does not scale
    return softmax(s) @ V


case(
    "s20_pos_t5_bias_bucket_table_per_pair",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], tb[h, n], bucket[p, m] : int
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e]
S[h, m, p]  = QK[h, m, p] + tb[h, bucket[p, m]]
"""
    + SOFTMAX_TAIL,
    dict(
        Q=rn(2, 4, 3),
        K=rn(2, 6, 3),
        V=rn(2, 6, 2),
        tb=rn(2, 5, scale=2),
        bucket=rng.integers(0, 5, size=(4, 6)),
    ),
    t5_ref,
)


# --- T5 buckets through a relative-position table rel[p - m + M - 1] (a gather inside a gather), causal,
# int32 tables; a bucket of 9 is outside tb: the score is absent, the key skipped
def t5_rel_ref(Q, K, V, tb, rel):
    P, M = Q.shape[1], K.shape[1]
    p, m = pm(P, M)
    b = rel[p - m + M - 1]
    ok = (m <= p) & (b < tb.shape[1])
    s = np.einsum("hpe,hme->hpm", Q, K) + tb[:, np.minimum(b, tb.shape[1] - 1)]
    return softmax(s, ok) @ V


case(
    "s20_pos_t5_bias_relative_table_nested_gather_int32",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], tb[h, n], rel[r] : int
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e]  where m <= p
S[h, m, p]  = QK[h, m, p] + tb[h, rel[p - m + M - 1]]
"""
    + SOFTMAX_TAIL,
    dict(
        Q=rn(2, 6, 3),
        K=rn(2, 6, 3),
        V=rn(2, 6, 2),
        tb=rn(2, 4, scale=2),
        rel=np.array([9, 9, 9, 9, 9, 0, 1, 2, 2, 3, 9], dtype=np.int32),
    ),
    t5_rel_ref,
)


# --- prefix-LM: every query sees the prefix of its batch entry bidirectionally, and the rest causally
def prefix_ref(Q, K, V, prefix):
    P, M = Q.shape[-2], K.shape[-2]
    p, m = pm(P, M)
    O = np.zeros((*Q.shape[:-1], V.shape[-1]))
    for b in range(Q.shape[0]):
        mask = (m < prefix[b]) | (m <= p)
        O[b] = softmax(scores(Q[b], K[b]), mask) @ V[b]
    return O


case(
    "s20_mask_prefix_lm_per_batch",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], prefix[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < prefix[b] or m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(3, 2, 7, 4), K=rn(3, 2, 7, 4), V=rn(3, 2, 7, 3), prefix=np.array([0, 3, 9])),
    prefix_ref,
)


# --- a dilated causal window: keys p, p - R, ..., p - (W - 1) R; R and W overridden
def dilated_ref(Q, K, V, R=3, W=2):
    p, m = pm(Q.shape[-2], K.shape[-2])
    d = p - m
    mask = (d >= 0) & (d % R == 0) & (d < W * R)
    return softmax(scores(Q, K), mask) @ V


case(
    "s20_mask_dilated_causal_window_overridden",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  R = 2
param  W = 3
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where (p - m) % R == 0 and 0 <= p - m < W * R
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 11, 4), K=rn(2, 11, 4), V=rn(2, 11, 3)),
    dilated_ref,
    params={"R": 3, "W": 2},
)


# --- chunked attention (Llama 4's local layers): causal within chunks of C, bidirectional block-diagonal too
def chunk_ref(Q, K, V, C=3):
    p, m = pm(Q.shape[-2], K.shape[-2])
    same = p // C == m // C
    s = scores(Q, K)
    return softmax(s, same & (m <= p)) @ V, softmax(s, same) @ V


case(
    "s20_mask_chunked_causal_and_block_diagonal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  C = 3
output O, OB
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where p // C == m // C and m <= p
SB[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m // C == p // C
GB[h, p]    = SB[h, m, p] :: max(m)
XB[h, m, p] = exp(SB[h, m, p] - GB[h, p])
DB[h, p]    = XB[h, m, p]
OB[h, p, f] = XB[h, m, p] * V[h, m, f] / DB[h, p]
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 8, 4), K=rn(2, 8, 4), V=rn(2, 8, 3)),
    chunk_ref,
)


# --- a sparse pattern as an index table: query p attends to keys idx[p, j]; -1 and M are holes (absent);
# row 2 has none and gets 0
def sparse_ref(Q, K, V, idx):
    P, J = idx.shape
    M = K.shape[0]
    O = np.zeros((P, V.shape[1]))
    for p in range(P):
        keys = [idx[p, j] for j in range(J) if 0 <= idx[p, j] < M]
        if keys:
            s = np.array([Q[p] @ K[k] for k in keys]) / np.sqrt(Q.shape[1])
            w = np.exp(s - s.max())
            O[p] = (w / w.sum()) @ V[keys]
    return O


case(
    "s20_mask_sparse_index_table_with_holes",
    """
input  Q[p, e], K[m, e], V[m, f], idx[p, j] : int
output O
S[p, j]  = Q[p, e] * K[idx[p, j], e] * rsqrt(E)
GM[p]    = S[p, j] :: max(j)
EX[p, j] = exp(S[p, j] - GM[p])
DEN[p]   = EX[p, j]
O[p, f]  = EX[p, j] * V[idx[p, j], f] / DEN[p]
""",
    dict(
        Q=rn(4, 3),
        K=rn(6, 3),
        V=rn(6, 2),
        idx=np.array([[0, 5, 5, -1], [1, 2, 3, 4], [-1, 6, -1, 7], [3, -1, 0, 2]], dtype=np.int64),
    ),
    sparse_ref,
)


# --- BigBird: global tokens (glob[t] == 1) see and are seen by everything, the rest a window of 3
def bigbird_ref(Q, K, V, glob):
    p, m = pm(Q.shape[-2], K.shape[-2])
    mask = (glob[m] == 1) | (glob[p] == 1) | (np.abs(p - m) <= 1)
    return softmax(scores(Q, K), mask) @ V


case(
    "s20_mask_bigbird_global_tokens_and_window",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], glob[t] : int
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where glob[m] == 1 or glob[p] == 1 or abs(p - m) <= 1
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 8, 4), K=rn(2, 8, 4), V=rn(2, 8, 3), glob=np.array([1, 0, 0, 0, 0, 1, 0, 0])),
    bigbird_ref,
)


# --- block-sparse attention from a layout table per head: blocks of BS x BS kept where layout is 1; a
# query block whose row of the layout is empty gets 0
def block_sparse_ref(Q, K, V, layout, BS=2):
    p, m = pm(Q.shape[-2], K.shape[-2])
    mask = layout[:, p // BS, m // BS] == 1
    return softmax(scores(Q, K), mask) @ V


case(
    "s20_mask_block_sparse_layout_table",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], layout[h, i, j] : int
param  BS = 2
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where layout[h, p // BS, m // BS] == 1
"""
    + SOFTMAX_TAIL,
    dict(
        Q=rn(2, 6, 4),
        K=rn(2, 8, 4),
        V=rn(2, 8, 3),
        layout=np.array(
            [[[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], [[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]]
        ),
    ),
    block_sparse_ref,
)


# --- NATTEN 1-D: each query sees a window of W keys whose start is clamped inside the sequence, so every
# query sees exactly W keys (edge queries see an off-centre window)
def natten_ref(Q, K, V, W=3):
    P, M = Q.shape[-2], K.shape[-2]
    p, m = pm(P, M)
    start = np.clip(p - W // 2, 0, M - W)
    return softmax(scores(Q, K), (start <= m) & (m < start + W)) @ V


case(
    "s20_mask_natten_1d_clamped_window",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  W = 3
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E) \\
              where clamp(p - W // 2, 0, M - W) <= m < clamp(p - W // 2, 0, M - W) + W
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 7, 4), K=rn(2, 7, 4), V=rn(2, 7, 3)),
    natten_ref,
)


# --- 2-D neighbourhood attention: queries on a Y x X grid attend to keys within distance 1 in both axes;
# the softmax reduces two key ranks at once
def na2d_ref(Q, K, V):
    Y, X, E = Q.shape
    O = np.zeros((Y, X, V.shape[-1]))
    for y in range(Y):
        for x in range(X):
            keys = [
                (u, w)
                for u in range(K.shape[0])
                for w in range(K.shape[1])
                if abs(y - u) <= 1 and abs(x - w) <= 1
            ]
            s = np.array([Q[y, x] @ K[u, w] for u, w in keys]) / np.sqrt(E)
            a = np.exp(s - s.max())
            O[y, x] = (a / a.sum()) @ np.array([V[u, w] for u, w in keys])
    return O


case(
    "s20_mask_neighbourhood_2d_two_key_ranks",
    """
input  Q[y, x, e], K[u, w, e], V[u, w, f]
output O
S[y, x, u, w]  = Q[y, x, e] * K[u, w, e] * rsqrt(E)  where abs(y - u) <= 1 and abs(x - w) <= 1
GM[y, x]       = S[y, x, u, w] :: max(u, w)
EX[y, x, u, w] = exp(S[y, x, u, w] - GM[y, x])
DEN[y, x]      = EX[y, x, u, w]
O[y, x, f]     = EX[y, x, u, w] * V[u, w, f] / DEN[y, x]
""",
    dict(Q=rn(3, 4, 2), K=rn(3, 4, 2), V=rn(3, 4, 2)),
    na2d_ref,
)


# --- the forgetting transformer (Lin et al. 2025): causal scores plus sum over m < k <= p of log sigmoid
# of the forget-gate logits, from a cumulative sum over an alias rank
def fox_ref(Q, K, V, fg):
    P = Q.shape[1]
    lf = -softplus(-fg)  # [h, t]
    c = np.cumsum(lf, axis=1)
    p, m = pm(P, P)
    s = scores(Q, K) + c[:, :, None] - c[:, None, :]
    return softmax(s, m <= p) @ V


case(
    "s20_pos_forgetting_transformer_cumulative_gates",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], fg[h, m]
rank   N = M
output O
LF[h, m]    = -softplus(-fg[h, m])                  # log sigmoid of the gate
CUM[h, m]   = LF[h, n]  where n <= m                 # its cumulative sum
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, m, p]  = QK[h, m, p] + CUM[h, p] - CUM[h, m]
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 6, 4), K=rn(2, 6, 4), V=rn(2, 6, 3), fg=rn(2, 6, scale=2)),
    fox_ref,
)


# --- RoPE (rotate-half form), cos/sin tables of their own position rank read at p and m, then causal
def rope_ref(Q, K, V, cs, sn):
    def rot(X, n):
        h = X.shape[-1] // 2
        xr = np.concatenate([-X[..., h:], X[..., :h]], axis=-1)
        return X * cs[:n] + xr * sn[:n]

    P, M = Q.shape[-2], K.shape[-2]
    p, m = pm(P, M)
    return softmax(scores(rot(Q, P), rot(K, M)), m <= p) @ V


case(
    "s20_pos_rope_rotate_half_index_arithmetic",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], cs[t, e], sn[t, e]
output O
RQ1[h, p, e] = -Q[h, p, e + E // 2]  where e < E // 2
RQ[h, p, e]  = RQ1[h, p, e] ?? Q[h, p, e - E // 2]
RK1[h, m, e] = -K[h, m, e + E // 2]  where e < E // 2
RK[h, m, e]  = RK1[h, m, e] ?? K[h, m, e - E // 2]
QR[h, p, e]  = Q[h, p, e] * cs[p, e] + RQ[h, p, e] * sn[p, e]
KR[h, m, e]  = K[h, m, e] * cs[m, e] + RK[h, m, e] * sn[m, e]
S[h, m, p]   = QR[h, p, e] * KR[h, m, e] * rsqrt(E)  where m <= p
"""
    + SOFTMAX_TAIL,
    dict(
        Q=rn(2, 5, 4),
        K=rn(2, 5, 4),
        V=rn(2, 5, 3),
        cs=np.cos(np.arange(6)[:, None] * np.array([1.0, 0.1, 1.0, 0.1])),
        sn=np.sin(np.arange(6)[:, None] * np.array([1.0, 0.1, 1.0, 0.1])),
    ),
    rope_ref,
)


# --- ALiBi with the geometric slopes computed from the head coordinate: 2^(-8 (h + 1) / H), causal
def alibi_ref(Q, K, V):
    H, P = Q.shape[0], Q.shape[1]
    M = K.shape[1]
    p, m = pm(P, M)
    slope = 2.0 ** (-8.0 * (np.arange(H) + 1) / H)
    s = scores(Q, K) + slope[:, None, None] * (m - p)
    return softmax(s, m <= p) @ V


case(
    "s20_pos_alibi_slopes_from_head_coordinate",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
SL[h]       = exp2(-8.0 * (h + 1) / H)
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, m, p]  = QK[h, m, p] + SL[h] * (m - p)
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(4, 5, 4), K=rn(4, 5, 4), V=rn(4, 5, 3)),
    alibi_ref,
)


# --- dropout after the softmax from an int keep mask, rescaled by 1 / (1 - PD)
def dropout_ref(Q, K, V, keep, PD=0.25):
    a = softmax(scores(Q, K))
    return (a * (keep == 1)) @ V / (1 - PD)


case(
    "s20_mask_dropout_keep_table_after_softmax",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], keep[h, p, m] : int
param  PD = 0.25
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] / DEN[h, p] * V[h, m, f] / (1 - PD)  where keep[h, p, m] == 1
""",
    dict(
        Q=rn(2, 4, 3),
        K=rn(2, 5, 3),
        V=rn(2, 5, 2),
        keep=np.concatenate([np.zeros((1, 1, 5), int), rng.integers(0, 2, (1, 3, 5))], 1).repeat(2, 0),
    ),
    dropout_ref,
)


# --- an additive float mask holding -inf (the usual HF attention_mask): every row keeps one finite key
def addmask_ref(Q, K, V, bias):
    return softmax(scores(Q, K) + bias) @ V


_bias = np.where(rng.random((5, 6)) < 0.5, -np.inf, rn(5, 6))
_bias[:, 0] = 0.0
case(
    "s20_mask_additive_float_mask_with_minus_inf",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[p, m]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, m, p]  = QK[h, m, p] + bias[p, m]
"""
    + SOFTMAX_TAIL,
    dict(Q=rn(2, 5, 4), K=rn(2, 6, 4), V=rn(2, 6, 3), bias=_bias),
    addmask_ref,
)
