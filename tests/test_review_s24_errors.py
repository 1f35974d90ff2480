"""Session 24 outside review of einattn's error handling: a demanding new user who makes mistakes.

The quality bar (docs/errors.md): every user error is an ``EinError`` (on the command line: exit code 1 and
a located message with a hint, never a traceback); exit code 2 is reserved for bugs in einattn. The tests
marked ``# BUG, fixed`` assert the correct behaviour and failed when written (all fixed in session 24); the
others document behaviour verified to be good (typos in options, params and sizes; call-time mistakes;
malformed specs; EinAttention round trips).

CLI checks run ``python -m einattn`` as subprocesses (about a second each), so they are kept few.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from triton_cases import DEVICE  # (sets TRITON_INTERPRET=1 on a machine without a GPU)

import einattn
from einattn.nn import EinAttention

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
THREE = str(EX / "attention_3pass.ein")
ONE = str(EX / "attention_1pass.ein")
ALIBI = str(EX / "alibi.ein")
DOCMASK = str(EX / "variants" / "18_document_mask.ein")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "einattn", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
        timeout=120,
    )


def user_error(r: subprocess.CompletedProcess) -> None:
    """A user error: exit code 1, a message, no traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error" in r.stderr.lower(), r.stderr


def chain(n: int) -> str:
    """A valid spec of ``n`` statements, each reading the previous one."""
    lines = ["input X[p]", "output Y", "T0[p] = X[p]"]
    lines += [f"T{i}[p] = T{i - 1}[p] * 2" for i in range(1, n)]
    lines.append(f"Y[p] = T{n - 1}[p]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------
# einattn grad
# --------------------------------------------------------------------------------------------------------


def test_grad_cli_wrt_repeated_input_is_not_an_internal_error():
    # BUG, fixed (session 24):
    # `einattn grad examples/variants/18_document_mask.ein --wrt Q,Q` exits with code 2 and prints a
    # traceback ("internal error ... the derived gradient does not check: output `dQ_2` is declared twice";
    # the API `einattn.grad(spec, wrt=["Q", "Q"])` raises InternalError the same way). A name repeated in
    # --wrt is a user's slip: it should be taken once (exit 0, one gradient dQ) or refused with exit code 1.
    r = cli("grad", DOCMASK, "--wrt", "Q,Q")
    assert r.returncode in (0, 1), r.stderr[-1500:]
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert "output dQ\n" in r.stdout, r.stdout[:600]


def test_grad_api_wrt_repeated_input_is_not_an_internal_error():
    # BUG, fixed (session 24):
    # einattn.grad(prog, wrt=["Q", "Q"]) raises einattn.InternalError (a bug report) with the
    # gradient text "output dQ_2, dQ_2"; expected: the gradient with respect to Q once, or an EinError.
    try:
        g = einattn.grad(DOCMASK, wrt=["Q", "Q"])
    except einattn.InternalError as e:
        pytest.fail(f"internal error for a repeated wrt name: {str(e)[:200]}")
    except einattn.EinError:
        return
    assert list(g.gradients) == ["Q"]


def test_grad_cli_output_to_missing_folder_is_a_user_error(tmp_path):
    # BUG, fixed (session 24):
    # `einattn grad FILE -o /no/such/dir/x.ein` exits with code 2 and a FileNotFoundError traceback
    # ("internal error: this is a bug in einattn"); `einattn compile -o` with the same path says
    # "error: cannot write ...: No such file or directory" and exits 1. Expected: the same as compile.
    r = cli("grad", THREE, "-o", str(tmp_path / "no" / "such" / "x.ein"))
    user_error(r)
    assert "cannot write" in r.stderr


def test_grad_stages_does_not_silently_ignore_saved():
    # BUG, fixed (session 24):
    # `einattn grad examples/attention_3pass.ein --stages --saved NOPE` exits 0 and prints the same
    # stages as without --saved: the option is silently dropped with --stages (_staged_text never sees it),
    # while without --stages `--saved NOPE` is "error: `NOPE` is not a computed tensor of the spec".
    # Expected: exit code 1, either that error or one saying --saved has no effect with --stages.
    r = cli("grad", THREE, "--stages", "--saved", "NOPE")
    user_error(r)


def test_grad_of_a_long_chain_is_not_a_recursion_error():
    # BUG, fixed (session 24):
    # einattn.grad on a valid spec of 150+ chained statements (T1 = T0 * 2, T2 = T1 * 2, ...) raises
    # RecursionError from einattn/absence.py (tensor -> statement -> space -> expr -> read -> tensor,
    # about 7 frames per statement); `einattn grad` on it exits 2 with a traceback. The same spec parses,
    # analyses and compiles for numpy and torch at 1000+ statements. Expected: the gradient (or an EinError
    # saying the spec is too deep), never a RecursionError.
    try:
        g = einattn.grad(chain(200))
    except RecursionError:
        pytest.fail("RecursionError from einattn.grad on a 200-statement chain")
    except einattn.EinError:
        return
    assert list(g.gradients) == ["X"]


def test_grad_cli_wrt_integer_input_is_a_clean_error():
    # good: --wrt of an `: int` input is refused with a hint, exit code 1
    r = cli("grad", DOCMASK, "--wrt", "doc")
    user_error(r)
    assert "`doc` is an integer input: it has no gradient" in r.stderr
    assert "hint:" in r.stderr


# --------------------------------------------------------------------------------------------------------
# the other commands
# --------------------------------------------------------------------------------------------------------


def test_check_keeps_checking_after_a_directory():
    # BUG, fixed (session 24):
    # `einattn check --help` says "every file is checked either way", but
    # `einattn check examples/alibi.ein examples examples/causal.ein` (as `einattn check examples/*` gives,
    # since examples/ holds the folders errors/ and variants/) checks no file at all: click refuses the whole
    # command ("Invalid value for 'FILES...': File 'examples' is a directory"). A missing file among them is
    # reported and the others checked. Expected: the two specs get their "ok" line, the folder an error, rc 1.
    r = cli("check", str(EX / "alibi.ein"), str(EX), str(EX / "causal.ein"))
    assert r.returncode == 1
    assert "alibi.ein: ok" in r.stdout and "causal.ein: ok" in r.stdout, (r.stdout, r.stderr)


def test_run_size_of_a_param_points_to_param():
    # BUG, fixed (session 24):
    # `einattn run examples/attention_1pass.ein --size M0=4` says "unknown size `M0`" with the hint
    # "the sizes of this spec's inputs are: B, H, P, E, M, F", while `einattn analyze` on the same mistake
    # says "`M0` is a param, not a free size / hint: override it as a param: --param M0=4". Expected the
    # same helpful hint from run.
    r = cli("run", ONE, "--size", "M0=4")
    user_error(r)
    assert "--param M0=4" in r.stderr, r.stderr


def test_param_that_is_a_rank_size_points_to_size():
    # BUG, fixed (session 24):
    # `einattn run examples/attention_3pass.ein --param M=64` (the sequence length given as a param)
    # says "unknown param `M` / hint: the spec declares these params: none": the hint does not say that M
    # is the size of rank m, set with --size M=64 (or by the inputs' shapes). Expected a hint naming --size.
    r = cli("run", THREE, "--param", "M=64")
    user_error(r)
    assert "--size M=64" in r.stderr, r.stderr


def test_run_float16_on_the_default_backend_has_a_hint():
    # BUG, fixed (session 24):
    # `einattn run --help` lists float16 and bfloat16 for --dtype, but with the default backend
    # (numpy) `--dtype float16` is "error: the NumPy backend computes in float32 or float64, not float16"
    # with no hint (an unknown dtype such as float8 gets "hint: use float64 or float32"); the run's header
    # line is printed to stdout before the error. Expected a hint that names --backend torch (or triton).
    r = cli("run", THREE, "--dtype", "float16")
    user_error(r)
    assert "hint:" in r.stderr and "--backend" in r.stderr, r.stderr


def test_analyze_bad_sizes_are_clean_errors():
    # good: a size that is not a number, or names no rank, is exit code 1 with a message (and a hint)
    r = cli("analyze", THREE, "--size", "M=abc")
    user_error(r)
    assert "size `M` must be an integer, got `abc`" in r.stderr
    r = cli("analyze", THREE, "--size", "Z=4", "--json")
    user_error(r)
    assert "unknown size `Z`" in r.stderr and "hint: the sizes of this spec are: B, H, P, E, M, F" in r.stderr


def test_compile_output_to_a_directory_or_missing_folder_is_a_user_error(tmp_path):
    # good: einattn compile -o DIR and -o MISSING/x.py are exit code 1 without a traceback
    user_error(cli("compile", THREE, "-o", str(tmp_path)))
    r = cli("compile", THREE, "-o", str(tmp_path / "missing" / "x.py"))
    user_error(r)
    assert "cannot write" in r.stderr


# --------------------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------------------


def test_param_literal_beyond_float_precision_is_too_large_not_a_float():
    # BUG, fixed (session 24):
    # docs/language.md (`param`): "A param in an index or that sets a size is at most 2^31 - 1; an
    # integer literal too long for that is reported as too large, not read as a float". A tile
    # `param M0 = 9007199254740993` (16 digits) is reported as
    # "param `M0` = 9007199254740992.0 is not an integer and cannot be used in an index": read as a float
    # (and shown rounded), whereas `param M0 = 2147483648` gives "is too large for a rank size". Expected
    # "too large" for every integer literal beyond 2^31 - 1.
    spec = (
        "input  K[m, e]\nparam M0 = 9007199254740993\nrank M = M1 * M0\noutput S\n"
        "S[m1, m0] = K[m1 * M0 + m0, e]\n"
    )
    with pytest.raises(einattn.EinError) as info:
        einattn.parse(spec, "tile.ein")
    assert "too large" in str(info.value), str(info.value)
    assert "not an integer" not in str(info.value)


def test_lone_carriage_returns_are_line_endings_or_hinted():
    # BUG, fixed (session 24):
    # CRLF files parse, but a file with old Mac line endings (a lone "\r") is
    # "x.ein:1:24: error: unexpected character '\r'" with no hint, and the "line 1" shown under it is the
    # whole file. Expected: "\r" read as a line ending, or a hint about the line endings.
    src = "input  Q[p, e], K[m, e]\routput S\rS[m, p] = Q[p, e] * K[m, e]\r"
    try:
        einattn.parse(src, "x.ein")
    except einattn.EinError as e:
        assert e.hint is not None and "line" in e.hint.lower(), str(e)


def test_form_feed_line_is_blank_or_shown():
    # BUG, fixed (session 24):
    # a form feed is whitespace at the end of a line (`A[p] = X[p]\f` parses), but a line holding only
    # a form feed (a page break, as Python sources have) is "x.ein:2:2: error: unexpected end of line"
    # with no source line and no caret under it. Expected: a blank line (parses), or the located line shown.
    src = "input X[p]\n\f\noutput A\nA[p] = X[p]\n"
    try:
        einattn.parse(src, "x.ein")
    except einattn.EinError as e:
        assert "^" in str(e), str(e)


def test_malformed_specs_are_located():
    # good: an empty spec, a non-ASCII operator, a number beyond float64 and a too-deep expression are
    # EinErrors with a line, a column and a hint; Windows line endings and tabs parse
    base = "input  Q[p, e], K[m, e]\noutput S\nS[m, p] = Q[p, e] * K[m, e]\n"
    einattn.parse(base.replace("\n", "\r\n"), "crlf.ein")
    einattn.parse(base.replace(" ", "\t"), "tabs.ein")
    cases = {
        "": (1, 1, "declares no output"),
        base.replace("* K", "× K"): (3, 19, "unexpected character `×`"),
        base[:-1] + " * 1e999\n": (3, 31, "too large for a float64"),
        "input X[p]\noutput Y\nY[p] = " + "-" * 3000 + "X[p]\n": (3, 8, "nested too deeply"),
    }
    for src, (line, col, text) in cases.items():
        with pytest.raises(einattn.EinError) as info:
            einattn.parse(src, "x.ein")
        e = info.value
        assert text in e.message, str(e)
        assert (e.line, e.column) == (line, col), str(e)
        assert e.hint, str(e)


# --------------------------------------------------------------------------------------------------------
# the Python API: compile, params, options
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, 5, Path(THREE)])
def test_parse_and_compile_refuse_non_text_specs_clearly(spec):
    # BUG, fixed (session 24):
    # einattn.compile(None) / einattn.compile(5) / einattn.parse(None) raise
    # "AttributeError: 'NoneType' object has no attribute 'rstrip'", and einattn.parse(Path("x.ein")) (a
    # path given to parse instead of load) "AttributeError: 'PosixPath' object has no attribute 'rstrip'".
    # Expected an EinError (or a TypeError) that says what a spec is (a Program, a path or .ein text) and,
    # for parse, to use einattn.load for a file.
    for f in (einattn.parse, einattn.compile):
        if f is einattn.compile and isinstance(spec, Path):
            continue  # (compile takes a path)
        try:
            f(spec)
        except (einattn.EinError, TypeError) as e:
            assert "rstrip" not in str(e), str(e)
        except AttributeError as e:
            pytest.fail(f"{f.__name__}({spec!r}): AttributeError: {e}")


def test_compile_of_an_empty_string_does_not_read_the_current_folder():
    # BUG, fixed (session 24):
    # einattn.compile("") says "error: cannot read .: Is a directory": the empty string is taken for
    # a path and Path("") is the current folder. einattn.parse("") says "the spec declares no output".
    # Expected a message about the empty spec, not about reading ".".
    with pytest.raises(einattn.EinError) as info:
        einattn.compile("")
    assert "cannot read ." not in str(info.value), str(info.value)


def test_param_and_option_mistakes_are_ein_errors():
    # good: params given wrongly and options mistyped are EinErrors with a clear message
    bad_params = [
        ({"M0": "64"}, "must be a number"),
        ({"M0": -64}, "must be a positive integer"),
        ({"M0": 2.5}, "must be a positive integer"),
        ({"M00": 64}, "unknown param `M00`"),
        ([("M0", 64)], "params must be a dict"),
    ]
    for params, text in bad_params:
        with pytest.raises(einattn.EinError, match=text):
            einattn.compile(ONE, params=params)
    with pytest.raises(einattn.EinError) as info:
        einattn.compile(ONE, params={"M0": 0})
    assert info.value.line == 3 and "^^" in str(info.value)  # located at the param's declaration
    bad_options = [
        ("numpy", {"passes": "two"}, "passes must be"),
        ("numpy", {"dtype": "fp32"}, "unknown dtype"),
        ("numpy", {"row_block": 8}, "unknown numpy backend option `row_block`"),
        ("torch", {"tile": 0}, "option tile must be a positive integer"),
        ("torch", {"tile": "64"}, "option tile must be a positive integer"),
        ("torch", {"row_block": -1}, "option row_block must be"),
        ("torch", {"library": "yes"}, "option library must be True or False"),
        ("torch", {"dtype": "int32"}, "unknown dtype `int32`"),
        ("triton", {"library": "yes"}, "unknown option `library` for the triton backend"),
        ("triton", {"path": "fast"}, "path must be"),
        ("triton", {"tile": "64"}, "tile must be a whole number"),
        ("triton", {"smem_limit": -1}, "option smem_limit must be a positive integer"),
    ]
    for backend, options, text in bad_options:
        with pytest.raises(einattn.EinError, match=text):
            einattn.compile(THREE, backend=backend, **options)


@pytest.mark.parametrize("value", [("Z",), ["AV"], 5])
def test_triton_float32_option_is_validated(value):
    # BUG, fixed (session 24):
    # the triton option `float32` (docs/backends.md: "names of inputs and outputs kept in float32") is
    # never checked: float32=("Z",) (no such tensor) compiles silently, float32=["AV"] raises
    # "TypeError: unhashable type: 'list'" and float32=5 "TypeError: 'int' object is not iterable".
    # Expected: an EinError naming the bad value (unknown name, or not a tuple of names); a list of valid
    # names could also simply be accepted.
    try:
        einattn.compile(THREE, backend="triton", float32=value)
    except einattn.EinError:
        return
    except TypeError as e:
        pytest.fail(f"float32={value!r}: TypeError: {e}")
    assert value == ["AV"], f"float32={value!r} was accepted silently"


def test_triton_float32_option_string_is_not_split_into_letters():
    # BUG, fixed (session 24):
    # einattn.compile(spec, backend="triton", float32="AV") keeps the tensors `A` and `V` in float32,
    # not the output AV: the string is iterated letter by letter (tuple("AV")), and the generated module says
    # FLOAT32 = ('A', 'V'); a float16 call then returns float16 although AV was asked for in float32.
    # Expected: the string read as one name (FLOAT32 = ('AV',)) or an EinError asking for a tuple of names.
    try:
        k = einattn.compile(THREE, backend="triton", float32="AV")
    except einattn.EinError:
        return
    assert "FLOAT32 = ('AV',)" in k.source, [ln for ln in k.source.splitlines() if "FLOAT32 =" in ln]


# --------------------------------------------------------------------------------------------------------
# call time
# --------------------------------------------------------------------------------------------------------


def test_call_time_mistakes_are_ein_errors():
    # good: wrong shapes, missing and extra inputs, numpy arrays to torch, ints for floats and floats for
    # ints are EinErrors that say what is wrong; empty ranks run
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 16, 4), torch.randn(1, 2, 16, 5)
    kt = einattn.compile(THREE, backend="torch")
    cases = [
        (lambda: kt(q, k), "missing input `V`"),
        (lambda: kt(q, k, v, W=v), "unexpected input `W`"),
        (lambda: kt(q, k, v, Q=q), "given both by position and by name"),
        (lambda: kt(q[0], k, v), "declared [b, h, p, e] (4 dimensions) but was given 3 dimensions"),
        (lambda: kt(q, k, v[:, :, :15]), "rank `m` has size 16 in `K` (dimension 2) but 15 in `V`"),
        (lambda: kt(q.numpy(), k, v), "must be a torch tensor, got ndarray"),
        (lambda: kt(q.long(), k, v), "must be a floating-point tensor"),
        (lambda: kt(1.0, k, v), "must be a torch tensor, got float"),
    ]
    for call, text in cases:
        with pytest.raises(einattn.EinError) as info:
            call()
        assert text in str(info.value), str(info.value)
        assert info.value.line is None
    assert kt(q, k[:, :, :0], v[:, :, :0]).abs().max() == 0  # no key: absent, delivered as 0
    kd = einattn.compile(DOCMASK)
    qn = np.ones((1, 1, 4, 2))
    with pytest.raises(einattn.EinError, match=r"input `doc` is declared `: int` but was given float64"):
        kd(qn, qn, qn, np.zeros((1, 4)))


def test_dimension_count_message_is_grammatical():
    # BUG, fixed (session 24):
    # a rank-1 input given 2 dimensions says "input `slope` is declared [h] (1 dimensions) but was
    # given 2 dimensions": "1 dimensions". Expected "(1 dimension)", as "was given 1 dimension" already is.
    kt = einattn.compile(ALIBI, backend="torch")
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(einattn.EinError) as info:
        kt(q, q, q, torch.ones(2, 2))
    assert "(1 dimension)" in str(info.value), str(info.value)


def test_torch_backend_numpy_input_has_a_hint():
    # BUG, fixed (session 24):
    # a NumPy array given to the torch backend is "error: input `Q` must be a torch tensor, got
    # ndarray" with no hint; the triton backend adds one. Expected a hint such as torch.from_numpy(...).
    kt = einattn.compile(THREE, backend="torch")
    q = np.ones((1, 1, 4, 2), dtype=np.float32)
    with pytest.raises(einattn.EinError) as info:
        kt(q, q, q)
    assert info.value.hint, str(info.value)


def test_torch_uint64_index_values_beyond_int64_are_not_wrapped():
    # BUG, fixed (session 24):
    # an `: int` input given as a torch.uint64 tensor holding 2**63 is read modulo 2**64 (as -2**63)
    # by the torch backend: `Y[p] = X[p] where I[p] > 0` returns 0 at that point (the filter is false),
    # silently. The NumPy backend refuses the same values ("input `I` is 9223372036854775808, beyond a
    # 64-bit integer's range", docs/errors.md: "uint64 values from 2**63 on (they are not read modulo
    # 2**64)"). Expected: the same EinError from torch, or the right answer (1 at that point).
    spec = "input X[p], I[p] : int\noutput Y\nY[p] = X[p] where I[p] > 0\n"
    i = torch.tensor([2**63, 1], dtype=torch.uint64)
    with pytest.raises(einattn.EinError):
        einattn.compile(spec)(np.ones(2), np.array([2**63, 1], dtype=np.uint64))
    try:
        y = einattn.compile(spec, backend="torch")(torch.ones(2), i)
    except einattn.EinError:
        return
    assert y.tolist() == [1.0, 1.0], y


# --------------------------------------------------------------------------------------------------------
# EinAttention
# --------------------------------------------------------------------------------------------------------


def test_ein_attention_with_a_backend_option_is_an_ein_error():
    # BUG, fixed (session 24):
    # EinAttention("examples/alibi.ein", backend="triton") raises "TypeError: einattn.api.compile() got
    # multiple values for keyword argument 'backend'" (the options pass through to compile, which already
    # has backend="torch"). Expected an EinError saying EinAttention runs the torch backend.
    try:
        EinAttention(ALIBI, backend="triton")
    except einattn.EinError as e:
        assert "backend" in str(e)
    except TypeError as e:
        pytest.fail(f"TypeError: {e}")


def test_ein_attention_mistakes_and_state_dict_round_trip():
    # good: wrong params, weights and forward inputs are EinErrors; the state dict and torch.save round trip
    with pytest.raises(einattn.EinError, match="must be a number"):
        EinAttention(str(EX / "causal_1pass.ein"), params={"M0": "16"})
    with pytest.raises(einattn.EinError, match="`slop` is not an input"):
        EinAttention(ALIBI, weights={"slop": torch.ones(2)})
    with pytest.raises(einattn.EinError, match="weights must map input names"):
        EinAttention(ALIBI, weights=[torch.ones(2)])
    m = EinAttention(ALIBI, weights={"slope": torch.full((2,), 0.5)})
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(einattn.EinError, match="is a weight of this module"):
        m(q, q, q, slope=torch.ones(2))
    with pytest.raises(einattn.EinError, match="missing input `V`"):
        m(q, q)
    with pytest.raises(einattn.EinError, match="rank `h` has size 2 in `V`"):
        EinAttention(ALIBI, weights={"slope": torch.ones(3)})(q, q, q)
    out = m(q, q, q)
    m2 = EinAttention(ALIBI, weights={"slope": torch.zeros(2)})
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(q, q, q), out)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m3 = torch.load(buf, weights_only=False)
    torch.testing.assert_close(m3(q, q, q), out)


def test_triton_call_on_cpu_tensors_without_interpreter_is_explained():
    # good: without TRITON_INTERPRET the triton backend refuses CPU tensors with a hint (run in a fresh
    # process, since the variable is read when the kernel is compiled)
    if DEVICE != "cpu":
        pytest.skip("a GPU is present")
    code = (
        "import torch, einattn\n"
        f"k = einattn.compile({THREE!r}, backend='triton')\n"
        "q = torch.randn(1, 1, 4, 4)\n"
        "try:\n    k(q, q, q)\nexcept einattn.EinError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "the triton backend runs on CUDA tensors" in r.stdout, r.stdout + r.stderr[-1500:]
    assert "hint: set TRITON_INTERPRET=1" in r.stdout
