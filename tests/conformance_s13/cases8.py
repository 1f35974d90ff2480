"""The cases that found bugs in session 13 (both fixed, commit 0ca032b): an int32 wrap in Triton kernels for
a param of 2**31 - 1 in a filter, and dead-tile skipping of a step that sums its state over the tile."""

import numpy as np

from .common import att, causal, make_rn, registry

rn, rng = make_rn(1399)
CASES, case = registry()


# --- triton: a filter `p < m + W` with the largest index param W = 2**31 - 1 (docs: a param in an index or a
# filter is at most 2**31 - 1; a user disabling a window). The triton backend evaluates `m + W` in int32 and
# wraps: the fused kernel returns all zeros (every row empty), the general path keeps only m = 0.
case(
    "s13_window_param_int32_max",
    """
input  Q[p, e], K[m, e], V[m, f]
param  W = 2147483647
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p and p < m + W
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 3), K=rn(5, 3), V=rn(5, 2)),
    lambda Q, K, V: att(Q, K, V, mask=causal(5, 5)),
)

case(
    "s13_filter_reduced_rank_plus_int32_max_param",
    """
input  X[p], Y[m]
param  W = 2147483647
output S
S[p] = X[p] * Y[m]  where m + W > p
""",
    dict(X=np.arange(1.0, 6.0), Y=np.arange(1.0, 6.0)),
    lambda X, Y: X * Y.sum(),
)


# --- torch (tile skipping, the default skip_tiles=True): an update that reduces a rank of the tile,
# `R[m1 + 1, p] = R[m1, p] + (B[m1, m0, p] ?? 0)`, sums M0 copies of R[m1, p] (the reduction covers the whole
# right-hand side, docs section 5), so a step whose tile is entirely absent multiplies R by M0. The torch
# backend treats that dead step as the identity and skips it. X = ones(4, 4): the reference, triton and
# skip_tiles=False give [2, 4, 5, 6]; torch by default gives [1, 2, 5, 6].
def dead_sum_ref(X, M0=2):
    M, P = X.shape
    M1 = -(-M // M0)
    out = np.zeros(P)
    for p in range(P):
        r = 0.0
        for m1 in range(M1):
            terms = []
            for m0 in range(M0):
                m = m1 * M0 + m0
                b = X[m, p] if m < M and m <= p else 0.0
                terms.append(r + b)
            r = sum(terms)
        out[p] = r
    return out


case(
    "s13_dead_step_update_reduces_tile_rank",
    """
input  X[m, p]
param  M0 = 2
rank   M = M1 * M0
output F
B[m1, m0, p] = X[m1 * M0 + m0, p]  where m1 * M0 + m0 <= p
R[0, p]      = 0
R[m1 + 1, p] = R[m1, p] + (B[m1, m0, p] ?? 0)
F[p]         = R[M1, p]
""",
    dict(X=np.ones((4, 4))),
    dead_sum_ref,
)


# --- the same fault in the shape a user writes by mistake: a guarded 1-pass denominator that sums the tile's
# exponentials and the carried state in one statement, `(SLN + (RD ?? 0)) ?? RD` summed over m0; a dead
# step (all of a tile after the diagonal) adds M0 copies of RD in the reference and none in torch, nor in
# triton's fused kernel ("tiles after the filter's range skipped per program"); skip_tiles=False and
# triton's general path are right
def dead_sum_att_ref(Q, K, M0=2):
    P, M = Q.shape[0], K.shape[0]
    M1 = -(-M // M0)
    out = np.zeros(P)
    for p in range(P):
        rd = None
        for m1 in range(M1):
            terms = []
            for m0 in range(M0):
                m = m1 * M0 + m0
                sln = np.exp(Q[p] @ K[m]) if m < M and m <= p else None
                if sln is not None:
                    terms.append(sln + (0.0 if rd is None else rd))
                elif rd is not None:
                    terms.append(rd)
            rd = sum(terms) if terms else None
        out[p] = 0.0 if rd is None else rd
    return out


case(
    "s13_dead_step_guarded_sum_in_one_statement",
    """
input  Q[p, e], K[m, e]
param  M0 = 2
rank   M = M1 * M0
output F
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p
RD[0, p]       = 0  where 0 != 0
SLN[m1, m0, p] = exp(BQK[m1, m0, p])
RD[m1 + 1, p]  = SLN[m1, m0, p] + (RD[m1, p] ?? 0) ?? RD[m1, p]
F[p]           = RD[M1, p]
""",
    dict(Q=rn(4, 2), K=rn(5, 2)),
    dead_sum_att_ref,
)
