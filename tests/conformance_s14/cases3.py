# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Every function of the language at its IEEE edges, in cascades: at +-inf, +-0, NaN, 1e4 and tiny
arguments, and under `??` at absent points; functions of coordinates as an attention bias; functions that are
undefined or overflow exactly at the points a filter removes (no NaN may leak); log(0) as a present -inf in
max and min reductions; large gates and caps inside attention; clamps with infinite param bounds overridden;
min/max/clamp/abs inside filters."""

import numpy as np

from .common import att, make_rn, pm, registry, softmax

rn, rng = make_rn(1403)
CASES, case = registry()

_EDGE = np.array([-np.inf, -1e4, -40.0, -1.0, -0.0, 0.0, 1e-8, 0.5, 40.0, 1e4, np.inf, np.nan])


def _sig(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def edges_ref(X):
    with np.errstate(all="ignore"):
        return (
            np.exp(X),
            np.exp2(X),
            np.log(X),
            np.log2(X),
            np.sqrt(X),
            1 / np.sqrt(X),
            np.tanh(X),
            _sig(X),
            np.where(np.isnan(X), np.nan, np.where(X > 0, X, 0.0)),
            np.where(np.isnan(X), np.nan, np.where(X > 0, X, np.expm1(np.minimum(X, 0)))),
            np.logaddexp(0.0, X),
            np.abs(X),
            X * X,
            np.where(np.isnan(X), np.nan, np.maximum(X, -1.0)),
            np.where(np.isnan(X), np.nan, np.minimum(X, 1.0)),
            np.where(np.isnan(X), np.nan, np.minimum(np.maximum(X, -1.0), 1.0)),
        )


case(
    "s14_every_function_at_ieee_edges",
    """
input  X[i]
output EXP, EXP2, LOG, LOG2, SQRT, RSQRT, TANH, SIGMOID, RELU, ELU, SOFTPLUS, ABS, SQUARE, MAX, MIN, CLAMP
EXP[i]      = exp(X[i])
EXP2[i]     = exp2(X[i])
LOG[i]      = log(X[i])
LOG2[i]     = log2(X[i])
SQRT[i]     = sqrt(X[i])
RSQRT[i]    = rsqrt(X[i])
TANH[i]     = tanh(X[i])
SIGMOID[i]  = sigmoid(X[i])
RELU[i]     = relu(X[i])
ELU[i]      = elu(X[i])
SOFTPLUS[i] = softplus(X[i])
ABS[i]      = abs(X[i])
SQUARE[i]   = square(X[i])
MAX[i]      = max(X[i], -1)
MIN[i]      = min(1, X[i])
CLAMP[i]    = clamp(X[i], -1, 1)
""",
    dict(X=_EDGE),
    edges_ref,
)


# --- the same functions of a read that is absent at the last point, defaulted afterwards: a function of an
# absent value is absent, so `??` replaces the whole call
def absent_fn_ref(X):
    nxt = np.append(X[1:], np.nan)
    last = np.arange(len(X)) == len(X) - 1
    with np.errstate(all="ignore"):
        a = np.where(last, 7.0, np.log(np.abs(nxt)) + np.sqrt(np.abs(nxt)) + np.tanh(nxt))
        b = np.where(last, -1.0, np.exp(-np.abs(nxt)) * np.logaddexp(0.0, nxt))
    return a, b


case(
    "s14_functions_of_absent_reads_defaulted",
    """
input  X[i]
output A, B
A[i] = log(abs(X[i + 1])) + sqrt(abs(X[i + 1])) + tanh(X[i + 1]) ?? 7
B[i] = exp(-abs(X[i + 1])) * softplus(X[i + 1]) ?? -1
""",
    dict(X=np.array([2.0, -0.5, 3.0, 0.25, -4.0])),
    absent_fn_ref,
)


# --- functions of coordinates (and sizes) as the bias of a causal attention
def coord_bias_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    d = (p - m).astype(float)
    bias = (
        np.log(1 + m)
        - np.sqrt(np.abs(d))
        + np.exp2(-p / M)
        - 0.5 * np.tanh(d / 2)
        + 0.1 * np.logaddexp(0, -d)
        + 1 / np.sqrt(1 + m)
        - np.log2(1 + P - p) * 0.25
    )
    return att(Q, K, V, mask=m <= p + 2, bias=bias)


case(
    "s14_functions_of_coordinates_as_bias",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
B[p, m]  = log(1 + m) - sqrt(abs(p - m)) + exp2(-p / M) - 0.5 * tanh((p - m) / 2) + 0.1 * softplus(m - p) + rsqrt(1 + m) - log2(1 + P - p) * 0.25
S[p, m]  = QK[p, m] + B[p, m]  where m <= p + 2
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(6, 3), K=rn(9, 3), V=rn(9, 2)),
    coord_bias_ref,
)


# --- functions that are NaN, infinite or overflow exactly where the filter removes the point: the spec
# never evaluates them there, so the outputs are finite
def masked_unsafe_ref(X, V, ok):
    P, M = X.shape
    keep = ok[None, :] == 1
    causal = np.arange(M)[None, :] <= np.arange(P)[:, None]
    with np.errstate(all="ignore"):
        A = np.where(keep, np.sqrt(X), 0.0) @ V
        B = np.where(keep & causal, np.log(X), 0.0) @ V
        C = np.where(keep, 1 / np.sqrt(X), 0.0).sum(1)
        D = np.where(keep, np.exp(X * 30.0), 0.0).sum(1)
    return A, B, C, D


_X = rng.uniform(0.5, 2.0, (4, 6))
_ok = np.array([1, 0, 1, 1, 0, 1])
_X[:, 1] = -1.0
_X[:, 4] = 0.0
_X[0, 4] = 1e30
case(
    "s14_unsafe_functions_only_at_filtered_points",
    """
input  X[p, m], V[m, f], ok[m] : int
output A, B, C, D
A[p, f] = sqrt(X[p, m]) * V[m, f]  where ok[m] == 1
B[p, f] = log(X[p, m]) * V[m, f]  where ok[m] == 1 and m <= p
C[p]    = rsqrt(X[p, m])  where ok[m] == 1
D[p]    = exp(X[p, m] * 30)  where ok[m] == 1
""",
    dict(X=_X, V=rn(6, 2), ok=_ok),
    masked_unsafe_ref,
)


# --- log(0) is a present -inf: a max or min over it is -inf (not absent, not 0), its exp is 0; rows of the
# filter that keep nothing are absent (0) and `??` sees them
def log_zero_ref(X):
    P, M = X.shape
    keep = np.arange(M)[None, :] >= np.arange(P)[:, None] - 1
    with np.errstate(divide="ignore"):
        L = np.log(X)
    mx = np.array([L[p][keep[p]].max() if keep[p].any() else np.nan for p in range(P)])
    mn = np.array([L[p][keep[p]].min() if keep[p].any() else np.nan for p in range(P)])
    pres = ~np.isnan(mx)
    return (
        np.where(pres, mx, 0.0),
        np.where(pres, mn, 0.0),
        np.where(pres, np.exp(mx), 0.0),
        np.where(pres, mn, 5.0),
    )


case(
    "s14_log_zero_present_neg_inf_in_max_min",
    """
input  X[p, m]
output HI, LO, EHI, LOD
L[p, m] = log(X[p, m])  where m >= p - 1
HI[p]   = L[p, m] :: max(m)
LO[p]   = L[p, m] :: min(m)
EHI[p]  = exp(HI[p])
LOD[p]  = LO[p] ?? 5
""",
    dict(X=np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 3.0, 0.5], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
    log_zero_ref,
)


# --- large arguments inside attention: a softcap at +-1e4 scores, a temperature softplus(T) with T = +-1e4
# per query (softplus(-1e4) underflows to 0: that query's row is S / 0 = +-inf before the cap), an output
# gate sigmoid(+-1e4)
def big_ref(Q, K, V, T, G):
    s = Q @ K.T
    with np.errstate(divide="ignore", over="ignore"):
        tp = np.logaddexp(0.0, T)
        s = 20 * np.tanh(s / tp[:, None] / 20)
    return att(Q, K, V, scale=1.0, bias=s - Q @ K.T) * _sig(G)[:, None]


case(
    "s14_large_gates_caps_and_temperatures",
    """
input  Q[p, e], K[m, e], V[m, f], T[p], G[p]
output O
QK[p, m] = Q[p, e] * K[m, e]
S[p, m]  = 20 * tanh(QK[p, m] / softplus(T[p]) / 20)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p] * sigmoid(G[p])
""",
    dict(
        Q=rn(4, 3, scale=30.0),
        K=rn(7, 3, scale=30.0),
        V=rn(7, 2),
        T=np.array([1e4, -3.0, 0.0, -1e4]),
        G=np.array([1e4, -1e4, 0.0, 2.0]),
    ),
    big_ref,
)


# --- clamps with infinite float params as bounds (no-op), one bound overridden to a finite value
def clamp_inf_ref(Q, K, V, HI=1.5):
    s = np.minimum(Q @ K.T, HI)
    return softmax(s) @ V, s.max(1)


case(
    "s14_clamp_infinite_param_bounds_overridden",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LO = -inf
param  HI = inf
output O, TOP
QK[p, m] = Q[p, e] * K[m, e]
S[p, m]  = clamp(QK[p, m], LO, HI)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
TOP[p]   = GM[p]
""",
    dict(Q=rn(5, 3), K=rn(6, 3), V=rn(6, 2)),
    clamp_inf_ref,
    params={"HI": 1.5},
)


# --- min, max, clamp and abs inside filters: an irregular window min(p, 3) <= m <= max(p, 5), and the keys
# whose clamped distance is below W
def filter_fn_ref(Q, K, V, W=2):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    w1 = (np.minimum(p, 3) <= m) & (m <= np.maximum(p, 5))
    w2 = np.clip(p - m, 0, 4) < W
    return att(Q, K, V, mask=w1), att(Q, K, V, mask=w2 & (np.abs(m - 4) != 1))


case(
    "s14_min_max_clamp_abs_in_filters",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 2
output O1, O2
QK[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
S1[p, m]  = QK[p, m]  where min(p, 3) <= m and m <= max(p, 5)
G1[p]     = S1[p, m] :: max(m)
E1[p, m]  = exp(S1[p, m] - G1[p])
O1[p, f]  = E1[p, m] * V[m, f] / D1[p]
D1[p]     = E1[p, m]
S2[p, m]  = QK[p, m]  where clamp(p - m, 0, 4) < W and abs(m - 4) != 1
G2[p]     = S2[p, m] :: max(m)
E2[p, m]  = exp(S2[p, m] - G2[p])
O2[p, f]  = E2[p, m] * V[m, f] / D2[p]
D2[p]     = E2[p, m]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    filter_fn_ref,
)
