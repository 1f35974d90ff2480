"""The fused kernel's second ``tl.dot`` (weights times values): a weight tile the kernel computes is rounded
to the values' dtype, so that a float16 or bfloat16 call multiplies on the tensor cores at their rate,
wherever the weights are provably within [-1, 1] (softmax's ``exp(x - max)``, ``sigmoid``, ``tanh``, ``clamp``
between such bounds); elsewhere (linear attention's raw scores) the values are widened to the compute dtype
instead (tests/test_review_s15_triton.py covers the overflow that rounding would cause).

Measured on an H200 (docs/benchmarks.md, session 19): sigmoid attention ran its weights dot in float32 (TF32)
after the overflow fix, 118-195 TFLOP/s; rounded, as here, it had run at 313-429.

Interpreter on CPU (CUDA where present), against NumPy formulas on the rounded inputs.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import einattn
from tests.triton_cases import DEVICE

SPEC = """
# 1-pass {name} attention over key tiles: a running sum of {fn}(scores) V
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 4
rank   M = M1 * M0
output O
S[b, h, 0, p, f]   = 0
BS[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e] * rsqrt(E)
W[b, h, m1, m0, p]  = {weights}
SV[b, h, m1, p, f]  = W[b, h, m1, m0, p] * V[b, h, m1 * M0 + m0, f]
S[b, h, m1 + 1, p, f] = S[b, h, m1, p, f] + SV[b, h, m1, p, f]
O[b, h, p, f] = S[b, h, M1, p, f]
"""

WEIGHTS = {
    "sigmoid": ("sigmoid(BS[b, h, m1, m0, p])", lambda s: 1 / (1 + np.exp(-s))),
    "tanh": ("tanh(BS[b, h, m1, m0, p])", np.tanh),
    "clamp": ("clamp(BS[b, h, m1, m0, p], -1, 0.5)", lambda s: np.clip(s, -1, 0.5)),
    "negated": ("-sigmoid(BS[b, h, m1, m0, p]) * 0.5", lambda s: -0.5 / (1 + np.exp(-s))),
}


def compile_spec(name: str):
    text = SPEC.format(name=name, fn=name, weights=WEIGHTS[name][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(text, backend="triton", path="fused")


def weights_dot(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if re.match(r"\s*t_SV = tl\.dot\(", line)]


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_bounded_weights_are_rounded_to_the_values_dtype(name):
    dots = weights_dot(compile_spec(name).source)
    assert dots, "no tl.dot for the weights"
    for d in dots:
        # the computed weights are cast to the loaded V's dtype; V itself is not widened to CD
        assert re.search(r"\.to\(t_V_\d+\.dtype\), t_V_\d+,", d), d
        assert ".to(CD)" not in d.split("),")[-2], d


def test_unbounded_weights_widen_the_values():
    text = SPEC.format(name="linear", fn="identity", weights="BS[b, h, m1, m0, p] * 2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = einattn.compile(text, backend="triton", path="fused").source
    dots = weights_dot(src)
    assert dots and all(re.search(r"t_V_\d+\.to\(CD\)", d) for d in dots), dots


def _rounded(a, dtype):
    return torch.as_tensor(a).to(dtype).double().numpy()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_rounded_weights_within_the_documented_tolerance(name, dtype):
    g = np.random.default_rng(1)
    Q, K, V = (g.standard_normal(s) for s in ((1, 2, 9, 5), (1, 2, 11, 5), (1, 2, 11, 3)))
    Qr, Kr, Vr = (_rounded(x, dtype) for x in (Q, K, V))
    s = np.einsum("bhpe,bhme->bhpm", Qr, Kr) / np.sqrt(5)
    want = np.einsum("bhpm,bhmf->bhpf", WEIGHTS[name][1](s), Vr)
    k = compile_spec(name)
    got = k(*(torch.as_tensor(x, device=DEVICE).to(dtype) for x in (Q, K, V)))
    assert got.dtype == dtype
    err = np.abs(got.double().cpu().numpy() - want).max() / max(1.0, np.abs(want).max())
    # float16 1e-2, bfloat16 5e-2, as tests/triton_cases.py: the weights' rounding is within them
    assert err <= (1e-2 if dtype == torch.float16 else 5e-2), err
