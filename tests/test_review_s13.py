"""Reviewer regressions (session 13): shift functions in other frames, shifts of a value computed from the
max, several functions of one max, and params overridden at compile time.

Each case is compared on the NumPy reference in float64: the spec as written, its 1-pass and 2-pass rewrites
(tiles of 3, a ragged last tile), the torch backend's streamed form, and split-K's partial/merge/finish.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from rewrite_cases import run, run_split

import einattn
from einattn.rewrite import rewrite

H, P, M, E, F = 3, 3, 8, 4, 2
HEAD = "input  Q[h, p, e], K[h, m, e], V[h, m, f], TH[h], TP[p], C[p], T, T2\n"
TAIL = """D[h, p]     = N[h, m, p]
O[h, p, f]  = N[h, m, p] * V[h, m, f] / D[h, p]
"""

SPECS = {
    # the max's ranks in another order than the shift's: f(d) = exp(d / TH[h]) maps h to the max's `p`
    "swapped_frame": HEAD
    + """output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p + 2
GM[p, h]    = S[p, m, h] :: max(m)
N[h, m, p]  = exp((S[h, m, p] - GM[h, p]) / TH[h])
"""
    + TAIL,
    # rank aliases on the max, readers in a third frame
    "aliased_frame": HEAD
    + """rank G = H
rank R = P
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p + 2
GM[g, r]    = S[g, m, r] :: max(m)
N[h, m, p]  = exp((S[h, m, p] - GM[h, p]) / (TP[p] * TH[h]))
D[g, r]     = N[g, m, r]
O[h, p, f]  = N[h, m, p] * V[h, m, f] / D[h, p]
""",
    # a shift by a value computed from the max, with a temperature, and a log-sum-exp of it
    "computed_from_max": HEAD
    + """output O, L
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p
GM[h, p]    = S[h, m, p] :: max(m)
G2[h, p]    = GM[h, p] + C[p]
N[h, m, p]  = exp((S[h, m, p] - G2[h, p]) / TH[h])
"""
    + TAIL
    + "L[h, p]     = G2[h, p] / TH[h] + log(D[h, p])\n",
    # two functions of one max: a negative and a positive temperature (two corrections, states absent)
    "two_temperatures": HEAD
    + """output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]
GM[h, p]    = S[h, m, p] :: max(m)
N1[h, m, p] = exp((S[h, m, p] - GM[h, p]) / T)
N2[h, m, p] = exp2((S[h, m, p] - GM[h, p]) * T2)
D1[h, p]    = N1[h, m, p]
D2[h, p]    = N2[h, m, p]
O1[h, p, f] = N1[h, m, p] * V[h, m, f] / D1[h, p]
O2[h, p, f] = N2[h, m, p] * V[h, m, f] / D2[h, p]
O[h, p, f]  = O1[h, p, f] + O2[h, p, f]
""",
    # a unary minus around the scaled difference: f(d) = exp(-d) grows as d -> -inf (softmax of -S)
    "negated_difference": HEAD
    + """output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]  where m <= p + 1
GM[h, p]    = S[h, m, p] :: max(m)
N[h, m, p]  = exp(-(S[h, m, p] - GM[h, p]) * TP[p])
"""
    + TAIL,
}


def inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        Q=rng.standard_normal((H, P, E)) * 2,
        K=rng.standard_normal((H, M, E)),
        V=rng.standard_normal((H, M, F)),
        TH=np.array([0.5, 2.0, 0.8]),
        TP=np.array([0.3, 1.5, 0.9]),
        C=rng.standard_normal(P),
        T=np.array(-0.6),
        T2=np.array(1.3),
    )


def _parse(text: str) -> einattn.Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)  # (inputs a spec does not read)
        return einattn.parse(text, "review.ein")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rewrites_and_split_equal_the_spec(name):
    prog = _parse(SPECS[name])
    x = {n: v for n, v in inputs().items() if n in prog.inputs}
    want = run(prog, x)
    for passes in (1, 2):
        new, _ = rewrite(prog, passes=passes, tile=3)
        got = run(new, x)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    for cuts in ([3], [0, 5]):
        got = run_split(prog, x, cuts, M, 3)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["swapped_frame", "two_temperatures"])
def test_torch_streams_them(name):
    prog = _parse(SPECS[name])
    x = {n: v for n, v in inputs(1).items() if n in prog.inputs}
    want = einattn.compile(prog, backend="numpy")(**x)
    k = einattn.compile(prog, backend="torch", tile=3, row_block=3)
    got = k(**{n: torch.tensor(v, dtype=torch.float64) for n, v in x.items()}).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


OVERRIDDEN = (
    """input  Q[h, p, e], K[h, m, e], V[h, m, f]
param  PT = 0.7
output O
S[h, m, p]  = Q[h, p, e] * K[h, m, e]
GM[h, p]    = S[h, m, p] :: max(m)
N[h, m, p]  = exp((S[h, m, p] - GM[h, p]) / PT)
"""
    + TAIL
)


def test_a_temperature_param_overridden_negative_at_compile_time():
    """`param PT = 0.7` proves exp(d / PT) vanishes below; `params={"PT": -0.6}` is applied before the
    rewrite, so the states start absent and the streamed form has no NaN (a softmax of -S / 0.6)."""
    x = {n: v for n, v in inputs(2).items() if n in ("Q", "K", "V")}
    s = np.einsum("hpe,hme->hpm", x["Q"], x["K"]) / -0.6
    w = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("hpm,hmf->hpf", w / w.sum(-1, keepdims=True), x["V"])
    got = einattn.compile(OVERRIDDEN, backend="numpy", params={"PT": -0.6}, passes="auto", tile=3)(**x)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    k = einattn.compile(OVERRIDDEN, backend="torch", params={"PT": -0.6}, tile=3)
    out = k(**{n: torch.tensor(v) for n, v in x.items()}).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
