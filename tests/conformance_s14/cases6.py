# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Numerically hard inputs: logits of +-1e4 through a guarded 1-pass loop over ragged tiles, kernel regression
whose unstabilised weights all underflow, a -1e4 bias over whole rows (shift invariance and the log-sum-exp),
the log of the probability mass outside a window (a ratio of tiny sums, as a difference of log-sum-exps), and a
huge logit at the one key the filter removes."""

import numpy as np

from .common import att, lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1406)
CASES, case = registry()


# --- logits of +-1e4 (exp of them overflows or underflows anywhere but relative to the running max) in a
# guarded 1-pass cascade over tiles of 3 (M = 10: ragged), causal so that the first rows' last tiles are dead
def big_1pass_ref(Q, K, V):
    S = Q @ K.T
    p, m = pm(Q.shape[0], K.shape[0])
    mask = m <= p + 1
    return softmax(S, mask) @ V, lse(S, mask)


_Qb = rn(8, 2)
_Qb[:, 0] *= 100.0
_Kb = rn(10, 2)
_Kb[:, 0] *= 100.0
case(
    "s14_logits_1e4_guarded_1pass_ragged",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 3
rank   M = M1 * M0
output O, L
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
RD[m1 + 1, p]     = RD[m1, p] * PRM[m1, p] + (SLD[m1, p] ?? 0)
RNV[m1 + 1, p, f] = RNV[m1, p, f] * PRM[m1, p] + (SLNV[m1, p, f] ?? 0)
O[p, f]           = RNV[M1, p, f] / RD[M1, p]
L[p]              = RM[M1, p] + log(RD[M1, p])
""",
    dict(Q=_Qb, K=_Kb, V=rn(10, 2)),
    big_1pass_ref,
    passes={"m": 1, "m1": 1, "m0": 2},
)


# --- Nadaraya-Watson kernel regression with a Gaussian kernel of width 0.05: exp(-d^2 / (2 h^2)) underflows to
# 0 for every sample of the far queries, so the weights are stabilised by their max (the nearest sample)
def nw_ref(xq, xk, y, H=0.05):
    s = -np.square(xq[:, None] - xk[None, :]) / (2 * H * H)
    return softmax(s) @ y


case(
    "s14_kernel_regression_underflowing_weights",
    """
input  xq[p], xk[m], y[m, f]
param  H = 0.05
output O
S[p, m]  = -square(xq[p] - xk[m]) / (2 * H * H)
GM[p]    = S[p, m] :: max(m)
W[p, m]  = exp(S[p, m] - GM[p])
SW[p]    = W[p, m]
O[p, f]  = W[p, m] * y[m, f] / SW[p]
""",
    dict(xq=np.array([-3.0, 0.1, 0.33, 2.5, 10.0]), xk=np.linspace(0.0, 1.0, 7), y=rn(7, 2)),
    nw_ref,
)


# --- a bias of -1e4 on every key of some rows (per query): the weights are unchanged (shift invariance),
# the log-sum-exp moves by -1e4
def bias_rows_ref(Q, K, V, rb):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    mask = np.arange(K.shape[0])[None, :] <= np.arange(Q.shape[0])[:, None]
    return att(Q, K, V, mask=mask), lse(s + rb[:, None], mask)


case(
    "s14_row_bias_minus_1e4_shift_invariance",
    """
input  Q[p, e], K[m, e], V[m, f], rb[p]
output O, LSE
QK[p, m] = Q[p, e] * K[m, e] * rsqrt(E)
S[p, m]  = QK[p, m] + rb[p]  where m <= p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
""",
    dict(Q=rn(6, 3), K=rn(6, 3), V=rn(6, 2), rb=np.array([0.0, -1e4, 0.0, -1e4, -1e4, 3.0])),
    bias_rows_ref,
)


# --- the log of the attention mass that falls outside a causal window of W keys: a ratio of sums that is tiny
# (about e^-60 with these scores), written as the difference of two log-sum-exps, each with its own max
def outside_ref(Q, K, W=2):
    s = Q @ K.T
    p, m = pm(Q.shape[0], K.shape[0])
    inside = (p - m >= 0) & (p - m < W)
    causal = m <= p
    outside = causal & ~inside
    has = outside.any(1)
    return np.where(has, lse(s, outside) - lse(s, causal), 0.0)


_Qo = rn(7, 2)
_Ko = rn(7, 2)
_Ko[:, 0] = np.linspace(-6.0, 6.0, 7)
_Qo[:, 0] = 10.0
case(
    "s14_log_mass_outside_window_tiny_ratio",
    """
input  Q[p, e], K[m, e]
param  W = 2
output LOUT
S[p, m]  = Q[p, e] * K[m, e]
SO[p, m] = S[p, m]  where m <= p - W
SA[p, m] = S[p, m]  where m <= p
GO[p]    = SO[p, m] :: max(m)
GA[p]    = SA[p, m] :: max(m)
DO[p]    = exp(SO[p, m] - GO[p])
DA[p]    = exp(SA[p, m] - GA[p])
LOUT[p]  = GO[p] + log(DO[p]) - GA[p] - log(DA[p])
""",
    dict(Q=_Qo, K=_Ko),
    outside_ref,
)


# --- a logit of 1e4 at the one key the filter removes (a padding key with a huge score): the max and the
# weights never see it
def huge_masked_ref(Q, K, V, n):
    s = Q @ K.T
    mask = np.broadcast_to(np.arange(K.shape[0])[None, :] < int(n), s.shape)
    return softmax(s, mask) @ V, lse(s, mask)


_Kh = rn(6, 3)
_Kh[5] = 1e3
case(
    "s14_huge_logit_only_at_filtered_key",
    """
input  Q[p, e], K[m, e], V[m, f], n : int
output O, LSE
S[p, m]  = Q[p, e] * K[m, e]  where m < n
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
""",
    dict(Q=np.abs(rn(4, 3)) + 1.0, K=_Kh, V=rn(6, 2), n=np.array(5)),
    huge_masked_ref,
)
