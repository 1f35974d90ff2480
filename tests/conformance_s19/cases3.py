"""Iterative ranks (docs/language.md, section 10): an iterative index in the middle of three, returned with
all its states; states over a partition part (one per tile) returned in full; states read outside the
recurrence reversed, at a constant, summed, and two steps ahead; a recurrence whose step count is a param
overridden; a min reduction inside an update; the docs' prefix attention on a decode query with a head rank;
the FuseMax teaching Cascade 3 (a division by the previous state)."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1903)
CASES, case = registry()


# --- the iterative index in the middle: R[i, t, j], all T + 1 states returned, and the final one
def middle_ref(X, A, B):
    I, J = X.shape
    T = len(A)
    R = np.zeros((I, T + 1, J))
    R[:, 0, :] = X
    for t in range(T):
        R[:, t + 1, :] = R[:, t, :] * A[t] + B[t][None, :]
    return R, R[:, T, :]


case(
    "s19_rec_iterative_index_in_the_middle_all_states",
    """
input  X[i, j], A[t], B[t, j]
output R, F
R[i, 0, j]     = X[i, j]
R[i, t + 1, j] = R[i, t, j] * A[t] + B[t, j]
F[i, j]        = R[i, T, j]
""",
    dict(X=rn(2, 3), A=rn(4) * 0.5, B=rn(4, 3)),
    middle_ref,
)


# --- states over a partition part: a running sum of tile sums and a running max of tile maxima, one state
# per tile boundary (M1 + 1 of them), the ragged last tile included
def tile_states_ref(X, M0=3):
    M = len(X)
    M1 = -(-M // M0)
    tiles = [X[t * M0 : (t + 1) * M0] for t in range(M1)]
    RS = np.concatenate([[0.0], np.cumsum([t.sum() for t in tiles])])
    RX = np.concatenate([[X[0]], np.maximum.accumulate([max(X[0], t.max()) for t in tiles])])
    return RS, RX


case(
    "s19_rec_states_over_partition_part_returned",
    """
input  X[m]
param  M0 = 3
rank   M = M1 * M0
output RS, RX
TS[m1]     = X[m1 * M0 + m0]
TM[m1]     = X[m1 * M0 + m0] :: max(m0)
RS[0]      = 0
RS[m1 + 1] = RS[m1] + TS[m1]
RX[0]      = X[0]
RX[m1 + 1] = max(RX[m1], TM[m1])
""",
    dict(X=rn(8)),
    tile_states_ref,
)


# --- states read outside the recurrence: reversed (R[T - t]), at a constant, summed over t (states
# 0 .. T - 1), and two steps ahead (absent past the last state)
def states_read_ref(X):
    T = len(X)
    R = np.concatenate([[1.0], np.cumsum(X) + 1])
    REV = np.array([R[T - t] for t in range(T)])
    AT2 = R[2]
    SUM = R[:T].sum()
    AHEAD = np.array([R[t + 2] if t + 2 <= T else -7.0 for t in range(T)])
    return REV, AT2, SUM, AHEAD


case(
    "s19_rec_states_read_reversed_constant_summed_ahead",
    """
input  X[t]
output REV, AT2, SUM, AHEAD
R[0]     = 1
R[t + 1] = R[t] + X[t]
REV[t]   = R[T - t]
AT2      = R[2]
SUM      = R[t]
AHEAD[t] = R[t + 2] ?? -7
""",
    dict(X=rn(5)),
    states_read_ref,
)


# --- a step count that is a param, overridden: Newton steps for the square root of each element
def newton_ref(X, N=6):
    Y = np.ones_like(X)
    for _ in range(N):
        Y = 0.5 * (Y + X / Y)
    return Y


case(
    "s19_rec_param_step_count_overridden_newton_sqrt",
    """
input  X[i]
param  N = 2
output Y
R[0, i]     = 1
R[n + 1, i] = 0.5 * (R[n, i] + X[i] / R[n, i])
Y[i]        = R[N, i]
""",
    dict(X=np.array([0.25, 2.0, 9.0, 30.0])),
    newton_ref,
    params={"N": 6},
)


# --- a min reduction inside an update: R[t + 1, i] = min over j of (R[t, i] + C[t, i, j]), a shortest path
# through layers; the reduction covers the whole right-hand side
def minplus_ref(C):
    T, I, _ = C.shape
    R = np.zeros((T + 1, I))
    for t in range(T):
        R[t + 1] = (R[t][:, None] + C[t]).min(1)
    return R[T]


case(
    "s19_rec_min_reduction_inside_update",
    """
input  C[t, i, j]
output F
R[0, i]     = 0
R[t + 1, i] = R[t, i] + C[t, i, j] :: min(j)
F[i]        = R[T, i]
""",
    dict(C=rn(4, 3, 5)),
    minplus_ref,
)


# --- the docs' prefix attention, per head, on a decode query: every prefix output and the final one
def prefix_att_ref(q, K, V):
    H, T, _ = K.shape
    O = np.zeros((H, T, V.shape[2]))
    for h in range(H):
        s = K[h] @ q[h]
        for t in range(T):
            w = np.exp(s[: t + 1] - s[: t + 1].max())
            O[h, t] = w @ V[h, : t + 1] / w.sum()
    return O, O[:, -1, :]


case(
    "s19_rec_prefix_attention_per_head_decode",
    """
input  q[h, e], K[h, t, e], V[h, t, f]
output O, LAST
S[h, t]         = q[h, e] * K[h, t, e]
RM[h, 0]        = -inf
RD[h, 0]        = 0
RN[h, 0, f]     = 0
RM[h, t + 1]    = max(RM[h, t], S[h, t])
RD[h, t + 1]    = RD[h, t] * exp(RM[h, t] - RM[h, t + 1]) + exp(S[h, t] - RM[h, t + 1])
RN[h, t + 1, f] = RN[h, t, f] * exp(RM[h, t] - RM[h, t + 1]) + exp(S[h, t] - RM[h, t + 1]) * V[h, t, f]
O[h, t, f]      = RN[h, t + 1, f] / RD[h, t + 1]
LAST[h, f]      = RN[h, T, f] / RD[h, T]
""",
    dict(q=rn(2, 3), K=rn(2, 5, 3), V=rn(2, 5, 2)),
    prefix_att_ref,
    passes={"t": 1},
)


# --- FuseMax's teaching Cascade 3: RZ[i + 1] = RZ[i] * RY[i + 1] / RY[i] + RY[i + 1] * A[i], which equals
# (sum of A * B) * (sum of A); its first step divides 0 by 0 (NaN times 0 is NaN), so the spec starts the
# recurrence from state 1 computed by hand
def teaching3_ref(A, B):
    return np.array((A * B).sum() * A.sum())


case(
    "s19_rec_teaching_cascade3_iterative_one_pass",
    """
input  A[k], B[k]
output Z
RY[0]     = A[0] * B[0]
RZ[0]     = RY[0] * A[0]
RY[k + 1] = RY[k] + (A[k + 1] * B[k + 1] ?? 0)
RZ[k + 1] = RZ[k] * RY[k + 1] / RY[k] + RY[k + 1] * (A[k + 1] ?? 0)
Z         = RZ[K - 1]
""",
    dict(A=rn(6) + 3, B=rn(6) + 3),
    teaching3_ref,
    passes={"k": 1},
)
