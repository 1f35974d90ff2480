"""Probes of presence and tiling: scores outside the causal filter defaulted to a finite logit (the default
makes them present again, so no tile may be skipped), Cascade 5 over keys averaged with their predecessor
across tile boundaries and its state after the first tile read as a second output, a filter on the output rows
only after a deferred division, GQA with more KV heads than the query heads use, and a pass count through a
rank alias that the analysis gets wrong (``s21_bug_*``)."""

import numpy as np

from .common import make_rn, pm, registry, scores, softmax, weighted

rn, rng = make_rn(2106)
CASES, case = registry()


# --- causal scores, the keys past the query given the finite logit -2 by ?? (they get weight again)
def default_logit_ref(Q, K, V):
    p, m = pm(Q.shape[0], K.shape[0])
    t = np.where(m <= p, Q @ K.T, -2.0)
    return softmax(t) @ V


case(
    "s21_probe_filtered_scores_defaulted_to_finite_logit",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]  where m <= p
T[p, m]  = S[p, m] ?? -2
GM[p]    = T[p, m] :: max(m)
EX[p, m] = exp(T[p, m] - GM[p])
DN[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / DN[p]
""",
    dict(Q=rn(9, 3), K=rn(12, 3), V=rn(12, 2)),
    default_logit_ref,
    passes={"m": 3},
)


# --- Cascade 5 over keys averaged with their predecessor (key -1 defaulted to 0; the point past the end stays
# absent), M = 10 in tiles of 4; FIRST reads the states after the first tile
def shifted_ref(Q, K, V):
    ks = (K + np.vstack([np.zeros((1, K.shape[1])), K[:-1]])) * 0.5
    s = Q @ ks.T
    return softmax(s) @ V, softmax(s[:, :4]) @ V[:4]


case(
    "s21_probe_cascade5_keys_shifted_across_tiles_first_tile_state",
    """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output AV, FIRST
BK[m1, m0, e]     = (K[m1 * M0 + m0, e] + (K[m1 * M0 + m0 - 1, e] ?? 0)) * 0.5
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
FIRST[p, f]       = RNV[1, p, f] / RD[1, p]
""",
    dict(Q=rn(4, 3), K=rn(10, 3), V=rn(10, 2)),
    shifted_ref,
    passes={"m": 1},
)


# --- a filter on the output rows only, after the deferred division: rows 0, 1 and 4 absent, delivered as 0
def rows_ref(Q, K, V):
    out = softmax(Q @ K.T) @ V
    out[[0, 1, 4]] = 0
    return out


case(
    "s21_probe_filter_on_output_rows_only_after_deferred_division",
    """
input  Q[p, e], K[m, e], V[m, f]
output O
S[p, m]  = Q[p, e] * K[m, e]
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
DN[p]    = EX[p, m]
NV[p, f] = EX[p, m] * V[m, f]
O[p, f]  = NV[p, f] / DN[p]  where p >= 2 and p != 4
""",
    dict(Q=rn(7, 3), K=rn(8, 3), V=rn(8, 2)),
    rows_ref,
    passes={"m": 2},
)


# --- GQA where the cache holds more KV heads than the query heads read: H = 4, R = 2 reads KV heads 0, 1 of 4
def extra_kv_ref(Q, K, V, R=2):
    idx = np.arange(Q.shape[1]) // R
    return weighted(softmax(scores(Q, K[:, idx])), V[:, idx])


case(
    "s21_probe_gqa_more_kv_heads_than_used",
    """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)
GM[b, h, p]    = S[b, h, p, m] :: max(m)
EX[b, h, p, m] = exp(S[b, h, p, m] - GM[b, h, p])
DN[b, h, p]    = EX[b, h, p, m]
O[b, h, p, f]  = EX[b, h, p, m] * V[b, h // R, m, f] / DN[b, h, p]
""",
    dict(Q=rn(1, 4, 3, 4), K=rn(1, 4, 5, 4), V=rn(1, 4, 5, 2)),
    extra_kv_ref,
)


# --- BUG, fixed (analysis; every backend's values were right): self-similarity with the key rows
# normalised, X read at rank t (as queries) and at its alias s (as keys). N[s] = square(X[s, c]) reduces only
# c: one row of X per point, not X's t fibre. For a query row t the mapping "for s: read X[s, :], N[s]" reads
# every fibre once, so the cascade is 1 pass over t (docs/analysis.md section 2: an alias reduction must
# reduce the coordinate that reads R's dimension; N keeps s). einattn.analyze reported t: 2 ("N -> Y re-reads
# X (pass 2)"), expected 1. Writing the same norms as N[t] = square(X[t, c]) read at N[s] was reported 1 pass
# over t: the two spellings of one computation disagreed. The same happened with projections (KP[s, e] =
# X[s, c] * WK[c, e] before the scores QP[t, e] * KP[s, e] of self-attention: t 2, expected 1). c is 2 passes
# either way (N reduces c, Y re-reads X's c fibre), s 1.
def rownorm_ref(X):
    return (X @ X.T) / np.sqrt((X**2).sum(1))[None, :]


case(
    "s21_bug_passes_alias_row_norm_counted_as_reduction_of_declared_rank",
    """
input  X[t, c]
rank   S = T
output Y
N[s]    = square(X[s, c])
Y[t, s] = X[t, c] * X[s, c] * rsqrt(N[s])
""",
    dict(X=rn(5, 3)),
    rownorm_ref,
    passes={"t": 1, "s": 1, "c": 2},
)
