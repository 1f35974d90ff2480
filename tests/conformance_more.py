"""More conformance cases for einattn, written by a reviewer who saw only the language reference and the
public cases' format (``../shared/conformance/cases.py``): a spec, NumPy inputs, an independent NumPy oracle,
params and the passes the analysis must report. ``tests/test_conformance_more.py`` runs them on every backend.
Every construct of docs/language.md, realistic variants, and the corner cases that found bugs (an empty head
dimension, NaN through max, constant indices, a filter on the loop rank through an int tensor).
"""

# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)

import math

import numpy as np

rng = np.random.default_rng(20240611)


def rn(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def softmax_rows(s, axis=-1, mask=None):
    """Softmax over axis; masked-out entries excluded; fully masked rows give 0 weights."""
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(s - mx)
    if mask is not None:
        ex = np.where(mask, ex, 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def lse_rows(s, mask=None, axis=-1):
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    ok = np.isfinite(mx)
    mxs = np.where(ok, mx, 0.0)
    l = mxs + np.log(np.where(ok, np.exp(s - mxs).sum(axis=axis, keepdims=True), 1.0))
    return np.squeeze(np.where(ok, l, 0.0), axis)


def attn_bhpe(q, k, v, mask=None, bias=None, scale=None):
    s = np.einsum("bhpe,bhme->bhpm", q, k) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if bias is not None:
        s = s + bias
    return np.einsum("bhpm,bhmf->bhpf", softmax_rows(s, -1, mask), v)


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


CASES = []


def case(name, spec, inputs, oracle, params=None, passes=None):
    CASES.append(
        dict(
            name=name,
            spec=spec.strip() + "\n",
            inputs=inputs,
            oracle=oracle,
            params=params or {},
            passes=passes or {},
        )
    )


E, F = 4, 3

# ---------------------------------------------------------------------------------------------------------------
# 1. sliding window (chained comparison), param overridden at compile time
P1 = 11
case(
    "sliding_window_param_override",
    """
# sliding window: query p sees keys p - W < m <= p; W overridden to 4 at compile time
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  W = 3
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where 0 <= p - m < W
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 2, P1, E), K=rn(1, 2, P1, E), V=rn(1, 2, P1, F)),
    lambda Q, K, V: attn_bhpe(
        Q, K, V, mask=(lambda d: (d >= 0) & (d < 4))(np.arange(P1)[:, None] - np.arange(P1)[None, :])
    ),
    params={"W": 4},
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 2. ALiBi, bottom-right aligned causal cross-attention (P < M), sizes as values in the filter
PA, MA = 5, 9


def alibi_ref(Q, K, V, slope):
    d = np.arange(MA)[None, :] - np.arange(PA)[:, None]  # m - p, [p, m]
    mask = np.arange(MA)[None, :] <= np.arange(PA)[:, None] + MA - PA
    bias = slope[None, :, None, None] * d[None, None]
    return attn_bhpe(Q, K, V, mask=mask, bias=bias)


case(
    "alibi_causal_bottom_right",
    """
# ALiBi slopes per head, causal aligned to the bottom-right corner (the last query sees every key)
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, m, p]  = QK[b, h, m, p] + slope[h] * (m - p)  where m <= p + M - P
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(2, 3, PA, E), K=rn(2, 3, MA, E), V=rn(2, 3, MA, F), slope=np.array([0.5, 0.25, 0.125])),
    alibi_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 3. softcap with a float param overridden


def softcap_ref(Q, K, V):
    s = Q @ K.T
    s = 2.5 * np.tanh(s / 2.5)
    return softmax_rows(s) @ V


case(
    "softcap_float_param",
    """
# logit soft-capping with the cap C overridden to 2.5
input  Q[p, e], K[m, e], V[m, f]
param  C = 30.0
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = C * tanh(QK[m, p] / C)
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(6, E, scale=2), K=rn(7, E, scale=2), V=rn(7, F)),
    softcap_ref,
    params={"C": 2.5},
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 4. GQA with a head past the last group: absent -> 0


def gqa_ragged_ref(Q, K, V):
    out = np.zeros((*Q.shape[:3], V.shape[-1]))
    for h in range(Q.shape[1]):
        g = h // 2
        if g < K.shape[1]:
            out[:, h] = attn_bhpe(Q[:, h : h + 1], K[:, g : g + 1], V[:, g : g + 1])[:, 0]
    return out


case(
    "gqa_head_past_groups",
    """
# GQA with H = 5 query heads over G = 2 key/value heads: head 4 reads group 2, which does not exist
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
NV[b, h, p, f] = EX[b, h, m, p] * V[b, h // R, m, f]
O[b, h, p, f]  = NV[b, h, p, f] / DEN[b, h, p]
""",
    dict(Q=rn(1, 5, 4, E), K=rn(1, 2, 6, E), V=rn(1, 2, 6, F)),
    gqa_ragged_ref,
    passes={"m": 2},
)

# 4b. MQA via param override R = 3 (H = 6, G = 2)
case(
    "gqa_param_R3",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
A[b, h, m, p]  = EX[b, h, m, p] / DEN[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h // R, m, f]
""",
    dict(Q=rn(2, 6, 7, E), K=rn(2, 2, 7, E), V=rn(2, 2, 7, F)),
    lambda Q, K, V: attn_bhpe(
        Q, np.repeat(K, 3, axis=1), np.repeat(V, 3, axis=1), mask=np.tril(np.ones((7, 7), bool))
    ),
    params={"R": 3},
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 5. sigmoid attention, causal, float param bias


def sigmoid_ref(Q, K, V):
    s = Q @ K.T / math.sqrt(E) - 1.5
    w = 1 / (1 + np.exp(-s))
    w = np.tril(w)
    return w @ V


case(
    "sigmoid_causal_bias",
    """
# sigmoid attention (no normalisation), causal, with a scalar bias param
input  Q[p, e], K[m, e], V[m, f]
param  BIAS = -1.5
output O
O[p, f] = sigmoid(Q[p, e] * K[m, e] * rsqrt(E) + BIAS) * V[m, f]  where m <= p
""",
    dict(Q=rn(8, E), K=rn(8, E), V=rn(8, F)),
    lambda Q, K, V: None,
    passes={},
)
# NB: as written, e is summed over the whole RHS including the sigmoid: the oracle must reflect the language.
# sum over (m, e) of sigmoid(q_e k_e / sqrt(E) + b) * v  -- the product Q*K is NOT contracted inside sigmoid.


def sigmoid_lang_ref(Q, K, V):
    # iteration space p, f, m, e: summand sigmoid(Q[p,e] K[m,e] / sqrt(E) + BIAS) * V[m, f], m <= p
    z = Q[:, None, :] * K[None, :, :] / math.sqrt(E) - 1.5  # [p, m, e]
    w = (1 / (1 + np.exp(-z))).sum(-1)  # [p, m]
    w = np.tril(w)
    return w @ V


CASES[-1]["oracle"] = sigmoid_lang_ref

case(
    "sigmoid_causal_scores",
    """
# sigmoid attention, the scores contracted first, then the sigmoid
input  Q[p, e], K[m, e], V[m, f]
param  BIAS = -1.5
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
O[p, f] = sigmoid(S[m, p] + BIAS) * V[m, f]  where m <= p
""",
    dict(Q=rn(8, E), K=rn(8, E), V=rn(8, F)),
    sigmoid_ref,
    passes={"m": 1},
)

# ---------------------------------------------------------------------------------------------------------------
# 6. linear attention, non-causal, 1-pass form


def linear_ref(Q, K, V):
    fq, fk = elu(Q) + 1, elu(K) + 1
    return (fq @ (fk.T @ V)) / (fq @ fk.sum(0))[:, None]


case(
    "linear_noncausal_kv_state",
    """
# linear attention with phi = elu + 1: the K^T V state first, then the queries
input  Q[p, e], K[m, e], V[m, f]
output O
FQ[p, e]  = elu(Q[p, e]) + 1
FK[m, e]  = elu(K[m, e]) + 1
KV[e, f]  = FK[m, e] * V[m, f]
KS[e]     = FK[m, e]
NUM[p, f] = FQ[p, e] * KV[e, f]
DEN[p]    = FQ[p, e] * KS[e]
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(6, E), K=rn(9, E), V=rn(9, F)),
    linear_ref,
    passes={"m": 1},
)

# ---------------------------------------------------------------------------------------------------------------
# 7. document mask, non-causal, with query rows whose document has no key
dq7 = np.array([0, 0, 1, 3, 3, 2])
dk7 = np.array([0, 1, 1, 2, 2, 0, 1])


def doc7_ref(Q, K, V, dq, dk):
    mask = dq[:, None] == dk[None, :]
    return softmax_rows(Q @ K.T, -1, mask) @ V


case(
    "document_mask_empty_rows",
    """
# packed documents (bidirectional); queries of document 3 see no key: their rows are 0
input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where dq[p] == dk[m]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
A[m, p]  = EX[m, p] / DEN[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(6, E), K=rn(7, E), V=rn(7, F), dq=dq7, dk=dk7),
    doc7_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 8. split-K decode with a number of splits that leaves an empty last chunk (M = 9, M1 = 4 -> M0 = 3)


def decode_ref(q, K, V):
    s = np.einsum("bhe,bhme->bhm", q, K) / math.sqrt(q.shape[-1])
    return np.einsum("bhm,bhmf->bhf", softmax_rows(s), V)


SPLITK = """
# split-K decoding: partial states per chunk, then a merge
input  q[b, h, e], K[b, h, m, e], V[b, h, m, f]
param  M1 = 4
rank   M = M1 * M0
output O
S[b, h, m1, m0]  = q[b, h, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)
LM[b, h, m1]     = S[b, h, m1, m0] :: max(m0)
LX[b, h, m1, m0] = exp(S[b, h, m1, m0] - LM[b, h, m1])
LD[b, h, m1]     = LX[b, h, m1, m0]
LN[b, h, m1, f]  = LX[b, h, m1, m0] * V[b, h, m1 * M0 + m0, f]
GM[b, h]         = LM[b, h, m1] :: max(m1)
CF[b, h, m1]     = exp(LM[b, h, m1] - GM[b, h])
GD[b, h]         = LD[b, h, m1] * CF[b, h, m1]
GN[b, h, f]      = LN[b, h, m1, f] * CF[b, h, m1]
O[b, h, f]       = GN[b, h, f] / GD[b, h]
"""
case("splitk_decode_empty_chunk", SPLITK, dict(q=rn(2, 2, E), K=rn(2, 2, 9, E), V=rn(2, 2, 9, F)), decode_ref)
case(
    "splitk_decode_ragged_chunk",
    SPLITK,
    dict(q=rn(1, 2, E), K=rn(1, 2, 10, E), V=rn(1, 2, 10, F)),
    decode_ref,
    params={"M1": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 9. prefix-LM: bidirectional over a prefix, causal after it
NPL = 8


def prefix_lm_ref(Q, K, V):
    p = np.arange(NPL)[:, None]
    m = np.arange(NPL)[None, :]
    return attn_bhpe(Q, K, V, mask=(m <= p) | (m < 3))


case(
    "prefix_lm",
    """
# prefix-LM: keys of the prefix (m < PRE) are visible to every query; after it, causal
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  PRE = 3
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p or m < PRE
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 2, NPL, E), K=rn(1, 2, NPL, E), V=rn(1, 2, NPL, F)),
    prefix_lm_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 10. mixture of heads: router weights and output projection, heads summed


def moh_ref(Q, K, V, g, Wo):
    av = attn_bhpe(Q, K, V)  # b h p f
    return np.einsum("bph,bhpf,hfd->bpd", g, av, Wo)


case(
    "mixture_of_heads",
    """
# MoH: per-token router weights scale each head, then the output projection sums heads and f
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], g[b, p, h], Wo[h, f, d]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
O[b, p, d]     = g[b, p, h] * AV[b, h, p, f] * Wo[h, f, d]
""",
    dict(Q=rn(1, 3, 4, E), K=rn(1, 3, 6, E), V=rn(1, 3, 6, F), g=np.abs(rn(1, 4, 3)), Wo=rn(3, F, 2)),
    moh_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 11. attention + log-sum-exp with fully masked rows (shifted causal)
NS = 7


def shifted_lse_ref(Q, K, V):
    mask = np.arange(NS)[None, :] + 2 <= np.arange(NS)[:, None]
    s = Q @ K.T
    return softmax_rows(s, -1, mask) @ V, lse_rows(s, mask)


case(
    "lse_shifted_causal_empty_rows",
    """
# query p sees keys m <= p - 2: rows 0 and 1 are fully masked, O and L give 0 there
input  Q[p, e], K[m, e], V[m, f]
param  SHIFT = 2
output O, L
S[m, p]  = Q[p, e] * K[m, e]  where m + SHIFT <= p
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
NV[p, f] = N[m, p] * V[m, f]
O[p, f]  = NV[p, f] / D[p]
L[p]     = GM[p] + log(D[p])
""",
    dict(Q=rn(NS, E, scale=2), K=rn(NS, E, scale=2), V=rn(NS, F)),
    shifted_lse_ref,
    passes={"m": 2},
)

# ---------------------------------------------------------------------------------------------------------------
# 12. reduction operators and their order (+ first, then the named op)
X12 = rn(3, 4, 5)
case(
    "reduction_order_ops",
    """
input  X[i, j, k]
output MXK, MNK, MXJK, MNJK, SJK, TOT
MXK[i]  = X[i, j, k] :: max(k)          # sum over j first, then max over k
MNK[i]  = X[i, j, k] :: min(k)
MXJK[i] = X[i, j, k] :: max(j, k)
MNJK[i] = X[i, j, k] :: min(k, j)
SJK[i]  = X[i, j, k] :: +(j, k)
TOT     = X[i, j, k] * 2
""",
    dict(X=X12),
    lambda X: (
        X.sum(1).max(-1),
        X.sum(1).min(-1),
        X.max((1, 2)),
        X.min((1, 2)),
        X.sum((1, 2)),
        np.array(2 * X.sum()),
    ),
)

# 12b. max over k of a product that also sums j inside one statement with a filter on the reduced ranks
X12b = rn(4, 5, 6)
case(
    "reduction_filtered_max_of_sum",
    """
input  X[i, j, k]
output Y
Y[i] = X[i, j, k] :: max(k)  where j <= k and k < J + 1
""",
    dict(X=X12b),
    lambda X: np.array(
        [max(sum(X[i, j, k] for j in range(5) if j <= k) for k in range(6) if k < 6) for i in range(4)]
    ),
)

# ---------------------------------------------------------------------------------------------------------------
# 13. power iteration: iterative rank sized by a param, history output


def power_ref(A, x0):
    xs = [x0]
    for _ in range(4):
        xs.append(A @ xs[-1])
    return np.array(xs), xs[-1]


case(
    "power_iteration_history",
    """
# X[n + 1] = A X[n], N steps (N overridden to 4); the iterative tensor is an output with all N + 1 states
input  A[i, j], x0[i]
param  N = 3
output X, FIN
X[0, i]     = x0[i]
X[n + 1, i] = A[i, j] * X[n, j]
FIN[i]      = X[N, i]
""",
    dict(A=rn(5, 5, scale=0.5), x0=rn(5)),
    power_ref,
    params={"N": 4},
)

# ---------------------------------------------------------------------------------------------------------------
# 14. exponential moving average with a float param, state history


def ema_ref(X):
    a = 0.7
    r = [np.zeros(X.shape[1])]
    for t in range(X.shape[0]):
        r.append(a * r[-1] + (1 - a) * X[t])
    r = np.array(r)
    return r, r[1:], r[-1]


case(
    "ema_recurrence",
    """
input  X[t, f]
param  ALPHA = 0.3
output R, Y, FIN
R[0, f]     = 0
R[t + 1, f] = ALPHA * R[t, f] + (1 - ALPHA) * X[t, f]
Y[t, f]     = R[t + 1, f]
FIN[f]      = R[T, f]
""",
    dict(X=rn(6, 3)),
    ema_ref,
    params={"ALPHA": 0.7},
)

# ---------------------------------------------------------------------------------------------------------------
# 15. partitions that do not divide the size; an empty tile


def tiles_ref(X, M0):
    m1n = -(-len(X) // M0)
    pad = np.zeros(m1n * M0)
    pad[: len(X)] = X
    t = pad.reshape(m1n, M0)
    mx = np.array([X[i * M0 : (i + 1) * M0].max() if i * M0 < len(X) else 0.0 for i in range(m1n)])
    mn = np.array([X[i * M0 : (i + 1) * M0].min() if i * M0 < len(X) else 0.0 for i in range(m1n)])
    return t, t.sum(1), mx, mn


X15 = rn(7)
case(
    "partition_inner_param_ragged",
    """
input  X[m]
param  M0 = 3
rank   M = M1 * M0
output TILES, TSUM, TMAX, TMIN
TILES[m1, m0] = X[m1 * M0 + m0]
TSUM[m1]      = X[m1 * M0 + m0]
TMAX[m1]      = X[m1 * M0 + m0] :: max(m0)
TMIN[m1]      = TILES[m1, m0] :: min(m0)
""",
    dict(X=X15),
    lambda X: tiles_ref(X, 3),
)


def tiles_outer_ref(X):
    # M1 = 3 tiles of M0 = ceil(4 / 3) = 2: tiles [x0 x1], [x2 x3], [absent absent]
    t = np.array([[X[0], X[1]], [X[2], X[3]], [0.0, 0.0]])
    return (
        t,
        t.sum(1),
        np.array([max(X[0], X[1]), max(X[2], X[3]), 0.0]),
        np.array([X[0] + X[1], X[2] + X[3], -1.0]),
    )


case(
    "partition_outer_param_empty_tile",
    """
# M1 = 3 tiles of a rank of size 4: M0 = 2, the last tile is entirely past the end (absent)
input  X[m]
param  M1 = 3
rank   M = M1 * M0
output TILES, TSUM, TMAX, SAFE
TILES[m1, m0] = X[m1 * M0 + m0]
TSUM[m1]      = X[m1 * M0 + m0]
TMAX[m1]      = X[m1 * M0 + m0] :: max(m0)
SAFE[m1]      = TSUM[m1] ?? -1
""",
    dict(X=rn(4)),
    tiles_outer_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 16. floor division and modulo, negative operands and a negative divisor


def floor_ref(X):
    n = len(X)
    J = 9

    def rd(i):
        return (X[i], True) if 0 <= i < n else (0.0, False)

    A = np.array([rd((j - 5) // 3)[0] for j in range(J)])
    B = np.array([X[(2 * j - 7) % n] for j in range(J)])
    C = np.array([rd(j % -3 + 3)[0] for j in range(J)])
    D = np.array([rd((j + 1) // -3 + 3)[0] for j in range(J)])
    G = np.array([(lambda v: v[0] if v[1] else -1.0)(rd(j // 3 - 1)) for j in range(J)])
    return A, B, C, D, G


case(
    "floor_div_mod_negative",
    """
input  X[i]
param  J = 9
param  D3 = 3
param  NEG = -3
output A, B, C, D, G
A[j] = X[(j - 5) // D3]
B[j] = X[(2 * j - 7) % I]
C[j] = X[j % NEG + 3]
D[j] = X[(j + 1) // NEG + 3]
G[j] = X[j // D3 - 1] ?? -1
""",
    dict(X=rn(5)),
    floor_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 17. clipped relative-position bias through clamp in an index, causal


def relpos_ref(Q, K, V, bias):
    n = Q.shape[0]
    d = np.arange(n)[:, None] - np.arange(n)[None, :]  # p - m
    b = bias[np.clip(d, -2, 2) + 2]
    return softmax_rows(Q @ K.T + b, -1, d >= 0) @ V


case(
    "relpos_clamp_bias",
    """
input  Q[p, e], K[m, e], V[m, f], bias[r]
param  KMAX = 2
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + bias[clamp(p - m, -KMAX, KMAX) + KMAX]  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
O[p, f]  = SN[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(8, E), K=rn(8, E), V=rn(8, F), bias=rn(5)),
    relpos_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 18. every function of the registry, with large and small arguments
X18 = np.array([-20.0, -3.0, -0.5, 0.0, 0.25, 1.0, 4.0, 20.0])


def funcs_ref(X):
    ax = np.abs(X) + 0.5
    return (
        np.exp(X / 4),
        np.exp2(X / 4),
        np.log(ax),
        np.log2(ax),
        np.sqrt(ax),
        1 / np.sqrt(ax),
        np.tanh(X),
        1 / (1 + np.exp(-X)),
        np.maximum(X, 0),
        elu(X),
        np.log1p(np.exp(X)),
        np.abs(X),
        X * X,
        np.maximum(X, -0.5),
        np.minimum(X, 1.5),
        np.clip(X, -1, 2),
    )


case(
    "all_functions",
    """
input  X[i]
output EXP, EXP2, LOG, LOG2, SQRT, RSQRT, TANH, SIG, RELU, ELU, SOFTPLUS, ABS, SQ, MX, MN, CL
AX[i]       = abs(X[i]) + 0.5
EXP[i]      = exp(X[i] / 4)
EXP2[i]     = exp2(X[i] / 4)
LOG[i]      = log(AX[i])
LOG2[i]     = log2(AX[i])
SQRT[i]     = sqrt(AX[i])
RSQRT[i]    = rsqrt(AX[i])
TANH[i]     = tanh(X[i])
SIG[i]      = sigmoid(X[i])
RELU[i]     = relu(X[i])
ELU[i]      = elu(X[i])
SOFTPLUS[i] = softplus(X[i])
ABS[i]      = abs(X[i])
SQ[i]       = square(X[i])
MX[i]       = max(X[i], -0.5)
MN[i]       = min(1.5, X[i])
CL[i]       = clamp(X[i], -1, 2)
""",
    dict(X=X18),
    funcs_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 19. scalar inputs, scalar outputs, signed and infinite params


def scalars_ref(X, temp):
    y = np.minimum(X / temp, np.inf) * -1.5
    return y, np.array((X * temp).sum()), np.array(X.max()), np.maximum(X, -np.inf) + 0.0


case(
    "scalars_and_inf_params",
    """
input  X[i], temp
param  SCALE = -1.5
param  CAP = inf
param  FLOOR = -inf
output Y, TOT, MX, Z
Y[i]  = min(X[i] / temp, CAP) * SCALE
TOT   = X[i] * temp
MX    = X[i] :: max(i)
Z[i]  = max(X[i], FLOOR)
""",
    dict(X=rn(5), temp=np.array(0.7)),
    scalars_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 20. ?? chains and precedence


def dflt_ref(X):
    n = len(X)

    def g(i):
        return X[i] if 0 <= i < n else None

    A, B, C, D = [], [], [], []
    for i in range(n):
        a = g(i + 2)
        a = g(i + 1) if a is None else a
        a = g(i) if a is None else a
        A.append(a)
        l, r = g(i - 1), g(i + 1)
        B.append(min(l if l is not None else X[i], r if r is not None else X[i]))
        C.append(l + r if (l is not None and r is not None) else X[i] * 10)
        D.append(1.0 if r is not None else 0.0)
    return np.array(A), np.array(B), np.array(C), np.array(D)


case(
    "default_chains",
    """
input  X[i]
output A, B, C, D
A[i] = X[i + 2] ?? X[i + 1] ?? X[i]
B[i] = min(X[i - 1] ?? X[i], X[i + 1] ?? X[i])
C[i] = (X[i - 1] + X[i + 1]) ?? X[i] * 10
D[i] = X[i + 1] * 0 + 1 ?? 0
""",
    dict(X=rn(6)),
    dflt_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 21. paged KV cache decode with per-batch lengths (gather + int filter + param-sized rank)
KC21 = rn(4, 3, 2, E)  # pages n, slots s (page size 3), heads h, e
VC21 = rn(4, 3, 2, F)
table21 = np.array([[2, 0], [3, 1]])
lens21 = np.array([5, 2])


def paged_ref(q, KC, VC, table, lens):
    B, H = q.shape[:2]
    out = np.zeros((B, H, VC.shape[-1]))
    for b in range(B):
        ks = np.concatenate([KC[table[b, j]] for j in range(table.shape[1])])[: lens[b]]  # m, h, e
        vs = np.concatenate([VC[table[b, j]] for j in range(table.shape[1])])[: lens[b]]
        for h in range(H):
            s = ks[:, h] @ q[b, h] / math.sqrt(E)
            out[b, h] = softmax_rows(s) @ vs[:, h]
    return out


case(
    "paged_kv_decode_lengths",
    """
# one query per (b, h) against a paged KV cache; key m lives in slot m % S of page table[b, m // S]
input  q[b, h, e], KC[n, s, h, e], VC[n, s, h, f], table[b, j] : int, lens[b] : int
param  M = 6
output O
SC[b, h, m]  = q[b, h, e] * KC[table[b, m // S], m % S, h, e] * rsqrt(E)  where m < lens[b]
GM[b, h]     = SC[b, h, m] :: max(m)
EX[b, h, m]  = exp(SC[b, h, m] - GM[b, h])
DEN[b, h]    = EX[b, h, m]
O[b, h, f]   = EX[b, h, m] * VC[table[b, m // S], m % S, h, f] / DEN[b, h]
""",
    dict(q=rn(2, 2, E), KC=KC21, VC=VC21, table=table21, lens=lens21),
    paged_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 22. coordinate masks: strided (mod in the filter) and block-diagonal with a ragged block (floor div)
N22 = 8


def strided_ref(Q, K, V):
    p = np.arange(N22)[:, None]
    m = np.arange(N22)[None, :]
    return softmax_rows(Q @ K.T, -1, ((p - m) % 3 == 0) & (m <= p)) @ V


case(
    "strided_mask_mod",
    """
input  Q[p, e], K[m, e], V[m, f]
param  STRIDE = 3
output O
S[m, p]  = Q[p, e] * K[m, e]  where (p - m) % STRIDE == 0 and m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(N22, E), K=rn(N22, E), V=rn(N22, F)),
    strided_ref,
    passes={"m": 3},
)


def blockdiag_ref(Q, K, V):
    p = np.arange(Q.shape[0])[:, None]
    m = np.arange(K.shape[0])[None, :]
    return softmax_rows(Q @ K.T, -1, (p // 3) == (m // 3)) @ V


case(
    "block_diagonal_floor",
    """
input  Q[p, e], K[m, e], V[m, f]
param  BS = 3
output O
S[m, p]  = Q[p, e] * K[m, e]  where p // BS == m // BS
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(10, E), K=rn(8, E), V=rn(8, F)),
    blockdiag_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 23. filter logic: not / or / chained comparisons; a rank that occurs only in the filter
X23 = rn(6, 6)


def logic_ref(X, w):
    n = X.shape[0]
    A = np.array(
        [sum(X[p, m] for m in range(n) if (not m > p) and (m == 0 or 1 <= p - m <= 2)) for p in range(n)]
    )
    Bv = np.array([X[p, p] * min(p, 5) for p in range(n)])
    C = np.array([X[p, p] * w[:3].sum() for p in range(n)])
    return A, Bv, C


case(
    "filter_logic_and_filter_only_rank",
    """
input  X[p, m], w[k]
output A, B, C
A[p] = X[p, m]  where not m > p and (m == 0 or 1 <= p - m <= 2)
B[p] = X[p, p]  where k < p             # k only in this filter: summed over k < min(p, K)
C[p] = X[p, p] * w[k]  where k < 3
""",
    dict(X=X23, w=rn(5)),
    logic_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 24. bottom-right causal with P > M: the first rows see no key


def br_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + M - P
    return softmax_rows(Q @ K.T / math.sqrt(E), -1, mask) @ V


case(
    "causal_bottom_right_more_queries",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where m - M <= p - P
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(9, E), K=rn(5, E), V=rn(5, F)),
    br_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 25. coordinates as values: expected key position and entropy under causal softmax


def pos_ref(Q, K):
    n = Q.shape[0]
    mask = np.tril(np.ones((n, K.shape[0]), bool))
    a = softmax_rows(Q @ K.T, -1, mask)
    pos = a @ np.arange(K.shape[0])
    ent = -np.where(a > 0, a * np.log(np.where(a > 0, a, 1)), 0).sum(-1)
    return pos, ent


case(
    "coordinate_values_position_entropy",
    """
input  Q[p, e], K[m, e]
output POS, ENT
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
POS[p]   = A[m, p] * m
ENT[p]   = -(A[m, p] * log(A[m, p]))
""",
    dict(Q=rn(7, E), K=rn(7, E)),
    pos_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 26. two partitions at once: block-sparse (block-causal) attention with ragged query and key tiles


def blockcausal_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = (np.arange(M)[None, :] // 3) <= (np.arange(P)[:, None] // 3)
    o = softmax_rows(Q @ K.T, -1, mask) @ V
    P1 = -(-P // 3)
    out = np.zeros((P1 * 3, V.shape[1]))
    out[:P] = o
    return out.reshape(P1, 3, V.shape[1])


case(
    "two_partitions_block_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 3
param  M0 = 3
rank   P = P1 * P0
rank   M = M1 * M0
output O
S[p1, p0, m1, m0] = Q[p1 * P0 + p0, e] * K[m1 * M0 + m0, e]  where m1 <= p1
GM[p1, p0]        = S[p1, p0, m1, m0] :: max(m1, m0)
SN[p1, p0, m1, m0] = exp(S[p1, p0, m1, m0] - GM[p1, p0])
SD[p1, p0]        = SN[p1, p0, m1, m0]
NV[p1, p0, f]     = SN[p1, p0, m1, m0] * V[m1 * M0 + m0, f]
O[p1, p0, f]      = NV[p1, p0, f] / SD[p1, p0]
""",
    dict(Q=rn(7, E), K=rn(8, E), V=rn(8, F)),
    blockcausal_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 27. running max with a guard, with empty steps (filter), history outputs


def cummax_ref(X):
    T, P = X.shape
    rm = np.full((T + 1, P), -np.inf)
    pres = np.zeros((T + 1, P), bool)
    for t in range(T):
        for p in range(P):
            if t >= p:
                rm[t + 1, p] = max(rm[t, p], X[t, p]) if pres[t, p] else X[t, p]
                pres[t + 1, p] = True
            else:
                rm[t + 1, p] = rm[t, p]
                pres[t + 1, p] = pres[t, p]
    # RM[0] = -inf where 0 != 0: absent; output absent -> 0
    out = np.where(pres, rm, 0.0)
    cnt = np.array([[sum(1 for s in range(t + 1) if s >= p) for p in range(P)] for t in range(T)], float)
    return out, cnt


case(
    "running_max_absent_init",
    """
# a running max whose initial state is absent; steps t < p have nothing to add
input  X[t, p]
output RM, CNT
LX[t, p]     = X[t, p]  where t >= p
RM[0, p]     = -inf  where 0 != 0
RM[t + 1, p] = max(RM[t, p] ?? LX[t, p], LX[t, p] ?? RM[t, p])
RC[0, p]     = 0
RC[t + 1, p] = RC[t, p] + (LX[t, p] * 0 + 1 ?? 0)
CNT[t, p]    = RC[t + 1, p]
""",
    dict(X=rn(5, 4)),
    cummax_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 28. rank S = T: causal self-attention of one sequence with itself


def self_ref(X, V):
    n = X.shape[0]
    return softmax_rows(X @ X.T, -1, np.tril(np.ones((n, n), bool))) @ V


case(
    "same_size_ranks_self",
    """
input  X[t, e], V[s, f]
rank   S = T
output O
SC[t, s] = X[t, e] * X[s, e]  where s <= t
GM[t]    = SC[t, s] :: max(s)
EX[t, s] = exp(SC[t, s] - GM[t])
DEN[t]   = EX[t, s]
NV[t, f] = EX[t, s] * V[s, f]
O[t, f]  = NV[t, f] / DEN[t]
""",
    dict(X=rn(6, E), V=rn(6, F)),
    self_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 29. hand-written guarded 1-pass sliding window (states start absent), ragged tiles


def window1p_ref(Q, K, V):
    P, M = Q.shape[2], K.shape[2]
    d = np.arange(P)[:, None] - np.arange(M)[None, :]
    return attn_bhpe(Q, K, V, mask=(d >= 0) & (d < 4))


case(
    "window_1pass_absent_states",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  W = 4
param  M0 = 3
rank   M = M1 * M0
output AV
BK[b, h, m1, m0, e]     = K[b, h, m1 * M0 + m0, e]
BV[b, h, m1, m0, f]     = V[b, h, m1 * M0 + m0, f]
RM[b, h, 0, p]          = -inf  where 0 != 0
RD[b, h, 0, p]          = 0  where 0 != 0
RNV[b, h, 0, p, f]      = 0  where 0 != 0
BQK[b, h, m1, m0, p]    = Q[b, h, p, e] * BK[b, h, m1, m0, e] * rsqrt(E)  where p - W < m1 * M0 + m0 and m1 * M0 + m0 <= p
LM[b, h, m1, p]         = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p]     = max(RM[b, h, m1, p] ?? LM[b, h, m1, p], LM[b, h, m1, p] ?? RM[b, h, m1, p])
SLN[b, h, m1, m0, p]    = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]        = SLN[b, h, m1, m0, p]
SLNV[b, h, m1, p, f]    = SLN[b, h, m1, m0, p] * BV[b, h, m1, m0, f]
PRM[b, h, m1, p]        = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
SPD[b, h, m1, p]        = RD[b, h, m1, p] * PRM[b, h, m1, p]
RD[b, h, m1 + 1, p]     = SLD[b, h, m1, p] + (SPD[b, h, m1, p] ?? 0) ?? SPD[b, h, m1, p]
SPNV[b, h, m1, p, f]    = RNV[b, h, m1, p, f] * PRM[b, h, m1, p]
RNV[b, h, m1 + 1, p, f] = SLNV[b, h, m1, p, f] + (SPNV[b, h, m1, p, f] ?? 0) ?? SPNV[b, h, m1, p, f]
AV[b, h, p, f]          = RNV[b, h, M1, p, f] / RD[b, h, M1, p]
""",
    dict(Q=rn(1, 2, 9, E), K=rn(1, 2, 10, E), V=rn(1, 2, 10, F)),
    window1p_ref,
    passes={"m": 1, "m1": 1},
)

# ---------------------------------------------------------------------------------------------------------------
# 30. decayed (lightning / retention-like) causal linear attention, decay per head via exp(log)


def decay_ref(Q, K, V, lam):
    H, P = Q.shape[0], Q.shape[1]
    out = np.zeros((H, P, V.shape[-1]))
    d = np.arange(P)[:, None] - np.arange(P)[None, :]
    for h in range(H):
        D = np.where(d >= 0, lam[h] ** np.maximum(d, 0), 0.0)
        out[h] = ((Q[h] @ K[h].T) * D) @ V[h]
    return out


case(
    "retention_decay_causal",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], lam[h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]
D[h, m, p]  = exp(log(lam[h]) * (p - m))  where m <= p
O[h, p, f]  = S[h, m, p] * D[h, m, p] * V[h, m, f]
""",
    dict(Q=rn(2, 7, E), K=rn(2, 7, E), V=rn(2, 7, F), lam=np.array([0.9, 0.5])),
    decay_ref,
    passes={"m": 1},
)

# ---------------------------------------------------------------------------------------------------------------
# 31. attention sink inside the max and in the denominator, causal


def sink_ref(Q, K, V, sink):
    H, P = Q.shape[0], Q.shape[1]
    out = np.zeros((H, P, V.shape[-1]))
    for h in range(H):
        s = Q[h] @ K[h].T / math.sqrt(E)
        s = np.where(np.tril(np.ones((P, P), bool)), s, -np.inf)
        mx = np.maximum(s.max(-1), sink[h])
        ex = np.exp(s - mx[:, None])
        den = ex.sum(-1) + np.exp(sink[h] - mx)
        out[h] = (ex @ V[h]) / den[:, None]
    return out


case(
    "attention_sink_in_max",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
MX[h, p]    = S[h, m, p] :: max(m)
GM[h, p]    = max(MX[h, p], sink[h])
SN[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = SN[h, m, p]
DEN[h, p]   = SD[h, p] + exp(sink[h] - GM[h, p])
A[h, m, p]  = SN[h, m, p] / DEN[h, p]
O[h, p, f]  = A[h, m, p] * V[h, m, f]
""",
    dict(Q=rn(2, 6, E, scale=2), K=rn(2, 6, E, scale=2), V=rn(2, 6, F), sink=np.array([0.5, 3.0])),
    sink_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 32. integer tensors in filters with arithmetic, and an integer input as a value
seg32 = np.array([0, 0, 1, 1, 1, 2, 3, 3])


def seg_ref(Q, K, V, seg, w):
    n = len(seg)
    mask = (
        (seg[None, :] + 1 >= seg[:, None]) & (seg[None, :] <= seg[:, None]) & np.tril(np.ones((n, n), bool))
    )
    o = softmax_rows(Q @ K.T, -1, mask) @ V
    return o * w[:, None]


case(
    "int_filter_arith_and_int_value",
    """
# a query sees causal keys of its own segment and of the previous one; the output is scaled by an int weight
input  Q[p, e], K[m, e], V[m, f], seg[n] : int, w[p] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where seg[m] + 1 >= seg[p] and seg[m] <= seg[p] and m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
NV[p, f] = SN[m, p] * V[m, f]
O[p, f]  = NV[p, f] / SD[p] * w[p]
""",
    dict(Q=rn(8, E), K=rn(8, E), V=rn(8, F), seg=seg32, w=np.array([1, 2, 3, 0, -1, 2, 1, 5])),
    seg_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 33. head dims that are not powers of two, batch 2, out of declaration order statements, continuation lines


def odd_ref(Q, K, V):
    return attn_bhpe(Q, K, V)


case(
    "odd_dims_reordered_statements",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
AV[b, h, p, f] = A[b, h, m, p] * \\
                 V[b, h, m, f]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
SD[b, h, p]    = SN[b, h, m, p]
SN[b, h, m, p] = exp(QK[b, h, m, p] -
                     GM[b, h, p])
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
""",
    dict(Q=rn(2, 1, 5, 3), K=rn(2, 1, 13, 3), V=rn(2, 1, 13, 7)),
    odd_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 34. tensor (2-simplicial) attention: one max over two ranks


def tensor_ref(Q, K1, K2, V1, V2):
    s = np.einsum("pe,me,ne->pmn", Q, K1, K2) / Q.shape[1]
    P = s.shape[0]
    a = softmax_rows(s.reshape(P, -1)).reshape(s.shape)
    return np.einsum("pmn,mf,nf->pf", a, V1, V2)


case(
    "tensor_attention_two_rank_max",
    """
input  Q[p, e], K1[m, e], K2[n, e], V1[m, f], V2[n, f]
output O
S[p, m, n]  = Q[p, e] * K1[m, e] * K2[n, e] / E
GM[p]       = S[p, m, n] :: max(m, n)
SN[p, m, n] = exp(S[p, m, n] - GM[p])
SD[p]       = SN[p, m, n]
A[p, m, n]  = SN[p, m, n] / SD[p]
O[p, f]     = A[p, m, n] * V1[m, f] * V2[n, f]
""",
    dict(Q=rn(3, E), K1=rn(4, E), K2=rn(5, E), V1=rn(4, F), V2=rn(5, F)),
    tensor_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 35. L2-distance attention written with a min and exp(c - X) (not the shift form the rewrite wants)


def l2_ref(Q, K, V):
    d = ((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1)
    return softmax_rows(-d) @ V


case(
    "l2_attention_min_reduction",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
D[m, p]  = square(Q[p, e] - K[m, e])
GM[p]    = D[m, p] :: min(m)
SN[m, p] = exp(GM[p] - D[m, p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(5, E), K=rn(7, E), V=rn(7, F)),
    l2_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 36. base-2 softmax with a base-2 log-sum-exp, causal


def exp2_ref(Q, K, V):
    n = Q.shape[0]
    mask = np.tril(np.ones((n, n), bool))
    s = Q @ K.T * 1.4426950408889634
    o = softmax_rows(s * math.log(2), -1, mask) @ V
    l2 = lse_rows(s * math.log(2), mask) / math.log(2)
    return o, l2


case(
    "exp2_softmax_log2_lse",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LOG2E = 1.4426950408889634
output O, L2
S[m, p]  = Q[p, e] * K[m, e] * LOG2E  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp2(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
L2[p]    = GM[p] + log2(SD[p])
""",
    dict(Q=rn(6, E, scale=2), K=rn(6, E, scale=2), V=rn(6, F)),
    exp2_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 37. differential attention: two softmaxes over the same keys, O = O1 - LAMBDA * O2


def diff_ref(Q1, K1, Q2, K2, V):
    return softmax_rows(Q1 @ K1.T) @ V - 0.25 * (softmax_rows(Q2 @ K2.T) @ V)


case(
    "differential_two_softmaxes",
    """
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f]
param  LAMBDA = 0.25
output O
S1[m, p]  = Q1[p, e] * K1[m, e]
S2[m, p]  = Q2[p, e] * K2[m, e]
G1[p]     = S1[m, p] :: max(m)
G2[p]     = S2[m, p] :: max(m)
N1[m, p]  = exp(S1[m, p] - G1[p])
N2[m, p]  = exp(S2[m, p] - G2[p])
D1[p]     = N1[m, p]
D2[p]     = N2[m, p]
NV1[p, f] = N1[m, p] * V[m, f]
NV2[p, f] = N2[m, p] * V[m, f]
O[p, f]   = NV1[p, f] / D1[p] - LAMBDA * (NV2[p, f] / D2[p])
""",
    dict(Q1=rn(5, E), K1=rn(9, E), Q2=rn(5, E), K2=rn(9, E), V=rn(9, F)),
    diff_ref,
    passes={"m": 2},
)

# ---------------------------------------------------------------------------------------------------------------
# 38. GQA through an int group map, with -1 (no group: absent -> 0)
grp38 = np.array([1, 0, -1, 1])


def grpmap_ref(Q, K, V, grp):
    out = np.zeros((*Q.shape[:3], V.shape[-1]))
    for h, g in enumerate(grp):
        if 0 <= g < K.shape[1]:
            out[:, h] = attn_bhpe(
                Q[:, h : h + 1],
                K[:, g : g + 1],
                V[:, g : g + 1],
                mask=np.tril(np.ones((Q.shape[2], K.shape[2]), bool)),
            )[:, 0]
    return out


case(
    "gqa_group_map_gather",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], grp[h] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, grp[h], m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, grp[h], m, f]
""",
    dict(Q=rn(1, 4, 6, E), K=rn(1, 2, 6, E), V=rn(1, 2, 6, F), grp=grp38),
    grpmap_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 39. causal where the mask is on the value side only: masked A, not scores (filter on the PV product)


def late_mask_ref(Q, K, V):
    # softmax over ALL keys, then only keys m <= p contribute to the output (weights not renormalised)
    n = Q.shape[0]
    a = softmax_rows(Q @ K.T)
    return (a * np.tril(np.ones((n, K.shape[0])))) @ V


case(
    "filter_after_softmax",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]  where m <= p
""",
    dict(Q=rn(6, E), K=rn(8, E), V=rn(8, F)),
    late_mask_ref,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------------
# 40. convolution of keys along the sequence (a statement that reads K at m + k - 1) before attention


def convk_ref(Q, K, V, w):
    pad = np.pad(K, ((1, 1), (0, 0)))
    kc = sum(w[j] * pad[j : j + K.shape[0]] for j in range(3))
    return softmax_rows(Q @ kc.T) @ V


case(
    "conv_keys_then_attention",
    """
input  Q[p, e], K[m, e], V[m, f], w[k, e]
output O
KC[m, e] = w[k, e] * K[m + k - 1, e]
S[m, p]  = Q[p, e] * KC[m, e]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(5, E), K=rn(7, E), V=rn(7, F), w=rn(3, E)),
    convk_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 41. a softmax over m where the sum has a constant term (reduction covers the whole RHS)


def const_term_ref(X):
    # S[i] = sum_j (X[i, j] + 1) = X.sum + J;  T = sum_j max(X, 0) * 2 - X.max
    return X.sum(1) + X.shape[1], (np.maximum(X, 0) * 2).sum(1) - X.max(1)


case(
    "reduction_covers_constant_term",
    """
input  X[i, j]
output S, T
S[i]  = X[i, j] + 1
MXJ[i] = X[i, j] :: max(j)
T[i]  = relu(X[i, j]) * 2 - MXJ[i] / J
""",
    dict(X=rn(3, 5)),
    const_term_ref,
)

# ---------------------------------------------------------------------------------------------------------------
# 42. causal softmax with a bias tensor indexed by p - m + M (relative position, out-of-range bias is absent)


def relbias_ref(Q, K, V, bias):
    P, M = Q.shape[0], K.shape[0]
    idx = np.arange(P)[:, None] - np.arange(M)[None, :] + M
    ok = idx < len(bias)
    b = np.where(ok, bias[np.minimum(idx, len(bias) - 1)], 0)
    return softmax_rows(Q @ K.T + b, -1, ok) @ V


case(
    "relative_bias_tensor_oob",
    """
# bias has 2M - 2 entries, so p - m + M >= 2M - 2 (p - m >= M - 2) reads past it: absent, masked
input  Q[p, e], K[m, e], V[m, f], bias[r]
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + bias[p - m + M]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(7, E), K=rn(6, E), V=rn(6, F), bias=rn(10)),
    relbias_ref,
    passes={"m": 3},
)


# ===============================================================================================================
# batch 2: semantics corners across backends
# A case may carry nonfinite=True: NaN and +-inf must then match position for position.


def case_nf(*a, **k):
    case(*a, **k)
    CASES[-1]["nonfinite"] = True


# 43. the docs' unguarded running max: exp(-inf - -inf) is NaN in every backend
case_nf(
    "nan_unguarded_running_max",
    """
input  X[t, p]
output C
LX[t, p]     = X[t, p] where t >= p
RM[0, p]     = -inf
RM[t + 1, p] = max(RM[t, p], LX[t, p] ?? -inf)
C[t, p]      = exp(RM[t, p] - RM[t + 1, p])
""",
    dict(X=np.array([[3.0, 5.0], [1.0, 2.0]])),
    lambda X: np.array([[0.0, np.nan], [1.0, 0.0]]),
)

# 44. NaN is a value, ?? does not replace it; 1 / 0 is inf; a max over an inf
case_nf(
    "ieee_values_and_defaults",
    """
input  X[i]
output L, R, MX, N
L[i] = log(X[i + 1]) ?? 7
R[i] = 1 / X[i]
MX   = R[i] :: max(i)
N    = X[i] * 0 + 1
""",
    dict(X=np.array([1.0, -1.0, 0.0, 2.0])),
    lambda X: (
        np.array([np.nan, -np.inf, np.log(2.0), 7.0]),
        np.array([1.0, -1.0, np.inf, 0.5]),
        np.array(np.inf),
        np.array(4.0),
    ),
)

# 45. rule 3: a filter that reads an int tensor out of range makes the point absent, `or` and `not` do not rescue


def oob_filter_ref(X, d):
    n = len(X)
    same = np.array([X[i] if (i + 1 < n and (d[i + 1] == d[i] or i == n - 1)) else 0.0 for i in range(n)])
    notf = np.array([X[i] if (i - 1 >= 0 and d[i - 1] != 1) else 0.0 for i in range(n)])
    return same, notf


case(
    "filter_reads_out_of_range_int",
    """
input  X[i], d[i] : int
output SAME, NOTF
SAME[i] = X[i] where d[i + 1] == d[i] or i == I - 1
NOTF[i] = X[i] where d[i - 1] != 1
""",
    dict(X=rn(5), d=np.array([0, 0, 1, 1, 0])),
    oob_filter_ref,
)

# 46. value read shifted in the numerator only: the last key has no value (absent), its weight stays in the
# denominator (the softmax is over all keys; only the numerator sum skips it)


def shifted_v_ref(Q, K, V):
    a = softmax_rows(Q @ K.T)
    Vs = np.zeros_like(V)
    Vs[:-1] = V[1:]
    return a @ Vs


case(
    "value_read_shifted_numerator_absent",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m + 1, f]
""",
    dict(Q=rn(5, E), K=rn(7, E), V=rn(7, F)),
    shifted_v_ref,
    passes={"m": 3},
)

# 47. a bias computed from coordinates only (reads nothing tiled), added to the scores; ragged tiles under rewrite


def coordbias_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    b = -0.3 * np.abs(np.arange(M)[None, :] - np.arange(P)[:, None]) + 0.05 * M
    return softmax_rows(Q @ K.T + b) @ V


case(
    "coordinate_only_bias_statement",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
B[m, p]  = -0.3 * abs(m - p) + 0.05 * M
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + B[m, p]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(6, E), K=rn(11, E), V=rn(11, F)),
    coordbias_ref,
    passes={"m": 3},
)

# 48. degenerate sizes: one query, one head, E = F = 1


def tiny_ref(Q, K, V):
    return attn_bhpe(Q, K, V, mask=np.ones((1, K.shape[2]), bool))


case(
    "size_one_ranks",
    """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m >= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 1, 1, 1), K=rn(1, 1, 5, 1), V=rn(1, 1, 5, 1)),
    tiny_ref,
    passes={"m": 3},
)

# 49. large logits (+-1e3): the rewritten 1-pass form must not overflow


def big_ref(Q, K, V):
    n = Q.shape[0]
    return softmax_rows(Q @ K.T, -1, np.tril(np.ones((n, n), bool))) @ V


case(
    "large_logits_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(9, E, scale=20), K=rn(9, E, scale=20), V=rn(9, F)),
    big_ref,
    passes={"m": 3},
)

# 50. states read at constant indices, at every index and summed over the iterative rank (rule 6)


def states_ref(X):
    T = len(X)
    R = np.concatenate([[0.0], np.cumsum(X)])
    return np.array(R[2]), np.array(R[:T].sum()), np.array(R[1:].sum()), R[T] / T


case(
    "states_read_outside",
    """
input  X[t]
output R2, SBEFORE, SAFTER, MEAN
R[0]     = 0
R[t + 1] = R[t] + X[t]
R2       = R[2]
SBEFORE  = R[t]
SAFTER   = R[t + 1]
MEAN     = R[T] / T
""",
    dict(X=rn(6)),
    states_ref,
)

# 51. iterative index in the middle, history output with the iterative dimension inside, input read shifted


def mid_ref(X, a):
    T, I = X.shape
    H = np.zeros((I, T + 1))
    for t in range(T):
        nxt = X[t + 1] if t + 1 < T else np.zeros(I)
        H[:, t + 1] = a * H[:, t] + X[t] + 0.5 * nxt
    return H


case(
    "iterative_index_in_middle",
    """
input  X[t, i], a[i]
output H
H[i, 0]     = 0
H[i, t + 1] = a[i] * H[i, t] + X[t, i] + 0.5 * (X[t + 1, i] ?? 0)
""",
    dict(X=rn(5, 3), a=np.array([0.5, -0.9, 1.1])),
    mid_ref,
)

# 52. lexical corners: tabs, comments, number forms, unary plus, inf literal in values, exponent params


def lex_ref(X):
    y = (+X * 1.5e0 + 0.5 - 2.0) * 2.5e-1
    return y, np.minimum(X, np.inf) + np.maximum(X, -np.inf) - 2 * X


case(
    "lexical_number_forms",
    """
# a comment line
input\tX[i]   # tab after input
param  S = 2.5E-1
output Y, Z
Y[i] = (+X[i] * 1.5e0 + .5 - 2.) * S     # forms of numbers
Z[i] = min(X[i], inf) + max(X[i], -inf) - 2 * X[i]
""",
    dict(X=rn(5)),
    lex_ref,
)

# 53. min / max / clamp in filters, float literal comparison


def minmax_filter_ref(X):
    P, M = X.shape
    A = np.array([sum(X[p, m] for m in range(M) if m <= min(p, 3)) for p in range(P)])
    B = np.array([sum(X[p, m] for m in range(M) if min(max(p - m, 0), 3) == p - m) for p in range(P)])
    C = np.array([sum(X[p, m] for m in range(M) if p - m < 2.5 and m <= p) for p in range(P)])
    return A, B, C


case(
    "minmax_clamp_float_in_filters",
    """
input  X[p, m]
param  LIMIT = 3
output A, B, C
A[p] = X[p, m] where m <= min(p, LIMIT)
B[p] = X[p, m] where clamp(p - m, 0, LIMIT) == p - m
C[p] = X[p, m] where p - m < 2.5 and m <= p
""",
    dict(X=rn(7, 6)),
    minmax_filter_ref,
)

# 54. gathers: times a constant, nested, inside min, with out-of-range values


def gathers_ref(X, perm):
    n = len(X)

    def g(i):
        return X[i] if 0 <= i < n else None

    A, B, C = [], [], []
    for j in range(len(perm)):
        a = g(2 * perm[j] + 1)
        A.append(0.0 if a is None else a)
        inner = perm[j] if 0 <= perm[j] < len(perm) else None
        b = None if inner is None else g(perm[inner])
        B.append(0.0 if b is None else b)
        c = g(min(perm[j], 3))
        C.append(0.0 if c is None else c)
    return np.array(A), np.array(B), np.array(C)


case(
    "gathers_scaled_nested_min",
    """
input  X[i], perm[j] : int
output A, B, C
A[j] = X[2 * perm[j] + 1]
B[j] = X[perm[perm[j]]]
C[j] = X[min(perm[j], 3)]
""",
    dict(X=rn(8), perm=np.array([3, 0, 5, -1, 2, 1])),
    gathers_ref,
)

# 55. zero divisor in an index: the point is absent


case(
    "zero_divisor_absent",
    """
input  X[i]
param  Z = 0
output A, B
A[i] = X[i % Z] ?? 5
B[i] = X[i // Z] ?? 6
""",
    dict(X=rn(4)),
    lambda X: (np.full(4, 5.0), np.full(4, 6.0)),
)

# 56. a reduction that is empty everywhere: scalar output 0; min with a filter on both reduced ranks


def empty_red_ref(X):
    I, J, K = X.shape
    mn = np.array([min(sum(X[i, j, k] for j in range(J) if j != k) for k in range(K)) for i in range(I)])
    return np.array(0.0), mn


case(
    "empty_reduction_scalar_and_min_filter",
    """
input  X[i, j, k]
output NONE, MN
NONE = X[i, j, k] where i > I
MN[i] = X[i, j, k] :: min(k) where j != k
""",
    dict(X=rn(2, 3, 4)),
    empty_red_ref,
)

# 57. partition tile overridden larger than the rank and equal to 1


def tile_big_ref(X):
    return X.reshape(1, -1).copy(), np.array([X.sum()])


case(
    "partition_tile_larger_than_rank",
    """
input  X[m]
param  M0 = 2
rank   M = M1 * M0
output T, S
T[m1, m0] = X[m1 * M0 + m0]
S[m1]     = T[m1, m0]
""",
    dict(X=rn(5)),
    lambda X: (np.concatenate([X, np.zeros(3)]).reshape(1, 8), np.array([X.sum()])),
    params={"M0": 8},
)

case(
    "partition_tile_one",
    """
input  X[m]
param  M0 = 2
rank   M = M1 * M0
output T, S
T[m1, m0] = X[m1 * M0 + m0]
S[m1]     = T[m1, m0] :: max(m0)
""",
    dict(X=rn(5)),
    lambda X: (X.reshape(5, 1).copy(), X.copy()),
    params={"M0": 1},
)

# 58. more query rows than one interpreter row block (P = 18), causal, GQA


def rows18_ref(Q, K, V):
    return attn_bhpe(
        Q, np.repeat(K, 2, axis=1), np.repeat(V, 2, axis=1), mask=np.tril(np.ones((18, 18), bool))
    )


case(
    "causal_gqa_18_rows",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DEN[b, h, p]   = EX[b, h, m, p]
A[b, h, m, p]  = EX[b, h, m, p] / DEN[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h // R, m, f]
""",
    dict(Q=rn(1, 2, 18, E), K=rn(1, 1, 18, E), V=rn(1, 1, 18, F)),
    rows18_ref,
    passes={"m": 3},
)

# 59. a numerator filter different from the denominator's: keys m != p add to the denominator only


def diag_num_ref(Q, K, V):
    a = softmax_rows(Q @ K.T)
    n = Q.shape[0]
    return (a * (1 - np.eye(n, K.shape[0]))) @ V, a.sum(-1) * 0 + 1


case(
    "numerator_filter_differs",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, ONE
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
NV[p, f] = SN[m, p] * V[m, f]  where m != p
O[p, f]  = NV[p, f] / SD[p]
ONE[p]   = SD[p] / SD[p]
""",
    dict(Q=rn(6, E), K=rn(8, E), V=rn(8, F)),
    diag_num_ref,
    passes={"m": 2},
)

# 60. max over m of a ?? expression, and a softmax whose scores default to a constant past the end of K


def dflt_scores_ref(Q, K, V):
    P, M = Q.shape[0], V.shape[0]
    s = np.full((P, M), -1.0)
    s[:, : K.shape[0]] = Q @ K.T
    return softmax_rows(s) @ V


case(
    "scores_default_past_keys",
    """
# K has 5 keys, V has 8: scores of keys 5..7 read K out of range and default to -1
input  Q[p, e], K[n, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] ?? -1
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(4, E), K=rn(5, E), V=rn(8, F)),
    dflt_scores_ref,
    passes={"m": 3},
)


# ===============================================================================================================
# batch 3

# 61. a filter on a feature rank inside the scores (only the first HALF dims of e count), causal


def half_e_ref(Q, K, V):
    n = Q.shape[0]
    s = Q[:, :2] @ K[:, :2].T
    return softmax_rows(s, -1, np.tril(np.ones((n, K.shape[0]), bool))) @ V


case(
    "feature_rank_filter_in_scores",
    """
input  Q[p, e], K[m, e], V[m, f]
param  HALF = 2
output O
S[m, p]  = Q[p, e] * K[m, e]  where e < HALF and m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(7, E), K=rn(9, E), V=rn(9, F)),
    half_e_ref,
    passes={"m": 3},
)

# 62. floor division / modulo of negative differences in an attention filter, inf param in a filter


def negdiv_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    d = np.arange(P)[:, None] - np.arange(M)[None, :]
    mask = ((d // 3) >= -1) & ((d // 3) <= 0) & (d % 2 == 0)
    return softmax_rows(Q @ K.T, -1, mask) @ V


case(
    "negative_floor_mod_filter",
    """
# (p - m) // 3 in {-1, 0} and (p - m) even: a band around the diagonal, with negative differences
input  Q[p, e], K[m, e], V[m, f]
param  BIG = inf
output O
S[m, p]  = Q[p, e] * K[m, e]  where -1 <= (p - m) // 3 <= 0 and (p - m) % 2 == 0 and m - p < BIG
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(8, E), K=rn(10, E), V=rn(10, F)),
    negdiv_ref,
)

# 63. a filter on a statement with ?? : the filter wins


def filter_dflt_ref(X):
    n = len(X)
    return np.array([0.0] + [X[i + 1] if i + 1 < n else 9.0 for i in range(1, n)])


case(
    "filter_over_default",
    """
input  X[i]
output Y
Y[i] = X[i + 1] ?? 9  where i > 0
""",
    dict(X=rn(5)),
    filter_dflt_ref,
)

# 64. chained == and != comparisons, not binding looser than and


def chain_ref(X):
    P, M = X.shape
    A = np.array([sum(X[p, m] for m in range(M) if (m == p == 2) or (m != p != 1)) for p in range(P)])
    B = np.array([sum(X[p, m] for m in range(M) if (not (m < p)) and m < 4) for p in range(P)])
    return A, B


case(
    "chained_equalities",
    """
input  X[p, m]
output A, B
A[p] = X[p, m] where m == p == 2 or m != p != 1
B[p] = X[p, m] where not m < p and m < 4
""",
    dict(X=rn(5, 6)),
    chain_ref,
)

# 65. two recurrences over the same rank; an output indexed by the iterative rank reading after-states and inputs


def two_rec_ref(X, Y):
    T = len(X)
    a = np.zeros(T + 1)
    b = np.ones(T + 1)
    for t in range(T):
        a[t + 1] = a[t] + X[t]
        b[t + 1] = b[t] * 0.5 + Y[t] * a[t + 1]
    O = b[1:] * X
    return O, np.array(a[T] + b[T])


case(
    "two_recurrences_same_rank",
    """
input  X[t], Y[t]
output O, FIN
A[0]     = 0
B[0]     = 1
A[t + 1] = A[t] + X[t]
B[t + 1] = B[t] * 0.5 + Y[t] * A[t + 1]
O[t]     = B[t + 1] * X[t]
FIN      = A[T] + B[T]
""",
    dict(X=rn(6), Y=rn(6)),
    two_rec_ref,
)

# 66. a running state with the iterative rank in the middle and a per-step filter that empties some steps:
# the update is absent at such steps and the state must then be carried by ??


def gated_ref(X, g):
    T, F_ = X.shape
    s = np.zeros((T + 1, F_))
    for t in range(T):
        s[t + 1] = s[t] * 0.9 + X[t] if g[t] > 0 else s[t]
    return s[T]


case(
    "gated_recurrence_int_filter",
    """
input  X[t, f], g[t] : int
output FIN
U[t, f]     = X[t, f]  where g[t] > 0
S[f, 0]     = 0
S[f, t + 1] = S[f, t] * 0.9 + U[t, f] ?? S[f, t]
FIN[f]      = S[f, T]
""",
    dict(X=rn(7, 3), g=np.array([1, 0, 0, 1, 1, 0, 1])),
    gated_ref,
)

# 67. causal softmax where K and V come through a permutation gather (a reordered cache)


def perm_ref(Q, K, V, perm):
    n = Q.shape[0]
    Kp, Vp = K[perm], V[perm]
    return softmax_rows(Q @ Kp.T / math.sqrt(E), -1, np.tril(np.ones((n, n), bool))) @ Vp


case(
    "permuted_cache_gather_causal",
    """
input  Q[p, e], K[n, e], V[n, f], perm[m] : int
output O
S[m, p]  = Q[p, e] * K[perm[m], e] * rsqrt(E)  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
O[p, f]  = SN[m, p] * V[perm[m], f] / SD[p]
""",
    dict(Q=rn(6, E), K=rn(6, E), V=rn(6, F), perm=np.array([5, 2, 0, 4, 1, 3])),
    perm_ref,
)

# 68. attention with an explicit dropout-like keep mask as a float multiplier after normalisation,
# and a scalar temperature input


def temp_ref(Q, K, V, keep, temp):
    a = softmax_rows(Q @ K.T / temp)
    return (a * keep.T) @ V


case(
    "scalar_temperature_keep_mask",
    """
input  Q[p, e], K[m, e], V[m, f], keep[m, p], temp
output O
S[m, p]  = Q[p, e] * K[m, e]
T2[m, p] = S[m, p] / temp
GM[p]    = T2[m, p] :: max(m)
SN[m, p] = exp(T2[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p] * keep[m, p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(
        Q=rn(5, E), K=rn(7, E), V=rn(7, F), keep=(rng.random((7, 5)) > 0.3).astype(float), temp=np.array(0.6)
    ),
    temp_ref,
)


# 69. outputs that are the running statistics themselves (max and denominator), two value outputs, shifted max
def stats_ref(Q, K, V1, V2):
    n, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] + 1 <= np.arange(n)[:, None]  # m < p: row 0 is empty
    s = Q @ K.T
    sm = np.where(mask, s, -np.inf)
    gm = sm.max(-1)
    ok = np.isfinite(gm)
    gm2 = np.where(ok, gm + 1, 0)
    ex = np.where(mask, np.exp(s - np.where(ok, gm + 1, 0)[:, None]), 0)
    sd = ex.sum(-1)
    a = np.where(sd[:, None] > 0, ex / np.where(sd > 0, sd, 1)[:, None], 0)
    return a @ V1, a @ V2, np.where(ok, gm, 0), np.where(ok, sd, 0), gm2


case(
    "stats_outputs_two_values_shifted_max",
    """
input  Q[p, e], K[m, e], V1[m, f], V2[m, d]
output O1, O2, GM, SD, GM2
S[m, p]   = Q[p, e] * K[m, e]  where m < p
GM[p]     = S[m, p] :: max(m)
GM2[p]    = GM[p] + 1
SN[m, p]  = exp(S[m, p] - GM2[p])
SD[p]     = SN[m, p]
A[m, p]   = SN[m, p] / SD[p]
O1[p, f]  = A[m, p] * V1[m, f]
O2[p, d]  = A[m, p] * V2[m, d]
""",
    dict(Q=rn(6, E), K=rn(8, E), V1=rn(8, F), V2=rn(8, 2)),
    stats_ref,
    passes={"m": 3},
)


# 70. the attention weights themselves as an output (the rewrite must refuse / keep them), causal
def weights_ref(Q, K):
    n = Q.shape[0]
    return softmax_rows(Q @ K.T, -1, np.tril(np.ones((n, K.shape[0]), bool))).T


case(
    "attention_weights_output",
    """
input  Q[p, e], K[m, e]
output A
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
""",
    dict(Q=rn(5, E), K=rn(7, E)),
    weights_ref,
)


# 71. local max normalisation per block of keys (block-softmax), then an average over blocks: a max over m0 only
def blocksoftmax_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T
    out = np.zeros((P, V.shape[1]))
    nb = -(-M // 3)
    for j in range(nb):
        sl = slice(3 * j, min(3 * j + 3, M))
        out += softmax_rows(s[:, sl]) @ V[sl]
    return out / nb


case(
    "per_block_softmax_average",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
S[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e]
LM[m1, p]     = S[m1, m0, p] :: max(m0)
EX[m1, m0, p] = exp(S[m1, m0, p] - LM[m1, p])
LD[m1, p]     = EX[m1, m0, p]
LN[m1, p, f]  = EX[m1, m0, p] * V[m1 * M0 + m0, f]
O[p, f]       = LN[m1, p, f] / LD[m1, p] / M1
""",
    dict(Q=rn(4, E), K=rn(8, E), V=rn(8, F)),
    blocksoftmax_ref,
)


# 72. present -inf / present 0 versus absent: ?? must only replace absent points (a skipped max holds -inf
# and a skipped sum holds 0 in registers; those must not be mistaken for absence)
X72 = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 9.0, 9.0], [1.0, 0.5, 2.0, 9.0]])
W72 = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [2.0, -2.0, 9.0, 9.0], [1.0, -1.0, 0.0, 9.0]])


def sentinel_ref(X, W):
    P, M = X.shape
    Y, Z = [], []
    for p in range(P):
        ms = [m for m in range(M) if m < p]
        if not ms:
            Y.append(5.0)
            Z.append(7.0)
            continue
        with np.errstate(divide="ignore"):
            Y.append(max(np.log(X[p, m]) for m in ms))
        Z.append(sum(W[p, m] for m in ms))
    return np.array(Y), np.array(Z)


case_nf(
    "present_sentinels_vs_absent",
    """
input  X[p, m], W[p, m]
output Y, Z
L[p, m] = log(X[p, m])  where m < p
MX[p]   = L[p, m] :: max(m)
Y[p]    = MX[p] ?? 5
SM[p]   = W[p, m]  where m < p
Z[p]    = SM[p] ?? 7
""",
    dict(X=X72, W=W72),
    sentinel_ref,
)


# 73. NaN inside a max / min reduction. The docs say arithmetic is IEEE and NaN is a value; the NumPy reference
# propagates it (np.max). Expected here: NaN, as the reference.
def nanmax_ref(X):
    with np.errstate(invalid="ignore"):
        L = np.log(X)
    return L.max(1), L.min(1)


case_nf(
    "nan_in_max_reduction",
    """
input  X[p, m]
output MX, MN
L[p, m] = log(X[p, m])
MX[p]   = L[p, m] :: max(m)
MN[p]   = L[p, m] :: min(m)
""",
    dict(X=np.array([[1.0, -1.0, 2.0], [1.0, 2.0, 3.0]])),
    nanmax_ref,
)


# 74. NaN through the elementwise max / min / relu / clamp (IEEE: NaN is a value; the reference propagates it)
case_nf(
    "nan_through_elementwise_max",
    """
input  X[i]
output A, B, C, D
A[i] = max(X[i], 0)
B[i] = relu(X[i])
C[i] = clamp(X[i], -1, 1)
D[i] = min(0, X[i])
""",
    dict(X=np.array([np.nan, 2.0, -3.0])),
    lambda X: (np.maximum(X, 0), np.maximum(X, 0), np.clip(X, -1, 1), np.minimum(0, X)),
)


# ===============================================================================================================
# batch 4: zero-size ranks (docs: an empty reduction is absent; outputs give 0 there)

# 75. a filtered contraction over an empty rank: absent (not a present 0), so the count of present points is 0
case(
    "empty_rank_filtered_contraction",
    """
input  X[i, e], Y[j, e]
output C, S
S[i, j] = X[i, e] * Y[j, e]  where i <= j
C[i]    = S[i, j] * 0 + 1
""",
    dict(X=np.ones((3, 0)), Y=np.ones((3, 0))),
    lambda X, Y: (np.zeros(3), np.zeros((3, 3))),
)

# 76. a shifted read of an empty input
case(
    "empty_input_shifted_read",
    """
input  X[i]
output Y
Y[i] = X[i - 1] ?? 1
""",
    dict(X=np.ones(0)),
    lambda X: np.zeros(0),
)

# 77. a recurrence whose independent rows are an empty rank
case(
    "empty_rows_recurrence",
    """
input  X[t, f]
output FIN
S[0, f]     = 0
S[t + 1, f] = S[t, f] + X[t, f]
FIN[f]      = S[T, f]
""",
    dict(X=np.ones((3, 0))),
    lambda X: np.zeros(0),
)

# 78. linear attention with no keys: the K^T V state is absent, so is every output row
case(
    "empty_keys_linear_attention",
    next(c["spec"] for c in CASES if c["name"] == "linear_noncausal_kv_state"),
    dict(Q=rn(3, E), K=np.ones((0, E)), V=np.ones((0, F))),
    lambda Q, K, V: np.zeros((3, F)),
)

# 79. Cascade 5 (hand-written 1-pass) with an empty head dimension: every score is an empty sum, absent
C5_SPEC = """
input Q[e, p], K[e, m], V[f, m]
param M0 = 3
rank M = M1 * M0
output AV
BK[e, m1, m0]   = K[e, m1 * M0 + m0]
BV[f, m1, m0]   = V[f, m1 * M0 + m0]
RM[0, p]        = -inf
RD[0, p]        = 0
RNV[f, 0, p]    = 0
BQK[m1, m0, p]  = Q[e, p] * BK[e, m1, m0]
LM[m1, p]       = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]   = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]  = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]      = SLN[m1, m0, p]
SLNV[f, m1, p]  = SLN[m1, m0, p] * BV[f, m1, m0]
PRM[m1, p]      = exp(RM[m1, p] - RM[m1 + 1, p])
SPD[m1, p]      = RD[m1, p] * PRM[m1, p]
RD[m1 + 1, p]   = SLD[m1, p] + SPD[m1, p]
SPNV[f, m1, p]  = RNV[f, m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = SLNV[f, m1, p] + SPNV[f, m1, p]
AV[f, p]        = RNV[f, M1, p] / RD[M1, p]
"""
case(
    "cascade5_empty_head_dim",
    C5_SPEC,
    dict(Q=np.ones((0, 4)), K=np.ones((0, 7)), V=rn(2, 7)),
    lambda Q, K, V: np.zeros((2, 4)),
)
