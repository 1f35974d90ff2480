"""Review of session 23: grouped-query attention's generated backward in the triton backend (commits
95b49b0..HEAD: ``K[b, h // R, m, e]`` bounded exactly by the presence analysis, dK/dV as a part per query
head then a sum over each group's heads).

Every gradient is taken by ``torch.autograd.grad`` through ``einattn.compile(spec, backend="triton")`` on CPU
tensors (Triton's interpreter) and compared with INDEPENDENT references: softmax attention written by hand in
PyTorch float64 (each present head's K/V group picked by ``index_select``, explicit masks, rows without keys
and heads past the last group giving 0) and ``scaled_dot_product_attention`` with ``enable_gqa=True``. Every
spec is written for this review. Where the plan says ``derived`` the torch backend must not run
(``TritonKernel.recompute_grads`` raises).

Findings: no wrong gradient and no crash. One observation, not marked as a failure (the docs do not promise
it): GQA with a padding mask ``m < klen[b]`` falls back to the torch backend ("a value spans three tile axes
(m, p0, f)"), while the same mask derives without GQA (test_padding_mask_klen checks its values)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from triton_cases import assert_close_grads as close
from triton_cases import derived_only, randn, tri

import einattn

TOL = {torch.float64: 1e-9, torch.float32: 2e-5}

# ---------------------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------------------


def gqa(
    filt="",
    score="QK[b, h, m, p]",
    inputs="",
    params="",
    den="SK[b, h, p]",
    kidx="h // R",
    vidx=None,
    r=2,
    outputs="",
    extra="",
):
    """GQA softmax attention: ``score`` makes S from QK, ``den`` the denominator, ``kidx``/``vidx`` the group
    index of K's and V's reads."""
    where = f"  where {filt}" if filt else ""
    vidx = vidx or kidx
    return f"""
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]{inputs}
param  R = {r}
{params}
output O{outputs}
QK[b, h, m, p] = Q[b, h, p, e] * K[b, {kidx}, m, e] * rsqrt(E){where}
S[b, h, m, p]  = {score}
GM[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = SN[b, h, m, p]
SD[b, h, p]    = {den}
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, {vidx}, m, f]
{extra}
"""


PLAIN = gqa()
CAUSAL = gqa("m <= p")
CROSS = gqa("m <= p + M - P")  # bottom-right aligned; with P > M the first P - M rows have no key
WINDOW = gqa("p - W < m and m <= p", params="param  W = 3")
ALIBI = gqa("m <= p", score="QK[b, h, m, p] + slope[h] * (m - p)", inputs=", slope[h]")
ALIBI_GROUP = gqa("m <= p", score="QK[b, h, m, p] + slope[h // R] * (m - p)", inputs=", slope[g]")
SOFTCAP_LEARNED = gqa(score="cap * tanh(QK[b, h, m, p] / cap)", inputs=", cap")
SINK = gqa("m <= p", inputs=", sink[h]", den="SK[b, h, p] + exp(sink[h] - GM[b, h, p])")
SINK_GROUP = gqa("m <= p", inputs=", sink[g]", den="SK[b, h, p] + exp(sink[h // R] - GM[b, h, p])")
KEYBIAS = gqa(score="QK[b, h, m, p] + kb[h, m]", inputs=", kb[h, m]")
KEYBIAS_GROUP = gqa("m <= p", score="QK[b, h, m, p] + kb[b, h // R, m]", inputs=", kb[b, g, m]")
KLEN_CAUSAL = gqa("m < klen[b] and m <= p", inputs=", klen[b] : int")
LSE = gqa("m <= p", outputs=", L", extra="L[b, h, p] = GM[b, h, p] + log(SK[b, h, p])")
SHIFT_DOWN = gqa(kidx="(h - 1) // R")  # head 0 reads group -1: absent
MODULO = gqa(kidx="h % R")  # interleaved head-to-group map

# a sink inside the max (gpt-oss), the max named `G`: a tensor whose name hides rank g's size, which the
# bound of K[b, h // R] (h <= R G - 1) reads (commit 8d66bbe)
SINK_MAX_NAMED_G = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], sink[h]
param  R = 2
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p
MK[b, h, p]    = QK[b, h, m, p] :: max(m)
G[b, h, p]     = max(MK[b, h, p], sink[h])
SN[b, h, m, p] = exp(QK[b, h, m, p] - G[b, h, p])
SK[b, h, p]    = SN[b, h, m, p]
SD[b, h, p]    = SK[b, h, p] + exp(sink[h] - G[b, h, p])
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h // R, m, f]
"""

# the plain GQA with its max named `G` and its denominator named `M` (hides m's size)
NAMED_G_M = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 3
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p + 1
G[b, h, p]     = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - G[b, h, p])
M[b, h, p]     = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / M[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h // R, m, f]
"""


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def qkv(b, h, g, p, m, e, f, dtype=torch.float64, seed=0, scale=1.0):
    return [
        randn(b, h, p, e, dtype=dtype, seed=seed, scale=scale),
        randn(b, g, m, e, dtype=dtype, seed=seed + 1, scale=scale),
        randn(b, g, m, f, dtype=dtype, seed=seed + 2),
    ]


def chosen(xs, wrt):
    """The indices of the inputs to differentiate: ``wrt``, else every float tensor."""
    return (
        wrt
        if wrt is not None
        else [i for i, x in enumerate(xs) if torch.is_tensor(x) and x.is_floating_point()]
    )


def run(fn, xs, cots, wrt=None, allow_unused=True):
    """(outputs, d(sum <out_k, cot_k>)/d x) for the inputs of ``xs`` chosen by ``wrt`` (indices; default
    every float tensor); the others are passed without requires_grad. With ``allow_unused``, an input no
    output reads gets zeros; without, autograd's error."""
    idx = chosen(xs, wrt)
    leaves = [
        x.detach().clone().requires_grad_(i in idx) if torch.is_tensor(x) and x.is_floating_point() else x
        for i, x in enumerate(xs)
    ]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, c) for o, c in zip(outs, cots) if c is not None]
    got = torch.autograd.grad(
        [o for o, _ in pairs], [leaves[i] for i in idx], [c for _, c in pairs], allow_unused=allow_unused
    )
    return outs, [torch.zeros_like(leaves[i]) if g is None else g for i, g in zip(idx, got)]


def grads(fn, xs, cots, wrt=None):
    """The gradients of :func:`run`."""
    return run(fn, xs, cots, wrt)[1]


def mask_of(kind, P, M, w=None):
    p = torch.arange(P)[:, None]
    m = torch.arange(M)[None, :]
    if kind is None:
        return torch.ones(P, M, dtype=torch.bool)
    if kind == "causal":
        return m <= p
    if kind == "cross":
        return m <= p + M - P
    if kind == "causal+1":
        return m <= p + 1
    if kind == "window":
        return (p - w < m) & (m <= p)
    raise ValueError(kind)


def ref_gqa(q, k, v, group, *, mask=None, score=None, sink=None, sink_in_max=False, lse=False):
    """Softmax attention by hand in the inputs' dtype. ``group(h)`` is head h's K/V group (out of [0, G):
    the head is absent, output 0); ``mask`` [P, M] or broadcastable to [B, H', P, M] (True: visible);
    ``score(s, heads, groups)`` transforms the scaled scores of the present heads; ``sink`` a per-head logit
    added to the denominator (and to the max when ``sink_in_max``, which changes nothing mathematically).
    A row with no visible key gives 0 (and a log-sum-exp of 0)."""
    B, H, P, _ = q.shape
    G, M, Fd = k.shape[1], k.shape[2], v.shape[-1]
    heads = [h for h in range(H) if 0 <= group(h) < G]
    out = q.new_zeros(B, H, P, Fd)
    lout = q.new_zeros(B, H, P)
    if not heads:
        return (out, lout) if lse else out
    ih = torch.tensor(heads)
    ig = torch.tensor([group(h) for h in heads])
    qh, kh, vh = q.index_select(1, ih), k.index_select(1, ig), v.index_select(1, ig)
    s = (qh @ kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if score is not None:
        s = score(s, ih, ig)
    mask = torch.ones(P, M, dtype=torch.bool) if mask is None else mask
    mask = mask.expand(s.shape)
    alive = mask.any(-1, keepdim=True)
    s = s.masked_fill(~mask, float("-inf"))
    mx = torch.where(alive, s.amax(-1, keepdim=True), torch.zeros_like(s[..., :1])).detach()
    if sink is not None:
        sk = sink.index_select(0, ih)[None, :, None, None]
        if sink_in_max:
            mx = torch.maximum(mx, sk).detach()
        ex = torch.exp(s - mx)
        den = ex.sum(-1, keepdim=True) + torch.exp(sk - mx)
    else:
        ex = torch.exp(s - mx)
        den = ex.sum(-1, keepdim=True)
    a = ex / torch.where(den == 0, torch.ones_like(den), den)
    o = torch.where(alive, a @ vh, torch.zeros_like(qh[..., :1]))  # keyless rows: 0, whatever the cotangent
    out = out.index_copy(1, ih, o)
    if lse:
        ls = torch.where(alive[..., 0], (mx + torch.log(den)).squeeze(-1), torch.zeros_like(den[..., 0]))
        return out, lout.index_copy(1, ih, ls)
    return out


def by(r):
    return lambda h: h // r


def check(kernel, xs, cots, ref, tol, names, wrt=None, derived=True):
    """The triton kernel's outputs and gradients against ``ref``'s (float64 copies of the inputs, so the
    reference is float64 whatever the kernel's dtype); returns (outputs, gradients) of the kernel."""
    if derived:
        assert kernel.backward_plan.kind == "derived", kernel.backward_plan
    with derived_only() if derived else contextlib.nullcontext():
        outs, got = run(kernel, xs, cots, wrt, allow_unused=False)
    idx = chosen(xs, wrt)
    d64 = [x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in xs]
    c64 = [None if c is None else c.double() for c in cots]
    want_out = ref(*d64)
    want_out = want_out if isinstance(want_out, tuple) else (want_out,)
    close(list(outs), list(want_out), tol, [f"{n}(forward)" for n in range(len(outs))])
    want = grads(ref, d64, c64, wrt)
    close(list(got), want, tol, names)
    dtypes = {x.dtype for i, x in enumerate(xs) if i in idx}
    assert all(g.dtype in dtypes for g in got)
    return outs, list(got)


def grid(P, M):
    return (torch.arange(M)[None, :] - torch.arange(P)[:, None]).double()


def causal(P, M):
    return mask_of("causal", P, M)


# ---------------------------------------------------------------------------------------------------------
# head/group layouts: R in {2, 3, 4}, H == R G, H < R G (unused groups), H > R G (absent heads)
# ---------------------------------------------------------------------------------------------------------

LAYOUTS = [
    # (R, H, G, dtype)
    (1, 3, 2, torch.float64),  # R = 1, H > G: head 2 absent
    (4, 3, 2, torch.float32),  # H < R G: group 1 unused, group 0 partly
    (3, 4, 1, torch.float32),  # one group (multi-query attention), H > R G: head 3 absent
]


@pytest.mark.parametrize("r, h, g, dtype", LAYOUTS)
def test_layouts_against_handwritten(r, h, g, dtype):
    kernel = tri(PLAIN, params={"R": r})
    P, M, E, Fd = 5, 7, 6, 3  # E != F, neither a power of two
    xs = qkv(1, h, g, P, M, E, Fd, dtype, seed=r * 10 + h)
    cot = randn(1, h, P, Fd, dtype=dtype, seed=99)
    (out,), got = check(kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(r)), TOL[dtype], "QKV")
    used = {j // r for j in range(h)} & set(range(g))
    for grp in set(range(g)) - used:  # an unused group's dK, dV: exactly 0
        assert torch.all(got[1][:, grp] == 0) and torch.all(got[2][:, grp] == 0)
    for grp in used:
        assert torch.any(got[1][:, grp] != 0) and torch.any(got[2][:, grp] != 0)
    if h > r * g:  # heads past the last group: output 0, dQ 0
        assert torch.all(out[:, r * g :] == 0) and torch.all(got[0][:, r * g :] == 0)
    assert torch.all(got[0][:, : min(h, r * g)] != 0)


@pytest.mark.parametrize("r, b, dtype", [(2, 2, torch.float32), (3, 1, torch.float64)])
def test_causal_against_sdpa_enable_gqa(r, b, dtype):
    """H == R G with two groups (R = 2 with a batch of two, R = 3)."""
    kernel = tri(CAUSAL, params={"R": r})
    G, P = 2, 6
    xs = qkv(b, r * G, G, P, P, 5, 3, dtype, seed=3)
    cot = randn(b, r * G, P, 3, dtype=dtype, seed=4)

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    check(kernel, xs, [cot], sdpa, TOL[dtype], "QKV")


def test_non_integer_r_is_an_error():
    with pytest.raises(einattn.EinError, match="not an integer"):
        tri(PLAIN, params={"R": 2.5})


# ---------------------------------------------------------------------------------------------------------
# masks and score transforms with GQA
# ---------------------------------------------------------------------------------------------------------


def test_cross_attention_rows_without_keys_batch_and_absent_head():
    """P > M, bottom-right aligned: the first P - M rows see no key; H = 3 > R G = 2: head 2 absent; a
    batch of two; float32. The cotangent is NaN on the keyless rows and the absent head, where the output
    is a constant 0: no gradient may see it."""
    kernel = tri(CROSS)
    B, H, G, P, M = 2, 3, 1, 6, 4
    xs = qkv(B, H, G, P, M, 3, 5, torch.float32, seed=11)
    cot = randn(B, H, P, 5, dtype=torch.float32, seed=12)
    cot[:, :, : P - M] = float("nan")
    cot[:, 2] = float("nan")
    (out,), got = check(
        kernel,
        xs,
        [cot],
        lambda q, k, v: ref_gqa(q, k, v, by(2), mask=mask_of("cross", P, M)),
        TOL[torch.float32],
        "QKV",
    )
    assert torch.all(out[:, :, : P - M] == 0) and torch.all(out[:, 2] == 0)
    assert torch.all(got[0][:, :, : P - M] == 0) and torch.all(got[0][:, 2] == 0)


def test_sliding_window_tile16_ragged():
    """tile=16, 21 queries and keys (two tiles, the last of 5), tiles outside the window skipped; R = 2,
    H = 3 > R G = 2: head 2 absent."""
    kernel = tri(WINDOW, params={"R": 2, "W": 5}, tile=16)
    B, H, G, P = 1, 3, 1, 21
    xs = qkv(B, H, G, P, P, 3, 2, seed=17)
    cot = randn(B, H, P, 2, seed=18)
    _, got = check(
        kernel,
        xs,
        [cot],
        lambda q, k, v: ref_gqa(q, k, v, by(2), mask=mask_of("window", P, P, w=5)),
        1e-9,
        "QKV",
    )
    assert torch.all(got[0][:, 2] == 0)


def test_causal_ragged_default_tile():
    """The default tile (64): 70 keys, 41 queries, a ragged second key tile (`m <= p + M - P`); head dims
    E = 72, F = 80: above 64, not powers of two."""
    kernel = tri(CROSS)
    B, H, G, P, M = 1, 2, 1, 41, 70
    xs = qkv(B, H, G, P, M, 72, 80, seed=19)
    cot = randn(B, H, P, 80, seed=20)
    check(
        kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(2), mask=mask_of("cross", P, M)), 1e-9, "QKV"
    )


@pytest.mark.parametrize("spec, per_group", [(ALIBI, False), (ALIBI_GROUP, True)], ids=["slope_h", "slope_g"])
def test_alibi_learnable_slope(spec, per_group):
    kernel = tri(spec)
    B, H, G, P = 1, 3, 1, 7  # head 2 absent
    xs = qkv(B, H, G, P, P, 4, 3, seed=21)
    slope = randn(G if per_group else H, seed=22).abs() * 0.5
    cot = randn(B, H, P, 3, seed=23)

    def ref(q, k, v, sl):
        def score(s, ih, ig):
            return s + sl.index_select(0, ig if per_group else ih)[None, :, None, None] * grid(P, P)

        return ref_gqa(q, k, v, by(2), mask=causal(P, P), score=score)

    _, got = check(kernel, [*xs, slope], [cot], ref, 1e-9, ["Q", "K", "V", "slope"])
    if not per_group:
        assert got[3][2] == 0  # the absent head's slope gets no gradient
    assert torch.all(got[3][: G if per_group else 2] != 0)


def test_alibi_only_slope_requires_grad():
    kernel = tri(ALIBI)
    B, H, G, P = 1, 2, 1, 6
    xs = qkv(B, H, G, P, P, 3, 2, seed=24)
    slope = randn(H, seed=25)
    cot = randn(B, H, P, 2, seed=26)

    def ref(q, k, v, sl):
        def score(s, ih, ig):
            return s + sl.index_select(0, ih)[None, :, None, None] * grid(P, P)

        return ref_gqa(q, k, v, by(2), mask=causal(P, P), score=score)

    check(kernel, [*xs, slope], [cot], ref, 1e-9, ["slope"], wrt=[3])


def test_softcap_learnable_cap():
    kernel = tri(SOFTCAP_LEARNED)
    B, H, G, P, M = 1, 3, 2, 5, 6  # H < R G: group 1 has one head
    xs = qkv(B, H, G, P, M, 3, 2, seed=29, scale=3.0)  # large logits: the cap matters
    cap = torch.tensor(2.5, dtype=torch.float64)
    cot = randn(B, H, P, 2, seed=30)

    def ref(q, k, v, c):
        return ref_gqa(q, k, v, by(2), score=lambda s, ih, ig: c * torch.tanh(s / c))

    check(kernel, [*xs, cap], [cot], ref, 1e-9, ["Q", "K", "V", "cap"])


@pytest.mark.parametrize("spec, per_group", [(SINK, False), (SINK_GROUP, True)], ids=["sink_h", "sink_g"])
def test_sink_in_denominator(spec, per_group):
    kernel = tri(spec)
    B, H, P = 1, 3, 6
    G = 2 if per_group else 1  # sink[g]: group 1 has one head; sink[h]: head 2 absent
    xs = qkv(B, H, G, P, P, 3, 4, seed=31)
    sink = randn(G if per_group else H, seed=32)
    cot = randn(B, H, P, 4, seed=33)

    def ref(q, k, v, sk):
        per_head = sk.index_select(0, torch.arange(H) // 2 % G) if per_group else sk
        return ref_gqa(q, k, v, by(2), mask=causal(P, P), sink=per_head)

    _, got = check(kernel, [*xs, sink], [cot], ref, 1e-9, ["Q", "K", "V", "sink"])
    if not per_group:
        assert got[3][2] == 0


def test_sink_inside_max_named_g():
    """The max named `G` hides rank g's size, which K[b, h // R]'s bound (h <= R G - 1) reads."""
    kernel = tri(SINK_MAX_NAMED_G)
    B, H, G, P = 1, 3, 1, 6  # head 2 absent
    xs = qkv(B, H, G, P, P, 3, 2, seed=34)
    sink = randn(H, seed=35) + 2.0  # the sink is often the max
    cot = randn(B, H, P, 2, seed=36)

    def ref(q, k, v, s):
        return ref_gqa(q, k, v, by(2), mask=causal(P, P), sink=s, sink_in_max=True)

    _, got = check(kernel, [*xs, sink], [cot], ref, 1e-9, ["Q", "K", "V", "sink"])
    assert got[3][2] == 0 and torch.all(got[0][:, 2] == 0)


def test_tensors_named_like_sizes():
    """The max named `G` (rank g's size) and the denominator `M` (rank m's size), a filter `m <= p + 1`."""
    kernel = tri(NAMED_G_M)
    B, H, G, P, M = 1, 4, 1, 5, 6  # head 3 absent (R G = 3)
    xs = qkv(B, H, G, P, M, 3, 2, seed=37)
    cot = randn(B, H, P, 2, seed=38)
    check(
        kernel,
        xs,
        [cot],
        lambda q, k, v: ref_gqa(q, k, v, by(3), mask=mask_of("causal+1", P, M)),
        1e-9,
        "QKV",
    )


@pytest.mark.parametrize(
    "spec, per_group", [(KEYBIAS, False), (KEYBIAS_GROUP, True)], ids=["kb_hm", "kb_bgm"]
)
def test_per_key_bias(spec, per_group):
    kernel = tri(spec)
    B, H, G, P, M = 1 if per_group else 2, 3, 2, 5, 6  # H = 3 < R G = 4: group 1 has one head
    # (kb[h, m] with a batch of two: its gradient is a part per batch entry, then a sum over the batch)
    xs = qkv(B, H, G, P, M, 3, 2, seed=39)
    kb = randn(B, G, M, seed=40) if per_group else randn(H, M, seed=40)
    cot = randn(B, H, P, 2, seed=41)

    def ref(q, k, v, kb):
        def score(s, ih, ig):
            if per_group:
                return s + kb.index_select(1, ig)[:, :, None, :]
            return s + kb.index_select(0, ih)[:, None, :]

        return ref_gqa(q, k, v, by(2), mask=causal(P, M) if per_group else None, score=score)

    check(kernel, [*xs, kb], [cot], ref, 1e-9, ["Q", "K", "V", "kb"])


def test_padding_mask_klen():
    """`m < klen[b] and m <= p` with GQA; a sequence with klen 0 gets zero gradients. Found by this review:
    the plan was `torch` ("the stage computing dV_part, dK_part is not one fused kernel: a value spans three
    tile axes (m, p0, f)"), while the same mask without GQA derived; fixed (the gates take the affine part
    of an unknown presence, einattn.absence.Necessary): derived now."""
    kernel = tri(KLEN_CAUSAL)
    B, H, G, P, M = 3, 2, 1, 5, 7
    xs = qkv(B, H, G, P, M, 3, 2, seed=42)
    klen = torch.tensor([4, 7, 0])
    cot = randn(B, H, P, 2, seed=43)
    mask = (torch.arange(M)[None, :] < klen[:, None])[:, None, None, :] & causal(P, M)
    _, got = check(
        kernel,
        [*xs, klen],
        [cot],
        lambda q, k, v, kl: ref_gqa(q, k, v, by(2), mask=mask),
        1e-9,
        "QKV",
        wrt=[0, 1, 2],
    )
    assert torch.all(got[1][0, :, 4:] == 0) and torch.all(got[2][0, :, 4:] == 0)
    assert all(torch.all(g[2] == 0) for g in got)


def test_log_sum_exp_second_output():
    kernel = tri(LSE)
    B, H, G, P = 1, 3, 1, 7  # head 2 absent
    xs = qkv(B, H, G, P, P, 3, 2, seed=44)
    cots = [randn(B, H, P, 2, seed=45), randn(B, H, P, seed=46)]

    def ref(q, k, v):
        return ref_gqa(q, k, v, by(2), mask=causal(P, P), lse=True)

    check(kernel, xs, cots, ref, 1e-9, "QKV")
    _, got = check(kernel, xs, [None, cots[1]], ref, 1e-9, "QKV")  # only the log-sum-exp in the loss
    assert torch.all(got[2] == 0)


def test_per_head_shifted_causal_tile8():
    """`m <= p + h - 2`: the filter varies with the head (heads 0 and 1 have rows without keys), tile=8 (20
    queries and keys: three tiles, the last ragged, skipped per head); H = 3 > R G = 2: head 2 absent."""
    kernel = tri(gqa("m <= p + h - 2"), tile=8)
    B, H, G, P = 1, 3, 1, 20
    xs = qkv(B, H, G, P, P, 3, 2, seed=82)
    cot = randn(B, H, P, 2, seed=83)
    p, m = torch.arange(P)[:, None], torch.arange(P)[None, :]
    mask = torch.stack([m <= p + h - 2 for h in range(2)])[None]  # the present heads 0, 1
    _, got = check(kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(2), mask=mask), 1e-9, "QKV")
    assert torch.all(got[0][:, 0, :2] == 0) and torch.all(got[0][:, 2] == 0)


def test_fixed_bias_table_per_group():
    """A fixed (not learnable) bias table per group, `Bt[h // R, p, m]`: the plan for a call differentiating
    every input is `torch` (dBt spans p and m), but a call where Bt does not require grad takes the derived
    kernels (docs/backends.md: a fixed bias takes the generated kernels)."""
    kernel = tri(gqa(score="QK[b, h, m, p] + Bt[h // R, p, m]", inputs=", Bt[g, p, m]"))
    assert kernel.backward_plan.kind == "torch" and "dBt" in kernel.backward_plan.reason
    B, H, G, P, M = 1, 3, 2, 4, 5
    xs = [*qkv(B, H, G, P, M, 3, 2, seed=84), randn(G, P, M, seed=85)]
    cot = randn(B, H, P, 2, seed=86)

    def ref(q, k, v, bt):
        return ref_gqa(q, k, v, by(2), score=lambda s, ih, ig: s + bt.index_select(0, ig)[None])

    with derived_only():
        check(kernel, xs, [cot], ref, 1e-9, "QKV", wrt=[0, 1, 2], derived=False)


# ---------------------------------------------------------------------------------------------------------
# other head-to-group index expressions
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, group, h",
    [
        (SHIFT_DOWN, lambda j: (j - 1) // 2, 4),  # head 0 reads group -1: absent
        (gqa(kidx="(2 * h) // 3"), lambda j: (2 * j) // 3, 4),  # head 3 reads group 2: absent
    ],
    ids=["shift_down", "two_thirds"],
)
def test_other_group_index_expressions(spec, group, h):
    kernel = tri(spec)
    B, G, P, M = 1, 2, 4, 5
    xs = qkv(B, h, G, P, M, 3, 2, seed=47)
    cot = randn(B, h, P, 2, seed=48)

    def ref(q, k, v):
        return ref_gqa(q, k, v, group)

    check(kernel, xs, [cot], ref, 1e-9, "QKV")


def test_batch_entries_sharing_keys():
    """Beam search's shared prompt: `K[b // R, h, m, e]` (the grouped read on the batch rank); B = 3 > R C
    = 2: batch entry 2 absent."""
    spec = """
input  Q[b, h, p, e], K[c, h, m, e], V[c, h, m, f]
param  R = 2
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b // R, h, m, e] * rsqrt(E)  where m <= p
GM[b, h, p]    = QK[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(QK[b, h, m, p] - GM[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b // R, h, m, f]
"""
    kernel = tri(spec)
    xs = [randn(3, 1, 4, 3, seed=70), randn(1, 1, 4, 3, seed=71), randn(1, 1, 4, 2, seed=72)]
    cot = randn(3, 1, 4, 2, seed=73)

    def ref(q, k, v):  # batch and head swapped: the batch rank is the grouped one
        t = [x.transpose(0, 1) for x in (q, k, v)]
        return ref_gqa(*t, by(2), mask=causal(4, 4)).transpose(0, 1)

    _, got = check(kernel, xs, [cot], ref, 1e-9, "QKV")
    assert torch.all(got[0][2] == 0)


# ---------------------------------------------------------------------------------------------------------
# layouts of the tensors, dtypes, partial gradients, aliasing
# ---------------------------------------------------------------------------------------------------------


def test_non_contiguous_and_expanded_inputs():
    """Q and the cotangent transposed views, K permuted, V strided along f and expanded (stride 0) along
    the groups; float32."""
    kernel = tri(CAUSAL)
    dt = torch.float32
    B, H, G, P, M, E, Fd = 1, 4, 2, 5, 6, 5, 3
    q = randn(B, P, H, E, dtype=dt, seed=50).transpose(1, 2)
    k = randn(B, E, M, G, dtype=dt, seed=51).permute(0, 3, 2, 1)
    v = randn(B, 1, M, Fd * 2, dtype=dt, seed=52)[..., ::2].expand(B, G, M, Fd)
    cot = randn(B, P, H, Fd, dtype=dt, seed=53).transpose(1, 2)
    assert not any(x.is_contiguous() for x in (q, k, v, cot)) and v.stride(1) == 0
    check(
        kernel, [q, k, v], [cot], lambda q, k, v: ref_gqa(q, k, v, by(2), mask=causal(P, M)), TOL[dt], "QKV"
    )


def test_aliased_inputs_and_sum_backward():
    """K and V are slices of Q's leaf (K/V are every R-th query head): autograd sums the three gradients into
    one; the loss is `O.sum() * 3`, whose cotangent is an expanded (all strides 0) tensor."""
    kernel = tri(CAUSAL)
    x = randn(1, 4, 5, 4, seed=78).requires_grad_()
    with derived_only():
        (kernel(x, x[:, ::2], x[:, ::2, :, :2]).sum() * 3).backward()
    y = x.detach().clone().requires_grad_()
    (ref_gqa(y, y[:, ::2], y[:, ::2, :, :2], by(2), mask=causal(5, 5)).sum() * 3).backward()
    close([x.grad], [y.grad], 1e-9, "x")


@pytest.mark.parametrize(
    "dtype, tol",
    [
        # 16-bit inputs (products accumulated in float32, row statistics kept in float32) against float64
        # on the same rounded inputs, relative to the largest gradient: the error is the rounding of the
        # probabilities and dS to 16 bits before each tl.dot. Observed (3 seeds): float16 <= 6e-4, bfloat16
        # <= 4.7e-3, about 0.6 of the type's eps (9.8e-4, 7.8e-3) and within 2x of the torch backend's own
        # 16-bit gradients; the tolerance is 3 eps
        (torch.float16, 3e-3),
        (torch.bfloat16, 2.5e-2),
    ],
)
def test_half_precision_against_float64(dtype, tol):
    kernel = tri(CAUSAL)
    B, H, G, P = 1, 3, 1, 12  # head 2 absent
    xs = qkv(B, H, G, P, P, 8, 4, dtype, seed=54)
    cot = randn(B, H, P, 4, dtype=dtype, seed=55)
    (out,), got = check(
        kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(2), mask=causal(P, P)), tol, "QKV"
    )
    assert out.dtype == dtype and torch.all(got[0][:, 2] == 0)


@pytest.mark.parametrize("wrt", [[2], [0, 1]])
def test_only_some_inputs_require_grad(wrt):
    kernel = tri(CAUSAL)
    B, H, G, P = 1, 3, 2, 6  # group 1 has one head
    xs = qkv(B, H, G, P, P, 3, 2, seed=56)
    cot = randn(B, H, P, 2, seed=57)
    check(
        kernel,
        xs,
        [cot],
        lambda q, k, v: ref_gqa(q, k, v, by(2), mask=causal(P, P)),
        1e-9,
        ["QKV"[i] for i in wrt],
        wrt=wrt,
    )


# ---------------------------------------------------------------------------------------------------------
# unread and absent points hold non-finite or huge values; empty sizes
# ---------------------------------------------------------------------------------------------------------


def test_unused_group_with_nan_does_not_leak():
    """H = 2 < R G = 4: group 1 is read by no head; its K and V hold NaN and inf. Outputs and gradients
    must be those of the finite inputs, dK and dV of group 1 exactly 0."""
    kernel = tri(CAUSAL)
    B, H, G, P = 1, 2, 2, 5
    xs = qkv(B, H, G, P, P, 3, 2, seed=58)
    xs[1][:, 1] = float("nan")
    xs[2][:, 1] = float("inf")
    cot = randn(B, H, P, 2, seed=59)
    _, got = check(kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(2), mask=causal(P, P)), 1e-9, "QKV")
    assert torch.all(got[1][:, 1] == 0) and torch.all(got[2][:, 1] == 0)


def test_absent_heads_hold_nan_queries_and_huge_cotangents():
    """H = 4 > R G = 2: heads 2, 3 absent; their queries are NaN and 1e30 and their cotangents 1e30. dQ
    there is exactly 0, the other gradients unaffected."""
    kernel = tri(PLAIN)
    B, H, G, P, M = 1, 4, 1, 5, 5
    xs = qkv(B, H, G, P, M, 3, 2, seed=60)
    xs[0][:, 2] = float("nan")
    xs[0][:, 3] *= 1e30
    cot = randn(B, H, P, 2, seed=61)
    cot[:, 2:] *= 1e30
    (out,), got = check(kernel, xs, [cot], lambda q, k, v: ref_gqa(q, k, v, by(2)), 1e-9, "QKV")
    assert torch.all(out[:, 2:] == 0) and torch.all(got[0][:, 2:] == 0)


def test_no_group_at_all():
    """G = 0: every head is absent (zero outputs and dQ; dK, dV empty). Empty tensors take the torch
    backend by design, so the plan is not enforced here."""
    kernel = tri(CAUSAL)
    q, k, v = (x.requires_grad_() for x in qkv(1, 3, 0, 4, 4, 3, 2, seed=80))
    out = kernel(q, k, v)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), randn(1, 3, 4, 2, seed=81))
    assert out.shape == (1, 3, 4, 2) and torch.all(out == 0) and torch.all(dq == 0)
    assert dk.shape == (1, 0, 4, 3) and dv.shape == (1, 0, 4, 2)


# ---------------------------------------------------------------------------------------------------------
# the plan and the option
# ---------------------------------------------------------------------------------------------------------


def test_derived_option_and_plan_for_gqa():
    plan = str(tri(gqa("m <= p"), backward="derived").backward_plan)
    assert plan.startswith("derived:"), plan
    assert "dV_part, dK_part (fused over p)" in plan and "dQ (fused over m)" in plan, plan
    assert "dV, dK (general)" in plan, plan
    assert tri(gqa("m <= p"), backward="torch").backward_plan.kind == "torch"
    with pytest.raises(einattn.EinError, match="no generated backward"):
        tri(MODULO, backward="derived")
