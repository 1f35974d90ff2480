"""Recurrences and partitions: 2-D prefix sums from two scans over two iterative ranks, Newton's iteration
for 1/sqrt with an overridden step count and every state, normalised power iteration with a Rayleigh
quotient, Welford's running mean and variance (coordinates as values, a state read after the step), a
running top-2 with the iterative index in the middle, a scan longer than its data, an exponential moving
average of gathered embeddings that holds on out-of-range tokens, Bellman-Ford shortest paths (a
``:: min`` inside the update, infinite weights), a fixed number of tiles larger than the rank, and Horner's
rule reading coefficients backwards."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1704)
CASES, case = registry()


# --- 2-D inclusive prefix sums: a scan over t, then a scan over s of the first scan's states
case(
    "s17_rec_2d_prefix_sums_two_iterative_ranks",
    """
# summed-area table: C1 scans t for every s, C2 scans s over C1's states after each step
input  X[t, s]
output P2
C1[0, s]     = 0
C1[t + 1, s] = C1[t, s] + X[t, s]
C2[0, t]     = 0
C2[s + 1, t] = C2[s, t] + C1[t + 1, s]
P2[t, s]     = C2[s + 1, t]
""",
    dict(X=rn(4, 5)),
    lambda X: X.cumsum(0).cumsum(1),
    passes={"t": 1, "s": 1},
)


# --- Newton's iteration for 1 / sqrt(A): N = 4 as written, 6 overridden; ALL holds the states 0 .. N - 1
def newton_ref(A, N=6):
    R = np.ones_like(A)
    states = []
    for _ in range(N):
        states.append(R.copy())
        R = R * (1.5 - 0.5 * A * R * R)
    return R, np.array(states)


case(
    "s17_rec_newton_rsqrt_param_steps_overridden",
    """
# y <- y (3 - a y^2) / 2 converges to 1 / sqrt(a) from y = 1 for 0 < a < 3
input  A[i]
param  N = 4
output Y, ALL
R[0, i]     = 1
R[n + 1, i] = R[n, i] * (1.5 - 0.5 * A[i] * square(R[n, i]))
Y[i]        = R[N, i]
ALL[n, i]   = R[n, i]
""",
    dict(A=rng.uniform(0.3, 2.0, 5)),
    newton_ref,
    params={"N": 6},
)


# --- normalised power iteration: Y = A x, x <- Y / |Y|, then the Rayleigh quotient of the last x
def power_ref(A, X0, T=5):
    x = X0.copy()
    for _ in range(T):
        y = A @ x
        x = y / np.sqrt((y**2).sum())
    return x @ A @ x, x


case(
    "s17_rec_power_iteration_normalised_rayleigh",
    """
# T steps of x <- A x / |A x|; LAM = x^T A x at the end
input  A[i, j], X0[i]
param  T = 5
output LAM, V
Y[t, i]     = A[i, j] * X[t, j]
NRM[t]      = square(Y[t, i])
X[0, i]     = X0[i]
X[t + 1, i] = Y[t, i] * rsqrt(NRM[t])
V[i]        = X[T, i]
AX[i]       = A[i, j] * X[T, j]
LAM         = AX[i] * X[T, i]
""",
    dict(A=(lambda a: a + a.T)(rn(4, 4)), X0=rn(4)),
    power_ref,
)


# --- Welford's online mean and variance per feature; the coordinate t + 1 is the count
def welford_ref(X):
    return X.mean(0), X.var(0)


case(
    "s17_rec_welford_mean_variance",
    """
# MU and M2 updated per sample; M2 reads the mean before and after the step
input  X[t, f]
output MEAN, VAR
MU[0, f]     = 0
M2[0, f]     = 0
MU[t + 1, f] = MU[t, f] + (X[t, f] - MU[t, f]) / (t + 1)
M2[t + 1, f] = M2[t, f] + (X[t, f] - MU[t, f]) * (X[t, f] - MU[t + 1, f])
MEAN[f]      = MU[T, f]
VAR[f]       = M2[T, f] / T
""",
    dict(X=rn(7, 3) * 3 + 10),
    welford_ref,
    passes={"t": 1},
)


# --- a running top-2 with the iterative index in the middle; the history starts at -inf
def top2_ref(X):
    B, T, F = X.shape
    t1 = np.full((B, F), -np.inf)
    t2 = np.full((B, F), -np.inf)
    hist = np.zeros((B, T, F))
    for t in range(T):
        x = X[:, t]
        t1, t2 = np.maximum(t1, x), np.maximum(t2, np.minimum(t1, x))
        hist[:, t] = t2
    return t1, t2, hist


case(
    "s17_rec_running_top2_middle_index_history",
    """
# T1 is the running max, T2 the running second largest; H2 is T2 after each step (-inf after step 0)
input  X[b, t, f]
output TOP1, TOP2, H2
T1[b, 0, f]     = -inf
T2[b, 0, f]     = -inf
T1[b, t + 1, f] = max(T1[b, t, f], X[b, t, f])
T2[b, t + 1, f] = max(T2[b, t, f], min(T1[b, t, f], X[b, t, f]))
TOP1[b, f]      = T1[b, T, f]
TOP2[b, f]      = T2[b, T, f]
H2[b, t, f]     = T2[b, t + 1, f]
""",
    dict(X=rn(2, 5, 3)),
    top2_ref,
)


# --- a scan over n with N = 8 steps (overridden) over data of length 6: past the end X[n] is absent, which
# makes the undefaulted state absent from step 6 on (output 0); the defaulted one stops growing
def longscan_ref(X, N=8):
    T = len(X)
    s = X[: min(N, T)].sum()
    return s, (s if N <= T else 0.0), np.array([X[: k + 1].sum() if k < T else 0.0 for k in range(N)])


case(
    "s17_rec_scan_longer_than_data",
    """
# a recurrence over its own rank n, sized by the param N, reading X[n]
input  X[t]
param  N = 5
output F, G, HG
R[0]      = 0
R[n + 1]  = R[n] + (X[n] ?? 0)
S[0]      = 0
S[n + 1]  = S[n] + X[n]
F         = R[N]
G         = S[N]
HG[n]     = S[n + 1]
""",
    dict(X=rn(6)),
    longscan_ref,
    params={"N": 8},
)


# --- an exponential moving average of gathered embeddings; an out-of-range token leaves the state as is
def ema_ref(EMB, tok, D=0.6):
    V, F = EMB.shape
    r = np.zeros(F)
    out = []
    for t in tok:
        if 0 <= t < V:
            r = r * D + EMB[t]
        out.append(r.copy())
    return np.array(out)


case(
    "s17_rec_ema_of_gathered_embeddings_holds_on_bad_token",
    """
# R <- D R + EMB[tok[t]], unchanged (not decayed) where tok[t] is outside the table
input  EMB[v, f], tok[t] : int
param  D = 0.6
output H
R[0, f]     = 0
R[t + 1, f] = R[t, f] * D + EMB[tok[t], f] ?? R[t, f]
H[t, f]     = R[t + 1, f]
""",
    dict(EMB=rn(4, 3), tok=np.array([1, 3, -1, 0, 4, 2, 2], dtype=np.int64)),
    ema_ref,
    passes={"t": 1},
)


# --- Bellman-Ford: D[t + 1, i] = min over j of D[t, j] + W[j, i], with inf for missing edges and for
# unreachable nodes (node 4 has no incoming edge: inf at the end)
def bf_ref(W, D0, T=4):
    d = D0.copy()
    for _ in range(T):
        d = (d[:, None] + W).min(0)
    return d


_W = np.full((5, 5), np.inf)
np.fill_diagonal(_W, 0.0)
for a, b, w in [(0, 1, 4.0), (0, 2, 1.0), (2, 1, 2.0), (1, 3, 1.0), (2, 3, 5.0), (3, 0, 0.5)]:
    _W[a, b] = w

case(
    "s17_rec_bellman_ford_min_in_update_infinite_weights",
    """
# shortest paths from node 0 in T relaxation steps; W[j, i] = inf where there is no edge j -> i
input  W[j, i], D0[i]
param  T = 4
output DIST
D[0, i]     = D0[i]
D[t + 1, i] = D[t, j] + W[j, i] :: min(j)
DIST[i]     = D[T, i]
""",
    dict(W=_W, D0=np.array([0.0, np.inf, np.inf, np.inf, np.inf])),
    bf_ref,
)


# --- a fixed number of tiles M1 = 4 over M = 5 points: M0 = 2, the last tile wholly past the end
def tiles_ref(X, M1=4):
    M = len(X)
    M0 = -(-M // M1)
    T = np.zeros((M1, M0))
    for a in range(M1):
        for b in range(M0):
            if a * M0 + b < M:
                T[a, b] = X[a * M0 + b]
    bs = T.sum(1)
    return T, bs, np.cumsum(bs)


case(
    "s17_rec_fixed_tile_count_last_tile_empty",
    """
# M1 is the param: M0 = ceil(M / M1) = 2; tile 3 holds no point (absent sum, 0 in the running total)
input  X[m]
param  M1 = 4
rank   M = M1 * M0
output TILES, BS, CUM
TILES[m1, m0] = X[m1 * M0 + m0]
BS[m1]        = X[m1 * M0 + m0]
R[0]          = 0
R[m1 + 1]     = R[m1] + (BS[m1] ?? 0)
CUM[m1]       = R[m1 + 1]
""",
    dict(X=rn(5)),
    tiles_ref,
)


# --- Horner's rule, coefficients stored lowest degree first, read backwards inside the recurrence
def horner_ref(X, C):
    return sum(C[k] * X**k for k in range(len(C)))


case(
    "s17_rec_horner_reads_coefficients_backwards",
    """
# p(x) = C[0] + C[1] x + ... evaluated from the highest coefficient down
input  X[i], C[n]
output Y
R[0, i]     = 0
R[n + 1, i] = R[n, i] * X[i] + C[N - 1 - n]
Y[i]        = R[N, i]
""",
    dict(X=rn(6), C=rn(5)),
    horner_ref,
)
