"""The triton backend against the NumPy reference: every example and public conformance case, both paths.

Runs under the Triton interpreter on CPU (``triton_cases`` sets ``TRITON_INTERPRET=1`` when there is no GPU),
with small grids. float32 within 1e-4, float16 within 1e-2 (relative to max(1, |reference|)).
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from einattn.lowering.triton_expr import FUNCTIONS as TRITON_FUNCTIONS
from einattn.lowering.triton_fused import Refusal, match
from einattn.lowering.triton_tiles import empty_step_identity
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_cases import DEVICE, EXAMPLES, ROOT, SIZES, check, compare, make_inputs, reference, to_torch

import einattn
from einattn.functions import FUNCTIONS as REGISTRY

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy: exp(-inf) etc.

EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.ein"))
# examples whose fewest-pass form is a 1-pass loop over tiles: they must compile to one fused kernel
FUSED = {
    "alibi.ein",
    "attention_1pass.ein",
    "attention_3pass.ein",
    "attention_deferred.ein",
    "causal.ein",
    "causal_1pass.ein",
    "gqa.ein",
    "linear_causal.ein",  # (streamed, its sums split one tl.dot a statement: lowering/triton_split.py)
    "lse.ein",
    "sigmoid.ein",  # (its sums streamed by passes="auto": docs/rewrite.md, rule 3)
    "sliding_window.ein",
    "softcap.ein",
}


def sizes_for(name: str) -> dict:
    if name.startswith("gqa"):
        return dict(h=4, g=2)
    if "causal" in name or "sliding" in name or "alibi" in name:
        return dict(p=11)  # self-attention
    return {}


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_auto(name):
    """passes="auto": the rewrite's 1-pass form where it exists (one fused kernel), else the general path."""
    k = check(EXAMPLES / name, sizes_for(name), tile=4)
    assert k.plan.path == ("fused" if name in FUSED else "general"), str(k.plan)


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_general(name):
    """The general path (one kernel per Einsum) runs every spec as written."""
    k = check(EXAMPLES / name, sizes_for(name), path="general", passes="as-written", params=_tile(name))
    assert k.plan.path == "general"


def _tile(name: str):
    return {"M0": 4} if "pass" in name and "3pass" not in name else None


# ---- the public conformance cases -------------------------------------------------------------------------

CONFORMANCE = ROOT.parent / "shared" / "conformance" / "cases.py"


def _conformance():
    if not CONFORMANCE.exists():
        return []
    spec = importlib.util.spec_from_file_location("einattn_conformance_cases", CONFORMANCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CASES


@pytest.mark.parametrize("case", _conformance(), ids=lambda c: c["name"])
def test_conformance_case(case, tmp_path):
    path = tmp_path / f"{case['name']}.ein"
    path.write_text(case["spec"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        k = einattn.compile(path, backend="triton", params=case["params"])
    args = {}
    for n, v in case["inputs"].items():
        a = np.asarray(v)
        args[n] = torch.tensor(a, dtype=torch.int64 if a.dtype.kind in "iu" else torch.float32)
    out = k(**args)
    want = case["oracle"](**case["inputs"])
    outs, wants = (out if isinstance(out, tuple) else (out,)), (want if isinstance(want, tuple) else (want,))
    for o, w in zip(outs, wants):
        err = np.max(np.abs(o.double().numpy() - w) / (1 + np.abs(w)))
        assert err <= 2e-3, f"{case['name']}: {err:.3g}"  # the conformance runner's triton tolerance


# ---- features ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fused", "general"])
def test_ragged_tiles_and_padded_head_dims(path):
    """M = 13 over tiles of 4 (the last one ragged); E = 7, F = 3 padded to 16 lanes and masked."""
    check(EXAMPLES / "causal_1pass.ein", dict(p=13, m=13, e=7, f=3), params={"M0": 4}, path=path)


@pytest.mark.parametrize("path", ["fused", "general"])
def test_non_contiguous_inputs(path):
    """Any memory layout: inputs stored transposed, with gaps; strides are runtime arguments."""
    check(EXAMPLES / "gqa.ein", dict(h=4, g=2), layout="strided", tile=4, path=path)


FULLY_MASKED = """
# causal attention with the first three queries seeing no key at all
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m + 3 <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("path", ["fused", "general"])
def test_fully_masked_rows_give_zero(path):
    k = check(FULLY_MASKED, dict(p=19, m=19), tile=4, path=path)
    prog = k.program
    x = make_inputs(prog, dict(SIZES) | dict(p=19, m=19))
    out = k(**to_torch(prog, x))
    assert torch.all(out[:, :, :3] == 0) and torch.all(torch.isfinite(out))


def test_sliding_window_skips_tiles():
    """Causal and sliding-window kernels narrow the tile loop per program (rows 16 per program here)."""
    k = check(EXAMPLES / "sliding_window.ein", dict(p=40, m=40, h=1), tile=4, params={"W": 6})
    assert "skipped" in k.plan.detail
    assert "lo = tl.maximum(" in k.source and "hi = tl.minimum(" in k.source


def test_whole_tiles_run_without_masks():
    """Causal over 40 rows in blocks of 16: the tiles wholly below the diagonal run the mask-free loop, the
    diagonal ones the masked loop, in order; the result is the same. The rewritten running state starts
    present at the identities of its `??` (-inf and 0, lowering.triton_fused._identity_start): no loop
    selects between states, and one flag per row (`seen`) says where the spec's state is present."""
    k = check(EXAMPLES / "causal.ein", dict(p=40, m=40, h=1), tile=4)
    src = k.source
    assert "for m1 in range(lo, whole_lo):" in src and "for m1 in range(whole_hi, hi):" in src
    whole = src.split("# whole tiles: no masks\n")[1].split("for m1 in range(whole_hi, hi):")[0]
    assert "BQK_ok" not in whole and "tl.where(t_" not in whole and "_ok[" not in whole
    assert "tl.where(t_RM_ok" not in src and "t_RNV_ok" not in src  # no state carries a mask
    assert 'seen = seen | (t_LM > -float("inf"))' in src and "t_AV_ok = seen" in src
    # the masked tiles: with a tile of 16 keys (no padding lanes) the filtered scores hold -inf where
    # absent: the max, the exponential, the sum and `P V` need no select and no reduction of a mask
    k = check(EXAMPLES / "causal.ein", dict(p=40, m=40, h=1), tile=16)
    tail = k.source.split("for m1 in range(whole_hi, hi):\n")[-1].split("    seen = seen | (whole_lo")[0]
    values = [x for x in tail.splitlines() if x.strip().startswith("t_") and "_ok = " not in x]
    assert sum("tl.where(" in x for x in values) == 1  # the scores' -inf
    assert "t_LM = _rmax(t_BQK, 1)" in tail and "t_SLD = tl.sum(t_SLN, 1)" in tail
    assert "t_RNV_next = (t_SLNV + t_SPNV)" in tail
    assert "tl.max(t_BQK_ok" not in tail  # the rows reached: a compare of the max, not a mask's reduction
    # a hand-written 1-pass cascade whose state starts present has one mask-free loop for every whole tile
    k = check(EXAMPLES / "causal_1pass.ein", dict(p=40, m=40, h=1), params={"M0": 4})
    assert "for m1 in range(whole_lo, whole_hi):  # whole tiles: no masks" in k.source
    whole = k.source.split("# whole tiles: no masks")[1].split("for m1 in range(whole_hi, hi):")[0]
    assert "BQK_ok" not in whole


def test_gqa_fused_reads_shared_heads():
    k = check(EXAMPLES / "gqa.ein", dict(h=6, g=3), params={"R": 2}, tile=4)
    assert k.plan.path == "fused" and "_floordiv(i_h, 2)" in k.source
    # the launcher proves `h // R < G` for every program (a compile-time flag folds the per-tile checks)
    assert "INB0: tl.constexpr" in k.source and "INB0=all(0 <= (c_h // 2) < sizes['g']" in k.source
    sizes = {"b": 1, "h": 6, "g": 3, "p": 9, "m": 11, "e": 5, "f": 3, "m1": 3, "m0": 4}
    assert k.module.tile_shape(sizes)["INB0"] is True


def test_a_constant_output_fills_its_tile():
    """`T = square(0.5)` is a constant expression: the store materialises it with tl.full (a Python number
    cannot be broadcast). Found by the property suite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        prog = einattn.parse("input X\noutput T\nT = square(0.5) + 1\n")
        got = einattn.compile(prog, backend="triton")(X=torch.tensor(2.0, device=DEVICE))
    assert float(got) == 1.25


def test_a_constant_index_of_a_parallel_rank_is_proved_in_bounds(tmp_path):
    """`K[b, 0, m, e]`: the launcher's check has no coordinate to range over (one comparison)."""
    spec = tmp_path / "first_group.ein"
    spec.write_text(
        "input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]\noutput AV\n"
        "QK[b, h, m, p] = Q[b, h, p, e] * K[b, 0, m, e]\n"
        "GM[b, h, p]    = QK[b, h, m, p] :: max(m)\n"
        "SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])\n"
        "SD[b, h, p]    = SN[b, h, m, p]\n"
        "AV[b, h, p, f] = SN[b, h, m, p] * V[b, 0, m, f] / SD[b, h, p]\n"
    )
    k = check(spec, dict(g=2), tile=4)
    assert k.plan.path == "fused" and "INB0=(0 <= 0 < sizes['g'])" in k.source
    # no group at all: every read is out of bounds, the spec as written runs (general path), the output is 0
    check(spec, dict(g=0), tile=4)


def test_gqa_heads_past_the_last_group_are_absent():
    """H = 5 query heads, G = 2 groups of R = 2: head 4 reads group 2, which does not exist. The flag is
    false for that call, the runtime checks decide, and the head's output is the reference's 0."""
    k = check(EXAMPLES / "gqa.ein", dict(h=5, g=2), params={"R": 2}, tile=4)
    sizes = {"b": 1, "h": 5, "g": 2, "p": 9, "m": 11, "e": 5, "f": 3, "m1": 3, "m0": 4}
    assert k.module.tile_shape(sizes)["INB0"] is False


@pytest.mark.parametrize("name", ["causal.ein", "gqa.ein"])
def test_float16(name):
    check(EXAMPLES / name, sizes_for(name), dtype=torch.float16, tile=4)


def test_bfloat16():
    """bfloat16 runs (under the interpreter, which has no bfloat16 arithmetic, the launcher upcasts)."""
    check(EXAMPLES / "causal.ein", sizes_for("causal.ein"), dtype=torch.bfloat16, tile=4)


def test_float64():
    check(EXAMPLES / "attention_1pass.ein", dtype=torch.float64, params={"M0": 4})


def test_extreme_logits():
    """Logits spread over +-1e3: the running max keeps exp in range."""
    check(EXAMPLES / "causal.ein", dict(p=11), scale=12.0, tile=4)


FLOOR = """
# index arithmetic with negative operands: `//` and `%` floor like Python; min/max/clamp in indices
input  X[n, e], w[k], z[p]
output Y
Y[p, e] = X[clamp((p - 5) // 2 + (p - 7) % 3, 0, N - 1), e] * w[max(k - 1, 0)] + X[p - 3, e] + z[p]
"""


def test_floor_division_and_clamp():
    check(einattn.parse(FLOOR), dict(n=6, e=3, k=3, p=8))


TWO_OPS = """
# a sum over e, then a max over j: two reduction operators in one statement
input  A[i, j, e], B[e, j]
output Y
Y[i] = A[i, j, e] * B[e, j] :: max(j)
"""


def test_two_reduction_operators():
    k = check(TWO_OPS, dict(i=5, j=7, e=4))
    assert "Y__partial" in k.source


DOCUMENT = """
# packed documents: a query sees earlier keys of its own document (an integer tensor in the filter)
input  Q[p, e], K[m, e], V[m, f], dq[p] : int, dk[m] : int
output O
S[m, p]  = Q[p, e] * K[m, e]  where dq[p] == dk[m] and m <= p
GM[p]    = S[m, p] :: max(m)
EX[m, p] = exp(S[m, p] - GM[p])
DEN[p]   = EX[m, p]
O[p, f]  = EX[m, p] * V[m, f] / DEN[p]
"""


@pytest.mark.parametrize("path", ["fused", "general"])
def test_document_mask(path):
    check(DOCUMENT, dict(p=10, m=10), tile=4, path=path)


# ---- the fused path's matcher -----------------------------------------------------------------------------


def test_refusals_name_the_reason():
    prog = einattn.load(EXAMPLES / "linear.ein")
    r = match(prog)
    assert isinstance(r, Refusal) and "iterative rank" in r.reason
    two = einattn.load(EXAMPLES / "attention_2pass.ein")
    assert isinstance(match(two), Refusal)
    with pytest.raises(einattn.EinError, match="cannot fuse"):
        einattn.compile(EXAMPLES / "linear.ein", backend="triton", path="fused")
    k = einattn.compile(EXAMPLES / "sigmoid.ein", backend="triton", passes="as-written")
    assert k.plan.path == "general" and "iterative rank" in k.plan.reason
    # passes="auto" streams its sums over tiles of m (docs/rewrite.md, rule 3): one fused kernel
    assert einattn.compile(EXAMPLES / "sigmoid.ein", backend="triton").plan.path == "fused"
    # where the streamed form does not fuse, the general path computes the sums whole (one kernel each,
    # not one launch per tile), and the reason names both refusals
    # (a filter along the keys that reads the feature rank `f`: its weights span three tile axes)
    spec = (
        "input Q[p, e], K[m, e], V[m, f]\noutput O\nS[m, p] = Q[p, e] * K[m, e]\n"
        "O[p, f] = sigmoid(S[m, p]) * V[m, f]  where m <= p + f\n"
    )
    k = einattn.compile(spec, backend="triton")
    assert k.plan.path == "general" and not k.program.partitions
    assert "with its sums streamed over tiles: a value spans three tile axes" in k.plan.reason
    # causal linear attention's streamed sums fuse since they are split one tl.dot a statement
    assert einattn.compile(EXAMPLES / "linear_causal.ein", backend="triton").plan.path == "fused"


def test_empty_step_identity():
    """The causal 1-pass example skips trailing tiles only; the rewrite's guarded form skips both ends."""
    plan = match(einattn.load(EXAMPLES / "causal_1pass.ein"))
    assert empty_step_identity(plan, {"BQK"}) == (True, False)
    k = einattn.compile(EXAMPLES / "sliding_window.ein", backend="triton")
    plan = match(k.program)
    filtered = {e.tensor for e in plan.body if e.filter is not None}
    assert empty_step_identity(plan, filtered) == (True, True)


# ---- random sizes (hypothesis) ----------------------------------------------------------------------------

VARIANTS = ["attention_1pass.ein", "causal.ein", "sliding_window.ein", "gqa.ein", "softcap.ein"]


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(VARIANTS),
    p=st.integers(1, 12),
    m=st.integers(1, 12),
    e=st.integers(1, 9),
    f=st.integers(1, 6),
    tile=st.sampled_from([1, 3, 4, 8]),
    seed=st.integers(0, 2**16),
)
def test_random_sizes(name, p, m, e, f, tile, seed):
    sizes = dict(p=p, m=m, e=e, f=f, b=1, h=2, g=1)
    if name != "attention_1pass.ein" and name != "softcap.ein":
        sizes["m"] = p  # self-attention
    if name == "gqa.ein":
        sizes.update(h=2, g=1)
    params = {"M0": tile} if name == "attention_1pass.ein" else None
    check(EXAMPLES / name, sizes, seed=seed, tile=tile, params=params)


def test_reference_helpers_agree():
    """The helpers' float32 rounding: the reference sees exactly the values the kernel reads."""
    prog = einattn.load(EXAMPLES / "attention_3pass.ein")
    x = make_inputs(prog, SIZES)
    want = reference(prog, x, torch.float16)
    got = einattn.compile(prog, backend="triton", path="general")(**to_torch(prog, x, torch.float16))
    compare(got, want, torch.float16)


@pytest.mark.parametrize("name", ["attention_3pass.ein", "lse.ein", "linear.ein"])
def test_empty_key_rank(name):
    """M = 0: every reduction over m is absent, so outputs are 0 (the NumPy reference's semantics)."""
    k = check(EXAMPLES / name, dict(m=0), path="general", passes="as-written")
    assert k.plan.path == "general"


# ---- the function table -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", sorted(REGISTRY))
def test_every_function(fn):
    """Each registry function has a Triton form that agrees with NumPy, small and large arguments alike."""
    assert fn in TRITON_FUNCTIONS, f"no Triton entry for `{fn}`"
    arity = REGISTRY[fn].arity
    args = ", ".join(f"{x}[i]" for x in "XYZ"[:arity])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)  # unused inputs
        prog = einattn.parse(f"input X[i], Y[i], Z[i]\noutput O\nO[i] = {fn}({args})\n")
    base = np.concatenate([np.geomspace(1e-5, 30, 24), -np.geomspace(1e-5, 30, 24), [0.0, 0.3, -0.3, 0.03]])
    positive = fn in ("log", "log2", "sqrt", "rsqrt")
    x = {"X": np.abs(base) + 1e-3 if positive else base, "Y": base[::-1].copy(), "Z": np.roll(base, 7) + 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        got = einattn.compile(prog, backend="triton")(**to_torch(prog, x))
    want = reference(prog, x)[0]
    g = got.double().cpu().numpy()
    rel = np.abs(g - want) / np.maximum(np.abs(want), 1e-30)
    assert np.all((rel <= 2e-6) | (np.abs(g - want) <= 1e-7)), f"{fn}: worst relative error {rel.max():.3g}"


@pytest.mark.parametrize("name", ["attention_3pass.ein", "causal.ein"])
def test_empty_key_sequence_gives_the_reference_zeros(name):
    """passes="auto" streams over zero tiles when M = 0: still the spec's 0, never 0 / 0."""
    prog = einattn.load(EXAMPLES / name)
    q = torch.randn(1, 2, 3, 4, device=DEVICE)
    k = torch.randn(1, 2, 0, 4, device=DEVICE)
    got = einattn.compile(prog, backend="triton", tile=4)(Q=q, K=k, V=k)
    want = einattn.compile(prog)(
        Q=q.double().cpu().numpy(), K=k.double().cpu().numpy(), V=k.double().cpu().numpy()
    )
    assert got.shape == want.shape and torch.equal(got, torch.zeros_like(got)) and not want.any()


@pytest.mark.parametrize(
    "spec",
    [
        "input X[j, i]\noutput Y\nY[i] = X[2, i]\n",
        "input X[j, i]\nparam C = 2\noutput Y\nY[i] = X[C, i]\n",
        "input X[j, i]\noutput Y\nY[i] = X[J - 1, i]\n",
    ],
)
def test_a_read_at_a_constant_index(spec):
    """`X[2, i]` (a literal, or a param) generated `(2).to(tl.int64)`, which neither the interpreter nor the
    compiler accepts (a Python int has no `.to`): the index is now a 64-bit constant."""
    x = np.arange(12.0).reshape(3, 4)
    got = einattn.compile(spec, backend="triton")(torch.tensor(x, dtype=torch.float32, device=DEVICE))
    np.testing.assert_array_equal(got.cpu().numpy(), x[2])
    prog = einattn.parse(
        "input  x\nparam  N = 3\noutput F\nR[0]     = x\nR[n + 1] = R[n] * 2\nF        = R[N]\n"
    )
    got = einattn.compile(prog, backend="triton")(torch.tensor(1.5, device=DEVICE))
    assert float(got) == 12.0  # the language reference's example: x * 2^N


def test_nan_is_kept_by_max_min_and_their_reductions():
    """`tl.maximum`/`tl.minimum` and `tl.max` drop a NaN by default; NumPy and torch keep it (the language's
    arithmetic is IEEE). The generated code uses NaN-propagating helpers for `max`, `min`, `clamp`, `relu`
    and `::` max/min reductions."""
    spec = (
        "input X[p, m]\noutput MX, MN, C, R\nMX[p] = X[p, m] :: max(m)\nMN[p] = X[p, m] :: min(m)\n"
        "C[p, m] = clamp(X[p, m], -1, 1)\nR[p, m] = max(relu(X[p, m]), 0)\n"
    )
    x = np.array([[1.0, np.nan, 2.0], [0.5, 3.0, -2.0]])
    got = einattn.compile(spec, backend="triton")(torch.tensor(x, dtype=torch.float32, device=DEVICE))
    want = (x.max(1), x.min(1), np.clip(x, -1, 1), np.maximum(np.maximum(x, 0), 0))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.cpu().numpy(), w, rtol=1e-6)  # NaN where NumPy has NaN


def test_an_integer_tensor_for_a_float_input_is_an_error():
    """As with the torch backend: an integer tensor where floats are declared is refused (a Python number
    for a scalar input is converted)."""
    kern = einattn.compile("input X[i], c\noutput Y\nY[i] = X[i] * c\n", backend="triton")
    want = r"`X` must be a floating-point tensor \(float64, float32, float16 or bfloat16\), got torch\.int64"
    with pytest.raises(einattn.EinError, match=want):
        kern(torch.arange(3, device=DEVICE), 2)
    got = kern(torch.arange(3.0, device=DEVICE), 2)
    np.testing.assert_array_equal(got.cpu().numpy(), [0.0, 2.0, 4.0])


def test_an_empty_head_dimension_on_the_fused_path():
    """With E = 0 every score is a sum over no point, absent; FuseMax's Cascade 5 without `??` guards then
    leaves every state absent and the output 0 (the reference's answer). The fused kernel's `tl.dot` over
    padded, all-masked lanes made the scores present zeros (a uniform average of V); an empty rank now runs
    the general path, whose reductions know emptiness."""
    spec = (
        "input Q[e, p], K[e, m], V[f, m]\nparam M0 = 3\nrank M = M1 * M0\noutput AV\n"
        "BK[e, m1, m0] = K[e, m1 * M0 + m0]\nBV[f, m1, m0] = V[f, m1 * M0 + m0]\n"
        "RM[0, p] = -inf\nRD[0, p] = 0\nRNV[f, 0, p] = 0\nBQK[m1, m0, p] = Q[e, p] * BK[e, m1, m0]\n"
        "LM[m1, p] = BQK[m1, m0, p] :: max(m0)\nRM[m1 + 1, p] = max(RM[m1, p], LM[m1, p])\n"
        "SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])\nSLD[m1, p] = SLN[m1, m0, p]\n"
        "SLNV[f, m1, p] = SLN[m1, m0, p] * BV[f, m1, m0]\nPRM[m1, p] = exp(RM[m1, p] - RM[m1 + 1, p])\n"
        "SPD[m1, p] = RD[m1, p] * PRM[m1, p]\nRD[m1 + 1, p] = SLD[m1, p] + SPD[m1, p]\n"
        "SPNV[f, m1, p] = RNV[f, m1, p] * PRM[m1, p]\nRNV[f, m1 + 1, p] = SLNV[f, m1, p] + SPNV[f, m1, p]\n"
        "AV[f, p] = RNV[f, M1, p] / RD[M1, p]\n"
    )
    kern = einattn.compile(spec, backend="triton")
    assert kern.plan.path == "fused"
    v = torch.randn(2, 7, device=DEVICE)
    got = kern(torch.ones(0, 4, device=DEVICE), torch.ones(0, 7, device=DEVICE), v)
    np.testing.assert_array_equal(got.cpu().numpy(), np.zeros((2, 4)))
    assert kern.for_empty().plan.path == "general"


def test_a_minus_inf_padding_mask_over_whole_tiles():
    """As in the torch backend: the rewrite's running max is floored at the dtype's lowest finite value on
    both paths (the fused kernel, when the bias has its own statement; the general path otherwise), so a
    `-inf` padding bias over whole first tiles gives SDPA's answer instead of NaN, and a row padded with
    `torch.finfo(float32).min` everywhere SDPA's uniform weights (a floor of -1e30 gave 0 / 0)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=gen).to(DEVICE) for _ in range(3))
    bias = torch.zeros(40, device=DEVICE)
    bias[:20] = -math.inf
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias[None, :])
    base = (
        "input Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], B[m]\noutput AV\n{scores}"
        "GM[b, h, p] = QK[b, h, m, p] :: max(m)\nSN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])\n"
        "SD[b, h, p] = SN[b, h, m, p]\nAV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]\n"
    )
    fused = (
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)\nQK[b, h, m, p] = S[b, h, m, p] + B[m]\n"
    )
    # (in one statement the bias is inside the sum over e, counted E times: 0 and -inf are unchanged; the
    # fused matcher refuses the statement, so this form runs the general path)
    general = "QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) + B[m]\n"
    for scores, path in ((fused, "fused"), (general, "general")):
        kern = einattn.compile(base.format(scores=scores), backend="triton", tile=16)
        assert kern.plan.path == path and "_floor(" in kern.source
        torch.testing.assert_close(kern(q, k, v, bias), want, rtol=1e-4, atol=1e-5)
        if path == "fused":  # (the general form adds the bias E times: finfo.min * E is -inf)
            # equal scores, so uniform weights: SDPA on the CPU says so; on CUDA its memory-efficient
            # kernel gives 0 for such rows (seen on an H200), so the reference is computed on the CPU
            low = torch.full((40,), torch.finfo(torch.float32).min, device=DEVICE)
            want_low = torch.nn.functional.scaled_dot_product_attention(
                *(x.cpu() for x in (q, k, v)), attn_mask=low.cpu()[None, :]
            )
            assert torch.allclose(want_low, v.cpu().mean(2, keepdim=True).expand_as(want_low), atol=1e-6)
            torch.testing.assert_close(kern(q, k, v, low).cpu(), want_low, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", ["fused", "general"])
def test_spec_names_that_are_names_of_the_generated_code(path):
    """A spec may name its tensors `torch`, `tl`, `size_p`, `_max`, `lo`, `CD` or `step`: generated code
    names tensor X `t_X`, and only the launcher's parameters are the spec's names (they were the
    launcher's locals and the kernel's registers, which shadowed the modules and helpers)."""
    import re

    spec = (EXAMPLES / "causal_1pass.ein").read_text()
    names = {"Q": "torch", "K": "tl", "V": "size_p", "RM": "_max", "BQK": "lo", "AV": "CD", "RD": "step"}
    for old, new in names.items():
        spec = re.sub(rf"\b{old}\b", new, spec)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    want = einattn.compile(spec, backend="numpy", params={"M0": 4})(torch=q, tl=k, size_p=v)
    kern = einattn.compile(spec, backend="triton", params={"M0": 4}, path=path)
    assert kern.plan.path == path
    args = [torch.tensor(x, dtype=torch.float32, device=DEVICE) for x in (q, k, v)]
    got = kern(torch=args[0], tl=args[1], size_p=args[2])
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    # the launcher keeps the spec's names: positional and keyword calls
    np.testing.assert_allclose(kern.launcher(*args).cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    by_name = kern.launcher(size_p=args[2], tl=args[1], torch=args[0])
    np.testing.assert_allclose(by_name.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


def test_a_rank_named_like_another_rank_s_kernel_name_is_refused_by_the_fused_path():
    """The tile rank named `offs_p` beside a rank `p` would be two things in the fused kernel (`offs_p` is
    p's lane offsets): the fused path refuses it and the general path computes it."""
    import re

    spec = re.sub(
        r"\bM1\b", "OFFS_P", re.sub(r"\bm1\b", "offs_p", (EXAMPLES / "causal_1pass.ein").read_text())
    )
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((1, 2, 5, 4)),
        rng.standard_normal((1, 2, 7, 4)),
        rng.standard_normal((1, 2, 7, 3)),
    )
    want = einattn.compile(spec, backend="numpy", params={"M0": 4})(Q=q, K=k, V=v)
    kern = einattn.compile(spec, backend="triton", params={"M0": 4})
    assert kern.plan.path == "general" and "offs_p" in kern.plan.reason
    got = kern(*(torch.tensor(x, dtype=torch.float32, device=DEVICE) for x in (q, k, v)))
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


def test_call_and_option_mistakes_are_clear_errors():
    """An input that is not a tensor, options of the wrong type, a tile larger than Triton's largest tensor:
    EinErrors (they were torch's TypeErrors, silent acceptance, or a crash inside Triton). The standalone
    module checks its inputs' kinds (ValueError: a float tensor for an `: int` input was truncated)."""
    kern = einattn.compile(EXAMPLES / "causal.ein", backend="triton")
    k = torch.randn(1, 1, 4, 2, device=DEVICE)
    for bad in (None, "abc", object(), np.ones((1, 1, 3, 2))):
        with pytest.raises(einattn.EinError, match="must be a torch tensor"):
            kern(Q=bad, K=k, V=k)
    with pytest.raises(ValueError, match="floating-point tensor"):
        kern.launcher(torch.ones(1, 1, 3, 2, dtype=torch.int32, device=DEVICE), k, k)
    for options, what in (
        (dict(skip_tiles="no"), "skip_tiles"),
        (dict(dtype="int8"), "dtype"),
        (dict(register_limit="x"), "register_limit"),
    ):
        with pytest.raises(einattn.EinError, match=what):
            einattn.compile(EXAMPLES / "causal.ein", backend="triton", **options)
    big = einattn.compile(EXAMPLES / "causal.ein", backend="triton", path="fused", tile=2**17)
    with pytest.raises(einattn.EinError, match="no launch configuration fits"):
        big(Q=k[:, :, :3], K=k, V=k)


def test_an_input_named_self_can_be_passed_by_name():
    spec = "input self[i], X[i]\noutput Y\nY[i] = self[i] * X[i]\n"
    x = np.arange(3.0)
    assert np.array_equal(einattn.compile(spec, backend="numpy")(self=x, X=x), x * x)


def test_abs_in_filters_and_indices_on_every_backend():
    """`abs` is piecewise affine: a symmetric window `where abs(p - m) < W` and reads such as
    `X[abs(i - 3)]` are allowed, and every backend computes them (against hand-written NumPy)."""
    window = (
        "input Q[p, e], K[m, e], V[m, f]\nparam W = 3\noutput O\n"
        "S[m, p] = Q[p, e] * K[m, e] where abs(p - m) < W\nGM[p] = S[m, p] :: max(m)\n"
        "EX[m, p] = exp(S[m, p] - GM[p])\nD[p] = EX[m, p]\nO[p, f] = EX[m, p] * V[m, f] / D[p]\n"
    )
    reads = "input X[i], Y[j]\noutput O\nO[i] = X[abs(i - 3)] * 2 + Y[abs(i - 5) // 2]\n"
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((7, 4)), rng.standard_normal((9, 4)), rng.standard_normal((9, 2))
    x, y = rng.standard_normal(7), rng.standard_normal(3)
    s = q @ k.T
    s = np.where(np.abs(np.arange(7)[:, None] - np.arange(9)[None, :]) < 3, s, -np.inf)
    w = np.exp(s - s.max(1, keepdims=True))
    want = (w / w.sum(1, keepdims=True)) @ v
    i = np.arange(7)
    want2 = x[np.abs(i - 3)] * 2 + y[np.abs(i - 5) // 2]
    # `abs(p - m) < W` is read as `-W < p - m < W`: the torch backend skips the tiles outside the window
    assert "are skipped (einattn.skip)" in einattn.compile(window, backend="torch", tile=4).source
    for backend in ("numpy", "torch", "triton"):
        for passes in ("as-written", "auto"):
            opts = {"passes": passes}
            conv = (lambda a: a) if backend == "numpy" else (lambda a: torch.tensor(a, device=DEVICE))
            got = einattn.compile(window, backend=backend, **opts)(*map(conv, (q, k, v)))
            got2 = einattn.compile(reads, backend=backend, **opts)(conv(x), conv(y))
            got, got2 = (np.asarray(g.cpu() if hasattr(g, "cpu") else g) for g in (got, got2))
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{backend} {passes}")
            np.testing.assert_allclose(got2, want2, rtol=1e-12, err_msg=f"{backend} {passes}")


@pytest.mark.parametrize(
    "rhs, want",
    [
        # functions of constants: the exp helper takes a Python number (fuzzer, session 9)
        ("X[p] + exp(C)", lambda x: x + math.exp(3)),
        ("X[p] + sigmoid(2)", lambda x: x + 1 / (1 + math.exp(-2))),
        # arithmetic on inf and another constant is a constant tile (tl.full), not a Python float
        ("inf + 2", lambda x: np.full_like(x, math.inf)),
        ("-inf * C", lambda x: np.full_like(x, -math.inf)),
        ("-inf + C  where p == 2", lambda x: np.where(np.arange(len(x)) == 2, -math.inf, 0.0)),
        # `2.0` and `2` are equal nodes of the IR: the divisor of `p % 2` stays an integer
        (
            "X[p]  where p >= 2.0 and p % 2 == 0",
            lambda x: np.where((np.arange(len(x)) % 2 == 0) & (np.arange(len(x)) >= 2), x, 0.0),
        ),
    ],
)
def test_constants_of_every_kind(rhs, want):
    text = f"input X[p]\nparam C = 3\noutput T\nT[p] = {rhs}\n"
    x = np.array([1.0, -2.0, 3.0, 0.5, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        got = einattn.compile(text, backend="triton")(X=torch.tensor(x, dtype=torch.float32, device=DEVICE))
    np.testing.assert_allclose(got.cpu().numpy(), want(x), rtol=1e-6)


@pytest.mark.parametrize("window", ["abs(p - m) < W", "W > abs(m - p)", "not abs(p - m) >= W"])
def test_a_window_written_with_abs_skips_tiles(window):
    """`abs(p - m) < W` is `-W < p - m and p - m < W` (docs/language.md): the fused kernel narrows the tiles
    it visits as for the two comparisons (it visited every tile; a reviewer's case, session 9)."""
    spec = (
        "input Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]\nparam W = 5\noutput O\n"
        f"S[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {window}\n"
        "MX[b, h, p] = S[b, h, p, m] :: max(m)\nX[b, h, p, m] = exp(S[b, h, p, m] - MX[b, h, p])\n"
        "D[b, h, p] = X[b, h, p, m]\nO[b, h, p, f] = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]\n"
    )
    k = check(spec, dict(p=70, m=70, h=1), tile=16)
    assert k.plan.path == "fused" and "tiles before and after the filter's range skipped" in str(k.plan)


@pytest.mark.parametrize(
    "fn, ref",
    [
        ("tanh", torch.tanh),
        ("elu", torch.nn.functional.elu),
        ("softplus", lambda x: torch.clamp_min(x, 0) + torch.log1p(torch.exp(-x.abs()))),
        ("sigmoid", torch.sigmoid),
    ],
)
def test_written_out_functions_are_accurate_in_float64(fn, ref):
    """tanh, elu and softplus are written out (the interpreter has no libdevice): series near 0 long enough
    for float64 (tanh was 1.7e-8 off below 0.3, softcapping in float64 failed a 1e-10 tolerance), log1p by
    Goldberg's trick (no cancellation in 1 + y, in float32 either)."""
    x = torch.cat([torch.linspace(-30, 30, 3001, dtype=torch.float64), torch.linspace(-0.5, 0.5, 1001)])
    x = x.to(torch.float64)
    k = einattn.compile(f"input X[p]\noutput T\nT[p] = {fn}(X[p])\n", backend="triton")
    want = ref(x)
    torch.testing.assert_close(k(X=x.to(DEVICE)).cpu(), want, rtol=1e-11, atol=1e-300)
    torch.testing.assert_close(k(X=x.float().to(DEVICE)).cpu().double(), want, rtol=5e-6, atol=1e-30)


@pytest.mark.parametrize("example", ["causal", "sliding_window", "alibi", "softcap", "gqa", "lse"])
def test_examples_with_whole_and_masked_tiles(example):
    """Tiles of 16 keys over 45 queries and keys in row blocks of 16: whole tiles, then masked ones that know
    every state present (the -inf-filled scores and fill values of the fused kernel's fourth body)."""
    params = {"W": 20} if example == "sliding_window" else {}
    k = check(EXAMPLES / f"{example}.ein", dict(p=45, m=45, h=2), tile=16, params=params)
    assert k.plan.path == "fused"


def test_the_floor_of_a_running_max_is_the_dtypes_lowest_in_every_backend():
    """The triton helper `_floor` writes the lowest finite values out (the kernel has no finfo); they are
    einattn.stabilizers.lowest's, which the NumPy backend uses, and torch.finfo's, which torch's does."""
    import re

    from einattn.lowering.triton_expr import HELPERS

    from einattn.stabilizers import lowest

    floor = HELPERS.split("def _floor(x):")[1].split("@triton.jit")[0]
    values = sorted(float(v) for v in re.findall(r"_max\(x, (-[0-9.e+]+)\)", floor))
    assert values == sorted([lowest("float64"), lowest(torch.float32)])
    assert lowest(torch.float32) == torch.finfo(torch.float32).min == float(np.finfo(np.float32).min)


@pytest.mark.parametrize("tile", [4, 16])
def test_states_start_present_and_absent_rows_stay_exact(tile):
    """The rewritten running state starts present at -inf and 0 (`_identity_start`), and a row is known
    present where a tile's max is above -inf. The rows that test cannot decide go by the masks after the
    loop: rows the filter removes whole are 0, a row whose present scores are all -inf is NaN (0 / 0, as
    the spec says), and so is a row with a NaN score; the other rows are the oracle's. With a tile of 4
    (padding lanes) the filter's per-row term `p >= 3` is not in the max's values, only in its mask: the
    compare is taken with the mask (a reviewer's case: rows 0-2 were NaN)."""
    spec = (
        "input Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], B[p, m]\noutput AV\n"
        "S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)\n"
        "QK[b, h, m, p] = S[b, h, m, p] + B[p, m]  where m <= p and p >= 3\n"
        "GM[b, h, p] = QK[b, h, m, p] :: max(m)\nSN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])\n"
        "SD[b, h, p] = SN[b, h, m, p]\nAV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]\n"
    )
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 45, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(45, 45, generator=gen, dtype=torch.float64)
    bias[10, :] = -math.inf  # every present score of row 10 is -inf
    bias[30, 5] = math.nan  # row 30 has a NaN score
    bias[40, :35] = -math.inf  # row 40: its first tiles are all -inf, the last ones not
    kern = einattn.compile(spec, backend="triton", tile=tile)
    assert kern.plan.path == "fused" and "seen = seen | (t_GM" in kern.source.replace("t_LM", "t_GM")
    want = einattn.compile(spec, backend="numpy")(*(x.numpy() for x in (q, k, v, bias)))
    got = kern(*(x.to(DEVICE) for x in (q, k, v, bias))).cpu().numpy()
    assert np.isnan(want[:, :, 10]).all() and np.isnan(want[:, :, 30]).all() and (want[:, :, :3] == 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)  # NaN where the oracle has NaN


def _causal_rewritten() -> str:
    """The rewrite's 1-pass form of examples/causal.ein, as `einattn rewrite --tile 16` prints it."""
    from einattn.format import format_program
    from einattn.rewrite import rewrite

    return format_program(rewrite(einattn.load(EXAMPLES / "causal.ein"), tile=16)[0])


@pytest.mark.parametrize(
    "change, why",
    [
        (None, "the rewrite's form: proved"),
        (("RM[b, h, 0, p]          = -inf  where 0 != 0", "RM[b, h, 0, p] = -inf"), "the max starts present"),
        (
            ("RD[b, h, 0, p]          = 0  where 0 != 0", "RD[b, h, 0, p] = 1  where 0 != 0"),
            "a sum starts at 1",
        ),
        (("(SPD[b, h, m1, p] ?? 0) ?? SPD", "(SPD[b, h, m1, p] ?? 1) ?? SPD"), "an absent sum counts 1"),
        (
            ("exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])", "exp(RM[b, h, m1 + 1, p] - RM[b, h, m1, p])"),
            "F > 1",
        ),
        (
            (
                "AV[b, h, p, f]          = RNV",
                "SLD2[b, h, m1, p] = SLD[b, h, m1, p] * RD[b, h, m1, p]\nAV[b, h, p, f] = RNV",
            ),
            "a state read elsewhere",
        ),
        (
            (
                "SLD[b, h, m1, p]        = SLN[b, h, m1, m0, p]",
                "SLD[b, h, m1, p] = exp(BQK[b, h, m1, m0, p])",
            ),
            "a sum not over exp(T - M')",
        ),
    ],
)
def test_states_start_present_only_where_proved(change, why):
    """`_identity_start` accepts the rewrite's loop and refuses each change that would make starting the
    state present at -inf and 0 compute other values (it is checked on the matched plan, with the running
    max floored as the backend floors a rewritten program's); a refused loop keeps the general body."""
    from einattn.lowering.triton_fused import _identity_start

    original = _causal_rewritten()
    text = original if change is None else original.replace(*change)
    assert change is None or text != original
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        plan = match(einattn.parse(text))
    assert not isinstance(plan, Refusal), why
    plan.floored = frozenset({"RM"})
    assert (_identity_start(plan) == "LM") == (change is None), why
    plan.floored = frozenset()  # a spec as written: its running max is not floored
    assert _identity_start(plan) is None


@pytest.mark.parametrize("tile", [2, 3, 4, 16])
@pytest.mark.parametrize("filt", ["m <= p and p >= 5", "p >= 4 and m >= 2", "abs(p - m) < 3 and p != 6"])
def test_rows_a_per_row_filter_removes_are_absent(filt, tile):
    """A filter with a term on the row alone removes whole rows: they are absent (0, and log-sum-exp 0),
    not reached, whatever the tile's max holds there (a reviewer found them NaN and -inf at tiles 2-4)."""
    spec = (
        "input Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]\noutput AV, L\n"
        f"QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {filt}\n"
        "GM[b, h, p] = QK[b, h, m, p] :: max(m)\nSN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])\n"
        "SD[b, h, p] = SN[b, h, m, p]\nSNV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f]\n"
        "AV[b, h, p, f] = SNV[b, h, p, f] / SD[b, h, p]\nL[b, h, p] = GM[b, h, p] + log(SD[b, h, p])\n"
    )
    rng = np.random.default_rng(3)
    x = {
        n: rng.standard_normal(s)
        for n, s in (("Q", (1, 2, 13, 3)), ("K", (1, 2, 11, 3)), ("V", (1, 2, 11, 2)))
    }
    kern = einattn.compile(spec, backend="triton", tile=tile)
    assert kern.plan.path == "fused" and "seen = seen |" in kern.source
    want = einattn.compile(spec, backend="numpy")(**x)
    got = kern(**{n: torch.from_numpy(v).to(DEVICE) for n, v in x.items()})
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.cpu().numpy(), w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["fused", "general"])
def test_a_window_param_of_the_largest_int32_does_not_wrap(path):
    """`p < m + W` with `param W = 2**31 - 1` (a window disabled): Triton makes a literal that fits int32 an
    int32, and `m + W` wrapped (every row empty on the fused path). Large constants are int64 in kernels;
    the window then never binds, so the answer is causal attention's."""
    window = einattn.load(EXAMPLES / "sliding_window.ein").with_params({"W": 2**31 - 1})
    causal = einattn.load(EXAMPLES / "causal.ein")
    x = make_inputs(causal, dict(SIZES, p=11), seed=3)
    passes = "auto" if path == "fused" else "as-written"
    k = einattn.compile(window, backend="triton", passes=passes)
    assert k.plan.path == path
    compare(k(**to_torch(causal, x)), reference(causal, x))
    assert "tl.full((), 2147483647, tl.int64)" in k.source
