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


doc = np.array([0, 0, 1, 1, 1, 2])
case(
    "sum_over_filter_only_rank",
    """
input  X[p], doc[m] : int
output S, MX
S[p]  = X[p]  where doc[m] == doc[p]
MX[p] = X[p] :: max(m)  where m < p
""",
    dict(X=rn(6), doc=doc),
    lambda X, doc: (
        X * np.array([(doc == doc[p]).sum() for p in range(6)]),
        np.where(np.arange(6) > 0, X, 0.0),
    ),
)


def redorder_ref(X):
    I, J, K = X.shape
    out = np.zeros(I)
    for i in range(I):
        vals = [sum(X[i, j, k] for j in range(J) if j < k) for k in range(K) if any(j < k for j in range(J))]
        out[i] = max(vals) if vals else 0.0
    return out


case(
    "reduce_order_filter",
    """
input  X[i, j, k]
output A
A[i] = X[i, j, k] :: max(k)  where j < k
""",
    dict(X=rn(2, 3, 4)),
    redorder_ref,
)

case(
    "param_only_rank_broadcast",
    """
input  X[i]
param  W = 3
output Y
Y[i, w] = X[i] + w
""",
    dict(X=rn(4)),
    lambda X: X[:, None] + np.arange(3)[None],
)


def partsize_ref(X):
    M = len(X)
    M0 = 3
    M1 = -(-M // M0)
    return X / M1 + M0, np.array(float(M1))


case(
    "partition_sizes_as_values",
    """
input  X[m]
param  M0 = 3
rank   M = M1 * M0
output Y, N1
Y[m] = X[m] / M1 + M0
T[m1, m0] = X[m1 * M0 + m0]
N1 = M1 + 0 * T[m1, m0] :: max(m1, m0)
""",
    dict(X=rn(7)),
    partsize_ref,
)


def absfn_ref(X):
    I = len(X)
    nxt = np.concatenate([X[1:], [np.nan]])
    a = np.where(np.isnan(nxt), 0, np.maximum(nxt, 0))
    b = np.where(np.isnan(nxt), 0, np.clip(nxt, -0.5, X))
    c = np.where(np.isnan(nxt), 0, np.exp2(nxt) + np.log2(np.abs(nxt) + 1))
    return a, b, c


case(
    "functions_of_absent",
    """
input  X[i]
output A, B, C
A[i] = max(X[i + 1], 0)
B[i] = clamp(X[i + 1], -0.5, X[i])
C[i] = exp2(X[i + 1]) + log2(abs(X[i + 1]) + 1)
""",
    dict(X=rn(5)),
    absfn_ref,
)


def ieee_ref(X):
    return np.array(-np.inf), X / 0.0, np.log(np.zeros_like(X)), np.sqrt(-np.abs(X) - 1)


case(
    "ieee_values_out",
    """
input  X[i]
output NI, DZ, L0, SQ
NI    = -inf
DZ[i] = X[i] / 0
L0[i] = log(X[i] * 0)
SQ[i] = sqrt(-abs(X[i]) - 1)
""",
    dict(X=np.array([1.0, -2.0, 3.0])),
    ieee_ref,
)

# rank S = T size as value
case(
    "rank_eq_size_value",
    """
input  X[t]
rank   S = T
output Y
Y[t] = X[s] / S  where s >= t
""",
    dict(X=rn(5)),
    lambda X: np.array([X[t:].sum() / 5 for t in range(5)]),
)


# filter reading out-of-range int makes point absent even with or
def oorfilt_ref(Q, K, V, d):
    M = K.shape[0]
    P = Q.shape[0]
    mask = np.zeros((P, M), bool)
    for p in range(P):
        for m in range(M):
            if m + 1 >= M:
                continue
            mask[p, m] = (d[m + 1] == d[m]) or m == p
    return att(Q, K, V, mask=mask)


case(
    "filter_oob_int_or",
    """
input  Q[p, e], K[m, e], V[m, f], d[m] : int
output O
S[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where d[m + 1] == d[m] or m == p
G[p]    = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - G[p])
D[p]    = N[m, p]
O[p, f] = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), d=np.array([0, 0, 1, 2, 2, 2])),
    oorfilt_ref,
)

# gather with out-of-range inner index
case(
    "gather_inner_oob",
    """
input  X[i], perm[j] : int
output Y
Y[j] = X[perm[j + 1]] ?? -1
""",
    dict(X=rn(4), perm=np.array([3, 1, 0, 2])),
    lambda X, perm: np.array([X[perm[j + 1]] if j + 1 < 4 else -1 for j in range(4)]),
)


# empty-ish: causal cross attention with P > M where all rows of one batch empty due to len
def crossp_ref(Q, K, V):
    P, M = Q.shape[1], K.shape[1]
    return att(Q, K, V, mask=np.arange(M)[None] <= np.arange(P)[:, None] - (P - M))


case(
    "causal_cross_P_gt_M",
    """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
output O
S[b, m, p] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m <= p - P + M
G[b, p]    = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - G[b, p])
D[b, p]    = N[b, m, p]
O[b, p, f] = N[b, m, p] * V[b, m, f] / D[b, p]
""",
    dict(Q=rn(2, 9, 3), K=rn(2, 4, 3), V=rn(2, 4, 2)),
    crossp_ref,
)


# HF-style masked_fill with large negative, strict causal -> row 0 uniform
def mfill_ref(Q, K, V):
    s = Q @ K.T
    P, M = s.shape
    s = np.where(np.arange(M)[None] < np.arange(P)[:, None], s, -1e9)
    return softmax(s) @ V


case(
    "masked_fill_large_negative",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]  where m < p
S[m, p]  = QK[m, p] ?? -1e9
G[p]     = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - G[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    mfill_ref,
)

# finfo(float32).min bias on whole row (HF masks) -> uniform weights
Bm = rn(4, 6)
Bm[2, :] = np.finfo(np.float32).min
Bm[0, 3:] = np.finfo(np.float32).min


def hfmin_ref(Q, K, V, B):
    s = Q @ K.T + B
    return softmax(s) @ V


case(
    "finfo_min_bias_row",
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
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2), B=Bm),
    hfmin_ref,
)
