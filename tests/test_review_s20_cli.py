"""A twelfth reviewer's CLI checks (session 20): specs a researcher plausibly gets wrong while writing
the attention variants of ``tests/conformance_s20/`` (differential attention's ``lambda``, a
``softmax(...)`` call, a filter before the reduction, ``**``, a float mask in a filter, a reduction inside
an expression, EDGE's ``A[k : k <= i]`` filter syntax, a gather through a float table, ...), run through
``python -m einattn analyze`` and ``python -m einattn compile FILE --backend triton -o OUT`` as
subprocesses. Each must exit with 1 and print a located ``file:line:col: error:`` message, the source line
with a caret under the offending text, a hint where the checker gives one, and no traceback; mistakes on
the command line itself (a missing file, an unknown backend, an unwritable output, a bad ``--param``) exit
with 1 and a one-line error.

``analyze`` takes several files and reports each, so one subprocess checks all the specs; ``compile`` takes
one file, so it runs on a few of them (each subprocess costs about a second).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HDR = "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]\noutput O\n"
TAIL = (
    "GM[b, h, p]    = S[b, h, m, p] :: max(m)\n"
    "EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])\n"
    "DEN[b, h, p]   = EX[b, h, m, p]\n"
    "O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]\n"
)

# name -> (spec, line, column, a piece of the message); every one of these has a hint
WITH_HINT = {
    "lambda_as_name": (
        "input  Q[p, e], K[m, e], V[m, f], lambda\noutput O\n"
        "S[m, p] = Q[p, e] * K[m, e] * lambda\nO[p, f] = S[m, p] * V[m, f]\n",
        1,
        35,
        "`lambda` cannot be used",
    ),
    "softmax_call": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]\n"
        "A[b, h, m, p] = softmax(S[b, h, m, p])\nO[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]\n",
        4,
        17,
        "unknown function `softmax`",
    ),
    "sum_reduction_operator": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]\nGM[b, h, p] = S[b, h, m, p] :: sum(m)\n"
        "O[b, h, p, f] = GM[b, h, p] * V[b, h, m, f]\n",
        4,
        32,
        "unexpected `sum`",
    ),
    "filter_before_reduction": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]\n"
        "GM[b, h, p] = S[b, h, m, p] where m <= p :: max(m)\n"
        "EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])\nDEN[b, h, p] = EX[b, h, m, p]\n"
        "O[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]\n",
        4,
        42,
        "unexpected `::`",
    ),
    "power_operator": (
        HDR
        + "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]\n"
        + "O[b, h, p, f] = S[b, h, m, p] ** 2 * V[b, h, m, f]\n",
        4,
        32,
        "unexpected `*`",
    ),
    "float_mask_in_filter": (
        "input  Q[p, e], K[m, e], V[m, f], mask[p, m]\noutput O\n"
        "S[m, p] = Q[p, e] * K[m, e] where mask[p, m] > 0.5\nO[p, f] = S[m, p] * V[m, f]\n",
        3,
        35,
        "a filter compares float tensor `mask`",
    ),
    "python_conditional": (
        "input  S[p, m]\noutput O\nO[p, m] = S[p, m] if m <= p else 0\n",
        3,
        19,
        "unexpected `if`",
    ),
    "trailing_and": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] where m <= p and\n" + TAIL,
        3,
        63,
        "unexpected end of line",
    ),
    "sqrt_sign": (
        "input  Q[p, e], K[m, e]\noutput O\nO[m, p] = Q[p, e] * K[m, e] / √E\n",
        3,
        31,
        "unexpected character `√`",
    ),
    "condition_as_value": (
        "input  S[p, m]\noutput O\nO[p, m] = S[p, m] * (m <= p)\n",
        3,
        22,
        "a condition cannot be used as a value",
    ),
    "reduce_a_left_rank": (
        "input  S[p, m]\noutput O\nO[m] = S[p, m] :: max(p, m)\n",
        3,
        26,
        "`m` cannot be reduced",
    ),
    "numpy_sum_call": ("input  S[p, m]\noutput O\nO[p] = sum(S[p, m])\n", 3, 8, "unknown function `sum`"),
    "left_index_arithmetic": (
        "input  S[p, m]\noutput O\nO[p - 1] = S[p, m]\n",
        3,
        3,
        "a left-hand index must be a rank variable",
    ),
    "unclosed_bracket_then_comment": (
        "input  Q[p, e], K[m, e]\noutput O\nO[m, p] = Q[p, e] * K[m, e  # forgot ]\n",
        3,
        26,
        "unexpected end of file",
    ),
    "in_as_name": (
        "input  in[p], W[p, q]\noutput O\nO[q] = in[p] * W[p, q]\n",
        1,
        8,
        "`in` cannot be used as a tensor name",
    ),
    "comparison_as_statement": ("input  X[i]\noutput Y\nY[i] == X[i]\n", 3, 7, "unexpected `=`"),
    "param_without_value": (
        "input  X[i]\nparam  W\noutput Y\nY[i] = X[i] * W\n",
        2,
        9,
        "unexpected end of line",
    ),
    "nan_literal": ("input  X[i]\noutput Y\nY[i] = X[i] * nan\n", 3, 15, "undefined name `nan`"),
    "filter_inside_left_side": (
        "input  S[p, m]\noutput O\nO[p, m where m <= p] = S[p, m]\n",
        3,
        8,
        "unexpected `where`",
    ),
    "edge_filter_syntax": ("input  S[p, m]\noutput O\nO[p] = S[p, m : m <= p]\n", 3, 15, "unexpected `:`"),
    "recurrence_written_backwards": (
        "input  X[t]\noutput F\nR[0] = 0\nR[t] = R[t - 1] + X[t]\nF = R[T]\n",
        4,
        1,
        "tensor `R` is defined twice",
    ),
    "gather_through_float_table": (
        "input  S[h, p, m], tb[h, n], bucket[p, m]\noutput O\n"
        "O[h, p, m] = S[h, p, m] + tb[h, bucket[p, m]]\n",
        3,
        33,
        "float tensor `bucket` cannot be used in an index",
    ),
    "partition_with_plus": (
        "input  X[m]\nparam  M0 = 4\nrank   M = M1 + M0\noutput T\nT[m1, m0] = X[m1 * M0 + m0]\n",
        3,
        15,
        "unexpected `+`",
    ),
    "two_filters": (
        "input  X[p, m]\noutput Y\nY[p] = X[p, m] where m <= p where m > 0\n",
        3,
        29,
        "unexpected `where`",
    ),
    "two_reductions": (
        "input  X[p, m, n]\noutput Y\nY[p] = X[p, m, n] :: max(m) :: min(n)\n",
        3,
        29,
        "unexpected `::`",
    ),
    "greek_letter_in_name": ("input  Xα[i]\noutput Y\nY[i] = Xα[i]\n", 1, 9, "unexpected character `α`"),
    "filter_true": ("input  X[i]\noutput Y\nY[i] = X[i] where True\n", 3, 19, "a filter must be a condition"),
    "reduction_operator_typo": (
        "input  X[i, j]\noutput Y\nY[i] = X[i, j] :: mx(j)\n",
        3,
        19,
        "unexpected `mx`",
    ),
    "reduction_inside_expression": (
        "input  S[p, m], sink\noutput O\n"
        "GM[p] = max(S[p, m] :: max(m), sink)\nO[p, m] = exp(S[p, m] - GM[p])\n",
        3,
        21,
        "unexpected `::`",
    ),
    "gqa_ratio_undeclared": (
        "input  Q[h, p, e], K[g, m, e]\noutput S\nS[h, m, p] = Q[h, p, e] * K[h // R, m, e]\n",
        3,
        34,
        "undefined name `R`",
    ),
    "unknown_size_as_value": (
        "input  Q[p, e], K[m, e]\noutput S\nS[m, p] = Q[p, e] * K[m, e] * rsqrt(D)\n",
        3,
        37,
        "undefined name `D`",
    ),
    "modulo_in_value": (
        "input  Q[p, e], K[m, e]\noutput S\nS[m, p] = Q[p, e] * K[m, e] + (p - m) % 2\n",
        3,
        31,
        "`%` is for index expressions",
    ),
    "output_name_typo": ("input  X[i]\noutput Out\nOUT[i] = X[i]\n", 2, 8, "output `Out` is never defined"),
    "exp_missing_paren": ("input  X[i]\noutput Y\nY[i] = exp(X[i]\n", 3, 15, "unexpected end of file"),
    "update_without_initialiser": (
        "input  X[t]\noutput F\nR[t + 1] = R[t] + X[t]\nF = R[T]\n",
        3,
        1,
        "iterative tensor `R` is updated but never initialised",
    ),
}

# located, with a caret, but (today) without a hint: the docs promise "often a hint", so these only check
# the rest; the report of session 20 lists them as suggestions
WITHOUT_HINT = {
    "matmul_at_sign": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] @ K[b, h, m, e]\n" + TAIL,
        3,
        31,
        "unexpected character `@`",
    ),
    "head_ranks_forgotten": (
        HDR + "S[b, h, m, p] = Q[b, h, p, e] * K[m, e]\n" + TAIL,
        3,
        33,
        "tensor `K` has 4 ranks",
    ),
    "scalar_read_per_head": (
        "input  Q[h, p, e], K[h, m, e], V[h, m, f], temp\noutput O\n"
        "S[h, m, p] = Q[h, p, e] * K[h, m, e] / temp[h]\nO[h, p, f] = S[h, m, p] * V[h, m, f]\n",
        3,
        40,
        "tensor `temp` has 0 ranks",
    ),
    "param_expression": (
        "input  X[i]\nparam  W = 2 * 3\noutput Y\nY[i] = X[i] * W\n",
        2,
        14,
        "unexpected `*`",
    ),
    "reduce_a_missing_rank": (
        "input  X[i]\noutput Y\nY = X[i] :: max(j)\n",
        3,
        17,
        "`j` does not appear on the right-hand side",
    ),
    "exp_two_arguments": (
        "input  X[i]\noutput Y\nY[i] = exp(X[i], 2)\n",
        3,
        8,
        "`exp` takes 1 argument, got 2",
    ),
    "assign_a_param": (
        "input  X[i]\nparam  C = 2\noutput Y\nC = 3\nY[i] = X[i] * C\n",
        4,
        1,
        "`C` is a param and cannot be assigned",
    ),
    "semicolon": ("input  X[i]\noutput Y\nY[i] = X[i] * 2;\n", 3, 16, "unexpected character `;`"),
    "float_param_in_index": (
        "input  X[i]\nparam  W = 2.0\noutput Y\nY[i] = X[i + W]\n",
        4,
        14,
        "param `W` = 2.0 is not an integer",
    ),
}

# hints given since this review found them missing: each must now be there
for _name in (
    "matmul_at_sign",
    "head_ranks_forgotten",
    "scalar_read_per_head",
    "reduce_a_missing_rank",
    "semicolon",
):
    WITH_HINT[_name] = WITHOUT_HINT.pop(_name)


def _einattn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run(
        [sys.executable, "-m", "einattn", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _write(tmp: Path, table: dict) -> dict[str, Path]:
    paths = {}
    for name, (text, *_rest) in table.items():
        paths[name] = tmp / f"{name}.ein"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def _blocks(out: str, paths: dict[str, Path]) -> dict[str, str]:
    """Split the output of a multi-file run into each file's part (a part starts at the file's name)."""
    starts = sorted((out.index(str(p)), name) for name, p in paths.items() if str(p) in out)
    return {
        name: out[pos : (starts[i + 1][0] if i + 1 < len(starts) else len(out))]
        for i, (pos, name) in enumerate(starts)
    }


def _check_block(block: str, path: Path, line: int, col: int, message: str, hint: bool) -> None:
    head = f"{path}:{line}:{col}: error: "
    assert head in block, f"no located error `{head}` in:\n{block}"
    assert message in block.split(head, 1)[1].splitlines()[0], block
    lines = block.splitlines()
    src = next(i for i, s in enumerate(lines) if re.match(rf"\s*{line} \| ", s))
    assert re.fullmatch(r"\s*\^+\s*", lines[src + 1]), f"no caret line under the source line:\n{block}"
    # the caret starts under the reported column
    bar = lines[src].index(" | ") + 3
    assert lines[src + 1].index("^") == bar + col - 1, block
    if hint:
        assert "\nhint: " in block, f"no hint:\n{block}"
    assert "Traceback" not in block


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s20cli")
    table = {**WITH_HINT, **WITHOUT_HINT}
    paths = _write(tmp, table)
    good = ROOT / "examples" / "causal.ein"  # one good file among the bad: still exit 1, and it is analysed
    r = _einattn("analyze", *map(str, paths.values()), str(good), cwd=tmp)
    return r, paths, good


def test_analyze_many_bad_specs_exit_1_no_traceback(analyzed):
    r, paths, _good = analyzed
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-2000:]
    assert "Traceback" not in out
    assert "Passes per rank" in out  # the good file is still analysed
    assert set(_blocks(out, paths)) == set(paths), "a bad file was not reported"


@pytest.mark.parametrize("name", sorted(WITH_HINT))
def test_analyze_located_error_with_hint(analyzed, name):
    r, paths, _ = analyzed
    _, line, col, message = WITH_HINT[name]
    _check_block(_blocks(r.stdout + r.stderr, paths)[name], paths[name], line, col, message, hint=True)


@pytest.mark.parametrize("name", sorted(WITHOUT_HINT))
def test_analyze_located_error(analyzed, name):
    r, paths, _ = analyzed
    _, line, col, message = WITHOUT_HINT[name]
    _check_block(_blocks(r.stdout + r.stderr, paths)[name], paths[name], line, col, message, hint=False)


@pytest.mark.parametrize(
    "name",
    ["lambda_as_name", "filter_before_reduction", "float_mask_in_filter", "reduction_inside_expression"],
)
def test_compile_triton_located_error(tmp_path, name):
    text, line, col, message = WITH_HINT[name]
    path = tmp_path / f"{name}.ein"
    path.write_text(text, encoding="utf-8")
    out_py = tmp_path / "x.py"
    r = _einattn("compile", str(path), "--backend", "triton", "-o", str(out_py), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    _check_block(out, path, line, col, message, hint=True)
    assert not out_py.exists(), "a module was written for a spec with an error"


@pytest.mark.parametrize(
    "args, message",
    [
        (["analyze", "missing.ein"], "no such file"),
        (["compile", "{good}", "--backend", "cuda", "-o", "x.py"], "unknown backend `cuda`"),
        (["compile", "{good}", "--backend", "triton", "-o", "no/such/dir/x.py"], "cannot write"),
        (
            ["compile", "{good}", "--backend", "triton", "--param", "NOPE=3", "-o", "x.py"],
            "unknown param `NOPE`",
        ),
        (
            ["compile", "{window}", "--backend", "triton", "--param", "W=abc", "-o", "x.py"],
            "must be a number",
        ),
        (["compile", "{tiled}", "--backend", "triton", "--param", "M0=0", "-o", "x.py"], "positive integer"),
        (["analyze", "{good}", "--size", "Z=4"], "unknown size `Z`"),
    ],
    ids=[
        "missing_file",
        "unknown_backend",
        "unwritable_output",
        "unknown_param",
        "param_not_number",
        "tile_zero",
        "unknown_size",
    ],
)
def test_command_line_mistakes_exit_1(tmp_path, args, message):
    fmt = {
        "good": str(ROOT / "examples" / "causal.ein"),
        "window": str(ROOT / "examples" / "sliding_window.ein"),
        "tiled": str(ROOT / "examples" / "attention_1pass.ein"),
    }
    r = _einattn(*(a.format(**fmt) for a in args), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "error" in out and message in out, out
    assert "Traceback" not in out


def test_crlf_and_bom_specs_are_accepted(tmp_path):
    """Specs saved on Windows (CRLF line ends, a UTF-8 byte-order mark) compile like any other."""
    path = tmp_path / "win.ein"
    path.write_bytes(b"\xef\xbb\xbfinput  X[i]\r\noutput Y\r\nY[i] = X[i] * 2  # doubled\r\n")
    r = _einattn("compile", str(path), "--backend", "triton", "-o", str(tmp_path / "x.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "x.py").exists()
