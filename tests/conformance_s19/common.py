"""Helpers shared by the session-19 conformance cases: those of sessions 14 and 17 (random inputs, masked
softmax, log-sum-exp, attention, coordinate grids, the case registry, a few elementwise functions), all
plain NumPy written from the math."""

from conformance_s14.common import any_row, att, lse, make_rn, pm, registry, softmax
from conformance_s17.common import elu, relu, sig, softplus

__all__ = ["any_row", "att", "elu", "lse", "make_rn", "pm", "registry", "relu", "sig", "softmax", "softplus"]
