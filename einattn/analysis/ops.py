"""Operation counts per Einsum, by class, as sympy expressions in the rank sizes.

Classes (:data:`CLASSES`): ``madd`` (a multiply whose product is accumulated by a ``+`` reduction: one
multiply-add per point), ``mul``, ``add`` (add and subtract, ``+`` reductions), ``max`` (max, min, relu, abs
and ``max``/``min`` reductions), ``div``, ``exp`` (exp and the other transcendental functions: log, sqrt,
tanh, sigmoid, ...; the class comes from each function's ``op_class`` in ``einattn.functions``) and ``other``
(negation, ``??`` selects). ``//`` and ``%`` are index and filter operators (the language rejects them
in values): addressing, not counted.

Counting rule: each operation node costs one op per point of the ranks its operands vary over (a
loop-invariant subexpression is hoisted: ``exp(RM[m1, p] - RM[m1 + 1, p])`` costs M1*P, whatever the
Einsum's space). Subexpressions of constants, sizes and params only are folded (``rsqrt(E)`` is free).
A reduction costs one combine per point of the space it reduces (``SD[p] = SN[m, p]``: M*P adds). Index
arithmetic is addressing, not counted. Filters are not applied: on a filtered Einsum the count is the dense
upper bound (about twice the causal work).
"""

from __future__ import annotations

import sympy as sp

from .. import syntax as S
from ..functions import FUNCTIONS
from ..ir import Einsum
from .symbols import SizeModel

CLASSES = ("madd", "mul", "add", "max", "div", "exp", "other")
WEIGHT = {"madd": 2}  # flops per op when summing classes (a multiply-add is two)

_BINARY = {"+": "add", "-": "add", "*": "mul", "/": "div", "//": "other", "%": "other"}


def _varying(node: S.Expr, memo: dict) -> frozenset:
    key = id(node)
    if key in memo:
        return memo[key]
    if isinstance(node, S.Coord):
        out = frozenset((node.rank,))
    elif isinstance(node, S.Read):
        out = frozenset(n.rank for ix in node.indices for n in ix.walk() if isinstance(n, S.Coord))
    else:
        out = frozenset().union(*(_varying(c, memo) for c in node.children()))
    memo[key] = out
    return out


def _op_class(node: S.Expr) -> str | None:
    if isinstance(node, S.Binary):
        return _BINARY[node.op]
    if isinstance(node, S.Unary):
        return "other"
    if isinstance(node, S.Call):
        cls = FUNCTIONS[node.fn].op_class
        return cls if cls in CLASSES else "other"
    if isinstance(node, S.Default):
        return "other"
    return None


def einsum_ops(e: Einsum, sizes: SizeModel) -> dict[str, sp.Expr]:
    """Op counts of one Einsum by class (classes with no op left out)."""
    memo: dict = {}
    counts: dict[str, sp.Expr] = {}

    def add(cls: str, n) -> None:
        counts[cls] = counts.get(cls, sp.Integer(0)) + n

    space = frozenset(e.space)
    fused_top = (
        bool(e.reduce)
        and e.reduce[0][1] == "+"
        and isinstance(e.expr, S.Binary)
        and e.expr.op == "*"
        and _varying(e.expr, memo) == space
    )

    def visit(node: S.Expr, top: bool) -> None:
        if isinstance(node, S.Read):  # index expressions are addressing
            return
        for c in node.children():
            visit(c, False)
        cls = _op_class(node)
        if cls is None:
            return
        ranks = _varying(node, memo)
        if not ranks and not any(isinstance(x, S.Read) for x in node.walk()):
            return  # a compile-time constant (rsqrt(E), -inf, C); a scalar's data (`a * b`) costs one op
        if top and fused_top:
            return  # counted below as the madd of the reduction
        add(cls, sizes.points(ranks))

    visit(e.expr, True)
    remaining = list(e.space)
    first = True
    k = 0
    while k < len(e.reduce):
        op = e.reduce[k][1]
        stage = []
        while k < len(e.reduce) and e.reduce[k][1] == op:
            stage.append(e.reduce[k][0])
            k += 1
        n = sizes.points(remaining)
        if first and fused_top:
            add("madd", n)
        else:
            add("add" if op == "+" else "max", n)
        first = False
        remaining = [r for r in remaining if r not in stage]
    return {c: counts[c] for c in CLASSES if c in counts and counts[c] != 0}


def flops(counts: dict[str, sp.Expr]) -> sp.Expr:
    return sp.Add(*(WEIGHT.get(c, 1) * n for c, n in counts.items()))


def total(per_einsum: dict[str, dict[str, sp.Expr]]) -> dict[str, sp.Expr]:
    out: dict[str, sp.Expr] = {}
    for counts in per_einsum.values():
        for c, n in counts.items():
            out[c] = out.get(c, sp.Integer(0)) + n
    return {c: sp.expand(out[c]) for c in CLASSES if c in out}
