"""The backward cascade as generated Triton kernels: ``einattn.grad``'s program, compiled with
``backend="triton"`` (the general path: one kernel per fusion group, intermediates in memory), against the
NumPy backend running the same program and against PyTorch's autograd (interpreter on CPU, float32)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from triton_cases import DEVICE, EXAMPLES

import einattn


@pytest.mark.parametrize("spec", ["causal", "gqa", "alibi", "softcap"])
def test_derived_backward_runs_as_triton_kernels(spec):
    g = einattn.grad(EXAMPLES / f"{spec}.ein")
    rng = np.random.default_rng(0)
    groups = 1 if spec == "gqa" else 2  # gqa.ein: R = 2 query heads per key/value head
    ins = {
        "Q": rng.standard_normal((1, 2, 5, 6)),
        "K": rng.standard_normal((1, groups, 7, 6)),
        "V": rng.standard_normal((1, groups, 7, 3)),
    }
    if spec == "alibi":
        ins["slope"] = rng.random(2)
    cot = {"dAV": rng.standard_normal((1, 2, 5, 3))}
    want = einattn.compile(g.program, backend="numpy")(**ins, **cot)
    with warnings.catch_warnings():  # (the backward cascade is not 1-pass: the general path, said once)
        warnings.simplefilter("ignore", einattn.EinWarning)
        kernel = einattn.compile(g.program, backend="triton")
    got = kernel(
        **{n: torch.tensor(v, dtype=torch.float32, device=DEVICE) for n, v in {**ins, **cot}.items()}
    )
    for name, a, b in zip(g.gradients, got, want):
        np.testing.assert_allclose(a.cpu().numpy(), b, rtol=1e-4, atol=1e-4, err_msg=name)
    # and the NumPy program is the torch backend's autograd (float64)
    prog = einattn.load(EXAMPLES / f"{spec}.ein")
    t = {n: torch.tensor(v, requires_grad=True) for n, v in ins.items()}
    out = einattn.compile(prog, backend="torch")(**t)
    ref = torch.autograd.grad((out * torch.from_numpy(cot["dAV"])).sum(), [t[n] for n in g.gradients])
    for name, a, b in zip(g.gradients, want, ref):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)
