"""The formatter: ``parse(format(p)) == p`` on every example, every conformance case and random programs."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import einattn
from einattn import syntax as S
from einattn.cli import main
from einattn.format import format_expr, format_program
from einattn.functions import FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.ein") if "errors" not in p.parts)
CONFORMANCE = Path("/work/shared/conformance")


def _conformance_cases():
    if not (CONFORMANCE / "cases.py").exists():
        return []
    sys.path.insert(0, str(CONFORMANCE))
    try:
        import cases
    finally:
        sys.path.pop(0)
    return [(c["name"], c["spec"]) for c in cases.CASES]


def _round_trip(prog: einattn.Program) -> str:
    text = einattn.format(prog)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)  # unused inputs are fine here
        again = einattn.parse(text, "<formatted>")
    assert again == prog
    assert einattn.format(again) == text, "formatting is not idempotent"
    return text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_examples_round_trip(path):
    _round_trip(einattn.load(path))


@pytest.mark.parametrize("name,spec", _conformance_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_conformance_round_trip(name, spec):
    _round_trip(einattn.parse(spec, name))


SPECS = sorted(
    [p for p in (ROOT / "examples").rglob("*.ein") if "errors" not in p.parts]
    + list((ROOT / "benchmarks").glob("*.ein"))
)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_specs_are_in_canonical_form(path):
    """`einattn fmt --check` passes on every shipped spec: what the formatter prints is how specs look."""
    assert format_program(einattn.load(path)) == path.read_text(encoding="utf-8")


IDX = "clamp(m + p // W * W - W // 2, 0, M - 1)"
LONG = (
    "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], B[h, p, m], S[h]\n"
    "param  W = 16  # the window\n"
    "param  CAP = 30.0  # the softcap\n"
    "output O\n\n"
    f"SC0[b, h, p, m] = Q[b, h, p, e] * K[b, h, {IDX}, e] * rsqrt(E) * S[h] * S[h] * S[h] * S[h]\n"
    f"SC[b, h, p, m] = SC0[b, h, p, m] + B[h, p, {IDX}] + B[h, p, m] * 2 + B[h, p, {IDX}]"
    "  where m <= p + W and m + W >= p and abs(p - m) < W\n"
    "T[b, h, p, m] = exp(CAP * tanh(SC[b, h, p, m] / CAP)"
    f" - max(SC[b, h, p, m], SC[b, h, p, m] * 0.5 + B[h, p, {IDX}]))\n"
    "O[b, h, p, f] = T[b, h, p, m]"
    " * V[b, h, clamp(m + p // W * W - W // 2 + p % W - p % W + (p + m) % 3, 0, M - 1), f]\n"
)


def test_long_statements_break_over_lines_and_parse_back():
    """Statements longer than 110 characters break: before the operators of the outermost sum or product,
    after the commas of a read's indices or a call's arguments, each continuation aligned under its first
    operand or index; parsing the result gives the same program, and formatting it again changes nothing.
    Trailing comments of declarations align."""
    prog = einattn.parse(LONG, "long.ein")
    text = _round_trip(prog)
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 110, text
    assert "param  W = 16      # the window\nparam  CAP = 30.0  # the softcap" in text
    sc = next(k for k, x in enumerate(lines) if x.startswith("SC["))
    assert lines[sc].startswith("SC[b, h, p, m]  = (SC0[b, h, p, m] + B[h, p, clamp(")
    assert lines[sc + 1].startswith(" " * len("SC[b, h, p, m]  = (") + "+ "), text
    t = next(k for k, x in enumerate(lines) if "- max(SC[b, h, p, m]," in x)
    column = lines[t].index("max(") + len("max(")  # max's second argument continues under its first
    assert lines[t + 1].index(lines[t + 1].strip()) == column, text
    o = next(k for k, x in enumerate(lines) if x.startswith("O["))
    assert lines[o + 1].strip().startswith("* V[b, h, clamp(") and lines[o + 1].endswith("f])"), text


def test_layout_and_minimal_parentheses():
    prog = einattn.parse(
        """
        # header comment
        output O, L
        input X[i, j], Y[j], n[i] : int
        param  C = 2.5
        L[i] = ((X[i, j] + 1) * (Y[j] - 2)) :: max(j)   # trailing
        O[i, j] = -(-X[i, j]) - (Y[j] - 1) ?? (0 ?? 1)  where not (i < j or j == 0) and n[i] >= 0
        """
    )
    text = _round_trip(prog)
    assert text.splitlines() == [
        "# header comment",
        "input  X[i, j], Y[j], n[i] : int",
        "param  C = 2.5",
        "output O, L",
        "",
        "L[i]    = (X[i, j] + 1) * (Y[j] - 2) :: max(j)  # trailing",
        "O[i, j] = -(-X[i, j]) - (Y[j] - 1) ?? (0 ?? 1)  where not (i < j or j == 0) and n[i] >= 0",
    ]


def test_plus_reduction_named_only_when_order_differs():
    prog = einattn.parse("input X[i, j, k]\noutput Y\nY[i] = X[i, j, k] :: +(j)")
    assert prog.einsums[0].reduce == (("k", "+"), ("j", "+"))
    assert ":: +(j)" in _round_trip(prog)
    plain = einattn.parse("input X[i, j, k]\noutput Y\nY[i] = X[i, j, k]")
    assert "::" not in _round_trip(plain)


def test_comments_and_paragraphs_kept():
    path = ROOT / "examples" / "attention_1pass.ein"
    text = format_program(einattn.load(path))
    assert "# initialisation" in text and "# running max" in text and "\n\n# final\n" in text
    assert "running" not in format_program(einattn.load(path), comments=False)


# ---- CLI ---------------------------------------------------------------------------------------------------


def test_cli_fmt(tmp_path, capsys):
    messy = "output Y\ninput X[i,j]   # the input\nY[i]=(X[i,j]) :: max(j)\n"
    f = tmp_path / "messy.ein"
    f.write_text(messy)
    assert main(["fmt", str(f)]) == 0
    out = capsys.readouterr().out
    assert out == "input  X[i, j]  # the input\noutput Y\n\nY[i] = X[i, j] :: max(j)\n"
    assert main(["fmt", "--check", str(f)]) == 1
    assert "would reformat" in capsys.readouterr().err
    assert main(["fmt", "--in-place", str(f)]) == 0
    assert f.read_text() == out
    assert main(["fmt", "--check", str(f)]) == 0


def test_cli_fmt_errors(tmp_path, capsys):
    bad = tmp_path / "bad.ein"
    bad.write_text("input X[i]\noutput Y\nY[i] = Z[i]\n")
    assert main(["fmt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.ein:3:8: error: undefined tensor `Z`" in err
    assert main(["fmt", str(tmp_path / "missing.ein")]) == 1


# ---- hypothesis: random expression trees print to text that parses back to the same tree -------------------

TEMPLATE = """input X[i, j], Y[j], s, n[i] : int
param C = 2.5
param K = 3
output Z
"""

UNARY_FNS = sorted(n for n, f in FUNCTIONS.items() if f.arity == 1)
numbers = st.one_of(
    st.integers(-50, 50),
    st.floats(allow_nan=False, allow_infinity=True, width=64).filter(lambda v: v == v),
    st.sampled_from([0.5, 1e-5, 1e300, -0.0, 2.0**60]),
)


def _not_const(e):
    return not isinstance(e, S.Const)


def index_exprs(depth=2):
    leaf = st.one_of(
        st.sampled_from([S.Coord("i"), S.Coord("j"), S.Param("K"), S.Size("i"), S.Size("j")]),
        st.integers(-5, 5).map(S.Const),
    )
    if depth == 0:
        return leaf
    sub = index_exprs(depth - 1)
    const = st.one_of(st.integers(1, 4).map(S.Const), st.just(S.Param("K")))
    return st.one_of(
        leaf,
        st.builds(lambda a, b, op: S.Binary(op, a, b), sub, sub, st.sampled_from(["+", "-"])),
        st.builds(lambda a, c: S.Binary("*", a, c), sub, const),
        st.builds(lambda c, a: S.Binary("*", c, a), const, sub),
        st.builds(lambda a, c, op: S.Binary(op, a, c), sub, const, st.sampled_from(["//", "%"])),
        st.builds(lambda a: S.Unary("-", a), sub.filter(_not_const)),
        st.builds(lambda a, b, fn: S.Call(fn, (a, b)), sub, sub, st.sampled_from(["max", "min"])),
        st.builds(lambda a: S.Read("n", (a,)), sub),
    )


def value_exprs():
    leaves = st.one_of(
        numbers.map(S.Const),
        st.sampled_from([S.Coord("i"), S.Size("j"), S.Param("C"), S.Param("K"), S.Read("s", ())]),
        st.builds(lambda a, b: S.Read("X", (a, b)), index_exprs(1), index_exprs(1)),
        st.builds(lambda a: S.Read("Y", (a,)), index_exprs(1)),
    )

    def extend(sub):
        return st.one_of(
            st.builds(lambda a, b, op: S.Binary(op, a, b), sub, sub, st.sampled_from(["+", "-", "*", "/"])),
            st.builds(lambda a: S.Unary("-", a), sub.filter(_not_const)),
            st.builds(lambda a, fn: S.Call(fn, (a,)), sub, st.sampled_from(UNARY_FNS)),
            st.builds(lambda a, b, fn: S.Call(fn, (a, b)), sub, sub, st.sampled_from(["max", "min"])),
            st.builds(S.Default, sub, sub),
        )

    return st.recursive(leaves, extend, max_leaves=12)


def filter_exprs():
    operand = st.one_of(index_exprs(1), st.sampled_from([S.Param("C"), S.Const(2.5)]))
    compare = st.builds(
        lambda a, b, op: S.Compare(op, a, b),
        operand,
        operand,
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    )

    def extend(sub):
        return st.one_of(
            st.builds(lambda a, b, op: S.Logic(op, a, b), sub, sub, st.sampled_from(["and", "or"])),
            st.builds(S.Not, sub),
        )

    return st.recursive(compare, extend, max_leaves=5)


@given(value_exprs(), st.one_of(st.none(), filter_exprs()))
def test_random_expressions_round_trip(expr, filt):
    line = f"Z[i, j] = {format_expr(expr)}" + (f"  where {format_expr(filt)}" if filt is not None else "")
    prog = einattn.parse(TEMPLATE + line)
    (e,) = prog.einsums
    assert e.expr == expr
    assert e.filter == filt
    _round_trip(prog)


# ---- hypothesis: random whole programs, written messily, round-trip through the formatter ------------------


@st.composite
def programs(draw):
    ranks = ["i", "j", "k"]
    inputs = {"X": ["i", "j"], "W": ["j", "k"]}
    if draw(st.booleans()):
        inputs["s"] = []
    lines = []
    decl = ", ".join(f"{n}[{', '.join(r)}]" if r else n for n, r in inputs.items())
    lines.append(f"input {decl}")
    if draw(st.booleans()):
        lines.append("input  doc[i] : int")
    params = {"C": draw(st.sampled_from([1.5, -2.0, 3, math.inf, 1e-7]))}
    tile = draw(st.booleans())
    if tile:
        params["J0"] = draw(st.integers(1, 3))
        lines.append("rank J = J1 * J0")
    for name, v in params.items():
        lines.append(f"param {name} = {'inf' if v == math.inf else v}")
    defined = dict(inputs)
    stmts = []
    if tile:
        stmts.append("B[i, j1, j0] = X[i, j1 * J0 + j0]")
        defined["B"] = ["i", "j1", "j0"]
    for t in range(draw(st.integers(1, 4))):
        lhs = draw(st.lists(st.sampled_from(ranks), unique=True, max_size=3))
        pool = [n for n, r in defined.items()]
        reads = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        terms = []
        for name in reads:
            rr = defined[name]
            term = f"{name}[{', '.join(rr)}]" if rr else name
            terms.append(f"(({term}))" if draw(st.booleans()) else term)  # redundant parentheses
        fn = draw(st.sampled_from(["", "exp", "tanh", "relu"]))
        op = draw(st.sampled_from([" * ", " + ", " - ", "/"]))
        body = op.join(terms)
        if draw(st.booleans()):
            body = f"({body}) ?? C"
        expr = f"{fn}({body})" if fn else body
        used = [r for name in reads for r in defined[name]]
        reduced = [r for r in dict.fromkeys(used) if r not in lhs]
        clause = ""
        if reduced and draw(st.booleans()):
            clause = f" :: {draw(st.sampled_from(['max', 'min', '+']))}({reduced[-1]})"
        where = ""
        if lhs and draw(st.booleans()):
            a = draw(st.sampled_from(lhs))
            where = f" where {a} <= {draw(st.sampled_from(lhs))} + 1 or not {a} > 2"
        name = f"T{t}"
        stmts.append(
            f"{name}[{', '.join(lhs)}] = {expr}{clause}{where}" if lhs else f"{name} = {expr}{clause}"
        )
        defined[name] = lhs
    if draw(st.booleans()):  # a recurrence over the iterative rank k
        stmts += ["R[0, i] = 0", "R[k + 1, i] = R[k, i] * 0.5 + W[j, k] * X[i, j]", "U[i] = R[K, i]"]
        defined["U"] = ["i"]
    outs = [n for n in defined if n.startswith(("T", "U"))]
    chosen = draw(st.lists(st.sampled_from(outs), min_size=1, unique=True))
    lines.append(f"output {', '.join(chosen)}")
    order = draw(st.permutations(lines))
    body = draw(st.permutations(stmts))
    comment = draw(st.sampled_from(["", "   # note"]))
    return "\n".join(list(order) + [s + comment for s in body]) + "\n"


@given(programs())
def test_random_programs_round_trip(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused inputs
        prog = einattn.parse(text)
    _round_trip(prog)


def test_rank_alias_round_trips():
    prog = einattn.parse("input X[s], A[t]\nrank S = T\noutput Y\nY[t] = X[s] * A[t]  where s <= t\n")
    assert prog.aliases == (("s", "t"),)
    assert "rank   S = T" in _round_trip(prog)
