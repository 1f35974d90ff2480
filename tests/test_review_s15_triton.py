"""Review (session 15): the triton backend against hand-written NumPy / PyTorch references.

Variants (causal, sliding windows with narrowed loops, GQA `h // R`, ALiBi, softcap, sigmoid, several
outputs, cross attention P != M, specs that are not 1-pass), head dims that are not powers of two, ragged
lengths, fully masked rows, odd memory layouts (stride 0, permuted, offset storage), sizes that change between
calls, param overrides, the standalone module in a fresh process, the custom op (opcheck, torch.compile with
dynamic shapes), autograd against plain torch, the resource error, and hostile names. Every reference here is
NumPy or torch written out by hand, never einattn's own oracle. Interpreter on CPU, small grids.

Bugs found, all fixed in session 15 (the tests marked `# BUG:` failed before; kept as regression tests):

* code injection (both paths): the spec's name reaches the module docstring raw through a refusal's span
  (`Not fused: <name>:29:1: ...`); `spec_name` sanitises only the `Spec:` line. A spec named
  `x<three double quotes> + <expr> + <three double quotes>` runs <expr> when the generated module is
  imported (i.e. when einattn.compile runs).
* names: generated code derives names by suffixing the spec's (`t_X_ok`, `t_X_next`, `t_X_<n>`, `t_X_ptr`,
  `t_X_stride<k>`, `t_X_present`, `t_X_kernel`) and by using the iterative rank as a loop variable, but
  `_name_clash` checks only rank-derived names. Tensors `X` and `X_present` / `X_kernel` (general path)
  give a SyntaxError / IndexError; `X_ok`, `X_<n>`, `X_stride0` crash the fused kernel; `RM_next` beside a
  state `RM`, or an iterative rank named `whole_hi`, give silently wrong values; a rank named `tl` or `_max`
  crashes. The rewrite itself makes such a name from a natural one (`SN_ok` -> `SLN_ok`, the mask of `SLN`).
* float16 on the fused path: a value the kernel computes (not a load) that feeds `tl.dot` is cast to the
  inputs' dtype and overflows to inf past 65504 (a 1-pass linear attention's scores, a pre-scaled Q): NaN
  where the reference, the torch backend and the general path are finite.
* messages: refusals (`kernel.plan.reason`, the `path="fused"` error) and the module header's "Call it as"
  line name the internal `t_X` instead of the spec's `X`.
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from triton_cases import DEVICE, ROOT

import einattn

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

EXAMPLES = ROOT / "examples"


# ---- references and helpers ------------------------------------------------------------------------------


def np_attention(S, mask, V):
    """Softmax over the last axis of S (keys) where ``mask``: (output, log-sum-exp, row max); a row without
    a key is 0 in every output (the language's absent point)."""
    S = np.where(mask, S, -np.inf)
    row = mask.any(-1)
    gm = np.where(row, S.max(-1), 0.0)
    w = np.where(mask, np.exp(S - gm[..., None]), 0.0)
    sd = w.sum(-1)
    safe = np.where(row, sd, 1.0)
    out = np.where(row[..., None], np.einsum("...pm,...mf->...pf", w, V) / safe[..., None], 0.0)
    lse = np.where(row, gm + np.log(safe), 0.0)
    return out, lse, gm


def scores(Q, K):
    return np.einsum("...pe,...me->...pm", Q, K)


def grid(P, M):
    return np.arange(P)[:, None], np.arange(M)[None, :]


def kernel(spec, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(spec, backend="triton", **options)


def tt(a, dtype=torch.float32):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=DEVICE).to(dtype)


def rounded(a, dtype):
    """``a`` as the kernel sees it (rounded to ``dtype``), in float64."""
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype).double().numpy()


TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}


def close(got, want, dtype=torch.float32, what=""):
    """Relative to max(1, |reference|) as tests/triton_cases.py; non-finite values must match."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == dtype, f"{what} output {i}: dtype {g.dtype}, expected {dtype}"
        g = g.detach().double().cpu().numpy()
        w = np.asarray(w, dtype=np.float64)
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape}, expected {w.shape}"
        fin = np.isfinite(w)
        assert np.array_equal(np.isfinite(g), fin), (
            f"{what} output {i}: non-finite values differ: {g.ravel()[:6]}"
        )
        if fin.any():
            e = float(np.max(np.abs(g[fin] - w[fin]))) / max(1.0, float(np.max(np.abs(w[fin]))))
            assert e <= TOL[dtype], f"{what} output {i}: error {e:.3g} > {TOL[dtype]:g}"


def rng_for(seed):
    r = np.random.default_rng(seed)
    return lambda *s: r.standard_normal(s)


# ---- specs (written here; the references below are NumPy formulas) ---------------------------------------

CROSS_WINDOW = """
# cross attention (P != M), bottom-right aligned causal window of W keys
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  W = 6
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P and m > p + M - P - W
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

LSE3 = """
# three outputs: attention, log-sum-exp and row max, causal
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV, L, GM
QK[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]     = QK[b, h, m, p] :: max(m)
SN[b, h, m, p]  = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]     = SN[b, h, m, p]
SNV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f]
AV[b, h, p, f]  = SNV[b, h, p, f] / SD[b, h, p]
L[b, h, p]      = GM[b, h, p] + log(SD[b, h, p])
"""

BIAS_SCALE = """
# a per-head additive bias tensor and a scalar scale input
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], B[h, p, m], scale
output AV
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * scale
QK[b, h, m, p] = S[b, h, m, p] + B[h, p, m]
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

RELPOS = """
# a relative-position bias table indexed by p - m + M, causal
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], rel[h, r]
output AV
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
QK[b, h, m, p] = S[b, h, m, p] + rel[h, p - m + M]  where m <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

DILATED = """
# dilated causal attention: every second key
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p and (p - m) % 2 == 0
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

KVLEN = """
# a KV cache with a runtime length n (keys from n on are padding); the P queries end at key n - 1
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], n : int
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < n and m <= p + n - P
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

GQA_ALIBI_SOFTCAP = """
# GQA (h // R), ALiBi, softcap and causal in one
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], slope[h]
param  R = 2
param  C = 20.0
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
S[b, h, m, p]  = C * tanh(QK[b, h, m, p] / C) + slope[h] * (m - p)
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h // R, m, f] / SD[b, h, p]
"""

TWOPASS_SIGMOID = """
# sigmoid weights normalised by their sum: not 1-pass (the general path)
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
A[b, h, m, p]  = sigmoid(QK[b, h, m, p])
D[b, h, p]     = A[b, h, m, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""

ANTICAUSAL = """
# keys at or after p + OFF: the last queries see no key at all (fully masked rows)
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  OFF = -3
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m >= p + OFF
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

TWO_VALUES = """
# two outputs over different value ranks (F != G), one set of weights
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], U[b, h, m, g]
output AV, AU
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
AU[b, h, p, g] = SN[b, h, m, p] * U[b, h, m, g] / SD[b, h, p]
"""

BSHD = """
# BSHD layout in, a permuted output layout, and a second output computed once per row
input  Q[b, p, h, e], K[b, m, h, e], V[b, m, h, f]
output O, QN
S[b, h, m, p]  = Q[b, p, h, e] * K[b, m, h, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
X[b, h, m, p]  = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = X[b, h, m, p]
O[f, p, h, b]  = X[b, h, m, p] * V[b, m, h, f] / D[b, h, p]
QN[p, b, h]    = Q[b, p, h, e] * Q[b, p, h, e]
"""

EXP2 = """
# base-2 softmax, no batch rank
input  Q[h, p, e], K[h, m, e], V[h, m, f]
output O
S[h, m, p] = Q[h, p, e] * K[h, m, e] * 1.4426950408889634
GM[h, p]   = S[h, m, p] :: max(m)
X[h, m, p] = exp2(S[h, m, p] - GM[h, p])
D[h, p]    = X[h, m, p]
O[h, p, f] = X[h, m, p] * V[h, m, f] / D[h, p]
"""

CAUSAL = (EXAMPLES / "causal.ein").read_text()
CAUSAL_1PASS = (EXAMPLES / "causal_1pass.ein").read_text()


def _case(name, seed=0):
    """(spec, inputs in declaration order as NumPy arrays or numbers, expected outputs, fused?)."""
    rn = rng_for(seed)
    if name == "cross_window":
        P, M = 7, 29
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3)
        p, m = grid(P, M)
        mask = (m <= p + M - P) & (m > p + M - P - 6)
        return CROSS_WINDOW, (Q, K, V), np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    if name == "cross_short_keys":  # P > M: early rows see nothing (fully masked)
        P, M = 19, 6
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3)
        p, m = grid(P, M)
        mask = (m <= p + M - P) & (m > p + M - P - 6)
        assert not mask[:13].any()
        return CROSS_WINDOW, (Q, K, V), np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    if name == "lse3":
        P = 17
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3)
        p, m = grid(P, P)
        return LSE3, (Q, K, V), np_attention(scores(Q, K) / np.sqrt(5), m <= p, V)
    if name == "bias_scale":
        P, M = 9, 19
        Q, K, V, B = rn(2, 2, P, 5), rn(2, 2, M, 5), rn(2, 2, M, 3), rn(2, P, M)
        S = scores(Q, K) * 0.3 + B[None]
        return BIAS_SCALE, (Q, K, V, B, 0.3), np_attention(S, np.ones(S.shape, bool), V)[:1]
    if name == "relpos":
        P = 13
        Q, K, V, rel = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3), rn(2, 2 * P)
        p, m = grid(P, P)
        S = scores(Q, K) / np.sqrt(5) + rel[:, p - m + P][None]
        return RELPOS, (Q, K, V, rel), np_attention(S, m <= p, V)[:1]
    if name == "dilated":
        P = 13
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3)
        p, m = grid(P, P)
        mask = (m <= p) & ((p - m) % 2 == 0)
        return DILATED, (Q, K, V), np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    if name == "kvlen":
        P, M, n = 3, 16, 10
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3)
        p, m = grid(P, M)
        mask = (m < n) & (m <= p + n - P)
        return KVLEN, (Q, K, V, n), np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    if name == "kvlen_empty":  # n = 0: every row is absent
        P, M = 3, 16
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3)
        return KVLEN, (Q, K, V, 0), (np.zeros((1, 2, P, 3)),)
    if name == "gqa_alibi_softcap":
        P, H, G = 13, 4, 2
        Q, K, V = rn(1, H, P, 5), rn(1, G, P, 5), rn(1, G, P, 3)
        slope = 2.0 ** -np.arange(1, H + 1)
        p, m = grid(P, P)
        hh = np.arange(H) // 2
        S = scores(Q, K[:, hh]) / np.sqrt(5)
        S = 20 * np.tanh(S / 20) + slope[None, :, None, None] * (m - p)
        return GQA_ALIBI_SOFTCAP, (Q, K, V, slope), np_attention(S, m <= p, V[:, hh])[:1]
    if name == "twopass_sigmoid":
        P = 13
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3)
        p, m = grid(P, P)
        A = np.where(m <= p, 1 / (1 + np.exp(-scores(Q, K) / np.sqrt(5))), 0.0)
        return TWOPASS_SIGMOID, (Q, K, V), (np.einsum("bhpm,bhmf->bhpf", A, V) / A.sum(-1)[..., None],)
    if name == "anticausal":
        P, M = 21, 13
        Q, K, V = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3)
        p, m = grid(P, M)
        want = np_attention(scores(Q, K) / np.sqrt(5), m >= p - 3, V)[:1]
        assert (want[0][:, :, 16:] == 0).all()
        return ANTICAUSAL, (Q, K, V), want
    if name == "two_values":
        P, M = 11, 14
        Q, K, V, U = rn(1, 2, P, 5), rn(1, 2, M, 5), rn(1, 2, M, 3), rn(1, 2, M, 7)
        S = scores(Q, K) / np.sqrt(5)
        ones = np.ones(S.shape, bool)
        return TWO_VALUES, (Q, K, V, U), (np_attention(S, ones, V)[0], np_attention(S, ones, U)[0])
    if name == "bshd":
        P = 13
        Q, K, V = rn(2, P, 3, 5), rn(2, P, 3, 5), rn(2, P, 3, 4)
        p, m = grid(P, P)
        S = np.einsum("bphe,bmhe->bhpm", Q, K) / np.sqrt(5)
        O = np_attention(S, m <= p, np.transpose(V, (0, 2, 1, 3)))[0]
        return BSHD, (Q, K, V), (np.transpose(O, (3, 2, 1, 0)), np.transpose((Q * Q).sum(-1), (1, 0, 2)))
    if name == "exp2":
        Q, K, V = rn(2, 9, 5), rn(2, 11, 5), rn(2, 11, 3)
        S = scores(Q, K)
        return EXP2, (Q, K, V), np_attention(S, np.ones(S.shape, bool), V)[:1]
    raise KeyError(name)


def _args(xs, dtype=torch.float32):
    return [tt(x, dtype) if isinstance(x, np.ndarray) else x for x in xs]


CASES = [
    "cross_window",
    "cross_short_keys",
    "lse3",
    "bias_scale",
    "relpos",
    "dilated",
    "kvlen",
    "kvlen_empty",
    "gqa_alibi_softcap",
    "twopass_sigmoid",
    "anticausal",
    "two_values",
    "bshd",
    "exp2",
]
GENERAL_ONLY: set[str] = set()  # (`twopass_sigmoid` fuses since its sums are streamed: docs/rewrite.md)


GENERAL_TOO = {"cross_short_keys", "lse3", "kvlen_empty", "anticausal", "twopass_sigmoid", "bshd", "relpos"}


@pytest.mark.parametrize(
    "name,path", [(n, "auto") for n in CASES] + [(n, "general") for n in CASES if n in GENERAL_TOO]
)
def test_variants_against_numpy_formulas(name, path):
    """float32 within 1e-4 of a NumPy formula; the 1-pass specs take the fused path with `auto`."""
    spec, xs, want = _case(name)
    k = kernel(spec, tile=4, path=path)
    assert k.plan.path == ("general" if path == "general" or name in GENERAL_ONLY else "fused"), str(k.plan)
    close(k(*_args(xs)), want, what=f"{name} {path}")


@pytest.mark.parametrize("name", ["cross_window", "lse3", "gqa_alibi_softcap", "bshd", "relpos"])
def test_whole_tiles_of_sixteen(name):
    """Tiles of 16 (the mask-free loop over whole tiles, no padding lanes)."""
    spec, xs, want = _case(name, seed=1)
    k = kernel(spec, tile=16)
    assert k.plan.path == "fused"
    close(k(*_args(xs)), want, what=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["cross_window", "lse3", "gqa_alibi_softcap", "kvlen"])
def test_low_precision_within_the_documented_tolerance(name, dtype):
    """float16 1e-2, bfloat16 5e-2 (tests/triton_cases.py), against the formula on the rounded inputs."""
    spec, xs, _ = _case(name, seed=2)
    xr = [rounded(x, dtype) if isinstance(x, np.ndarray) else x for x in xs]
    # recompute the reference on the rounded inputs
    rn_spec, _, want = _case_with(name, xr)
    assert rn_spec == spec
    close(kernel(spec, tile=4)(*_args(xs, dtype)), want, dtype, what=f"{name} {dtype}")


def _case_with(name, xs):
    """``_case(name)`` with the given inputs (the references are functions of them only)."""
    if name == "cross_window":
        Q, K, V = xs
        p, m = grid(Q.shape[2], K.shape[2])
        P, M = Q.shape[2], K.shape[2]
        mask = (m <= p + M - P) & (m > p + M - P - 6)
        return CROSS_WINDOW, xs, np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    if name == "lse3":
        Q, K, V = xs
        p, m = grid(Q.shape[2], K.shape[2])
        return LSE3, xs, np_attention(scores(Q, K) / np.sqrt(5), m <= p, V)
    if name == "gqa_alibi_softcap":
        Q, K, V, slope = xs
        p, m = grid(Q.shape[2], K.shape[2])
        hh = np.arange(Q.shape[1]) // 2
        S = scores(Q, K[:, hh]) / np.sqrt(5)
        S = 20 * np.tanh(S / 20) + slope[None, :, None, None] * (m - p)
        return GQA_ALIBI_SOFTCAP, xs, np_attention(S, m <= p, V[:, hh])[:1]
    if name == "kvlen":
        Q, K, V, n = xs
        P, M = Q.shape[2], K.shape[2]
        p, m = grid(P, M)
        mask = (m < n) & (m <= p + n - P)
        return KVLEN, xs, np_attention(scores(Q, K) / np.sqrt(5), mask, V)[:1]
    raise KeyError(name)


# ---- ragged lengths, head dims that are not powers of two ------------------------------------------------


@pytest.mark.parametrize("L", [1, 2, 17, 65])
def test_causal_ragged_lengths(L):
    rn = rng_for(L)
    Q, K, V = rn(1, 1, L, 8), rn(1, 1, L, 8), rn(1, 1, L, 4)
    p, m = grid(L, L)
    want = np_attention(scores(Q, K) / np.sqrt(8), m <= p, V)[0]
    for tile in (16, 3) if L < 65 else (16,):
        k = kernel(CAUSAL, tile=tile)
        assert k.plan.path == "fused"
        close(k(tt(Q), tt(K), tt(V)), want, what=f"L={L} tile={tile}")


@pytest.mark.parametrize("E,F", [(40, 40), (72, 24), (96, 96)])
def test_head_dims_padded(E, F):
    rn = rng_for(E)
    Q, K, V = rn(1, 1, 17, E), rn(1, 1, 17, E), rn(1, 1, 17, F)
    p, m = grid(17, 17)
    want = np_attention(scores(Q, K) / np.sqrt(E), m <= p, V)[0]
    k = kernel(CAUSAL, tile=16)
    shape = k.module.tile_shape(dict(b=1, h=1, p=17, m=17, e=E, f=F, m1=2, m0=16))
    assert shape["PAD_E"] == max(16, 1 << (E - 1).bit_length()) and shape["FULL_E"] is False
    close(k(tt(Q), tt(K), tt(V)), want, what=f"E={E}")
    Qh, Kh, Vh = (rounded(x, torch.float16) for x in (Q, K, V))
    want16 = np_attention(scores(Qh, Kh) / np.sqrt(E), m <= p, Vh)[0]
    close(k(tt(Q, torch.float16), tt(K, torch.float16), tt(V, torch.float16)), want16, torch.float16)


# ---- layouts ---------------------------------------------------------------------------------------------

P_, E_, F_ = 13, 6, 5
LAYOUTS = {
    "K stride 0 along m": lambda g: (
        torch.randn(2, 3, P_, E_, generator=g),
        torch.randn(2, 3, 1, E_, generator=g).expand(2, 3, P_, E_),
        torch.randn(2, 3, P_, F_, generator=g),
    ),
    "V stride 0 along f": lambda g: (
        torch.randn(2, 3, P_, E_, generator=g),
        torch.randn(2, 3, P_, E_, generator=g),
        torch.randn(2, 3, P_, 1, generator=g).expand(2, 3, P_, F_),
    ),
    "Q one element": lambda g: (
        torch.randn(1, generator=g).expand(2, 3, P_, E_),
        torch.randn(2, 3, P_, E_, generator=g),
        torch.randn(2, 3, P_, F_, generator=g),
    ),
    "permuted": lambda g: (
        torch.randn(2, P_, 3, E_, generator=g).permute(0, 2, 1, 3),
        torch.randn(P_, E_, 2, 3, generator=g).permute(2, 3, 0, 1),
        torch.randn(F_, P_, 3, 2, generator=g).permute(3, 2, 1, 0),
    ),
    "offset storage": lambda g: tuple(
        torch.randn(2 * 3 * P_ * d + 7, generator=g)[7:].view(2, 3, P_, d) for d in (E_, E_, F_)
    ),
}


@pytest.mark.parametrize(
    "layout,path",
    [(x, "auto") for x in LAYOUTS] + [("K stride 0 along m", "general"), ("permuted", "general")],
)
def test_layouts(layout, path):
    g = torch.Generator().manual_seed(5)
    Q, K, V = LAYOUTS[layout](g)
    p, m = grid(P_, P_)
    want = np_attention(
        scores(*(x.double().numpy() for x in (Q, K))) / np.sqrt(E_), m <= p, V.double().numpy()
    )
    k = kernel(CAUSAL, tile=4, path=path)
    close(k(Q.to(DEVICE), K.to(DEVICE), V.to(DEVICE)), want[:1], what=layout)


# ---- tiles outside every window are never read -----------------------------------------------------------


@pytest.mark.parametrize("tile", [4, 8, 16])
def test_tiles_outside_every_window_are_skipped(tile):
    """16 queries against 64 keys, a window of 6 at the end: keys 0..31 are in no window and lie in whole
    tiles; NaN keys and infinite values there cannot reach the result if the loop skips those tiles."""
    rn = rng_for(tile)
    P, M = 16, 64
    Q, K, V = rn(1, 1, P, 5), rn(1, 1, M, 5), rn(1, 1, M, 3)
    p, m = grid(P, M)
    want = np_attention(scores(Q, K) / np.sqrt(5), (m <= p + M - P) & (m > p + M - P - 6), V)[:1]
    K[:, :, :32] = np.nan
    V[:, :, :32] = np.inf
    k = kernel(CROSS_WINDOW, tile=tile)
    assert "lo = " in k.source and "before and after" in k.plan.detail
    close(k(tt(Q), tt(K), tt(V)), want)


# ---- sizes are runtime arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cross_window", "kvlen", "gqa_alibi_softcap"])
def test_new_lengths_keep_the_source_and_the_compile_time_constants(name):
    """Other P and M: the same source and module, and tile_shape (the constexprs) does not change."""
    from einattn.lowering import triton_backend

    spec, _, _ = _case(name)
    k = kernel(spec, tile=4)
    source, module, loaded = k.source, k.module, dict(triton_backend._MODULES)
    shapes = set()
    for P, M in ((3, 16), (17, 5), (1, 40)):
        rn = rng_for(P * M)
        H, G = (4, 2) if name == "gqa_alibi_softcap" else (2, 2)
        if name == "gqa_alibi_softcap":
            M = P  # self-attention
        Q, K, V = rn(1, H, P, 5), rn(1, G, M, 5), rn(1, G, M, 3)
        extra = {"kvlen": (M - 1,), "gqa_alibi_softcap": (2.0 ** -np.arange(1, H + 1),)}.get(name, ())
        xs = (Q, K, V, *extra)
        _, _, want = _case_with(name, xs)
        close(k(*_args(xs)), want, what=f"{name} P={P} M={M}")
        sizes = dict(b=1, h=H, g=G, p=P, m=M, e=5, f=3, m1=-(-M // 4), m0=4)
        shapes.add(tuple(sorted(k.module.tile_shape(sizes).items())))
    assert k.source == source and k.module is module and k.generations == 1
    assert loaded == triton_backend._MODULES
    assert len(shapes) == 1, shapes


# ---- params overridden ----------------------------------------------------------------------------------


@pytest.mark.parametrize("W", [0, 7, 2**63])
def test_window_param_overrides(W):
    rn = rng_for(abs(W) % 97)
    P = 11
    Q, K, V = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3)
    p, m = grid(P, P)
    want = np_attention(scores(Q, K) / np.sqrt(5), (p - min(W, 10**6) < m) & (m <= p), V)[:1]
    for path in ("auto", "general") if W == 7 else ("auto",):
        k = kernel(EXAMPLES / "sliding_window.ein", params={"W": W}, tile=4, path=path)
        close(k(tt(Q), tt(K), tt(V)), want, what=f"W={W} {path}")


def test_gqa_and_softcap_param_overrides():
    """R = 3 (three query heads per group) and C = 0.5 (a tight cap), on the fused path."""
    rn = rng_for(11)
    P, H, G = 9, 6, 2
    Q, K, V = rn(1, H, P, 5), rn(1, G, P, 5), rn(1, G, P, 3)
    slope = np.linspace(0.1, 0.6, H)
    p, m = grid(P, P)
    hh = np.arange(H) // 3
    S = scores(Q, K[:, hh]) / np.sqrt(5)
    S = 0.5 * np.tanh(S / 0.5) + slope[None, :, None, None] * (m - p)
    want = np_attention(S, m <= p, V[:, hh])[:1]
    k = kernel(GQA_ALIBI_SOFTCAP, params={"R": 3, "C": 0.5}, tile=4)
    assert k.plan.path == "fused"
    close(k(tt(Q), tt(K), tt(V), tt(slope)), want)


# ---- the standalone module, imported in a fresh process --------------------------------------------------

STANDALONE_SCRIPT = r"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import window_mod, lse_mod, sig_mod
assert "einattn" not in sys.modules, "the standalone module imported einattn"
x = np.load(os.path.join(sys.argv[1], "inputs.npz"))
t = lambda a: torch.tensor(a, dtype=torch.float32)
out = {}
out["window"] = window_mod.my_window_spec(Q=t(x["Q1"]), K=t(x["K1"]), V=t(x["V1"])).double().numpy()
a, l, g = lse_mod.ein_torch(t(x["Q2"]), t(x["K2"]), t(x["V2"]))
out["lse_a"], out["lse_l"], out["lse_g"] = a.double().numpy(), l.double().numpy(), g.double().numpy()
out["sig"] = sig_mod.sigmoid(t(x["Q2"]), t(x["K2"]), t(x["V2"]), 0.25).double().numpy()
try:
    window_mod.my_window_spec(t(x["Q1"]), t(x["K1"])[:, :, :, :3], t(x["V1"]))
    out["err"] = np.array(0)
except ValueError:
    out["err"] = np.array(1)
np.savez(os.path.join(sys.argv[1], "out.npz"), **out)
"""


def test_standalone_modules_in_a_fresh_process(tmp_path):
    """`einattn compile --backend triton` with --param and --tile, a file stem with a dash and a space, a
    stem that is a module name (`torch.ein`: `ein_torch`), three outputs and the general path; imported
    without einattn on the path, called by keyword and positionally, against NumPy."""
    (tmp_path / "my-window spec.ein").write_text(CROSS_WINDOW)
    (tmp_path / "torch.ein").write_text(LSE3)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    jobs = [
        ("my-window spec.ein", "window_mod.py", ["--param", "W=3", "--tile", "16"]),
        ("torch.ein", "lse_mod.py", ["--tile", "4"]),
        (str(EXAMPLES / "sigmoid.ein"), "sig_mod.py", []),
    ]
    for src, out, extra in jobs:
        r = subprocess.run(
            [sys.executable, "-m", "einattn", "compile", src, "--backend", "triton", "-o", out, *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
    rn = rng_for(21)
    x = dict(Q1=rn(1, 2, 7, 5), K1=rn(1, 2, 29, 5), V1=rn(1, 2, 29, 3))
    x |= dict(Q2=rn(1, 2, 11, 5), K2=rn(1, 2, 11, 5), V2=rn(1, 2, 11, 3))
    x = {n: rounded(a, torch.float32) for n, a in x.items()}
    np.savez(tmp_path / "inputs.npz", **x)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    p, m = grid(7, 29)
    want = np_attention(scores(x["Q1"], x["K1"]) / np.sqrt(5), (m <= p + 22) & (m > p + 19), x["V1"])[0]
    np.testing.assert_allclose(got["window"], want, rtol=1e-4, atol=1e-5)
    p, m = grid(11, 11)
    S = scores(x["Q2"], x["K2"]) / np.sqrt(5)
    for key, w in zip(("lse_a", "lse_l", "lse_g"), np_attention(S, m <= p, x["V2"])):
        np.testing.assert_allclose(got[key], w, rtol=1e-4, atol=1e-5)
    sig = np.einsum("bhpm,bhmf->bhpf", 1 / (1 + np.exp(-(S + 0.25))), x["V2"])
    np.testing.assert_allclose(got["sig"], sig, rtol=1e-4, atol=1e-5)
    assert int(got["err"]) == 1  # a size mismatch is the module's ValueError


# ---- the custom op and torch.compile ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lse3", "kvlen", "iterative_output"])
def test_custom_op_passes_opcheck(name):
    """torch.library.opcheck: schema, fake implementation (shapes, also with dynamic shapes), autograd
    registration; includes an output with an iterative rank (extent + 1) and a 0-d output."""
    from einattn.lowering import triton_backend

    g = torch.Generator().manual_seed(3)
    if name == "iterative_output":
        spec = (
            "input x[i]\nparam N = 3\noutput R, F\nR[0, i] = x[i]\nR[n + 1, i] = R[n, i] * 2\nF = R[N, i]\n"
        )
        xs = [torch.randn(4, generator=g, dtype=torch.float64)]
    elif name == "scalar_output":
        spec, xs = "input X[i]\noutput S\nS = X[i] :: max(i)\n", [torch.randn(5, generator=g)]
    elif name == "lse3":
        spec = LSE3
        xs = [torch.randn(1, 2, 5, 3, generator=g), torch.randn(1, 2, 6, 3, generator=g)]
        xs.append(torch.randn(1, 2, 6, 2, generator=g))
    else:
        spec = KVLEN
        xs = [torch.randn(1, 2, 3, 3, generator=g), torch.randn(1, 2, 6, 3, generator=g)]
        xs += [torch.randn(1, 2, 6, 2, generator=g), torch.tensor(4)]
    k = kernel(spec, tile=4)
    op = triton_backend._OPS[k.key + ("_interpreted" if triton_backend.interpreting() else "")]
    xs = [x.to(DEVICE).requires_grad_(x.is_floating_point()) for x in xs]
    result = torch.library.opcheck(op, (xs,))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_torch_compile_dynamic_shapes_and_backward():
    """fullgraph, dynamic=True: three outputs over three lengths; then a loss and its gradient through a
    compiled function (the custom op's backward) equal to plain torch's."""
    torch._dynamo.reset()
    k = kernel(LSE3, tile=16)
    f = torch.compile(
        lambda q, kk, v: tuple(o * 2 for o in k(q, kk, v)), backend="aot_eager", fullgraph=True, dynamic=True
    )
    for L in (5, 9, 17):
        rn = rng_for(L)
        Q, K, V = rn(1, 2, L, 5), rn(1, 2, L, 5), rn(1, 2, L, 3)
        p, m = grid(L, L)
        want = tuple(2 * w for w in np_attention(scores(Q, K) / np.sqrt(5), m <= p, V))
        got = f(tt(Q), tt(K), tt(V))
        close(got, want, what=f"L={L}")
    kb = kernel(BIAS_SCALE, tile=16)

    def loss(Q, K, V, B, s):
        return kb(Q, K, V, B, s).square().sum()

    def plain(Q, K, V, B, s):
        return (torch.softmax(Q @ K.transpose(-1, -2) * s + B, -1) @ V).square().sum()

    cf = torch.compile(loss, backend="aot_eager", fullgraph=True)
    g = torch.Generator().manual_seed(4)
    shapes = ((1, 2, 7, 5), (1, 2, 6, 5), (1, 2, 6, 3), (2, 7, 6))
    leaves = [
        torch.randn(s, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(True) for s in shapes
    ]
    s = torch.tensor(0.3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    got = torch.autograd.grad(cf(*leaves, s), (*leaves, s))
    want = torch.autograd.grad(plain(*leaves, s), (*leaves, s))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch._dynamo.reset()


# ---- autograd against plain torch ------------------------------------------------------------------------


def test_gradients_equal_plain_torch():
    """GQA + ALiBi + softcap (gradients reach the shared K/V heads and the slopes), and a three-output spec
    whose loss uses only some outputs (the others' gradients are zero, not an error)."""
    g = torch.Generator().manual_seed(6)

    def leaf(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_(True)

    Q, K, V = leaf(1, 4, 9, 5), leaf(1, 2, 9, 5), leaf(1, 2, 9, 3)
    slope = torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float64, device=DEVICE, requires_grad=True)
    W = torch.randn(1, 4, 9, 3, generator=g, dtype=torch.float64).to(DEVICE)
    causal = torch.arange(9)[None, :].to(DEVICE) <= torch.arange(9)[:, None].to(DEVICE)
    dist = (torch.arange(9)[None, :] - torch.arange(9)[:, None]).to(DEVICE, torch.float64)

    def plain(Q, K, V, slope):
        hh = torch.arange(4, device=DEVICE) // 2
        S = Q @ K[:, hh].transpose(-1, -2) / 5**0.5
        S = 20 * torch.tanh(S / 20) + slope[None, :, None, None] * dist
        return torch.softmax(S.masked_fill(~causal, float("-inf")), -1) @ V[:, hh]

    k = kernel(GQA_ALIBI_SOFTCAP, tile=4)
    got = torch.autograd.grad((k(Q, K, V, slope) * W).sum(), (Q, K, V, slope))
    want = torch.autograd.grad((plain(Q, K, V, slope) * W).sum(), (Q, K, V, slope))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

    Q, K, V = leaf(1, 2, 9, 5), leaf(1, 2, 9, 5), leaf(1, 2, 9, 3)

    def plain3(Q, K, V):
        S = (Q @ K.transpose(-1, -2) / 5**0.5).masked_fill(~causal, float("-inf"))
        return torch.softmax(S, -1) @ V, torch.logsumexp(S, -1), S.max(-1).values

    k3 = kernel(LSE3, tile=4)
    for used in ((1,), (2,), (0, 1, 2)):
        got = torch.autograd.grad(
            sum(k3(Q, K, V)[i].square().sum() for i in used), (Q, K, V), allow_unused=True
        )
        want = torch.autograd.grad(
            sum(plain3(Q, K, V)[i].square().sum() for i in used), (Q, K, V), allow_unused=True
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-9, atol=1e-12)


# ---- the resource check ----------------------------------------------------------------------------------


def test_no_fitting_configuration_is_a_clear_einerror():
    """A shared-memory limit below every configuration: an EinError naming the need and the limits, raised
    before anything is compiled; the named footprint then fits. A head dim past Triton's largest tensor:
    an EinError too (not Triton's error)."""
    import re

    q = torch.randn(1, 1, 5, 8, device=DEVICE)
    k = kernel(CAUSAL, tile=16, smem_limit=1000)
    with pytest.raises(einattn.EinError, match="no launch configuration fits the device") as info:
        k(q, q, q)
    need = int(re.search(r"needs (\d+) bytes of shared memory", str(info.value)).group(1))
    assert need > 1000 and "limits 1000" in str(info.value)
    kernel(CAUSAL, tile=16, smem_limit=need)(q, q, q)
    wide = torch.randn(1, 1, 2, 70000, device=DEVICE)
    with pytest.raises(einattn.EinError, match="exceeds Triton's limit"):
        kernel(CAUSAL, tile=16)(wide, wide, wide)


# =========================================================================================================
# bugs
# =========================================================================================================

# ---- BUG: the spec's name reaches the generated module's docstring unsanitised (code injection) ----------

INJECTED = "einattn_review_s15_injected"


@pytest.mark.parametrize("passes", ["auto", "as-written"])
def test_a_spec_name_cannot_inject_code_through_a_refusal(passes):
    # BUG: `spec_name` sanitises the `Spec:` line, but the note `Not fused: <span>: <reason>` in the module
    # docstring carries the span's raw source name (triton_backend.build: `shown["note"]`, and
    # triton_module.header writes it as is): `"""` in the name closes the docstring and what follows is
    # executed when the module is imported, i.e. by einattn.compile itself (load_module). Severity: high
    # for anyone compiling specs from untrusted paths (the CLI takes the path as given).
    text = CAUSAL_1PASS.replace("output AV", "output AV, KS") + "\nKS[b, h, e] = K[b, h, m, e]\n"
    name = f'x"""+__import__("sys").modules.setdefault("{INJECTED}","")+""".ein'
    prog = einattn.parse(text, name)
    sys.modules.pop(INJECTED, None)
    try:
        k = None
        with contextlib.suppress(Exception):  # an error is fine; running the name is not
            k = kernel(prog, params={"M0": 4}, passes=passes)
        assert INJECTED not in sys.modules, "the spec's name was executed as Python code"
        assert k is not None
        doc = ast.get_docstring(ast.parse(k.source))
        assert doc is not None and doc.startswith("Triton kernels for")
    finally:
        sys.modules.pop(INJECTED, None)


# ---- BUG: names that generated code derives from the spec's collide -------------------------------------

ATTN_TPL = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


def _renamed(text, mapping):
    import re

    for a, b in mapping.items():
        text = re.sub(rf"\b{a}\b", b, text)
    return text


def _causal_inputs(P=13, seed=2):
    rn = rng_for(seed)
    Q, K, V = rn(1, 2, P, 5), rn(1, 2, P, 5), rn(1, 2, P, 3)
    p, m = grid(P, P)
    return (Q, K, V), np_attention(scores(Q, K) / np.sqrt(5), m <= p, V)[:1]


@pytest.mark.parametrize(
    "mapping",
    [{"GM": "QK_present"}, {"SD": "SN_present"}, {"SD": "SN_kernel"}, {"SD": "GM_kernel"}],
    ids=lambda d: "+".join(d.values()),
)
def test_general_path_tensor_names_with_derived_suffixes(mapping):
    # BUG: the general path names tensor X's presence mask `t_X_present` (buffer and `_present_ptr` kernel
    # argument) and its kernel `t_X_kernel`; a tensor named `X_present` / `X_kernel` beside X gives a
    # SyntaxError (duplicate argument) or shadows the kernel in the launcher (IndexError). A valid spec
    # that the general path ("every valid spec") cannot run. Severity: low-medium (legal, unusual names).
    # Source: triton_general.py (kernel params, `_launch(...)`), _name_clash covers rank names only.
    xs, want = _causal_inputs()
    k = kernel(_renamed(ATTN_TPL, mapping), path="general", passes="as-written")
    close(k(*_args(xs)), want)


@pytest.mark.parametrize(
    "mapping",
    [
        {"PRM": "RM_next"},  # silently wrong: the state's `t_RM_next` is overwritten by the tensor
        {"RD": "RM_next"},  # silently wrong
        {"LM": "BQK_ok"},  # the mask of BQK becomes a float tile
        {"SLD": "Q_1"},  # a load's register
        {"SPD": "K_stride0"},  # a kernel argument
    ],
    ids=lambda d: "+".join(d.values()),
)
def test_fused_tensor_names_with_derived_suffixes(mapping):
    # BUG: the fused kernel names derived values by suffixing the tensor's name (`t_X_ok`, `t_X_next`,
    # `t_X_<n>`, `t_X_ptr`, `t_X_stride<k>`); a tensor so named overwrites them. `RM_next` beside the
    # state `RM` gives wrong values without an error (relative error ~1 and ~16). Severity: medium (silent).
    # Source: triton_fused.py `_name_clash` (tensor names are not checked against derived names).
    xs, want = _causal_inputs()
    k = kernel(_renamed(CAUSAL_1PASS, mapping), params={"M0": 4})
    close(k(*_args(xs)), want)


def test_the_rewrite_makes_a_clashing_name_from_a_natural_one():
    # BUG: a plain 3-pass spec whose denominator is called `SN_ok`: the rewrite derives `SLN_ok` (the tile
    # sum of `SLN`), which is the fused kernel's name for the mask of `SLN`; the interpreter fails with
    # "invalid operands of type float32 and float32" (a float used as a mask). Passes on the general path.
    xs, want = _causal_inputs()
    k = kernel(_renamed(ATTN_TPL, {"SD": "SN_ok"}), tile=4)
    close(k(*_args(xs)), want)


@pytest.mark.parametrize("rank", ["whole_hi", "tl", "_max"])
def test_fused_iterative_rank_names(rank):
    # BUG: the iterative rank is the fused loop's variable (`for m1 in range(...)`); named `whole_hi` it
    # overwrites the bound of the next loop (silently wrong, error ~0.2), named `tl` or `_max` it shadows
    # the Triton module or a helper (crash). INTERNAL in triton_fused.py lacks `whole_lo`/`whole_hi`/`seen`
    # and the module-level names (tl, triton, helpers). Severity: low (silent for whole_hi).
    P = 37
    xs, want = _causal_inputs(P)
    spec = _renamed(CAUSAL_1PASS, {"m1": rank, "M1": rank.upper()})
    k = kernel(spec, params={"M0": 4})
    close(k(*_args(xs)), want)


# ---- BUG: float16 computed tl.dot operands overflow on the fused path -------------------------------------

LINEAR_1PASS = """
# linear attention written 1-pass: the state adds (Q K^T) V per tile
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 4
rank   M = M1 * M0
output O
S[b, h, 0, p, f] = 0
BS[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e]
SV[b, h, m1, p, f] = BS[b, h, m1, m0, p] * V[b, h, m1 * M0 + m0, f]
S[b, h, m1 + 1, p, f] = S[b, h, m1, p, f] + SV[b, h, m1, p, f]
O[b, h, p, f] = S[b, h, M1, p, f]
"""

PRESCALED = """
# queries scaled once per row before Q K^T
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
QS[b, h, p, e] = Q[b, h, p, e] * 1000
S[b, h, m, p]  = QS[b, h, p, e] * K[b, h, m, e]
GM[b, h, p]    = S[b, h, m, p] :: max(m)
X[b, h, m, p]  = exp(S[b, h, m, p] - GM[b, h, p])
D[b, h, p]     = X[b, h, m, p]
O[b, h, p, f]  = X[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""


@pytest.mark.parametrize("which", ["linear", "prescaled"])
@pytest.mark.parametrize("path", ["auto", "general"])
def test_float16_computed_dot_operands_do_not_overflow(which, path):
    # BUG (fused path only): a tile the kernel computes in float32 and feeds to tl.dot is cast to the
    # inputs' dtype (`.to(t_V.dtype)`, triton_fused.py); in float16 a value past 65504 becomes inf: the
    # 1-pass linear attention's scores (1.6e5 here, the output only ~300) and a pre-scaled Q (~1e5) give
    # NaN everywhere. The reference, the torch backend (float16 in, float32 accumulation) and the general
    # path are finite and within 1e-2. docs/backends.md mentions rounding the probability tile, not
    # overflow of arbitrary values. Severity: medium (silent NaN, float16 only; bf16 has the range).
    g = np.random.default_rng(0)
    if which == "linear":
        Q = np.full((1, 1, 3, 4), 200.0)
        K = 200.0 * np.sign(g.standard_normal((1, 1, 8, 4)))
        V = g.standard_normal((1, 1, 8, 2)) * 1e-3
        want = np.einsum("bhpm,bhmf->bhpf", scores(Q, K), rounded(V, torch.float16))
        spec = LINEAR_1PASS
    else:
        Q = g.uniform(70, 100, (1, 1, 3, 4))
        K = g.standard_normal((1, 1, 8, 4)) * 1e-4
        V = g.standard_normal((1, 1, 8, 2))
        Qr, Kr, Vr = (rounded(x, torch.float16) for x in (Q, K, V))
        S = scores(Qr * 1000, Kr)
        want = np_attention(S, np.ones(S.shape, bool), Vr)[0]
        spec = PRESCALED
    k = kernel(spec, path=path)
    assert k.plan.path == ("fused" if path == "auto" else "general")
    got = k(*(tt(x, torch.float16) for x in (Q, K, V)))
    close(got, (want,), torch.float16)


# ---- BUG (low): messages and the module header name the internal `t_X` ------------------------------------


def test_refusals_and_the_header_name_the_specs_tensors():
    # BUG (low): generated code renames tensor X to t_X (triton_backend.build), and the refusal reasons
    # are computed on the renamed program: `kernel.plan.reason` and the `path="fused"` EinError say
    # "`t_KS` iterates over the whole rank `m`" for the spec's `KS`; the module header's "Call it as:"
    # line reads `t_AV = causal_1pass(t_Q, t_K, t_V)` (tests/golden/triton/causal_1pass.py too) where the
    # launcher is `causal_1pass(Q, K, V)`. Sources: triton_backend.build (`fused_module(safe, ...)`),
    # triton_module.header(prog=safe program).
    text = CAUSAL_1PASS.replace("output AV", "output AV, KS") + "\nKS[b, h, e] = K[b, h, m, e]\n"
    with pytest.raises(einattn.EinError) as info:
        kernel(text, path="fused")
    assert "`KS`" in str(info.value) and "t_KS" not in str(info.value)
    k = kernel(text)
    assert "t_KS" not in k.plan.reason
    src = kernel(EXAMPLES / "causal_1pass.ein").source
    assert "AV = causal_1pass(Q, K, V)" in src.split('"""')[1]
