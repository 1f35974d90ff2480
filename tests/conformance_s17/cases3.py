# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""The constructs of docs/language.md in combinations: ranks that occur only in a filter (counts with a
constant value), filters mixing two ranks with coefficients, ``//`` and ``%`` of negative values and an
overridden divisor, reflect padding by nested ``abs`` in an index, ``min``/``max``/``clamp`` in filters and
in gathered indices, chained ``??`` defaults with functions, sums of defaulted absent points, negative
integer params in indices overridden, gathers scaled, shifted, nested and floor-divided, coordinates and
sizes as values, ``+`` then ``max``/``min`` reductions over several ranks, a five-point stencil with and
without defaults, filters that read past the end under ``not`` and ``or``, a constant-only term in a
chained filter, scalars read at constant indices, and reversed reads written with unary minus."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1703)
CASES, case = registry()


# --- ranks that occur only in a filter: n is reduced though no value mentions it
def filter_only_ref(X, doc):
    N = len(doc)
    P = X.shape[0]
    CNT = np.array([sum(doc[n] == doc[p] for n in range(N)) for p in range(P)], float)
    Y = np.array([X[p] * sum(doc[n] == doc[p] and n < p for n in range(N)) for p in range(P)], float)
    PAIRS = float(sum(doc[n] == doc[p] and n != p for n in range(N) for p in range(P)))
    return CNT, Y, PAIRS


case(
    "s17_lang_rank_only_in_filter_counts",
    """
# n appears only in the filters: each statement sums over it, counting the documents' tokens
input  X[p], doc[n] : int
output CNT, Y, PAIRS
CNT[p] = 1  where doc[n] == doc[p]
Y[p]   = X[p]  where doc[n] == doc[p] and n < p
PAIRS  = 1  where doc[n] == doc[p] and n != p
""",
    dict(X=rn(6), doc=np.array([0, 0, 1, 0, 2, 2], dtype=np.int64)),
    filter_only_ref,
)


# --- filters mixing two ranks: a strided causal band, floor division of both, modulo of a negative
def mixed_filter_ref(X, R=3):
    P, M = X.shape
    A = np.zeros(P)
    B = np.zeros(P)
    C = np.zeros(P)
    for p in range(P):
        for m in range(M):
            if 2 * m <= p + 1 and (p - m) % 3 != 1:
                A[p] += X[p, m]
            if m // 2 == p // 3:
                B[p] += X[p, m]
            if (m - p) % R == R - 1 and (m - 2 * p) // 2 >= -2:
                C[p] += X[p, m]
    return A, B, C


case(
    "s17_lang_filters_two_ranks_coefficients_floor_mod",
    """
# each query sums keys chosen by affine, floor-division and modulo conditions over both ranks
input  X[p, m]
param  R = 4
output A, B, C
A[p] = X[p, m]  where 2 * m <= p + 1 and (p - m) % 3 != 1
B[p] = X[p, m]  where m // 2 == p // 3
C[p] = X[p, m]  where (m - p) % R == R - 1 and -2 <= (m - 2 * p) // 2
""",
    dict(X=rn(7, 9)),
    mixed_filter_ref,
    params={"R": 3},
)


# --- reflect padding: j runs over J = I + 2 PAD positions, reflected at both ends with nested abs
def reflect_ref(X, PAD=2, J=9):
    I = len(X)
    out = np.zeros(J)
    for j in range(J):
        k = abs(j - PAD)
        k = I - 1 - abs(I - 1 - k)
        out[j] = X[k]
    # W: `*` binds tighter than `-`, so the index is I - 1 + abs(I - 1 - abs(j - PAD)): in range only at j = 6
    W = np.zeros(J)
    for j in range(J):
        k = I - 1 + abs(I - 1 - abs(j - PAD))
        if k < I:
            W[j] = X[k]
    return out, np.pad(X, PAD, mode="reflect"), W


case(
    "s17_lang_reflect_padding_nested_abs_index",
    """
# numpy's "reflect" padding: abs folds the left edge, I - 1 - abs(I - 1 - k) the right edge; W is a precedence trap
input  X[i]
param  PAD = 2
param  J = 9
output Y, Z, W
Y[j] = X[I - 1 - abs(I - 1 - abs(j - PAD))]
Z[j] = X[abs((I - 1 - abs(I - 1 - abs(j - PAD))) * -1)]
W[j] = X[abs(I - 1 - abs(I - 1 - abs(j - PAD)) * -1)]       # precedence: I - 1 - (abs(...) * -1)
""",
    dict(X=rn(5)),
    reflect_ref,
)


# --- min/max in a filter (a symmetric band written with both) and clamp around a gathered index
def minmax_ref(X, pos, V):
    P, M = X.shape
    A = np.array([sum(X[p, m] for m in range(M) if max(m, p) - min(m, p) <= 2) for p in range(P)])
    I = len(V)
    G = np.array([V[min(max(pos[j] + 1, 0), I - 1)] for j in range(len(pos))])
    H = np.array([V[max(pos[j], 1)] if max(pos[j], 1) < I else 0.0 for j in range(len(pos))])
    return A, G, H


case(
    "s17_lang_min_max_filter_and_clamped_gather",
    """
# |m - p| <= 2 as max - min; a gathered index clamped into range; max(pos, 1) can still run past the end
input  X[p, m], pos[j] : int, V[i]
output A, G, H
A[p] = X[p, m]  where max(m, p) - min(m, p) <= 2
G[j] = V[clamp(pos[j] + 1, 0, I - 1)]
H[j] = V[max(pos[j], 1)]
""",
    dict(X=rn(5, 7), pos=np.array([-3, 0, 2, 5, 9], dtype=np.int64), V=rn(6)),
    minmax_ref,
)


# --- chained defaults: (a ?? b) ?? c, functions of defaulted reads, absent only where all are
def chain_ref(X):
    I = len(X)
    A = np.zeros(I)
    B = np.zeros(I)
    for i in range(I):
        if i + 3 < I:
            A[i] = X[i + 3]
        elif i - 3 >= 0:
            A[i] = X[i - 3]
        else:
            A[i] = 7.0
        if i + 3 < I:
            B[i] = np.exp(X[i + 3])
        else:
            B[i] = np.log(X[i - 1] if i >= 1 else 1.0)
    return A, B


case(
    "s17_lang_chained_defaults_with_functions",
    """
# ?? groups from the left: ((a ?? b) ?? c); a function of an absent read is absent, so its ?? applies
input  X[i]
output A, B
A[i] = X[i + 3] ?? X[i - 3] ?? 7
B[i] = exp(X[i + 3]) ?? log(X[i - 1] ?? 1) ?? -1
""",
    dict(X=np.abs(rn(5)) + 0.5),
    chain_ref,
)


# --- sums of defaulted points: a row with nothing present sums zeros (present), not an absent sum
def defaulted_sum_ref(X):
    P, M = X.shape
    keep = np.arange(M)[None, :] < np.arange(P)[:, None]
    T = np.where(keep, X, 0).sum(1)
    RAW = T.copy()
    RAW[~keep.any(1)] = -5.0
    return T, np.full(P, float(M)), T / M, RAW


case(
    "s17_lang_sums_of_defaulted_absent_points",
    """
# KEEP is absent above the strict diagonal; KEEP ?? 0 is present everywhere, so row 0 sums to a present 0
input  X[p, m]
output T, N, MEAN, RAW
KEEP[p, m] = X[p, m]  where m < p
T[p]       = KEEP[p, m] ?? 0
N[p]       = (KEEP[p, m] ?? 0) * 0 + 1
MEAN[p]    = T[p] / N[p]
S[p]       = KEEP[p, m]
RAW[p]     = S[p] ?? -5
""",
    dict(X=rn(4, 6)),
    defaulted_sum_ref,
)


# --- a negative integer param in an index (overridden to a positive one) and as a filter bound
def negparam_ref(X, OFF=3, LO=-1):
    I = len(X)
    Y = np.array([X[i + OFF] if 0 <= i + OFF < I else 0.0 for i in range(I)])
    Z = np.array([X[i] * (i - LO) if i + LO >= 1 else 0.0 for i in range(I)])
    return Y, Z


case(
    "s17_lang_negative_int_params_index_filter_override",
    """
# OFF = -2 as written (a read before the start), overridden to 3; LO a negative bound and a value
input  X[i]
param  OFF = -2
param  LO = -1
output Y, Z
Y[i] = X[i + OFF]
Z[i] = X[i] * (i - LO)  where i + LO >= 1
""",
    dict(X=rn(7)),
    negparam_ref,
    params={"OFF": 3},
)


# --- gathers scaled and shifted, nested, floor-divided, and in a filter
def gathers_ref(X, idx, perm):
    I = len(X)
    J = len(idx)

    def rd(k):
        return X[k] if 0 <= k < I else None

    A, B, C, D = (np.zeros(J) for _ in range(4))
    for j in range(J):
        A[j] = rd(2 * idx[j] + 1) or 0.0
        pj = perm[j]
        B[j] = (rd(perm[pj]) or 0.0) if 0 <= pj < len(perm) else 0.0
        C[j] = rd(idx[j] // 2) or 0.0
        D[j] = X[j] if idx[j] % 2 == 0 else 0.0
    return A, B, C, D


case(
    "s17_lang_gathers_scaled_nested_floordiv_filter",
    """
# an index value scaled and shifted, a gather of a gather, a floor-divided gather, a gathered filter
input  X[i], idx[j] : int, perm[j] : int
output A, B, C, D
A[j] = X[2 * idx[j] + 1]
B[j] = X[perm[perm[j]]]
C[j] = X[idx[j] // 2]
D[j] = X[j]  where idx[j] % 2 == 0
""",
    dict(
        X=rn(7) + 3.0,
        idx=np.array([0, 3, -1, 2, 5, -3], dtype=np.int64),
        perm=np.array([2, 0, 5, 1, 9, 4], dtype=np.int64),
    ),
    gathers_ref,
)


# --- coordinates and sizes as values, in sums and in a denominator
def coords_ref(X):
    I, J = X.shape
    i = np.arange(I)[:, None]
    j = np.arange(J)[None, :]
    Y = X * (i - j) / (J - 1) + I
    W = (X * (j + 1)).sum(1) / (j + 1).sum()
    CEN = (X * j).sum(1) / (X.sum(1))
    return Y, W, CEN


case(
    "s17_lang_coordinates_and_sizes_as_values",
    """
# coordinates as values: a ramp, a weighted mean with weights j + 1, a centroid
input  X[i, j]
output Y, W, CEN
Y[i, j] = X[i, j] * (i - j) / (J - 1) + I
JS      = j + 1
NUM[i]  = X[i, j] * (j + 1)
W[i]    = NUM[i] / JS
XS[i]   = X[i, j]
CJ[i]   = X[i, j] * j
CEN[i]  = CJ[i] / XS[i]
""",
    dict(X=np.abs(rn(3, 5)) + 0.1),
    coords_ref,
)


# --- sums first, then max / min over the named ranks, with a filter over the reduced ranks
def order_ref(X, W):
    I, J, K = X.shape
    A = (X * W[None, :, None]).sum(1).max(0)
    B = np.zeros(I)
    for i in range(I):
        B[i] = min(X[i, j, k] * W[j] for j in range(J) for k in range(K) if j != k)
    C = X.sum(2).max(1).min()  # sum over k, then max over j, then min over i
    return A, B, C


case(
    "s17_lang_sum_then_max_min_reductions_filtered",
    """
# unnamed ranks are summed before the named ones are reduced; :: min over two ranks with a filter
input  X[i, j, k], W[j]
output A, B, C
A[k]  = X[i, j, k] * W[j] :: max(i)
B[i]  = X[i, j, k] * W[j] :: min(j, k)  where j != k
SK[i, j] = X[i, j, k]
MJ[i] = SK[i, j] :: max(j)
C     = MJ[i] :: min(i)
""",
    dict(X=rn(3, 4, 5), W=rn(4)),
    order_ref,
)


# --- a five-point Laplacian: absent at the border as written (delivered 0), zero padding with ?? 0
def lap_ref(X):
    Xp = np.pad(X, 1)
    L0 = Xp[:-2, 1:-1] + Xp[2:, 1:-1] + Xp[1:-1, :-2] + Xp[1:-1, 2:] - 4 * X
    L = np.zeros_like(X)
    L[1:-1, 1:-1] = L0[1:-1, 1:-1]
    return L, L0


case(
    "s17_lang_five_point_stencil_absent_vs_defaulted",
    """
# the Laplacian reads four neighbours; any read past an edge makes the point absent unless defaulted
input  X[i, j]
output L, LZ
L[i, j]  = X[i - 1, j] + X[i + 1, j] + X[i, j - 1] + X[i, j + 1] - 4 * X[i, j]
LZ[i, j] = (X[i - 1, j] ?? 0) + (X[i + 1, j] ?? 0) + (X[i, j - 1] ?? 0) + (X[i, j + 1] ?? 0) - 4 * X[i, j]
""",
    dict(X=rn(4, 5)),
    lap_ref,
)


# --- filters reading an int tensor past its end: absent whatever not / or say
def oob_filter_ref(X, d):
    I = len(X)
    A = np.array([X[i] if i >= 1 and d[i - 1] != d[i] else 0.0 for i in range(I)])
    B = np.array([X[i] if i + 1 < I and (d[i + 1] != d[i] or i == 0) else 0.0 for i in range(I)])
    C = np.array([X[i] if i >= 1 and (d[i - 1] == d[i]) else 0.0 for i in range(I)])
    return A, B, C


case(
    "s17_lang_filter_reads_past_end_under_not_and_or",
    """
# d[i - 1] at i = 0 and d[i + 1] at the last i are absent: the filter's point is absent, not rescued
input  X[i], d[i] : int
output A, B, C
A[i] = X[i]  where not d[i - 1] == d[i]
B[i] = X[i]  where d[i + 1] != d[i] or i == 0
C[i] = X[i]  where not (not d[i - 1] == d[i])
""",
    dict(X=rn(6), d=np.array([0, 0, 1, 1, 1, 2], dtype=np.int64)),
    oob_filter_ref,
)


# --- a constant-only comparison inside a chained filter: W = 5 overridden makes `W <= 4` false everywhere
def const_term_ref(X, W=5):
    I, J = X.shape
    i = np.arange(I)[:, None]
    j = np.arange(J)[None, :]
    band = (i - j >= 0) & (i - j < W)
    A = np.zeros(I) if not W <= 4 else np.where(band, X, 0).sum(1)
    return A, np.where(band, X, 0).sum(1)


case(
    "s17_lang_constant_term_in_chained_filter_overridden",
    """
# 0 <= i - j < W <= 4 chains three comparisons, the last one of constants only
input  X[i, j]
param  W = 3
output A, B
A[i] = X[i, j]  where 0 <= i - j < W <= 4
B[i] = X[i, j]  where 0 <= i - j < W
""",
    dict(X=rn(6, 6)),
    const_term_ref,
    params={"W": 5},
)


# --- scalars read at constant indices and reversed reads written with unary minus
def const_idx_ref(X):
    I, J = X.shape
    return X[0, J - 1], X[I - 1, 0] - X[0, 0], X[::-1, :], X[:, ::-1] * 2


case(
    "s17_lang_constant_indices_and_unary_minus_reversal",
    """
# corners of X as scalars; rows reversed as -i + I - 1, columns as -(j - J + 1)
input  X[i, j]
output FIRST, DIFF, REVI, REVJ
FIRST      = X[0, J - 1]
DIFF       = X[I - 1, 0] - X[0, 0]
REVI[i, j] = X[-i + I - 1, j]
REVJ[i, j] = - -X[i, -(j - J + 1)] * 2
""",
    dict(X=rn(3, 4)),
    const_idx_ref,
)
