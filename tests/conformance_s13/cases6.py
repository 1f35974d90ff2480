"""Language corners inside attention specs: a window from a scalar int input, a float radius param overridden
at compile time, doc ids read through a permutation, relative-bias tables with `??` defaults (one table,
and a chain of two), a hand-written 1-pass cascade with its tile and window overridden, line continuations
and comments with statements in reverse order, an unused input and outputs declared on several lines,
values gathered out of range (absent in the numerator, present in the denominator), edge-padded shifted
keys, `not` over a parenthesised `or`, clamp with infinite params, scalable-softmax's log(p + 1)."""

import numpy as np

from .common import att, causal, make_rn, registry, rel, scores, softmax

rn, rng = make_rn(1306)
CASES, case = registry()

ATT_TAIL = """
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
"""


# --- a sliding window whose width is a scalar int input
case(
    "s13_window_width_scalar_int_input",
    """
input  Q[p, e], K[m, e], V[m, f], w : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where p - w < m and m <= p
"""
    + ATT_TAIL,
    dict(Q=rn(8, 3), K=rn(8, 3), V=rn(8, 2), w=np.array(3)),
    lambda Q, K, V, w: att(Q, K, V, mask=(rel(8, 8) >= 0) & (rel(8, 8) < int(w))),
)


# --- a symmetric band with a float radius param, overridden when compiling (R = 1.5: |p - m| <= 1)
case(
    "s13_float_radius_param_overridden",
    """
input  Q[p, e], K[m, e], V[m, f]
param  R = 2.5
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where abs(p - m) < R
"""
    + ATT_TAIL,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    lambda Q, K, V: att(Q, K, V, mask=np.abs(rel(7, 7)) < 1.5),
    params={"R": 1.5},
)


# --- packed documents read through a permutation of positions (doc[perm[.]]), causal on the raw positions
def perm_doc_ref(Q, K, V, doc, perm):
    d = doc[perm]
    return att(Q, K, V, mask=(d[:, None] == d[None, :]) & causal(7, 7))


case(
    "s13_doc_ids_through_permutation",
    """
input  Q[p, e], K[m, e], V[m, f], doc[n] : int, perm[i] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where doc[perm[m]] == doc[perm[p]] and m <= p
"""
    + ATT_TAIL,
    dict(
        Q=rn(7, 3),
        K=rn(7, 3),
        V=rn(7, 2),
        doc=np.array([0, 1, 0, 1, 2, 0, 2]),
        perm=np.array([0, 2, 5, 1, 3, 4, 6]),
    ),
    perm_doc_ref,
)


# --- a relative-bias table covering only |p - m| <= 2; other distances default to -2 with ??
def rb_default_ref(Q, K, V, RB):
    d = rel(6, 6)
    b = np.where(np.abs(d) <= 2, RB[np.clip(d + 2, 0, 4)], -2.0)
    return att(Q, K, V, bias=b)


case(
    "s13_relpos_table_default_outside",
    """
input  Q[p, e], K[m, e], V[m, f], RB[r]
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = QK[p, m] + (RB[p - m + 2] ?? -2.0)
"""
    + ATT_TAIL,
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), RB=rn(5)),
    rb_default_ref,
)


# --- a chain of defaults over two tables: past distances from B1, future ones from B2, else 0
def chain_ref(Q, K, V, B1, B2):
    d = rel(6, 6)
    b = np.zeros((6, 6))
    past = (d >= 0) & (d < 3)
    fut = (d < 0) & (-d < 2)
    b[past] = B1[d[past]]
    b[fut] = B2[-d[fut]]
    return att(Q, K, V, bias=b)


case(
    "s13_bias_default_chain_two_tables",
    """
input  Q[p, e], K[m, e], V[m, f], B1[i], B2[j]
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = QK[p, m] + (B1[p - m] ?? B2[m - p] ?? 0)
"""
    + ATT_TAIL,
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), B1=rn(3), B2=np.array([99.0, 0.7])),
    chain_ref,
)


# --- a hand-written 1-pass sliding window, states initialised absent, tile and window overridden
def hand_ref(Q, K, V, W=2):
    d = rel(9, 11)
    return att(Q, K, V, mask=(d >= -2) & (d < W - 2))


case(
    "s13_hand_1pass_window_tile_and_width_overridden",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
param  W = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)  where p - W + 2 < m1 * M0 + m0 <= p + 2
RM[0, p]       = -inf  where 0 != 0
RD[0, p]       = 0  where 0 != 0
RNV[0, p, f]   = 0  where 0 != 0
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]  = max(RM[m1, p] ?? LM[m1, p], LM[m1, p] ?? RM[m1, p])
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
RD[m1 + 1, p]  = SLD[m1, p] + (RD[m1, p] * PRM[m1, p] ?? 0) ?? RD[m1, p] * PRM[m1, p]
SNV[m1, p, f]  = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
RNV[m1 + 1, p, f] = SNV[m1, p, f] + (RNV[m1, p, f] * PRM[m1, p] ?? 0) ?? RNV[m1, p, f] * PRM[m1, p]
O[p, f]        = RNV[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(9, 3), K=rn(11, 3), V=rn(11, 2)),
    hand_ref,
    params={"M0": 5, "W": 2},
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- layout freedom: statements in reverse order, a backslash continuation, a bracket continuation,
# comments everywhere, declarations after the statements
def layout_ref(Q, K, V):
    return att(Q, K, V, mask=causal(5, 7, 2), scale=0.5)


case(
    "s13_reverse_order_continuations_comments",
    """
# attention, written bottom-up
O[p, f]  = EX[p, m] * V[m, f] \\
           / SD[p]                       # division at the end
SD[p]    = EX[p, m]                      # denominator
EX[p, m] = exp(S[p, m] -
               GM[p])                    # a bracket keeps the line open
GM[p]    = S[p, m] :: max(m)
S[p, m]  = Q[p, e] * K[m, e] * 0.5 \\
           where m <= p + 2
output O   # declared after use
input  Q[p, e], K[m, e]
input  V[m, f]
""",
    dict(Q=rn(5, 4), K=rn(7, 4), V=rn(7, 2)),
    layout_ref,
)


# --- an unused input (a warning only) and outputs declared on two lines, returned in declaration order
def multi_ref(Q, K, V, UNUSED):
    s = scores(Q, K)
    a = softmax(s)
    return a.sum(1), a @ V, s.max(1)


case(
    "s13_unused_input_outputs_on_two_lines",
    """
input  Q[p, e], K[m, e], V[m, f], UNUSED[z]
output ONES
output O, GM
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
A[p, m]  = EX[p, m] / SD[p]
O[p, f]  = A[p, m] * V[m, f]
ONES[p]  = A[p, m]
""",
    dict(Q=rn(4, 3), K=rn(6, 3), V=rn(6, 2), UNUSED=rn(3)),
    multi_ref,
    passes={"m": 3, "z": 0},
)


# --- values gathered by an int table with out-of-range entries: those keys are absent in the numerator's
# sum but still present in the denominator
def vgather_ref(Q, K, V, idx):
    a = softmax(scores(Q, K), causal(6, 6))
    ok = (idx >= 0) & (idx < V.shape[0])
    vv = np.where(ok[:, None], V[np.clip(idx, 0, V.shape[0] - 1)], 0.0)
    return a @ vv


case(
    "s13_values_gathered_out_of_range",
    """
input  Q[p, e], K[m, e], V[n, f], idx[m] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[idx[m], f] / SD[p]
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(4, 2), idx=np.array([3, -1, 0, 4, 2, 1])),
    vgather_ref,
)


# --- keys shifted by one position with edge padding (token shift), causal
def shift_ref(Q, K, V):
    ks = K[np.clip(np.arange(7) - 1, 0, 6)]
    return att(Q, ks, V, mask=causal(7, 7))


case(
    "s13_edge_padded_shifted_keys",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[clamp(m - 1, 0, M - 1), e] * rsqrt(E)  where m <= p
"""
    + ATT_TAIL,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2)),
    shift_ref,
)


# --- `not` over a parenthesised `or`: not (m > p or doc differs) is causal within the document
case(
    "s13_not_over_parenthesised_or",
    """
input  Q[p, e], K[m, e], V[m, f], doc[n] : int
output O
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where not (m > p or doc[m] != doc[p])
"""
    + ATT_TAIL,
    dict(Q=rn(7, 3), K=rn(7, 3), V=rn(7, 2), doc=np.array([2, 2, 0, 0, 0, 1, 1])),
    lambda Q, K, V, doc: att(Q, K, V, mask=causal(7, 7) & (doc[:, None] == doc[None, :])),
)


# --- scores clamped with an infinite lower bound param (only the upper bound acts), and the clamp's
# result in a softmax
def clamp_ref(Q, K, V, HI=0.5):
    s = np.minimum(scores(Q, K), HI)
    return softmax(s) @ V


case(
    "s13_clamp_scores_infinite_param",
    """
input  Q[p, e], K[m, e], V[m, f]
param  LO = -inf
param  HI = 0.5
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = clamp(QK[p, m], LO, HI)
"""
    + ATT_TAIL,
    dict(Q=rn(5, 3, scale=2.0), K=rn(6, 3, scale=2.0), V=rn(6, 2)),
    clamp_ref,
)


# --- scalable softmax (SSMax): causal scores times s * log(p + 1), the log of the number of keys seen
def ssmax_ref(Q, K, V, s):
    n = np.arange(1, 7)[:, None]
    return att(Q, K, V, mask=causal(6, 6), scale=float(s) * np.log(n) / np.sqrt(3))


case(
    "s13_scalable_softmax_log_count",
    """
input  Q[p, e], K[m, e], V[m, f], s
output O
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)  where m <= p
S[p, m]  = QK[p, m] * s * log(p + 1)
"""
    + ATT_TAIL,
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), s=np.array(0.8)),
    ssmax_ref,
)
