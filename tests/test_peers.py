"""einattn against the implementations users have today: PyTorch's ``scaled_dot_product_attention`` (forward
and the gradients of Q, K and V) and FlexAttention (``score_mod``/``mask_mod``, forward: it has no backward on
CPU), on the example specs, compiled with the torch backend in float64 and with the Triton backend (under the
interpreter without a GPU) in float32.

The peers are independent of einattn: nothing here goes through the NumPy reference.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import EXAMPLES
from triton_cases import DEVICE

import einattn

ROOT = EXAMPLES.parent
B, H, E, FEAT = 2, 4, 8, 5


def qkv(p: int, m: int, g: int = H, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, p, E, generator=gen, dtype=dtype)
    k = torch.randn(B, g, m, E, generator=gen, dtype=dtype)
    v = torch.randn(B, g, m, FEAT, generator=gen, dtype=dtype)
    return q, k, v


def window_mask(p: int, m: int, w: int) -> torch.Tensor:
    i, j = torch.arange(p)[:, None], torch.arange(m)[None, :]
    return (j <= i) & (j > i - w)


def alibi_bias(slope: torch.Tensor, p: int, m: int) -> torch.Tensor:
    """ALiBi's additive bias slope[h] * (m - p) under a causal mask: -inf after the query."""
    i, j = torch.arange(p)[:, None], torch.arange(m)[None, :]
    bias = slope[:, None, None] * (j - i).to(slope.dtype)
    return bias.masked_fill(j > i, -math.inf)


# spec, params, (p, m, groups), the SDPA call on (q, k, v, extra inputs)
SDPA_CASES = {
    "attention_3pass": (
        "examples/attention_3pass.ein",
        {},
        (7, 11, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v),
    ),
    "attention_1pass_ragged": (
        "examples/attention_1pass.ein",
        {"M0": 4},
        (7, 11, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v),
    ),
    "causal": (
        "examples/causal.ein",
        {},
        (9, 9, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    ),
    "causal_1pass": (
        "examples/causal_1pass.ein",
        {"M0": 4},
        (10, 10, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    ),
    "gqa": (
        "examples/gqa.ein",
        {"R": 2},
        (7, 9, H // 2),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
    ),
    "sliding_window": (
        "examples/sliding_window.ein",
        {"W": 3},
        (9, 9, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(9, 9, 3)),
    ),
    "alibi": (
        "examples/alibi.ein",
        {},
        (8, 8, H),
        lambda q, k, v, x: F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(x["slope"], 8, 8)),
    ),
}


def extra_inputs(name: str, dtype) -> dict:
    if name == "alibi":
        return {"slope": torch.tensor([2.0**-k for k in range(1, H + 1)], dtype=dtype)}
    return {}


@pytest.mark.parametrize("name", list(SDPA_CASES))
def test_torch_backend_equals_sdpa_forward_and_backward(name):
    spec, params, (p, m, g), sdpa = SDPA_CASES[name]
    kern = einattn.compile(ROOT / spec, backend="torch", params=params)
    q, k, v = (t.requires_grad_() for t in qkv(p, m, g))
    x = extra_inputs(name, torch.float64)
    grad_out = torch.randn(B, H, p, FEAT, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = kern(q, k, v, *x.values())
    want = sdpa(q, k, v, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got_grads = torch.autograd.grad(got, (q, k, v), grad_out)
    want_grads = torch.autograd.grad(want, (q, k, v), grad_out)
    for a, b, what in zip(got_grads, want_grads, "QKV"):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda s, w=what: f"d{w}: {s}")


def flex(q, k, v, score_mod=None, mask_mod=None):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block = None
    if mask_mod is not None:
        block = create_block_mask(mask_mod, None, None, q.shape[2], k.shape[2], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # "called without torch.compile": the unfused reference is what we want
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block)


def _softcap(s, b, h, qi, ki):
    return 30.0 * torch.tanh(s / 30.0)


def _causal(b, h, qi, ki):
    return ki <= qi


def _window3(b, h, qi, ki):
    return (ki <= qi) & (ki > qi - 3)


SLOPES = torch.tensor([2.0**-k for k in range(1, H + 1)], dtype=torch.float64)


def _alibi(s, b, h, qi, ki):
    return s + SLOPES[h] * (ki - qi)


FLEX_CASES = {
    "softcap": ("examples/softcap.ein", {}, dict(score_mod=_softcap)),
    "causal_1pass": ("examples/causal_1pass.ein", {"M0": 3}, dict(mask_mod=_causal)),
    "sliding_window": ("examples/sliding_window.ein", {"W": 3}, dict(mask_mod=_window3)),
    "alibi": ("examples/alibi.ein", {}, dict(score_mod=_alibi, mask_mod=_causal)),
}


@pytest.mark.parametrize("name", list(FLEX_CASES))
def test_torch_backend_equals_flex_attention(name):
    spec, params, mods = FLEX_CASES[name]
    kern = einattn.compile(ROOT / spec, backend="torch", params=params)
    q, k, v = qkv(9, 9)
    x = {"slope": SLOPES} if name == "alibi" else {}
    torch.testing.assert_close(kern(q, k, v, *x.values()), flex(q, k, v, **mods), rtol=1e-10, atol=1e-12)


TRITON_CASES = ["attention_3pass", "attention_1pass_ragged", "causal", "gqa", "sliding_window", "alibi"]


@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_backend_equals_sdpa(name):
    spec, params, (p, m, g), sdpa = SDPA_CASES[name]
    kern = einattn.compile(ROOT / spec, backend="triton", params=params)
    q, k, v = (t.to(DEVICE) for t in qkv(p, m, g, dtype=torch.float32))
    x = {n: t.float().to(DEVICE) for n, t in extra_inputs(name, torch.float64).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the interpreter's numpy: exp(-inf)
        got = kern(q, k, v, *x.values())
    want = sdpa(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), {n: t.double().cpu() for n, t in x.items()}
    )
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-5)
