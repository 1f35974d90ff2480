"""Params and scalars of both kinds, and the passes of the analysis: an int param in an index and as a value
overridden with an integral float, a param-sized window rank overridden, a float param compared in a filter
and overridden, a negative int scalar input as a value and in a filter, -inf and huge float params, outputs
declared over several lines, a rank alias against a recurrence, gathers inside a filter's int comparison, and
cascades whose passes per rank follow from FuseMax's rule (layer norm: 3, RMS norm: 2, a sink in the max
with deferred division: 2, two independent reductions combined: 1)."""

import numpy as np

from .common import att, make_rn, pm, registry, softmax

rn, rng = make_rn(1407)
CASES, case = registry()


# --- an int param used in an index and as a value, overridden with 2.0 (an integral float: the integer 2)
def shift_ref(X, SH=2):
    n = len(X)
    return np.array([X[i + SH] * SH + SH if i + SH < n else 0.0 for i in range(n)])


case(
    "s14_int_param_index_value_integral_float_override",
    """
input  X[i]
param  SH = 1
output Y
Y[i] = X[i + SH] * SH + SH
""",
    dict(X=rn(6)),
    shift_ref,
    params={"SH": 2.0},
)


# --- a centred moving average over a rank w sized by a param (overridden to 5): X[p + w - W // 2], the
# points past either end absent, divided by the number of present points
def movavg_ref(X, W=5):
    n = len(X)
    out = np.zeros(n)
    for p in range(n):
        idx = [p + w - W // 2 for w in range(W) if 0 <= p + w - W // 2 < n]
        out[p] = X[idx].mean()
    return out


case(
    "s14_param_sized_window_rank_overridden",
    """
input  X[p]
param  W = 3
output AVG
SUM[p] = X[p + w - W // 2]
CNT[p] = X[p + w - W // 2] * 0 + 1
AVG[p] = SUM[p] / CNT[p]
""",
    dict(X=rn(8)),
    movavg_ref,
    params={"W": 5},
)


# --- a float param compared in a filter (p - m < R, R = 2.5 overridden to 1.5: one key back), with the param
# also used as a value (a temperature)
def float_filter_ref(Q, K, V, R=1.5):
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, mask=(m <= p) & (p - m < R), scale=1.0 / R)


case(
    "s14_float_param_in_filter_and_value_overridden",
    """
input  Q[p, e], K[m, e], V[m, f]
param  R = 2.5
output O
S[p, m]  = Q[p, e] * K[m, e] / R  where m <= p and p - m < R
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    float_filter_ref,
    params={"R": 1.5},
)


# --- a negative int scalar input as a value and in a filter: Y[i] = X[i] * n for i > n + 3 (n = -2: i > 1)
case(
    "s14_negative_int_scalar_value_and_filter",
    """
input  X[i], n : int
output Y, T
Y[i] = X[i] * n  where i > n + 3
T    = X[i] * n + n  where i > n + 3
""",
    dict(X=rn(5), n=np.array(-2)),
    lambda X, n: (np.where(np.arange(5) > 1, X * -2.0, 0.0), (X[2:] * -2.0 - 2.0).sum()),
)


# --- params of -inf and 1e300: a default of -inf for a max over the union, a product that overflows to +-inf
# (inputs bounded away from 0 so that float32 and float64 agree), an infinite clamp bound
def inf_params_ref(X):
    nxt = np.append(X[1:], np.nan)
    a = np.where(np.isnan(nxt), X, np.maximum(X, nxt))
    with np.errstate(over="ignore"):
        b = X * 1e300 * 1e300
    return a, b, np.maximum(X, 0.5)


case(
    "s14_neg_inf_and_huge_float_params",
    """
input  X[i]
param  NEG = -inf
param  BIG = 1e300
param  TOP = inf
output A, B, C
A[i] = max(X[i], X[i + 1] ?? NEG)
B[i] = X[i] * BIG * BIG
C[i] = clamp(X[i], 0.5, TOP)
""",
    dict(X=np.array([1.5, -2.0, 0.25, 3.0, -0.75])),
    inf_params_ref,
)


# --- outputs declared over several `output` lines (the call returns them in declaration order), statements in
# reverse order of use, and an intermediate that two outputs share
case(
    "s14_outputs_over_several_lines_reverse_order",
    """
output C
input  X[i]
output A, B
C[i]  = S2[i] - A
B[i]  = S2[i] * 2
A     = S2[i]
S2[i] = square(X[i])
input  W[j]
output D
D[i, j] = S2[i] * W[j]
""",
    dict(X=rn(4), W=rn(3)),
    lambda X, W: (
        np.square(X) - np.square(X).sum(),
        np.square(X).sum(),
        2 * np.square(X),
        np.outer(np.square(X), W),
    ),
)


# --- a prefix sum written three ways: a rank alias with a filter, a recurrence read after the step, and the
# recurrence's states summed over a filter-only comparison; their differences are outputs (exactly 0)
def prefix_ref(X):
    c = np.cumsum(X)
    return c, np.zeros_like(c), c.sum()


case(
    "s14_prefix_sum_alias_vs_recurrence",
    """
input  X[t]
rank   S = T
output A, DIFF, TOT
A[t]     = X[s]  where s <= t
R[0]     = 0
R[t + 1] = R[t] + X[t]
DIFF[t]  = A[t] - R[t + 1]
TOT      = R[t + 1]
""",
    dict(X=rn(7)),
    prefix_ref,
    passes={"t": 1},
)


# --- documents compared through a permutation gather inside the filter: doc[perm[m]] == doc[perm[p]]
def perm_doc_ref(Q, K, V, doc, perm):
    d = doc[perm]
    return att(Q, K, V, mask=(d[:, None] == d[None, :]))


case(
    "s14_gathered_doc_ids_in_filter",
    """
input  Q[p, e], K[m, e], V[m, f], doc[n] : int, perm[j] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where doc[perm[m]] == doc[perm[p]]
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(
        Q=rn(6, 3),
        K=rn(6, 3),
        V=rn(6, 2),
        doc=np.array([0, 0, 1, 1, 1, 2]),
        perm=np.array([5, 2, 0, 4, 1, 3]),
    ),
    perm_doc_ref,
)


# --- layer norm over j: the mean (a reduction), the variance re-reads X with the mean (pass 2), the output
# re-reads X with the variance (pass 3)
def ln_ref(X, g):
    mu = X.mean(1, keepdims=True)
    var = ((X - mu) ** 2).mean(1, keepdims=True)
    return (X - mu) / np.sqrt(var + 1e-5) * g


case(
    "s14_layer_norm_three_passes",
    """
input  X[i, j], g[j]
output Y
MU[i]   = X[i, j] / J
VAR[i]  = square(X[i, j] - MU[i]) / J
Y[i, j] = (X[i, j] - MU[i]) * rsqrt(VAR[i] + 1e-5) * g[j]
""",
    dict(X=rn(4, 6) + 3.0, g=rn(6)),
    ln_ref,
    passes={"j": 3},
)


# --- RMS norm: one reduction, then one re-read: 2 passes over j
case(
    "s14_rms_norm_two_passes",
    """
input  X[i, j]
output Y
MS[i]   = square(X[i, j]) / J
Y[i, j] = X[i, j] * rsqrt(MS[i] + 1e-6)
""",
    dict(X=rn(3, 5)),
    lambda X: X / np.sqrt((X**2).mean(1, keepdims=True) + 1e-6),
    passes={"j": 2},
)


# --- attention with a per-head sink logit inside the max and the denominator, division deferred: 2 passes
def sink_ref(Q, K, V, sink):
    H, P, E = Q.shape
    s = np.einsum("hpe,hme->hpm", Q, K) / np.sqrt(E)
    full = np.concatenate([s, np.broadcast_to(sink[:, None, None], (H, P, 1))], axis=2)
    w = softmax(full)
    return np.einsum("hpm,hmf->hpf", w[:, :, :-1], V)


case(
    "s14_sink_in_max_deferred_two_passes",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], sink[h]
output O
S[h, p, m]   = Q[h, p, e] * K[h, m, e] * rsqrt(E)
MX[h, p]     = S[h, p, m] :: max(m)
GM[h, p]     = max(MX[h, p], sink[h])
EX[h, p, m]  = exp(S[h, p, m] - GM[h, p])
SD[h, p]     = EX[h, p, m]
DEN[h, p]    = SD[h, p] + exp(sink[h] - GM[h, p])
NV[h, p, f]  = EX[h, p, m] * V[h, m, f]
O[h, p, f]   = NV[h, p, f] / DEN[h, p]
""",
    dict(Q=rn(2, 4, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), sink=np.array([3.0, -1.0])),
    sink_ref,
    passes={"m": 2},
)


# --- two independent reductions over k combined afterwards (FuseMax's teaching Cascade 2 with other names,
# and a max beside the sum): 1 pass
case(
    "s14_independent_reductions_one_pass",
    """
input  A[k], B[k]
output Z
Y  = A[k] * B[k]
X  = A[k]
MX = B[k] :: max(k)
Z  = Y * X + MX
""",
    dict(A=rn(7), B=rn(7)),
    lambda A, B: (A * B).sum() * A.sum() + B.max(),
    passes={"k": 1},
)
