"""Shared by the torch backend tests: example discovery, sizes and data for any spec, both backends run."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from conftest import EXAMPLES

import einattn
from einattn import syntax as S
from einattn.ir import Program, size_name
from einattn.testing import TOLERANCES, compare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "conformance"


def example_files() -> list[Path]:
    """Every spec under examples/ (new ones are picked up), except the deliberately wrong ones."""
    return sorted(p for p in EXAMPLES.rglob("*.ein") if "errors" not in p.relative_to(EXAMPLES).parts)


def example_id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES).with_suffix(""))


def load_quietly(path) -> Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.load(path)


def conformance_cases() -> list[dict]:
    if not (SHARED / "cases.py").exists():
        return []
    sys.path.insert(0, str(SHARED))
    try:
        import cases
    finally:
        sys.path.remove(str(SHARED))
    return list(cases.CASES)


DEFAULT_SIZES = {"b": 2, "h": 2, "p": 7, "m": 9, "e": 4, "f": 3}


def sizes(prog: Program, base: dict[str, int] | None = None) -> dict[str, int]:
    """Sizes (by rank variable) of the ranks that index inputs, consistent with params and partitions."""
    base = dict(DEFAULT_SIZES, **(base or {}))
    params = prog.param_values
    out = {}
    for n in prog.inputs:
        for r in prog.tensor(n).ranks:
            v = params.get(size_name(r))
            out.setdefault(r, v if isinstance(v, int) else base.get(r, 3))
    if "R" in params and {"g", "h"} <= set(out):
        out["g"] = -(-out["h"] // params["R"])
    if "DMAX" in params and "d" in out:
        out["d"] = 2 * params["DMAX"] + 1
    for part in prog.partitions:
        if part.tile == "inner" and part.outer in out and part.parent in out:
            out[part.outer] = -(-out[part.parent] // params[size_name(part.inner)])
    return out


def _positive(prog: Program) -> set[str]:
    """Inputs read under log or sqrt: given positive data."""
    out = set()
    for e in prog.einsums:
        for node in e.expr.walk():
            if isinstance(node, S.Call) and node.fn in ("log", "log2", "sqrt", "rsqrt"):
                out |= {r.tensor for r in node.walk() if isinstance(r, S.Read)}
    return out


def inputs(
    prog: Program, shape_of: dict[str, int], seed: int = 0, scale: float = 1.0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = _positive(prog)
    out = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = tuple(shape_of[r] for r in t.ranks)
        if t.dtype == "int":
            out[n] = np.sort(rng.integers(0, 3, size=shape), axis=-1) if shape else rng.integers(0, 3)
        elif n in positive:
            out[n] = np.abs(rng.standard_normal(shape)) * 0.5 + 0.5
        else:
            out[n] = rng.standard_normal(shape) * scale
    return out


def to_torch(prog: Program, x: dict[str, np.ndarray], dtype=torch.float64, requires_grad=False) -> dict:
    out = {}
    for n, a in x.items():
        if prog.tensor(n).dtype == "int":
            out[n] = torch.as_tensor(np.asarray(a), dtype=torch.int64)
        else:
            out[n] = torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype).requires_grad_(requires_grad)
    return out


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def check_against_numpy(prog: Program, x: dict[str, np.ndarray], dtype: str = "float64", **options) -> float:
    """Run torch in ``dtype`` and NumPy in float64 on the same (rounded) inputs; assert the tolerance."""
    tdtype = getattr(torch, dtype)
    xt = to_torch(prog, x, tdtype)
    rounded = {n: (v.double().numpy() if v.is_floating_point() else v.numpy()) for n, v in xt.items()}
    want = as_tuple(einattn.compile(prog, backend="numpy")(**rounded))
    got = as_tuple(einattn.compile(prog, backend="torch", **options)(**xt))
    assert len(got) == len(want)
    tol = TOLERANCES[("torch", dtype)]
    worst = 0.0
    for name, g, w in zip(prog.outputs, got, want):
        assert g.dtype == tdtype, (name, g.dtype)
        assert tuple(g.shape) == np.shape(w), name
        err = compare(g, w, tol)
        assert err <= tol, f"{prog.name}: `{name}` differs from numpy by {err:.3g} > {tol:g} in {dtype}"
        worst = max(worst, err)
    return worst


def offset_qkv(rng, B, H, P, M, F, G=None):
    """Q, K, V whose logits q.k / sqrt(4) are about (-1)**p * 1e4 (E = 4): exact in float64."""
    q = rng.integers(-16, 17, (B, H, P, 4)) / 8
    k = rng.integers(-16, 17, (B, G or H, M, 4)) / 8
    q[..., 0] = 100.0 * (-1.0) ** np.arange(P)
    k[..., 0] = 200.0
    return dict(Q=q, K=k, V=rng.standard_normal((B, G or H, M, F)))


def finite(x) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in as_tuple(x))
