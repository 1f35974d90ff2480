"""Edge sizes, numerically hard data and forms the rewrite and the fused kernel must recognise: a per-head
bias tensor under GQA 3:1 with one K/V head, per-key gated values with the LSE and the diagonal removed, a
softcap by ``clamp`` with a ``-inf`` param, decoding (P = 1) bottom-right with gathered values, self-attention
from one input through rank aliases, batch 3 with one head and E = 1, a near-argmax temperature
with exact ties, linear attention on features of 1e-9, divisors absent over a zero, the shift spelled five
ways, a sum over keys then a max over features in one statement, a hand-written 1-pass cascade whose
running max is shared by all rows, underscore ranks with signed params and literal forms, an alias of a
partition part and a chain of aliases, a partition of a param-sized rank, iterative outputs with the
iterative index in the middle, an empty key sequence, and masked scores defaulted to 0 (a bug of the
fused triton kernel at bc9e53a)."""

import numpy as np

from .common import elu, lse, make_rn, pm, registry, sig, softmax

rn, rng = make_rn(1706)
CASES, case = registry()

_SM = """
GM[{a}p]     = S[{a}m, p] :: max(m)
EX[{a}m, p]  = exp(S[{a}m, p] - GM[{a}p])
SD[{a}p]     = EX[{a}m, p]
"""


# --- GQA 3:1 with a single K/V head and a per-head, per-pair bias tensor
def gqa_bias_ref(Q, K, V, B, R=3):
    H = Q.shape[0]
    return np.stack([softmax(Q[h] @ K[h // R].T + B[h]) @ V[h // R] for h in range(H)])


case(
    "s17_edge_gqa3_one_kv_head_bias_tensor",
    """
# three query heads share the only K/V head; each head adds its own bias B[h, p, m]
input  Q[h, p, e], K[g, m, e], V[g, m, f], B[h, p, m]
param  R = 3
output O
QK[h, m, p] = Q[h, p, e] * K[h // R, m, e]
S[h, m, p]  = QK[h, m, p] + B[h, p, m]
"""
    + _SM.format(a="h, ")
    + """
O[h, p, f]  = EX[h, m, p] * V[h // R, m, f] / SD[h, p]
""",
    dict(Q=rn(3, 4, 2), K=rn(1, 7, 2), V=rn(1, 7, 3), B=rn(3, 4, 7)),
    gqa_bias_ref,
    passes={"m": 3},
)


# --- per-key gated values, the diagonal removed, the LSE as a second output
def gated_ref(Q, K, V0, G):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    S = Q @ K.T
    V = V0 * sig(G)[:, None]
    return softmax(S, m != p) @ V, lse(S, m != p)


case(
    "s17_edge_gated_values_no_diagonal_lse",
    """
# values scaled by a per-key gate; a query never attends to its own position
input  Q[p, e], K[m, e], V0[m, f], G[m]
output O, L
V[m, f]  = V0[m, f] * sigmoid(G[m])
S[m, p]  = Q[p, e] * K[m, e]  where m != p
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(5, 2), K=rn(6, 2), V0=rn(6, 3), G=rn(6)),
    gated_ref,
)


# --- a cap by clamp with the lower bound -inf (a param) on each term of the sum over e (the reduction covers
# the whole right-hand side), inputs scaled up so the cap bites
def clampcap_ref(Q, K, V, LO=-np.inf, HI=1.5):
    # the sum over e covers the whole right-hand side: each product q_e k_e is clamped, then summed
    return softmax(np.clip(Q[:, None, :] * K[None, :, :], LO, HI).sum(-1)) @ V


case(
    "s17_edge_clamp_cap_neg_inf_param",
    """
# each product q_e k_e capped from above at HI (clamp is inside the sum over e), unbounded below
input  Q[p, e], K[m, e], V[m, f]
param  LO = -inf
param  HI = 1.5
output O
S[m, p]  = clamp(Q[p, e] * K[m, e], LO, HI)
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 2, scale=2.0), K=rn(6, 2, scale=2.0), V=rn(6, 3)),
    clampcap_ref,
)


# --- decoding: one query, bottom-right causal (m <= p + M - P: every key), values through a permutation
# whose last entry is out of range (that key's value is absent, its weight still in the denominator)
def decode_ref(Q, K, V, perm):
    a = softmax(Q @ K.T)
    M = K.shape[0]
    O = np.zeros((1, V.shape[1]))
    for m in range(M):
        if 0 <= perm[m] < V.shape[0]:
            O[0] += a[0, m] * V[perm[m]]
    return O


case(
    "s17_edge_decode_bottom_right_gathered_values",
    """
# P = 1 query at the end of M keys; V read through perm
input  Q[p, e], K[m, e], V[m, f], perm[m] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where m <= p + M - P
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[perm[m], f] / SD[p]
""",
    dict(Q=rn(1, 2), K=rn(8, 2), V=rn(8, 3), perm=np.array([7, 6, 5, 4, 3, 2, 1, 9], dtype=np.int64)),
    decode_ref,
)


# --- causal self-attention from one input: the key rank m and the value rank f exist only through aliases
def self_alias_ref(X):
    P, E = X.shape
    p, m = pm(P, P)
    return softmax(X @ X.T / np.sqrt(E), m <= p) @ X


case(
    "s17_edge_self_attention_one_input_alias_ranks",
    """
# queries, keys and values are all X; m and f are sized by rank M = P and rank F = E
input  X[p, e]
rank   M = P
rank   F = E
output O
S[m, p]  = X[p, e] * X[m, e] * rsqrt(E)  where m <= p
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * X[m, f] / SD[p]
""",
    dict(X=rn(7, 3)),
    self_alias_ref,
    passes={"m": 3},
)


# --- batch 3, one head, one query, E = 1, F = 5, key lengths per batch (batch 1 has none)
def small_ref(Q, K, V, kvlen):
    B = Q.shape[0]
    out = np.zeros((B, 1, 1, V.shape[3]))
    for b in range(B):
        mask = np.arange(K.shape[2])[None, :] < kvlen[b]
        out[b, 0] = softmax(Q[b, 0] @ K[b, 0].T, mask) @ V[b, 0]
    return out


case(
    "s17_edge_batch3_head1_query1_e1_key_lengths",
    """
# cross-attention of one query per batch over that batch's first kvlen[b] keys
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], kvlen[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < kvlen[b]
"""
    + _SM.format(a="b, h, ")
    + """
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
""",
    dict(Q=rn(3, 1, 1, 1), K=rn(3, 1, 9, 1), V=rn(3, 1, 9, 5), kvlen=np.array([4, 0, 9], dtype=np.int64)),
    small_ref,
)


# --- a near-argmax temperature with exact ties: keys 2 and 5 are equal and win every row by a margin of
# at least 1 / T = 1000 in the exponent, so the output is the mean of their two values
_Kt = rn(7, 2) * 0.3
_Kt[2] = _Kt[5] = [3.0, 0.0]
_Qt = np.abs(rn(4, 2)) * [1.0, 0.1] + [1.0, 0.0]


case(
    "s17_edge_tiny_temperature_exact_ties",
    """
# softmax(S / T) with T = 1e-3: all the weight on the two tied keys
input  Q[p, e], K[m, e], V[m, f]
param  T = 1e-3
output O
S[m, p]  = Q[p, e] * K[m, e] / T
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=_Qt, K=_Kt, V=rn(7, 3)),
    lambda Q, K, V: softmax(Q @ K.T / 1e-3) @ V,
)


# --- causal linear attention on features of size 1e-9: numerator and denominator near 1e-18, ratio O(1)
def tiny_linear_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    fq, fk = elu(Q) + 1, elu(K) + 1
    sc = np.where(m <= p, (fq @ fk.T) * 1e-18, 0.0)
    return (sc @ V) / sc.sum(1)[:, None]


case(
    "s17_edge_linear_attention_features_1e_9",
    """
# both feature maps scaled by 1e-9: the scale cancels in the ratio
input  Q[p, e], K[m, e], V[m, f]
output O
FQ[p, e]  = (elu(Q[p, e]) + 1) * 1e-9
FK[m, e]  = (elu(K[m, e]) + 1) * 1e-9
NUM[p, f] = FQ[p, e] * FK[m, e] * V[m, f]  where m <= p
DEN[p]    = FQ[p, e] * FK[m, e]            where m <= p
O[p, f]   = NUM[p, f] / DEN[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2)),
    tiny_linear_ref,
    passes={"m": 1},
)


# --- divisors absent at points where the value underneath is zero: by a filter, by a read before the
# start, by a difference that is zero at the read past the end
def absent_div_ref(V, Y, Z, Q, K):
    M = len(Y)
    O1 = sum(V[m] / Y[m] for m in range(1, M))
    O2 = sum(V[m] / Z[m - 1] for m in range(1, M))
    P = Q.shape[0]
    O3 = np.zeros((P, V.shape[1]))
    for p in range(P):
        for m in range(M - 1):
            if m <= p:
                O3[p] += sig(Q[p] @ K[m]) * V[m] / (Z[m + 1] - Z[m])
    return O1, O2, O3


_Y = np.abs(rn(6)) + 0.5
_Y[0] = 0.0
_Z = np.arange(6.0) ** 2 + 1

case(
    "s17_edge_absent_divisors_over_zero",
    """
# a division whose divisor is absent skips the point, whatever value lies underneath
input  V[m, f], Y[m], Z[m], Q[p, e], K[m, e]
output O1, O2, O3
D[m]      = Y[m]  where m >= 1
O1[f]     = V[m, f] / D[m]
O2[f]     = V[m, f] / Z[m - 1]
S[p, m]   = Q[p, e] * K[m, e]  where m <= p
O3[p, f]  = sigmoid(S[p, m]) * V[m, f] / (Z[m + 1] - Z[m])
""",
    dict(V=rn(6, 2), Y=_Y, Z=_Z, Q=rn(5, 2), K=rn(6, 2)),
    absent_div_ref,
)


# --- the shift written five ways; each is the same softmax (with a constant offset that cancels)
def spellings_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    o = softmax(Q @ K.T, m <= p + 1) @ V
    o5 = softmax(0.5 * (Q @ K.T), m <= p + 1) @ V
    return o, o, o, o, o5


case(
    "s17_edge_shift_spelled_five_ways",
    """
# -(GM - S), S + -GM, -GM + S, S - 0.5 - GM (an offset), (S - GM) * 0.5 - 0.25 (a temperature and offset)
input  Q[p, e], K[m, e], V[m, f]
output O1, O2, O3, O4, O5
S[m, p]   = Q[p, e] * K[m, e]  where m <= p + 1
GM[p]     = S[m, p] :: max(m)
E1[m, p]  = exp(-(GM[p] - S[m, p]))
E2[m, p]  = exp(S[m, p] + -GM[p])
E3[m, p]  = exp(-GM[p] + S[m, p])
E4[m, p]  = exp(S[m, p] - 0.5 - GM[p])
E5[m, p]  = exp((S[m, p] - GM[p]) * 0.5 - 0.25)
D1[p]     = E1[m, p]
D2[p]     = E2[m, p]
D3[p]     = E3[m, p]
D4[p]     = E4[m, p]
D5[p]     = E5[m, p]
O1[p, f]  = E1[m, p] * V[m, f] / D1[p]
O2[p, f]  = E2[m, p] * V[m, f] / D2[p]
O3[p, f]  = E3[m, p] * V[m, f] / D3[p]
O4[p, f]  = E4[m, p] * V[m, f] / D4[p]
O5[p, f]  = E5[m, p] * V[m, f] / D5[p]
""",
    dict(Q=rn(6, 2, scale=2.0), K=rn(7, 2, scale=2.0), V=rn(7, 3)),
    spellings_ref,
    passes={"m": 3},
)


# --- one statement sums over the keys and then takes a max over the value features
def summax_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    a = np.where(m <= p, sig(Q @ K.T), 0.0)
    return (a @ V).max(1)


case(
    "s17_edge_sum_over_keys_then_max_over_features",
    """
# the max over j of the sum over m (not a sum of maxes): the keys cannot be streamed here
input  Q[p, e], K[m, e], V[m, j]
output O
S[p, m]  = Q[p, e] * K[m, e]  where m <= p
O[p]     = sigmoid(S[p, m]) * V[m, j] :: max(j)
""",
    dict(Q=rn(6, 2), K=rn(7, 2), V=rn(7, 3)),
    summax_ref,
)


# --- a hand-written 1-pass cascade whose running max is one number for all rows (max over m0 and p);
# a window makes some (tile, row) pairs empty; the global max is a second output
def shared_max_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    mask = m <= p + 2
    S = Q @ K.T
    return softmax(S, mask) @ V, S[mask].max()


case(
    "s17_edge_hand_1pass_running_max_shared_by_rows",
    """
# one running max over every row and key seen so far; any common shift is a valid stabiliser
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output AV, GMAX
BK[m1, m0, e]     = K[m1 * M0 + m0, e]
BV[m1, m0, f]     = V[m1 * M0 + m0, f]
RM[0]             = -inf
RD[0, p]          = 0
RNV[0, p, f]      = 0
BQK[m1, m0, p]    = Q[p, e] * BK[m1, m0, e]  where m1 * M0 + m0 <= p + 2
LM[m1]            = BQK[m1, m0, p] :: max(m0, p)
RM[m1 + 1]        = max(RM[m1], LM[m1] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1])
SLD[m1, p]        = SLN[m1, m0, p] ?? 0
SLNV[m1, p, f]    = SLN[m1, m0, p] * BV[m1, m0, f] ?? 0
PRM[m1]           = exp(RM[m1] - RM[m1 + 1])
RD[m1 + 1, p]     = SLD[m1, p] + RD[m1, p] * PRM[m1]
RNV[m1 + 1, p, f] = SLNV[m1, p, f] + RNV[m1, p, f] * PRM[m1]
AV[p, f]          = RNV[M1, p, f] / RD[M1, p]
GMAX              = RM[M1]
""",
    dict(Q=rn(7, 2), K=rn(8, 2), V=rn(8, 3)),
    shared_max_ref,
)


# --- statements before declarations, an underscore rank sized by its param, signed params, literal forms
def lexical_ref(X, C=2, D=-0.5):
    Y = np.array([X[2 * o] * C + D for o in range(3)])
    Z = X[:4] * 4 + 2.0 * 1e-1
    return Y, Z


case(
    "s17_edge_underscore_rank_signed_params_literals",
    """
output Y, Z
Y[_o]  = X[_o * 2] * C + D        # statements may come before the declarations they use
param  _O = 3
param  C = +2
param  D = -.5
input  X[i]
Z[m2]  = X[m2] * M2 + 2. * 1E-1   # M2, the size of m2, as a value; 2. and 1E-1 are floats
param  M2 = 4
""",
    dict(X=rn(6)),
    lexical_ref,
)


# --- an alias of a partition part (rank J = M1) and a chain of aliases (rank U = S, rank S = T)
def alias_ref(X, W, M0=3):
    bs = np.array([X[a : a + M0].sum() for a in range(0, len(X), M0)])
    Y = np.array([bs[: k + 1].sum() for k in range(len(bs))])
    T = len(W)
    Z = np.array([sum(W[s] * W[u] for s in range(T) for u in range(T) if s <= t and u < s) for t in range(T)])
    return bs, Y, Z


case(
    "s17_edge_alias_of_partition_part_and_alias_chain",
    """
# tile sums and their prefix sums through j (sized M1); a double sum over s <= t and u < s
input  X[m], W[t]
param  M0 = 3
rank   M = M1 * M0
rank   J = M1
rank   S = T
rank   U = S
output BS, Y, Z
BS[m1] = X[m1 * M0 + m0]
Y[m1]  = BS[j]  where j <= m1
Z[t]   = W[s] * W[u]  where s <= t and u < s
""",
    dict(X=rn(8), W=rn(5)),
    alias_ref,
)


# --- a partition of a rank sized by a param (w, W = 7), used directly and by its parts
def param_part_ref(X, W=7, W0=3):
    I = len(X)
    W1 = -(-W // W0)
    T = np.zeros((W1, W0))
    for a in range(W1):
        for b in range(W0):
            if a * W0 + b < W:
                T[a, b] = X[(a * W0 + b) % I]
    return T, np.array([X[w % I] for w in range(W)])


case(
    "s17_edge_partition_of_param_sized_rank",
    """
# W = 7 positions wrapped over X, cut into tiles of W0 = 3 (the last tile has one)
input  X[i]
param  W = 7
param  W0 = 3
rank   W = W1 * W0
output T, Z
Z[w]      = X[w % I]
T[w1, w0] = X[(w1 * W0 + w0) % I]  where w1 * W0 + w0 < W
""",
    dict(X=rn(4)),
    param_part_ref,
)


# --- iterative tensors as outputs (all T + 1 states), the iterative index in the middle and last
def iter_out_ref(X):
    B, T, F = X.shape
    R = np.zeros((B, T + 1, F))
    R[:, 0] = 1.0
    for t in range(T):
        R[:, t + 1] = R[:, t] * 0.5 + X[:, t]
    Q = np.zeros((F, T + 1))
    Q[:, 0] = 2.0
    for t in range(T):
        Q[:, t + 1] = np.maximum(Q[:, t], X[0, t])
    return R, Q


case(
    "s17_edge_iterative_outputs_index_middle_and_last",
    """
# R is returned with its T + 1 states along dimension 1, Q along its last dimension
input  X[b, t, f]
output R, Q
R[b, 0, f]     = X[b, 0, f] * 0 + 1
R[b, t + 1, f] = R[b, t, f] * 0.5 + X[b, t, f]
Q[f, 0]        = 2
Q[f, t + 1]    = max(Q[f, t], X[0, t, f]) ?? Q[f, t]
""",
    dict(X=rn(2, 4, 3)),
    iter_out_ref,
)


# --- no key at all (M = 0) under a causal filter: every statistic is absent, delivered as 0
case(
    "s17_edge_empty_key_sequence_filtered",
    """
# M = 0: the output, the log-sum-exp and the key count are all absent
input  Q[p, e], K[m, e], V[m, f]
output O, L, CNT
S[m, p]  = Q[p, e] * K[m, e]  where m <= p
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
CNT[p]   = S[m, p] * 0 + 1
""",
    dict(Q=rn(3, 2), K=np.zeros((0, 2)), V=np.zeros((0, 2))),
    lambda Q, K, V: (np.zeros((3, 2)), np.zeros(3), np.zeros(3)),
)


# --- masked scores defaulted to 0 (a soft mask: future keys score 0, not -inf), with the LSE. At commit
# bc9e53a the fused triton kernel took the filtered product's fill to be 0 and gave the masked points the
# product Q . K instead of the default (a filter on m, p over a product summed over e); the uncommitted
# change to lowering/triton_fused.py seen during this session (`red not in filt.axes`) fixes it
def softmask_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    S = np.where(m <= p, Q @ K.T, 0.0)
    return softmax(S) @ V, lse(S)


case(
    "s17_bug_triton_fused_masked_scores_defaulted_to_zero",
    """
# S1 is absent above the diagonal; S = S1 ?? 0 is present everywhere (but not past the last key)
input  Q[p, e], K[m, e], V[m, f]
output O, L
S1[m, p] = Q[p, e] * K[m, e]  where m <= p
S[m, p]  = S1[m, p] ?? 0
"""
    + _SM.format(a="")
    + """
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
L[p]     = GM[p] + log(SD[p])
""",
    dict(Q=rn(7, 2), K=rn(7, 2), V=rn(7, 2)),
    softmask_ref,
    passes={"m": 3},
)
