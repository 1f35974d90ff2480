"""Review of session 24: attention variants at realistic key lengths, under DEFAULT options.

Most tests elsewhere use a handful of keys, which fit in one tile of the torch backend's streamed loop
(default tile 256; a call whose keys fit in one tile runs the spec as written). Here every torch case has
M past one or several tiles (257 .. 700 keys) with few queries (P = 1 .. 5), and the triton cases have M
past its default tile of 64 (65 .. 200 keys, under ``TRITON_INTERPRET=1``).

Every spec was written for this review. Each reference is plain PyTorch in float64 with materialised
scores: masked keys are ``-inf``, a row with no key gives 0 (docs/language.md section 9, rule 8) and zero
gradients. Compared: every output and the gradient of a random linear loss over the outputs with respect to
every float input, for

* the torch backend in float64, default options (tol 1e-9 relative to 1 + |ref|);
* the torch backend in float64 with ``library=False`` (the generated loop, never SDPA);
* the triton backend in float32 with its default tile (tol 1e-4) on a subset, with M = 65 .. 200;
* the NumPy backend (forward, default options) on a subset.

The torch comparisons also run each kernel under ``torch.no_grad()`` (inference takes other paths: states
updated in place, other row blocks), and repeat with ``library=False`` where the default runs SDPA.

Findings: none. Every case here agreed with its reference when written (torch float64 within ~1e-15,
triton float32 within ~4e-7), as did probes not kept here for time: keys read at ``m + 1``, ``m - 1``,
``M - 1 - m`` and through a permutation gather, a relative-position table ``rb[h, p + M - P - m]``, ``-inf``
and ``+inf`` in inputs (NaN rows as the NumPy backend gives them), 600 query rows (row blocks) with a
guarded sink, grouped-query reads past the end of ``K`` (G < H / R), BSHD layouts, a max over all keys with
the sum over causal keys, ``exp((S - MX) / T)``, ``square(exp(S - MX))``, ``exp2``, softmax-off-by-one
and float32 / float16 / bfloat16 on every torch case.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import math
import warnings

import numpy as np
import pytest
import torch

import einattn

E, FD = 4, 3
TOL64 = 1e-9
TOL32 = 1e-4

# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def randn(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def qkv(b, h, p, m, g=None, seed=0, scale=1.0):
    g = h if g is None else g
    return (
        randn(b, h, p, E, seed=seed + 1, scale=scale),
        randn(b, g, m, E, seed=seed + 2, scale=scale),
        randn(b, g, m, FD, seed=seed + 3),
    )


def ar(p, m):
    """Query and key coordinates, shaped to broadcast as [P, M]."""
    return torch.arange(p)[:, None], torch.arange(m)[None, :]


def scores(q, k):
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def softmax_ref(s, mask, v):
    """Softmax over the last axis of ``s`` [..., P, M] restricted to ``mask``, times ``v``; 0 for a row
    without keys."""
    mask = mask.expand(s.shape)
    anyk = mask.any(-1, keepdim=True)
    s = torch.where(mask, s, torch.full_like(s, -math.inf))
    s = torch.where(anyk, s, torch.zeros_like(s))
    return (torch.softmax(s, -1) * mask * anyk) @ v


def lse_ref(s, mask):
    """Log-sum-exp over the masked keys; 0 where a row has none."""
    mask = mask.expand(s.shape)
    anyk = mask.any(-1)
    lse = torch.logsumexp(torch.where(mask, s, torch.full_like(s, -math.inf)), -1)
    return torch.where(anyk, lse, torch.zeros_like(lse))


def sink_ref(s, mask, sink, v):
    """Softmax over the masked keys and one extra logit ``sink`` [H] per head (no value); returns the output
    and the log-sum-exp including the sink."""
    mask = mask.expand(s.shape)
    s = torch.where(mask, s, torch.full_like(s, -math.inf))
    full = torch.cat([s, sink[None, :, None, None].expand(*s.shape[:-1], 1)], -1)
    w = torch.softmax(full, -1)[..., :-1]
    return w @ v, torch.logsumexp(full, -1)


def compile_(spec, backend, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(spec, backend=backend, **options)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def run(fn, inputs, cots, dtype):
    """Outputs (float64) and d(sum_k <out_k, cot_k>)/dx for every float input x, computed in ``dtype``."""
    leaves = {
        k: v.detach().to(dtype).clone().requires_grad_(True)
        if torch.is_tensor(v) and v.is_floating_point()
        else v
        for k, v in inputs.items()
    }
    outs = as_tuple(fn(**leaves))
    names = [k for k, v in leaves.items() if torch.is_tensor(v) and v.is_floating_point()]
    loss = sum((o.to(torch.float64) * c).sum() for o, c in zip(outs, cots))
    got = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    grads = {
        k: (torch.zeros_like(leaves[k]) if g is None else g).to(torch.float64) for k, g in zip(names, got)
    }
    return [o.detach().to(torch.float64) for o in outs], grads


def rel(a, b):
    """max |a - b| / (1 + |b|); NaN counts as infinitely wrong."""
    e = ((a - b).abs() / (1 + b.abs())).max().item() if a.numel() else 0.0
    return math.inf if e != e else e


def errors(case, backend, dtype, **options):
    spec, inputs, ref = case
    with torch.no_grad():
        shapes = as_tuple(ref(**inputs))
    cots = [randn(*o.shape, seed=99 + i) for i, o in enumerate(shapes)]
    want_o, want_g = run(ref, inputs, cots, torch.float64)
    kern = compile_(spec, backend, **options)
    got_o, got_g = run(kern, inputs, cots, dtype)
    errs = {f"out{i}": rel(a, b) for i, (a, b) in enumerate(zip(got_o, want_o))}
    errs.update({f"d{k}": rel(got_g[k], want_g[k]) for k in want_g})
    if backend == "torch":  # inference (no gradient recorded) takes other paths: in-place states, row blocks
        with torch.no_grad():
            cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
            outs = as_tuple(kern(**cast))
        errs.update({f"nograd_out{i}": rel(a.double(), b) for i, (a, b) in enumerate(zip(outs, want_o))})
    return errs


def check(case, backend, dtype, tol, **options):
    errs = errors(case, backend, dtype, **options)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"errors above {tol}: {bad}"


def check_numpy(case):
    spec, inputs, ref = case
    with torch.no_grad():
        want = as_tuple(ref(**inputs))
    got = as_tuple(compile_(spec, "numpy")(**{k: v.numpy() for k, v in inputs.items()}))
    errs = {f"out{i}": rel(torch.as_tensor(np.asarray(a)), b) for i, (a, b) in enumerate(zip(got, want))}
    bad = {k: v for k, v in errs.items() if not v <= TOL64}
    assert not bad, f"errors above {TOL64}: {bad}"


# ---------------------------------------------------------------------------------------------------------
# specs: each case(M) returns (spec, inputs, reference); M is the key length
# ---------------------------------------------------------------------------------------------------------

QKV = "input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]"
SOFTMAX = """
MX[b, h, p]   = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - MX[b, h, p])
DN[b, h, p]   = EX[b, h, m, p]
O[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f] / DN[b, h, p]
"""
CASES = {}


def case(m):
    def deco(fn):
        CASES[fn.__name__] = (fn, m)
        return fn

    return deco


@case(300)
def decode_causal_offset(M, P=3):
    spec = f"""{QKV}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, heads(M), P, M)
    pp, mm = ar(P, M)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mm <= pp + M - P, V)


@case(513)
def decode_single_query_strict(M, P=1):
    spec = f"""{QKV}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < p + M - P
{SOFTMAX}"""
    q, k, v = qkv(2, 2, P, M)
    pp, mm = ar(P, M)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mm < pp + M - P, V)


@case(300)
def strict_causal_top_left(M, P=5):
    spec = f"""{QKV}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < p
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mm < pp, V)


@case(700)
def strided_window_excluding_diagonal(M, P=4):
    # queries at positions 200 p; each sees the W keys strictly before it: row 0 sees none, row 1 keys
    # 130..199, row 2 keys 330..399 (across 256 .. 384), row 3 keys 530..599
    spec = f"""{QKV}
param  W = 70
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where 200 * p - W <= m and m < 200 * p
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (200 * pp - 70 <= mm) & (mm < 200 * pp)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mask, V)


@case(513)
def long_window_decode(M, P=2):
    spec = f"""{QKV}
param  W = 300
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where p + M - P - W < m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (pp + M - P - 300 < mm) & (mm <= pp + M - P)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mask, V)


SINK_GUARDED = f"""{QKV}, sink[h]
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < STRIDE * p
MK[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MK[b, h, p] ?? sink[h], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = EX[b, h, m, p]
DN[b, h, p]    = (SK[b, h, p] ?? 0) + exp(sink[h] - GM[b, h, p])
NV[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f]
O[b, h, p, f]  = (NV[b, h, p, f] ?? 0) / DN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DN[b, h, p])
"""


@case(300)
def sink_guarded_strided_strict(M, P=4):
    # row 0 has no key (m < 0): O = 0 and L = sink; the other rows see M/3, 2M/3 and M keys
    st = M // 3
    spec = f"param  STRIDE = {st}\n" + SINK_GUARDED
    q, k, v = qkv(1, 2, P, M)
    sink = randn(2, seed=9)
    pp, mm = ar(P, M)
    return (
        spec,
        dict(Q=q, K=k, V=v, sink=sink),
        lambda Q, K, V, sink: sink_ref(scores(Q, K), mm < st * pp, sink, V),
    )


@case(513)
def sink_unguarded_decode(M, P=2):
    spec = f"""{QKV}, sink[h]
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
MK[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MK[b, h, p], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
DN[b, h, p]    = EX[b, h, m, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DN[b, h, p]
"""
    # DN sums exp(sink - GM) once per key: write the reference the same way
    q, k, v = qkv(1, 2, P, M)
    sink = randn(2, seed=9)
    pp, mm = ar(P, M)
    mask = mm <= pp + M - P

    def ref(Q, K, V, sink):
        s = scores(Q, K).masked_fill(~mask, -math.inf)
        gm = torch.maximum(s.amax(-1), sink[None, :, None])
        ex = torch.exp(s - gm[..., None])
        cnt = mask.sum(-1)
        dn = ex.sum(-1) + cnt * torch.exp(sink[None, :, None] - gm)
        return (ex @ V) / dn[..., None]

    return spec, dict(Q=q, K=k, V=v, sink=sink), ref


@case(513)
def sink_unguarded_split_sum(M, P=3):
    # the sum over keys in its own statement; rows with no key are absent (0) everywhere
    spec = f"""{QKV}, sink[h]
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < 256 * p
MK[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = max(MK[b, h, p], sink[h])
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = EX[b, h, m, p]
DN[b, h, p]    = SK[b, h, p] + exp(sink[h] - GM[b, h, p])
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h, m, f] / DN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DN[b, h, p])
"""
    q, k, v = qkv(1, 2, P, M)
    sink = randn(2, seed=9)
    pp, mm = ar(P, M)
    mask = mm < 256 * pp

    def ref(Q, K, V, sink):
        o, lse = sink_ref(scores(Q, K), mask, sink, V)
        return o, torch.where(mask.any(-1), lse, torch.zeros_like(lse))

    return spec, dict(Q=q, K=k, V=v, sink=sink), ref


@case(700)
def alibi_decode(M, P=2):
    spec = f"""{QKV}, slope[h]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
S[b, h, m, p]  = QK[b, h, m, p] - slope[h] * (p + M - P - m)
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    slope = torch.tensor([0.01, 0.003], dtype=torch.float64)
    pp, mm = ar(P, M)

    def ref(Q, K, V, slope):
        s = scores(Q, K) - slope[:, None, None] * (pp + M - P - mm)
        return softmax_ref(s, mm <= pp + M - P, V)

    return spec, dict(Q=q, K=k, V=v, slope=slope), ref


@case(513)
def softcap_window(M, P=3):
    w = tile_of(M) + 24
    spec = f"""{QKV}
param  CAP = 5.0
param  W = {w}
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, m, p]  = CAP * tanh(QK[b, h, m, p] / CAP)  where 0 <= p + M - P - m < W
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M, scale=2.0)
    pp, mm = ar(P, M)
    mask = (pp + M - P - mm >= 0) & (pp + M - P - mm < w)

    def ref(Q, K, V):
        return softmax_ref(5.0 * torch.tanh(scores(Q, K) / 5.0), mask, V)

    return spec, dict(Q=q, K=k, V=v), ref


PAD = f"""{QKV}, klen[b] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b]
{SOFTMAX}"""


def heads(M, h=2):
    """``h`` heads for the torch cases, 1 for the (slow) triton ones."""
    return h if M > 256 else 1


def tile_of(M):
    """The default tile the case is sized against: torch's 256 past 256 keys, else triton's 64."""
    return 256 if M > 256 else 64


def klen_mask(klen, M):
    return torch.arange(M)[None, None, None, :] < klen[:, None, None, None]


@case(513)
def padding_tile_boundaries(M, P=2):
    T = tile_of(M)
    klen = torch.tensor([0, T - 1, T, T + 1, 2 * T, M] if M > 256 else [0, T, T + 1, 2 * T])
    q, k, v = qkv(len(klen), 1, P, M)
    mask = klen_mask(klen, M)
    return PAD, dict(Q=q, K=k, V=v, klen=klen), lambda Q, K, V, klen: softmax_ref(scores(Q, K), mask, V)


@case(513)
def padding_causal_queries_at_end(M, P=3):
    # the P queries are the last P positions of each sequence: m <= p + klen[b] - P
    spec = f"""{QKV}, klen[b] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b] and m <= p + klen[b] - P
{SOFTMAX}"""
    T = tile_of(M)
    klen = torch.tensor([0, 1, T, T + 1, M])
    q, k, v = qkv(len(klen), 2, P, M)
    pp, mm = ar(P, M)
    kl = klen[:, None, None, None]
    mask = (mm < kl) & (mm <= pp + kl - P)
    return (
        spec,
        dict(Q=q, K=k, V=v, klen=klen),
        lambda Q, K, V, klen: softmax_ref(scores(Q, K), mask, V),
    )


def docs(b, m, seed):
    """Sorted document ids per batch row, with boundaries near the tile edges."""
    g = torch.Generator().manual_seed(seed)
    t = tile_of(m)
    cuts = torch.tensor([t - 6, t, t + 1, t + t // 6, 2 * t - 1, 2 * t + t // 3])
    out = torch.zeros(b, m, dtype=torch.int64)
    for i in range(b):
        pick = cuts[torch.randperm(len(cuts), generator=g)[:3]]
        out[i] = (torch.arange(m)[:, None] >= pick[None, :]).sum(-1) + 10 * i
    return out


@case(513)
def document_mask_shifted_lookup(M, P=3):
    spec = f"""{QKV}, doc[b, n] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  \\
                where doc[b, m] == doc[b, p + M - P] and m <= p + M - P
{SOFTMAX}"""
    doc = docs(2, M, 5)
    doc[1, -2:] = 99  # the last two queries of batch 1 start a document of their own
    q, k, v = qkv(2, 2, P, M)
    pp, mm = ar(P, M)
    qd = doc[:, M - P :]
    mask = ((doc[:, None, None, :] == qd[:, None, :, None]) & (mm <= pp + M - P))[:, None]

    def ref(Q, K, V, doc):
        return softmax_ref(scores(Q, K), mask[:, 0], V)

    return spec, dict(Q=q, K=k, V=v, doc=doc), ref


@case(700)
def document_mask_query_docs(M, P=4):
    # qdoc holds the query's document; 99 is in no key's document: that row is empty
    spec = f"""{QKV}, doc[b, m] : int, qdoc[b, p] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where doc[b, m] == qdoc[b, p]
{SOFTMAX}"""
    doc = docs(2, M, 7)
    T = tile_of(M)
    qdoc = torch.stack([doc[0, [0, T - 1, T, M - 1]], torch.tensor([99, 10, 11, 13])])
    q, k, v = qkv(2, 1, P, M)
    mask = (doc[:, None, None, :] == qdoc[:, None, :, None])[:, :1]
    return (
        spec,
        dict(Q=q, K=k, V=v, doc=doc, qdoc=qdoc),
        lambda Q, K, V, doc, qdoc: softmax_ref(scores(Q, K), mask, V),
    )


@case(300)
def gqa_causal_offset(M, P=2):
    spec = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m <= p + M - P
MX[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - MX[b, h, p])
DN[b, h, p]    = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DN[b, h, p]
"""
    q, k, v = qkv(1, 4, P, M, g=2)
    pp, mm = ar(P, M)

    def ref(Q, K, V):
        K2, V2 = K.repeat_interleave(2, 1), V.repeat_interleave(2, 1)
        return softmax_ref(scores(Q, K2), mm <= pp + M - P, V2)

    return spec, dict(Q=q, K=k, V=v), ref


@case(257)
def gqa_padding(M, P=2):
    spec = """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], klen[b] : int
param  R = 3
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E)  where m < klen[b]
MX[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - MX[b, h, p])
DN[b, h, p]    = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, h // R, m, f] / DN[b, h, p]
"""
    klen = torch.tensor([tile_of(M), 0, tile_of(M) + 1])
    q, k, v = qkv(3, 6, P, M, g=2)
    mask = klen_mask(klen, M)

    def ref(Q, K, V, klen):
        K2, V2 = K.repeat_interleave(3, 1), V.repeat_interleave(3, 1)
        return softmax_ref(scores(Q, K2), mask, V2)

    return spec, dict(Q=q, K=k, V=v, klen=klen), ref


@case(513)
def lse_padding(M, P=2):
    spec = """
input  Q[b, h, p, e], K[b, h, m, e], klen[b] : int
output L
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b]
MX[b, h, p]   = S[b, h, m, p] :: max(m)
DN[b, h, p]   = exp(S[b, h, m, p] - MX[b, h, p])
L[b, h, p]    = MX[b, h, p] + log(DN[b, h, p])
"""
    klen = torch.tensor([0, 256, 257, 513])
    q, k, _ = qkv(4, 1, P, M)
    mask = klen_mask(klen, M)
    return (
        spec,
        dict(Q=q, K=k, klen=klen),
        lambda Q, K, klen: lse_ref(scores(Q, K), mask),
    )


@case(700)
def output_and_lse_window_empty_rows(M, P=4):
    st, w = M // 3, M // 7
    spec = f"""{QKV}
param  W = {w}
output O, L
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where {st} * p - W <= m < {st} * p
{SOFTMAX}
L[b, h, p]    = MX[b, h, p] + log(DN[b, h, p])
"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (st * pp - w <= mm) & (mm < st * pp)
    q, k, v = qkv(1, heads(M), P, M)

    def ref(Q, K, V):
        s = scores(Q, K)
        return softmax_ref(s, mask, V), lse_ref(s, mask)

    return spec, dict(Q=q, K=k, V=v), ref


@case(700)
def sigmoid_attention_causal(M, P=3):
    spec = f"""{QKV}, bias
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
O[b, h, p, f] = sigmoid(S[b, h, m, p] - bias) * V[b, h, m, f]
"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = mm <= pp + M - P

    def ref(Q, K, V, bias):
        return (torch.sigmoid(scores(Q, K) - bias) * mask) @ V

    return spec, dict(Q=q, K=k, V=v, bias=torch.tensor(math.log(M), dtype=torch.float64)), ref


@case(513)
def sigmoid_attention_window_empty_rows(M, P=3):
    spec = f"""{QKV}
param  W = 260
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where 256 * p - W <= m < 256 * p
O[b, h, p, f] = sigmoid(S[b, h, m, p] - 4.0) * V[b, h, m, f]
"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (256 * pp - 260 <= mm) & (mm < 256 * pp)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: (torch.sigmoid(scores(Q, K) - 4.0) * mask) @ V


@case(513)
def linear_attention_causal_offset(M, P=3):
    spec = f"""{QKV}
output O
FQ[b, h, p, e]  = elu(Q[b, h, p, e]) + 1
FK[b, h, m, e]  = elu(K[b, h, m, e]) + 1
NUM[b, h, p, f] = FQ[b, h, p, e] * FK[b, h, m, e] * V[b, h, m, f]  where m <= p + M - P
DEN[b, h, p]    = FQ[b, h, p, e] * FK[b, h, m, e]  where m <= p + M - P
O[b, h, p, f]   = NUM[b, h, p, f] / DEN[b, h, p]
"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (mm <= pp + M - P).double()

    def ref(Q, K, V):
        a = (torch.nn.functional.elu(Q) + 1) @ (torch.nn.functional.elu(K) + 1).transpose(-1, -2) * mask
        return (a @ V) / a.sum(-1, keepdim=True)

    return spec, dict(Q=q, K=k, V=v), ref


@case(300)
def linear_attention_padding(M, P=2):
    spec = f"""{QKV}, klen[b] : int
output O
FQ[b, h, p, e]  = elu(Q[b, h, p, e]) + 1
FK[b, h, m, e]  = elu(K[b, h, m, e]) + 1
A[b, h, m, p]   = FQ[b, h, p, e] * FK[b, h, m, e]  where m < klen[b]
DEN[b, h, p]    = A[b, h, m, p]
O[b, h, p, f]   = A[b, h, m, p] * V[b, h, m, f] / DEN[b, h, p]
"""
    klen = torch.tensor([0, 256, 257, 300])
    q, k, v = qkv(4, 1, P, M)
    mask = klen_mask(klen, M).double()

    def ref(Q, K, V, klen):
        a = (torch.nn.functional.elu(Q) + 1) @ (torch.nn.functional.elu(K) + 1).transpose(-1, -2) * mask
        den = a.sum(-1, keepdim=True)
        return (a @ V) / torch.where(den > 0, den, torch.ones(()))

    return spec, dict(Q=q, K=k, V=v, klen=klen), ref


@case(300)
def extreme_logits_causal(M, P=3):
    # scores of about +-1e4: the softmax is one-hot-ish; each row's winner sits in a different tile
    spec = f"""{QKV}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e]  where m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 1, P, M)
    k = k / k.norm(dim=-1, keepdim=True) * 100.0
    q = q / q.norm(dim=-1, keepdim=True) * 100.0
    pp, mm = ar(P, M)
    return (
        spec,
        dict(Q=q, K=k, V=v),
        lambda Q, K, V: softmax_ref(Q @ K.transpose(-1, -2), mm <= pp + M - P, V),
    )


@case(513)
def extreme_bias_per_key(M, P=2):
    # a per-key bias of -1e4 on most keys of the first two tiles and +1e4 on a few keys of the third
    spec = f"""{QKV}, kb[b, m]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, m, p]  = QK[b, h, m, p] + kb[b, m]
{SOFTMAX}"""
    q, k, v = qkv(2, 2, P, M)
    kb = torch.zeros(2, M, dtype=torch.float64)
    kb[0, :500] = -1e4
    kb[1, 510:] = 1e4
    kb[1, 3] = 1e4 + 0.5

    def ref(Q, K, V, kb):
        return softmax_ref(scores(Q, K) + kb[:, None, None, :], torch.ones(1, dtype=torch.bool), V)

    return spec, dict(Q=q, K=k, V=v, kb=kb), ref


@case(513)
def prefix_lm(M, P=4):
    spec = f"""{QKV}, n : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < n or m <= 120 * p
{SOFTMAX}"""
    n = torch.tensor(260)
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (mm < 260) | (mm <= 120 * pp)
    return spec, dict(Q=q, K=k, V=v, n=n), lambda Q, K, V, n: softmax_ref(scores(Q, K), mask, V)


@case(300)
def chunked_decode(M, P=5):
    c = M // 3
    spec = f"""{QKV}
param  C = {c}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  \\
                where m // C == (p + M - P) // C and m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (mm // c == (pp + M - P) // c) & (mm <= pp + M - P)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mask, V)


@case(300)
def learned_key_bias(M, P=3):
    spec = f"""{QKV}, kb[h, m]
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m <= p + M - P
S[b, h, m, p]  = QK[b, h, m, p] + kb[h, m]
{SOFTMAX}"""
    q, k, v = qkv(2, 2, P, M)
    kb = randn(2, M, seed=11)
    pp, mm = ar(P, M)

    def ref(Q, K, V, kb):
        return softmax_ref(scores(Q, K) + kb[None, :, None, :], mm <= pp + M - P, V)

    return spec, dict(Q=q, K=k, V=v, kb=kb), ref


@case(513)
def temperature_input(M, P=2):
    spec = f"""{QKV}, temp
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] / temp  where m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)

    def ref(Q, K, V, temp):
        return softmax_ref(Q @ K.transpose(-1, -2) / temp, mm <= pp + M - P, V)

    return spec, dict(Q=q, K=k, V=v, temp=torch.tensor(0.7, dtype=torch.float64)), ref


@case(513)
def multi_query_padding(M, P=2):
    spec = """
input  Q[b, h, p, e], K[b, m, e], V[b, m, f], klen[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, m, e] * rsqrt(E)  where m < klen[b]
MX[b, h, p]    = S[b, h, m, p] :: max(m)
EX[b, h, m, p] = exp(S[b, h, m, p] - MX[b, h, p])
DN[b, h, p]    = EX[b, h, m, p]
O[b, h, p, f]  = EX[b, h, m, p] * V[b, m, f] / DN[b, h, p]
"""
    klen = torch.tensor([512, 0, 255])
    q = randn(3, 2, P, E, seed=1)
    k, v = randn(3, M, E, seed=2), randn(3, M, FD, seed=3)
    mask = klen_mask(klen, M)

    def ref(Q, K, V, klen):
        return softmax_ref(scores(Q, K[:, None]), mask, V[:, None])

    return spec, dict(Q=q, K=k, V=v, klen=klen), ref


@case(513)
def symmetric_window_abs(M, P=4):
    spec = f"""{QKV}
param  W = 140
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where abs(150 * p - m) < W
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (150 * pp - mm).abs() < 140
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mask, V)


@case(300)
def three_pass_explicit_weights(M, P=2):
    spec = f"""{QKV}, klen[b] : int
output O
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b] and m <= p + 280
MX[b, h, p]    = S[b, h, m, p] :: max(m)
SN[b, h, m, p] = exp(S[b, h, m, p] - MX[b, h, p])
SD[b, h, p]    = SN[b, h, m, p]
A[b, h, m, p]  = SN[b, h, m, p] / SD[b, h, p]
O[b, h, p, f]  = A[b, h, m, p] * V[b, h, m, f]
"""
    klen = torch.tensor([257, 0, 300])
    q, k, v = qkv(3, 1, P, M)
    pp, mm = ar(P, M)
    mask = klen_mask(klen, M) & (mm <= pp + 280)
    return (
        spec,
        dict(Q=q, K=k, V=v, klen=klen),
        lambda Q, K, V, klen: softmax_ref(scores(Q, K), mask, V),
    )


@case(300)
def negative_scale(M, P=3):
    spec = f"""{QKV}
param  SC = -0.5
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * SC  where m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)

    def ref(Q, K, V):
        return softmax_ref(-0.5 * Q @ K.transpose(-1, -2), mm <= pp + M - P, V)

    return spec, dict(Q=q, K=k, V=v), ref


@case(513)
def spans(M, P=2):
    spec = f"""{QKV}, start[b] : int, stop[b] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m >= start[b] and m < stop[b]
{SOFTMAX}"""
    start = torch.tensor([250, 256, 0, 511, 257])
    stop = torch.tensor([260, 256, 513, 513, 258])
    q, k, v = qkv(5, 1, P, M)
    mm = torch.arange(M)
    mask = ((mm >= start[:, None]) & (mm < stop[:, None]))[:, None, None, :]
    return (
        spec,
        dict(Q=q, K=k, V=v, start=start, stop=stop),
        lambda Q, K, V, start, stop: softmax_ref(scores(Q, K), mask, V),
    )


@case(513)
def per_row_lengths(M, P=5):
    spec = f"""{QKV}, qlen[b, p] : int
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < qlen[b, p]
{SOFTMAX}"""
    T = tile_of(M)
    qlen = torch.tensor([[0, T - 1, T, T + 1, 2 * T], [M, 1, 0, M - 13, T]])
    q, k, v = qkv(2, heads(M), P, M)
    mask = (torch.arange(M)[None, None, :] < qlen[:, :, None])[:, None]
    return (
        spec,
        dict(Q=q, K=k, V=v, qlen=qlen),
        lambda Q, K, V, qlen: softmax_ref(scores(Q, K), mask, V),
    )


@case(700)
def max_score_and_count(M, P=3):
    # not attention: the best score and the number of keys in a window that leaves row 0 empty
    spec = f"""{QKV}
param  W = 300
output BEST, CNT
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where 300 * p - W <= m < 300 * p
BEST[b, h, p]  = S[b, h, m, p] :: max(m)
CNT[b, h, p]   = S[b, h, m, p] * 0 + 1
"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (300 * pp - 300 <= mm) & (mm < 300 * pp)

    def ref(Q, K, V):
        s = scores(Q, K).masked_fill(~mask, -math.inf).amax(-1)
        best = torch.where(mask.any(-1), s, torch.zeros_like(s))
        return best, mask.sum(-1).double().expand(best.shape)

    return spec, dict(Q=q, K=k, V=v), ref


@case(300)
def one_pass_written_tiles(M, P=3):
    # a hand-written 1-pass cascade with its own tile of 64 keys; queries at the end, causal
    spec = """
input  Q[p, e], K[m, e], V[m, f]
param  M0 = 64
rank   M = M1 * M0
output O
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e] * rsqrt(E)  where m1 * M0 + m0 <= p + M - P
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[0, p]       = -inf
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p] ?? -inf)
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
SLD[m1, p]     = SLN[m1, m0, p]
SLNV[m1, p, f] = SLN[m1, m0, p] * V[m1 * M0 + m0, f]
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
RD[0, p]       = 0
RD[m1 + 1, p]  = (SLD[m1, p] ?? 0) + RD[m1, p] * PRM[m1, p]
RN[0, p, f]    = 0
RN[m1 + 1, p, f] = (SLNV[m1, p, f] ?? 0) + RN[m1, p, f] * PRM[m1, p]
O[p, f]        = RN[M1, p, f] / RD[M1, p]
"""
    q, k, v = randn(P, E, seed=1), randn(M, E, seed=2), randn(M, FD, seed=3)
    pp, mm = ar(P, M)
    return spec, dict(Q=q, K=k, V=v), lambda Q, K, V: softmax_ref(scores(Q, K), mm <= pp + M - P, V)


@case(513)
def alibi_padding_window(M, P=2):
    # ALiBi with padding and a window: the bias term reads a lookup
    spec = f"""{QKV}, slope[h], klen[b] : int
param  W = 270
output O
QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  \\
                 where m < klen[b] and klen[b] - P + p - W < m
S[b, h, m, p]  = QK[b, h, m, p] + slope[h] * (m - klen[b])
{SOFTMAX}"""
    klen = torch.tensor([513, 257, 0, 256])
    slope = torch.tensor([0.02, 0.005], dtype=torch.float64)
    q, k, v = qkv(4, 2, P, M)
    pp, mm = ar(P, M)
    kl = klen[:, None, None, None]
    mask = (mm < kl) & (kl - P + pp - 270 < mm)

    def ref(Q, K, V, slope, klen):
        return softmax_ref(scores(Q, K) + slope[:, None, None] * (mm - kl), mask, V)

    return spec, dict(Q=q, K=k, V=v, slope=slope, klen=klen), ref


@case(300)
def sink_padding_lse(M, P=2):
    # a guarded sink with padding lengths 0 and past one tile: L is the sink alone for klen = 0
    spec = f"""{QKV}, sink[h], klen[b] : int
output O, L
S[b, h, m, p]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < klen[b]
MK[b, h, p]    = S[b, h, m, p] :: max(m)
GM[b, h, p]    = MK[b, h, p] ?? sink[h]
EX[b, h, m, p] = exp(S[b, h, m, p] - GM[b, h, p])
SK[b, h, p]    = EX[b, h, m, p]
DN[b, h, p]    = (SK[b, h, p] ?? 0) + exp(sink[h] - GM[b, h, p])
NV[b, h, p, f] = EX[b, h, m, p] * V[b, h, m, f]
O[b, h, p, f]  = (NV[b, h, p, f] ?? 0) / DN[b, h, p]
L[b, h, p]     = GM[b, h, p] + log(DN[b, h, p])
"""
    klen = torch.tensor([0, tile_of(M) + 1, M])
    q, k, v = qkv(3, 2, P, M)
    sink = torch.tensor([0.5, -1.0], dtype=torch.float64)
    mask = klen_mask(klen, M)
    return (
        spec,
        dict(Q=q, K=k, V=v, sink=sink, klen=klen),
        lambda Q, K, V, sink, klen: sink_ref(scores(Q, K), mask, sink, V),
    )


@case(513)
def statistics_as_outputs(M, P=3):
    # the row max and the denominator relative to it are outputs too: the streamed loop must deliver them
    # relative to the final max, and their gradients are not those of detached stabilizers
    spec = f"""{QKV}
output O, MX, DN
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)  where m < 200 * p
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = mm < 200 * pp

    def ref(Q, K, V):
        s = scores(Q, K)
        anyk = mask.any(-1)
        mx = torch.where(anyk, s.masked_fill(~mask, -math.inf).amax(-1), torch.zeros(()))
        dn = (torch.exp(s - mx[..., None]) * mask).sum(-1)
        return softmax_ref(s, mask, V), mx, dn

    return spec, dict(Q=q, K=k, V=v), ref


@case(513)
def shifted_keys(M, P=3):
    # each query scores key m by K[m + 1] (absent for the last key): reads that cross tile boundaries
    spec = f"""{QKV}
output O
S[b, h, m, p] = Q[b, h, p, e] * K[b, h, m + 1, e] * rsqrt(E)  where m <= p + M - P
{SOFTMAX}"""
    q, k, v = qkv(1, 2, P, M)
    pp, mm = ar(P, M)
    mask = (mm <= pp + M - P) & (mm < M - 1)

    def ref(Q, K, V):
        return softmax_ref(scores(Q, torch.cat([K[:, :, 1:], K[:, :, :1] * 0], 2)), mask, V)

    return spec, dict(Q=q, K=k, V=v), ref


# triton cases: M past the default tile of 64 (kept small: the interpreter is slow)
TRITON = {
    "decode_causal_offset": 130,
    "padding_tile_boundaries": 129,
    "sink_guarded_strided_strict": 200,
    "output_and_lse_window_empty_rows": 200,
}
# the cases that the torch backend runs through SDPA by default (the others run the generated loop anyway)
LIBRARY = [
    "alibi_decode",
    "alibi_padding_window",
    "chunked_decode",
    "decode_causal_offset",
    "decode_single_query_strict",
    "document_mask_query_docs",
    "extreme_bias_per_key",
    "extreme_logits_causal",
    "gqa_causal_offset",
    "gqa_padding",
    "learned_key_bias",
    "long_window_decode",
    "multi_query_padding",
    "negative_scale",
    "padding_causal_queries_at_end",
    "padding_tile_boundaries",
    "per_row_lengths",
    "prefix_lm",
    "spans",
    "strict_causal_top_left",
    "strided_window_excluding_diagonal",
    "symmetric_window_abs",
    "three_pass_explicit_weights",
]

NUMPY = [
    "decode_causal_offset",
    "sink_guarded_strided_strict",
    "padding_tile_boundaries",
    "document_mask_shifted_lookup",
    "prefix_lm",
]


def make(name, m=None):
    fn, default = CASES[name]
    return fn(m or default)


# ---------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch(name):
    """Default options; and ``library=False`` where the default runs SDPA."""
    case = make(name)
    check(case, "torch", torch.float64, TOL64)
    matched = "program_library" in compile_(case[0], "torch").source
    assert matched == (name in LIBRARY), f"{name}: SDPA match {matched}; update LIBRARY"
    if matched:
        check(case, "torch", torch.float64, TOL64, library=False)


@pytest.mark.parametrize("name", sorted(TRITON))
def test_triton_float32(name):
    check(make(name, TRITON[name]), "triton", torch.float32, TOL32)


@pytest.mark.parametrize("name", NUMPY)
def test_numpy_reference(name):
    check_numpy(make(name))
