"""Gradients of the torch backend: torch.autograd.gradcheck in float64 on small sizes for the main specs
(filters, iterative ranks and `??` included), every float input differentiable, and no NaN from masked
positions, fully masked rows or extreme logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from torch_helpers import as_tuple, inputs, offset_qkv, sizes, to_torch

import einattn

SMALL = {"b": 1, "h": 2, "p": 4, "m": 5, "e": 3, "f": 2}

GRADCHECK = [
    ("attention_3pass", {}),
    ("causal", {}),  # a filter
    ("sliding_window", {"W": 2}),
    ("alibi", {}),  # slope[h]
    ("sigmoid", {}),  # a scalar input
    ("gqa", {}),  # a gather
    ("linear_causal", {}),  # a filter over a reduced rank
    ("lse", {}),  # two outputs
    ("attention_1pass", {"M0": 2}),  # an iterative rank, a ragged last tile
    ("causal_1pass", {"M0": 2}),  # an iterative rank, `??`, skipped tiles
    ("variants/05_softmax_sink", {}),
    ("variants/14_splitk_decode", {}),
]


def differentiable(prog, x):
    return {n: v for n, v in to_torch(prog, x, requires_grad=True).items() if v.is_floating_point()}


@pytest.mark.parametrize(("name", "params"), GRADCHECK, ids=[g[0] for g in GRADCHECK])
def test_gradcheck(name, params):
    prog = einattn.load(EXAMPLES / f"{name}.ein").with_params(params)
    kern = einattn.compile(prog, backend="torch")
    x = inputs(prog, sizes(prog, SMALL), seed=1)
    args = to_torch(prog, x)
    leaves = differentiable(prog, x)
    names = list(leaves)

    def fn(*values):
        return kern(**(args | dict(zip(names, values))))

    assert torch.autograd.gradcheck(fn, tuple(leaves.values()), atol=1e-7)


def grads(prog, x, **options):
    kern = einattn.compile(prog, backend="torch", **options)
    args = to_torch(prog, x)
    leaves = differentiable(prog, x)
    out = as_tuple(kern(**(args | leaves)))
    sum(o.sum() for o in out).backward()
    return {n: v.grad for n, v in leaves.items()}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("causal", {}),
        ("causal_1pass", {"M0": 3}),
        ("attention_1pass", {"M0": 3}),
        ("sliding_window", {"W": 2}),
    ],
)
def test_no_nan_gradients_at_extreme_logits(name, params):
    prog = einattn.load(EXAMPLES / f"{name}.ein").with_params(params)
    x = offset_qkv(np.random.default_rng(0), B=1, H=2, P=8, M=8, F=3)
    for n, g in grads(prog, x).items():
        assert g is not None and torch.isfinite(g).all(), n


def test_no_nan_gradients_for_fully_masked_rows():
    prog = einattn.load(EXAMPLES / "variants" / "01_mha_causal_cross.ein")  # rows p < P - M see no key
    x = inputs(prog, sizes(prog, {"p": 7, "m": 4}))
    g = grads(prog, x)
    assert all(torch.isfinite(v).all() for v in g.values())
    assert torch.all(g["Q"][:, :, :3] == 0)  # a row that sees nothing has no gradient


def test_gradients_equal_with_and_without_skipping():
    prog = einattn.load(EXAMPLES / "causal_1pass.ein").with_params({"M0": 2})
    x = inputs(prog, sizes(prog, {"p": 9, "m": 9}))
    a, b = grads(prog, x), grads(prog, x, skip_tiles=False)
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-12), n


def test_gradients_match_a_hand_written_reference():
    prog = einattn.load(EXAMPLES / "alibi.ein")
    x = inputs(prog, sizes(prog, {"p": 6, "m": 6}))
    got = grads(prog, x)
    t = {n: torch.tensor(v, requires_grad=True) for n, v in x.items()}
    q, k, v, slope = t["Q"], t["K"], t["V"], t["slope"]
    s = q @ k.transpose(-1, -2) / 2.0 + slope[:, None, None] * (
        torch.arange(6.0)[None] - torch.arange(6.0)[:, None]
    )
    s = s.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), -torch.inf)
    (torch.softmax(s, -1) @ v).sum().backward()
    for n in got:
        assert torch.allclose(got[n], t[n].grad, atol=1e-10), n


@pytest.mark.parametrize("name", ["attention_1pass", "causal_1pass", "causal"])
def test_float32_gradients_on_cpu_match_sdpa(name):
    """float32 on the CPU computes exp as exp2(x * log2 e) with exp's own derivative (`_Exp2E`): the
    gradients equal those of softmax attention written in torch, and so do second derivatives
    (`create_graph=True`, a gradient penalty)."""
    params = {"M0": 4} if "1pass" in name else {}
    kern = einattn.compile(EXAMPLES / f"{name}.ein", backend="torch", params=params, tile=4, row_block=8)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 19, 5, generator=g, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 2, 19, 5, generator=g)

    def sdpa(q, k, v):  # SDPA's math, by hand (its CPU kernel has no second derivative)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if name != "attention_1pass":
            s = s.masked_fill(torch.ones(19, 19, dtype=torch.bool).triu(1), -math.inf)
        return torch.softmax(s, -1) @ v

    def derivatives(fn):
        first = torch.autograd.grad(fn(q, k, v), (q, k, v), grad)
        (dq,) = torch.autograd.grad(fn(q, k, v), (q,), grad, create_graph=True)
        return first + torch.autograd.grad(dq.square().sum(), (q, k, v))

    got, want = derivatives(lambda q, k, v: kern(Q=q, K=k, V=v)), derivatives(sdpa)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
