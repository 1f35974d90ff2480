"""A second reviewer's conformance cases (session 8), written from docs/language.md alone: 107 specs in the
format of ``../shared/conformance/cases.py`` (name, spec, inputs, oracle, params, passes), every oracle
hand-written NumPy. Natural 3-pass attention through the rewrite (masks of every kind, paged KV caches,
sinks, softcap, LSE), 16 filters on one spec (tile skipping), hand-written 1-pass and 2-pass cascades,
split-K, recurrences with absent states, the function registry, gathers, ``??`` chains, sizes 0 and 1.
``tests/test_conformance_more.py`` runs them on every backend with the first reviewer's.
"""

# ruff: noqa (spec strings and oracles are data: as the reviewer wrote them)
import numpy as np

rng = np.random.default_rng(20240808)


def rn(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def ri(lo, hi, *shape):
    return rng.integers(lo, hi, size=shape).astype(np.int64)


def softmax_masked(s, mask=None, axis=-1):
    """softmax over `axis`; entries where mask is False are excluded; rows with nothing give all-zero weights."""
    s = np.asarray(s, dtype=float)
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    ss = np.where(mask, s, -np.inf)
    mx = np.max(ss, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.where(mask, np.exp(ss - mx), 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def lse_masked(s, mask, axis=-1):
    """log-sum-exp over axis of the kept entries; 0 where nothing is kept (an absent output)."""
    ss = np.where(mask, s, -np.inf)
    mx = np.max(ss, axis=axis, keepdims=True)
    ok = np.isfinite(mx)
    mx0 = np.where(ok, mx, 0.0)
    den = np.where(mask, np.exp(ss - mx0), 0.0).sum(axis=axis, keepdims=True)
    out = np.where(ok, mx0 + np.log(np.where(den > 0, den, 1.0)), 0.0)
    return np.squeeze(out, axis=axis)


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

# ---------------------------------------------------------------------------------------------------------
# 1. natural 3-pass causal, bottom-right aligned with P > M: the first P - M rows are fully masked (0)
P1, M1_ = 9, 6


def c1(Q, K, V):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    p = np.arange(P1)[:, None]
    m = np.arange(M1_)[None, :]
    mask = m <= p - P1 + M1_
    return np.einsum("bhpm,bhmf->bhpf", softmax_masked(s, mask), V)


case(
    "s8_causal_bottom_right_fully_masked_rows",
    """
# bottom-right causal: query p sees keys m <= p - P + M; rows p < P - M see nothing and give 0
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m + P <= p + M
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = EX[b, h, m, p]
A[b, h, m, p]  = EX[b, h, m, p] / D[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 2, P1, E), K=rn(1, 2, M1_, E), V=rn(1, 2, M1_, F)),
    c1,
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------
# 2. symmetric window with abs() in the filter, param overridden


def c2(Q, K, V, W=3):
    s = Q @ K.T
    p = np.arange(Q.shape[0])[:, None]
    m = np.arange(K.shape[0])[None, :]
    return softmax_masked(s, np.abs(p - m) < W) @ V


case(
    "s8_abs_window_param_override",
    """
# non-causal symmetric window |p - m| < W; W is overridden to 3 at compile time
input  Q[p, e], K[m, e], V[m, f]
param  W = 1
output O
S[m, p]  = Q[p, e] * K[m, e]  where abs(p - m) < W
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(8, E), K=rn(10, E), V=rn(10, F)),
    c2,
    params={"W": 3},
    passes={"m": 3},
)

# ---------------------------------------------------------------------------------------------------------
# 3. block-diagonal mask through floor division, ragged last block


def c3(Q, K, V):
    p = np.arange(Q.shape[0])[:, None]
    m = np.arange(K.shape[0])[None, :]
    return softmax_masked(Q @ K.T * 0.5, (p // 3) == (m // 3)) @ V


case(
    "s8_block_diagonal_floordiv",
    """
# block-diagonal attention, blocks of BS = 3 positions; P = 7, M = 8: query 6 shares block 2 with keys 6, 7
input  Q[p, e], K[m, e], V[m, f]
param  BS = 3
output O
S[m, p]  = Q[p, e] * K[m, e] * 0.5  where p // BS == m // BS
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
NV[p, f] = SN[m, p] * V[m, f]
O[p, f]  = NV[p, f] / SD[p]
""",
    dict(Q=rn(7, E), K=rn(8, E), V=rn(8, F)),
    c3,
    passes={"m": 2},
)

# ---------------------------------------------------------------------------------------------------------
# 4. strided mask with % (negative operand impossible: guarded by m <= p)


def c4(Q, K, V):
    p = np.arange(Q.shape[0])[:, None]
    m = np.arange(K.shape[0])[None, :]
    mask = ((p - m) % 3 == 0) & (m <= p)
    return softmax_masked(Q @ K.T, mask) @ V


case(
    "s8_strided_mod_causal",
    """
# strided causal attention: query p sees keys m <= p with p - m a multiple of 3
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]  where (p - m) % 3 == 0 and m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(9, E), K=rn(9, E), V=rn(9, F)),
    c4,
)

# ---------------------------------------------------------------------------------------------------------
# 5. document mask where some queries' documents have no earlier key: those rows are 0
dq5 = np.array([0, 0, 1, 3, 1, 2], dtype=np.int64)
dk5 = np.array([0, 1, 1, 1, 2, 2, 2, 0], dtype=np.int64)


def c5(Q, K, V, dq, dk):
    p = np.arange(len(dq))[:, None]
    m = np.arange(len(dk))[None, :]
    mask = (dq[:, None] == dk[None, :]) & (m <= p)
    return softmax_masked(Q @ K.T, mask) @ V


case(
    "s8_doc_mask_missing_docs",
    """
# packed documents with ids that have no key (doc 3) or no earlier key (doc 2 at p = 5? no: key 4 <= 5)
input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where dq[p] == dk[m] and m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(6, E), K=rn(8, E), V=rn(8, F), dq=dq5, dk=dk5),
    c5,
)

# ---------------------------------------------------------------------------------------------------------
# 6. written 1-pass GQA causal with ragged tiles; tile size param overridden


def gqa_causal_ref(Q, K, V, R):
    Kr = np.repeat(K, R, axis=1)
    Vr = np.repeat(V, R, axis=1)
    s = np.einsum("bhpe,bhme->bhpm", Q, Kr) / np.sqrt(Q.shape[-1])
    P, M = Q.shape[2], K.shape[2]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    return np.einsum("bhpm,bhmf->bhpf", softmax_masked(s, mask), Vr)


case(
    "s8_gqa_causal_1pass_written_ragged",
    """
# 1-pass (Cascade 5) causal GQA; M = 8 in tiles of M0 (3 in the spec, 5 by override): ragged last tile
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
param  M0 = 3
rank   M = M1 * M0
output O
BQK[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h // R, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p
LM[b, h, m1, p]      = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, 0, p]       = -inf
RD[b, h, 0, p]       = 0
RN[b, h, 0, p, f]    = 0
RM[b, h, m1 + 1, p]  = max(RM[b, h, m1, p], LM[b, h, m1, p] ?? -inf)
SLN[b, h, m1, m0, p] = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
PRM[b, h, m1, p]     = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]     = SLN[b, h, m1, m0, p] :: +(m0)
RD[b, h, m1 + 1, p]  = RD[b, h, m1, p] * PRM[b, h, m1, p] + (SLD[b, h, m1, p] ?? 0)
RN[b, h, m1 + 1, p, f] = RN[b, h, m1, p, f] * PRM[b, h, m1, p] + (SLNV[b, h, m1, p, f] ?? 0)
SLNV[b, h, m1, p, f] = SLN[b, h, m1, m0, p] * V[b, h // R, m1 * M0 + m0, f]
O[b, h, p, f]        = RN[b, h, M1, p, f] / RD[b, h, M1, p]
""",
    dict(Q=rn(1, 4, 8, E), K=rn(1, 2, 8, E), V=rn(1, 2, 8, F)),
    lambda Q, K, V: gqa_causal_ref(Q, K, V, 2),
    params={"M0": 5},
)

# ---------------------------------------------------------------------------------------------------------
# 7. 1-pass sliding window with guarded running state (tiles before the window are empty for late rows)


def c7(Q, K, V, W=3):
    P, M = Q.shape[0], K.shape[0]
    p = np.arange(P)[:, None]
    m = np.arange(M)[None, :]
    return softmax_masked(Q @ K.T, (p - W < m) & (m <= p)) @ V


case(
    "s8_window_1pass_guarded",
    """
# 1-pass sliding window, W = 3, tiles of M0 = 2, M = 9: early tiles are empty for late rows
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
param  M0 = 2
rank   M = M1 * M0
output O
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where p - W < m1 * M0 + m0 <= p
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[0, p]       = -inf
RD[0, p]       = 0
RN[0, p, f]    = 0
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p]) ?? RM[m1, p]
PRM[m1, p]     = exp(RM[m1, p] - max(RM[m1, p], LM[m1, p])) ?? 1
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
SLNV[m1, p, f] = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RD[m1 + 1, p]  = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RN[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + RN[m1, p, f] * PRM[m1, p]
O[p, f]        = RN[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(9, E), K=rn(9, E), V=rn(9, F)),
    c7,
)

# ---------------------------------------------------------------------------------------------------------
# 8. ALiBi + softcap (override) + causal, outputs in unusual rank orders plus LSE


def c8(Q, K, V, slope, C=5.0):
    H, P, _ = Q.shape
    M = K.shape[1]
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(Q.shape[-1])
    s = C * np.tanh(s / C)
    p = np.arange(P)[None, :, None]
    m = np.arange(M)[None, None, :]
    s = s + slope[:, None, None] * (m - p)
    mask = np.broadcast_to(m <= p, s.shape)
    O = np.einsum("hpm,hmf->hpf", softmax_masked(s, mask), V)
    return O.transpose(1, 0, 2), lse_masked(s, mask, -1)


case(
    "s8_alibi_softcap_lse_orders",
    """
# ALiBi and soft-capping with the cap overridden to 5; O returned as [p, h, f], LSE as [h, p]
input  Q[h, p, e], K[h, m, e], V[h, m, f], slope[h]
param  C = 30.0
output O, LSE
QK[h, m, p] = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p
S[h, m, p]  = C * tanh(QK[h, m, p] / C) + slope[h] * (m - p)
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
D[h, p]     = EX[h, m, p]
O[p, h, f]  = EX[h, m, p] * V[h, m, f] / D[h, p]
LSE[h, p]   = GM[h, p] + log(D[h, p])
""",
    dict(Q=rn(2, 6, E, scale=3), K=rn(2, 6, E, scale=3), V=rn(2, 6, F), slope=np.array([0.5, 0.125])),
    c8,
    params={"C": 5.0},
)

# ---------------------------------------------------------------------------------------------------------
# 9. sigmoid attention with a scalar bias (a 0-d input)


def c9(Q, K, V, bias):
    s = Q @ K.T / np.sqrt(Q.shape[1]) + bias
    w = 1 / (1 + np.exp(-s))
    P, M = s.shape
    w = np.where(np.arange(M)[None, :] <= np.arange(P)[:, None], w, 0.0)
    return w @ V


case(
    "s8_sigmoid_scalar_bias",
    """
# sigmoid attention (no normalisation) with a scalar bias input, causal
input  Q[p, e], K[m, e], V[m, f], bias
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
O[p, f] = sigmoid(S[p, m] + bias) * V[m, f]  where m <= p
""",
    dict(Q=rn(5, E), K=rn(5, E), V=rn(5, F), bias=np.array(-1.25)),
    c9,
    passes={"m": 1},
)

# ---------------------------------------------------------------------------------------------------------
# 10. every documented function in values, some in filters and indices


def c10(X):
    n = len(X)
    sp = np.log1p(np.exp(X))
    elu = np.where(X > 0, X, np.expm1(X))
    vals = (
        np.exp2(X) + np.log2(1 + X * X) + sp - elu,
        np.tanh(X) * (1 / (1 + np.exp(-X))) + np.sqrt(np.abs(X)) * (1 / np.sqrt(2 + np.abs(X))),
        np.maximum(X, 0)
        + np.square(X)
        - np.clip(X, -0.5, 0.75)
        + np.maximum(X, -0.25) * np.minimum(X, 0.3)
        + np.log(np.abs(X) + 1)
        + np.exp(-np.abs(X)),
    )
    i = np.arange(n)
    keep = (np.clip(i, 1, 4) == i) & (np.maximum(i, 2) - np.minimum(i, 3) != 0)
    filt = np.where(keep, X, 0.0)
    idx = X[np.abs(i - 3)]
    return vals + (filt, idx)


case(
    "s8_function_zoo",
    """
# every registry function once; clamp/max/min/abs also in a filter and abs in an index
input  X[i]
output A, B, C, FILT, IDX
A[i]    = exp2(X[i]) + log2(1 + square(X[i])) + softplus(X[i]) - elu(X[i])
B[i]    = tanh(X[i]) * sigmoid(X[i]) + sqrt(abs(X[i])) * rsqrt(2 + abs(X[i]))
C[i]    = relu(X[i]) + square(X[i]) - clamp(X[i], -0.5, 0.75) + max(X[i], -0.25) * min(X[i], 0.3) \\
          + log(abs(X[i]) + 1) + exp(-abs(X[i]))
FILT[i] = X[i]  where clamp(i, 1, 4) == i and max(i, 2) - min(i, 3) != 0
IDX[i]  = X[abs(i - 3)]
""",
    dict(X=rn(7, scale=1.5)),
    c10,
)

# ---------------------------------------------------------------------------------------------------------
# 11. extreme logits: +-1e4 scale, exact in float32; ties split evenly


def c11(X, V):
    s = X.astype(float) * 1e4  # X[m, p]
    P = X.shape[1]
    M = X.shape[0]
    mask = np.arange(M)[:, None] <= np.arange(P)[None, :]
    w = softmax_masked(s.T, mask.T)  # [p, m]
    return w @ V


case(
    "s8_extreme_logits_1e4",
    """
# scores of magnitude up to 3e4 (integers times SC = 1e4), causal; exp(-1e4) underflows to 0 exactly
input  X[m, p], V[m, f]
param  SC = 1e4
output O
S[m, p]  = X[m, p] * SC  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] / D[p] * V[m, f]
""",
    dict(X=ri(-3, 4, 7, 7).astype(float), V=rn(7, F)),
    c11,
    passes={"m": 3},
)


def c11b(Q, K, V):
    s = Q @ K.T * 0.25 - 1e4
    return softmax_masked(s) @ V


case(
    "s8_extreme_negative_logits",
    """
# every score near -1e4: a running max stored as -1e30 floor must not matter
input  Q[p, e], K[m, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] * 0.25 - 10000
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=ri(-4, 5, 5, E) / 4.0, K=ri(-4, 5, 11, E) / 4.0, V=rn(11, F)),
    c11b,
)

# ---------------------------------------------------------------------------------------------------------
# 12. min/max reductions over two ranks and a filter that empties some outputs


def c12(X):
    I, J, K = X.shape
    j = np.arange(J)[:, None]
    k = np.arange(K)[None, :]
    keep = j != k
    MN = np.array([X[i][keep].min() for i in range(I)])
    keep2 = (j + k) < J
    MX = np.zeros((I, K))
    for i in range(I):
        for kk in range(K):
            vals = [X[i, jj, kk] for jj in range(J) if jj + kk < J]
            MX[i, kk] = max(vals) if vals else 0.0
    return MN, MX


case(
    "s8_min_max_multi_rank_filters",
    """
# min over (j, k) off the diagonal; max over j with j + k < J (k >= J leaves nothing: 0)
input  X[i, j, k]
output MN, MX
MN[i]    = X[i, j, k] :: min(j, k)  where j != k
MX[i, k] = X[i, j, k] :: max(j)     where j + k < J
""",
    dict(X=rn(2, 3, 5)),
    c12,
)

# ---------------------------------------------------------------------------------------------------------
# 13. reduction order: unnamed ranks summed first, then the named max


def c13(X, W):
    return np.einsum("ijk,kl->ij", X, W).max(axis=1)


case(
    "s8_sum_then_named_max",
    """
# k and l are summed first, then the max over j
input  X[i, j, k], W[k, l]
output Y
Y[i] = X[i, j, k] * W[k, l] :: max(j)
""",
    dict(X=rn(3, 4, 2), W=rn(2, 3)),
    c13,
)

# ---------------------------------------------------------------------------------------------------------
# 14. an iterative tensor as an output (all T + 1 states), iterative index not first, constant-index reads


def c14(X0, A, B):
    T, I = B.shape
    R = np.zeros((I, T + 1))
    R[:, 0] = X0
    for t in range(T):
        R[:, t + 1] = R[:, t] * A[t] + B[t]
    return R, R[:, T], R[:, 2] - R[:, 1]


case(
    "s8_iterative_output_all_states",
    """
# R is an output: all T + 1 states; R[i, T] the final; R[i, 2] a constant index read outside the recurrence
input  X0[i], A[t], B[t, i]
output R, FIN, STEP2
R[i, 0]     = X0[i]
R[i, t + 1] = R[i, t] * A[t] + B[t, i]
FIN[i]      = R[i, T]
STEP2[i]    = R[i, 2] - R[i, 1]
""",
    dict(X0=rn(3), A=rn(5) * 0.5, B=rn(5, 3)),
    c14,
)

# ---------------------------------------------------------------------------------------------------------
# 15. scalar recurrence, number of steps a param overridden


def c15(a, N=6):
    r = [float(a)]
    for _ in range(N):
        x = r[-1]
        r.append(0.5 * (x + a / x))
    return np.array(r[-1]), np.array(r)


case(
    "s8_newton_sqrt_param_steps",
    """
# Newton's iteration for sqrt(a): N steps, N = 3 in the spec, 6 by override; all states also returned
input  a
param  N = 3
output F, R
R[0]     = a
R[n + 1] = 0.5 * (R[n] + a / R[n])
F        = R[N]
""",
    dict(a=np.array(7.0)),
    c15,
    params={"N": 6},
)

# ---------------------------------------------------------------------------------------------------------
# 16. gated EMA: an int gate filters a step's input; ?? keeps the state unchanged


def c16(X, g):
    T, I = X.shape
    r = np.zeros(I)
    out = np.zeros((T, I))
    for t in range(T):
        if g[t] == 1:
            r = r * 0.5 + X[t]
        out[t] = r
    return out


case(
    "s8_gated_ema_int_filter",
    """
# the state is decayed and updated only at steps with g[t] == 1; otherwise unchanged
input  X[t, i], g[t] : int
param  D = 0.5
output O
U[t, i]     = X[t, i]  where g[t] == 1
R[0, i]     = 0
R[t + 1, i] = R[t, i] * D + U[t, i] ?? R[t, i]
O[t, i]     = R[t + 1, i]
""",
    dict(X=rn(7, 3), g=np.array([1, 0, 0, 1, 1, 0, 1], dtype=np.int64)),
    c16,
)

# ---------------------------------------------------------------------------------------------------------
# 17. rank S = T: a strictly upper-triangular quadratic form


def c17(X, A):
    T = len(X)
    return np.array(sum(X[s] * A[s, t] * X[t] for s in range(T) for t in range(T) if s < t))


case(
    "s8_rank_alias_quadratic_form",
    """
# rank S = T; A is declared with s and t, so both sizes must agree with X
input  X[t], A[s, t]
rank   S = T
output Y
Y = X[s] * A[s, t] * X[t]  where s < t
""",
    dict(X=rn(5), A=rn(5, 5)),
    c17,
)

# ---------------------------------------------------------------------------------------------------------
# 18. split-K decode, outer part M1 as the param, overridden so that a chunk is empty; GQA


def c18(q, K, V):
    # q[h, e], K[g, m, e]
    H = q.shape[0]
    G = K.shape[0]
    R = H // G
    out = []
    for h in range(H):
        s = K[h // R] @ q[h] / np.sqrt(q.shape[1])
        w = np.exp(s - s.max())
        out.append(w @ V[h // R] / w.sum())
    return np.array(out)


case(
    "s8_splitk_gqa_empty_chunk",
    """
# split-K decode: M1 chunks (param, overridden to 5) of M0 = ceil(7 / 5) = 2 keys: chunk 4 is empty
input  q[h, e], K[g, m, e], V[g, m, f]
param  M1 = 2
param  R = 2
rank   M = M1 * M0
output O
S[h, m1, m0]  = q[h, e] * K[h // R, m1 * M0 + m0, e] * rsqrt(E)
LM[h, m1]     = S[h, m1, m0] :: max(m0)
LX[h, m1, m0] = exp(S[h, m1, m0] - LM[h, m1])
LD[h, m1]     = LX[h, m1, m0]
LN[h, m1, f]  = LX[h, m1, m0] * V[h // R, m1 * M0 + m0, f]
GM[h]         = LM[h, m1] :: max(m1)
CF[h, m1]     = exp(LM[h, m1] - GM[h])
GD[h]         = LD[h, m1] * CF[h, m1]
GN[h, f]      = LN[h, m1, f] * CF[h, m1]
O[h, f]       = GN[h, f] / GD[h]
""",
    dict(q=rn(4, E), K=rn(2, 7, E), V=rn(2, 7, F)),
    c18,
    params={"M1": 5},
    passes={"m": 1, "m1": 2, "m0": 2},
)

# ---------------------------------------------------------------------------------------------------------
# 19. two partitions (queries and keys), block-causal, both ragged; output indexed by the tiles


def c19(Q, K, V, P0=2, M0=3):
    P, M = Q.shape[0], K.shape[0]
    P1 = -(-P // P0)
    out = np.zeros((P1, P0, V.shape[1]))
    for p1 in range(P1):
        for p0 in range(P0):
            p = p1 * P0 + p0
            if p >= P:
                continue
            ms = [m for m in range(M) if (m // M0) * M0 <= p1 * P0 + P0 - 1]
            s = np.array([Q[p] @ K[m] for m in ms])
            w = np.exp(s - s.max())
            out[p1, p0] = w @ V[ms] / w.sum()
    return out


case(
    "s8_two_partitions_block_causal",
    """
# queries in tiles of P0 = 2 (P = 7: the last tile's second row is absent, returned as 0), keys in tiles of
# M0 = 3 (M = 8); a query tile sees every key tile that starts before the query tile ends
input  Q[p, e], K[m, e], V[m, f]
param  P0 = 2
param  M0 = 3
rank   P = P1 * P0
rank   M = M1 * M0
output O
S[p1, p0, m1, m0] = Q[p1 * P0 + p0, e] * K[m1 * M0 + m0, e]  where m1 * M0 <= p1 * P0 + P0 - 1
GM[p1, p0]        = S[p1, p0, m1, m0] :: max(m1, m0)
EX[p1, p0, m1, m0] = exp(S[p1, p0, m1, m0] - GM[p1, p0])
D[p1, p0]         = EX[p1, p0, m1, m0]
O[p1, p0, f]      = EX[p1, p0, m1, m0] * V[m1 * M0 + m0, f] / D[p1, p0]
""",
    dict(Q=rn(7, E), K=rn(8, E), V=rn(8, F)),
    c19,
)

# ---------------------------------------------------------------------------------------------------------
# 20. gathers: nested, scaled, offset; out-of-range values absent


def c20(X, perm):
    I = len(X)
    J = len(perm)

    def rd(k):
        return X[k] if 0 <= k < I else 0.0

    Y = np.zeros(J)
    for j in range(J):
        a = perm[j]
        if 0 <= a < J:
            Y[j] = rd(perm[a] + 1)
    Z = np.array([rd(2 * perm[j] - 1) for j in range(J)])
    return Y, Z


case(
    "s8_nested_scaled_gathers",
    """
# X[perm[perm[j]] + 1]: a gather inside a gather, plus an offset; X[2 * perm[j] - 1]: a scaled gather
input  X[i], perm[j] : int
output Y, Z
Y[j] = X[perm[perm[j]] + 1]
Z[j] = X[2 * perm[j] - 1]
""",
    dict(X=rn(9), perm=np.array([3, 0, 5, 1, 7, 2], dtype=np.int64)),
    c20,
)

# ---------------------------------------------------------------------------------------------------------
# 21. paged-KV decode with per-batch lengths (length 0: fully masked row), M set by a param


def c21(q, KC, VC, table, S=2, M=6, **kw):
    lens = kw["len"]
    B = q.shape[0]
    out = np.zeros((B, VC.shape[2]))
    for b in range(B):
        L = int(lens[b])
        if L == 0:
            continue
        ks = np.array([KC[table[b, m // S], m % S] for m in range(min(L, M))])
        vs = np.array([VC[table[b, m // S], m % S] for m in range(min(L, M))])
        s = ks @ q[b]
        w = np.exp(s - s.max())
        out[b] = w @ vs / w.sum()
    return out


case(
    "s8_paged_kv_lengths",
    """
# decode against a paged cache: key m of batch b is slot m % S of page table[b, m // S]; keys m >= len[b] masked
input  q[b, e], KC[n, s, e], VC[n, s, f], table[b, j] : int, len[b] : int
param  M = 6
output O
SC[b, m] = q[b, e] * KC[table[b, m // S], m % S, e]  where m < len[b]
GM[b]    = SC[b, m] :: max(m)
EX[b, m] = exp(SC[b, m] - GM[b])
D[b]     = EX[b, m]
O[b, f]  = EX[b, m] * VC[table[b, m // S], m % S, f] / D[b]
""",
    dict(
        q=rn(3, E),
        KC=rn(5, 2, E),
        VC=rn(5, 2, F),
        table=np.array([[4, 0, 2], [1, 3, 0], [2, 2, 2]], dtype=np.int64),
        len=np.array([5, 0, 6], dtype=np.int64),
    ),
    c21,
)

# ---------------------------------------------------------------------------------------------------------
# 22. 1-D neighborhood attention with a clamped (shifted, not clipped) window


def c22(Q, K, V, W=3):
    P = Q.shape[0]
    M = K.shape[0]
    out = np.zeros((P, V.shape[1]))
    for p in range(P):
        st = min(max(p - W // 2, 0), M - W)
        idx = list(range(st, st + W))
        s = K[idx] @ Q[p]
        w = np.exp(s - s.max())
        out[p] = w @ V[idx] / w.sum()
    return out


case(
    "s8_natten_1d_clamp_window",
    """
# neighborhood attention: a window of W keys centred on p, shifted (clamped) at the borders
input  Q[p, e], K[m, e], V[m, f]
param  W = 3
output O
S[p, w]  = Q[p, e] * K[clamp(p - W // 2, 0, M - W) + w, e]
GM[p]    = S[p, w] :: max(w)
EX[p, w] = exp(S[p, w] - GM[p])
D[p]     = EX[p, w]
O[p, f]  = EX[p, w] * V[clamp(p - W // 2, 0, M - W) + w, f] / D[p]
""",
    dict(Q=rn(7, E), K=rn(7, E), V=rn(7, F)),
    c22,
)

# ---------------------------------------------------------------------------------------------------------
# 23. relative-position bias table per head, causal


def c23(Q, K, V, bias):
    H, P, _ = Q.shape
    M = K.shape[1]
    s = np.einsum("hpe,hme->hpm", Q, K)
    p = np.arange(P)[:, None]
    m = np.arange(M)[None, :]
    s = s + bias[:, p - m + M - 1]
    mask = np.broadcast_to(m <= p, s.shape)
    return np.einsum("hpm,hmf->hpf", softmax_masked(s, mask), V)


case(
    "s8_relpos_bias_per_head",
    """
# per-head relative position bias bias[h, p - m + M - 1], causal
input  Q[h, p, e], K[h, m, e], V[h, m, f], bias[h, r]
output O
QK[h, m, p] = Q[h, p, e] * K[h, m, e]  where m <= p
S[h, m, p]  = QK[h, m, p] + bias[h, p - m + M - 1]
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
D[h, p]     = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h, m, f] / D[h, p]
""",
    dict(Q=rn(2, 5, E), K=rn(2, 5, E), V=rn(2, 5, F), bias=rn(2, 9)),
    c23,
)

# ---------------------------------------------------------------------------------------------------------
# 24. index arithmetic with sizes, negative floor/mod, unary minus


def c24(X):
    I = len(X)

    def rd(k):
        return X[k] if 0 <= k < I else 0.0

    REV = np.array([rd(I - 1 - i) for i in range(I)])
    CIRC = np.array([[rd((i + j) % I) for j in range(3)] for i in range(I)])
    FD = np.array([rd((i - 5) // 3) for i in range(I)])
    MD = np.array([rd((2 - i) % 4) for i in range(I)])
    NEG = np.array([rd(-i + 3) for i in range(I)])
    return REV, CIRC, FD, MD, NEG


case(
    "s8_index_sizes_floor_mod_negative",
    """
# reversed read X[I - 1 - i], circulant X[(i + j) % I], floor/mod of negative values, unary minus
input  X[i]
param  J = 3
output REV, CIRC, FD, MD, NEG
REV[i]     = X[I - 1 - i]
CIRC[i, j] = X[(i + j) % I]
FD[i]      = X[(i - 5) // 3]
MD[i]      = X[(2 - i) % 4]
NEG[i]     = X[-i + 3]
""",
    dict(X=rn(6)),
    c24,
)

# ---------------------------------------------------------------------------------------------------------
# 25. token shift with ?? default and shifted differences absent at the end


def c25(X, mix):
    T = X.shape[0]
    XS = np.vstack([np.zeros((1, X.shape[1])), X[:-1]])
    Y = mix * X + (1 - mix) * XS
    D = np.vstack([X[1:] - X[:-1], np.zeros((1, X.shape[1]))])
    return Y, D


case(
    "s8_token_shift_and_diff",
    """
# token shift: X[t - 1] ?? 0 mixed with X[t]; DIFF is absent at the last step (returned as 0)
input  X[t, e], mix[e]
output Y, DIFF
Y[t, e]    = mix[e] * X[t, e] + (1 - mix[e]) * (X[t - 1, e] ?? 0)
DIFF[t, e] = X[t + 1, e] - X[t, e]
""",
    dict(X=rn(6, E), mix=rng.uniform(0, 1, E)),
    c25,
)

# ---------------------------------------------------------------------------------------------------------
# 26. ?? chains and union max


def c26(A):
    I = len(A)
    out = np.zeros(I)
    for i in range(I):
        nb = A[i + 1] if i + 1 < I else (A[i - 1] if i >= 1 else 0.0)
        out[i] = max(nb, A[i])
    U = np.zeros(I)
    for i in range(I):
        a = A[i + 2] if i + 2 < I else None
        b = A[i]
        U[i] = b if a is None else max(a, b)
    return out, U


case(
    "s8_default_chains_union",
    """
# (A[i + 1] ?? A[i - 1]) ?? 0, and the union max of A[i + 2] and A[i]
input  A[i]
output Y, U
Y[i] = max(A[i + 1] ?? A[i - 1] ?? 0, A[i])
U[i] = max(A[i + 2] ?? A[i], A[i] ?? A[i + 2])
""",
    dict(A=rn(5)),
    c26,
)

# ---------------------------------------------------------------------------------------------------------
# 27. scalars: scalar input, scalar outputs, scalar used in a tensor statement


def c27(X, s):
    TOT = (X * s).sum()
    return np.array(TOT), np.array(X.max()), X / TOT


case(
    "s8_scalar_in_and_out",
    """
# a scalar input s, scalar outputs TOT and MX, and NORM reads the scalar TOT
input  X[i], s
output TOT, MX, NORM
TOT     = X[i] * s
MX      = X[i] :: max(i)
NORM[i] = X[i] / TOT
""",
    dict(X=rng.uniform(0.5, 2.0, 5), s=np.array(2.5)),
    c27,
)

# ---------------------------------------------------------------------------------------------------------
# 28. all sizes 1, natural 3-pass causal (output is V)

case(
    "s8_all_sizes_one",
    """
# every rank of size 1: softmax over one key is 1, so O = V
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] / D[b, h, p] * V[b, h, m, f]
""",
    dict(Q=rn(1, 1, 1, 1), K=rn(1, 1, 1, 1), V=rn(1, 1, 1, 1)),
    lambda Q, K, V: V.copy(),
)

# ---------------------------------------------------------------------------------------------------------
# 29/30. empty ranks

ATT3 = """
# plain 3-pass softmax attention
input  Q[p, e], K[m, e], V[m, f]
output O, L
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
O[p, f]  = A[m, p] * V[m, f]
L[p]     = GM[p] + log(D[p])
"""

case(
    "s8_empty_keys",
    ATT3,
    dict(Q=rn(3, E), K=rn(0, E), V=rn(0, F)),
    lambda Q, K, V: (np.zeros((3, F)), np.zeros(3)),
)
case(
    "s8_empty_queries",
    ATT3,
    dict(Q=rn(0, E), K=rn(4, E), V=rn(4, F)),
    lambda Q, K, V: (np.zeros((0, F)), np.zeros(0)),
)

# ---------------------------------------------------------------------------------------------------------
# 31. float param in a filter, with a chained comparison, overridden


def c31(Q, K, V, T=2.5):
    P, M = Q.shape[0], K.shape[0]
    p = np.arange(P)[:, None]
    m = np.arange(M)[None, :]
    return softmax_masked(Q @ K.T, (0 <= p - m) & (p - m < T)) @ V


case(
    "s8_float_param_filter",
    """
# 0 <= p - m < T with a float T (1.0 in the spec, 2.5 by override: window of 3)
input  Q[p, e], K[m, e], V[m, f]
param  T = 1.0
output O
S[m, p]  = Q[p, e] * K[m, e]  where 0 <= p - m < T
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, E), K=rn(6, E), V=rn(6, F)),
    c31,
    params={"T": 2.5},
)

# ---------------------------------------------------------------------------------------------------------
# 32. layer norm: sizes as values, float param epsilon


def c32(X, g, b, EPS=1e-5):
    mu = X.mean(1, keepdims=True)
    var = ((X - mu) ** 2).mean(1, keepdims=True)
    return (X - mu) / np.sqrt(var + EPS) * g + b


case(
    "s8_layernorm_sizes_as_values",
    """
# layer norm over j: mean and variance with the size J as a value
input  X[i, j], g[j], b[j]
param  EPS = 1e-5
output Y
MEAN[i] = X[i, j] / J
VAR[i]  = square(X[i, j] - MEAN[i]) / J
Y[i, j] = (X[i, j] - MEAN[i]) * rsqrt(VAR[i] + EPS) * g[j] + b[j]
""",
    dict(X=rn(3, 6), g=rn(6), b=rn(6)),
    c32,
    passes={"j": 3},
)

# ---------------------------------------------------------------------------------------------------------
# 33. softmax over two key ranks (two-rank max)


def c33(Q, K1, K2, V1, V2):
    s = np.einsum("pe,me,ne->pmn", Q, K1, K2)
    P = s.shape[0]
    flat = s.reshape(P, -1)
    w = softmax_masked(flat).reshape(s.shape)
    return np.einsum("pmn,mf,nf->pf", w, V1, V2)


case(
    "s8_two_rank_softmax",
    """
# tensor attention: one softmax over the pair (m, n)
input  Q[p, e], K1[m, e], K2[n, e], V1[m, f], V2[n, f]
output O
S[p, m, n]  = Q[p, e] * K1[m, e] * K2[n, e]
GM[p]       = S[p, m, n] :: max(m, n)
EX[p, m, n] = exp(S[p, m, n] - GM[p])
D[p]        = EX[p, m, n]
O[p, f]     = EX[p, m, n] * V1[m, f] * V2[n, f] / D[p]
""",
    dict(Q=rn(3, E), K1=rn(4, E), K2=rn(3, E), V1=rn(4, F), V2=rn(3, F)),
    c33,
)

# ---------------------------------------------------------------------------------------------------------
# 34. lexical forms: continuation, comments, number forms, statement order, unary plus


def c34(X):
    A = X * 0.5 + 2.0 - 0.1
    B = A * 2 + 1
    return B, np.array(A.sum() + 1.0)


case(
    "s8_lexical_order_and_numbers",
    """
# B is defined before A; numbers .5, 2., 1e-1; a backslash and an open bracket continue lines
input  X[i]
output B, S
B[i] = A[i] * 2 \\
       + 1
S    = (A[i]
        ) + +1.0 / I
A[i] = X[i] * .5 + 2. - 1e-1   # trailing comment
""",
    dict(X=rn(4)),
    c34,
)

# ---------------------------------------------------------------------------------------------------------
# 35. the TileFlow 2-pass cascade, written, with a ragged tile and a batch rank


def c35(Q, K, V):
    s = np.einsum("bpe,bme->bpm", Q, K)
    return np.einsum("bpm,bmf->bpf", softmax_masked(s), V)


case(
    "s8_two_pass_written_ragged",
    """
# the reference's 2-pass cascade, M = 10 in tiles of M0 = 4
input  Q[b, p, e], K[b, m, e], V[b, m, f]
param  M0 = 4
rank   M = M1 * M0
output AV
BQK[b, m1, m0, p] = Q[b, p, e] * K[b, m1 * M0 + m0, e]
LM[b, m1, p]      = BQK[b, m1, m0, p] :: max(m0)
SLN[b, m1, m0, p] = exp(BQK[b, m1, m0, p] - LM[b, m1, p])
SLD[b, m1, p]     = SLN[b, m1, m0, p]
GM[b, p]          = LM[b, m1, p] :: max(m1)
CF[b, m1, p]      = exp(LM[b, m1, p] - GM[b, p])
SD[b, p]          = SLD[b, m1, p] * CF[b, m1, p]
SN[b, m1, m0, p]  = SLN[b, m1, m0, p] * CF[b, m1, p]
A[b, m1, m0, p]   = SN[b, m1, m0, p] / SD[b, p]
AV[b, p, f]       = A[b, m1, m0, p] * V[b, m1 * M0 + m0, f]
""",
    dict(Q=rn(2, 5, E), K=rn(2, 10, E), V=rn(2, 10, F)),
    c35,
    passes={"m": 2, "m1": 3, "m0": 3},
)

# ---------------------------------------------------------------------------------------------------------
# 36. LSE only, strict causal: row 0 is absent (0)


def c36(Q, K):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] < np.arange(P)[:, None]
    return lse_masked(Q @ K.T, mask)


case(
    "s8_lse_only_strict_causal",
    """
# only the log-sum-exp, keys strictly before the query: row 0 has none and gives 0
input  Q[p, e], K[m, e]
output L
S[m, p]  = Q[p, e] * K[m, e]  where m < p
GM[p]    = S[m, p] :: max(m)
D[p]     = exp(S[m, p] - GM[p])
L[p]     = GM[p] + log(D[p])
""",
    dict(Q=rn(6, E, scale=2), K=rn(6, E, scale=2)),
    c36,
    passes={"m": 2},
)

# ---------------------------------------------------------------------------------------------------------
# 37. attention weights as an output in transposed order, plus the output


def c37(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + 1
    A = softmax_masked(Q @ K.T, mask)
    return A, A @ V


case(
    "s8_weights_output_transposed",
    """
# returns the weights W[p, m] (computed as A[m, p]) and O; keys up to p + 1
input  Q[p, e], K[m, e], V[m, f]
output W, O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p + 1
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
W[p, m]  = A[m, p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=rn(5, E), K=rn(6, E), V=rn(6, F)),
    c37,
)

# ---------------------------------------------------------------------------------------------------------
# 38. differential attention, lambda param overridden


def c38(Q1, K1, Q2, K2, V, LAM=0.8):
    P, M = Q1.shape[0], K1.shape[0]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    return softmax_masked(Q1 @ K1.T, mask) @ V - LAM * (softmax_masked(Q2 @ K2.T, mask) @ V)


case(
    "s8_differential_lambda_override",
    """
# two causal softmaxes subtracted, O = A1 V - LAM * A2 V; LAM = 0.3 in the spec, 0.8 by override
input  Q1[p, e], K1[m, e], Q2[p, e], K2[m, e], V[m, f]
param  LAM = 0.3
output O
S1[m, p]  = Q1[p, e] * K1[m, e]  where m <= p
S2[m, p]  = Q2[p, e] * K2[m, e]  where m <= p
G1[p]     = S1[m, p] :: max(m)
G2[p]     = S2[m, p] :: max(m)
E1[m, p]  = exp(S1[m, p] - G1[p])
E2[m, p]  = exp(S2[m, p] - G2[p])
D1[p]     = E1[m, p]
D2[p]     = E2[m, p]
O1[p, f]  = E1[m, p] * V[m, f] / D1[p]
O2[p, f]  = E2[m, p] * V[m, f] / D2[p]
O[p, f]   = O1[p, f] - LAM * O2[p, f]
""",
    dict(Q1=rn(5, E), K1=rn(5, E), Q2=rn(5, E), K2=rn(5, E), V=rn(5, F)),
    c38,
    params={"LAM": 0.8},
)

# ---------------------------------------------------------------------------------------------------------
# 39. a permuted KV cache: gathers in values and a gather in the filter


def c39(Q, K, V, perm):
    P = Q.shape[0]
    Kp, Vp = K[perm], V[perm]
    mask = perm[None, :] <= np.arange(P)[:, None]
    return softmax_masked(Q @ Kp.T, mask) @ Vp


case(
    "s8_permuted_cache_gather_filter",
    """
# keys stored permuted: slot m holds position perm[m]; causal on positions
input  Q[p, e], K[n, e], V[n, f], perm[m] : int
output O
S[m, p]  = Q[p, e] * K[perm[m], e]  where perm[m] <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[perm[m], f] / D[p]
""",
    dict(Q=rn(6, E), K=rn(6, E), V=rn(6, F), perm=np.array([4, 1, 5, 0, 2, 3], dtype=np.int64)),
    c39,
)

# ---------------------------------------------------------------------------------------------------------
# 40. a rank that occurs only in the filter


def c40(X, doc):
    P = len(X)
    cnt = np.array([np.sum(doc == p) for p in range(P)])
    return X * cnt, np.where(cnt > 0, X, 0.0)


case(
    "s8_filter_only_rank",
    """
# n occurs only in the filter (sized by doc's declaration): Y[p] = X[p] times #{n : doc[n] == p}
input  X[p], doc[n] : int
output Y, ANY
Y[p]   = X[p]  where doc[n] == p
MXP[p] = X[p] :: max(n)  where doc[n] == p
ANY[p] = MXP[p]
""",
    dict(X=rn(5), doc=np.array([1, 3, 1, 1, 0, 3], dtype=np.int64)),
    c40,
)

# ---------------------------------------------------------------------------------------------------------
# 41. not / or / != / chained comparisons


def c41(X):
    P, M = X.shape
    out = np.zeros(P)
    for p in range(P):
        for m in range(M):
            c = (not (m == p or m == p + 1)) and m != 0
            c2 = 1 <= m < p <= 4
            if c or c2:
                out[p] += X[p, m]
    return out


case(
    "s8_logic_not_or_chain",
    """
# not (a or b) and c, or a three-way chain 1 <= m < p <= 4
input  X[p, m]
output Y
Y[p] = X[p, m]  where not (m == p or m == p + 1) and m != 0 or 1 <= m < p <= 4
""",
    dict(X=rn(6, 6)),
    c41,
)

# ---------------------------------------------------------------------------------------------------------
# 42. a param that sets a size, overridden; centred window with absent edges


def c42(X, W=5):
    P = len(X)
    WIN = np.zeros((P, W))
    MX = np.zeros(P)
    for p in range(P):
        vals = []
        for w in range(W):
            k = p + w - W // 2
            if 0 <= k < P:
                WIN[p, w] = X[k]
                vals.append(X[k])
        MX[p] = max(vals)
    return WIN, MX


case(
    "s8_size_param_override_window",
    """
# W sets the size of rank w (3 in the spec, 5 by override); reads past either end are absent
input  X[p]
param  W = 3
output WIN, MX
WIN[p, w] = X[p + w - W // 2]
MX[p]     = X[p + w - W // 2] :: max(w)
""",
    dict(X=rn(6)),
    c42,
    params={"W": 5},
)

# ---------------------------------------------------------------------------------------------------------
# 43. selective SSM scan: a statement indexed by t reads the state after the step


def c43(A, B, C, x):
    Bm = B
    T, N = A.shape
    h = np.zeros(N)
    y = np.zeros(T)
    for t in range(T):
        h = A[t] * h + Bm[t] * x[t]
        y[t] = C[t] @ h
    return y, h


case(
    "s8_ssm_scan_reads_after",
    """
# h[t + 1] = A[t] h[t] + B[t] x[t]; y[t] = C[t] . h[t + 1]; the final state is also returned
input  A[t, n], B[t, n], C[t, n], x[t]
output Y, HF
H[0, n]     = 0
H[t + 1, n] = A[t, n] * H[t, n] + B[t, n] * x[t]
Y[t]        = C[t, n] * H[t + 1, n]
HF[n]       = H[T, n]
""",
    dict(A=rng.uniform(0.5, 1.0, (6, 3)), B=rn(6, 3), C=rn(6, 3), x=rn(6)),
    c43,
)

# ---------------------------------------------------------------------------------------------------------
# 44. retention: a matrix-valued recurrent state, decay param, iterative index in the middle


def c44(Q, K, V, G=0.9):
    T = Q.shape[0]
    S = np.zeros((Q.shape[1], V.shape[1]))
    out = np.zeros((T, V.shape[1]))
    for t in range(T):
        S = G * S + np.outer(K[t], V[t])
        out[t] = Q[t] @ S
    return out


case(
    "s8_retention_matrix_state",
    """
# S[e, t + 1, f] = G * S[e, t, f] + K[t, e] V[t, f]; O[t, f] = Q[t, e] S[e, t + 1, f]
input  Q[t, e], K[t, e], V[t, f]
param  G = 0.9
output O
S[e, 0, f]     = 0
S[e, t + 1, f] = G * S[e, t, f] + K[t, e] * V[t, f]
O[t, f]        = Q[t, e] * S[e, t + 1, f]
""",
    dict(Q=rn(6, E), K=rn(6, E), V=rn(6, F)),
    c44,
)

# ---------------------------------------------------------------------------------------------------------
# 45. softmax with a sink, GQA, and the natural 3-pass form


def c45(Q, K, V, sink):
    H, P, _ = Q.shape
    G, M, _ = K.shape
    R = H // G
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = Q[h] @ K[h // R].T
        for p in range(P):
            ss = s[p, : p + 1]
            mx = max(ss.max(), sink[h])
            ex = np.exp(ss - mx)
            den = ex.sum() + np.exp(sink[h] - mx)
            out[h, p] = ex @ V[h // R, : p + 1] / den
    return out


case(
    "s8_sink_gqa_causal",
    """
# a per-head sink logit in the max and the denominator; GQA with R = 2
input  Q[h, p, e], K[g, m, e], V[g, m, f], sink[h]
param  R = 2
output O
QK[h, m, p] = Q[h, p, e] * K[h // R, m, e]  where m <= p
MK[h, p]    = QK[h, m, p] :: max(m)
GM[h, p]    = max(MK[h, p], sink[h])
SN[h, m, p] = exp(QK[h, m, p] - GM[h, p])
SK[h, p]    = SN[h, m, p]
SD[h, p]    = SK[h, p] + exp(sink[h] - GM[h, p])
O[h, p, f]  = SN[h, m, p] * V[h // R, m, f] / SD[h, p]
""",
    dict(Q=rn(4, 5, E), K=rn(2, 5, E), V=rn(2, 5, F), sink=rn(4) * 2),
    c45,
)

# ---------------------------------------------------------------------------------------------------------
# 46. pass-count-only cascades (also run)

case(
    "s8_teaching_rereads_other_input",
    """
# Y reduces A.B over k; Z multiplies Y with C[k]: C's fiber is read once -> 1 pass over k
input  A[k], B[k], C[k]
output Z
Y    = A[k] * B[k]
Z[k] = Y * C[k]
""",
    dict(A=rn(5), B=rn(5), C=rn(5)),
    lambda A, B, C: (A @ B) * C,
    passes={"k": 1},
)

case(
    "s8_centering_two_pass",
    """
# X - mean(X): the mean is a full reduction of X's fiber, then X is re-read -> 2 passes over k
input  X[k]
output Y
MU   = X[k] / K
Y[k] = X[k] - MU
""",
    dict(X=rn(6)),
    lambda X: X - X.mean(),
    passes={"k": 2},
)

case(
    "s8_division_inside_sum_three_pass",
    """
# deferral not written out: the division by D sits inside the sum over m -> 3 passes over m
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, E), K=rn(5, E), V=rn(5, F)),
    lambda Q, K, V: softmax_masked(Q @ K.T) @ V,
    passes={"m": 3},
)

case(
    "s8_cascade5_causal_counts",
    """
# Cascade 5 with a causal filter: filters do not change counts -> 1 over m and m1, 2 over m0
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[0, p]       = -inf
RD[0, p]       = 0
RN[f, 0, p]    = 0
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
SLNV[f, m1, p] = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]  = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RN[f, m1 + 1, p] = (SLNV[f, m1, p] ?? 0) + RN[f, m1, p] * PRM[m1, p]
O[p, f]        = RN[f, M1, p] / RD[M1, p]
""",
    dict(Q=rn(7, E), K=rn(7, E), V=rn(7, F)),
    lambda Q, K, V: softmax_masked(Q @ K.T, np.tril(np.ones((7, 7), bool))) @ V,
    passes={"m": 1, "m1": 1, "m0": 2},
)

# =========================================================================================================
# Part 2: filters that stress tile skipping in the rewrite (run torch/triton with --tile 3 and 4), and
# stabilizer / naming / layout corner cases of passes="auto".

FILTER_ATT = """
# natural 3-pass softmax attention with the filter: {filt}
input  Q[p, e], K[m, e], V[m, f]{extra}
output O
S[m, p]  = Q[p, e] * K[m, e] * rsqrt(E)  where {filt}
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
O[p, f]  = A[m, p] * V[m, f]
"""

doc12 = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3], dtype=np.int64)


def filt_case(name, filt, maskfn, P=12, M=12, extra="", ints=None):
    ints = ints or {}
    Q, K, V = rn(P, E), rn(M, E), rn(M, F)

    def oracle(Q, K, V, **kw):
        p = np.arange(Q.shape[0])[:, None]
        m = np.arange(K.shape[0])[None, :]
        mask = np.broadcast_to(maskfn(p, m, Q.shape[0], K.shape[0], **kw), (Q.shape[0], K.shape[0]))
        return softmax_masked(Q @ K.T / np.sqrt(Q.shape[1]), mask) @ V

    case(
        name, FILTER_ATT.format(filt=filt, extra=extra), dict(Q=Q, K=K, V=V, **ints), oracle, passes={"m": 3}
    )


filt_case(
    "s8_f_sink_or_window",
    "m < 2 or p - m < 3 and m <= p",
    lambda p, m, P, M: (m < 2) | ((p - m < 3) & (m <= p)),
)
filt_case("s8_f_abs_outside_window", "abs(p - m) >= 3", lambda p, m, P, M: np.abs(p - m) >= 3)
filt_case("s8_f_mod_or_diag", "m % 4 == 0 or m == p", lambda p, m, P, M: (m % 4 == 0) | (m == p))
filt_case("s8_f_not_window", "not (p - 3 < m <= p)", lambda p, m, P, M: ~((p - 3 < m) & (m <= p)))
filt_case(
    "s8_f_min_max_bounds",
    "m <= min(p, 5) and m >= max(p - 7, 0)",
    lambda p, m, P, M: (m <= np.minimum(p, 5)) & (m >= np.maximum(p - 7, 0)),
    P=9,
)
filt_case("s8_f_floordiv_negative", "(p - m) // 3 == 0", lambda p, m, P, M: (p - m) // 3 == 0)
filt_case("s8_f_mod_negative", "(m - p) % 5 < 2", lambda p, m, P, M: (m - p) % 5 < 2, P=9)
filt_case("s8_f_block_causal", "m // 4 <= p // 4", lambda p, m, P, M: m // 4 <= p // 4)
filt_case(
    "s8_f_clamp_eq_or_far",
    "m == clamp(p, 2, 4) or m > p + 6",
    lambda p, m, P, M: (m == np.clip(p, 2, 4)) | (m > p + 6),
)
filt_case("s8_f_everything_masked", "p - m > 20", lambda p, m, P, M: p - m > 20)
filt_case(
    "s8_f_doc_window_int",
    "abs(p - m) < 3 and doc[m] == doc[p]",
    lambda p, m, P, M, doc: (np.abs(p - m) < 3) & (doc[m] == doc[p]),
    extra=", doc[n] : int",
    ints=dict(doc=doc12),
)
filt_case("s8_f_unary_minus", "-p + m <= -2 or m > 9", lambda p, m, P, M: (-p + m <= -2) | (m > 9))
filt_case("s8_f_scaled_coordinate", "2 * m <= p", lambda p, m, P, M: 2 * m <= p)
filt_case(
    "s8_f_slope_band", "m * 3 >= p * 2 - 1 and m <= p", lambda p, m, P, M: (m * 3 >= p * 2 - 1) & (m <= p)
)
filt_case("s8_f_anti_causal_sizes", "m >= P - 1 - p", lambda p, m, P, M: m >= P - 1 - p, P=9)
filt_case("s8_f_last_keys_size_M", "m >= M - 5 or m == 0", lambda p, m, P, M: (m >= M - 5) | (m == 0), P=5)

# ---------------------------------------------------------------------------------------------------------
# stabilizer and normaliser corner cases


def c_softmin(Q, K, V):
    return softmax_masked(-(Q @ K.T)) @ V


case(
    "s8_softmin_min_stabilizer",
    """
# softmin attention: weights exp(-S) normalised, stabilised by the min over m
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GN[p]    = S[m, p] :: min(m)
EX[m, p] = exp(GN[p] - S[m, p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, E), K=rn(9, E), V=rn(9, F)),
    c_softmin,
)


def c_entropy(Q, K):
    A = softmax_masked(Q @ K.T, np.tril(np.ones((Q.shape[0], K.shape[0]), bool)))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(A > 0, A * np.log(np.where(A > 0, A, 1)), 0.0)
    return -t.sum(1)


case(
    "s8_attention_entropy",
    """
# entropy of each causal attention row: -sum_m A log A (a non-linear use of the weights)
input  Q[p, e], K[m, e]
output H
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
H[p]     = -(A[m, p] * log(A[m, p]))
""",
    dict(Q=rn(6, E), K=rn(6, E)),
    c_entropy,
)


def c_stats(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] < np.arange(P)[:, None]
    s = Q @ K.T
    ss = np.where(mask, s, -np.inf)
    gm = ss.max(1)
    gm0 = np.where(np.isfinite(gm), gm, 0.0)
    d = np.where(mask, np.exp(ss - gm0[:, None]), 0.0).sum(1)
    return softmax_masked(s, mask) @ V, gm0, d


case(
    "s8_max_and_denominator_outputs",
    """
# the row max GM and the denominator D are outputs too; row 0 (strictly causal) is absent in all three
input  Q[p, e], K[m, e], V[m, f]
output O, GM, D
S[m, p]  = Q[p, e] * K[m, e]  where m < p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
NV[p, f] = EX[m, p] * V[m, f]
O[p, f]  = NV[p, f] / D[p]
""",
    dict(Q=rn(7, E), K=rn(7, E), V=rn(7, F)),
    c_stats,
    passes={"m": 2},
)


def c_subset_max(Q, K, V):
    return softmax_masked(0.5 * (Q @ K.T)) @ V


case(
    "s8_stabilizer_over_subset",
    """
# the stabiliser is the max over the causal subset only, but the softmax is over all keys (small scores:
# no overflow); softmax is shift-invariant, so O is plain softmax attention
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * 0.5
SC[m, p] = S[m, p]  where m <= p
GM[p]    = SC[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, E), K=rn(8, E), V=rn(8, F)),
    c_subset_max,
)


def c_temp(Q, K, V, bias, TAU=0.5):
    s = Q @ K.T + bias[None, :]
    return softmax_masked(s / TAU) @ V


case(
    "s8_temperature_and_bias_inside_exp",
    """
# exp((S - GM) / TAU) and a key bias added inside the exp: the rewrite must refuse or be exact
input  Q[p, e], K[m, e], V[m, f], bias[m]
param  TAU = 2.0
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp((S[m, p] - GM[p] + bias[m] - 1) / TAU)
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, E), K=rn(7, E), V=rn(7, F), bias=rn(7)),
    c_temp,
    params={"TAU": 0.5},
)


def c_sizebias(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    m = np.arange(M)[None, :]
    p = np.arange(P)[:, None]
    s = Q @ K.T + (m - M) / M + 0.25 * (p - m)
    return softmax_masked(s, m >= M - 6) @ V


case(
    "s8_size_M_in_values_and_filter",
    """
# the key count M as a value in a bias and in the filter (only the last 6 keys): must stay M, not a tile size
input  Q[p, e], K[m, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]  where m >= M - 6
S[m, p]  = QK[m, p] + (m - M) / M + 0.25 * (p - m)
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(4, E), K=rn(11, E), V=rn(11, F)),
    c_sizebias,
)

case(
    "s8_names_colliding_with_rewrite",
    """
# a natural spec whose names are those the rewrite introduces: key rank m1, query rank m0, tensors RM, LM, BK,
# SLN, RD, RNV, PRM, SLD, BQK, SPD, and a param named BV
input  BK[m0, e], RM[m1, e], RD[m1, f]
param  BV = 0.5
output RNV
BQK[m1, m0] = BK[m0, e] * RM[m1, e]
SLN[m1, m0] = BQK[m1, m0] * BV
LM[m0]      = SLN[m1, m0] :: max(m1)
PRM[m1, m0] = exp(SLN[m1, m0] - LM[m0])
SLD[m0]     = PRM[m1, m0]
RNV[m0, f]  = PRM[m1, m0] * RD[m1, f] / SLD[m0]
""",
    dict(BK=rn(5, E), RM=rn(9, E), RD=rn(9, F)),
    lambda BK, RM, RD: softmax_masked(BK @ RM.T * 0.5) @ RD,
)


def c_tworanks(Q, K1, V1, K2, V2):
    return softmax_masked(Q @ K1.T) @ V1 + softmax_masked(Q @ K2.T) @ V2


case(
    "s8_two_softmaxes_two_key_ranks",
    """
# two independent softmaxes over different key ranks m (M = 5) and n (N = 8), summed
input  Q[p, e], K1[m, e], V1[m, f], K2[n, e], V2[n, f]
output O
S1[m, p] = Q[p, e] * K1[m, e]
S2[n, p] = Q[p, e] * K2[n, e]
G1[p]    = S1[m, p] :: max(m)
G2[p]    = S2[n, p] :: max(n)
E1[m, p] = exp(S1[m, p] - G1[p])
E2[n, p] = exp(S2[n, p] - G2[p])
D1[p]    = E1[m, p]
D2[p]    = E2[n, p]
O[p, f]  = E1[m, p] * V1[m, f] / D1[p] + E2[n, p] * V2[n, f] / D2[p]
""",
    dict(Q=rn(4, E), K1=rn(5, E), V1=rn(5, F), K2=rn(8, E), V2=rn(8, F)),
    lambda Q, K1, V1, K2, V2: None,
)  # placeholder, replaced below


def c_tworanks_sum(Q, K1, V1, K2, V2):
    # O[p, f] sums E1 * V1 / D1 + E2 * V2 / D2 over BOTH m and n (both are on the right, not on the left):
    # the m-term is added N times and the n-term M times
    M, N = K1.shape[0], K2.shape[0]
    return N * (softmax_masked(Q @ K1.T) @ V1) + M * (softmax_masked(Q @ K2.T) @ V2)


CASES[-1]["oracle"] = c_tworanks_sum


def c_global_query(q, K, V, w):
    s = K @ q
    return softmax_masked(s) @ V * w


case(
    "s8_pooling_query_no_row_rank",
    """
# attention pooling: one learned query, no query rank at all; output scaled by a scalar
input  q[e], K[m, e], V[m, f], w
output O
S[m]    = q[e] * K[m, e]
GM      = S[m] :: max(m)
EX[m]   = exp(S[m] - GM)
D       = EX[m]
O[f]    = EX[m] * V[m, f] / D * w
""",
    dict(q=rn(E), K=rn(10, E), V=rn(10, F), w=np.array(1.5)),
    c_global_query,
)


def c_bcast(Q, K, V):
    s = np.einsum("pe,bme->bpm", Q, K)
    return np.einsum("bpm,bmf->fbp", softmax_masked(s), V)


case(
    "s8_transposed_layouts_broadcast_query",
    """
# Q has no batch rank (shared across b); K and V are stored transposed; the output is [f, b, p]
input  Q[e, p], K[b, e, m], V[b, f, m]
output O
S[b, m, p]  = Q[e, p] * K[b, e, m]
GM[b, p]    = S[b, m, p] :: max(m)
EX[b, m, p] = exp(S[b, m, p] - GM[b, p])
D[b, p]     = EX[b, m, p]
O[f, b, p]  = EX[b, m, p] * V[b, f, m] / D[b, p]
""",
    dict(Q=rn(E, 5), K=rn(2, E, 7), V=rn(2, F, 7)),
    lambda Q, K, V: c_bcast(Q.T, K.transpose(0, 2, 1), V.transpose(0, 2, 1)),
)


def c_empty_t(X):
    return np.array(0.0), np.zeros(0), np.zeros(1)


case(
    "s8_empty_iterative_rank",
    """
# T = 0: no step runs; the final state is the initial one; R as an output has T + 1 = 1 state
input  X[t]
output TOTAL, AFTER, R
R[0]     = 0
R[t + 1] = R[t] + X[t]
AFTER[t] = R[t + 1]
TOTAL    = R[T]
""",
    dict(X=rn(0)),
    c_empty_t,
)


def c_alias(X):
    return X.copy(), X.copy(), 2 * X


case(
    "s8_output_copies",
    """
# an output that copies an input, a second output that copies the first, and one computed from it
input  X[i, j]
output Y, Z, W
Y[i, j] = X[i, j]
Z[i, j] = Y[i, j]
W[i, j] = Z[i, j] + Y[i, j]
""",
    dict(X=rn(3, 4)),
    c_alias,
)


def c_vshift(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    A = softmax_masked(Q @ K.T)
    Vs = np.vstack([V[1:], np.zeros((1, V.shape[1]))])
    # at m = M - 1, V[m + 1] is absent: the sum skips that point
    return A @ Vs


case(
    "s8_value_read_shifted",
    """
# the values are read at m + 1: the last key's term is absent and skipped by the sum
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
O[p, f]  = EX[m, p] / D[p] * V[m + 1, f]
""",
    dict(Q=rn(5, E), K=rn(7, E), V=rn(7, F)),
    c_vshift,
)

# =========================================================================================================
# Part 3: absence inside recurrences, ?? before a reduction, params with signs and inf, wider sizes


def c_count_default(X):
    I = len(X)
    J = 3
    cnt = np.zeros(I)
    s = np.zeros(I)
    for i in range(I):
        for j in range(J):
            if i + j < I:
                cnt[i] += 1
                s[i] += X[i + j]
            else:
                cnt[i] += 10
    return cnt, s


case(
    "s8_default_before_sum",
    """
# ?? applies point by point before the sum: a present point counts 1, an absent one 10
input  X[i]
param  J = 3
output CNT, S
CNT[i] = X[i + j] * 0 + 1 ?? 10
S[i]   = X[i + j] ?? 0
""",
    dict(X=rn(5)),
    c_count_default,
)


def c_rec_absent(X):
    T = len(X)
    R = [0.0]
    ok = [True]
    for t in range(T):
        if t + 1 < T and ok[-1]:
            R.append(R[-1] + X[t + 1])
            ok.append(True)
        else:
            R.append(0.0)
            ok.append(False)
    AFTER = np.array([R[t + 1] if ok[t + 1] else 0.0 for t in range(T)])
    TOTAL = np.array(R[T] if ok[T] else 0.0)
    # G: the filter t != 2 makes state 3 absent; absence then propagates to every later state
    G = [1.0]
    gok = [True]
    for t in range(T):
        if t != 2 and gok[-1]:
            G.append(G[-1] * 0.5 + X[t])
            gok.append(True)
        else:
            G.append(0.0)
            gok.append(False)
    GS = np.array([G[t] if gok[t] else 0.0 for t in range(T + 1)])
    # H: like G but a ?? keeps the state where the step is filtered out
    H = [1.0]
    for t in range(T):
        H.append(H[-1] * 0.5 + X[t] if t != 2 else H[-1])
    return AFTER, TOTAL, GS, np.array(H)


case(
    "s8_recurrence_absent_states",
    """
# R reads X[t + 1], absent at the last step: the last state is absent (0); G's filtered step makes every
# later state absent; H guards the same step with ??
input  X[t]
output AFTER, TOTAL, G, H
R[0]      = 0
R[t + 1]  = R[t] + X[t + 1]
AFTER[t]  = R[t + 1]
TOTAL     = R[T]
G[0]      = 1
G[t + 1]  = G[t] * 0.5 + X[t]  where t != 2
U[t]      = X[t]  where t != 2
H[0]      = 1
H[t + 1]  = H[t] * 0.5 + U[t] ?? H[t]
""",
    dict(X=rn(6)),
    c_rec_absent,
)


def c_rec_misc(X, Y):
    T = len(X)
    R = [0.0]
    for t in range(T):
        R.append(R[-1] + t * X[t])
    SUMR = sum(R[:T])  # R[t] summed over t = 0 .. T - 1
    DIFF = np.array([R[t + 1] - R[t] for t in range(T)])
    RY, RZ = [1.0], [0.0]
    for k in range(T):
        RY.append(RY[-1] + X[k] * Y[k])
        RZ.append(RZ[-1] * RY[-1] / RY[-2] + RY[-1] * X[k])
    return np.array(SUMR), DIFF, np.array(RZ[T])


case(
    "s8_recurrence_coordinates_and_pairs",
    """
# a coordinate t as a value in the update; states summed over t outside; RZ reads RY after the step
input  X[t], Y[t]
output SUMR, DIFF, Z
R[0]      = 0
R[t + 1]  = R[t] + t * X[t]
SUMR      = R[t]
DIFF[t]   = R[t + 1] - R[t]
RY[0]     = 1
RZ[0]     = 0
RY[t + 1] = RY[t] + X[t] * Y[t]
RZ[t + 1] = RZ[t] * RY[t + 1] / RY[t] + RY[t + 1] * X[t]
Z         = RZ[T]
""",
    dict(X=rng.uniform(0.2, 1.0, 6), Y=rng.uniform(0.2, 1.0, 6)),
    c_rec_misc,
)


def c_rec_max(X):
    T, I, J = X.shape
    R = np.zeros((T + 1, I))
    R[0] = -1.0
    for t in range(T):
        R[t + 1] = R[t] + X[t].max(axis=1)
    return R[T]


case(
    "s8_recurrence_with_max_reduction",
    """
# the update's max over j covers the whole right-hand side: max_j (R[t, i] + X[t, i, j])
input  X[t, i, j]
output FIN
R[0, i]     = -1
R[t + 1, i] = R[t, i] + X[t, i, j] :: max(j)
FIN[i]      = R[T, i]
""",
    dict(X=rn(5, 3, 4)),
    c_rec_max,
)


def c_params_signs(X, SHIFT=-1):
    I = len(X)
    Y = np.array([X[i + SHIFT] if 0 <= i + SHIFT < I else 0.0 for i in range(I)])
    Z = np.minimum(X, np.inf) * -2.5
    return Y, Z


case(
    "s8_param_signs_and_inf",
    """
# a negative integer param in an index (overridden from 2 to -1), a signed float param and an inf param
input  X[i]
param  SHIFT = 2
param  NEG = -2.5
param  CAP = inf
output Y, Z
Y[i] = X[i + SHIFT]
Z[i] = min(X[i], CAP) * NEG
""",
    dict(X=rn(5)),
    c_params_signs,
    params={"SHIFT": -1},
)


def c_filter_only_max(X):
    P = len(X)
    return np.array(X[::2].sum()), np.array([X[: p + 1].sum() for p in range(P)])


case(
    "s8_scalar_lhs_filter_and_rank_alias",
    """
# CS[p] sums X[s] over s <= p with s a second rank of X's size; Y is a scalar LHS with a filter
input  X[p]
rank   S = P
output Y, CS
Y     = X[p]  where p % 2 == 0
CS[p] = X[s]  where s <= p
""",
    dict(X=rn(6)),
    c_filter_only_max,
)


def c_1pass_oddims(Q, K, V):
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    P, M = Q.shape[2], K.shape[2]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + (M - P)
    return np.einsum("bhpm,bhmf->bhpf", softmax_masked(s, mask), V)


case(
    "s8_cascade5_odd_dims_bottom_right",
    """
# Cascade 5 (guarded causal, bottom-right) with odd head dims E = 5, F = 7, M0 = 16 > M, P = 3 < M = 11
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 16
rank   M = M1 * M0
output AV
BQK[b, h, m1, m0, p]  = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p + M - P
LM[b, h, m1, p]       = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, 0, p]        = -inf
RD[b, h, 0, p]        = 0
RNV[b, h, f, 0, p]    = 0
RM[b, h, m1 + 1, p]   = max(RM[b, h, m1, p], LM[b, h, m1, p]) ?? RM[b, h, m1, p]
SLN[b, h, m1, m0, p]  = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]      = SLN[b, h, m1, m0, p]
SLNV[b, h, f, m1, p]  = SLN[b, h, m1, m0, p] * V[b, h, m1 * M0 + m0, f]
PRM[b, h, m1, p]      = exp(RM[b, h, m1, p] - max(RM[b, h, m1, p], LM[b, h, m1, p])) ?? 1
RD[b, h, m1 + 1, p]   = (SLD[b, h, m1, p] ?? 0) + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, f, m1 + 1, p] = (SLNV[b, h, f, m1, p] ?? 0) + RNV[b, h, f, m1, p] * PRM[b, h, m1, p]
AV[b, h, p, f]        = RNV[b, h, f, M1, p] / RD[b, h, M1, p]
""",
    dict(Q=rn(2, 1, 3, 5), K=rn(2, 1, 11, 5), V=rn(2, 1, 11, 7)),
    c_1pass_oddims,
)


def c_wide(Q, K, V):
    P, M = Q.shape[2], K.shape[2]
    p = np.arange(P)[:, None]
    m = np.arange(M)[None, :]
    mask = (m <= p) & (p - m < 13) | (m < 2)
    s = np.einsum("bhpe,bhme->bhpm", Q, K) / np.sqrt(Q.shape[-1])
    return np.einsum("bhpm,bhmf->bhpf", softmax_masked(s, mask), V)


case(
    "s8_wider_window_sink_40",
    """
# P = M = 40: sliding window of 13 plus 2 sink keys, natural 3-pass (many tiles, skipping, row blocks)
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p and p - m < 13 or m < 2
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = EX[b, h, m, p]
NV[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f]
O[b, h, p, f]  = NV[b, h, p, f] / D[b, h, p]
""",
    dict(Q=rn(1, 2, 40, 8), K=rn(1, 2, 40, 8), V=rn(1, 2, 40, 8)),
    c_wide,
    passes={"m": 2},
)


def c_self_alias(X, V):
    T = X.shape[0]
    s = X @ X.T
    return softmax_masked(s, np.tril(np.ones((T, T), bool))) @ V


case(
    "s8_self_attention_rank_alias_only",
    """
# self-attention over one sequence: the key rank s exists only through `rank S = T` (no input declares s)
input  X[t, e], V[t, f]
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
    c_self_alias,
    passes={"s": 2},
)


def c_fused_zoo(Q, K, V, qs, ks, vs, B, gate):
    # Q[p, e, c], K[m, e, c], V[m, f, g], B[m, p]
    s = np.einsum("pec,mec->pm", Q, K) * qs[:, None] * ks[None, :] + B.T
    P, M = s.shape
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + 2
    A = softmax_masked(s, mask)
    O = np.einsum("pm,mfg->pfg", A * vs[None, :], V)
    return O * gate[:, :, None] + 1.0


case(
    "s8_fused_two_contraction_two_feature_ranks",
    """
# scores summed over two ranks (e, c) with per-query and per-key scales and a bias matrix; values with two
# feature ranks (f, g) and a per-key scale; a gated epilogue reading a [p, f] input
input  Q[p, e, c], K[m, e, c], V[m, f, g], qs[p], ks[m], vs[m], B[m, p], gate[p, f]
output O
QK[m, p]    = Q[p, e, c] * K[m, e, c]  where m <= p + 2
S[m, p]     = QK[m, p] * qs[p] * ks[m] + B[m, p]
GM[p]       = S[m, p] :: max(m)
EX[m, p]    = exp(S[m, p] - GM[p])
D[p]        = EX[m, p]
NV[p, f, g] = EX[m, p] * vs[m] * V[m, f, g]
O[p, f, g]  = NV[p, f, g] / D[p] * gate[p, f] + 1
""",
    dict(
        Q=rn(6, 3, 2), K=rn(9, 3, 2), V=rn(9, 2, 3), qs=rn(6), ks=rn(9), vs=rn(9), B=rn(9, 6), gate=rn(6, 2)
    ),
    c_fused_zoo,
)


def c_lse_merge(Q, K1, V1, K2, V2):
    s1, s2 = Q @ K1.T, Q @ K2.T
    l1 = lse_masked(s1, np.ones(s1.shape, bool))
    l2 = lse_masked(s2, np.ones(s2.shape, bool))
    o1 = softmax_masked(s1) @ V1
    o2 = softmax_masked(s2) @ V2
    mx = np.maximum(l1, l2)
    w1, w2 = np.exp(l1 - mx), np.exp(l2 - mx)
    return (w1[:, None] * o1 + w2[:, None] * o2) / (w1 + w2)[:, None]


case(
    "s8_two_chunks_merged_by_lse",
    """
# attention over two key chunks (different lengths), each with its LSE, merged: equals attention over both
input  Q[p, e], K1[m, e], V1[m, f], K2[n, e], V2[n, f]
output O
S1[m, p] = Q[p, e] * K1[m, e]
G1[p]    = S1[m, p] :: max(m)
E1[m, p] = exp(S1[m, p] - G1[p])
D1[p]    = E1[m, p]
N1[p, f] = E1[m, p] * V1[m, f]
O1[p, f] = N1[p, f] / D1[p]
L1[p]    = G1[p] + log(D1[p])
S2[n, p] = Q[p, e] * K2[n, e]
G2[p]    = S2[n, p] :: max(n)
E2[n, p] = exp(S2[n, p] - G2[p])
D2[p]    = E2[n, p]
N2[p, f] = E2[n, p] * V2[n, f]
O2[p, f] = N2[p, f] / D2[p]
L2[p]    = G2[p] + log(D2[p])
MX[p]    = max(L1[p], L2[p])
W1[p]    = exp(L1[p] - MX[p])
W2[p]    = exp(L2[p] - MX[p])
O[p, f]  = (W1[p] * O1[p, f] + W2[p] * O2[p, f]) / (W1[p] + W2[p])
""",
    dict(Q=rn(4, E), K1=rn(5, E), V1=rn(5, F), K2=rn(7, E), V2=rn(7, F)),
    lambda Q, K1, V1, K2, V2: softmax_masked(Q @ np.vstack([K1, K2]).T) @ np.vstack([V1, V2]),
)


def c_sink_lse(Q, K, V, sink):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T
    O = np.zeros((P, V.shape[1]))
    L = np.zeros(P)
    SD = np.zeros(P)
    for p in range(P):
        ks = [m for m in range(M) if m < p]
        if not ks:
            continue  # MK absent -> GM, SD, L, O all absent -> 0
        ss = s[p, ks]
        gm = max(ss.max(), sink)
        ex = np.exp(ss - gm)
        sd = ex.sum() + np.exp(sink - gm)
        O[p] = ex @ V[ks] / sd
        L[p] = gm + np.log(sd)
        SD[p] = sd
    return O, L, SD


case(
    "s8_sink_lse_fully_masked_row",
    """
# sink in the max and the denominator, strictly causal: row 0 has no key, so MK, GM, SD, L and O are absent
# there (max(absent, sink) is absent): every output is 0 on row 0, not the sink's contribution
input  Q[p, e], K[m, e], V[m, f], sink
output O, L, SD
QK[m, p] = Q[p, e] * K[m, e]  where m < p
MK[p]    = QK[m, p] :: max(m)
GM[p]    = max(MK[p], sink)
SN[m, p] = exp(QK[m, p] - GM[p])
SK[p]    = SN[m, p]
SD[p]    = SK[p] + exp(sink - GM[p])
NV[p, f] = SN[m, p] * V[m, f]
O[p, f]  = NV[p, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(5, E), K=rn(5, E), V=rn(5, F), sink=np.array(0.7)),
    c_sink_lse,
)


def c_defaults_natural(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] < np.arange(P)[:, None] - 1
    O = softmax_masked(Q @ K.T, mask) @ V
    s = np.where(mask, Q @ K.T, -np.inf)
    gm = s.max(1)
    G = np.where(np.isfinite(gm), gm, -5.0)
    return O + 1.0, G


case(
    "s8_natural_with_defaults",
    """
# defaults on the reductions of a natural spec: NV ?? 0 and D ?? 1 give O + 1 = 1 on the empty rows 0 and 1;
# GM ?? -5 is -5 there
input  Q[p, e], K[m, e], V[m, f]
output O, G
S[m, p]  = Q[p, e] * K[m, e]  where m < p - 1
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
D[p]     = EX[m, p]
NV[p, f] = EX[m, p] * V[m, f]
O[p, f]  = (NV[p, f] ?? 0) / (D[p] ?? 1) + 1
G[p]     = GM[p] ?? -5
""",
    dict(Q=rn(6, E), K=rn(6, E), V=rn(6, F)),
    c_defaults_natural,
)


# hand-derived pass counts (FuseMax counting rule), attached after the fact
_PASSES = {
    "s8_sink_lse_fully_masked_row": {"m": 2},
    "s8_attention_entropy": {"m": 3},
    "s8_softmin_min_stabilizer": {"m": 3},
    "s8_two_chunks_merged_by_lse": {"m": 2, "n": 2},
    "s8_recurrence_coordinates_and_pairs": {"t": 1},
    "s8_default_before_sum": {"j": 1},
    "s8_two_softmaxes_two_key_ranks": {"m": 3, "n": 3},
    "s8_value_read_shifted": {"m": 3},
    "s8_scalar_in_and_out": {"i": 2},
    "s8_window_1pass_guarded": {"m": 1, "m1": 1, "m0": 2},
    "s8_cascade5_odd_dims_bottom_right": {"m": 1, "m1": 1, "m0": 2},
    "s8_gqa_causal_1pass_written_ragged": {"m": 1, "m1": 1, "m0": 2},
    "s8_ssm_scan_reads_after": {"t": 1, "n": 1},
    "s8_pooling_query_no_row_rank": {"m": 3},
    "s8_natural_with_defaults": {"m": 2},
    "s8_fused_two_contraction_two_feature_ranks": {"m": 2},
    "s8_stabilizer_over_subset": {"m": 3},
    "s8_two_partitions_block_causal": {"m": 3, "p": 1},
}
for _c in CASES:
    if _c["name"] in _PASSES:
        _c["passes"] = _PASSES[_c["name"]]


def c_rec_reads(X, Z):
    T = len(X)
    W = X * 2
    R = [0.0]
    for t in range(T):
        R.append(R[-1] + W[T - 1 - t] * (t + 1))
    REV = np.array([R[T - t] for t in range(T)])
    DIST = np.array([sum(abs(p - m) for m in range(len(Z))) for p in range(T)], dtype=float)
    return np.array(R[T]), REV, DIST + X


case(
    "s8_recurrence_reads_outside_any_index",
    """
# inside the recurrence, W (computed outside) is read reversed; outside, states are read reversed R[T - t];
# Z is unused as a value (only its rank m is a coordinate), and m is summed
input  X[t], Z[m]
output FIN, REV, DIST
W[t]     = X[t] * 2
R[0]     = 0
R[t + 1] = R[t] + W[T - 1 - t] * (t + 1)
FIN      = R[T]
REV[t]   = R[T - t]
DC[t]    = abs(t - m)
DIST[t]  = DC[t] + X[t]
""",
    dict(X=rn(5), Z=rn(4)),
    c_rec_reads,
    passes={"t": 1},
)


def c_empty_contraction(A, B):
    I, J = A.shape
    Z = np.zeros(I)
    W = np.zeros(I)
    for i in range(I):
        terms = [A[i, j] * B[j + i] for j in range(J) if j + i < J]
        Z[i] = sum(terms) if terms else 7.0
        terms = [A[i, j] * B[j] for j in range(J) if j < i - 1]
        W[i] = sum(terms) if terms else -3.0
    return Z, W


case(
    "s8_empty_contraction_is_absent",
    """
# a sum of products with no present point is absent, not 0: ?? sees it
input  A[i, j], B[j]
output Z, W
Y[i] = A[i, j] * B[j + i]
Z[i] = Y[i] ?? 7
C[i] = A[i, j] * B[j]  where j < i - 1
W[i] = C[i] ?? -3
""",
    dict(A=rn(5, 3), B=rn(3)),
    c_empty_contraction,
)


def c_param_parent_partition(X, W=7, W0=3):
    P = len(X)
    out = np.zeros((P, -(-W // W0)))
    for p in range(P):
        for w1 in range(out.shape[1]):
            for w0 in range(W0):
                w = w1 * W0 + w0
                if w < W and p + w < P:
                    out[p, w1] += X[p + w]
    return out


case(
    "s8_partition_of_param_sized_rank",
    """
# the partitioned rank w is sized by a param (W = 7), split into tiles of W0 = 3: the last tile is ragged
# (w = 7, 8 are outside w: absent) and reads past the end of X are absent too
input  X[p]
param  W = 7
param  W0 = 3
rank   W = W1 * W0
output T
WIN[p, w]  = X[p + w]
T[p, w1]   = WIN[p, w1 * W0 + w0]
""",
    dict(X=rn(9)),
    c_param_parent_partition,
)


def c_inf_at_absent(X, Y):
    E_ = np.exp(X * 100)
    S = sum(E_[i] * Y[i - 3] for i in range(len(X)) if i - 3 >= 0)
    D = np.array([E_[i] * Y[j] for i in range(len(X)) for j in range(len(Y)) if j < i]).sum()
    return np.array(S), np.array(D)


case(
    "s8_infinite_factor_where_other_absent",
    """
# E is infinite (present) at i = 0, exactly where the other factor is absent (shifted read, filter): the sum
# skips those points, so the results are finite
input  X[i], Y[j]
output S, D
E[i] = exp(X[i] * 100)
S    = E[i] * Y[i - 3]
D    = E[i] * Y[j]  where j < i
""",
    dict(X=np.array([10.0, 0.01, -0.02, 0.005, 0.0]), Y=np.array([0.5, -1.0, 2.0])),
    c_inf_at_absent,
)


def c_negdiv(X, D=-2):
    I = len(X)

    def rd(k):
        return X[k] if 0 <= k < I else 0.0

    Y = np.array([rd(i // D + 5) for i in range(I)])
    Z = np.array([rd(i % D + 2) for i in range(I)])
    W = np.array([rd((i - 7) // 3 + (i + 1) % 4) for i in range(I)])
    KEEP = np.array([X[i] if (i - 4) // D >= 0 else 0.0 for i in range(I)])
    return Y, Z, W, KEEP


case(
    "s8_negative_divisor_param",
    """
# floor division and modulo by a negative param D = -2 (Python semantics), in indices and in a filter
input  X[i]
param  D = -2
output Y, Z, W, KEEP
Y[i]    = X[i // D + 5]
Z[i]    = X[i % D + 2]
W[i]    = X[(i - 7) // 3 + (i + 1) % 4]
KEEP[i] = X[i]  where (i - 4) // D >= 0
""",
    dict(X=rn(6)),
    c_negdiv,
)


def c_filter_on_ex(Q, K, V, w):
    P, M = Q.shape[0], K.shape[0]
    s = Q @ K.T
    s = np.clip(s, -2, 2) * 3 + np.maximum(s, 0) - np.log1p(np.exp(s))
    mask = np.arange(M)[None, :] < np.arange(P)[:, None] - 1
    A = softmax_masked(s, mask)
    return A @ V, A @ w


case(
    "s8_filter_on_numerator_only_two_sums",
    """
# the max is over all keys but only keys m < p - 1 are exponentiated (rows 0, 1 empty: 0); a chain of score
# transforms; two sums read the weights A
input  Q[p, e], K[m, e], V[m, f], w[m]
output O, OW
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = clamp(QK[m, p], -2, 2) * 3 + relu(QK[m, p]) - softplus(QK[m, p])
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])  where m < p - 1
D[p]     = EX[m, p]
A[m, p]  = EX[m, p] / D[p]
O[p, f]  = A[m, p] * V[m, f]
OW[p]    = A[m, p] * w[m]
""",
    dict(Q=rn(6, E), K=rn(7, E), V=rn(7, F), w=rn(7)),
    c_filter_on_ex,
    passes={"m": 3},
)

ATT_BH = """
# causal multi-head attention, natural 3-pass
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""
case(
    "s8_empty_batch",
    ATT_BH,
    dict(Q=rn(0, 2, 3, E), K=rn(0, 2, 3, E), V=rn(0, 2, 3, F)),
    lambda Q, K, V: np.zeros((0, 2, 3, F)),
)
case(
    "s8_empty_value_dim",
    ATT_BH,
    dict(Q=rn(1, 2, 3, E), K=rn(1, 2, 3, E), V=rn(1, 2, 3, 0)),
    lambda Q, K, V: np.zeros((1, 2, 3, 0)),
)
case(
    "s8_empty_heads_and_keys",
    ATT_BH,
    dict(Q=rn(1, 0, 3, E), K=rn(1, 0, 0, E), V=rn(1, 0, 0, F)),
    lambda Q, K, V: np.zeros((1, 0, 3, F)),
)


def c_exp2_1pass(Q, K, V):
    s = Q @ K.T  # treated as base-2 logits
    P, M = s.shape
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    w = np.where(
        mask, np.exp2(np.where(mask, s, -np.inf) - np.where(mask, s, -np.inf).max(1, keepdims=True)), 0
    )
    O = (w @ V) / w.sum(1, keepdims=True)
    L2 = np.where(mask, s, -np.inf).max(1) + np.log2(w.sum(1))
    return O, L2


case(
    "s8_exp2_1pass_written_with_log2_lse",
    """
# a hand-written 1-pass cascade in base 2 (exp2 / log2), causal, tiles of 3, returning O and the base-2 LSE
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O, L2
BQK[m1, m0, p]   = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p
LM[m1, p]        = BQK[m1, m0, p] :: max(m0)
RM[0, p]         = -inf
RD[0, p]         = 0
RN[0, f, p]      = 0
RM[m1 + 1, p]    = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]   = exp2(BQK[m1, m0, p] - RM[m1 + 1, p])
C[m1, p]         = exp2(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]    = RD[m1, p] * C[m1, p] + (SLD[m1, p] ?? 0)
SLD[m1, p]       = SLN[m1, m0, p]
SLNV[m1, f, p]   = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RN[m1 + 1, f, p] = RN[m1, f, p] * C[m1, p] + (SLNV[m1, f, p] ?? 0)
O[p, f]          = RN[M1, f, p] / RD[M1, p]
L2[p]            = RM[M1, p] + log2(RD[M1, p])
""",
    dict(Q=rn(8, E), K=rn(8, E), V=rn(8, F)),
    c_exp2_1pass,
    passes={"m": 1, "m1": 1, "m0": 2},
)


def c_decode_1pass(q, K, V):
    s = np.einsum("bhe,bhme->bhm", q, K) / np.sqrt(q.shape[-1])
    return np.einsum("bhm,bhmf->bhf", softmax_masked(s), V)


case(
    "s8_decode_1pass_written_no_row_rank",
    """
# 1-pass decode: one query per (b, h), no query rank on the running states; M = 7 in tiles of 2
input  q[b, h, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 2
rank   M = M1 * M0
output O
S[b, h, m1, m0]    = q[b, h, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)
LM[b, h, m1]       = S[b, h, m1, m0] :: max(m0)
RM[b, h, 0]        = -inf
RD[b, h, 0]        = 0
RN[b, h, 0, f]     = 0
RM[b, h, m1 + 1]   = max(RM[b, h, m1], LM[b, h, m1])
PR[b, h, m1]       = exp(RM[b, h, m1] - RM[b, h, m1 + 1])
LX[b, h, m1, m0]   = exp(S[b, h, m1, m0] - RM[b, h, m1 + 1])
LD[b, h, m1]       = LX[b, h, m1, m0] :: +(m0)
RD[b, h, m1 + 1]   = RD[b, h, m1] * PR[b, h, m1] + LD[b, h, m1]
LN[b, h, m1, f]    = LX[b, h, m1, m0] * V[b, h, m1 * M0 + m0, f]
RN[b, h, m1 + 1, f] = RN[b, h, m1, f] * PR[b, h, m1] + LN[b, h, m1, f]
O[b, h, f]         = RN[b, h, M1, f] / RD[b, h, M1]
""",
    dict(q=rn(2, 2, E), K=rn(2, 2, 7, E), V=rn(2, 2, 7, F)),
    c_decode_1pass,
)

# ---------------------------------------------------------------------------------------------------------
# more hand-derived pass counts (each case also runs)


def c_chain3(A, B):
    Y = A.sum()
    Z = ((A - Y) * B).sum()
    return A * Z


case(
    "s8_passes_chain_of_two_reductions",
    """
# Y reduces A (pass 1); Z re-reads A after Y (pass 2) and reduces; W re-reads A after Z (pass 3)
input  A[k], B[k]
output W
Y    = A[k]
Z    = (A[k] - Y) * B[k]
W[k] = A[k] * Z
""",
    dict(A=rn(5), B=rn(5)),
    c_chain3,
    passes={"k": 3},
)


def c_std(A):
    K = len(A)
    m1, m2 = A.sum() / K, (A * A).sum() / K
    return (A - m1) / np.sqrt(m2 - m1**2)


case(
    "s8_passes_parallel_reductions",
    """
# two reductions of A in the same pass, then one re-read: 2 passes over k
input  A[k]
output Z
Y1   = A[k]
Y2   = square(A[k])
MU   = Y1 / K
Z[k] = (A[k] - MU) * rsqrt(Y2 / K - square(MU))
""",
    dict(A=rn(6)),
    c_std,
    passes={"k": 2},
)


def c_rec_after_red(A):
    S = A.sum()
    R = 0.0
    for a in A:
        R = R * 0.5 + a / S
    return np.array(R)


case(
    "s8_passes_recurrence_after_reduction",
    """
# the recurrence over k re-reads A's k fiber with S, a full reduction of it: 2 passes over k
input  A[k]
output F
S        = A[k]
R[0]     = 0
R[k + 1] = R[k] * 0.5 + A[k] / S
F        = R[K]
""",
    dict(A=rng.uniform(0.5, 1.5, 5)),
    c_rec_after_red,
    passes={"k": 2},
)


def c_gather_center(A, perm):
    v = A[perm]
    return v - v.sum()


case(
    "s8_passes_gather_reread",
    """
# A read through perm[k] carries k: Y reduces it, Z re-reads it after Y: 2 passes over k
input  A[i], perm[k] : int
output Z
Y    = A[perm[k]]
Z[k] = A[perm[k]] - Y
""",
    dict(A=rn(6), perm=np.array([5, 2, 0, 3], dtype=np.int64)),
    c_gather_center,
    passes={"k": 2},
)
