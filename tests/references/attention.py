"""Hand-written NumPy attention references, straight from each paper's formula.

Shapes follow the examples: ``q[b, h, p, e]``, ``k[b, h, m, e]``, ``v[b, h, m, f]``; the result is
``o[b, h, p, f]``. Scores are scaled by ``1 / sqrt(E)``. None of this uses einattn.
"""

from __future__ import annotations

import numpy as np


def scores(q, k):
    """S[b, h, p, m] = q . k / sqrt(E)."""
    return np.einsum("bhpe,bhme->bhpm", q, k) / np.sqrt(q.shape[-1])


def causal_mask(p, m):
    """mask[p, m]: key m is visible to query p when m <= p."""
    return np.arange(m)[None, :] <= np.arange(p)[:, None]


def window_mask(p, m, w):
    """mask[p, m]: p - w < m <= p."""
    qi, ki = np.arange(p)[:, None], np.arange(m)[None, :]
    return (qi - w < ki) & (ki <= qi)


def softmax_weights(s, mask=None):
    """Softmax of s over its last axis, masked entries excluded; a fully masked row gets weight 0."""
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    s = np.where(mask, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)  # fully masked row: any shift will do
    w = np.where(mask, np.exp(s - mx), 0.0)
    den = w.sum(axis=-1, keepdims=True)
    return np.divide(w, den, out=np.zeros_like(w), where=den > 0)


def softmax_attention(q, k, v, mask=None, bias=None):
    """softmax(q k^T / sqrt(E) + bias) v over the keys where ``mask`` (broadcast to [b, h, p, m]) holds."""
    s = scores(q, k)
    if bias is not None:
        s = s + bias
    return np.einsum("bhpm,bhmf->bhpf", softmax_weights(s, mask), v)


def causal_attention(q, k, v):
    return softmax_attention(q, k, v, mask=causal_mask(q.shape[2], k.shape[2]))


def sliding_window_attention(q, k, v, w):
    return softmax_attention(q, k, v, mask=window_mask(q.shape[2], k.shape[2], w))


def gqa_attention(q, k, v, r):
    """Grouped-query attention (Ainslie et al. 2023): query head h reads key/value head h // r."""
    return softmax_attention(q, np.repeat(k, r, axis=1), np.repeat(v, r, axis=1))


def alibi_attention(q, k, v, slope):
    """ALiBi (Press et al. 2022), causal: score + slope[h] * (m - p)."""
    p, m = q.shape[2], k.shape[2]
    dist = np.arange(m)[None, :] - np.arange(p)[:, None]  # [p, m]
    bias = slope[None, :, None, None] * dist[None, None]
    return softmax_attention(q, k, v, mask=causal_mask(p, m), bias=bias)


def softcap_attention(q, k, v, c):
    """Logit soft-capping (Gemma 2): softmax(c * tanh(s / c)) v."""
    w = softmax_weights(c * np.tanh(scores(q, k) / c))
    return np.einsum("bhpm,bhmf->bhpf", w, v)


def sigmoid_attention(q, k, v, bias):
    """Sigmoid attention (Ramapuram et al. 2024): sigmoid(s + bias) v, no normalisation."""
    with np.errstate(over="ignore"):  # exp(-s) = inf gives weight 0, as it should
        w = 1.0 / (1.0 + np.exp(-(scores(q, k) + bias)))
    return np.einsum("bhpm,bhmf->bhpf", w, v)


def elu_plus_one(x):
    """phi(x) = elu(x) + 1, elu(x) = x if x > 0 else exp(x) - 1."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))) + 1.0


def linear_attention(q, k, v, causal=False):
    """Linear attention (Katharopoulos et al. 2020), written with explicit loops over queries.

    o[p] = sum_m phi(q_p) . phi(k_m) v_m / sum_m phi(q_p) . phi(k_m), phi(x) = elu(x) + 1,
    the sums over m <= p if causal.
    """
    fq, fk = elu_plus_one(q), elu_plus_one(k)
    b, h, p, _ = q.shape
    out = np.zeros((b, h, p, v.shape[-1]))
    for i in range(p):
        last = min(i + 1, k.shape[2]) if causal else k.shape[2]
        w = np.einsum("bhe,bhme->bhm", fq[:, :, i], fk[:, :, :last])
        out[:, :, i] = np.einsum("bhm,bhmf->bhf", w, v[:, :, :last]) / w.sum(-1)[..., None]
    return out


def attention_lse(q, k, v):
    """(softmax attention, log sum_m exp(s[p, m])) for each row."""
    s = scores(q, k)
    mx = s.max(axis=-1)
    lse = mx + np.log(np.exp(s - mx[..., None]).sum(axis=-1))
    return softmax_attention(q, k, v), lse
