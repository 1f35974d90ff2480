"""FuseMax's cascades restyled: Cascade 4 with spelled-out names and heads first, deferred with a negated-min
stabiliser, through its log-sum-exp; the 2-pass (TileFlow) cascade with the tile count as the param and an
empty last tile; Cascade 5 with the iterative index last, with an update that reduces its tile inline and
statements out of order, with GQA heads read through ``h // R``; teaching cascades 1 and 3 (guarded) renamed;
split-K decode with named partition parts merged by log-sum-exp, splits past the length empty."""

import numpy as np

from .common import att, lse, make_rn, registry, scores, softmax, weighted

rn, rng = make_rn(2101)
CASES, case = registry()


# --- Cascade 4, heads first, every name spelled out (ranks head, kpos, qpos, d, dv)
case(
    "s21_fm_cascade4_spelled_out_names_heads_first",
    """
# FuseMax Cascade 4 with heads first and spelled-out names
input  query[head, d, qpos], key[head, d, kpos], value[head, dv, kpos]
output attended
scores[head, kpos, qpos]  = query[head, d, qpos] * key[head, d, kpos] * rsqrt(D)
rowmax[head, qpos]        = scores[head, kpos, qpos] :: max(kpos)
numer[head, kpos, qpos]   = exp(scores[head, kpos, qpos] - rowmax[head, qpos])
denom[head, qpos]         = numer[head, kpos, qpos]
weights[head, kpos, qpos] = numer[head, kpos, qpos] / denom[head, qpos]
attended[head, dv, qpos]  = weights[head, kpos, qpos] * value[head, dv, kpos]
""",
    dict(query=rn(2, 4, 5), key=rn(2, 4, 7), value=rn(2, 3, 7)),
    lambda query, key, value: np.swapaxes(
        att(np.swapaxes(query, 1, 2), np.swapaxes(key, 1, 2), np.swapaxes(value, 1, 2)), 1, 2
    ),
    passes={"kpos": 3, "qpos": 1, "head": 1},
)


# --- Cascade 4 with the division deferred and the stabiliser written as minus the min of minus the scores
case(
    "s21_fm_cascade4_deferred_negated_min_stabiliser",
    """
input  Q[p, e], K[m, e], V[m, f]
output AV
QK[m, p]  = Q[p, e] * K[m, e]
NGM[p]    = -QK[m, p] :: min(m)          # min of -QK: minus the row max
SN[m, p]  = exp(QK[m, p] + NGM[p])
SD[p]     = SN[m, p]
SNV[p, f] = SN[m, p] * V[m, f]
AV[p, f]  = SNV[p, f] / SD[p]
""",
    dict(Q=rn(5, 4, scale=2), K=rn(8, 4, scale=2), V=rn(8, 3)),
    lambda Q, K, V: att(Q, K, V, scale=1.0),
    passes={"m": 2},
)


# --- the log-sum-exp first, then exp(S - LSE) re-read: 3 passes over m; both outputs
case(
    "s21_fm_exp_minus_lse_three_passes_two_outputs",
    """
input  Q[p, e], K[m, e], V[m, f]
output AV, LSE
QK[p, m] = Q[p, e] * K[m, e] * 0.35
GM[p]    = QK[p, m] :: max(m)
SD[p]    = exp(QK[p, m] - GM[p])
LSE[p]   = GM[p] + log(SD[p])
AV[p, f] = exp(QK[p, m] - LSE[p]) * V[m, f]
""",
    dict(Q=rn(6, 5, scale=3), K=rn(9, 5, scale=3), V=rn(9, 2)),
    lambda Q, K, V: (att(Q, K, V, scale=0.35), lse(scores(Q, K, 0.35))),
    passes={"m": 3},
)


# --- the 2-pass cascade with the tile count M1 as the param (overridden to 4): M = 5 gives tiles of 2, the
# last one empty (its LM, SLD and CF absent, skipped by the max and the sums)
def tileflow_ref(Q, K, V):
    return weighted(softmax(Q.T @ K), V.T).T


case(
    "s21_fm_2pass_tileflow_tile_count_param_empty_last_tile",
    """
input  Q[e, p], K[e, m], V[f, m]
param  M1 = 3
rank   M = M1 * M0
output AV
BK[e, m1, m0]  = K[e, m1 * M0 + m0]
BV[f, m1, m0]  = V[f, m1 * M0 + m0]
BQK[m1, m0, p] = Q[e, p] * BK[e, m1, m0]
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - LM[m1, p])
SLD[m1, p]     = SLN[m1, m0, p]
GM[p]          = LM[m1, p] :: max(m1)
CF[m1, p]      = exp(LM[m1, p] - GM[p])
SD[p]          = SLD[m1, p] * CF[m1, p]
SN[m1, m0, p]  = SLN[m1, m0, p] * CF[m1, p]
A[m1, m0, p]   = SN[m1, m0, p] / SD[p]
AV[f, p]       = A[m1, m0, p] * BV[f, m1, m0]
""",
    dict(Q=rn(4, 6), K=rn(4, 5), V=rn(3, 5)),
    tileflow_ref,
    params={"M1": 4},
    passes={"m": 2, "m1": 3, "m0": 3},
)


# --- Cascade 5, queries major and the iterative index last everywhere (M = 11, tiles of 4)
case(
    "s21_fm_cascade5_iterative_index_last_ragged",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output AV
BK[m1, m0, e]     = K[m1 * M0 + m0, e]
BV[m1, m0, f]     = V[m1 * M0 + m0, f]
RM[p, 0]          = -inf
RD[p, 0]          = 0
RNV[p, f, 0]      = 0
BQK[p, m1, m0]    = Q[p, e] * BK[m1, m0, e] * rsqrt(E)
LM[p, m1]         = BQK[p, m1, m0] :: max(m0)
RM[p, m1 + 1]     = max(RM[p, m1], LM[p, m1])
SLN[p, m1, m0]    = exp(BQK[p, m1, m0] - RM[p, m1 + 1])
SLD[p, m1]        = SLN[p, m1, m0]
SLNV[p, f, m1]    = SLN[p, m1, m0] * BV[m1, m0, f]
PRM[p, m1]        = exp(RM[p, m1] - RM[p, m1 + 1])
RD[p, m1 + 1]     = SLD[p, m1] + RD[p, m1] * PRM[p, m1]
RNV[p, f, m1 + 1] = SLNV[p, f, m1] + RNV[p, f, m1] * PRM[p, m1]
AV[p, f]          = RNV[p, f, M1] / RD[p, M1]
""",
    dict(Q=rn(5, 4), K=rn(11, 4), V=rn(11, 3)),
    lambda Q, K, V: att(Q, K, V),
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- Cascade 5 condensed: the running max reduces its tile inside the update, the corrections inline, the
# statements out of dataflow order, the keys read through the partition directly (M = 10, tiles of 3)
case(
    "s21_fm_cascade5_update_reduces_tile_inline_out_of_order",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
RNV[m1 + 1, p, f] = RNV[m1, p, f] * exp(RM[m1, p] - RM[m1 + 1, p]) + SLV[m1, p, f]
SLV[m1, p, f]     = exp(S[m1, m0, p] - RM[m1 + 1, p]) * V[m1 * M0 + m0, f]
RD[m1 + 1, p]     = RD[m1, p] * exp(RM[m1, p] - RM[m1 + 1, p]) + SL[m1, p]
SL[m1, p]         = exp(S[m1, m0, p] - RM[m1 + 1, p])
RM[m1 + 1, p]     = max(RM[m1, p], S[m1, m0, p]) :: max(m0)
S[m1, m0, p]      = Q[p, e] * K[m1 * M0 + m0, e]
RNV[0, p, f]      = 0
RD[0, p]          = 0
RM[0, p]          = -inf
""",
    dict(Q=rn(4, 3, scale=2), K=rn(10, 3, scale=2), V=rn(10, 2)),
    lambda Q, K, V: att(Q, K, V, scale=1.0),
    passes={"m": 1},
)


# --- Cascade 5 with batch, query heads and grouped KV heads (h // R, H = 6, R = 3), M = 12 in tiles of 5
def gqa_ref(Q, K, V, R=3):
    return att(Q, np.repeat(K, R, axis=1), np.repeat(V, R, axis=1))


case(
    "s21_fm_cascade5_gqa_heads_floor_div_ragged",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 3
param  M0 = 5
rank   M = M1 * M0
output O
BK[b, g, m1, m0, e]     = K[b, g, m1 * M0 + m0, e]
BV[b, g, m1, m0, f]     = V[b, g, m1 * M0 + m0, f]
RM[b, h, p, 0]          = -inf
RD[b, h, p, 0]          = 0
RN[b, h, p, f, 0]       = 0
BQK[b, h, p, m1, m0]    = Q[b, h, p, e] * BK[b, h // R, m1, m0, e] * rsqrt(E)
LM[b, h, p, m1]         = BQK[b, h, p, m1, m0] :: max(m0)
RM[b, h, p, m1 + 1]     = max(RM[b, h, p, m1], LM[b, h, p, m1])
SLN[b, h, p, m1, m0]    = exp(BQK[b, h, p, m1, m0] - RM[b, h, p, m1 + 1])
PRM[b, h, p, m1]        = exp(RM[b, h, p, m1] - RM[b, h, p, m1 + 1])
SLD[b, h, p, m1]        = SLN[b, h, p, m1, m0]
SLNV[b, h, p, f, m1]    = SLN[b, h, p, m1, m0] * BV[b, h // R, m1, m0, f]
RD[b, h, p, m1 + 1]     = RD[b, h, p, m1] * PRM[b, h, p, m1] + SLD[b, h, p, m1]
RN[b, h, p, f, m1 + 1]  = RN[b, h, p, f, m1] * PRM[b, h, p, m1] + SLNV[b, h, p, f, m1]
O[b, h, p, f]           = RN[b, h, p, f, M1] / RD[b, h, p, M1]
""",
    dict(Q=rn(2, 6, 3, 4), K=rn(2, 2, 12, 4), V=rn(2, 2, 12, 3)),
    gqa_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- teaching cascade 1 renamed (2 passes over tok) and teaching cascade 3 guarded (1 pass over k): the
# paper's first step divides 0 by 0; here the rescaling term is absent at k = 0 and defaulted to 0
case(
    "s21_fm_teaching_cascade1_renamed_two_passes",
    """
input  Alpha[tok], Beta[tok]
output Zed
Why = Alpha[tok] * Beta[tok]
Zed = Why * Alpha[tok]
""",
    dict(Alpha=rn(7), Beta=rn(7)),
    lambda Alpha, Beta: np.sum(Alpha * Beta) * np.sum(Alpha),
    passes={"tok": 2},
)

case(
    "s21_fm_teaching_cascade3_guarded_first_step",
    """
input  A[k], B[k]
output Z, ZS
RY[0]     = 0
RZ[0]     = 0
RY[k + 1] = RY[k] + A[k] * B[k]
CORR[k]   = RZ[k] * RY[k + 1] / RY[k]  where k > 0
RZ[k + 1] = (CORR[k] ?? 0) + RY[k + 1] * A[k]
Z         = RZ[K]
ZS[k]     = RZ[k + 1]
""",
    dict(A=rn(6) + 2, B=rn(6) + 2),
    lambda A, B: (
        np.sum(A * B) * np.sum(A),
        np.cumsum(A * B) * np.cumsum(A),
    ),
    passes={"k": 1},
)


# --- split-K decode: M = 10 split into NSPLIT = 4 chunks of CHUNK = 3 (the last of one key); the keys past
# kvlen = 7 are filtered, so split 2 holds one key and split 3 none (its partials absent); per-split outputs
# and log-sum-exps merged by a max and a weighted sum
def splitk_ref(q, K, V, kvlen):
    s = q @ K.T / np.sqrt(q.shape[-1])
    mask = np.arange(K.shape[0])[None, :] < kvlen
    return weighted(softmax(s, mask), V), lse(s, mask)


case(
    "s21_fm_splitk_decode_named_parts_lse_merge_empty_split",
    """
input  q[h, e], K[m, e], V[m, f], kvlen : int
param  NSPLIT = 4
rank   M = NSPLIT * CHUNK
output O, LSE
S[h, nsplit, chunk]  = q[h, e] * K[nsplit * CHUNK + chunk, e] * rsqrt(E)  where nsplit * CHUNK + chunk < kvlen
PM[h, nsplit]        = S[h, nsplit, chunk] :: max(chunk)
PE[h, nsplit, chunk] = exp(S[h, nsplit, chunk] - PM[h, nsplit])
PD[h, nsplit]        = PE[h, nsplit, chunk]
PN[h, nsplit, f]     = PE[h, nsplit, chunk] * V[nsplit * CHUNK + chunk, f] / PD[h, nsplit]
PL[h, nsplit]        = PM[h, nsplit] + log(PD[h, nsplit])
GL[h]                = PL[h, nsplit] :: max(nsplit)
W[h, nsplit]         = exp(PL[h, nsplit] - GL[h])
WS[h]                = W[h, nsplit]
O[h, f]              = W[h, nsplit] * PN[h, nsplit, f] / WS[h]
LSE[h]               = GL[h] + log(WS[h])
""",
    dict(q=rn(3, 4), K=rn(10, 4), V=rn(10, 2), kvlen=np.array(7)),
    splitk_ref,
    passes={"m": 1, "nsplit": 3, "chunk": 3},
)
