"""The triton backend's generated backward: the derived backward cascade, staged into 1-pass programs, each
one fused kernel (lowering/triton_backward.py). Interpreter on CPU (a GPU when present), against PyTorch's
autograd through the torch backend and, for softmax attention, against SDPA's gradients."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_cases import DEVICE, EXAMPLES, refuse_recompute

import einattn

DERIVED = ["causal", "attention_3pass", "alibi", "softcap", "sliding_window", "sigmoid", "lse"]
SIZES = dict(b=1, h=2, p=21, m=19, e=5, f=3)


def _inputs(prog, sizes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in prog.inputs:
        shape = [sizes.get(r, 2) for r in prog.tensor(n).ranks]
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if n == "slope":
            x = x.abs()
        out.append(x.to(dtype).to(DEVICE))
    return out


def _grads(kernel, xs, cots=None, seed=1):
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    out = kernel(*leaves)
    out = out if isinstance(out, tuple) else (out,)
    if cots is None:
        g = torch.Generator().manual_seed(seed)
        cots = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(o.device) for o in out]
    return torch.autograd.grad(out, leaves, cots, allow_unused=True), cots


def _close(got, want, tol, names):
    for name, a, b in zip(names, got, want):
        scale = max(1.0, b.abs().max().item())
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * scale, f"d{name}: {err} (scale {scale})"


@pytest.mark.parametrize("spec", DERIVED)
def test_generated_backward_equals_autograd_through_torch(spec):
    path = EXAMPLES / f"{spec}.ein"
    kernel = einattn.compile(path, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        xs = _inputs(kernel.original, SIZES, dtype)
        got, cots = _grads(kernel, xs)
        want, _ = _grads(
            einattn.compile(path, backend="torch"), [x.cpu() for x in xs], [c.cpu() for c in cots]
        )
        _close([g.cpu() for g in got], want, tol, kernel.original.inputs)


def test_the_derived_kernels_run_not_the_torch_backend(monkeypatch):
    kernel = einattn.compile(EXAMPLES / "causal.ein", backend="triton")

    refuse_recompute(monkeypatch)
    xs = _inputs(kernel.original, SIZES, torch.float32)
    got, cots = _grads(kernel, xs)
    q, k, v = (x.detach().cpu().double().requires_grad_() for x in xs)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = torch.autograd.grad(out, (q, k, v), cots[0].cpu().double())
    _close([g.cpu() for g in got], want, 2e-5, "QKV")
    plan = str(kernel.backward_plan)
    assert plan == (
        "derived: 4 stages: GM, SD (fused over m); dSD_A (general); dV, dK (fused over p); dQ (fused over m)"
    )  # (dSD_A = rowsum(dAV * AV) / SD from the saved output: FlashAttention-2's D)


ABSENT_ROWS = """
input  Q[b, p, e], K[b, m, e], V[b, m, f]
output O

S[b, m, p] = Q[b, p, e] * K[b, m, e]  where m <= p - 4
GM[b, p]   = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - GM[b, p])
D[b, p]    = N[b, m, p]
A[b, m, p] = N[b, m, p] / D[b, p]
O[b, p, f] = A[b, m, p] * V[b, m, f]
"""


def test_rows_without_keys_get_zero_gradients():
    kernel = einattn.compile(ABSENT_ROWS, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = _inputs(kernel.original, dict(b=2, p=11, m=9, e=3, f=4), torch.float32)
    got, cots = _grads(kernel, xs)
    assert torch.all(got[0][:, :4] == 0) and torch.any(got[0][:, 4:] != 0)
    want, _ = _grads(einattn.compile(ABSENT_ROWS, backend="torch"), xs, cots)
    _close(got, want, 2e-5, "QKV")


@pytest.mark.parametrize("groups, heads", [(2, 4), (1, 3)])
def test_grouped_query_attention_derives_its_backward(groups, heads, monkeypatch):
    # K[b, h // R, m, e] is in bounds exactly where h <= R G - 1 (affine): no gate spans three tile axes; dK
    # and dV take a part per query head, then a sum over each group's heads. (1, 3): head 2 reads past the
    # last group, absent: a zero output and zero gradients there
    refuse_recompute(monkeypatch)
    kernel = einattn.compile(EXAMPLES / "gqa.ein", backend="triton")
    assert str(kernel.backward_plan) == (
        "derived: 5 stages: GM, SD (fused over m); dSD_A (general); dV_part, dK_part (fused over p); "
        "dV, dK (general); dQ (fused over m)"
    )
    sizes = dict(b=2, h=heads, g=groups, p=23, m=29, e=8, f=5)
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        xs = _inputs(kernel.original, sizes, dtype)
        got, cots = _grads(kernel, xs)
        q, k, v = (x.detach().cpu().double().requires_grad_() for x in xs)
        live = min(heads, 2 * groups)  # R = 2
        out = torch.nn.functional.scaled_dot_product_attention(
            q[:, :live], k.repeat_interleave(2, dim=1)[:, :live], v.repeat_interleave(2, dim=1)[:, :live]
        )
        want = torch.autograd.grad(out, (q, k, v), cots[0].cpu().double()[:, :live])
        _close([g.cpu() for g in got], want, tol, "QKV")
        assert torch.all(got[0][:, live:] == 0)


GROUPED = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O

QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where FILTER
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h // R, m, f]
"""


@pytest.mark.parametrize(
    "filt, keep",
    [
        ("m // 4 <= p // 4", lambda h, p, m: m // 4 <= p // 4),  # block-causal: `//` of sequence ranks
        ("p - 4 * (h // R + 1) < m", lambda h, p, m: p - 4 * (h // 2 + 1) < m),  # a window per group
    ],
)
def test_grouped_query_attention_under_other_filters_derives(filt, keep, monkeypatch):
    # filters the analysis does not bound exactly: the scores' presence is unknown, yet the affine part
    # (`-h + 2 G - 1 >= 0`) spares the gates (einattn.absence.Necessary); head 4 is past the last group
    refuse_recompute(monkeypatch)
    kernel = einattn.compile(GROUPED.replace("FILTER", filt), backend="triton", tile=16)
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    sizes = dict(b=2, h=5, g=2, p=21, m=21, e=8, f=4)
    xs = _inputs(kernel.original, sizes, torch.float64)
    got, cots = _grads(kernel, xs)
    q, k, v = (x.detach().cpu().requires_grad_() for x in xs)
    h, p, m = torch.arange(4)[:, None, None], torch.arange(21)[None, :, None], torch.arange(21)[None, None, :]
    s = q[:, :4] @ k.repeat_interleave(2, 1).transpose(-1, -2) / 8**0.5
    out = torch.softmax(s.masked_fill(~keep(h, p, m), float("-inf")), dim=-1) @ v.repeat_interleave(2, 1)
    want = torch.autograd.grad(out, (q, k, v), cots[0].cpu()[:, :4])
    _close([g.cpu() for g in got], want, 1e-10, "QKV")
    assert torch.all(got[0][:, 4:] == 0)


def test_grouped_query_attention_by_modulo_derives(monkeypatch):
    # K[b, h % G, m, e] (heads interleaved over the groups) is always in bounds: no gate, the denominator's
    # cotangent reassociated (rowsum(dO * O)), dK and dV summed over the heads of each group
    refuse_recompute(monkeypatch)
    spec = GROUPED.replace("h // R", "h % G").replace("  where FILTER", "")
    kernel = einattn.compile(spec, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    xs = _inputs(kernel.original, dict(b=2, h=5, g=2, p=13, m=17, e=8, f=4), torch.float64)
    got, cots = _grads(kernel, xs)
    q, k, v = (x.detach().cpu().requires_grad_() for x in xs)
    group = torch.arange(5) % 2
    s = q @ k.index_select(1, group).transpose(-1, -2) / 8**0.5
    out = torch.softmax(s, dim=-1) @ v.index_select(1, group)
    want = torch.autograd.grad(out, (q, k, v), cots[0].cpu())
    _close([g.cpu() for g in got], want, 1e-10, "QKV")


GPT_OSS = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], SINK[h]
param  R = 2
param  W = 5
param  C = 5.0
output O

QK[b, h, p, m] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where 0 <= p - m < W
S[b, h, p, m]  = C * tanh(QK[b, h, p, m] / C)
L[b, h, p]     = S[b, h, p, m] :: max(m)
GX[b, h, p]    = max(L[b, h, p], SINK[h])
N[b, h, p, m]  = exp(S[b, h, p, m] - GX[b, h, p])
D[b, h, p]     = N[b, h, p, m]
O[b, h, p, f]  = N[b, h, p, m] * V[b, h // R, m, f] / (D[b, h, p] + exp(SINK[h] - GX[b, h, p]))
"""


def test_gpt_oss_attention_derives_its_backward(monkeypatch):
    # sinks, a sliding window, GQA and softcapping, the output in one statement: the sink's gradient
    # `sum dO * N * V / D' * g` (g = -exp(SINK - GX) / D', varying along the rows) becomes `sum dO * O * g`
    # per row; the head past the last group (h = 4 >= R G) is absent: a zero output and zero gradients
    refuse_recompute(monkeypatch)
    kernel = einattn.compile(GPT_OSS, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    sizes = dict(b=2, h=5, g=2, p=19, m=19, e=8, f=4)
    xs = _inputs(kernel.original, sizes, torch.float64)
    got, cots = _grads(kernel, xs)
    q, k, v, sink = (x.detach().cpu().requires_grad_() for x in xs)
    live = 4
    s = 5.0 * torch.tanh(q[:, :live] @ k.repeat_interleave(2, 1).transpose(-1, -2) / 8**0.5 / 5.0)
    p, m = torch.arange(19)[:, None], torch.arange(19)[None, :]
    s = s.masked_fill(~((p - m >= 0) & (p - m < 5)), float("-inf"))
    sinks = sink[:live, None, None].expand(2, live, 19, 1)
    a = torch.softmax(torch.cat([s, sinks], dim=-1), dim=-1)[..., :-1]  # (the sink's column dropped)
    out = a @ v.repeat_interleave(2, 1)
    want = torch.autograd.grad(out, (q, k, v, sink), cots[0].cpu()[:, :live])
    _close([g.cpu() for g in got], want, 1e-10, ["Q", "K", "V", "SINK"])
    assert torch.all(got[0][:, live:] == 0) and got[3][live:].abs().max() == 0


def test_where_nothing_derives_the_torch_backend_recomputes():
    path = EXAMPLES / "variants" / "02_gqa_groupmap.ein"
    gathered = einattn.compile(path, backend="triton")
    assert gathered.backward_plan.kind == "torch"
    assert "is not one fused kernel" in gathered.backward_plan.reason  # (K[b, grp[h]] is not bounded)
    sizes = dict(b=1, h=3, g=2, p=7, m=9, e=4, f=3)
    q, k, v, _ = _inputs(gathered.original, sizes, torch.float32)
    grp = torch.tensor([1, 0, 1], dtype=torch.int64, device=q.device)
    got, cots = _grads(lambda q, k, v: gathered(q, k, v, grp), [q, k, v])
    torch_kernel = einattn.compile(path, backend="torch")
    want, _ = _grads(lambda q, k, v: torch_kernel(q, k, v, grp), [x.cpu() for x in (q, k, v)], cots)
    _close(got, want, 2e-5, "QKV")
    one_pass = einattn.compile(EXAMPLES / "causal_1pass.ein", backend="triton")
    assert "written in its 1-pass form" in one_pass.backward_plan.reason
    chosen = einattn.compile(EXAMPLES / "causal.ein", backend="triton", backward="torch")
    assert str(chosen.backward_plan) == "torch (recomputed through the torch backend): backward='torch'"


def test_backward_option_is_checked():
    with pytest.raises(einattn.EinError, match=r"no generated backward: .*not one fused kernel"):
        einattn.compile(EXAMPLES / "variants" / "02_gqa_groupmap.ein", backend="triton", backward="derived")
    with pytest.raises(einattn.EinError, match="option backward must be one of 'auto', 'derived', 'torch'"):
        einattn.compile(EXAMPLES / "causal.ein", backend="triton", backward="fast")


@pytest.mark.parametrize(
    "dtype, tol, rounded_tol", [(torch.float16, 1e-2, 2.5e-3), (torch.bfloat16, 5e-2, 2e-2)]
)
def test_half_precision_keeps_row_statistics_in_float32(dtype, tol, rounded_tol, monkeypatch):
    # 16-bit inputs take the derived kernels; the statistics between the stages stay float32 (a max
    # rounded to bfloat16 would scale a row by up to 4%), so the error is the 16-bit products' own
    refuse_recompute(monkeypatch)
    kernel = einattn.compile(EXAMPLES / "causal.ein", backend="triton")
    sizes = dict(b=1, h=2, p=37, m=37, e=16, f=8)
    xs = [x * 3 if i < 2 else x for i, x in enumerate(_inputs(kernel.original, sizes, torch.float64))]
    got, cots = _grads(kernel, [x.to(dtype) for x in xs])
    assert [g.dtype for g in got] == [dtype] * 3
    want, _ = _grads(
        einattn.compile(EXAMPLES / "causal.ein", backend="torch"), xs, [c.double() for c in cots]
    )
    _close(got, want, tol, "QKV")
    # against the same 16-bit inputs computed exactly: what is left is the kernels' 16-bit products (a max
    # rounded to float16 on its way between the stages gave 5.6e-3 in dV; the interpreter runs bfloat16 in
    # float32, so there only the outputs are rounded)
    exact, _ = _grads(
        einattn.compile(EXAMPLES / "causal.ein", backend="torch"),
        [x.to(dtype).double() for x in xs],
        [c.double() for c in cots],
    )
    _close(got, exact, rounded_tol, "QKV")
    # (derived on this instance: the custom op may run the backward of an equal kernel compiled earlier)
    assert kernel.backward_plan.kind == "derived"
    stats = [re.search(r"FLOAT32 = (.*?)  #", k.source).group(1) for k in kernel._derived[0].kernels]
    assert stats == ["('GM', 'SD')", "('SD', 'dSD_A')", "('GM', 'SD', 'dSD_A')", "('GM', 'SD', 'dSD_A')"]


_WINDOWS: dict = {}  # W -> (triton kernel, torch kernel): compiled once per window


@settings(deadline=None, max_examples=10)  # (the interpreter runs four stages per example)
@given(
    p=st.integers(1, 40),
    m=st.integers(1, 40),
    window=st.sampled_from([1, 2, 5, 12]),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_gradients_for_random_sizes(p, m, window, seed):
    if window not in _WINDOWS:
        _WINDOWS[window] = tuple(
            einattn.compile(EXAMPLES / "sliding_window.ein", backend=b, params={"W": window})
            for b in ("triton", "torch")
        )
    kernel, reference = _WINDOWS[window]
    xs = _inputs(kernel.original, dict(b=1, h=1, p=p, m=m, e=3, f=2), torch.float64, seed)
    got, cots = _grads(kernel, xs, seed=seed)
    want, _ = _grads(reference, xs, cots)
    _close(got, want, 1e-10, "QKV")
    assert np.isfinite(torch.stack([g.sum() for g in got]).numpy()).all()


KEY_BIAS = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], kb[h, m]
output AV

S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p
QK[b, h, m, p] = S[b, h, m, p] + kb[h, m]
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
AV[b, h, p, f] = A[b, h, m, p] * V[b, h, m, f]
"""


def test_a_per_key_bias_gradient_is_summed_per_batch_entry_then_over_the_batch():
    # dkb[h, m] sums over queries and the batch: a part per (b, h, m) in the stage that streams the queries
    kernel = einattn.compile(KEY_BIAS, backend="triton")
    plan = str(kernel.backward_plan)
    assert "dV, dkb_part, dK (fused over p); dkb (general)" in plan, plan
    xs = _inputs(kernel.original, dict(b=3, h=2, p=13, m=13, e=4, f=3), torch.float64)
    got, cots = _grads(kernel, xs)
    q, k, v, kb = (x.detach().clone().requires_grad_() for x in xs)
    s = q @ k.transpose(-1, -2) / 2.0 + kb[None, :, None, :]
    causal = torch.ones(13, 13, dtype=torch.bool).tril()
    out = torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v
    want = torch.autograd.grad(out, (q, k, v, kb), cots[0])
    _close(got, want, 1e-10, ["Q", "K", "V", "kb"])


# ---- one-statement outputs under filters that read data ------------------------------------------------

ONE_STATEMENT = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], klen[b] : int, doc[b, m] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {filt}
G[b, h, p]    = S[b, h, m, p] :: max(m)
N[b, h, m, p] = exp(S[b, h, m, p] - G[b, h, p])
D[b, h, p]    = N[b, h, m, p]
O[b, h, p, f] = N[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""


@pytest.mark.parametrize(
    "filt",
    [
        "m < klen[b]",  # key padding: batch entry 1 has no keys at all (every row fully masked)
        "doc[b, m] == doc[b, p] and m <= p",  # packed documents, causal within each
        "m <= p and not p - m == 2 or m == 0",
    ],
)
def test_one_statement_output_under_data_filters_derives(filt, monkeypatch):
    # The output written in one statement, O = N * V / D, under a filter whose presence the analysis cannot
    # bound (it reads data): the denominator's cotangent is summed over the keys and the features at once,
    # dO[p, f] * (-(N[m, p] * V[m, f] / D[p]) / D[p]), which the contraction split now sees through the
    # negation as tl.dot(dO, V) scaled per tile (lowering/triton_split.py): a fused stage, where it spanned
    # three tile axes (p, m0, f) and the backward recomputed through the torch backend
    refuse_recompute(monkeypatch)
    spec = ONE_STATEMENT.format(filt=filt)
    kernel = einattn.compile(spec, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    assert "dD_O (fused over m)" in str(kernel.backward_plan)
    b, h, p, m, e, f = 2, 2, 9, 11, 4, 3
    q, k, v = (
        torch.randn(b, h, n, d, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        for s, (n, d) in enumerate([(p, e), (m, e), (m, f)])
    )
    klen = torch.tensor([7, 0])
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3], [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]])
    pos_p, pos_m = torch.arange(p)[:, None], torch.arange(m)[None, :]
    keep = {
        "m < klen[b]": (pos_m < klen[:, None, None]).expand(b, p, m),
        "doc[b, m] == doc[b, p] and m <= p": (doc[:, None, :] == doc[:, :p, None]) & (pos_m <= pos_p),
        "m <= p and not p - m == 2 or m == 0": (
            (pos_m <= pos_p) & (pos_p - pos_m != 2) | (pos_m == 0)
        ).expand(b, p, m),
    }[filt][:, None]

    def reference(q, k, v):  # softmax with masked keys; a row without keys gives 0
        s = (q @ k.transpose(-1, -2) / e**0.5).masked_fill(~keep, float("-inf"))
        w = torch.softmax(s, -1).nan_to_num(0.0)
        return w @ v

    cot = torch.randn(b, h, p, f, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        xs = [x.to(dtype).to(DEVICE).requires_grad_() for x in (q, k, v)]
        out = kernel(*xs, klen.to(DEVICE), doc.to(DEVICE))
        got = torch.autograd.grad(out, xs, cot.to(dtype).to(DEVICE))
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        want = torch.autograd.grad(reference(*leaves), leaves, cot)
        _close([g.cpu() for g in got], want, tol, "QKV")
        if filt == "m < klen[b]":
            assert torch.all(got[0][1] == 0)  # (no keys: no gradient)


def test_a_residual_after_padded_attention_derives(monkeypatch):
    # Y = O + res after attention under a padding mask: the cotangent of O, gated by Y's presence (absent
    # on a sequence without keys), crosses the stages with an indicator over (b, p), not over the feature
    # rank f that a fused stage's filter cannot read (einattn.absence.presence_ranks)
    refuse_recompute(monkeypatch)
    spec = """
input  Q[b, p, e], K[b, m, e], V[b, m, f], res[b, p, f], klen[b] : int
output Y
S[b, m, p] = Q[b, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
G[b, p]    = S[b, m, p] :: max(m)
N[b, m, p] = exp(S[b, m, p] - G[b, p])
D[b, p]    = N[b, m, p]
O[b, p, f] = N[b, m, p] * V[b, m, f] / D[b, p]
Y[b, p, f] = O[b, p, f] + res[b, p, f]
"""
    kernel = einattn.compile(spec, backend="triton")
    assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    g = torch.Generator().manual_seed(4)
    shapes = [(2, 7, 3), (2, 9, 3), (2, 9, 4), (2, 7, 4)]
    q, k, v, res = (torch.randn(*n, generator=g, dtype=torch.float64) for n in shapes)
    klen = torch.tensor([5, 0])
    keep = (torch.arange(9)[None, None, :] < klen[:, None, None]).expand(2, 7, 9)

    def reference(q, k, v, res):  # a sequence without keys: attention gives 0, Y the residual (absent: 0)
        s = (q @ k.transpose(-1, -2) / 3**0.5).masked_fill(~keep, float("-inf"))
        y = torch.softmax(s, -1).nan_to_num(0.0) @ v + res
        return y * keep.any(-1, keepdim=True)

    cot = torch.randn(2, 7, 4, generator=g, dtype=torch.float64)
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        xs = [x.to(dtype).to(DEVICE).requires_grad_() for x in (q, k, v, res)]
        got = torch.autograd.grad(kernel(*xs, klen.to(DEVICE)), xs, cot.to(dtype).to(DEVICE))
        leaves = [x.clone().requires_grad_() for x in (q, k, v, res)]
        want = torch.autograd.grad(reference(*leaves), leaves, cot)
        _close([x.cpu() for x in got], want, tol, ["Q", "K", "V", "res"])
