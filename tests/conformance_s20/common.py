"""Helpers shared by the session-20 conformance cases: those of sessions 14 and 17 (random inputs, masked
softmax, log-sum-exp, attention, coordinate grids, the case registry, a few elementwise functions), all
plain NumPy written from the math, and a softmax with a sink logit in its denominator."""

import numpy as np
from conformance_s14.common import any_row, att, lse, make_rn, pm, registry, softmax
from conformance_s17.common import elu, relu, sig, softplus


def sink_softmax(s, sink, mask=None):
    """Softmax over the last axis with one extra logit ``sink`` (broadcast against the rows) that joins the
    denominator only; masked entries are excluded."""
    s = np.asarray(s, dtype=float)
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    sink = np.broadcast_to(np.asarray(sink, dtype=float)[..., None], (*s.shape[:-1], 1))
    t = np.where(mask, s, -np.inf)
    g = np.maximum(t.max(axis=-1, keepdims=True), sink)
    ex = np.where(mask, np.exp(t - g), 0.0)
    return ex / (ex.sum(axis=-1, keepdims=True) + np.exp(sink - g))


__all__ = [
    "any_row",
    "att",
    "elu",
    "lse",
    "make_rn",
    "pm",
    "registry",
    "relu",
    "sig",
    "sink_softmax",
    "softmax",
    "softplus",
]
