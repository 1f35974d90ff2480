"""einattn.fusion: per-step Einsums move into the loop of their iterative rank, and nothing else changes."""

from __future__ import annotations

import warnings

import networkx as nx
from conftest import EXAMPLES
from hypothesis import given

import einattn
from einattn.fusion import fused_schedule, loop_states
from einattn.graph import Dense, Loop, build_graph, schedule
from einattn.testing import attention_specs, cascades


def labels(steps):
    return [s.einsum.label if isinstance(s, Dense) else (s.rank, [e.label for e in s.body]) for s in steps]


def assert_valid(prog):
    """Every Einsum exactly once; every same-step dependency respected; loops hold one rank each."""
    steps = fused_schedule(prog)
    position, seen = {}, []
    for k, s in enumerate(steps):
        body = (s.einsum,) if isinstance(s, Dense) else s.body
        for j, e in enumerate(body):
            position[e.label] = (k, j)
            seen.append(e.label)
    assert sorted(seen) == sorted(e.label for e in prog.einsums)
    g = build_graph(prog)
    for u, v, carried in g.edges(data="carried"):
        if u == v:
            continue
        (ku, ju), (kv, jv) = position[u], position[v]
        if ku == kv:
            assert carried or ju < jv, (u, v)
        else:
            assert ku < kv, (u, v)
    return steps


def test_the_1pass_cascade_becomes_one_loop():
    prog = einattn.load(EXAMPLES / "attention_1pass.ein")
    assert labels(fused_schedule(prog)) == [
        "RM.init",
        "RD.init",
        "RNV.init",
        (
            "m1",
            [
                "BK",
                "BV",
                "BQK",
                "LM",
                "RM.step",
                "SLN",
                "SLD",
                "SLNV",
                "PRM",
                "SPD",
                "RD.step",
                "SPNV",
                "RNV.step",
            ],
        ),
        "AV",
    ]
    # the plain schedule computes BQK (the whole score matrix) before three separate loops
    plain = labels(schedule(prog))
    assert "BQK" in plain and sum(isinstance(x, tuple) for x in plain) == 3


def test_loop_states():
    prog = einattn.load(EXAMPLES / "causal_1pass.ein")
    loop = next(s for s in fused_schedule(prog) if isinstance(s, Loop))
    assert loop_states(prog, loop) == ("RM", "RD", "RNV")


SCAN = """
input  q[e], K[t, e], V[t, f]
output O
S[t]          = q[e] * K[t, e]
RM[0]         = -inf
RD[0]         = 0
RN[0, f]      = 0
RM[t + 1]     = max(RM[t], S[t])
RD[t + 1]     = RD[t] * exp(RM[t] - RM[t + 1]) + exp(S[t] - RM[t + 1])
RN[t + 1, f]  = RN[t, f] * exp(RM[t] - RM[t + 1]) + exp(S[t] - RM[t + 1]) * V[t, f]
O[t, f]       = RN[t + 1, f] / RD[t + 1]
"""


def test_outputs_stay_out_and_per_step_inputs_come_in():
    prog = einattn.parse(SCAN)
    steps = assert_valid(prog)
    assert labels(steps) == [
        "RM.init",
        "RD.init",
        "RN.init",
        ("t", ["S", "RM.step", "RD.step", "RN.step"]),
        "O",
    ]


def test_a_tensor_read_at_another_index_stays_dense():
    prog = einattn.parse(
        """
input  X[t]
output Y
D[t]     = X[t] * 2
S[0]     = 0
S[t + 1] = S[t] + D[t]
Y[t]     = S[t + 1] + D[t]
"""
    )
    steps = assert_valid(prog)
    assert labels(steps) == ["D", "S.init", ("t", ["S.step"]), "Y"]


def test_a_candidate_read_at_a_shifted_step_is_not_fused():
    prog = einattn.parse(
        """
input  X[t]
output Y
D[t]     = X[t] * 2
S[0]     = 0
S[t + 1] = S[t] + D[t] + E[t]
E[t]     = D[t + 1] ?? 0
Y        = S[T]
"""
    )
    steps = assert_valid(prog)
    # E reads D one step ahead: D cannot be computed a step at a time, so it stays whole; E joins the loop
    assert labels(steps) == ["D", "S.init", ("t", ["E", "S.step"]), "Y"]


def test_loops_that_cannot_merge_are_left_alone():
    prog = einattn.parse(
        """
input  X[t]
output Y
A[0]     = 0
A[t + 1] = A[t] + X[t]
B[0]     = 0
B[t + 1] = B[t] + A[T] * X[t]
Y        = B[T]
"""
    )
    assert fused_schedule(prog) == schedule(prog)


def test_programs_without_recurrences_are_unchanged():
    for name in ("attention_3pass", "attention_2pass", "causal", "gqa"):
        prog = einattn.load(EXAMPLES / f"{name}.ein")
        assert fused_schedule(prog) == schedule(prog)


@given(cascades(iterative=True))
def test_generated_cascades_fuse_validly(spec):
    assert_valid(spec.program)


@given(attention_specs(streaming=True))
def test_streaming_attention_fuses_into_one_loop(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = assert_valid(spec.program)
    loops = [s for s in steps if isinstance(s, Loop)]
    assert len(loops) == (1 if spec.program.iterative_ranks else 0)
    if loops:  # the statements indexed by m1 follow the state into the loop
        inside = {e.tensor for e in loops[0].body}
        assert {"LM", "SLN", "SLD", "SLNV", "PRM"} <= inside


def test_fused_loops_are_acyclic_within_a_step():
    prog = einattn.load(EXAMPLES / "causal_1pass.ein")
    loop = next(s for s in fused_schedule(prog) if isinstance(s, Loop))
    g = build_graph(prog).subgraph(e.label for e in loop.body)
    same_step = nx.DiGraph([(u, v) for u, v, c in g.edges(data="carried") if not c])
    assert nx.is_directed_acyclic_graph(same_step)
