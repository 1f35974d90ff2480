"""Attention variants as users write them: packed documents with ALiBi and a softcap, prefix-LM masks (a
scalar int length, int flags and `and`/`or` precedence), masks given as float inputs (additive -inf,
multiplicative 0/1/0.5), sigmoid attention with a per-head bias, temperature and cap as scalar inputs, a
differential attention written as a product with a difference, top-k mixture of heads, GQA with MQA, outputs
with their statistics over empty cross-document rows, scores built over several statements."""

import numpy as np

from .common import att, causal, lse, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1301)
CASES, case = registry()


# --- packed documents (int doc ids per batch), sliding window, tanh softcap and ALiBi slopes as an input;
# the softcap is applied to the finished dot product (its own statement: the sum over e covers the whole RHS)
def docs_ref(Q, K, V, slope, doc, W=4, CAP=3.0):
    s = scores(Q, K)
    P = s.shape[-2]
    s = CAP * np.tanh(s / CAP) - slope[None, :, None, None] * rel(P, P)
    d = rel(P, P)
    mask = (doc[:, None, :, None] == doc[:, None, None, :]) & (d >= 0) & (d < W)
    return np.einsum("bhpm,bhmf->bhpf", softmax(s, mask), V)


case(
    "s13_packed_docs_window_softcap_alibi",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h], doc[b, n] : int
param  W = 4
param  CAP = 3.0
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, m, p]  = CAP * tanh(QK[b, h, m, p] / CAP) - slope[h] * (p - m)  where (doc[b, m] == doc[b, p]
                 and 0 <= p - m < W)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
    dict(
        Q=rn(2, 2, 9, 4, scale=2.0),
        K=rn(2, 2, 9, 4, scale=2.0),
        V=rn(2, 2, 9, 3),
        slope=np.array([0.5, 0.125]),
        doc=np.array([[0, 0, 0, 1, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1, 1, 2, 2]]),
    ),
    docs_ref,
    passes={"m": 3},
)


# --- prefix-LM: the first n keys (a scalar int input) are visible to every query, the rest causally
case(
    "s13_prefix_lm_scalar_int_length",
    """
input  Q[p, e], K[m, e], V[m, f], n : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m < n or m <= p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
SD[p]    = EX[p, m]
""",
    dict(Q=rn(8, 4), K=rn(8, 4), V=rn(8, 3), n=np.array(3)),
    lambda Q, K, V, n: att(Q, K, V, mask=(np.arange(8)[None, :] < int(n)) | causal(8, 8)),
)


# --- prefix-LM from int flags: prefix tokens see each other both ways; `and` binds tighter than `or`
def prefix_flags_ref(Q, K, V, pre):
    pm = pre.astype(bool)
    mask = (pm[None, :] & pm[:, None]) | causal(7, 7)
    return att(Q, K, V, mask=mask)


case(
    "s13_prefix_lm_int_flags_precedence",
    """
input  Q[p, e], K[m, e], V[m, f], pre[n] : int
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where pre[m] == 1 and pre[p] == 1 or m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), pre=np.array([1, 1, 1, 0, 0, 1, 0])),
    prefix_flags_ref,
)


# --- an additive float mask input: 0 or -inf (two whole tiles of -inf at the start of row 0, key padding at
# the end of every row, no row fully masked)
def add_mask():
    mk = np.zeros((5, 10))
    mk[0, :6] = -np.inf
    mk[:, 8:] = -np.inf
    mk[2, 3] = -np.inf
    mk[4, ::2] = -np.inf
    return mk


case(
    "s13_additive_float_mask_neg_inf",
    """
input  Q[p, e], K[m, e], V[m, f], MASK[p, m]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
T[p, m]  = S[p, m] + MASK[p, m]
GM[p]    = T[p, m] :: max(m)
EX[p, m] = exp(T[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 4), K=rn(10, 4), V=rn(10, 3), MASK=add_mask()),
    lambda Q, K, V, MASK: att(Q, K, V, bias=MASK),
)


# --- a multiplicative float mask input: weights exp(S - GM) * KEEP, GM over every key; KEEP holds 0, 1, 0.5
def keep_ref(Q, K, V, KEEP):
    s = scores(Q, K)
    w = np.exp(s - s.max(-1, keepdims=True)) * KEEP
    return (w / w.sum(-1, keepdims=True)) @ V


case(
    "s13_multiplicative_float_keep_mask",
    """
input  Q[p, e], K[m, e], V[m, f], KEEP[p, m]
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p]) * KEEP[p, m]
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(6, 4),
        K=rn(8, 4),
        V=rn(8, 2),
        KEEP=np.where(rng.random((6, 8)) < 0.4, 0.0, 1.0) * np.where(rng.random((6, 8)) < 0.3, 0.5, 1.0)
        + np.eye(6, 8),
    ),
    keep_ref,
)


# --- sigmoid attention with a learned per-head bias, causal, no normaliser
def sig_ref(Q, K, V, bias):
    s = scores(Q, K) + bias[:, None, None]
    w = np.where(causal(6, 6), 1 / (1 + np.exp(-s)), 0.0)
    return np.einsum("hpm,hmf->hpf", w, V)


case(
    "s13_sigmoid_per_head_bias_causal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h]
output O
S[h, p, m] = Q[h, p, e] * K[h, m, e] * rsqrt(E)
W[h, p, m] = sigmoid(S[h, p, m] + bias[h])  where m <= p
O[h, p, f] = W[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(3, 6, 4), K=rn(3, 6, 4), V=rn(3, 6, 2), bias=np.array([-np.log(6.0), 0.0, 1.5])),
    sig_ref,
    passes={"m": 1},
)


# --- a temperature given as a scalar input, divided inside the exponential (not a plain shift f(X - c)), and
# the same softmax with the temperature applied before the max
def temp_ref(Q, K, V, TEMP):
    o = att(Q, K, V, scale=1 / (np.sqrt(4) * TEMP))
    return o, o


case(
    "s13_temperature_scalar_input_inside_exp",
    """
input  Q[p, e], K[m, e], V[m, f], TEMP
output O1, O2
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]     = S[p, m] :: max(m)
EX[p, m]  = exp((S[p, m] - GM[p]) / TEMP)
SD[p]     = EX[p, m]
O1[p, f]  = EX[p, m] * V[m, f] / SD[p]
ST[p, m]  = S[p, m] / TEMP
GT[p]     = ST[p, m] :: max(m)
ET[p, m]  = exp(ST[p, m] - GT[p])
O2[p, f]  = ET[p, m] * V[m, f] / DT[p]
DT[p]     = ET[p, m]
""",
    dict(Q=rn(5, 4), K=rn(9, 4), V=rn(9, 3), TEMP=np.array(0.37)),
    temp_ref,
)


# --- softcap whose cap is a scalar input, with the log-sum-exp as a second output; scores large enough
# that the cap matters
def cap_ref(Q, K, V, cap):
    s = cap * np.tanh(scores(Q, K) / cap)
    return softmax(s) @ V, lse(s)


case(
    "s13_softcap_scalar_input_with_lse",
    """
input  Q[p, e], K[m, e], V[m, f], cap
output O, L
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
C[p, m]  = cap * tanh(S[p, m] / cap)
GM[p]    = C[p, m] :: max(m)
EX[p, m] = exp(C[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(4, 4, scale=3.0), K=rn(11, 4, scale=3.0), V=rn(11, 3), cap=np.array(2.5)),
    cap_ref,
)


# --- differential attention written as the weights' difference times V (docs: the rewrite is refused at A1
# and the spec runs as written), both softmaxes causal
def diff_ref(Q1, K1, Q2, K2, V, LAM=0.6):
    c = causal(6, 6)
    return (softmax(scores(Q1, K1), c) - LAM * softmax(scores(Q2, K2), c)) @ V


case(
    "s13_differential_product_of_difference",
    """
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f]
param  LAM = 0.6
output O
S1[p, m]  = Q1[p, e] * K1[m, e] * rsqrt(E)  where m <= p
S2[p, m]  = Q2[p, e] * K2[m, e] * rsqrt(E)  where m <= p
G1[p]     = S1[p, m] :: max(m)
G2[p]     = S2[p, m] :: max(m)
E1[p, m]  = exp(S1[p, m] - G1[p])
E2[p, m]  = exp(S2[p, m] - G2[p])
D1[p]     = E1[p, m]
D2[p]     = E2[p, m]
A1[p, m]  = E1[p, m] / D1[p]
A2[p, m]  = E2[p, m] / D2[p]
O[p, f]   = (A1[p, m] - LAM * A2[p, m]) * V[m, f]
""",
    dict(Q1=rn(6, 4), K1=rn(6, 4), Q2=rn(6, 4), K2=rn(6, 4), V=rn(6, 3)),
    diff_ref,
    passes={"m": 3},
)


# --- top-k mixture of heads: gate logits G[p, h], the chosen heads given as int flags; the gate is a softmax
# over the chosen heads; row 2 chooses none (its output is 0)
def moh_ref(Q, K, V, G, sel):
    ao = att(Q, K, V)  # [h, p, f]
    g = softmax(G, sel.astype(bool))  # [p, h]
    return np.einsum("ph,hpf->pf", g, ao)


case(
    "s13_mixture_of_heads_topk_int_flags",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], G[p, h], sel[p, h] : int
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
AO[h, p, f] = EX[h, p, m] * V[h, m, f] / SD[h, p]
GS[p, h]    = G[p, h]  where sel[p, h] != 0
GG[p]       = GS[p, h] :: max(h)
GE[p, h]    = exp(GS[p, h] - GG[p])
GD[p]       = GE[p, h]
O[p, f]     = GE[p, h] * AO[h, p, f] / GD[p]
""",
    dict(
        Q=rn(4, 5, 3),
        K=rn(4, 7, 3),
        V=rn(4, 7, 2),
        G=rn(5, 4),
        sel=np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]),
    ),
    moh_ref,
    passes={"h": 3, "m": 3},
)


# --- GQA (h // R) and MQA (keys without a head rank) in one spec, sharing the queries
def gqa_mqa_ref(Q, K, V, K1, V1):
    o1 = att(Q, np.repeat(K, 3, axis=0), np.repeat(V, 3, axis=0), mask=causal(5, 5))
    o2 = att(Q, K1[None], V1[None])
    return o1, o2


case(
    "s13_gqa_and_mqa_one_spec",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f], K1[n, e], V1[n, f]
param  R = 3
output O, OM
S[h, p, m]   = Q[h, p, e] * K[h // R, m, e] * rsqrt(E)  where m <= p
GM[h, p]     = S[h, p, m] :: max(m)
EX[h, p, m]  = exp(S[h, p, m] - GM[h, p])
O[h, p, f]   = EX[h, p, m] * V[h // R, m, f] / SD[h, p]
SD[h, p]     = EX[h, p, m]
SM[h, p, n]  = Q[h, p, e] * K1[n, e] * rsqrt(E)
GN[h, p]     = SM[h, p, n] :: max(n)
EN[h, p, n]  = exp(SM[h, p, n] - GN[h, p])
OM[h, p, f]  = EN[h, p, n] * V1[n, f] / DN[h, p]
DN[h, p]     = EN[h, p, n]
""",
    dict(Q=rn(6, 5, 4), K=rn(2, 5, 4), V=rn(2, 5, 3), K1=rn(7, 4), V1=rn(7, 3)),
    gqa_mqa_ref,
    passes={"m": 3, "n": 3},
)


# --- cross attention over packed documents with separate query and key doc ids: query doc 5 has no key, so
# those rows are empty; the output, the log-sum-exp, the max and the key count are all 0 there
def xdoc_ref(Q, K, V, qd, kd):
    mask = qd[:, None] == kd[None, :]
    s = scores(Q, K)
    any_ = mask.any(-1)
    mx = np.where(any_, np.where(mask, s, -np.inf).max(-1), 0.0)
    lo = np.where(any_, lse(s, mask), 0.0)
    return att(Q, K, V, mask=mask), lo, mx, mask.sum(-1).astype(float)


case(
    "s13_cross_docs_outputs_and_stats_empty_rows",
    """
input  Q[p, e], K[m, e], V[m, f], qd[p] : int, kd[m] : int
output O, L, MX, CNT
S[p, m]   = Q[p, e] * K[m, e] * rsqrt(E)  where qd[p] == kd[m]
MX[p]     = S[p, m] :: max(m)
EX[p, m]  = exp(S[p, m] - MX[p])
SD[p]     = EX[p, m]
O[p, f]   = EX[p, m] * V[m, f] / SD[p]
L[p]      = MX[p] + log(SD[p])
ONE[p, m] = S[p, m] * 0 + 1
CNT[p]    = ONE[p, m]
""",
    dict(
        Q=rn(6, 4),
        K=rn(9, 4),
        V=rn(9, 3),
        qd=np.array([0, 5, 1, 1, 2, 5]),
        kd=np.array([0, 0, 1, 1, 1, 2, 2, 2, 2]),
    ),
    xdoc_ref,
)


# --- scores built over several statements, the filter in the middle one; a relative bias table shorter
# than the causal range (R = 5 < P = 7) makes distances >= 5 absent: an implicit window
def pipe_ref(Q, K, V, RB, C=4.0):
    P = Q.shape[2]
    d = rel(P, P)
    mask = (d >= 0) & (d < 5)
    b = np.where(mask[None], RB[:, np.clip(d, 0, 4)], 0.0)  # [h, p, m]
    s = scores(Q, K) + b[None]
    s = C * np.tanh(s / C)
    return np.einsum("bhpm,bhmf->bhpf", softmax(s, mask), V)


case(
    "s13_scores_pipeline_filter_midway_short_bias_table",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], RB[h, r]
param  C = 4.0
output O
QK[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e]
SC[b, h, m, p]  = QK[b, h, m, p] * rsqrt(E)  where m <= p
RBS[b, h, m, p] = SC[b, h, m, p] + RB[h, p - m]
CP[b, h, m, p]  = C * tanh(RBS[b, h, m, p] / C)
GM[b, h, p]     = CP[b, h, m, p] :: max(m)
EX[b, h, m, p]  = exp(CP[b, h, m, p] - GM[b, h, p])
SD[b, h, p]     = EX[b, h, m, p]
O[b, h, p, f]   = EX[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(1, 2, 7, 4, scale=2.0), K=rn(1, 2, 7, 4, scale=2.0), V=rn(1, 2, 7, 3), RB=rn(2, 5)),
    pipe_ref,
)


# --- T5-style clipped relative positions: bucket clamp(m - p, -KM, KM) + KM, one table per KV group (GQA)
def t5_ref(Q, K, V, TB, KM=2, R=2):
    P, M = Q.shape[1], K.shape[1]
    idx = np.clip(-rel(P, M), -KM, KM) + KM
    bias = TB[np.arange(Q.shape[0]) // R][:, idx]  # [h, p, m]
    return att(Q, np.repeat(K, R, 0), np.repeat(V, R, 0), bias=bias)


case(
    "s13_t5_clipped_relpos_per_group",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f], TB[g, j]
param  R = 2
param  KM = 2
output O
QK[h, p, m] = Q[h, p, e] * K[h // R, m, e] * rsqrt(E)
S[h, p, m]  = QK[h, p, m] + TB[h // R, clamp(m - p, 0 - KM, KM) + KM]
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h // R, m, f] / SD[h, p]
""",
    dict(Q=rn(4, 6, 3), K=rn(2, 8, 3), V=rn(2, 8, 2), TB=rn(2, 5)),
    t5_ref,
)
