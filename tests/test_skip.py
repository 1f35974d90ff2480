"""Presence analysis (einattn.absence) and dead-tile skipping (einattn.skip): the rules, and that skipping
never changes a result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, edit
from hypothesis import given, settings
from hypothesis import strategies as st

import einattn
from einattn.absence import ALWAYS, Affine, Lin, Necessary, analyse, num
from einattn.format import format_program
from einattn.fusion import fused_schedule
from einattn.graph import Loop
from einattn.skip import tile_skip
from einattn.testing import attention_text, compare
from lowering import torch_runtime as R

CAUSAL_1PASS = (EXAMPLES / "causal_1pass.ein").read_text()
# The same cascade as a sliding window, with a finite initial max: a dead tile then leaves the initial state
# exactly as it is, so rows not reached yet can be skipped too.
WINDOW_1PASS = edit(
    edit(
        edit(CAUSAL_1PASS, "param  M0 = 64", "param  M0 = 64\nparam  W = 8"),
        "where m1 * M0 + m0 <= p",
        "where p - W < m1 * M0 + m0 and m1 * M0 + m0 <= p",
    ),
    "RM[b, h, 0, p] = -inf",
    "RM[b, h, 0, p] = -1e30",
)


WINDOW_NATURAL = (EXAMPLES / "sliding_window.ein").read_text()


def skip_of(text):
    prog = einattn.parse(text)
    loop = next(s for s in fused_schedule(prog) if isinstance(s, Loop))
    return tile_skip(prog, loop)


# ---- presence ----------------------------------------------------------------------------------------


def test_dense_specs_have_no_absent_points():
    for name in ("attention_3pass", "attention_deferred", "softcap", "linear", "lse", "sigmoid"):
        a = analyse(einattn.load(EXAMPLES / f"{name}.ein"))
        assert all(a.tensor(t.name) == ALWAYS for t in a.prog.tensors), name


def test_causal_masks_exactly_where_a_key_follows_the_query():
    a = analyse(einattn.load(EXAMPLES / "causal.ein"))
    (c,) = a.tensor("QK")
    assert dict(c.coefs) == {"m": -1, "p": 1} and c.const.const == 0  # p - m >= 0
    # every row has key 0: the max, the denominator and the output are present everywhere
    assert a.tensor("GM") == a.tensor("SD") == a.tensor("AV") == ALWAYS
    assert a.tensor("SN") == a.tensor("QK")


def test_empty_ranks_make_reductions_maybe_absent():
    prog = einattn.load(EXAMPLES / "attention_3pass.ein")
    a = analyse(prog, empty=True)
    assert a.tensor("GM") != ALWAYS
    (c,) = a.tensor("QK")  # QK sums over e: present only when E >= 1
    assert not c.coefs and c.const.terms == ((("size", "e"), 1),) and c.const.const == -1
    assert analyse(prog).tensor("QK") == ALWAYS


def test_recurrences_by_induction():
    a = analyse(einattn.load(EXAMPLES / "causal_1pass.ein"))
    assert a.tensor("RM") == a.tensor("RD") == a.tensor("RNV") == ALWAYS  # `??` keeps the state present
    b = analyse(einattn.load(EXAMPLES / "attention_1pass.ein"))
    assert b.tensor("RM") is None  # a ragged last tile makes LM, and so the state, maybe absent


def test_gathers_and_data_dependent_filters_are_unknown():
    a = analyse(einattn.load(EXAMPLES / "variants" / "02_gqa_groupmap.ein"))  # K[b, grp[h], m, e]
    assert a.tensor("QK") is None
    doc = einattn.parse(
        "input Q[p, e], K[m, e], d[p] : int\noutput S\nS[m, p] = Q[p, e] * K[m, e]  where d[p] == d[m]"
    )
    assert analyse(doc).tensor("S") is None


def _holds(constraint, point, sizes):
    value = constraint.const.const + sum(k * sizes[atom[1]] for atom, k in constraint.const.terms)
    return value + sum(k * point[r] for r, k in constraint.coefs) >= 0


@settings(max_examples=40, deadline=None)
@given(st.integers(-5, 5), st.integers(1, 4), st.integers(1, 6), st.integers(1, 12))
def test_a_floor_division_by_a_constant_bounds_its_read_exactly(shift, divisor, n, i_size):
    # `X[(i + c) // d]` is in bounds exactly where 0 <= i + c <= d N - 1: affine constraints on `i`, each
    # point's presence as the NumPy backend computes it (a present point holds 1 + |x| >= 1, an absent one 0)
    prog = einattn.parse(f"input X[n], Z[i]\noutput Y\nY[i] = Z[i] + X[(i + {shift}) // {divisor}]")
    presence = analyse(prog).tensor("Y")
    assert presence is not None
    x = np.abs(np.random.default_rng(0).normal(size=n))
    y = einattn.compile(prog, backend="numpy")(x, np.ones(i_size))
    for i in range(i_size):
        assert all(_holds(c, {"i": i}, {"n": n, "i": i_size}) for c in presence) == (y[i] != 0), i


@settings(max_examples=40, deadline=None)
@given(st.integers(-5, 5), st.integers(1, 4), st.integers(1, 6), st.integers(1, 12), st.integers(0, 2**12))
def test_necessary_constraints_hold_wherever_a_value_is_present(shift, divisor, n, i_size, keep):
    # a data-dependent filter makes the presence unknown; the affine part still holds at every present point
    prog = einattn.parse(
        f"input X[n], Z[i], W[i] : int\noutput Y\nY[i] = Z[i] + X[(i + {shift}) // {divisor}]  where W[i] > 0"
    )
    assert analyse(prog).tensor("Y") is None
    necessary = Necessary(prog).tensor("Y")
    assert necessary  # (the read's upper bound, at least)
    w = np.array([(keep >> i) & 1 for i in range(i_size)])
    x = np.abs(np.random.default_rng(0).normal(size=n))
    y = einattn.compile(prog, backend="numpy")(x, np.ones(i_size), w)
    for i in range(i_size):
        if y[i] != 0:
            assert all(_holds(c, {"i": i}, {"n": n, "i": i_size}) for c in necessary), i


def test_an_index_modulo_the_size_it_reads_is_in_bounds():
    # `x % N` lies in [0, N) for N >= 1: present everywhere (GQA's heads as `K[b, h % G, m, e]`); a size that
    # may be 0 makes it a zero divisor; `x % 3` against a size that may be below 3 stays unknown
    prog = einattn.parse("input X[n], Z[i]\noutput Y\nY[i] = Z[i] + X[(i - 3) % N]")
    assert analyse(prog).tensor("Y") == ALWAYS
    assert analyse(prog, empty=True).tensor("Y") is None
    y = einattn.compile(prog, backend="numpy")(np.arange(1.0, 3.0), np.ones(7))
    np.testing.assert_array_equal(y, 1 + np.array([2, 1, 2, 1, 2, 1, 2]))  # X[(i - 3) % 2] + 1
    assert analyse(einattn.parse("input X[n], Z[i]\noutput Y\nY[i] = Z[i] + X[i % 3]")).tensor("Y") is None
    fixed = einattn.parse("input X[n], Z[i]\nparam N = 4\noutput Y\nY[i] = Z[i] + X[i % 3]")
    assert analyse(fixed).tensor("Y") == ALWAYS


def test_grouped_reads_are_present_below_the_last_group():
    a = analyse(einattn.load(EXAMPLES / "gqa.ein"))  # K[b, h // R, m, e], R = 2
    assert a.tensor("QK") == a.tensor("AV") == {Affine.make({"h": -1}, Lin.of(("size", "g"), 2) - num(1))}


def test_non_unit_coefficients_are_not_eliminated():
    prog = einattn.parse("input X[m, p]\noutput Y\nY[p] = X[m, p] :: max(m)  where 2 * m <= p")
    assert analyse(prog).tensor("Y") is None


def _reads_of(prog, label):
    """The reads of statement ``label``, by tensor, in order."""
    e = next(e for e in prog.einsums if e.label == label)
    out = {}
    for rd in e.reads():
        out.setdefault(rd.tensor, []).append(rd)
    return out


def test_a_present_score_implies_a_present_running_max():
    # the rewritten natural causal cascade: its states start absent (`RM ?? LM`), yet wherever a score is
    # present its tile's max is, and so is the new running max: exp(score - max) needs the score's mask only
    prog = einattn.compile(EXAMPLES / "causal.ein", backend="torch").program
    a = analyse(prog)
    assert a.tensor("RM") is None and a.tensor("BQK") is not None
    (score,), (new_max,) = _reads_of(prog, "SLN").values()  # exp(BQK[.., m0, p] - RM[.., m1 + 1, p])
    assert a.implies(score, new_max)
    assert not a.implies(new_max, score)  # a row's max is present where some score of the tile is not
    old, new = _reads_of(prog, "PRM")["RM"]  # exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
    assert a.implies(old, new)  # a state once present stays present
    assert not a.implies(new, old)  # the first present state follows an absent one


CHAIN = "input X[p, m], Z[p]\noutput Y\nS[p, m] = X[p, m]  where m <= p\nT[p] = Z[p]  where p > 3\n"


@pytest.mark.parametrize(
    "text, holds",
    [
        (CHAIN + "L[p] = S[p, m] :: max(m)\nY[p, m] = S[p, m] - L[p]", True),
        # the witness must be a point of the reduction: a filter on the reduction may exclude it
        (CHAIN + "L[p] = S[p, m] :: max(m)  where m > 2\nY[p, m] = S[p, m] - L[p]", False),
        # the max of another row
        (CHAIN + "L[p] = S[p, m] :: max(m)\nY[p, m] = S[p, m] - L[p + 1]", False),
        # `a ?? b` is present where either is; an operation only where all its operands are
        (CHAIN + "M[p] = S[p, m] :: max(m)\nL[p] = M[p] ?? T[p]\nY[p, m] = S[p, m] - L[p]", True),
        (CHAIN + "M[p] = S[p, m] :: max(m)\nL[p] = M[p] + T[p]\nY[p, m] = S[p, m] - L[p]", False),
        (CHAIN + "M[p] = S[p, m] :: max(m)\nL[p] = M[p] + T[p] ?? 0\nY[p, m] = S[p, m] - L[p]", True),
    ],
)
def test_implication_needs_a_witness_in_the_reduction(text, holds):
    prog = einattn.parse(text)
    r = _reads_of(prog, "Y")
    assert analyse(prog).implies(r["S"][0], r["L"][0]) is holds


# ---- the rule -----------------------------------------------------------------------------------------


def value(lin, atoms):
    return lin.const + sum(c * atoms[a] for a, c in lin.terms)


def test_causal_skips_tiles_after_the_query():
    sk = skip_of(CAUSAL_1PASS)
    assert (sk.rank, sk.row, sk.tile) == ("m1", "p", "BQK")
    # exp(-inf - -inf) is NaN: rows before their first key stay computed
    assert sk.trailing and not sk.leading
    atoms = {("index", "m1"): 2, ("size", "m"): 1000}
    alive = tuple((value(low, atoms), a) for low, a in sk.bounds)
    whole = tuple((value(low, atoms), a) for low, a in sk.whole)
    assert R._alive(alive, (), 1000) == (128, 1000)  # tile 2 holds keys 128..191: rows from 128 see one
    assert R._alive(whole, (), 1000) == (191, 1000)  # and rows from 191 see all of them: no mask needed


def test_window_with_finite_initial_state_skips_both_sides():
    sk = skip_of(WINDOW_1PASS)
    assert sk.trailing and sk.leading


def test_rewritten_window_with_absent_initial_state_skips_both_sides():
    # rewritten, the natural window's states start absent; a dead tile keeps an absent state absent
    # (`max(RM ?? LM, LM ?? RM)` is `RM`), so rows before their window are skipped as well as rows after it
    prog = einattn.compile(WINDOW_NATURAL, backend="torch", params={"W": 8}, tile=4).program
    text = format_program(prog)
    sk = skip_of(text)
    assert sk.trailing and sk.leading
    # a dead step that makes an absent state present (the denominator 0 where it has seen nothing) changes
    # the state: rows before their window must be computed
    update = "RD[b, h, m1 + 1, p]     = SLD[b, h, m1, p] + (SPD[b, h, m1, p] ?? 0) ?? SPD[b, h, m1, p]"
    assert update in text
    assert skip_of(text.replace(update, update.replace("= SLD", "= (SLD") + ") ?? 0")) is None
    # and so does an initial state that is present
    present = edit(text, "RM[b, h, 0, p] = -inf  where 0 != 0", "RM[b, h, 0, p] = -inf")
    assert present != text and not skip_of(present).leading


def test_no_skip_without_a_filter_or_without_a_guard():
    assert skip_of((EXAMPLES / "attention_1pass.ein").read_text()) is None
    unguarded = CAUSAL_1PASS.replace("(SLD[b, h, m1, p] ?? 0)", "SLD[b, h, m1, p]")
    assert skip_of(unguarded) is None  # the dead update makes RD absent: the state would change


SUM_OVER_THE_TILE = """input  X[m, p]
param  M0 = 2
rank   M = M1 * M0
output F
B[m1, m0, p] = X[m1 * M0 + m0, p]  where m1 * M0 + m0 <= p
SB[m1, p]    = B[m1, m0, p]
R[0, p]      = 0
R[m1 + 1, p] = R[m1, p] + {summand}
F[p]         = R[M1, p]
"""


@pytest.mark.filterwarnings("ignore::einattn.EinWarning")  # (`SB` is unused in the first)
@pytest.mark.parametrize(
    ("summand", "skips"),
    [
        ("(B[m1, m0, p] ?? 0)", False),  # summed over m0: M0 copies of R on a dead tile (a reviewer's case)
        ("(SB[m1, p] ?? 0)", True),  # the tile's sum, then R: R unchanged on a dead tile
    ],
)
def test_a_step_that_sums_the_state_over_the_tile_is_not_skipped(summand, skips):
    """A step that reduces over the tile's rank adds one copy of the state per point: its dead update is
    M0 * R, not R, so dead tiles must be computed (docs/backends.md, "Dead tiles")."""
    text = SUM_OVER_THE_TILE.format(summand=summand)
    sk = skip_of(text)
    assert (sk is not None and sk.trailing) == skips
    x = np.ones((4, 4))
    want = einattn.compile(text, backend="numpy")(X=x)
    got = einattn.compile(text, backend="torch")(X=torch.tensor(x)).numpy()
    np.testing.assert_array_equal(got, want)
    if not skips:
        np.testing.assert_array_equal(want, [2.0, 4.0, 5.0, 6.0])


def test_the_generated_streaming_form_skips_rows_not_reached_yet():
    choices = dict(
        head="mha",
        transforms=("scale",),
        filter="causal",
        norm="softmax",
        R=1,
        W=2,
        affine=(1, "<=", 0),
        C="2.0",
        DMAX=1,
        M0=4,
    )
    text = attention_text(choices, streaming=True)
    assert "where m <= p" in text
    sk = skip_of(text)  # the filter is on the dense score S0; the tile BS reads it, so its presence is exact
    assert sk.tile == "BS"
    # its guard `max(RM, -1e30)` keeps the initial state through a dead tile, but is not the identity on a
    # finite state (a max below -1e30 would change): only rows not reached yet are skipped
    assert sk.leading and not sk.trailing


def test_runtime_intervals():
    assert R._alive(((-4 * 2, 1),), (), 10) == (8, 10)  # p >= 8
    assert R._alive(((-4 * 2, 1), (4 * 2 + 5, -1)), (), 100) == (8, 14)  # 8 <= p <= 13
    assert R._alive((), (-1,), 10) == (0, 0)
    # alive 8..9 of 10; established 0..7: trailing skips them, leading-only cannot
    assert R._rows_needed(8, 10, ((0, 8),), 10, True, False) == (8, 10)
    assert R._rows_needed(8, 10, ((0, 8),), 10, False, True) == (0, 10)
    assert R._rows_needed(8, 10, ((0, 4),), 10, True, False) == (4, 10)
    assert R._rows_needed(2, 4, ((0, 2),), 10, True, True) == (2, 4)
    assert R._rows_needed(2, 4, ((0, 2),), 10, True, False) == (2, 10)  # rows 4.. not established: computed
    assert R._rows_needed(0, 0, (), 10, False, True) == (0, 0)
    # the rows computed: widened to a multiple of 32 rows when that adds at most an eighth, by established
    # rows where it can (their running max is not at its start), else after the interval, else before it
    assert R.ROW_ALIGN == 32
    assert R._rows(257, 512, ((0, 257),), 1000, True, True) == (256, 512)  # a sliding window's 255 rows
    assert R._rows(256, 511, ((0, 256),), 1000, True, True) == (255, 511)
    assert R._rows(256, 511, ((511, 600),), 1000, True, True) == (256, 512)
    assert R._rows(256, 511, (), 1000, True, True) == (256, 512)
    assert R._rows(256, 511, (), 511, True, True) == (255, 511)  # not past the last row
    assert R._rows(0, 255, (), 255, True, True) == (0, 255)  # nor before the first
    assert R._rows(10, 300, (), 1000, True, True) == (10, 330)  # 290 rows: 320
    assert R._rows(8, 10, ((0, 8),), 10, True, False) == (8, 10)  # 2 rows: widening would add 30
    assert R._rows(0, 0, (), 10, False, True) == (0, 0)
    assert R._grow((), 3, 5) == ((3, 5),)
    assert R._grow(((3, 5),), 5, 9) == ((3, 9),)
    assert R._grow(((3, 5),), 7, 9) == ((3, 5), (7, 9))
    # established rows apart from each other (alive {6}, then {0 .. 4}): both kept, and a dead step that
    # changes fresh rows only (leading false) computes every established row, skips none of them
    est = R._grow(R._grow((), 6, 7), 0, 5)
    assert est == ((0, 5), (6, 7)) and R._grow(est, 4, 7) == ((0, 7),)
    assert R._rows_needed(2, 3, est, 8, True, False) == (2, 8)  # rows 5 and 7: fresh, computed
    assert R._rows_needed(2, 3, est, 7, True, False) == (2, 6)  # row 6: established, skipped
    assert R._rows_needed(2, 3, est, 8, False, True) == (0, 7)  # row 7 alone is fresh: skipped


# ---- skipping changes nothing ----------------------------------------------------------------------------


def run(text, params, q, k, v, **options):
    kern = einattn.compile(text, backend="torch", params=params, **options)
    return kern(Q=torch.tensor(q), K=torch.tensor(k), V=torch.tensor(v))


@settings(max_examples=20)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 6),
    st.sampled_from(["causal", "window", "natural window"]),
    st.sampled_from([0, 1, 2, 3, 512]),
    st.integers(0, 2**16),
)
def test_skipping_equals_computing_and_numpy(p, m, m0, w, which, rows, seed):
    # the natural window is rewritten over tiles of m0 keys, its states absent until a row's first key
    text = {"causal": CAUSAL_1PASS, "window": WINDOW_1PASS, "natural window": WINDOW_NATURAL}[which]
    params = {"W": w} if "window" in which else {}
    if which == "natural window":
        rows = {"row_block": rows, "tile": m0}
    else:
        params["M0"] = m0
        rows = {"row_block": rows}
    rng = np.random.default_rng(seed)
    q, k, v = (
        rng.standard_normal((1, 2, p, 3)),
        rng.standard_normal((1, 2, m, 3)),
        rng.standard_normal((1, 2, m, 2)),
    )
    want = einattn.compile(text, backend="numpy", params=params)(Q=q, K=k, V=v)
    skipped = run(text, params, q, k, v, **rows)
    computed = run(text, params, q, k, v, skip_tiles=False, **rows)
    assert compare(skipped, want, 1e-10) <= 1e-10
    assert compare(computed, want, 1e-10) <= 1e-10


@pytest.mark.parametrize("which", ["causal", "window"])
def test_skipping_computes_fewer_rows(which, monkeypatch):
    text = CAUSAL_1PASS if which == "causal" else WINDOW_1PASS
    kern = einattn.compile(text, backend="torch", params={"M0": 4}, row_block=32)
    computed = []
    program = kern.function
    original = program.__globals__["_rows"]

    def spy(*args):
        out = original(*args)
        computed.append(max(out[1] - out[0], 0))
        return out

    monkeypatch.setitem(program.__globals__, "_rows", spy)
    x = torch.randn(1, 1, 32, 4, dtype=torch.float64)
    kern(Q=x, K=x, V=x)
    assert len(computed) == 8
    full = 32 * 8
    rows = sum(computed)
    if which == "causal":
        assert rows == sum(32 - 4 * k for k in range(8)) < 0.6 * full
    else:
        assert rows <= 8 * (4 + 8 - 1)


def test_row_blocks_and_whole_tiles_give_the_same_gradients():
    x = {n: torch.randn(1, 2, 23, 3, dtype=torch.float64, requires_grad=True) for n in "QKV"}
    grads = []
    for rows in (0, 4, 7, 512):
        kern = einattn.compile(CAUSAL_1PASS, backend="torch", params={"M0": 3}, row_block=rows)
        out = kern(**x)
        grads.append(torch.autograd.grad(out.square().sum(), list(x.values())))
    for g in grads[1:]:
        for a, b in zip(grads[0], g):
            assert torch.allclose(a, b, atol=1e-12)


def test_abs_below_a_bound_is_two_affine_comparisons():
    """`abs(p - m) < W` is `-W < p - m < W` for the analysis (exact presence: tiles outside are skipped);
    `abs(p - m) > W` is a disjunction, unknown; `not (abs(p - m) >= W)` is the first again."""

    def presence(cond):
        prog = einattn.parse(f"input X[p, m]\nparam W = 3\noutput S\nS[m, p] = X[p, m] where {cond}\n")
        return analyse(prog).statement(prog.einsums[0])

    assert presence("abs(p - m) < W") == presence("0 - W < p - m and p - m < W") is not None
    assert presence("W > abs(p - m)") == presence("abs(p - m) < W")
    assert presence("not (abs(p - m) >= W)") == presence("abs(p - m) < W")
    assert presence("abs(p - m) <= W") == presence("0 - W <= p - m and p - m <= W")
    assert presence("abs(p - m) > W") is None


@pytest.mark.parametrize(
    "expr, want",
    [
        ("exp2(exp2(exp2(30)))", np.inf),  # 2^(2^30) exactly has 2^30 bits
        ("square(square(square(square(square(square(square(square(square(square(1e300))))))))))", np.inf),
        ("1 / exp2(exp2(20))", 0.0),
        ("exp2(-exp2(40))", 0.0),
        ("log(exp2(exp2(30)))", np.inf),
        ("exp(exp(exp(10)))", np.inf),
        ("exp2(1023)", 2.0**1023),
        ("rsqrt(4) * exp(0.5)", 0.5 * np.exp(0.5)),
    ],
)
def test_constants_beyond_float64_are_evaluated_as_float64_not_exactly(expr, want):
    """einattn.skip.constant_value evaluates a constant exactly (sympy) to decide whether it is finite: a
    fuzzed spec's `exp2(exp2(exp2(30)))` took 24 GB (2^(2^30) has 2^30 bits) and an OOM kill in CI. Values
    far beyond float64's range are its infinity or 0 instead, at once; every backend agrees."""
    import time

    from einattn.skip import constant_value

    prog = einattn.parse(f"input X[i]\noutput Y\nY[i] = X[i] * ({expr})\n")
    start = time.perf_counter()
    got = constant_value(prog, prog.einsums[0].expr.b, {})
    assert got == pytest.approx(want, rel=1e-12)
    assert time.perf_counter() - start < 5
    x = np.ones(2)
    np.testing.assert_allclose(einattn.compile(prog)(X=x), [want] * 2, rtol=1e-12)
    y = einattn.compile(prog, backend="torch")(X=torch.ones(2, dtype=torch.float64))
    np.testing.assert_allclose(y.numpy(), [want] * 2, rtol=1e-12)
