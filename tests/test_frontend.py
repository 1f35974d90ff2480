"""Parser, checker and dataflow graph: structure, spans, resolution and the schedule."""

from __future__ import annotations

import math

import pytest
from cascades import CASCADE5

import einattn
from einattn import syntax as S
from einattn.graph import Dense, Loop, build_graph, schedule
from einattn.parser import parse as parse_syntax


def test_parse_resolves_names_and_builds_the_ir():
    prog = einattn.parse(CASCADE5, "c5.ein")
    assert prog.inputs == ("Q", "K", "V") and prog.outputs == ("AV",)
    assert prog.params == (("M0", 4),)
    (part,) = prog.partitions
    assert (part.parent, part.outer, part.inner, part.tile) == ("m", "m1", "m0", "inner")
    rm = prog.tensor("RM")
    assert rm.ranks == ("m1", "p") and rm.iterative == 0 and rm.iter_rank == "m1"
    lm = next(e for e in prog.einsums if e.tensor == "LM")
    assert lm.space == ("m1", "p", "m0") and lm.reduce == (("m0", "max"),)
    bk = prog.einsums[0]
    index = bk.expr.indices[1]
    assert index == S.Binary("+", S.Binary("*", S.Coord("m1"), S.Param("M0")), S.Coord("m0"))
    av = prog.einsums[-1]
    assert av.expr.a.indices[1] == S.Size("m1")
    assert [e.kind for e in prog.definitions("RD")] == ["init", "step"]


def test_programs_are_hashable_and_equal_regardless_of_layout():
    a = einattn.parse("input X[i]\noutput Y\nY[i] = exp(X[i]) * 2  # c\n", "a.ein")
    b = einattn.parse("# other\ninput   X[i]\n\noutput Y\nY[i]=exp( X[i] )*2\n", "b.ein")
    assert a == b and hash(a) == hash(b)


def test_spans_point_at_source():
    prog = einattn.parse("input X[i]\noutput Y\nY[i] = exp(X[i])\n", "s.ein")
    e = prog.einsums[0]
    assert (e.span.line, e.span.column) == (3, 1)
    assert (e.expr.span.line, e.expr.span.column) == (3, 8)
    assert str(e.expr.args[0].span) == "s.ein:3:12"


def test_line_continuation_inside_brackets_and_backslash():
    prog = einattn.parse("input X[i,\n  j]\noutput Y\nY[i] = max(X[i, j],\n   0) + \\\n 1\n", "c.ein")
    assert prog.einsums[0].reduced == ("j",)


def test_keywords_are_not_prefixes_of_names():
    prog = einattn.parse(
        "input info[i], inputs[i], where_[i]\noutput Y\nY[i] = info[i] + inputs[i] + where_[i]\n"
    )
    assert prog.inputs == ("info", "inputs", "where_")


def test_numbers_inf_and_negative_literals():
    prog = einattn.parse("input X[i]\noutput Y\nY[i] = max(X[i], -inf) + 1e-3 + .5 + 2.\n")
    consts = [n.value for n in prog.einsums[0].expr.walk() if isinstance(n, S.Const)]
    assert consts == [-math.inf, 1e-3, 0.5, 2.0]


def test_chained_comparison_desugars_to_and():
    prog = einattn.parse("input X[m]\nparam W = 2\nparam P = 3\noutput Y\nY[p] = X[m] where p - W < m <= p\n")
    f = prog.einsums[0].filter
    assert isinstance(f, S.Logic) and f.op == "and"
    assert f.a.op == "<" and f.b.op == "<="


def test_default_has_lowest_precedence_left_to_right():
    m = parse_syntax("Y[i] = A[i] + 1 ?? B[i] ?? 0\n")
    (st,) = m.items
    assert isinstance(st.expr, S.Default) and isinstance(st.expr.a, S.Default)
    assert isinstance(st.expr.a.a, S.Binary)


def test_unused_input_is_a_warning():
    with pytest.warns(einattn.EinWarning, match="input `Z` is never used"):
        einattn.parse("input X[i], Z[i]\noutput Y\nY[i] = X[i]\n")


def test_graph_nodes_edges_and_carried_dependencies():
    prog = einattn.parse(CASCADE5)
    g = build_graph(prog)
    assert set(g.nodes) == {e.label for e in prog.einsums}
    assert g.edges["RM.step", "RM.step"]["carried"] is True
    assert g.edges["RM.step", "SLN"]["carried"] is False
    assert g.edges["RD.step", "AV"]["carried"] is False
    assert g.nodes["LM"]["reduced"] == ("m0",)


def test_schedule_loops_only_over_recurrences():
    steps = schedule(einattn.parse(CASCADE5))
    loops = [s for s in steps if isinstance(s, Loop)]
    assert [(lp.rank, [e.label for e in lp.body]) for lp in loops] == [
        ("m1", ["RM.step"]),
        ("m1", ["SPD", "RD.step"]),
        ("m1", ["SPNV", "RNV.step"]),
    ]
    dense = [s.einsum.label for s in steps if isinstance(s, Dense)]
    assert dense.index("BQK") < dense.index("LM") < dense.index("SLN")
    assert dense[-1] == "AV"


def test_statement_order_is_free():
    text = "input X[i]\noutput Z\nZ[i] = Y[i] * 2\nY[i] = X[i] + 1\n"
    import numpy as np

    assert einattn.compile(einattn.parse(text))(X=np.array([1.0])).tolist() == [4.0]


def test_comments_anywhere():
    text = "# a\n# b\ninput X[i]\n\n  # indented\noutput Y  # trailing\n# c\nY[i] = X[i]  # d\n# last"
    prog = einattn.parse(text)
    assert [e.label for e in prog.einsums] == ["Y"]


def test_rank_size_alias():
    import numpy as np

    prog = einattn.parse("input X[t], Y[s]\nrank S = T\noutput Z\nZ[t] = X[t] * Y[s] where s <= t\n")
    assert prog.aliases == (("s", "t"),)
    k = einattn.compile(prog)
    assert k(X=np.ones(3), Y=np.array([1.0, 2.0, 3.0])).tolist() == [1.0, 3.0, 6.0]
    with pytest.raises(einattn.EinError, match=r"rank `s` has size 4 in `Y` .* but `rank S = T` makes it 3"):
        k(X=np.ones(3), Y=np.ones(4))
    # a rank sized only by the alias (two position ranks over the same sequence)
    prog = einattn.parse("input X[t]\nrank S = T\noutput Z\nZ[t] = X[s] where s <= t\n")
    assert einattn.compile(prog)(X=np.array([1.0, 2.0, 3.0])).tolist() == [1.0, 3.0, 6.0]
    with pytest.raises(einattn.EinError, match="declared in terms of each other"):
        einattn.parse("input X[t]\nrank S = U\nrank U = S\noutput Z\nZ[t] = X[s] * X[u] where s <= t\n")


def test_floor_division_and_modulo_are_index_only():
    with pytest.raises(einattn.EinError, match="`%` is for index expressions") as e:
        einattn.parse("input X[p]\noutput Y\nY[p] = X[p] * (p % 3)\n")
    assert (e.value.line, e.value.column) == (3, 16)


# ---- names: a rank variable may start with `_` -----------------------------------------------------------


def test_rank_names_may_start_with_an_underscore():
    import numpy as np

    prog = einattn.parse("input X[_o, e]\noutput Y\nY[_o] = X[_o, e] * _O\n")
    assert prog.ranks == ("_o", "e") and prog.tensor("Y").ranks == ("_o",)
    x = np.arange(6.0).reshape(3, 2)
    assert einattn.compile(prog)(X=x).tolist() == [3.0, 15.0, 27.0]  # (x0 + x1) * 3
    assert einattn.parse(einattn.format(prog)) == prog


@pytest.mark.parametrize(
    "text, where",
    [
        ("input X[_1]\noutput Y\nY[i] = X[i]\n", (1, 9)),
        ("input X[i]\noutput Y\nY[_] = X[i]\n", (3, 3)),
        ("input X[i]\noutput Y\nY[i] = X[_2]\n", (3, 10)),
    ],
)
def test_a_name_without_a_letter_cannot_name_a_rank(text, where):
    with pytest.raises(einattn.EinError, match="cannot name a rank: it has no letter") as e:
        einattn.parse(text)
    assert (e.value.line, e.value.column) == where
    assert "rank size" not in str(e.value)


def test_an_upper_case_underscore_name_is_a_size_not_a_rank():
    with pytest.raises(einattn.EinError, match="`_O` is a rank size") as e:
        einattn.parse("input X[_O]\noutput Y\nY[_o] = X[_o]\n")
    assert "write `_o`" in str(e.value)


# ---- expressions nested too deeply -------------------------------------------------------------------------


def test_a_long_comparison_chain_is_a_located_user_error():
    text = "input X[i]\noutput Y\nY[i] = X[i] where 0 < i" + " < i" * 500 + "\n"
    with pytest.raises(einattn.EinError, match="expression nested too deeply") as e:
        einattn.parse(text, "chain.ein")
    assert (e.value.line, e.value.column) == (3, 19)  # the filter
    assert "split it into several statements" in str(e.value)


@pytest.mark.parametrize("terms", [150, 500, 5000])
def test_a_too_deep_expression_points_at_its_statement(terms):
    text = "input X[i]\noutput Y\n\n\nY[i] = X[i]" + "+X[i]" * terms + "\n"
    with pytest.raises(einattn.EinError, match="expression nested too deeply") as e:
        einattn.parse(text, "long.ein")
    assert (e.value.line, e.value.column) == (5, 8)


def test_the_depth_limit_leaves_long_sums_and_deep_brackets_alone():
    import numpy as np

    from einattn.parser import MAX_DEPTH

    n = MAX_DEPTH - 2  # `X[i] + ... + X[i]` with n + 1 terms nests n + 2 deep (the sums, the read, `i`)
    prog = einattn.parse("input X[i]\noutput Y\nY[i] = X[i]" + " + X[i]" * n + "\n")
    assert einattn.compile(prog)(X=np.ones(2)).tolist() == [n + 1.0, n + 1.0]
    deep = "input X[i]\noutput Y\nY[i] = " + "(" * 3000 + "X[i]" + ")" * 3000 + "\n"
    assert einattn.parse(deep).einsums[0].expr == S.Read("X", (S.Coord("i"),))
    with pytest.raises(einattn.EinError, match="nested too deeply"):
        einattn.parse("input X[i]\noutput Y\nY[i] = X[i]" + " + X[i]" * (n + 1) + "\n")


# ---- unicode operators copied from papers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "char, hint",
    [
        ("×", "a product is `*`"),
        ("·", "a product is `*`"),
        ("÷", "a division is `/`"),
        ("−", "a minus is `-`"),
        ("≤", "`<=`"),
        ("≥", "`>=`"),
        ("≠", "`!=`"),
    ],
)
def test_unicode_operators_get_a_hint_with_the_ascii_operator(char, hint):
    op = char if char in "×·÷−" else None
    text = (
        f"input X[i]\noutput Y\nY[i] = X[i] {char} 2\n"
        if op
        else f"input X[i]\noutput Y\nY[i] = X[i] where i {char} 2\n"
    )
    with pytest.raises(einattn.EinError) as e:
        einattn.parse(text)
    assert f"unexpected character `{char}`" in str(e.value)
    assert e.value.hint is not None and hint in e.value.hint
    assert e.value.line == 3


# ---- params: huge integer literals -------------------------------------------------------------------------


def test_a_huge_integer_param_is_too_large_for_an_index_not_a_float():
    text = "input X[i]\nparam S = 99999999999999999999999\noutput Y\nY[i] = X[i + S]\n"
    with pytest.raises(einattn.EinError) as e:
        einattn.parse(text)
    msg = str(e.value)
    assert "param `S` = 99999999999999999999999 is too large for an index" in msg
    assert "not an integer" not in msg and "1e+23" not in msg
    assert (e.value.line, e.value.column) == (4, 14)


def test_a_huge_integer_param_that_sizes_a_rank_is_too_large():
    text = "input X[i]\nparam J = 99999999999999999999999\noutput Z\nZ[i, j] = X[i]\n"
    with pytest.raises(
        einattn.EinError, match="param `J` = 99999999999999999999999 is too large for a rank size"
    ):
        einattn.parse(text)


def test_a_huge_integer_param_used_as_a_value_is_a_float_until_it_overflows():
    import numpy as np

    prog = einattn.parse("input X[i]\nparam C = 99999999999999999999999\noutput Y\nY[i] = X[i] * C\n")
    assert einattn.compile(prog)(X=np.ones(1)).tolist() == [1e23]
    with pytest.raises(einattn.EinError, match=r"param `C` = 9{24}\.\.\. is too large"):
        einattn.parse("input X[i]\nparam C = " + "9" * 400 + "\noutput Y\nY[i] = X[i] * C\n")


@pytest.mark.parametrize(
    "text, message, col",
    [
        ("param A = 1e400\noutput Y\nY[i] = X[i] * A\n", "param `A` = 1e400 is too large", 7),
        ("param A = -2.5E+999\noutput Y\nY[i] = X[i] * A\n", "param `A` = -2.5E+999 is too large", 7),
        ("output Y\nY[i] = X[i] * 1e400\n", "number `1e400` is too large for a float64", 15),
        ("output Y\nY[i] = X[i] * " + "1" * 400 + "\n", "number `" + "1" * 24 + "...` is too large", 15),
        ("output Y\nY[i] = X[i] where i < 3.0e500\n", "number `3.0e500` is too large for a float64", 23),
    ],
)
def test_a_float_literal_beyond_float64_is_too_large_not_infinity(text, message, col):
    """A literal that overflows float64 is an error wherever it is written, as an integer param's is; it
    is never read as infinity (which is written `inf`)."""
    with pytest.raises(einattn.EinError) as e:
        einattn.parse("input X[i]\n" + text, "t.ein")
    assert message in str(e.value) and "1.8e308" in str(e.value)
    assert (e.value.line, e.value.column)[1] == col


def test_inf_and_the_largest_float64_literals_are_numbers():
    import numpy as np

    text = "input X[i]\nparam A = -inf\noutput Y\nY[i] = X[i] * A + 1.7976931348623157e308 - inf\n"
    assert einattn.compile(einattn.parse(text))(X=np.ones(1)).tolist() == [-np.inf]
    text = "input X[i]\noutput Y\nY[i] = X[i] * 1e308 * 1e-400\n"  # (underflow to 0 is a number)
    assert einattn.compile(einattn.parse(text))(X=np.ones(1)).tolist() == [0.0]


def test_a_term_added_to_a_summed_product_warns():
    """`S[m, p] = Q[p, e] * K[m, e] * rsqrt(E) + B[m]` sums `B[m]` over `e` with the product (E * B[m]):
    legal and almost never meant. A warning at the term, with the fix; none where every term varies along
    the summed rank, where nothing is added, or for a max."""
    import warnings

    def caught(text):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always", einattn.EinWarning)
            einattn.parse(text, "t.ein")
        return [str(x.message) for x in w if issubclass(x.category, einattn.EinWarning)]

    got = caught("input Q[p, e], K[m, e], B[m]\noutput S\nS[m, p] = Q[p, e] * K[m, e] * rsqrt(E) + B[m]\n")
    assert len(got) == 1 and "t.ein:3:42" in got[0] and "added E times" in got[0] and "hint:" in got[0]
    got = caught("input X[i, j], Y[i, j], A[i]\noutput S\nS[i] = X[i, j] - A[i] * 2 + Y[i, j]\n")
    assert len(got) == 1 and "added J times" in got[0]
    for quiet in (
        "input X[i, j], Y[i, j]\noutput S\nS[i] = X[i, j] + Y[i, j]\n",
        "input X[i, j], Y[j]\noutput S\nS[i] = X[i, j] * Y[j]\n",
        "input X[i, j], A[i]\noutput S\nS[i] = X[i, j] + A[i] :: max(j)\n",
        "input X[i, j], A[i]\noutput S\nS[i, j] = X[i, j] + A[i]\n",
    ):
        assert caught(quiet) == [], quiet


def test_error_lines_are_counted_as_the_parser_counts_them():
    """A form feed or a Unicode line separator in a comment is no line break for the parser: the source line
    shown under an error (and a param override's declaration) is the one the location names."""
    text = "# a comment\x0cwith a form feed, and\u2028a line separator\n"
    text += "input X[m]\nparam W = 2\noutput Y\nY[m] = Z[m]\n"
    with pytest.raises(einattn.EinError) as info:
        einattn.parse(text, "ff.ein")
    assert info.value.line == 5 and "Y[m] = Z[m]" in str(info.value)
    prog = einattn.parse(text.replace("Z[m]", "X[m // W]"), "ff.ein")
    with pytest.raises(einattn.EinError) as info:
        prog.with_params({"W": 0.5})
    assert (info.value.line, info.value.column) == (3, 7) and "param W = 2" in str(info.value)
