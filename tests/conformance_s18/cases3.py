"""Constructs of docs/language.md in combinations earlier sets do not use: names that begin like the
reserved words (``notx``, ``andy``, ``orb``, ``inf1``, ``where_``), every number spelling and signed
params, chained comparisons with sizes and params at both ends, ``not not``, float and infinite bounds in
filters, zero and negative divisors in indices, doubly gathered document ids, joint ``:: min`` over two
ranks after a sum, coordinates of an iterative rank inside its update, nested ``abs`` of a negative
modulo, gathers whose ids run past the table, and ``??`` of functions of absent reads."""

import numpy as np

from .common import make_rn, registry, softmax

rn, rng = make_rn(1803)
CASES, case = registry()


# --- names that start like reserved words: a rank `andy`, a rank `orb`, tensors `notx`, `inf1`, `where_`,
# params `input2`, outputs `rank_` and `output_`
def kw_ref(notx, inf1, where_):
    A, B = notx.shape
    r = np.zeros(A)
    pres = np.zeros(A, bool)
    for a in range(A):
        for b in range(B):
            if (not a < 1 and b >= 1) or where_[b] == 2:
                r[a] += notx[a, b] * inf1[a] - inf1[a]
                pres[a] = True
    return np.where(pres, r, 0), r[pres].max()


case(
    "s18_lang_names_prefixed_by_reserved_words",
    """
# notx, andy, orb, inf1, where_, input2, rank_, output_ are names, not keywords
input  notx[andy, orb], inf1[andy], where_[orb] : int
param  input2 = 2
output rank_, output_
rank_[andy] = notx[andy, orb] * inf1[andy] + -inf1[andy]  where not andy < 1 and orb >= 1 or \
              where_[orb] == input2
output_     = rank_[andy] :: max(andy)
""",
    dict(notx=rn(4, 3), inf1=rn(4), where_=np.array([2, 0, 2])),
    kw_ref,
)


# --- every number spelling, signed params (+inf and -inf bounds, a tiny float that underflows to 0)
def numbers_ref(X):
    return (
        X * 1e1 + 0.5e1 + 5e-1 + 2.0 - 0.25,
        np.clip(X, -np.inf, np.inf),
        X * 0.0,
        np.minimum(X, 3.0) + 7,
    )


case(
    "s18_lang_number_spellings_signed_params",
    """
# 1.e1, .5e1, 5E-1, 2., .25 and params +inf, -inf, +1e-400 (which is 0), +7
input  X[i]
param  HI = +inf
param  LO = -inf
param  TINY = +1e-400
param  SEVEN = +7
output A, B, C, D
A[i] = X[i] * 1.e1 + .5e1 + 5E-1 + 2. - .25
B[i] = clamp(X[i], LO, HI)
C[i] = X[i] * TINY
D[i] = min(X[i], 3.) + SEVEN
""",
    dict(X=rn(5, scale=3)),
    numbers_ref,
)


# --- chained comparisons with a param and a size at the ends, a constant-false tail, `==` chains, not not,
# float and infinite bounds
def chains_ref(X, A=1):
    I = len(X)
    i = np.arange(I)
    r1 = np.where((i >= A) & (i < 4) & (I >= 4), X, 0)
    r2 = np.zeros(I)
    r3 = X.copy()
    r4 = np.where(i < 2, X, 0)
    r5 = np.where(i < 2.5, X, 0)
    r6 = X.copy()
    return r1, r2, r3, r4, r5, r6


case(
    "s18_lang_chained_comparisons_constants_not_not_floats",
    """
# A <= i < 4 <= I; a chain whose constant tail is false; i == i == i; not not; 2.5 and inf bounds
input  X[i]
param  A = 1
output R1, R2, R3, R4, R5, R6
R1[i] = X[i]  where A <= i < 4 <= I
R2[i] = X[i]  where 0 <= i < 2 < 1
R3[i] = X[i]  where i == i == i
R4[i] = X[i]  where not not i < 2
R5[i] = X[i]  where i < 2.5
R6[i] = X[i]  where -inf < i < inf
""",
    dict(X=rn(6)),
    chains_ref,
)


# --- index divisors: zero (every point absent), negative (Python's floor semantics), and a modulo by a
# negative param that is never in range but at 0
def divisors_ref(X):
    n = len(X)

    def at(j):
        return X[j] if 0 <= j < n else 7.0

    A = np.full(n, 7.0)
    B = np.array([at(i % -3) for i in range(n)])
    C = np.array([at((i + 1) // -3 + 2) for i in range(n)])
    D = np.array([at(abs((i - 3) % 4 - 2)) for i in range(n)])
    return A, B, C, D


case(
    "s18_lang_index_zero_and_negative_divisors_nested_abs",
    """
# i // 0 is absent; i % -3 is 0, -1 or -2; (i + 1) // -3 floors toward -inf; abs of a negative modulo
input  X[i]
param  Z = 0
param  N = -3
output A, B, C, D
A[i] = X[i // Z] ?? 7
B[i] = X[i % N] ?? 7
C[i] = X[(i + 1) // N + 2] ?? 7
D[i] = X[abs((i - 3) % 4 - 2)] ?? 7
""",
    dict(X=rn(6)),
    divisors_ref,
)


# --- document ids reached through a permutation and a second table: grp[perm[m]] == grp[perm[p]]; ids
# past the table (perm = 9) make the point absent whatever the `or` says
def double_gather_ref(Q, K, V, perm, grp):
    P = Q.shape[0]
    M = K.shape[0]

    def gid(i):
        j = perm[i]
        return grp[j] if 0 <= j < len(grp) else None

    mask = np.zeros((P, M), bool)
    for a in range(P):
        for b in range(M):
            ga, gb = gid(a), gid(b)
            if ga is not None and gb is not None:
                mask[a, b] = ga == gb or b == 0
    return softmax(Q @ K.T, mask) @ V


case(
    "s18_lang_doubly_gathered_group_ids_or_first_key",
    """
# a query sees keys of its group (through two tables) and key 0; an id past the table is absent
input  Q[p, e], K[m, e], V[m, f], perm[n] : int, grp[g] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where grp[perm[m]] == grp[perm[p]] or m == 0
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(6, 2),
        K=rn(6, 2),
        V=rn(6, 2),
        perm=np.array([3, 0, 9, 1, 2, 0]),
        grp=np.array([1, 0, 1, 0]),
    ),
    double_gather_ref,
    passes={"m": 3},
)


# --- a sum over j, then a joint min over (m, n) under a filter on both; then a max over m alone
def joint_min_ref(X):
    M, N = X.shape[2:]
    sj = X.sum(1)
    mm, nn = np.meshgrid(np.arange(M), np.arange(N), indexing="ij")
    keep = (mm + nn) % 2 == 0
    A = np.where(keep[None], sj, np.inf).min((1, 2))
    B = np.where(keep[None], sj, -np.inf).max(2).max(1)
    return A, B


case(
    "s18_lang_sum_then_joint_min_two_ranks_filtered",
    """
# j is summed first, then the min over (m, n) on a checkerboard; B: the max over n then m, same filter
input  X[i, j, m, n]
output A, B
A[i]    = X[i, j, m, n] :: min(m, n)  where (m + n) % 2 == 0
BN[i, m] = X[i, j, m, n] :: max(n)  where (m + n) % 2 == 0
B[i]    = BN[i, m] :: max(m)
""",
    dict(X=rn(2, 3, 3, 4)),
    joint_min_ref,
)


# --- the iterative coordinate as a value inside the update, a param-sized number of steps beyond the data
# (reads past the end are absent: ?? keeps the state)
def coord_update_ref(X, y, N=7):
    R = [float(y)]
    for t in range(N):
        x = X[t] if t < len(X) else None
        R.append(R[-1] * 0.5 + t * x if x is not None else R[-1])
    return np.array(R), R[-1]


case(
    "s18_lang_iterative_coordinate_in_update_steps_past_data",
    """
# R[t + 1] = R[t] / 2 + t X[t]; for t past X's end the update is absent and ?? keeps the state
input  X[i], y
param  N = 7
output R, F
R[0]     = y
R[n + 1] = R[n] * 0.5 + n * X[n] ?? R[n]
F        = R[N]
""",
    dict(X=rn(5), y=np.array(1.5)),
    coord_update_ref,
)


# --- functions of absent reads, defaulted at different levels: exp(X[i + 1]) ?? 1, log(abs(X[i - 1]) ?? 1),
# max(X[i + 2] ?? -inf, X[i]), sqrt of a read past the end inside a sum
def absent_fn_ref(X):
    n = len(X)

    def at(j):
        return X[j] if 0 <= j < n else None

    A = np.array([np.exp(at(i + 1)) if at(i + 1) is not None else 1.0 for i in range(n)])
    B = np.array([np.log(abs(at(i - 1))) if at(i - 1) is not None else 0.0 for i in range(n)])
    C = np.array([max(at(i + 2), X[i]) if at(i + 2) is not None else X[i] for i in range(n)])
    D = sum(np.sqrt(abs(at(i + 3))) for i in range(n) if at(i + 3) is not None)
    return A, B, C, D


case(
    "s18_lang_functions_of_absent_reads_defaulted_at_levels",
    """
# a function of an absent read is absent; ?? at the function or inside it
input  X[i]
output A, B, C, D
A[i] = exp(X[i + 1]) ?? 1
B[i] = log(abs(X[i - 1]) ?? 1)
C[i] = max(X[i + 2] ?? -inf, X[i])
D    = sqrt(abs(X[i + 3]))
""",
    dict(X=rn(6)),
    absent_fn_ref,
)


# --- min/max/abs/% in a filter over a reduced rank: sinks (m < min(p, 2)) or a strided band
# (abs(2 p - m) <= 1) or the same residue mod 3 below p
def filter_mix_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p = np.arange(P)[:, None]
    m = np.arange(M)[None, :]
    mask = (m < np.minimum(p, 2)) | (np.abs(2 * p - m) <= 1) | (((p - m) % 3 == 0) & (m < p))
    return softmax(Q @ K.T * 0.7, mask) @ V


case(
    "s18_lang_filter_min_abs_mod_over_reduced_rank",
    """
# sinks up to min(p, 2), a band around 2p, and every third earlier key
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e] * 0.7  where m < min(p, 2) or abs(2 * p - m) <= 1 or (p - m) % 3 == 0 and m < p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(6, 3), K=rn(11, 3), V=rn(11, 2)),
    filter_mix_ref,
    passes={"m": 3},
)


# --- a statement that reads a tensor defined further down, outputs declared in two lines out of order,
# and a scalar output beside a vector one
def order_ref(X):
    A = X + 1
    B = A * 2
    return B.sum(), B, A


case(
    "s18_lang_forward_reads_outputs_two_lines_scalar",
    """
output TOTAL
B[i]  = A[i] * 2
TOTAL = B[i]
input  X[i]
A[i]  = X[i] + 1
output B, A
""",
    dict(X=rn(4)),
    order_ref,
)
