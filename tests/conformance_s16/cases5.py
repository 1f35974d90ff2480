"""More streamed sums, at the edges of rule 3: a ``?? 0`` default that turns an absent weight into a present
0 multiplying NaN and inf values (IEEE: NaN, and it must stay so), keys on a two-rank grid, a score smoothed
with the previous key's (a read across tile boundaries), a single key, data-dependent decays from a scan of
log gates, and ALiBi with GQA bottom-right plus a scalar total over queries and keys."""

import numpy as np

from .common import make_rn, pm, registry, relu, sig

rn, rng = make_rn(1605)
CASES, case = registry()


# --- absent weights defaulted to 0 before they multiply V: past n, V holds NaN / inf, and 0 * NaN and
# 0 * inf are NaN (the default makes the point present); columns without garbage stay finite
_N5 = 4
_V5 = rn(7, 3)
_V5[4, 0] = np.nan
_V5[5, 0] = 1.0
_V5[6, 1] = np.inf  # column 2 stays finite past n
_V5[4:, 2] = [0.5, -0.25, 2.0]


def zero_nan_ref(Q, K, V, n):
    P, E = Q.shape
    M = K.shape[0]
    w = np.zeros((P, M))
    w[:, :n] = sig(Q @ K[:n].T / np.sqrt(E))
    out = np.zeros((P, V.shape[1]))
    for p in range(P):
        for f in range(V.shape[1]):
            out[p, f] = sum(w[p, m] * V[m, f] for m in range(M))  # 0 * NaN and 0 * inf are NaN
    return out


case(
    "s16_stream_default_zero_times_nan_values_is_nan",
    """
# weights past n defaulted to 0 (present) before they multiply V: 0 * NaN is NaN, by IEEE
input  Q[p, e], K[m, e], V[m, f], n : int
output O
S[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where m < n
O[p, f] = (sigmoid(S[p, m]) ?? 0) * V[m, f]
""",
    dict(Q=rn(3, 4), K=rn(7, 4), V=_V5, n=np.array(_N5)),
    zero_nan_ref,
)


# --- keys on a grid (m, n): a query at p sees the keys with m + n <= p; ReLU weights summed over both ranks
def grid_ref(Q, K, V):
    P = Q.shape[0]
    M, N, _ = K.shape
    out = np.zeros((P, V.shape[2]))
    for p in range(P):
        for m in range(M):
            for n in range(N):
                if m + n <= p:
                    out[p] += relu(Q[p] @ K[m, n]) * V[m, n]
    return out


case(
    "s16_stream_keys_on_a_grid_two_summed_ranks",
    """
# ReLU attention over a 2-D grid of keys, those on or before the query's anti-diagonal
input  Q[p, e], K[m, n, e], V[m, n, f]
output O
S[p, m, n] = Q[p, e] * K[m, n, e]  where m + n <= p
O[p, f]    = relu(S[p, m, n]) * V[m, n, f]
""",
    dict(Q=rn(6, 3), K=rn(4, 3, 3), V=rn(4, 3, 2)),
    grid_ref,
)


# --- a score smoothed with the previous key's score (absent for key 0: defaulted to 0); causal sigmoid. The
# read at m - 1 crosses tile boundaries
def smooth_ref(Q, K, V):
    P = Q.shape[0]
    M = K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T
    keep = m <= p
    sprev = np.zeros_like(s)
    sprev[:, 1:] = np.where(keep[:, :-1], s[:, :-1], 0.0)
    return np.where(keep, sig(s + 0.5 * sprev), 0.0) @ V


case(
    "s16_stream_score_smoothed_with_previous_key",
    """
# each weight looks at its own score and half the previous key's (a 2-tap convolution over keys)
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]  where m <= p
T[p, m]  = S[p, m] + 0.5 * (S[p, m - 1] ?? 0)
O[p, f]  = sigmoid(T[p, m]) * V[m, f]
""",
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2)),
    smooth_ref,
)


# --- a single key (M = 1, smaller than any tile): squared ReLU with a lag, so row 0 sees nothing
def one_key_ref(Q, K, V):
    s = Q @ K.T  # [P, 1]
    w = relu(s) ** 2
    w[0] = 0.0
    return w @ V, np.where(np.arange(Q.shape[0]) >= 1, w[:, 0], -1.0)


case(
    "s16_stream_single_key_lagged",
    """
# one key; the first query is too early to see it
input  Q[p, e], K[m, e], V[m, f]
output O, W0
S[p, m] = Q[p, e] * K[m, e]  where m < p
W[p, m] = square(relu(S[p, m]))
O[p, f] = W[p, m] * V[m, f]
W0[p]   = W[p, m] ?? -1
""",
    dict(Q=rn(4, 3), K=rn(1, 3), V=rn(1, 2)),
    one_key_ref,
)


# --- gated retention / decayed linear attention with data-dependent log gates: cumulative gates from a scan
# over t, then the dense causal form weighted by exp(C[p + 1] - C[m + 1]) per head
def gated_ref(Q, K, V, LF):
    H, P, _E = Q.shape
    out = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        c = np.concatenate([[0.0], np.cumsum(LF[h])])
        for p in range(P):
            for m in range(p + 1):
                out[h, p] += (Q[h, p] @ K[h, m]) * np.exp(c[p + 1] - c[m + 1]) * V[h, m]
    return out


case(
    "s16_stream_gated_decay_from_scanned_log_gates",
    """
# decayed linear attention with per-token forget gates: cumulative log gates by a scan, then the dense form
input  Q[h, p, e], K[h, m, e], V[h, m, f], LF[h, t]
output O
CG[h, 0]     = 0
CG[h, t + 1] = CG[h, t] + LF[h, t]
S[h, p, m]   = Q[h, p, e] * K[h, m, e]  where m <= p
D[h, p, m]   = S[h, p, m] * exp(CG[h, p + 1] - CG[h, m + 1])
O[h, p, f]   = D[h, p, m] * V[h, m, f]
""",
    dict(Q=rn(2, 7, 3), K=rn(2, 7, 3), V=rn(2, 7, 2), LF=np.log(rng.uniform(0.6, 0.99, (2, 7)))),
    gated_ref,
)


# --- sigmoid attention with ALiBi slopes per query head, GQA 2, bottom-right causal with more keys than
# queries, and a scalar total weight over heads, queries and keys
def alibi_br_ref(Q, K, V, slope):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    keep = m <= p + M - P
    out = np.zeros((H, P, V.shape[2]))
    tot = 0.0
    for h in range(H):
        a = np.where(keep, sig(Q[h] @ K[h // 2].T * E**-0.5 + slope[h] * (m - (p + M - P)) - 1), 0.0)
        out[h] = a @ V[h // 2]
        tot += a.sum()
    return out, tot


case(
    "s16_stream_alibi_gqa_bottom_right_scalar_total",
    """
# decoding a chunk of P queries against M keys: bottom-right causal, ALiBi, GQA 2, sigmoid weights
input  Q[h, p, e], K[g, m, e], V[g, m, f], slope[h]
output O, TOT
QK[h, p, m] = Q[h, p, e] * K[h // 2, m, e] * rsqrt(E)  where m <= p + M - P
A[h, p, m]  = sigmoid(QK[h, p, m] + slope[h] * (m - p - M + P) - 1)
O[h, p, f]  = A[h, p, m] * V[h // 2, m, f]
TOT         = A[h, p, m]
""",
    dict(Q=rn(4, 3, 4), K=rn(2, 8, 4), V=rn(2, 8, 3), slope=np.array([1.0, 0.5, 0.25, 0.125])),
    alibi_br_ref,
)
