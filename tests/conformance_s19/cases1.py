"""The language reference read construct by construct (docs/language.md, sections 2 to 4): items in any
order with inputs declared over several lines, continuations inside brackets with comments and after a
backslash followed by spaces, lower-case tensor and param names, a param that sizes a rank and is a value,
partitions whose outer part is the param (overridden), an alias whose rank also indexes an input, explicit
``: float`` and integer scalars as values, a cascade of scalars only, outputs that later statements read
(their absent points stay absent inside the cascade) and sizes as values in filters."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1901)
CASES, case = registry()


# --- statements before every declaration, the output declared last, inputs on two lines, a read continued
# over two lines inside its brackets with a comment in the middle
case(
    "s19_lang_statements_before_declarations_bracket_comment",
    """
# every item may come in any order
Y[i] = A[i] * 2 + B[i,      # the read of B goes on: we are inside [ ]
                    j] :: max(j)
Z    = Y[i]
input B[i, j]
output Y, Z
input A[i]
""",
    dict(A=rn(4), B=rn(4, 3)),
    lambda A, B: (2 * A + B.max(1), (2 * A + B.max(1)).sum()),
    passes={"j": 1},
)


# --- a backslash continuation followed by spaces and a tab, declarations continued the same way, tabs
# between tokens
case(
    "s19_lang_backslash_then_spaces_tabs_between_tokens",
    "input\tX[i, j], \\  \n      W[j]\noutput\tY\n"
    "Y[i]\t=\tX[i, j] *\tW[j] \\ \t\n      + 1.0    # summed over j: the 1 is added J times\n",
    dict(X=rn(3, 4), W=rn(4)),
    lambda X, W: X @ W + 4.0,
)


# --- tensors and params spelled in lower case: a lower-case integer param in an index and as a value, a
# lower-case float param; the names are not rank variables because they are declared
case(
    "s19_lang_lower_case_tensor_and_param_names",
    """
input  q[p, e], kk[m, e]
param  shift = 1
param  temp = 0.5
output score, shifted
score[p, m]   = q[p, e] * kk[m, e] / temp
shifted[p, m] = score[p, m + shift] * shift ?? -shift
""",
    dict(q=rn(3, 2), kk=rn(4, 2)),
    lambda q, kk: (
        q @ kk.T / 0.5,
        np.concatenate([(q @ kk.T / 0.5)[:, 1:], -np.ones((3, 1))], axis=1),
    ),
)


# --- a param that sizes a rank (w) and is a value and a filter bound at once, overridden at compile time
def param_size_value_ref(X, W=4):
    P = X.shape[0]
    Y = np.zeros(P)
    C = np.zeros(P)
    for p in range(P):
        vals = [X[p + w] for w in range(W) if p + w < P and w < W - 1]
        Y[p] = sum(vals) / W if vals else 0.0
        C[p] = len([w for w in range(W) if p + w < P])
    return Y, C


case(
    "s19_lang_param_sizes_rank_and_is_value_overridden",
    """
# W is the size of rank w, a divisor and a filter bound
input  X[p]
param  W = 2
output Y, C
Y[p] = X[p + w] / W  where w < W - 1
C[p] = X[p + w] * 0 + 1
""",
    dict(X=rn(6)),
    param_size_value_ref,
    params={"W": 4},
)


# --- a partition whose outer part is the param, overridden: M = 7 in M1 = 3 tiles of M0 = ceil(7 / 3) = 3;
# the derived size M0 and the param M1 as values
def outer_param_ref(X, M1=3):
    M = X.shape[0]
    M0 = -(-M // M1)
    TMAX = np.array([X[t * M0 : (t + 1) * M0].max() for t in range(M1)])
    TCNT = np.array([len(X[t * M0 : (t + 1) * M0]) for t in range(M1)], dtype=float)
    POS = np.array([[t * M0 + j if t * M0 + j < M else 0 for j in range(M0)] for t in range(M1)], float)
    return TMAX, TCNT, POS + 0 * M1


case(
    "s19_lang_partition_outer_param_overridden_ragged",
    """
input  X[m]
param  M1 = 2
rank   M = M1 * M0
output TMAX, TCNT, POS
XT[m1, m0]   = X[m1 * M0 + m0]
TMAX[m1]     = XT[m1, m0] :: max(m0)
TCNT[m1]     = XT[m1, m0] * 0 + 1               # the ragged last tile counts its present points
POS[m1, m0]  = XT[m1, m0] * 0 + m1 * M0 + m0    # a coordinate computed from the derived size
""",
    dict(X=rn(7)),
    outer_param_ref,
    params={"M1": 3},
)


# --- an alias whose rank also indexes an input: A[t, s] must agree with X[t] on the size; a quadratic
# form and its strictly-lower part
case(
    "s19_lang_alias_rank_also_indexes_an_input",
    """
input  X[t], A[t, s]
rank   S = T
output QF, LOW
QF     = X[t] * A[t, s] * X[s]
LOW[t] = A[t, s] * X[s]  where s < t
""",
    dict(X=rn(4), A=rn(4, 4)),
    lambda X, A: (X @ A @ X, np.tril(A, -1) @ X),
)


# --- `: float` written out, an integer scalar as a value, an index bound and a filter bound
def int_scalar_ref(X, s, n):
    Y = np.array([X[i] * s + n if i < n else 0.0 for i in range(len(X))])
    Z = np.array([X[i + n] if i + n < len(X) else 0.0 for i in range(len(X))])
    return Y, Z


case(
    "s19_lang_explicit_float_and_int_scalar_as_value",
    """
input  X[i] : float, s : float, n : int
output Y, Z
Y[i] = X[i] * s + n  where i < n
Z[i] = X[i + n]
""",
    dict(X=rn(5), s=np.array(1.5), n=np.array(2)),
    int_scalar_ref,
)


# --- a cascade of scalars only: scalar inputs, a float param, scalar outputs, functions of scalars
case(
    "s19_lang_scalars_only_cascade",
    """
input  a, b
param  C = 0.25
output Z, W, K
T = a * b
Z = T + exp(a) - C
W = max(a, b) - min(a, b) + abs(T)
K = 3 * C * C
""",
    dict(a=np.array(0.7), b=np.array(-1.3)),
    lambda a, b: (a * b + np.exp(a) - 0.25, max(a, b) - min(a, b) + abs(a * b), np.array(3 * 0.0625)),
)


# --- an output that later statements read: inside the cascade its filtered points stay absent (the min
# skips them, ?? replaces them); the caller receives 0 there
def output_read_ref(X):
    A = np.where(np.arange(len(X)) > 0, X, 0.0)
    B = X[1:].min()
    C = np.where(np.arange(len(X)) > 0, X, 100.0)
    return A, B, C


case(
    "s19_lang_output_read_by_later_statements_keeps_absent",
    """
input  X[i]
output A, B, C
A[i] = X[i]  where i > 0
B    = A[i] :: min(i)
C[i] = A[i] ?? 100
""",
    dict(X=np.array([-5.0, 3.0, 2.0, 7.0])),
    output_read_ref,
)


# --- sizes as values in filters and in values: the last M0 keys are dropped, a derived size M1 in a bound
def sizes_in_filters_ref(X, M0=3):
    M = X.shape[1]
    M1 = -(-M // M0)
    keep = np.arange(M) < M - M0
    S = np.where(keep, X, 0).sum(1)
    T = np.zeros(M1)
    for t in range(M1 - 1):
        T[t] = X[:, t * M0 : (t + 1) * M0].sum() * M1
    return S, T


case(
    "s19_lang_sizes_in_filters_and_values_derived",
    """
input  X[r, m]
param  M0 = 3
rank   M = M1 * M0
output S, T
S[r]  = X[r, m]  where m < M - M0
T[m1] = X[r, m1 * M0 + m0] * M1  where m1 < M1 - 1
""",
    dict(X=rn(2, 8)),
    sizes_in_filters_ref,
)


# --- continuations: a full-line comment and blank lines inside an open bracket, a reduction list split over
# lines, a backslash before `::` and another before `where`; a max over a rank that occurs only in the filter
def continuations_ref(X, Z):
    I, J = X.shape
    A = np.maximum(X, 0).sum(1)
    B = np.array([max(X[i, j] for j in range(J) if j > 0) for i in range(I)])
    C = X.copy()  # the max over k < 2 of a value that does not vary along k
    return A, B, C


case(
    "s19_lang_continuations_comment_lines_split_reduction_filter_only_max",
    "input X[i, j], Z[k]\noutput A, B, C\n"
    "A[i] = max(X[i, j],\n# a full-line comment inside the bracket\n\n           0)\n"
    "B[i] = X[i, j] \\\n       :: max(\n  j) \\\n       where j > 0\n"
    "C[i, j] = X[i, j] :: max(k) where k < 2\n",
    dict(X=rn(3, 4), Z=rn(5)),
    continuations_ref,
)
