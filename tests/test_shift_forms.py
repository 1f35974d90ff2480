"""Softmax written with a scaled difference streams in one pass on every backend.

``exp((S - GM) / T)``, ``exp2((S - GM) * log2 e)``, ``exp(beta * (S - GM))`` and ``exp(S - GM - k)`` are
softmax with a temperature (or an offset that cancels). The rewrite proves the rescaling law for each shift
function (docs/rewrite.md, "Shift functions"); here each form is compiled with ``passes="auto"`` and compared
with a hand-written NumPy softmax, on the NumPy reference, torch (float64) and the triton interpreter
(float32, one fused kernel).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import triton_cases  # noqa: F401 (sets TRITON_INTERPRET=1 without a GPU, before anything imports triton)

import einattn
from einattn.rewrite import rewrite

LOG2E = 1.4426950408889634
SPEC = """input  Q[h, p, e], K[h, m, e], V[h, m, f]{inputs}
{params}output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p + 2
GM[h, p]    = S[h, m, p] :: max(m)
N[h, m, p]  = {shift}
D[h, p]     = N[h, m, p]
O[h, p, f]  = N[h, m, p] * V[h, m, f] / D[h, p]
"""
DIFF = "S[h, m, p] - GM[h, p]"

# name -> (extra inputs, params, the shift, the temperature each head's softmax divides the scores by)
FORMS = {
    "temperature_input": (", T", "", f"exp(({DIFF}) / T)", lambda x: np.full(2, x["T"])),
    "temperature_param": ("", "param  T = 0.35\n", f"exp(({DIFF}) / T)", lambda x: np.full(2, 0.35)),
    "temperature_per_head": (", TH[h]", "", f"exp(({DIFF}) / TH[h])", lambda x: x["TH"]),
    "exp2_log2e": ("", "", f"exp2(({DIFF}) * {LOG2E})", lambda x: np.ones(2)),
    "beta_times": (", B[h]", "", f"exp(B[h] * ({DIFF}))", lambda x: 1 / x["B"]),
    "offset": (", C[p]", "", f"exp({DIFF} - 0.5 - C[p] * C[p])", lambda x: np.ones(2)),
}


def spec(name: str) -> str:
    inputs, params, shift, _ = FORMS[name]
    return SPEC.format(inputs=inputs, params=params, shift=shift)


def inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        Q=rng.standard_normal((2, 9, 5)) * 2,
        K=rng.standard_normal((2, 13, 5)),
        V=rng.standard_normal((2, 13, 3)),
        T=np.array(0.6),
        TH=np.array([0.5, 2.0]),
        B=np.array([1.7, 0.4]),
        C=rng.standard_normal(9),
    )


def reference(x: dict, temps) -> np.ndarray:
    """Softmax over the keys m <= p + 2 of the scores divided by each head's temperature, times V."""
    s = np.einsum("hpe,hme->hpm", x["Q"], x["K"]) / np.asarray(temps)[:, None, None]
    p, m = np.arange(s.shape[1])[:, None], np.arange(s.shape[2])[None, :]
    s = np.where(m <= p + 2, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hpm,hmf->hpf", w / w.sum(-1, keepdims=True), x["V"])


@pytest.mark.parametrize("name", sorted(FORMS))
def test_the_rewrite_streams_it(name):
    prog = einattn.parse(spec(name), f"{name}.ein")
    new, deriv = rewrite(prog, passes=1, tile=4)
    assert einattn.analyze(new).passes.get("m1", 1) == 1
    text = "\n".join(deriv.lines())
    assert "online max" in text and "(sympy)" in text


@pytest.mark.parametrize("name", sorted(FORMS))
@pytest.mark.parametrize("backend", ["numpy", "torch", "triton"])
def test_every_backend_equals_the_formula(name, backend):
    x = inputs()
    want = reference(x, FORMS[name][3](x))
    k = einattn.compile(spec(name), backend=backend, passes="auto", tile=4)
    if backend == "numpy":
        got, tol = k(**{n: v for n, v in x.items() if n in k.program.inputs}), 1e-12
    else:
        dtype = torch.float64 if backend == "torch" else torch.float32
        args = {n: torch.tensor(v, dtype=dtype) for n, v in x.items() if n in k.program.inputs}
        got, tol = k(**args).double().numpy(), (1e-12 if backend == "torch" else 1e-5)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    if backend == "triton":
        assert k.plan.path == "fused", str(k.plan)


def test_temperature_gradients_flow_through_the_streamed_form():
    """torch: the temperature is a differentiable input of the 1-pass form (gradcheck, float64)."""
    k = einattn.compile(spec("temperature_per_head"), backend="torch", passes="auto", tile=4)
    x = inputs(1)
    args = [torch.tensor(x[n], dtype=torch.float64, requires_grad=True) for n in k.program.inputs]
    assert torch.autograd.gradcheck(lambda *a: k(*a), args)


def test_split_k_merges_parts_of_a_temperature_softmax():
    """The merge rescales each part's sums by exp(d / T): it takes T, the spec's input, as well."""
    from einattn.rewrite import split_k

    sk = split_k(einattn.parse(spec("temperature_input"), "t.ein"), "m", 3)
    assert "T" in sk.merge.inputs
    x = inputs(2)
    cuts = (0, 5, 13)
    parts = []
    for a, b in itertools.pairwise(cuts):
        part = {n: x[n] for n in ("Q", "T")} | {"K": x["K"][:, a:b], "V": x["V"][:, a:b]}
        params = {sk.offset: a} if sk.offset else {}
        parts.append(einattn.compile(sk.partial, backend="numpy", params=params)(**part))
    stacked = {f"{n}_s": np.stack([p[i] for p in parts]) for i, n in enumerate(sk.states)}
    stacked = {
        n: (v.astype(np.int64) if sk.merge.tensor(n).dtype == "int" else v) for n, v in stacked.items()
    }
    merged = einattn.compile(sk.merge, backend="numpy")(**stacked, T=x["T"])
    state = {
        n: (v.astype(np.int64) if sk.finish.tensor(n).dtype == "int" else v)
        for n, v in zip(sk.states, merged)
    }
    got = einattn.compile(sk.finish, backend="numpy")(**state)
    np.testing.assert_allclose(got, reference(x, np.full(2, x["T"])), rtol=0, atol=1e-12)


def test_a_rescaling_that_reads_a_size_cannot_be_split():
    from einattn.rewrite import split_k
    from einattn.rewrite.rules import RewriteError

    text = spec("exp2_log2e").replace(f"* {LOG2E}", "* rsqrt(E)")
    with pytest.raises(RewriteError, match=r"reads `E`"):
        split_k(einattn.parse(text, "t.ein"), "m", 3)


def test_two_passes_tile_a_difference_scaled_along_the_rank_as_it_is():
    """1 pass refuses `exp((S - GM) * W[m])` (each key would need its own rescaling); 2 passes compute the max
    over tiles first and read the statement tile by tile, unchanged."""
    from einattn.rewrite import RewriteError

    text = spec("exp2_log2e").replace(f"* {LOG2E})", "* W[m])").replace("V[h, m, f]", "V[h, m, f], W[m]", 1)
    prog = einattn.parse(text, "w.ein")
    with pytest.raises(RewriteError, match="scales the difference by a value along m"):
        rewrite(prog, passes=1, tile=4)
    new, _ = rewrite(prog, passes=2, tile=4)
    x = inputs(3) | {"W": np.linspace(0.5, 2.0, 13)}
    ins = {n: x[n] for n in prog.inputs}
    got = einattn.compile(new, backend="numpy")(**ins)
    s = np.einsum("hpe,hme->hpm", x["Q"], x["K"])
    p, m = np.arange(9)[:, None], np.arange(13)[None, :]
    s = np.where(m <= p + 2, s, -np.inf)
    w = np.where(m <= p + 2, 2.0 ** ((s - s.max(-1, keepdims=True)) * x["W"]), 0.0)
    want = np.einsum("hpm,hmf->hpf", w / w.sum(-1, keepdims=True), x["V"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


NEGATIVE = SPEC.replace("  where m <= p + 2", "").format(inputs=", T", params="", shift=f"exp(({DIFF}) / T)")


@pytest.mark.parametrize("backend", ["numpy", "torch", "triton"])
def test_a_negative_temperature_streams_without_nan(backend):
    """exp(d / T) with T < 0 grows as d -> -inf: the running states start absent, not at -inf and 0, where
    f(-inf - new) * 0 would be NaN (the reference: a softmax of -S / |T|, which a running max of S still
    bounds, since the spec's own values are bounded by the same)."""
    x = inputs(4) | {"T": np.array(-0.8)}
    s = np.einsum("hpe,hme->hpm", x["Q"], x["K"]) / x["T"]
    w = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("hpm,hmf->hpf", w / w.sum(-1, keepdims=True), x["V"])
    k = einattn.compile(NEGATIVE, backend=backend, passes="auto", tile=4)
    ins = {n: x[n] for n in k.program.inputs}
    if backend == "numpy":
        got, tol = k(**ins), 1e-12
    else:
        dtype = torch.float64 if backend == "torch" else torch.float32
        got = k(**{n: torch.tensor(v, dtype=dtype) for n, v in ins.items()}).double().numpy()
        tol = 1e-12 if backend == "torch" else 1e-5
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


@pytest.mark.parametrize(
    ("declared", "absent"),
    [("input T", True), ("param T = 0.7", False), ("param T = -0.7", True)],
)
def test_states_start_present_only_where_the_shift_vanishes_below(declared, absent):
    """exp(d / T) vanishes as d -> -inf exactly when T > 0: a param's value decides; an input's sign is not
    known, so its states start absent (the derivation says why)."""
    text = NEGATIVE if declared == "input T" else NEGATIVE.replace(", T\n", f"\n{declared}\n")
    new, deriv = rewrite(einattn.parse(text, "t.ein"), passes=1, tile=4)
    guarded = any(isinstance(n, einattn.syntax.Default) for e in new.einsums for n in e.expr.walk())
    assert guarded == absent
    assert ("not proved to vanish as d -> -inf" in "\n".join(deriv.lines())) == absent
