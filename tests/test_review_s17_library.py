"""Reviewer (session 17) of the torch backend's library kernels (``lowering/torch_library.py``): specs where
``program_library`` crashed or differed from the spec's semantics (the NumPy backend in float64 is the
oracle; ``library=False`` is compared too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import einattn

HEAD = "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]\noutput O\n"
BODY = """
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] {scale}{where}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""


def spec(where: str = "", params: str = "", scale: str = "* rsqrt(E)") -> str:
    return HEAD + params + BODY.format(scale=scale, where=f"  where {where}" if where else "")


def qkv(b=1, h=2, p=7, m=9, e=3, f=2, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(grad)
        for s in ((b, h, p, e), (b, h, m, e), (b, h, m, f))
    )


def oracle(text, q, k, v):
    kern = einattn.compile(einattn.parse(text), backend="numpy")
    return kern(Q=q.detach().numpy(), K=k.detach().numpy(), V=v.detach().numpy())


def assert_spec(got, want):
    got = got.detach().numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-10, atol=1e-12)


def both(text, **options):
    """The kernel with the library (which must be used) and without it."""
    prog = einattn.parse(text)
    lib = einattn.compile(prog, backend="torch", **options)
    assert "def program_library(" in lib.source
    return lib, einattn.compile(prog, backend="torch", library=False, **options)


@pytest.mark.parametrize(
    "where", ["abs(W - 10) > 2 and m != p", "abs(M - P) >= 0 and m <= p + 1", "m != p and not (W > 5)"]
)
def test_filters_with_a_part_that_reads_no_coordinate(where):
    """A filter's ``abs`` or ``not`` of params and sizes alone: the mask code applied ``torch.abs`` to a
    Python int (TypeError) and ``~`` to a Python bool (an int, -1: an int64 mask SDPA rejects)."""
    text = spec(where, "param W = 4\n")
    q, k, v = qkv()
    want = oracle(text, q, k, v)
    for kern in both(text, row_block=3):
        assert_spec(kern(Q=q, K=k, V=v), want)


@pytest.mark.parametrize(
    "scale,params",
    [
        ("/ T", "param T = 0.0\n"),
        ("/ (T - T)", "param T = 1.0\n"),
        ("* exp(T)", "param T = 1000.0\n"),
        ("* exp2(T)", "param T = 5000.0\n"),
        ("* log(T)", "param T = 0.0\n"),
    ],
)
@pytest.mark.parametrize("where", ["", "m <= p", "m < p"])
def test_a_scale_python_cannot_compute(scale, params, where):
    """The scale as Python floats raised (ZeroDivisionError, OverflowError, ValueError) where the spec's
    arithmetic gives an infinity or NaN; now it is NaN, and the guard runs the generated cascade."""
    text = spec(where, params, scale)
    q, k, v = qkv()
    want = oracle(text, q, k, v)
    for kern in both(text):
        assert_spec(kern(Q=q, K=k, V=v), want)


@pytest.mark.parametrize("where", ["m >= p + 100", "m > M"])
def test_gradients_where_no_query_sees_any_key(where):
    """Every block of rows sees no key: the output was zeros without a graph, and the backward of
    ``_SDPAGraph`` failed (``element 0 of tensors does not require grad``). The gradients are 0, as the
    generated cascade's."""
    text = spec(where)
    lib, gen = both(text, row_block=2)
    q, k, v = qkv(p=3, m=4, grad=True)
    out = lib(Q=q, K=k, V=v)
    assert_spec(out, oracle(text, q, k, v))
    got = torch.autograd.grad(out.sum(), (q, k, v))
    want = torch.autograd.grad(gen(Q=q, K=k, V=v).sum(), (q, k, v))
    for a, b in zip(got, want):
        assert not a.any()
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert torch.autograd.gradcheck(lambda *a: lib(*a), (q, k, v))


def test_a_scale_python_cannot_compute_under_torch_compile():
    """The same under ``torch.compile(fullgraph=True, dynamic=True)``: the exception was traced as an
    unsupported one; the ``try`` is traced, and SDPA gets a NaN scale (rows with no key stay 0)."""
    text = spec("m < p", "param T = 0.0\n", "/ T")
    lib, _ = both(text, row_block=3)
    q, k, v = qkv()
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b, c: lib(Q=a, K=b, V=c), fullgraph=True, dynamic=True, backend="aot_eager")
    assert_spec(fn(q, k, v), oracle(text, q, k, v))
    torch._dynamo.reset()


@pytest.mark.parametrize("where", ["", "m <= p", "m != p"])
def test_operands_that_overflow_once_scaled_run_the_cascade(where):
    """Scores of moderate size from a huge Q, a tiny K and a large scale: the bound on the scores held, but
    SDPA's math kernel (recomputed by a backward that records a graph) scales Q by sqrt(scale) first, which
    overflowed (1e304 * 1e5): NaN gradients where the cascade's are finite. Such operands now run the
    cascade (the gradient of K, about T * Q, overflows in both: the comparison is of the finite ones)."""
    text = spec(where, "param T = 1e10\n", "* T")
    lib, gen = both(text, row_block=2)
    q, k, v = qkv(b=1, h=1, p=4, m=5, e=2, f=2, seed=3)
    q, k, v = (x.requires_grad_() for x in (q * 1e304, k * 1e-314, v))
    w = torch.randn(1, 1, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = lib(Q=q, K=k, V=v)
    assert_spec(out, oracle(text, q, k, v))
    got = torch.autograd.grad((out * w).sum(), (q, k, v), create_graph=True)
    want = torch.autograd.grad((gen(Q=q, K=k, V=v) * w).sum(), (q, k, v), create_graph=True)
    for a, b in zip(got, want):
        a, b = a.detach().numpy(), b.detach().numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert not np.isnan(a[0]).all()
        np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-9, atol=0)
