"""The backward cascade (einattn.autodiff): its gradients against independent references.

* every non-iterative example and variant: the gradient program, run by the NumPy backend, against
  PyTorch's autograd through the torch backend (float64);
* softmax attention against the FlashAttention-2 backward written out in NumPy, and against the gradients of
  PyTorch's ``scaled_dot_product_attention`` (plain, causal, grouped-query);
* hand-derived gradients of small specs that exercise the rules one at a time: a shifted read, a
  relative-position table (an affine index solved for its rank), ``h // R`` (a filter), ``??``, a max
  reduction with ties (split evenly, as ``torch.amax``), kinks of ``relu``/``abs``/``max``, absent points;
* hypothesis: random cascades, gradient program == torch autograd;
* the errors, and ``einattn grad`` on the command line.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einattn
from einattn.cli_core import input_sizes, random_inputs
from einattn.errors import EinError
from einattn.testing import cascades

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(
    p
    for p in [*ROOT.glob("examples/*.ein"), *ROOT.glob("examples/variants/*.ein")]
    if not any(t.iterative is not None for t in einattn.load(p).tensors)
)
POSITIVE = {"lam", "delta", "xi"}  # inputs under a log or a sqrt in the variants: drawn positive


def _inputs(prog, seed: int, size: int = 3) -> dict:
    sizes = input_sizes(prog, {}, size)
    params = prog.param_values
    if "R" in params and "h" in sizes and "g" in sizes:  # grouped heads: every group read
        sizes["g"] = -(-sizes["h"] // params["R"])
    ins = random_inputs(prog, sizes, seed)
    for n in ins:
        if n in POSITIVE:
            ins[n] = np.abs(ins[n]) + 0.5
    return ins


def _autograd(prog, ins: dict, g: einattn.Gradient, seed: int):
    """(cotangents by name, torch's gradients by input name) of sum(output * cotangent)."""
    rng = np.random.default_rng(seed + 1)
    kernel = einattn.compile(prog, backend="torch")
    t = {n: torch.tensor(v, requires_grad=n in g.gradients) for n, v in ins.items()}
    outs = kernel(**t)
    outs = outs if isinstance(outs, tuple) else (outs,)
    cots, loss = {}, 0.0
    for name, y in zip(prog.outputs, outs):
        c = rng.standard_normal(tuple(y.shape))
        if name in g.cotangents:
            cots[g.cotangents[name]] = c
        loss = loss + (y * torch.from_numpy(c)).sum()
    grads = torch.autograd.grad(loss, [t[n] for n in g.gradients], allow_unused=True)
    return cots, {n: (np.zeros(ins[n].shape) if x is None else x.numpy()) for n, x in zip(g.gradients, grads)}


def _derived(g: einattn.Gradient, ins: dict, cots: dict) -> dict:
    out = einattn.compile(g.program, backend="numpy")(**ins, **cots)
    out = out if isinstance(out, tuple) else (out,)
    return dict(zip(g.gradients, out))


def _close(got: dict, want: dict, tol: float = 1e-9) -> None:
    assert set(got) == set(want)
    for n in want:
        np.testing.assert_allclose(got[n], want[n], rtol=tol, atol=tol, err_msg=f"gradient of {n}")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_example_against_torch_autograd(path):
    prog = einattn.load(path)
    g = einattn.grad(prog)
    assert g.gradients, "some float input reaches an output"
    for seed in (0, 1):
        ins = _inputs(prog, seed)
        cots, want = _autograd(prog, ins, g, seed)
        _close(_derived(g, ins, cots), want)


# ---- softmax attention: FlashAttention-2's backward and SDPA -----------------------------------------


def _fa2_backward(q, k, v, do, causal: bool):
    """The FlashAttention-2 paper's backward (Dao 2023, Algorithm 2), dense, in NumPy."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.einsum("bhpe,bhme->bhpm", q, k) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    dv = np.einsum("bhpm,bhpf->bhmf", p, do)
    dp = np.einsum("bhpf,bhmf->bhpm", do, v)
    d = (do * o).sum(-1, keepdims=True)  # D = rowsum(dO * O)
    ds = p * (dp - d)
    return ds @ k * scale, np.einsum("bhpm,bhpe->bhme", ds, q) * scale, dv


@pytest.mark.parametrize("spec,causal", [("attention_3pass", False), ("causal", True)])
def test_softmax_attention_against_flashattention2_backward(spec, causal):
    rng = np.random.default_rng(7)
    q, k, v, do = (rng.standard_normal((2, 3, 6, 4)) for _ in range(4))
    g = einattn.grad(ROOT / "examples" / f"{spec}.ein")
    got = _derived(g, {"Q": q, "K": k, "V": v}, {"dAV": do})
    dq, dk, dv = _fa2_backward(q, k, v, do, causal)
    _close(got, {"Q": dq, "K": dk, "V": dv}, 1e-10)


@pytest.mark.parametrize("spec,causal", [("attention_3pass", False), ("causal", True), ("gqa", False)])
def test_softmax_attention_against_sdpa_gradients(spec, causal):
    prog = einattn.load(ROOT / "examples" / f"{spec}.ein")
    rng = np.random.default_rng(3)
    groups = 2 if spec == "gqa" else 4  # gqa.ein: R = 2 query heads per key/value head
    q = rng.standard_normal((2, 4, 5, 8))
    k, v = (rng.standard_normal((2, groups, 5, 8)) for _ in range(2))
    do = rng.standard_normal((2, 4, 5, 8))
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    rep = 4 // groups
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk.repeat_interleave(rep, 1), tv.repeat_interleave(rep, 1), is_causal=causal
    )
    want = torch.autograd.grad((out * torch.from_numpy(do)).sum(), (tq, tk, tv))
    g = einattn.grad(prog)
    got = _derived(g, {"Q": q, "K": k, "V": v}, {"dAV": do})
    _close(got, {n: w.numpy() for n, w in zip("QKV", want)}, 1e-10)


def test_stabilizer_takes_no_cotangent():
    text = einattn.grad(ROOT / "examples" / "attention_3pass.ein").text
    assert "dGM" not in text and "NGM" not in text  # softmax's max: its terms would cancel


# ---- the rules, one at a time, against hand-derived gradients ----------------------------------------


def _grad_of(text: str, ins: dict, cots: dict, wrt=None) -> dict:
    return _derived(einattn.grad(text, wrt), ins, cots)


def test_shifted_read_is_solved_for_its_rank():
    # D[i] = X[i + 1] * Y[i] - X[i]: dX[j] = dD[j - 1] Y[j - 1] - dD[j]; dY[i] = dD[i] X[i + 1]
    text = "input X[i], Y[i]\noutput D\nD[i] = X[i + 1] * Y[i] - X[i]\n"
    x, y, dd = np.array([1.0, 2, 4, 8]), np.array([3.0, 5, 7, 9]), np.array([0.5, -1, 2, 3])
    got = _grad_of(text, {"X": x, "Y": y}, {"dD": dd})
    # D[3] is absent (X[4] is past the end): dD[3] reaches nothing
    dx = np.array([-0.5, 0.5 * 3 + 1, -1 * 5 - 2, 2 * 7])
    dy = np.array([0.5 * 2, -1 * 4, 2 * 8, 0])
    _close(got, {"X": dx, "Y": dy})
    assert "i - 1" in einattn.grad(text).text or "i1 - 1" in einattn.grad(text).text


def test_relative_position_table():
    # S[p, m] = T[p - m + 2] (a table of 5 distances), O[p] = sum_m S[p, m] * V[m]
    text = "input T[d], V[m], Q[p]\noutput O\nO[p] = Q[p] * T[p - m + 2] * V[m]\n"
    rng = np.random.default_rng(0)
    t, v, q, do = (
        rng.standard_normal(5),
        rng.standard_normal(3),
        rng.standard_normal(3),
        rng.standard_normal(3),
    )
    dt = np.zeros(5)
    for p in range(3):
        for m in range(3):
            dt[p - m + 2] += do[p] * q[p] * v[m]
    got = _grad_of(text, {"T": t, "V": v, "Q": q}, {"dO": do}, wrt=["T"])
    _close(got, {"T": dt})
    assert "V[p - d + 2]" in einattn.grad(text, ["T"]).text  # solved for m (bounded by the read of V)


def test_grouped_read_sums_the_group():
    text = "input X[g], W[h]\nparam R = 2\noutput Y\nY[h] = X[h // R] * W[h]\n"
    x, w, dy = np.array([1.0, 2, 3]), np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 10, 100, 1000, 10000])
    got = _grad_of(text, {"X": x, "W": w}, {"dY": dy})
    _close(got, {"X": np.array([1 + 20, 300 + 4000, 50000]), "W": dy * x[np.arange(5) // 2]})


def test_default_sends_the_cotangent_to_the_side_present():
    # Y[i] = X[i + 1] ?? 2 * X[i]: the last point takes its value (and gradient) from the default
    text = "input X[i]\noutput Y\nY[i] = X[i + 1] ?? 2 * X[i]\n"
    dy = np.array([1.0, 10, 100])
    got = _grad_of(text, {"X": np.array([5.0, 6, 7])}, {"dY": dy})
    _close(got, {"X": np.array([0.0, 1, 10 + 200])})


def test_sibling_absent_gates_the_contribution():
    # S = sum_i (X[i + 1] + Y[i]): the term at the last i is absent, so Y's last gradient is 0, not 1
    text = "input X[i], Y[i]\noutput S\nS = X[i + 1] + Y[i]\n"
    got = _grad_of(text, {"X": np.ones(4), "Y": np.ones(4)}, {"dS": np.array(3.0)})
    _close(got, {"X": np.array([0.0, 3, 3, 3]), "Y": np.array([3.0, 3, 3, 0])})


def test_max_reduction_splits_ties_as_amax():
    text = "input X[i, j]\noutput M\nM[i] = X[i, j] :: max(j)\n"
    x = np.array([[1.0, 3, 3], [2, 1, 0]])
    dm = np.array([6.0, 5])
    got = _grad_of(text, {"X": x}, {"dM": dm})
    _close(got, {"X": np.array([[0.0, 3, 3], [5, 0, 0]])})
    tx = torch.tensor(x, requires_grad=True)
    (want,) = torch.autograd.grad((tx.amax(1) * torch.tensor(dm)).sum(), tx)
    _close(got, {"X": want.numpy()})


def test_kinks_follow_pytorch():
    text = "input X[i], Y[i]\noutput Z\nZ[i] = relu(X[i]) + abs(X[i]) + max(X[i], Y[i]) + step(X[i])\n"
    x, y = np.array([-1.0, 0, 2, 1]), np.array([0.0, 0, 1, 1])
    got = _grad_of(text, {"X": x, "Y": y}, {"dZ": np.ones(4)})
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    z = torch.relu(tx) + tx.abs() + torch.maximum(tx, ty)
    want = torch.autograd.grad(z.sum(), (tx, ty))
    _close(got, {"X": want[0].numpy(), "Y": want[1].numpy()})


def test_fully_masked_rows_give_zero_gradients():
    # a query row that no key passes: its output is absent (0 to the caller), its gradient 0
    text = """input Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]  where m < p
GM[p]    = S[m, p] :: max(m)
SN[m, p] = exp(S[m, p] - GM[p])
SD[p]    = SN[m, p]
O[p, f]  = SN[m, p] / SD[p] * V[m, f]
"""
    rng = np.random.default_rng(1)
    q, k, v, do = (
        rng.standard_normal((3, 2)),
        rng.standard_normal((3, 2)),
        rng.standard_normal((3, 2)),
        np.ones((3, 2)),
    )
    got = _grad_of(text, {"Q": q, "K": k, "V": v}, {"dO": do})
    assert np.all(got["Q"][0] == 0) and np.all(np.isfinite(got["Q"]))
    assert np.all(got["V"][2] == 0)  # key 2 is seen by no query (m < p < 3)
    prog = einattn.parse(text)
    g = einattn.grad(prog)
    cots, want = _autograd(prog, {"Q": q, "K": k, "V": v}, g, 0)
    _close(_derived(g, {"Q": q, "K": k, "V": v}, cots), want)


def test_scalar_input_and_float_param():
    text = "input X[i], T\nparam C = 2.5\noutput Y\nY[i] = C * tanh(X[i] / T)\n"
    x, t, dy = np.array([0.1, -0.4, 0.9]), np.array(0.7), np.array([1.0, 2, 3])
    got = _grad_of(text, {"X": x, "T": t}, {"dY": dy})
    sech2 = 1 - np.tanh(x / t) ** 2
    _close(got, {"X": dy * 2.5 * sech2 / t, "T": np.array((dy * 2.5 * sech2 * -x / t**2).sum())})


# ---- hypothesis: random cascades ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_cascades_against_torch_autograd(data):
    spec = data.draw(cascades(max_statements=4, iterative=False))
    prog = einattn.parse(spec.text)
    try:
        g = einattn.grad(prog)
    except EinError as err:  # (no float input reaches the output, or + mixed with max: said so)
        assert "nothing to differentiate" in str(err)
        return
    seed = data.draw(st.integers(0, 2**16))
    ins = _inputs(prog, seed, data.draw(st.integers(1, 4)))
    ins = {n: (np.abs(x) + 0.25 if x.dtype.kind == "f" else x) for n, x in ins.items()}  # (away from kinks)
    cots, want = _autograd(prog, ins, g, seed)
    got = _derived(g, ins, cots)
    for n in want:
        both = np.isfinite(want[n]) & np.isfinite(got[n])
        assert np.array_equal(np.isfinite(want[n]), np.isfinite(got[n])), (spec.text, n)
        np.testing.assert_allclose(
            got[n][both], want[n][both], rtol=1e-7, atol=1e-7, err_msg=f"{spec.text}\n{n}"
        )


# ---- errors and the command line ---------------------------------------------------------------------


def test_iterative_spec_is_refused_with_a_hint():
    with pytest.raises(EinError, match="iterative tensor") as err:
        einattn.grad(ROOT / "examples" / "causal_1pass.ein")
    assert "3-pass" in str(err.value) and "causal_1pass.ein:" in str(err.value)


def test_sum_then_max_in_one_statement():
    # Y[i] = max over k of (sum over j of X[i, j, k]): split into a sum and a max, then differentiated
    prog = einattn.parse("input X[i, j, k]\noutput Y\nY[i] = X[i, j, k] :: max(k)  where j != k\n")
    g = einattn.grad(prog)
    ins = {"X": np.random.default_rng(2).standard_normal((2, 3, 4))}
    cots, want = _autograd(prog, ins, g, 2)
    _close(_derived(g, ins, cots), want)
    x = torch.tensor(ins["X"], requires_grad=True)
    keep = torch.tensor([[j != k for k in range(4)] for j in range(3)])
    y = torch.where(keep, x, 0.0).sum(1).amax(1)
    (ref,) = torch.autograd.grad((y * torch.from_numpy(cots["dY"])).sum(), x)
    _close(_derived(g, ins, cots), {"X": ref.numpy()})


@pytest.mark.parametrize(
    "wrt,message", [(["Z"], "not an input"), (["n"], "integer input"), (["W"], "no output depends")]
)
def test_bad_wrt(wrt, message):
    text = "input X[i], W[i], n[i] : int\noutput Y\nY[i] = X[i] where n[i] > 0\n"
    with pytest.raises(EinError, match=message):
        einattn.grad(text, wrt)


def test_gradient_program_runs_on_the_torch_backend():
    prog = einattn.load(ROOT / "examples" / "alibi.ein")
    g = einattn.grad(prog)
    ins = _inputs(prog, 5)
    cots, want = _autograd(prog, ins, g, 5)
    out = einattn.compile(g.program, backend="torch")(
        **{n: torch.from_numpy(x) for n, x in {**ins, **cots}.items()}
    )
    _close({n: o.numpy() for n, o in zip(g.gradients, out)}, want)


def test_cli_prints_a_spec_that_checks(tmp_path):
    out = tmp_path / "g.ein"
    cmd = [sys.executable, "-m", "einattn", "grad", str(ROOT / "examples" / "causal.ein"), "--wrt", "Q,V"]
    r = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr
    prog = einattn.load(out)
    assert prog.outputs == ("dQ", "dV") and "dAV" in prog.inputs
    r = subprocess.run(
        [sys.executable, "-m", "einattn", "grad", str(ROOT / "examples" / "causal_1pass.ein")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "iterative tensor" in r.stderr and "Traceback" not in r.stderr


# ---- the conformance sets: gradients of specs written by reviewers -------------------------------------


def _conformance_sample():
    from test_conformance_more import CASES

    out = []
    for k, case in enumerate(CASES):
        prog = einattn.parse(case["spec"]).with_params(case.get("params"))
        iterative = any(t.iterative is not None for t in prog.tensors)
        if k % 2 == 0 and case["name"] not in KNOWN and not iterative:  # (half of them: CI's time)
            out.append(case)
    return out


# the torch backend fills absent keys with -inf, so a row whose present maximum is -inf ties with them and
# torch.amax gives 0.2 of the cotangent to its one present key; the derived program gives it all (below)
KNOWN = {"s14_max_min_ties_neg_inf_present_and_absent_rows"}


@pytest.mark.parametrize("case", _conformance_sample(), ids=lambda c: c["name"])
def test_conformance_cases_against_torch_autograd(case):
    prog = einattn.parse(case["spec"]).with_params(case.get("params"))
    g = einattn.grad(prog)
    ins = {n: np.asarray(v) for n, v in case["inputs"].items()}
    ins = {n: (v.astype(float) if v.dtype.kind == "f" else v) for n, v in ins.items()}
    cots, want = _autograd(prog, ins, g, 0)
    got = _derived(g, ins, cots)
    for n in want:
        assert np.array_equal(np.isfinite(got[n]), np.isfinite(want[n])), n
        fin = np.isfinite(want[n])
        np.testing.assert_allclose(got[n][fin], want[n][fin], rtol=1e-7, atol=1e-7, err_msg=n)


def test_max_of_a_row_of_minus_infinity_sends_the_whole_cotangent():
    text = "input X[p, m]\noutput D\nD[p] = X[p, m] :: max(m)  where m <= p - 1\n"
    x = np.array([[0.0, 0, 0], [-np.inf, -np.inf, 5], [1, 1, 0]])
    got = _grad_of(text, {"X": x}, {"dD": np.array([1.0, 2, 4])})
    # row 0: no key (absent, 0); row 1: its one key is the max, -inf; row 2: a tie of two keys
    _close(got, {"X": np.array([[0.0, 0, 0], [2, 0, 0], [2, 2, 0]])})


def test_documented_example_is_the_cli_output():
    doc = (ROOT / "docs" / "rewrite.md").read_text(encoding="utf-8")
    start = doc.index("$ einattn grad examples/causal.ein\n") + len("$ einattn grad examples/causal.ein\n")
    shown = doc[start : doc.index("```", start)]
    assert shown == einattn.grad(str(ROOT / "examples" / "causal.ein")).text.replace(str(ROOT) + "/", "")


def test_assert_gradients_passes_and_fails():
    from einattn.testing import NotEquivalent, assert_gradients

    assert assert_gradients(ROOT / "examples" / "alibi.ein", sizes={"P": 4, "M": 6}) < 1e-12
    assert (
        assert_gradients(ROOT / "examples" / "gqa.ein", sizes={"H": 4, "G": 2, "P": 3, "M": 5}, wrt="K")
        < 1e-12
    )
    # the one known difference (docs/rewrite.md): a row whose present maximum is -inf
    text = "input X[p, m]\noutput D\nD[p] = X[p, m] :: max(m)  where m <= p - 1\n"
    x = np.array([[0.0, 0, 0], [-np.inf, -np.inf, 5], [1, 1, 0]])
    with pytest.raises(NotEquivalent, match="gradient of `X`"):
        assert_gradients(text, inputs={"X": x})


# ---- saved forward values and the reassociation they allow ----------------------------------------------


def _with_saved(prog, ins: dict, g: einattn.Gradient, cots: dict) -> dict:
    outs = einattn.compile(prog, backend="numpy")(**ins)
    outs = dict(zip(prog.outputs, outs if isinstance(outs, tuple) else (outs,)))
    return _derived(g, {**ins, **{a: outs[n] for a, n in g.saved_inputs.items()}}, cots)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_saved_outputs_give_the_same_gradients(path):
    prog = einattn.load(path)
    g = einattn.grad(prog, saved=prog.outputs)
    assert set(g.saved) <= set(prog.outputs) and all(a in g.program.inputs for a in g.saved_inputs)
    ins = _inputs(prog, seed=4)
    cots, want = _autograd(prog, ins, g, seed=4)
    got = _with_saved(prog, ins, g, cots)
    for n in want:  # (a variant's random inputs may give NaN: in both, at the same points)
        assert np.array_equal(np.isnan(got[n]), np.isnan(want[n])), n
        np.testing.assert_allclose(np.nan_to_num(got[n]), np.nan_to_num(want[n]), rtol=1e-9, atol=1e-9)


def test_softmax_denominator_reads_the_saved_output():
    # sum_m dA * A = sum_f dAV * AV (A's one reader is AV = sum_m A * V): FlashAttention-2's D, no pass over m
    g = einattn.grad(ROOT / "examples" / "causal.ein", saved=["AV"])
    assert "dSD_A[b, h, p]      = dAV[b, h, p, f] * AV[b, h, p, f] * (-1 / SD[b, h, p])" in g.text
    assert "AV[b, h, p, f]  " not in g.text.split("output")[1]  # (AV is not recomputed)
    counted = einattn.analyze(g.program).passes["m"]
    assert counted < einattn.analyze(einattn.grad(ROOT / "examples" / "causal.ein").program).passes["m"]


def test_reassociation_with_absent_rows_and_a_denominator_present_everywhere():
    # A is absent on rows p < 2 (no key), the denominator D2 is present everywhere: sum_m dA * A is absent
    # there, and so is sum_f dO * O, since the saved O keeps its absent points (O_in, restored)
    text = """
input  S[m, p], V[m, f], B[m, p]
output O
N[m, p]  = exp(S[m, p])  where m <= p - 2
D2[p]    = exp(B[m, p])
A[m, p]  = N[m, p] / D2[p]
O[p, f]  = A[m, p] * V[m, f]
"""
    prog = einattn.parse(text)
    g = einattn.grad(prog, saved=["O"])
    flat = " ".join(g.text.split())
    assert "O[p, f] = O_in[p, f] where p - 2 >= 0" in flat
    assert "dD2_A[p] = dO[p, f] * O[p, f] * (-1 / D2[p])" in flat
    ins = _inputs(prog, seed=2, size=4)
    cots, want = _autograd(prog, ins, g, seed=2)
    _close(_with_saved(prog, ins, g, cots), want)


def test_saved_must_name_a_computed_tensor():
    with pytest.raises(EinError, match="`Q` is not a computed tensor of the spec"):
        einattn.grad(ROOT / "examples" / "causal.ein", saved=["Q"])
    with pytest.raises(EinError, match="`ZZ` is not a computed tensor"):
        einattn.grad(ROOT / "examples" / "causal.ein", saved="ZZ")


def test_cli_saved_option():
    cmd = [sys.executable, "-m", "einattn", "grad", str(ROOT / "examples" / "causal.ein"), "--saved", "AV"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    prog = einattn.parse(r.stdout)
    assert prog.inputs[-1] == "AV" and "then the saved forward values AV" in r.stdout
    r = subprocess.run([*cmd[:-1], "Q"], capture_output=True, text=True)
    assert r.returncode == 1 and "not a computed tensor" in r.stderr and "Traceback" not in r.stderr


def test_a_saved_value_keeps_its_absent_points():
    # rows p < 4 have no key: O is absent there, and arrives as 0; `O_in` restores its absence by the
    # presence analysis's constraint, so the reassociated D reads O exactly where the sum over m did
    text = """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]  where m <= p - 4
GM[p]   = S[m, p] :: max(m)
N[m, p] = exp(S[m, p] - GM[p])
D[p]    = N[m, p]
A[m, p] = N[m, p] / D[p]
O[p, f] = A[m, p] * V[m, f]
"""
    prog = einattn.parse(text)
    g = einattn.grad(prog, saved=["O"])
    assert g.saved_inputs == {"O_in": "O"}
    assert "O[p, f]      = O_in[p, f]  where p - 4 >= 0" in g.text
    assert "dD_A[p]      = dO[p, f] * O[p, f] * (-1 / D[p])" in g.text
    ins = _inputs(prog, seed=3, size=7)
    cots, want = _autograd(prog, ins, g, seed=3)
    _close(_with_saved(prog, ins, g, cots), want)
