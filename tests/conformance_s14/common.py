"""Helpers shared by the session-14 conformance cases: random inputs, masked softmax, log-sum-exp, attention,
masks and loops written straight from the formulas.

Everything here is plain NumPy (and plain Python loops where a recurrence is clearer that way), written from
the math, never from einattn.
"""

import numpy as np


def make_rn(seed):
    rng = np.random.default_rng(seed)

    def rn(*shape, scale=1.0):
        return rng.standard_normal(shape) * scale

    return rn, rng


def softmax(s, mask=None, axis=-1):
    """Softmax over ``axis``; masked-out entries excluded; a row without a kept entry gives 0 weights."""
    s = np.asarray(s, dtype=float)
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    t = np.where(mask, s, -np.inf)
    mx = np.max(t, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.where(mask, np.exp(t - mx), 0.0)
    den = ex.sum(axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def lse(s, mask=None, axis=-1):
    """Log-sum-exp over ``axis``; a row without a kept entry gives ``empty``."""
    s = np.asarray(s, dtype=float)
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    t = np.where(mask, s, -np.inf)
    mx = np.max(t, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.where(mask, np.exp(t - safe), 0.0).sum(axis=axis, keepdims=True)) + safe).squeeze(
            axis
        )


def att(q, k, v, mask=None, scale=None, bias=None):
    """Softmax attention over q[..., p, e], k[..., m, e], v[..., m, f]; a row without a key gives 0."""
    s = np.einsum("...pe,...me->...pm", q, k)
    s = s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if bias is not None:
        s = s + bias
    return np.einsum("...pm,...mf->...pf", softmax(s, mask), v)


def pm(P, M):
    """Coordinate grids p[:, None] and m[None, :]."""
    return np.arange(P)[:, None], np.arange(M)[None, :]


def any_row(mask):
    """Rows (last axis reduced) with at least one kept entry."""
    return np.asarray(mask).any(axis=-1)


def registry():
    cases = []

    def case(name, spec, inputs, oracle, params=None, passes=None, limits=None):
        cases.append(
            dict(
                name=name,
                spec=spec.strip() + "\n",
                inputs=inputs,
                oracle=oracle,
                params=params or {},
                passes=passes or {},
                limits=limits or {},  # backend -> a documented limit the case meets (strict xfail there)
            )
        )

    return cases, case
