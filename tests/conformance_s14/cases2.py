# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Index expressions: keys rolled with `%` by an overridden param and a circular bias, a perfect shuffle
(`m % 2 * ((M + 1) // 2) + m // 2`), proportional head groups `h * G // H`, pooled query pairs over an odd
length, replicate-padded score stencils at `m - 1` and `m + 1`, a clipped symmetric bias `min(abs(p - m), ..)`,
clamps with crossed bounds, a partition whose tile count is the param (uneven tiles), a 2D key grid reduced
jointly, chained gathers with floor and modulo, and a ring-buffer KV cache addressed modulo its size."""

import numpy as np

from .common import att, make_rn, pm, registry, softmax

rn, rng = make_rn(1402)
CASES, case = registry()


# --- keys and values rolled by SH (an int param overridden to 3): slot m holds key (m + SH) % M; a circular
# relative bias indexed by (p - m) % M
def roll_ref(Q, K, V, bias, SH=3):
    M = K.shape[0]
    idx = (np.arange(M) + SH) % M
    p, m = pm(Q.shape[0], M)
    return att(Q, K[idx], V[idx], bias=bias[(p - m) % M])


case(
    "s14_cyclic_shift_keys_mod_param_override",
    """
input  Q[p, e], K[m, e], V[m, f], bias[r]
param  SH = 1
output O
QK[p, m] = Q[p, e] * K[(m + SH) % M, e] * rsqrt(E)
S[p, m]  = QK[p, m] + bias[(p - m) % M]
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[(m + SH) % M, f] / SD[p]
""",
    dict(Q=rn(5, 3), K=rn(7, 3), V=rn(7, 2), bias=rn(7)),
    roll_ref,
    params={"SH": 3},
    passes={"m": 3},
)


# --- a perfect shuffle and its inverse: Z[m] reads X at m % 2 * H + m // 2 with H = (M + 1) // 2 a constant
# expression of the size (odd M: the last odd slot reads past the end: absent)
def shuffle_ref(X):
    M = len(X)
    H = (M + 1) // 2
    Z = np.array([X[(m % 2) * H + m // 2] if (m % 2) * H + m // 2 < M else 0.0 for m in range(M)])
    EV = X[0::2]
    OD = np.append(X[1::2], 0.0) if M % 2 else X[1::2]
    return Z, EV, OD


case(
    "s14_perfect_shuffle_floor_mod_size_constant",
    """
input  X[m]
param  J = 4
output Z, EV, OD
Z[m]  = X[m % 2 * ((M + 1) // 2) + m // 2]
EV[j] = X[2 * j]
OD[j] = X[2 * j + 1]
""",
    dict(X=rn(7)),
    shuffle_ref,
)


# --- proportional head groups: query head h reads key/value head h * G // H (H = 6, G = 4: 0 0 1 2 2 3)
def prop_ref(Q, K, V):
    H, G = Q.shape[0], K.shape[0]
    g = np.arange(H) * G // H
    return att(Q, K[g], V[g])


case(
    "s14_proportional_head_groups",
    """
input  Q[h, p, e], K[g, m, e], V[g, m, f]
output O
S[h, p, m]  = Q[h, p, e] * K[h * G // H, m, e] * rsqrt(E)
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp(S[h, p, m] - GM[h, p])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h * G // H, m, f] / SD[h, p]
""",
    dict(Q=rn(6, 3, 2), K=rn(4, 5, 2), V=rn(4, 5, 3)),
    prop_ref,
    passes={"m": 3},
)


# --- queries pooled in pairs over an odd length P = 7 (the last pair has one query: `?? 0` and a count),
# attending causally up to the pair's last position 2 * c + 1
def pooled_ref(Q, K, V):
    P = Q.shape[0]
    C = (P + 1) // 2
    QP = np.stack([Q[2 * c : 2 * c + 2].mean(0) for c in range(C)])
    c, m = pm(C, K.shape[0])
    return att(QP, K, V, mask=m <= 2 * c + 1)


case(
    "s14_pooled_query_pairs_odd_length",
    """
input  Q[p, e], K[m, e], V[m, f]
param  C = 4
output O
CNT[c]     = 1 + (Q[2 * c + 1, e] * 0 + 1 ?? 0) :: max(e)
QP[c, e]   = (Q[2 * c, e] + (Q[2 * c + 1, e] ?? 0)) / CNT[c]
S[c, m]    = QP[c, e] * K[m, e] * rsqrt(E)  where m <= 2 * c + 1
GM[c]      = S[c, m] :: max(m)
EX[c, m]   = exp(S[c, m] - GM[c])
SD[c]      = EX[c, m]
O[c, f]    = EX[c, m] * V[m, f] / SD[c]
""",
    dict(Q=rn(7, 3), K=rn(9, 3), V=rn(9, 2)),
    pooled_ref,
)


# --- a 3-tap smoothing of the scores along m with replicate padding at both borders (m - 1 at m = 0 and
# m + 1 at m = M - 1 are absent; `??` substitutes the centre)
def stencil_ref(Q, K, V):
    S = Q @ K.T
    L = np.concatenate([S[:, :1], S[:, :-1]], axis=1)
    R = np.concatenate([S[:, 1:], S[:, -1:]], axis=1)
    return softmax((L + 2 * S + R) / 4) @ V


case(
    "s14_score_stencil_replicate_borders",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]
SS[p, m] = ((S[p, m - 1] ?? S[p, m]) + 2 * S[p, m] + (S[p, m + 1] ?? S[p, m])) / 4
GM[p]    = SS[p, m] :: max(m)
EX[p, m] = exp(SS[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
""",
    dict(Q=rn(4, 3), K=rn(8, 3), V=rn(8, 2)),
    stencil_ref,
)


# --- a learned symmetric relative bias clipped to its last bucket: bias[min(abs(p - m), NB - 1)]
def clipped_ref(Q, K, V, bias):
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, bias=bias[np.minimum(np.abs(p - m), len(bias) - 1)])


case(
    "s14_clipped_symmetric_bias_abs_min",
    """
input  Q[p, e], K[m, e], V[m, f], bias[n]
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = QK[p, m] + bias[min(abs(p - m), N - 1)]
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
SD[p]    = EX[p, m]
""",
    dict(Q=rn(6, 3), K=rn(9, 3), V=rn(9, 2), bias=np.array([2.0, 1.0, -0.5, -3.0])),
    clipped_ref,
)


# --- clamps whose bounds cross (lo > hi: min(max(x, lo), hi) is hi), in an index and in a value; a clamp
# with a bound past the end (reads outside: absent)
def crossed_ref(X):
    n = len(X)
    A = np.full(n, X[1])
    B = np.full(n, -2.0)
    C = np.array([X[min(max(i + 2, 0), n)] if min(max(i + 2, 0), n) < n else 0.0 for i in range(n)])
    return A, B, C


case(
    "s14_clamp_crossed_bounds_index_and_value",
    """
input  X[i]
output A, B, C
A[i] = X[clamp(i, 3, 1)]
B[i] = clamp(X[i], 2, -2)
C[i] = X[clamp(i + 2, 0, I)]
""",
    dict(X=np.array([5.0, -7.0, 3.0, 0.5, 9.0])),
    crossed_ref,
)


# --- a hand-written 1-pass sliding window where the param is the number of tiles (M1 = 3, M = 10: tiles of
# M0 = 4, the last holding 2 keys); states start absent and combine over the union
def window_ref(Q, K, V, W=3):
    p, m = pm(Q.shape[0], K.shape[0])
    return att(Q, K, V, mask=(p - m >= 0) & (p - m < W), scale=1.0)


case(
    "s14_hand_1pass_tile_count_param_window",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M1 = 3
param  W = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where 0 <= p - (m1 * M0 + m0) < W
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf  where 0 != 0
RM[m1 + 1, p]     = max(RM[m1, p] ?? LM[m1, p], LM[m1, p] ?? RM[m1, p])
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 0  where 0 != 0
RNV[0, p, f]      = 0  where 0 != 0
RD[m1 + 1, p]     = (SLD[m1, p] ?? 0) + (RD[m1, p] * PRM[m1, p] ?? 0) ?? RD[m1, p]
RNV[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + (RNV[m1, p, f] * PRM[m1, p] ?? 0) ?? RNV[m1, p, f]
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(10, 3), K=rn(10, 3), V=rn(10, 2)),
    window_ref,
)


# --- a 2D grid of keys K[r, c, e]; each query has an int grid position (pr, pc) and sees the 3 x 3
# neighbourhood; the max and the sums run over both key ranks at once
def grid_ref(Q, K, V, pr, pc):
    R, C, _ = K.shape
    Kf, Vf = K.reshape(R * C, -1), V.reshape(R * C, -1)
    r, c = np.divmod(np.arange(R * C), C)
    mask = (np.abs(r[None, :] - pr[:, None]) <= 1) & (np.abs(c[None, :] - pc[:, None]) <= 1)
    return att(Q, Kf, Vf, mask=mask)


case(
    "s14_grid_neighbourhood_joint_max_two_key_ranks",
    """
input  Q[p, e], K[r, c, e], V[r, c, f], pr[p] : int, pc[p] : int
output O
S[p, r, c]  = Q[p, e] * K[r, c, e] * rsqrt(E)  where abs(r - pr[p]) <= 1 and abs(c - pc[p]) <= 1
GM[p]       = S[p, r, c] :: max(r, c)
EX[p, r, c] = exp(S[p, r, c] - GM[p])
SD[p]       = EX[p, r, c]
O[p, f]     = EX[p, r, c] * V[r, c, f] / SD[p]
""",
    dict(
        Q=rn(5, 3),
        K=rn(3, 4, 3),
        V=rn(3, 4, 2),
        pr=np.array([0, 1, 2, 2, 7]),
        pc=np.array([0, 3, 1, 5, 0]),
    ),
    grid_ref,
)


# --- chained gathers with floor and modulo: Y[p] = X[idx[p // 2] + p % 2]; idx holds values that put the
# read out of range (-1, and 5 + 1 = 6 past a length of 6)
def chain_ref(X, idx):
    out = []
    for p in range(8):
        j = idx[p // 2] + p % 2
        out.append(X[j] if 0 <= j < len(X) else 0.0)
    return np.array(out)


case(
    "s14_chained_gather_floor_mod",
    """
input  X[i], idx[j] : int
param  P = 8
output Y
Y[p] = X[idx[p // 2] + p % 2]
""",
    dict(X=np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0]), idx=np.array([4, -1, 5, 0])),
    chain_ref,
)


# --- a ring-buffer KV cache of S slots: slot s holds the token at logical position (s - st) % S (st, the
# oldest slot, is a scalar int input); n slots are filled; a query at logical position qp[p] sees positions
# <= qp[p]
def ring_ref(Q, K, V, st, n, qp):
    S = K.shape[0]
    pos = (np.arange(S) - int(st)) % S
    mask = (pos[None, :] < int(n)) & (pos[None, :] <= qp[:, None])
    return att(Q, K, V, mask=mask)


case(
    "s14_ring_buffer_cache_modulo_positions",
    """
input  Q[p, e], K[s, e], V[s, f], st : int, n : int, qp[p] : int
output O
SC[p, s] = Q[p, e] * K[s, e] * rsqrt(E)  where (s - st) % S < n and (s - st) % S <= qp[p]
GM[p]    = SC[p, s] :: max(s)
EX[p, s] = exp(SC[p, s] - GM[p])
SD[p]    = EX[p, s]
O[p, f]  = EX[p, s] * V[s, f] / SD[p]
""",
    dict(Q=rn(4, 3), K=rn(7, 3), V=rn(7, 2), st=np.array(5), n=np.array(6), qp=np.array([5, 0, 3, -1])),
    ring_ref,
)
