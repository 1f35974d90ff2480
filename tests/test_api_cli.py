"""The Python API and the command line: calling conventions, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import einattn
from einattn.cli import main

SPEC = """\
# two outputs: a softmax row and its log-sum-exp
input S[p, m]
output A, L
GM[p] = S[p, m] :: max(m)
N[p, m] = exp(S[p, m] - GM[p])
D[p] = N[p, m]
A[p, m] = N[p, m] / D[p]
L[p] = GM[p] + log(D[p])
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "softmax.ein"
    path.write_text(SPEC)
    return path


def test_compile_from_path_text_or_program_and_call_conventions(spec_file):
    s = np.random.default_rng(0).standard_normal((3, 4))
    want_a = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    want_l = np.log(np.exp(s).sum(1))
    for spec in (spec_file, str(spec_file), SPEC, einattn.load(spec_file)):
        a, lse = einattn.compile(spec)(S=s)
        np.testing.assert_allclose(a, want_a, rtol=1e-13)
        np.testing.assert_allclose(lse, want_l, rtol=1e-13)
    a2, _ = einattn.compile(spec_file)(s)  # positional, declaration order
    np.testing.assert_array_equal(a2, a)


def test_call_time_errors_are_ein_errors(spec_file):
    k = einattn.compile(spec_file)
    with pytest.raises(einattn.EinError, match="missing input `S`"):
        k()
    with pytest.raises(einattn.EinError, match="unexpected input `T`"):
        k(S=np.zeros((2, 2)), T=1)
    with pytest.raises(einattn.EinError, match="declared \\[p, m\\]"):
        k(S=np.zeros(3))
    with pytest.raises(einattn.EinError, match="unknown backend `cuda`"):
        einattn.compile(spec_file, backend="cuda")


def test_size_disagreement_names_rank_and_both_tensors():
    k = einattn.compile("input A[i, j], B[j]\noutput C\nC[i] = A[i, j] * B[j]\n")
    with pytest.raises(einattn.EinError) as e:
        k(A=np.zeros((2, 3)), B=np.zeros(4))
    assert "rank `j` has size 3 in `A` (dimension 1) but 4 in `B` (dimension 0)" in str(e.value)


def test_load_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(einattn.EinError, match="no such file"):
        einattn.load(tmp_path / "nope.ein")


def test_ein_error_carries_location():
    with pytest.raises(einattn.EinError) as e:
        einattn.parse("input X[i]\noutput Y\nY[i] = exp(Z[i])\n", "f.ein")
    assert (e.value.line, e.value.column) == (3, 12)
    assert str(e.value).startswith("f.ein:3:12: error: undefined tensor `Z`")
    assert "^" in str(e.value)


def test_import_does_not_pull_in_torch_or_triton():
    code = (
        "import sys, einattn; einattn.parse('input X[i]\\noutput Y\\nY[i] = X[i]\\n'); "
        "print(sorted(m for m in ('torch', 'triton') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_check_ok_and_error(spec_file, tmp_path, capsys):
    assert main(["check", str(spec_file)]) == 0
    assert "ok: inputs S[p, m]; outputs A[p, m], L[p]" in capsys.readouterr().out
    bad = tmp_path / "bad.ein"
    bad.write_text("input X[i]\noutput Y\nY[i] = X[i] +\n")
    assert main(["check", str(spec_file), str(bad)]) == 1
    cap = capsys.readouterr()
    assert f"{bad}:3:14: error: unexpected end of line" in cap.err
    assert "Traceback" not in cap.err


def test_cli_run_and_check(spec_file, capsys):
    assert main(["run", str(spec_file), "--size", "P=3", "--size", "M=5", "--check"]) == 0
    out = capsys.readouterr().out
    assert "A[3, 5]" in out and "L[3]" in out and "check: ok" in out


def test_cli_run_derives_the_size_of_a_partition_part_an_input_reads(capsys):
    """12_landmark's L[b, h, m1, e] has one key per block of M0 = 4: with M = 8 (the default), M1 is 2;
    M = 10 gives 3 (a ragged last block); a size given for M1 is kept (and checked)."""
    path = str(Path(__file__).resolve().parent.parent / "examples" / "variants" / "12_landmark.ein")
    assert main(["run", path, "--check"]) == 0
    assert "M=8" in (out := capsys.readouterr().out) and "M1=2" in out and "check: ok" in out
    assert main(["run", path, "--size", "M=10", "--check"]) == 0
    assert "M1=3" in capsys.readouterr().out
    assert main(["run", path, "--size", "M1=5"]) == 1
    assert "rank `m1` has size 5" in capsys.readouterr().err


def test_cli_user_errors_exit_1(spec_file, capsys):
    assert main(["run", str(spec_file), "--size", "Q=3"]) == 1
    assert "unknown size `Q`" in capsys.readouterr().err
    assert main(["run", str(spec_file), "--size", "P"]) == 1
    assert main(["run", str(spec_file), "--nope"]) == 1
    assert main(["frobnicate"]) == 1
    assert main(["run", str(spec_file), "--param", "X=1"]) == 1
    assert "unknown param `X`" in capsys.readouterr().err


def test_cli_internal_error_exits_2(spec_file, monkeypatch, capsys):
    import einattn.api

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(einattn.api, "load", boom)
    assert main(["check", str(spec_file)]) == 2
    assert "internal error" in capsys.readouterr().err


def test_console_script_and_module_entry_point(spec_file):
    for cmd in (["einattn"], [sys.executable, "-m", "einattn"]):
        out = subprocess.run([*cmd, "check", str(spec_file)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "einattn", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check" in out.stdout and "run" in out.stdout


def test_cli_test_passes_and_reports_a_minimal_reproducible_failure(spec_file, monkeypatch, capsys):
    assert main(["test", str(spec_file), "--backends", "numpy", "--examples", "10"]) == 0
    assert "ok: numpy == numpy on 10 random examples" in capsys.readouterr().out

    import einattn.api
    from einattn.kernel import backend_builder

    class Broken:  # wrong whenever the row is longer than 3: the failure must shrink to M = 4
        def __init__(self, prog):
            self.inner = backend_builder("numpy")(prog)

        def __call__(self, **inputs):
            a, lse = self.inner(**inputs)
            return (a + (a.shape[1] > 3), lse)

    def builder(name):
        return (lambda prog, **o: Broken(prog)) if name == "broken" else backend_builder(name)

    monkeypatch.setattr(einattn.api, "backend_builder", builder)
    einattn.api._compile_cached.cache_clear()
    try:
        assert (
            main(["test", str(spec_file), "--backends", "broken", "--examples", "30", "--max-size", "6"]) == 1
        )
    finally:
        einattn.api._compile_cached.cache_clear()
    err = capsys.readouterr().err
    assert "broken differs from the NumPy reference on output `A`" in err
    assert "sizes P=1, M=4" in err
    assert "reproduce with: einattn run" in err and "--size M=4" in err and "--check" in err


def test_the_reproduction_einattn_test_prints_fails_as_the_test_did(tmp_path, capsys):
    """`(X + 1500) - 1500` rounds in float32 by about 3e-5 of 1 + |X|: over torch's float32 tolerance 2e-5.
    `einattn test --dtype float32` fails, and the command it prints (the same dtype, inputs and tolerance)
    fails too, where a float64 run or the looser tolerance of old would have passed."""
    spec = tmp_path / "f32.ein"
    spec.write_text("input X[i]\noutput Y\nY[i] = (X[i] + 1500) - 1500\n")
    args = ["test", str(spec), "--backends", "torch", "--dtype", "float32", "--examples", "20"]
    assert main(args) == 1
    err = capsys.readouterr().err
    cmd = err.split("reproduce with: ")[1].split("\n")[0].split()
    assert cmd[:2] == ["einattn", "run"] and "--dtype" in cmd and "float32" in cmd
    assert main(cmd[1:]) == 1
    assert "differs from the NumPy reference" in capsys.readouterr().err
    assert main([*cmd[1:], "--tol", "1e-4"]) == 0


def test_every_command_reads_a_file_with_a_byte_order_mark(tmp_path, capsys):
    path = tmp_path / "bom.ein"
    spec = (Path(__file__).resolve().parent.parent / "examples" / "attention_3pass.ein").read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + spec)
    for cmd in (["check"], ["fmt"], ["rewrite"], ["analyze", "--no-rewrite"]):
        assert main([*cmd, str(path)]) == 0, cmd
    assert "Traceback" not in capsys.readouterr().err


# ---- params given to compile and analyze -------------------------------------------------------------------

ONE_PASS = Path(__file__).resolve().parent.parent / "examples" / "attention_1pass.ein"
SCALED = "input X[i]\nparam C = 2.0\nparam S = 1\noutput Y\nY[i] = X[i + S] * C\n"


def test_params_accept_numpy_numbers():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((1, 1, 4, 3)),
        rng.standard_normal((1, 1, 10, 3)),
        rng.standard_normal((1, 1, 10, 2)),
    )
    want = einattn.compile(ONE_PASS, params={"M0": 4})(q, k, v)
    for m0 in (np.int64(4), np.int32(4), np.uint8(4), np.float64(4.0)):
        np.testing.assert_array_equal(einattn.compile(ONE_PASS, params={"M0": m0})(q, k, v), want)
    y = einattn.compile(SCALED, params={"C": np.float32(0.5), "S": np.int64(0)})(X=np.array([2.0, 4.0]))
    assert y.tolist() == [1.0, 2.0]
    assert einattn.analyze(ONE_PASS, params={"M0": np.int64(8)}).sizes["M0"] == 8


@pytest.mark.parametrize(
    "params, message",
    [
        ({"M0": True}, "param `M0` must be a number, got True"),
        ({"M0": np.bool_(True)}, "param `M0` must be a number"),
        ({"M0": "4"}, "param `M0` must be a number"),
        ({"M0": 2**70}, "param `M0` = 1180591620717411303424 is too large for a rank size"),
        ({"M0": 2**31}, "too large for a rank size"),
        ([("M0", 4)], "params must be a dict of param names to numbers, got list"),
        (4, "params must be a dict of param names to numbers, got int"),
        ({4: 4}, "param names are strings"),
    ],
)
def test_bad_params_are_ein_errors(params, message):
    with pytest.raises(einattn.EinError) as e:
        einattn.compile(ONE_PASS, params=params)
    assert message in str(e.value)
    with pytest.raises(einattn.EinError):
        einattn.analyze(ONE_PASS, params=params)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"C": 2**1100}, "param `C` = about 2^1100 is too large"),
        ({"C": 10**400}, "is too large"),
        ({"S": 2**40}, "param `S` = 1099511627776 is too large for an index"),
        ({"S": 2.5}, "param `S` = 2.5 is not an integer and cannot be used in an index"),
    ],
)
def test_value_and_index_params_out_of_range_are_ein_errors(params, message):
    with pytest.raises(einattn.EinError) as e:
        einattn.compile(SCALED, params=params)
    assert message in str(e.value)
    name = next(iter(params))  # located at the declaration the value overrides
    assert (e.value.line, e.value.column) == ({"C": 2, "S": 3}[name], 7)
    assert einattn.compile(SCALED, params={"C": 2**70, "S": 0})(X=np.ones(1)).tolist() == [2.0**70]


# ---- the command line: options that were tracebacks ------------------------------------------------------


EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "attention_3pass.ein")


@pytest.mark.parametrize(
    "args, message",
    [
        (["rewrite", EXAMPLE, "--tile", "99999999999999999999"], "Invalid value for '--tile'"),
        (["run", EXAMPLE, "--default-size", "-1"], "Invalid value for '--default-size'"),
        (["run", EXAMPLE, "--seed", "-1"], "Invalid value for '--seed'"),
        (["run", EXAMPLE, "--size", "M=99999999999"], "size `M` is too large"),
        (["run", EXAMPLE, "--check", "--tol", "nan"], "a tolerance is a finite number >= 0, got nan"),
        (["run", EXAMPLE, "--check", "--tol", "-1"], "a tolerance is a finite number >= 0"),
        (["run", EXAMPLE, "--check", "--tol", "inf"], "a tolerance is a finite number >= 0"),
        (["run", EXAMPLE, "--size", "M=4", "--size", "M=8"], "size `M` is given twice"),
        (["test", EXAMPLE, "--examples", "0"], "Invalid value for '--examples'"),
        (["test", EXAMPLE, "--examples", "-1"], "Invalid value for '--examples'"),
        (["test", EXAMPLE, "--max-size", "0"], "Invalid value for '--max-size'"),
        (["test", EXAMPLE, "--backends", ""], "no backend to test"),
        (["test", EXAMPLE, "--backends", " , "], "no backend to test"),
        (
            ["test", str(ONE_PASS), "--backends", "numpy", "--param", "M0=4", "--param", "M0=8"],
            "param `M0` is given twice",
        ),
        (["analyze", EXAMPLE, "--dot", "/nonexistent-einattn-dir/x.dot"], "there is no folder"),
    ],
)
def test_cli_option_errors_exit_1_without_traceback(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_run_with_sizes_too_large_for_memory_fails_cleanly(capsys):
    assert main(["run", EXAMPLE, "--default-size", "100000"]) == 1
    err = capsys.readouterr().err
    assert "would take 2.4e+21 bytes" in err and "Traceback" not in err


# ---- `einattn run --check` compares like einattn.testing.compare ------------------------------------------


def test_compare_outputs_semantics():
    from einattn.cli_core import compare_outputs

    inf, nan = np.inf, np.nan
    assert compare_outputs([1.0, inf, nan, -inf], [1.0, inf, nan, -inf]) == 0.0
    assert compare_outputs([2.0, inf], [1.0, inf]) == 0.5  # a finite disagreement is not hidden by the inf
    assert compare_outputs([1.0, nan], [1.0, inf]) == inf
    assert compare_outputs([1.0, -inf], [1.0, inf]) == inf
    assert compare_outputs([1.0, 5.0], [1.0, inf]) == inf
    assert compare_outputs([inf, inf], [inf, inf]) == 0.0
    assert compare_outputs(np.zeros(0), np.zeros(0)) == 0.0
    assert compare_outputs(np.zeros(2), np.zeros(3)) == inf


def test_cli_run_check_sees_a_finite_difference_next_to_an_infinity(tmp_path, monkeypatch, capsys):
    """A backend that is wrong at a finite point must fail the check even where both have an inf."""
    spec = tmp_path / "inf.ein"
    spec.write_text("input X[i]\noutput Y\nY[i] = exp(X[i]) / (i - 1)\n")  # Y[1] is +inf everywhere
    import warnings

    import einattn.api
    from einattn.kernel import backend_builder

    class OffByOne:
        def __init__(self, prog):
            self.inner = backend_builder("numpy")(prog)

        def __call__(self, **inputs):
            y = self.inner(**{k: np.asarray(v) for k, v in inputs.items()})
            return np.where(np.isfinite(y), y + 1.0, y)

    def builder(name):
        return (lambda prog, **o: OffByOne(prog)) if name == "offbyone" else backend_builder(name)

    monkeypatch.setattr(einattn.api, "backend_builder", builder)
    einattn.api._compile_cached.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no numpy warning leaks from the comparison
            assert main(["run", str(spec), "--check"]) == 0
            assert "check: ok" in capsys.readouterr().out
            assert main(["run", str(spec), "--backend", "offbyone", "--check", "--tol", "0.1"]) == 1
    finally:
        einattn.api._compile_cached.cache_clear()
    cap = capsys.readouterr()
    assert "offbyone differs from the NumPy reference" in cap.err
    assert "Traceback" not in cap.err


def test_cli_test_compares_infinities_without_numpy_warnings(tmp_path, capsys):
    spec = tmp_path / "inf.ein"
    spec.write_text("input X[i]\noutput Y\nY[i] = exp(X[i]) / (i - 1)\n")  # +inf at i = 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(["test", str(spec), "--backends", "numpy", "--examples", "5"]) == 0
    assert "ok: numpy == numpy on 5 random examples" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["numpy", "torch", "triton"])
@pytest.mark.parametrize("tile", [0, -1, 2.5, "8", True])
def test_an_invalid_tile_is_a_user_error_on_every_backend(backend, tile):
    """Also where the option goes unused (numpy as written: it was accepted silently)."""
    with pytest.raises(einattn.EinError, match="tile"):
        einattn.compile(
            Path(__file__).resolve().parent.parent / "examples" / "causal.ein", backend=backend, tile=tile
        )
