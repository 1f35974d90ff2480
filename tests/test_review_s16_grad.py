"""Session 16 review: gradients and dtypes of rule 3's streamed sums (docs/rewrite.md, "Rule 3").

Sigmoid, ReLU, squared ReLU, causal linear attention, Lightning's decay, sums with `??` defaults, per-batch
lengths from `: int` inputs, GQA: each written as a 1-pass sum over the keys, which `passes="auto"` (the
default) turns into a running sum over key tiles (checked on `kernel.program`). Every value and gradient is
compared with a hand-written torch formula (an independent reference: masks, `torch.where` for defaults,
autograd through plain torch ops), and `torch.autograd.gradcheck` runs in float64 with a tile that does not
divide the keys (3), over `row_block` 0 / 3 / "auto", `recompute` on and off, tile skipping on and off
(docs/backends.md, torch, "Streaming, memory and skipped tiles" and "Autograd"). Then float16 / bfloat16 /
float32 inputs (docs/backends.md "dtypes"; tolerances of docs/testing.md), the triton backend's backward under
the interpreter, `torch.compile(fullgraph=True)`, `einattn.nn.EinAttention`, and double backward.
"""

from __future__ import annotations

import os

if "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"  # (before triton or einattn's triton backend is imported)

import math
import warnings
from pathlib import Path

import pytest
import torch

import einattn
from einattn.nn import EinAttention

EX = Path(__file__).resolve().parent.parent / "examples"

pytestmark = [
    pytest.mark.filterwarnings("ignore::einattn.EinWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

# ---- the specs and their hand-written references ---------------------------------------------------------

SPECS = {
    "sigmoid": (EX / "sigmoid.ein").read_text(),  # dense, a scalar input `bias`
    "sigmoid_causal": (EX / "variants" / "04_sigmoid_nonorm.ein").read_text(),
    # ReLU attention over a strict window: row 0 sees no key, its output is the scalar input `dflt`
    "relu_window_default": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], dflt
param  W = 3
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]
S[b, h, p, f]  = relu(QK[b, h, m, p]) * V[b, h, m, f]  where p - W <= m and m <= p - 1
O[b, h, p, f]  = S[b, h, p, f] ?? dflt
""",
    # squared ReLU with a per-head slope (a learned ALiBi-like bias), causal, divided by the number of keys
    "sqrelu_slope": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h]
output O
QK0[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
QK[b, h, m, p]  = QK0[b, h, m, p] + slope[h] * (m - p)  where m <= p
A[b, h, m, p]   = square(relu(QK[b, h, m, p]))
O[b, h, p, f]   = A[b, h, m, p] * V[b, h, m, f] / M
""",
    "linear_causal": (EX / "variants" / "06_linear_causal.ein").read_text(),
    "lightning": (EX / "variants" / "07_lightning.ein").read_text(),  # lam[h]: exp(log(lam) * (p - m))
    # per-batch key lengths (an `: int` input) and a tensor default for the rows that see no key
    "lengths_default": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], n[b] : int, bias, X[b, h, p, f]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < n[b] and m <= p + 1
S[b, h, p, f]  = sigmoid(QK[b, h, m, p] + bias) * V[b, h, m, f]
O[b, h, p, f]  = S[b, h, p, f] ?? X[b, h, p, f]
""",
    "gqa_sigmoid": """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], bias
param  R = 2
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
O[b, h, p, f]  = sigmoid(QK[b, h, m, p] + bias) * V[b, h // R, m, f]
""",
    # normalised sigmoid over a window (division deferred, then both sums streamed); with M < P - 3 the last
    # rows see no key: DEN and O absent there, delivered as 0
    "sigmoid_normalised": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where p - 4 < m and m <= p
SG[b, h, m, p] = sigmoid(QK[b, h, m, p])
DEN[b, h, p]   = SG[b, h, m, p]
O[b, h, p, f]  = SG[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
""",
}

# b, h, g (K/V heads), p, m, e, f: p, f > 3 so that row_block=3 cuts the rows into blocks; m = 7 with tile 3:
# two whole tiles and a ragged one
SIZES = dict(b=2, h=2, g=1, p=7, m=7, e=3, f=4)
LENGTHS = [0, 4]  # `n[b]`: batch 0 sees no key at all; batch 1's last tile (key 6) is removed whole


def _pm(p, m):
    pp = torch.arange(p)[:, None]
    mm = torch.arange(m)[None, :]
    return pp, mm


def _scores(q, k, scale=True):
    s = q @ k.transpose(-1, -2)  # [b, h, p, m]
    return s / math.sqrt(q.shape[-1]) if scale else s


def ref_sigmoid(Q, K, V, bias):
    return torch.sigmoid(_scores(Q, K) + bias) @ V


def ref_sigmoid_causal(Q, K, V, bias):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    return torch.where(mm <= pp, torch.sigmoid(_scores(Q, K) + bias), 0.0) @ V


def ref_relu_window_default(Q, K, V, dflt, W=3):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    mask = (pp - W <= mm) & (mm <= pp - 1)
    s = torch.where(mask, torch.relu(_scores(Q, K, scale=False)), 0.0) @ V
    return torch.where(mask.any(-1)[:, None], s, dflt)


def ref_sqrelu_slope(Q, K, V, slope):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    s = _scores(Q, K) + slope[:, None, None] * (mm - pp)
    a = torch.where(mm <= pp, torch.relu(s).square(), 0.0)
    return a @ V / K.shape[2]


def ref_linear_causal(Q, K, V):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    fq, fk = torch.nn.functional.elu(Q) + 1, torch.nn.functional.elu(K) + 1
    a = torch.where(mm <= pp, fq @ fk.transpose(-1, -2), 0.0)
    return (a @ V) / a.sum(-1, keepdim=True)


def ref_lightning(Q, K, V, lam):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    mask = mm <= pp
    d = torch.where(mask, (pp - mm).to(Q.dtype), 0.0)  # lam ** (p - m), 0 above the diagonal
    decay = torch.where(mask, lam[:, None, None] ** d, 0.0)
    return (_scores(Q, K, scale=False) * decay) @ V


def ref_lengths_default(Q, K, V, n, bias, X):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    mask = (mm[None] < n[:, None, None]) & (mm <= pp + 1)[None]  # [b, p, m]
    mask = mask[:, None]  # [b, 1, p, m]
    s = torch.where(mask, torch.sigmoid(_scores(Q, K) + bias), 0.0) @ V
    return torch.where(mask.any(-1, keepdim=True), s, X)


def ref_gqa_sigmoid(Q, K, V, bias, R=2):
    K, V = K.repeat_interleave(R, 1), V.repeat_interleave(R, 1)
    return ref_sigmoid_causal(Q, K, V, bias)


def ref_sigmoid_normalised(Q, K, V):
    pp, mm = _pm(Q.shape[2], K.shape[2])
    mask = (pp - 4 < mm) & (mm <= pp)
    sg = torch.where(mask, torch.sigmoid(_scores(Q, K, scale=False)), 0.0)
    den = sg.sum(-1, keepdim=True)
    alive = mask.any(-1)[:, None]
    return torch.where(alive, (sg @ V) / torch.where(alive, den, 1.0), 0.0)


REFS = {
    "sigmoid": ref_sigmoid,
    "sigmoid_causal": ref_sigmoid_causal,
    "relu_window_default": ref_relu_window_default,
    "sqrelu_slope": ref_sqrelu_slope,
    "linear_causal": ref_linear_causal,
    "lightning": ref_lightning,
    "lengths_default": ref_lengths_default,
    "gqa_sigmoid": ref_gqa_sigmoid,
    "sigmoid_normalised": ref_sigmoid_normalised,
}


def make_inputs(name, sizes=None, seed=0, dtype=torch.float64):
    """The spec's inputs in declaration order (float leaves and `: int` tensors)."""
    s = dict(SIZES, **(sizes or {}))
    g = torch.Generator().manual_seed(seed)
    b, h, gk, p, m, e, f = (s[r] for r in ("b", "h", "g", "p", "m", "e", "f"))

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    kv = gk if name == "gqa_sigmoid" else h
    q, k, v = rn(b, h, p, e), rn(b, kv, m, e), rn(b, kv, m, f)
    if name in ("sigmoid", "sigmoid_causal", "gqa_sigmoid"):
        return [q, k, v, torch.tensor(-0.3, dtype=dtype)]
    if name == "relu_window_default":
        return [q, k, v, torch.tensor(0.7, dtype=dtype)]
    if name == "sqrelu_slope":
        return [q, k, v, (torch.rand(h, generator=g, dtype=torch.float64) * 0.4 + 0.1).to(dtype)]
    if name == "lightning":
        return [q, k, v, (torch.rand(h, generator=g, dtype=torch.float64) * 0.5 + 0.4).to(dtype)]
    if name == "lengths_default":
        return [q, k, v, torch.tensor(LENGTHS[:b]), torch.tensor(0.2, dtype=dtype), rn(b, h, p, f)]
    return [q, k, v]


def is_float(x):
    return torch.is_tensor(x) and x.is_floating_point()


def compile_torch(name, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(SPECS[name], backend="torch", **options)


def compile_torch_text(text, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(text, backend="torch", **options)


def ref_sigmoid_causal_2d(Q, K, V):
    pp, mm = _pm(Q.shape[0], K.shape[0])
    return torch.where(mm <= pp, torch.sigmoid(Q @ K.T), 0.0) @ V


def ref_sigmoid_causal_2d_mask(Q, K, V, mask):
    """sigmoid(Q K^T) V over the [p, m] points `mask` keeps."""
    return torch.where(mask, torch.sigmoid(Q @ K.T), 0.0) @ V


def streamed(kern):
    """The compiled program is rule 3's running sum over key tiles (`rank M = M1 * M0`)."""
    return [p.parent for p in kern.program.partitions] == ["m"] and "loop over m1" in kern.source


def grads_of(fn, args, weight_seed=7, wdtype=None):
    """The output and the gradient of sum(out * w) for every float input (None where there is none); `w` is
    rounded to `wdtype` (default: the output's dtype)."""
    leaves = [a.detach().clone().requires_grad_(True) if is_float(a) else a for a in args]
    out = fn(*leaves)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(weight_seed), dtype=torch.float64)
    (out * w.to(wdtype or out.dtype).to(out.dtype)).sum().backward()
    return out.detach(), [x.grad if is_float(x) else None for x in leaves]


# ---- 1. values and gradients against the references, every option ----------------------------------------

OPTIONS = [
    dict(row_block=rb, recompute=rc, skip_tiles=sk)
    for rb in (0, 3, "auto")
    for rc in (True, False)
    for sk in (True, False)
]


@pytest.mark.parametrize("name", list(SPECS))
def test_values_and_gradients_equal_the_reference_for_every_option(name):
    args = make_inputs(name)
    want, want_g = grads_of(REFS[name], args)
    for opts in OPTIONS:
        kern = compile_torch(name, tile=3, **opts)
        assert streamed(kern), (name, opts)
        got, got_g = grads_of(kern, args)
        assert got.dtype == torch.float64 and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"{name} {opts}")
        with torch.no_grad():  # (in place, pooled buffers, kept masks)
            torch.testing.assert_close(kern(*args), want, rtol=1e-10, atol=1e-12, msg=f"{name} {opts}")
        for i, (a, b) in enumerate(zip(got_g, want_g)):
            if b is None:
                continue
            assert a is not None, (name, opts, i)
            assert torch.isfinite(a).all(), (name, opts, i)
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"{name} {opts} input {i}")


@pytest.mark.parametrize("name", list(SPECS))
def test_edge_sizes_and_tiles(name):
    """One query or one key, fewer keys than a tile, more queries than keys, one key per tile."""
    for p, m in ((1, 1), (2, 7), (8, 2), (8, 8)):
        sizes = dict(p=p, m=m, b=1)
        args = make_inputs(name, sizes, seed=p + m)
        if name == "lengths_default":
            args[3] = torch.tensor([min(m, 3)])
        want, want_g = grads_of(REFS[name], args)
        for tile in (1, 3, 4):
            got, got_g = grads_of(compile_torch(name, tile=tile, row_block=3), args)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"{p} {m} {tile}")
            for i, (a, b) in enumerate(zip(got_g, want_g)):
                if b is not None and a is not None:  # (a None: tiles skipped for the whole call)
                    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"{p} {m} {tile} input {i}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mixed_dtypes_with_a_zero_dim_scalar_promote(backend):
    """float16 Q, K, V with the scalar `bias` as a 0-d tensor of another dtype: the output takes
    `torch.promote_types` of the float inputs (docs/backends.md), each gradient its own input's dtype."""
    args = make_inputs("sigmoid_causal", dict(b=1, p=5, m=5), seed=17)
    want = ref_sigmoid_causal(*[a.half().double() for a in args[:3]], args[3])
    for bd in (torch.float64, torch.float32, torch.float16):
        low = [a.half() for a in args[:3]] + [args[3].to(bd)]
        kern = (
            compile_triton("sigmoid_causal", tile=3)
            if backend == "triton"
            else compile_torch("sigmoid_causal", tile=3)
        )
        leaves = [a.clone().requires_grad_(True) for a in low]
        out = kern(*leaves)
        assert out.dtype == torch.promote_types(torch.float16, bd)
        assert _err(out, ref_sigmoid_causal(*[a.double() for a in low])) <= 2e-2
        out.double().sum().backward()
        assert [x.grad.dtype for x in leaves] == [torch.float16] * 3 + [bd]
    assert _err(out, want) <= 2e-2


# ---- 1b. gradcheck: finite differences of the kernel itself --------------------------------------------

GRADCHECK_OPTIONS = [
    dict(row_block=3, recompute=True, skip_tiles=True),
    dict(row_block=0, recompute=False, skip_tiles=False),
    dict(row_block="auto", recompute=False, skip_tiles=True),
]


@pytest.mark.parametrize("opts", GRADCHECK_OPTIONS, ids=["rb3", "rb0_norecompute_noskip", "auto_norecompute"])
@pytest.mark.parametrize("name", list(SPECS))
def test_gradcheck_every_float_input(name, opts):
    """Every float input (Q, K, V and the scalars, slopes, decays, defaults) against finite differences, in
    float64 over ragged tiles of 3 keys."""
    kern = compile_torch(name, tile=3, **opts)
    args = make_inputs(name, dict(b=1, p=5, m=5, f=2, e=2), seed=3)
    if name == "lengths_default":
        args[3] = torch.tensor([2])  # (b = 1) rows see 0, 1 or 2 keys: row 0 sees keys 0 and 1
    idx = [i for i, a in enumerate(args) if is_float(a)]

    def fn(*values):
        full = list(args)
        for i, v in zip(idx, values):
            full[i] = v
        return kern(*full)

    leaves = tuple(args[i].clone().requires_grad_(True) for i in idx)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


# ---- 2. whole tiles removed, rows that see no key, defaults ----------------------------------------------


def test_rows_without_keys_give_zero_and_zero_gradients():
    """docs/backends.md (torch contract): outputs' absent points are 0 (a fully masked row gives 0) and
    masked positions give exactly 0 gradient, never NaN. M = 3 < P - 3: rows 6 and 7 see no key in the window
    (their whole last tiles, and every tile for them, are removed)."""
    sizes = dict(p=8, m=3)
    args = make_inputs("sigmoid_normalised", sizes, seed=4)
    want, want_g = grads_of(ref_sigmoid_normalised, args)
    assert (want[:, :, 6:] == 0).all() and (want[:, :, :6] != 0).all()
    for rb in (0, 3, "auto"):
        for tile in (1, 2, 3):
            kern = compile_torch("sigmoid_normalised", tile=tile, row_block=rb)
            assert streamed(kern)
            got, got_g = grads_of(kern, args)
            assert torch.equal(got[:, :, 6:], torch.zeros_like(got[:, :, 6:])), (rb, tile)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
            for a, b in zip(got_g, want_g):
                assert torch.isfinite(a).all(), (rb, tile)
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
            assert torch.equal(got_g[0][:, :, 6:], torch.zeros_like(got_g[0][:, :, 6:]))  # Q of dead rows


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("row_block", [0, 3, "auto"])
def test_per_batch_lengths_and_a_tensor_default(row_block, skip):
    """`m < n[b]` with n = [0, 4] and [5, 0]: one batch sees no key (O = X there, and X's gradient is the
    output's; Q, K, V get 0), the other's last tile is removed whole (n = 4) or not (n = 5). The default's
    gradient flows only where the sum is absent."""
    for lengths in ([0, 4], [5, 0]):
        args = make_inputs("lengths_default", seed=5)
        args[3] = torch.tensor(lengths)
        want, want_g = grads_of(ref_lengths_default, args)
        kern = compile_torch("lengths_default", tile=3, row_block=row_block, skip_tiles=skip)
        got, got_g = grads_of(kern, args)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for i in (0, 1, 2, 4, 5):
            assert torch.isfinite(got_g[i]).all(), (lengths, i)
            torch.testing.assert_close(got_g[i], want_g[i], rtol=1e-9, atol=1e-11, msg=f"{lengths} input {i}")
        dead = lengths.index(0)
        assert torch.equal(got[dead], args[5][dead])
        for i in (0, 1, 2):
            assert torch.equal(got_g[i][dead], torch.zeros_like(got_g[i][dead]))


DEFAULTED = """
input  Q[p, e], K[m, e], V[m, f], X[p, f]
output O
QK[m, p] = Q[p, e] * K[m, e]  where m <= p
S[p, f]  = sigmoid(QK[m, p]) * V[m, f]
O[p, f]  = S[p, f] ?? X[p, f]
"""


# Fixed (session 16): a `??` default that no row needs at run time (every row sees a key) was left out of the
# autograd graph: `torch.autograd.grad(out.sum(), [Q, K, V, X])` raised "The differentiated Tensor at index 3
# appears to not have been used in the graph", with passes "auto" and "as-written", skip_tiles True and False.
# docs/backends.md (torch, Autograd): "every float input gets a gradient"; "An input that reaches the outputs
# only through stabilizers ... or not at all has a zero gradient, and gets one ... so
# `torch.autograd.grad(out.sum(), inputs)` works for every float input". The documented exception (What is
# not done) is for tiles skipped, and says skip_tiles=False gives zeros: here it does not. The torch
# reference (`torch.where(any, S, X)`) gives X a zero gradient.
@pytest.mark.parametrize("passes", ["auto", "as-written"])
@pytest.mark.parametrize("skip", [True, False])
def test_a_default_no_row_needs_still_gets_a_zero_gradient(passes, skip):
    kern = compile_torch_text(DEFAULTED, passes=passes, skip_tiles=skip, tile=2)
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    got = torch.autograd.grad(kern(*x).sum(), x)
    assert torch.equal(got[3], torch.zeros(3, 2, dtype=torch.float64))
    ref = torch.autograd.grad(ref_sigmoid_causal_2d(*x[:3]).sum(), x[:3])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _padded(which, value):
    args = make_inputs("lengths_default", seed=6)
    args[3] = torch.tensor([3, 0])  # (batch 1 sees no key, so that the default X is used)
    for b, n in enumerate([3, 0]):
        args[which][b, :, n:] = value
    return args


def _ref_reading_only_kept_keys(Q, K, V, n, bias, X):
    keep = (torch.arange(K.shape[2])[None] < n[:, None])[:, None, :, None]
    return ref_lengths_default(Q, torch.where(keep, K, 0.0), torch.where(keep, V, 0.0), n, bias, X)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_value_padding_past_the_lengths_holds_nan_or_inf(value):
    """A KV cache's V padding past `n[b]` holding NaN / inf (docs/backends.md: inputs that hold an infinity or
    NaN run `program_any`, which skips the point as the reference does): values and gradients equal the
    reference's (which reads only the kept keys), finite, and V's gradient is 0 on the padding."""
    args = _padded(2, value)
    want, want_g = grads_of(_ref_reading_only_kept_keys, args)
    assert torch.isfinite(want).all() and all(torch.isfinite(want_g[i]).all() for i in (0, 1, 2, 4, 5))
    for rb in (0, "auto"):
        got, got_g = grads_of(compile_torch("lengths_default", tile=3, row_block=rb), args)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for i in (0, 1, 2, 4, 5):
            assert torch.isfinite(got_g[i]).all(), (rb, i)
            torch.testing.assert_close(got_g[i], want_g[i], rtol=1e-9, atol=1e-11, msg=f"{rb} input {i}")


KV_LENGTH = """
input  Q[p, e], K[m, e], V[m, f], n : int
output O
QK[m, p] = Q[p, e] * K[m, e]  where m < n
O[p, f]  = sigmoid(QK[m, p]) * V[m, f]
"""


# Fixed (session 16): K holding NaN or inf past a KV cache's length (`where m < n`, the filter of
# docs/backends.md's KV-cache example) gave the right outputs (program_any) but NaN gradients for Q (every
# row) and for K at the padding (the reference: 0), on passes "auto" and "as-written": the backward of `Q K^T`
# multiplies the zero gradient of the dropped scores by K's NaN (0 * NaN). docs/backends.md (torch, Autograd):
# "Masked positions give exactly 0 gradient, never NaN"; with such inputs program_any "zeroes every factor
# where the others are absent, so the sum skips the point as the reference does": the forward does, its
# gradient does not. The reference reading only the kept keys has finite gradients. (SDPA with a boolean mask
# behaves the same way: a note, not an excuse, since einattn documents reference semantics for non-finite
# inputs.) Minimal: Q, K, V [3, 2] float64, K[2:] = nan, n = 2, default options: torch.autograd.grad(kern(Q,
# K, V, 2).sum(), (Q, K)) gave Q's all NaN, K[2] NaN. The same through the triton backend (fused path, right
# values; its backward recomputes with torch), and for plain softmax with the same filter (Q's gradient NaN):
# not specific to streamed sums.
@pytest.mark.parametrize(
    ("backend", "passes"), [("torch", "auto"), ("torch", "as-written"), ("triton", "auto")]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_key_padding_past_a_length_holding_nan_or_inf_keeps_gradients_finite(value, backend, passes):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(3))
    k[2:] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kern = einattn.compile(KV_LENGTH, backend=backend, passes=passes, tile=2)

    def ref(Q, K, V):
        keep = torch.arange(3)[:, None] < 2
        return ref_sigmoid_causal_2d_mask(Q, torch.where(keep, K, 0.0), torch.where(keep, V, 0.0), keep.T)

    want, want_g = grads_of(ref, [q, k, v])
    got, got_g = grads_of(lambda Q, K, V: kern(Q, K, V, 2), [q, k, v])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for i, (a, b) in enumerate(zip(got_g, want_g)):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"input {i}")


def test_a_scalar_default_takes_the_gradient_of_the_rows_that_see_no_key():
    """`S ?? dflt` with a strict window: row 0 is `dflt` (whatever the keys), so d/d dflt is the sum of the
    output's weights over row 0; with no key at all (M = 0, the spec as written runs) every row is `dflt`."""
    args = make_inputs("relu_window_default", seed=8)
    w = torch.randn(2, 2, 7, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got, got_g = grads_of(compile_torch("relu_window_default", tile=3), args)
    assert torch.equal(got[:, :, 0], torch.full_like(got[:, :, 0], 0.7))
    torch.testing.assert_close(got_g[3], w[:, :, 0].sum(), rtol=1e-12, atol=1e-12)
    assert torch.equal(got_g[0][:, :, 0], torch.zeros_like(got_g[0][:, :, 0]))
    empty = make_inputs("relu_window_default", dict(m=0), seed=8)
    got, got_g = grads_of(compile_torch("relu_window_default", tile=3), empty)
    assert torch.equal(got, torch.full_like(got, 0.7))
    torch.testing.assert_close(got_g[3], w.sum(), rtol=1e-12, atol=1e-12)
    assert torch.equal(got_g[0], torch.zeros_like(got_g[0]))


def test_an_empty_window_gives_zero_gradients_without_skipping():
    """W = 0 empties the window for every row: O is `dflt` everywhere. docs/backends.md (What is not done):
    with skipped tiles Q, K, V may be left out of the graph; with `skip_tiles=False` they get zeros."""
    args = make_inputs("relu_window_default", seed=19)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kern = einattn.compile(
            SPECS["relu_window_default"], backend="torch", params={"W": 0}, tile=3, skip_tiles=False
        )
    leaves = [a.clone().requires_grad_(True) for a in args]
    out = kern(*leaves)
    assert torch.equal(out, torch.full_like(out, 0.7))
    got = torch.autograd.grad(out.sum(), leaves)
    for g, x in zip(got[:3], leaves):
        assert torch.equal(g, torch.zeros_like(x))
    assert got[3].item() == out.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lightning_decay_overflowing_above_the_diagonal(dtype):
    """docs/backends.md: Lightning's decay `exp(log(lam) * (p - m))` overflows where `m > p`, exactly where
    the causal scores it multiplies are absent; its gradient must be 0 there, not `0 * inf`. lam = 1e-6
    makes exp(13.8 * 7) overflow float32; lam = 1e-50 overflows float64."""
    tiny = 1e-6 if dtype == torch.float32 else 1e-50
    args = make_inputs("lightning", seed=9)
    args[3] = torch.tensor([tiny, 0.5], dtype=torch.float64)
    args = [a.to(dtype) for a in args]
    ref64, ref_g = grads_of(ref_lightning, [a.double() for a in args])
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for rb in (0, 3):
        got, got_g = grads_of(compile_torch("lightning", tile=3, row_block=rb), args)
        assert got.dtype == dtype and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), ref64, rtol=tol, atol=tol)
        for i, (a, b) in enumerate(zip(got_g, ref_g)):
            assert a.dtype == dtype and torch.isfinite(a).all(), (rb, i)
            torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol, msg=f"row_block {rb} input {i}")


# ---- 3. float16 / bfloat16 / float32 on torch ------------------------------------------------------------

# docs/testing.md, einattn.testing.TOLERANCES for torch against the float64 reference, as the error
# max |got - want| / (1 + |want|)
TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2}


ULP = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}  # half a unit in the last place, relative


def _err(got, want):
    return ((got.double() - want).abs() / (1 + want.abs())).max().item()


@pytest.mark.parametrize("name", list(SPECS))
def test_the_dtype_option_sets_the_compute_dtype(name):
    """docs/backends.md (torch dtypes): option `dtype` sets the compute dtype, the outputs keep the inputs'.
    float32 inputs with dtype="float64": outputs and gradients are float32 and each is the float64 result
    rounded once (half an ulp of float32, relative). (The default float32 compute stays within 2e-5.)"""
    args = [a.float() if is_float(a) else a for a in make_inputs(name, seed=20)]
    want, want_g = grads_of(
        REFS[name], [a.double() if is_float(a) else a for a in args], wdtype=torch.float32
    )
    got, got_g = grads_of(compile_torch(name, tile=3, row_block=3, dtype="float64"), args)
    assert got.dtype == torch.float32
    pairs = [(got, want)] + [(a, b) for a, b in zip(got_g, want_g) if b is not None]
    for a, b in pairs:
        assert a.dtype == torch.float32
        slack = 1e-12 * b.abs().max().item()  # (values that cancel to ~1e-16 in float64)
        assert ((a.double() - b).abs() <= 2.0**-24 * b.abs() * (1 + 1e-6) + slack).all()


def test_only_the_scalar_requires_a_gradient_and_inputs_changed_in_place_are_refused():
    """A gradient for `bias` alone (Q, K, V constants) equals the reference's; changing `bias` in place
    after the forward pass is autograd's usual error (docs/backends.md, recompute)."""
    args = make_inputs("sigmoid_causal", seed=21)
    for opts in (dict(row_block=3), dict(row_block=0, recompute=False)):
        kern = compile_torch("sigmoid_causal", tile=3, **opts)
        b = args[3].clone().requires_grad_(True)
        (got,) = torch.autograd.grad(kern(*args[:3], b).square().sum(), [b])
        b2 = args[3].clone().requires_grad_(True)
        (want,) = torch.autograd.grad(ref_sigmoid_causal(*args[:3], b2).square().sum(), [b2])
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    kern = compile_torch("sigmoid_causal", tile=3, row_block=3)
    b = args[3].clone().requires_grad_(True)
    out = kern(*args[:3], b)
    with torch.no_grad():
        b.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("dtype", list(TOL), ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("name", list(SPECS))
def test_low_precision_values_and_gradients(name, dtype):
    """docs/backends.md (torch dtypes): float32, float16 and bfloat16 inputs compute and accumulate in
    float32 and the outputs come back in the inputs' dtype; gradients have each input's dtype. Values and
    gradients against the float64 reference on the same rounded inputs, within docs/testing.md's tolerance
    (gradients: the same measure relative to their largest magnitude)."""
    low = [a.to(dtype) if is_float(a) else a for a in make_inputs(name, seed=11)]
    want, want_g = grads_of(REFS[name], [a.double() if is_float(a) else a for a in low], wdtype=dtype)
    for rb in (0, "auto"):
        kern = compile_torch(name, tile=3, row_block=rb)
        got, got_g = grads_of(kern, low)
        assert got.dtype == dtype
        assert _err(got, want) <= TOL[dtype], (rb, _err(got, want))
        with torch.no_grad():  # (the in-place path)
            fast = kern(*low)
        assert fast.dtype == dtype and _err(fast, want) <= TOL[dtype], rb
        for i, (a, b) in enumerate(zip(got_g, want_g)):
            if b is None:
                continue
            assert a.dtype == dtype and a.shape == b.shape, (rb, i)
            assert torch.isfinite(a).all()
            scale = max(1.0, b.abs().max().item())
            err = (a.double() - b).abs().max().item() / scale
            assert err <= TOL[dtype], (rb, i, err)
        if dtype in ULP:  # float32 accumulation: each value is the float32 result rounded once
            for a, b in [(got, want)] + [(a, b) for a, b in zip(got_g, want_g) if b is not None]:
                slack = 1e-5 * max(1.0, b.abs().max().item())
                assert ((a.double() - b).abs() <= ULP[dtype] * b.abs() + slack).all(), rb


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_running_sums_accumulate_in_float32(dtype):
    """The running sum over key tiles passes 65504 (float16's largest) before it comes back to 5: a float16
    state (or a float16 per-tile sum) would be inf; float32 accumulation gives about 5 (bfloat16 rounds the
    inputs, not the sums). Tile 3: the first tile alone sums 90000."""
    q = torch.zeros(1, 1, 2, 2, dtype=dtype)
    k = torch.zeros(1, 1, 7, 2, dtype=dtype)
    v = (
        torch.tensor([3e4, 3e4, 3e4, -3e4, -3e4, -3e4, 5.0], dtype=dtype)
        .reshape(1, 1, 7, 1)
        .expand(1, 1, 7, 2)
    )
    v = v.contiguous()
    bias = torch.tensor(30.0, dtype=dtype)  # sigmoid(30) = 1 in float32
    want = ref_sigmoid(*(x.double() for x in (q, k, v, bias)))
    for rb in (0, "auto"):
        kern = compile_torch("sigmoid", tile=3, row_block=rb)
        with torch.no_grad():
            got = kern(q, k, v, bias)
        assert got.dtype == dtype and torch.isfinite(got).all(), got
        assert (got.double() - want).abs().max() < 0.05, (got, want)
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, bias)]
        out = kern(*leaves)
        assert torch.isfinite(out).all() and (out.double() - want).abs().max() < 0.05
        out.sum().backward()
        for x in leaves:
            assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
        torch.testing.assert_close(
            leaves[2].grad.double(), torch.full((1, 1, 7, 2), 2.0, dtype=torch.float64)
        )


# ---- 4. the triton backend under the interpreter: forward kernels, backward through torch ----------------

# docs/backends.md: sigmoid, causal linear and Lightning attention's streamed sums fuse (causal linear and
# Lightning since their sums are split into one tl.dot per statement, lowering/triton_split.py)
TRITON_PATHS = {
    "sigmoid": "fused",
    "sigmoid_causal": "fused",
    "gqa_sigmoid": "fused",
    "relu_window_default": "fused",
    "lengths_default": "fused",
    "sigmoid_normalised": "fused",
    "linear_causal": "fused",
    "lightning": "fused",
}
TRITON_SIZES = dict(b=1, p=5, m=5, f=2, e=2)


def compile_triton(name, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(SPECS[name], backend="triton", **options)


def _triton_args(name, dtype=torch.float64, seed=3):
    args = make_inputs(name, TRITON_SIZES, seed=seed, dtype=dtype)
    if name == "lengths_default":
        args[3] = torch.tensor([0])  # (the whole batch sees no key: O = X)
    return args


@pytest.mark.parametrize("name", list(TRITON_PATHS))
def test_triton_values_and_backward_equal_the_reference(name):
    """The triton kernel's forward (fused where documented) and its backward (the torch backend recomputed)
    against the hand-written reference, float64 and float32 (docs/testing.md: triton float32 1e-4)."""
    kern = compile_triton(name, tile=3)
    assert kern.plan.path == TRITON_PATHS[name], kern.plan
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        args = _triton_args(name, dtype)
        want, want_g = grads_of(REFS[name], [a.double() if is_float(a) else a for a in args], wdtype=dtype)
        got, got_g = grads_of(kern, args)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
        for i, (a, b) in enumerate(zip(got_g, want_g)):
            if b is None:
                continue
            assert a is not None and a.dtype == dtype, (dtype, i)
            torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol, msg=f"{dtype} input {i}")


@pytest.mark.parametrize("name", ["sigmoid", "gqa_sigmoid"])
def test_triton_gradcheck_streamed_sigmoid(name):
    """The backward against finite differences of the triton forward itself (fast mode: few interpreter
    runs)."""
    kern = compile_triton(name, tile=3)
    args = _triton_args(name, seed=4)
    leaves = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(
        lambda *x: kern(*x), leaves, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", ["sigmoid_causal", "gqa_sigmoid"])
def test_triton_half_precision_streamed_sigmoid(name, dtype):
    """Outputs in the inputs' dtype, within docs/testing.md's triton tolerance of the float64 reference on
    the same rounded inputs; gradients in each input's dtype, equal (to the same tolerance) to the
    reference's. A Python number for the scalar takes the tensors' dtype (docs/backends.md, triton)."""
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2}[dtype]
    kern = compile_triton(name, tile=3)
    args = _triton_args(name, dtype, seed=5)
    want, want_g = grads_of(REFS[name], [a.double() for a in args], wdtype=dtype)
    got, got_g = grads_of(kern, args)
    assert got.dtype == dtype and _err(got, want) <= tol
    for a, b in zip(got_g, want_g):
        assert a.dtype == dtype and torch.isfinite(a).all()
        assert (a.double() - b).abs().max().item() / max(1.0, b.abs().max().item()) <= tol
    with torch.no_grad():
        out = kern(*args[:3], -0.3)
    assert out.dtype == dtype and _err(out, want) <= tol


# The triton counterpart of test_a_default_no_row_needs_still_gets_a_zero_gradient (torch, above): the triton
# backend gives the unused default X zeros, as docs/backends.md says ("as on the triton backend").
def test_triton_a_default_no_row_needs_still_gets_a_zero_gradient():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kern = einattn.compile(DEFAULTED, backend="triton", tile=2)
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    got = torch.autograd.grad(kern(*x).sum(), x)
    assert torch.equal(got[3], torch.zeros(3, 2, dtype=torch.float64))
    ref = torch.autograd.grad(ref_sigmoid_causal_2d(*x[:3]).sum(), x[:3])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- torch.compile and einattn.nn.EinAttention ------------------------------------------------------------


@pytest.mark.parametrize("name", ["sigmoid_causal", "relu_window_default"])
def test_torch_compile_fullgraph_around_a_streamed_sum_with_gradients(name):
    """docs/backends.md (torch): the kernel traces with `fullgraph=True`, gradients included (its blocks of
    rows are checkpoints). Causal sigmoid attention and the windowed ReLU sum with its `??` default, streamed
    over tiles of 3 keys, float32 on the CPU: values and gradients equal eager mode's and the reference's;
    the scalars (`bias`, `dflt`) get theirs."""
    torch._dynamo.reset()
    kern = compile_torch(name, tile=3, row_block=3)
    assert streamed(kern)
    args = [a.float() for a in make_inputs(name, dict(b=1, p=7, m=7), seed=12)]
    compiled = torch.compile(kern, fullgraph=True, backend="aot_eager")
    got, got_g = grads_of(compiled, args)
    eager, eager_g = grads_of(kern, args)
    want, want_g = grads_of(REFS[name], [a.double() for a in args], wdtype=torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    for a, b, c in zip(got_g, eager_g, want_g):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.double(), c, rtol=1e-4, atol=1e-5)


def test_ein_attention_with_a_streamed_spec_learns_its_bias_and_decay():
    """`EinAttention` holding sigmoid attention's `bias` and Lightning's `lam` as parameters: the module's
    kernel streams, and backward reaches the parameters with the reference's gradients."""
    args = make_inputs("sigmoid_causal", seed=13)
    attn = EinAttention(
        SPECS["sigmoid_causal"], weights={"bias": torch.tensor(-0.3, dtype=torch.float64)}, tile=3
    )
    assert streamed(attn.kernel)
    q, k, v = (a.clone().requires_grad_(True) for a in args[:3])
    w = torch.randn(2, 2, 7, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (attn(q, k, v) * w).sum().backward()
    ref_in = [a.clone().requires_grad_(True) for a in args]
    (ref_sigmoid_causal(*ref_in) * w).sum().backward()
    torch.testing.assert_close(attn.weights["bias"].grad, ref_in[3].grad, rtol=1e-10, atol=1e-12)
    for a, b in zip((q, k, v), ref_in[:3]):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)

    args = make_inputs("lightning", seed=14)
    lam = args[3].clone()
    attn = EinAttention(SPECS["lightning"], weights={"lam": lam}, tile=3, row_block=3)
    assert streamed(attn.kernel)
    (attn(*args[:3]) * w).sum().backward()
    ref_lam = lam.clone().requires_grad_(True)
    (ref_lightning(*args[:3], ref_lam) * w).sum().backward()
    torch.testing.assert_close(attn.weights["lam"].grad, ref_lam.grad, rtol=1e-10, atol=1e-12)


def test_torch_compile_fullgraph_around_the_triton_streamed_sigmoid_with_gradients():
    """The triton kernel's custom op (fused streamed sigmoid) and its backward traced with `fullgraph=True`:
    gradients equal eager mode's and the reference's."""
    torch._dynamo.reset()
    kern = compile_triton("gqa_sigmoid", tile=3)
    args = _triton_args("gqa_sigmoid", seed=18)
    compiled = torch.compile(lambda *x: kern(*x) * 2.0, fullgraph=True, backend="aot_eager")
    got, got_g = grads_of(compiled, args)
    want, want_g = grads_of(lambda *x: ref_gqa_sigmoid(*x) * 2.0, args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- 5. double backward --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("sigmoid_causal", dict(row_block=3)),
        ("lightning", dict(row_block=0, recompute=False)),
        ("linear_causal", dict(row_block="auto", skip_tiles=False)),
        ("relu_window_default", dict(row_block=3)),
    ],
)
def test_gradgradcheck_through_streamed_sums(name, opts):
    """Second derivatives (docs/backends.md: `create_graph=True` works) through the running sums, their
    checkpointed blocks of rows and the `??` default, against finite differences."""
    kern = compile_torch(name, tile=3, **opts)
    args = make_inputs(name, dict(b=1, h=1, p=4, m=4, e=2, f=2), seed=15)
    leaves = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradgradcheck(lambda *x: kern(*x), leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["sigmoid_causal", "lightning", "sqrelu_slope"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_penalty_equals_the_reference(name, dtype):
    """A gradient penalty: d/dx |d out / d Q|^2 (create_graph=True) for every float input, in float32 (the CPU
    `exp` with its own derivative, docs/backends.md) and float64, against the reference's."""
    args = [a.to(dtype) for a in make_inputs(name, seed=16)]
    w = torch.randn(2, 2, 7, 4, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def penalty(fn):
        leaves = [a.clone().requires_grad_(True) for a in args]
        (dq,) = torch.autograd.grad((fn(*leaves) * w).sum(), leaves[:1], create_graph=True)
        got = torch.autograd.grad(dq.square().sum(), leaves, allow_unused=True)  # (Lightning is linear in Q)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(got, leaves)]

    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for opts in (dict(row_block=3), dict(row_block=0, recompute=False)):
        got = penalty(compile_torch(name, tile=3, **opts))
        want = penalty(REFS[name])
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == dtype
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=f"{opts} input {i}")
