"""The analysis's pass counts (docs/analysis.md), each with a NumPy oracle for its values: the documented
chain in which a re-read of B lands in pass 3, a full reduction through both parts of a partition, a
per-tile max that is not a full reduction, a walk of an input through an alias, an input and a running
state re-read after a recurrence's final state (a CDF), max-then-min chains, the one-pass and the centred
variance, FlashAttention's weights recomputed from the final statistics, a softmax over heads counted on
the K/V head rank read only through ``h // R``, the documented normalisation walk through ``rank P = M``,
and a read of a partition part through an alias."""

import numpy as np

from .common import make_rn, registry

rn, rng = make_rn(1705)
CASES, case = registry()


# --- the chain of docs/analysis.md: W runs in pass 2 (it reads X), so Z's re-read of B is pass 3
def chain_ref(A, B):
    Y = A.sum()
    X = A - Y
    W = (X * B).sum()
    return B * W


case(
    "s17_passes_documented_chain_b_reread_in_pass3",
    """
# Y = sum A; X = A - Y (pass 2); W = sum X B (pass 2); Z = B W re-reads B after W: pass 3
input  A[k], B[k]
output Z
Y    = A[k]
X[k] = A[k] - Y
W    = X[k] * B[k]
Z[k] = B[k] * W
""",
    dict(A=rn(6), B=rn(6)),
    chain_ref,
    passes={"k": 3},
)


# --- a sum through both parts of a partition is a full reduction of k; re-reading the tiles is pass 2
def part_full_ref(A, K0=3):
    K = len(A)
    K1 = -(-K // K0)
    Y = A.sum()
    Z = np.zeros((K1, K0))
    for a in range(K1):
        for b in range(K0):
            if a * K0 + b < K:
                Z[a, b] = Y * A[a * K0 + b]
    return Z


case(
    "s17_passes_partition_both_parts_full_reduction",
    """
# Y sums A over k1 and k0 together (the whole of k); Z re-reads A tile by tile after it
input  A[k]
param  K0 = 3
rank   K = K1 * K0
output Z
Y          = A[k1 * K0 + k0]
Z[k1, k0]  = Y * A[k1 * K0 + k0]
""",
    dict(A=rn(7)),
    part_full_ref,
    passes={"k": 2, "k1": 2, "k0": 2},
)


# --- a max per tile (over k0 only) finishes per tile: 2 passes over k0, 1 over k and k1
def tile_max_ref(A, K0=3):
    tot = 0.0
    for a in range(0, len(A), K0):
        t = A[a : a + K0]
        tot += np.exp(t - t.max()).sum()
    return tot


case(
    "s17_passes_per_tile_max_not_a_full_reduction",
    """
# each tile is normalised by its own max (ragged last tile of one point), then everything is summed
input  A[k]
param  K0 = 3
rank   K = K1 * K0
output TOT
LM[k1]      = A[k1 * K0 + k0] :: max(k0)
SLN[k1, k0] = exp(A[k1 * K0 + k0] - LM[k1])
TOT         = SLN[k1, k0]
""",
    dict(A=rn(7) * 4),
    tile_max_ref,
    passes={"k": 1, "k1": 1, "k0": 2},
)


# --- an input walked through an alias after its sum: 2 passes over the declared rank i
case(
    "s17_passes_alias_walk_after_sum",
    """
# Y[j] reads X along j = i after S, a sum over all of X
input  X[i]
rank   J = I
output Y
S    = X[i]
Y[j] = X[j] - S
""",
    dict(X=rn(6)),
    lambda X: X - X.sum(),
    passes={"i": 2},
)


# --- an input re-read after a recurrence's final state: R[T] is like a full reduction
case(
    "s17_passes_input_reread_after_final_state",
    """
# Y[t] = X[t] / R[T]: the whole of X before the final state, then X again
input  X[t]
output Y
R[0]     = 0
R[t + 1] = R[t] + X[t]
Y[t]     = X[t] / R[T]
""",
    dict(X=np.abs(rn(6)) + 0.1),
    lambda X: X / X.sum(),
    passes={"t": 2},
)


# --- the running state re-read along its own rank after its final state: an empirical CDF
case(
    "s17_passes_cdf_states_reread_after_final",
    """
# prefix sums divided by their total: every state must be kept until R[T] is known
input  X[t]
output CDF
R[0]     = 0
R[t + 1] = R[t] + X[t]
CDF[t]   = R[t + 1] / R[T]
""",
    dict(X=np.abs(rn(7)) + 0.1),
    lambda X: np.cumsum(X) / X.sum(),
    passes={"t": 2},
)


# --- a max, then a min of the shifted values, then the shifted values re-read: 3 passes
def maxmin_ref(X):
    D = X - X.max()
    return D - D.min()


case(
    "s17_passes_max_then_min_then_reread",
    """
# D = X - max X (pass 2), MN = min D (pass 2), Y = D - MN (pass 3): a min-max rescaling
input  X[m]
output Y
GM   = X[m] :: max(m)
D[m] = X[m] - GM
MN   = D[m] :: min(m)
Y[m] = D[m] - MN
""",
    dict(X=rn(8)),
    maxmin_ref,
    passes={"m": 3},
)


# --- the variance from the two moments (R-free combination: 1 pass) and centred (2 passes)
case(
    "s17_passes_variance_from_moments_one_pass",
    """
# E[x^2] - E[x]^2: two sums, then a combination of values free of i
input  X[i]
output V
S1 = X[i]
S2 = square(X[i])
V  = S2 / I - square(S1 / I)
""",
    dict(X=rn(9) + 2.0),
    lambda X: X.var(),
    passes={"i": 1},
)

case(
    "s17_passes_variance_centred_two_passes",
    """
# the centred form re-reads X after its mean
input  X[i]
output V
MU = X[i] / I
V  = square(X[i] - MU) / I
""",
    dict(X=rn(9) + 2.0),
    lambda X: X.var(),
    passes={"i": 2},
)


# --- FlashAttention's weights recomputed from the final running max and denominator: K is re-read
def fa_weights_ref(Q, K, V):
    S = Q @ K.T
    W = np.exp(S - S.max(1, keepdims=True))
    W = W / W.sum(1, keepdims=True)
    return W @ V, W.T


case(
    "s17_passes_weights_recomputed_from_final_states",
    """
# Cascade 5 (M0 = 3, ragged), then the weights W[m, p] from RM[M1] and RD[M1], as a backward pass does
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output AV, W
BK[m1, m0, e]     = K[m1 * M0 + m0, e]
BV[m1, m0, f]     = V[m1 * M0 + m0, f]
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[0, p, f]      = 0
BQK[m1, m0, p]    = Q[p, e] * BK[m1, m0, e]
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * BV[m1, m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]     = SLD[m1, p] + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]          = RNV[M1, p, f] / RD[M1, p]
SC[m, p]          = Q[p, e] * K[m, e]
W[m, p]           = exp(SC[m, p] - RM[M1, p]) / RD[M1, p]
""",
    dict(Q=rn(4, 2), K=rn(8, 2), V=rn(8, 3)),
    fa_weights_ref,
    passes={"m": 2, "m1": 1, "m0": 2},
)


# --- a softmax over the heads (for each key), GQA 2: g is read only through h // R and counts as h does
def heads_softmax_ref(Q, K, V, R=2):
    H = Q.shape[0]
    S = np.stack([Q[h] @ K[h // R].T for h in range(H)])  # [h, p, m]
    EX = np.exp(S - S.max(0))
    A = EX / EX.sum(0)
    return np.stack([A[h] @ V[h // R] for h in range(H)])


case(
    "s17_passes_softmax_over_heads_kv_head_rank_through_index",
    """
# the heads compete for each (query, key) pair; K and V are shared by R = 2 heads
input  Q[h, p, e], K[g, m, e], V[g, m, f]
param  R = 2
output O
S[h, m, p]  = Q[h, p, e] * K[h // R, m, e]
GH[m, p]    = S[h, m, p] :: max(h)
EX[h, m, p] = exp(S[h, m, p] - GH[m, p])
SD[m, p]    = EX[h, m, p]
A[h, m, p]  = EX[h, m, p] / SD[m, p]
O[h, p, f]  = A[h, m, p] * V[h // R, m, f]
""",
    dict(Q=rn(4, 3, 2), K=rn(2, 5, 2), V=rn(2, 5, 2)),
    heads_softmax_ref,
    passes={"h": 3, "g": 3, "m": 1},
)


# --- the documented walk: Y[p, e] reads X[m, e] along p = m after a sum over all of X
case(
    "s17_passes_documented_walk_through_rank_alias",
    """
# X divided by its Frobenius norm, the rows addressed through rank P = M
input  X[m, e]
rank   P = M
output Y
NRM     = square(X[m, e])
Y[p, e] = X[p, e] * rsqrt(NRM)
""",
    dict(X=rn(5, 3)),
    lambda X: X / np.sqrt((X**2).sum()),
    passes={"m": 2, "e": 2},
)


# --- a partition part read through an alias (one value per tile) is no walk of m
def part_alias_ref(X, M0=3):
    bs = np.array([X[a : a + M0].sum() for a in range(0, len(X), M0)])
    return bs / bs.sum()


case(
    "s17_passes_part_read_through_alias_no_walk",
    """
# tile sums, then each tile's share of the total, the tiles addressed through rank J = M1
input  X[m]
param  M0 = 3
rank   M = M1 * M0
rank   J = M1
output Y
BS[m1] = X[m1 * M0 + m0]
TOT    = BS[m1]
Y[j]   = BS[j] / TOT
""",
    dict(X=np.abs(rn(8)) + 0.2),
    part_alias_ref,
    passes={"m": 1},
)
