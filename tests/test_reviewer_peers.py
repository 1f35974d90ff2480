"""A reviewer's specs, written from the documentation alone, against independent PyTorch references.

Each spec below is a realistic attention variant as a user would write it (plain, bottom-right causal
cross attention, a symmetric window with a scalar scale input, ALiBi with |p - m|, soft-capping with the cap
as an input, GQA through ``h // R`` with an LSE output, sigmoid attention, prefix-LM and document masks
through integer inputs, a learned sink, an additive bias input, scalar temperature/gain inputs, a clamped
relative-position table, a [b, s, h, d] layout with key lengths, memory tokens, attention dropout with an
explicit keep mask, softmax_1, cosine attention, differential attention). The references are
``scaled_dot_product_attention``, FlexAttention (forward; it has no backward on CPU) and hand-written torch
formulas differentiated by autograd: nothing here goes through the NumPy oracle.

Sizes are small and odd on purpose: head dims that are not powers of two, P != M, ragged tiles (``tile=3``),
several heads and batches, sizes of 1.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
from triton_cases import DEVICE  # sets TRITON_INTERPRET=1 without a GPU, before triton is imported

import einattn
import einattn.testing
from einattn.nn import EinAttention

# ---- the specs ---------------------------------------------------------------------------------------------

SOFTMAX_TAIL = """
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, h, p, f]  = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
"""

SPECS = {
    "plain": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
"""
    + SOFTMAX_TAIL,
    # causal aligned to the bottom right (a query block at the end of a KV cache)
    "causal_br": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p + M - P
"""
    + SOFTMAX_TAIL,
    "causal_tl": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p
"""
    + SOFTMAX_TAIL,
    "window2": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], scale
param  W = 3
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * scale where abs(p - m) < W
"""
    + SOFTMAX_TAIL,
    "alibi_nc": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], slope[h]
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = QK[b, h, p, m] - slope[h] * abs(p - m)
"""
    + SOFTMAX_TAIL,
    "softcap_in": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], cap
output O
QK[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p
S[b, h, p, m]  = cap * tanh(QK[b, h, p, m] / cap)
"""
    + SOFTMAX_TAIL,
    "gqa_causal_lse": """
input  Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]
param  R = 2
output O, LSE
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h // R, m, e] * rsqrt(E) where m <= p
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, h, p, f]  = X[b, h, p, m] * V[b, h // R, m, f] / D[b, h, p]
LSE[b, h, p]   = MX[b, h, p] + log(D[b, h, p])
""",
    "sigmoid": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
O[b, h, p, f]  = sigmoid(S[b, h, p, m] + bias) * V[b, h, m, f]
""",
    "prefixlm": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], pre[b] : int
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p or m < pre[b]
"""
    + SOFTMAX_TAIL,
    "docmask": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], doc[b, n] : int
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where doc[b, p] == doc[b, m]
"""
    + SOFTMAX_TAIL,
    "sink": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], sink[h]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p
MK[b, h, p]    = S[b, h, p, m] :: max(m)
MX[b, h, p]    = max(MK[b, h, p], sink[h])
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D0[b, h, p]    = X[b, h, p, m]
D[b, h, p]     = D0[b, h, p] + exp(sink[h] - MX[b, h, p])
O[b, h, p, f]  = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
""",
    "relbias": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], bias[h, p, m]
output O, LSE
S0[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = S0[b, h, p, m] + bias[h, p, m]
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, h, p, f]  = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
LSE[b, h, p]   = MX[b, h, p] + log(D[b, h, p])
""",
    "temp_scalar": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], tau, gamma, gate[b, p]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] / tau
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, h, p, f]  = gamma * sigmoid(gate[b, p]) * X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
""",
    "relpos_table": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], rb[h, u]
param  R = 2
output O
S0[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
S[b, h, p, m]  = S0[b, h, p, m] + rb[h, clamp(m - p, -R, R) + R]
"""
    + SOFTMAX_TAIL,
    # the flash-attn layout, output [b, p, h, f], causal and a key length per batch
    "bshd": """
input  Q[b, p, h, e], K[b, m, h, e], V[b, m, h, f], klen[b] : int
output O
S[b, h, p, m]  = Q[b, p, h, e] * K[b, m, h, e] * rsqrt(E) where m <= p and m < klen[b]
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, p, h, f]  = X[b, h, p, m] * V[b, m, h, f] / D[b, h, p]
""",
    "memtok": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], KM[h, n, e], VM[h, n, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p
T[b, h, p, n]  = Q[b, h, p, e] * KM[h, n, e] * rsqrt(E)
M1[b, h, p]    = S[b, h, p, m] :: max(m)
M2[b, h, p]    = T[b, h, p, n] :: max(n)
MX[b, h, p]    = max(M1[b, h, p], M2[b, h, p])
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
Y[b, h, p, n]  = exp(T[b, h, p, n] - MX[b, h, p])
D1[b, h, p]    = X[b, h, p, m]
D2[b, h, p]    = Y[b, h, p, n]
N1[b, h, p, f] = X[b, h, p, m] * V[b, h, m, f]
N2[b, h, p, f] = Y[b, h, p, n] * VM[h, n, f]
O[b, h, p, f]  = (N1[b, h, p, f] + N2[b, h, p, f]) / (D1[b, h, p] + D2[b, h, p])
""",
    "dropout": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], keep[b, h, p, m], kp
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p
MX[b, h, p]    = S[b, h, p, m] :: max(m)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D[b, h, p]     = X[b, h, p, m]
O[b, h, p, f]  = X[b, h, p, m] * keep[b, h, p, m] * V[b, h, m, f] / (D[b, h, p] * kp)
""",
    "softmax1": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f]
output O
S[b, h, p, m]  = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E)
MS[b, h, p]    = S[b, h, p, m] :: max(m)
MX[b, h, p]    = max(MS[b, h, p], 0)
X[b, h, p, m]  = exp(S[b, h, p, m] - MX[b, h, p])
D0[b, h, p]    = X[b, h, p, m]
D[b, h, p]     = D0[b, h, p] + exp(-MX[b, h, p])
O[b, h, p, f]  = X[b, h, p, m] * V[b, h, m, f] / D[b, h, p]
""",
    "cosine": """
input  Q[b, h, p, e], K[b, h, m, e], V[b, h, m, f], ls
output O
QN[b, h, p]    = square(Q[b, h, p, e])
KN[b, h, m]    = square(K[b, h, m, e])
S0[b, h, p, m] = Q[b, h, p, e] * K[b, h, m, e]
S[b, h, p, m]  = S0[b, h, p, m] * rsqrt(QN[b, h, p]) * rsqrt(KN[b, h, m]) * exp(ls)
"""
    + SOFTMAX_TAIL,
    "diffattn": """
input  Q1[b, h, p, e], K1[b, h, m, e], Q2[b, h, p, e], K2[b, h, m, e], V[b, h, m, f], lam
output O
S1[b, h, p, m] = Q1[b, h, p, e] * K1[b, h, m, e] * rsqrt(E)
S2[b, h, p, m] = Q2[b, h, p, e] * K2[b, h, m, e] * rsqrt(E)
M1[b, h, p]    = S1[b, h, p, m] :: max(m)
M2[b, h, p]    = S2[b, h, p, m] :: max(m)
X1[b, h, p, m] = exp(S1[b, h, p, m] - M1[b, h, p])
X2[b, h, p, m] = exp(S2[b, h, p, m] - M2[b, h, p])
D1[b, h, p]    = X1[b, h, p, m]
D2[b, h, p]    = X2[b, h, p, m]
A[b, h, p, m]  = X1[b, h, p, m] / D1[b, h, p] - lam * X2[b, h, p, m] / D2[b, h, p]
O[b, h, p, f]  = A[b, h, p, m] * V[b, h, m, f]
""",
}


# ---- independent references ----------------------------------------------------------------------------


def softmax_attn(q, k, v, mask=None, bias=None, scale=None, lse=False):
    """Softmax attention by hand; ``mask`` True keeps a key; a row with no key gives 0 (and LSE 0)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    mx = s.amax(-1, keepdim=True)
    alive = torch.isfinite(mx)
    mx = torch.where(alive, mx, torch.zeros_like(mx))
    x = torch.exp(s - mx)
    d = torch.where(alive, x.sum(-1, keepdim=True), torch.ones_like(mx))
    o = torch.where(alive, (x / d) @ v, torch.zeros(()))
    if lse:
        return o, torch.where(alive, mx + torch.log(d), torch.zeros(())).squeeze(-1)
    return o


def causal(p, m, offset=0):
    return torch.arange(m)[None, :] <= torch.arange(p)[:, None] + offset


def randn(gen, *shape, dtype=torch.float64, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def qkv(gen, b, h, p, m, e, f, g=None, dtype=torch.float64):
    g = h if g is None else g
    return dict(
        Q=randn(gen, b, h, p, e, dtype=dtype),
        K=randn(gen, b, g, m, e, dtype=dtype),
        V=randn(gen, b, g, m, f, dtype=dtype),
    )


def case(name, dtype=torch.float64, seed=0):
    """(spec name, params, inputs, reference on float64 copies of the inputs)."""
    gen = torch.Generator().manual_seed(seed)
    if name == "plain":
        x = qkv(gen, 2, 3, 7, 11, 5, 3, dtype=dtype)
        return {}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"]),)
    if name == "causal_br":
        x = qkv(gen, 2, 2, 5, 13, 6, 4, dtype=dtype)
        return {}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"], mask=causal(5, 13, 8)),)
    if name == "causal_tl":
        x = qkv(gen, 2, 2, 9, 13, 6, 4, dtype=dtype)
        return {}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"], mask=causal(9, 13)),)
    if name == "window2":
        x = qkv(gen, 1, 2, 12, 12, 7, 5, dtype=dtype)
        x["scale"] = torch.tensor(0.37, dtype=dtype)
        i, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
        return (
            {"W": 3},
            x,
            lambda x: (softmax_attn(x["Q"], x["K"], x["V"], mask=(i - j).abs() < 3, scale=x["scale"]),),
        )
    if name == "alibi_nc":
        x = qkv(gen, 2, 3, 6, 10, 4, 4, dtype=dtype)
        x["slope"] = torch.tensor([0.65, 0.325, 0.1625], dtype=dtype)
        dist = (torch.arange(6)[:, None] - torch.arange(10)[None, :]).abs().double()
        return (
            {},
            x,
            lambda x: (softmax_attn(x["Q"], x["K"], x["V"], bias=-x["slope"][:, None, None] * dist),),
        )
    if name == "softcap_in":
        x = qkv(gen, 1, 2, 8, 8, 5, 3, dtype=dtype)
        x["Q"] = x["Q"] * 3
        x["cap"] = torch.tensor(2.5, dtype=dtype)

        def ref(x):
            s = x["cap"] * torch.tanh(x["Q"] @ x["K"].transpose(-1, -2) / math.sqrt(5) / x["cap"])
            return (torch.softmax(s.masked_fill(~causal(8, 8), -math.inf), -1) @ x["V"],)

        return {}, x, ref
    if name == "gqa_causal_lse":
        x = qkv(gen, 2, 4, 10, 10, 3, 5, g=2, dtype=dtype)
        return (
            {"R": 2},
            x,
            lambda x: softmax_attn(
                x["Q"],
                x["K"].repeat_interleave(2, 1),
                x["V"].repeat_interleave(2, 1),
                mask=causal(10, 10),
                lse=True,
            ),
        )
    if name == "sigmoid":
        x = qkv(gen, 2, 2, 6, 7, 5, 3, dtype=dtype)
        x["bias"] = torch.tensor(-math.log(7), dtype=dtype)
        return (
            {},
            x,
            lambda x: (torch.sigmoid(x["Q"] @ x["K"].transpose(-1, -2) / math.sqrt(5) + x["bias"]) @ x["V"],),
        )
    if name == "prefixlm":
        x = qkv(gen, 3, 2, 9, 9, 4, 4, dtype=dtype)
        pre = torch.tensor([0, 4, 9])
        x["pre"] = pre
        mask = causal(9, 9)[None] | (torch.arange(9)[None, None, :] < pre[:, None, None])
        return {}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"], mask=mask[:, None]),)
    if name == "docmask":
        x = qkv(gen, 2, 2, 10, 10, 4, 3, dtype=dtype)
        doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [5, 5, 5, 5, 5, 5, 7, 7, 7, 7]])
        x["doc"] = doc
        mask = doc[:, :, None] == doc[:, None, :]
        return {}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"], mask=mask[:, None]),)
    if name == "sink":
        x = qkv(gen, 1, 3, 7, 7, 4, 4, dtype=dtype)
        x["sink"] = torch.tensor([0.3, -1.0, 2.0], dtype=dtype)

        def ref(x):
            s = (x["Q"] @ x["K"].transpose(-1, -2) / 2).masked_fill(~causal(7, 7), -math.inf)
            sk = x["sink"][None, :, None, None].expand(1, 3, 7, 1)
            return (torch.softmax(torch.cat([s, sk], -1), -1)[..., :7] @ x["V"],)

        return {}, x, ref
    if name == "relbias":
        x = qkv(gen, 2, 2, 5, 8, 3, 2, dtype=dtype)
        x["bias"] = randn(gen, 2, 5, 8, dtype=dtype)
        return {}, x, lambda x: softmax_attn(x["Q"], x["K"], x["V"], bias=x["bias"], lse=True)
    if name == "temp_scalar":
        x = qkv(gen, 2, 2, 6, 9, 4, 3, dtype=dtype)
        x["tau"], x["gamma"] = torch.tensor(1.7, dtype=dtype), torch.tensor(0.8, dtype=dtype)
        x["gate"] = randn(gen, 2, 6, dtype=dtype)

        def ref(x):
            a = torch.softmax(x["Q"] @ x["K"].transpose(-1, -2) / x["tau"], -1)
            return (x["gamma"] * torch.sigmoid(x["gate"])[:, None, :, None] * (a @ x["V"]),)

        return {}, x, ref
    if name == "relpos_table":
        x = qkv(gen, 1, 2, 7, 9, 4, 3, dtype=dtype)
        x["rb"] = randn(gen, 2, 5, dtype=dtype)
        idx = (torch.arange(9)[None, :] - torch.arange(7)[:, None]).clamp(-2, 2) + 2
        return {"R": 2}, x, lambda x: (softmax_attn(x["Q"], x["K"], x["V"], bias=x["rb"][:, idx]),)
    if name == "bshd":
        x = dict(
            Q=randn(gen, 3, 8, 2, 5, dtype=dtype),
            K=randn(gen, 3, 8, 2, 5, dtype=dtype),
            V=randn(gen, 3, 8, 2, 3, dtype=dtype),
        )
        klen = torch.tensor([8, 3, 0])  # batch 2 has no key: its rows are fully masked, delivered as 0
        x["klen"] = klen
        mask = causal(8, 8)[None] & (torch.arange(8)[None, None, :] < klen[:, None, None])

        def ref(x):
            o = softmax_attn(*(x[n].transpose(1, 2) for n in "QKV"), mask=mask[:, None])
            return (o.transpose(1, 2),)

        return {}, x, ref
    if name == "memtok":
        x = qkv(gen, 2, 2, 8, 8, 4, 3, dtype=dtype)
        x["KM"], x["VM"] = randn(gen, 2, 3, 4, dtype=dtype), randn(gen, 2, 3, 3, dtype=dtype)

        def ref(x):
            k = torch.cat([x["K"], x["KM"][None].expand(2, 2, 3, 4)], 2)
            v = torch.cat([x["V"], x["VM"][None].expand(2, 2, 3, 3)], 2)
            return (
                softmax_attn(
                    x["Q"], k, v, mask=torch.cat([causal(8, 8), torch.ones(8, 3, dtype=torch.bool)], 1)
                ),
            )

        return {}, x, ref
    if name == "dropout":
        x = qkv(gen, 1, 2, 8, 8, 4, 3, dtype=dtype)
        x["keep"] = (torch.rand(1, 2, 8, 8, generator=gen) > 0.3).to(dtype)
        x["kp"] = torch.tensor(0.7, dtype=dtype)

        def ref(x):
            s = (x["Q"] @ x["K"].transpose(-1, -2) / 2).masked_fill(~causal(8, 8), -math.inf)
            return ((torch.softmax(s, -1) * x["keep"] / x["kp"]) @ x["V"],)

        return {}, x, ref
    if name == "softmax1":
        x = qkv(gen, 1, 2, 6, 7, 4, 3, dtype=dtype)
        x["Q"] = x["Q"] * 2

        def ref(x):
            s = x["Q"] @ x["K"].transpose(-1, -2) / 2
            return (torch.softmax(torch.cat([s, torch.zeros_like(s[..., :1])], -1), -1)[..., :7] @ x["V"],)

        return {}, x, ref
    if name == "cosine":
        x = qkv(gen, 2, 2, 6, 7, 5, 3, dtype=dtype)
        x["ls"] = torch.tensor(1.2, dtype=dtype)

        def ref(x):
            q = x["Q"] / x["Q"].norm(dim=-1, keepdim=True)
            k = x["K"] / x["K"].norm(dim=-1, keepdim=True)
            return (torch.softmax(q @ k.transpose(-1, -2) * torch.exp(x["ls"]), -1) @ x["V"],)

        return {}, x, ref
    if name == "diffattn":
        x = dict(
            Q1=randn(gen, 2, 2, 6, 4, dtype=dtype),
            K1=randn(gen, 2, 2, 7, 4, dtype=dtype),
            Q2=randn(gen, 2, 2, 6, 4, dtype=dtype),
            K2=randn(gen, 2, 2, 7, 4, dtype=dtype),
            V=randn(gen, 2, 2, 7, 3, dtype=dtype),
            lam=torch.tensor(0.6, dtype=dtype),
        )

        def ref(x):
            a1 = torch.softmax(x["Q1"] @ x["K1"].transpose(-1, -2) / 2, -1)
            a2 = torch.softmax(x["Q2"] @ x["K2"].transpose(-1, -2) / 2, -1)
            return ((a1 - x["lam"] * a2) @ x["V"],)

        return {}, x, ref
    raise KeyError(name)


def compiled(name, backend="torch", params=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return einattn.compile(SPECS[name], backend=backend, params=params, **options)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def f64(x):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in x.items()}


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


ALL = list(SPECS)
CONFIGS = [
    dict(passes="as-written"),
    dict(),
    dict(tile=3, row_block=2),
    dict(tile=2, skip_tiles=False, recompute=False),
]


# ---- torch backend: forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_torch_forward_float64_and_float32(name):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        params, x, ref = case(name, dtype)
        want = as_tuple(ref(f64(x)))
        for cfg in CONFIGS if dtype == torch.float64 else CONFIGS[1:3]:
            got = as_tuple(compiled(name, params=params, **cfg)(**x))
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.dtype == dtype and g.shape == w.shape
                assert rel(g, w) < tol, (name, dtype, cfg, rel(g, w))


@pytest.mark.parametrize(
    "name", ["plain", "causal_tl", "gqa_causal_lse", "relbias", "sink", "prefixlm", "softcap_in"]
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_forward_16bit(name, dtype):
    tol = einattn.testing.TOLERANCES[("torch", str(dtype)[6:])]
    params, x, ref = case(name, dtype)
    want = as_tuple(ref(f64(x)))
    for cfg in CONFIGS[:3]:
        got = as_tuple(compiled(name, params=params, **cfg)(**x))
        for g, w in zip(got, want):
            assert g.dtype == dtype
            assert rel(g, w) < tol, (name, dtype, cfg, rel(g, w))


def test_sdpa_and_flex_agree_with_the_hand_references():
    """The hand-written references used above equal PyTorch's own implementations where those apply."""
    _, x, ref = case("plain")
    assert rel(F.scaled_dot_product_attention(x["Q"], x["K"], x["V"]), ref(x)[0]) < 1e-12
    _, x, ref = case("causal_tl")
    assert rel(F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], is_causal=True), ref(x)[0]) < 1e-12
    _, x, ref = case("causal_br")
    sdpa = F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], attn_mask=causal(5, 13, 8))
    assert rel(sdpa, ref(x)[0]) < 1e-12
    _, x, ref = case("gqa_causal_lse")
    sdpa = F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], is_causal=True, enable_gqa=True)
    assert rel(sdpa, ref(x)[0]) < 1e-12
    _, x, ref = case("relbias")
    sdpa = F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], attn_mask=x["bias"])
    assert rel(sdpa, ref(x)[0]) < 1e-12


@pytest.mark.parametrize(
    "name,sdpa",
    [
        ("plain", lambda x: F.scaled_dot_product_attention(x["Q"], x["K"], x["V"])),
        ("causal_tl", lambda x: F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], is_causal=True)),
        (
            "causal_br",
            lambda x: F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], attn_mask=causal(5, 13, 8)),
        ),
        (
            "gqa_causal_lse",
            lambda x: F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], is_causal=True, enable_gqa=True),
        ),
        ("relbias", lambda x: F.scaled_dot_product_attention(x["Q"], x["K"], x["V"], attn_mask=x["bias"])),
    ],
)
def test_torch_against_sdpa_forward_and_gradients(name, sdpa):
    params, x, _ = case(name)
    ours = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    theirs = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    out = as_tuple(compiled(name, params=params)(**ours))[0]
    want = sdpa(theirs)
    assert rel(out, want) < 1e-10
    w = randn(torch.Generator().manual_seed(5), *want.shape)
    (out * w).sum().backward()
    (want * w).sum().backward()
    for k in x:
        assert rel(ours[k].grad, theirs[k].grad) < 1e-9, k


FLEX = {
    # spec: (score_mod, mask_mod) on the (p, m) plane; extra inputs are closed over
    "softcap_in": (
        lambda x: lambda s, b, h, i, j: x["cap"] * torch.tanh(s / x["cap"]),
        lambda x: lambda b, h, i, j: j <= i,
    ),
    "alibi_nc": (lambda x: lambda s, b, h, i, j: s - x["slope"][h] * (i - j).abs(), None),
    "docmask": (None, lambda x: lambda b, h, i, j: x["doc"][b, i] == x["doc"][b, j]),
    "prefixlm": (None, lambda x: lambda b, h, i, j: (j <= i) | (j < x["pre"][b])),
    "relbias": (lambda x: lambda s, b, h, i, j: s + x["bias"][h, i, j], None),
    "relpos_table": (lambda x: lambda s, b, h, i, j: s + x["rb"][h, (j - i).clamp(-2, 2) + 2], None),
}


@pytest.mark.parametrize("name", list(FLEX))
def test_torch_against_flex_attention(name):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    params, x, _ = case(name)
    score_mod, mask_mod = FLEX[name]
    block_mask = None
    if mask_mod is not None:
        b = x["Q"].shape[0]
        block_mask = flex.create_block_mask(
            mask_mod(x), b, None, x["Q"].shape[2], x["K"].shape[2], device="cpu"
        )
    want, lse = flex.flex_attention(
        x["Q"],
        x["K"],
        x["V"],
        score_mod=score_mod(x) if score_mod else None,
        block_mask=block_mask,
        return_lse=True,
    )
    got = as_tuple(compiled(name, params=params)(**x))
    assert rel(got[0], want) < 1e-10
    if len(got) == 2:  # the spec's LSE is the natural-log log-sum-exp, as FlexAttention's
        assert rel(got[1], lse) < 1e-10


# ---- torch backend: gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_torch_gradients_of_every_float_input(name):
    """float64 gradients of Q, K, V and of every other float input (biases, slopes, sinks, caps, scalars)."""
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        params, x, ref = case(name, dtype)
        for cfg in CONFIGS if dtype == torch.float64 else CONFIGS[1:2]:
            ours = {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in x.items()}
            theirs = {
                k: (v.clone().double().requires_grad_(True) if v.is_floating_point() else v)
                for k, v in x.items()
            }
            got, want = as_tuple(compiled(name, params=params, **cfg)(**ours)), as_tuple(ref(theirs))
            gen = torch.Generator().manual_seed(1)
            ws = [randn(gen, *w.shape) for w in want]
            floats = [k for k in x if x[k].is_floating_point()]
            g1 = torch.autograd.grad(
                sum((o.double() * w).sum() for o, w in zip(got, ws)), [ours[k] for k in floats]
            )
            g2 = torch.autograd.grad(
                sum((o * w).sum() for o, w in zip(want, ws)), [theirs[k] for k in floats]
            )
            for k, a, b in zip(floats, g1, g2):
                assert a.dtype == dtype
                assert rel(a, b) < tol, (name, dtype, cfg, k, rel(a, b))


@pytest.mark.parametrize(
    "name", ["causal_br", "sink", "softcap_in", "window2", "prefixlm", "gqa_causal_lse", "diffattn"]
)
def test_torch_gradcheck(name):
    params, x, _ = case(name)
    for cfg in (dict(passes="as-written"), dict(tile=3)):
        kern = compiled(name, params=params, **cfg)
        floats = [k for k in x if x[k].is_floating_point()]
        others = {k: v for k, v in x.items() if not v.is_floating_point()}
        args = tuple(x[k].clone().requires_grad_(True) for k in floats)

        def fn(*a, kern=kern, floats=floats, others=others):
            return kern(**dict(zip(floats, a)), **others)

        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_fully_masked_rows_are_zero_with_zero_gradients():
    """P > M, bottom-right causal: the first P - M query rows see no key; a window W = 0 sees nothing."""
    gen = torch.Generator().manual_seed(3)
    x = qkv(gen, 1, 2, 9, 4, 3, 2)
    for cfg in CONFIGS:
        q = x["Q"].clone().requires_grad_(True)
        out = compiled("causal_br", **cfg)(q, x["K"], x["V"])
        assert rel(out, softmax_attn(x["Q"], x["K"], x["V"], mask=causal(9, 4, -5))) < 1e-12
        assert (out[:, :, :5] == 0).all()
        out.sum().backward()
        assert torch.isfinite(q.grad).all() and (q.grad[:, :, :5] == 0).all()
    y = qkv(gen, 1, 1, 6, 6, 3, 2)
    for cfg in CONFIGS:
        out = compiled("window2", params={"W": 0}, **cfg)(**y, scale=0.5)
        assert (out == 0).all()


def test_sizes_of_one_and_gqa_head_past_the_last_group():
    gen = torch.Generator().manual_seed(4)
    for b, h, p, m, e, f in [(1, 1, 1, 1, 1, 1), (1, 1, 1, 5, 1, 1), (1, 1, 5, 1, 2, 1)]:
        x = qkv(gen, b, h, p, m, e, f)
        for cfg in CONFIGS:
            assert rel(compiled("plain", **cfg)(**x), softmax_attn(x["Q"], x["K"], x["V"])) < 1e-12
            want = softmax_attn(x["Q"], x["K"], x["V"], mask=causal(p, m))
            assert rel(compiled("causal_tl", **cfg)(**x), want) < 1e-12
    # H = 5 query heads, R = 2, G = 2 key heads: head 4 reads group 2, which is absent: 0
    x = qkv(gen, 1, 5, 4, 6, 3, 2, g=2)
    o, _ = compiled("gqa_causal_lse")(**x)
    want = softmax_attn(
        x["Q"][:, :4], x["K"].repeat_interleave(2, 1), x["V"].repeat_interleave(2, 1), mask=causal(4, 6)
    )
    assert rel(o[:, :4], want) < 1e-12 and (o[:, 4] == 0).all()


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(6)
    q = randn(gen, 2, 7, 3, 5).transpose(1, 2)  # [B, S, H, D] storage seen as [B, H, S, D]
    k = randn(gen, 2, 9, 3, 5).transpose(1, 2)
    v = randn(gen, 2, 3, 8, 9).transpose(-1, -2)[..., ::2]  # transposed and strided
    kexp = randn(gen, 2, 1, 9, 5).expand(2, 3, 9, 5)  # stride 0 over heads
    for cfg in CONFIGS:
        kern = compiled("causal_tl", **cfg)
        for kk in (k, kexp):
            assert rel(kern(q, kk, v), softmax_attn(q, kk, v, mask=causal(7, 9))) < 1e-12
        a, b, c = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        a2, b2, c2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        kern(a, b, c).sum().backward()
        softmax_attn(a2, b2, c2, mask=causal(7, 9)).sum().backward()
        for g1, g2 in ((a.grad, a2.grad), (b.grad, b2.grad), (c.grad, c2.grad)):
            assert rel(g1, g2) < 1e-12


def test_mixed_precision_inputs_promote_on_the_torch_backend():
    gen = torch.Generator().manual_seed(7)
    x = qkv(gen, 1, 2, 6, 7, 5, 3)
    want = softmax_attn(x["Q"], x["K"], x["V"], mask=causal(6, 7))
    for dts, out_dtype in (
        ((torch.float32, torch.float64, torch.float64), torch.float64),
        ((torch.float16, torch.float32, torch.float32), torch.float32),
    ):
        for cfg in CONFIGS[:2]:
            xs = [x[n].detach().clone().to(d).requires_grad_(True) for n, d in zip("QKV", dts)]
            o = compiled("causal_tl", **cfg)(*xs)
            assert o.dtype == out_dtype
            assert rel(o, softmax_attn(*(t.detach().double() for t in xs), mask=causal(6, 7))) < 1e-6
            assert rel(o, want) < 1e-2
            o.sum().backward()
            assert [t.grad.dtype for t in xs] == list(dts)


# ---- einattn.nn and torch.compile ----------------------------------------------------------------------


def test_ein_attention_module_with_learned_slopes():
    m = EinAttention(
        SPECS["alibi_nc"], weights={"slope": torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)}
    )
    _, x, _ = case("alibi_nc")
    dist = (torch.arange(6)[:, None] - torch.arange(10)[None, :]).abs().double()
    slope = m.weights["slope"].detach().clone().requires_grad_(True)
    out = m(x["Q"], x["K"], x["V"])
    want = softmax_attn(x["Q"], x["K"], x["V"], bias=-slope[:, None, None] * dist)
    assert rel(out, want) < 1e-12
    out.square().sum().backward()
    want.square().sum().backward()
    assert rel(m.weights["slope"].grad, slope.grad) < 1e-10
    with pytest.raises(einattn.EinError):
        m(x["Q"], x["K"], x["V"], slope=x["Q"])  # a weight is not passed to forward
    with pytest.raises(einattn.EinError):
        EinAttention(SPECS["prefixlm"], weights={"pre": torch.zeros(3)})  # an `: int` input is no weight


def test_torch_compile_fullgraph_forward_and_backward():
    params, x, ref = case("sink", torch.float32)
    kern = compiled("sink", params=params, tile=3)
    fn = torch.compile(lambda **kw: kern(**kw), fullgraph=True, backend="aot_eager")
    assert rel(fn(**x), ref(f64(x))[0]) < 2e-5
    ours = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    theirs = {k: v.clone().double().requires_grad_(True) for k, v in x.items()}
    fn(**ours).sum().backward()
    ref(theirs)[0].sum().backward()
    for k in x:
        assert rel(ours[k].grad, theirs[k].grad) < 1e-4, k


# ---- triton backend under the interpreter (CPU) or on a GPU --------------------------------------------

TRITON = ["causal_br", "window2", "gqa_causal_lse", "prefixlm", "docmask", "sink", "relbias", "bshd"]


def on_device(x, dtype=None):
    return {
        k: (v.to(DEVICE, dtype) if (v.is_floating_point() and dtype) else v.to(DEVICE)) for k, v in x.items()
    }


@pytest.mark.parametrize("name", TRITON)
def test_triton_forward_float32_and_float16(name):
    for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        params, x, ref = case(name, torch.float32)
        x = on_device(x, dtype)
        want = as_tuple(ref(f64({k: v.cpu() for k, v in x.items()})))
        for cfg in [dict(tile=4), dict(passes="as-written")] if dtype == torch.float32 else [dict(tile=4)]:
            got = as_tuple(compiled(name, "triton", params=params, **cfg)(**x))
            for g, w in zip(got, want):
                assert g.dtype == dtype
                assert rel(g.cpu(), w) < tol, (name, dtype, cfg, rel(g.cpu(), w))


def test_triton_gradients_of_every_float_input():
    for name in ("sink", "relbias", "window2"):
        params, x, ref = case(name, torch.float64)
        ours = {
            k: (v.detach().clone().to(DEVICE).requires_grad_(True) if v.is_floating_point() else v.to(DEVICE))
            for k, v in x.items()
        }
        theirs = {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in x.items()}
        got, want = as_tuple(compiled(name, "triton", params=params, tile=4)(**ours)), as_tuple(ref(theirs))
        ws = [randn(torch.Generator().manual_seed(2), *w.shape) for w in want]
        sum((o.cpu() * w).sum() for o, w in zip(got, ws)).backward()
        sum((o * w).sum() for o, w in zip(want, ws)).backward()
        for k in x:
            if x[k].is_floating_point():
                assert rel(ours[k].grad.cpu(), theirs[k].grad) < 1e-8, (name, k)


def test_triton_fully_masked_rows_and_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(8)
    x = on_device(qkv(gen, 1, 2, 9, 4, 3, 2, dtype=torch.float32))
    out = compiled("causal_br", "triton", tile=2)(**x)
    assert rel(out.cpu(), softmax_attn(*(x[n].cpu().double() for n in "QKV"), mask=causal(9, 4, -5))) < 1e-5
    assert (out[:, :, :5] == 0).all()
    q = randn(gen, 2, 7, 3, 5, dtype=torch.float32).transpose(1, 2).to(DEVICE)
    k = randn(gen, 2, 1, 9, 5, dtype=torch.float32).expand(2, 3, 9, 5).to(DEVICE)
    v = randn(gen, 2, 3, 6, 9, dtype=torch.float32).transpose(-1, -2)[..., ::2].to(DEVICE)
    for cfg in (dict(), dict(tile=4), dict(passes="as-written")):
        got = compiled("causal_tl", "triton", **cfg)(q, k, v)
        assert (
            rel(
                got.cpu(),
                softmax_attn(q.cpu().double(), k.cpu().double(), v.cpu().double(), mask=causal(7, 9)),
            )
            < 1e-5
        )


# ---- standalone modules (einattn compile -o), imported by a fresh process -------------------------------

CHECK_SCRIPT = r"""
import importlib.util, math, os, sys
import torch
device = sys.argv[1]
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(2, 3, 9, 6, generator=gen) for _ in range(3))
v = v[..., :5]
sink = torch.tensor([0.3, -1.0, 2.0])
s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(6)
s = s.masked_fill(torch.ones(9, 9).triu(1).bool(), -math.inf)
a = torch.softmax(torch.cat([s, sink.double()[None, :, None, None].expand(2, 3, 9, 1)], -1), -1)[..., :9]
want = a @ v.double()
for backend in ("torch", "triton"):
    spec = importlib.util.spec_from_file_location("kernel_" + backend, f"kernel_{backend}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = mod.forward if backend == "torch" else mod.sink
    errs = []
    for dtype in (torch.float32, torch.float16):
        out = fn(*(t.to(device, dtype) for t in (q, k, v, sink)))
        assert out.dtype == dtype, out.dtype
        errs.append(((out.cpu().double() - want).abs().max() / want.abs().max()).item())
    print(backend, " ".join(f"{e:.3e}" for e in errs))
"""


def test_standalone_modules_in_a_fresh_process(tmp_path):
    """`einattn compile --backend torch|triton -o`, imported by a separate script in a fresh interpreter."""
    spec = tmp_path / "sink.ein"
    spec.write_text(SPECS["sink"])
    for backend in ("torch", "triton"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "einattn",
                "compile",
                str(spec),
                "--backend",
                backend,
                "-o",
                str(tmp_path / f"kernel_{backend}.py"),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    script = tmp_path / "check.py"
    script.write_text(CHECK_SCRIPT)
    env = dict(os.environ)
    if DEVICE == "cpu":
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run(
        [sys.executable, str(script), DEVICE], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert set(lines) == {"torch", "triton"}
    for backend, errs in lines.items():
        e32, e16 = map(float, errs.split())
        assert e32 < 1e-5 and e16 < 2e-2, (backend, e32, e16)


# ---- errors a user meets -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_call_time_mistakes_are_ein_errors(backend):
    gen = torch.Generator().manual_seed(9)
    x = on_device(qkv(gen, 1, 2, 4, 5, 3, 2, dtype=torch.float32))
    q, k, v = x["Q"], x["K"], x["V"]
    kern = compiled("causal_tl", backend)
    win = compiled("window2", backend)
    doc = compiled("docmask", backend)
    mistakes = [
        (lambda: kern(Q=q, K=k), "missing input `V`"),
        (lambda: kern(Q=q, K=k, V=v, Z=v), "unexpected input `Z`"),
        (lambda: kern(q, k, v, v), "positional"),
        (lambda: kern(q[0], k, v), "dimensions"),
        (lambda: kern(q, k[..., :2], v), "rank `e`"),
        (lambda: kern(q, k, v[:, :, :3]), "rank `m`"),
        (lambda: kern(q.long(), k, v), "floating-point"),
        (lambda: kern(q > 0, k, v), "floating-point"),
        (lambda: kern(q.cpu().numpy(), k, v), "torch tensor"),
        (lambda: kern(None, k, v), "torch tensor"),
        (lambda: win(q, k, v, torch.tensor([0.5], device=DEVICE)), "scalar"),
        (lambda: win(q, k, v, torch.tensor(2, device=DEVICE)), "floating-point"),
        (lambda: doc(q[:, :, :4], k[:, :, :4], v[:, :, :4], torch.zeros(1, 4, device=DEVICE)), "`: int`"),
    ]
    for call, words in mistakes:
        with pytest.raises(einattn.EinError) as info:
            call()
        assert words in str(info.value), str(info.value)
        assert info.value.line is None  # a call-time error has no place in the spec


def test_compile_time_mistakes_are_ein_errors():
    for backend in ("torch", "triton", "numpy"):
        for options in (dict(foo=1), dict(passes="3"), dict(params={"Z": 3}), dict(dtype="int32")):
            with pytest.raises(einattn.EinError):
                compiled("plain", backend, **options)
    for backend in ("torch", "triton"):
        for tile in (0, -1, 2.5, "8"):
            with pytest.raises(einattn.EinError):
                compiled("plain", backend, tile=tile)
    with pytest.raises(einattn.EinError) as info:
        einattn.parse("input Q[p, e], K[m, e]\noutput S\nS[p, m] = Q[p, e] * K[m, e] * Z[p]\n", "mine.ein")
    assert (info.value.line, info.value.column) == (3, 31) and "mine.ein:3:31" in str(info.value)


def test_cli_user_errors_exit_1(tmp_path):
    good = tmp_path / "plain.ein"
    good.write_text(SPECS["plain"])
    bad = tmp_path / "bad.ein"
    bad.write_text("input X[i]\noutput Y\nY[i] = Z[i]\n")
    runs = [
        ["check", str(bad)],
        ["check", str(tmp_path / "missing.ein")],
        ["compile", str(good), "--backend", "jax", "-o", str(tmp_path / "x.py")],
        ["compile", str(bad), "--backend", "torch", "-o", str(tmp_path / "x.py")],
        ["compile", str(good), "--backend", "torch", "--param", "M0=4"],
        ["run", str(good), "--size", "M=abc"],
        ["run", str(good), "--size", "Z=3"],
    ]
    for args in runs:
        r = subprocess.run([sys.executable, "-m", "einattn", *args], capture_output=True, text=True)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "error" in r.stderr.lower(), r.stderr
    r = subprocess.run([sys.executable, "-m", "einattn", "check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout


def test_specs_parse_without_warnings():
    # every spec here parses and checks without a warning (no term added once per point of a summed rank)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for text in SPECS.values():
            einattn.parse(textwrap.dedent(text))
