"""Recurrences over an iterative rank other than online softmax: a segmented scan reset by document ids, the
log-space HMM forward algorithm and Viterbi side by side, the mLSTM cell with its max stabiliser, a
bias-corrected EMA with a float param overridden, a symplectic Euler step reading the other state after the
step, suffix scans through reversed indices, a running union max/min over flagged steps, a running log-sum-exp
through a -inf input, a two-level (tile + carry) prefix sum, a retention state that freezes after a length
given at call time, and a product recurrence initialised through `??`."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1401)
CASES, case = registry()


# --- a cumulative sum that restarts at every document boundary; the filter reads d[t - 1], absent at t = 0
def seg_ref(X, d):
    S = [0.0]
    for t in range(len(X)):
        keep = t > 0 and d[t] == d[t - 1]
        S.append(X[t] + (S[-1] if keep else 0.0))
    S = np.array(S)
    return S, S[1:]


case(
    "s14_segmented_cumsum_reset_by_doc",
    """
input  X[t], d[t] : int
output S, Y
KEEP[t]  = S[t]  where d[t] == d[t - 1]
S[0]     = 0
S[t + 1] = X[t] + (KEEP[t] ?? 0)
Y[t]     = S[t + 1]
""",
    dict(X=rn(9), d=np.array([0, 0, 0, 1, 2, 2, 5, 5, 5])),
    seg_ref,
    passes={"t": 1},
)


# --- HMM in log space: the forward algorithm (log-sum-exp over the previous state, stabilised by its own max
# inside the step) and Viterbi (max-plus) over the same iterative rank; -inf transitions and a -inf start
def hmm_ref(LE, LT, L0):
    T, _J = LE.shape
    A = [L0.copy()]
    Vt = [L0.copy()]
    for t in range(T):
        z = A[-1][:, None] + LT  # [i, j]
        A.append(np.logaddexp.reduce(z, axis=0) + LE[t])
        Vt.append(np.max(Vt[-1][:, None] + LT, axis=0) + LE[t])
    A, Vt = np.array(A), np.array(Vt)
    return np.logaddexp.reduce(A[-1]), A, Vt[-1].max()


_LT = np.log(rng.uniform(0.1, 1.0, (4, 4)))
_LT[1, 2] = _LT[2, 0] = _LT[3, 3] = -np.inf
case(
    "s14_hmm_forward_and_viterbi_log_space",
    """
input  LE[t, j], LT[i, j], L0[j]
output LZ, A, BEST
A[0, j]     = L0[j]
MX[t, j]    = A[t, i] + LT[i, j] :: max(i)
SE[t, j]    = exp(A[t, i] + LT[i, j] - MX[t, j])
A[t + 1, j] = log(SE[t, j]) + MX[t, j] + LE[t, j]
VT[0, j]     = L0[j]
VT[t + 1, j] = VT[t, i] + LT[i, j] + LE[t, j] :: max(i)
GZ  = A[T, j] :: max(j)
ZS  = exp(A[T, j] - GZ)
LZ  = log(ZS) + GZ
BEST = VT[T, j] :: max(j)
""",
    dict(LE=np.log(rng.uniform(0.05, 1.0, (6, 4))), LT=_LT, L0=np.array([0.0, -np.inf, np.log(0.5), -1.0])),
    hmm_ref,
    passes={"t": 1, "i": 2},
)


# --- the mLSTM cell (xLSTM): exponential input gate, sigmoid forget gate in log space, a running stabiliser
# m[t + 1] = max(logf[t] + m[t], i[t]), and the normaliser max(|n . q|, exp(-m))
def mlstm_ref(Q, K, V, IG, FG):
    T, E = Q.shape
    F = V.shape[1]
    C, n, m = np.zeros((E, F)), np.zeros(E), 0.0
    H = np.zeros((T, F))
    for t in range(T):
        lf = -np.logaddexp(0.0, -FG[t])
        m_new = max(lf + m, IG[t])
        dec, inn = np.exp(lf + m - m_new), np.exp(IG[t] - m_new)
        C = dec * C + inn * np.outer(K[t], V[t])
        n = dec * n + inn * K[t]
        m = m_new
        H[t] = (Q[t] @ C) / max(abs(n @ Q[t]), np.exp(-m))
    return H


case(
    "s14_mlstm_stabilised_recurrence",
    """
input  Q[t, e], K[t, e], V[t, f], IG[t], FG[t]
output H
LF[t]           = -softplus(-FG[t])
MS[0]           = 0
MS[t + 1]       = max(LF[t] + MS[t], IG[t])
DEC[t]          = exp(LF[t] + MS[t] - MS[t + 1])
INN[t]          = exp(IG[t] - MS[t + 1])
C[0, e, f]      = 0
C[t + 1, e, f]  = DEC[t] * C[t, e, f] + INN[t] * K[t, e] * V[t, f]
N[0, e]         = 0
N[t + 1, e]     = DEC[t] * N[t, e] + INN[t] * K[t, e]
NUM[t, f]       = C[t + 1, e, f] * Q[t, e]
DN[t]           = N[t + 1, e] * Q[t, e]
H[t, f]         = NUM[t, f] / max(abs(DN[t]), exp(-MS[t + 1]))
""",
    dict(Q=rn(7, 3), K=rn(7, 3, scale=0.6), V=rn(7, 2), IG=rn(7, scale=3.0), FG=rn(7, scale=2.0) + 1.0),
    mlstm_ref,
)


# --- Adam's first moment with bias correction: two recurrences, one of them scalar; the float param B1 is
# overridden at compile time
def ema_ref(X, B1=0.7):
    T, C = X.shape
    M = [np.zeros(C)]
    bp = [1.0]
    for t in range(T):
        M.append(B1 * M[-1] + (1 - B1) * X[t])
        bp.append(bp[-1] * B1)
    M, bp = np.array(M), np.array(bp)
    return M[1:] / (1 - bp[1:, None]), bp


case(
    "s14_ema_bias_corrected_float_param_override",
    """
input  X[t, c]
param  B1 = 0.9
output MH, BP
M[0, c]     = 0
M[t + 1, c] = B1 * M[t, c] + (1 - B1) * X[t, c]
BP[0]       = 1
BP[t + 1]   = BP[t] * B1
MH[t, c]    = M[t + 1, c] / (1 - BP[t + 1])
""",
    dict(X=rn(6, 3)),
    ema_ref,
    params={"B1": 0.7},
)


# --- symplectic Euler for K oscillators: B is updated first, A reads B *after* the step; the number of steps
# is an int param overridden at compile time, the step size a float param
def euler_ref(A0, B0, W, N=7, DT=0.25):
    A, B = [A0.copy()], [B0.copy()]
    for _ in range(N):
        b = B[-1] - DT * W * A[-1]
        a = A[-1] + DT * b
        A.append(a)
        B.append(b)
    return np.array(A), np.array(B)


case(
    "s14_symplectic_euler_reads_other_state_after",
    """
input  A0[k], B0[k], W[k]
param  N = 4
param  DT = 0.25
output A, B
A[0, k]     = A0[k]
B[0, k]     = B0[k]
B[n + 1, k] = B[n, k] - DT * W[k] * A[n, k]
A[n + 1, k] = A[n, k] + DT * B[n + 1, k]
""",
    dict(A0=rn(3), B0=rn(3), W=np.array([1.0, 4.0, 0.25])),
    euler_ref,
    params={"N": 7},
)


# --- suffix sums and suffix minima through a reversed read X[T - 1 - t], read back at R[T - t]
def suffix_ref(X):
    return np.cumsum(X[::-1])[::-1], np.minimum.accumulate(X[::-1])[::-1]


case(
    "s14_suffix_scans_reversed_index",
    """
input  X[t]
output SUF, SMIN
R[0]      = 0
R[t + 1]  = R[t] + X[T - 1 - t]
MN[0]     = inf
MN[t + 1] = min(MN[t], X[T - 1 - t])
SUF[t]    = R[T - t]
SMIN[t]   = MN[T - t]
""",
    dict(X=np.array([3.0, -1.0, 4.0, -1.0, 5.0, -9.0, 2.0, 6.0])),
    suffix_ref,
)


# --- a running max and min over the steps that a flag keeps, states absent until the first kept step
# (delivered as 0), with ties and negative values so that absent and 0 differ; and a count of kept steps
def union_ref(X, ok):
    hi, lo, cnt = [None], [None], [0.0]
    for t in range(len(X)):
        if ok[t] == 1:
            hi.append(X[t] if hi[-1] is None else max(hi[-1], X[t]))
            lo.append(X[t] if lo[-1] is None else min(lo[-1], X[t]))
            cnt.append(cnt[-1] + 1)
        else:
            hi.append(hi[-1])
            lo.append(lo[-1])
            cnt.append(cnt[-1])
    z = lambda a: np.array([0.0 if v is None else v for v in a])  # noqa: E731
    return z(hi), z(lo), np.array(cnt)


case(
    "s14_running_union_max_min_flagged_steps",
    """
input  X[t], ok[t] : int
output HI, LO, CNT
XP[t]     = X[t]  where ok[t] == 1
HI[0]     = -inf  where 0 != 0
HI[t + 1] = max(HI[t] ?? XP[t], XP[t] ?? HI[t])
LO[0]     = inf  where 0 != 0
LO[t + 1] = min(LO[t] ?? XP[t], XP[t] ?? LO[t])
CNT[0]     = 0
CNT[t + 1] = CNT[t] + (XP[t] * 0 + 1 ?? 0)
""",
    dict(
        X=np.array([-5.0, 9.0, -2.0, -2.0, 100.0, -3.0, -2.0, -100.0]), ok=np.array([0, 0, 1, 1, 0, 1, 1, 0])
    ),
    union_ref,
)


# --- a running log-sum-exp with its own stabiliser computed inside the step; one input is -inf (a present
# -inf, whose exponential is 0 once the running value is finite)
def rlse_ref(X):
    out = [-np.inf]
    for x in X:
        out.append(np.logaddexp(out[-1], x))
    return np.array(out)


case(
    "s14_running_lse_through_neg_inf_input",
    """
input  X[t]
output L
MX[t]    = max(L[t], X[t])
L[0]     = -inf
L[t + 1] = MX[t] + log(exp(L[t] - MX[t]) + exp(X[t] - MX[t]))
""",
    dict(X=np.array([0.5, 700.0, -3.0, -np.inf, 702.0, -800.0, 1.0])),
    rlse_ref,
)


# --- a two-level prefix sum: per-tile totals, a carry across tiles (iterative m1), a within-tile causal sum
# over an alias of the tile rank, put back together with // and %; the last tile is ragged (M = 11, M0 = 4)
case(
    "s14_two_level_prefix_sum_ragged",
    """
input  X[m]
param  M0 = 4
rank   M = M1 * M0
rank   J0 = M0
output Y, CARRY
TS[m1]      = X[m1 * M0 + m0]
C[0]        = 0
C[m1 + 1]   = C[m1] + TS[m1]
IN[m1, m0]  = X[m1 * M0 + j0]  where j0 <= m0
Y[m]        = C[m // M0] + IN[m // M0, m % M0]
CARRY[m1]   = C[m1 + 1]
""",
    dict(X=rn(11)),
    lambda X: (np.cumsum(X), np.cumsum(X)[[3, 7, 10]]),
)


# --- retention (RetNet's recurrent form) per head, with a length n given at call time: the steps t >= n leave
# the state as it is (the update is absent there and `??` keeps the state), the outputs past n are absent
def ret_ref(Q, K, V, G, n):
    H, T, E = Q.shape
    F = V.shape[2]
    O = np.zeros((H, T, F))
    ST = np.zeros((H, E, F))
    for h in range(H):
        S = np.zeros((E, F))
        for t in range(T):
            if t < n:
                S = G[h] * S + np.outer(K[h, t], V[h, t])
                O[h, t] = Q[h, t] @ S
        ST[h] = S
    return O, ST


case(
    "s14_retention_frozen_after_length",
    """
input  Q[h, t, e], K[h, t, e], V[h, t, f], G[h], n : int
output O, ST
KV[h, t, e, f]    = K[h, t, e] * V[h, t, f]  where t < n
S[h, 0, e, f]     = 0
S[h, t + 1, e, f] = (G[h] * S[h, t, e, f] + KV[h, t, e, f]) ?? S[h, t, e, f]
O[h, t, f]        = Q[h, t, e] * S[h, t + 1, e, f]  where t < n
ST[h, e, f]       = S[h, T, e, f]
""",
    dict(Q=rn(2, 6, 3), K=rn(2, 6, 3), V=rn(2, 6, 2), G=np.array([0.9, 0.5]), n=np.array(4)),
    ret_ref,
)


# --- a product recurrence whose initial state reads X0[p - 1] ?? 1 (absent at p = 0), with zeros and sign
# changes in the gates and the iterative coordinate added as a value at every step
def prod_ref(X0, G):
    N, _P = G.shape
    R = [np.concatenate([[1.0], X0[:-1]])]
    for n in range(N):
        R.append(R[-1] * G[n] + n)
    return np.array(R)


case(
    "s14_product_recurrence_default_init_coordinate",
    """
input  X0[p], G[n, p]
output R
R[0, p]     = X0[p - 1] ?? 1
R[n + 1, p] = R[n, p] * G[n, p] + n
""",
    dict(
        X0=np.array([2.0, -3.0, 0.5, 4.0]),
        G=np.array([[1.0, -1.0, 0.0, 2.0], [0.5, 0.0, -2.0, 1.0], [-1.0, 3.0, 1.0, 0.0]]),
    ),
    prod_ref,
)
