"""Every example in examples/ against an independent NumPy reference (tests/references/attention.py).

The NumPy backend is the project's oracle, so it must be exact: float64 results equal the hand-written formula
within 1e-12 (relative to the output's largest magnitude), for every tile size M0 (dividing M, not dividing
M, larger than M), with masked tiles, fully masked rows and logits near +-1e4. float32 mode within 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES
from references import attention as R

import einattn

TOL64, TOL32 = 1e-12, 1e-5

# Default sizes: P != M so that a rank mix-up shows; causal variants are self-attention (P = M).
SIZES = dict(B=2, H=2, P=7, M=20, E=8, F=5)
SELF = dict(P=20)


def make_qkv(rng, B, H, P, M, E, F, scale=1.0, G=None):
    """Q, K, V with entries of size ``scale``: logits q.k / sqrt(E) have spread about scale**2.

    ``scale="offset"`` (needs E = 4): every logit of query row p is (-1)**p * 1e4 plus a small part, all
    exact in float64 (entries are multiples of 1/8), so softmax is far from one-hot and only the max
    subtraction avoids overflow (+1e4 rows) and 0/0 (-1e4 rows).
    """
    if scale == "offset":
        assert E == 4, "offset logits are exact only with rsqrt(E) = 1/2"
        q = rng.integers(-16, 17, (B, H, P, E)) / 8
        k = rng.integers(-16, 17, (B, G or H, M, E)) / 8
        q[..., 0] = 100.0 * (-1.0) ** np.arange(P)  # q.k / 2 gets +-100 * 200 / 2 = +-1e4
        k[..., 0] = 200.0
        return dict(Q=q, K=k, V=rng.standard_normal((B, G or H, M, F)))
    return dict(
        Q=rng.standard_normal((B, H, P, E)) * scale,
        K=rng.standard_normal((B, G or H, M, E)) * scale,
        V=rng.standard_normal((B, G or H, M, F)),
    )


def make_gqa(rng, params, scale=1.0, **sz):
    return make_qkv(rng, **sz, scale=scale, G=sz["H"] // params["R"])


def make_alibi(rng, params, scale=1.0, **sz):
    h = np.arange(1, sz["H"] + 1)
    return make_qkv(rng, **sz, scale=scale) | dict(slope=2.0 ** (-8.0 * h / sz["H"]))  # Press et al.'s slopes


def make_sigmoid(rng, params, scale=1.0, **sz):
    return make_qkv(rng, **sz, scale=scale) | dict(bias=-np.log(sz["M"]))  # b = -log(n), Ramapuram et al.


def make_plain(rng, params, scale=1.0, **sz):
    return make_qkv(rng, **sz, scale=scale)


def qkv(f):
    """A reference taking (Q, K, V) only."""
    return lambda x, params: f(x["Q"], x["K"], x["V"])


@dataclass(frozen=True)
class Case:
    ref: Callable  # (inputs, params) -> output or tuple of outputs
    make: Callable = make_plain  # (rng, params, scale=, **sizes) -> inputs
    params: dict = field(default_factory=dict)  # the spec's defaults, as the reference must see them
    sizes: dict = field(default_factory=dict)  # overrides of SIZES
    softmax: bool = True  # a softmax variant: gets the extreme-logit test


CASES: dict[str, Case] = {
    "attention_3pass.ein": Case(qkv(R.softmax_attention)),
    "attention_deferred.ein": Case(qkv(R.softmax_attention)),
    "attention_2pass.ein": Case(qkv(R.softmax_attention), params={"M0": 64}),
    "attention_1pass.ein": Case(qkv(R.softmax_attention), params={"M0": 64}),
    "causal.ein": Case(qkv(R.causal_attention), sizes=SELF),
    "causal_1pass.ein": Case(qkv(R.causal_attention), params={"M0": 64}, sizes=SELF),
    "sliding_window.ein": Case(
        lambda x, pr: R.sliding_window_attention(x["Q"], x["K"], x["V"], pr["W"]), params={"W": 4}, sizes=SELF
    ),
    "gqa.ein": Case(
        lambda x, pr: R.gqa_attention(x["Q"], x["K"], x["V"], pr["R"]), make_gqa, {"R": 2}, dict(H=4)
    ),
    "alibi.ein": Case(
        lambda x, pr: R.alibi_attention(x["Q"], x["K"], x["V"], x["slope"]), make_alibi, sizes=dict(H=4, P=20)
    ),
    "softcap.ein": Case(
        lambda x, pr: R.softcap_attention(x["Q"], x["K"], x["V"], pr["C"]), params={"C": 30.0}
    ),
    "sigmoid.ein": Case(
        lambda x, pr: R.sigmoid_attention(x["Q"], x["K"], x["V"], x["bias"]), make_sigmoid, softmax=False
    ),
    "linear.ein": Case(qkv(R.linear_attention), softmax=False),
    "linear_causal.ein": Case(
        lambda x, pr: R.linear_attention(x["Q"], x["K"], x["V"], causal=True), sizes=SELF, softmax=False
    ),
    "lse.ein": Case(qkv(R.attention_lse)),
}

PARTITIONED = ["attention_2pass.ein", "attention_1pass.ein", "causal_1pass.ein"]


def rel_err(out, ref) -> float:
    """Largest absolute error relative to the reference's largest magnitude (nan if anything is nan)."""
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape, f"shape {out.shape}, expected {ref.shape}"
    scale = float(np.max(np.abs(ref), initial=0.0))
    return float(np.max(np.abs(out.astype(np.float64) - ref), initial=0.0)) / (scale or 1.0)


def run_case(name, sizes=None, params=None, scale=1.0, dtype=None, seed=0, spec=None):
    """Run example ``name`` (or ``spec`` text) and its reference on the same random inputs; return both."""
    case = CASES[name]
    sz = SIZES | case.sizes | (sizes or {})
    pr = case.params | (params or {})
    x = case.make(np.random.default_rng(seed), pr, scale=scale, **sz)
    if dtype == "float32":  # the reference sees exactly the rounded inputs the kernel computes with
        x = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in x.items()}
    opts = {} if dtype is None else {"dtype": dtype}
    kernel = einattn.compile(spec or EXAMPLES / name, backend="numpy", params=params, **opts)
    out = kernel(**x)
    ref = case.ref(x, pr)
    return (out, ref) if isinstance(ref, tuple) else ((out,), (ref,))


def assert_close(outs, refs, tol, dtype=np.float64):
    assert len(outs) == len(refs)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        assert out.dtype == dtype, f"output {k} is {out.dtype}, expected {dtype}"
        assert np.isfinite(out).all(), f"output {k} has non-finite values"
        err = rel_err(out, ref)
        assert err <= tol, f"output {k}: relative error {err:.3g} > {tol:g}"


def test_every_example_has_a_case():
    files = {p.name for p in Path(EXAMPLES).glob("*.ein")}
    assert files - set(CASES) == set(), "examples without a test: add them to CASES"
    assert set(CASES) - files == set(), "CASES names examples that do not exist"


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_float64(name):
    assert_close(*run_case(name), TOL64)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_float32(name):
    assert_close(*run_case(name, dtype="float32"), TOL32, np.float32)


# M0 dividing M, not dividing M (ragged last tile), M0 = 1, M0 = M, and M < M0 (a single ragged tile).
TILES = [(4, 20), (5, 20), (3, 20), (7, 20), (1, 20), (20, 20), (64, 20), (8, 5)]


@pytest.mark.parametrize("m0, m", TILES, ids=[f"M0={a}-M={b}" for a, b in TILES])
@pytest.mark.parametrize("name", PARTITIONED)
def test_partitioned(name, m0, m):
    sizes = dict(M=m, P=m) if "causal" in name else dict(M=m)
    assert_close(*run_case(name, sizes=sizes, params={"M0": m0}), TOL64)


def causal_2pass_spec() -> str:
    """attention_2pass.ein with a causal filter on its score Einsum: the 2-pass cascade needs no guard."""
    text = (EXAMPLES / "attention_2pass.ein").read_text(encoding="utf-8")
    lines = text.splitlines()
    [k] = [i for i, line in enumerate(lines) if line.startswith("BQK[")]
    lines[k] = lines[k].split("#")[0].rstrip() + "  where m1 * M0 + m0 <= p"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("m0", [4, 3, 64])
def test_causal_2pass(m0):
    """Section 3's exactness for the third cascade with a causal filter (fully masked tiles included)."""
    case = CASES["causal.ein"]  # same reference and sizes as the 3-pass causal example
    sz = SIZES | case.sizes
    x = make_plain(np.random.default_rng(1), {}, **sz)
    out = einattn.compile(causal_2pass_spec(), backend="numpy", params={"M0": m0})(**x)
    assert_close((out,), (R.causal_attention(x["Q"], x["K"], x["V"]),), TOL64)


EXTREME = [n for n, c in CASES.items() if c.softmax]


@pytest.mark.parametrize("name", sorted(EXTREME))
def test_extreme_logits_spread(name):
    """Inputs of size 100 give logits spread over about +-1e4 (near one-hot rows): no overflow, no nan."""
    params = {"M0": 3} if name in PARTITIONED else None  # ragged tiles too
    assert_close(*run_case(name, params=params, scale=100.0), TOL64)


@pytest.mark.parametrize("name", sorted(EXTREME))
def test_extreme_logits_offset(name):
    """Every logit of a row near +1e4 or -1e4, softmax far from one-hot: exact to 1e-12."""
    params = {"M0": 3} if name in PARTITIONED else None
    assert_close(*run_case(name, sizes=dict(E=4), params=params, scale="offset"), TOL64)


@pytest.mark.parametrize("scale", [100.0, "offset"])
def test_extreme_inputs_reach_1e4(scale):
    x = make_plain(np.random.default_rng(0), {}, scale=scale, **(SIZES | dict(E=4)))
    s = R.scores(x["Q"], x["K"])
    assert np.abs(s).max() > 9e3
    if scale == "offset":
        assert (s[:, :, 0::2] > 9e3).all() and (s[:, :, 1::2] < -9e3).all()
        w = R.softmax_weights(s)
        assert w.max() < 0.9  # far from one-hot


@pytest.mark.parametrize(
    "sizes, params",
    [
        (dict(P=12, M=6), {"W": 4}),  # cross-attention, P > M: queries 9..11 have no key in their window
        (dict(P=7, M=7), {"W": 0}),  # an empty window: every row is fully masked
        (dict(P=9, M=9), {"W": 1}),  # each query sees only itself
    ],
    ids=["P>M", "W=0", "W=1"],
)
def test_sliding_window_masked_rows(sizes, params):
    (out,), (ref,) = run_case("sliding_window.ein", sizes=sizes, params=params)
    empty = ~R.window_mask(sizes["P"], sizes["M"], params["W"]).any(axis=1)
    assert np.all(out[:, :, empty] == 0), "a fully masked query row must give exactly 0"
    assert_close((out,), (ref,), TOL64)


def test_causal_1pass_short_queries():
    """P < M: most tiles of every row are fully masked, so the `??` guards carry the running state."""
    assert_close(*run_case("causal_1pass.ein", sizes=dict(P=5, M=20), params={"M0": 4}), TOL64)


@pytest.mark.parametrize(
    "name, sizes, params",
    [
        ("gqa.ein", dict(H=4), {"R": 4}),  # multi-query attention: one key/value head
        ("gqa.ein", dict(H=6), {"R": 3}),
        ("softcap.ein", {}, {"C": 2.0}),  # a cap that bites
        ("alibi.ein", dict(P=6, M=6), {}),
        ("sliding_window.ein", dict(P=20), {"W": 7}),
    ],
)
def test_param_overrides(name, sizes, params):
    assert_close(*run_case(name, sizes=sizes, params=params, seed=3), TOL64)


def test_softcap_bounds_extreme_logits():
    """With logits of about 1e4 the capped scores saturate at +-C: the output still matches."""
    assert_close(*run_case("softcap.ein", params={"C": 5.0}, scale=100.0), TOL64)
