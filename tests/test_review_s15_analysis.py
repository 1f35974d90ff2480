"""Review (session 15): the analysis after b9d3004 (re-read tensors held from their Einsum's pass, running
states re-read along their rank, one point of a pointwise value), the rewrite and ``einattn analyze``.

Every expected value is derived by hand from ``shared/reference/fusemax.md`` section 2 (a traversing Einsum
that reads an R fiber with a value depending on a full R-reduction *of that fiber* starts a new pass:
``pass = 1 + pass(reduction)``; N read-read dependencies in a chain make N + 1 passes) and section 3, and from
docs/analysis.md sections 4 to 6, or computed with NumPy without einattn. Nothing is copied from einattn's
output. Tests marked ``# BUG:`` failed on the code as reviewed; all were fixed in session 15 (a reduction
dated by its Einsum's pass, inputs held from their first read, pointwise values reduced over other ranks,
constant points of sums, states streamed over another rank, fractional buffer sizes).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import einattn
from einattn.analysis import read_expr
from einattn.api import parse
from einattn.cli import main as cli_main
from einattn.rewrite import rewrite

F, I, K, M, T = sp.symbols("F I K M T")
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.ein"))


def analyze(text, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.analyze(text, **kw)


def plain(x):
    x = sp.sympify(x)
    return sp.expand(x.subs({s: sp.Symbol(s.name) for s in x.free_symbols}))


def same(a, b) -> bool:
    return sp.simplify(plain(a) - plain(b)) == 0


def barrier_terms(r):
    return sorted((t.tensor, t.cut) for t in r.footprint_terms if t.kind == "barrier")


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli_main(list(args))
    return rc, out.getvalue(), err.getvalue()


# ================================================================================================
# 1. Pass counts: a reduction runs in the pass of its Einsum, for every root it reads
# ================================================================================================

# Teaching cascade 1 twice in a chain. Y reduces A (pass 1); X re-reads A after Y (pass 2) and reads B for
# the first time there; W reduces X*B, so it completes only at the end of pass 2; Z then re-reads B: pass 3.
# Two read-read dependencies in a chain (Y -> X on A, W -> Z on B): 3 passes (fusemax.md section 2).
CHAIN = """input A[k], B[k]
output Z
Y = A[k]
X[k] = A[k] - Y
W = X[k] * B[k]
Z[k] = B[k] * W
"""


def test_chained_teaching_cascades_are_three_pass():  # BUG:
    r = analyze(CHAIN)
    assert r.passes["k"] == 3
    assert sorted((b.pass_, b.reduction, b.einsum, b.tensor) for b in r.barriers) == [
        (2, "Y", "X", "A"),
        (3, "W", "Z", "B"),
    ]


def test_chained_teaching_cascades_footprint():  # BUG:
    # accumulators Y, W; A live from pass 1 to 2, B (first read in pass 2) from pass 2 to 3: K per boundary
    r = analyze(CHAIN)
    assert same(r.footprint, K + 2)
    assert barrier_terms(r) == [("A", 1), ("B", 2)]


def test_the_same_chain_with_a_computed_second_fiber_is_three_pass():
    """Control: when the second re-read is of a computed tensor made in pass 2 (X), the count is right; only
    an input (or a root) first read in a later pass is mis-dated."""
    r = analyze(CHAIN.replace("Z[k] = B[k] * W", "Z[k] = X[k] * W"))
    assert r.passes["k"] == 3


# Cascade 4 with a per-key weight W read first in pass 2 (by SN) and summed into SD in pass 2; AV reads W
# along m with 1/SD inside the sum: pass = 1 + pass(SD) = 3, as for `AV = X * V / SD` (tests/test_analysis.py
# WEIGHTED pins 3 there). Footprint: QK from 1 to 2, W from 2 to 3: F + M + 2.
WEIGHT_REREAD = """input Q[e, p], K[e, m], V[f, m], W[m]
output AV
QK[m, p] = Q[e, p] * K[e, m]
GM[p] = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p]) * W[m]
SD[p] = SN[m, p]
AV[f, p] = W[m] * V[f, m] / SD[p]
"""


def test_weighted_softmax_re_reading_its_weight_after_the_denominator_is_three_pass():  # BUG:
    r = analyze(WEIGHT_REREAD)
    assert r.passes["m"] == 3
    assert r.classification.startswith("3-pass over m")


def test_weighted_softmax_re_reading_its_weight_footprint():  # BUG:
    r = analyze(WEIGHT_REREAD)
    assert same(r.footprint, F + M + 2)
    assert barrier_terms(r) == [("QK", 1), ("W", 2)]


def test_weighted_softmax_re_reading_its_weight_is_numerically_what_numpy_says():
    """The spec means what it says (this is the cascade the counts above are about)."""
    rng = np.random.default_rng(1)
    q, k, v, w = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((3, 6)),
        rng.standard_normal((2, 6)),
        rng.random(6),
    )
    got = einattn.compile(WEIGHT_REREAD, backend="numpy")(Q=q, K=k, V=v, W=w)
    s = k.T @ q  # [m, p]
    sd = (np.exp(s - s.max(0)) * w[:, None]).sum(0)
    np.testing.assert_allclose(got, (v * w) @ np.ones((6, 1)) / sd[None, :], rtol=1e-12)


# ================================================================================================
# 2. One point read at a constant index (rule 3 of b9d3004)
# ================================================================================================


@pytest.mark.parametrize(
    "lines",
    [
        # S reduces k, not i: S[I - 1] is one point, made from the row A[I - 1, :] before Y walks i
        "input A[i, k]\noutput Y\nS[i] = A[i, k]\nY[i] = S[i] - S[I - 1]\n",
        "input A[i, k]\noutput Y\nS[i] = A[i, k] :: max(k)\nY[i, k] = A[i, k] - S[I - 1]\n",
        # a recurrence over t, not over i: R[T, I - 1] walks t at one point of i
        "input A[t, i]\noutput Y\nR[0, i] = 0\nR[t + 1, i] = R[t, i] + A[t, i]\n"
        "Y[i] = A[0, i] - R[T, I - 1]\n",
    ],
)
def test_one_point_of_a_value_reduced_over_another_rank_needs_no_pass_over_i(lines):  # BUG:
    """fusemax.md section 2: only a full reduction *of the i fiber* orders a re-read of it. `S[I - 1]` reduces
    k (or walks t) at the single point i = I - 1; a mapping computes it first, as it computes `X2[I - 1]`
    (which b9d3004 made 1-pass). The rule excludes every reduction, not only those over i (or an alias)."""
    assert analyze(lines, rank="i").passes["i"] == 1


def test_a_reduction_over_the_whole_fiber_read_at_index_zero_orders_the_re_read():  # BUG:
    """With `rank J = I`, `S[i] = X[j]` is the sum of all of X at every i. Read at I - 1 it is counted 2-pass
    (correct: the whole X fiber, then Y re-reads X); read at index 0 the same value is taken for an initial
    state (`early`) and the dependency vanishes: 1 pass."""
    base = "input X[i]\noutput Y\nrank J = I\nS[i] = X[j]\n"
    assert analyze(base + "Y[i] = X[i] - S[I - 1]\n", rank="i").passes["i"] == 2
    assert analyze(base + "Y[i] = X[i] - S[0]\n", rank="i").passes["i"] == 2


@pytest.mark.parametrize(
    "lines, passes",
    [
        # pointwise chains: each point needs one point of X
        ("X2[i] = 2 * X[i]\nX3[i] = X2[i] + X[i]\nY[i] = X[i] - X3[I - 1]", 1),
        ("X2[i] = exp(X[i])\nY[i] = X[i] * X2[0] - X2[I - 1]", 1),
        # a pointwise value of a full reduction: the read waits for the sum, whichever point it reads
        ("C = X[i]\nX2[i] = X[i] - C\nX3[i] = 2 * X2[i]\nY[i] = X[i] - X3[I - 1]", 2),
        # a value made from a prefix sum: one point needs the walk up to it (counted as the whole walk)
        ("R[0] = 0\nR[i + 1] = R[i] + X[i]\nY[i] = X[i] / R[I]", 2),
    ],
)
def test_pointwise_chains(lines, passes):
    assert analyze(f"input X[i]\noutput Y\n{lines}\n").passes["i"] == passes


# ================================================================================================
# 3. Running states re-read along their rank (rule 2 of b9d3004)
# ================================================================================================

STATES_2D = (
    "input A[t, i]\noutput Y\nR[0, i] = 0\nR[t + 1, i] = R[t, i] + A[t, i]\nC = R[T, i]\n"
    "Y[t, i] = R[t + 1, i] / C\n"
)


def test_prefix_sums_over_a_grand_total_streamed_over_t():
    # C needs every column's walk over t and a sum over i: 2 passes over t and over i. Nothing is parallel
    # (i is reduced, t iterative): one running state per column (I) + all T states of all columns (I*T).
    r = analyze(STATES_2D)
    assert r.passes["t"] == 2 and r.passes["i"] == 2
    assert same(r.footprint, I * T + I)


def test_prefix_sums_over_a_grand_total_streamed_over_i():  # BUG:
    """The same cascade, its footprint per the streamed rank i: between the two passes over i, Y still needs
    every state R[t + 1, i] of every column (I*T elements, or the inputs A to recompute them), plus the
    accumulator C. The barrier term drops R's iterative dimension (it is counted as one state only when the
    streamed rank is R's own): `I + 1`."""
    r = analyze(STATES_2D, rank="i")
    assert same(r.footprint, I * T + 1)


def test_a_scan_read_twice_in_a_later_pass_holds_its_states_once():
    # Y reads R[t + 1] and R[t] (both states along t) after R[T]: T states (T + 1 with R[0], which is a
    # constant), one running state. The two reads are one tensor: counted once, not twice.
    r = analyze("input X[t]\noutput Y\nR[0] = 0\nR[t + 1] = R[t] + X[t]\nY[t] = (R[t + 1] - R[t]) / R[T]\n")
    assert r.passes["t"] == 2
    assert same(r.footprint, T + 1)


def test_cascade5_then_a_second_pass_over_its_tiles_holds_m_scores_and_m1_maxes():
    """Cascade 5 plus an explicit normalised probability matrix: `PA` re-reads the score tiles (M per row) and
    the running max of each tile (M1 per row) after RD's final state: 2 passes over m."""
    text = (Path(__file__).parent.parent / "examples" / "attention_1pass.ein").read_text()
    text = text.replace("output AV", "output AV, PA")
    text += "PA[b, h, m1, m0, p] = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p]) / RD[b, h, M1, p]\n"
    r = analyze(text)
    assert r.passes["m"] == 2
    terms = {
        (t.tensor, t.cut): plain(t.expr) for t in r.footprint_terms if t.kind == "barrier" and t.rank == "m"
    }
    assert terms == {("BQK", 1): plain(M), ("RM", 1): sp.Symbol("M1")}


# ================================================================================================
# 4. Other hand-counted cascades
# ================================================================================================


@pytest.mark.parametrize(
    "text, rank, passes",
    [
        # multi-output: an output that is a full reduction does not itself add a pass
        ("input A[k], B[k]\noutput Y, Z\nY = A[k] * B[k]\nZ[k] = A[k] / Y\n", "k", 2),
        # two independent normalisations in one cascade: passes do not add across independent fibers
        ("input A[k], B[k]\noutput Y, Z\nSA = A[k]\nSB = B[k]\nY[k] = A[k] / SA\nZ[k] = B[k] / SB\n", "k", 2),
        # softmax of softmax: 3-pass twice in a chain, 5 passes
        (
            "input X[m]\noutput Y\nG1 = X[m] :: max(m)\nE1[m] = exp(X[m] - G1)\nD1 = E1[m]\n"
            "S1[m] = E1[m] / D1\nG2 = S1[m] :: max(m)\nE2[m] = exp(S1[m] - G2)\n"
            "D2 = E2[m]\nY[m] = E2[m] / D2\n",
            "m",
            5,
        ),
        # an index expression that reads X backwards is a forward read (docs/analysis.md section 8)
        ("input X[i]\noutput Y\nC = X[i]\nY[i] = X[I - 1 - i] / C\n", "i", 2),
        # causal filter changes nothing
        (
            "input A[k, p]\noutput Z\nY[p] = A[k, p] where k <= p\nZ[k, p] = A[k, p] / Y[p] where k <= p\n",
            "k",
            2,
        ),
    ],
)
def test_hand_counted_passes(text, rank, passes):
    assert analyze(text).passes[rank] == passes


SOFTMAX_OF_SOFTMAX = (
    "input X[m]\noutput Y\nG1 = X[m] :: max(m)\nE1[m] = exp(X[m] - G1)\nD1 = E1[m]\nS1[m] = E1[m] / D1\n"
    "G2 = S1[m] :: max(m)\n"
)


def test_softmax_of_softmax_holds_one_row_at_each_of_four_boundaries():
    # X 1->2, E1 2->3, S1 3->4, E2 4->5: M at each boundary; accumulators G1, D1, G2, D2
    r = analyze(SOFTMAX_OF_SOFTMAX + "E2[m] = exp(S1[m] - G2)\nD2 = E2[m]\nY[m] = E2[m] / D2\n")
    assert r.passes["m"] == 5 and same(r.footprint, M + 4)
    assert barrier_terms(r) == [("E1", 2), ("E2", 4), ("S1", 3), ("X", 1)]


def test_a_tensor_made_in_pass_2_and_re_read_in_pass_4_is_live_across_two_boundaries_once_each():
    r = analyze(SOFTMAX_OF_SOFTMAX + "Y[m] = E1[m] - G2\n")
    assert r.passes["m"] == 4 and same(r.footprint, M + 3)
    assert barrier_terms(r) == [("E1", 2), ("E1", 3), ("X", 1)]


def test_op_counts_by_instrumented_numpy():
    """Count each operation of a small cascade by running it in NumPy, one op per element computed."""
    text = (
        "input X[i], Z[j]\noutput Y, W\nX2[i] = 2 * X[i]\nY[i, j] = exp(X2[i]) + Z[j] * X[I - 1]\n"
        "W[j] = X[i] * Z[j]\n"
    )
    sizes = {"I": 5, "J": 3}
    r = analyze(text, sizes=sizes)
    counted = {"mul": 0, "add": 0, "exp": 0, "madd": 0}
    x, z = np.arange(5.0), np.arange(3.0)
    x2 = 2 * x
    counted["mul"] += x2.size
    ex = np.exp(x2)
    counted["exp"] += ex.size  # hoisted: varies over i only
    zx = z * x[-1]
    counted["mul"] += zx.size  # varies over j only
    y = ex[:, None] + zx[None, :]
    counted["add"] += y.size
    w = (x[:, None] * z[None, :]).sum(0)  # one multiply-add per (i, j)
    counted["madd"] += x.size * z.size
    assert w.shape == (3,)
    got = {k: r.value(v) for k, v in r.ops.items()}
    assert got == {k: v for k, v in counted.items() if v}


# ================================================================================================
# 5. JSON schema, text and DOT consistency over every example and the cascades above
# ================================================================================================

SPECS = [p.read_text() for p in EXAMPLES] + [CHAIN, WEIGHT_REREAD, STATES_2D]
SPEC_IDS = [p.stem for p in EXAMPLES] + ["chain", "weight_reread", "states_2d"]


@pytest.mark.parametrize("text", SPECS, ids=SPEC_IDS)
def test_json_is_self_consistent(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = einattn.analyze(text, buffer="16MiB")
    j = json.loads(json.dumps(r.to_json()))
    assert j["schema"] == "einattn.analysis/1"
    syms = j["symbols"]
    rd = lambda q: plain(read_expr(q["expr"], syms))  # noqa: E731
    prog = r.program
    labels = [e.label for e in prog.einsums]
    # every rank, with a pass count; every barrier's pass within its rank's count; locations file:line:col
    assert set(j["passes"]) == set(prog.ranks)
    for b in j["barriers"]:
        assert 2 <= b["pass"] <= j["passes"][b["rank"]]
        for key in ("reduction_at", "einsum_at", "read_at"):
            assert re.fullmatch(r".+:\d+:\d+", b[key]), b[key]
        assert b["reduction"] in labels and b["einsum"] in labels
    # a rank with more than one pass has a barrier that starts each pass
    for rank, n in j["passes"].items():
        starts = {b["pass"] for b in j["barriers"] if b["rank"] == rank}
        if n > 1 and rank in j["groups"]:
            assert starts == set(range(2, n + 1)), (rank, n, starts)
    # groups: every Einsum exactly once per analysed rank
    for rank, groups in j["groups"].items():
        flat = [x for g in groups for x in g]
        assert sorted(flat) == sorted(labels), rank
    # footprint: state + accumulators + per cut rank the largest boundary
    fp = j["footprint"]
    fixed = sum((rd(t) for t in fp["terms"] if t["kind"] != "barrier"), sp.Integer(0))
    cuts: dict = {}
    for t in fp["terms"]:
        if t["kind"] == "barrier":
            assert isinstance(t["cut"], int) and t["cut"] >= 1
            cuts.setdefault(t["rank"], {}).setdefault(t["cut"], sp.Integer(0))
            cuts[t["rank"]][t["cut"]] += rd(t)
        else:
            assert t["cut"] is None
    want = fixed + sum((sp.Max(*c.values()) for c in cuts.values()), sp.Integer(0))
    assert same(rd(fp), want)
    assert same(rd(fp["bytes"]), 2 * rd(fp))
    # ops: total is the sum over Einsums, flops weight madd 2
    total: dict = {}
    for per in j["ops"]["einsums"].values():
        for cls, q in per.items():
            total[cls] = total.get(cls, 0) + rd(q)
    assert {k: plain(v) for k, v in total.items()} == {k: rd(v) for k, v in j["ops"]["total"].items()}
    flops = sum((rd(q) * (2 if c == "madd" else 1) for c, q in j["ops"]["total"].items()), sp.Integer(0))
    assert same(rd(j["ops"]["flops"]), flops)


@pytest.mark.parametrize("text", SPECS, ids=SPEC_IDS)
def test_dot_parses_and_has_a_red_edge_per_barrier_pair(text):
    pydot = pytest.importorskip("pydot")
    from einattn.analysis.dot import to_dot

    r = analyze(text)
    (g,) = pydot.graph_from_dot_data(to_dot(r))
    names = {n.get_name().strip('"') for n in g.get_nodes()}
    prog = r.program
    assert {e.label for e in prog.einsums} <= names
    assert {f"input {x}" for x in prog.inputs} <= names
    red = {
        (e.get_source().strip('"'), e.get_destination().strip('"'))
        for e in g.get_edges()
        if (e.get("color") or "").strip('"') == "red"
    }
    assert red == {(b.reduction, b.einsum) for b in r.barriers if b.rank == r.rank}


# ================================================================================================
# 6. Rewrite: the results equal the spec (numpy backend) and are 1-pass when claimed
# ================================================================================================

REWRITABLE = {
    "weight_reread": WEIGHT_REREAD,
    "lse_and_output": """input Q[e, p], K[e, m], V[f, m]
output AV, L
QK[m, p] = Q[e, p] * K[e, m]
GM[p] = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p] = SN[m, p]
AV[f, p] = SN[m, p] * V[f, m] / SD[p]
L[p] = GM[p] + log(SD[p])
""",
    "two_heads_of_values": """input Q[e, p], K[e, m], V[f, m], U[f, m]
output O
QK[m, p] = Q[e, p] * K[e, m]
GM[p] = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p] = SN[m, p]
A[m, p] = SN[m, p] / SD[p]
O[f, p] = A[m, p] * (V[f, m] - U[f, m])
""",
}


@pytest.mark.parametrize("name", sorted(REWRITABLE))
@pytest.mark.parametrize("tile", [1, 3, 7, 64])
def test_one_pass_rewrite_equals_the_spec(name, tile):
    prog = parse(REWRITABLE[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, _ = rewrite(prog, passes=1, rank="m", tile=tile)
    assert analyze(new).passes["m"] == 1
    rng = np.random.default_rng(tile)
    ins = {"Q": rng.standard_normal((3, 4)) * 2, "K": rng.standard_normal((3, 7)) * 2}
    for x in ("V", "U"):
        ins[x] = rng.standard_normal((2, 7))
    ins["W"] = rng.random(7) + 0.1
    ins = {k: v for k, v in ins.items() if k in prog.inputs}
    a = einattn.compile(prog, backend="numpy")(**ins)
    b = einattn.compile(new, backend="numpy")(**ins)
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-10, atol=1e-12)


def test_a_refused_rewrite_is_a_located_error_with_a_caret_and_a_hint():
    # a max that is not a shift (relu): the online rule cannot rescale it
    text = (
        "input Q[e, p], K[e, m], V[f, m]\noutput AV\nQK[m, p] = Q[e, p] * K[e, m]\n"
        "GM[p] = QK[m, p] :: max(m)\n"
        "SN[m, p] = relu(QK[m, p] - GM[p])\nSD[p] = SN[m, p]\nAV[f, p] = SN[m, p] * V[f, m] / SD[p]\n"
    )
    with pytest.raises(einattn.EinError) as info:
        rewrite(parse(text, "relu.ein"), passes=1)
    msg = str(info.value)
    assert re.search(r"relu\.ein:\d+:\d+: error", msg), msg
    assert re.search(r"\n\s*\d+ \| .*\n\s*\^", msg), msg
    assert "hint:" in msg


# ================================================================================================
# 7. The command line: exit codes and messages
# ================================================================================================


@pytest.fixture
def t1(tmp_path):
    p = tmp_path / "t1.ein"
    p.write_text("input A[k], B[k]\noutput Z\nY = A[k] * B[k]\nZ = Y * A[k]\n")
    return str(p)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--size", "K=-3"), "non-negative"),
        (("--size", "K=abc"), "must be an integer"),
        (("--size", "k=4"), "sizes are upper case"),
        (("--size", "Q=4"), "sizes of this spec are: K"),
        (("--size", "K"), "NAME=VALUE"),
        (("--buffer", "16XB"), "bad buffer size"),
        (("--buffer", "-5"), "bad buffer size"),
        (("--rank", "zz"), "choose one of: k"),
        (("--elem-bytes", "0"), "positive"),
        (("--tile", "0"), "--tile"),
    ],
)
def test_bad_options_are_user_errors(t1, args, fragment):
    rc, out, err = cli("analyze", t1, *args)
    assert rc == 1 and out == ""
    assert fragment in err and "Traceback" not in err


def test_a_fraction_of_a_byte_is_not_a_buffer_size(t1):  # BUG:
    """`--buffer 0.5` (or `1.3`) is taken as 0 (1) bytes without a word; a plain byte count is a whole number
    (`1.5MiB` is fine: a whole number of bytes)."""
    rc, _, err = cli("analyze", t1, "--buffer", "0.5", "--no-rewrite")
    assert rc == 1 and "buffer" in err


def test_a_bad_spec_is_a_located_error_with_caret_and_hint(tmp_path):
    p = tmp_path / "bad.ein"
    p.write_text("input A[k], B[k]\noutput Z\nY = A[k] * B[q]\nZ = Y * A[k]\n")
    rc, out, err = cli("analyze", str(p))
    assert rc == 1 and out == ""
    assert f"{p}:3:14: error" in err
    assert re.search(r"\n\s*3 \| Y = A\[k\] \* B\[q\]\n\s*\^", err), err
    assert "hint:" in err and "Traceback" not in err


def test_cli_json_of_the_chain_names_three_passes(tmp_path):  # BUG:
    p = tmp_path / "chain.ein"
    p.write_text(CHAIN)
    rc, out, err = cli("analyze", str(p), "--json", "--no-rewrite", "--size", "K=100")
    assert rc == 0, err
    j = json.loads(out)
    assert j["passes"]["k"] == 3 and j["footprint"]["value"] == 102
