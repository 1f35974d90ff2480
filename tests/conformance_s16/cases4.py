"""Pass counts (FuseMax section 2, docs/analysis.md) of chains of reductions and re-reads, constant-index
reads of sums (``S[0]``), pointwise values read at ``I - 1``, and sigmoid attention normalised inline (a
second pass) or deferred (one), each with its value checked by a NumPy oracle as well."""

import numpy as np

from .common import make_rn, pm, registry, sig

rn, rng = make_rn(1604)
CASES, case = registry()


# --- the chain of docs/analysis.md: W runs in pass 2, so Z re-reads B in pass 3
def chain3_ref(A, B):
    Y = A.sum()
    X = A - Y
    W = (X * B).sum()
    return B * W


case(
    "s16_passes_chain_three_over_k",
    """
# a chain of reductions: Y finishes pass 1, W pass 2, Z re-reads B in pass 3
input  A[k], B[k]
output Z
Y    = A[k]
X[k] = A[k] - Y
W    = X[k] * B[k]
Z[k] = B[k] * W
""",
    dict(A=rn(7), B=rn(7)),
    chain3_ref,
    passes={"k": 3},
)


# --- the same chain one link longer: V finishes pass 3 and Z re-reads C in pass 4
def chain4_ref(A, B, C):
    Y = A.sum()
    X = A - Y
    W = (X * B).sum()
    U = B * W
    V = (U * C).sum()
    return C - V, U


case(
    "s16_passes_chain_four_over_k",
    """
# four passes: each reduction feeds the next re-read
input  A[k], B[k], C[k]
output Z, U
Y    = A[k]
X[k] = A[k] - Y
W    = X[k] * B[k]
U[k] = B[k] * W
V    = U[k] * C[k]
Z[k] = C[k] - V
""",
    dict(A=rn(6), B=rn(6), C=rn(6)),
    chain4_ref,
    passes={"k": 4},
)


# --- a constant point of a sum: S[0] of S[i] = X[j] (rank J = I) is a completed value, so Y is a second pass
def const_sum_ref(X):
    return X - X.sum()


case(
    "s16_passes_constant_index_of_sum_two_passes",
    """
# centre X by its total, read as S[0] of a sum over an alias of i
input  X[i]
rank   J = I
output Y
S[i] = X[j]
Y[i] = X[i] - S[0]
""",
    dict(X=rn(6)),
    const_sum_ref,
    passes={"i": 2},
)


# --- a pointwise value read at I - 1: one pass
def last_ref(X):
    return X - 2 * X[-1]


case(
    "s16_passes_pointwise_read_at_last_one_pass",
    """
# subtract twice the last element: X2[I - 1] needs one element of X
input  X[i]
output Y
X2[i] = 2 * X[i]
Y[i]  = X[i] - X2[I - 1]
""",
    dict(X=rn(6)),
    last_ref,
    passes={"i": 1},
)


# --- the pointwise value reads a sum over i: the read at I - 1 waits for it, two passes
def last_of_scaled_ref(X):
    C = X.sum()
    return X - X[-1] / C, X / C


case(
    "s16_passes_pointwise_of_sum_read_at_last_two_passes",
    """
# X2 divides by the total, so its last element waits for the whole of X
input  X[i]
output Y, X2
C     = X[i]
X2[i] = X[i] / C
Y[i]  = X[i] - X2[I - 1]
""",
    dict(X=rng.uniform(0.5, 2.0, 6)),
    last_of_scaled_ref,
    passes={"i": 2},
)


# --- a sum over another rank, read at I - 1: still pointwise along i
def row_last_ref(X, A):
    return X - A[-1].sum()


case(
    "s16_passes_row_sum_read_at_last_one_pass",
    """
# S reduces k, not i: its last row needs one row of A
input  X[i], A[i, k]
output Y
S[i] = A[i, k]
Y[i] = X[i] - S[I - 1]
""",
    dict(X=rn(5), A=rn(5, 3)),
    row_last_ref,
    passes={"i": 1, "k": 1},
)


# --- softmax numerators divided by the first row's denominator: SD[0] finishes after pass 2, so W re-reads EX
# in pass 3
def first_row_ref(Q, K):
    s = Q @ K.T
    ex = np.exp(s - s.max(1, keepdims=True))
    return ex / ex[0].sum()


case(
    "s16_passes_divide_by_first_rows_denominator",
    """
# exponentials of every row divided by row 0's denominator
input  Q[p, e], K[m, e]
output W
S[p, m]  = Q[p, e] * K[m, e]
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
W[p, m]  = EX[p, m] / SD[0]
""",
    dict(Q=rn(4, 3), K=rn(6, 3)),
    first_row_ref,
    passes={"m": 3},
)


# --- sigmoid attention normalised inside the sum (re-reads A after MASS: 2 passes) and deferred (1 pass)
def sig_norm_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    a = np.where(m <= p, sig(Q @ K.T), 0.0)
    return (a @ V) / a.sum(1, keepdims=True)


case(
    "s16_passes_sigmoid_normalised_inline_two_passes",
    """
# causal sigmoid attention with the weights normalised before they mix V
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]  where m <= p
A[p, m]  = sigmoid(S[p, m])
MASS[p]  = A[p, m]
O[p, f]  = A[p, m] / MASS[p] * V[m, f]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    sig_norm_ref,
    passes={"m": 2},
)

case(
    "s16_passes_sigmoid_normalised_deferred_one_pass",
    """
# the same, the division deferred past the sum
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]   = Q[p, e] * K[m, e]  where m <= p
A[p, m]   = sigmoid(S[p, m])
MASS[p]   = A[p, m]
NUM[p, f] = A[p, m] * V[m, f]
O[p, f]   = NUM[p, f] / MASS[p]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    sig_norm_ref,
    passes={"m": 1},
)


# --- a streamed sum divided by its own first row (NUM[0, f], a sum over m, completed; pointwise along p)
def first_row_num_ref(Q, K, V):
    P = Q.shape[0]
    p, m = pm(P, K.shape[0])
    num = np.where(m <= p, sig(Q @ K.T), 0.0) @ V
    return num / num[0]


case(
    "s16_passes_streamed_sum_divided_by_its_first_row",
    """
# causal sigmoid attention rows relative to row 0
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]   = Q[p, e] * K[m, e]
NUM[p, f] = sigmoid(S[p, m]) * V[m, f]  where m <= p
O[p, f]   = NUM[p, f] / NUM[0, f]
""",
    dict(Q=rn(7, 3), K=rn(7, 3), V=rng.uniform(0.5, 1.5, (7, 2))),
    first_row_num_ref,
    passes={"m": 1, "p": 1},
)


# --- teaching cascade 2 (1 pass) followed by a re-read of B scaled by its result: 2 passes
def teach_ref(A, B):
    Z = (A * B).sum() / A.sum()
    return B * Z


case(
    "s16_passes_teaching_cascade2_then_reread",
    """
# Y and X reduce k in one pass; T re-reads B with their ratio: a second pass
input  A[k], B[k]
output T
Y    = A[k] * B[k]
X    = A[k]
Z    = Y / X
T[k] = B[k] * Z
""",
    dict(A=rng.uniform(0.5, 2.0, 6), B=rn(6)),
    teach_ref,
    passes={"k": 2},
)
