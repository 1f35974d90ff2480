"""Passes per rank (../shared/reference/fusemax.md, section 2; docs/analysis.md, section 2), each with its
values checked too: FuseMax's teaching Cascades 1 and 2, Cascade 4 with every rank's count, a softmax over
the queries (the passes land on p, not m), one Sinkhorn step (a pass over each rank), centring by the mean
over two ranks, a max over the softmax weights re-reading them (a fourth pass), Cascade 4 with the division
deferred and its LSE, and a causal sum whose normaliser is an iterative count (still one pass)."""

import numpy as np

from .common import make_rn, registry, softmax

rn, rng = make_rn(1905)
CASES, case = registry()


# --- FuseMax teaching Cascade 1: Y = A[k] * B[k]; Z[k] = Y * A[k] re-reads A's k fiber after the sum
case(
    "s19_passes_teaching_cascade1_two_passes",
    """
input  A[k], B[k]
output Z
Y    = A[k] * B[k]
Z[k] = Y * A[k]
""",
    dict(A=rn(6), B=rn(6)),
    lambda A, B: (A @ B) * A,
    passes={"k": 2},
)


# --- FuseMax teaching Cascade 2: reduce both and combine only k-free values
case(
    "s19_passes_teaching_cascade2_one_pass",
    """
input  A[k], B[k]
output Z
Y = A[k] * B[k]
X = A[k]
Z = Y * X
""",
    dict(A=rn(6), B=rn(6)),
    lambda A, B: np.array((A @ B) * A.sum()),
    passes={"k": 1},
)


# --- Cascade 4 in the paper's order: 3 passes over m, one over every other rank
case(
    "s19_passes_cascade4_every_rank",
    """
input Q[e, p], K[e, m], V[f, m]
output AV
QK[m, p] = Q[e, p] * K[e, m]
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
AV[f, p] = A[m, p] * V[f, m]
""",
    dict(Q=rn(3, 4), K=rn(3, 7), V=rn(2, 7)),
    lambda Q, K, V: (softmax(Q.T @ K) @ V.T).T,
    passes={"m": 3, "p": 1, "e": 1, "f": 1},
)


# --- a softmax over the queries (each key distributes its value over the queries): the passes are over p
case(
    "s19_passes_softmax_over_queries",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]
GM[m]    = S[p, m] :: max(p)
EX[p, m] = exp(S[p, m] - GM[m])
SD[m]    = EX[p, m]
A[p, m]  = EX[p, m] / SD[m]
O[p, f]  = A[p, m] * V[m, f]
""",
    dict(Q=rn(5, 3), K=rn(4, 3), V=rn(4, 2)),
    lambda Q, K, V: softmax(Q @ K.T, axis=0) @ V,
    passes={"p": 3, "m": 1},
)


# --- one Sinkhorn step: normalise the rows (a pass over j), then the columns (a pass over i)
def sinkhorn_ref(X):
    A = X / X.sum(1, keepdims=True)
    return A / A.sum(0, keepdims=True)


case(
    "s19_passes_sinkhorn_step_rows_then_columns",
    """
input  X[i, j]
output B
R[i]    = X[i, j]
A[i, j] = X[i, j] / R[i]
C[j]    = A[i, j]
B[i, j] = A[i, j] / C[j]
""",
    dict(X=np.abs(rn(4, 5)) + 0.5),
    sinkhorn_ref,
    passes={"i": 2, "j": 2},
)


# --- centring by the mean over two ranks: a pass over each
case(
    "s19_passes_centred_by_mean_over_two_ranks",
    """
input  X[i, j]
output Y
MU      = X[i, j] / (I * J)
Y[i, j] = X[i, j] - MU
""",
    dict(X=rn(3, 4)),
    lambda X: X - X.mean(),
    passes={"i": 2, "j": 2},
)


# --- the largest softmax weight of each row, and the weights relative to it: a fourth pass over m
def weight_max_ref(S):
    A = softmax(S)
    return A / A.max(1, keepdims=True)


case(
    "s19_passes_weights_relative_to_their_max_four",
    """
input  S[p, m]
output R
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
A[p, m]  = EX[p, m] / SD[p]
AM[p]    = A[p, m] :: max(m)
R[p, m]  = A[p, m] / AM[p]
""",
    dict(S=rn(3, 6)),
    weight_max_ref,
    passes={"m": 4},
)


# --- causal sums normalised by the number of keys seen, counted by a recurrence over t: one pass
def causal_mean_ref(X, V):
    T = X.shape[0]
    C = np.cumsum(X[:, None] * V, axis=0)
    return C / np.arange(1, T + 1)[:, None]


case(
    "s19_passes_causal_mean_by_iterative_count",
    """
input  X[t], V[t, f]
output O
N[0]        = 0
N[t + 1]    = N[t] + 1
RS[0, f]    = 0
RS[t + 1, f] = RS[t, f] + X[t] * V[t, f]
O[t, f]     = RS[t + 1, f] / N[t + 1]
""",
    dict(X=rn(5), V=rn(5, 2)),
    causal_mean_ref,
    passes={"t": 1},
)
