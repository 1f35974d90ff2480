# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Hand-written loops over tiles (the fused path of the torch and triton backends) with states other than
plain online softmax, and the tile skipping that decides which rows a step may leave alone: a decaying sum
whose alive rows move down then up between tiles (the bug found here), a fully masked block of rows in the
unguarded Cascade 5 (the second), tile-granular masks free of m0 over a ragged tile, unguarded steps that make
a row's state absent, every state and local max returned as outputs, a min stabiliser, a step that reads the
next tile's per-step value, and a finite initial state that dead leading tiles keep."""

import numpy as np

from .common import make_rn, registry, softmax

rn, rng = make_rn(1408)
CASES, case = registry()


# --- BUG (torch, default skip_tiles=True): a decaying running sum R[m1 + 1] = R[m1] * 0.5 + (tile sum ?? 0),
# R[0] = 0. A dead step leaves a row that never had a present point unchanged (0 * 0.5 + 0 = 0: "leading"
# rows may be skipped) but halves an established row ("trailing" rows may not). The rows alive at each step
# (M0 = 1, the filter written on the tile index m1) are {6} at step 0, {0 .. 4} at step 1, {2} at step 2:
# the torch runtime keeps the established rows as one interval (_grow keeps [6, 7) when [0, 5) does not touch
# it), so at steps 2 and 3 it takes rows 0 .. 5 for never-established rows and skips their decay. Expected
# F = [0.356, 0.489, 1.026, 0.335, 0.394, 0, 0.211, 0] (numpy, torch with skip_tiles=False, triton); torch
# by default gives [1.43, 1.96, 2.05, 0.67, 0.79, 0, 0.21, 0].
def tri_filter(p, k):
    return p + 6 * k >= 6 and p >= 2 * k - 2 and p + 2 * k <= 6


def decay_tri_ref(X):
    M, P = X.shape
    out = np.zeros(P)
    for p in range(P):
        r = 0.0
        for k in range(M):
            r = r * 0.5 + (X[k, p] if tri_filter(p, k) else 0.0)
        out[p] = r
    return out


case(
    "s14_bug_torch_skip_decay_alive_rows_not_monotone",
    """
input  X[m, p]
param  M0 = 1
rank   M = M1 * M0
output F
B[m1, m0, p] = X[m1 * M0 + m0, p]  where p + 6 * m1 >= 6 and p >= 2 * m1 - 2 and p + 2 * m1 <= 6
SL[m1, p]    = B[m1, m0, p]
R[0, p]      = 0
R[m1 + 1, p] = R[m1, p] * 0.5 + (SL[m1, p] ?? 0)
F[p]         = R[M1, p]
""",
    dict(X=np.random.default_rng(10).uniform(1, 2, (4, 8))),
    decay_tri_ref,
)


# --- BUG (triton, fused path): Cascade 5 as written (RM[0] = -inf, LM ?? -inf, no guard on PRM) where the
# rows p < 20 see no key (m <= p - 20). The reference computes exp(-inf - -inf) = NaN for such a row
# (docs/language.md, "IEEE values"; einattn/skip.py: the dead update of this initial state is not exact, so
# leading rows may not be skipped), and so do numpy and torch: L and D are NaN there. The fused triton kernel
# skips every tile of a program whose rows are all dead (rows 0 .. 15 of its first block of rows) and returns
# L = -inf, D = 0 there, and NaN for rows 16 .. 19, which share a block with alive rows.
def unguarded_lse_ref(Q, K):
    P, M = Q.shape[0], K.shape[0]
    S = Q @ K.T
    L = np.full(P, np.nan)
    D = np.full(P, np.nan)
    for p in range(P):
        keep = np.arange(M) <= p - 20
        if keep.any():
            gm = S[p, keep].max()
            D[p] = np.exp(S[p, keep] - gm).sum()
            L[p] = gm + np.log(D[p])
    return L, D


case(
    "s14_bug_triton_skips_fully_masked_block_unguarded_nan",
    """
input  Q[p, e], K[m, e]
param  M0 = 4
rank   M = M1 * M0
output L, D
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p - 20
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[0, p]       = -inf
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]       = 0
RD[m1 + 1, p]  = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
L[p]           = RM[M1, p] + log(RD[M1, p])
D[p]           = RD[M1, p]
""",
    dict(Q=rn(40, 2), K=rn(12, 2)),
    unguarded_lse_ref,
)


_CASCADE5_GUARDED = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where FILTER
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 0
RNV[0, p, f]      = 0
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = RNV[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
"""


# --- a tile-granular causal mask (whole key tiles, the filter free of m0: "whole" tiles where the mask may be
# dropped) over a ragged last tile (M = 11, M0 = 3): the missing keys of the last tile stay absent
def tile_causal_ref(Q, K, V, M0=3):
    p, m = np.arange(Q.shape[0])[:, None], np.arange(K.shape[0])[None, :]
    return softmax(Q @ K.T, (m // M0) * M0 <= p) @ V


case(
    "s14_hand_1pass_tile_granular_causal_ragged",
    _CASCADE5_GUARDED.replace("FILTER", "m1 * M0 <= p"),
    dict(Q=rn(7, 3), K=rn(11, 3), V=rn(11, 2)),
    tile_causal_ref,
)


# --- the same loop without the guards: a tile with no present key makes LM absent, so RM and every state
# after it are absent, and the row's output is absent (0). Rows whose every tile holds a present key are
# ordinary attention; here that is only the rows p >= M - 1 - 1 (M = 11, M0 = 3, filter m <= p + 1)
def unguarded_ref(Q, K, V, M0=3):
    P, M = Q.shape[0], K.shape[0]
    M1 = -(-M // M0)
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + 1
    out = np.zeros((P, V.shape[1]))
    for p in range(P):
        if all(mask[p, k * M0 : (k + 1) * M0].any() for k in range(M1)):
            out[p] = softmax(Q[p] @ K.T, mask[p]) @ V
    return out


case(
    "s14_hand_1pass_unguarded_dead_tile_makes_row_absent",
    _CASCADE5_GUARDED.replace("FILTER", "m1 * M0 + m0 <= p + 1")
    .replace("LM[m1, p] ?? -inf", "LM[m1, p]")
    .replace("(SLD[m1, p] ?? 0)", "SLD[m1, p]")
    .replace("(SLNV[m1, p, f] ?? 0)", "SLNV[m1, p, f]"),
    dict(Q=rn(12, 3), K=rn(11, 3), V=rn(11, 2)),
    unguarded_ref,
)


# --- every local max, every running max, and the output before the last tile, as outputs (the loop must
# keep its history; the dead tiles' local maxima are absent, delivered as 0)
def history_ref(Q, K, V, M0=3):
    P, M = Q.shape[0], K.shape[0]
    M1 = -(-M // M0)
    S = Q @ K.T
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + 1
    LM = np.zeros((M1, P))
    RM = np.zeros((M1 + 1, P))
    RD = np.zeros((M1 + 1, P))
    RNV = np.zeros((M1 + 1, P, V.shape[1]))
    for p in range(P):
        rm, rd, rnv = -np.inf, 0.0, np.zeros(V.shape[1])
        RM[0, p] = rm
        for k in range(M1):
            idx = [m for m in range(k * M0, min(M, (k + 1) * M0)) if mask[p, m]]
            if idx:
                LM[k, p] = S[p, idx].max()
            new = max(rm, S[p, idx].max()) if idx else rm
            prm = np.exp(rm - new)
            w = np.exp(S[p, idx] - new)
            rd, rnv, rm = rd * prm + w.sum(), rnv * prm + w @ V[idx], new
            RM[k + 1, p], RD[k + 1, p], RNV[k + 1, p] = rm, rd, rnv
    return RNV[M1] / RD[M1][:, None], RNV[M1 - 1] / RD[M1 - 1][:, None], LM, RM


case(
    "s14_hand_1pass_history_outputs",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O, PREV, LM, RM
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p + 1
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 0
RNV[0, p, f]      = 0
SPNV[m1, p, f]    = RNV[m1, p, f] * PRM[m1, p]
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = SPNV[m1, p, f] + (SLNV[m1, p, f] ?? 0)
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
PREV[p, f]        = RNV[M1 - 1, p, f] / RD[M1 - 1, p]
""",
    dict(Q=rn(7, 3), K=rn(11, 3), V=rn(11, 2)),
    history_ref,
)


# --- softmin attention in one pass: the running *minimum* is the stabiliser (starts at +inf, `?? inf` for a
# dead tile), weights exp(min - s); causal, so the last tiles of the first rows are dead
def softmin_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    S = Q @ K.T
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    return softmax(-S, mask) @ V


case(
    "s14_hand_1pass_softmin_running_min_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p
LM[m1, p]         = BQK[m1, m0, p] :: min(m0)
RM[0, p]          = inf
RM[m1 + 1, p]     = min(RM[m1, p], LM[m1, p] ?? inf)
SLN[m1, m0, p]    = exp(RM[m1 + 1, p] - BQK[m1, m0, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1 + 1, p] - RM[m1, p])
RD[0, p]          = 0
RNV[0, p, f]      = 0
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = RNV[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
""",
    dict(Q=rn(7, 3), K=rn(10, 3), V=rn(10, 2)),
    softmin_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- a step that reads the per-step tile sum of the *next* tile (SL[m1 + 1], absent past the last tile) as
# well as its own; the filter kills the last tiles of the first rows
def lookahead_ref(X, M0=3):
    M, P = X.shape
    M1 = -(-M // M0)
    out = np.zeros(P)
    for p in range(P):
        sl = []
        for k in range(M1 + 1):
            vals = [X[m, p] for m in range(k * M0, min(M, (k + 1) * M0)) if m <= p + 2]
            sl.append(sum(vals) if vals else 0.0)
        out[p] = sum(sl[k] + sl[k + 1] for k in range(M1))
    return out


case(
    "s14_hand_loop_reads_next_tile_value",
    """
input  X[m, p]
param  M0 = 3
rank   M = M1 * M0
output F
B[m1, m0, p] = X[m1 * M0 + m0, p]  where m1 * M0 + m0 <= p + 2
SL[m1, p]    = B[m1, m0, p]
R[0, p]      = 0
R[m1 + 1, p] = R[m1, p] + (SL[m1, p] ?? 0) + (SL[m1 + 1, p] ?? 0)
F[p]         = R[M1, p]
""",
    dict(X=rn(10, 6)),
    lookahead_ref,
)


# --- "softmax plus one" in one pass, anti-causal with an offset (m >= p + 2: the first tiles of the late rows
# are dead): the running max starts at the finite floor 0 and the denominator at 1, which a dead leading tile
# keeps exactly; the log-sum-exp of (0, the scores) is an output too
def plus_one_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    S = Q @ K.T
    O = np.zeros((P, V.shape[1]))
    L = np.zeros(P)
    for p in range(P):
        keep = np.arange(M) >= p + 2
        s, v = S[p, keep], V[keep]
        mx = max(0.0, s.max()) if s.size else 0.0
        w = np.exp(s - mx)
        den = w.sum() + np.exp(-mx)
        O[p] = w @ v / den
        L[p] = mx + np.log(den)
    return O, L


case(
    "s14_hand_1pass_plus_one_finite_init_anticausal",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O, L
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 >= p + 2
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = 0
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 1
RNV[0, p, f]      = 0
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = RNV[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
L[p]              = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=rn(9, 3), K=rn(11, 3), V=rn(11, 2)),
    plus_one_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- BUG (triton under TRITON_INTERPRET=1, fused path): a tensor read at the tile index m1 itself (a per-tile
# scale TB[m1], a block-sparse layout[p // 3, m1]) is loaded with `m1.to(tl.int64) * stride`; under the
# interpreter the loop variable of `for m1 in range(lo, hi)` is a Python int, and the call fails with
# InterpreterError: AttributeError("'int' object has no attribute 'to'") (an internal error, not an
# EinError). The real compiler accepts the kernel (`python -m einattn.lowering.triton_aot`), and the general
# path (path="general") computes the right numbers. See also s14_block_sparse_int_layout_hand_1pass.
def per_tile_ref(X, TB, M0=3):
    M, P = X.shape
    M1 = -(-M // M0)
    return np.array([sum(X[k * M0 : (k + 1) * M0, p].sum() * TB[k] for k in range(M1)) for p in range(P)])


case(
    "s14_bug_triton_interpreter_per_tile_input_read_at_m1",
    """
input  X[m, p], TB[j]
param  M0 = 3
rank   M = M1 * M0
output F
SL[m1, p]    = X[m1 * M0 + m0, p]
R[0, p]      = 0
R[m1 + 1, p] = R[m1, p] + SL[m1, p] * TB[m1]
F[p]         = R[M1, p]
""",
    dict(X=rn(7, 3), TB=np.array([1.0, -2.0, 0.5])),
    per_tile_ref,
)


# --- BUG (torch): a filtered max, min or sum of an input that holds +-inf or NaN at points the filter removes.
# The spec never reads those points (the numpy reference and triton agree), but the torch backend takes
# inputs to be finite and fills absent points by arithmetic (`_rmax(..., finite=True)`: x + (-inf) at an
# absent point; `_rsum`: x * 0), so +inf + -inf and inf * 0 give NaN: expected MX = [1, 3, 1], MN = [1, 2, 1],
# SM = [1, 5, 3], EXD = exp(X) on and below the diagonal and 0 above it; torch gives MX = [nan, 3, 1],
# MN = [nan, nan, 1], SM = [nan, nan, 3] and NaN in EXD at the three dropped points (the guard that keeps
# exp's argument safe at absent points is arithmetic too). docs/backends.md's exception is a sum of products
# whose factor is infinite where *another factor* is absent; here there is one factor and a filter, and a
# max, a min or an elementwise exp with `??` is not a sum. (Also s14_max_min_ties_neg_inf_present_and_absent_rows:
# an additive -inf score at a point the filter drops turns a min into NaN.)
case(
    "s14_bug_torch_filtered_reductions_inf_at_dropped_points",
    """
input  X[p, m]
output MX, MN, SM, EXD
MX[p]     = X[p, m] :: max(m)  where m <= p
MN[p]     = X[p, m] :: min(m)  where m <= p
SM[p]     = X[p, m]  where m <= p
EX[p, m]  = exp(X[p, m])  where m <= p
EXD[p, m] = EX[p, m] ?? 0
""",
    dict(X=np.array([[1.0, np.inf, np.nan], [2.0, 3.0, -np.inf], [1.0, 1.0, 1.0]])),
    lambda X: (
        np.array([1.0, 3.0, 1.0]),
        np.array([1.0, 2.0, 1.0]),
        np.array([1.0, 5.0, 3.0]),
        np.where(
            np.tril(np.ones((3, 3), bool)), np.exp(np.where(np.tril(np.ones((3, 3), bool)), X, 0.0)), 0.0
        ),
    ),
)


# --- two loops in one spec: a guarded 1-pass causal attention over tiles of 3 keys, whose output rows are the
# queries of a second, unguarded 1-pass attention over tiles of 2 other keys (N = 7: ragged); an output reads
# the first loop's result again
def two_loops_ref(Q, K, V, K2, V2):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None] + 2
    O1 = softmax(Q @ K.T, mask) @ V
    return O1 * 2, softmax(O1 @ K2.T) @ V2


case(
    "s14_hand_two_loops_chained",
    """
input  Q[p, e], K[m, e], V[m, f], K2[n, e], V2[n, f]
param  M0 = 3
param  N0 = 2
rank   M = M1 * M0
rank   N = N1 * N0
output O, Y
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 <= p + 2
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[0, p]          = -inf
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]          = 0
RNV[0, p, f]      = 0
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = RNV[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O1[p, f]          = RNV[M1, p, f] / RD[M1, p]
CQK[n1, n0, p]    = O1[p, e] * K2[n1 * N0 + n0, e]
CM[n1, p]         = CQK[n1, n0, p] :: max(n0)
CR[0, p]          = -inf
CR[n1 + 1, p]     = max(CR[n1, p], CM[n1, p])
CLN[n1, n0, p]    = exp(CQK[n1, n0, p] - CR[n1 + 1, p])
CLD[n1, p]        = CLN[n1, n0, p]
CLNV[n1, p, f]    = CLN[n1, n0, p] * V2[n1 * N0 + n0, f]
CPR[n1, p]        = exp(CR[n1, p] - CR[n1 + 1, p])
CD[0, p]          = 0
CNV[0, p, f]      = 0
CD[n1 + 1, p]     = CD[n1, p] * CPR[n1, p] + CLD[n1, p]
CNV[n1 + 1, p, f] = CNV[n1, p, f] * CPR[n1, p] + CLNV[n1, p, f]
Y[p, f]           = CNV[N1, p, f] / CD[N1, p]
O[p, f]           = O1[p, f] * 2
""",
    dict(Q=rn(6, 2), K=rn(10, 2), V=rn(10, 2), K2=rn(7, 2), V2=rn(7, 2)),
    two_loops_ref,
    passes={"m": 1, "m1": 1, "m0": 2, "n": 1, "n1": 1, "n0": 2},
)
