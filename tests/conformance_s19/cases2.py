"""Expressions, filters and index expressions (docs/language.md, sections 5 to 9): ``??`` chains grouped
left to right and binding loosest, ``not`` binding tighter than ``and`` and ``or``, ``and`` tighter than
``or``, chains that mix operators and sizes, a zero divisor overridden in (every point absent), negative
divisors with floor semantics, gathers inside filters and inside ``min``/``max``/``abs``, a circular
convolution by ``%`` of the size, the reduction order of a named ``min`` after implicit sums, and an
explicit ``:: +`` beside a filter."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1902)
CASES, case = registry()


# --- `??` groups left to right and binds looser than arithmetic
def default_chain_ref(X):
    n = len(X)
    Y = np.array([X[i + 2] if i + 2 < n else (X[i + 1] if i + 1 < n else -1.0) for i in range(n)])
    Z = np.array([X[i + 1] * 2 if i + 1 < n else X[i] for i in range(n)])
    W = np.array([(X[i - 1] if i >= 1 else 0.0) + 1 for i in range(n)])
    return Y, Z, W


case(
    "s19_expr_default_chain_left_to_right_loosest",
    """
input  X[i]
output Y, Z, W
Y[i] = X[i + 2] ?? X[i + 1] ?? -1       # (X[i + 2] ?? X[i + 1]) ?? -1
Z[i] = X[i + 1] * 2 ?? X[i]             # (X[i + 1] * 2) ?? X[i]
W[i] = (X[i - 1] ?? 0) + 1
""",
    dict(X=rn(5)),
    default_chain_ref,
)


# --- `not` binds tighter than `and`, `and` tighter than `or`
def logic_ref(X):
    i = np.arange(len(X))
    A = X[(i != 1) & (i < 3)].sum()
    B = X[~((i == 1) | (i == 3))].sum()
    C = X[(i == 0) | ((i == 2) & (i > 5))].sum()
    D = X[((i == 0) | (i == 2)) & (i > 1)].sum()
    E = X[~(i < 2) | (i == 0)].sum()
    return A, B, C, D, E


case(
    "s19_filter_not_and_or_precedence",
    """
input  X[i]
output A, B, C, D, E
A = X[i]  where not i == 1 and i < 3          # (not i == 1) and i < 3
B = X[i]  where not (i == 1 or i == 3)
C = X[i]  where i == 0 or i == 2 and i > 5    # i == 0 or (i == 2 and i > 5)
D = X[i]  where (i == 0 or i == 2) and i > 1
E = X[i]  where not i < 2 or i == 0           # (not i < 2) or i == 0
""",
    dict(X=np.array([1.0, 10.0, 100.0, 1000.0, 10000.0])),
    logic_ref,
)


# --- a chain that mixes operators, sizes and two ranks: 0 < i <= I - 2 != j is 0 < i, i <= I - 2, I - 2 != j
def chain_ref(X):
    I, J = X.shape
    Y = np.zeros(J)
    for j in range(J):
        Y[j] = sum(X[i, j] for i in range(I) if 0 < i <= I - 2 and j != I - 2)
    return Y


case(
    "s19_filter_chain_mixes_operators_sizes_two_ranks",
    """
input  X[i, j]
output Y
Y[j] = X[i, j]  where 0 < i <= I - 2 != j
""",
    dict(X=rn(5, 4)),
    chain_ref,
)


# --- a divisor param overridden to 0: every `//` and `%` by it is absent, in indices and in filters
case(
    "s19_index_zero_divisor_param_overridden_absent",
    """
input  X[i]
param  D = 2
output A, B, C, N
A[i] = X[i // D] ?? -1
B[i] = X[i % D] ?? -2
C    = X[i]  where i % D == 0 or i == 1     # no value for the filter: absent, whatever `or` says
N[i] = X[i]  where i // D >= 0
""",
    dict(X=rn(5)),
    lambda X: (-np.ones(5), -2 * np.ones(5), np.array(0.0), np.zeros(5)),
    params={"D": 0},
)


# --- negative divisors: floor division and modulo with the sign of the divisor, as in Python
def neg_div_ref(X):
    n = len(X)

    def rd(k):
        return X[k] if 0 <= k < n else 9.0

    A = np.array([rd(i % -3) for i in range(n)])
    B = np.array([rd((0 - i) // -2) for i in range(n)])
    C = np.array([rd((i - 5) // 2 + 3) for i in range(n)])
    D = np.array([rd((i - 4) % 3) for i in range(n)])
    return A, B, C, D


case(
    "s19_index_negative_divisors_floor_semantics",
    """
input  X[i]
output A, B, C, D
A[i] = X[i % -3] ?? 9           # 0, -2, -1, 0, -2, ...: the negative ones are absent
B[i] = X[(0 - i) // -2] ?? 9
C[i] = X[(i - 5) // 2 + 3] ?? 9
D[i] = X[(i - 4) % 3] ?? 9
""",
    dict(X=rn(7)),
    neg_div_ref,
)


# --- a gather inside a gather inside a filter: grp[perm[m]] == grp[perm[p]]; perm points outside grp make
# the point absent whatever the `or` says
def gather_filter_ref(X, perm, grp):
    P, M = X.shape
    G = len(grp)

    def g(k):
        j = perm[k]
        return grp[j] if 0 <= j < G else None

    Y = np.zeros(P)
    for p in range(P):
        for m in range(M):
            a, b = g(m), g(p)
            if a is None or b is None:
                continue
            if a == b or m == p:
                Y[p] += X[p, m]
    return Y


case(
    "s19_filter_nested_gathers_out_of_range_or",
    """
input  X[p, m], perm[n] : int, grp[k] : int
output Y
Y[p] = X[p, m]  where grp[perm[m]] == grp[perm[p]] or m == p
""",
    dict(X=rn(5, 5), perm=np.array([2, 0, 6, 1, -1]), grp=np.array([0, 1, 0, 1, 2])),
    gather_filter_ref,
)


# --- gathers inside min, max and abs in an index, with negative and too-large positions
def gather_funcs_ref(X, pos):
    I = len(X)

    def rd(k):
        return X[k] if 0 <= k < I else 0.0

    A = np.array([rd(min(pos[j], I - 1)) for j in range(len(pos))])
    B = np.array([rd(abs(pos[j])) for j in range(len(pos))])
    C = np.array([rd(max(pos[j] - 1, 0)) for j in range(len(pos))])
    D = np.array([rd(max(min(2 * pos[j], I - 1), 0)) for j in range(len(pos))])
    return A, B, C, D


case(
    "s19_index_gathers_inside_min_max_abs",
    """
input  X[i], pos[j] : int
output A, B, C, D
A[j] = X[min(pos[j], I - 1)]
B[j] = X[abs(pos[j])]
C[j] = X[max(pos[j] - 1, 0)]
D[j] = X[clamp(2 * pos[j], 0, I - 1)]
""",
    dict(X=rn(6), pos=np.array([-3, 0, 2, 5, 9, -1])),
    gather_funcs_ref,
)


# --- a circular convolution: the index wraps modulo the size I
def circ_ref(X, w):
    I, K = len(X), len(w)
    return np.array([sum(w[k] * X[(i - k) % I] for k in range(K)) for i in range(I)])


case(
    "s19_index_circular_convolution_mod_size",
    """
input  X[i], w[k]
output Y
Y[i] = w[k] * X[(i - k) % I]
""",
    dict(X=rn(5), w=rn(3)),
    circ_ref,
)


# --- the named reduction comes after the implicit sums: sum over l, then min over (j, k); and an explicit
# `:: +(j)` with a filter over the reduced rank
def order_ref(X):
    A = X.sum(3).min(axis=(1, 2))
    I, J = X.shape[:2]
    B = np.array([sum(X[i, j, :, :].sum() for j in range(J) if j != i) for i in range(I)])
    return A, B


case(
    "s19_reduction_named_min_after_implicit_sum_and_explicit_plus",
    """
input  X[i, j, k, l]
output A, B
A[i] = X[i, j, k, l] :: min(j, k)          # l is summed first
B[i] = X[i, j, k, l] :: +(j)  where j != i  # k and l summed too: one operator for all
""",
    dict(X=rn(3, 3, 2, 4)),
    order_ref,
)


# --- values that mix coordinates, sizes and params: (i - j) * C + I * J - K0 with a float param overridden
case(
    "s19_value_coordinates_sizes_params_mixed",
    """
input  X[i, j]
param  C = 0.5
param  K0 = 3
output Y
Y[i, j] = X[i, j] + (i - j) * C + I * J - K0 + X[i, J - 1 - j] * j
""",
    dict(X=rn(3, 4)),
    lambda X: (
        X
        + (np.arange(3)[:, None] - np.arange(4)[None, :]) * -1.25
        + 12
        - 3
        + X[:, ::-1] * np.arange(4)[None, :]
    ),
    params={"C": -1.25},
)


# --- a float param in a filter, overridden: p - m < R with R = 2.5 keeps the distances 0, 1 and 2; and an
# integral float override of an integer param that is used in an index
def float_filter_ref(X, R=2.5, S=2):
    P, M = X.shape
    A = np.array([sum(X[p, m] for m in range(M) if 0 <= p - m < R) for p in range(P)])
    B = np.array([X[p, p + S] if p + S < M else 0.0 for p in range(P)])
    return A, B


case(
    "s19_filter_float_param_and_integral_override_in_index",
    """
input  X[p, m]
param  R = 1.5
param  S = 1
output A, B
A[p] = X[p, m]  where 0 <= p - m < R
B[p] = X[p, p + S]
""",
    dict(X=rn(5, 5)),
    float_filter_ref,
    params={"R": 2.5, "S": 2.0},
)


# --- max over a filtered rank, empty for the first row: absent, then defaulted; min of the defaulted rows
case(
    "s19_reduction_filtered_max_empty_row_defaulted",
    """
input  X[p, m]
output MX, SAFE, LOWEST
MX[p]   = X[p, m] :: max(m)  where m < p
SAFE[p] = MX[p] ?? -5
LOWEST  = SAFE[p] :: min(p)
""",
    dict(X=rn(4, 4) + 3),
    lambda X: (
        np.array([0.0] + [X[p, :p].max() for p in range(1, 4)]),
        np.array([-5.0] + [X[p, :p].max() for p in range(1, 4)]),
        np.array(-5.0),
    ),
)
