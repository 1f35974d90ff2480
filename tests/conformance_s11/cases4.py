# ruff: noqa (spec strings and oracles are data: as the reviewer wrote them)
import numpy as np
from .cases1 import rn, softmax, att, causal, rng

CASES = []


def case(name, spec, inputs, oracle, params=None, skip=()):
    CASES.append(
        dict(
            name=name, spec=spec.strip() + "\n", inputs=inputs, oracle=oracle, params=params or {}, skip=skip
        )
    )


NAN = np.nan


# filtered update makes state absent from then on
def filtupd_ref(X):
    T, I = X.shape
    R = np.zeros((T + 1, I))
    pres = np.ones((T + 1, I), bool)
    for t in range(T):
        for i in range(I):
            ok = pres[t, i] and t <= i
            pres[t + 1, i] = ok
            R[t + 1, i] = R[t, i] + X[t, i] if ok else 0
    return np.where(pres[T], R[T], 0.0), np.where(pres, R, 0.0)


case(
    "rec_filtered_update",
    """
input  X[t, i]
output F, R
R[0, i]     = 0
R[t + 1, i] = R[t, i] + X[t, i]  where t <= i
F[i]        = R[T, i]
""",
    dict(X=rn(4, 6)),
    filtupd_ref,
)


# guarded filtered update
def guard_ref(X):
    T, I = X.shape
    R = np.zeros(I)
    for t in range(T):
        R = R + np.where(t <= np.arange(I), X[t], 0)
    return R


case(
    "rec_guarded_update",
    """
input  X[t, i]
output F
XF[t, i]    = X[t, i]  where t <= i
R[0, i]     = 0
R[t + 1, i] = (R[t, i] + XF[t, i]) ?? R[t, i]
F[i]        = R[T, i]
""",
    dict(X=rn(4, 6)),
    guard_ref,
)


# power iteration: state read at another rank variable and contracted
def power_ref(W, x0):
    r = x0.copy()
    out = [r]
    for _ in range(3):
        r = W @ r
        out.append(r)
    return np.array(out).T


case(
    "rec_power_iteration",
    """
input  W[i, j], x0[i]
param  N = 3
output R
R[i, 0]     = x0[i]
R[i, n + 1] = W[i, j] * R[j, n]
""",
    dict(W=rn(4, 4, scale=0.5), x0=rn(4)),
    power_ref,
)


# coordinate of iterative rank as value + gather in the update + init with filter
def coordrec_ref(X, perm):
    I = len(X)
    T = len(perm)
    R0 = np.where(np.arange(I) > 0, X, np.nan)
    R = [R0]
    for t in range(T):
        g = X[perm[t]] if 0 <= perm[t] < I else np.nan
        R.append(R[-1] * 0.5 + t + g)
    Rf = R[-1]
    return np.nan_to_num(Rf, nan=0.0)


case(
    "rec_coord_gather_init_filter",
    """
input  X[i], perm[t] : int
output F
R[0, i]     = X[i]  where i > 0
R[t + 1, i] = R[t, i] * 0.5 + t + X[perm[t]]
F[i]        = R[T, i]
""",
    dict(X=rn(4), perm=np.array([2, 0, 3, 1, 5])),
    coordrec_ref,
)


# state read outside at shifted index (t + 2 out of range at the end) and summed
def shiftread_ref(x):
    T = len(x)
    R = np.concatenate([[0], np.cumsum(x)])
    A = np.array([R[t + 2] if t + 2 <= T else 0.0 for t in range(T)])
    return A, R[1:].sum()


case(
    "rec_shifted_outside_reads",
    """
input  x[t]
output A, S
R[0]     = 0
R[t + 1] = R[t] + x[t]
A[t]     = R[t + 2]
S        = R[t + 1]
""",
    dict(x=rn(5)),
    shiftread_ref,
)


# two recurrences over different ranks, second uses final state of first
def tworanks_ref(x, y):
    s = x.sum()
    R = s
    for v in y:
        R = R * 0.5 + v
    return R


case(
    "rec_two_ranks_chained",
    """
input  x[t], y[s]
output F
A[0]     = 0
A[t + 1] = A[t] + x[t]
B[0]     = A[T]
B[s + 1] = B[s] * 0.5 + y[s]
F        = B[S]
""",
    dict(x=rn(4), y=rn(3)),
    tworanks_ref,
)


# recurrence inside which a per-step reduction happens (online softmax over t with vector feature per step)
def online_ref(S, V):
    # S[t, j], V[t, j, f]: at each t, local max over j; global softmax over (t, j)
    s = S.reshape(-1)
    v = V.reshape(-1, V.shape[-1])
    a = np.exp(s - s.max())
    return a @ v / a.sum()


case(
    "rec_online_softmax_blocks",
    """
input  S[t, j], V[t, j, f]
output O
LM[t]        = S[t, j] :: max(j)
RM[0]        = -inf
RD[0]        = 0
RN[0, f]     = 0
RM[t + 1]    = max(RM[t], LM[t])
SL[t, j]     = exp(S[t, j] - RM[t + 1])
LD[t]        = SL[t, j]
LN[t, f]     = SL[t, j] * V[t, j, f]
PR[t]        = exp(RM[t] - RM[t + 1])
RD[t + 1]    = LD[t] + RD[t] * PR[t]
RN[t + 1, f] = LN[t, f] + RN[t, f] * PR[t]
O[f]         = RN[T, f] / RD[T]
""",
    dict(S=rn(4, 3, scale=3), V=rn(4, 3, 2)),
    online_ref,
)


# recurrence with max state (cumulative max) and min, outputs all states
def cummax_ref(X):
    T, I = X.shape
    R = [np.full(I, -np.inf)]
    for t in range(T):
        R.append(np.maximum(R[-1], X[t]))
    return np.array(R)[1:].T, np.minimum.accumulate(X, 0)[-1]


case(
    "rec_cummax",
    """
input  X[t, i]
output C, MN
R[0, i]     = -inf
R[t + 1, i] = max(R[t, i], X[t, i])
C[i, t]     = R[t + 1, i]
MN[i]       = X[t, i] :: min(t)
""",
    dict(X=rn(5, 3)),
    cummax_ref,
)


# gated delta-rule style recurrence (DeltaNet): S[t+1] = S[t] - beta k (k^T S) + beta k v^T
def delta_ref(K, V, Q, beta):
    T, E = K.shape
    F = V.shape[1]
    S = np.zeros((E, F))
    outs = []
    for t in range(T):
        kS = K[t] @ S
        S = S + beta[t] * np.outer(K[t], V[t] - kS)
        outs.append(Q[t] @ S)
    return np.array(outs)


case(
    "rec_delta_rule",
    """
input  K[t, e], V[t, f], Q[t, e], beta[t]
rank   D = E
output O
ST[0, e, f]     = 0
KS[t, f]        = K[t, d] * ST[t, d, f]
U[t, f]         = V[t, f] - KS[t, f]
ST[t + 1, e, f] = ST[t, e, f] + beta[t] * K[t, e] * U[t, f]
O[t, f]         = Q[t, e] * ST[t + 1, e, f]
""",
    dict(K=rn(5, 3, scale=0.5), V=rn(5, 2), Q=rn(5, 3), beta=rng.uniform(0, 1, 5)),
    delta_ref,
)
