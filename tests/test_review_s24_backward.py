"""Review of session 24: wrong gradients from the triton backend's derived backward kernels.

Every spec below is written for this review (none is a copy of an example or an earlier test) and compiles
with ``backward_plan.kind == "derived"`` (checked, and ``backward="derived"`` asked for). Each gradient is
taken through ``einattn.compile(spec, backend="triton")`` with the torch recomputation refused
(``triton_cases.derived_only``), and compared, output and gradient of every float input that requires one,
with an INDEPENDENT reference written by hand in PyTorch float64: scores materialised as ``[b, h, p, m]``,
masked points left out of the max and the sum (``torch.where`` with ``-inf``), a row that no key passes
giving 0 output and 0 gradient (docs/language.md, section 9). Tolerance: ``tol * (1 + |ref|)`` elementwise,
1e-9 in float64, 1e-4 in float32, loose in float16/bfloat16 (the inputs rounded first, the reference in
float64 on the rounded values).

Outcome: no wrong gradient found. Besides the cases kept here (trimmed to fit the interpreter's time), the
same harness matched on: per-(b, h) lengths, key masks from an int tensor, `m + 2 < klen[b]`, klen < 0 and
> M, int32 lengths, lengths on tile boundaries, 18 rows, E = 1 / F = 5, a doc table shorter than P and M,
`exp((S - GM) / T)` with learnable T, `exp2`, weights `exp(S - GM) * w[m]`, LSE alone as output, GM as an
output, `(O ?? 0) + res`, BSHD layout, swapped or i/j rank names, tensors named dK/dO/dD_O/O_in, K = V,
per-row/per-key temperatures, rank-one biases, ALiBi on `m - klen[b]`, sinks per (b, h) under documents,
sinks of +-25, relu attention, eleven spellings of `O = N * V / D`, in-place edits after the forward (torch
raises), two calls in one graph, shapes changing between calls, and float32 slopes with 16-bit Q, K, V.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import functools
import math
import warnings

import pytest
import torch
from triton_cases import derived_only

import einattn

TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}
NEG = float("-inf")


# ---------------------------------------------------------------------------------------------------------
# spec builder (softmax attention with batch and head ranks; scores written S[b, h, m, p])
# ---------------------------------------------------------------------------------------------------------


def attn(
    filt="",
    score="QK[b, h, m, p]",
    inputs="",
    params="",
    outs="",
    extra="",
    one=True,
    gqa=False,
    den=None,
    mx=None,
):
    """``one``: the output in one statement ``O = N * V / D``; else ``A = N / D`` then ``O = A * V``."""
    where = f"  where {filt}" if filt else ""
    kv = "g" if gqa else "h"
    hk = "h // R" if gqa else "h"
    lines = [f"input  Q[b, h, p, e], K[b, {kv}, m, e], V[b, {kv}, m, f]{inputs}"]
    if params:
        lines.append(params)
    lines.append(f"output O{outs}")
    lines.append(f"QK[b, h, m, p] = Q[b, h, p, e] * K[b, {hk}, m, e] * rsqrt(E){where}")
    lines.append(f"S[b, h, m, p]  = {score}")
    if mx:
        lines.append("MK[b, h, p]    = S[b, h, m, p] :: max(m)")
        lines.append(f"GM[b, h, p]    = {mx}")
    else:
        lines.append("GM[b, h, p]    = S[b, h, m, p] :: max(m)")
    lines.append("N[b, h, m, p]  = exp(S[b, h, m, p] - GM[b, h, p])")
    lines.append("SK[b, h, p]    = N[b, h, m, p]")
    lines.append(f"D[b, h, p]     = {den or 'SK[b, h, p]'}")
    if one:
        lines.append(f"O[b, h, p, f]  = N[b, h, m, p] * V[b, {hk}, m, f] / D[b, h, p]")
    else:
        lines.append("A[b, h, m, p]  = N[b, h, m, p] / D[b, h, p]")
        lines.append(f"O[b, h, p, f]  = A[b, h, m, p] * V[b, {hk}, m, f]")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


LSE = "L[b, h, p]     = GM[b, h, p] + log(D[b, h, p])"
KLEN = ", klen[b] : int"
SINK_MAX = dict(mx="max(MK[b, h, p], sink[h])", den="SK[b, h, p] + exp(sink[h] - GM[b, h, p])")

PAD1 = attn("m < klen[b]", inputs=KLEN)
PAD_LSE1 = attn("m < klen[b]", inputs=KLEN, outs=", L", extra=LSE)
PAD_LSE2 = attn("m < klen[b]", inputs=KLEN, outs=", L", extra=LSE, one=False)
QKDOC = attn("qd[b, p] == kd[b, m]", inputs=", qd[b, p] : int, kd[b, m] : int")
DOC_CAUSAL_LSE = attn("doc[b, p] == doc[b, m] and m <= p", inputs=", doc[b, n] : int", outs=", L", extra=LSE)
ROWS = attn("p < qlen[b] and m >= st[b]", inputs=", qlen[b] : int, st[b] : int", one=False)
SINK_PAD = attn("m < klen[b]", inputs=KLEN + ", sink[h]", **SINK_MAX)
SINK_CAUSAL_LSE = attn("m <= p", inputs=", sink[h]", outs=", L", extra=LSE, **SINK_MAX)
SINK_DEN_CROSS = attn(
    "m <= p + M - P", inputs=", sink[h]", den="SK[b, h, p] + exp(sink[h] - GM[b, h, p])", one=False
)
TEMP_PAD = attn("m < klen[b]", inputs=KLEN + ", temp", score="QK[b, h, m, p] / temp")
ALIBI_GQA_PAD = attn(
    "m < klen[b]",
    inputs=KLEN + ", slope[h]",
    score="QK[b, h, m, p] - slope[h] * abs(m - p)",
    gqa=True,
    params="param  R = 2",
)
KEYBIAS_ALPHA = attn(
    "m < klen[b]", inputs=KLEN + ", kb[b, m], alpha", score="QK[b, h, m, p] + alpha * kb[b, m]"
)
FIXED_BIAS = attn("m < klen[b]", inputs=KLEN + ", Bias[h, p, m]", score="QK[b, h, m, p] + Bias[h, p, m]")
GQA_PAD = attn("m < klen[b]", inputs=KLEN, gqa=True, params="param  R = 2")
GQA1_PAD_CAUSAL_LSE2 = attn(
    "m < klen[b] and m <= p", inputs=KLEN, gqa=True, params="param  R = 1", outs=", L", extra=LSE, one=False
)
WINDOW_CROSS = attn("p - W < m - M + P and m - M + P < p", params="param  W = 3", one=False)
# softcap (learnable cap), ALiBi, a sink in the max and the LSE, bottom-right causal with P > M
COMBO = attn(
    "m <= p + M - P",
    inputs=", slope[h], sink[h], cap",
    score="cap * tanh(QK[b, h, m, p] / cap) + slope[h] * (m - p)",
    outs=", L",
    extra=LSE,
    **SINK_MAX,
)
GATE = attn("m < klen[b]", inputs=KLEN + ", g[b, h, p]").replace("/ D[b, h, p]", "/ D[b, h, p] * g[b, h, p]")
TWO_OUT = attn(
    "m < klen[b]",
    inputs=KLEN + ", V2[b, h, m, f]",
    outs=", O2",
    extra="O2[b, h, p, f] = N[b, h, m, p] * V2[b, h, m, f] / D[b, h, p]",
)

# one tensor as queries and keys (P = M): dX sums its query-side and key-side parts
SHARED_QK = """
input  X[b, h, p, e], V[b, h, m, f], klen[b] : int
output O
S[b, h, m, p] = X[b, h, p, e] * X[b, h, m, e] * rsqrt(E)  where m < klen[b]
G[b, h, p]    = S[b, h, m, p] :: max(m)
N[b, h, m, p] = exp(S[b, h, m, p] - G[b, h, p])
D[b, h, p]    = N[b, h, m, p]
O[b, h, p, f] = N[b, h, m, p] * V[b, h, m, f] / D[b, h, p]
"""

MQA_PAD = """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
G[b, h, p]    = S[b, h, m, p] :: max(m)
X[b, h, m, p] = exp(S[b, h, m, p] - G[b, h, p])
Z[b, h, p]    = X[b, h, m, p]
O[b, h, p, f] = X[b, h, m, p] * V[b, m, f] / Z[b, h, p]
"""

SIGMOID_PAD = """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias[h], klen[b] : int
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b]
A[b, h, m, p]  = sigmoid(QK[b, h, m, p] + bias[h])
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""


# ---------------------------------------------------------------------------------------------------------
# the hand-written reference (float64, scores as [b, h, p, m])
# ---------------------------------------------------------------------------------------------------------


def coords(P, M):
    return torch.arange(P).view(P, 1), torch.arange(M).view(1, M)


def qk(Q, K, R=1):
    K = K.repeat_interleave(R, dim=1) if R > 1 else K
    return torch.einsum("bhpe,bhme->bhpm", Q, K) / math.sqrt(Q.shape[-1])


def softmax_ref(S, mask, V, sink=None, R=1, gate=None):
    """(O, L): masked softmax of S [b, h, p, m] times V; a row without keys gives 0 for both. ``sink`` [h]:
    one more logit in the denominator (and the max); ``gate`` [b, h, p] scales each row's output."""
    mask = mask.expand(S.shape)
    V = V.repeat_interleave(R, dim=1) if R > 1 else V
    row = mask.any(-1)
    mx = torch.where(mask, S, NEG).amax(-1)
    if sink is not None:
        mx = torch.maximum(mx, sink.view(1, -1, 1))
    mx = torch.where(row, mx, 0.0).detach()  # a stabilizer: cancels exactly
    N = torch.where(mask, torch.exp(torch.where(mask, S, 0.0) - mx[..., None]), 0.0)
    den = N.sum(-1)
    if sink is not None:
        den = den + torch.exp(sink.view(1, -1, 1) - mx)
    den = torch.where(row, den, 1.0)
    O = (N / den[..., None]) @ V
    if gate is not None:
        O = O * gate[..., None]
    O = torch.where(row[..., None], O, 0.0)
    L = torch.where(row, mx + torch.log(den), 0.0)
    return O, L


def klen_mask(klen, P, M):
    return (torch.arange(M).view(1, 1, 1, M) < klen.view(-1, 1, 1, 1)).expand(len(klen), 1, P, M)


# ---------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def kernel(spec, **options):
    options = {"tile": 4, "backward": "derived", **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        k = einattn.compile(spec, backend="triton", **options)
    if options["backward"] == "derived":
        assert k.backward_plan.kind == "derived", k.backward_plan
    return k


def gen(*shape, seed, scale=1.0, lo=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return x if lo is None else lo + x.abs()


def transposed(x):
    """The same values as a non-contiguous view (stored with the last two axes swapped)."""
    if x.dim() < 2:
        return x
    y = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not y.is_contiguous() or min(x.shape[-2:]) == 1
    return y


def run(
    spec,
    args,
    ref,
    dtype,
    wrt=None,
    options=None,
    out_mask=None,
    layout=None,
):
    """Outputs and gradients of ``spec`` on triton (derived kernels only) against ``ref`` (float64 on the
    inputs rounded to ``dtype``). ``args``: name -> float64 tensor (or int64); ``wrt``: names to
    differentiate (default every float input); ``out_mask``: which outputs are in the loss (default all)."""
    k = kernel(spec, **(options or {}))
    names = [n for n, a in args.items() if a.is_floating_point()]
    wrt = names if wrt is None else wrt
    rounded = {n: (a.to(dtype).double() if a.is_floating_point() else a) for n, a in args.items()}

    def leaves(dt, lay):
        out = {}
        for n, a in rounded.items():
            if a.is_floating_point():
                a = a.to(dt)
                if lay == "transposed":
                    a = transposed(a)
                a = a.detach().requires_grad_(n in wrt)
            out[n] = a
        return out

    xs = leaves(dtype, layout)
    with derived_only():
        got = k(**xs)
        got = got if isinstance(got, tuple) else (got,)
        cots = [gen(*o.shape, seed=900 + i).to(dtype) for i, o in enumerate(got)]
        if layout == "transposed":
            cots = [transposed(c) for c in cots]
        use = out_mask or [True] * len(got)
        live = [(o, c) for o, c, u in zip(got, cots, use) if u and o.requires_grad]
        g_got = torch.autograd.grad(
            [o for o, _ in live], [xs[n] for n in wrt], [c for _, c in live], allow_unused=True
        )
    rs = leaves(torch.float64, None)
    want = ref(**rs)
    want = want if isinstance(want, tuple) else (want,)
    assert len(want) == len(got)
    pairs = [(o, c.double()) for o, c, u in zip(want, cots, use) if u and o.requires_grad]
    g_want = torch.autograd.grad(
        [o for o, _ in pairs], [rs[n] for n in wrt], [c for _, c in pairs], allow_unused=True
    )
    tol = TOL[dtype]
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype
        err = ((a.double() - b) / (1 + b.abs())).abs().max().item()
        assert err <= tol, f"output {i}: relative error {err:.3g} > {tol}"
    for n, a, b in zip(wrt, g_got, g_want):
        b = torch.zeros_like(rs[n]) if b is None else b
        a = torch.zeros_like(xs[n]) if a is None and not b.any() else a
        assert a is not None, f"d{n} is None"
        assert a.shape == b.shape, f"d{n}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        assert torch.isfinite(a).all(), f"d{n} is not finite: {a}"
        err = ((a.double() - b) / (1 + b.abs())).abs().max().item()
        got, want = a.double().flatten()[:8], b.flatten()[:8]
        assert err <= tol, f"d{n}: relative error {err:.3g} > {tol}\n got {got}\n want {want}"


def qkv(B, H, P, M, E=3, F=2, G=None, seed=0, scale=1.0, mqa=False):
    G = H if G is None else G
    kshape = (B, M) if mqa else (B, G, M)
    return dict(
        Q=gen(B, H, P, E, seed=seed, scale=scale),
        K=gen(*kshape, E, seed=seed + 1, scale=scale),
        V=gen(*kshape, F, seed=seed + 2),
    )


DTYPES = [torch.float64]  # (float32 beside it in test_triton_backward.py: one dtype here keeps CI short)


# ---------------------------------------------------------------------------------------------------------
# padding masks, document masks, row filters, outputs in one and two statements, O and LSE
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_one_statement(dtype):
    # klen 0 (every row without keys) and M (no padding), then two lengths inside the last tiles
    B, H, P, M = 2, 1, 5, 10
    for klen in [(0, 10)]:
        args = qkv(B, H, P, M) | {"klen": torch.tensor(klen)}

        def ref(Q, K, V, klen):
            return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V)[0]

        run(PAD1, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", [PAD_LSE1, PAD_LSE2], ids=["one", "two"])
def test_padding_o_and_lse(spec, dtype):
    B, H, P, M = 2, 1, 4, 9
    args = qkv(B, H, P, M, seed=3) | {"klen": torch.tensor([9, 0])}

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V)

    run(spec, args, ref, dtype)
    run(spec, args, ref, dtype, out_mask=[False, True])  # the LSE alone in the loss


@pytest.mark.parametrize("dtype", DTYPES)
def test_query_key_documents_with_empty_rows(dtype):
    # query documents 0, 0, 2, 1, 1, 3: documents 2 and 3 have no key -> rows 2 and 5 empty
    B, H, P, M = 1, 2, 6, 9
    qd = torch.tensor([[0, 0, 2, 1, 1, 3]])
    kd = torch.tensor([[0, 1, 0, 1, 1, 0, 4, 4, 1]])
    args = qkv(B, H, P, M, seed=5) | {"qd": qd, "kd": kd}

    def ref(Q, K, V, qd, kd):
        return softmax_ref(qk(Q, K), (qd[:, None, :, None] == kd[:, None, None, :]), V)[0]

    run(QKDOC, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_document_causal_o_and_lse(dtype):
    B, H, P, M = 1, 1, 9, 9
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2]])
    args = qkv(B, H, P, M, seed=7) | {"doc": doc}
    p, m = coords(P, M)

    def ref(Q, K, V, doc):
        mask = (doc[:, None, :, None] == doc[:, None, None, :]) & (m <= p)
        return softmax_ref(qk(Q, K), mask, V)

    run(DOC_CAUSAL_LSE, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_query_length_and_key_start(dtype):
    B, H, P, M = 2, 1, 7, 6
    args = qkv(B, H, P, M, seed=11) | {"qlen": torch.tensor([0, 5]), "st": torch.tensor([2, 6])}

    def ref(Q, K, V, qlen, st):
        rows = torch.arange(P).view(1, 1, P, 1) < qlen.view(-1, 1, 1, 1)
        keys = torch.arange(M).view(1, 1, 1, M) >= st.view(-1, 1, 1, 1)
        return softmax_ref(qk(Q, K), rows & keys, V)[0]

    # batch 0: no row; batch 1: no key (st = M)
    run(ROWS, args, ref, dtype)
    args["st"] = torch.tensor([0, 4])
    run(ROWS, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_outputs_sharing_the_softmax(dtype):
    B, H, P, M = 2, 1, 4, 7
    args = qkv(B, H, P, M, seed=12) | {"klen": torch.tensor([0, 5]), "V2": gen(B, H, M, 2, seed=13)}

    def ref(Q, K, V, klen, V2):
        S, mask = qk(Q, K), klen_mask(klen, P, M)
        return softmax_ref(S, mask, V)[0], softmax_ref(S, mask, V2)[0]

    run(TWO_OUT, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# sinks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sink_in_max_with_padding(dtype):
    B, H, P, M = 2, 2, 3, 7
    args = qkv(B, H, P, M, seed=15) | {"klen": torch.tensor([0, 6]), "sink": torch.tensor([0.7, -1.3])}

    def ref(Q, K, V, klen, sink):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V, sink=sink)[0]

    run(SINK_PAD, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sink_in_max_causal_o_and_lse(dtype):
    # a large sink dominates the max on some rows, a very large one on every row
    B, H, P, M = 1, 2, 6, 6
    p, m = coords(P, M)

    def ref(Q, K, V, sink):
        return softmax_ref(qk(Q, K), m <= p, V, sink=sink)

    for sink in ([25.0, -0.4],):
        args = qkv(B, H, P, M, seed=17, scale=1.5) | {"sink": torch.tensor(sink)}
        run(SINK_CAUSAL_LSE, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sink_in_denominator_cross_with_empty_rows(dtype):
    # P > M bottom-right aligned: rows 0 and 1 see no key
    B, H, P, M = 1, 2, 7, 5
    args = qkv(B, H, P, M, seed=19) | {"sink": torch.tensor([-0.5, 1.1])}
    p, m = coords(P, M)

    def ref(Q, K, V, sink):
        return softmax_ref(qk(Q, K), m <= p + M - P, V, sink=sink)[0]

    run(SINK_DEN_CROSS, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# score transforms with learnable parameters
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_temperature_with_padding(dtype):
    B, H, P, M = 2, 1, 4, 9
    args = qkv(B, H, P, M, seed=23) | {
        "klen": torch.tensor([0, 2]),
        "temp": torch.tensor(0.6, dtype=torch.float64),
    }

    def ref(Q, K, V, klen, temp):
        return softmax_ref(qk(Q, K) / temp, klen_mask(klen, P, M), V)[0]

    run(TEMP_PAD, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_alibi_symmetric_gqa_padding(dtype):
    B, G, R, P, M = 2, 1, 2, 4, 7
    args = qkv(B, G * R, P, M, G=G, seed=29) | {
        "klen": torch.tensor([7, 0]),
        "slope": torch.tensor([0.3, 0.9]),
    }
    p, m = coords(P, M)

    def ref(Q, K, V, klen, slope):
        S = qk(Q, K, R) - slope.view(1, -1, 1, 1) * (m - p).abs()
        return softmax_ref(S, klen_mask(klen, P, M), V, R=R)[0]

    run(ALIBI_GQA_PAD, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scaled_key_bias_with_padding(dtype):
    B, H, P, M = 2, 1, 4, 6
    args = qkv(B, H, P, M, seed=33) | {
        "klen": torch.tensor([6, 0]),
        "kb": gen(B, M, seed=34),
        "alpha": torch.tensor(-0.7, dtype=torch.float64),
    }

    def ref(Q, K, V, klen, kb, alpha):
        return softmax_ref(qk(Q, K) + alpha * kb[:, None, None, :], klen_mask(klen, P, M), V)[0]

    run(KEYBIAS_ALPHA, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fixed_key_by_query_bias(dtype):
    # a bias B[h, p, m] that requires no gradient takes the generated kernels (docs/backends.md)
    B, H, P, M = 2, 1, 4, 7
    args = qkv(B, H, P, M, seed=40) | {"klen": torch.tensor([0, 6]), "Bias": gen(H, P, M, seed=41)}

    def ref(Q, K, V, klen, Bias):
        return softmax_ref(qk(Q, K) + Bias[None], klen_mask(klen, P, M), V)[0]

    run(FIXED_BIAS, args, ref, dtype, wrt=["Q", "K", "V"], options={"backward": "auto"})


@pytest.mark.parametrize("dtype", DTYPES)
def test_softcap_alibi_sink_lse_cross(dtype):
    B, H, P, M = 1, 2, 7, 5
    args = qkv(B, H, P, M, seed=43, scale=2.0) | {
        "slope": torch.tensor([0.3, 0.8]),
        "sink": torch.tensor([0.2, -0.6]),
        "cap": torch.tensor(2.0, dtype=torch.float64),
    }
    p, m = coords(P, M)

    def ref(Q, K, V, slope, sink, cap):
        S = cap * torch.tanh(qk(Q, K) / cap) + slope.view(1, -1, 1, 1) * (m - p)
        return softmax_ref(S, m <= p + M - P, V, sink=sink)

    run(COMBO, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_gate_with_padding(dtype):
    B, H, P, M = 2, 1, 4, 6
    args = qkv(B, H, P, M, seed=44) | {"klen": torch.tensor([0, 6]), "g": gen(B, H, P, seed=45)}

    def ref(Q, K, V, klen, g):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V, gate=g)[0]

    run(GATE, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# grouped-query and multi-query attention
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R", [3, 4])
def test_gqa_padding(R, dtype):
    B, G, P, M = 1, 1, 3, 6
    klen = torch.tensor([5])
    args = qkv(B, G * R, P, M, G=G, seed=47 + R) | {"klen": klen}

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K, R), klen_mask(klen, P, M), V, R=R)[0]

    run(GQA_PAD.replace("R = 2", f"R = {R}"), args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gqa_r1_two_groups_padding_causal_o_and_lse(dtype):
    # R = 1 (h // 1), two groups, a padding mask with causality: batch 1 has no key at all
    B, G, R, P, M = 2, 2, 1, 5, 5
    args = qkv(B, G * R, P, M, G=G, seed=53) | {"klen": torch.tensor([3, 0])}
    p, m = coords(P, M)

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K, R), klen_mask(klen, P, M) & (m <= p), V, R=R)

    run(GQA1_PAD_CAUSAL_LSE2, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mqa_padding(dtype):
    B, H, P, M = 2, 2, 3, 6
    args = qkv(B, H, P, M, seed=55, mqa=True) | {"klen": torch.tensor([2, 0])}

    def ref(Q, K, V, klen):
        S = torch.einsum("bhpe,bme->bhpm", Q, K) / math.sqrt(Q.shape[-1])
        return softmax_ref(S, klen_mask(klen, P, M), V[:, None].expand(B, H, M, V.shape[-1]))[0]

    run(MQA_PAD, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# windows and cross lengths
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P,M", [(6, 10)])
def test_strict_window_cross(P, M, dtype):
    # with P < M the first row's window holds no key
    B, H = 1, 1
    args = qkv(B, H, P, M, seed=59)
    p, m = coords(P, M)

    def ref(Q, K, V):
        d = m - M + P
        return softmax_ref(qk(Q, K), (p - 3 < d) & (d < p), V)[0]

    run(WINDOW_CROSS, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# sigmoid attention
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_with_head_bias_and_padding(dtype):
    B, H, P, M = 2, 2, 3, 6
    args = qkv(B, H, P, M, seed=63) | {"bias": torch.tensor([-1.0, 0.5]), "klen": torch.tensor([0, 5])}

    def ref(Q, K, V, bias, klen):
        mask = klen_mask(klen, P, M).expand(B, H, P, M)
        A = torch.where(mask, torch.sigmoid(qk(Q, K) + bias.view(1, -1, 1, 1)), 0.0)
        return A @ V

    run(SIGMOID_PAD, args, ref, dtype)


# ---------------------------------------------------------------------------------------------------------
# layouts, shared tensors, 16-bit inputs, ragged default tiles, partial requires_grad
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_views_padding_one_statement(dtype):
    B, H, P, M = 2, 1, 5, 7
    args = qkv(B, H, P, M, seed=65) | {"klen": torch.tensor([7, 3])}

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V)[0]

    run(PAD1, args, ref, dtype, layout="transposed")


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_tensor_as_queries_and_keys(dtype):
    B, H, P = 2, 1, 7
    args = {"X": gen(B, H, P, 3, seed=71), "V": gen(B, H, P, 2, seed=72), "klen": torch.tensor([3, 7])}

    def ref(X, V, klen):
        return softmax_ref(qk(X, X), klen_mask(klen, P, P), V)[0]

    run(SHARED_QK, args, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit(dtype):
    B, H, P, M = 2, 2, 3, 7
    args = qkv(B, H, P, M, seed=73) | {"klen": torch.tensor([0, 6]), "sink": torch.tensor([3.0, -3.0])}

    def ref(Q, K, V, klen, sink):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V, sink=sink)[0]

    run(SINK_PAD, args, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_tile_ragged(dtype):
    # the default tile 64 with M = 70: a second, ragged tile of 6 keys; the padding ends inside it
    B, H, P, M = 1, 1, 3, 70
    args = qkv(B, H, P, M, seed=74) | {"klen": torch.tensor([67])}

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V)

    run(PAD_LSE1, args, ref, dtype, options={"tile": 64})


@pytest.mark.parametrize("dtype", DTYPES)
def test_partial_requires_grad_sink(dtype):
    B, H, P, M = 1, 2, 4, 6
    args = qkv(B, H, P, M, seed=75) | {"sink": torch.tensor([1.0, -2.0])}
    p, m = coords(P, M)

    def ref(Q, K, V, sink):
        return softmax_ref(qk(Q, K), m <= p, V, sink=sink)

    for wrt in (["V"], ["Q", "sink"]):
        run(SINK_CAUSAL_LSE, args, ref, dtype, wrt=wrt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_partial_requires_grad_alibi_gqa(dtype):
    B, G, R, P, M = 2, 1, 2, 3, 5
    args = qkv(B, G * R, P, M, G=G, seed=76) | {
        "klen": torch.tensor([0, 5]),
        "slope": torch.tensor([0.2, 0.7]),
    }
    p, m = coords(P, M)

    def ref(Q, K, V, klen, slope):
        S = qk(Q, K, R) - slope.view(1, -1, 1, 1) * (m - p).abs()
        return softmax_ref(S, klen_mask(klen, P, M), V, R=R)[0]

    for wrt in (["slope"],):
        run(ALIBI_GQA_PAD, args, ref, dtype, wrt=wrt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_padding_lse(dtype):
    # logits of tens: the stabilizer matters; padding leaves one key on a row
    B, H, P, M = 2, 1, 4, 9
    args = qkv(B, H, P, M, seed=77, scale=4.0) | {"klen": torch.tensor([1, 9])}

    def ref(Q, K, V, klen):
        return softmax_ref(qk(Q, K), klen_mask(klen, P, M), V)

    run(PAD_LSE2, args, ref, dtype)


def test_sum_loss_and_expanded_inputs():
    # O.sum().backward() feeds a stride-0 cotangent; Q is a stride-0 view along the heads
    B, H, P, M = 2, 2, 3, 6
    a = qkv(B, H, P, M, seed=78)
    klen = torch.tensor([0, 5])
    k = kernel(PAD1)
    for dtype in DTYPES:
        q1 = a["Q"][:, :1].to(dtype).clone().requires_grad_()
        kv = {n: a[n].to(dtype).clone().requires_grad_() for n in "KV"}
        with derived_only():
            k(Q=q1.expand(B, H, P, 3), **kv, klen=klen).sum().backward()
        r1 = q1.detach().double().requires_grad_()
        rkv = {n: x.detach().double().requires_grad_() for n, x in kv.items()}
        softmax_ref(qk(r1.expand(B, H, P, 3), rkv["K"]), klen_mask(klen, P, M), rkv["V"])[0].sum().backward()
        for got, want in [(q1, r1), (kv["K"], rkv["K"]), (kv["V"], rkv["V"])]:
            err = ((got.grad.double() - want.grad) / (1 + want.grad.abs())).abs().max().item()
            assert err <= TOL[dtype], err
