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


def _causal_inputs(n=10, requires_grad=True):
    rng = np.random.default_rng(0)
    return [torch.tensor(rng.standard_normal((1, 2, n, 4)), requires_grad=requires_grad) for _ in range(3)]


@pytest.mark.parametrize("spec", ["causal.ein", "causal_1pass.ein"])
def test_an_input_modified_after_the_forward_pass_is_an_error_in_backward(spec):
    """The backward pass recomputes each block of rows from the inputs (recompute=True, the default): an
    input changed in place in between gave the gradient of the new values, silently; it is autograd's usual
    error."""
    params = {"M0": 4} if "1pass" in spec else {}
    kern = einattn.compile(EXAMPLES / spec, backend="torch", params=params)
    for which in range(3):
        inputs = _causal_inputs()
        out = kern(Q=inputs[0], K=inputs[1], V=inputs[2])
        with torch.no_grad():
            inputs[which].mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
    q, k, v = _causal_inputs()  # unchanged inputs: the gradient flows
    out = einattn.compile(EXAMPLES / spec, backend="torch")(Q=q, K=k, V=v)
    out.sum().backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))


def test_an_output_that_depends_on_no_input_still_takes_a_gradient():
    """With no key (M = 0) the loop has no step and the output is the initial state's quotient: it is
    joined to the inputs' graph with zero gradients, as the same spec rewritten from its natural form is."""
    kern = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="torch")
    q, k, v = (torch.randn(1, 2, 0, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = kern(Q=q, K=k, V=v)
    assert out.requires_grad and out.shape == (1, 2, 0, 4)
    out.sum().backward()
    assert all(x.grad is not None and x.grad.shape == x.shape for x in (q, k, v))
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 2, 0, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = einattn.compile(EXAMPLES / "attention_1pass.ein", backend="torch")(Q=q, K=k, V=v)
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.nan_to_num().sum(), (q,))
    assert torch.equal(grad, torch.zeros_like(q))


def test_function_transforms_are_refused_with_a_clear_error():
    """torch.func (grad, vmap, jvp) and forward-mode AD meet the kernel's in-place and out= paths and its
    checkpoints: an EinError that says what to use instead, not a failure deep inside."""
    kern = einattn.compile(EXAMPLES / "causal.ein", backend="torch")
    q, k, v = _causal_inputs(requires_grad=False)
    with pytest.raises(einattn.EinError, match=r"torch\.func transforms"):
        torch.func.grad(lambda x: kern(Q=x, K=k, V=v).sum())(q)
    with pytest.raises(einattn.EinError, match=r"torch\.func transforms"):
        torch.func.vmap(lambda x: kern(Q=x, K=k, V=v))(q[None])
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level(), pytest.raises(einattn.EinError, match="forward-mode AD"):
        kern(Q=fwad.make_dual(q, torch.ones_like(q)), K=k, V=v)


def test_autocast_does_not_change_the_kernel_s_precision():
    """Under torch.autocast the matmuls recorded for a gradient were cast to bfloat16 and the others were
    not: two answers for one kernel and one input. The kernel computes in its inputs' precision."""
    kern = einattn.compile(EXAMPLES / "attention_3pass.ein", backend="torch")
    q, k, v = (x.detach().float() for x in _causal_inputs(n=33))
    want = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            a = kern(Q=q, K=k, V=v)
        b = kern(Q=q.clone().requires_grad_(True), K=k, V=v)
    assert a.dtype == b.dtype == torch.float32
    assert (a.double() - want).abs().max() < 1e-5 and (b.detach().double() - want).abs().max() < 1e-5


FLOORED = """input  Q[p, e], K[m, e], V[m, f], FL, U
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
C[p]     = max(GM[p], FL)
EX[m, p] = exp(S[m, p] - C[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
"""


@pytest.mark.filterwarnings("ignore::einattn.EinWarning")  # (`U` is never used)
def test_inputs_that_only_stabilize_get_zero_gradients():
    """`FL` floors the max, a stabilizer (computed detached), and `U` is unused: both reach no output, and
    get zero gradients rather than none, so `torch.autograd.grad` over every input works (a reviewer's
    case: it raised "One of the differentiated Tensors appears to not have been used in the graph")."""
    k = einattn.compile(FLOORED, backend="torch")
    assert "_joined(" in k.source
    gen = torch.Generator().manual_seed(0)
    shapes = {"Q": (3, 2), "K": (5, 2), "V": (5, 2), "FL": (), "U": ()}
    x = {n: torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for n, s in shapes.items()}
    grads = torch.autograd.grad(k(**x).sum(), list(x.values()))
    assert float(grads[3]) == 0.0 and float(grads[4]) == 0.0
    q, kk, v = (x[n].detach().requires_grad_() for n in ("Q", "K", "V"))
    (torch.softmax(q @ kk.T, -1) @ v).sum().backward()  # the floor changes no value: plain softmax
    for got, want in zip(grads[:3], (q.grad, kk.grad, v.grad)):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda *a: k(*a), tuple(x.values()))
