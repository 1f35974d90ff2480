"""More constructs and variants: L2 (Gaussian-kernel) attention whose scores are a sum of squared
differences, states of a recurrence read outside it at shifted, constant, size-relative and out-of-range
indices and through a gather, a gather whose own index runs past its table, an integer scalar as a value and
a modulo, the coordinate of a rank that occurs only as a value and in a filter, a param used as a size, an
index offset and a value, and expressions nested close to the documented depth limit."""

import numpy as np

from .common import make_rn, pm, registry, softmax

rn, rng = make_rn(1806)
CASES, case = registry()


# --- L2 attention (Kim et al., "The Lipschitz constant of self-attention"): the score is -|q - k|^2 / 2,
# a sum over e of squared differences; GQA with 2 query heads per KV head, a window of 3
def l2_ref(Q, K, V, R=2, W=3):
    H, P, _ = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    mask = (p - m >= 0) & (p - m < W)
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        d = Q[h][:, None, :] - K[h // R][None, :, :]
        O[h] = softmax(-0.5 * (d**2).sum(-1), mask) @ V[h // R]
    return O


case(
    "s18_att_l2_distance_scores_gqa_window",
    """
# L2 attention: S = -1/2 sum_e (Q - K)^2, softmax over a window of W keys
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  R = 2
param  W = 3
output O
S[h, m, p]  = -0.5 * square(Q[h, p, e] - K[h // R, m, e])  where 0 <= p - m < W
GM[h, p]    = S[h, m, p] :: max(m)
EX[h, m, p] = exp(S[h, m, p] - GM[h, p])
SD[h, p]    = EX[h, m, p]
O[h, p, f]  = EX[h, m, p] * V[h // R, m, f] / SD[h, p]
""",
    dict(Q=rn(4, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2)),
    l2_ref,
    passes={"m": 3},
)


# --- the states of a recurrence read outside it: two steps ahead, one behind, at a constant, past the
# final state, counted back from the size
def states_ref(X):
    R = [1.0]
    for x in X:
        R.append(R[-1] * 0.5 + x)
    n = len(R)
    T = len(X)
    A = np.array([R[t + 2] if t + 2 < n else -1 for t in range(T)])
    B = np.array([R[t - 1] if t >= 1 else -1 for t in range(T)])
    return A, B, np.array(R[2]), np.array(-7.0), np.array([R[T - t] for t in range(T)])


case(
    "s18_rec_states_read_outside_at_any_index",
    """
# R[t + 2], R[t - 1], R[2], R[T + 1] (past the last state: absent) and R[T - t]
input  X[t]
output A, B, C, D, E2
R[0]     = 1
R[t + 1] = R[t] * 0.5 + X[t]
A[t]     = R[t + 2] ?? -1
B[t]     = R[t - 1] ?? -1
C        = R[2]
D        = R[T + 1] ?? -7
E2[t]    = R[T - t]
""",
    dict(X=rn(4)),
    states_ref,
)


# --- a recurrence over t whose initial state is the coordinate i; its states gathered by idx (3 is the
# final state, 4, 5 and -1 are absent); a coordinate of j, a rank that only a declaration sizes, summed under
# a filter; a param as a size, an index offset and a value; a max over a rank that only the filter uses
def mixed_ref(X, Y, idx, Z):
    I = len(X)
    A = np.array([X[i] * sum(range(i)) for i in range(I)])
    B = A[1:].max()
    R = np.zeros((len(Y) + 1, I))
    R[0] = np.arange(I)
    for t in range(len(Y)):
        R[t + 1] = R[t] * 0.5 + Y[t] * X
    C = np.array([[R[k, i] if 0 <= k <= len(Y) else -1 for i in range(I)] for k in idx])
    D = np.array([[X[p + w - 1] * 3 if 0 <= p + w - 1 < I else 0 for w in range(3)] for p in range(I)])
    return np.where(np.arange(I) > 0, A, 0), np.array(B), C, D, X.copy()


case(
    "s18_lang_gathered_states_coordinates_param_three_roles",
    """
# see the comments of the oracle; Z only sizes j
input  X[i], Y[t], idx[k] : int, Z[j]
param  W = 3
rank   P = I
output A, B, C, D, E1
A[i]        = X[i] * j  where j < i
B           = A[i] :: max(i)  where i > 0
R[0, i]     = i
R[t + 1, i] = R[t, i] * 0.5 + Y[t] * X[i]
C[k, i]     = R[idx[k], i] ?? -1
D[p, w]     = X[p + w - W // 2] * W ?? 0
E1[i]       = X[i] :: max(j)  where j <= i and j < 2
""",
    dict(X=rn(4), Y=rn(3), idx=np.array([0, 3, 4, -1, 2, 5]), Z=np.zeros(4)),
    mixed_ref,
)


# --- a gather whose own index runs past the gather table (perm[j + 1] at the last j), an integer scalar
# as a value and a filter bound, and a modulo by the size of the gathered table
def gather_ref(X, perm, n):
    n = int(n)
    I, J = len(X), len(perm)
    Y = np.array([X[perm[j + 1]] if j + 1 < J and 0 <= perm[j + 1] < I else 100 for j in range(J)])
    Z = np.array([X[i] * n + n if i < n else 0 for i in range(I)])
    W = np.array([X[(i + n) % I] - perm[i % J] for i in range(I)])
    return Y, Z, W


case(
    "s18_lang_gather_index_past_table_int_scalar_value",
    """
# perm[j + 1] past perm's end is absent, and so is X at it; n is an integer scalar input
input  X[i], perm[j] : int, n : int
output Y, Z, W
Y[j] = X[perm[j + 1]] ?? 100
Z[i] = X[i] * n + n  where i < n
W[i] = X[(i + n) % I] - perm[i % J]
""",
    dict(X=rn(5), perm=np.array([4, 0, 7, -1, 2, 3]), n=np.array(3)),
    gather_ref,
)


# --- expressions nested close to the documented limit of 100: a weighted sum of 60 shifted reads, a chain
# of 40 maxima defaulted with ??, and a chain of 60 defaults
_N1, _N2, _N3 = 40, 30, 40
_SUM = " + ".join(f"X[i + {k}] * {k + 1}" for k in range(_N1))
_MAX = "X[i]"
for _k in range(1, _N2):
    _MAX = f"max({_MAX}, X[i + {_k}] ?? -inf)"
_DEF = "X[i]"
for _k in range(1, _N3):
    _DEF = f"({_DEF} ?? X[i + {_k}])"


def nested_ref(X):
    n = len(X)
    A = np.array([sum(X[i + k] * (k + 1) for k in range(_N1)) if i + _N1 <= n else 0 for i in range(n)])
    B = np.array([X[i : i + _N2].max() for i in range(n)])
    return A, B, X.copy()


case(
    "s18_lang_expressions_nested_near_depth_limit",
    f"""
# a sum of {_N1} terms (absent once a read passes the end), {_N2} nested maxima, {_N3} nested defaults
input  X[i]
output A, B, C
A[i] = {_SUM}
B[i] = {_MAX}
C[i] = X[i - 100] ?? {_DEF}
""",
    dict(X=rn(44)),
    nested_ref,
)
