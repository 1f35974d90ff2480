# ruff: noqa: E501 (spec strings and oracles are data: lines as the reviewer wrote them)
"""Cases that exposed bugs (session 17), each minimal:

* ``passes="auto"`` floors the rewrite's running max only when the max is a stabiliser; when an output
  depends on its value (the max itself, or the denominator alone), a first tile whose scores are all ``-inf`` values (an additive ``-inf`` mask) gives
  ``exp(-inf - -inf)`` = NaN in rows where the spec as written is finite (docs/rewrite.md, Limits, says
  the backends give the spec's finite answer; fixed: einattn.rewrite.exact gives the output an exact copy
  of the running max, which is then floored);
* the triton backend evaluates filter arithmetic on coordinates in int32: ``m * W * W`` with ``W = 2^20``
  wraps (silently wrong masks, on the fused and the general path), and a product of two params that leaves
  int32 (``W * W``) is an error under the interpreter;
* the division deferral of ``passes="auto"`` sums un-normalised values, which overflows to ``inf`` where the
  spec's normalised sum is finite (docs/rewrite.md said "nothing can overflow that the original would not";
  now a documented limit, a strict expected failure).
"""

import numpy as np

from .common import make_rn, registry, softmax

rn, rng = make_rn(1707)
CASES, case = registry()


# --- the max as an output, an additive -inf mask over row 0's first four keys (a whole tile of 3)
def gm_out_ref(Q, K, V, B):
    S = Q @ K.T + B
    keep = np.isfinite(S)
    gm = np.where(keep, S, -np.inf).max(1)
    sd = np.where(keep, np.exp(np.where(keep, S, 0) - gm[:, None]), 0).sum(1)
    return softmax(S, keep) @ V, gm, sd


_B = np.zeros((3, 7))
_B[0, :4] = -np.inf
_B[2, 1:3] = -np.inf

case(
    "s17_bug_auto_max_output_neg_inf_first_tile_nan",
    """
# softmax under an additive mask (-inf: masked), its max GM and denominator SD returned too
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O, GM, SD
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + B[p, m]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(3, 2), K=rn(7, 2), V=rn(7, 2), B=_B),
    gm_out_ref,
    passes={"m": 3},
)


# --- causal attention written with scaled coordinates: m * W * W <= p * W * W is m <= p (W = 2^20)
def scaled_causal_ref(Q, K, V):
    P, M = Q.shape[0], K.shape[0]
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    return softmax(Q @ K.T, mask) @ V


case(
    "s17_bug_triton_filter_int32_overflow_fused",
    """
# causal attention on positions scaled by W^2 (products up to 2^43: beyond int32)
input  Q[p, e], K[m, e], V[m, f]
param  W = 1048576
output O
S[m, p]  = Q[p, e] * K[m, e]  where m * W * W <= p * W * W
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
""",
    dict(Q=rn(5, 2), K=rn(6, 2), V=rn(6, 2)),
    scaled_causal_ref,
)


case(
    "s17_bug_triton_filter_int32_overflow_general",
    """
# only key 0 satisfies m * W * W < p + 1 (W = 2^20); in int32 m * W * W wraps to 0 for every m
input  X[p, m]
param  W = 1048576
output A
A[p] = X[p, m]  where m * W * W < p + 1
""",
    dict(X=rn(4, 5)),
    lambda X: X[:, 0].copy(),
)


case(
    "s17_bug_triton_filter_param_product_out_of_int32",
    """
# the constant W * W = 2^40 (each factor below 2^24) in a filter
input  X[p, m]
param  W = 1048576
output A
A[p] = X[p, m]  where m * (W * W) < p + 1
""",
    dict(X=rn(4, 5)),
    lambda X: X[:, 0].copy(),
)


# --- the normalised weights times values near the top of float64: the spec's sum is finite (weights sum
# to 1), the deferred sum of exp(S - GM) * V is 4 * 1.5e308 = inf
case(
    "s17_bug_auto_deferral_overflows_finite_spec",
    """
# uniform attention over four keys whose values are 1.5e308
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
O[p, f]  = A[m, p] * V[m, f]
""",
    dict(Q=np.zeros((2, 1)), K=np.zeros((4, 1)), V=np.full((4, 1), 1.5e308)),
    lambda Q, K, V: np.full((2, 1), 1.5e308),
    passes={"m": 3},
    limits={
        "triton": "float32 inputs: 1.5e308 is inf once converted (docs/backends.md, dtypes)",
        **{
            b: "the deferred division sums un-normalised products: within a factor M of the largest value "
            "they overflow where the normalised sum does not (docs/rewrite.md, Limits)"
            for b in ("numpy", "torch")
        },
    },
)
