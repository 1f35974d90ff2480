"""Language corners: params and sizes in index arithmetic, scalar int inputs in indices and filters, gathers
inside min/max/clamp/abs, ranks that occur only in a gather, filters combining and/or/not and chains,
?? chains and ?? inside calls, nested calls, min/max reductions over several ranks, recurrences with a
reduction or a filter in the update, shift registers, names that collide with generated code."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1205)
CASES, case = registry()


def shift(X, k, fill=0.0):
    """Y[i] = X[i + k], fill outside."""
    Y = np.full(len(X), fill)
    for i in range(len(X)):
        if 0 <= i + k < len(X):
            Y[i] = X[i + k]
    return Y


# --- params in index arithmetic (stride, offset, reversal), overridden
def affine_ref(X, ST=2, OFF=1):
    I = len(X)
    # an absent X[ST * i + OFF] makes the sum absent (delivered as 0)
    y = np.array([X[ST * i + OFF] + X[I - 1 - i] if 0 <= ST * i + OFF < I else 0.0 for i in range(I)])
    return y, np.array([X[-2 * i + 5] if 0 <= -2 * i + 5 < I else 0.0 for i in range(I)])


_affine = """
input  X[i]
param  ST = 2
param  OFF = 1
output Y, Z
Y[i] = X[ST * i + OFF] + X[I - 1 - i]
Z[i] = X[-2 * i + 5]
"""
case("s12_param_index_affine", _affine, dict(X=rn(9)), affine_ref)
case(
    "s12_param_index_affine_override",
    _affine,
    dict(X=rn(9)),
    lambda X: affine_ref(X, ST=3, OFF=-1),
    params={"ST": 3, "OFF": -1},
)

# --- a scalar int input used in an index and in a filter
case(
    "s12_scalar_int_in_index_and_filter",
    """
input  X[i], off : int
output Y, C
Y[i] = X[i + off]
C    = X[i]  where i >= off
""",
    dict(X=rn(7), off=np.array(3)),
    lambda X, off: (shift(X, 3), X[3:].sum()),
)


# --- gathers inside clamp/min/max/abs; the gather index may be out of range
def gfun_ref(X, idx):
    I = len(X)
    a = X[np.clip(idx + 1, 0, I - 1)]
    b = np.array([X[abs(v)] if abs(v) < I else 0.0 for v in idx])
    c = np.array([X[max(v, j)] if 0 <= max(v, j) < I else 0.0 for j, v in enumerate(idx)])
    return a, b, c


case(
    "s12_gather_inside_index_functions",
    """
input  X[i], idx[j] : int
output A, B, C
A[j] = X[clamp(idx[j] + 1, 0, I - 1)]
B[j] = X[abs(idx[j])]
C[j] = X[max(idx[j], j)]
""",
    dict(X=rn(6), idx=np.array([-3, 0, 5, 9, -7, 2, 1])),
    gfun_ref,
)


# --- a rank that occurs only inside a gather index is summed; a gather scaled and offset
def only_gather_ref(X, idx):
    I = len(X)
    s = np.array([sum(X[v] for v in row if 0 <= v < I) for row in idx])
    t = np.array([sum(X[2 * v + 1] for v in row if 0 <= 2 * v + 1 < I) for row in idx])
    return s, t


case(
    "s12_rank_only_in_gather",
    """
input  X[i], idx[n, k] : int
output S, T
S[n] = X[idx[n, k]]
T[n] = X[2 * idx[n, k] + 1]
""",
    dict(X=rn(8), idx=np.array([[0, 1, 2], [7, 8, -1], [3, 3, 3], [4, 0, 9]])),
    only_gather_ref,
)


# --- unflattening with sizes from another input's shape: X[i * J + j]
case(
    "s12_unflatten_with_sizes",
    """
input  X[n], SHAPE[i, j]
output Y, Z
Y[i, j] = X[i * J + j] + SHAPE[i, j] * 0
Z[j, i] = X[j * I + i] * SHAPE[i, j]
""",
    dict(X=rn(14), SHAPE=rn(3, 4)),
    lambda X, SHAPE: (X[:12].reshape(3, 4), X[:12].reshape(4, 3) * SHAPE.T),
)


# --- filters: not over a disjunction, and, or, chains with params and sizes, chained !=
def logic_ref(X, W=3):
    P, M = X.shape
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    a = ~((m > p) | (m < p - W)) & ((m % 2 == 0) | (m == p))
    b = (p - m >= 1) & (p - m < W) & (W <= M - 1)
    c = (p != m) & (m != 0)
    d = ~~(m >= M - 2) | (np.minimum(p, m) == 0)
    return tuple((X * k).sum(1) for k in (a, b, c, d))


case(
    "s12_filter_logic_combinations",
    """
input  X[p, m]
param  W = 3
output A, B, C, D
A[p] = X[p, m]  where not (m > p or m < p - W) and (m % 2 == 0 or m == p)
B[p] = X[p, m]  where 1 <= p - m < W <= M - 1
C[p] = X[p, m]  where p != m != 0
D[p] = X[p, m]  where not not m >= M - 2 or min(p, m) == 0
""",
    dict(X=rn(7, 7)),
    logic_ref,
)


# --- ?? chains, ?? inside calls, an all-absent default is absent (delivered as 0)
def default_ref(X):
    x1, x2, x3 = shift(X, 1, np.nan), shift(X, 2, np.nan), shift(X, 3, np.nan)
    a = np.where(np.isnan(x2), np.where(np.isnan(x1), X * 10, x1), x2)
    b = np.exp(np.where(np.isnan(x1), 0.0, x1)) + np.maximum(np.where(np.isnan(x1), -np.inf, x1), X)
    c = np.where(np.isnan(x3), 0.0, x3)  # X[i + 7] is never present: absent, delivered as 0
    return a, b, c


case(
    "s12_default_chains_and_calls",
    """
input  X[i]
output A, B, C
A[i] = X[i + 2] ?? X[i + 1] ?? X[i] * 10
B[i] = exp(X[i + 1] ?? 0) + max(X[i + 1] ?? -inf, X[i])
C[i] = X[i + 3] ?? X[i + 7]
""",
    dict(X=rn(5)),
    default_ref,
)


# --- nested calls
def nested_ref(X, Y):
    sp = np.log1p(np.exp(-np.abs(X)))
    a = 1 / (1 + np.exp(-np.tanh(sp)))
    b = np.clip(np.maximum(X, np.minimum(Y, 0)), -1, 1)
    c = np.sqrt(np.square(X) + 1) * (1 / np.sqrt(np.exp(Y)))
    d = np.log2(np.exp2(X)) + np.maximum(X, 0) - np.where(X > 0, X, np.exp(X) - 1)
    return a, b, c, d


case(
    "s12_nested_calls",
    """
input  X[i], Y[i]
output A, B, C, D
A[i] = sigmoid(tanh(softplus(-abs(X[i]))))
B[i] = clamp(max(X[i], min(Y[i], 0)), -1, 1)
C[i] = sqrt(square(X[i]) + 1) * rsqrt(exp(Y[i]))
D[i] = log2(exp2(X[i])) + relu(X[i]) - elu(X[i])
""",
    dict(X=rn(9), Y=rn(9)),
    nested_ref,
)


# --- min/max reductions over several ranks, with filters and defaults; a scalar min over a triangle
def minmax_ref(X):
    P, M, K = X.shape
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    tri = m <= p
    s = X.sum(2)
    mn = np.where(tri, s, np.inf).min()
    mx = np.array(
        [max([X[q, j, k] for j in range(M) for k in range(K) if j > q], default=100.0) for q in range(P)]
    )
    sm = np.where(tri[..., None], X, np.inf).min(axis=(1, 2))
    return mn, mx, sm


case(
    "s12_minmax_multi_rank_reductions",
    """
input  X[p, m, k]
output MN, MX, SM
MN    = X[p, m, k] :: min(p, m)  where m <= p
RX[p] = X[p, m, k] :: max(m, k)  where m > p
MX[p] = RX[p] ?? 100
SM[p] = X[p, m, k] :: min(m, k)  where m <= p
""",
    dict(X=rn(4, 4, 3)),
    minmax_ref,
)


# --- a recurrence whose update reduces with max over a rank: max_j (0.5 R + X) = 0.5 R + max_j X
def rec_max_ref(X):
    T, I, _ = X.shape
    R = np.zeros((T + 1, I))
    for t in range(T):
        R[t + 1] = 0.5 * R[t] + X[t].max(1)
    return R[T]


case(
    "s12_recurrence_update_max_reduction",
    """
input  X[t, i, j]
output F
R[0, i]     = 0
R[t + 1, i] = R[t, i] * 0.5 + X[t, i, j] :: max(j)
F[i]        = R[T, i]
""",
    dict(X=rn(5, 3, 4)),
    rec_max_ref,
)


# --- a recurrence with a filtered step (every other step), guarded; the number of steps is a param and the
# input is read cyclically
def cyc_ref(X, N=7):
    I = len(X)
    r = 1.0
    for n in range(N):
        if n % 2 == 0:
            r = r * 0.5 + X[n % I]
    return r


case(
    "s12_recurrence_filtered_steps_cyclic",
    """
input  X[i]
param  N = 7
output F
U[n]     = X[n % I]  where n % 2 == 0
R[0]     = 1
R[n + 1] = R[n] * 0.5 + U[n] ?? R[n]
F        = R[N]
""",
    dict(X=rn(3)),
    cyc_ref,
)


# --- a shift register: the update reads the previous state at i - 1 (absent at i = 0, defaulted)
def shreg_ref(X):
    T, I = X.shape
    R = np.zeros(I)
    for t in range(T):
        R = np.concatenate([[0.0], R[:-1]]) + X[t]
    return R


case(
    "s12_recurrence_shift_register",
    """
input  X[t, i]
output F
R[0, i]     = 0
R[t + 1, i] = (R[t, i - 1] ?? 0) + X[t, i]
F[i]        = R[T, i]
""",
    dict(X=rn(4, 6)),
    shreg_ref,
)


# --- two states in one step: B reads A after the step
def two_state_ref(X, Y):
    a, b = 0.0, 0.0
    for t in range(len(X)):
        a = a + X[t]
        b = b + a * Y[t]
    return b


case(
    "s12_recurrence_reads_other_state_after",
    """
input  X[t], Y[t]
output F
A[0]     = 0
B[0]     = 0
A[t + 1] = A[t] + X[t]
B[t + 1] = B[t] + A[t + 1] * Y[t]
F        = B[T]
""",
    dict(X=rn(6), Y=rn(6)),
    two_state_ref,
)


# --- a running min over tiles of a partition (outer part iterative), ragged
def runmin_ref(X, M0=4):
    P, M = X.shape
    M1 = -(-M // M0)
    R = np.full((P, M1 + 1), np.inf)
    for t in range(M1):
        R[:, t + 1] = np.minimum(R[:, t], X[:, t * M0 : (t + 1) * M0].min(1))
    return R[:, M1], R


case(
    "s12_running_min_states_middle",
    """
input  X[p, m]
param  M0 = 4
rank   M = M1 * M0
output F, R
L[p, m1]      = X[p, m1 * M0 + m0] :: min(m0)
R[p, 0]       = inf
R[p, m1 + 1]  = min(R[p, m1], L[p, m1])
F[p]          = R[p, M1]
""",
    dict(X=rn(3, 13)),
    runmin_ref,
)


def names_ref(A, B, t):
    math = A @ B
    mx = math.max()
    return np.exp(math * t), mx, np.maximum(A, B[None, :]) + mx


# --- names that collide with generated code: tensors named like modules and functions, ranks like locals
case(
    "s12_names_colliding_with_codegen",
    """
input  np[lo, hi], torch[hi], tl
output exp, max, sum
math[lo]    = np[lo, hi] * torch[hi]
exp[lo]     = exp(math[lo] * tl)
max         = math[lo] :: max(lo)
sum[lo, hi] = max(np[lo, hi], torch[hi]) + max
""",
    dict(np=rn(3, 4), torch=rn(4), tl=np.array(0.5)),
    lambda **kw: names_ref(kw["np"], kw["torch"], kw["tl"]),
    passes={"lo": 2, "hi": 2},
)
