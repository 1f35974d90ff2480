"""Helpers shared by the session-12 conformance cases: random inputs, masked softmax, reference attention."""

import numpy as np


def make_rn(seed):
    rng = np.random.default_rng(seed)

    def rn(*shape, scale=1.0):
        return rng.standard_normal(shape) * scale

    return rn, rng


def softmax(s, mask=None, axis=-1):
    """Softmax over ``axis``; masked-out entries excluded; a fully masked row gives 0 weights."""
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(s - mx)
    if mask is not None:
        ex = np.where(mask, ex, 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def att(q, k, v, mask=None, scale=None, bias=None):
    """Softmax attention over q[..., p, e], k[..., m, e], v[..., m, f]; rows without a key give 0."""
    s = np.einsum("...pe,...me->...pm", q, k)
    s = s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if bias is not None:
        s = s + bias
    return np.einsum("...pm,...mf->...pf", softmax(s, mask), v)


def lse(s, mask=None, axis=-1):
    """Log-sum-exp over ``axis``, -inf for a fully masked row."""
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(s - safe).sum(axis=axis, keepdims=True)) + safe).squeeze(axis)


def causal(P, M, off=0):
    """mask[p, m] = m <= p + off."""
    return np.arange(M)[None, :] <= np.arange(P)[:, None] + off


def registry():
    cases = []

    def case(name, spec, inputs, oracle, params=None, passes=None):
        cases.append(
            dict(
                name=name,
                spec=spec.strip() + "\n",
                inputs=inputs,
                oracle=oracle,
                params=params or {},
                passes=passes or {},
            )
        )

    return cases, case
