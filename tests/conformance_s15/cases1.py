# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Attention variants from the literature, written as a researcher would: differential attention with the
lambda re-parameterisation and the head-wise RMS norm, stick-breaking attention as a reversed scan and in log
space, the forgetting transformer (cumulative log forget gates from a scan) with GQA 3 and the LSE, ReLU
attention, Swin v2 cosine attention (clamped logit scale, a CPB table), talking heads before and after the
softmax, MQA with five heads, GQA 6:3 bottom-right, GQA 9:3 in a symmetric window, cross-attention with key
padding, varlen (cu_seqlens) attention with and without separate query/key offsets, Swin 2D relative bias
tables, softmax-plus-one, and sparsemax from a caller-supplied sort order."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1501)
CASES, case = registry()

_ATT_HPM = """
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / SD[h, p]
"""


def sig(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0.0, x)


# --- differential attention (Ye et al. 2024): two softmaxes over the two halves of Q and K, lambda from its
# re-parameterisation (each dot product in a statement of its own: a sum inside exp() would sum the exps),
# then the head-wise RMS norm scaled by (1 - LINIT); LINIT overridden at call
def diff_ref(Q, K, V, LQ1, LK1, LQ2, LK2, D=3, LINIT=0.5, EPS=1e-5):
    _H, P, _ = Q.shape
    M = K.shape[1]
    lam = np.exp((LQ1 * LK1).sum(-1)) - np.exp((LQ2 * LK2).sum(-1)) + LINIT
    mask = np.tril(np.ones((P, M), bool))
    a1 = softmax(np.einsum("hpd,hmd->hpm", Q[..., :D], K[..., :D]) / np.sqrt(D), mask)
    a2 = softmax(np.einsum("hpd,hmd->hpm", Q[..., D:], K[..., D:]) / np.sqrt(D), mask)
    o = np.einsum("hpm,hmf->hpf", a1 - lam[:, None, None] * a2, V)
    ms = (o**2).mean(-1, keepdims=True)
    return o / np.sqrt(ms + EPS) * (1 - LINIT), lam


case(
    "s15_diff_attn_subln_lambda_reparam_override",
    """
# differential attention: A1 - lambda * A2, causal, then RMS-normalised per head
input  Q[h, p, e], K[h, m, e], V[h, m, f]
input  LQ1[h, i], LK1[h, i], LQ2[h, i], LK2[h, i]
param  D = 3
param  LINIT = 0.2
param  EPS = 1e-5
output O, LAM
D1[h]       = LQ1[h, i] * LK1[h, i]
D2[h]       = LQ2[h, i] * LK2[h, i]
LAM[h]      = exp(D1[h]) - exp(D2[h]) + LINIT
S1[h, p, m] = Q[h, p, d] * K[h, m, d] * rsqrt(D)      where m <= p
S2[h, p, m] = Q[h, p, d + D] * K[h, m, d + D] * rsqrt(D)  where m <= p
G1[h, p]    = S1[h, p, m] :: max(m)
G2[h, p]    = S2[h, p, m] :: max(m)
N1[h, p, m] = exp(S1[h, p, m] - G1[h, p])
N2[h, p, m] = exp(S2[h, p, m] - G2[h, p])
Z1[h, p]    = N1[h, p, m]
Z2[h, p]    = N2[h, p, m]
A[h, p, m]  = N1[h, p, m] / Z1[h, p] - LAM[h] * N2[h, p, m] / Z2[h, p]
O0[h, p, f] = A[h, p, m] * V[h, m, f]
MS[h, p]    = square(O0[h, p, f]) / F
O[h, p, f]  = O0[h, p, f] * rsqrt(MS[h, p] + EPS) * (1 - LINIT)
""",
    dict(
        Q=rn(2, 5, 6),
        K=rn(2, 5, 6),
        V=rn(2, 5, 4),
        LQ1=rn(2, 3, scale=0.3),
        LK1=rn(2, 3, scale=0.3),
        LQ2=rn(2, 3, scale=0.3),
        LK2=rn(2, 3, scale=0.3),
    ),
    diff_ref,
    params={"LINIT": 0.5},
    passes={"m": 3},
)


# --- stick-breaking attention (Tan et al. 2024): key m < p takes sigmoid(z) of what the keys between it and
# p left over. Once as a scan that walks from key p - 1 back to key 0 (keys before 0 are absent, so the state
# stops changing), once in log space; also the mass left over (1 for the first query, which has no key)
def stick_ref(Q, K, V):
    P = Q.shape[0]
    z = Q @ K.T / np.sqrt(Q.shape[1])
    o = np.zeros((P, V.shape[1]))
    rest = np.ones(P)
    for p in range(P):
        r = 1.0
        for m in range(p - 1, -1, -1):
            w = r * sig(z[p, m])
            o[p] += w * V[m]
            r *= 1 - sig(z[p, m])
        rest[p] = r
    return o, o, rest


case(
    "s15_stick_breaking_reverse_scan_and_log_space",
    """
input  Q[p, e], K[m, e], V[m, f]
rank   T = M
rank   J = M
output OSCAN, OLOG, REST
Z[p, m]      = Q[p, e] * K[m, e] * rsqrt(E)  where m < p
# the scan: step t looks at key p - 1 - t
ZT[t, p]     = Z[p, p - 1 - t]
RS[0, p]     = 1
RS[t + 1, p] = RS[t, p] * (1 - sigmoid(ZT[t, p])) ?? RS[t, p]
W[t, p]      = RS[t, p] * sigmoid(ZT[t, p])
OSCAN[p, f]  = W[t, p] * V[p - 1 - t, f]
REST[p]      = RS[T, p]
# log space: log(1 - sigmoid(z)) = -softplus(z)
LB[p, m]     = -softplus(Z[p, m])
CUM[p, m]    = LB[p, j]  where m < j and j < p
OLOG[p, f]   = exp(-softplus(-Z[p, m]) + (CUM[p, m] ?? 0)) * V[m, f]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    stick_ref,
)


# --- the forgetting transformer (Lin et al. 2025): logits plus the sum of log forget gates between key and
# query, the gates' cumulative sum computed by a scan over t and read at p + 1 and m + 1; query heads share
# key/value heads 3 to 1 (H = 6, G = 2); also the log-sum-exp
def fox_ref(Q, K, V, FG, R=3):
    H, P, E = Q.shape
    lf = -softplus(-FG)
    C = np.concatenate([np.zeros((H, 1)), np.cumsum(lf, axis=1)], axis=1)
    p, m = pm(P, P)
    mask = m <= p
    O = np.zeros((H, P, V.shape[2]))
    L = np.zeros((H, P))
    for h in range(H):
        s = Q[h] @ K[h // R].T / np.sqrt(E) + C[h, 1:][:, None] - C[h, 1:][None, :]
        O[h] = softmax(s, mask) @ V[h // R]
        L[h] = lse(s, mask)
    return O, L


case(
    "s15_forgetting_transformer_gqa3_scan_cumsum_lse",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f], FG[h, t]
param  R = 3
output O, LSE
LF[h, t]      = -softplus(-FG[h, t])
C[h, 0]       = 0
C[h, t + 1]   = C[h, t] + LF[h, t]
QK[h, p, m]   = Q[h, p, e] * K[h // R, m, e] * rsqrt(E)
S[h, p, m]    = QK[h, p, m] + C[h, p + 1] - C[h, m + 1]  where m <= p
GM[h, p]      = S[h, p, m] :: max(m)
EX[h, p, m]   = exp(S[h, p, m] - GM[h, p])
SD[h, p]      = EX[h, p, m]
O[h, p, f]    = EX[h, p, m] * V[h // R, m, f] / SD[h, p]
LSE[h, p]     = GM[h, p] + log(SD[h, p])
""",
    dict(Q=rn(6, 7, 4), K=rn(2, 7, 4), V=rn(2, 7, 3), FG=rn(6, 7, scale=2.0) + 1.0),
    fox_ref,
    passes={"m": 3},
)


# --- ReLU attention (causal, normalised by the number of keys a query sees, p + 1) and squared-ReLU attention
# over all keys normalised by M
def relu_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T / np.sqrt(Q.shape[1])
    p, m = pm(P, M)
    w1 = np.where(m <= p, np.maximum(s, 0), 0) / (p + 1)
    w2 = np.maximum(s, 0) ** 2 / M
    return w1 @ V, w2 @ V


case(
    "s15_relu_causal_over_position_and_relu2_over_M",
    """
input  Q[p, e], K[m, e], V[m, f]
output O1, O2
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
O1[p, f]  = relu(S[p, m]) * V[m, f] / (p + 1)  where m <= p
O2[p, f]  = square(relu(S[p, m])) * V[m, f] / M
""",
    dict(Q=rn(6, 4), K=rn(6, 4), V=rn(6, 3)),
    relu_ref,
)


# --- Swin v2 attention: cosine similarity (F.normalize: the norm clamped below at 1e-12, so a zero query row
# gives zero scores), a per-head logit scale exp(min(LS, log 100)), and a continuous position bias
# 16 * sigmoid(table[p - m + M - 1])
def swinv2_ref(Q, K, V, LS, TB):
    H, P, _E = Q.shape
    M = K.shape[1]
    qn = Q / np.maximum(np.linalg.norm(Q, axis=-1, keepdims=True), 1e-12)
    kn = K / np.maximum(np.linalg.norm(K, axis=-1, keepdims=True), 1e-12)
    p, m = pm(P, M)
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = qn[h] @ kn[h].T * np.exp(min(LS[h], np.log(100.0))) + 16 * sig(TB[h][p - m + M - 1])
        out[h] = softmax(s) @ V[h]
    return out


_Q = rn(2, 5, 4)
_Q[1, 2] = 0.0
case(
    "s15_swinv2_cosine_clamped_logit_scale_cpb_bias",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], LS[h], TB[h, r]
output O
QN[h, p]    = square(Q[h, p, e])
KN[h, m]    = square(K[h, m, e])
DOT[h, p, m] = Q[h, p, e] * K[h, m, e]
SC[h]       = exp(min(LS[h], log(100.0)))
S[h, p, m]  = DOT[h, p, m] * rsqrt(max(QN[h, p], 1e-24)) * rsqrt(max(KN[h, m], 1e-24)) * SC[h] \\
              + 16 * sigmoid(TB[h, p - m + M - 1])
"""
    + _ATT_HPM,
    dict(Q=_Q, K=rn(2, 5, 4), V=rn(2, 5, 3), LS=np.array([6.0, 1.3]), TB=rn(2, 9)),
    swinv2_ref,
    passes={"m": 3},
)


# --- talking heads (Shazeer et al. 2020): logits mixed across heads before the causal softmax, weights mixed
# again after it
def talk_ref(Q, K, V, WL, WW):
    _H, P, E = Q.shape
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E)
    lg = np.einsum("hg,gpm->hpm", WL, s)
    p, m = pm(P, K.shape[1])
    a = softmax(lg, m <= p)
    w = np.einsum("hg,gpm->hpm", WW, a)
    return np.einsum("hpm,hmf->hpf", w, V)


case(
    "s15_talking_heads_pre_and_post_softmax_causal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], WL[h, g], WW[h, g]
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
L[h, p, m]  = WL[h, g] * S[g, p, m]  where m <= p
GM[h, p]    = L[h, p, m] :: max(m)
EX[h, p, m] = exp(L[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
A[h, p, m]  = EX[h, p, m] / SD[h, p]
W[h, p, m]  = WW[h, g] * A[g, p, m]
O[h, p, f]  = W[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(3, 5, 4), K=rn(3, 5, 4), V=rn(3, 5, 2), WL=rn(3, 3), WW=rn(3, 3)),
    talk_ref,
)


# --- multi-query attention with five query heads and one key/value head, tanh softcap (CAP overridden to
# 5), causal, with the LSE
def mqa_ref(Q, K, V, CAP=5.0):
    _B, _H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    s = np.einsum("bhpe,bme->bhpm", Q, K) / np.sqrt(E)
    s = CAP * np.tanh(s / CAP)
    a = softmax(s, m <= p)
    return np.einsum("bhpm,bmf->bhpf", a, V), lse(s, m <= p)


case(
    "s15_mqa_five_heads_softcap_causal_lse_override",
    """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f]
param  CAP = 20.0
output O, LSE
QK[b, h, p, m] = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)
S[b, h, p, m]  = CAP * tanh(QK[b, h, p, m] / CAP)  where m <= p
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, m, f] / SD[b, h, p]
LSE[b, h, p]   = GM[b, h, p] + log(SD[b, h, p])
""",
    dict(Q=rn(2, 5, 4, 3, scale=3.0), K=rn(2, 4, 3, scale=3.0), V=rn(2, 4, 2)),
    mqa_ref,
    params={"CAP": 5.0},
    passes={"m": 3},
)


# --- GQA with six query heads over three key/value heads, sequence-first layouts (flash-attn's [b, s, h, d]),
# bottom-right causal with 3 queries against 7 keys (the queries are the last three positions)
def gqa63_ref(Q, K, V):
    B, P, H, _E = Q.shape
    M, G = K.shape[1], K.shape[2]
    p, m = pm(P, M)
    mask = m <= p + M - P
    out = np.zeros((B, P, H, V.shape[3]))
    for b in range(B):
        for h in range(H):
            out[b, :, h] = att(Q[b, :, h], K[b, :, h // (H // G)], V[b, :, h // (H // G)], mask=mask)
    return out


case(
    "s15_gqa_six_heads_three_groups_seq_first_bottom_right",
    """
input  Q[b, p, h, e], K[b, m, g, e], V[b, m, g, f]
param  R = 2
output O
S[b, h, p, m]  = Q[b, p, h, e] * K[b, m, h // R, e] * rsqrt(E)  where m <= p + M - P
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, p, m]
O[b, p, h, f]  = EX[b, h, p, m] * V[b, m, h // R, f] / SD[b, h, p]
""",
    dict(Q=rn(2, 3, 6, 4), K=rn(2, 7, 3, 4), V=rn(2, 7, 3, 2)),
    gqa63_ref,
    passes={"m": 3},
)


# --- GQA 9:3 in a symmetric local window |p - m| < W (W overridden from 3 to 2)
def gqa93_ref(Q, K, V, W=2):
    H, P, _E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    mask = np.abs(p - m) < W
    return np.stack([att(Q[h], K[h // 3], V[h // 3], mask=mask) for h in range(H)])


case(
    "s15_gqa_nine_heads_three_groups_abs_window_override",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  W = 3
output O
S[h, p, m]  = Q[h, p, e] * K[h // 3, m, e] * rsqrt(E)  where abs(p - m) < W
"""
    + _ATT_HPM.replace("V[h, m, f]", "V[h // 3, m, f]"),
    dict(Q=rn(9, 6, 3), K=rn(3, 6, 3), V=rn(3, 6, 2)),
    gqa93_ref,
    params={"W": 2},
    passes={"m": 3},
)


# --- cross-attention, 3 queries against 17 encoder keys, key padding by per-batch lengths 17, 1 and 0 (the
# last batch's rows are fully masked: 0, and its LSE 0)
def cross_ref(Q, K, V, klen):
    B, P, E = Q.shape
    M = K.shape[1]
    O = np.zeros((B, P, V.shape[2]))
    L = np.zeros((B, P))
    for b in range(B):
        mask = np.broadcast_to(np.arange(M)[None, :] < klen[b], (P, M))
        s = Q[b] @ K[b].T / np.sqrt(E)
        O[b] = softmax(s, mask) @ V[b]
        L[b] = np.where(mask.any(-1), lse(s, mask), 0.0)
    return O, L


case(
    "s15_cross_attention_p3_m17_key_padding_empty_batch",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O, LSE
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
GM[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
O[b, p, f]  = EX[b, p, m] * V[b, m, f] / SD[b, p]
LSE[b, p]   = GM[b, p] + log(SD[b, p])
""",
    dict(Q=rn(3, 3, 4), K=rn(3, 17, 4), V=rn(3, 17, 3), klen=np.array([17, 1, 0])),
    cross_ref,
    passes={"m": 3},
)


# --- varlen attention as flash_attn_varlen_func takes it: packed tokens [t, h, d] and cumulative sequence
# lengths cu (0, 3, 4, 4, 9, 17: lengths 3, 1, 0, 5, 8). A query and a key interact when some sequence j holds
# both (cu[j] <= s <= t < cu[j + 1]): j occurs only in the filter and is reduced with the scores' e; at most one
# j holds a pair, and the last j reads cu[J] past the end, which makes its points absent
def varlen_ref(Q, K, V, cu):
    T, H, _E = Q.shape
    seg = np.searchsorted(cu, np.arange(T), side="right") - 1
    t, s = pm(T, T)
    mask = (seg[:, None] == seg[None, :]) & (s <= t)
    return np.stack([att(Q[:, h], K[:, h], V[:, h], mask=mask) for h in range(H)], axis=1)


case(
    "s15_varlen_cu_seqlens_causal_filter_only_rank",
    """
input  Q[t, h, e], K[s, h, e], V[s, h, f], cu[j] : int
output O
S[h, t, s]  = Q[t, h, e] * K[s, h, e] * rsqrt(E)  where cu[j] <= s and s <= t and t < cu[j + 1]
GM[h, t]    = S[h, t, s] :: max(s)
EX[h, t, s] = exp(S[h, t, s] - GM[h, t])
SD[h, t]    = EX[h, t, s]
O[t, h, f]  = EX[h, t, s] * V[s, h, f] / SD[h, t]
""",
    dict(Q=rn(17, 2, 3), K=rn(17, 2, 3), V=rn(17, 2, 2), cu=np.array([0, 3, 4, 4, 9, 17])),
    varlen_ref,
    passes={"s": 3},
)


# --- varlen with separate query and key offsets (cu_q, cu_k) and flash-attn's bottom-right causal mask inside
# each sequence: key i of a sequence with LK keys is seen by query j of its LQ queries when i <= j + LK - LQ.
# Query lengths 2, 3, 0, 4, 1 and key lengths 5, 1, 3, 4, 0: sequence 1 has masked rows, sequence 4 no keys
def varlen_qk_ref(Q, K, V, cuq, cuk):
    TQ, TK = Q.shape[0], K.shape[0]
    mask = np.zeros((TQ, TK), bool)
    for j in range(len(cuq) - 1):
        lq, lk = cuq[j + 1] - cuq[j], cuk[j + 1] - cuk[j]
        for a in range(lq):
            for c in range(lk):
                if c <= a + lk - lq:
                    mask[cuq[j] + a, cuk[j] + c] = True
    O = att(Q, K, V, mask=mask)
    s = Q @ K.T / np.sqrt(Q.shape[1])
    return O, np.where(mask.any(-1), lse(s, mask), 0.0)


case(
    "s15_varlen_cu_q_cu_k_bottom_right_masked_rows",
    """
input  Q[t, e], K[s, e], V[s, f], cuq[j] : int, cuk[j] : int
output O, LSE
S[t, s]  = Q[t, e] * K[s, e] * rsqrt(E) \\
           where cuq[j] <= t < cuq[j + 1] and cuk[j] <= s < cuk[j + 1] \\
           and s - cuk[j] <= t - cuq[j] + (cuk[j + 1] - cuk[j]) - (cuq[j + 1] - cuq[j])
GM[t]    = S[t, s] :: max(s)
EX[t, s] = exp(S[t, s] - GM[t])
SD[t]    = EX[t, s]
O[t, f]  = EX[t, s] * V[s, f] / SD[t]
LSE[t]   = GM[t] + log(SD[t])
""",
    dict(
        Q=rn(10, 3),
        K=rn(13, 3),
        V=rn(13, 2),
        cuq=np.array([0, 2, 5, 5, 9, 10]),
        cuk=np.array([0, 5, 6, 9, 13, 13]),
    ),
    varlen_qk_ref,
)


# --- Swin's 2D relative position bias: tokens of a window of DY' x WW patches flattened row-major, the bias
# table indexed by (row difference + WH - 1, column difference + WW - 1), rows and columns by // and %
def swin_ref(Q, K, V, TB, WW=3):
    H, P, _E = Q.shape
    WH = (TB.shape[1] + 1) // 2
    p, m = pm(P, P)
    dy = p // WW - m // WW + WH - 1
    dx = p % WW - m % WW + WW - 1
    return np.stack([att(Q[h], K[h], V[h], bias=TB[h][dy, dx]) for h in range(H)])


_SWIN = (
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], TB[h, dy, dx]
param  WW = 3
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
S[h, p, m]  = QK[h, p, m] + TB[h, p // WW - m // WW + DY // 2, p % WW - m % WW + WW - 1]
"""
    + _ATT_HPM
)

case(
    "s15_swin_2d_relative_bias_floor_mod",
    _SWIN,
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), TB=rn(2, 3, 5)),
    swin_ref,
    passes={"m": 3},
)

case(
    "s15_swin_2d_relative_bias_window_width_overridden",
    _SWIN,
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), TB=rn(2, 5, 3)),
    lambda Q, K, V, TB: swin_ref(Q, K, V, TB, WW=2),
    params={"WW": 2},
)


# --- softmax plus one ("quiet attention": a virtual key of logit 0), strict causal (row 0 has no key: 0), with
# an additive bias of +1e4 on one key of row 2 and -1e4 on all of row 3 (whose weights then all vanish against
# the virtual key). The stabiliser is max(0, max of the logits); the scores are exact in float32 where huge
def quiet_ref(Q, K, V, BIAS):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T / np.sqrt(Q.shape[1]) + BIAS
    p, m = pm(P, M)
    mask = m < p
    out = np.zeros((P, V.shape[1]))
    for i in range(P):
        if not mask[i].any():
            continue
        x = s[i][mask[i]]
        mx = max(0.0, x.max())
        w = np.exp(x - mx) / (np.exp(-mx) + np.exp(x - mx).sum())
        out[i] = w @ V[mask[i]]
    return out


_K = rn(6, 4)
_K[1] = 0.0
_B = np.zeros((6, 6))
_B[2, 1] = 1e4
_B[3, :] = -1e4
case(
    "s15_softmax_plus_one_extreme_bias_and_empty_row",
    """
input  Q[p, e], K[m, e], V[m, f], BIAS[p, m]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m < p
T[p, m]  = S[p, m] + BIAS[p, m]
GM0[p]   = T[p, m] :: max(m)
GM[p]    = max(GM0[p], 0)
EX[p, m] = exp(T[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / (SD[p] + exp(-GM[p]))
""",
    dict(Q=rn(6, 4), K=_K, V=rn(6, 3), BIAS=_B),
    quiet_ref,
)


# --- sparsemax attention: tau = max over k of (sum of the k largest scores - 1) / k, with the order given by the
# caller as ints (ORD[p, m] is the position of score m in row p sorted in decreasing order); weights
# relu(s - tau) sum to 1 and are exactly 0 off the support
def sparsemax_rows(s):
    out = np.zeros_like(s)
    taus = np.zeros(s.shape[0])
    for i, z in enumerate(s):
        zs = np.sort(z)[::-1]
        cs = np.cumsum(zs)
        k = np.arange(1, len(z) + 1)
        sup = 1 + k * zs > cs
        kk = k[sup][-1]
        tau = (cs[kk - 1] - 1) / kk
        taus[i] = tau
        out[i] = np.maximum(z - tau, 0)
    return out, taus


def sparsemax_att_ref(Q, K, V, ORD):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    w, tau = sparsemax_rows(s)
    return w @ V, tau


_Qs, _Ks = rn(5, 4, scale=1.5), rn(7, 4, scale=1.5)
_ORD = np.argsort(np.argsort(-(_Qs @ _Ks.T), axis=1, kind="stable"), axis=1, kind="stable")
case(
    "s15_sparsemax_attention_int_sort_order",
    """
input  Q[p, e], K[m, e], V[m, f], ORD[p, m] : int
rank   N = M
output O, TAU
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
TOP[p, n] = S[p, m]  where ORD[p, m] <= n
TK[p, n]  = (TOP[p, n] - 1) / (n + 1)
TAU[p]    = TK[p, n] :: max(n)
O[p, f]   = relu(S[p, m] - TAU[p]) * V[m, f]
""",
    dict(Q=_Qs, K=_Ks, V=rn(7, 3), ORD=_ORD),
    sparsemax_att_ref,
)


# --- sparsemax of given scores with ties (a row of equal scores: uniform; a row with a huge score: one-hot),
# the order breaking ties arbitrarily; the threshold in one statement, the probabilities and their mass (1)
def sparsemax_ties_ref(S, ORD):
    w, tau = sparsemax_rows(S)
    return w, tau, w.sum(-1)


_S = np.array([[0.5, 0.5, 0.5, 0.5], [1.0, 0.2, 1.0, -3.0], [1e4, 0.0, 0.0, 0.0], [0.1, 0.3, 0.2, 0.25]])
_ORDS = np.argsort(np.argsort(-_S, axis=1, kind="stable"), axis=1, kind="stable")
case(
    "s15_sparsemax_given_scores_ties_and_mass",
    """
input  S[p, m], ORD[p, m] : int
rank   N = M
output PR, TAU, MASS
TOP[p, n]  = S[p, m]  where ORD[p, m] <= n
TAU[p]     = (TOP[p, n] - 1) / (n + 1) :: max(n)
PR[p, m]   = relu(S[p, m] - TAU[p])
MASS[p]    = PR[p, m]
""",
    dict(S=_S, ORD=_ORDS),
    sparsemax_ties_ref,
)
