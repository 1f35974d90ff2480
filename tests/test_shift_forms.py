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


def assert_streams_to_the_same_values(text: str, seed: int) -> None:
    """The 1-pass rewrite of ``text`` gives the spec's values on the NumPy reference (float64)."""
    prog = einattn.parse(text, "form.ein")
    new, _ = rewrite(prog, passes=1, tile=4)
    x = inputs(seed)
    ins = {n: x[n] for n in prog.inputs}
    got = einattn.compile(new, backend="numpy")(**ins)
    np.testing.assert_allclose(got, einattn.compile(prog, backend="numpy")(**ins), atol=1e-12)


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
    with pytest.raises(RewriteError, match=r"reads `E`") as info:
        split_k(einattn.parse(text, "t.ein"), "m", 3)
    assert info.value.line == 5  # the shift's statement


def test_two_passes_tile_a_difference_scaled_along_the_rank_as_it_is():
    """`exp((S - GM) * W[m])`: 1 pass refuses it (each key would need its own rescaling); 2 passes would
    compute the max over tiles first and read the statement tile by tile, unchanged, which the analysis
    counts as still 3-pass over m: refused too, located, rather than returned as a 2-pass form."""
    from einattn.rewrite import RewriteError

    text = spec("exp2_log2e").replace(f"* {LOG2E})", "* W[m])").replace("V[h, m, f]", "V[h, m, f], W[m]", 1)
    prog = einattn.parse(text, "w.ein")
    with pytest.raises(RewriteError, match="scales the difference by a value along m"):
        rewrite(prog, passes=1, tile=4)
    with pytest.raises(RewriteError, match="still 3-pass over m, not 2-pass") as info:
        rewrite(prog, passes=2, tile=4)
    assert str(info.value).startswith("w.ein:5:1:")


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


# ---- a reviewer's cases (session 13) ----------------------------------------------------------------------

SHIFTED_BY_A_COMPUTED_MAX = """input  Q[p, e], K[m, e], V[m, f], C[p]
output O
S[m, p] = Q[p, e] * K[m, e]
GM[p]   = S[m, p] :: max(m)
G2[p]   = GM[p] + C[p]
N[m, p] = exp(S[m, p] - G2[p] + C[p])
D[p]    = N[m, p]{filter}
O[p, f] = N[m, p] * V[m, f] / D[p]
"""


@pytest.mark.parametrize("filt", ["", "  where m < 5"])
def test_an_offset_is_not_peeled_where_exp_of_it_overflows_and_the_spec_does_not(filt):
    """`exp(S - G2 + C)` with `G2 = GM + C` is softmax; peeled into `exp(S - G2) * exp(C)` it made `0 * inf`
    for C = 750. Only a shift by the max itself, whose readers all sum the argmax, is peeled: here the rewrite
    refuses, and `passes="auto"` computes the spec as written (finite)."""
    text = SHIFTED_BY_A_COMPUTED_MAX.format(filter=filt)
    rng = np.random.default_rng(0)
    x = dict(Q=rng.standard_normal((2, 3)), K=rng.standard_normal((7, 3)), V=rng.standard_normal((7, 2)))
    x["C"] = np.array([0.0, 750.0])
    if filt:  # the readers' filter hides the argmax (keys 5, 6 score 30): a direct shift, offset 680
        text = text.replace("- G2[p] + C[p])", "- GM[p] + 680)").replace(
            "V[m, f] / D[p]", f"V[m, f] / D[p]{filt}"
        )
        x["Q"], x["K"][5:] = np.ones((2, 3)), 10.0
    prog = einattn.parse(text, "offset.ein")
    ins = {n: x[n] for n in prog.inputs}
    want = einattn.compile(prog, backend="numpy")(**ins)
    assert np.isfinite(want).all()
    with pytest.warns(einattn.EinWarning, match="not multiplicative"):
        got = einattn.compile(prog, backend="numpy", passes="auto", tile=2)(**ins)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.warns(einattn.EinWarning):
        k = einattn.compile(prog, backend="torch", tile=2)
    t = k(**{n: torch.tensor(v) for n, v in ins.items()})
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("shift", ["exp((S[m, p] - GM[p]) / KN)", "exp(S[m, p] - GM[p] - KN)"])
def test_a_scale_that_needs_every_key_is_refused(shift):
    """`KN` sums over m: the loop's rescaling would need it before the loop, so the form is 2-pass; the
    rewrite said 1 pass (a reviewer's case)."""
    from einattn.rewrite import RewriteError

    text = (
        "input  Q[p, e], K[m, e], V[m, f]\noutput O\nKN = K[m, e] * K[m, e] * 0.01\n"
        f"S[m, p] = Q[p, e] * K[m, e]\nGM[p] = S[m, p] :: max(m)\nN[m, p] = {shift}\nD[p] = N[m, p]\n"
        "O[p, f] = N[m, p] * V[m, f] / D[p]\n"
    )
    with pytest.raises(RewriteError, match="reads `KN`, which needs every point of m") as info:
        rewrite(einattn.parse(text, "kn.ein"), passes=1, tile=4)
    assert info.value.line == 6  # the user's statement, not one the rewrite made


@pytest.mark.parametrize("scale", ["/ 0.05", "* 20", "* 14.285714", "* 1.4426950408889634 / 0.07"])
def test_large_scales_are_proved(scale):
    """exp(d / 0.05) reaches e^90 at the numeric check's points: the comparison is relative."""
    text = spec("temperature_param").replace("/ T)", f"{scale})").replace("param  T = 0.35\n", "")
    assert_streams_to_the_same_values(text, seed=5)


def test_a_spec_input_named_like_a_stacked_state_keeps_the_names_apart():
    """The merge takes what the rescaling reads (here an input called `FRM_s`) beside the stacked states:
    a state is named so that both it and `NAME_s` are free."""
    from einattn.rewrite import split_k

    text = spec("temperature_per_head").replace("TH[h]", "FRM_s[h]")
    sk = split_k(einattn.parse(text, "names.ein"), "m", 3)
    assert "FRM_s" in sk.merge.inputs
    for name in sk.states:
        assert f"{name}_s" in sk.merge.inputs
        assert sk.merge.tensor(f"{name}_s").ranks[0] == sk.split_rank


def test_a_factor_read_at_an_index_expression_maps_to_the_max_rank():
    """The max over `g` (`GM[g, p]`), the shift in the frame of `h` reading `GM[h // 2, p]` and
    `TG[h // 2]`: the factor is `TG[g]` in the max's frame (it was refused as varying along h)."""
    text = (
        "input  Q[g, p, e], K[g, m, e], V[g, m, f], TG[g], H[h]\noutput O\n"
        "S[g, m, p] = Q[g, p, e] * K[g, m, e]\nGM[g, p] = S[g, m, p] :: max(m)\n"
        "N[h, m, p] = exp((S[h // 2, m, p] - GM[h // 2, p]) / TG[h // 2]) * H[h]\n"
        "D[h, p] = N[h, m, p]\nO[h, p, f] = N[h, m, p] * V[h // 2, m, f] / D[h, p]\n"
    )
    prog = einattn.parse(text, "gqa_temp.ein")
    new, _ = rewrite(prog, passes=1, tile=4)
    rng = np.random.default_rng(6)
    x = dict(
        Q=rng.standard_normal((2, 5, 3)),
        K=rng.standard_normal((2, 9, 3)),
        V=rng.standard_normal((2, 9, 2)),
        TG=np.array([0.7, 1.9]),
        H=rng.uniform(0.5, 2.0, 4),
    )
    s = np.einsum("gpe,gme->gpm", x["Q"], x["K"]) / x["TG"][:, None, None]
    w = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("gpm,gmf->gpf", w / w.sum(-1, keepdims=True), x["V"])[[0, 0, 1, 1]]
    np.testing.assert_allclose(einattn.compile(new, backend="numpy")(**x), want, atol=1e-12)


@pytest.mark.parametrize(
    "diff",
    [
        "-(GM[h, p] - S[h, m, p])",
        "S[h, m, p] + -GM[h, p]",
        "-GM[h, p] + S[h, m, p]",
        "-GM[h, p] + S[h, m, p] - 0.5",
    ],
)
def test_the_difference_spelled_otherwise_streams(diff):
    """`exp(-(GM - S))` is `exp(S - GM)`: the shift is found in each spelling (it was refused as needing
    `GM` at every point)."""
    text = SPEC.format(inputs="", params="", shift=f"exp({diff})")
    prog = einattn.parse(text, "spelled.ein")
    new, _ = rewrite(prog, passes=1, tile=4)
    x = inputs(7)
    ins = {n: x[n] for n in prog.inputs}
    np.testing.assert_allclose(
        einattn.compile(new, backend="numpy")(**ins), reference(x, np.ones(2)), rtol=0, atol=1e-12
    )


# ---- a third reviewer's cases (session 13) ----------------------------------------------------------------


def test_sums_that_order_an_inline_shift_s_ranks_differently_read_it_right():
    """`SD[h, p]` and `O[p, h, f]` both write `exp(S - GM)` inline; the shift, named once, is read in its own
    rank order by both (the second read it transposed: wrong numbers on every 1-pass backend)."""
    text = (
        "input Q[h, p, e], K[h, m, e], V[h, m, f]\noutput O\nS[h, m, p] = Q[h, p, e] * K[h, m, e]\n"
        "GM[h, p] = S[h, m, p] :: max(m)\nSD[h, p] = exp(S[h, m, p] - GM[h, p])\n"
        "O[p, h, f] = exp(S[h, m, p] - GM[h, p]) * V[h, m, f] / SD[h, p]\n"
    )
    prog = einattn.parse(text, "order.ein")
    x = inputs(8)
    ins = {n: x[n] for n in ("Q", "K", "V")}
    s = np.einsum("hpe,hme->hpm", x["Q"], x["K"])
    w = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("hpm,hmf->phf", w / w.sum(-1, keepdims=True), x["V"])
    new, _ = rewrite(prog, passes=1, tile=3)
    np.testing.assert_allclose(einattn.compile(new, backend="numpy")(**ins), want, atol=1e-12)
    got = einattn.compile(prog, backend="torch", tile=3)(**{n: torch.tensor(v) for n, v in ins.items()})
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_an_inline_shift_in_a_filtered_sum_streams():
    """The sum keeps its filter; the named shift takes the max's (none): it streams as the explicit form
    does (it was refused as shifting other values than the max's)."""
    text = (
        SPEC.replace("  where m <= p + 2", "")
        .format(inputs="", params="", shift=f"exp({DIFF})")
        .replace("D[h, p]     = N[h, m, p]", "D[h, p]     = exp(S[h, m, p] - GM[h, p])  where m <= p")
    )
    assert_streams_to_the_same_values(text, seed=9)


def test_the_gradient_of_a_tensor_the_shift_function_reads_has_no_nan():
    """`exp((S - GM) / (1 + T[p]^2))` vanishes below, but at the start f(-inf - new)'s derivative in T is
    0 * inf: states start absent where f reads a tensor (the gradient of T was NaN)."""
    text = SPEC.replace("  where m <= p + 2", "").format(
        inputs=", T[p]", params="", shift=f"exp(({DIFF}) / (1 + T[p] * T[p]))"
    )
    gen = torch.Generator().manual_seed(1)
    shapes = {"Q": (2, 4, 3), "K": (2, 7, 3), "V": (2, 7, 2), "T": (4,)}
    x = {n: torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for n, s in shapes.items()}
    streamed = einattn.compile(text, backend="torch", tile=3)
    written = einattn.compile(text, backend="torch", passes="as-written")
    got = torch.autograd.grad(streamed(**x).sum(), [x["T"]])[0]
    want = torch.autograd.grad(written(**x).sum(), [x["T"]])[0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_a_rescaling_that_reads_the_whole_size_is_refused_by_its_name():
    """`exp(d / M)`: split-K's parts read `M` as a param of their own (`M_ALL`); the refusal says `M`."""
    from einattn.rewrite import split_k
    from einattn.rewrite.rules import RewriteError

    text = spec("exp2_log2e").replace(f"* {LOG2E}", "/ M")
    with pytest.raises(RewriteError, match=r"reads `M`, the size of the whole of m") as info:
        split_k(einattn.parse(text, "whole.ein"), "m", 3)
    assert "M_ALL" not in info.value.message
