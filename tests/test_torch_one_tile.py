"""The torch backend runs the spec as written where the rewrite's streamed ranks fit in one tile.

The rewrite (``passes="auto"``) streams a rank over tiles of ``tile`` keys; a call whose keys all fit in one
tile has nothing to stream, and the loop's bookkeeping cost 5-10x the cascade as written at 8-128 keys
(docs/benchmarks.md, session 19). ``TorchKernel.run`` and the standalone module's ``forward`` then run the
cascade as written (memory: one tile's, as the loop's). A tile the spec writes itself (``param M0``) is the
spec's own and is never bypassed. References: NumPy formulas written here.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from einattn.lowering.torch_backend import standalone_source
from test_torch_integration import run_python

import einattn

SOFTCAP = EXAMPLES / "softcap.ein"


def softcap_reference(q, k, v, cap):
    s = np.einsum("bhpe,bhme->bhpm", q, k) / np.sqrt(q.shape[-1])
    s = cap * np.tanh(s / cap)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhpm,bhmf->bhpf", w / w.sum(-1, keepdims=True), v)


def qkv(p, m, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((1, 2, p, 5)), g.standard_normal((1, 2, m, 5)), g.standard_normal((1, 2, m, 3))


def counted(kernel):
    """The list that counts the runs of ``kernel``'s as-written kernel (its ``_execute``)."""
    inner = kernel.as_written()
    calls = []
    run = inner._execute

    def counting(*args):
        calls.append(1)
        return run(*args)

    inner._execute = counting
    return calls


@pytest.mark.parametrize("m", [1, 7, 16, 17, 40])
def test_short_and_long_calls_against_numpy(m):
    kern = einattn.compile(SOFTCAP, backend="torch", params={"C": 5.0}, tile=16, library=False)
    assert kern.program != kern.written  # the rewrite's 1-pass form
    calls = counted(kern)
    q, k, v = qkv(6, m)
    got = kern(*(torch.as_tensor(x) for x in (q, k, v)))
    np.testing.assert_allclose(got.numpy(), softcap_reference(q, k, v, 5.0), rtol=1e-10, atol=1e-12)
    assert len(calls) == (1 if m <= 16 else 0)  # the written cascade at one tile, the loop beyond it


def test_the_streamed_rank_and_its_tile():
    kern = einattn.compile(SOFTCAP, backend="torch", params={"C": 5.0}, tile=16)
    assert kern._short == (("m", 16),)
    own = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="torch", params={"M0": 4})
    assert own._short == ()  # the spec's own tile: always its loop
    calls = counted(own) if own.written is not None else []
    q, k, v = qkv(3, 3)
    own(*(torch.as_tensor(x) for x in (q, k, v)))
    assert calls == []
    written = einattn.compile(SOFTCAP, backend="torch", params={"C": 5.0}, passes="as-written")
    assert written._short == ()


def test_gradients_at_one_tile_equal_the_loops():
    """Below the tile and above it the gradients are those of the same function (autograd of plain torch)."""
    kern = einattn.compile(SOFTCAP, backend="torch", params={"C": 5.0}, tile=8, library=False)
    for m in (5, 13):
        x = [torch.as_tensor(a).requires_grad_() for a in qkv(4, m, seed=m)]
        got = torch.autograd.grad(kern(*x).square().sum(), x)
        q, k, v = x
        s = 5.0 * torch.tanh(q @ k.transpose(-1, -2) / np.sqrt(5) / 5.0)
        want = torch.autograd.grad((torch.softmax(s, -1) @ v).square().sum(), x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_standalone_module_dispatches_as_the_kernel(tmp_path):
    """The module written by `einattn compile` holds both cascades and picks as the kernel does: the same
    bits at 9 keys (one tile of 16) and at 40 (three tiles)."""
    prog = einattn.load(SOFTCAP).with_params({"C": 5.0})
    source = standalone_source(prog, tile=16, library=False)
    assert "def written_program(" in source and "ONE_TILE = (" in source
    (tmp_path / "softcap_mod.py").write_text(source)
    kern = einattn.compile(prog, backend="torch", tile=16, library=False)
    for m in (9, 40):
        x = [torch.as_tensor(a) for a in qkv(6, m, seed=m)]
        torch.save((x, kern(*x)), tmp_path / f"case{m}.pt")
    out = run_python(
        textwrap.dedent(
            """
            import sys
            sys.modules["einattn"] = None  # the module must not need einattn
            import torch
            import softcap_mod
            for m in (9, 40):
                x, want = torch.load(f"case{m}.pt")
                print(torch.equal(softcap_mod.forward(*x), want))
            """
        ),
        cwd=tmp_path,
    )
    assert out.split() == ["True", "True"]


def test_standalone_module_of_a_spec_as_written_has_one_cascade():
    prog = einattn.load(SOFTCAP).with_params({"C": 5.0})
    assert "ONE_TILE" not in standalone_source(prog, passes="as-written")
    assert "ONE_TILE" not in standalone_source(einattn.load(EXAMPLES / "causal_1pass.ein"))
