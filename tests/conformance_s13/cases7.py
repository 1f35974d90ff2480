"""More variants from recent papers: the Forgetting Transformer (cumulative log forget gates, an empty sum
defaulted with ??), selective attention (a penalty summed over earlier queries), Taylor-exp linear
attention, a quantized KV cache (int tensors as values, per-token scales), dropout applied to the
normalised weights by a float mask, symmetric ALiBi with per-head slopes."""

import numpy as np

from .common import att, causal, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1307)
CASES, case = registry()


# --- Forgetting Transformer: scores plus sum_{m < t <= p} log sigmoid(FG[h, t]); for m = p the sum is empty
# (absent) and the default 0 keeps the diagonal key
def fox_ref(Q, K, V, FG):
    P = Q.shape[1]
    lf = np.log(1 / (1 + np.exp(-FG)))  # [h, t]
    c = np.cumsum(lf, axis=1)  # c[h, p] = sum_{t <= p}
    d = c[:, :, None] - c[:, None, :]  # [h, p, m] = sum_{m < t <= p}
    return att(Q, K, V, mask=causal(P, P)[None], bias=np.where(causal(P, P)[None], d, 0.0))


case(
    "s13_forgetting_transformer_cumulative_gates",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], FG[h, t]
output O
LF[h, t]      = log(sigmoid(FG[h, t]))
CUM[h, p, m]  = LF[h, t]  where m < t and t <= p
QK[h, p, m]   = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, p, m]    = QK[h, p, m] + (CUM[h, p, m] ?? 0)
GM[h, p]      = S[h, p, m] :: max(m)
EX[h, p, m]   = exp(S[h, p, m] - GM[h, p])
SD[h, p]      = EX[h, p, m]
O[h, p, f]    = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), FG=rn(2, 6, scale=2.0)),
    fox_ref,
    passes={"t": 1, "m": 3},
)


# --- selective attention: a selection head's positive scores relu(S0[j, m]) (m < j) accumulate over the
# earlier queries j <= p and are subtracted from the logits of key m
def selective_ref(Q, K, V, Q0, K0):
    P = Q.shape[0]
    s0 = scores(Q0, K0)
    sel = np.where(causal(P, P, -1), np.maximum(s0, 0), 0.0)  # [j, m], m < j
    fm = np.cumsum(sel, axis=0)  # [p, m] = sum_{j <= p} sel[j, m]
    return att(Q, K, V, mask=causal(P, P), bias=-fm)


case(
    "s13_selective_attention_penalty",
    """
input  Q[p, e], K[m, e], V[m, f], Q0[p, e], K0[m, e]
rank   J = P
output O
S0[j, m]  = Q0[j, e] * K0[m, e] * rsqrt(E)
SEL[j, m] = relu(S0[j, m])  where m < j
FM[p, m]  = SEL[j, m]  where j <= p
QK[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
S[p, m]   = QK[p, m] - (FM[p, m] ?? 0)
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - GM[p])
SD[p]     = EX[p, m]
O[p, f]   = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), Q0=rn(7, 3), K0=rn(7, 3)),
    selective_ref,
)


# --- Taylor-exp linear attention (Based): weights 1 + s + s^2 / 2 > 0, causal, normalised
def taylor_ref(Q, K, V):
    s = scores(Q, K)
    w = np.where(causal(7, 7), 1 + s + s**2 / 2, 0.0)
    return (w @ V) / w.sum(1, keepdims=True)


case(
    "s13_taylor_exp_linear_attention",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
W[p, m] = 1 + S[p, m] + square(S[p, m]) / 2
D[p]    = W[p, m]
O[p, f] = W[p, m] * V[m, f] / D[p]
""",
    dict(Q=rn(7, 4), K=rn(7, 4), V=rn(7, 3)),
    taylor_ref,
    passes={"m": 2},
)


# --- a quantized KV cache: int8-range int tensors dequantized by per-token scales, causal from an offset
def quant_ref(Q, KI, SK, VI, SV, pos):
    k = KI * SK[:, None]
    v = VI * SV[:, None]
    return att(Q, k, v, mask=causal(3, 9, int(pos)))


case(
    "s13_quantized_kv_cache_int_values",
    """
input  Q[p, e], KI[m, e] : int, SK[m], VI[m, f] : int, SV[m], pos : int
output O
K[m, e]  = KI[m, e] * SK[m]
V[m, f]  = VI[m, f] * SV[m]
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p + pos
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(3, 4),
        KI=rng.integers(-128, 128, size=(9, 4)),
        SK=np.abs(rn(9)) * 0.02,
        VI=rng.integers(-128, 128, size=(9, 2)),
        SV=np.abs(rn(9)) * 0.02,
        pos=np.array(5),
    ),
    quant_ref,
)


# --- dropout on the normalised weights: a float mask of 0 and 1 / (1 - 0.25), applied after the division
def dropout_ref(Q, K, V, DM):
    return (softmax(scores(Q, K), causal(6, 6)) * DM) @ V


case(
    "s13_dropout_mask_after_normalisation",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f], DM[b, p, m]
output O
S[b, p, m]  = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m <= p
GM[b, p]    = S[b, p, m] :: max(m)
EX[b, p, m] = exp(S[b, p, m] - GM[b, p])
SD[b, p]    = EX[b, p, m]
A[b, p, m]  = EX[b, p, m] / SD[b, p]
AD[b, p, m] = A[b, p, m] * DM[b, p, m]
O[b, p, f]  = AD[b, p, m] * V[b, m, f]
""",
    dict(
        Q=rn(2, 6, 3),
        K=rn(2, 6, 3),
        V=rn(2, 6, 2),
        DM=np.where(rng.random((2, 6, 6)) < 0.25, 0.0, 1 / 0.75),
    ),
    dropout_ref,
)


# --- symmetric (bidirectional) ALiBi: -slope[h] * |p - m|, per-head slopes as an input, key padding
def sym_alibi_ref(Q, K, V, slope, n):
    P, M = Q.shape[1], K.shape[1]
    bias = -slope[:, None, None] * np.abs(rel(P, M))[None]
    mask = (np.arange(M) < int(n))[None, None, :]
    return att(Q, K, V, mask=mask, bias=bias)


case(
    "s13_symmetric_alibi_slopes_padding",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], slope[h], n : int
output O
QK[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m < n
S[h, p, m]  = QK[h, p, m] - slope[h] * abs(p - m)
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(3, 5, 3), K=rn(3, 8, 3), V=rn(3, 8, 2), slope=np.array([1.0, 0.25, 1 / 16]), n=np.array(6)),
    sym_alibi_ref,
)


# --- rank and tensor names that the generated code also uses (`pid`, `lo`, `tl` as ranks; `n_RM`, `t_Q`,
# `acc`, `mask` as tensors), with a running max of the rewrite's own name
case(
    "s13_names_like_generated_code",
    """
input  t_Q[lo, tl], K[pid, tl], V[pid, f]
output acc
mask[lo, pid] = t_Q[lo, tl] * K[pid, tl] * rsqrt(TL)  where pid <= lo + 1
RM[lo]        = mask[lo, pid] :: max(pid)
n_RM[lo, pid] = exp(mask[lo, pid] - RM[lo])
SD[lo]        = n_RM[lo, pid]
acc[lo, f]    = n_RM[lo, pid] * V[pid, f] / SD[lo]
""",
    dict(t_Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda t_Q, K, V: att(t_Q, K, V, mask=causal(5, 7, 1)),
)
