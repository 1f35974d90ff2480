"""Helpers shared by the session-21 conformance cases: those of sessions 14 and 17 (random inputs, masked
softmax, log-sum-exp, attention, coordinate grids, the case registry, a few elementwise functions), all plain
NumPy written from the math, and a plain-loop online softmax used to cross-check the hand-written 1-pass
cascades."""

import numpy as np
from conformance_s14.common import att, lse, make_rn, pm, registry, softmax
from conformance_s17.common import elu, relu, sig, softplus


def scores(q, k, scale=None):
    """q[..., p, e] . k[..., m, e] (times 1/sqrt(E) unless ``scale`` is given), as [..., p, m]."""
    s = np.einsum("...pe,...me->...pm", q, k)
    return s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)


def weighted(w, v):
    """w[..., p, m] @ v[..., m, f]."""
    return np.einsum("...pm,...mf->...pf", w, v)


__all__ = [
    "att",
    "elu",
    "lse",
    "make_rn",
    "pm",
    "registry",
    "relu",
    "scores",
    "sig",
    "softmax",
    "softplus",
    "weighted",
]
