"""Robustness of the front end: malformed input always gives a located EinError or a valid program.

Mutations of valid specs (deleted, duplicated and replaced tokens, swapped indices, wrong arities, unknown
names, huge numbers, unicode, very long lines, deep nesting) and random bytes must never produce a Python
traceback. A name that could smuggle code into generated source is rejected by the front end.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import einattn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent / "shared" / "conformance"))

SEEDS = [p.read_text() for p in sorted((ROOT / "examples").glob("*.ein"))]
TOKENS = [
    "[",
    "]",
    "(",
    ")",
    ",",
    "=",
    "::",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "??",
    "where",
    "and",
    "or",
    "not",
    "0",
    "1",
    "-inf",
    "inf",
    "m",
    "p",
    "M",
    "P",
    "m1",
    "M1",
    "x",
    "__import__",
    "é",
    "\n",
    "#",
    "<=",
    "==",
    "1e999",
    "99999999999999999999",
    "input",
    "output",
    "param",
    "rank",
    ":",
    "int",
    "X[",
    "]]",
    "exp(",
    "T[m1 + 1, p]",
    "T[0, p]",
    "os.system('ls')",
    '"',
    "\\",
    "\t",
    "\x00",
    "😀",
    "Q[b, h, p]",
    "K[m]",
]


def _outcome(text: str) -> None:
    """Parse ``text``: a Program, or an EinError located inside the text. Anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            einattn.parse(text, "f.ein")
        except einattn.EinError as e:
            if e.span is not None:
                n_lines = max(1, len(text.splitlines()))
                assert 1 <= e.line <= n_lines, (e.line, text)
                assert e.column >= 1
            str(e)  # rendering must not fail either


@st.composite
def mutated_specs(draw):
    words = draw(st.sampled_from(SEEDS)).split(" ")
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, len(words) - 1))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]))
        if op == "delete" and len(words) > 1:
            del words[k]
        elif op == "insert":
            words.insert(k, draw(st.sampled_from(TOKENS)))
        elif op == "replace":
            words[k] = draw(st.sampled_from(TOKENS))
        elif op == "duplicate":
            words.insert(k, words[draw(st.integers(0, len(words) - 1))])
        else:
            j = draw(st.integers(0, len(words) - 1))
            words[k], words[j] = words[j], words[k]
    return " ".join(words)


@given(mutated_specs())
def test_mutated_specs_never_raise_a_traceback(text):
    _outcome(text)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_a_traceback(data):
    _outcome(data.decode("utf-8", errors="replace"))


@given(st.text(max_size=120))
def test_random_text_never_raises_a_traceback(text):
    _outcome(text)


@pytest.mark.parametrize(
    "text",
    [
        "input X[i]\noutput Y\nY[i] = " + "(" * 3000 + "X[i]" + ")" * 3000 + "\n",
        "input X[i]\noutput Y\nY[i] = X[i]" + " + X[i]" * 3000 + "\n",
        "x" * 100_000,
        "input X[i]\noutput Y\nY[i] = X[i] * " + "9" * 5000 + "\n",
        "input X[i]\noutput Y\nY[i] = X[" + "i + " * 2000 + "1]\n",
    ],
    ids=["deep-parens", "long-sum", "long-name-line", "huge-number", "long-index"],
)
def test_extreme_inputs(text):
    _outcome(text)


@pytest.mark.parametrize(
    "name",
    ["__import__", "__class__", "class", "import", "lambda", "def", "None", "True", "input", "where"],
)
def test_dangerous_names_are_rejected(name):
    for text in (
        f"input {name}[i]\noutput Y\nY[i] = {name}[i]\n",
        f"input X[i]\noutput {name}\n{name}[i] = X[i]\n",
    ):
        with pytest.raises(einattn.EinError):
            einattn.parse(text)


@pytest.mark.parametrize(
    "text", ['input X[i]\noutput Y\nY[i] = os.system("ls")\n', "input X[i]\noutput Y\nY[i] = X['i']\n"]
)
def test_code_and_strings_are_not_part_of_the_language(text):
    with pytest.raises(einattn.EinError):
        einattn.parse(text)
