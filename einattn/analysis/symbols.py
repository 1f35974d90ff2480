"""Rank sizes as sympy symbols, and their numeric values when the caller gives them.

Every rank ``r`` has the size symbol ``R`` (``m1`` -> ``M1``), a positive integer. A param keeps its own
name as a symbol (``M0``, ``W``); when a param is also a rank's size (a tile), the two are the same symbol.
A partition ``rank M = M1 * M0`` makes the part that is not a param a *derived* size: ``M1 = ceiling(M/M0)``.
Expressions keep ``M1`` as a symbol (the identities of the FuseMax paper are written with it); its value is
computed from ``M`` and ``M0`` when both are known.

A set of ranks that holds both parts of a partition counts ``M`` points, not ``M1 * M0``: the points of a
ragged last tile beyond ``M`` are absent and cost nothing.
"""

from __future__ import annotations

import math

import sympy as sp

from ..errors import EinError
from ..ir import Program, size_name


class SizeModel:
    """Symbols and known values for one program."""

    def __init__(self, prog: Program, given: dict[str, int | float] | None = None):
        self.prog = prog
        params = prog.param_values
        self.sym: dict[str, sp.Symbol] = {
            r: sp.Symbol(size_name(r), positive=True, integer=True) for r in prog.ranks
        }
        self.param_sym: dict[str, sp.Symbol] = {}
        for name, value in params.items():
            sizes = {size_name(r): s for r, s in self.sym.items()}
            if name in sizes:
                self.param_sym[name] = sizes[name]
            else:
                integer = isinstance(value, int)
                self.param_sym[name] = sp.Symbol(name, real=True, integer=integer or None)
        self.derived: dict[str, sp.Expr] = {}  # rank -> expression of its size in the others
        for p in prog.partitions:
            parent = self.sym[p.parent]
            if p.tile == "inner":
                self.derived[p.outer] = sp.ceiling(parent / self.sym[p.inner])
            else:
                self.derived[p.inner] = sp.ceiling(parent / self.sym[p.outer])
        self.values: dict[sp.Symbol, int | float] = {}
        for name, value in params.items():
            self.values[self.param_sym[name]] = value
        self.given = dict(given or {})
        self._bind(self.given)

    # ---- binding --------------------------------------------------------------------------------
    def _bind(self, given: dict[str, int | float]) -> None:
        by_name = {size_name(r): r for r in self.prog.ranks}
        for name, value in given.items():
            if name not in by_name:
                known = ", ".join(by_name) or "none"
                if name.upper() in by_name:
                    raise EinError(f"unknown size `{name}`", hint=f"sizes are upper case: `{name.upper()}`")
                raise EinError(f"unknown size `{name}`", hint=f"the sizes of this spec are: {known}")
            if name in self.prog.param_values:
                raise EinError(
                    f"`{name}` is a param, not a free size",
                    hint=f"override it as a param: --param {name}={value}",
                )
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EinError(f"size `{name}` must be a non-negative integer, got {value!r}")
            self.values[self.sym[by_name[name]]] = value
        for r, expr in self.derived.items():
            computed = self.number(expr)
            s = self.sym[r]
            if computed is None:
                continue
            if s in self.values and self.values[s] != computed:
                raise EinError(
                    f"size `{s}` = {self.values[s]} contradicts the partition: {s} = {expr} = {computed}"
                )
            self.values[s] = int(computed)

    # ---- queries --------------------------------------------------------------------------------
    def points(self, ranks) -> sp.Expr:
        """The points a set of ranks spans: the product of sizes, a partition's two parts as its parent."""
        ranks = list(dict.fromkeys(ranks))
        out = sp.Integer(1)
        for p in self.prog.partitions:
            if p.outer in ranks and p.inner in ranks:
                ranks = [r for r in ranks if r not in (p.outer, p.inner)]
                if p.parent not in ranks:
                    ranks.append(p.parent)
        for r in ranks:
            out *= self.sym[r]
        return out

    def number(self, expr) -> int | float | None:
        """The value of ``expr`` at the known sizes and params, or None when some symbol is unbound."""
        if expr is None:
            return None
        expr = sp.sympify(expr)
        if expr.free_symbols - set(self.values):
            return None
        v = expr.xreplace({k: sp.Number(x) for k, x in self.values.items()})
        if not v.is_number:  # ceiling() and friends fold on evaluation
            v = v.doit()
        if v.is_integer or (v.is_Number and float(v).is_integer() and abs(float(v)) < 2**53):
            return int(v)
        f = float(v)
        return int(f) if math.isfinite(f) and f.is_integer() else f

    def partial(self, expr):
        """``expr`` with every known size and param replaced by its value (the rest stays symbolic)."""
        expr = sp.sympify(expr).xreplace({k: sp.Number(x) for k, x in self.values.items()})
        return expr.doit()

    def depends_on(self, expr, rank: str) -> bool:
        """Whether ``expr`` grows with the size of ``rank`` (directly or through a derived part size)."""
        syms = sp.sympify(expr).free_symbols
        target = {self.sym[rank]}
        for r, d in self.derived.items():
            if self.sym[rank] in d.free_symbols:
                target.add(self.sym[r])
        return bool(syms & target)

    def known(self) -> dict[str, int | float]:
        """Every numeric size and param, by name, in a stable order."""
        out: dict[str, int | float] = {}
        for r in self.prog.ranks:
            s = self.sym[r]
            if s in self.values:
                out[str(s)] = self.values[s]
        for name, s in self.param_sym.items():
            if s in self.values and name not in out:
                out[name] = self.values[s]
        return out

    def relations(self) -> dict[str, str]:
        return {str(self.sym[r]): str(e) for r, e in self.derived.items()}
