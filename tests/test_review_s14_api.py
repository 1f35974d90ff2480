"""Session 14 review: the user-facing contract, from the outside.

Errors (located, with a caret and a hint, never a traceback; CLI exit 1 for user errors, 2 only for bugs),
call-time errors of compiled kernels on every backend, names that collide with generated code, standalone
modules (`einattn compile -o`) imported in a fresh process, and `einattn.nn.EinAttention`.

The tests that fail are findings of the review, kept as regression tests: each says what is expected and what
happened (see the docstrings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():  # the triton backend runs its kernels in the interpreter on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import einattn
from einattn.nn import EinAttention

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["numpy", "torch", "triton"]

pytestmark = [
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # the interpreter runs masked lanes in NumPy
]


def parse_error(text: str, filename: str = "t.ein") -> einattn.EinError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(einattn.EinError) as info:
            einattn.parse(text, filename)
    return info.value


def compile_quietly(spec, backend="numpy", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.compile(spec, backend=backend, **kw)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def to_backend(x, backend):
    """A torch tensor (or a Python number) as the backend takes it."""
    if backend == "numpy":
        return x.numpy() if isinstance(x, torch.Tensor) else x
    return x.to(DEVICE) if isinstance(x, torch.Tensor) else x


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


# ======================================================================================================
# 1. Errors in specs: every one is located (file:line:col), shows the line with a caret, often a hint
# ======================================================================================================

B = "input X[i]\noutput Y\n"  # most cases add line 3
LONG = "Y[i] = X[i]" + " " * 100_000 + " + Z[i]\n"

SPEC_ERRORS = [
    # (id, text, line, column, message substring, hint substring or None)
    ("empty-file", "", 1, 1, "the spec declares no output", "output NAME"),
    ("only-a-comment", "# nothing\n", 1, 1, "the spec declares no output", None),
    ("at-sign", B + "Y[i] = X[i] @ 2\n", 3, 13, "unexpected character `@`", None),
    ("times-sign", B + "Y[i] = X[i] × 2\n", 3, 13, "unexpected character `×`", "a product is `*`"),
    ("le-sign", B + "Y[i] = X[i] where i ≤ 2\n", 3, 21, "unexpected character `≤`", "`<=`"),
    ("nbsp", B + "Y[i] =\u00a0X[i]\n", 3, 7, "unexpected character", "non-breaking space"),
    ("zero-width-space", B + "Y[i] = X[i]\u200b\n", 3, 12, "unexpected character", "ASCII"),
    ("emoji", B + "Y[i] = X[i] * 😀\n", 3, 15, "unexpected character `😀`", "ASCII"),
    ("non-ascii-name", "input Xé[i]\noutput Y\nY[i] = X[i]\n", 1, 8, "unexpected character `é`", "ASCII"),
    ("nul-byte", B + "Y[i] = X[i]\x00\n", 3, 12, "unexpected character", None),
    (
        "string",
        'input X[i]\nparam C = "4"\noutput Y\nY[i] = X[i] * C\n',
        2,
        11,
        "unexpected character",
        "no strings",
    ),
    ("single-question-mark", B + "Y[i] = X[i + 1] ? 0\n", 3, 17, "unexpected character `?`", "`??`"),
    ("semicolon", "input X[i]; output Y\nY[i] = X[i]\n", 1, 11, "unexpected character `;`", None),
    ("tab-before-error", B + "\tY[i] =\tZ[i]\n", 3, 9, "undefined tensor `Z`", None),
    ("crlf", "input X[i]\r\noutput Y\r\nY[i] = Z[i]\r\n", 3, 8, "undefined tensor `Z`", None),
    ("very-long-line", B + LONG, 3, 100_015, "undefined tensor `Z`", None),
    (
        "line-after-continuation",
        B + "T[i] = X[i] \\\n   * 2\nY[i] = Z[i]\n",
        5,
        8,
        "undefined tensor `Z`",
        None,
    ),
    ("missing-equals", B + "Y[i]   X[i]\n", 3, 8, "unexpected `X`", None),
    ("unknown-reduction", B + "Y = X[i] :: sum(i)\n", 3, 13, "unexpected `sum`", "reduction operator"),
    (
        "reduction-after-filter",
        "input X[i, j]\noutput Y\nY[i] = X[i, j] where j < i :: max(j)\n",
        3,
        28,
        "unexpected `::`",
        None,
    ),
    (
        "param-without-value",
        "input X[i]\nparam C\noutput Y\nY[i] = X[i]\n",
        2,
        8,
        "unexpected end of line",
        "`=`",
    ),
    (
        "param-expression",
        "input X[i]\nparam C = 1 + 2\noutput Y\nY[i] = X[i] * C\n",
        2,
        13,
        "unexpected `+`",
        None,
    ),
    ("param-nan", "input X[i]\nparam C = nan\noutput Y\nY[i] = X[i] * C\n", 2, 11, "unexpected `nan`", None),
    (
        "unknown-dtype",
        "input X[i] : int32\noutput Y\nY[i] = X[i]\n",
        1,
        14,
        "unknown element type `int32`",
        None,
    ),
    (
        "input-twice",
        "input X[i], X[j]\noutput Y\nY[i] = X[i]\n",
        1,
        13,
        "input `X` is declared twice",
        "line 1",
    ),
    ("output-twice", B + "output Y\nY[i] = X[i]\n", 3, 8, "output `Y` is declared twice", None),
    (
        "param-twice",
        "input X[i]\nparam C = 1\nparam C = 2\noutput Y\nY[i] = X[i] * C\n",
        3,
        7,
        "param `C` is declared twice",
        None,
    ),
    (
        "input-and-param",
        "input X[i], C\nparam C = 1\noutput Y\nY[i] = X[i] * C\n",
        2,
        7,
        "`C` is both an input and a param",
        None,
    ),
    ("defined-twice", B + "Y[i] = X[i]\nY[i] = X[i] * 2\n", 4, 1, "tensor `Y` is defined twice", "line 3"),
    (
        "assign-input",
        B + "X[i] = X[i] * 2\nY[i] = X[i]\n",
        3,
        1,
        "`X` is an input and cannot be assigned",
        None,
    ),
    (
        "assign-param",
        "input X[i]\nparam T = 1\noutput Y\nT[i] = X[i]\nY[i] = T[i]\n",
        4,
        1,
        "`T` is a param and cannot be assigned",
        None,
    ),
    (
        "rank-count",
        "input X[i, j]\noutput Y\nY[i] = X[i]\n",
        3,
        8,
        "tensor `X` has 2 ranks [i, j] but is used with 1",
        None,
    ),
    ("without-indices", B + "Y[i] = X\n", 3, 8, "tensor `X` is used without indices", "`X[i]`"),
    (
        "param-indexed",
        "input X[i]\nparam C = 2\noutput Y\nY[i] = X[i] * C[i]\n",
        4,
        15,
        "`C` is not a tensor and cannot be indexed",
        None,
    ),
    ("undefined-tensor", B + "Y[i] = X[i] * Z[i]\n", 3, 15, "undefined tensor `Z`", "declare it"),
    (
        "undefined-name-typo",
        "input X[i]\nparam SLOPE = 2\noutput Y\nY[i] = X[i] * SLOP\n",
        4,
        15,
        "undefined name `SLOP`",
        "did you mean `SLOPE`?",
    ),
    ("rank-only-in-filter", B + "Y[i] = X[i] where k > 0\n", 3, 19, "undefined name `k`", "indexes none"),
    (
        "output-never-defined",
        "input X[i]\noutput YY\nY[i] = X[i]\n",
        2,
        8,
        "output `YY` is never defined",
        "did you mean `Y`?",
    ),
    ("output-is-input", B[:-1] + ", X\nY[i] = X[i]\n", 2, 11, "output `X` is an input", "copy it"),
    ("self-reference", B + "Y[i] = Y[i] + X[i]\n", 3, 8, "`Y` is defined in terms of itself", "recurrence"),
    (
        "three-cycle",
        B + "A[i] = B[i]\nB[i] = C[i]\nC[i] = A[i] + X[i]\nY[i] = A[i]\n",
        3,
        8,
        "cycle: `A` reads `B`, which reads `C`, which reads `A`",
        None,
    ),
    (
        "reduce-absent-rank",
        B + "Y = X[i] :: max(j)\n",
        3,
        17,
        "`j` does not appear on the right-hand side",
        None,
    ),
    ("reduce-twice", B + "Y = X[i] :: max(i, i)\n", 3, 20, "`i` is named twice in the reduction", None),
    ("reduce-lhs-rank", B + "Y[i] = X[i] :: max(i)\n", 3, 20, "`i` cannot be reduced", "right only"),
    ("reduce-a-size", B + "Y = X[i] :: max(I)\n", 3, 17, "`I` does not appear on the right-hand side", None),
    (
        "filter-float-tensor",
        B + "Y[i] = X[i] where X[i] > 0\n",
        3,
        19,
        "a filter compares float tensor `X`",
        "`: int`",
    ),
    (
        "filter-float-scalar",
        "input X[i], s\noutput Y\nY[i] = X[i] where s > 0\n",
        3,
        19,
        "a filter compares float tensor `s`",
        None,
    ),
    ("filter-not-condition", B + "Y[i] = X[i] where i\n", 3, 19, "a filter must be a condition", None),
    (
        "default-in-filter",
        B + "Y[i] = X[i] where (i ?? 0) > 0\n",
        3,
        20,
        "`??` cannot be used in an index or filter",
        None,
    ),
    (
        "function-in-filter",
        B + "Y[i] = X[i] where exp(i) > 0\n",
        3,
        19,
        "`exp` cannot be used in an index or filter",
        "min, max, clamp and abs",
    ),
    (
        "condition-as-value",
        B + "Y[i] = X[i] * (i < 2)\n",
        3,
        16,
        "a condition cannot be used as a value",
        None,
    ),
    ("modulo-in-value", B + "Y[i] = X[i] % 2\n", 3, 8, "`%` is for index expressions", None),
    ("nonaffine-index", B + "Y[i] = X[i * i]\n", 3, 10, "index expression is not affine", None),
    ("slash-in-index", B + "Y[i] = X[i / 2]\n", 3, 10, "`/` in an index expression", "`//`"),
    ("float-in-index", B + "Y[i] = X[i + 1.0]\n", 3, 14, "an index must be an integer, got `1.0`", None),
    (
        "floordiv-by-rank",
        "input X[i, j]\noutput Y\nY[i, j] = X[i // j, j]\n",
        3,
        18,
        "`//` in an index must be by a constant, param or size",
        None,
    ),
    (
        "huge-index",
        B + "Y[i] = X[i + 99999999999]\n",
        3,
        14,
        "integer `99999999999` is too large for an index",
        None,
    ),
    ("huge-float", B + "Y[i] = X[i] * 1e400\n", 3, 15, "number `1e400` is too large for a float64", "`inf`"),
    (
        "float-tensor-as-index",
        "input X[i], perm[i]\noutput Y\nY[i] = X[perm[i]]\n",
        3,
        10,
        "float tensor `perm` cannot be used in an index",
        None,
    ),
    ("unknown-function", B + "Y[i] = gelu(X[i])\n", 3, 8, "unknown function `gelu`", None),
    ("function-arity", B + "Y[i] = max(X[i])\n", 3, 8, "`max` takes 2 arguments, got 1", None),
    (
        "keyword-tensor",
        B + "if[i] = X[i]\nY[i] = if[i]\n",
        3,
        1,
        "`if` cannot be used as a tensor name",
        "keywords",
    ),
    (
        "keyword-rank",
        "input X[for]\noutput Y\nY[for] = X[for]\n",
        1,
        9,
        "`for` cannot be used as a rank name",
        None,
    ),
    (
        "keyword-param",
        "input X[i]\nparam None = 2\noutput Y\nY[i] = X[i]\n",
        2,
        7,
        "`None` cannot be used as a param name",
        None,
    ),
    (
        "True-as-tensor",
        "input True[i]\noutput Y\nY[i] = True[i]\n",
        1,
        7,
        "`True` cannot be used as a tensor name",
        None,
    ),
    (
        "dunder-rank",
        "input X[__i]\noutput Y\nY[__i] = X[__i]\n",
        1,
        9,
        "`__i` cannot be used as a rank name",
        "`__`",
    ),
    (
        "dunder-param",
        "input X[i]\nparam __C = 2\noutput Y\nY[i] = X[i] * __C\n",
        2,
        7,
        "`__C` cannot be used as a param name",
        None,
    ),
    (
        "reserved-word",
        "input where[i]\noutput Y\nY[i] = where[i]\n",
        1,
        7,
        "`where` cannot be used as a tensor name",
        None,
    ),
    (
        "name-too-long",
        "input " + "A" * 65 + "[i]\noutput Y\nY[i] = X[i]\n",
        1,
        7,
        "is longer than 64 characters",
        None,
    ),
    (
        "rank-without-letter",
        "input X[_1]\noutput Y\nY[_1] = X[_1]\n",
        1,
        9,
        "`_1` cannot name a rank: it has no letter",
        None,
    ),
    (
        "param-and-rank",
        "input X[c, i]\nparam c = 2\noutput Y\nY[i] = X[c, i]\n",
        2,
        7,
        "`c` is used both as a param and as a rank variable",
        None,
    ),
    (
        "tensor-and-rank",
        B + "i = X[0]\nY[i] = X[i]\n",
        3,
        1,
        "`i` is used both as a tensor and as a rank variable",
        None,
    ),
    ("size-in-declaration", "input X[M]\noutput Y\nY[m] = X[m]\n", 1, 9, "`M` is a rank size", None),
    (
        "repeated-lhs-rank",
        "input X[i, j]\noutput Y\nY[i, i] = X[i, i]\n",
        3,
        1,
        "rank `i` appears twice",
        None,
    ),
    (
        "rank-twice-in-declaration",
        "input X[m, m]\noutput Y\nY[m] = X[m, m]\n",
        1,
        7,
        "rank `m` appears twice in the declaration of `X`",
        None,
    ),
    ("lhs-arithmetic", B + "Y[2 * i] = X[i]\n", 3, 3, "a left-hand index must be a rank variable", None),
    ("unknown-rank-size", B + "Y[i, k] = X[i]\n", 3, 1, "the size of rank `k` is unknown", None),
    (
        "negative-size-param",
        "input X[i]\nparam J = -3\noutput Y\nY[j] = X[j]\n",
        2,
        7,
        "param `J` sizes a rank and must be a positive integer, got -3",
        None,
    ),
    (
        "param-too-large",
        "input X[i]\nparam C = 1e400\noutput Y\nY[i] = X[i] * C\n",
        2,
        7,
        "param `C` = 1e400 is too large",
        None,
    ),
    (
        "partition-unused",
        "input X[m]\nparam M0 = 2\nrank M = M1 * M0\noutput Y\nY[m] = X[m]\n",
        3,
        1,
        "partition `M = M1 * M0` is never used",
        None,
    ),
    (
        "partition-twice",
        "input X[m]\nparam M0 = 2\nparam N0 = 2\nrank M = M1 * M0\nrank M = N1 * N0\noutput Y\n"
        "Y[m1, m0, n1, n0] = X[m1 * M0 + m0] * X[n1 * N0 + n0]\n",
        5,
        6,
        "rank `m` is already part of a partition",
        None,
    ),
    (
        "rank-alias-itself",
        "input X[t]\nrank T = T\noutput Y\nY[t] = X[t]\n",
        2,
        1,
        "a rank cannot take its own size",
        None,
    ),
    (
        "update-without-init",
        "input X[t]\noutput F\nR[t + 1] = R[t] + X[t]\nF = R[T]\n",
        3,
        1,
        "iterative tensor `R` is updated but never initialised",
        None,
    ),
    (
        "recurrence-earlier-step",
        "input X[t]\noutput F\nR[0] = 0\nR[t + 1] = R[t - 1] + X[t]\nF = R[T]\n",
        4,
        12,
        "`R` must be read at `t` or `t + 1`",
        None,
    ),
    (
        "update-reads-itself",
        "input X[t]\noutput F\nR[0] = 0\nR[t + 1] = R[t + 1] + X[t]\nF = R[T]\n",
        4,
        12,
        "the update of `R` reads the state it is computing",
        None,
    ),
    (
        "two-iterative-indices",
        "input X[t]\noutput F\nR[0, 0] = 0\nR[t + 1, t + 1] = R[t, t] + X[t]\nF = R[T, T]\n",
        3,
        1,
        "a left-hand side may have only one iterative index",
        None,
    ),
    (
        "nested-too-deeply",
        B + "Y[i] = " + "exp(" * 150 + "X[i]" + ")" * 150 + "\n",
        3,
        8,
        "expression nested too deeply",
        "split it",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "message", "hint"),
    [c[1:] for c in SPEC_ERRORS],
    ids=[c[0] for c in SPEC_ERRORS],
)
def test_spec_errors_are_located_with_a_caret_and_a_hint(text, line, column, message, hint):
    e = parse_error(text)
    assert (e.line, e.column, e.filename) == (line, column, "t.ein"), str(e)
    assert message in e.message, str(e)
    if hint is not None:
        assert e.hint is not None and hint in e.hint, str(e)
    rendered = str(e)
    assert rendered.startswith(f"t.ein:{line}:{column}: error: "), rendered
    assert "Traceback" not in rendered
    lines = rendered.split("\n")
    if text.split("\n")[line - 1].strip():  # a blank line has nothing to put a caret under
        gutter = f"{line:>4} | "
        assert lines[1].startswith(gutter)
        caret = lines[2]
        assert caret.strip() and set(caret.strip()) == {"^"}
        assert len(caret) - len(caret.lstrip(" ")) == len(gutter) + column - 1  # under column `column`


def test_warnings_of_the_catalogue_are_rendered_like_errors():
    cases = [
        ("input X[i], U[j]\noutput Y\nY[i] = X[i]\n", "t.ein:1:13: warning: input `U` is never used"),
        (
            "input X[i]\noutput Y\nY[i] = X[i]\nU[i] = X[i] * 2\n",
            "t.ein:4:1: warning: `U` is computed but never used",
        ),
        (
            "input Q[p, e], K[m, e], B[m]\noutput S\nS[m, p] = Q[p, e] * K[m, e] * rsqrt(E) + B[m]\n",
            "t.ein:3:42: warning: this term does not vary along the summed rank `e`: "
            "the sum covers the whole "
            "right-hand side, so it is added E times",
        ),
    ]
    for text, head in cases:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            einattn.parse(text, "t.ein")
        got = [str(x.message) for x in w if issubclass(x.category, einattn.EinWarning)]
        assert len(got) == 1 and got[0].startswith(head), got


@pytest.mark.parametrize(
    ("text", "opened"),
    [
        (B + "Y[i] = (X[i]\n", "the `(` opened at line 3, column 8 is never closed"),
        (B + "Y[i] = (X[i]", "the `(` opened at line 3, column 8 is never closed"),
        (B + "Y[i] = exp((X[i])\n", "the `(` opened at line 3, column 11 is never closed"),
    ],
    ids=["paren-then-read", "no-final-newline", "two-parens"],
)
def test_an_unclosed_bracket_at_the_end_of_the_file_is_the_one_the_hint_names(text, opened):
    """BUG (low): at the end of the file the hint names the last bracket *opened*, which is closed, instead of
    the one still open: `Y[i] = (X[i]` says "the `[` opened at line 3, column 10 is never closed" although
    `X[i]` is closed and the `(` at column 8 is not (`einattn.parser._open_bracket` scans only up to the
    position of the last token, which lark reports for the end of file, so that token's `]` is not seen)."""
    e = parse_error(text)
    assert e.message == "unexpected end of file"
    assert e.hint == opened, str(e)


def test_a_trailing_backslash_at_the_end_of_the_file_does_not_blame_a_closed_bracket():
    """BUG (low): `Y[i] = X[i] \\` as the last line, without a final newline, is rejected with the hint "the
    `[` opened at line 3, column 9 is never closed": there is no open bracket (the same line with a final
    newline is accepted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        einattn.parse(B + "Y[i] = X[i] \\\n")  # accepted
        try:
            einattn.parse(B + "Y[i] = X[i] \\")
        except einattn.EinError as e:
            assert "never closed" not in (e.hint or ""), str(e)


def test_the_rank_count_message_of_a_scalar_is_readable():
    """BUG (cosmetic): a scalar read with an index (here `input X#[i]`: the `#` starts a comment, so `X` is a
    scalar) reads "tensor `X` has 0 ranks no indices (a scalar) but is used with 1"; the catalogue's form is
    "tensor T has N ranks [...] but is used with M"."""
    e = parse_error("input X#[i]\noutput Y\nY[i] = X[i]\n")
    assert e.message.startswith("tensor `X` has 0 ranks") and e.message.endswith("but is used with 1")
    assert "ranks no indices" not in e.message, e.message


def test_the_api_s_file_errors_are_ein_errors(tmp_path):
    (tmp_path / "bin.ein").write_bytes(b"\xff\xfe junk")
    (tmp_path / "bom.ein").write_bytes("\ufeffinput X[i]\noutput Y\nY[i] = X[i] * 2\n".encode())
    for call in (einattn.load, einattn.compile):
        with pytest.raises(einattn.EinError, match="no such file"):
            call(tmp_path / "missing.ein")
        with pytest.raises(einattn.EinError, match=r"bin\.ein is not UTF-8 text \(byte 0\)"):
            call(tmp_path / "bin.ein")
        with pytest.raises(einattn.EinError, match=r"cannot read .*: Is a directory"):
            call(tmp_path)
    assert einattn.load(tmp_path / "bom.ein").inputs == ("X",)  # a byte-order mark is not part of the spec
    with pytest.raises(einattn.EinError, match="no such file: output Y"):
        einattn.compile("output Y")  # a string without a newline is a path


# ---- names that generated code uses ------------------------------------------------------------------

COLLIDING = """\
input  torch[pid, lo], tl[lo], math, program[pid] : int
param  _o = 2
output forward, triton, np
np[pid]      = torch[pid, lo] * tl[lo] * math  where program[pid] >= 0
forward[pid] = np[pid] * _o
triton       = np[pid] :: max(pid)
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_names_of_generated_code_are_fine_spec_names(backend):
    """Tensors named `torch`, `tl`, `math`, `program`, `forward`, `triton`, `np`, a param `_o` and ranks named
    like the fused kernel's variables (`pid`, `lo`) compute what the reference computes."""
    prog = einattn.parse(COLLIDING)
    g = torch.Generator().manual_seed(0)
    x = {
        "torch": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "tl": torch.randn(3, generator=g, dtype=torch.float64),
        "math": 0.5,
        "program": torch.tensor([0, -1, 2, 0]),
    }
    want = compile_quietly(prog)(**{n: to_backend(v, "numpy") for n, v in x.items()})
    got = compile_quietly(prog, backend)(**{n: to_backend(v, backend) for n, v in x.items()})
    for a, b in zip(as_tuple(got), as_tuple(want)):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["_forward", "_numbers"])
def test_triton_input_named_like_a_launcher_helper(name):
    """BUG (medium): the triton launcher is `def <spec>(<inputs>): return _forward(<spec>_launch,
    _numbers(<inputs>))`, so an input named `_forward` or `_numbers` (a valid name; the torch backend takes
    it) shadows the helper and every call raises `TypeError: 'Tensor' object is not callable` from inside
    the generated module (docs/backends.md: "the launching function named so that no input has its name")."""
    spec = f"input {name}[i, j], B[j]\noutput C\nC[i] = {name}[i, j] * B[j]\n"
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    want = compile_quietly(spec)(a.numpy(), b.numpy())
    got = compile_quietly(spec, "triton")(a.to(DEVICE), b.to(DEVICE))
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)


@pytest.mark.parametrize("stem", ["torch", "tl", "triton", "INPUTS"])
def test_triton_spec_file_named_like_a_global_of_the_generated_module(tmp_path, stem):
    """BUG (medium): the triton launcher is named after the file's stem (`triton_module.module_name`), which
    only avoids keywords, digits and `_`: `torch.ein` defines `def torch(Q, K, V)` in a module that then calls
    `torch.zeros`, so `einattn.compile("torch.ein", backend="triton")` and its standalone module fail with
    `AttributeError: 'function' object has no attribute ...` (`tl.ein`, `triton.ein`, `functools.ein`,
    `INPUTS.ein`, `PARTITIONS.ein`, `tile_shape.ein`, `fitting_configs.ein` likewise). `einattn run torch.ein
    --backend triton` exits 2, "internal error"."""
    path = tmp_path / f"{stem}.ein"
    path.write_text("input X[i], Y[i]\noutput Z\nZ[i] = X[i] * Y[i] + 1\n")
    x, y = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    got = compile_quietly(path, "triton")(x.to(DEVICE), y.to(DEVICE))
    np.testing.assert_allclose(to_numpy(got), (x * y + 1).numpy(), rtol=1e-12)


def test_a_spec_without_inputs_compiles_on_every_backend():
    """BUG (low): a spec with no input (`output Y` / `Y = 3`, or `param N = 3` / `Y[n] = n * 2`) works on
    numpy and torch; the triton backend fails while compiling with `IndexError: tuple index out of range`
    (`triton_general._launcher` reads `prog.inputs[0]` for the device), a traceback, exit 2 in the CLI."""
    for spec, want in [
        ("output Y\nY = 3\n", 3.0),
        ("param N = 3\noutput Y\nY[n] = n * 2\n", [0.0, 2.0, 4.0]),
    ]:
        for backend in BACKENDS:
            out = compile_quietly(spec, backend)()
            np.testing.assert_array_equal(to_numpy(out), want)


# ---- identifier validation: no text of a spec or of its file name runs ------------------------------------


def test_code_in_a_spec_is_never_executed():
    for text in (
        B + 'Y[i] = __import__("os").system("exit 3")\n',
        B + 'Y[i] = X[i]  # """; import os; os._exit(3)\n',
        B + "Y[i] = X[i] * exec\n",
        'input X[i]\noutput Y\nY[i] = X[i]\n"""\n',
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                prog = einattn.parse(text, "t.ein")
            except einattn.EinError as e:
                assert e.line is not None
                continue
        for backend in ("torch", "triton"):  # a comment reaches no source
            k = compile_quietly(prog, backend)
            assert "os._exit" not in k.source and "import os;" not in k.source


EVIL_NAMES = [
    'x""";GLOBAL_SIDE_EFFECT=1;"""',
    'x""";GLOBAL_SIDE_EFFECT=1;#',
    'x\'\'\'";GLOBAL_SIDE_EFFECT=1;"""',
    'x"""\nGLOBAL_SIDE_EFFECT = 1\n"""',
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("stem", EVIL_NAMES, ids=["one-line", "comment", "both-quotes", "newlines"])
def test_a_file_name_cannot_inject_code_into_a_standalone_module(tmp_path, backend, stem):
    """BUG (high, torch): `einattn compile 'x\"\"\";print(1);\"\"\".ein' --backend torch -o m.py` writes
    `Spec '<rewrite of x\"\"\";print(1);\"\"\".ein>'` into the module docstring
    (`torch_backend.standalone_source`
    uses `{program.name!a}`: `ascii()` leaves `\"` alone), which closes the docstring: importing the module
    runs `print(1)`; a name with a newline makes it a SyntaxError. docs/backends.md: the header names "the
    spec (its file name, escaped)"; "no other text of the spec ... reaches the source". The triton module
    (`triton_module.spec_name`) and the in-process kernels escape the name."""
    if backend == "torch":
        from einattn.lowering.torch_backend import standalone_source
    else:
        from einattn.lowering.triton_backend import standalone_source
    path = tmp_path / f"{stem}.ein"
    path.write_text((EXAMPLES / "causal.ein").read_text())
    prog = einattn.load(path)
    for passes in ("auto", "as-written"):
        source = standalone_source(prog, passes=passes)
        namespace: dict = {"__name__": "standalone_under_test"}
        exec(compile(source, "standalone_under_test.py", "exec"), namespace)  # a SyntaxError fails too
        assert "GLOBAL_SIDE_EFFECT" not in namespace, "the file name ran as code"
        assert "GLOBAL_SIDE_EFFECT" in namespace["__doc__"]  # the name is shown, as text
    k = compile_quietly(prog, backend)  # the in-process kernel: its source is exec'ed too
    assert "GLOBAL_SIDE_EFFECT = 1" not in k.source.split("\n")


# ======================================================================================================
# 2. Call-time errors of compiled kernels
# ======================================================================================================

CALL_SPEC = (
    "input A[m, e], B[m, e], s, idx[m] : int\noutput C\nC[m] = A[m, e] * B[m, e] * s  where idx[m] >= 0\n"
)


def _r(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + len(shape)), dtype=dtype)


def _ok_args():
    return dict(
        A=_r(3, 2),
        B=_r(3, 2, seed=1),
        s=torch.tensor(0.5, dtype=torch.float64),
        idx=torch.zeros(3, dtype=torch.long),
    )


CALL_ERRORS = [
    (
        "missing",
        lambda a: {k: v for k, v in a.items() if k != "s"},
        "missing input `s`",
        "call with A=..., B=..., s=..., idx=...",
    ),
    ("unexpected", lambda a: a | {"Z": _r(3)}, "unexpected input `Z`", "A, B, s, idx"),
    (
        "dimensions",
        lambda a: a | {"A": _r(3)},
        "input `A` is declared [m, e] (2 dimensions) but was given 1 dimension, shape (3,)",
        None,
    ),
    (
        "sizes",
        lambda a: a | {"B": _r(4, 2)},
        "rank `m` has size 3 in `A` (dimension 0) but 4 in `B` (dimension 0)",
        "must agree on M",
    ),
    (
        "int-size",
        lambda a: a | {"idx": torch.zeros(5, dtype=torch.long)},
        "rank `m` has size 3 in `B` (dimension 0) but 5 in `idx` (dimension 0)",
        None,
    ),
    (
        "scalar-as-vector",
        lambda a: a | {"s": _r(1)},
        "input `s` is declared a scalar (0 dimensions) but was given 1 dimension",
        None,
    ),
    (
        "floats-for-int",
        lambda a: a | {"idx": torch.zeros(3, dtype=torch.float64)},
        "input `idx` is declared `: int` but was given",
        None,
    ),
    ("complex", lambda a: a | {"A": torch.ones(3, 2, dtype=torch.complex128)}, "complex128", None),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("change", "message", "hint"), [c[1:] for c in CALL_ERRORS], ids=[c[0] for c in CALL_ERRORS]
)
def test_call_time_errors_are_ein_errors_without_a_place(backend, change, message, hint):
    k = compile_quietly(CALL_SPEC, backend)
    args = {n: to_backend(v, backend) for n, v in change(_ok_args()).items()}
    with pytest.raises(einattn.EinError) as info:
        k(**args)
    e = info.value
    assert e.line is None and e.column is None and str(e).startswith("error: ")
    assert message in e.message, e.message
    if hint:
        assert hint in (e.hint or ""), e.hint


@pytest.mark.parametrize("backend", BACKENDS)
def test_positional_calls_and_their_errors(backend):
    k = compile_quietly(CALL_SPEC, backend)
    a = {n: to_backend(v, backend) for n, v in _ok_args().items()}
    want = to_numpy(k(**a))
    np.testing.assert_array_equal(to_numpy(k(*a.values())), want)
    with pytest.raises(
        einattn.EinError, match="5 positional inputs given but the spec declares 4: A, B, s, idx"
    ):
        k(*a.values(), a["A"])
    with pytest.raises(einattn.EinError, match="input `A` given both by position and by name"):
        k(*a.values(), A=a["A"])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_backends_refuse_integer_and_bool_tensors_for_float_inputs(backend):
    k = compile_quietly(CALL_SPEC, backend)
    for bad in (torch.ones(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool)):
        with pytest.raises(
            einattn.EinError, match=r"input `A` must be a floating-point tensor .*got torch\.(int64|bool)"
        ):
            k(**(_ok_args() | {"A": bad.to(DEVICE)}))
    for bad in (np.ones((3, 2)), None, [[1.0, 2.0]] * 3):
        with pytest.raises(einattn.EinError, match="input `A` must be a torch tensor"):
            k(**(_ok_args() | {"A": bad}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_scalars_dtypes_and_empty_ranks_equal_the_reference(backend):
    """Non-contiguous and expanded (stride 0) inputs, a 0-d tensor, a Python float or int for the scalar,
    mixed float dtypes (promoted: float64 out), int32/uint8 indices, and ranks of size 0."""
    k = compile_quietly(CALL_SPEC, backend)
    ref = compile_quietly(CALL_SPEC)
    big = _r(3, 4, seed=2)
    cases = {
        "contiguous": _ok_args(),
        "transposed": _ok_args() | {"A": _r(2, 3).T, "B": big[:, ::2]},
        "expanded": _ok_args()
        | {
            "A": _r(1, 2).expand(3, 2),
            "B": _r(2).expand(3, 2),
            "idx": torch.zeros(1, dtype=torch.long).expand(3),
        },
        "python-float": _ok_args() | {"s": 2.5},
        "python-int": _ok_args() | {"s": 2},
        "mixed-dtypes": _ok_args() | {"A": _r(3, 2).float()},
        "int32-index": _ok_args() | {"idx": torch.tensor([0, -1, 2], dtype=torch.int32)},
        "uint8-index": _ok_args() | {"idx": torch.tensor([0, 1, 2], dtype=torch.uint8)},
        "empty-m": dict(A=_r(0, 2), B=_r(0, 2), s=0.5, idx=torch.zeros(0, dtype=torch.long)),
        "empty-e": _ok_args() | {"A": _r(3, 0), "B": _r(3, 0)},
    }
    for name, a in cases.items():
        got = k(**{n: to_backend(v, backend) for n, v in a.items()})
        want = ref(**{n: to_backend(v, "numpy") for n, v in a.items()})
        if backend != "numpy":
            assert got.dtype == torch.float64, (name, got.dtype)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-12, err_msg=name)
    if backend != "numpy":  # a Python number takes the tensors' dtype
        half = {n: (v.half() if v.is_floating_point() else v) for n, v in _ok_args().items()}
        assert (
            k(**{n: to_backend(v, backend) for n, v in (half | {"s": 0.25}).items()}).dtype == torch.float16
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_sizes_that_disagree_with_a_param_or_a_partition_name_both(backend):
    fixed = "input X[w, i]\nparam W = 3\noutput Y\nY[i] = X[w, i]\n"
    with pytest.raises(einattn.EinError, match=r"rank `w` has size 4 in `X` \(dimension 0\) but param W = 3"):
        compile_quietly(fixed, backend)(to_backend(_r(4, 2), backend))
    part = (
        "input X[m], T[m1, m0]\nparam M0 = 2\nrank M = M1 * M0\noutput Y\n"
        "Y[m1, m0] = X[m1 * M0 + m0] + T[m1, m0]\n"
    )
    k = compile_quietly(part, backend)
    with pytest.raises(
        einattn.EinError,
        match=r"rank `m1` has size 2 in `T` \(dimension 0\) but the partition M = M1 \* M0 makes it 3",
    ):
        k(to_backend(_r(5), backend), to_backend(_r(2, 2), backend))


def test_torch_refuses_sparse_tensors_as_documented():
    k = compile_quietly("input A[i]\noutput C\nC[i] = A[i] * 2\n", "torch")
    with pytest.raises(
        einattn.EinError, match=r"input `A` is a torch\.sparse_coo tensor: einattn takes dense"
    ):
        k(torch.ones(3, dtype=torch.float64).to_sparse())


def test_triton_refuses_sparse_tensors_with_an_ein_error():
    """BUG (low): a sparse tensor given to the triton backend raises `NotImplementedError: Cannot access
    storage of SparseTensorImpl` from inside torch instead of the torch backend's EinError (docs/backends.md:
    "every call-time mistake ... is an einattn.EinError")."""
    k = compile_quietly("input A[i]\noutput C\nC[i] = A[i] * 2\n", "triton")
    with pytest.raises(einattn.EinError, match="sparse"):
        k(torch.ones(3, dtype=torch.float64).to_sparse().to(DEVICE))


@pytest.mark.parametrize(
    "spec",
    ["input A[i]\noutput C\nC[i] = A[i] * 2\n", EXAMPLES / "causal_1pass.ein"],
    ids=["general", "fused"],
)
def test_triton_refuses_float8_tensors_like_the_torch_backend(spec):
    """BUG (low): docs/errors.md: "`input X must be a floating-point tensor (float64, float32, float16 or
    bfloat16), got ...` | torch and triton backends: an integer (or float8, complex, bool) tensor". The torch
    backend refuses float8; the triton backend takes it: the general path returns a float8 result, the fused
    path fails inside the kernel (`InterpreterError: AssertionError("cannot cast ...")` under the
    interpreter)."""
    k = compile_quietly(spec, "triton")
    shape = (3,) if isinstance(spec, str) else (1, 2, 3, 16)
    x = torch.randn(shape).to(torch.float8_e4m3fn).to(DEVICE)
    with pytest.raises(einattn.EinError, match=r"must be a floating-point tensor .*got torch\.float8_e4m3fn"):
        k(*([x] if isinstance(spec, str) else [x, x, x]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_huge_python_integers_for_scalar_inputs_are_ein_errors(backend):
    """BUG (low): a Python int beyond int64 for an `: int` scalar (`2**70`) raises `ValueError: Overflow when
    unpacking long long`, and one beyond float64 for a float scalar (`10**400`) `OverflowError`, from torch;
    the numpy backend answers both with an EinError."""
    x = torch.arange(5, dtype=torch.float64).to(DEVICE)
    k = compile_quietly("input X[m], n : int\noutput Y\nY = X[m]  where m < n\n", backend)
    with pytest.raises(einattn.EinError, match="`n`"):
        k(x, 2**70)
    k = compile_quietly("input X[m], s\noutput Y\nY[m] = X[m] * s\n", backend)
    with pytest.raises(einattn.EinError, match="`s`"):
        k(x, 10**400)


# ---- compile-time errors (docs/errors.md, "Errors of einattn.compile and einattn.load") ---------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: einattn.compile(EXAMPLES / "causal.ein", backend="cuda"), "unknown backend `cuda`"),
        (lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={"M1": 3}), "unknown param `M1`"),
        (lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params=[64]), "params must be a dict"),
        (
            lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={4: 64}),
            "param names are strings, got 4",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={"M0": "64"}),
            "param `M0` must be a number",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={"M0": True}),
            "param `M0` must be a number",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={"M0": 0}),
            "must be a positive integer",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal_1pass.ein", params={"M0": 2**40}),
            "is too large for a rank size",
        ),
        (lambda: einattn.compile(EXAMPLES / "softcap.ein", params={"C": float("nan")}), "param `C` is NaN"),
        (lambda: einattn.compile(EXAMPLES / "softcap.ein", params={"C": 2**1100}), "param `C` = "),
        (
            lambda: einattn.compile(EXAMPLES / "causal.ein", dtype="float16"),
            "the NumPy backend computes in float32 or float64, not float16",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal.ein", backend="torch", skip_tiles="no"),
            "option skip_tiles must be True or False, got 'no'",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal.ein", backend="torch", recompute=1),
            "option recompute must be True or False, got 1",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal.ein", backend="torch", bogus=1),
            "unknown torch backend option `bogus`",
        ),
        (
            lambda: einattn.compile(EXAMPLES / "causal.ein", backend="triton", bogus=1),
            "unknown option `bogus`",
        ),
        (lambda: einattn.compile(EXAMPLES / "causal.ein", bogus=1), "unknown numpy backend option `bogus`"),
        (lambda: einattn.compile(EXAMPLES / "linear.ein", backend="triton", path="fused"), "cannot fuse"),
    ],
)
def test_compile_errors_are_ein_errors(call, message):
    with pytest.raises(einattn.EinError) as info:
        call()
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_integer_param_overridden_beyond_int64_in_a_filter(backend):
    """BUG (medium): `param W = 2` used in `where i < W`, compiled with `params={"W": 2**63}`: numpy raises
    `OverflowError: Python int too large to convert to C long`, triton `InterpreterError(OverflowError)`, and
    torch returns all zeros (every point filtered out, silently). The same value written in the spec
    (`param W = 9223372036854775808`) is read as a float and keeps every point on all three. Expected: the
    points kept (i < 2**63 is true), or an EinError naming the param."""
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    literal = compile_quietly(f"input X[i]\nparam W = {2**63}\noutput Y\nY[i] = X[i]  where i < W\n", backend)
    np.testing.assert_array_equal(to_numpy(literal(to_backend(x, backend))), [1.0, 2.0, 3.0])
    spec = "input X[i]\nparam W = 2\noutput Y\nY[i] = X[i]  where i < W\n"
    try:
        k = compile_quietly(spec, backend, params={"W": 2**63})
        out = k(to_backend(x, backend))
    except einattn.EinError:
        return  # refusing the value with a located message is fine too
    np.testing.assert_array_equal(to_numpy(out), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("declared", ["2", "2.0"])
def test_a_value_param_overridden_with_a_large_integer_is_a_float64(declared):
    """BUG (low): `params={"C": 10**300}` for a param used only as a value (docs: "a float64 number, at most
    about 1.8e308"; "the declaration's spelling decides whether a param is an integer") gives 1e300 * X on
    numpy and triton, and `OverflowError: int too big to convert` from the torch kernel's call, also for
    `param C = 2.0` (the override stays a Python int: `Program.with_params` never makes it a float)."""
    spec = f"input X[i]\nparam C = {declared}\noutput Y\nY[i] = X[i] * C\n"
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    for backend in BACKENDS:
        out = compile_quietly(spec, backend, params={"C": 10**300})(to_backend(x, backend))
        np.testing.assert_allclose(to_numpy(out), [1e300, 2e300], rtol=1e-15, err_msg=backend)


# ======================================================================================================
# 3. Standalone modules and einattn.nn.EinAttention
# ======================================================================================================

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys, warnings
    from einattn.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            rc = main(argv)
        results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
    print(json.dumps(results))
    """
)


def cli_batch(argvs: list[list[str]], cwd: Path) -> list[dict]:
    """Run `einattn.cli.main` on each argv in one fresh process (the console script's entry point, without
    paying a Python start and a torch import per command)."""
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _inputs_of(prog, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        shape = tuple(sizes[r] for r in t.ranks)
        out[n] = (
            torch.randint(0, 2, shape, generator=g)
            if t.dtype == "int"
            else torch.randn(shape, generator=g, dtype=torch.float64)
        )
    return out


STANDALONE = ["variants/18_document_mask", "sigmoid"]


def test_standalone_modules_in_a_fresh_process_equal_the_reference(tmp_path):
    """`einattn compile FILE --backend torch|triton -o m.py`, imported by a process that has never imported
    einattn; an `: int` input, a scalar given as a Python float, inputs by name."""
    argvs = []
    for spec in STANDALONE:
        for backend in ("torch", "triton"):
            out = tmp_path / f"m_{Path(spec).name}_{backend}.py"
            argvs.append(["compile", str(EXAMPLES / f"{spec}.ein"), "--backend", backend, "-o", str(out)])
    for res in cli_batch(argvs, tmp_path):
        assert res["rc"] == 0 and "wrote" in res["err"] + res["out"], res
    sizes = dict(b=1, h=4, g=2, p=5, m=7, e=3, f=2)
    inputs, want = {}, {}
    for spec in STANDALONE:
        prog = einattn.load(EXAMPLES / f"{spec}.ein")
        x = _inputs_of(prog, sizes)
        if "bias" in x:
            x["bias"] = 0.25  # a Python number for the scalar
        inputs[spec] = x
        want[spec] = as_tuple(compile_quietly(prog)(**{n: to_backend(v, "numpy") for n, v in x.items()}))
    torch.save(inputs, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import importlib, sys, torch
        sys.path.insert(0, {str(tmp_path)!r})
        assert "einattn" not in sys.modules
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        outs = {{}}
        for spec, x in inputs.items():
            stem = spec.split("/")[-1]
            t = importlib.import_module("m_" + stem + "_torch")
            r = importlib.import_module("m_" + stem + "_triton")
            launcher = getattr(r, stem) if hasattr(r, stem) else getattr(r, "ein_" + stem)
            outs[spec] = (t.forward(**x), launcher(**x))
        assert not any(m == "einattn" or m.startswith("einattn.") for m in sys.modules), "needs einattn"
        torch.save(outs, {str(tmp_path / "outputs.pt")!r})
        """
    )
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    outs = torch.load(tmp_path / "outputs.pt")
    for spec in STANDALONE:
        for got in outs[spec]:
            for g, w in zip(as_tuple(got), want[spec]):
                np.testing.assert_allclose(to_numpy(g), w, rtol=1e-10, atol=1e-12, err_msg=spec)


def test_standalone_module_errors():
    """The torch module raises ValueErrors (its `InputError`) naming the problem; the triton module too, and
    a missing argument is Python's TypeError (its launcher is a plain function)."""
    from einattn.lowering import torch_backend, triton_backend

    prog = einattn.load(EXAMPLES / "variants" / "18_document_mask.ein")
    ns: dict = {"__name__": "torch_standalone_doc_mask"}
    exec(compile(torch_backend.standalone_source(prog), "torch_standalone_doc_mask.py", "exec"), ns)
    tmod = triton_backend.load_module(triton_backend.standalone_source(prog), "review_s14_doc_mask")
    q, k, v = _r(1, 2, 5, 4), _r(1, 2, 6, 4, seed=1), _r(1, 2, 6, 3, seed=2)
    doc = torch.zeros(1, 6, dtype=torch.long)
    for fn in (ns["forward"], tmod.ein_18_document_mask):
        with pytest.raises(ValueError, match=r"rank `?e`? has size 4 in `?Q`?"):
            fn(q, _r(1, 2, 6, 5), v, doc)
        with pytest.raises(ValueError, match="must be a floating-point tensor"):
            fn(q.long(), k, v, doc)
        with pytest.raises(ValueError, match=r"declared `: int` but was given torch\.float64"):
            fn(q, k, v, doc.double())
        with pytest.raises(ValueError, match="must be a torch tensor, got ndarray"):
            fn(q.numpy(), k, v, doc)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'doc'"):
        tmod.ein_18_document_mask(q, k, v)
    with pytest.raises(ValueError, match="a rank of size 0"):
        ns["forward"](q, k[:, :, :0], v[:, :, :0], doc[:, :0])


@pytest.mark.parametrize("spec", ["gqa", "lse"])
def test_triton_standalone_module_with_an_empty_rank_refuses_or_matches(spec):
    """BUG (medium): with no key (M = 0) or an empty head dim (E = 0) the triton standalone module returns NaN
    (gqa.ein) or NaN and -inf (lse.ein), silently, where the reference and `einattn.compile(...,
    backend="triton")` return 0 at those absent points. docs/backends.md: "A standalone module (einattn
    compile) rejects ranks of size 0; the kernel from einattn.compile handles them" (the torch module
    does)."""
    from einattn.lowering import triton_backend

    prog = einattn.load(EXAMPLES / f"{spec}.ein")
    module = triton_backend.load_module(triton_backend.standalone_source(prog), f"review_s14_{spec}")
    launcher = getattr(module, spec)
    heads = (4, 2) if spec == "gqa" else (2, 2)
    for m, e in ((0, 3), (5, 0)):
        q = _r(1, heads[0], 3, e)
        kk, v = _r(1, heads[1], m, e, seed=1), _r(1, heads[1], m, 2, seed=2)
        want = as_tuple(compile_quietly(prog)(q.numpy(), kk.numpy(), v.numpy()))
        try:
            got = as_tuple(launcher(q.to(DEVICE), kk.to(DEVICE), v.to(DEVICE)))
        except ValueError as err:
            assert "size 0" in str(err)
            continue
        for g, w in zip(got, want):
            np.testing.assert_array_equal(to_numpy(g), w, err_msg=f"M={m}, E={e}")


def test_ein_attention_module():
    slope = torch.tensor([0.5, 0.25], dtype=torch.float64)
    attn = EinAttention(EXAMPLES / "alibi.ein", weights={"slope": slope})
    assert [n for n, _ in attn.named_parameters()] == ["weights.slope"] and attn.inputs == ("Q", "K", "V")
    q, k, v = _r(1, 2, 5, 3), _r(1, 2, 5, 3, seed=1), _r(1, 2, 5, 3, seed=2)
    want = compile_quietly(EXAMPLES / "alibi.ein")(q.numpy(), k.numpy(), v.numpy(), slope.numpy())
    np.testing.assert_allclose(attn(q, k, v).detach().numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(attn(K=k, V=v, Q=q).detach().numpy(), want, rtol=1e-12)
    attn(q, k, v).sum().backward()
    assert attn.weights["slope"].grad is not None and torch.isfinite(attn.weights["slope"].grad).all()
    for bad, message in [
        (lambda: attn(q, k, v, slope), "4 positional inputs given; this module takes Q, K, V"),
        (lambda: attn(q, k, v, slope=slope), "input `slope` is a weight of this module"),
        (lambda: attn(q, k, Q=q), "input `Q` given both by position and by name"),
        (lambda: attn(q, k), "missing input `V`"),
        (lambda: attn(q, k, v[..., :2, :]), "rank `m` has size 5 in `K`"),
        (
            lambda: EinAttention(EXAMPLES / "alibi.ein", weights={"nope": slope}),
            "`nope` is not an input of the spec",
        ),
        (
            lambda: EinAttention(
                EXAMPLES / "variants" / "18_document_mask.ein", weights={"doc": torch.ones(1, 4)}
            ),
            "input `doc` is declared `: int`: it cannot be a weight",
        ),
        (lambda: EinAttention(EXAMPLES / "alibi.ein", params={"M0": 4}), "unknown param `M0`"),
        (lambda: EinAttention(EXAMPLES / "alibi.ein", bogus=1), "unknown torch backend option `bogus`"),
        (lambda: EinAttention(EXAMPLES / "missing.ein"), "no such file"),
    ]:
        with pytest.raises(einattn.EinError, match=message.replace("(", r"\(").replace(")", r"\)")):
            bad()


def test_ein_attention_weight_that_is_not_a_number_is_an_ein_error():
    """BUG (low): `EinAttention(spec, weights={"slope": "x"})` raises `TypeError: new(): invalid data type
    'str'` from `torch.as_tensor`; the other construction mistakes are EinErrors naming the weight."""
    with pytest.raises(einattn.EinError, match="slope"):
        EinAttention(EXAMPLES / "alibi.ein", weights={"slope": "x"})


# ======================================================================================================
# 4. The command line, through a fresh process: exit 1 and a located message for every user error
# ======================================================================================================

UNDEFINED = "input X[i]\noutput Y\nY[i] = Z[i]\n"


def test_cli_user_errors_exit_1_with_a_located_message_and_no_traceback(tmp_path):
    (tmp_path / "undef.ein").write_text(UNDEFINED)
    (tmp_path / "empty.ein").write_text("")
    (tmp_path / "bin.ein").write_bytes(b"\xff\xfe junk")
    (tmp_path / "crlf.ein").write_bytes(b"input X[i]\r\noutput Y\r\nY[i] = X[i] * 2\r\n")
    (tmp_path / "dir.ein").mkdir()
    causal, c1 = str(EXAMPLES / "causal.ein"), str(EXAMPLES / "causal_1pass.ein")
    located = "undef.ein:3:8: error: undefined tensor `Z`\n   3 | Y[i] = Z[i]\n              ^^^^\nhint: "
    cases: list[tuple[list[str], int, str]] = []
    for command in (
        ["check"],
        ["analyze"],
        ["run"],
        ["compile"],
        ["compile", "--backend", "triton"],
        ["rewrite"],
        ["fmt"],
        ["fmt", "--check"],
        ["test", "--examples", "1"],
    ):
        cases.append(([*command, "undef.ein"], 1, located))
        cases.append(([*command, "empty.ein"], 1, "empty.ein:1:1: error: the spec declares no output"))
        cases.append(([*command, "bin.ein"], 1, "error: bin.ein is not UTF-8 text (byte 0)"))
        cases.append(([*command, "missing.ein"], 1, "error: no such file: missing.ein"))
        # (check reports a folder itself and goes on with the other files; the others refuse it in click)
        folder = "error: dir.ein is a directory" if command == ["check"] else "Invalid value for"
        cases.append(([*command, "dir.ein"], 1, folder))
    cases += [
        (["check", "crlf.ein"], 0, ""),
        (["check", "missing.ein", causal], 1, "no such file"),
        (["run", causal, "--size", "M=-1"], 1, "error: size `M` must not be negative, got -1"),
        (["run", causal, "--size", "M=abc"], 1, "error: size `M` must be an integer, got `abc`"),
        (["run", causal, "--size", "M=3", "--size", "M=4"], 1, "size `M` is given twice"),
        (["run", causal, "--size", "M=99999999999"], 1, "error: size `M` is too large: 99999999999"),
        (
            ["run", c1, "--param", "M0=0"],
            1,
            "causal_1pass.ein:3:8: error: param `M0` sizes a rank and must be a positive integer, got 0",
        ),
        (["run", c1, "--param", "M0=nan"], 1, "param `M0` is NaN"),
        (["run", causal, "--param", "ZZ=1"], 1, "error: unknown param `ZZ`"),
        (["run", causal, "--backend", "bogus"], 1, "error: unknown backend `bogus`"),
        (
            ["run", causal, "--dtype", "float16"],
            1,
            "the NumPy backend computes in float32 or float64, not float16",
        ),
        (["run", causal, "--backend", "torch", "--dtype", "int64"], 1, "error: unknown dtype `int64`"),
        (["run", causal, "--check", "--tol", "nan"], 1, "a tolerance is a finite number >= 0, got nan"),
        (["run", causal, "--seed", "-1"], 1, "Invalid value for '--seed'"),
        (
            ["compile", causal, "--backend", "numpy"],
            1,
            "error: the numpy backend cannot write a standalone module",
        ),
        (["compile", causal, "-o", str(tmp_path / "no" / "such" / "x.py")], 1, "error: cannot write"),
        (["compile", causal, "--tile", "0"], 1, "Invalid value for '--tile'"),
        (["compile", causal, "--backend", "triton", "--dtype", "int8"], 1, "option dtype must be one of"),
        (["rewrite", causal, "--rank", "zz"], 1, "error: rank `zz` does not appear in"),
        (["rewrite", causal, "--passes", "3"], 1, "Invalid value for '--passes'"),
        (["analyze", causal, "--buffer", "bogus"], 1, "error: bad buffer size `bogus`"),
        (
            ["analyze", causal, "--elem-bytes", "0"],
            1,
            "the element size must be a positive number of bytes, got 0",
        ),
        (["analyze", causal, "--dot", str(tmp_path / "no" / "x.dot")], 1, "there is no folder"),
        (["analyze"], 1, "error: no file to analyse"),
        (["fmt", causal, "--check", "--in-place"], 1, "--check and --in-place exclude each other"),
        (["test", causal, "--backends", "bogus"], 1, "error: unknown backend `bogus`"),
        (["test", causal, "--backends", ","], 1, "no backend to test in --backends"),
        (["test", causal, "--examples", "0"], 1, "Invalid value for '--examples'"),
    ]
    results = cli_batch([argv for argv, _, _ in cases], tmp_path)
    for (argv, rc, message), res in zip(cases, results):
        assert res["rc"] == rc, (argv, res)
        assert "Traceback" not in res["err"] and "internal error" not in res["err"], (argv, res["err"])
        assert message in res["err"], (argv, res["err"])


def test_the_console_script_exits_1_on_a_bad_spec(tmp_path):
    (tmp_path / "undef.ein").write_text(UNDEFINED)
    r = subprocess.run(
        ["einattn", "check", "undef.ein"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("undef.ein:3:8: error: undefined tensor `Z`") and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def cli_findings(tmp_path_factory) -> dict[str, dict]:
    """The commands of the CLI findings below, in one fresh process."""
    tmp = tmp_path_factory.mktemp("cli_findings")
    (tmp / "torch.ein").write_text((EXAMPLES / "causal.ein").read_text())
    (tmp / "const.ein").write_text("output Y\nY = 3\n")
    argvs = {
        "test-dtype": ["test", str(EXAMPLES / "causal.ein"), "--dtype", "bogus", "--examples", "1"],
        "torch-on-triton": ["run", "torch.ein", "--backend", "triton", "--default-size", "2", "--check"],
        "no-input-on-triton": ["run", "const.ein", "--backend", "triton", "--check"],
    }
    return dict(zip(argvs, cli_batch(list(argvs.values()), tmp)))


def test_cli_test_with_an_unknown_dtype_is_a_user_error(cli_findings):
    """BUG (low): `einattn test examples/causal.ein --dtype bogus` exits 2 with a traceback ("internal error:
    this is a bug in einattn") from `getattr(torch, "bogus")` in `cli_core._convert`, inside hypothesis,
    where `einattn run --backend torch --dtype bogus` says "unknown dtype" and exits 1."""
    res = cli_findings["test-dtype"]
    assert res["rc"] == 1, res["err"][-800:]
    assert "Traceback" not in res["err"] and "dtype" in res["err"]


def test_cli_run_of_a_spec_file_named_torch_on_triton_is_not_an_internal_error(cli_findings):
    """BUG (medium), the CLI side of `test_triton_spec_file_named_like_a_global_of_the_generated_module`:
    `einattn run torch.ein --backend triton` exits 2 ("internal error") with `AttributeError: 'function'
    object has no attribute 'Tensor'`."""
    res = cli_findings["torch-on-triton"]
    assert res["rc"] == 0, res["err"][-800:]
    assert "check: ok" in res["out"]


def test_cli_run_of_a_spec_without_inputs_on_triton_is_not_an_internal_error(cli_findings):
    """BUG (low), the CLI side of `test_a_spec_without_inputs_compiles_on_every_backend`: `einattn run
    const.ein --backend triton` (`output Y` / `Y = 3`) exits 2 with `IndexError: tuple index out of range`."""
    res = cli_findings["no-input-on-triton"]
    assert res["rc"] == 0, res["err"][-800:]
    assert "check: ok" in res["out"]
