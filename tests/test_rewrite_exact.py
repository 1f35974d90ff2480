"""A running max whose value an output reads (``einattn/rewrite/exact.py``): an exact copy for the output,
the running max floored, the sums marked NaN where the row's max is not finite. Every backend against the
NumPy reference as written, with a padding bias of ``-inf`` over the first tile, rows of ``-inf`` only and a
row with a ``+inf`` score; gradients against the torch backend as written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from triton_cases import DEVICE  # (sets TRITON_INTERPRET=1 without a GPU, before triton is imported)

import einattn
from einattn import syntax as S
from einattn.rewrite import auto_rewrite
from einattn.stabilizers import floored, stabilizers

SPEC = """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O, GM, SD
QK[m, p] = Q[p, e] * K[m, e]
S[m, p]  = QK[m, p] + B[p, m]
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
SD[p]    = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / SD[p]
"""


def inputs():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((5, 2)), rng.standard_normal((7, 2)), rng.standard_normal((7, 2))
    b = np.zeros((5, 7))
    b[0, :4] = -np.inf  # the whole first tile (3 keys) and one more: -inf values, finite later
    b[2, :] = -np.inf  # every score -inf: the spec's exp(-inf - -inf) is NaN
    b[3, 5] = np.inf  # a +inf score: NaN too
    return dict(Q=q, K=k, V=v, B=b)


def same(got, want, tol):
    for g, w in zip(got, want):
        g = np.asarray(g.detach().cpu().double().numpy() if isinstance(g, torch.Tensor) else g, dtype=float)
        assert np.array_equal(np.isnan(g), np.isnan(w))
        assert np.array_equal(np.isinf(g), np.isinf(w)) and np.array_equal(g[np.isinf(w)], w[np.isinf(w)])
        ok = np.isfinite(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=tol, atol=tol)


def test_the_rewrite_reads_the_max_from_an_exact_copy():
    prog = einattn.parse(SPEC)
    assert not stabilizers(prog)
    rewritten, _ = auto_rewrite(prog, tile=3)
    defs = {e.tensor: e for e in rewritten.einsums if e.kind == "plain"}
    gm = defs["GM"].expr  # GM = XRM[M1, p]
    assert isinstance(gm, S.Read) and gm.tensor == "XRM" and gm.indices[0] == S.Size("m1")
    assert "RM" in floored(rewritten) and "XRM" not in floored(rewritten)
    assert any(r.tensor == "XRM" for r in defs["SD"].reads())  # the NaN mark of the sum


@pytest.mark.parametrize(
    "backend, options",
    [
        ("numpy", dict(passes="auto", tile=3)),
        ("torch", dict(tile=3, row_block=3)),
        ("torch", dict(tile=3, row_block=0)),
        ("torch", dict(tile=3)),
        ("triton", dict(tile=3)),
    ],
)
def test_first_tile_of_minus_inf_with_the_max_and_denominator_as_outputs(backend, options):
    x = inputs()
    want = einattn.compile(SPEC, backend="numpy")(**x)
    kern = einattn.compile(SPEC, backend=backend, **options)
    if backend == "numpy":
        got = kern(**x)
    else:
        dtype, device = (torch.float64, "cpu") if backend == "torch" else (torch.float32, DEVICE)
        got = kern(**{n: torch.tensor(a, dtype=dtype, device=device) for n, a in x.items()})
    assert np.isfinite(want[0][0]).all()  # row 0 is finite in the spec (it was NaN with passes="auto")
    same(got, want, 1e-10 if backend != "triton" else 1e-5)


def test_gradients_through_the_max_of_a_denominator_output():
    """SD = sum exp(S - max S) depends on the max: the floored running max keeps its gradient (torch),
    so the gradients equal the spec's as written."""
    rng = np.random.default_rng(1)
    xs = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in ((4, 2), (7, 2), (7, 2))]
    b = torch.zeros(4, 7, dtype=torch.float64)
    b[0, :4] = -torch.inf
    grads = []
    for passes in ("auto", "as-written"):
        kern = einattn.compile(SPEC, backend="torch", passes=passes, tile=3)
        o, gm, sd = kern(*xs, b)
        grads.append(torch.autograd.grad((o.sum() + gm.sum() + sd.sum()), xs))
    for g_auto, g_written in zip(*grads):
        torch.testing.assert_close(g_auto, g_written, rtol=1e-10, atol=1e-12)
