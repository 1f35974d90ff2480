"""The function registry: what the language knows about each function.

Adding a function is one entry here plus one entry in each backend's table (``lowering/*``); the tests iterate
over this table and fail if a backend lacks an entry. ``sympy`` gives the function's meaning symbolically (the
rewrite checks side conditions with it); ``op_class`` is how the analysis counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Function:
    name: str
    arity: int
    op_class: str  # analysis class: "exp" (transcendental), "max", "add", "mul", "div", "other"
    doc: str
    index_ok: bool = False  # usable in an integer index expression (piecewise affine)
    sympy: Callable | None = None


def _sympy_table():
    import sympy as sp

    return {
        "exp": sp.exp,
        "exp2": lambda x: 2**x,
        "log": sp.log,
        "log2": lambda x: sp.log(x, 2),
        "sqrt": sp.sqrt,
        "rsqrt": lambda x: 1 / sp.sqrt(x),
        "tanh": sp.tanh,
        "sigmoid": lambda x: 1 / (1 + sp.exp(-x)),
        "relu": lambda x: sp.Max(x, 0),
        "elu": lambda x: sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)),
        "softplus": lambda x: sp.log(1 + sp.exp(x)),
        "abs": sp.Abs,
        "square": lambda x: x**2,
        "step": lambda x: sp.Piecewise((1, x > 0), (0, True)),
        "max": sp.Max,
        "min": sp.Min,
        "clamp": lambda x, lo, hi: sp.Min(sp.Max(x, lo), hi),
    }


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("exp", 1, "exp", "e to the power x"),
        Function("exp2", 1, "exp", "2 to the power x"),
        Function("log", 1, "exp", "natural logarithm"),
        Function("log2", 1, "exp", "base-2 logarithm"),
        Function("sqrt", 1, "exp", "square root"),
        Function("rsqrt", 1, "exp", "1 / sqrt(x)"),
        Function("tanh", 1, "exp", "hyperbolic tangent"),
        Function("sigmoid", 1, "exp", "1 / (1 + exp(-x))"),
        Function("relu", 1, "max", "max(x, 0)"),
        Function("elu", 1, "exp", "x if x > 0 else exp(x) - 1"),
        Function("softplus", 1, "exp", "log(1 + exp(x))"),
        Function("abs", 1, "max", "|x|", index_ok=True),
        Function("square", 1, "mul", "x * x"),
        Function("step", 1, "max", "1 if x > 0 else 0 (0 at 0 and at NaN, as a comparison)"),
        Function("max", 2, "max", "the larger of a and b", index_ok=True),
        Function("min", 2, "max", "the smaller of a and b", index_ok=True),
        Function("clamp", 3, "max", "min(max(x, lo), hi)", index_ok=True),
    )
}


def sympy_function(name: str) -> Callable:
    return _sympy_table()[name]


REDUCTIONS = ("+", "max", "min")
"""Reduction operators usable after ``::`` (``+`` is also the default for unnamed reduced ranks)."""
