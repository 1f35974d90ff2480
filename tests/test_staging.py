"""einattn.staging: a multi-pass cascade cut into 1-pass programs computes what the cascade computes.

Checked on the NumPy backend in float64 for the backward cascades of the examples (the programs the triton
backend's generated backward runs) and of hand-written cascades with absent rows; the stages' structure
(which tensors each computes, over which rank, in its 1-pass form) for softmax attention is
FlashAttention-2's, found by the compiler.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einattn
from einattn.format import format_program
from einattn.staging import StagingError, run, stages
from einattn.testing import cascades

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZES = dict(b=2, h=2, g=1, p=13, m=11, e=5, f=3)


def _inputs(prog, sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        out[n] = rng.standard_normal([sizes.get(r, 2) for r in t.ranks])
    return out


def _outputs(kernel, xs) -> dict:
    got = kernel(**xs)
    return dict(zip(kernel.program.outputs, got if isinstance(got, tuple) else (got,)))


def _staged_equals_whole(prog, sequence, sizes=SIZES, tile=4, seed=0):
    xs = _inputs(prog, sizes, seed)
    want = _outputs(einattn.compile(prog, backend="numpy"), xs)
    staged = stages(prog, sequence, tile)

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    values = run(staged, xs, call)
    for name in prog.outputs:
        np.testing.assert_allclose(values[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    return staged


@pytest.mark.parametrize(
    "spec",
    [
        "attention_3pass",
        "causal",
        "alibi",
        "softcap",
        "sliding_window",
        "sigmoid",
        "lse",
        "linear",
        "gqa",
        "variants/02_mqa",
        "variants/05_softmax_sink",
    ],
)
def test_staged_backward_equals_the_backward_cascade(spec):
    g = einattn.grad(EXAMPLES / f"{spec}.ein")
    staged = _staged_equals_whole(g.program, ("m", "p"))
    for s in staged:  # a stage that holds a key-by-query value is a loop over tiles of one rank
        if s.dense:
            assert s.program.iterative_ranks, s.outputs


def test_softmax_attention_stages_as_flashattention_2():
    g = einattn.grad(EXAMPLES / "causal.ein")
    staged = stages(g.program, ("m", "p"), 64)
    assert [(s.outputs, s.rank) for s in staged] == [
        (("GM", "SD"), "m"),  # the row statistics: one online pass over the keys
        (("dSD_A",), "m"),  # sum_m dA * A per row
        (("dV", "dK"), "p"),  # per block of keys, a pass over the queries
        (("dQ",), "m"),  # per block of queries, a pass over the keys
    ]
    assert all(s.dense for s in staged)
    # the scores are never an output of a stage: recomputed per tile
    assert not {"QK", "SN", "A", "dQK_SN"} & {o for s in staged for o in s.outputs}
    assert staged[3].inputs == {n: n for n in ("Q", "K", "V", "dAV", "GM", "SD", "dSD_A")}


def test_a_reduction_over_both_sequence_ranks_is_split():
    # ALiBi's slope: d slope[h] = sum over b, m, p -> a part per row (streamed over m) then a small sum
    g = einattn.grad(EXAMPLES / "alibi.ein")
    staged = _staged_equals_whole(g.program, ("m", "p"))
    last = staged[-1]
    assert last.outputs == ("dslope",) and last.rank is None and not last.dense
    assert any("dslope_part" in s.outputs for s in staged[:-1])


ABSENT_ROWS = """
input  Q[p, e], K[m, e], V[m, f]
output O

S[m, p]  = Q[p, e] * K[m, e]  where m <= p - 4
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
"""


def test_absent_rows_cross_a_stage_boundary():
    # rows p < 4 have no key: GM and D are absent there, and the stages that read them restore that
    g = einattn.grad(ABSENT_ROWS)
    staged = _staged_equals_whole(g.program, ("m", "p"), dict(p=9, m=7, e=3, f=2))
    restored = [s for s in staged if "GM_in" in s.inputs]
    assert restored and all(s.inputs["GM_in"] == "GM" for s in restored)
    text = " ".join(format_program(restored[0].written).split())
    assert "GM[p] = GM_in[p] where p - 4 >= 0" in text


def test_absent_rows_gradient_is_zero_there():
    g = einattn.grad(ABSENT_ROWS)
    sizes = dict(p=9, m=7, e=3, f=2)
    xs = _inputs(g.program, sizes, seed=3)

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    values = run(stages(g.program, ("m", "p"), 4), xs, call)
    assert np.all(values["dQ"][:4] == 0) and np.any(values["dQ"][4:] != 0)


def test_refusals_are_errors_with_reasons():
    bias = einattn.parse(
        """
input  Q[p, e], K[m, e], V[m, f], B[p, m]
output O
S[m, p]  = Q[p, e] * K[m, e] + B[p, m]
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
A[m, p]  = N[m, p] / D[p]
O[p, f]  = A[m, p] * V[m, f]
"""
    )
    g = einattn.grad(bias)  # dB: a key-by-query gradient, which stages hold only one tile at a time
    with pytest.raises(StagingError, match="`dB` spans p and m") as err:
        stages(g.program, ("m", "p"))
    assert err.value.line is not None
    staged = _staged_equals_whole(
        einattn.grad(bias, wrt=["Q", "K", "V"]).program, ("m", "p"), dict(p=6, m=5, e=2, f=3)
    )
    assert all(s.program.iterative_ranks for s in staged if s.dense)
    with pytest.raises(StagingError, match="already has iterative ranks"):
        stages(einattn.load(EXAMPLES / "causal_1pass.ein"), ("m", "p"))
    assert isinstance(StagingError("x"), einattn.EinError)


def test_a_program_without_barriers_is_one_stage_per_output_group():
    prog = einattn.parse(
        """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p] = Q[p, e] * K[m, e]
O[p, f] = sigmoid(S[m, p]) * V[m, f]
"""
    )
    staged = _staged_equals_whole(prog, ("m", "p"), dict(p=5, m=9, e=2, f=3))
    assert [(s.outputs, s.rank) for s in staged] == [(("O",), "m")]
    assert staged[0].program.iterative_ranks == ("m1",)


def _staged_with_saved_outputs(prog, sizes=SIZES):
    """The backward with the forward's outputs saved, staged, against the whole backward cascade (NumPy)."""
    g = einattn.grad(prog, saved=prog.outputs)
    xs = _inputs(prog, sizes)
    outs = _outputs(einattn.compile(prog, backend="numpy"), xs)
    rng = np.random.default_rng(5)
    cots = {g.cotangents[o]: rng.standard_normal(np.shape(v)) for o, v in outs.items() if o in g.cotangents}
    whole = einattn.grad(prog)
    want = _outputs(einattn.compile(whole.program, backend="numpy"), {**xs, **cots})

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    staged = stages(g.program, ("m", "p"), 4)
    values = run(staged, {**xs, **cots, **{a: outs[n] for a, n in g.saved_inputs.items()}}, call)
    for name in g.program.outputs:
        np.testing.assert_allclose(values[name], want[name], rtol=1e-11, atol=1e-11, err_msg=name)
    return staged, values


@pytest.mark.parametrize("spec", ["causal", "sliding_window", "alibi", "lse", "softcap"])
def test_staged_backward_with_saved_outputs(spec):
    # the outputs saved from the forward pass are inputs: `sum_m dA * A` becomes `sum_f dAV * AV` (per row)
    staged, _ = _staged_with_saved_outputs(einattn.load(EXAMPLES / f"{spec}.ein"))
    if spec != "lse":  # (lse.ein divides after the sum: its dSD reads AV already)
        small = [s for s in staged if "dSD_A" in s.outputs]
        assert small and small[0].rank is None and not small[0].dense


def test_heads_past_the_last_group_cross_stages_by_their_constraint():
    # GQA with H = 5 > R G = 4: head 4 reads past the last group and is absent, where -h + 2 G - 1 < 0 (an
    # affine constraint through `h // R`): the stages restore it as a filter, its gradients are 0
    staged, values = _staged_with_saved_outputs(
        einattn.load(EXAMPLES / "gqa.ein"), dict(b=1, h=5, g=2, p=9, m=10, e=3, f=2)
    )
    assert np.all(values["dQ"][:, 4] == 0) and np.all(values["dQ"][:, :4] != 0)
    readers = [format_program(s.written) for s in staged if "GM_in" in s.program.inputs]
    assert readers and all("where -h + 2 * G - 1 >= 0" in r for r in readers)


GPT_OSS = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], SINK[h]
param  R = 2
param  W = 3
output O

QK[b, h, p, m] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where 0 <= p - m < W
S[b, h, p, m]  = 5 * tanh(QK[b, h, p, m] / 5)
L[b, h, p]     = S[b, h, p, m] :: max(m)
G[b, h, p]     = max(L[b, h, p], SINK[h])
N[b, h, p, m]  = exp(S[b, h, p, m] - G[b, h, p])
D[b, h, p]     = N[b, h, p, m]
O[b, h, p, f]  = N[b, h, p, m] * V[b, h // R, m, f] / (D[b, h, p] + exp(SINK[h] - G[b, h, p]))
"""


def test_a_computed_tensor_that_hides_a_size_is_renamed():
    # gpt-oss attention (sinks, a window, GQA, softcapping) names its max `G`, which hides rank g's size: the
    # gradient renames it (`G_2`), so that the heads past the last group (`-h + 2 G - 1 >= 0`) cross the
    # stages as a filter (before: the saved output's restoring filter read the tensor `G` as a size, an
    # internal error)
    staged, values = _staged_with_saved_outputs(
        einattn.parse(GPT_OSS), dict(b=1, h=5, g=2, p=9, m=10, e=3, f=2)
    )
    assert "G_2" in staged[0].outputs and not staged[0].indicators
    assert np.all(values["dQ"][:, 4] == 0) and np.any(values["dQ"][:, :4] != 0)
    assert np.all(values["dSINK"][4] == 0) and np.all(values["dSINK"][:4] != 0)
    assert "renamed: G -> G_2" in einattn.grad(GPT_OSS).text


def test_a_constraint_on_a_size_an_input_hides_travels_as_an_indicator():
    # the sink logits named `M` (an input: not renamed) hide rank m's size, which the window's rows bound
    # (`-p + M + 1 >= 0`: a row past M + W - 2 sees no key): no filter can say it, an indicator does
    spec = GPT_OSS.replace("SINK", "M").replace("G[", "GX[")
    staged, values = _staged_with_saved_outputs(
        einattn.parse(spec), dict(b=1, h=5, g=2, p=14, m=10, e=3, f=2)
    )
    assert "GX_ok" in staged[0].indicators
    assert np.all(values["dQ"][:, :, 12:] == 0) and np.all(values["dQ"][:, :4, :12] != 0)


DATA_DEPENDENT = """
input  Q[b, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O

S[b, m, p] = Q[b, p, e] * K[b, m, e]  where m < klen[b]
GM[b, p]   = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - GM[b, p])
D[b, p]    = N[b, m, p]
A[b, m, p] = N[b, m, p] / D[b, p]
O[b, p, f] = A[b, m, p] * V[b, m, f]
"""


def test_absence_the_analysis_cannot_describe_travels_as_an_indicator():
    # a padded batch: GM and D are absent for a sequence with no key (klen 0), which no affine constraint
    # says; the stage computing them also outputs GM_ok (1 present, 0 absent), read as an integer input
    g = einattn.grad(DATA_DEPENDENT)
    sizes = dict(b=3, p=4, m=6, e=2, f=3)
    xs = _inputs(g.program, sizes, seed=7)
    xs["klen"] = np.array([3, 0, 6])
    want = _outputs(einattn.compile(g.program, backend="numpy"), xs)
    staged = stages(g.program, ("m", "p"), 4)

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    values = run(staged, xs, call)
    for name in g.program.outputs:
        np.testing.assert_allclose(values[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    assert np.all(values["dQ"][1] == 0) and np.any(values["dQ"][0] != 0)
    first = staged[0]
    assert "GM_ok" in first.indicators and values["GM_ok"].dtype == np.int32
    assert values["GM_ok"][1].sum() == 0 and np.all(values["GM_ok"][0] == 1)
    readers = [s for s in staged[1:] if "GM_ok" in s.inputs]
    assert readers and "where GM_ok[b, p] != 0" in format_program(readers[0].written)


RESIDUAL = """
input  Q[b, p, e], K[b, m, e], V[b, m, f], res[b, p, f], klen[b] : int
output Y
S[b, m, p] = Q[b, p, e] * K[b, m, e]  where m < klen[b]
G[b, p]    = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - G[b, p])
D[b, p]    = N[b, m, p]
O[b, p, f] = N[b, m, p] * V[b, m, f] / D[b, p]
Y[b, p, f] = O[b, p, f] + res[b, p, f]
"""


def test_presence_ranks():
    from einattn.absence import presence_ranks

    prog = einattn.parse(RESIDUAL.replace("output Y", "output Y, Z") + "Z[b, p, f] = O[b, p + 1, f] * 2\n")
    got = {t.name: "".join(sorted(presence_ranks(prog, t.name))) for t in prog.tensors}
    # inputs present; the padding varies along the batch and the keys, not the queries; a sum over the keys
    # keeps the batch only, and so does the output over its features; a shifted read adds the rows
    assert got == dict(Q="", K="", V="", res="", klen="", S="bm", G="b", N="bm", D="b", O="b", Y="b", Z="bp")


def test_an_indicator_keeps_only_the_ranks_its_presence_varies_along():
    # a residual after attention under a padding mask: the cotangent of O, gated by Y's presence, is
    # materialised per (b, p, f), absent on a sequence without keys; its indicator varies along b (kept with
    # the sequence rank p), not along the feature rank f, which a fused stage's filter cannot read
    g = einattn.grad(RESIDUAL, saved=("Y",))
    sizes = dict(b=3, p=4, m=6, e=2, f=3)
    xs = _inputs(g.program, sizes, seed=3)
    xs["klen"] = np.array([3, 0, 6])
    want = _outputs(einattn.compile(g.program, backend="numpy"), xs)
    staged = stages(g.program, ("m", "p"), 4)
    made = {n: s for s in staged for n in s.indicators}
    assert [r for r in made["dO_Y_ok"].program.tensor("dO_Y_ok").ranks] == ["b", "p"]

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    values = run(staged, xs, call)
    for name in g.program.outputs:
        np.testing.assert_allclose(values[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    assert np.all(values["dO_Y_ok"][1] == 0) and np.all(values["dO_Y_ok"][[0, 2]] == 1)


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_cascades_and_their_backward_passes_stage_exactly(data):
    # any two ranks of a random cascade as the sequence ranks: staging either refuses with a StagingError or
    # computes, stage by stage, what the whole program computes (absent points included)
    spec = data.draw(cascades(max_statements=4, iterative=False))
    prog = einattn.parse(spec.text)
    if data.draw(st.booleans()):
        with contextlib.suppress(einattn.EinError):  # (nothing to differentiate: the cascade itself)
            prog = einattn.grad(prog).program
    ranks = [r for r in prog.ranks if any(r in prog.tensor(n).ranks for n in prog.inputs)]
    if len(ranks) < 2:
        return
    sequence = data.draw(st.permutations(ranks))[:2]
    try:
        staged = stages(prog, sequence, data.draw(st.integers(1, 3)))
    except StagingError:
        return
    sizes = {r: data.draw(st.integers(1, 4)) for r in prog.ranks}
    xs = _inputs(prog, sizes, seed=data.draw(st.integers(0, 2**16)))
    for n in prog.inputs:
        if prog.tensor(n).dtype == "int":
            xs[n] = np.abs(xs[n]).astype(np.int64) % 3
    want = _outputs(einattn.compile(prog, backend="numpy"), xs)

    def call(stage, ins):
        return _outputs(einattn.compile(stage.program, backend="numpy"), ins)

    values = run(staged, xs, call)
    for name in prog.outputs:
        a, b = np.asarray(values[name]), np.asarray(want[name])
        assert np.array_equal(np.isnan(a), np.isnan(b)), (spec.text, name)
        np.testing.assert_allclose(
            np.nan_to_num(a), np.nan_to_num(b), rtol=1e-9, atol=1e-9, err_msg=spec.text
        )


def test_cli_prints_the_stages_as_specs():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "einattn", "grad", str(EXAMPLES / "causal.ein"), "--stages", "--tile", "32"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split("# ---- stage ")[1:]
    assert [b.splitlines()[0] for b in blocks] == [
        "1: GM, SD (a loop over tiles of `m`: one fused kernel)",
        "2: dSD_A (per row: small)",
        "3: dV, dK (a loop over tiles of `p`: one fused kernel)",
        "4: dQ (a loop over tiles of `m`: one fused kernel)",
    ]
    programs = [einattn.parse(b.split("\n", 1)[1]) for b in blocks]  # each stage is a spec of its own
    assert programs[1].outputs == ("dSD_A",) and "M0" in programs[0].param_values
    assert programs[0].param_values["M0"] == 32
    r = subprocess.run(
        [*cmd[:4], str(EXAMPLES / "causal_1pass.ein"), "--stages"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "written in its 1-pass form" in r.stderr and "Traceback" not in r.stderr
