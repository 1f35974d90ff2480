"""Review of session 22: the triton backend's generated backward kernels (docs/backends.md, "Autograd:
generated backward kernels"; docs/rewrite.md, "Gradients" and "Staging"), from the docs alone.

Every gradient is taken by ``torch.autograd.grad`` through ``einattn.compile(spec, backend="triton")`` on CPU
tensors (Triton's interpreter) and compared with INDEPENDENT references: softmax attention written by hand in
PyTorch (``torch.softmax``, ``masked_fill``, ``torch.logsumexp``, a sink as an extra logit column) and
differentiated by torch's autograd, and ``torch.nn.functional.scaled_dot_product_attention``. Every spec here
is written for this review. Where the plan says ``derived`` the test also makes sure the torch backend is not
what computed the gradients (``recompute_grads`` raises). Findings are strict expected failures whose reason
says what is wrong.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_cases import assert_close_grads, derived_only, randn, tri

import einattn

TOL = {torch.float64: 1e-9, torch.float32: 2e-5}

# ---------------------------------------------------------------------------------------------------------
# specs (written for this review)
# ---------------------------------------------------------------------------------------------------------

# plain softmax attention, no batch or head rank, other rank names (i queries, j keys, d, c head dims)
PLAIN = """
input  Q[i, d], K[j, d], V[j, c]
output O
S[j, i]  = Q[i, d] * K[j, d] * rsqrt(D)
MX[i]    = S[j, i] :: max(j)
EX[j, i] = exp(S[j, i] - MX[i])
Z[i]     = EX[j, i]
W[j, i]  = EX[j, i] / Z[i]
O[i, c]  = W[j, i] * V[j, c]
"""


def softmax(filt="", score="QK[b, h, m, p]", inputs="", params="", outputs="", extra="", den=None):
    """Softmax attention with batch and head ranks: ``score`` makes S from QK, ``den`` the denominator."""
    where = f"  where {filt}" if filt else ""
    den = den or "SK[b, h, p]"
    return f"""
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]{inputs}
{params}
output O{outputs}
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E){where}
S[b, h, m, p]  = {score}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = SN[b, h, m, p]
SD[b, h, p]    = {den}
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
{extra}
"""


CAUSAL = softmax("m <= p")
CROSS = softmax("m <= p + M - P")  # bottom-right aligned: the last P positions of M keys
WINDOW = softmax("p - W < m and m <= p", params="param  W = 3")
SYMWINDOW = softmax("abs(p - m) < W", params="param  W = 2")
SCALED = softmax(score="QK[b, h, m, p] / T", params="param  T = 0.7")
TEMP = softmax("m <= p", score="QK[b, h, m, p] / temp", inputs=", temp")
ALIBI = softmax("m <= p", score="QK[b, h, m, p] + slope[h] * (m - p)", inputs=", slope[h]")
ALIBI_CROSS = softmax("m <= p + M - P", score="QK[b, h, m, p] + slope[h] * (m - p)", inputs=", slope[h]")
SOFTCAP = softmax("m <= p", score="C * tanh(QK[b, h, m, p] / C)", params="param  C = 5.0")
SOFTCAP_LEARNED = softmax(score="cap * tanh(QK[b, h, m, p] / cap)", inputs=", cap")
BIAS = softmax(score="QK[b, h, m, p] + B[h, p, m]", inputs=", B[h, p, m]")
KEYBIAS = softmax(score="QK[b, h, m, p] + kb[h, m]", inputs=", kb[h, m]")
RELPOS = softmax(score="QK[b, h, m, p] + rb[h, p - m + M]", inputs=", rb[h, r]")
SINK_DEN = softmax("m <= p", inputs=", sink[h]", den="SK[b, h, p] + exp(sink[h] - GM[b, h, p])")
LSE = softmax("m <= p", outputs=", L", extra="L[b, h, p] = GM[b, h, p] + log(SK[b, h, p])")
LSE_CROSS = softmax("m <= p + M - P", outputs=", L", extra="L[b, h, p] = GM[b, h, p] + log(SK[b, h, p])")
LSE_WINDOW = softmax(
    "p - W < m and m <= p",
    params="param  W = 3",
    outputs=", L",
    extra="L[b, h, p] = GM[b, h, p] + log(SK[b, h, p])",
)
SHIFTED = softmax("m <= p + C", params="param  C = 0")

# a sink inside the max (gpt-oss): the max is taken over the keys and the sink logit
SINK_MAX = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
MK[b, h, p]    = QK[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MK[b, h, p], sink[h])
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = SN[b, h, m, p]
SD[b, h, p]    = SK[b, h, p] + exp(sink[h] - GM[b, h, p])
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""

SIGMOID = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
A[b, h, m, p]  = sigmoid(QK[b, h, m, p] + bias)
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""

# the division and the product with V in one statement (documented fallback)
ONE_STATEMENT = """
input  Q[p, e], K[m, e], V[m, f]
output O
S[m, p]  = Q[p, e] * K[m, e]
GM[p]    = S[m, p] :: max(m)
N[m, p]  = exp(S[m, p] - GM[p])
D[p]     = N[m, p]
O[p, f]  = N[m, p] * V[m, f] / D[p]
"""

# multi-query attention: one K and V shared by every head (dK, dV sum over the heads)
MQA = """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, m, f]
"""
# base-2 exponent with the log2(e) factor
EXP2 = CAUSAL.replace(
    "exp(S[b, h, m, p] - GM[b, h, p])", "exp2((S[b, h, m, p] - GM[b, h, p]) * 1.4426950408889634)"
)

# an output read by another output (its cotangent has two contributions)
ROWSUM = softmax("m <= p", outputs=", OS", extra="OS[b, h, p] = O[b, h, p, f]")
# the output's filter stricter than the scores': weights normalised over m <= p, only m < p used
LEAKY = CAUSAL.replace(
    "O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]",
    "O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]  where m < p",
)

# a padded batch: keys past each sequence's length are masked (a lookup in the filter)
KVLEN = softmax("m < klen[b]", inputs=", klen[b] : int")


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def qkv(b, h, p, m, e, f, dtype, seed=0, scale=1.0):
    return [
        randn(b, h, p, e, dtype=dtype, seed=seed, scale=scale),
        randn(b, h, m, e, dtype=dtype, seed=seed + 1, scale=scale),
        randn(b, h, m, f, dtype=dtype, seed=seed + 2),
    ]


def grads(fn, xs, cots, wrt=None):
    """d(sum <out_k, cot_k>)/d x for the floats x of ``xs`` chosen by ``wrt`` (indices; default all float
    tensors); a cotangent None leaves that output out of the loss."""
    leaves = [
        x.detach().clone().requires_grad_(x.is_floating_point()) if torch.is_tensor(x) else x for x in xs
    ]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, c) for o, c in zip(outs, cots) if c is not None]
    idx = (
        wrt
        if wrt is not None
        else [i for i, x in enumerate(leaves) if torch.is_tensor(x) and x.is_floating_point()]
    )
    got = torch.autograd.grad([o for o, _ in pairs], [leaves[i] for i in idx], [c for _, c in pairs])
    return list(got)


def close(got, want, dtype, names=None):
    assert_close_grads(got, want, TOL[dtype], names)


def tri_grads(kernel, xs, cots, wrt=None):
    """Gradients through the triton kernel; with a derived plan, the torch backend must not run."""
    ctx = derived_only() if kernel.backward_plan.kind == "derived" else contextlib.nullcontext()
    with ctx:
        return grads(kernel, xs, cots, wrt)


def cot_like(outs_shapes, dtype, seed=100):
    return [randn(*s, dtype=dtype, seed=seed + i) for i, s in enumerate(outs_shapes)]


def mask_of(kind, P, M, **kw):
    p = torch.arange(P)[:, None]
    m = torch.arange(M)[None, :]
    if kind is None:
        return torch.ones(P, M, dtype=torch.bool)
    if kind == "causal":
        return m <= p
    if kind == "cross":
        return m <= p + M - P
    if kind == "shift":
        return m <= p + kw["c"]
    if kind == "window":
        return (p - kw["w"] < m) & (m <= p)
    if kind == "symwindow":
        return (p - m).abs() < kw["w"]
    raise ValueError(kind)


def ref_attention(q, k, v, *, scale=None, mask=None, bias=None, cap=None, sink=None, lse=False):
    """Softmax attention by hand: q [..., P, E], k [..., M, E], v [..., M, F]; mask [P, M] (True: visible,
    or broadcastable to the scores); a row with no visible key gives 0 (and a log-sum-exp of 0)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if cap is not None:
        s = cap * torch.tanh(s / cap)
    if bias is not None:
        s = s + bias
    mask = torch.ones(s.shape[-2:], dtype=torch.bool) if mask is None else mask
    mask = mask.expand(s.shape)
    alive = mask.any(-1, keepdim=True)
    s = s.masked_fill(~mask, float("-inf"))
    if sink is not None:  # an extra logit column that takes part in the normalisation only
        s = torch.cat([s, sink.expand(*s.shape[:-1], 1)], -1)
        a = torch.softmax(s, -1)[..., :-1]
        return a @ v
    s = torch.where(alive, s, torch.zeros_like(s))
    a = torch.softmax(s, -1) * alive
    o = a @ v
    if lse:
        return o, torch.where(alive[..., 0], torch.logsumexp(s, -1), torch.zeros_like(s[..., 0]))
    return o


# ---------------------------------------------------------------------------------------------------------
# plain, causal, cross attention
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plain_softmax_without_batch_ranks_against_sdpa(dtype):
    kernel = tri(PLAIN)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    assert "dV, dK (fused over i)" in str(kernel.backward_plan) and "dQ (fused over j)" in str(
        kernel.backward_plan
    )
    q, k, v = randn(9, 5, dtype=dtype), randn(13, 5, dtype=dtype, seed=1), randn(13, 3, dtype=dtype, seed=2)
    cot = randn(9, 3, dtype=dtype, seed=3)
    got = tri_grads(kernel, [q, k, v], [cot])

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q[None], k[None], v[None])[0]

    want = grads(sdpa, [q.double(), k.double(), v.double()], [cot.double()])
    close(got, want, dtype, "QKV")
    assert all(g.dtype == dtype for g in got)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_causal_self_attention_against_sdpa(dtype):
    kernel = tri(CAUSAL)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(2, 3, 11, 11, 4, 3, dtype)
    cot = randn(2, 3, 11, 3, dtype=dtype, seed=7)
    got = tri_grads(kernel, xs, [cot])

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    want = grads(sdpa, [x.double() for x in xs], [cot.double()])
    close(got, want, dtype, "QKV")


def test_causal_self_attention_several_tiles_against_handwritten():
    """A small tile: several key and query tiles, a ragged last one, tiles skipped above the diagonal."""
    kernel = tri(CAUSAL, tile=8)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 1, 21, 21, 3, 2, torch.float64, seed=4)
    cot = randn(1, 1, 21, 2, seed=9)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", 21, 21)), xs, [cot])
    close(got, want, torch.float64, "QKV")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_causal_cross_attention_more_queries_than_keys(dtype):
    """P > M, bottom-right aligned: the first P - M query rows see no key; their output and dQ are 0."""
    kernel = tri(CROSS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P, M = 13, 7
    xs = qkv(1, 2, P, M, 4, 3, dtype, seed=11)
    cot = randn(1, 2, P, 3, dtype=dtype, seed=12)
    got = tri_grads(kernel, xs, [cot])
    assert torch.all(got[0][:, :, : P - M] == 0)
    # (row P - M sees one key: its softmax is constant, dQ 0 too; later rows see several)
    assert torch.all(got[0][:, :, P - M + 1 :].abs().sum(-1) > 0)
    want = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("cross", P, M)),
        [x.double() for x in xs],
        [cot.double()],
    )
    close(got, want, dtype, "QKV")


def test_causal_cross_attention_fewer_queries_than_keys_against_sdpa():
    """P < M (decoding a chunk against a cache): every row sees M - P + p + 1 keys; SDPA with the
    bottom-right mask."""
    kernel = tri(CROSS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P, M = 5, 12
    xs = qkv(2, 1, P, M, 4, 5, torch.float64, seed=13)
    cot = randn(2, 1, P, 5, seed=14)
    got = tri_grads(kernel, xs, [cot])
    mask = mask_of("cross", P, M)
    want = grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), xs, [cot])
    close(got, want, torch.float64, "QKV")


@settings(max_examples=10, deadline=None)
@given(
    p=st.integers(1, 20),
    m=st.integers(1, 20),
    c=st.integers(-6, 4),
    tile=st.sampled_from([8, 16, 64]),
    seed=st.integers(0, 1000),
)
def test_shifted_causal_filter_random_offsets(p, m, c, tile, seed):
    """`m <= p + C` for random C and tiles: C < 0 leaves the first -C rows without a key (zero gradient)."""
    kernel = tri(SHIFTED, params={"C": c}, tile=tile)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 1, p, m, 3, 2, torch.float64, seed=seed)
    cot = randn(1, 1, p, 2, seed=seed + 5)
    got = tri_grads(kernel, xs, [cot])
    mask = mask_of("shift", p, m, c=c)
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask), xs, [cot])
    close(got, want, torch.float64, "QKV")
    dead = ~mask.any(-1)
    assert torch.all(got[0][0, 0][dead] == 0)


# ---------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sliding_window_with_rows_past_the_keys(dtype):
    """P > M + W - 1: the last rows have no key in their window (zero dQ); W = 3 via the param."""
    kernel = tri(WINDOW, tile=8)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P, M = 19, 12
    xs = qkv(1, 2, P, M, 4, 3, dtype, seed=21)
    cot = randn(1, 2, P, 3, dtype=dtype, seed=22)
    got = tri_grads(kernel, xs, [cot])
    mask = mask_of("window", P, M, w=3)
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask), [x.double() for x in xs], [cot.double()])
    close(got, want, dtype, "QKV")
    assert torch.all(got[0][:, :, M + 2 :] == 0)


def test_sliding_window_param_override():
    kernel = tri(WINDOW, params={"W": 5})
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 1, 10, 10, 4, 4, torch.float64, seed=23)
    cot = randn(1, 1, 10, 4, seed=24)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask_of("window", 10, 10, w=5)), xs, [cot])
    close(got, want, torch.float64, "QKV")


def test_symmetric_window_with_abs():
    kernel = tri(SYMWINDOW)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 2, 9, 12, 3, 3, torch.float64, seed=25)
    cot = randn(1, 2, 9, 3, seed=26)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask_of("symwindow", 9, 12, w=2)), xs, [cot])
    close(got, want, torch.float64, "QKV")


# ---------------------------------------------------------------------------------------------------------
# score transforms: ALiBi, softcapping, temperature, biases
# ---------------------------------------------------------------------------------------------------------


def alibi_bias(slope, P, M):
    p = torch.arange(P, dtype=slope.dtype)[:, None]
    m = torch.arange(M, dtype=slope.dtype)[None, :]
    return slope[:, None, None] * (m - p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_alibi_learnable_slopes(dtype):
    kernel = tri(ALIBI)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    assert "dslope" in str(kernel.backward_plan)
    H, P = 3, 10
    q, k, v = qkv(2, H, P, P, 4, 3, dtype, seed=31)
    slope = torch.tensor([0.5, 0.25, -0.3], dtype=dtype)
    cot = randn(2, H, P, 3, dtype=dtype, seed=32)
    got = tri_grads(kernel, [q, k, v, slope], [cot])

    def ref(q, k, v, slope):
        return ref_attention(q, k, v, mask=mask_of("causal", P, P), bias=alibi_bias(slope, P, P))

    want = grads(ref, [x.double() for x in (q, k, v, slope)], [cot.double()])
    close(got, want, dtype, ["Q", "K", "V", "slope"])
    assert got[3].abs().min() > 0


def test_alibi_causal_cross_attention_gradients():
    """ALiBi on bottom-right causal cross-attention, P > M: correct gradients (whatever computes them)."""
    kernel = tri(ALIBI_CROSS)
    H, P, M = 2, 9, 6
    q, k, v = qkv(1, H, P, M, 3, 3, torch.float64, seed=33)
    slope = torch.tensor([0.7, -0.2], dtype=torch.float64)
    cot = randn(1, H, P, 3, seed=34)
    got = tri_grads(kernel, [q, k, v, slope], [cot])

    def ref(q, k, v, slope):
        return ref_attention(q, k, v, mask=mask_of("cross", P, M), bias=alibi_bias(slope, P, M))

    want = grads(ref, [q, k, v, slope], [cot])
    close(got, want, torch.float64, ["Q", "K", "V", "slope"])


def test_alibi_causal_cross_attention_is_derived():
    """(Before commit 1abe349 this fell back with 'a stage does not check (undefined name `M`)': a per-row
    stage restored an absence with a filter naming size M, which none of its inputs bound.)"""
    kernel = tri(ALIBI_CROSS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    H, P, M = 2, 9, 6
    q, k, v = qkv(1, H, P, M, 3, 3, torch.float64, seed=35)
    slope = torch.tensor([0.7, -0.2], dtype=torch.float64)
    cot = randn(1, H, P, 3, seed=36)
    got = tri_grads(kernel, [q, k, v, slope], [cot])
    want = grads(
        lambda q, k, v, s: ref_attention(q, k, v, mask=mask_of("cross", P, M), bias=alibi_bias(s, P, M)),
        [q, k, v, slope],
        [cot],
    )
    close(got, want, torch.float64, ["Q", "K", "V", "slope"])


def test_softcap_with_large_logits():
    """C = 5 with logits of about +-50: tanh saturates; the cap's derivative (1 - tanh^2) is tiny there."""
    kernel = tri(SOFTCAP)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 8
    xs = qkv(1, 2, P, P, 4, 3, torch.float64, seed=41, scale=7.0)
    s = xs[0] @ xs[1].transpose(-1, -2) / 2
    assert s.abs().max() > 40
    cot = randn(1, 2, P, 3, seed=42)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", P, P), cap=5.0), xs, [cot])
    close(got, want, torch.float64, "QKV")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_softcap_learnable_cap(dtype):
    kernel = tri(SOFTCAP_LEARNED)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 2, 7, 9, 4, 3, dtype, seed=43, scale=3.0)
    cap = torch.tensor(4.0, dtype=dtype)
    cot = randn(1, 2, 7, 3, dtype=dtype, seed=44)
    got = tri_grads(kernel, [*xs, cap], [cot])
    want = grads(
        lambda q, k, v, c: ref_attention(q, k, v, cap=c), [x.double() for x in (*xs, cap)], [cot.double()]
    )
    close(got, want, dtype, ["Q", "K", "V", "cap"])
    assert got[3].shape == () and got[3].abs() > 1e-6


def test_temperature_param_and_override():
    for T in (0.7, 2.5):
        kernel = tri(SCALED) if T == 0.7 else tri(SCALED, params={"T": T})
        assert kernel.backward_plan.kind == "derived", kernel.backward_plan
        xs = qkv(1, 1, 6, 8, 4, 2, torch.float64, seed=51)
        cot = randn(1, 1, 6, 2, seed=52)
        got = tri_grads(kernel, xs, [cot])
        want = grads(lambda q, k, v, T=T: ref_attention(q, k, v, scale=0.5 / T), xs, [cot])
        close(got, want, torch.float64, "QKV")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_learnable_temperature_scalar_input(dtype):
    kernel = tri(TEMP)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(2, 1, 8, 8, 4, 3, dtype, seed=53)
    temp = torch.tensor(0.8, dtype=dtype)
    cot = randn(2, 1, 8, 3, dtype=dtype, seed=54)
    got = tri_grads(kernel, [*xs, temp], [cot])
    want = grads(
        lambda q, k, v, t: ref_attention(q, k, v, scale=0.5 / t, mask=mask_of("causal", 8, 8)),
        [x.double() for x in (*xs, temp)],
        [cot.double()],
    )
    close(got, want, dtype, ["Q", "K", "V", "temp"])
    # a Python number for the temperature: the other gradients are the same
    got2 = tri_grads(kernel, [*xs, 0.8], [cot], wrt=[0, 1, 2])
    close(got2, want[:3], dtype, "QKV")


def test_learnable_bias_tensor_over_queries_and_keys():
    """A bias tensor B[h, p, m] added to the scores: its gradient is a query-by-key tensor. The plan is the
    torch backend; the gradients must still be right."""
    kernel = tri(BIAS)
    plan = kernel.backward_plan
    assert plan.kind == "torch" and "1-pass" in plan.reason, plan
    H, P, M = 2, 6, 7
    xs = qkv(2, H, P, M, 3, 3, torch.float64, seed=61)
    bias = randn(H, P, M, seed=62)
    cot = randn(2, H, P, 3, seed=63)
    got = grads(kernel, [*xs, bias], [cot])
    want = grads(lambda q, k, v, b: ref_attention(q, k, v, bias=b), [*xs, bias], [cot])
    close(got, want, torch.float64, ["Q", "K", "V", "B"])
    with pytest.raises(einattn.EinError, match="no generated backward"):
        tri(BIAS, backward="derived")


def test_learnable_per_key_bias():
    """kb[h, m]: its gradient sums over the batch and the queries (before commit e1da1f2 this fell back with
    'a value spans three tile axes (m, b, f)')."""
    kernel = tri(KEYBIAS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    H, P, M = 2, 5, 7
    xs = qkv(2, H, P, M, 3, 3, torch.float64, seed=64)
    kb = randn(H, M, seed=65)
    cot = randn(2, H, P, 3, seed=66)
    got = tri_grads(kernel, [*xs, kb], [cot])
    want = grads(lambda q, k, v, b: ref_attention(q, k, v, bias=b[:, None, :]), [*xs, kb], [cot])
    close(got, want, torch.float64, ["Q", "K", "V", "kb"])


def test_relative_position_bias_table():
    """A T5-style table rb[h, p - m + M]: right gradients for the table (whatever computes them)."""
    kernel = tri(RELPOS)
    assert kernel.backward_plan.kind in ("derived", "torch")
    if kernel.backward_plan.kind == "torch":
        assert "1-pass" in kernel.backward_plan.reason, kernel.backward_plan
    H, P, M = 2, 5, 6
    xs = qkv(1, H, P, M, 3, 2, torch.float64, seed=67)
    rb = randn(H, P + M, seed=68)
    cot = randn(1, H, P, 2, seed=69)
    got = tri_grads(kernel, [*xs, rb], [cot])
    idx = torch.arange(P)[:, None] - torch.arange(M)[None, :] + M
    want = grads(lambda q, k, v, t: ref_attention(q, k, v, bias=t[:, idx]), [*xs, rb], [cot])
    close(got, want, torch.float64, ["Q", "K", "V", "rb"])
    assert got[3][:, 0].abs().max() == 0  # index 0 is never read (p - m + M >= 1)


# ---------------------------------------------------------------------------------------------------------
# sinks, sigmoid, log-sum-exp
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sink_in_the_denominator(dtype):
    kernel = tri(SINK_DEN)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    H, P = 3, 9
    xs = qkv(1, H, P, P, 4, 3, dtype, seed=71)
    sink = torch.tensor([0.3, -1.0, 1.5], dtype=dtype)
    cot = randn(1, H, P, 3, dtype=dtype, seed=72)
    got = tri_grads(kernel, [*xs, sink], [cot])
    want = grads(
        lambda q, k, v, s: ref_attention(q, k, v, mask=mask_of("causal", P, P), sink=s[:, None, None]),
        [x.double() for x in (*xs, sink)],
        [cot.double()],
    )
    close(got, want, dtype, ["Q", "K", "V", "sink"])
    assert got[3].abs().min() > 0


def test_sink_inside_the_max_gradients():
    kernel = tri(SINK_MAX)
    H, P = 2, 8
    xs = qkv(1, H, P, P, 4, 3, torch.float64, seed=73)
    sink = torch.tensor([2.0, -0.5], dtype=torch.float64)
    cot = randn(1, H, P, 3, seed=74)
    got = grads(kernel, [*xs, sink], [cot])
    want = grads(
        lambda q, k, v, s: ref_attention(q, k, v, mask=mask_of("causal", P, P), sink=s[:, None, None]),
        [*xs, sink],
        [cot],
    )
    close(got, want, torch.float64, ["Q", "K", "V", "sink"])


def test_sink_inside_the_max_is_derived():
    assert tri(SINK_MAX).backward_plan.kind == "derived", tri(SINK_MAX).backward_plan


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sigmoid_attention_with_learnable_scalar_bias(dtype):
    kernel = tri(SIGMOID)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P, M = 9, 6
    xs = qkv(1, 2, P, M, 4, 3, dtype, seed=81)
    bias = torch.tensor(-1.5, dtype=dtype)
    cot = randn(1, 2, P, 3, dtype=dtype, seed=82)
    got = tri_grads(kernel, [*xs, bias], [cot])

    def ref(q, k, v, b):
        s = q @ k.transpose(-1, -2) / 2
        a = torch.sigmoid(s + b) * mask_of("causal", P, M)
        return a @ v

    want = grads(ref, [x.double() for x in (*xs, bias)], [cot.double()])
    close(got, want, dtype, ["Q", "K", "V", "bias"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_sum_exp_second_output_both_cotangents(dtype):
    kernel = tri(LSE)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 10
    xs = qkv(2, 1, P, P, 4, 3, dtype, seed=91)
    cots = [randn(2, 1, P, 3, dtype=dtype, seed=92), randn(2, 1, P, dtype=dtype, seed=93)]
    got = tri_grads(kernel, xs, cots)
    want = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", P, P), lse=True),
        [x.double() for x in xs],
        [c.double() for c in cots],
    )
    close(got, want, dtype, "QKV")


@pytest.mark.parametrize("used", ["O", "L"])
def test_log_sum_exp_only_one_output_in_the_loss(used):
    """One output left out of the loss (its cotangent None, then explicitly zero): the same gradients."""
    kernel = tri(LSE)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 8
    xs = qkv(1, 2, P, P, 4, 3, torch.float64, seed=94)
    cot_o, cot_l = randn(1, 2, P, 3, seed=95), randn(1, 2, P, seed=96)
    cots = [cot_o, None] if used == "O" else [None, cot_l]
    got = tri_grads(kernel, xs, cots)
    zeros = [cot_o, torch.zeros_like(cot_l)] if used == "O" else [torch.zeros_like(cot_o), cot_l]
    got_zero = tri_grads(kernel, xs, zeros)
    ref = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", P, P), lse=True),
        xs,
        cots,
        wrt=[0, 1, 2] if used == "O" else [0, 1],
    )
    want = ref if used == "O" else [*ref, torch.zeros_like(xs[2])]
    close(got, want, torch.float64, "QKV")
    close(got_zero, want, torch.float64, "QKV")
    if used == "L":  # L does not depend on V
        assert torch.all(got[2] == 0)


def test_log_sum_exp_cross_attention_and_window_gradients():
    """LSE on bottom-right cross-attention (P > M: rows without keys) and on a window: right gradients."""
    for spec, kind, P, M in ((LSE_CROSS, "cross", 9, 5), (LSE_WINDOW, "window", 12, 8)):
        kernel = tri(spec)
        xs = qkv(1, 1, P, M, 3, 2, torch.float64, seed=97)
        cots = [randn(1, 1, P, 2, seed=98), randn(1, 1, P, seed=99)]
        got = tri_grads(kernel, xs, cots)
        mask = mask_of(kind, P, M, w=3)
        want = grads(lambda q, k, v, mask=mask: ref_attention(q, k, v, mask=mask, lse=True), xs, cots)
        close(got, want, torch.float64, "QKV")
        assert torch.all(got[0][0, 0][~mask.any(-1)] == 0)


@pytest.mark.parametrize("spec", ["cross", "window"])
def test_log_sum_exp_cross_attention_and_window_are_derived(spec):
    """(Before commit 1abe349 both fell back with 'a stage does not check (undefined name `M`)'.)"""
    kernel = tri(LSE_CROSS if spec == "cross" else LSE_WINDOW)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan


# ---------------------------------------------------------------------------------------------------------
# shapes, layouts, dtypes, large logits
# ---------------------------------------------------------------------------------------------------------


def test_value_head_dim_differs_from_query_head_dim():
    """E = 16 (fills its padding), F = 7; B = 2 and H = 3."""
    kernel = tri(CAUSAL)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(2, 3, 6, 6, 16, 7, torch.float64, seed=101)
    cot = randn(2, 3, 6, 7, seed=102)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), xs, [cot])
    close(got, want, torch.float64, "QKV")
    assert [tuple(g.shape) for g in got] == [(2, 3, 6, 16), (2, 3, 6, 16), (2, 3, 6, 7)]


def test_multi_query_attention_shared_keys_and_values():
    kernel = tri(MQA)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    B, H, P = 2, 3, 7
    q, k, v = randn(B, H, P, 4, seed=103), randn(B, P, 4, seed=104), randn(B, P, 3, seed=105)
    cot = randn(B, H, P, 3, seed=106)
    got = tri_grads(kernel, [q, k, v], [cot])
    want = grads(
        lambda q, k, v: F.scaled_dot_product_attention(
            q, k[:, None].expand(B, H, P, 4), v[:, None], is_causal=True
        ),
        [q, k, v],
        [cot],
    )
    close(got, want, torch.float64, "QKV")


def test_exp2_with_log2e_factor():
    kernel = tri(EXP2)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = qkv(1, 2, 8, 8, 4, 3, torch.float64, seed=107)
    cot = randn(1, 2, 8, 3, seed=108)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), xs, [cot])
    close(got, want, torch.float64, "QKV")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_contiguous_inputs_and_cotangent(dtype):
    """Q, K, V as transposed views of [b, p, h, e] storage; the cotangent a permuted view too."""
    kernel = tri(WINDOW)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    B, H, P, M = 2, 2, 9, 9
    q = randn(B, P, H, 4, dtype=dtype, seed=111).transpose(1, 2)
    k = randn(B, M, H, 4, dtype=dtype, seed=112).transpose(1, 2)
    v = randn(B, H, 3, M, dtype=dtype, seed=113).transpose(2, 3)
    cot = randn(P, 3, B, H, dtype=dtype, seed=114).permute(2, 3, 0, 1)
    assert not any(t.is_contiguous() for t in (q, k, v, cot))
    got = tri_grads(kernel, [q, k, v], [cot])
    want = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("window", P, M, w=3)),
        [x.double().contiguous() for x in (q, k, v)],
        [cot.double().contiguous()],
    )
    close(got, want, dtype, "QKV")


def test_sum_loss_gives_a_stride_zero_cotangent():
    """`out.sum().backward()` hands the backward an expanded (stride 0) cotangent."""
    kernel = tri(CROSS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = [x.requires_grad_() for x in qkv(1, 2, 7, 10, 4, 3, torch.float64, seed=115)]
    with derived_only():
        kernel(*xs).sum().backward()
    ref = [x.detach().clone().requires_grad_() for x in xs]
    ref_attention(*ref, mask=mask_of("cross", 7, 10)).sum().backward()
    close([x.grad for x in xs], [x.grad for x in ref], torch.float64, "QKV")


def test_mixed_float_dtypes():
    """float32 Q with float64 K and V: computed in float64 (promotion); each gradient in its input's dtype."""
    kernel = tri(CAUSAL)
    q, k, v = qkv(1, 1, 7, 7, 4, 3, torch.float64, seed=116)
    q = q.float()
    cot = randn(1, 1, 7, 3, seed=117)
    got = tri_grads(kernel, [q, k, v], [cot])
    assert [g.dtype for g in got] == [torch.float32, torch.float64, torch.float64]
    want = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", 7, 7)), [q.double(), k, v], [cot]
    )
    close(got[1:], want[1:], torch.float64, "KV")
    close(got[:1], want[:1], torch.float32, "Q")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_large_logits(dtype):
    """Scores of about +-50 (the max subtraction matters: exp(50) overflows float32's exp of the sum)."""
    kernel = tri(CAUSAL)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 9
    xs = qkv(1, 2, P, P, 4, 3, dtype, seed=121, scale=7.0)
    s = (xs[0].double() @ xs[1].double().transpose(-1, -2)) / 2
    assert s.abs().max() > 45
    cot = randn(1, 2, P, 3, dtype=dtype, seed=122)
    got = tri_grads(kernel, xs, [cot])
    want = grads(
        lambda q, k, v: ref_attention(q, k, v, mask=mask_of("causal", P, P)),
        [x.double() for x in xs],
        [cot.double()],
    )
    close(got, want, dtype, "QKV")


# ---------------------------------------------------------------------------------------------------------
# the option, the plan, the fallbacks
# ---------------------------------------------------------------------------------------------------------


AGREE = {
    "cross": (CROSS, None),
    "alibi": (ALIBI, "slope"),
    "sigmoid": (SIGMOID, "bias"),
    "sink": (SINK_DEN, "sink"),
}


@pytest.mark.parametrize("name", sorted(AGREE))
def test_derived_and_torch_options_agree(name):
    spec, extra = AGREE[name]
    derived = tri(spec, backward="derived")
    recomputed = tri(spec, backward="torch")
    assert derived.backward_plan.kind == "derived"
    assert recomputed.backward_plan.kind == "torch" and recomputed.backward_plan.reason == "backward='torch'"
    P, M = (8, 5) if name in ("cross", "sigmoid") else (7, 7)
    xs = qkv(1, 2, P, M, 4, 3, torch.float64, seed=131)
    if extra:
        xs.append(
            torch.tensor([0.4, -0.6], dtype=torch.float64) if extra != "bias" else torch.tensor(0.3).double()
        )
    cot = randn(1, 2, P, 3, seed=132)
    a = tri_grads(derived, xs, [cot])
    b = grads(recomputed, xs, [cot])
    close(a, b, torch.float64)
    # and the same forward outputs
    assert torch.allclose(derived(*xs), recomputed(*xs), rtol=0, atol=1e-12)


def test_one_statement_division_is_derived():
    # (fixed after the review: `O = N * V / D` in one statement: the denominator's cotangent
    # sum_(m, f) dO * N * V * (-1 / D^2) is rowsum(dO * O) * (-1 / D) with the output saved)
    kernel = tri(ONE_STATEMENT)
    plan = kernel.backward_plan
    assert plan.kind == "derived" and "dD_O (general)" in str(plan), plan
    xs = [randn(6, 4, seed=141), randn(8, 4, seed=142), randn(8, 3, seed=143)]
    cot = randn(6, 3, seed=144)
    got = tri_grads(kernel, xs, [cot])
    want = grads(lambda q, k, v: ref_attention(q, k, v, scale=1.0), xs, [cot])
    close(got, want, torch.float64, "QKV")


def test_padded_batch_lookup_is_derived_with_right_gradients():
    """`m < klen[b]` (fixed after the review: the row statistics' absence, which the analysis cannot describe,
    crosses the stages as an indicator); a sequence with no key (klen 0) gets zero gradients."""
    kernel = tri(KVLEN)
    plan = kernel.backward_plan
    assert plan.kind == "derived", plan
    B, P, M = 3, 5, 7
    xs = qkv(B, 1, P, M, 3, 2, torch.float64, seed=151)
    klen = torch.tensor([4, 7, 0])
    cot = randn(B, 1, P, 2, seed=152)
    got = tri_grads(kernel, [*xs, klen], [cot], wrt=[0, 1, 2])
    mask = (torch.arange(M)[None, :] < klen[:, None])[:, None, None, :]
    want = grads(lambda q, k, v: ref_attention(q, k, v, mask=mask), xs, [cot])
    close(got, want, torch.float64, "QKV")
    assert torch.all(got[1][0, :, 4:] == 0) and torch.all(got[2][0, :, 4:] == 0)
    assert all(torch.all(g[2] == 0) for g in got)


# ---------------------------------------------------------------------------------------------------------
# saved forward outputs (commit 1abe349: the derived backward reads the outputs autograd keeps)
# ---------------------------------------------------------------------------------------------------------


def test_output_read_by_another_output():
    """O is saved and read by OS = sum_f O: the rowsum(dO * O) rule must use O's whole cotangent."""
    kernel = tri(ROWSUM)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 8
    xs = qkv(1, 2, P, P, 4, 3, torch.float64, seed=161)
    cots = [randn(1, 2, P, 3, seed=162), randn(1, 2, P, seed=163)]
    got = tri_grads(kernel, xs, cots)

    def ref(q, k, v):
        o = ref_attention(q, k, v, mask=mask_of("causal", P, P))
        return o, o.sum(-1)

    want = grads(ref, xs, cots)
    close(got, want, torch.float64, "QKV")


def test_output_filter_stricter_than_the_scores():
    """A normalised over m <= p, O summed over m < p only (row 0 has no term): rowsum(dO * O) would not equal
    sum_m dA * A over A's points, so the sum must stay."""
    kernel = tri(LEAKY)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    P = 8
    xs = qkv(1, 2, P, P, 4, 3, torch.float64, seed=164)
    cot = randn(1, 2, P, 3, seed=165)
    got = tri_grads(kernel, xs, [cot])

    def ref(q, k, v):
        s = (q @ k.transpose(-1, -2) / 2).masked_fill(~mask_of("causal", P, P), float("-inf"))
        return (torch.softmax(s, -1) * mask_of("shift", P, P, c=-1)) @ v

    want = grads(ref, xs, [cot])
    close(got, want, torch.float64, "QKV")


def test_output_modified_in_place_is_detected():
    """The outputs are saved for the backward: modifying one in place must not give silently wrong
    gradients (torch's version counter raises, as for any saved tensor)."""
    kernel = tri(CAUSAL)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = [x.requires_grad_() for x in qkv(1, 1, 6, 6, 4, 3, torch.float64, seed=166)]
    out = kernel(*xs)
    out.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out, xs, randn(1, 1, 6, 3, seed=167))


def test_backward_of_an_earlier_call_uses_its_own_outputs():
    """Two forward calls, then the first one's backward: it must read the first call's saved outputs."""
    kernel = tri(CROSS)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    first = [x.requires_grad_() for x in qkv(1, 2, 7, 9, 4, 3, torch.float64, seed=168)]
    second = [x.requires_grad_() for x in qkv(1, 2, 7, 9, 4, 3, torch.float64, seed=169, scale=3.0)]
    out1, out2 = kernel(*first), kernel(*second)
    cot = randn(1, 2, 7, 3, seed=170)
    with derived_only():
        got2 = torch.autograd.grad(out2, second, cot)
        got1 = torch.autograd.grad(out1, first, cot)
    mask = mask_of("cross", 7, 9)
    close(
        list(got1),
        grads(lambda q, k, v: ref_attention(q, k, v, mask=mask), first, [cot]),
        torch.float64,
        "QKV",
    )
    close(
        list(got2),
        grads(lambda q, k, v: ref_attention(q, k, v, mask=mask), second, [cot]),
        torch.float64,
        "QKV",
    )


def test_bias_tensor_derived_unless_its_own_gradient_is_asked():
    # (fixed after the review: a learnable B[h, p, m] needs dB, a key-by-query gradient that no fused stage
    # writes, and falls back, saying so; a fixed bias, not requiring a gradient, takes the derived kernels)
    kernel = tri(BIAS)
    plan = kernel.backward_plan
    assert plan.kind == "torch" and "`dB` spans p and m" in plan.reason, plan
    P, M = 7, 9
    xs = qkv(2, 2, P, M, 4, 3, torch.float64, seed=61)
    bias = randn(2, P, M, seed=62)
    cot = randn(2, 2, P, 3, seed=63)
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    with derived_only():  # (the bias requires no gradient: the call's backward is derived)
        got = torch.autograd.grad(kernel(*leaves, bias), leaves, cot)
    want = grads(lambda q, k, v, b: ref_attention(q, k, v, bias=b[None]), [*xs, bias], [cot], wrt=[0, 1, 2])
    close(got, want, torch.float64, "QKV")
    everything = grads(kernel, [*xs, bias], [cot])  # (the fallback, dB included)
    close(
        everything,
        grads(lambda q, k, v, b: ref_attention(q, k, v, bias=b[None]), [*xs, bias], [cot]),
        torch.float64,
        ["Q", "K", "V", "B"],
    )


def test_fallback_reason_names_the_tensor():
    plan = tri(BIAS).backward_plan
    assert plan.kind == "torch" and "`dB`" in plan.reason, plan.reason


def test_general_forward_and_empty_ranks_use_the_torch_backend():
    plan = tri(CAUSAL, path="general").backward_plan
    assert plan.kind == "torch" and plan.reason == "the forward pass is not one fused kernel", plan
    kernel = tri(CAUSAL)
    assert kernel.backward_plan.kind == "derived"
    for P, M in ((0, 5), (5, 0)):  # a rank of size 0: the gradients are zeros of the inputs' shapes
        xs = qkv(1, 2, P, M, 4, 3, torch.float64)
        got = grads(kernel, xs, [randn(1, 2, P, 3)])
        assert [tuple(g.shape) for g in got] == [tuple(x.shape) for x in xs]
        assert all(torch.all(g == 0) for g in got)
