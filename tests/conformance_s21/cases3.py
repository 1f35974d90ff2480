"""The language: unary minus under named reductions, a term that does not vary along a summed rank counted
once per present point of a ragged tile, filters with floor division and modulo, ``??`` unions and chains of
two filtered maxima, nested functions checked by identities, multi-letter rank names with mixed-case tensors,
continuations, tabs and comments, a joint max over a rank and its alias with a count from a filter-only rank,
scalar outputs of a softmax over every point, the states of a recurrence returned and reduced over the rank's
own range, a histogram over a param-sized rank, and param spellings overridden."""

import numpy as np

from .common import att, elu, make_rn, pm, registry, relu, sig, softplus

rn, rng = make_rn(2103)
CASES, case = registry()


# --- unary minus binds tighter than the reduction clause covers: the max of -X is minus the min
case(
    "s21_lang_unary_minus_under_named_reductions",
    """
input  X[i, j]
output A, B, C, D
A[i] = -X[i, j] :: max(j)        # max over j of -X
B[i] = - -X[i, j] :: min(j)      # min over j of X
C[i] = -X[i, j] * -2             # the sum over j of 2 X
D    = -X[i, j] :: max(i, j)     # minus the smallest element
""",
    dict(X=rn(4, 5)),
    lambda X: (-X.min(1), X.min(1), 2 * X.sum(1), -X.min()),
)


# --- a term that does not vary along the summed rank is added once per present point: the ragged last tile
# (M = 8, tiles of 3) has two, so c[2] is added twice in T; with ?? every point is present: added 3 times
def const_term_ref(X, c, M0=3):
    T = np.zeros(3)
    U = np.zeros(3)
    for n in range(3):
        for m0 in range(M0):
            i = n * M0 + m0
            if i < len(X):
                T[n] += X[i] + c[n]
            U[n] += (X[i] if i < len(X) else 0) + c[n]
    return T, U


case(
    "s21_lang_constant_term_counted_per_present_point_ragged_tile",
    """
input  X[m], c[n]
param  M0 = 3
rank   M = N * M0
output T, U
T[n] = X[n * M0 + m0] + c[n]           # c[n] once per present m0
U[n] = (X[n * M0 + m0] ?? 0) + c[n]    # every m0 present: c[n] M0 times
""",
    dict(X=rn(8), c=np.array([10.0, 20.0, 30.0])),
    const_term_ref,
)


# --- filters with floor division and modulo over the reduced rank, and a max under an `or` of a modulo test
def floor_mod_ref(X):
    P, M = X.shape
    p, m = pm(P, M)
    k1 = (m // 3 == p // 3) & (m % 2 != 1)
    k2 = ((m - p) % 4 == 3) | (m == P - 1 - p)
    Y = np.where(k1, X, 0).sum(1)
    Z = np.where(k2, X, -np.inf).max(1)
    return Y, Z


case(
    "s21_lang_filters_floor_div_blocks_parity_and_negative_mod",
    """
input  X[p, m]
output Y, Z
Y[p] = X[p, m]  where m // 3 == p // 3 and m % 2 != 1
Z[p] = X[p, m] :: max(m)  where (m - p) % 4 == 3 or m == P - 1 - p
""",
    dict(X=rn(7, 7)),
    floor_mod_ref,
)


# --- two filtered maxima that are absent on different rows (and both on row 5): their union, and a chain of
# defaults (the sum where both are present, else the one present, else -1)
def union_ref(X):
    P, M = X.shape
    p, m = pm(P, M)
    ka = (m < p - 2) & (p != 5)
    kb = (m > p + 1) & (p != 5)
    A = np.where(ka, X, -np.inf).max(1)
    B = np.where(kb, X, -np.inf).max(1)
    ha, hb = ka.any(1), kb.any(1)
    U = np.where(ha & hb, np.maximum(A, B), np.where(ha, A, np.where(hb, B, 0)))
    I = np.where(ha & hb, A + B, np.where(ha, A, np.where(hb, B, -1)))
    return U, I


case(
    "s21_lang_union_and_default_chain_of_two_filtered_maxima",
    """
input  X[p, m]
output U, I
A[p] = X[p, m] :: max(m)  where m < p - 2 and p != 5
B[p] = X[p, m] :: max(m)  where m > p + 1 and p != 5
U[p] = max(A[p] ?? B[p], B[p] ?? A[p])
I[p] = A[p] + B[p] ?? (A[p] ?? B[p]) ?? -1
""",
    dict(X=rn(8, 6)),
    union_ref,
)


# --- nested functions checked by identities: sigmoid = exp(-softplus(-x)), tanh = 2 sigmoid(2x) - 1, ...
def nested_ref(X):
    return (
        np.exp(-softplus(-X)) - sig(X),
        2 * sig(2 * X) - 1 - np.tanh(X),
        np.minimum(np.maximum(elu(X), -0.5), relu(X) + 0.25),
        X + np.abs(X),
        1 / np.sqrt(X**2 + 1) * np.clip(X, -1, 1),
    )


case(
    "s21_lang_nested_functions_identities",
    """
input  X[i]
output A, B, C, D, EE
A[i]  = exp(-softplus(-X[i])) - sigmoid(X[i])
B[i]  = 2 * sigmoid(2 * X[i]) - 1 - tanh(X[i])
C[i]  = clamp(elu(X[i]), -0.5, relu(X[i]) + 0.25)
D[i]  = log2(exp2(X[i])) + sqrt(square(X[i]))
EE[i] = rsqrt(square(X[i]) + 1) * max(min(X[i], 1), -1)
""",
    dict(X=rn(9, scale=2)),
    nested_ref,
)


# --- spelled-out rank names (batch, q_pos, kv_pos, d_k, d_v), mixed-case tensor names, a lower-case output,
# comments, tabs, a bracket continuation and a backslash continuation
def names_ref(Query, Key, Value):
    return att(Query, Key, Value)


case(
    "s21_lang_multi_letter_ranks_mixed_case_tensors_continuations",
    "# softmax attention, every rank spelled out\n"
    "input  Query[batch, q_pos, d_k], Key[batch, kv_pos, d_k]   # two inputs on one line\n"
    "input\tValue[batch, kv_pos, d_v]\n"
    "output out\n"
    "\n"
    "score[batch, q_pos, kv_pos] = (Query[batch, q_pos, d_k] *   # a bracket is open: the line continues\n"
    "                               Key[batch, kv_pos, d_k]) * rsqrt(D_K)\n"
    "rowMax[batch, q_pos] = score[batch, q_pos, kv_pos] \\\n"
    "                       :: max( kv_pos )\n"
    "expScore[batch, q_pos, kv_pos]\t=\texp(score[batch, q_pos, kv_pos] - rowMax[batch, q_pos])\n"
    "# a comment line between statements\n"
    "rowSum[batch, q_pos] = expScore[batch, q_pos, kv_pos]\n"
    "out[batch, q_pos, d_v] = expScore[batch, q_pos, kv_pos] * Value[batch, kv_pos, d_v]"
    " / rowSum[batch, q_pos]\n",
    dict(Query=rn(2, 3, 4), Key=rn(2, 6, 4), Value=rn(2, 6, 5)),
    names_ref,
    passes={"kv_pos": 3, "q_pos": 1},
)


# --- a joint max over a rank and its alias (strict pairs), and a count whose rank occurs only in the filter
def pairs_ref(X):
    D = X @ X.T
    T = X.shape[0]
    t, u = pm(T, T)
    return D[t < u].max(), (u > t).sum(1).astype(float)


case(
    "s21_lang_joint_max_over_alias_pairs_and_filter_only_count",
    """
input  X[t, c]
rank   U = T
output G, CNT
DOT[t, u] = X[t, c] * X[u, c]
G         = DOT[t, u] :: max(t, u)  where t < u
CNT[t]    = 1  where u > t
""",
    dict(X=rn(6, 3)),
    pairs_ref,
)


# --- a softmax over every (p, m) jointly: scalar max, partition function and entropy
def joint_ref(Q, K):
    s = Q @ K.T
    g = s.max()
    z = np.exp(s - g).sum()
    a = np.exp(s - g) / z
    return g, z, np.log(z) + g - (a * s).sum()


case(
    "s21_lang_scalar_outputs_softmax_over_every_point",
    """
input  Q[p, e], K[m, e]
output G, Z, ENT
S[p, m]  = Q[p, e] * K[m, e]
G        = S[p, m] :: max(p, m)
Z        = exp(S[p, m] - G)
EW       = exp(S[p, m] - G) * S[p, m]
ENT      = log(Z) + G - EW / Z
""",
    dict(Q=rn(4, 3), K=rn(5, 3)),
    joint_ref,
    passes={"p": 2, "m": 2},
)


# --- the states of a recurrence returned (T + 1 of them), its final state, and a max over ST[t, d] for t in
# 0 .. T - 1: the rank t has size T, so the final state is not among them
def states_ref(X):
    T, D = X.shape
    st = np.zeros((T + 1, D))
    for t in range(T):
        st[t + 1] = np.maximum(st[t] * 0.5, X[t])
    return st, st[T], st[:T].max()


case(
    "s21_lang_recurrence_states_returned_and_reduced_over_rank_range",
    """
input  X[t, d]
output ST, LAST, TOTMAX
ST[0, d]     = 0
ST[t + 1, d] = max(ST[t, d] * 0.5, X[t, d])
LAST[d]      = ST[T, d]
TOTMAX       = ST[t, d] :: max(t, d)
""",
    dict(X=rn(5, 3) + np.array([0.0, 0.0, 9.0])[None, :] * (np.arange(5) == 4)[:, None]),
    states_ref,
)


# --- a histogram over a param-sized rank (doc 1 has no token: its count and mean are absent, delivered as 0)
def hist_ref(X, doc, D=4):
    cnt = np.array([(doc == d).sum() for d in range(D)], dtype=float)
    mean = np.array([X[doc == d].mean(0) if (doc == d).any() else np.zeros(X.shape[1]) for d in range(D)])
    return cnt, mean


case(
    "s21_lang_histogram_over_param_sized_rank_empty_bin",
    """
input  X[m, e], doc[m] : int
param  D = 4
output CNT, MEAN
CNT[d]     = 1  where doc[m] == d
MEAN[d, e] = X[m, e] / CNT[d]  where doc[m] == d
""",
    dict(X=rn(7, 2), doc=np.array([0, 0, 2, 2, 2, 0, 3])),
    hist_ref,
)


# --- params spelled 2.5E-1, -.5, 1 and 4, two of them overridden; a window with a lag and a linear bias
def spell_ref(Q, K, V, TAU=0.3, NEGB=-0.5, LAG=1, W=3):
    p, m = pm(Q.shape[0], K.shape[0])
    keep = (p - m + LAG >= 0) & (p - m + LAG < W)
    return att(Q, K, V, mask=keep, scale=TAU, bias=NEGB * (p - m))


case(
    "s21_lang_param_spellings_overridden_lagged_window",
    """
input  Q[p, e], K[m, e], V[m, f]
param  TAU  = 2.5E-1
param  NEGB = -.5
param  LAG  = 1
param  W    = 4
output O
D[p, m]  = Q[p, e] * K[m, e] * TAU
S[p, m]  = D[p, m] + NEGB * (p - m)  where 0 <= p - m + LAG < W
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
DN[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / DN[p]
""",
    dict(Q=rn(6, 3), K=rn(7, 3), V=rn(7, 2)),
    spell_ref,
    params={"W": 3, "TAU": 0.3},
)
