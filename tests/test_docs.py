"""Keep the documentation honest: every example in docs/*.md is parsed, run and checked.

Conventions for fenced code blocks in ``docs/*.md`` (the info string is the text after the opening fence):

* ``ein``: a complete, valid spec. It must parse with :func:`einattn.parse` and run on the NumPy backend with
  small random inputs (every size 5, ``: int`` inputs small non-negative integers, params as declared),
  giving finite outputs of the declared shapes. ``ein nonfinite`` waives the finiteness check (an example
  that shows IEEE NaN). ``ein name=NAME`` names the block so that a test below can check it against
  hand-computed values.
* ``ein-error``: a deliberately invalid spec. Parsing it (or, for errors that only a call can find, running
  it) must raise :class:`einattn.EinError`, never any other exception; the text after a ``# error:``
  comment must occur in the message.
* ``ein-result``: the exact result of the ``ein`` block just above it, as ``NAME = value`` lines (a value
  may continue on indented lines; ``inf`` and ``nan`` are allowed). Names of inputs are the inputs, names
  of params override them, names of outputs are the expected outputs. Every such block is checked.
* In ``docs/language.md`` only: ``pycon`` blocks are doctests (one session), and ``console`` blocks whose
  lines start with ``$ einattn`` are run and their output compared.

The function table of ``docs/language.md`` is generated from the registry
(:data:`einattn.functions.FUNCTIONS`): ``python tests/test_docs.py`` prints it.
"""

from __future__ import annotations

import doctest
import itertools
import math
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import einattn
from einattn.check import RESERVED
from einattn.functions import FUNCTIONS
from einattn.ir import size_name

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LANGUAGE = DOCS / "language.md"
SIZE = 5  # every rank of a random input, unless a param or a partition fixes it


# ---- extracting blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    attrs: tuple[str, ...]
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def name(self) -> str | None:
        for a in self.attrs:
            if a.startswith("name="):
                return a[len("name=") :]
        return None


_FENCE = re.compile(r"^(```+|~~~+)\s*(.*)$")


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    k = 0
    while k < len(lines):
        m = _FENCE.match(lines[k].strip())
        if not m:
            k += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        start, body = k + 1, []
        k += 1
        while k < len(lines) and not lines[k].strip().startswith(fence):
            body.append(lines[k])
            k += 1
        k += 1
        lang = info[0] if info else ""
        out.append(Block(path, start, lang, tuple(info[1:]), "\n".join(body) + "\n"))
    return out


def all_blocks() -> list[Block]:
    return [b for path in sorted(DOCS.glob("*.md")) for b in blocks(path)]


ALL = all_blocks()
EIN = [b for b in ALL if b.lang == "ein"]
ERRORS = [b for b in ALL if b.lang == "ein-error"]
NAMED = {b.name: b for b in EIN if b.name}


def results() -> list[tuple[Block, Block]]:
    """(spec block, result block) pairs: an ``ein-result`` block checks the ``ein`` block just above it."""
    pairs = []
    for path in sorted(DOCS.glob("*.md")):
        bs = blocks(path)
        pairs += [(prev, b) for prev, b in itertools.pairwise(bs) if b.lang == "ein-result"]
    return pairs


def spec(name: str) -> str:
    if name not in NAMED:
        pytest.fail(f"docs have no ```ein name={name} block")
    return NAMED[name].text


# ---- running specs ----------------------------------------------------------------------------------


def parse(text: str, where: str = "<doc>") -> einattn.Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text, where)


def sizes_for(prog: einattn.Program) -> dict[str, int]:
    """A size for every rank of an input: a param of the upper-case name, a partition, else SIZE."""
    params = prog.param_values
    sizes: dict[str, int] = {}
    for r in prog.ranks:
        if size_name(r) in params:
            sizes[r] = int(params[size_name(r)])
    for r in prog.ranks:
        sizes.setdefault(r, SIZE)
    for p in prog.partitions:
        derived, tile = (p.outer, p.inner) if p.tile == "inner" else (p.inner, p.outer)
        sizes[derived] = math.ceil(sizes[p.parent] / sizes[tile])
    return sizes


def random_inputs(prog: einattn.Program, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = sizes_for(prog)
    out = {}
    for name in prog.inputs:
        t = prog.tensor(name)
        shape = tuple(sizes[r] for r in t.ranks)
        out[name] = rng.integers(0, 3, size=shape) if t.dtype == "int" else rng.standard_normal(shape)
    return out


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def expected_shape(prog: einattn.Program, name: str, inputs: dict) -> tuple[int, ...]:
    from einattn.sizes import bind_sizes, extents

    sizes = bind_sizes(prog, {n: np.shape(a) for n, a in inputs.items()})
    return extents(prog, name, sizes)  # an iterative dimension holds R + 1 states


def run(text: str, **inputs):
    """Compile a spec on the NumPy backend and call it; one output -> the array, several -> a tuple."""
    return einattn.compile(parse(text), backend="numpy")(**inputs)


# ---- every ```ein block -----------------------------------------------------------------------------


def test_docs_have_examples():
    assert LANGUAGE.exists(), "docs/language.md is missing"
    assert len([b for b in EIN if b.path == LANGUAGE]) >= 30
    assert [b for b in ERRORS if b.path == LANGUAGE]


def test_example_names_are_unique():
    names = [b.name for b in EIN if b.name]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("block", EIN, ids=lambda b: b.id)
def test_example_runs(block: Block):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", einattn.EinWarning)
        prog = einattn.parse(block.text, block.id)
    shown = [str(w.message) for w in caught if issubclass(w.category, einattn.EinWarning)]
    # an example may show a warning on purpose: a `# warning: <text>` comment names it
    expected = [ln.split("# warning:", 1)[1].strip() for ln in block.text.splitlines() if "# warning:" in ln]
    for text in expected:
        assert any(text in w for w in shown), f"{block.id}: the warning `{text}` was expected: {shown}"
    shown = [w for w in shown if not any(text in w for text in expected)]
    assert not shown, f"{block.id}: a documented example should not warn: {shown}"
    inputs = random_inputs(prog)
    outs = as_tuple(einattn.compile(prog, backend="numpy")(**inputs))
    assert len(outs) == len(prog.outputs)
    for name, out in zip(prog.outputs, outs):
        out = np.asarray(out)
        assert out.shape == expected_shape(prog, name, inputs), f"{block.id}: output {name}"
        if "nonfinite" not in block.attrs:
            assert np.isfinite(out).all(), f"{block.id}: output {name} is not finite: {out}"


def expected_error(block: Block) -> str | None:
    """The text after ``# error:`` in an ``ein-error`` block: it must occur in the error's message."""
    m = re.search(r"#\s*error:\s*(.*?)\s*$", block.text, re.MULTILINE)
    return m.group(1) if m else None


@pytest.mark.parametrize("block", ERRORS, ids=lambda b: b.id)
def test_error_example_raises_ein_error(block: Block):
    with pytest.raises(einattn.EinError) as info:
        prog = parse(block.text, block.id)
        einattn.compile(prog, backend="numpy")(**random_inputs(prog))
    want = expected_error(block)
    if want is not None:
        assert want in info.value.message, f"{block.id}: expected `{want}`, got `{info.value.message}`"


_ERROR_SCRIPT = """
import sys, warnings
import einattn
warnings.simplefilter("ignore")
sys.path.insert(0, "tests")
import test_docs as T
bad = []
for b in T.ERRORS:
    try:
        prog = T.parse(b.text, b.id)
        einattn.compile(prog)(**T.random_inputs(prog))
        bad.append(b.id + ": no error")
    except einattn.EinError:
        pass
    except Exception as e:
        bad.append(f"{b.id}: {type(e).__name__}: {e}")
print("\\n".join(bad))
"""


@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_error_examples_do_not_depend_on_hash_seed(seed: str):
    """Checks iterate over sets of names: each error must be an EinError whatever the string hash seed."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _ERROR_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"PYTHONHASHSEED={seed}:\n{proc.stdout}"


def _literal(text: str):
    return eval(text, {"__builtins__": {}, "inf": math.inf, "nan": math.nan})  # test data written in docs


def parse_result(block: Block) -> dict[str, object]:
    entries: dict[str, str] = {}
    current = None
    for raw in block.text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        m = re.match(r"^([A-Za-z_]\w*)\s*=\s*(.*)$", line)
        if m and not raw[:1].isspace():
            current = m.group(1)
            entries[current] = m.group(2)
        else:
            assert current is not None, f"{block.id}: a value line before any NAME ="
            entries[current] += " " + line.strip()
    return {k: _literal(v) for k, v in entries.items()}


@pytest.mark.parametrize("pair", results(), ids=lambda p: p[1].id)
def test_example_result(pair: tuple[Block, Block]):
    spec_block, result_block = pair
    assert spec_block.lang == "ein", f"{result_block.id}: an ein-result block must follow an ein block"
    prog = parse(spec_block.text, spec_block.id)
    values = parse_result(result_block)
    unknown = set(values) - set(prog.inputs) - set(prog.outputs) - set(prog.param_values)
    assert not unknown, f"{result_block.id}: {sorted(unknown)} are not inputs, params or outputs"
    missing = [n for n in prog.inputs if n not in values]
    assert not missing, f"{result_block.id}: no value for inputs {missing}"
    inputs = {}
    for n in prog.inputs:
        dtype = np.int64 if prog.tensor(n).dtype == "int" else np.float64
        inputs[n] = np.asarray(values[n], dtype=dtype)
    params = {n: values[n] for n in prog.param_values if n in values}
    outs = as_tuple(einattn.compile(prog, backend="numpy", params=params)(**inputs))
    checked = 0
    for name, out in zip(prog.outputs, outs):
        if name in values:
            np.testing.assert_allclose(
                out, np.asarray(values[name], dtype=np.float64), rtol=1e-12, atol=1e-12, err_msg=name
            )
            checked += 1
    assert checked, f"{result_block.id}: shows no output"


# ---- key examples against hand-computed NumPy --------------------------------------------------------


def softmax_attention(s: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """softmax over the last axis of scores s[p, m], then times v[m, f]; a fully masked row gives 0."""
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    w = np.exp(s - np.where(np.isfinite(mx), mx, 0))
    den = w.sum(-1, keepdims=True)
    return np.where(den > 0, w / np.where(den > 0, den, 1), 0) @ v


def test_key_overview_attention():
    rng = np.random.default_rng(1)
    q, k, v = (
        rng.standard_normal((2, 3, 4, 8)),
        rng.standard_normal((2, 3, 6, 8)),
        rng.standard_normal((2, 3, 6, 5)),
    )
    out = run(spec("attention-3pass"), Q=q, K=k, V=v)
    s = np.einsum("bhpe,bhme->bhpm", q, k) / np.sqrt(8)
    want = np.stack([np.stack([softmax_attention(s[b, h], v[b, h]) for h in range(3)]) for b in range(2)])
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_key_reduction_order():
    x = np.array([[[1.0, -5.0], [2.0, 3.0]]])  # X[i, j, k]
    sum_jk, max_k_of_sum_j, total = run(spec("reductions"), X=x)
    np.testing.assert_array_equal(sum_jk, x.sum((1, 2)))
    np.testing.assert_array_equal(max_k_of_sum_j, x.sum(1).max(-1))  # sum over j first, then max over k
    assert max_k_of_sum_j[0] != x.max(2).sum(1)[0]  # the other order would give a different number
    np.testing.assert_array_equal(total, x.sum())


def test_key_floor_semantics():
    x = np.array([10.0, 11, 12, 13, 14])
    half, wrap = run(spec("floor"), X=x)
    j = np.arange(6)
    want_half = np.array([x[i] if 0 <= i < 5 else 0.0 for i in (j - 3) // 2])  # Python floor division
    np.testing.assert_array_equal(half, want_half)
    np.testing.assert_array_equal(wrap, x[(j - 3) % 5])


def test_key_gather_paged_kv():
    rng = np.random.default_rng(2)
    q, kc = rng.standard_normal((2, 4)), rng.standard_normal((5, 2, 4))
    table = np.array([[3, 0], [1, 4]])
    out = run(spec("paged-kv"), q=q, KC=kc, table=table)
    want = np.array([[q[b] @ kc[table[b, m // 2], m % 2] for m in range(4)] for b in range(2)])
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_key_gather_out_of_range_is_absent():
    x = np.array([10.0, 11, 12, 13, 14])
    perm = np.array([4, 0, 7, -1, 2])
    out = run(spec("gather"), X=x, perm=perm)
    np.testing.assert_array_equal(out, [14.0, 10.0, 0.0, 0.0, 12.0])


def test_key_filters():
    x = np.array([[1.0, 10, 100]] * 3)  # X[p, m]
    causal, window, notdiag, either = run(spec("filters"), X=x)
    p, m = np.arange(3)[:, None], np.arange(3)[None, :]
    np.testing.assert_array_equal(causal, np.where(m <= p, x, 0).sum(1))
    np.testing.assert_array_equal(window, np.where((p - m >= 0) & (p - m < 2), x, 0).sum(1))
    np.testing.assert_array_equal(notdiag, np.where(m != p, x, 0).sum(1))
    np.testing.assert_array_equal(either, np.where((m == 0) | (m == p), x, 0).sum(1))


def test_key_causal_linear_attention():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.standard_normal((6, 3))

    def phi(x):
        return np.where(x > 0, x, np.expm1(x)) + 1

    w = np.tril(phi(q) @ phi(k).T)  # the filter m <= p over the reduced rank m
    out = run(spec("linear-causal"), Q=q, K=k, V=v)
    np.testing.assert_allclose(out, (w @ v) / w.sum(1, keepdims=True), rtol=1e-12)


def test_key_document_mask():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((7, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    doc = np.array([0, 0, 1, 1, 1, 2, 2])
    out = run(spec("document-mask"), Q=q, K=k, V=v, doc=doc)
    mask = (doc[:, None] == doc[None, :]) & np.tril(np.ones((7, 7), bool))
    np.testing.assert_allclose(out, softmax_attention(q @ k.T / 2, v, mask), rtol=1e-12)  # rsqrt(E), E = 4


def test_key_absent_points():
    x = np.arange(1.0, 10.0).reshape(3, 3)
    keep, row, safe, count = run(spec("absent"), X=x)
    present = np.arange(3)[None, :] < np.arange(3)[:, None]  # m < p
    np.testing.assert_array_equal(keep, np.where(present, x, 0))  # absent points of an output are 0
    np.testing.assert_array_equal(row, np.where(present, x, 0).sum(1))
    rowmax = np.array([-1.0] + [x[p, :p].max() for p in (1, 2)])  # row 0 has no present point: ?? -1
    np.testing.assert_array_equal(safe, rowmax)
    np.testing.assert_array_equal(count, present.sum(1))  # `absent * 0 + 1` stays absent: not counted


def test_key_out_of_bounds():
    x = np.array([1.0, 4, 9, 16])
    d = np.array([0, 0, 1, 1])
    nxt, diff, diff0, same = run(spec("out-of-bounds"), X=x, d=d)
    np.testing.assert_array_equal(nxt, [4, 9, 16, 0])
    np.testing.assert_array_equal(diff, [3, 5, 7, 0])
    np.testing.assert_array_equal(diff0, [3, 5, 7, -16])
    # at i = 3 the filter reads d[4], out of range: absent, although `i == I - 1` is true
    np.testing.assert_array_equal(same, [1, 0, 9, 0])


def test_key_default_operator():
    x = np.array([3.0, 4.0, 5.0])
    out = run(spec("default"), X=x)
    np.testing.assert_array_equal(out, [4.0, 5.0, 5.0])  # max over the union: the last point has one operand


def test_key_nan_and_guard():
    x = np.array([[3.0, 5.0], [1.0, 2.0]])  # X[t, p]; row p sees t >= p, so p = 1 has an empty step 0
    bare = run(spec("nan-unguarded"), X=x)
    assert np.isnan(bare[0, 1])  # exp(-inf - -inf)
    np.testing.assert_array_equal(bare[[0, 1, 1], [0, 0, 1]], [0.0, 1.0, 0.0])
    guarded = run(spec("nan-guarded"), X=x)
    np.testing.assert_array_equal(guarded, [[0.0, 1.0], [1.0, 0.0]])


def test_key_prefix_sums():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    before, after, total = run(spec("prefix-sums"), X=x)
    np.testing.assert_array_equal(before, np.concatenate([[0], np.cumsum(x)[:-1]]))
    np.testing.assert_array_equal(after, np.cumsum(x))
    assert total == x.sum()


def test_key_all_prefix_outputs():
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal(4), rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    out = run(spec("prefix-attention"), q=q, K=k, V=v)
    s = k @ q
    want = np.array([softmax_attention(s[None, : t + 1], v[: t + 1])[0] for t in range(7)])
    np.testing.assert_allclose(out, want, rtol=1e-12)


@pytest.mark.parametrize("m0", [1, 3, 4, 10, 16])
def test_key_cascade5(m0: int):
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((8, 6)), rng.standard_normal((8, 10)), rng.standard_normal((5, 10))
    prog = parse(spec("cascade5"))
    out = einattn.compile(prog, backend="numpy", params={"M0": m0})(
        Q=q, K=k, V=v
    )  # Q[e, p], K[e, m], V[f, m]
    np.testing.assert_allclose(out, softmax_attention(q.T @ k, v.T).T, rtol=1e-12, atol=1e-12)


# ---- the function table, the reserved words, the grammar --------------------------------------------

_ARGS = {1: "x", 2: "a, b", 3: "x, lo, hi"}


def function_table() -> str:
    rows = [
        "| Function | Meaning | Also in indices and filters |",
        "|---|---|---|",
    ]
    for f in FUNCTIONS.values():
        meaning = f.doc.replace("|", "\\|")  # a literal pipe would split the Markdown cell
        rows.append(f"| `{f.name}({_ARGS[f.arity]})` | {meaning} | {'yes' if f.index_ok else 'no'} |")
    return "\n".join(rows)


def _between(text: str, begin: str, end: str) -> str:
    assert begin in text and end in text, f"docs/language.md lacks the markers {begin} ... {end}"
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def test_function_table_matches_registry():
    text = LANGUAGE.read_text(encoding="utf-8")
    shown = _between(text, "<!-- functions:begin -->", "<!-- functions:end -->")
    assert shown == function_table(), (
        "the function table in docs/language.md differs from einattn.functions.FUNCTIONS; "
        "regenerate it with `python tests/test_docs.py`"
    )


def test_every_function_has_an_example():
    calls = {m for b in EIN for m in re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", b.text)}
    missing = [name for name in FUNCTIONS if name not in calls]
    assert not missing, f"no ```ein example calls {missing}"


def test_reserved_words_listed():
    text = LANGUAGE.read_text(encoding="utf-8")
    shown = _between(text, "<!-- reserved:begin -->", "<!-- reserved:end -->")
    assert set(re.findall(r"`(\w+)`", shown)) == RESERVED


def test_grammar_is_referenced_not_copied():
    text = LANGUAGE.read_text(encoding="utf-8")
    assert "grammar/ein.lark" in text and (ROOT / "grammar" / "ein.lark").exists()
    assert "?default: or_expr" not in text, "the grammar is referenced, not copied (it would drift)"


# ---- doctests and console sessions (docs/language.md) -------------------------------------------------


def test_pycon_blocks(monkeypatch):
    pycon = [b for b in blocks(LANGUAGE) if b.lang == "pycon"]
    assert pycon
    monkeypatch.chdir(ROOT)  # the sessions load examples/ by relative path
    parser = doctest.DocTestParser()
    globs: dict = {}
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        for b in pycon:
            test = parser.get_doctest(b.text, globs, b.id, str(b.path), b.line)
            runner.run(test, clear_globs=False)
            globs = test.globs  # one session across the blocks, as a reader would type them
    assert runner.failures == 0, f"{runner.failures} doctest failures in the pycon blocks (see stdout)"


def _console_sessions() -> list[tuple[Block, str, str]]:
    out = []
    for b in blocks(LANGUAGE) if LANGUAGE.exists() else []:
        if b.lang != "console":
            continue
        cmd, lines = None, []
        for line in [*b.text.splitlines(), "$ "]:
            if line.startswith("$ "):
                if cmd and cmd.startswith("einattn "):
                    out.append((b, cmd, "\n".join(lines)))
                cmd, lines = line[2:].strip(), []
            else:
                lines.append(line)
    return out


@pytest.mark.parametrize("session", _console_sessions(), ids=lambda s: f"{s[0].id}:{s[1][:40]}")
def test_console_sessions(session):
    block, cmd, want = session
    argv = shlex.split(cmd)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "einattn", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    got = (proc.stdout + proc.stderr).rstrip()
    assert got == want.rstrip(), f"{block.id}: `{cmd}` printed\n{got}"


def test_the_sample_analysis_report_is_what_analyze_prints():
    """docs/analysis.md shows `einattn analyze examples/attention_3pass.ein` in full: its exact output."""
    text = (ROOT / "docs" / "analysis.md").read_text()
    start = text.index("```text", text.index("The text report (this is")) + len("```text\n")
    want = text[start : text.index("```", start)]
    proc = subprocess.run(
        [sys.executable, "-m", "einattn", "analyze", "examples/attention_3pass.ein"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want


def test_the_documented_sliding_window_rewrite_is_what_rewrite_prints():
    """docs/rewrite.md shows the program part of `einattn rewrite examples/sliding_window.ein --tile 32`."""
    text = (ROOT / "docs" / "rewrite.md").read_text()
    start = text.index("```ein", text.index("examples/sliding_window.ein --tile 32`, program part")) + 7
    want = text[start : text.index("```", start)]
    proc = subprocess.run(
        [sys.executable, "-m", "einattn", "rewrite", "examples/sliding_window.ein", "--tile", "32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[proc.stdout.index("input  ") :] == want


if __name__ == "__main__":
    print(function_table())
