"""Review (session 14): the torch and triton backends against the NumPy oracle and NumPy formulas.

Unusual fused specs (several outputs, states that are not softmax, GQA through `h % G`, shifted queries,
integer layouts and document ids, fully masked rows and blocks), dtypes (float16, bfloat16, float64, mixed),
options (tile, row_block, skip_tiles, passes, path), torch layouts and grad modes, kernels called with new
sizes, torch.compile, and split-K. Every test compares values; sizes stay tiny for the Triton interpreter.

Bugs found (the failing tests are left as regression tests):

* torch (at commit 668d20a): a contraction whose factor is a *division* that is zero at points the filter
  removes (`V[m, f] / (p - m + 1) where m <= p`, `X[m] / (m - p) where m != p`, `Y[m] / X[m, p] where
  m <= p` with X = 0 there) gives NaN where the reference (which never forms the absent products) is
  finite, for finite inputs, and its gradient is NaN. `torch_codegen.contraction` splits `a / b` into the
  factors `a` and `1 / b` and asks `bounded(b)` instead of whether `1 / b` is bounded, so `1 / b` is
  neither zeroed where the filter is false nor given a safe argument: `inf * 0` in the einsum. (Fixed by
  f8f64e8 during this review: the seven tests below failed before it and pass with it.)
* triton, fused path: a per-tile value that is infinite only at keys the filter removes (`BW = V / N`
  with N = 0 at padded keys, finite inputs) makes every row NaN (`0 * inf` inside the `P V` tl.dot); the
  torch backend and the general path give the reference.
"""

from __future__ import annotations

import os

if "TRITON_INTERPRET" not in os.environ:
    import torch as _t

    if not _t.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import warnings

import numpy as np
import pytest
import torch

import einattn

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# documented tolerances (docs/testing.md), relative to 1 + |reference|
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


# ---- helpers ---------------------------------------------------------------------------------------------


def _prog(text: str, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = einattn.parse(text)
        return prog.with_params(params) if params else prog


def _compile(prog, backend, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(prog, backend=backend, **options)


def _round(prog, x, dtype):
    """The inputs as the kernel sees them (rounded to ``dtype``), in float64 for the oracle."""
    return {
        n: (
            a
            if prog.tensor(n).dtype == "int"
            else torch.as_tensor(a, dtype=torch.float64).to(dtype).double().numpy()
        )
        for n, a in x.items()
    }


def _torch_args(prog, x, dtype, int_dtype=torch.int64, grad=False):
    out = {}
    for n, a in x.items():
        if prog.tensor(n).dtype == "int":
            out[n] = torch.as_tensor(np.asarray(a), dtype=int_dtype, device=DEVICE)
        else:
            t = torch.as_tensor(np.asarray(a, dtype=np.float64), device=DEVICE).to(dtype)
            out[n] = t.requires_grad_(grad) if grad else t
    return out


def _tuple(o):
    return o if isinstance(o, tuple) else (o,)


def _oracle(prog, x):
    return _tuple(_compile(prog, "numpy")(**x))


def _close(got, want, tol, what=""):
    got, want = _tuple(got), _tuple(want)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.detach().double().cpu().numpy() if torch.is_tensor(g) else np.asarray(g, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape}, expected {w.shape}"
        fin = np.isfinite(w)
        same = bool(np.array_equal(np.isfinite(g), fin))
        assert same, (
            f"{what} output {i}: non-finite values differ: got {g[np.isfinite(g) != fin][:6]}, "
            f"expected {w[np.isfinite(g) != fin][:6]}"
        )
        if fin.any():
            e = float(np.max(np.abs(g[fin] - w[fin]) / (1 + np.abs(w[fin]))))
            ok = e <= tol
            assert ok, f"{what} output {i}: error {e:.3g} > {tol:g}"


def _check(prog, x, backend, dtype=torch.float32, want=None, int_dtype=torch.int64, **options):
    """Run ``backend`` on ``x`` rounded to ``dtype`` and compare with the oracle (or ``want``)."""
    xr = _round(prog, x, dtype)
    if want is None:
        want = _oracle(prog, xr)
    k = _compile(prog, backend, **options)
    got = _tuple(k(**_torch_args(prog, xr, dtype, int_dtype)))
    for g in got:
        assert g.dtype == dtype, f"output dtype {g.dtype}, expected {dtype}"
    _close(got, want, TOL[dtype], f"{backend} {options}")
    return k


def _randn(rng, *shape):
    return rng.standard_normal(shape)


def np_attention(S, mask, V):
    """Softmax over the last axis of S (keys) where ``mask``; (output, log-sum-exp, row max). A row without
    a key is absent: 0 in every output, as the language delivers absent points."""
    S = np.where(mask, S, -np.inf)
    row = mask.any(-1)
    gm = np.where(row, S.max(-1), 0.0)
    w = np.where(mask, np.exp(S - gm[..., None]), 0.0)
    sd = w.sum(-1)
    safe = np.where(row, sd, 1.0)
    out = np.where(row[..., None], np.einsum("...pm,...mf->...pf", w, V) / safe[..., None], 0.0)
    lse = np.where(row, gm + np.log(safe), 0.0)
    return out, lse, gm


# ---- bugs: divisions that are zero where the filter removes the point (torch) ------------------------------

HARMONIC = """
# a causal average weighted by 1 / distance: the weight divides by zero only where m = p + 1 (filtered out)
input  V[m, f]
rank   P = M
output O
O[p, f] = V[m, f] / (p - m + 1)  where m <= p
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_division_by_a_distance_that_is_zero_only_at_filtered_points(backend, dtype):
    """Bug (torch): NaN in every row but the last. The reference never forms `V[p + 1] / 0`."""
    prog = _prog(HARMONIC)
    V = np.arange(10.0).reshape(5, 2) + 1
    p, m = np.arange(5)[:, None], np.arange(5)[None, :]
    W = np.where(m <= p, 1.0 / np.maximum(p - m + 1, 1), 0.0)
    want = W @ V
    _close(_oracle(prog, {"V": V}), want, 1e-12, "numpy")
    _check(prog, {"V": V}, backend, dtype, want=(want,))


def test_division_by_a_distance_gradient_is_finite():
    """Bug (torch): the gradient of the same spec is NaN (docs/backends.md: "Masked positions give exactly 0
    gradient, never NaN: ... denominators are replaced at absent points")."""
    prog = _prog(HARMONIC)
    V = torch.arange(10.0, dtype=torch.float64).reshape(5, 2).add(1).requires_grad_(True)
    out = _compile(prog, "torch")(V=V)
    out.sum().backward()
    p, m = np.arange(5)[:, None], np.arange(5)[None, :]
    W = np.where(m <= p, 1.0 / np.maximum(p - m + 1, 1), 0.0)
    np.testing.assert_allclose(V.grad.numpy(), np.broadcast_to(W.sum(0)[:, None], (5, 2)), rtol=1e-12)


HILBERT = """
# a discrete Hilbert-like kernel: 1 / (m - p) off the diagonal
input  X[m]
rank   P = M
output O
O[p] = X[m] / (m - p)  where m != p
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_division_by_zero_on_the_removed_diagonal(backend):
    """Bug (torch): every row NaN."""
    prog = _prog(HILBERT)
    X = np.array([1.0, 2.0, 3.0, 4.0, -2.0])
    p, m = np.arange(5)[:, None], np.arange(5)[None, :]
    want = np.where(m != p, X[None, :] / np.where(m != p, m - p, 1), 0.0).sum(1)
    _check(prog, {"X": X}, backend, torch.float64, want=(want,))


DIV_INPUT = """
input  X[m, p], Y[m]
output O
O[p] = Y[m] / X[m, p]  where m <= p
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_division_by_an_input_that_is_zero_only_at_filtered_points(backend):
    """Bug (torch): finite inputs, X zero only above the diagonal (where the filter removes the point): the
    rows that have such a point are NaN. docs/backends.md, torch "Exactness": "With finite inputs this does
    not arise"."""
    prog = _prog(DIV_INPUT)
    X = np.full((4, 4), 2.0)
    X[np.triu_indices(4, 1)[1], np.triu_indices(4, 1)[0]] = 0.0  # X[m, p] = 0 where m > p
    Y = np.array([1.0, 2.0, 3.0, 4.0])
    m, p = np.arange(4)[:, None], np.arange(4)[None, :]
    want = np.where(m <= p, Y[:, None] / np.where(m <= p, X, 1.0), 0.0).sum(0)
    _check(prog, {"X": X, "Y": Y}, backend, torch.float64, want=(want,))


DIV_TENSOR_OTHER = """
# a divisor reading a tensor, zero only where another factor (not this statement's filter) is absent
input  X[m, p], V[m], T[m]
rank   P = M
output S
A[m, p] = X[m, p] where m < p
S[p]    = A[m, p] * V[m] / (T[m] - T[p])
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_division_by_a_tensor_that_is_zero_only_where_another_factor_is_absent(backend):
    """Session 15 (torch): `T[m] - T[p]` is 0 on the diagonal, which `A`'s filter removes: NaN in every row
    with a diagonal point (all but the first). The divisor is now guarded by the other factors' masks too,
    and its gradient is finite."""
    prog = _prog(DIV_TENSOR_OTHER)
    rng = np.random.default_rng(15)
    X, V, T = rng.standard_normal((5, 5)), rng.standard_normal(5), np.arange(5.0) ** 2
    m, p = np.arange(5)[:, None], np.arange(5)[None, :]
    dist = np.where(m < p, T[:, None] - T[None, :], 1.0)
    want = np.where(m < p, X * V[:, None] / dist, 0.0).sum(0)
    _close(_oracle(prog, {"X": X, "V": V, "T": T}), want, 1e-12, "numpy")
    _check(prog, {"X": X, "V": V, "T": T}, backend, torch.float64, want=(want,))
    if backend == "torch":
        tx = torch.tensor(X, requires_grad=True)
        tt = torch.tensor(T, requires_grad=True)
        _compile(prog, "torch")(X=tx, V=torch.tensor(V), T=tt).sum().backward()
        np.testing.assert_allclose(tx.grad.numpy(), np.where(m < p, V[:, None] / dist, 0.0), rtol=1e-12)
        assert torch.isfinite(tt.grad).all()


DISTANCE_ATTENTION = """
# softmax attention whose weights are divided by the distance (+1) before the values are summed
input  Q[p, e], K[m, e], V[m, f]
output O
QK[m, p] = Q[p, e] * K[m, e]  where m <= p
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
O[p, f]  = SN[m, p] * V[m, f] / (p - m + 1) / SD[p]
"""


@pytest.mark.parametrize(
    "backend,options",
    [
        ("torch", dict(tile=4)),
        ("torch", dict(passes="as-written")),
        ("triton", dict(tile=4)),
        ("triton", dict(passes="as-written")),
    ],
)
def test_distance_weighted_attention(backend, options):
    """Bug (torch), in an attention-shaped spec, both as written and rewritten to 1 pass."""
    prog = _prog(DISTANCE_ATTENTION)
    rng = np.random.default_rng(0)
    Q, K, V = _randn(rng, 9, 3), _randn(rng, 9, 3), _randn(rng, 9, 2)
    p, m = np.arange(9)[:, None], np.arange(9)[None, :]
    mask = m <= p
    S = np.where(mask, Q @ K.T, -np.inf)
    w = np.where(mask, np.exp(S - S.max(1, keepdims=True)), 0.0)
    want = (w / np.maximum(p - m + 1, 1)) @ V / w.sum(1, keepdims=True)
    _check(prog, dict(Q=Q, K=K, V=V), backend, torch.float64, want=(want,), **options)


# ---- the fused Triton path on unusual specs ---------------------------------------------------------------

MULTI_OUT = """
# hand-written 1-pass attention returning the output, the log-sum-exp and the row max (read at the last step)
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
param  M0 = 4
rank   M = M1 * M0
output AV, L, MX
BK[b, h, m1, m0, e] = K[b, h, m1 * M0 + m0, e]
BV[b, h, m1, m0, f] = V[b, h, m1 * M0 + m0, f]
RM[b, h, 0, p]      = -inf
RD[b, h, 0, p]      = 0
RNV[b, h, f, 0, p]  = 0
BQK[b, h, m1, m0, p]    = Q[b, h, p, e] * BK[b, h, m1, m0, e] * rsqrt(E)
LM[b, h, m1, p]         = BQK[b, h, m1, m0, p] :: max(m0)
RM[b, h, m1 + 1, p]     = max(RM[b, h, m1, p], LM[b, h, m1, p])
SLN[b, h, m1, m0, p]    = exp(BQK[b, h, m1, m0, p] - RM[b, h, m1 + 1, p])
SLD[b, h, m1, p]        = SLN[b, h, m1, m0, p]
SLNV[b, h, f, m1, p]    = SLN[b, h, m1, m0, p] * BV[b, h, m1, m0, f]
PRM[b, h, m1, p]        = exp(RM[b, h, m1, p] - RM[b, h, m1 + 1, p])
RD[b, h, m1 + 1, p]     = SLD[b, h, m1, p] + RD[b, h, m1, p] * PRM[b, h, m1, p]
RNV[b, h, f, m1 + 1, p] = SLNV[b, h, f, m1, p] + RNV[b, h, f, m1, p] * PRM[b, h, m1, p]
AV[b, h, p, f] = RNV[b, h, f, M1, p] / RD[b, h, M1, p]
L[b, h, p]     = RM[b, h, M1, p] + log(RD[b, h, M1, p])
MX[b, h, p]    = RM[b, h, M1, p]
"""


@pytest.mark.parametrize("m0", [1, 3, 4, 16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_three_outputs_read_at_the_last_step(backend, m0):
    """O, LSE and row max of a hand-written 1-pass spec; tiles that do not divide M = 11, a tile of one key,
    a tile larger than M; 18 rows (two row blocks of the interpreter's 16); E = 5, F = 3 padded."""
    prog = _prog(MULTI_OUT, {"M0": m0})
    rng = np.random.default_rng(m0)
    x = dict(Q=_randn(rng, 1, 2, 18, 5), K=_randn(rng, 1, 2, 11, 5), V=_randn(rng, 1, 2, 11, 3))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(5)
    want = np_attention(S, np.ones(S.shape, bool), x["V"])
    _close(_oracle(prog, x), want, 1e-12, "numpy")
    k = _check(prog, x, backend, want=want)
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason
    if m0 == 3:
        _check(prog, x, backend, torch.float64, want=want)


LSE_OFFSET = """
# natural spec, three outputs, a filter with an offset: every row sees its own key and the next one
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV, L, GM
QK[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + 1
GM[b, h, p]     = QK[b, h, m, p] :: max(m)
SN[b, h, m, p]  = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]     = SN[b, h, m, p]
SNV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f]
AV[b, h, p, f]  = SNV[b, h, p, f] / SD[b, h, p]
L[b, h, p]      = GM[b, h, p] + log(SD[b, h, p])
"""


@pytest.mark.parametrize(
    "backend,options",
    [
        ("triton", dict(tile=4)),
        ("triton", dict(tile=3, skip_tiles=False)),
        ("triton", dict(passes="as-written")),
        ("torch", dict(tile=4)),
        ("torch", dict(tile=3, row_block=5)),
        ("torch", dict(passes="as-written")),
    ],
)
def test_rewritten_lse_with_a_row_max_output(backend, options):
    prog = _prog(LSE_OFFSET)
    rng = np.random.default_rng(1)
    x = dict(Q=_randn(rng, 2, 1, 17, 3), K=_randn(rng, 2, 1, 13, 3), V=_randn(rng, 2, 1, 13, 2))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(3)
    mask = np.arange(13)[None, :] <= np.arange(17)[:, None] + 1
    out, lse, gm = np_attention(S, np.broadcast_to(mask, S.shape), x["V"])
    k = _check(prog, x, backend, want=(out, lse, gm), **options)
    if backend == "triton" and options.get("passes") != "as-written":
        assert k.plan.path == "fused", k.plan.reason


NOT_SOFTMAX = """
# two running states that are not softmax: a running min and a running product, causal
input  Q[b, h, p, e], K[b, h, m, e]
param  M0 = 4
rank   M = M1 * M0
output MN, PR
RN[b, h, 0, p] = inf
RP[b, h, 0, p] = 1
BQK[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e]  where m1 * M0 + m0 <= p
LN[b, h, m1, p] = BQK[b, h, m1, m0, p] :: min(m0)
LS[b, h, m1, p] = sigmoid(BQK[b, h, m1, m0, p])
RN[b, h, m1 + 1, p] = min(RN[b, h, m1, p], LN[b, h, m1, p] ?? inf)
RP[b, h, m1 + 1, p] = RP[b, h, m1, p] * (0.5 + (LS[b, h, m1, p] ?? 0) / M0)
MN[b, h, p] = RN[b, h, M1, p]
PR[b, h, p] = RP[b, h, M1, p]
"""


@pytest.mark.parametrize("m0", [2, 4])
@pytest.mark.parametrize(
    "backend,options",
    [("triton", {}), ("triton", dict(skip_tiles=False)), ("torch", {}), ("torch", dict(row_block=3))],
)
def test_running_min_and_product_states(backend, options, m0):
    """The product's step multiplies by 0.5 even for a tile with no present key (a tile after the diagonal):
    such tiles change the state and must not be skipped."""
    prog = _prog(NOT_SOFTMAX, {"M0": m0})
    rng = np.random.default_rng(2)
    P, M = 19, 17
    x = dict(Q=_randn(rng, 1, 2, P, 3), K=_randn(rng, 1, 2, M, 3))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"])
    mask = np.arange(M)[None, :] <= np.arange(P)[:, None]
    mn = np.where(mask, S, np.inf).min(-1)
    pr = np.ones(S.shape[:-1])
    for t in range(-(-M // m0)):
        cols = slice(t * m0, min((t + 1) * m0, M))
        sg = np.where(mask[:, cols], 1 / (1 + np.exp(-S[..., cols])), 0.0).sum(-1)
        pr = pr * (0.5 + sg / m0)
    _close(_oracle(prog, x), (mn, pr), 1e-12, "numpy")
    k = _check(prog, x, backend, want=(mn, pr), **options)
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason


DECAY = """
# a decaying state (a per-head gate on the previous tiles), no normalisation
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], lam[h]
param  M0 = 4
rank   M = M1 * M0
output O
S[b, h, 0, p, f] = 0
BS[b, h, m1, m0, p] = Q[b, h, p, e] * K[b, h, m1 * M0 + m0, e]
SV[b, h, m1, p, f] = BS[b, h, m1, m0, p] * V[b, h, m1 * M0 + m0, f]
S[b, h, m1 + 1, p, f] = sigmoid(lam[h]) * S[b, h, m1, p, f] + SV[b, h, m1, p, f]
O[b, h, p, f] = S[b, h, M1, p, f]
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decaying_state(backend, dtype):
    prog = _prog(DECAY)
    rng = np.random.default_rng(3)
    P, M = 6, 11
    x = dict(
        Q=_randn(rng, 1, 2, P, 3), K=_randn(rng, 1, 2, M, 3), V=_randn(rng, 1, 2, M, 5), lam=_randn(rng, 2)
    )
    g = 1 / (1 + np.exp(-x["lam"]))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"])
    tile = np.arange(M) // 4
    T = -(-M // 4)
    w = g[None, :, None, None] ** (T - 1 - tile)[None, None, None, :]  # tile t decays T - 1 - t times
    want = np.einsum("bhpm,bhmf->bhpf", S * w, x["V"])
    k = _check(prog, x, backend, dtype, want=(want,))
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason


GQA_MOD = """
# grouped heads through `h % G` (heads interleaved over the groups), each query sees one key ahead
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  G = 2
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h % G, m, e] * rsqrt(E)  where m <= p + 1
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h % G, m, f] / SD[b, h, p]
"""

GQA_DIV = """
# GQA through `h // R` with a query read one position ahead (`Q[p + 1]`: the last row reads past the end)
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output AV
QK[b, h, m, p] = Q[b, h, p + 1, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h // R, m, f] / SD[b, h, p]
"""


def _gqa_want(x, group, shift):
    Q, K, V = x["Q"], x["K"], x["V"]
    H, P, M = Q.shape[1], Q.shape[2], K.shape[2]
    Qs = np.concatenate([Q[:, :, shift:], np.zeros_like(Q[:, :, :shift])], 2)
    Kh, Vh = K[:, [group(h) for h in range(H)]], V[:, [group(h) for h in range(H)]]
    S = np.einsum("bhpe,bhme->bhpm", Qs, Kh) / np.sqrt(Q.shape[-1])
    limit = np.arange(P) + (1 if shift == 0 else 0)
    mask = np.arange(M)[None, :] <= limit[:, None]
    if shift:  # the last row's query is absent: the whole row is absent (0)
        mask = mask & (np.arange(P) + shift < P)[:, None]
    return np_attention(S, np.broadcast_to(mask, S.shape), Vh)[0]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("which", ["mod", "div"])
def test_grouped_heads_and_shifted_queries(backend, which):
    rng = np.random.default_rng(4)
    x = dict(Q=_randn(rng, 2, 5, 7, 3), K=_randn(rng, 2, 2, 9, 3), V=_randn(rng, 2, 2, 9, 2))
    if which == "mod":
        prog, want = _prog(GQA_MOD), _gqa_want(x, lambda h: h % 2, 0)
    else:  # H = 5 heads over G = 2 groups of R = 2: head 4 reads group 2, which does not exist (absent: 0)
        want = _gqa_want(
            dict(
                x, K=np.concatenate([x["K"], x["K"][:, :1]], 1), V=np.concatenate([x["V"], x["V"][:, :1]], 1)
            ),
            lambda h: h // 2,
            1,
        )
        want[:, 4] = 0.0
        prog = _prog(GQA_DIV)
    _close(_oracle(prog, x), want, 1e-12, "numpy")
    k = _check(prog, x, backend, want=(want,), tile=4)
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason


BLOCK_SPARSE = """
# a block-sparse layout per head (an int tensor read at p // BS, m // BS), rows and blocks fully masked
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], lay[h, i, j] : int
param  BS = 4
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where lay[h, p // BS, m // BS] != 0
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("int_dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize(
    "backend,options",
    [
        ("triton", dict(tile=4)),
        ("triton", dict(tile=3, path="general")),
        ("torch", dict(tile=4)),
        ("torch", dict(tile=3, row_block=2)),
    ],
)
def test_block_sparse_layout_with_empty_rows(backend, options, int_dtype):
    prog = _prog(BLOCK_SPARSE)
    rng = np.random.default_rng(5)
    P = M = 11
    lay = np.array(
        [[[1, 0, 0], [0, 0, 0], [1, 0, 1]], [[0, 1, 1], [1, 1, 0], [0, 0, 0]]]
    )  # whole blocks empty
    x = dict(Q=_randn(rng, 1, 2, P, 3), K=_randn(rng, 1, 2, M, 3), V=_randn(rng, 1, 2, M, 2), lay=lay)
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(3)
    mask = lay[:, np.arange(P)[:, None] // 4, np.arange(M)[None, :] // 4] != 0
    want = np_attention(S, mask[None], x["V"])[0]
    assert not mask[0, 4:8].any()  # rows 4..7 of head 0 see no key: 0
    _check(prog, x, backend, want=(want,), int_dtype=int_dtype, **options)


DOC_STRICT = """
# packed documents, strictly earlier keys only: the first row of every document sees nothing
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], doc[b, m] : int
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where doc[b, p] == doc[b, m] and m < p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
O[b, h, p, f]  = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_document_ids_with_first_rows_absent(backend, dtype):
    prog = _prog(DOC_STRICT)
    rng = np.random.default_rng(6)
    doc = np.array([[0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3], [5, 5, 5, 5, 5, 5, 7, 7, 9, 9, 9]])
    x = dict(Q=_randn(rng, 2, 2, 11, 3), K=_randn(rng, 2, 2, 11, 3), V=_randn(rng, 2, 2, 11, 2), doc=doc)
    xr = _round(prog, x, dtype)
    S = np.einsum("bhpe,bhme->bhpm", xr["Q"], xr["K"]) / np.sqrt(3)
    mask = (doc[:, :, None] == doc[:, None, :]) & (np.arange(11)[None, :] < np.arange(11)[:, None])
    want = np_attention(S, mask[:, None], xr["V"])[0]
    assert (want[0, :, [0, 3, 5]] == 0).all() and (want[1, :, [0, 6, 8]] == 0).all()  # first rows: 0
    k = _check(prog, x, backend, dtype, want=(want,), int_dtype=torch.int32, tile=4)
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason


# ---- skipped tiles must leave states unchanged ------------------------------------------------------------

SKIP_TPL = """
input  Q[p, e], K[m, e], G[j]
param  M0 = 4
rank   M = M1 * M0
output O
R[0, p] = {init}
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where {filt}
LS[m1, p] = BQK[m1, m0, p] :: {red}
R[m1 + 1, p] = {upd}
O[p] = R[M1, p]
"""

SKIP_UPDATES = [
    ("0", "R[m1, p] + 1"),  # a step that ignores the filtered tile: every tile counts
    ("0", "R[m1, p] * 0.5 + (LS[m1, p] ?? 0)"),  # the dead update halves the state
    ("-1", "max(R[m1, p], LS[m1, p] ?? 0)"),  # the dead update is max(R, 0)
    ("0", "R[m1, p] + G[m1] * (LS[m1, p] ?? 1)"),  # a per-tile weight on a default
    ("0", "R[m1, p] + (LS[m1, p] ?? m1)"),  # a default that depends on the step
    ("5", "min(R[m1, p], LS[m1, p]) ?? R[m1, p]"),  # identity where absent: skippable
]
SKIP_FILTERS = ["m1 * M0 + m0 <= p", "m1 * M0 + m0 >= p", "m1 * M0 + m0 + 6 <= p"]


def _skip_want(init, upd, filt, red, x):
    Q, K, G = x["Q"], x["K"], x["G"]
    P, M = Q.shape[0], K.shape[0]
    S = Q @ K.T
    p, m = np.arange(P)[:, None], np.arange(M)[None, :]
    mask = {SKIP_FILTERS[0]: m <= p, SKIP_FILTERS[1]: m >= p, SKIP_FILTERS[2]: m + 6 <= p}[filt]
    R = np.full(P, float(init))
    for t in range(-(-M // 4)):
        c = slice(4 * t, min(4 * t + 4, M))
        mk = mask[:, c]
        present = mk.any(1)
        vals = np.where(mk, S[:, c], np.nan)
        ls = np.nanmax(np.where(mk, S[:, c], -np.inf), 1) if red == "max(m0)" else np.nansum(vals, 1)
        if upd == SKIP_UPDATES[0][1]:
            R = R + 1
        elif upd == SKIP_UPDATES[1][1]:
            R = R * 0.5 + np.where(present, ls, 0)
        elif upd == SKIP_UPDATES[2][1]:
            R = np.maximum(R, np.where(present, ls, 0))
        elif upd == SKIP_UPDATES[3][1]:
            R = R + G[t] * np.where(present, ls, 1)
        elif upd == SKIP_UPDATES[4][1]:
            R = R + np.where(present, ls, t)
        else:
            R = np.where(present, np.minimum(R, np.where(present, ls, 0)), R)
    return R


@pytest.mark.parametrize("init,upd", SKIP_UPDATES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_tile_skipping_keeps_steps_that_change_the_state(backend, init, upd):
    rng = np.random.default_rng(7)
    x = dict(Q=_randn(rng, 19, 2), K=_randn(rng, 17, 2), G=_randn(rng, 5))
    for filt, red in zip(SKIP_FILTERS, ("+(m0)", "max(m0)", "+(m0)")):
        prog = _prog(SKIP_TPL.format(init=init, upd=upd, filt=filt, red=red))
        want = _skip_want(init, upd, filt, red, x)
        _close(_oracle(prog, x), want, 1e-12, f"numpy {filt} {red}")
        for options in [{}, dict(skip_tiles=False)] if backend == "triton" else [{}, dict(row_block=3)]:
            k = _check(prog, x, backend, torch.float64, want=(want,), **options)
            if backend == "triton":
                assert k.plan.path == "fused", k.plan.reason


# ---- filters: tile ranges, whole tiles, ragged tiles ------------------------------------------------------

FILTER_TPL = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output AV
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {filt}
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
AV[b, h, p, f] = SN[b, h, m, p] * V[b, h, m, f] / SD[b, h, p]
"""

FILTERS = {
    "m < 2 or m > p - 2": lambda m, p, M, P: (m < 2) | (m > p - 2),
    "m % 3 == p % 3": lambda m, p, M, P: m % 3 == p % 3,
    "m >= p": lambda m, p, M, P: m >= p,
    "m + 20 <= p": lambda m, p, M, P: m + 20 <= p,
    "m <= p + M - P": lambda m, p, M, P: m <= p + M - P,
    "3 * m >= 2 * p - 1 and m <= p + 1": lambda m, p, M, P: (3 * m >= 2 * p - 1) & (m <= p + 1),
}


@pytest.mark.parametrize("filt", list(FILTERS))
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_filters_against_numpy_attention(backend, filt):
    """Tile ranges, whole and masked tiles: 17 x 17 over tiles of 3 (skipping), 21 x 13 over tiles of 16
    (every tile computed; torch in blocks of 4 rows)."""
    prog = _prog(FILTER_TPL.format(filt=filt))
    for (P, M), tile in (((17, 17), 3), ((21, 13), 16)):
        rng = np.random.default_rng(P * M)
        x = dict(Q=_randn(rng, 1, 1, P, 3), K=_randn(rng, 1, 1, M, 3), V=_randn(rng, 1, 1, M, 2))
        S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(3)
        mask = FILTERS[filt](np.arange(M)[None, :], np.arange(P)[:, None], M, P)
        want = np_attention(S, np.broadcast_to(mask, S.shape), x["V"])[0]
        options = dict(tile=tile) if tile == 3 else dict(tile=tile, skip_tiles=False)
        if backend == "torch" and tile == 16:
            options["row_block"] = 4
        _check(prog, x, backend, want=(want,), **options)


# ---- dtypes -----------------------------------------------------------------------------------------------

EX = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "name", ["causal.ein", "gqa.ein", "variants/05_softmax_sink.ein", "variants/20_softcap_alibi_lse.ein"]
)
def test_low_and_high_precision_dtypes(name, backend, dtype):
    """float16 within 2e-2, bfloat16 within 6e-2 (docs/testing.md), float64 within 1e-9; outputs keep the
    inputs' dtype. The oracle sees the rounded inputs."""
    prog = einattn.load(os.path.join(EX, name))
    rng = np.random.default_rng(8)
    H, G = (4, 2) if "gqa" in name else (2, 2)
    x = dict(Q=_randn(rng, 1, H, 9, 5), K=_randn(rng, 1, G, 9, 5), V=_randn(rng, 1, G, 9, 3))
    if "sink" in name:
        x["sink"] = _randn(rng, H)
    if "alibi" in name:
        x["slope"] = 2.0 ** (-np.arange(1, H + 1))
    k = _check(prog, x, backend, dtype, tile=4)
    if backend == "triton":
        assert k.plan.path == "fused", k.plan.reason


@pytest.mark.parametrize("backend,path", [("torch", "auto"), ("triton", "auto"), ("triton", "general")])
def test_mixed_dtypes_promote(backend, path):
    """Q float16, K bfloat16, V float32: the result is float32 (torch.promote_types) and equals the oracle on
    the rounded inputs; a Python number with bfloat16 tensors keeps bfloat16."""
    prog = einattn.load(os.path.join(EX, "causal.ein"))
    opts = {} if backend == "torch" else {"path": path}
    rng = np.random.default_rng(9)
    x = dict(Q=_randn(rng, 1, 2, 7, 3), K=_randn(rng, 1, 2, 7, 3), V=_randn(rng, 1, 2, 7, 2))
    q = torch.tensor(x["Q"], device=DEVICE).half()
    kk = torch.tensor(x["K"], device=DEVICE).bfloat16()
    v = torch.tensor(x["V"], device=DEVICE).float()
    want = _oracle(
        prog, dict(Q=q.double().cpu().numpy(), K=kk.double().cpu().numpy(), V=v.double().cpu().numpy())
    )
    got = _compile(prog, backend, tile=4, **opts)(Q=q, K=kk, V=v)
    assert got.dtype == torch.float32
    _close(got, want, 1e-4, backend)
    sig = einattn.load(os.path.join(EX, "sigmoid.ein"))
    xs = {n: torch.tensor(a, device=DEVICE).bfloat16() for n, a in x.items()}
    got = _compile(sig, backend, **opts)(**xs, bias=0.25)
    assert got.dtype == torch.bfloat16
    want = _oracle(sig, {**{n: t.double().cpu().numpy() for n, t in xs.items()}, "bias": 0.25})
    _close(got, want, 6e-2, backend)


# ---- options give the same values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend,options",
    [
        ("torch", dict(passes="as-written")),
        ("torch", dict(passes="auto", tile=1)),
        ("torch", dict(passes="auto", tile=3, row_block=1)),
        ("torch", dict(passes="auto", tile=5, row_block=0)),
        ("torch", dict(passes="auto", tile=4, skip_tiles=False, recompute=False)),
        ("torch", dict(dtype="float64")),
        ("triton", dict(passes="as-written")),
        ("triton", dict(passes="auto", tile=1, path="fused")),
        ("triton", dict(passes="auto", tile=5, path="general")),
        ("triton", dict(passes="auto", tile=16, skip_tiles=False, dtype="float16")),
    ],
)
def test_options_equal_the_oracle_on_a_sliding_window(backend, options):
    prog = einattn.load(os.path.join(EX, "sliding_window.ein")).with_params({"W": 5})
    rng = np.random.default_rng(10)
    x = dict(Q=_randn(rng, 2, 1, 18, 3), K=_randn(rng, 2, 1, 18, 3), V=_randn(rng, 2, 1, 18, 2))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(3)
    p, m = np.arange(18)[:, None], np.arange(18)[None, :]
    want = np_attention(S, np.broadcast_to((p - 5 < m) & (m <= p), S.shape), x["V"])[0]
    for grad in (False, True):
        xr = _round(prog, x, torch.float32)
        k = _compile(prog, backend, **options)
        got = k(**_torch_args(prog, xr, torch.float32, grad=grad))
        assert got.dtype == torch.float32  # `dtype=` does not change the outputs' dtype
        _close(
            got, want, 1e-4 if options.get("dtype") != "float64" else 1e-6, f"{backend} {options} grad={grad}"
        )


# ---- torch: layouts, grad modes, new sizes, aliasing, torch.compile ---------------------------------------


def _layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    if t.dim() < 4:
        return t
    if kind == "expanded":  # stride 0 along batch: one item repeated
        return t[:1].expand(t.shape)
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "strided":
        big = torch.zeros((*t.shape[:-1], 3 * t.shape[-1]), dtype=t.dtype, device=t.device)
        big[..., ::3] = t
        return big[..., ::3]
    return t


@pytest.mark.parametrize("kind", ["expanded", "channels_last", "transposed", "strided"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_layouts_and_grad_modes(backend, kind):
    """Causal attention with ALiBi: every layout, under no_grad, inference_mode and with a gradient, equal
    to the oracle and to each other; inputs are never written to."""
    prog = einattn.load(os.path.join(EX, "alibi.ein"))
    rng = np.random.default_rng(11)
    x = dict(Q=_randn(rng, 2, 2, 9, 4), K=_randn(rng, 2, 2, 9, 4), V=_randn(rng, 2, 2, 9, 3))
    base = {n: _layout(torch.tensor(a, device=DEVICE), kind) for n, a in x.items()}
    base["slope"] = torch.tensor([0.5, 0.25], dtype=torch.float64, device=DEVICE)
    seen = {n: t.cpu().numpy().copy() for n, t in base.items()}
    want = _oracle(prog, seen)
    k = _compile(prog, backend, tile=4)
    with torch.no_grad():
        a = k(**base)
    with torch.inference_mode():
        b = k(**base)
    leaves = {
        n: (
            _layout(torch.tensor(seen[n], device=DEVICE), kind)
            if kind != "expanded"
            else torch.tensor(seen[n], device=DEVICE)
        ).requires_grad_(True)
        for n in base
    }
    c = k(**leaves)
    for got, what in ((a, "no_grad"), (b, "inference_mode"), (c, "grad")):
        _close(got, want, 1e-10, f"{backend} {kind} {what}")
    c.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves.values())
    for n, t in base.items():
        np.testing.assert_array_equal(t.cpu().numpy(), seen[n])


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "name", ["sliding_window.ein", "variants/01_mha_causal_cross.ein", "variants/18_document_mask.ein"]
)
def test_new_sequence_lengths_and_earlier_outputs_stay_valid(backend, name):
    """One kernel called with lengths 7, 12, 5, 12 (masks and buffers kept across calls must not be stale);
    each call's output is checked after all the calls (a kept buffer must not be an earlier output)."""
    prog = einattn.load(os.path.join(EX, name))
    k = _compile(prog, backend, tile=4)
    outs, wants = [], []
    for i, L in enumerate([7, 12, 5, 12]):
        rng = np.random.default_rng(100 + i)
        M = L + 3 if "cross" in name else L
        x = dict(Q=_randn(rng, 2, 2, L, 3), K=_randn(rng, 2, 2, M, 3), V=_randn(rng, 2, 2, M, 2))
        if "document" in name:
            x["doc"] = np.sort(rng.integers(0, 3, (2, L)), axis=1)
        xr = _round(prog, x, torch.float32)
        wants.append(_oracle(prog, xr))
        with torch.no_grad():
            outs.append(k(**_torch_args(prog, xr, torch.float32)))
    for o, w in zip(outs, wants):
        _close(o, w, 1e-4, backend)


ALIASES = [
    ("input X[i, j]\noutput O\nO[j, i] = X[i, j]\n", dict(X=(3, 4))),
    ("input X[i]\noutput O, P\nO[i] = X[i] ?? 0\nP[i] = O[i]\n", dict(X=(3,))),
    (
        "input Q[p, e], K[m, e], X[p, f]\nparam M0 = 2\nrank M = M1 * M0\noutput O\n"
        "R[0, p, f] = X[p, f]\nB[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 > 1000\n"
        "L[m1, p] = B[m1, m0, p] :: max(m0)\n"
        "R[m1 + 1, p, f] = R[m1, p, f] * (exp(L[m1, p]) ?? 1)\nO[p, f] = R[M1, p, f]\n",
        dict(Q=(5, 2), K=(4, 2), X=(5, 3)),
    ),
]


@pytest.mark.parametrize("case", range(len(ALIASES)))
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_outputs_never_alias_inputs_or_each_other(backend, case):
    """An output equal to an input, to another output, or to a state whose every step is skipped (the
    initial state read from an input) is memory of its own: writing to it changes nothing else."""
    text, shapes = ALIASES[case]
    prog = _prog(text)
    rng = np.random.default_rng(12)
    x = {n: _randn(rng, *s) for n, s in shapes.items()}
    for mode in ("no_grad", "grad"):
        args = _torch_args(prog, x, torch.float64)
        ctx = torch.no_grad() if mode == "no_grad" else torch.enable_grad()
        with ctx:
            outs = _tuple(_compile(prog, backend)(**args))
        want = _oracle(prog, x)
        _close(outs, want, 1e-12, f"{backend} {mode}")
        with torch.no_grad():
            outs[0].add_(1000.0)  # the first output only: the other outputs and the inputs must not move
        _close(outs[1:], want[1:], 1e-12, f"{backend} {mode} after writing to the first output")
        for n, t in args.items():
            np.testing.assert_array_equal(t.detach().cpu().numpy(), x[n])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile_fullgraph_across_lengths(backend):
    """torch.compile (aot_eager, fullgraph) of a kernel with an integer filter input, two lengths."""
    torch._dynamo.reset()
    prog = einattn.load(os.path.join(EX, "variants/18_document_mask.ein"))
    k = _compile(prog, backend, tile=16)  # one tile per call: the tracer unrolls the loop
    f = torch.compile(k, backend="aot_eager", fullgraph=True)
    for L in (7, 10):
        rng = np.random.default_rng(L)
        x = dict(Q=_randn(rng, 1, 2, L, 3), K=_randn(rng, 1, 2, L, 3), V=_randn(rng, 1, 2, L, 2))
        x["doc"] = np.sort(rng.integers(0, 3, (1, L)), axis=1)
        xr = _round(prog, x, torch.float32)
        _close(f(**_torch_args(prog, xr, torch.float32)), _oracle(prog, xr), 1e-4, f"{backend} L={L}")
    torch._dynamo.reset()


# ---- split-K ----------------------------------------------------------------------------------------------


def _split_k(prog, x, parts, backend, dtype=torch.float64, tile=4):
    """ContextParallel's three programs in one process: the partial per part, the merge, the finish."""
    from einattn.distributed import _as_declared
    from einattn.rewrite import split_k

    sk = split_k(prog, "m", tile)
    sharded = [n for n in prog.inputs if "m" in prog.tensor(n).ranks]
    total, off, states = sum(parts), 0, []
    for size in parts:
        inp = {}
        for n in sk.partial.inputs:
            a = x[n]
            if n in sharded:
                a = np.take(a, range(off, off + size), axis=prog.tensor(n).ranks.index("m"))
            inp[n] = a
        params = ({sk.offset: off} if sk.offset else {}) | ({sk.total: total} if sk.total else {})
        kp = _compile(sk.partial, backend, params=params or None)
        states.append(_tuple(kp(**_torch_args(sk.partial, inp, dtype))))
        off += size
    stacked = {
        f"{s}_s": _as_declared(sk.merge, f"{s}_s", torch.stack([st[i] for st in states]))
        for i, s in enumerate(sk.states)
    }
    extra = _torch_args(sk.merge, {n: x[n] for n in sk.merge.inputs if n in x}, dtype)
    merged = _tuple(_compile(sk.merge, backend)(**stacked, **extra))
    state = {n: _as_declared(sk.finish, n, v) for n, v in zip(sk.states, merged)}
    state |= _torch_args(sk.finish, {n: x[n] for n in sk.finish.inputs if n in x and n not in state}, dtype)
    fparams = {sk.total: total} if sk.total and sk.total in dict(sk.finish.params) else None
    return _tuple(_compile(sk.finish, backend, params=fparams)(**{n: state[n] for n in sk.finish.inputs}))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_split_k_parts_merged_equal_the_whole(backend):
    """Three outputs with an offset filter (`m <= p + 1`), split into parts of 0, 1, 4 and 5 keys."""
    prog = _prog(LSE_OFFSET)
    rng = np.random.default_rng(13)
    x = dict(Q=_randn(rng, 1, 2, 8, 3), K=_randn(rng, 1, 2, 10, 3), V=_randn(rng, 1, 2, 10, 2))
    S = np.einsum("bhpe,bhme->bhpm", x["Q"], x["K"]) / np.sqrt(3)
    mask = np.arange(10)[None, :] <= np.arange(8)[:, None] + 1
    want = np_attention(S, np.broadcast_to(mask, S.shape), x["V"])
    for parts in ([0, 1, 4, 5], [5, 5, 0]) if backend == "torch" else ([0, 1, 4, 5],):
        _close(_split_k(prog, x, parts, backend), want, 1e-9, f"{backend} {parts}")


# ---- bug (triton fused): a per-tile value that is infinite only at keys the filter removes -------------

PADDED_NORMALISED_V = """
# hand-written 1-pass attention over values divided by a per-key norm; keys from n on are padding (norm 0)
input  Q[p, e], K[m, e], V[m, f], N[m], n : int
param  M0 = 4
rank   M = M1 * M0
output AV
RM[0, p]      = -inf
RD[0, p]      = 0
RNV[0, p, f]  = 0
BQK[m1, m0, p]    = Q[p, e] * K[m1 * M0 + m0, e]  where m1 * M0 + m0 < n
BW[m1, m0, f]     = V[m1 * M0 + m0, f] / N[m1 * M0 + m0]
LM[m1, p]         = BQK[m1, m0, p] :: max(m0)
RM[m1 + 1, p]     = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p]    = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]        = SLN[m1, m0, p]
SLNV[m1, p, f]    = SLN[m1, m0, p] * BW[m1, m0, f]
PRM[m1, p]        = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]     = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + RNV[m1, p, f] * PRM[m1, p]
AV[p, f] = RNV[M1, p, f] / RD[M1, p]
"""


@pytest.mark.parametrize("backend,options", [("torch", {}), ("triton", {}), ("triton", dict(path="general"))])
def test_per_tile_values_infinite_only_at_removed_keys(backend, options):
    """Bug (triton, fused path): every row NaN. The inputs are finite; `V / N` is infinite at the padded keys
    7..10, which the filter removes from every row. The fused kernel multiplies the tile's weights (0 there)
    by it in one `tl.dot`: 0 * inf. The torch backend and the general path give the reference's values
    (docs/backends.md's "Finite inputs on the fused path" speaks of inputs only)."""
    prog = _prog(PADDED_NORMALISED_V)
    rng = np.random.default_rng(14)
    x = dict(
        Q=_randn(rng, 5, 3),
        K=_randn(rng, 11, 3),
        V=_randn(rng, 11, 2),
        N=rng.uniform(1, 2, 11),
        n=np.int64(7),
    )
    x["N"][7:] = 0.0
    mask = np.broadcast_to(np.arange(11)[None, :] < 7, (5, 11))
    want = np_attention(x["Q"] @ x["K"].T, mask, x["V"] / np.where(x["N"] == 0, 1, x["N"])[:, None])[0]
    _check(prog, x, backend, torch.float64, want=(want,), **options)
