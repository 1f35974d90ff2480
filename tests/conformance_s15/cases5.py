"""Masks over sizes large enough for several key tiles and row blocks on every backend (P around 40, M around
150: three tiles of the default 64 and three row blocks of 16 on triton, many tiles of 3 on torch and in the
numpy rewrite): sinks plus a narrow window, strided, non-monotone document ids, reversed keys,
block-causal by // with different block sizes, chunked local, a band cut out of the middle with `not`,
min/max/clamp bounds, scaled coordinates, per-row bounds gathered from int tensors, whole row blocks without
a key, and a per-head temperature input of either sign. Each written in 3 passes with the LSE, as a user
would, against one masked-softmax oracle."""

import numpy as np

from .common import lse, make_rn, pm, registry, softmax

rn, rng = make_rn(1505)
CASES, case = registry()

_TAIL = """
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
"""


def masked(Q, K, V, mask, bias=None):
    s = Q @ K.T / np.sqrt(Q.shape[1])
    if bias is not None:
        s = s + bias
    mask = np.broadcast_to(mask, s.shape)
    return softmax(s, mask) @ V, np.where(mask.any(-1), lse(s, mask), 0.0)


def mcase(name, filt, mask_fn, P=37, M=150, params=None, extra_inputs=None, extra_decl="", scale=1.0):
    inputs = dict(Q=rn(P, 4, scale=scale), K=rn(M, 4, scale=scale), V=rn(M, 3))
    inputs.update(extra_inputs or {})
    spec = (
        f"""
input  Q[p, e], K[m, e], V[m, f]{extra_decl}
output O, LSE
S[p, m]  = Q[p, e] * K[m, e] * rsqrt(E)  where {filt}
"""
        + _TAIL
    )

    def oracle(Q, K, V, **extra):
        p, m = pm(Q.shape[0], K.shape[0])
        return masked(Q, K, V, mask_fn(p, m, Q.shape[0], K.shape[0], **extra))

    case(name, spec, inputs, oracle, params=params, passes={"m": 3})


mcase(
    "s15_tiles_sinks_or_narrow_window_skips_middle",
    "m < NS or 0 <= p + M - P - m < W",
    lambda p, m, P, M: (m < 3) | ((p + M - P - m >= 0) & (p + M - P - m < 5)),
    params={"NS": 3, "W": 5},
    extra_decl="\nparam  NS = 1\nparam  W = 2",
)
mcase(
    "s15_tiles_strided_causal_every_ninth",
    "(p + M - P - m) % 9 == 0 and m <= p + M - P",
    lambda p, m, P, M: ((p + M - P - m) % 9 == 0) & (m <= p + M - P),
)


_DQ = rng.integers(0, 4, size=37)
_DK = rng.integers(0, 4, size=150)
_DK[:40] = 9  # the first keys belong to no query's document
mcase(
    "s15_tiles_nonmonotone_doc_ids_and_causal",
    "dq[p] == dk[m] and m <= p + M - P",
    lambda p, m, P, M, dq, dk: (dq[:, None] == dk[None, :]) & (m <= p + M - P),
    extra_inputs=dict(dq=_DQ, dk=_DK),
    extra_decl=", dq[p] : int, dk[m] : int",
)


# --- keys read reversed: score p, m uses key M - 1 - m; causal on m (in the reversed order)
def rev_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    p, m = pm(P, M)
    return masked(Q, K[::-1], V[::-1], m <= 2 * p)


case(
    "s15_tiles_reversed_keys_scaled_causal",
    """
input  Q[p, e], K[m, e], V[m, f]
output O, LSE
S[p, m]  = Q[p, e] * K[M - 1 - m, e] * rsqrt(E)  where m <= 2 * p
GM[p]    = S[p, m] :: max(m)
EX[p, m] = exp(S[p, m] - GM[p])
SD[p]    = EX[p, m]
O[p, f]  = EX[p, m] * V[M - 1 - m, f] / SD[p]
LSE[p]   = GM[p] + log(SD[p])
""",
    dict(Q=rn(37, 4), K=rn(150, 4), V=rn(150, 3)),
    rev_ref,
    passes={"m": 3},
)

mcase(
    "s15_tiles_block_causal_different_block_sizes",
    "m // BM <= p // BP",
    lambda p, m, P, M: m // 50 <= p // 12,
    params={"BM": 50, "BP": 12},
    extra_decl="\nparam  BM = 64\nparam  BP = 16",
)
mcase(
    "s15_tiles_chunked_local_same_chunk",
    "m // C == p // C and m <= p",
    lambda p, m, P, M: (m // 40 == p // 40) & (m <= p),
    P=150,
    params={"C": 40},
    extra_decl="\nparam  C = 16",
)
mcase(
    "s15_tiles_not_middle_band",
    "not (20 <= m and m < 130) and m <= 4 * p",
    lambda p, m, P, M: ~((m >= 20) & (m < 130)) & (m <= 4 * p),
)
mcase(
    "s15_tiles_min_max_clamp_bounds",
    "max(p - 30, 0) <= m and m <= min(4 * p, M - 10) and m != clamp(p, 5, 25)",
    lambda p, m, P, M: (
        (np.maximum(p - 30, 0) <= m) & (m <= np.minimum(4 * p, M - 10)) & (m != np.clip(p, 5, 25))
    ),
)
mcase(
    "s15_tiles_scaled_coordinates_cross",
    "4 * m <= 15 * p + 7 and 2 * m >= 3 * p - 20",
    lambda p, m, P, M: (4 * m <= 15 * p + 7) & (2 * m >= 3 * p - 20),
)

_LO = rng.integers(0, 150, size=37)
_HI = np.minimum(_LO + rng.integers(0, 40, size=37), 150)
_HI[5] = _LO[5]  # an empty range
mcase(
    "s15_tiles_per_row_bounds_gathered",
    "lo[p] <= m and m < hi[p]",
    lambda p, m, P, M, lo, hi: (lo[:, None] <= m) & (m < hi[:, None]),
    extra_inputs=dict(lo=_LO, hi=_HI),
    extra_decl=", lo[p] : int, hi[p] : int",
)
mcase(
    "s15_tiles_lag_window_first_row_blocks_empty",
    "p - 40 <= m and m < p - 33",
    lambda p, m, P, M: (p - 40 <= m) & (m < p - 33),
    P=60,
    M=70,
)
mcase(
    "s15_tiles_bottom_right_more_queries_than_keys",
    "m <= p + M - P",
    lambda p, m, P, M: m <= p + M - P,
    P=90,
    M=70,
)
mcase(
    "s15_tiles_huge_logits_sliding_window",
    "p - W < m and m <= p",
    lambda p, m, P, M: (p - 20 < m) & (m <= p),
    P=70,
    M=70,
    params={"W": 20},
    extra_decl="\nparam  W = 4",
    scale=40.0,
)


# --- per-head temperature as an input, one head's negative (its softmax favours the smallest scores) and one
# tiny: exp((S - GM) / T[h]) with GM the max of S; causal, several tiles
def temp_ref(Q, K, V, T):
    H, P, E = Q.shape
    M = K.shape[1]
    p, m = pm(P, M)
    O = np.zeros((H, P, V.shape[2]))
    for h in range(H):
        s = Q[h] @ K[h].T / np.sqrt(E)
        O[h] = softmax(s / T[h], m <= p + M - P) @ V[h]
    return O


case(
    "s15_tiles_per_head_temperature_input_negative_and_small",
    """
input  Q[h, p, e], K[h, m, e], V[h, m, f], T[h]
output O
S[h, p, m]  = Q[h, p, e] * K[h, m, e] * rsqrt(E)  where m <= p + M - P
GM[h, p]    = S[h, p, m] :: max(m)
EX[h, p, m] = exp((S[h, p, m] - GM[h, p]) / T[h])
SD[h, p]    = EX[h, p, m]
O[h, p, f]  = EX[h, p, m] * V[h, m, f] / SD[h, p]
""",
    dict(Q=rn(3, 20, 4), K=rn(3, 90, 4), V=rn(3, 90, 2), T=np.array([1.5, -0.7, 0.05])),
    temp_ref,
    passes={"m": 3},
)
