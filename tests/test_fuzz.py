"""Random programs that make and consume absent points (tests/fuzz_programs.py): every torch configuration
equals the NumPy reference (float64, 1e-10), forward with and without a gradient recorded, gradients pass
gradcheck and agree across configurations, float32 within its tolerance, a kernel called again on other
sizes and non-contiguous inputs gives the same results, and triton (float32 under the interpreter without a
GPU, 1e-4; float64, 1e-7) on a few examples. Attention-shaped programs with batch and head ranks
(``head_programs``) run through the same checks.

Each bug the fuzzer found (session 8: nine, all fixed) has a regression test below. A bug found before it
is fixed is named in ``fuzz_programs.KNOWN_BUGS`` so that the property tests leave its form out meanwhile
(session 9: three triton bugs, see the comment there).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import triton_cases  # noqa: F401 (sets TRITON_INTERPRET=1 without a GPU, before anything imports triton)
from fuzz_programs import (
    KNOWN_BUGS,
    KNOWN_TORCH_BUGS,
    MORE_CONFIGS,
    data_for,
    head_data,
    head_programs,
    parse_quietly,
    programs,
    run_case,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import einattn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's exp(inf) etc. in the oracle


def _report(prog, d, failures) -> str:
    lines = [f"{config}: {msg}" for config, msg in failures]
    return "\n".join(
        [*lines, f"sizes {d['sizes']}, data {d['kind']}", prog.source.text if prog.source else ""]
    )


@given(programs(avoid=KNOWN_TORCH_BUGS), st.data())
def test_torch_equals_numpy(spec, data):
    """Default options, row_block=1, skip_tiles=False, as written, rewritten (tiles of 256 and of 2), a
    gradient recorded; numpy's rewritten form; gradcheck on normal data."""
    d = data.draw(data_for(spec.program))
    grad = d["kind"] == "normal" and data.draw(st.integers(0, 2)) == 0
    failures = run_case(spec.program, d["inputs"], grad=grad)
    assert not failures, _report(spec.program, d, failures)


@settings(max_examples=6)
@given(programs(avoid=KNOWN_BUGS, max_statements=5), st.data())
def test_triton_equals_numpy(spec, data):
    """Triton, as written and rewritten (tiles of 2), at sizes up to 4."""
    d = data.draw(data_for(spec.program, max_size=4))
    failures = run_case(
        spec.program, d["inputs"], configs={}, numpy_configs={}, grad_mode_forward=False, triton=True
    )
    assert not failures, _report(spec.program, d, failures)


@settings(max_examples=10)
@given(programs(avoid=KNOWN_TORCH_BUGS), st.data())
def test_more_configurations_gradients_and_repeated_calls(spec, data):
    """Tiles of 1 and 3, blocks of 2 rows, no blocks; the gradients of every configuration equal the
    as-written ones; one kernel called on non-contiguous inputs (int32 ids), other sizes, then the first
    again."""
    d = data.draw(data_for(spec.program))
    other = data.draw(data_for(spec.program, max_size=4))
    failures = run_case(
        spec.program,
        d["inputs"],
        configs=MORE_CONFIGS,
        numpy_configs={},
        grad_mode_forward=False,
        grad_compare=d["kind"] == "normal",
        x_other=other["inputs"],
    )
    assert not failures, _report(spec.program, d, failures)


@settings(max_examples=12)
@given(head_programs(avoid=KNOWN_TORCH_BUGS), st.data())
def test_head_programs_torch_equals_numpy(spec, data):
    """Attention-shaped programs with batch and head ranks (GQA reads, params in filters, alias ranks,
    hand-written online softmax over tiles or keys): every torch configuration, float32 at its tolerance and
    the gradients of every configuration on normal data."""
    d = data.draw(head_data(spec.program))
    normal = d["kind"] == "normal"
    grad = normal and data.draw(st.integers(0, 3)) == 0
    failures = run_case(spec.program, d["inputs"], grad=grad, float32=normal, grad_compare=normal)
    assert not failures, _report(spec.program, d, failures)


@settings(max_examples=4)
@given(head_programs(avoid=KNOWN_BUGS, streaming=True), st.data())
def test_head_programs_triton(spec, data):
    """Triton on the hand-written online softmax (the fused path where it matches), float32 and float64, and
    one kernel called on non-contiguous inputs, other sizes, then the first again."""
    d = data.draw(head_data(spec.program, max_size=4))
    other = data.draw(head_data(spec.program, max_size=3))
    failures = run_case(
        spec.program,
        d["inputs"],
        configs={},
        numpy_configs={},
        grad_mode_forward=False,
        triton=True,
        triton64=True,
        x_other=other["inputs"],
    )
    assert not failures, _report(spec.program, d, failures)


@settings(max_examples=4)
@given(programs(avoid=KNOWN_BUGS, max_statements=4, recurrence=True), st.data())
def test_triton_recurrences_in_float64(spec, data):
    """Triton in float64 (tiles of 2, and the general path) on programs with a recurrence."""
    d = data.draw(data_for(spec.program, max_size=4))
    failures = run_case(
        spec.program, d["inputs"], configs={}, numpy_configs={}, grad_mode_forward=False, triton64=True
    )
    assert not failures, _report(spec.program, d, failures)


# ---- the bugs the fuzzer found (minimal specs) -----------------------------------------------------------


def _torch_vs_numpy(text: str, x: dict, requires_grad: bool = False, **options):
    prog = parse_quietly(text)
    want = einattn.compile(prog, backend="numpy")(**x)
    xt = {n: torch.as_tensor(v).requires_grad_(requires_grad and v.dtype.kind == "f") for n, v in x.items()}
    got = einattn.compile(prog, backend="torch", **options)(**xt)
    return got.detach(), want


def test_gathered_read_is_broadcast_along_a_missing_rank():
    # found by the fuzzer, fixed in 4f7cdec: T came back [P, 1]
    got, want = _torch_vs_numpy(
        "input A[p, m], D[p, f]\noutput T\nT[p, f] = A[p, p]\n",
        {"A": np.arange(6.0).reshape(3, 2), "D": np.ones((3, 2))},
    )
    assert tuple(got.shape) == want.shape == (3, 2)
    np.testing.assert_array_equal(got.numpy(), want)


def test_gathered_reduction_is_broadcast_along_a_missing_rank():
    # the same through a reduction (T[p, m] was [1, M], and `T ?? 1` summed over m short of rows)
    got, want = _torch_vs_numpy(
        "input A[p, m], B[m, f]\noutput O\nT[p, m] = B[m // 2, f] :: min(f)\nO[p] = T[p, m] ?? 1\n",
        {"A": np.ones((3, 2)), "B": np.arange(6.0).reshape(2, 3)},
    )
    np.testing.assert_array_equal(got.numpy(), want)  # want [0, 0, 0], was [0]


def test_exp_of_a_scalar_summed_under_a_filter():
    # found by the fuzzer, fixed in a890567: `_rsum(..., zero=True)` of exp(S) skipped the filter
    got, want = _torch_vs_numpy(
        "input X[p]\noutput T\nS = X[p] :: max(p)  where p > 0\nT = exp(S)  where p < 1\n",
        {"X": np.array([1.0, 2.0, 3.0])},
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)  # want e**3, was 3 * e**3


_SOFTMAX_EMPTY_ROW = (
    "input A[p, m]\noutput T\nS[p, m] = A[p, m]  where m < p\nG[p] = S[p, m] :: max(m)\n"
    "E[p, m] = exp(S[p, m] - G[p])\nN[p] = E[p, m]\nT[p] = (N[p] ?? 0) + 1\n"
)


def test_softmax_of_an_empty_row_with_a_gradient_recorded():
    # `_exp_fresh((t_S - t_G[:, None]), _inplace, m_S, finite=True)`: G is -inf on the empty row 0, so
    # S - G is +inf there and the arithmetic fill gives NaN, which `_rsum(..., zero=True)` and
    # `N ?? 0` pass on
    got, want = _torch_vs_numpy(
        _SOFTMAX_EMPTY_ROW,
        {"A": np.array([[1.0, -2.0], [0.5, 0.25]])},
        requires_grad=True,
        passes="as-written",
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)  # want [1, 2], got [nan, 2]


def test_gradient_through_a_softmax_of_an_empty_row_is_zero():
    prog = parse_quietly(_SOFTMAX_EMPTY_ROW)
    a = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=torch.float64, requires_grad=True)
    einattn.compile(prog, backend="torch", passes="as-written")(A=a).sum().backward()
    assert torch.isfinite(a.grad).all(), a.grad  # row 0 is absent everywhere: its gradient is 0, not NaN


def test_contraction_whose_filter_is_all_true_at_run_time():
    # found by the fuzzer, fixed in b8dd875: `torch.einsum(..., _k4.to(_o[0]))` with `_k4` None at run time
    # (every point passes the filter) raised AttributeError
    got, want = _torch_vs_numpy(
        "input X[p, f], Y[f], d[p] : int\noutput T\nT[p] = X[p, f] * Y[f]  where d[f] >= 0\n",
        {"X": np.ones((3, 2)), "Y": np.ones(2), "d": np.array([0, 1, 2])},
    )
    np.testing.assert_array_equal(got.numpy(), want)  # want [2, 2, 2]


def test_contraction_is_broadcast_along_a_missing_rank():
    # `t_T = _mm("mpf,->mp", _zf(_r1, _r1m, finite=True), _r3)`: the gathered factor is [1, P, F], so T is
    # [1, P], not [M, P] (no `_store`); a later read of T along m then fails (IndexError, or a slice error)
    got, want = _torch_vs_numpy(
        "input D[p, f], B[m, f]\noutput T\nT[m, p] = D[p // 2, f] * D[0, 0]\n",
        {"D": np.arange(4.0).reshape(2, 2) + 1, "B": np.ones((3, 2))},
    )
    assert tuple(got.shape) == want.shape == (3, 2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_sum_of_present_terms_with_a_gathered_term():
    # `t_T = (_r1 + t_Y)`: `sum_of_present` takes X[I[p]] as 0 where absent (X is an input, unmasked), but
    # `_gather` clamps the index and reads X[2] at I = 5, X[0] at I = -1
    got, want = _torch_vs_numpy(
        "input X[p], Y[p], I[p] : int\noutput T\nT[p] = X[I[p]] + (Y[p] ?? 0) ?? Y[p]\n",
        {"X": np.array([1.0, 2.0, 3.0]), "Y": np.array([10.0, 20.0, 30.0]), "I": np.array([0, 5, -1])},
    )
    np.testing.assert_array_equal(got.numpy(), want)  # want [11, 20, 30], got [11, 23, 31]


_FOREIGN_RANK = (
    "input A[p, m], D[p, f]\noutput Z\nG[p] = A[p, m] :: max(m)\nE[p, m] = exp(A[p, m] - G[p])\n"
    "C[p, f] = D[p, f] * 2\nZ[p, f] = E[p, m] * C[m, f]\n"
)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_rewrite_of_a_sum_reading_a_computed_tensor_at_the_streamed_rank(backend):
    # found by the fuzzer, fixed in a881fbb: C[m, f] is absent for m >= P = 1; the rewrite kept
    # `RZ[p, 0, f] = 0` and `RZ = LZ + PZ` (no `??`): the tile m = 2, 3 has no present point, RZ turned absent
    prog = parse_quietly(_FOREIGN_RANK)
    x = {"A": np.array([[0.0, 1.0, 2.0, 3.0]]), "D": np.array([[1.0, 2.0]])}
    want = einattn.compile(prog, backend="numpy")(**x)  # as written: [[2 e**-3, 4 e**-3]]
    kernel = einattn.compile(prog, backend=backend, passes="auto", tile=2)
    got = kernel(**({k: torch.as_tensor(v) for k, v in x.items()} if backend == "torch" else x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)  # was [[0, 0]]


def test_contraction_read_by_two_sums():
    # found by the fuzzer, fixed in 1fcc83f: C's matmul was deferred into its last reader Z and consumed by
    # the earlier reader Y (`t_Y = _mm("pm,mf->pf", t_A, t_B, acc=t_D)`): NameError `t_C` in Z
    prog = parse_quietly(
        "input A[p, m], B[m, f], D[p, f]\noutput Y, Z\nC[p, f] = A[p, m] * B[m, f]\n"
        "Y[p, f] = C[p, f] + D[p, f]\nZ[p, f] = C[p, f + 1] + 1\n"
    )
    x = {"A": np.ones((2, 2)), "B": np.ones((2, 3)), "D": np.ones((2, 3))}
    want = einattn.compile(prog, backend="numpy")(**x)
    got = einattn.compile(prog, backend="torch")(**{k: torch.as_tensor(v) for k, v in x.items()})
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)


_CLAMP_EMPTY = textwrap.dedent(
    """
    import os, torch, numpy as np, warnings
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    import einattn
    warnings.simplefilter("ignore")
    prog = einattn.parse("input X[i], Y[j]\\noutput T\\nT[j] = X[clamp(j - 1, 0, I - 1)]\\n")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    got = einattn.compile(prog, backend="triton")(X=torch.zeros(0, device=dev), Y=torch.zeros(3, device=dev))
    assert got.cpu().tolist() == [0.0, 0.0, 0.0], got
    """
)


def test_triton_clamp_into_an_empty_rank_is_absent():
    # triton_expr.nonnegative takes clamp(x, lo, hi) as >= 0 when lo is; with hi = I - 1 = -1 it is -1, and
    # the general path's load has no lower-bound check: a segfault under the interpreter. In a subprocess.
    r = subprocess.run([sys.executable, "-c", _CLAMP_EMPTY], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_contraction_with_a_zeroed_factor_is_broadcast_along_a_missing_rank():
    # found by the fuzzer (bug 10): Y[f] is zeroed where the gathered D[p, I[f]] is absent, widened to the
    # statement's space but constant along m; T came back [P, 1] instead of [P, M]
    got, want = _torch_vs_numpy(
        "input A[p, m], D[p, f], I[p] : int\noutput T\nS = D[p, 0] :: min(p)  where p > 0\nY[f] = S\n"
        "T[p, m] = Y[f] * D[p, I[f]]\n",
        {"A": np.ones((2, 3)), "D": np.array([[1.0, 2.0], [3.0, 4.0]]), "I": np.array([0, 1])},
    )
    assert tuple(got.shape) == want.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)  # [[9, 9, 9], [21, 21, 21]]
