"""Min and max reductions: ties, rows with no present point, present -inf values against absent points,
first and last positions of a document as coordinate reductions, max over two ranks after a sum over a third
(the order of the reduction), tile statistics over a ragged partition with tiles a filter empties for some
rows only, tropical (max-plus and min-plus) attention, and a max over the states of a recurrence."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1404)
CASES, case = registry()


# --- ties, rows that keep nothing (m <= p - 1 keeps nothing of row 0), a present -inf against an absent
# point, and `??` that tells them apart; a sum of zeros (present 0) against an empty sum (absent)
def ties_ref(X):
    P, M = X.shape
    keep = np.arange(M)[None, :] <= np.arange(P)[:, None] - 1
    mx = [X[p][keep[p]].max() if keep[p].any() else None for p in range(P)]
    mn = [X[p][keep[p]].min() if keep[p].any() else None for p in range(P)]
    z = [(X[p][keep[p]] * 0).sum() if keep[p].any() else None for p in range(P)]
    d = lambda a, v: np.array([v if x is None else x for x in a])  # noqa: E731
    return d(mx, 5.0), d(mn, -5.0), d(z, 7.0), d(mx, 0.0)


case(
    "s14_max_min_ties_neg_inf_present_and_absent_rows",
    """
input  X[p, m]
output A, B, C, D
MX[p] = X[p, m] :: max(m)  where m <= p - 1
MN[p] = X[p, m] :: min(m)  where m <= p - 1
Z[p]  = X[p, m] * 0  where m <= p - 1
A[p]  = MX[p] ?? 5
B[p]  = MN[p] ?? -5
C[p]  = Z[p] ?? 7
D[p]  = MX[p]
""",
    dict(
        X=np.array(
            [
                [-np.inf, 1.0, 2.0, 3.0, 4.0],
                [-np.inf, -np.inf, 5.0, 1.0, 4.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [2.0, -2.0, 7.0, 7.0, 1.0],
                [3.0, 3.0, 3.0, -1.0, 9.0],
            ]
        )
    ),
    ties_ref,
)


# --- the first and last position of each query's document up to itself, as min and max reductions of a
# coordinate, and the mean of X over that span (sizes and coordinates as values)
def span_ref(X, doc):
    P = len(doc)
    first, last, mean = np.zeros(P), np.zeros(P), np.zeros(P)
    for p in range(P):
        idx = [m for m in range(P) if doc[m] == doc[p] and m <= p]
        first[p], last[p] = min(idx), max(idx)
        mean[p] = X[idx].sum() / (last[p] - first[p] + 1)
    return first, last, mean


case(
    "s14_document_span_by_coordinate_min_max",
    """
input  X[m], doc[m] : int
rank   P = M
output FIRST, LAST, MEAN
FIRST[p] = m :: min(m)  where doc[m] == doc[p] and m <= p
LAST[p]  = m :: max(m)  where doc[m] == doc[p] and m <= p
SUM[p]   = X[m]  where doc[m] == doc[p] and m <= p
MEAN[p]  = SUM[p] / (LAST[p] - FIRST[p] + 1)
""",
    dict(X=rn(9), doc=np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])),
    span_ref,
)


# --- a max over two ranks (j, k) after the sum over a third (l), with a filter over j and k that empties some
# rows; the same numbers reduced the other way round (the max first, then the sum) in two statements
def order_ref(X):
    I, J, K, L = X.shape
    keep = (np.arange(J)[:, None] + np.arange(K)[None, :]) >= np.arange(I)[:, None, None] + 1  # [i, j, k]
    s = X.sum(3)  # sum over l first
    A = np.array([s[i][keep[i]].max() if keep[i].any() else 0.0 for i in range(I)])
    mx = np.array(
        [[X[i, :, :, l][keep[i]].max() if keep[i].any() else np.nan for l in range(L)] for i in range(I)]
    )
    B = np.where(np.isnan(mx).all(1), 0.0, np.nansum(mx, 1))
    return A, B


case(
    "s14_max_two_ranks_after_sum_and_reverse_order",
    """
input  X[i, j, k, l]
output A, B
A[i]    = X[i, j, k, l] :: max(j, k)  where j + k >= i + 1
ML[i, l] = X[i, j, k, l] :: max(j, k)  where j + k >= i + 1
B[i]    = ML[i, l]
""",
    dict(X=rn(5, 2, 2, 3)),
    order_ref,
)


# --- statistics of each tile of keys (M = 10, tiles of M0 = 4, the last ragged) for each row, under a filter
# that empties whole tiles for some rows only (m >= p): min, max, count and sum; absent tiles give 0
def tile_stats_ref(X, M0=4):
    M, P = X.shape
    M1 = -(-M // M0)
    mn, mx, cnt, sm = (np.zeros((M1, P)) for _ in range(4))
    for k in range(M1):
        for p in range(P):
            v = [X[m, p] for m in range(k * M0, min(M, (k + 1) * M0)) if m >= p]
            if v:
                mn[k, p], mx[k, p], cnt[k, p], sm[k, p] = min(v), max(v), len(v), sum(v)
    return mn, mx, cnt, sm


case(
    "s14_tile_statistics_ragged_partly_empty_tiles",
    """
input  X[m, p]
param  M0 = 4
rank   M = M1 * M0
output TMIN, TMAX, TCNT, TSUM
B[m1, m0, p]  = X[m1 * M0 + m0, p]  where m1 * M0 + m0 >= p
TMIN[m1, p]   = B[m1, m0, p] :: min(m0)
TMAX[m1, p]   = B[m1, m0, p] :: max(m0)
TCNT[m1, p]   = B[m1, m0, p] * 0 + 1
TSUM[m1, p]   = B[m1, m0, p]
""",
    dict(X=rn(10, 9)),
    tile_stats_ref,
)


# --- tropical attention: max-plus O[p, f] = max over visible m of (S[p, m] + V[m, f]) and its min-plus dual,
# causal with a key-padding length n (an int scalar); row 0 sees nothing when n = 0... here n = 6 of 8
def tropical_ref(Q, K, V, n):
    S = Q @ K.T
    P, M = S.shape
    keep = (np.arange(M)[None, :] <= np.arange(P)[:, None]) & (np.arange(M)[None, :] < int(n))
    z = S[:, :, None] + V[None, :, :]
    big = np.where(keep[:, :, None], z, -np.inf).max(1)
    small = np.where(keep[:, :, None], z, np.inf).min(1)
    return big, small


case(
    "s14_tropical_max_plus_min_plus_attention",
    """
input  Q[p, e], K[m, e], V[m, f], n : int
output BIG, SMALL
S[p, m]     = Q[p, e] * K[m, e]  where m <= p and m < n
BIG[p, f]   = S[p, m] + V[m, f] :: max(m)
SMALL[p, f] = S[p, m] + V[m, f] :: min(m)
""",
    dict(Q=rn(7, 3), K=rn(8, 3), V=rn(8, 2), n=np.array(6)),
    tropical_ref,
)


# --- a max and a min over the states of a recurrence (a random walk): R[t] for t < T (the states before each
# step), the final state added by `min`, and the largest single increase R[t + 1] - R[t]
def walk_ref(X):
    R = np.concatenate([np.zeros((1, X.shape[1])), np.cumsum(X, axis=0)])  # states [T + 1, c]
    return R[:-1].max(0), R.min(0), (R[1:] - R[:-1]).max(0), R[-1]


case(
    "s14_max_min_over_recurrence_states",
    """
input  X[t, c]
output HI, LO, JUMP, END
R[0, c]     = 0
R[t + 1, c] = R[t, c] + X[t, c]
HI[c]       = R[t, c] :: max(t)
LOB[c]      = R[t, c] :: min(t)
LO[c]       = min(LOB[c], R[T, c])
JUMP[c]     = R[t + 1, c] - R[t, c] :: max(t)
END[c]      = R[T, c]
""",
    dict(X=rn(7, 3)),
    walk_ref,
)
