"""Helpers shared by the session-13 conformance cases: random inputs, masked softmax, log-sum-exp, attention.

Everything here is plain NumPy, written from the formulas, never from einattn.
"""

import numpy as np


def make_rn(seed):
    rng = np.random.default_rng(seed)

    def rn(*shape, scale=1.0):
        return rng.standard_normal(shape) * scale

    return rn, rng


def softmax(s, mask=None, axis=-1):
    """Softmax over ``axis``, masked-out entries excluded; a row without a kept entry gives 0 weights."""
    s = np.asarray(s, dtype=float)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(s - mx)
    if mask is not None:
        ex = np.where(mask, ex, 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def lse(s, mask=None, axis=-1):
    """Log-sum-exp over ``axis``, -inf for a row without a kept entry."""
    s = np.asarray(s, dtype=float)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = np.max(s, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(s - safe).sum(axis=axis, keepdims=True)) + safe).squeeze(axis)


def scores(q, k, scale=None):
    """q[..., p, e] . k[..., m, e] -> [..., p, m], times 1 / sqrt(E) unless ``scale`` is given."""
    s = np.einsum("...pe,...me->...pm", q, k)
    return s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)


def att(q, k, v, mask=None, scale=None, bias=None):
    """Softmax attention over q[..., p, e], k[..., m, e], v[..., m, f]; a row without a key gives 0."""
    s = scores(q, k, scale)
    if bias is not None:
        s = s + bias
    return np.einsum("...pm,...mf->...pf", softmax(s, mask), v)


def causal(P, M, off=0):
    """mask[p, m] = m <= p + off."""
    return np.arange(M)[None, :] <= np.arange(P)[:, None] + off


def rel(P, M):
    """d[p, m] = p - m."""
    return np.arange(P)[:, None] - np.arange(M)[None, :]


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
