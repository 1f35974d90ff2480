"""Masks FlexAttention users write, each in a hand-written 1-pass cascade with small tiles (M0 = 4, M not a
multiple of it), so that the fused triton kernel's tile skipping and masked/whole tile split meet `%`, `//`,
`abs`, `max`, `clamp`, `not`, `or`, int tensors and sizes in filters. The states start absent (a filter that
is never true) and every update is guarded with `??`, so a row's empty tiles leave it unchanged and a row with
no key at all is delivered as 0."""

import re

import numpy as np

from .common import att, make_rn, registry

rn, rng = make_rn(1208)
CASES, case = registry()

TEMPLATE = """
input  Q[b, p, e], K[b, m, e], V[b, m, f]{extra_inputs}
param  M0 = 4{params}
rank   M = M1 * M0
output O
BQK[b, m1, m0, p]  = Q[b, p, e] * K[b, m1 * M0 + m0, e] * rsqrt(E)  where {filt}
RM[b, 0, p]        = -inf  where 0 != 0
RD[b, 0, p]        = 0     where 0 != 0
RNV[b, 0, p, f]    = 0     where 0 != 0
LM[b, m1, p]       = BQK[b, m1, m0, p] :: max(m0)
RM[b, m1 + 1, p]   = max(RM[b, m1, p] ?? LM[b, m1, p], LM[b, m1, p] ?? RM[b, m1, p])
SLN[b, m1, m0, p]  = exp(BQK[b, m1, m0, p] - RM[b, m1 + 1, p])
PRM[b, m1, p]      = exp(RM[b, m1, p] - RM[b, m1 + 1, p])
SLD[b, m1, p]      = SLN[b, m1, m0, p]
SLNV[b, m1, p, f]  = SLN[b, m1, m0, p] * V[b, m1 * M0 + m0, f]
RD[b, m1 + 1, p]   = SLD[b, m1, p] + (RD[b, m1, p] * PRM[b, m1, p] ?? 0) ?? RD[b, m1, p] * PRM[b, m1, p]
RNV[b, m1 + 1, p, f] = (SLNV[b, m1, p, f] + (RNV[b, m1, p, f] * PRM[b, m1, p] ?? 0)
                        ?? RNV[b, m1, p, f] * PRM[b, m1, p])
O[b, p, f]         = RNV[b, M1, p, f] / RD[b, M1, p]
"""


def masked_case(name, filt, mask_fn, P, M, params="", extra_inputs="", extra=None, B=1):
    spec = TEMPLATE.format(
        filt=re.sub(r"\bm\b", "(m1 * M0 + m0)", filt), params=params, extra_inputs=extra_inputs
    )
    inputs = dict(Q=rn(B, P, 4), K=rn(B, M, 4), V=rn(B, M, 3), **(extra or {}))

    def oracle(Q, K, V, **kw):
        p, m = np.arange(P)[:, None], np.arange(M)[None, :]
        mask = mask_fn(p, m, **kw)
        if mask.ndim == 2:
            mask = mask[None]
        return att(Q, K, V, mask=np.broadcast_to(mask, (B, P, M)))

    case(name, spec, inputs, oracle)


masked_case(
    "s12_mask1p_dilated_window",
    "0 <= p - m < W * DL and (p - m) % DL == 0",
    lambda p, m: (p - m >= 0) & (p - m < 6) & ((p - m) % 2 == 0),
    21,
    21,
    params="\nparam  W = 3\nparam  DL = 2",
)
masked_case(
    "s12_mask1p_shifted_window_mod",
    "(p + SH) % P // WS == (m + SH) % M // WS",
    lambda p, m: ((p + 3) % 18) // 5 == ((m + 3) % 18) // 5,
    18,
    18,
    params="\nparam  SH = 3\nparam  WS = 5",
)
masked_case(
    "s12_mask1p_neighbourhood_2d",
    "abs(p // WD - m // WD) <= 1 and abs(p % WD - m % WD) <= 1",
    lambda p, m: (np.abs(p // 5 - m // 5) <= 1) & (np.abs(p % 5 - m % 5) <= 1),
    20,
    20,
    params="\nparam  WD = 5",
)
masked_case(
    "s12_mask1p_global_and_band",
    "m < NG or p < NG or abs(p - m) <= 1",
    lambda p, m: (m < 2) | (p < 2) | (np.abs(p - m) <= 1),
    17,
    17,
    params="\nparam  NG = 2",
)
masked_case(
    "s12_mask1p_chunked_causal",
    "p // C == m // C and m <= p",
    lambda p, m: (p // 6 == m // 6) & (m <= p),
    19,
    19,
    params="\nparam  C = 6",
)
masked_case(
    "s12_mask1p_lookahead_window",
    "p <= m and m < p + W",
    lambda p, m: (p <= m) & (m < p + 3),
    9,
    14,
    params="\nparam  W = 3",
)
masked_case(
    "s12_mask1p_not_and_max",
    "not p - m >= W and max(p - 2 * W, 0) <= m",
    lambda p, m: ~(p - m >= 3) & (np.maximum(p - 6, 0) <= m),
    15,
    15,
    params="\nparam  W = 3",
)
masked_case(
    "s12_mask1p_clamp_start",
    "m >= clamp(p - 2, 3, 9) and m <= p",
    lambda p, m: (m >= np.clip(p - 2, 3, 9)) & (m <= p),
    17,
    17,
)
masked_case(
    "s12_mask1p_lengths_and_causal",
    "m < lens[b] and m <= p + M - P",
    lambda p, m, lens: (m[None] < lens[:, None, None]) & (m <= p + 13 - 6)[None],
    6,
    13,
    extra_inputs=", lens[b] : int",
    extra=dict(lens=np.array([2, 13, 0])),
    B=3,
)
masked_case(
    "s12_mask1p_int_tree_parent",
    "m == p or m == par[p] or m == par[par[p]]",
    # the root's par[par[0]] reads par[-1]: absent, so all of row 0 is absent (`or` does not rescue it)
    lambda p, m, par: ((m == p) | (m == par[p]) | (m == par[np.maximum(par[p], 0)])) & (par[p] >= 0),
    11,
    11,
    extra_inputs=", par[n] : int",
    extra=dict(par=np.array([-1, 0, 0, 1, 1, 2, 5, 5, 6, 3, 9])),
)
