# ruff: noqa (spec strings and oracles are data: as the reviewer wrote them)
import numpy as np
from .cases1 import rn, softmax, att, causal, rng

CASES = []


def case(name, spec, inputs, oracle, params=None, skip=()):
    CASES.append(
        dict(
            name=name, spec=spec.strip() + "\n", inputs=inputs, oracle=oracle, params=params or {}, skip=skip
        )
    )


def window_mask(P, M, W):
    d = np.arange(P)[:, None] - np.arange(M)[None]
    return (d >= 0) & (d < W)


# hand-written 1-pass with -inf start and a window: unguarded -> NaN in IR for rows whose first tile(s) are empty
UNG = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 2
param  W = 3
rank   M = M1 * M0
output AV
BQK[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e]  where p - W < m1 * M0 + m0 <= p
RM[0, p]        = -inf
RD[0, p]        = 0
RNV[0, p, f]    = 0
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]   = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]        = RNV[M1, p, f] / RD[M1, p]
"""


def ung_ref(Q, K, V, W=3, M0=2):
    P, M = Q.shape[0], K.shape[0]
    o = att(Q, K, V, scale=1.0, mask=window_mask(P, M, W))
    # rows whose first tile (m1 = 0) has no present key get NaN (exp(-inf - -inf))
    for p in range(P):
        if not any(p - W < m <= p for m in range(0, min(M0, M))):
            o[p] = np.nan
    return o


case("window_1pass_unguarded_nan", UNG, dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)), ung_ref)

GRD = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 2
param  W = 3
rank   M = M1 * M0
output AV
BQK[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e]  where p - W < m1 * M0 + m0 <= p
RM[0, p]        = -inf
RD[0, p]        = 0
RNV[0, p, f]    = 0
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
NM[m1, p]       = max(RM[m1, p], LM[m1, p])
RM[m1 + 1, p]   = NM[m1, p] ?? RM[m1, p]
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - NM[m1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]      = exp(RM[m1, p] - NM[m1, p]) ?? 1
RD[m1 + 1, p]   = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]        = RNV[M1, p, f] / RD[M1, p]
"""
case(
    "window_1pass_guarded",
    GRD,
    dict(Q=rn(9, 3), K=rn(9, 3), V=rn(9, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0, mask=window_mask(9, 9, 3)),
)
case(
    "window_1pass_guarded_W1_M0_3",
    GRD,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0, mask=window_mask(7, 7, 1)),
    params={"W": 1, "M0": 3},
)

# full -inf bias row -> NaN (IEEE)
B = rn(4, 5)
B[1, :] = -np.inf
B[3, 2:] = -np.inf


def fullinf_ref(Q, K, V, B):
    s = Q @ K.T + B
    g = s.max(1, keepdims=True)
    n = np.exp(s - g)
    with np.errstate(invalid="ignore"):
        return (n @ V) / n.sum(1, keepdims=True)


case(
    "neg_inf_bias_full_row",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + B[p, m]
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(5, 3), V=rn(5, 2), B=B),
    fullinf_ref,
)


# two filters in different statements: max over causal, sum over window only
def twofilt_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T
    cm = causal(P, M)
    g = np.where(cm, s, -np.inf).max(1, keepdims=True)
    wm = window_mask(P, M, 2)
    n = np.where(wm, np.exp(s - g), 0)
    return (n @ V) / n.sum(1, keepdims=True)


case(
    "two_filters_split",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 2
output O
S[m, p] = Q[p, e] * K[m, e]  where m <= p
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])  where p - m < W
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    twofilt_ref,
)


# clamped stabilizer: exp(S - max(G, 0))
def clampstab_ref(Q, K, V):
    s = Q @ K.T
    g = np.maximum(s.max(1, keepdims=True), 0)
    n = np.exp(s - g)
    return (n @ V) / (n.sum(1, keepdims=True) + np.exp(-g))


case(
    "clamped_stabilizer_plus_one",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
G[p]     = S[m, p] :: max(m)
G0[p]    = max(G[p], 0)
N[m, p]  = exp(S[m, p] - G0[p])
D[p]     = N[m, p]
D1[p]    = D[p] + exp(0 - G0[p])
O[p, f]  = N[m, p] * V[m, f] / D1[p]
""",
    dict(Q=rn(4, 3, scale=0.3), K=rn(6, 3, scale=0.3), V=rn(6, 2)),
    clampstab_ref,
)

# tree mask via int ancestor matrix
anc = np.tril(rng.integers(0, 2, (6, 6)))
np.fill_diagonal(anc, 1)
case(
    "tree_mask_matrix",
    """
input  Q[p, e], K[m, e], V[m, f], anc[p, m] : int
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where anc[p, m] == 1
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), anc=anc),
    lambda Q, K, V, anc: att(Q, K, V, mask=anc == 1),
)


# GQA with H not divisible: head past last group absent -> 0
def gqa_tail_ref(Q, K, V):
    H = Q.shape[1]
    G = K.shape[1]
    out = np.zeros(Q.shape[:3] + (V.shape[-1],))
    for h in range(H):
        g = h // 2
        if g < G:
            out[:, h] = att(Q[:, h], K[:, g], V[:, g])
    return out


case(
    "gqa_head_past_groups",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 5, 3, 3), K=rn(1, 2, 4, 3), V=rn(1, 2, 4, 2)),
    gqa_tail_ref,
)

# decode: P = 1 with bottom-right causal and odd head dims E=17, F=1
case(
    "decode_odd_dims",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(Q=rn(3, 2, 1, 17), K=rn(3, 2, 37, 17), V=rn(3, 2, 37, 1)),
    lambda Q, K, V: att(Q, K, V),
)

# larger P than triton block (BLOCK_P=16) with causal, ragged
case(
    "causal_P40",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(2, 40, 4), K=rn(2, 40, 4), V=rn(2, 40, 3)),
    lambda Q, K, V: att(Q, K, V, mask=causal(40, 40)),
)


# LSE-only output, scale by 1/sqrt(E) written as division
def lseonly_ref(Q, K):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    mx = s.max(1)
    return mx + np.log(np.exp(s - mx[:, None]).sum(1))


case(
    "lse_only",
    """
input  Q[p, e], K[m, e]
output L
S[m, p]  = Q[p, e] * K[m, e] / sqrt(E)
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
L[p]     = GM[p] + log(D[p])
""",
    dict(Q=rn(5, 3), K=rn(9, 3)),
    lseonly_ref,
)


# LSE computed with softplus-free: log(D) alone (no GM) -> depends on stabilizer (G + log D form is the right one);
# attention probs output A[p, m] (outputs along m)
def probs_ref(Q, K):
    return softmax(Q @ K.T, mask=causal(Q.shape[0], K.shape[0]))


case(
    "probs_output_causal",
    """
input  Q[p, e], K[m, e]
output A
S[m, p] = Q[p, e] * K[m, e]  where m <= p
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
A[p, m] = N[m, p] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(6, 3)),
    probs_ref,
)


# scores read at m + 1 (rewrite should refuse; results must still be right)
def shift_ref(Q, K, V):
    s = Q @ K.T
    a = softmax(s)
    M = K.shape[0]
    # O[p,f] = sum_m A[m+1, p] * V[m, f], m+1 < M
    return a[:, 1:] @ V[:-1]


case(
    "probs_shifted_read",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
A[m, p] = N[m, p] / D[p]
O[p, f] = A[m + 1, p] * V[m, f]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    shift_ref,
)


# safe softmax with GM ?? 0 and ungated fully-masked rows giving 0
def gmq_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None] + 2 <= np.arange(P)[:, None]
    return att(Q, K, V, scale=1.0, mask=mask), np.where(
        mask.any(1), np.where(mask, Q @ K.T, -np.inf).max(1), 0.0
    )


case(
    "gm_default_zero",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, GG
S[m, p]  = Q[p, e] * K[m, e]  where m + 2 <= p
G[p]     = S[m, p] :: max(m)
GG[p]    = G[p] ?? 0
N[m, p]  = exp(S[m, p] - GG[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    gmq_ref,
)


# exp of clamp: bounded scores via clamp function in values; elu feature maps per head
def clampatt_ref(Q, K, V):
    s = np.clip(Q @ K.T, -1.0, 1.5)
    return softmax(s) @ V


case(
    "clamp_scores",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = clamp(QK[m, p], -1.0, 1.5)
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2)),
    clampatt_ref,
)


# causal with int position ids (RoPE-free position gathers): pos_q[p], pos_k[m]
def posid_ref(Q, K, V, pq, pk):
    return att(Q, K, V, mask=pk[None] <= pq[:, None])


case(
    "position_ids_causal",
    """
input  Q[p, e], K[m, e], V[m, f], pq[p] : int, pk[m] : int
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where pk[m] <= pq[p]
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, 3), K=rn(7, 3), V=rn(7, 2), pq=np.array([3, 6, 0, 10]), pk=np.array([0, 1, 2, 3, 4, 5, 6])),
    posid_ref,
)


# sliding window where whole early rows of tiles are empty (big P, W small) with alibi-like slope param
def swa_ref(Q, K, V):
    P, M = Q.shape[1], K.shape[1]
    d = np.arange(P)[:, None] - np.arange(M)[None]
    return att(Q, K, V, mask=(d >= 0) & (d < 5), bias=-0.3 * d)


case(
    "swa_bias_long",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  W = 5
param  SL = 0.3
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where 0 <= p - m < W
S[h, m, p]  = QK[h, m, p] - SL * (p - m)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
DEN[h, p]   = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / DEN[h, p]
""",
    dict(Q=rn(2, 37, 4), K=rn(2, 37, 4), V=rn(2, 37, 3)),
    swa_ref,
)
