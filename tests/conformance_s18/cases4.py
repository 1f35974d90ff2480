"""Odd sizes, recurrences and partitions: no query rows, an empty batch, an empty contraction (every score
absent), a recurrence of zero steps, every rank of size one beside a sink; split-K decoding whose splits
are merged one at a time by a guarded recurrence (leading and trailing empty splits); every tile-prefix
output of a hand-written 1-pass loop; a joint max over both parts of a user partition with the position
inside the tile as a bias."""

import numpy as np

from .common import lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1804)
CASES, case = registry()

_CAUSAL = """
input  Q[p, e], K[m, e], V[m, f]
output O, L
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
"""


case(
    "s18_size_zero_query_rows_causal_lse",
    "# causal attention with no query at all: both outputs are empty\n" + _CAUSAL,
    dict(Q=rn(0, 3), K=rn(5, 3), V=rn(5, 2)),
    lambda Q, K, V: (np.zeros((0, 2)), np.zeros(0)),
    passes={"m": 3},
)


case(
    "s18_size_zero_contraction_every_score_absent",
    "# E = 0: each score is an empty sum, absent; every row is then empty and the outputs 0\n" + _CAUSAL,
    dict(Q=rn(4, 0), K=rn(5, 0), V=rn(5, 2)),
    lambda Q, K, V: (np.zeros((4, 2)), np.zeros(4)),
)


def batch_ref(Q, K, V, n):
    return np.zeros((0, Q.shape[1], V.shape[2]))


case(
    "s18_size_zero_batch_key_lengths",
    """
# an empty batch (B = 0) with a length per batch
input  Q[b, p, e], K[b, m, e], V[b, m, f], n[b] : int
output O
S[b, m, p]  = Q[b, p, e] * K[b, m, e]  where m < n[b]
GM[b, p]    = S[b, m, p] :: max(m)
EX[b, m, p] = exp(S[b, m, p] - GM[b, p])
SD[b, p]    = EX[b, m, p]
O[b, p, f]  = EX[b, m, p] * V[b, m, f] / SD[b, p]
""",
    dict(Q=rn(0, 3, 2), K=rn(0, 4, 2), V=rn(0, 4, 2), n=np.zeros(0, dtype=np.int64)),
    batch_ref,
)


case(
    "s18_size_zero_steps_recurrence_from_input",
    """
# T = 0 steps: the states are the initial one only; no state before a step; a max over none is absent
input  X[t], y
output BEFORE, TOTAL, MX
R[0]      = y
R[t + 1]  = R[t] * 0.5 + X[t]
BEFORE[t] = R[t]
TOTAL     = R[T]
MX        = R[t] :: max(t)
""",
    dict(X=np.zeros(0), y=np.array(2.5)),
    lambda X, y: (np.zeros(0), np.array(2.5), np.array(0.0)),
)


# --- every rank of size one (B = H = P = M = E = F = 1) with a sink and the lse; the sink is larger than
# the score, so the key takes less than half of the weight
def ones_ref(Q, K, V, sink):
    s = float(Q.ravel()[0] * K.ravel()[0])
    gm = max(s, sink[0])
    den = np.exp(s - gm) + np.exp(sink[0] - gm)
    return (np.exp(s - gm) * V / den).reshape(1, 1, 1, 1), np.full((1, 1, 1), gm + np.log(den))


case(
    "s18_size_all_ones_sink_lse",
    """
# one batch, head, query, key, feature and value column; a sink per head
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e]  where m <= p
MX[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MX[b, h, p], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = EX[b, h, m, p]
DEN[b, h, p]   = SD[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DEN[b, h, p])
""",
    dict(
        Q=np.full((1, 1, 1, 1), 0.5),
        K=np.full((1, 1, 1, 1), 2.0),
        V=np.full((1, 1, 1, 1), 3.0),
        sink=np.array([1.5]),
    ),
    ones_ref,
)


# --- split-K decoding merged one split at a time: a recurrence over the splits s1 with the guards of
# docs/language.md (an empty split leaves the state unchanged); keys st[b] <= m < n[b], so batch 1 and 2
# start with empty splits and batch 0 ends with them
def merge_ref(q, K, V, st, n):
    B = q.shape[0]
    O = np.zeros((B, V.shape[2]))
    L = np.zeros(B)
    for b in range(B):
        s = K[b, st[b] : n[b]] @ q[b]
        w = np.exp(s - s.max())
        O[b] = w @ V[b, st[b] : n[b]] / w.sum()
        L[b] = s.max() + np.log(w.sum())
    return O, L


case(
    "s18_rec_splitk_online_merge_of_splits_guarded",
    """
# per split: max, denominator, numerator; then a running merge over the splits (CO is NaN while both
# maxima are -inf, but then LD is absent and the ?? keeps the state)
input  q[b, e], K[b, m, e], V[b, m, f], st[b] : int, n[b] : int
param  S0 = 3
rank   M = S1 * S0
output O, L
S[b, s1, s0]    = q[b, e] * K[b, s1 * S0 + s0, e]  where st[b] <= s1 * S0 + s0 < n[b]
LM[b, s1]       = S[b, s1, s0] :: max(s0)
EX[b, s1, s0]   = exp(S[b, s1, s0] - LM[b, s1])
LD[b, s1]       = EX[b, s1, s0]
LN[b, s1, f]    = EX[b, s1, s0] * V[b, s1 * S0 + s0, f]
RM[b, 0]        = -inf
RD[b, 0]        = 0
RN[b, 0, f]     = 0
RM[b, s1 + 1]   = max(RM[b, s1], LM[b, s1]) ?? RM[b, s1]
CO[b, s1]       = exp(RM[b, s1] - RM[b, s1 + 1])
CN[b, s1]       = exp(LM[b, s1] - RM[b, s1 + 1])
RD[b, s1 + 1]   = RD[b, s1] * CO[b, s1] + LD[b, s1] * CN[b, s1] ?? RD[b, s1]
RN[b, s1 + 1, f] = RN[b, s1, f] * CO[b, s1] + LN[b, s1, f] * CN[b, s1] ?? RN[b, s1, f]
O[b, f]         = RN[b, S1, f] / RD[b, S1]
L[b]            = RM[b, S1] + log(RD[b, S1])
""",
    dict(
        q=rn(3, 3, scale=2),
        K=rn(3, 11, 3),
        V=rn(3, 11, 2),
        st=np.array([0, 4, 6]),
        n=np.array([2, 7, 11]),
    ),
    merge_ref,
)


# --- a hand-written 1-pass loop over tiles of M0 = 3 whose every tile-prefix output is returned:
# O[m1, p, f] is attention over the keys of tiles 0 .. m1 (M = 8: the last tile ragged)
def tile_prefix_ref(Q, K, V, M0=3):
    P, M = Q.shape[0], K.shape[0]
    M1 = -(-M // M0)
    O = np.zeros((M1, P, V.shape[1]))
    s = Q @ K.T
    for t in range(M1):
        n = min((t + 1) * M0, M)
        O[t] = softmax(s[:, :n]) @ V[:n]
    return O


case(
    "s18_rec_every_tile_prefix_output_ragged",
    """
# Cascade 5 with the output read after each step: the attention over every prefix of tiles
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RD[0, p]          = 0
RNV[0, p, f]      = 0
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
RD[m1 + 1, p]     = SLD[m1, p] + RD[m1, p] * PRM[m1, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1, p]
O[m1, p, f]       = RNV[m1 + 1, p, f] / RD[m1 + 1, p]
""",
    dict(Q=rn(4, 3), K=rn(8, 3), V=rn(8, 2)),
    tile_prefix_ref,
)


# --- a user partition of the keys, a bias by the position inside the tile (coordinate m0), and one max
# over both parts; causal on the reassembled key index
def joint_parts_ref(Q, K, V, M0=3):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    s = Q @ K.T + 0.25 * (m % M0)
    return softmax(s, m <= p) @ V, lse(s, m <= p)


case(
    "s18_rec_joint_max_over_both_partition_parts",
    """
# the keys as tiles: S[m1, m0, p] with an in-tile position bias; max and sums over both parts at once
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O, L
S[m1, m0, p]  = Q[p, e] * K[m1 * M0 + m0, e] + 0.25 * m0 / E  where m1 * M0 + m0 <= p
GM[p]         = S[m1, m0, p] :: max(m1, m0)
EX[m1, m0, p] = exp(S[m1, m0, p] - GM[p])
SD[p]         = EX[m1, m0, p]
O[p, f]       = EX[m1, m0, p] * V[m1 * M0 + m0, f] / SD[p]
L[p]          = GM[p] + log(SD[p])
""",
    dict(Q=rn(6, 2), K=rn(7, 2), V=rn(7, 2)),
    joint_parts_ref,
)
