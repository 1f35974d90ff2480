# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Hand-written tiled cascades over ragged sizes: a guarded 1-pass cascade (batch, heads, bottom-right causal,
LSE) at (P, M) in {1, 2, 3, 17}^2 with P > M (fully masked rows), tile sizes overridden to 1, 16 and 17; a
1-pass cascade whose states start absent (the union written with `??`); the 2-pass (TileFlow) cascade causal
and ragged with the LSE; +-1e4 additive biases read through the tiles; split-K decoding written by hand with
per-split LSEs and empty splits; queries tiled too, the output read back through // and %; GQA with a softcap
in 1 pass at 17; a window overridden to 0 so that every output is absent."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1503)
CASES, case = registry()


def br_ref(Q, K, V):
    """Bottom-right causal attention over [b, h, p, e]; O and LSE are 0 in rows without a key."""
    P, M = Q.shape[2], K.shape[2]
    p, m = pm(P, M)
    mask = m <= p + M - P
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[3])
    O = np.einsum("bhpm,bhmf->bhpf", softmax(s, mask), V)
    L = np.where(mask.any(-1), lse(s, mask), 0.0)
    return O, L


_1PASS_BR = """
# 1-pass attention, bottom-right causal, guarded: a tile with no key for a row leaves its states unchanged
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 4
rank   M = M1 * M0
output O, LSE
BK[b, h, m1, m0, e]     = K[b, h, m1 * M0 + m0, e]
BV[b, h, m1, m0, f]     = V[b, h, m1 * M0 + m0, f]
RM[b, h, 0, p]          = -inf
RD[b, h, 0, p]          = 0
RNV[b, h, 0, p, f]      = 0
BQK[b, h, m1, m0, p]    = Q[b, h, p, e] * BK[b, h, m1, m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p + M - P
LM[b, h, m1, p]         = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p]     = max(RM[b, h, m1, p], LM[b, h, m1, p]) ?? RM[b, h, m1, p]
SLN[b, h, m1, m0, p]    = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]        = SLN[b, h, m1, m0, p]
SLNV[b, h, m1, p, f]    = SLN[b, h, m1, m0, p] * BV[b, h, m1, m0, f]
PRM[b, h, m1, p]        = exp(RM[b, h, m1, p] - max(RM[b, h, m1, p], LM[b, h, m1, p])) ?? 1
RD[b, h, m1 + 1, p]     = (SLD[b, h, m1, p] ?? 0) + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, m1 + 1, p, f] = (SLNV[b, h, m1, p, f] ?? 0) + RNV[b, h, m1, p, f] * PRM[b, h, m1, p]
O[b, h, p, f]           = RNV[b, h, M1, p, f] / RD[b, h, M1, p]  where p + M - P >= 0
LSE[b, h, p]            = RM[b, h, M1, p] + log(RD[b, h, M1, p])  where p + M - P >= 0
"""

_P1 = {"m": 1, "m1": 1, "m0": 2}

for _P, _M in [(1, 1), (2, 3), (3, 2), (17, 17), (17, 3), (3, 17), (1, 17), (17, 1)]:
    case(
        f"s15_1pass_bottom_right_guarded_P{_P}_M{_M}",
        _1PASS_BR,
        dict(Q=rn(1, 2, _P, 3), K=rn(1, 2, _M, 3), V=rn(1, 2, _M, 2)),
        br_ref,
        passes=_P1,
    )

for _M0, (_P, _M) in [(1, (5, 17)), (16, (5, 17)), (17, (17, 17))]:
    case(
        f"s15_1pass_bottom_right_guarded_tile{_M0}_P{_P}_M{_M}",
        _1PASS_BR,
        dict(Q=rn(2, 1, _P, 3), K=rn(2, 1, _M, 3), V=rn(2, 1, _M, 2)),
        br_ref,
        params={"M0": _M0},
        passes=_P1,
    )


# --- a 1-pass cascade whose states start absent (an initialiser whose filter is never true), every update a
# union written with `??`: the first present tile starts the states, an absent tile keeps them, and a row
# that never sees a key stays absent to the end (O and LSE delivered as 0). Bottom-right causal, P = 7 > M = 5
def abs_init_ref(Q, K, V):
    O, L = br_ref(Q[None, None], K[None, None], V[None, None])
    return O[0, 0], L[0, 0]


case(
    "s15_1pass_states_start_absent_union_updates",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 2
rank   M = M1 * M0
output O, LSE
BQK[m1, m0, p]   = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p + M - P
LM[m1, p]        = BQK[m1, m0, p] :: max(m0)
RM[0, p]         = 0  where p < 0
RD[0, p]         = 0  where p < 0
RNV[0, p, f]     = 0  where p < 0
RM[m1 + 1, p]    = max(RM[m1, p], LM[m1, p]) ?? LM[m1, p] ?? RM[m1, p]
SLN[m1, m0, p]   = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]       = SLN[m1, m0, p]
SLNV[m1, p, f]   = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]       = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]    = SLD[m1, p] + RD[m1, p] * PRM[m1, p] ?? SLD[m1, p] ?? RD[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1, p] ?? SLNV[m1, p, f] ?? RNV[m1, p, f]
O[p, f]          = RNV[M1, p, f] / RD[M1, p]
LSE[p]           = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=rn(7, 3), K=rn(5, 3), V=rn(5, 2)),
    abs_init_ref,
    passes=_P1,
)


# --- the 2-pass cascade (TileFlow's), causal, M = 11 in tiles of 4 (tiles after the query are absent for it:
# their local max, correction factor and sums skip), with the LSE
def twopass_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    return softmax(s, m <= p) @ V, lse(s, m <= p)


case(
    "s15_2pass_tileflow_causal_ragged_lse",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output O, LSE
BK[m1, m0, e]   = K[m1 * M0 + m0, e]
BV[m1, m0, f]   = V[m1 * M0 + m0, f]
BQK[m1, m0, p]  = Q[p, e] * BK[m1, m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - LM[m1, p])
SLD[m1, p]      = SLN[m1, m0, p]
GM[p]           = LM[m1, p] :: max(m1)
CF[m1, p]       = exp(LM[m1, p] - GM[p])
SD[p]           = SLD[m1, p] * CF[m1, p]
SN[m1, m0, p]   = SLN[m1, m0, p] * CF[m1, p]
A[m1, m0, p]    = SN[m1, m0, p] / SD[p]
O[p, f]         = A[m1, m0, p] * BV[m1, m0, f]
LSE[p]          = GM[p] + log(SD[p])
""",
    dict(Q=rn(11, 3), K=rn(11, 3), V=rn(11, 2)),
    twopass_ref,
    passes={"m": 2},
)


# --- 1-pass with an additive bias read through the tiles: +1e4 on one key of a row (a one-hot row), -1e4 on all
# keys of a row whose query is 0 (uniform over its keys), -1e4 on some keys of another row (they vanish); causal,
# M = 10 in tiles of 4; scores are exact in float32 wherever they are huge
def bias1p_ref(Q, K, V, B):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T / np.sqrt(Q.shape[1]) + B
    return softmax(s, m <= p) @ V, lse(s, m <= p)


_Qb = rn(10, 3)
_Qb[6] = 0.0
_Bb = np.zeros((10, 10))
_Bb[4, 2] = 1e4
_Bb[6, :] = -1e4
_Bb[8, [0, 1, 5, 7]] = -1e4
_Bb[9, 9] = 1e4
case(
    "s15_1pass_bias_pm_1e4_through_tiles_lse",
    """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
param  M0 = 4
rank   M = M1 * M0
output O, LSE
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
SC[m1, m0, p]     = BQK[m1, m0, p] + B[p, m1 * M0 + m0]
LM[m1, p]         = SC[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[0, p, f]      = 0
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p]) ?? RM[m1, p]
SLN[m1, m0, p]    = exp(SC[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p]) ?? 1
RD[m1 + 1, p]     = (SLN[m1, m0, p] ?? 0) + RD[m1, p] * PRM[m1, p] / M0
RNV[m1 + 1, p, f] = (SLN[m1, m0, p] * V[m1 * M0 + m0, f] ?? 0) + RNV[m1, p, f] * PRM[m1, p] / M0
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
LSE[p]            = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=_Qb, K=rn(10, 3), V=rn(10, 2), B=_Bb),
    bias1p_ref,
)


# --- split-K decoding written by hand: the key splits are the tiles m1 of M = 17 (M0 = 4, 5 splits), each
# split's partial output and LSE, then the combine over splits weighted by exp(LSE_s - max LSE); cache
# lengths 17, 0, 1 and 5 (empty splits are absent and the combine skips them; the empty cache gives 0)
def splitk_ref(q, K, V, kvlen):
    B, H, E = q.shape
    M = K.shape[2]
    O = np.zeros((B, H, V.shape[3]))
    L = np.zeros((B, H))
    for b in range(B):
        keep = np.arange(M) < kvlen[b]
        for h in range(H):
            s = K[b, h] @ q[b, h] / np.sqrt(E)
            O[b, h] = softmax(s, keep) @ V[b, h]
            L[b, h] = lse(s, keep) if keep.any() else 0.0
    return O, L


case(
    "s15_splitk_decode_hand_combine_empty_splits",
    """
input  q[b, h, e], K[b, h, m, e], V[b, h, m, f], kvlen[b] : int
param  M0 = 4
rank   M = M1 * M0
output O, LSE
S[b, h, m1, m0]  = q[b, h, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 < kvlen[b]
LM[b, h, m1]     = S[b, h, m1, m0] :: max(m0)
EX[b, h, m1, m0] = exp(S[b, h, m1, m0] - LM[b, h, m1])
LD[b, h, m1]     = EX[b, h, m1, m0]
OS[b, h, m1, f]  = EX[b, h, m1, m0] * V[b, h, m1 * M0 + m0, f] / LD[b, h, m1]
LS[b, h, m1]     = LM[b, h, m1] + log(LD[b, h, m1])
# combine
GL[b, h]         = LS[b, h, m1] :: max(m1)
W[b, h, m1]      = exp(LS[b, h, m1] - GL[b, h])
WS[b, h]         = W[b, h, m1]
O[b, h, f]       = W[b, h, m1] * OS[b, h, m1, f] / WS[b, h]
LSE[b, h]        = GL[b, h] + log(WS[b, h])
""",
    dict(q=rn(4, 2, 3), K=rn(4, 2, 17, 3), V=rn(4, 2, 17, 2), kvlen=np.array([17, 0, 1, 5])),
    splitk_ref,
)


# --- queries tiled as well (P0 = 3, P = 8), keys in tiles of M0 = 2 (M = 7), causal at element level; the
# output in the untiled layout reads the tiled final states at [p // P0, p % P0]
def qtile_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    return att(Q, K, V, mask=m <= p)


case(
    "s15_1pass_query_and_key_tiles_output_untiled_floor_mod",
    """
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 3
param  M0 = 2
rank   P = P1 * P0
rank   M = M1 * M0
output O
BQ[p1, p0, e]        = Q[p1 * P0 + p0, e]
BQK[p1, p0, m1, m0]  = BQ[p1, p0, e] * K[m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p1 * P0 + p0
LM[p1, p0, m1]       = BQK[p1, p0, m1, m0] :: max(m0)
RM[p1, p0, 0]        = -inf
RD[p1, p0, 0]        = 0
RNV[p1, p0, 0, f]    = 0
RM[p1, p0, m1 + 1]   = max(RM[p1, p0, m1], LM[p1, p0, m1]) ?? RM[p1, p0, m1]
SLN[p1, p0, m1, m0]  = exp(BQK[p1, p0, m1, m0] - RM[p1, p0, m1 + 1])
SLD[p1, p0, m1]      = SLN[p1, p0, m1, m0]
SLNV[p1, p0, m1, f]  = SLN[p1, p0, m1, m0] * V[m1 * M0 + m0, f]
PRM[p1, p0, m1]      = exp(RM[p1, p0, m1] - RM[p1, p0, m1 + 1]) ?? 1
RD[p1, p0, m1 + 1]   = (SLD[p1, p0, m1] ?? 0) + RD[p1, p0, m1] * PRM[p1, p0, m1]
RNV[p1, p0, m1 + 1, f] = (SLNV[p1, p0, m1, f] ?? 0) + RNV[p1, p0, m1, f] * PRM[p1, p0, m1]
O[p, f]              = RNV[p // P0, p % P0, M1, f] / RD[p // P0, p % P0, M1]
""",
    dict(Q=rn(8, 3), K=rn(7, 3), V=rn(7, 2)),
    qtile_ref,
)


# --- GQA 4:2 with a softcap (CAP = 3, inputs scaled so that it bites), causal, 1 pass at P = M = 17 in tiles of 5
def gqa1p_ref(Q, K, V, CAP=3.0):
    H, P, E = Q.shape
    p, m = pm(P, P)
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = Q[h] @ K[h // 2].T / np.sqrt(E)
        out[h] = softmax(CAP * np.tanh(s / CAP), m <= p) @ V[h // 2]
    return out


case(
    "s15_1pass_gqa_softcap_causal_17_tile5",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  M0 = 5
param  CAP = 3.0
rank   M = M1 * M0
output O
BK[g, m1, m0, e]    = K[g, m1 * M0 + m0, e]
BV[g, m1, m0, f]    = V[g, m1 * M0 + m0, f]
QK[h, m1, m0, p]    = Q[h, p, e] * BK[h // 2, m1, m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
BQK[h, m1, m0, p]   = CAP * tanh(QK[h, m1, m0, p] / CAP)
LM[h, m1, p]        = BQK[h, m1, m0, p] :: max(m0)
RM[h, 0, p]         = -inf
RD[h, 0, p]         = 0
RNV[h, 0, p, f]     = 0
RM[h, m1 + 1, p]    = max(RM[h, m1, p], LM[h, m1, p]) ?? RM[h, m1, p]
SLN[h, m1, m0, p]   = exp(BQK[h, m1, m0, p] - RM[h, m1 + 1, p])
SLD[h, m1, p]       = SLN[h, m1, m0, p]
SLNV[h, m1, p, f]   = SLN[h, m1, m0, p] * BV[h // 2, m1, m0, f]
PRM[h, m1, p]       = exp(RM[h, m1, p] - RM[h, m1 + 1, p]) ?? 1
RD[h, m1 + 1, p]    = (SLD[h, m1, p] ?? 0) + RD[h, m1, p] * PRM[h, m1, p]
RNV[h, m1 + 1, p, f] = (SLNV[h, m1, p, f] ?? 0) + RNV[h, m1, p, f] * PRM[h, m1, p]
O[h, p, f]          = RNV[h, M1, p, f] / RD[h, M1, p]
""",
    dict(Q=rn(4, 17, 3, scale=3), K=rn(2, 17, 3, scale=3), V=rn(2, 17, 2)),
    gqa1p_ref,
    passes=_P1,
)


# --- a window overridden to width 0: nothing is kept anywhere, so every output is absent and delivered as 0,
# the scalar count of kept keys included
def none_ref(Q, K, V):
    P = Q.shape[0]
    return np.zeros((P, V.shape[1])), np.zeros(P), np.array(0.0)


case(
    "s15_window_overridden_to_zero_every_output_absent",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
output O, LSE, COUNT
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where p - W < m and m <= p
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - GM[p])
SD[p]     = EX[p, m]
O[p, f]   = EX[p, m] * V[m, f] / SD[p]
LSE[p]    = GM[p] + log(SD[p])
ONE[p, m] = S[p, m] * 0 + 1
COUNT     = ONE[p, m]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    none_ref,
    params={"W": 0},
)
