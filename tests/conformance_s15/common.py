"""Helpers shared by the session-15 conformance cases: those of session 14 (random inputs, masked softmax,
log-sum-exp, attention, coordinate grids, the case registry), all plain NumPy written from the math."""

from conformance_s14.common import any_row, att, lse, make_rn, pm, registry, softmax

__all__ = ["any_row", "att", "lse", "make_rn", "pm", "registry", "softmax"]
