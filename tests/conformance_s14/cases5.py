# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Attention variants: bidirectional blocks within causal attention (int block ids), dilated windows with global
sink tokens, an encoder-decoder packed sequence (`and` before `or`), decoding one token against many keys with
GQA ratio 3, ALiBi, a softcap and an empty cache, strided sparse attention (Child et al.), token-shifted keys,
block-sparse attention in tiles of the key partition given as an int layout, sigmoid attention with a sink and
a window, several statistics sharing one set of scores, symmetric ALiBi slopes computed from the head index."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1405)
CASES, case = registry()

_ATT = """
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
"""


# --- bidirectional attention inside blocks (int block ids, e.g. an image's patches), causal across them
def bidir_ref(Q, K, V, blk):
    p, m = pm(len(blk), len(blk))
    return att(Q, K, V, mask=(blk[:, None] == blk[None, :]) | (m <= p))


case(
    "s14_bidirectional_blocks_within_causal",
    """
input  Q[p, e], K[m, e], V[m, f], blk[n] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where blk[m] == blk[p] or m <= p
"""
    + _ATT,
    dict(Q=rn(9, 3), K=rn(9, 3), V=rn(9, 2), blk=np.array([0, 1, 1, 1, 2, 3, 3, 3, 3])),
    bidir_ref,
    passes={"m": 3},
)


# --- a dilated causal window (every D-th key, W of them) plus NS global sink tokens every query sees
def dilated_sink_ref(Q, K, V, W=3, D=2, NS=2):
    p, m = pm(Q.shape[0], K.shape[0])
    d = p - m
    return att(Q, K, V, mask=(m < NS) | ((d >= 0) & (d < W * D) & (d % D == 0)))


case(
    "s14_dilated_window_with_sink_tokens",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
param  D = 2
param  NS = 2
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m < NS or (0 <= p - m < W * D and (p - m) % D == 0)
"""
    + _ATT,
    dict(Q=rn(11, 3), K=rn(11, 3), V=rn(11, 2)),
    dilated_sink_ref,
)


# --- an encoder-decoder packed into one sequence: seg 0 is the source (bidirectional), seg 1 the target
# (sees the whole source and itself causally); `and` binds tighter than `or`, so no brackets are needed
def encdec_ref(Q, K, V, seg):
    p, m = pm(len(seg), len(seg))
    sp, sm = seg[:, None], seg[None, :]
    mask = ((sm == 0) & (sp == 0)) | ((sm == 0) & (sp == 1)) | ((sm == 1) & (sp == 1) & (m <= p))
    return att(Q, K, V, mask=mask)


case(
    "s14_encoder_decoder_packed_and_or_precedence",
    """
input  Q[p, e], K[m, e], V[m, f], seg[n] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where seg[m] == 0 and seg[p] == 0 or seg[m] == 0 and seg[p] == 1 or seg[m] == 1 and seg[p] == 1 and m <= p
"""
    + _ATT,
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2), seg=np.array([0, 0, 0, 1, 1, 1, 1, 1])),
    encdec_ref,
)


# --- decoding: one query token per batch and head against a KV cache of lengths len[b] (one empty: its output
# is 0), query heads sharing KV heads 3 to 1, ALiBi from the query position len[b] - 1 and a tanh softcap
def decode_ref(q, K, V, slope, kvlen, CAP=5.0):
    ln = kvlen
    B, H, E = q.shape
    G, M = K.shape[1], K.shape[2]
    out = np.zeros((B, H, V.shape[3]))
    for b in range(B):
        for h in range(H):
            g = h // (H // G)
            s = K[b, g] @ q[b, h] / np.sqrt(E)
            s = CAP * np.tanh(s / CAP) - slope[h] * (ln[b] - 1 - np.arange(M))
            keep = np.arange(M) < ln[b]
            out[b, h] = softmax(s, keep) @ V[b, g]
    return out


case(
    "s14_decode_gqa3_alibi_softcap_empty_cache",
    """
input  q[b, h, e], K[b, g, m, e], V[b, g, m, f], slope[h], kvlen[b] : int
param  R = 3
param  CAP = 5.0
output O
QK[b, h, m]  = q[b, h, e] * K[b, h // R, m, e] * rsqrt(E)
S[b, h, m]   = CAP * tanh(QK[b, h, m] / CAP) - slope[h] * (kvlen[b] - 1 - m)  where m < kvlen[b]
GM[b, h]     = S[b, h, m] :: max(m)
EX[b, h, m]  = exp(S[b, h, m] - GM[b, h])
SD[b, h]     = EX[b, h, m]
O[b, h, f]   = EX[b, h, m] * V[b, h // R, m, f] / SD[b, h]
""",
    dict(
        q=rn(3, 6, 4, scale=2.0),
        K=rn(3, 2, 10, 4, scale=2.0),
        V=rn(3, 2, 10, 3),
        slope=np.array([0.5, 0.25, 0.125, 0.0625, 1.0, 2.0]),
        kvlen=np.array([10, 0, 4]),
    ),
    decode_ref,
)


# --- strided sparse attention (Child et al. 2019): a causal local band of ST keys plus every ST-th key back
def strided_ref(Q, K, V, ST=3):
    p, m = pm(Q.shape[0], K.shape[0])
    d = p - m
    return att(Q, K, V, mask=(d >= 0) & ((d < ST) | (d % ST == 0)))


case(
    "s14_strided_sparse_band_and_stride",
    """
input  Q[p, e], K[m, e], V[m, f]
param  ST = 3
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p and (p - m < ST or (p - m) % ST == 0)
"""
    + _ATT,
    dict(Q=rn(12, 3), K=rn(12, 3), V=rn(12, 2)),
    strided_ref,
)


# --- token shift (RWKV style) on the keys: K'[m] = MU * K[m] + (1 - MU) * K[m - 1], with K[-1] absent and
# defaulted to 0; causal
def shift_ref(Q, K, V, MU=0.25):
    Kp = np.concatenate([np.zeros((1, K.shape[1])), K[:-1]])
    Ks = MU * K + (1 - MU) * Kp
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, Ks, V, mask=m <= p)


case(
    "s14_token_shifted_keys_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  MU = 0.25
output O
KS[m, e] = MU * K[m, e] + (1 - MU) * (K[m - 1, e] ?? 0)
S[p, m]  = Q[p, e] * KS[m, e] * rsqrt(E)  where m <= p
"""
    + _ATT,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    shift_ref,
)


# --- block-sparse attention written as a 1-pass loop whose key tiles are the layout's blocks (M0 = 4 keys,
# queries in blocks of 3 rows): layout[p // 3, m1] says whether a query block sees a key tile. Whole tiles are
# absent for some rows only; some query blocks see nothing (their output is 0); the last key tile is ragged
def blocksparse_ref(Q, K, V, layout, M0=4, BP=3):
    p, m = pm(Q.shape[0], K.shape[0])
    mask = layout[p // BP, m // M0] == 1
    has = mask.any(1)
    return np.where(has[:, None], att(Q, K, V, mask=mask, scale=1.0), 0.0), np.where(
        has, lse(Q @ K.T, mask), 0.0
    )


case(
    "s14_block_sparse_int_layout_hand_1pass",
    """
input  Q[p, e], K[m, e], V[m, f], layout[i, j] : int
param  M0 = 4
rank   M = M1 * M0
output O, L
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where layout[p // 3, m1] == 1
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf  where 0 != 0
RM[m1 + 1, p]     = max(RM[m1, p] ?? LM[m1, p], LM[m1, p] ?? RM[m1, p])
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 0  where 0 != 0
RNV[0, p, f]      = 0  where 0 != 0
RD[m1 + 1, p]     = SLD[m1, p] + (RD[m1, p] * PRM[m1, p] ?? 0) ?? RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + (RNV[m1, p, f] * PRM[m1, p] ?? 0) ?? RNV[m1, p, f] * PRM[m1, p]
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
L[p]              = RM[M1, p] + log(RD[M1, p])
""",
    dict(
        Q=rn(10, 3),
        K=rn(11, 3),
        V=rn(11, 2),
        layout=np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]]),
    ),
    blocksparse_ref,
)


# --- sigmoid attention (no normalisation across keys) with a learned sink logit per head and a causal window
def sigmoid_ref(Q, K, V, sink, W=4, BIAS=-1.0):
    _H, P, E = Q.shape
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E) + BIAS
    p, m = pm(P, K.shape[1])
    keep = (p - m >= 0) & (p - m < W)
    g = np.where(keep, 1 / (1 + np.exp(-s)), 0.0)
    return np.einsum("hpm,hmf->hpf", g, V) + (1 / (1 + np.exp(-sink)))[:, None, None]


case(
    "s14_sigmoid_attention_window_sink",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h]
param  W = 4
param  BIAS = -1.0
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
G[h, p, m]  = sigmoid(QK[h, p, m] + BIAS)  where 0 <= p - m < W
GV[h, p, f] = G[h, p, m] * V[h, m, f]
O[h, p, f]  = GV[h, p, f] + sigmoid(sink[h])
""",
    dict(Q=rn(2, 7, 3), K=rn(2, 7, 3), V=rn(2, 7, 2), sink=np.array([0.5, -2.0])),
    sigmoid_ref,
)


# --- several statistics from one set of scores (bottom-right causal, more keys than queries): the output,
# the log-sum-exp, the entropy of the weights, the largest weight and the expected key position
def stats_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T / np.sqrt(Q.shape[1])
    p, m = pm(P, M)
    mask = m <= p + M - P
    A = softmax(s, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(mask, A * np.log(np.where(A > 0, A, 1.0)), 0.0).sum(1)
    return A @ V, lse(s, mask), ent, A.max(1), (A * m).sum(1)


case(
    "s14_shared_scores_many_statistics",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, LSE, ENT, TOPW, POS
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + M - P
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
A[p, m]  = EX[p, m] / SD[p]
ENT[p]   = -A[p, m] * (S[p, m] - LSE[p])
TOPW[p]  = A[p, m] :: max(m)
POS[p]   = A[p, m] * m
""",
    dict(Q=rn(5, 3), K=rn(9, 3), V=rn(9, 2)),
    stats_ref,
)


# --- symmetric ALiBi whose slopes are computed in the spec from the head index and the head count
# (2 ** (-8 (h + 1) / H)), bidirectional (|p - m|), with a key-padding length per batch
def sym_alibi_ref(Q, K, V, ln):
    B, H, P, _E = Q.shape
    M = K.shape[2]
    slope = 2.0 ** (-8.0 * (np.arange(H) + 1) / H)
    p, m = pm(P, M)
    bias = -slope[:, None, None] * np.abs(p - m)[None]
    out = np.zeros((B, H, P, V.shape[3]))
    for b in range(B):
        out[b] = att(Q[b], K[b], V[b], mask=np.broadcast_to(m < ln[b], (P, M)), bias=bias)
    return out


case(
    "s14_symmetric_alibi_slopes_from_head_index",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], ln[b] : int
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = QK[b, h, p, m] - exp2(-8.0 * (h + 1) / H) * abs(p - m)  where m < ln[b]
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(2, 4, 5, 3), K=rn(2, 4, 7, 3), V=rn(2, 4, 7, 2), ln=np.array([7, 3])),
    sym_alibi_ref,
    passes={"m": 3},
)
