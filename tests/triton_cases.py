"""Shared set-up of the triton backend tests: the interpreter, devices, inputs and the NumPy comparison.

Importing this module sets ``TRITON_INTERPRET=1`` when no GPU is present, before anything imports triton, so
the generated kernels run on CPU tensors (slowly: grids here stay small). On a GPU machine the variable is
left alone and the same tests run on CUDA tensors.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest

import einattn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _refuse(self, xs, grads):
    raise AssertionError("the backward was recomputed through the torch backend")


def refuse_recompute(monkeypatch):
    """Fail if a backward pass recomputes through the torch backend: the generated kernels must run."""
    from einattn.lowering.triton_backend import TritonKernel

    monkeypatch.setattr(TritonKernel, "recompute_grads", _refuse)


@contextlib.contextmanager
def derived_only():
    """:func:`refuse_recompute` for a block of code."""
    with pytest.MonkeyPatch.context() as mp:
        refuse_recompute(mp)
        yield


def tri(spec, **options):
    """``spec`` compiled by the triton backend, its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.compile(spec, backend="triton", **options)


def randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def assert_close_grads(got, want, tol, names=None):
    """Each of ``got`` present, finite, of ``want``'s shape and within ``tol`` of it, relative to
    max(1, |want|)."""
    assert len(got) == len(want)
    for n, (a, b) in enumerate(zip(got, want)):
        name = names[n] if names else str(n)
        assert a is not None, f"d{name} is None"
        assert a.shape == b.shape, f"d{name}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        assert torch.isfinite(a).all(), f"d{name} is not finite: {a}"
        scale = max(1.0, b.abs().max().item())
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * scale, f"d{name}: max error {err:.3g} (scale {scale:.3g}, tol {tol})"


# Tolerances against the NumPy reference (float64), relative to max(1, largest reference magnitude):
# float32 computes in float32 throughout; float16/bfloat16 round the inputs and the probability tile that
# feeds the second tl.dot to 11 (8) significant bits.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}

# Small sizes: the interpreter runs one program at a time. E and F are not powers of two (padded to 16), M is
# not a multiple of the tile (a ragged last tile), P spans several row blocks of 16 in the larger tests.
SIZES = dict(b=1, h=2, g=1, p=9, m=11, e=5, f=3)


def make_inputs(prog, sizes: dict[str, int], seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = tuple(sizes[r] for r in t.ranks)
        if t.dtype == "int":
            out[name] = rng.integers(0, 3, shape)
        elif name == "slope":
            out[name] = 2.0 ** (-8.0 * np.arange(1, shape[0] + 1) / shape[0])
        else:
            out[name] = rng.standard_normal(shape) * scale
    return out


def to_torch(prog, x: dict[str, np.ndarray], dtype=torch.float32, layout=None) -> dict[str, torch.Tensor]:
    """Tensors on DEVICE; ``layout="strided"`` gives non-contiguous views (transposed, then sliced)."""
    out = {}
    for name, a in x.items():
        if prog.tensor(name).dtype == "int":
            out[name] = torch.as_tensor(a, dtype=torch.int64, device=DEVICE)
            continue
        t = torch.as_tensor(a, dtype=torch.float64, device=DEVICE).to(dtype)
        if layout == "strided" and t.dim() >= 2:
            # same values, another memory layout: stored transposed and with a gap between rows
            big = torch.zeros((*t.shape[:-2], t.shape[-1], 2 * t.shape[-2]), dtype=dtype, device=DEVICE)
            big[..., ::2] = t.transpose(-1, -2)
            t = big[..., ::2].transpose(-1, -2)
            assert not t.is_contiguous()
        out[name] = t
    return out


def reference(prog, x: dict[str, np.ndarray], dtype=torch.float32) -> tuple[np.ndarray, ...]:
    """The NumPy backend (float64) on the inputs as rounded to ``dtype``."""
    rounded = {
        n: (a if prog.tensor(n).dtype == "int" else torch.as_tensor(a).to(dtype).double().numpy())
        for n, a in x.items()
    }
    out = einattn.compile(prog, backend="numpy")(**rounded)
    return out if isinstance(out, tuple) else (out,)


def compare(got, want, dtype=torch.float32) -> float:
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    worst = 0.0
    for g, w in zip(got, want):
        assert g.dtype == dtype, f"output dtype {g.dtype}, expected {dtype}"
        g = g.detach().double().cpu().numpy()
        assert g.shape == w.shape, f"shape {g.shape}, expected {w.shape}"
        assert np.array_equal(np.isfinite(g), np.isfinite(w)), "non-finite values differ from the reference"
        ok = np.isfinite(w)
        if ok.any():
            scale = max(1.0, float(np.max(np.abs(w[ok]))))
            worst = max(worst, float(np.max(np.abs(g[ok] - w[ok]))) / scale)
    assert worst <= TOL[dtype], f"relative error {worst:.3g} > {TOL[dtype]:g}"
    return worst


def check(spec, sizes=None, dtype=torch.float32, seed=0, layout=None, scale=1.0, params=None, **options):
    """Compile ``spec`` with the triton backend, run it and the NumPy reference; return the kernel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        prog = spec if isinstance(spec, einattn.Program) else einattn.compile(spec, params=params).program
        kernel = einattn.compile(prog, backend="triton", **options)
    sz = dict(SIZES) | (sizes or {})
    for name in prog.inputs:  # ranks only some specs have (`w`, `u`...) get a small size
        for r in prog.tensor(name).ranks:
            sz.setdefault(r, prog.param_values.get(r.upper(), 3))
    x = make_inputs(prog, sz, seed, scale)
    got = kernel(**to_torch(prog, x, dtype, layout))
    compare(got, reference(prog, x, dtype), dtype)
    return kernel
