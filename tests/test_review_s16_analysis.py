"""Review (session 16): the analysis and the rewrite against figures worked out by hand.

Every expected value below is derived by hand, in the comment next to it, from
``shared/reference/fusemax.md`` (section 2: a traversing Einsum that reads an R fiber together with a value
depending on a full R-reduction *of that fiber* starts a new pass, pass = 1 + pass(reduction); an iterative
rank is no full reduction; section 3: with two or more passes over a rank of a tensor, its whole fiber is
live whatever the mapping) and from docs/analysis.md (section 4: footprint per point of the parallel ranks Pi
= running states + accumulators + the largest boundary of re-read fibers; section 5: operation classes and
hoisting). Numbers are checked against NumPy formulas that do not go through einattn. None of the specs is
used by the earlier reviews (tests/test_review_s14_analysis.py, tests/test_review_s15_analysis.py).

Tests preceded by ``# BUG:`` fail on the code as reviewed; the report of this review describes each.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy as sp

import einattn
from einattn.analysis import read_expr
from einattn.api import parse
from einattn.cli import main as cli_main
from einattn.rewrite import rewrite

E, F, I, J, K, M, M0, M1, P, T = sp.symbols("E F I J K M M0 M1 P T")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def analyze(spec, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.analyze(spec, **kw)


def plain(x):
    """``x`` with einattn's size symbols (which carry assumptions) replaced by plain symbols."""
    x = sp.sympify(x)
    return sp.expand(x.subs({s: sp.Symbol(s.name) for s in x.free_symbols}))


def same(a, b) -> bool:
    return sp.simplify(plain(a) - plain(b)) == 0


def ops(r) -> dict:
    return {k: plain(v) for k, v in r.ops.items()}


def barriers(r, rank=None):
    return sorted(
        (b.rank, b.pass_, b.reduction, b.einsum, b.tensor) for b in r.barriers if rank in (None, b.rank)
    )


def cli(*args):
    """Run the command line in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = warnings.showwarning
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = cli_main(list(args))
    finally:
        warnings.showwarning = saved
    return rc, out.getvalue(), err.getvalue()


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def as_tuple(x):
    return tuple(np.asarray(v) for v in (x if isinstance(x, tuple) else (x,)))


# ================================================================================================
# 1. Specs and their hand-derived passes and footprints
# ================================================================================================

# Two independent reductions over k (a sum of A, a max of B) combined into one k-free output.
# Passes over k: SA and SB are full k-reductions (pass 1); Z reads only k-free values: no re-read, 1 pass
# (fusemax.md: "reducing R away and then combining only R-free values adds no pass", teaching cascade 2).
# Pi = (p): p is an output rank nothing reduces. Footprint: accumulators SA, SB, one each per p: 2.
# Ops: SA K*P adds; SB K*P max; Z one division per p: P.
INDEP = """input A[k, p], B[k, p]
output Z
SA[p] = A[k, p]
SB[p] = B[k, p] :: max(k)
Z[p]  = SA[p] / SB[p]
"""

# The same two reductions, each used to normalise the *other* fiber and its own: Z reads A with SB and B
# with SA along k. A depends on no reduction of A's own fiber through SB, but Z also reads B / SA and
# A / SB in one Einsum: Z needs SA (all of A) and then A[k] again -> pass 2 for root A; likewise B.
# 2 passes over k; barriers (SA -> Z re-reads A) and (SB -> Z re-reads B), both starting pass 2.
# Footprint per p: SA, SB (2) + at the only boundary both input fibers A and B (K each): 2K + 2.
# Ops: SA K*P add, SB K*P max, Z: two divisions and one add per (k, p): div 2KP, add KP (+KP of SA).
INDEP_CROSS = """input A[k, p], B[k, p]
output Z
SA[p]    = A[k, p]
SB[p]    = B[k, p] :: max(k)
Z[k, p]  = A[k, p] / SB[p] + B[k, p] / SA[p]
"""

# The reduction of one fiber (B) used to scale another fiber (A): A is read once, after SB, so 1 pass
# ("`Y = A[k] * B[k]; Z = Y * C[k]` reads C's fiber once, so it is 1-pass over k", docs/analysis.md 2).
# Footprint per p: SB, 1.
INDEP_OTHER = """input A[k, p], B[k, p]
output Z
SB[p]   = B[k, p] :: max(k)
Z[k, p] = A[k, p] / SB[p]
"""

# A max over one rank (i) and a sum over another (j), both of X, both subtracted from X.
# Over i: MX is a full i-reduction; Y re-reads X along i with MX: 2 passes. Over j: S is a full j-reduction;
# Y re-reads X along j with S: 2 passes. Pi = (): both output ranks of Y are reduced by something.
# Footprint streamed over i: accumulator MX[j] (J) + at the boundary X (I*J) and S, whose i fiber is
# produced in pass 1 and read by Y in pass 2 (I): I*J + I + J. Symmetric over j: I*J + J + I.
# Ops: MX I*J max, S I*J add, Y two subtractions per (i, j): add 3IJ, max IJ.
MAXSUM = """input X[i, j]
output Y
MX[j]   = X[i, j] :: max(i)
S[i]    = X[i, j]
Y[i, j] = X[i, j] - MX[j] - S[i]
"""

# A chain of four dependent reductions of different kinds (sum, max, sum of squares, min).
# S1 pass 1; X1 re-reads X after S1: pass 2; S2 reduces X1 in pass 2; X2 re-reads X1: pass 3; S3 in pass 3;
# X3 re-reads X2: pass 4; S4 in pass 4; Y re-reads X3: pass 5. Four read-read dependencies: 5 passes.
# Footprint (Pi = ()): accumulators S1..S4 (4) + one K fiber at each boundary (X, X1, X2, X3): K + 4.
# Ops: S1 K add; X1 K add (subtract); S2 K max; X2 K add; S3 K madd (a product summed by +); X3 K div;
# S4 K max (min is of class max); Y K add -> madd K, add 4K, max 2K, div K; flops 2K + 4K + 2K + K = 9K.
CHAIN4 = """input X[k]
output Y
S1    = X[k]
X1[k] = X[k] - S1
S2    = X1[k] :: max(k)
X2[k] = X1[k] - S2
S3    = X2[k] * X2[k]
X3[k] = X2[k] / S3
S4    = X3[k] :: min(k)
Y[k]  = X3[k] - S4
"""

# Softmax over the *query* rank p (per key column), then the weights times V summed over the keys.
# Over p: CM full p-reduction (pass 1); X re-reads S: pass 2; D full p-reduction in pass 2; A re-reads X:
# pass 3; O reads A (made in pass 3) without a p reduction: 3 passes. Over m: only O reduces m, nothing
# re-reads after it: 1. f: 1. Streamed rank: p (the reduced rank with the most passes).
# Pi = (): p is reduced (CM), f is not iterated by CM. Footprint: CM[m], D[m] accumulators (M each) +
# S (M*P) from 1 to 2, X (M*P) from 2 to 3: M*P + 2M.
# Ops: CM MP max; X MP sub + MP exp; D MP add; A MP div; O F*M*P madd.
COLSOFTMAX = """input S[m, p], V[m, f]
output O
CM[m]    = S[m, p] :: max(p)
X[m, p]  = exp(S[m, p] - CM[m])
D[m]     = X[m, p]
A[m, p]  = X[m, p] / D[m]
O[p, f]  = A[m, p] * V[m, f]
"""

# A decaying recurrence over t, per column i; its state is read at the final index by one output and at
# every index (the state before the step) by another. No full reduction, no re-read: 1 pass over t and i.
# Pi = (i); footprint: one running state R (1). Ops: R.step R*0.5 (mul) + X (add) per (t, i); Z one mul.
# -> mul 2*I*T, add I*T.
REC_FINAL = """input X[t, i]
output Y, Z
R[0, i]     = 0
R[t + 1, i] = R[t, i] * 0.5 + X[t, i]
Y[i]        = R[T, i]
Z[t, i]     = X[t, i] * R[t, i]
"""

# The final state (like a full reduction) used to scale the input X along t: X is re-read: 2 passes over t.
# Footprint per i: running state 1 + X's t fiber held from 1 to 2 (T): T + 1.
REC_REREAD = """input X[t, i]
output Z
R[0, i]     = 0
R[t + 1, i] = R[t, i] * 0.5 + X[t, i]
Z[t, i]     = X[t, i] * R[T, i]
"""

# Prefix sums of X, each compared with the max of all of X. Y[t] needs C, so all of X must have been read;
# only then can Y[t] be formed, and it needs the prefix sum at t: the states of R (derived from X's fiber)
# are visited again after the full reduction C of that same fiber -> 2 passes over t, whether Y reads the
# state after the step (R[t + 1]) or before it (R[t]) -- either is one element of the same walk over X.
# Footprint (Pi = ()): R's running state (1) + C (1) + every state of R (T, or X's fiber to recompute them):
# T + 2.
PREFIX_MINUS_MAX = """input X[t]
output Y
R[0]     = 0
R[t + 1] = R[t] + X[t]
C        = X[t] :: max(t)
Y[t]     = R[{idx}] - C
"""

# A partitioned rank with the reduction over m0 (inside each tile): LS finishes per tile, so it is no full
# reduction of m (docs/analysis.md 2). Over m0: LS then Y re-reads BX: 2 passes; over m and m1: 1.
# Pi = (p). Footprint: the tile BX over m0 (M0) held across the m0 boundary: M0, free of M.
# Ops: LS one add per (m1, m0, p) = M*P (both parts: M points); Y one div per point: M*P.
PART_M0 = """input X[m, p]
param M0 = 4
rank M = M1 * M0
output Y
BX[m1, m0, p] = X[m1 * M0 + m0, p]
LS[m1, p]     = BX[m1, m0, p]
Y[m1, m0, p]  = BX[m1, m0, p] / LS[m1, p]
"""

# The same with the reduction over m1 (across tiles): CS reduces the outer part, a full reduction of m.
# Y re-reads BX along m1 and m0 -> 2 passes over m and m1, 1 over m0.
PART_M1 = """input X[m, p]
param M0 = 4
rank M = M1 * M0
output Y
BX[m1, m0, p] = X[m1 * M0 + m0, p]
CS[m0, p]     = BX[m1, m0, p]
Y[m1, m0, p]  = BX[m1, m0, p] / CS[m0, p]
"""

# A sum normalised by a sum over an alias of its rank (`rank J = I`): T reduces X's i fiber (read at j), Y
# re-reads X along i with T: 2 passes over i (docs/analysis.md 2: the count lands on the rank X is declared
# with).
ALIAS = """input X[i, p]
output Y
rank J = I
T[p]    = X[j, p]
Y[i, p] = X[i, p] / T[p]
"""

# A filter and a default: S sums the causal part of each column, N re-reads A with S (2 passes over k),
# Z replaces N's absent points by 0 (pointwise: no pass). Filters change no count (docs/analysis.md 2).
# Footprint per p: S (1) + A's k fiber from 1 to 2 (K): K + 1.
# Ops (filters not applied, dense upper bound): S K*P add, N K*P div, Z K*P other (`??`).
DEFAULT = """input A[k, p]
output Z
S[p]    = A[k, p]  where k <= p
N[k, p] = A[k, p] / S[p]  where k <= p
Z[k, p] = N[k, p] ?? 0
"""

# Several outputs at different depths of a chain: S1 (pass 1), X2 (pass 3), Y (pass 3).
# S1 pass 1; X1 re-reads X: 2; S2 in pass 2; X2 re-reads X1: 3; Y reads X2 (pass 3) with X: X is visited a
# third time in pass 3. 3 passes over k; barriers (2, S1, X1, X) and (3, S2, X2, X1).
# Footprint per p: S1, S2, Y accumulators (3) + boundary 1->2: X (K); boundary 2->3: X and X1 (2K): 2K + 3.
# Ops: S1 KP add; X1 KP add; S2 KP max; X2 KP div; Y KP madd.
MULTI_OUT = """input X[k, p]
output S1, X2, Y
S1[p]    = X[k, p]
X1[k, p] = X[k, p] - S1[p]
S2[p]    = X1[k, p] :: max(k)
X2[k, p] = X1[k, p] / S2[p]
Y[p]     = X2[k, p] * X[k, p]
"""

# Attention-shaped: a max over the keys of the scores and a sum over the keys of V, both into one output.
# Over m: GM and VS are full m-reductions; O re-reads V along m with VS (a reduction of V's own fiber):
# 2 passes over m. Pi = (): GM does not iterate f, VS does not iterate p.
# Footprint: GM (P) + VS (F) + O (an m-accumulator over p, f: F*P) + V's m fiber times f (F*M):
# F*M + F*P + F + P.
# Ops: S E*M*P madd; GM M*P max; VS F*M add; O: V / VS varies over (m, f) only: hoisted, F*M div; the
# product with GM[p] spans (m, p, f) and is summed by +: F*M*P madd.
TWO_RED_ATTN = """input Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]
GM[p]   = S[m, p] :: max(m)
VS[f]   = V[m, f]
O[p, f] = V[m, f] / VS[f] * GM[p]
"""


@pytest.mark.parametrize(
    "text, passes, rank, per, footprint, bars",
    [
        (INDEP, {"k": 1, "p": 1}, "k", ("p",), 2, []),
        (
            INDEP_CROSS,
            {"k": 2, "p": 1},
            "k",
            ("p",),
            2 * K + 2,
            [("k", 2, "SA", "Z", "A"), ("k", 2, "SB", "Z", "B")],
        ),
        (INDEP_OTHER, {"k": 1, "p": 1}, "k", ("p",), 1, []),
        (
            CHAIN4,
            {"k": 5},
            "k",
            (),
            K + 4,
            [
                ("k", 2, "S1", "X1", "X"),
                ("k", 3, "S2", "X2", "X1"),
                ("k", 4, "S3", "X3", "X2"),
                ("k", 5, "S4", "Y", "X3"),
            ],
        ),
        (
            COLSOFTMAX,
            {"m": 1, "p": 3, "f": 1},
            "p",
            (),
            M * P + 2 * M,
            [("p", 2, "CM", "X", "S"), ("p", 3, "D", "A", "X")],
        ),
        (REC_FINAL, {"t": 1, "i": 1}, "t", ("i",), 1, []),
        (REC_REREAD, {"t": 2, "i": 1}, "t", ("i",), T + 1, [("t", 2, "R.step", "Z", "X")]),
        (PART_M0, {"m": 1, "m1": 1, "m0": 2, "p": 1}, "m", ("p",), M0, [("m0", 2, "LS", "Y", "BX")]),
        (DEFAULT, {"k": 2, "p": 1}, "k", ("p",), K + 1, [("k", 2, "S", "N", "A")]),
        (
            MULTI_OUT,
            {"k": 3, "p": 1},
            "k",
            ("p",),
            2 * K + 3,
            [("k", 2, "S1", "X1", "X"), ("k", 3, "S2", "X2", "X1")],
        ),
        (
            TWO_RED_ATTN,
            {"p": 1, "e": 1, "m": 2, "f": 1},
            "m",
            (),
            F * M + F * P + F + P,
            [("m", 2, "VS", "O", "V")],
        ),
    ],
    ids=[
        "indep",
        "indep_cross",
        "indep_other",
        "chain4",
        "colsoftmax",
        "rec_final",
        "rec_reread",
        "part_m0",
        "default",
        "multi_out",
        "two_red_attn",
    ],
)
def test_passes_barriers_and_footprint_by_hand(text, passes, rank, per, footprint, bars):
    r = analyze(text)
    assert r.passes == passes
    assert r.rank == rank
    assert tuple(r.footprint_per) == per
    assert same(r.footprint, footprint), r.footprint
    assert barriers(r) == sorted(bars)
    # the classification line follows the count over the streamed rank (docs/analysis.md 3)
    assert r.classification.startswith(f"{passes[rank]}-pass over {rank}")
    # "grows with R" exactly when the hand-derived footprint holds R's size (M0 is a fixed tile)
    grows = "free of" not in r.classification
    assert grows == (sp.Symbol(rank.upper()) in plain(footprint).free_symbols)


def test_max_and_sum_over_two_ranks_hold_the_slab_and_both_accumulators():
    # MAXSUM by hand (above): 2 passes over i and over j; over either rank Pi = () and the footprint is
    # X's slab I*J + the accumulator of that rank's reduction + the other reduction's fiber made in pass 1
    for rank in ("i", "j"):
        r = analyze(MAXSUM, rank=rank)
        assert r.passes == {"i": 2, "j": 2}
        assert r.footprint_per == ()
        assert same(r.footprint, I * J + I + J)
    assert ("i", 2, "MX", "Y", "X") in barriers(analyze(MAXSUM, rank="i"))
    assert ("j", 2, "S", "Y", "X") in barriers(analyze(MAXSUM, rank="j"))


def test_filters_change_no_count_in_a_query_rank_softmax():
    """docs/analysis.md 2: 'Filters (where m <= p) do not change counts'; section 5: filtered op counts are
    the dense upper bound. A causal filter on COLSOFTMAX's first statement changes nothing."""
    causal = COLSOFTMAX.replace("CM[m]    = S[m, p] :: max(p)", "CM[m]    = S[m, p] :: max(p)  where m <= p")
    assert causal != COLSOFTMAX
    a, b = analyze(COLSOFTMAX), analyze(causal)
    assert a.passes == b.passes == {"m": 1, "p": 3, "f": 1}
    assert same(a.footprint, b.footprint) and same(b.footprint, M * P + 2 * M)
    assert ops(a) == ops(b)


def test_prefix_sums_minus_the_max_read_after_the_step_are_two_pass():
    # derivation at PREFIX_MINUS_MAX: 2 passes, T + 2
    r = analyze(PREFIX_MINUS_MAX.format(idx="t + 1"))
    assert r.passes == {"t": 2}
    assert same(r.footprint, T + 2)


# Fixed. As reviewed:
# the same cascade reading the state before each step, R[t] (exclusive prefix sums), is counted
# 1-pass with footprint 2. Y[t] = R[t] - C still needs C (all of X) before any Y, and then R's state at
# every t: the walk over X must be held or redone. docs/analysis.md's rule that "a read of the state before
# a step is a fiber of its own within the step" is about Einsums inside the step; Y is outside it.
def test_prefix_sums_minus_the_max_read_before_the_step_are_two_pass():
    r = analyze(PREFIX_MINUS_MAX.format(idx="t"))
    assert r.passes == {"t": 2}
    assert same(r.footprint, T + 2)
    assert "grows with T" in r.classification


def test_prefix_sums_minus_the_max_mean_what_they_say():
    """The two specs above compute what the hand derivation assumes (NumPy, no einattn formula)."""
    x = np.array([1.0, 5.0, 2.0, -3.0])
    for idx, want in (
        ("t + 1", np.cumsum(x) - x.max()),
        ("t", np.concatenate([[0], np.cumsum(x)[:-1]]) - x.max()),
    ):
        got = einattn.compile(PREFIX_MINUS_MAX.format(idx=idx), backend="numpy")(X=x)
        np.testing.assert_allclose(got, want, rtol=1e-12)


# Fixed. As reviewed:
# the reduction over the outer part m1 leaves CS[m0, p]: M0 accumulators per query row, all live while
# the tiles stream (docs/analysis.md 4: "accumulators: each full reduction of the streamed rank, over its
# output ranks outside Pi" -- m0 is outside Pi = (p)). The analysis counts CS as 1: M + 1 instead of M + M0.
# (Were m0 counted parallel, the footprint would be per (m0, p) and M1 + 1; M + 1 per p is neither.)
def test_reduction_over_the_outer_part_holds_a_tile_of_accumulators():
    r = analyze(PART_M1)
    assert r.passes == {"m": 2, "m1": 2, "m0": 1, "p": 1}
    assert barriers(r, "m") == [("m", 2, "CS", "Y", "BX")]
    assert r.footprint_per == ("p",)
    # CS (M0 per row) + the whole row BX over both parts (M) between the passes
    assert same(r.footprint, M + M0)


# Fixed. As reviewed:
# the same accumulator without the re-read: a 1-pass column sum over the tiles needs M0 running sums
# per row; the analysis says 1.
def test_column_sum_over_tiles_holds_m0_accumulators():
    text = PART_M1.replace("output Y", "output CS").replace("Y[m1, m0, p]  = BX[m1, m0, p] / CS[m0, p]\n", "")
    r = analyze(text, sizes={"M": 10, "P": 2})
    assert r.passes["m"] == 1
    assert r.value(r.footprint) == 4  # M0 = 4 accumulators per p


def test_alias_count_lands_on_the_declared_rank():
    # ALIAS by hand: 2 passes over i (the declared rank), the barrier T -> Y re-reads X
    r = analyze(ALIAS, rank="i")
    assert r.passes["i"] == 2
    assert barriers(r) == [("i", 2, "T", "Y", "X")]


# Fixed. As reviewed:
# streamed over i, the 2-pass alias cascade reports footprint 0 and "live buffer is free of I":
# fusemax.md 3 ("with two or more passes over rank K of a tensor, the minimum live footprint for that
# tensor is a whole K fiber, whatever the mapping"): X's i fiber (I per p) is read by T in pass 1 and by Y in
# pass 2, plus T. Expected I + 1 per p (at least: growing with I).
def test_alias_two_pass_holds_the_fiber():
    r = analyze(ALIAS, rank="i")
    assert r.footprint_per == ("p",)
    assert same(r.footprint, I + 1)
    assert "grows with I" in r.classification


# Fixed. As reviewed:
# a running state re-read along its own iterative part after its final state: the tile prefix sums
# over their total. Y[m1] needs R[M1] (every tile) and then R[m1 + 1] of every tile: 2 passes over m1 (the
# analysis agrees) and M1 states held (docs/analysis.md 4: a running state read again along its own rank
# in a later pass "holds every state ... whichever rank is streamed"). Streamed over m (the default, a
# partitioned rank), the report drops them: footprint 1, "live buffer is free of M", although M1 =
# ceiling(M/M0) grows with M. Expected M1 + 1 (it is M1 + 1 with --rank m1).
TILE_PREFIX = """input X[m]
param M0 = 4
rank M = M1 * M0
output Y
BX[m1, m0] = X[m1 * M0 + m0]
LS[m1]     = BX[m1, m0]
R[0]       = 0
R[m1 + 1]  = R[m1] + LS[m1]
Y[m1]      = R[m1 + 1] / R[M1]
"""


# Fixed. As reviewed:
# (see above) footprint 1 and "free of M" where M1 + 1 states are live
def test_tile_prefix_sums_over_their_total_hold_every_tile_state():
    r = analyze(TILE_PREFIX)
    assert r.passes == {"m": 1, "m1": 2, "m0": 1}
    assert r.rank == "m"
    assert same(r.footprint, M1 + 1)
    assert "grows with M" in r.classification


def test_tile_prefix_sums_streamed_over_the_tiles():
    # control for the test above: over m1 itself the M1 states are counted
    r = analyze(TILE_PREFIX, rank="m1")
    assert same(r.footprint, M1 + 1)


# Fixed. As reviewed:
# power iteration X[t + 1, i] = A[i, j] * X[t, j] (rank J = I). Each new element needs every element of
# the previous state, so the rows i are not independent: the live state is the whole vector (I elements,
# docs/analysis.md 4: "running state ... one state, over its ranks outside Pi"). The report puts i in the
# parallel ranks and says "Live footprint per (i): 1" -- the doc's definition of Pi ("output ranks that
# nothing reduces") does not see that the sum over the alias j reduces X's i dimension.
POWER = """input A[i, j], X0[i]
param T = 3
output Y
rank J = I
X[0, i]     = X0[i]
X[t + 1, i] = A[i, j] * X[t, j]
Y[i]        = X[T, i]
"""


def test_power_iteration_counts():
    # 1 pass over every rank (A re-read per step is a note, docs/analysis.md 2); madd I*J per step: I*J*T
    r = analyze(POWER)
    assert r.passes == {"i": 1, "j": 1, "t": 1}
    assert any("re-read at every step" in n for n in r.notes)
    assert ops(r) == {"madd": I * J * T}


# Fixed. As reviewed:
# (see above) "Live footprint per (i): 1" where a step needs the whole previous vector
def test_power_iteration_state_is_the_whole_vector():
    r = analyze(POWER, sizes={"I": 4})
    assert "i" not in r.footprint_per
    assert r.value(r.footprint) == 4


# ================================================================================================
# 2. Operation counts by hand, symbolic and at sizes (API and command line)
# ================================================================================================

# FOLD: constants, sizes and params fold; loop-invariant subexpressions are hoisted (docs/analysis.md 5).
# (C * 2 + J) is params and sizes: free; X[i] * (...) varies over i: I mul; exp(Z[j]): J exp; rsqrt(I) free;
# exp(Z[j]) / rsqrt(I): varies over j: J div; -W[i]: I other; the value parses as
# ((X * c) - (exp / rsqrt)) + (-W): the subtraction and the addition each span (i, j): 2*I*J add.
FOLD = """input X[i], Z[j], W[i]
param C = 3
output Y
Y[i, j] = X[i] * (C * 2 + J) - exp(Z[j]) / rsqrt(I) + -W[i]
"""

# TILED: a running sum over tiles (a param tile M0) and a sum of exps over both parts.
# L: a product summed over m0 spanning (m1, m0, p, f): F*M*P madd (both parts: M points);
# RS.step: RS * 0.5 over (m1, p, f): F*M1*P mul, + L: F*M1*P add; O a copy: 0;
# D: exp over (m1, m0, p): M*P exp, summed: M*P add.
# At M = 10, P = 2, F = 3, M0 = 4 -> M1 = ceiling(10/4) = 3: madd 60, mul 18, add 18 + 20 = 38, exp 20;
# flops 2*60 + 18 + 38 + 20 = 196. Compulsory traffic: X 20 + V 30 + O 6 + D 2 = 58 elements, 116 B.
# With --param M0=5: M1 = 2: mul 12, add 32, flops 184.
# Passes: nothing re-read after a full reduction: 1 over every rank; Pi = (p) (D does not iterate f):
# RS state F + D accumulator 1 = F + 1.
TILED = """input X[m, p], V[m, f]
param M0 = 4
rank M = M1 * M0
output O, D
BX[m1, m0, p]    = X[m1 * M0 + m0, p]
BV[m1, m0, f]    = V[m1 * M0 + m0, f]
L[m1, p, f]      = BX[m1, m0, p] * BV[m1, m0, f]
RS[0, p, f]      = 0
RS[m1 + 1, p, f] = RS[m1, p, f] * 0.5 + L[m1, p, f]
O[p, f]          = RS[M1, p, f]
D[p]             = exp(BX[m1, m0, p])
"""

# CLASSES: each function's class (docs/analysis.md 5: relu, abs, max/min are `max`; sigmoid, sqrt, log are
# transcendental, `exp`). Y: relu(X) I max, abs(Z) J max, sigmoid(X) I exp, sqrt(Z) J exp (all hoisted),
# abs * sigmoid I*J mul, the + and the - I*J add each. W: log(Z) J exp, max(Z, X) I*J max, the - I*J add,
# the min reduction over i I*J max.
# -> mul IJ, add 3IJ, max 2IJ + I + J, exp I + 2J.
CLASSES = """input X[i], Z[j]
output Y, W
Y[i, j] = relu(X[i]) + abs(Z[j]) * sigmoid(X[i]) - sqrt(Z[j])
W[j]    = log(Z[j]) - max(Z[j], X[i]) :: min(i)
"""

OPS = {
    "classes": (CLASSES, {"mul": I * J, "add": 3 * I * J, "max": 2 * I * J + I + J, "exp": I + 2 * J}),
    "indep": (INDEP, {"add": K * P, "max": K * P, "div": P}),
    "indep_cross": (INDEP_CROSS, {"add": 2 * K * P, "max": K * P, "div": 2 * K * P}),
    "maxsum": (MAXSUM, {"add": 3 * I * J, "max": I * J}),
    "chain4": (CHAIN4, {"madd": K, "add": 4 * K, "max": 2 * K, "div": K}),
    "colsoftmax": (
        COLSOFTMAX,
        {"madd": F * M * P, "add": 2 * M * P, "max": M * P, "div": M * P, "exp": M * P},
    ),
    "rec_final": (REC_FINAL, {"mul": 2 * I * T, "add": I * T}),
    "part_m0": (PART_M0, {"add": M * P, "div": M * P}),
    "default": (DEFAULT, {"add": K * P, "div": K * P, "other": K * P}),
    "multi_out": (MULTI_OUT, {"madd": K * P, "add": 2 * K * P, "max": K * P, "div": K * P}),
    "two_red_attn": (TWO_RED_ATTN, {"madd": E * M * P + F * M * P, "max": M * P, "add": F * M, "div": F * M}),
    "fold": (FOLD, {"mul": I, "exp": J, "div": J, "add": 2 * I * J, "other": I}),
    "tiled": (TILED, {"madd": F * M * P, "mul": F * M1 * P, "add": F * M1 * P + M * P, "exp": M * P}),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_counts_by_hand_symbolic(name):
    text, want = OPS[name]
    r = analyze(text)
    assert ops(r) == {k: sp.expand(v) for k, v in want.items()}
    flops = sum((v * (2 if k == "madd" else 1) for k, v in want.items()), sp.Integer(0))
    assert same(r.flops, flops)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_counts_by_hand_at_sizes_api_and_cli_agree(name, tmp_path):
    text, want = OPS[name]
    prog = parse(text)
    names = sorted({r.upper() for r in prog.ranks} - {n for n, _ in prog.params} - {"M1"})
    sizes = {n: 2 + i for i, n in enumerate(names)}  # distinct small sizes: 2, 3, 4, ...
    subs = dict(sizes)
    if name == "tiled":
        subs.update(M0=4, M1=-(-sizes["M"] // 4))
    expect = {k: int(sp.sympify(v).subs({sp.Symbol(s): n for s, n in subs.items()})) for k, v in want.items()}
    r = analyze(text, sizes=sizes)
    assert {k: r.value(v) for k, v in r.ops.items()} == expect
    f = write(tmp_path, f"{name}.ein", text)
    args = [x for n, v in sizes.items() for x in ("--size", f"{n}={v}")]
    rc, out, err = cli("analyze", f, "--json", "--no-rewrite", *args)
    assert rc == 0, err
    j = json.loads(out)
    assert {k: q["value"] for k, q in j["ops"]["total"].items()} == expect
    assert j["ops"]["flops"]["value"] == sum(v * (2 if k == "madd" else 1) for k, v in expect.items())


def test_tiled_numbers_with_a_param_override(tmp_path):
    # TILED derivation above
    r = analyze(TILED, sizes={"M": 10, "P": 2, "F": 3})
    assert {k: r.value(v) for k, v in r.ops.items()} == {"madd": 60, "mul": 18, "add": 38, "exp": 20}
    assert r.value(r.flops) == 196
    assert r.value(r.compulsory_bytes) == 116
    assert r.value(r.intensity) == pytest.approx(196 / 116)
    assert r.passes == {"m": 1, "m1": 1, "m0": 1, "p": 1, "f": 1}
    assert same(r.footprint, F + 1) and r.value(r.footprint) == 4
    f = write(tmp_path, "tiled.ein", TILED)
    rc, out, err = cli(
        "analyze",
        f,
        "--json",
        "--no-rewrite",
        "--size",
        "M=10",
        "--size",
        "P=2",
        "--size",
        "F=3",
        "--param",
        "M0=5",
    )
    assert rc == 0, err
    j = json.loads(out)
    assert j["sizes"]["M1"] == 2 and j["sizes"]["M0"] == 5
    assert j["relations"] == {"M1": "ceiling(M/M0)"}
    assert {k: q["value"] for k, q in j["ops"]["total"].items()} == {
        "madd": 60,
        "mul": 12,
        "add": 32,
        "exp": 20,
    }
    assert j["ops"]["flops"]["value"] == 184
    # the API with params= gives the same
    r5 = analyze(TILED, sizes={"M": 10, "P": 2, "F": 3}, params={"M0": 5})
    assert r5.value(r5.flops) == 184


def test_a_fixed_number_of_tiles_makes_the_tile_grow_with_m():
    """PART_M0 with `param M1 = 2` instead of the tile: M0 = ceiling(M/M1) (docs/analysis.md 4). At M = 9:
    M0 = 5, the footprint (the tile BX re-read over m0) is 5 and grows with M; ops over both parts count
    M points (a ragged tile's absent point costs nothing): LS 9*2 = 18 adds, Y 18 divisions."""
    text = PART_M0.replace("param M0 = 4", "param M1 = 2")
    r = analyze(text, sizes={"M": 9, "P": 2})
    assert r.passes == {"m": 1, "m1": 1, "m0": 2, "p": 1}
    assert r.sizes["M0"] == 5 and r.relations == {"M0": "ceiling(M/M1)"}
    assert r.value(r.footprint) == 5
    assert "grows with M" in r.classification
    assert {k: r.value(v) for k, v in r.ops.items()} == {"add": 18, "div": 18}


def test_modulo_in_a_value_is_not_in_the_language():
    """docs/analysis.md 5 lists "`//` and `%` in values" in the class `other`; docs/language.md (and the
    checker) allow them only in indices and filters, so that part of the class list cannot happen."""
    with pytest.raises(einattn.EinError, match="index expressions"):
        parse("input X[i]\noutput Y\nY[i] = X[i] * (i % 2)\n")


def test_per_einsum_counts_of_the_chain():
    # CHAIN4 per Einsum, by hand (above)
    r = analyze(CHAIN4)
    want = {
        "S1": {"add": K},
        "X1": {"add": K},
        "S2": {"max": K},
        "X2": {"add": K},
        "S3": {"madd": K},
        "X3": {"div": K},
        "S4": {"max": K},
        "Y": {"add": K},
    }
    got = {lab: {k: plain(v) for k, v in d.items()} for lab, d in r.einsum_ops.items()}
    assert got == want


# ================================================================================================
# 3. The command line and the API agree (JSON, footprint, barriers, buffer)
# ================================================================================================

AGREE = {
    "indep_cross": INDEP_CROSS,
    "chain4": CHAIN4,
    "colsoftmax": COLSOFTMAX,
    "rec_reread": REC_REREAD,
    "part_m0": PART_M0,
    "default": DEFAULT,
    "multi_out": MULTI_OUT,
    "tiled": TILED,
    "maxsum": MAXSUM,
}


@pytest.mark.parametrize("name", sorted(AGREE))
def test_cli_json_equals_the_api(name, tmp_path):
    text = AGREE[name]
    f = write(tmp_path, f"{name}.ein", text)
    rc, out, err = cli("analyze", f, "--json", "--no-rewrite")
    assert rc == 0, err
    j = json.loads(out)
    r = analyze(f)
    assert j["passes"] == r.passes
    assert j["rank"] == r.rank
    assert j["classification"] == r.classification
    assert j["footprint"]["per"] == list(r.footprint_per)
    assert same(read_expr(j["footprint"]["expr"], j["symbols"]), r.footprint)
    assert sorted(
        (b["rank"], b["pass"], b["reduction"], b["einsum"], b["tensor"]) for b in j["barriers"]
    ) == barriers(r)
    assert {k: plain(read_expr(q["expr"], j["symbols"])) for k, q in j["ops"]["total"].items()} == ops(r)
    for b in j["barriers"]:
        for key in ("reduction_at", "einsum_at", "read_at"):
            assert re.fullmatch(re.escape(f) + r":\d+:\d+", b[key]), b[key]


def test_barrier_locations_point_at_the_statements(tmp_path):
    # CHAIN4: S1 at line 3 col 1, X1 at line 4 col 1, X1's read of X at line 4 col 9 (`X1[k] = X[k] - S1`)
    f = write(tmp_path, "chain4.ein", CHAIN4)
    rc, out, _ = cli("analyze", f, "--json", "--no-rewrite")
    assert rc == 0
    j = json.loads(out)
    first = min(j["barriers"], key=lambda b: b["pass"])
    assert (first["reduction_at"], first["einsum_at"], first["read_at"]) == (
        f"{f}:3:1",
        f"{f}:4:1",
        f"{f}:4:9",
    )


@pytest.mark.parametrize(
    "name, sizes, buf, fits, rows, extra",
    [
        # CHAIN4 at K = 10: footprint 14 elements = 28 B, one point. Spilled: X (input) read back once
        # (K), X1, X2, X3 (computed) written and read back once (2K each): 7K elements = 14K B = 140 B.
        ("chain4", {"K": 10}, 27, False, 0, 140),
        ("chain4", {"K": 10}, 28, True, 1, 0),
        # COLSOFTMAX at M = 4, P = 3: spill S (input, M*P) and X (computed, 2*M*P): 3*M*P*2 B = 72 B
        ("colsoftmax", {"M": 4, "P": 3, "F": 2}, 1, False, 0, 72),
        # INDEP_CROSS at K = 5, P = 3: 2K + 2 = 12 elements, 24 B per p; 48 B hold 2 rows, 47 B one;
        # spilling re-reads the inputs A and B (2K per p, P points): 2*5*3*2 B = 60 B
        ("indep_cross", {"K": 5, "P": 3}, 48, True, 2, 0),
        ("indep_cross", {"K": 5, "P": 3}, 47, True, 1, 0),
        ("indep_cross", {"K": 5, "P": 3}, 23, False, 0, 60),
    ],
)
def test_buffer_fit_and_spill_by_hand(name, sizes, buf, fits, rows, extra, tmp_path):
    text = AGREE[name]
    f = write(tmp_path, f"{name}.ein", text)
    args = [x for n, v in sizes.items() for x in ("--size", f"{n}={v}")]
    rc, out, err = cli("analyze", f, "--json", "--no-rewrite", "--buffer", str(buf), *args)
    assert rc == 0, err
    b = json.loads(out)["footprint"]["buffer"]
    assert (b["bytes"], b["fits"], b["rows"], b["extra_traffic"]["value"]) == (buf, fits, rows, extra)


def test_dot_is_well_formed_with_one_red_edge_per_barrier(tmp_path):
    pydot = pytest.importorskip("pydot")
    for name in ("chain4", "colsoftmax", "multi_out", "default", "tiled", "rec_reread"):
        f = write(tmp_path, f"{name}.ein", AGREE[name])
        out = tmp_path / f"{name}.dot"
        rc, _, err = cli("analyze", f, "--no-rewrite", "--dot", str(out))
        assert rc == 0, err
        (g,) = pydot.graph_from_dot_data(out.read_text())
        r = analyze(f)
        red = {
            (e.get_source().strip('"'), e.get_destination().strip('"'))
            for e in g.get_edges()
            if (e.get("color") or "").strip('"') == "red"
        }
        assert red == {(b.reduction, b.einsum) for b in r.barriers if b.rank == r.rank}
        # boxes: every Einsum; dashed ellipses: every input
        names = {n.get_name().strip('"') for n in g.get_nodes()}
        assert {e.label for e in r.program.einsums} <= names
        assert {f"input {x}" for x in r.program.inputs} <= names


# ================================================================================================
# 4. The rewrite: fewer passes, the same numbers, clear refusals
# ================================================================================================

# A 3-pass causal softmax with a temperature param and a log-sum-exp output: GM -> N re-reads S (2),
# D -> A re-reads N (3). Rewritten 1-pass: footprint F + M0 + 2 (RNV row, score tile, RM, RD); 2-pass:
# 2 over m (the reference's 2-pass cascade: 3 over m1 and m0, docs/analysis.md 2).
TEMP_CAUSAL_LSE = """input Q[p, e], K[m, e], V[m, f]
param T = 0.5
output O, L
S[m, p] = Q[p, e] * K[m, e]  where m <= p
GM[p]   = S[m, p] :: max(m)
N[m, p] = exp((S[m, p] - GM[p]) / T)
D[p]    = N[m, p]
A[m, p] = N[m, p] / D[p]
O[p, f] = A[m, p] * V[m, f]
L[p]    = GM[p] + T * log(D[p])
"""

# Teaching cascade 1 per column p: Z re-reads A with Y: 2 passes over k. Deferral (rule 1) moves Y out of
# the sum: Z = Y * sum(A): 1 pass (teaching cascade 2); footprint: two accumulators per p: 2.
TEACH1_VEC = """input A[k, p], B[k, p]
output Z
Y[p] = A[k, p] * B[k, p]
Z[p] = Y[p] * A[k, p]
"""

# Deferred softmax (2-pass over m) with a per-query inverse temperature inside the shift.
DEFERRED_BETA = """input Q[p, e], K[m, e], V[m, f], BETA[p]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(BETA[p] * (S[m, p] - GM[p]))
D[p]     = N[m, p]
NV[p, f] = N[m, p] * V[m, f]
O[p, f]  = NV[p, f] / D[p]
"""

# Per-head exp2 softmax with the division inside the sum (3-pass: O re-reads N after D).
HEADS_EXP2 = """input Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e] * 1.4426950408889634
GM[h, p]    = S[h, m, p] :: max(m)
N[h, m, p]  = exp2(S[h, m, p] - GM[h, p])
D[h, p]     = N[h, m, p]
O[h, p, f]  = N[h, m, p] * V[h, m, f] / D[h, p]
"""

SHAPES = {"p": 5, "e": 3, "m": 7, "f": 2, "k": 6, "h": 2}


def random_inputs(prog, seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(tuple(SHAPES[r] for r in prog.tensor(n).ranks)) * 2 for n in prog.inputs}


def _softmax_rows(s, mask=None):
    s = np.where(mask, s, -np.inf) if mask is not None else s
    g = s.max(-1, keepdims=True)
    n = np.exp(s - g)
    return n, n.sum(-1, keepdims=True), g


def oracle(name, x):
    """The specs' outputs computed in NumPy from their definitions (not from einattn)."""
    if name == "temp_causal_lse":
        s = x["Q"] @ x["K"].T  # [p, m]
        mask = np.arange(s.shape[1])[None, :] <= np.arange(s.shape[0])[:, None]
        g = np.where(mask, s, -np.inf).max(-1, keepdims=True)
        n = np.where(mask, np.exp((s - g) / 0.5), 0.0)
        d = n.sum(-1, keepdims=True)
        return (n / d) @ x["V"], (g + 0.5 * np.log(d))[:, 0]
    if name == "teach1_vec":
        return ((x["A"] * x["B"]).sum(0) * x["A"].sum(0),)
    if name == "deferred_beta":
        s = x["Q"] @ x["K"].T
        g = s.max(-1, keepdims=True)
        n = np.exp(x["BETA"][:, None] * (s - g))
        return ((n @ x["V"]) / n.sum(-1, keepdims=True),)
    if name == "heads_exp2":
        s = np.einsum("hpe,hme->hpm", x["Q"], x["K"])
        n, d, _ = _softmax_rows(s)
        return (np.einsum("hpm,hmf->hpf", n / d, x["V"]),)
    raise KeyError(name)


REWRITE = {
    # name: (text, rank, passes as written, passes over the rank after --passes 1, after --passes 2)
    "temp_causal_lse": (TEMP_CAUSAL_LSE, "m", 3, 1, 2),
    "teach1_vec": (TEACH1_VEC, "k", 2, 1, 2),
    "deferred_beta": (DEFERRED_BETA, "m", 2, 1, None),
    "heads_exp2": (HEADS_EXP2, "m", 3, 1, 2),
}


@pytest.mark.parametrize("name", sorted(REWRITE))
def test_the_spec_as_written_equals_the_numpy_oracle(name):
    text, *_ = REWRITE[name]
    prog = parse(text)
    x = random_inputs(prog, 0)
    got = as_tuple(einattn.compile(prog, backend="numpy")(**x))
    for g, w in zip(got, oracle(name, x)):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REWRITE))
@pytest.mark.parametrize("passes", [1, 2])
@pytest.mark.parametrize("tile", [1, 3, 7])
def test_rewrite_has_fewer_passes_and_equal_outputs(name, passes, tile):
    text, rank, before, after1, after2 = REWRITE[name]
    prog = parse(text)
    assert analyze(prog).passes[rank] == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, derivation = rewrite(prog, passes=passes, rank=rank, tile=tile)
    got_passes = analyze(new).passes[rank]
    if got_passes < before:  # every change is a documented step (docs/rewrite.md)
        assert derivation.steps
    if passes == 1:
        assert got_passes == after1 < before
    elif after2 is not None:
        assert got_passes == after2
    else:  # --passes 2 on a 2-pass spec: at most the passes asked for (docs/rewrite.md)
        assert got_passes <= 2
    x = random_inputs(prog, tile)
    a = as_tuple(einattn.compile(prog, backend="numpy")(**x))
    b = as_tuple(einattn.compile(new, backend="numpy")(**{n: x[n] for n in new.inputs}))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(v, u, rtol=1e-9, atol=1e-9)


def test_one_pass_rewrite_footprints_by_hand():
    # attention specs: F + M0 + 2 per query row (RNV row F, score tile M0, RM and RD); at tile 3: F + 5
    for name in ("temp_causal_lse", "deferred_beta", "heads_exp2"):
        text, rank, *_ = REWRITE[name]
        new, _ = rewrite(parse(text), passes=1, rank=rank, tile=3)
        r = analyze(new, sizes={"F": 2})
        assert r.passes["m"] == 1 and r.passes["m0"] == 2
        assert r.value(r.footprint) == 2 + 3 + 2, (name, r.footprint)
        assert "free of M" in r.classification
    # teaching cascade 1 deferred: two accumulators per p
    new, _ = rewrite(parse(TEACH1_VEC), passes=1, rank="k")
    r = analyze(new)
    assert r.passes["k"] == 1 and same(r.footprint, 2)


@pytest.mark.parametrize("name", sorted(REWRITE))
def test_cli_rewrite_prints_a_spec_that_checks_and_is_one_pass(name, tmp_path):
    text, rank, before, after1, _ = REWRITE[name]
    f = write(tmp_path, f"{name}.ein", text)
    rc, out, err = cli("rewrite", f, "--rank", rank, "--tile", "3")
    assert rc == 0, err
    assert out.startswith("# derived by einattn rewrite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        printed = parse(out, "printed.ein")
    assert analyze(printed).passes[rank] == after1
    # the analyze report's after_rewrite names the same count (docs/analysis.md 3)
    rc, out, err = cli("analyze", f, "--json", "--tile", "3", "--rank", rank)
    assert rc == 0, err
    j = json.loads(out)
    assert j["passes"][rank] == before
    assert j["after_rewrite"]["passes"][rank] == after1 and j["after_rewrite"]["refusal"] is None


_HEAD = (
    "input Q[p, e], K[m, e], V[m, f]\noutput {out}\nS[m, p] = Q[p, e] * K[m, e]\nGM[p] = S[m, p] :: max(m)\n"
)

REFUSALS = {
    # name: (statements, outputs, line, column of the caret, words the message must hold)
    "weights_as_output": (
        "N[m, p] = exp(S[m, p] - GM[p])\nD[p] = N[m, p]\nA[m, p] = N[m, p] / D[p]\n"
        "O[p, f] = A[m, p] * V[m, f]\n",
        "O, A",
        7,
        1,
        ["`A`", "output"],
    ),
    "max_of_normalised": (
        "N[m, p] = exp(S[m, p] - GM[p])\nD[p] = N[m, p]\nA[m, p] = N[m, p] / D[p]\n"
        "O[p, f] = A[m, p] * V[m, f] :: max(m)\n",
        "O",
        7,
        1,
        ["max"],
    ),
    "squared_numerator": (
        "N[m, p] = exp(S[m, p] - GM[p])\nD[p] = N[m, p] * N[m, p]\nO[p, f] = N[m, p] * V[m, f] / D[p]\n",
        "O",
        6,
        1,
        ["linearly"],
    ),
    "log_softmax_along_m": (
        "LS[m, p] = S[m, p] - GM[p]\nO[p, f] = LS[m, p] * V[m, f]\n",
        "O",
        5,
        1,
        ["`LS`"],
    ),
    "shifted_read": (
        "N[m, p] = exp(S[m, p] - GM[p])\nD[p] = N[m, p]\nO[p, f] = N[m + 1, p] * V[m, f] / D[p]\n",
        "O",
        7,
        11,
        ["m + 1"],
    ),
    "tanh_shift": (
        "N[m, p] = tanh(S[m, p] - GM[p])\nD[p] = N[m, p]\nO[p, f] = N[m, p] * V[m, f] / D[p]\n",
        "O",
        5,
        1,
        ["tanh", "multiplicative"],
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_located_messages_with_exit_code_1(name, tmp_path):
    body, outs, line, col, words = REFUSALS[name]
    text = _HEAD.format(out=outs) + body
    f = write(tmp_path, f"{name}.ein", text)
    rc, out, err = cli("rewrite", f)
    assert rc == 1 and out == ""
    assert "Traceback" not in err
    assert err.startswith(f"{f}:{line}:{col}: error: cannot stream over m"), err
    lines = err.splitlines()
    src = text.splitlines()[line - 1]
    assert lines[1].rstrip().endswith(src.rstrip()) and re.match(rf"\s+{line} \| ", lines[1])
    caret = lines[2]
    assert caret.strip().startswith("^")
    # the caret column lines up with the reported column of the source line
    assert caret.index("^") - lines[1].index("|") - 2 == col - 1
    for w in words:
        assert w in err, (w, err)
    # the API raises an EinError with the same place
    with pytest.raises(einattn.EinError) as info:
        rewrite(parse(text, f), passes=1)
    assert (info.value.line, info.value.column) == (line, col)


def test_a_one_pass_spec_is_left_as_it_is(tmp_path):
    # INDEP is 1-pass over k (above): the pass rules have nothing to do; rule 3 needs a sum pairing keys
    # with queries, which INDEP does not have; the printed spec is the spec
    f = write(tmp_path, "indep.ein", INDEP)
    rc, out, err = cli("rewrite", f, "--rank", "k")
    assert rc == 0, err
    assert "already 1-pass over k" in out
    printed = parse(out)
    assert analyze(printed).passes == {"k": 1, "p": 1}
    assert sorted(e.label for e in printed.einsums) == ["SA", "SB", "Z"]


def test_rewrite_over_a_rank_the_spec_lacks_is_a_user_error(tmp_path):
    f = write(tmp_path, "t.ein", TEACH1_VEC)
    rc, out, err = cli("rewrite", f)  # default --rank m; the spec has k and p
    assert rc == 1 and out == "" and "Traceback" not in err
    assert "`m`" in err and "k, p" in err


# ================================================================================================
# 5. Command-line robustness: exit codes, located errors, option ranges (docs/errors.md)
# ================================================================================================


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--param", "M0=4", "--param", "M0=5"), "given twice"),
        (("--size", "M=4", "--size", "M=5"), "given twice"),
        (("--param", "Q0=3"), "unknown param"),
        (("--param", "M0=0"), "positive integer"),
        (("--param", "M0=2.5"), "positive integer"),
        (("--param", "M0=1e999"), "beyond float64"),
        (("--param", "M0=4294967296"), "too large for a rank size"),
        (("--size", "M0=3"), "is a param"),
        (("--size", "M=10", "--size", "M1=2"), "contradicts the partition"),
        (("--buffer", "0.5"), "not a whole number of bytes"),
        (("--buffer", "inf"), "bad buffer size"),
        (("--buffer", "nan"), "bad buffer size"),
        (("--buffer", "16 furlongs"), "bad buffer size"),
        (("--rank", "q"), "choose one of"),
        (("--format", "json"), "No such option"),  # the JSON switch is --json
        (("--tile", "0"), "--tile"),
    ],
)
def test_bad_analyze_options_exit_1_with_a_message(args, fragment, tmp_path):
    f = write(tmp_path, "tiled.ein", TILED)
    rc, out, err = cli("analyze", f, "--no-rewrite", *args)
    assert rc == 1 and out == "", (rc, out, err)
    assert fragment in err and "Traceback" not in err


def test_large_sizes_are_fine_for_analyze(tmp_path):
    # docs/errors.md: "einattn analyze takes any whole number, its figures are symbolic": madd of CHAIN4 = K
    f = write(tmp_path, "chain4.ein", CHAIN4)
    rc, out, err = cli("analyze", f, "--json", "--no-rewrite", "--size", f"K={10**20}")
    assert rc == 0, err
    j = json.loads(out)
    assert j["ops"]["total"]["madd"]["value"] == 10**20
    assert j["footprint"]["value"] == 10**20 + 4


def test_a_bad_spec_among_good_ones_exits_1_and_keeps_the_good_json(tmp_path):
    good = write(tmp_path, "good.ein", CHAIN4)
    bad = write(tmp_path, "bad.ein", "input A[k], B[k]\noutput Z\nY = A[k] * B[k]\nZ = Y * A[k] :: max(q)\n")
    rc, out, err = cli("analyze", bad, good, "--json", "--no-rewrite")
    assert rc == 1
    # `q` at line 4, column 21 (`Z = Y * A[k] :: max(q)`), with the line and a caret under it
    assert f"{bad}:4:21: error" in err
    assert re.search(r"\n\s*4 \| Z = Y \* A\[k\] :: max\(q\)\n {27}\^", err), err
    j = json.loads(out)
    assert [x["passes"] for x in j] == [{"k": 5}]


def test_a_cycle_is_located_in_analyze_and_rewrite(tmp_path):
    f = write(tmp_path, "cyc.ein", "input X[i]\noutput Y\nY[i] = X[i] * exp(Y[i])\n")
    for cmd in ("analyze", "rewrite"):
        rc, out, err = cli(cmd, f)
        assert rc == 1 and out == ""
        assert err.startswith(f"{f}:3:19: error:") and "\n   3 | " in err and "^^^^" in err


def test_exit_codes_from_a_real_process(tmp_path):
    """The console entry point, not the in-process main: 0 for a good spec, 1 for a bad spec or option,
    never 2 (docs/errors.md: 2 is an internal error)."""
    good = write(tmp_path, "t.ein", TEACH1_VEC)
    empty = write(tmp_path, "empty.ein", "")
    binary = tmp_path / "bin.ein"
    binary.write_bytes(b"\xff\xfe\x00abc")
    runs = [
        (["analyze", good, "--json"], 0),
        (["rewrite", good, "--rank", "k"], 0),
        (["analyze", empty], 1),
        (["rewrite", str(binary)], 1),
        (["analyze", str(tmp_path / "missing.ein")], 1),
        (["rewrite", good, "--rank", "k", "--passes", "3"], 1),
        (["analyze", good, "--buffer", "-1"], 1),
    ]
    for args, want in runs:
        res = subprocess.run(
            [sys.executable, "-m", "einattn", *args], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == want, (args, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr
        if want == 0 and args[0] == "analyze":
            j = json.loads(res.stdout)
            assert j["passes"] == {"k": 2, "p": 1}
            assert j["after_rewrite"]["passes"] == {"k": 1, "p": 1}
