"""The fused kernel's running max held in the raw scores' units (``lowering/triton_raw_max.py``): which
cascades take it, what the kernel computes with it, and a filtered product's value at its removed points.

The kernels run under the interpreter (``tests/triton_cases.py``) against the NumPy reference and, for the
precision checks, against softmax attention written in float64 by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from triton_cases import DEVICE, EXAMPLES, check

import einattn

SOFTMAX = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]{extra}
output AV
QK[b, h, m, p] = {scores}
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


def spec(scores: str, extra: str = "") -> str:
    return SOFTMAX.format(scores=scores, extra=extra)


def held(kernel) -> bool:
    """Whether the kernel holds its running max in the raw units (the factor's variable, exp2 of the tile)."""
    return (
        "_log2 = " in kernel.source and "tl.exp2((t_BQK - t_RM_next[:, None]) * t_BQK_log2)" in kernel.source
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("attention_3pass", True),
        ("attention_1pass", True),
        ("causal", True),
        ("causal_1pass", True),
        ("gqa", True),
        ("sliding_window", True),
        # scores that are not a product with a scalar factor (a bias added): nothing to fold
        ("alibi", False),
        # softcapping: C * tanh(S / C) with C = 20 a positive param, folded: tanh's values times C log2 e
        ("softcap", True),
        # the final max is read as a value (a log-sum-exp output)
        ("lse", False),
    ],
)
def test_which_examples_hold_the_max_in_raw_units(name, expected):
    kernel = einattn.compile(EXAMPLES / f"{name}.ein", backend="triton")
    assert kernel.plan.path == "fused"
    assert ("_log2 = " in kernel.source) == expected
    assert ("_exp((t_RM - t_RM_next))" in kernel.source) != expected  # the correction's exponent


@pytest.mark.parametrize(
    "scores, params, folded",
    [
        ("Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)", {}, True),
        ("Q[b, h, p, e] * K[b, h, m, e] / sqrt(E)", {}, True),
        ("Q[b, h, p, e] * K[b, h, m, e] / (T * sqrt(E))", {"T": 0.5}, True),
        ("Q[b, h, p, e] * K[b, h, m, e] * T", {"T": 3.0}, True),
        # a negative factor turns max into min: not folded, and the values stay right
        ("Q[b, h, p, e] * K[b, h, m, e] * T", {"T": -0.7}, False),
        # sqrt(E) as a factor is 0 for an empty head dimension: -inf * 0 would be NaN
        ("Q[b, h, p, e] * K[b, h, m, e] * sqrt(E)", {}, False),
        ("Q[b, h, p, e] * K[b, h, m, e]", {}, False),  # no factor to fold
    ],
)
def test_folded_factors_and_values(scores, params, folded):
    extra = "\nparam  T = 1" if "T" in scores else ""
    kern = check(spec(scores, extra), params=params, sizes=dict(p=9, m=21), tile=8)
    assert kern.plan.path == "fused"
    assert held(kern) == folded


def test_a_scale_read_from_an_input_is_not_folded():
    """A temperature passed as a tensor has no sign known at compile time."""
    kern = check(spec("Q[b, h, p, e] * K[b, h, m, e] * T[h]", ", T[h]"), sizes=dict(m=21), tile=8)
    assert not held(kern)


def test_masked_rows_and_tiles_with_the_max_in_raw_units():
    """Causal and windowed scores in raw units: rows with no key give 0, tiles before the window are
    skipped, and the -inf filled scores stay -inf."""
    window = spec("Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where p - 3 < m - 2 <= p")
    for sizes in (dict(p=13, m=13), dict(p=5, m=17), dict(p=17, m=4)):
        kern = check(window, sizes=sizes, tile=4)
        assert held(kern)


def reference_attention(q, k, v, scale):
    s = np.einsum("pe,me->pm", q, k) * scale
    w = np.exp(s - s.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)) @ v


def test_large_logits_keep_their_precision():
    """Logits near 1e3 that differ by a few units: the subtraction of the raw max is exact near the max,
    then one product by the scale and log2 e. The kernel's float32 result is compared with float64 softmax
    written by hand."""
    spec2 = """
input  Q[p, e], K[m, e], V[m, f]
output AV
QK[m, p] = Q[p, e] * K[m, e] * rsqrt(E)
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
AV[p, f] = SN[m, p] * V[m, f] / SD[p]
"""
    kern = einattn.compile(spec2, backend="triton", tile=4)
    assert held(kern)
    rng = np.random.default_rng(3)
    p, m, e = 6, 23, 4
    q = rng.standard_normal((p, e))
    q[:, 0] = 1000.0  # a shared large part of every score, and differences of a few units
    k = rng.standard_normal((m, e))
    k[:, 0] = 2.0 + 0.002 * rng.standard_normal(m)
    v = rng.standard_normal((m, 3))
    q32, k32, v32 = (torch.tensor(a, dtype=torch.float32, device=DEVICE) for a in (q, k, v))
    got = kern(Q=q32, K=k32, V=v32).double().cpu().numpy()
    # the reference on the float32 inputs: the comparison measures the kernel, not the inputs' rounding
    want = reference_attention(*(t.double().cpu().numpy() for t in (q32, k32, v32)), 1 / math.sqrt(e))
    assert np.abs(got - want).max() < 2e-4 * np.abs(want).max()


def test_a_filtered_product_keeps_its_values_at_removed_points():
    """A product over `e` removed by a filter along the rows and keys (`m <= p`) holds the product's value
    at the removed points, not 0: a sum over the keys of it must select (the kernel summed the values
    the filter removes: 2.4 off)."""
    src = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 4
rank   M = M1 * M0
output O
BK[m1, m0, e] = K[m1 * M0 + m0, e]
BV[m1, m0, f] = V[m1 * M0 + m0, f]
R[0, p, f] = 0
A[m1, m0, p] = Q[p, e] * BK[m1, m0, e]  where m1 * M0 + m0 <= p
L[m1, p, f] = A[m1, m0, p] * BV[m1, m0, f]
R[m1 + 1, p, f] = R[m1, p, f] + (L[m1, p, f] ?? 0)
S[m1, p] = A[m1, m0, p]
T[0, p] = 0
T[m1 + 1, p] = T[m1, p] + (S[m1, p] ?? 0)
O[p, f] = R[M1, p, f] + T[M1, p]
"""
    kern = check(src, sizes=dict(p=10, m=10, e=3, f=2))
    assert kern.plan.path == "fused"
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((10, 3)), rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    a = np.where(np.arange(10)[None, :] <= np.arange(10)[:, None], q @ k.T, 0.0)  # [p, m]
    want = a @ v + a.sum(axis=1, keepdims=True)
    got = kern(*(torch.tensor(x, dtype=torch.float64, device=DEVICE) for x in (q, k, v)))
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-10, atol=1e-10)
