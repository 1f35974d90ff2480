"""Review (session 16): the triton backend's running max in other units and int64 products in filters.

1. ``lowering/triton_base2.py`` (now ``triton_raw_max.py``): the fused kernel held an online softmax's
   running max times log2 e (now: divided by the scale, in the raw scores' units) and
   computes the score tile without its positive scalar factors. Attacked with scale forms (zero, negative,
   infinite, tiny params, ``1/T``, ``T*T``, ``exp(T)``, scale tensors), running maxes and tile maxes read
   elsewhere, hand-written 1-pass cascades with other inits and steps, GQA, causal/window filters, padding
   biases, large logits, fully masked rows, dtypes, ragged tiles and ``skip_tiles=False``.
2. ``lowering/triton_expr.py`` ``_binary``: products in filters in int64, literal folding; filters and index
   expressions whose products pass int32's range, on the fused and the general path.

Every value is compared with softmax attention written in NumPy by hand (float64, Python-int masks), or, where
the cascade is unusual, with the NumPy backend. Interpreter on CPU (``tests/triton_cases.py``), tiny sizes.

Bugs found, all fixed (the tests marked ``# Fixed:`` failed): the first three by holding the running max in
the raw scores' units with a read check of the tile maxes (``lowering/triton_raw_max.py``), the last by
int64 index products:

* a tile max ``LM = BQK :: max(m0)`` whose running max is held in base 2 is read raw (without the folded
  factors) by any statement other than that running max's step: a second running max of the same ``LM``
  (an output max / log-sum-exp beside the attention) or a running sum of ``LM`` gives the max of ``Q . K``
  instead of ``Q . K * rsqrt(E)`` (plan_base2 checks the reads of the score tile and of the running max, never
  of the tile max).
* logits past ~3e9 (float32): ``exp2(fma(T, c, -RM'))`` is the exact ``T * c`` less the rounded
  ``RM' = max * c``, so the rounding error of that product (half an ulp of ``max * log2e``: 256 and more from
  2**32 on) is the exponent of the row's largest score: exp2 of it overflows (or underflows) and the row is
  NaN, where the spec as written, the NumPy and the torch backends give the right finite values. The module's
  claim that this rounding is "one constant in every exponent of a row, which the normalisation cancels"
  holds only while that constant stays within exp2's range.
* a padding bias inside a scaled product, ``S = (QK + B) * T`` with ``B = torch.finfo(float32).min`` and
  ``0 < T``, ``T * log2e > 1``: the bias is folded like any product, ``max * T * log2e`` overflows to -inf
  and a fully padded row gives NaN where as written (and NumPy) it is the mean of V; the docs say padding
  biases keep the form as written.
* fused path, index expressions: products stay int32 (only filters' products are widened), so
  ``K[(m * W * W) // (W * W), e]`` with ``W = 2**16`` reads ``K[0]`` for every key (the general path and NumPy
  read ``K[m]``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from triton_cases import DEVICE, EXAMPLES, check

import einattn

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

LOWEST32 = float(torch.finfo(torch.float32).min)


# ---- helpers and references -------------------------------------------------------------------------------


def tri(src, params=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(src, backend="triton", params=params, **options)


def numpy_backend(src, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(src, backend="numpy", params=params)


def held(kern) -> bool:
    return "_log2 = " in kern.source


def run(kern, dtype=torch.float32, **xs):
    """The kernel on ``xs`` rounded to ``dtype``; every output as float64 NumPy (a tuple)."""
    args = {}
    for n, a in xs.items():
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            args[n] = torch.as_tensor(a, dtype=torch.int64, device=DEVICE)
        else:
            args[n] = torch.as_tensor(a, dtype=torch.float64, device=DEVICE).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = kern(**args)
    out = out if isinstance(out, tuple) else (out,)
    return tuple(o.detach().double().cpu().numpy() for o in out)


def rounded(a, dtype):
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype).double().numpy()


def attention(S, mask, V):
    """Softmax over the keys (last axis of S) where ``mask``; a row without a key gives 0 (absent)."""
    S = np.where(mask, S, -np.inf)
    row = mask.any(-1)
    with np.errstate(all="ignore"):
        gm = np.where(row, S.max(-1), 0.0)
        w = np.where(mask, np.exp(S - gm[..., None]), 0.0)
        sd = np.where(row, w.sum(-1), 1.0)
        return np.where(row[..., None], (w @ V) / sd[..., None], 0.0)


def close(got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all(), f"non-finite values: {got}"
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max()) / scale
    assert err <= tol, f"relative error {err:.3g} > {tol:g}\ngot {got}\nwant {want}"


def inputs(p, m, e=3, f=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((p, e)), rng.standard_normal((m, e)), rng.standard_normal((m, f))


SOFTMAX = """
input  Q[p, e], K[m, e], V[m, f]{extra}
output AV
QK[m, p] = {scores}
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
AV[p, f] = SN[m, p] * V[m, f] / SD[p]
"""


# ---- 1. which scale forms fold, and the values with each --------------------------------------------------

SCALES = [
    # (scores after `Q . K`, params, expected held (None: either), the scale in NumPy)
    ("* T", {"T": 0.0}, False, lambda e: 0.0),
    ("* T", {"T": -0.7}, False, lambda e: -0.7),
    ("* T * rsqrt(E)", {"T": -1.0}, False, lambda e: -1 / math.sqrt(e)),
    ("/ T", {"T": -2.0}, False, lambda e: -0.5),
    ("/ T", {"T": 0.25}, True, lambda e: 4.0),
    ("* (1 / T)", {"T": 0.5}, True, lambda e: 2.0),
    ("* T * T", {"T": -2.0}, None, lambda e: 4.0),
    ("* T * T", {"T": 1.5}, True, lambda e: 2.25),
    ("* rsqrt(E) / T", {"T": 0.5}, True, lambda e: 2 / math.sqrt(e)),
    ("* exp(T)", {"T": -1.0}, None, lambda e: math.exp(-1.0)),
    ("* sqrt(T)", {"T": 4.0}, True, lambda e: 2.0),
    ("* T", {"T": 3}, True, lambda e: 3.0),  # an int param
    ("* (T - 1)", {"T": 3.0}, None, lambda e: 2.0),
    ("* (T - 1)", {"T": 0.5}, False, lambda e: -0.5),
    # (not folded: literal factors are folded within 1e-12..1e12, lowering/triton_raw_max.BOUNDS)
    ("* T", {"T": 1e-30}, False, lambda e: 1e-30),
]


@pytest.mark.parametrize("scale, params, expect, fn", SCALES)
def test_scale_forms_values_and_base2(scale, params, expect, fn):
    src = SOFTMAX.format(scores=f"Q[p, e] * K[m, e] {scale}", extra="\nparam  T = 1")
    kern = tri(src, params=params, tile=4)
    assert kern.plan.path == "fused"
    if expect is not None:
        assert held(kern) == expect
    q, k, v = inputs(6, 10, seed=1)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = (rounded(q, torch.float32) @ rounded(k, torch.float32).T) * fn(3)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


def test_a_scale_below_float32s_range_with_causal_masked_tiles():
    """T = 1e-46 is positive in float64 but 0 in float32: a fully masked tile's max times the factor would be
    -inf * 0 = NaN. Under the interpreter the factor stays a float64 Python number (a GPU may differ)."""
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] * T  where m <= p", extra="\nparam  T = 1")
    kern = tri(src, params={"T": 1e-46}, tile=4)
    assert not held(kern)  # (outside lowering/triton_raw_max.BOUNDS: not folded)
    q, k, v = inputs(7, 10, seed=2)
    (got,) = run(kern, Q=q, K=k, V=v)
    P, M = np.arange(7)[:, None], np.arange(10)[None, :]
    S = np.zeros((7, 10))  # scores * 1e-46: every weight 1 in float64 to 1e-45
    close(got, attention(S, M <= P, v), 1e-4)


def test_an_infinite_scale_gives_nan_as_numpy_does():
    """T = inf passes the positive check; every row has a positive and a negative score: NaN everywhere
    in NumPy (inf - inf), and in the kernel."""
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] * T", extra="\nparam  T = 1")
    kern = tri(src, params={"T": math.inf}, tile=4)
    q, k, v = inputs(4, 9, seed=3)
    (got,) = run(kern, Q=q, K=k, V=v)
    want = numpy_backend(src, {"T": math.inf})(Q=rounded(q, torch.float32), K=rounded(k, torch.float32), V=v)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_a_nan_scale_is_refused():
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] * T", extra="\nparam  T = 1")
    with pytest.raises(einattn.EinError, match="NaN"):
        tri(src, params={"T": math.nan})


def test_a_scale_tensor_with_negative_and_zero_entries():
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] * T[p]", extra=", T[p]")
    kern = tri(src, tile=4)
    assert not held(kern)
    q, k, v = inputs(5, 10, seed=4)
    t = np.array([2.0, -1.5, 0.0, 0.5, -3.0])
    (got,) = run(kern, Q=q, K=k, V=v, T=t)
    S = (rounded(q, torch.float32) @ rounded(k, torch.float32).T) * t[:, None]
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


# ---- 2. hand-written 1-pass cascades ----------------------------------------------------------------------

ONEPASS = """
input  Q[p, e], K[m, e], V[m, f]{inputs}
param  M0 = 4{params}
rank   M = M1 * M0
output {outputs}
BK[m1, m0, e] = K[m1 * M0 + m0, e]
BV[m1, m0, f] = V[m1 * M0 + m0, f]
RM[0, p]      = {init}
RD[0, p]      = 0
RNV[f, 0, p]  = 0
{extra_init}
BQK[m1, m0, p]    = {scores}
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]     = {step}
SLN[m1, m0, p]    = {sln}
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[f, m1, p]    = SLN[m1, m0, p] * BV[m1, m0, f]
PRM[m1, p]        = {prm}
SPD[m1, p]        = RD[m1, p] * PRM[m1, p]
RD[m1 + 1, p]     = (SLD[m1, p] ?? 0) + SPD[m1, p]
SPNV[f, m1, p]    = RNV[f, m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = (SLNV[f, m1, p] ?? 0) + SPNV[f, m1, p]
{extra}
AV[p, f] = RNV[f, M1, p] / RD[M1, p]
"""


def onepass(**parts) -> str:
    d = dict(
        inputs="",
        params="",
        outputs="AV",
        init="-inf",
        extra_init="",
        scores="Q[p, e] * BK[m1, m0, e] * rsqrt(E)",
        step="max(RM[m1, p], LM[m1, p])",
        sln="exp(BQK[m1, m0, p] - RM[m1 + 1, p])",
        prm="exp(RM[m1, p] - RM[m1 + 1, p])",
        extra="",
    )
    d.update(parts)
    return ONEPASS.format(**d)


def qk(q, k, e=3):
    return (rounded(q, torch.float32) @ rounded(k, torch.float32).T) / math.sqrt(e)


def test_the_template_itself_holds_the_max_in_base_2():
    kern = tri(onepass())
    assert kern.plan.path == "fused" and held(kern)
    q, k, v = inputs(5, 10, seed=5)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


# Fixed. Was: the tile max LM is computed from the score tile without its factor rsqrt(E); only RM's step
# multiplies
# it back. A second running max G of the same LM (read after the loop: the row max, as a log-sum-exp output
# saves) reads the raw max: max(Q . K) instead of max(Q . K) * rsqrt(E).
def test_a_tile_max_also_read_by_a_second_running_max():
    src = onepass(
        outputs="AV, GG",
        extra_init="G[0, p] = -inf",
        extra="G[m1 + 1, p] = max(G[m1, p], LM[m1, p])\nGG[p] = G[M1, p]",
    )
    kern = tri(src)
    assert kern.plan.path == "fused"
    q, k, v = inputs(5, 10, seed=6)
    av, gg = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(av, attention(S, np.ones(S.shape, bool), v), 1e-4)
    close(gg, S.max(1), 1e-4)  # got max(Q . K): sqrt(3) times too large


# Fixed. Was: as above, a running sum of the tile maxes reads the raw maxes.
def test_a_tile_max_also_read_by_a_running_sum():
    src = onepass(
        outputs="AV, SS",
        extra_init="S[0, p] = 0",
        extra="S[m1 + 1, p] = S[m1, p] + LM[m1, p]\nSS[p] = S[M1, p]",
    )
    kern = tri(src)
    q, k, v = inputs(5, 10, seed=7)
    av, ss = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(av, attention(S, np.ones(S.shape, bool), v), 1e-4)
    tiles = [S[:, 0:4].max(1), S[:, 4:8].max(1), S[:, 8:10].max(1)]
    close(ss, sum(tiles), 1e-4)


def test_the_running_max_read_after_the_loop_is_not_held_in_base_2():
    src = onepass(outputs="AV, GG", extra="GG[p] = RM[M1, p]")
    kern = tri(src)
    assert kern.plan.path == "fused" and not held(kern)
    q, k, v = inputs(5, 10, seed=8)
    av, gg = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(av, attention(S, np.ones(S.shape, bool), v), 1e-4)
    close(gg, S.max(1), 1e-4)


def test_the_running_max_read_in_an_exponent_times_two():
    """softmax(2 S) written as exp(2 (S - RM)) and exp(2 (RM - RM')): not of the folded form."""
    src = onepass(sln="exp(2 * (BQK[m1, m0, p] - RM[m1 + 1, p]))", prm="exp(2 * (RM[m1, p] - RM[m1 + 1, p]))")
    kern = tri(src)
    assert not held(kern)
    q, k, v = inputs(5, 10, seed=9)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = 2 * qk(q, k)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


def test_a_reversed_correction_divided():
    """PRM = 1 / exp(RM' - RM): both operands the state, in base 2 both."""
    src = onepass(prm="1 / exp(RM[m1 + 1, p] - RM[m1, p])")
    kern = tri(src)
    q, k, v = inputs(5, 10, seed=10)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


def test_the_score_tile_also_summed():
    src = onepass(
        outputs="AV, SS",
        extra_init="S[0, p] = 0",
        extra="T[m1, p] = BQK[m1, m0, p]\nS[m1 + 1, p] = S[m1, p] + T[m1, p]\nSS[p] = S[M1, p]",
    )
    kern = tri(src)
    assert not held(kern)
    q, k, v = inputs(5, 10, seed=12)
    av, ss = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(av, attention(S, np.ones(S.shape, bool), v), 1e-4)
    close(ss, S.sum(1), 1e-4)


@pytest.mark.parametrize("init, expect", [("0", True), ("-1e30", True), ("2.5", True), ("W", False)])
def test_inits_other_than_minus_inf(init, expect):
    src = onepass(init=init, params="\nparam  W = -5.0")
    kern = tri(src)
    assert held(kern) == expect
    q, k, v = inputs(5, 10, seed=13)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


@pytest.mark.parametrize("default", ["-1e30", "0.5", "RM[m1, p]"])
@pytest.mark.parametrize("filt", ["m1 * M0 + m0 <= p", "p - 3 < m1 * M0 + m0 and m1 * M0 + m0 <= p"])
def test_a_step_with_a_default_and_filters(filt, default):
    """``max(RM, LM ?? c)``: the constant is held times log2 e, LM times the factor too."""
    src = onepass(
        scores=f"Q[p, e] * BK[m1, m0, e] * rsqrt(E)  where {filt}",
        step=f"max(RM[m1, p], LM[m1, p] ?? {default})",
    )
    kern = tri(src)
    assert kern.plan.path == "fused" and held(kern)
    q, k, v = inputs(9, 10, seed=14)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    P, M = np.arange(9)[:, None], np.arange(10)[None, :]
    mask = (M <= P) & ((P - 3 < M) if "p - 3" in filt else True)
    want = attention(S, mask, v)
    if default == "RM[m1, p]" and "p - 3" in filt:
        # rows 6..8 meet a tile with no key first: RM' = RM = -inf and PRM = exp(-inf - -inf) = NaN (the
        # language's value, as the NumPy backend gives)
        assert np.isnan(got[6:]).all()
        got, want = got[:6], want[:6]
    close(got, want, 1e-4)


@pytest.mark.parametrize("step", ["max(LM[m1, p], RM[m1, p])", "max(RM[m1, p], LM[m1, p]) ?? RM[m1, p]"])
def test_other_spellings_of_the_step(step):
    kern = tri(onepass(step=step))
    assert held(kern)
    q, k, v = inputs(5, 10, seed=23)
    (got,) = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-4)


@pytest.mark.parametrize(
    "extra",
    [
        # the running max read as exp(RM' - BQK) elsewhere (the score tile read outside exp(BQK - RM))
        "X[m1, p] = exp(RM[m1 + 1, p] - BQK[m1, m0, p])\n"
        "XS[m1 + 1, p] = XS[m1, p] + X[m1, p]\nOX[p] = XS[M1, p]",
        # the tile max read in an exponent with the running max
        "X[m1, p] = exp(LM[m1, p] - RM[m1 + 1, p])\nXS[m1 + 1, p] = XS[m1, p] + X[m1, p]\nOX[p] = XS[M1, p]",
    ],
)
def test_running_max_and_tile_max_in_other_exponents(extra):
    """Against the NumPy backend (the sums depend on the order of the tiles: no closed form by hand)."""
    src = onepass(outputs="AV, OX", extra_init="XS[0, p] = 0", extra=extra)
    kern = tri(src)
    assert kern.plan.path == "fused"
    q, k, v = inputs(5, 10, seed=24)
    av, ox = run(kern, Q=q, K=k, V=v)
    want = numpy_backend(src)(Q=rounded(q, torch.float32), K=rounded(k, torch.float32), V=v)
    S = qk(q, k)
    close(av, attention(S, np.ones(S.shape, bool), v), 1e-4)
    close(ox, want[1], 1e-4)


JOINT = """
input  Q[p, e], K[m, e], V[m, f], K2[m, e], V2[m, f]
param  M0 = 4
param  C = 0.5
rank   M = M1 * M0
output AV
BK[m1, m0, e] = K[m1 * M0 + m0, e]
BV[m1, m0, f] = V[m1 * M0 + m0, f]
BK2[m1, m0, e] = K2[m1 * M0 + m0, e]
BV2[m1, m0, f] = V2[m1 * M0 + m0, f]
RM[0, p] = -inf
RD[0, p] = 0
RNV[f, 0, p] = 0
A[m1, m0, p] = Q[p, e] * BK[m1, m0, e] * rsqrt(E)
B[m1, m0, p] = Q[p, e] * BK2[m1, m0, e] * C
LA[m1, p] = A[m1, m0, p] :: max(m0)
LB[m1, p] = B[m1, m0, p] :: max(m0)
RM[m1 + 1, p] = max(RM[m1, p], max(LA[m1, p], LB[m1, p]))
EA[m1, m0, p] = exp(A[m1, m0, p] - RM[m1 + 1, p])
EB[m1, m0, p] = exp(B[m1, m0, p] - RM[m1 + 1, p])
SA[m1, p] = EA[m1, m0, p]
SB[m1, p] = EB[m1, m0, p]
NA[f, m1, p] = EA[m1, m0, p] * BV[m1, m0, f]
NB[f, m1, p] = EB[m1, m0, p] * BV2[m1, m0, f]
PRM[m1, p] = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p] = SA[m1, p] + SB[m1, p] + RD[m1, p] * PRM[m1, p]
RNV[f, m1 + 1, p] = NA[f, m1, p] + NB[f, m1, p] + RNV[f, m1, p] * PRM[m1, p]
AV[p, f] = RNV[f, M1, p] / RD[M1, p]
"""


def test_one_running_max_over_two_score_tiles_with_different_factors():
    """max(RM, max(LA, LB)): LA would fold rsqrt(E), LB C; one softmax over both key sets. The running max
    is held in the raw scores' units, one scale per max: with two, the max stays as written."""
    kern = tri(JOINT)
    assert kern.plan.path == "fused" and kern.source.count("_log2 = ") == 0
    rng = np.random.default_rng(25)
    q, k, v = rng.standard_normal((5, 3)) * 2, rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    k2, v2 = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    (got,) = run(kern, Q=q, K=k, V=v, K2=k2, V2=v2)
    r = lambda a: rounded(a, torch.float32)  # noqa: E731
    S = np.concatenate([r(q) @ r(k).T / math.sqrt(3), r(q) @ r(k2).T * 0.5], 1)
    close(got, attention(S, np.ones(S.shape, bool), np.concatenate([v, v2])), 1e-4)


def test_two_running_maxes_over_two_score_tiles():
    """Two softmaxes in one loop with different factors (rsqrt(E) and a param 3): both held, each right."""
    src = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
param  C = 3.0
rank   M = M1 * M0
output AV, AW
BK[m1, m0, e] = K[m1 * M0 + m0, e]
BV[m1, m0, f] = V[m1 * M0 + m0, f]
RM[0, p] = -inf
RD[0, p] = 0
RNV[f, 0, p] = 0
XM[0, p] = -inf
XD[0, p] = 0
XNV[f, 0, p] = 0
BQK[m1, m0, p] = Q[p, e] * BK[m1, m0, e] * rsqrt(E)
BXK[m1, m0, p] = Q[p, e] * BK[m1, m0, e] * C
LM[m1, p] = BQK[m1, m0, p] :: max(m0)
LX[m1, p] = BXK[m1, m0, p] :: max(m0)
RM[m1 + 1, p] = max(RM[m1, p], LM[m1, p])
XM[m1 + 1, p] = max(XM[m1, p], LX[m1, p])
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLX[m1, m0, p] = exp(BXK[m1, m0, p] - XM[m1 + 1, p])
SLD[m1, p] = SLN[m1, m0, p]
SXD[m1, p] = SLX[m1, m0, p]
SLNV[f, m1, p] = SLN[m1, m0, p] * BV[m1, m0, f]
SLXV[f, m1, p] = SLX[m1, m0, p] * BV[m1, m0, f]
RD[m1 + 1, p] = SLD[m1, p] + RD[m1, p] * exp(RM[m1, p] - RM[m1 + 1, p])
XD[m1 + 1, p] = SXD[m1, p] + XD[m1, p] * exp(XM[m1, p] - XM[m1 + 1, p])
RNV[f, m1 + 1, p] = SLNV[f, m1, p] + RNV[f, m1, p] * exp(RM[m1, p] - RM[m1 + 1, p])
XNV[f, m1 + 1, p] = SLXV[f, m1, p] + XNV[f, m1, p] * exp(XM[m1, p] - XM[m1 + 1, p])
AV[p, f] = RNV[f, M1, p] / RD[M1, p]
AW[p, f] = XNV[f, M1, p] / XD[M1, p]
"""
    kern = tri(src)
    assert kern.plan.path == "fused" and kern.source.count("_log2 = ") == 2
    q, k, v = inputs(5, 10, seed=15)
    av, aw = run(kern, Q=q, K=k, V=v)
    S = qk(q, k)
    ones = np.ones(S.shape, bool)
    close(av, attention(S, ones, v), 1e-4)
    close(aw, attention(S * math.sqrt(3) * 3.0, ones, v), 1e-4)


# ---- 3. examples, dtypes, ragged tiles --------------------------------------------------------------------


@pytest.mark.parametrize("tile", [3, 4, 5])
def test_causal_1pass_ragged_tiles(tile):
    kern = check(EXAMPLES / "causal_1pass.ein", sizes=dict(b=1, h=1, p=7, m=11), params=dict(M0=tile))
    assert kern.plan.path == "fused" and held(kern)


@pytest.mark.parametrize("skip", [True, False])
def test_sliding_window_skip_tiles(skip):
    kern = check(EXAMPLES / "sliding_window.ein", sizes=dict(b=1, h=1, p=11, m=11), tile=3, skip_tiles=skip)
    assert kern.plan.path == "fused" and held(kern)


def test_gqa_h_floordiv_r():
    kern = check(EXAMPLES / "gqa.ein", sizes=dict(b=1, h=4, g=2, p=5, m=9), tile=4)
    assert kern.plan.path == "fused" and held(kern)


def test_causal_1pass_without_skipping_tiles():
    kern = check(
        EXAMPLES / "causal_1pass.ein", sizes=dict(b=1, h=1, p=9, m=10), params=dict(M0=4), skip_tiles=False
    )
    assert held(kern)


@pytest.mark.parametrize("c, expect", [(30.0, True), (-30.0, False), (0.5, True)])
def test_softcap_factor_sign(c, expect):
    kern = check(
        EXAMPLES / "softcap.ein", sizes=dict(b=1, h=1, p=5, m=9), params=dict(C=c), tile=4, scale=2.0
    )
    assert held(kern) == expect


def test_gqa_three_query_heads_a_group():
    kern = check(EXAMPLES / "gqa.ein", sizes=dict(b=1, h=6, g=2, p=3, m=7), params=dict(R=3), tile=3)
    assert held(kern)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_causal(dtype):
    kern = check(EXAMPLES / "causal.ein", sizes=dict(b=1, h=1, p=6, m=10), tile=4, dtype=dtype)
    assert held(kern)


def test_float64_precision_hand_written():
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] / sqrt(E)", extra="")
    kern = tri(src, tile=4)
    assert held(kern)
    q, k, v = inputs(5, 10, seed=16)
    q = q * 30
    (got,) = run(kern, dtype=torch.float64, Q=q, K=k, V=v)
    S = q @ k.T / math.sqrt(3)
    close(got, attention(S, np.ones(S.shape, bool), v), 1e-10)


def test_fully_masked_rows_give_zero():
    """Keys after p + 2 only: rows p >= 8 of m = 10 have none (0); first tiles fully masked for late rows."""
    src = SOFTMAX.format(scores="Q[p, e] * K[m, e] * rsqrt(E)  where m > p + 2", extra="")
    kern = tri(src, tile=3)
    assert held(kern)
    q, k, v = inputs(11, 10, seed=17)
    (got,) = run(kern, Q=q, K=k, V=v)
    P, M = np.arange(11)[:, None], np.arange(10)[None, :]
    close(got, attention(qk(q, k), M > P + 2, v), 1e-4)
    assert np.all(got[7:] == 0)


# ---- 4. padding biases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [-math.inf, LOWEST32])
def test_padding_bias_added_to_scores(pad):
    src = SOFTMAX.format(scores="S0[m, p] + B[p, m]", extra=", B[p, m]")
    src = src.replace("QK[m, p] =", "S0[m, p] = Q[p, e] * K[m, e] * rsqrt(E)\nQK[m, p] =")
    kern = tri(src, tile=4)
    assert kern.plan.path == "fused" and not held(kern)
    q, k, v = inputs(4, 10, seed=18)
    b = np.zeros((4, 10))
    b[0, 3:] = pad  # padded keys
    b[1, :] = pad  # a fully padded row
    b[2, ::2] = pad
    (got,) = run(kern, Q=q, K=k, V=v, B=b)
    S = qk(q, k)
    if pad == -math.inf:
        # NumPy: a row of -inf scores is exp(-inf - -inf) = NaN
        want = numpy_backend(src)(Q=rounded(q, torch.float32), K=rounded(k, torch.float32), V=v, B=b)
        assert np.isnan(want[1]).all() and np.isnan(got[1]).all()
        keep = [0, 2, 3]
        close(got[keep], attention(S, b == 0, v)[keep], 1e-4)
    else:
        close(got[[0, 2, 3]], attention(S, b == 0, v)[[0, 2, 3]], 1e-4)
        close(got[1], v.mean(0), 1e-4)  # every score is the lowest float32: equal weights


# Fixed. Was: a padding bias inside a product with a positive factor is folded: raw (QK + B) is -3.4e38 on a
# fully
# padded row, its max times T * log2 e (1.3) overflows to -inf; as written (and in NumPy) the scores are
# -3.06e38, all equal: the mean of V. The kernel gives NaN.
def test_padding_bias_inside_a_scaled_product():
    src = """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
param  T = 0.9
output AV
S1[m, p] = Q[p, e] * K[m, e]
QK[m, p] = (S1[m, p] + B[p, m]) * T
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
AV[p, f] = SN[m, p] * V[m, f] / SD[p]
"""
    kern = tri(src, tile=4)
    assert kern.plan.path == "fused"
    q, k, v = inputs(3, 9, seed=19)
    b = np.zeros((3, 9))
    b[1, :] = LOWEST32
    b[2, 4:] = LOWEST32
    (got,) = run(kern, Q=q, K=k, V=v, B=b)
    S = rounded(q, torch.float32) @ rounded(k, torch.float32).T * 0.9
    close(got[[0, 2]], attention(S, b == 0, v)[[0, 2]], 1e-4)
    close(got[1], v.mean(0), 1e-4)


# ---- 5. large logits --------------------------------------------------------------------------------------

PLAIN = SOFTMAX.format(scores="Q[p, e] * K[m, e] * rsqrt(E)", extra="")


@pytest.mark.parametrize("big", [1e3, -1e3, 1e4, -1e4])
def test_large_logits_against_float64(big):
    """Logits near +-1e3..1e4 differing by a few units: float32 kernel against float64 softmax."""
    kern = tri(PLAIN, tile=4)
    assert held(kern)
    rng = np.random.default_rng(20)
    q = rng.standard_normal((5, 4))
    q[:, 0] = big / 2.0
    k = rng.standard_normal((11, 4))
    k[:, 0] = 4.0 + 0.001 * rng.standard_normal(11)
    v = rng.standard_normal((11, 3))
    q32, k32, v32 = (rounded(a, torch.float32) for a in (q, k, v))
    (got,) = run(kern, Q=q32, K=k32, V=v32)
    want = attention(q32 @ k32.T / 2.0, np.ones((5, 11), bool), v32)
    # float32 scores near 1e4 carry ~1e-3 absolute error before any exponential
    close(got, want, 2e-3 if abs(big) > 5e3 else 3e-4)


# Fixed. Was: at logits of a few 1e9 the rounding of max * log2 e (256 at 2**32) is the exponent of the row's
# largest score in exp2(fma(T, c, -RM')): exp2(~+-200) overflows or underflows, the row is NaN. As written
# (and the torch and NumPy backends) the largest score's exponent is exactly 0: the mean of V over the two
# largest keys.
def test_logits_of_5e9_stay_finite():
    kern = tri(PLAIN, tile=4)
    assert held(kern)
    q = np.array([[1.0]])
    k = np.array([[5e9], [1.0], [-1.0], [0.5], [5e9]])
    v = np.arange(10.0).reshape(5, 2)
    (got,) = run(kern, Q=q, K=k, V=v)
    close(got, [[4.0, 5.0]], 1e-4)


# ---- 6. int64 products in filters -------------------------------------------------------------------------

FILTERED = """
input  Q[p, e], K[m, e], V[m, f]
param  W = 1
param  D = 1
output AV
QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)  where {filt}
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
AV[p, f] = SN[m, p] * V[m, f] / SD[p]
"""

FILTERS = [
    # (filter, params, the mask in Python ints)
    ("m * W * W <= p * W * W", dict(W=2**20), lambda p, m, W, D: m * W * W <= p * W * W),
    ("m * W * W <= p * W * W", dict(W=2**16), lambda p, m, W, D: m <= p),
    ("m * W < p * W", dict(W=2**40), lambda p, m, W, D: m < p),
    ("m * W <= p * W + D", dict(W=2**31 - 1, D=2**31 + 5), lambda p, m, W, D: m * W <= p * W + D),
    ("m * W <= p * W", dict(W=2**23), lambda p, m, W, D: m <= p),
    ("(m - p) * W > -D", dict(W=2**22, D=3 * 2**22), lambda p, m, W, D: m - p > -3),
    ("(m - p) * W * W > 0 - 2 * W * W and m <= p", dict(W=2**16), lambda p, m, W, D: (m - p > -2) & (m <= p)),
    ("(p - m) * W * W >= 0", dict(W=2**16), lambda p, m, W, D: m <= p),
    ("(m * W * W) % 7 != 3", dict(W=2**16), lambda p, m, W, D: (m * 2**32) % 7 != 3),
    (
        "(m * W * W) % 5 == (p * W * W) % 5",
        dict(W=2**16),
        lambda p, m, W, D: (m * 2**32) % 5 == (p * 2**32) % 5,
    ),
    ("(p * W * W) // (W * W) >= m", dict(W=2**16), lambda p, m, W, D: m <= p),
    (
        "(m * W * W - D) // W < p * W",
        dict(W=2**16, D=2**33 + 3),
        lambda p, m, W, D: (m * W * W - D) // W < p * W,
    ),
    ("m * (W * W) <= p * (W * W)", dict(W=2**13), lambda p, m, W, D: m <= p),
    ("m + (W - W) <= p", dict(W=2**30), lambda p, m, W, D: m <= p),
    ("m < p + 2 * 3 - 5", {}, lambda p, m, W, D: m < p + 1),
    ("m * (0 - W) >= p * (0 - W)", dict(W=2**20), lambda p, m, W, D: m <= p),
    ("m * W * W * W <= D", dict(W=2**12, D=5 * 2**36), lambda p, m, W, D: m <= 5),
    ("m * W * W < p * W * W", dict(W=2**29), lambda p, m, W, D: m < p),  # 8 * 2**58: int64, no wrap
    ("m * W <= p * W", dict(W=2**56), lambda p, m, W, D: m <= p),
    # constant conditions, folded or not
    ("W * W != W * W or m <= p", dict(W=2**13), lambda p, m, W, D: m <= p),
    ("W * W == W * W and m <= p", dict(W=2**13), lambda p, m, W, D: m <= p),
    ("W * W > 5", dict(W=2), lambda p, m, W, D: False),  # every point absent: 0
    ("W - W == 0 and 2 * 3 == 6", dict(W=7), lambda p, m, W, D: True),
    ("m <= p and W * W * W > 0", dict(W=2**13), lambda p, m, W, D: m <= p),
]


@pytest.mark.parametrize("path", ["fused", "general"])
@pytest.mark.parametrize("filt, params, mask", FILTERS, ids=[f[0] for f in FILTERS])
def test_filter_products_past_int32(filt, params, mask, path):
    src = FILTERED.format(filt=filt)
    opts = {"path": "general"} if path == "general" else {"tile": 4}
    kern = tri(src, params=params, **opts)
    if path == "general":
        assert kern.plan.path == "general"
    P, M = 7, 9
    q, k, v = inputs(P, M, seed=21)
    (got,) = run(kern, Q=q, K=k, V=v)
    W, D = params.get("W", 1), params.get("D", 1)
    want_mask = np.array([[bool(mask(p, m, W, D)) for m in range(M)] for p in range(P)])
    close(got, attention(qk(q, k), want_mask, v), 1e-4)


# ---- 7. products and literals in index expressions --------------------------------------------------------

GATHER = """
input  Q[p, e], K[m, e], V[m, f]
param  W = 1
output AV
QK[m, p] = Q[p, e] * K[{idx}, e] * rsqrt(E)
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
AV[p, f] = SN[m, p] * V[{idx}, f] / SD[p]
"""

INDICES = [
    ("m + W - W", dict(W=2**30), lambda m, W, M: m),
    ("m + 2 * 3 - 6", {}, lambda m, W, M: m),
    ("m * (W - W + 1)", dict(W=5), lambda m, W, M: m),
    ("(M - 1 - m * W) // W", dict(W=2**20), lambda m, W, M: (M - 1 - m * W) // W),
    ("(m * W) // W", dict(W=2**28), lambda m, W, M: m),  # W an int64 literal
    ("m * (W * W) // (W * W)", dict(W=2**13), lambda m, W, M: m),  # W * W folded, int64
]

OVERFLOWING = [
    ("(m * W * W) // (W * W)", dict(W=2**16), lambda m, W, M: m),
    ("(m * W * W + 1) % M", dict(W=2**16), lambda m, W, M: (m * W * W + 1) % M),
]


def gather_case(idx, params, fn, path):
    src = GATHER.format(idx=idx)
    opts = {"path": "general"} if path == "general" else {}
    kern = tri(src, params=params, **opts)
    assert kern.plan.path == path
    P, M = 4, 9
    q, k, v = inputs(P, M, seed=22)
    (got,) = run(kern, Q=q, K=k, V=v)
    W = params.get("W", 1)
    ix = np.array([fn(m, W, M) for m in range(M)], dtype=object)
    ok = np.array([0 <= i < M for i in ix])
    gi = np.array([int(i) if 0 <= i < M else 0 for i in ix])
    S = qk(q, k[gi])
    close(got, attention(S, np.broadcast_to(ok, S.shape), v[gi]), 1e-4)


@pytest.mark.parametrize("path", ["fused", "general"])
@pytest.mark.parametrize("idx, params, fn", INDICES, ids=[i[0] for i in INDICES])
def test_index_products_and_literals(idx, params, fn, path):
    gather_case(idx, params, fn, path)


@pytest.mark.parametrize("idx, params, fn", OVERFLOWING, ids=[i[0] for i in OVERFLOWING])
def test_index_products_past_int32_on_the_general_path(idx, params, fn):
    gather_case(idx, params, fn, "general")


# Fixed. Was: on the fused path a product in an index expression stays int32: `(m * W * W) // (W * W)` with W
# = 2**16
# is `((m1 * 64 + offs_m0) * 65536) * 65536`, which wraps (m * 2**32 is 0 mod 2**32), so every key reads K[0]
# (or K[1] for the `%` form): every row is V[0] / V[1]. The general path and NumPy read K[m]. (Only filters'
# products are widened, docs/backends.md "Integer arithmetic".)
@pytest.mark.parametrize("idx, params, fn", OVERFLOWING, ids=[i[0] for i in OVERFLOWING])
def test_index_products_past_int32_on_the_fused_path(idx, params, fn):
    gather_case(idx, params, fn, "fused")
