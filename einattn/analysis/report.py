"""The :class:`Report` of one analysed cascade, and its JSON form.

This module imports no sympy at import time (``import einattn`` stays fast); the expressions it holds are
sympy objects created by :func:`einattn.analysis.analyze`.

JSON schema ``einattn.analysis/1`` (:meth:`Report.to_json`); every *quantity* is an object
``{"expr": str, "value": number | null}``: ``expr`` is a sympy expression in the size symbols named by
``symbols`` (read it back with :func:`read_expr`, or with
``sympy.sympify(expr, locals={n: sympy.Symbol(n) for n in symbols})``: a bare ``sympy.sympify`` reads ``E``
as Euler's number and ``I`` as the imaginary unit), ``value`` its number when every symbol in it has a size
(``--size``/``sizes=``) or a param value, else null.

``schema``        the string ``"einattn.analysis/1"``.
``file``          the spec's name (its path, or ``<string>``).
``rank``          the streamed rank the summary (footprint, classification, groups) is about.
``classification`` one line: passes over ``rank``, the FuseMax Table I class, whether the buffer grows.
``sizes``         the numeric sizes and params used, by name (given, params, and derived ones).
``relations``     derived sizes: ``{"M1": "ceiling(M/M0)"}`` for ``rank M = M1 * M0``.
``symbols``       list of names: every symbol an ``expr`` may hold (each rank's size, then each param).
``passes``        rank variable -> number of passes over it (every rank; partition parents included).
``notes``         list of strings: caveats, e.g. a fiber that a recurrence re-reads at every step (its passes
                  are then counted per step), or a size given that the spec does not have (ignored).
``stabilizers``   list of tensor names: the maxes (and mins) that no output depends on the value of, such as
                  softmax's max (:mod:`einattn.stabilizers`): their derivative is zero.
``barriers``      list of ``{rank, pass, reduction, reduction_at, einsum, einsum_at, tensor, read_at}``: the
                  full reduction ``reduction`` must finish before ``einsum`` can re-read ``tensor``, which
                  starts pass ``pass`` over ``rank``; ``*_at`` are ``file:line:col``.
``groups``        rank -> list of passes, each the list of Einsum labels fusable into that pass (traversal)
                  over the rank, in source order.
``footprint``     quantity + ``per`` (the parallel ranks Π: counts are per point of them), ``points`` (how
                  many points Π has, a quantity), ``bytes`` (per point, a quantity), ``terms`` (list of
                  ``{tensor, kind, rank, cut, reason, expr, value}``; kind is ``state``, ``accumulator`` or
                  ``barrier``), and ``buffer``: null, or ``{bytes, fits, rows, extra_traffic}`` (``fits`` and
                  ``rows``, the points of Π whose footprint fits at once, are null when unknown;
                  ``extra_traffic`` is a quantity in bytes, 0 when it fits).
``ops``           ``{"total": {class: quantity}, "einsums": {label: {class: quantity}}, "flops": quantity}``;
                  classes are ``madd, mul, add, max, div, exp, other`` (absent when zero); flops count a
                  madd as two.
``intensity``     ``{"elem_bytes": int, "compulsory_bytes": quantity, "flops_per_byte": quantity}``: flops
                  per byte of compulsory traffic (every input read once, every output written once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

SCHEMA = "einattn.analysis/1"

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str | int) -> int:
    """``"16MiB"`` -> 16777216, ``"1GB"`` -> 10**9, ``"4096"`` -> 4096; a bad value is a user error."""
    from ..errors import EinError

    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise EinError(f"a buffer size must not be negative, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise EinError(
            f"bad buffer size `{text}`", hint="write bytes, or a number with a unit: 16MiB, 512KiB, 1GB"
        )
    value = Fraction(m.group(1)) * _UNITS[unit]  # (exact: 1.5MiB is a whole number of bytes, 0.5 is not)
    if value.denominator != 1:
        raise EinError(
            f"bad buffer size `{text}`: {float(value):g} bytes is not a whole number of bytes",
            hint="write bytes, or a number with a unit: 16MiB, 512KiB, 1GB",
        )
    return int(value)


def read_expr(expr: str, symbols):
    """A report's ``expr`` string as a sympy expression, every name in ``symbols`` a plain ``sympy.Symbol``.

    ``sympy.sympify(expr)`` alone is not enough: sizes such as ``E``, ``I``, ``N``, ``S``, ``Q`` and ``O`` are
    also sympy's own names (Euler's number, the imaginary unit, functions). ``symbols`` is the JSON's
    ``"symbols"`` list (or :attr:`Report.symbols`).

    >>> x = read_expr("E*F + I", ["E", "F", "I"])
    >>> sorted(map(str, x.free_symbols)), x.subs({"E": 2, "F": 3, "I": 4})
    (['E', 'F', 'I'], 10)
    """
    import sympy

    return sympy.sympify(expr, locals={name: sympy.Symbol(name) for name in symbols})


def format_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g} B"


@dataclass(frozen=True)
class Barrier:
    """A reduction that must finish before an Einsum can re-read a tensor: the start of pass ``pass_``.

    ``*_at`` are source locations ``file:line:col`` (of the reduction's statement, the re-reading statement,
    and the read itself).
    """

    rank: str
    pass_: int
    reduction: str
    reduction_at: str
    einsum: str
    einsum_at: str
    tensor: str
    read_at: str

    def to_json(self) -> dict:
        return {
            "rank": self.rank,
            "pass": self.pass_,
            "reduction": self.reduction,
            "reduction_at": self.reduction_at,
            "einsum": self.einsum,
            "einsum_at": self.einsum_at,
            "tensor": self.tensor,
            "read_at": self.read_at,
        }


@dataclass(frozen=True)
class Report:
    """What ``einattn.analyze`` finds about one cascade (see the module docstring for the JSON form).

    >>> import einattn
    >>> r = einattn.analyze("examples/attention_3pass.ein", sizes={"M": 4096, "F": 64})
    >>> r.passes["m"], str(r.footprint), r.value(r.footprint)
    (3, 'F + M + 2', 4162)
    """

    name: str
    rank: str
    passes: dict[str, int]
    barriers: tuple[Barrier, ...]
    groups: dict[str, tuple[tuple[str, ...], ...]]
    footprint: Any  # sympy expression: elements per point of ``footprint_per``
    footprint_per: tuple[str, ...]
    footprint_terms: tuple  # footprint.Term
    ops: dict[str, Any]  # class -> sympy expression, summed over the Einsums
    einsum_ops: dict[str, dict[str, Any]]
    flops: Any
    compulsory_bytes: Any
    intensity: Any
    elem_bytes: int
    classification: str
    sizes: dict[str, int | float]
    relations: dict[str, str]
    buffer: int | None = None
    footprint_points: Any = None
    spill: Any = None  # elements per point of Π written and re-read when the footprint is spilled
    notes: tuple[str, ...] = ()
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def program(self):
        """The analysed :class:`~einattn.Program` (params applied)."""
        return self.model.prog

    @property
    def stabilizers(self) -> tuple[str, ...]:
        """The maxes (and mins) no output depends on the value of (:mod:`einattn.stabilizers`): softmax's max.
        Their derivative is zero; a backend records no gradient through them."""
        from ..stabilizers import stabilizers

        return tuple(sorted(stabilizers(self.program)))

    @property
    def symbols(self) -> tuple[str, ...]:
        """The names of the symbols the expressions of this report may hold: every rank's size (derived sizes
        such as ``M1`` included), then every param. Read an ``expr`` back with :func:`read_expr`."""
        names = [str(s) for s in self.model.sym.values()]
        names += [str(s) for s in self.model.param_sym.values()]
        return tuple(dict.fromkeys(names))

    # ---- numbers ----------------------------------------------------------------------------------
    def value(self, expr) -> int | float | None:
        """The number of an expression of this report at the given sizes, or None if some size is unknown."""
        return self.model.number(expr)

    @property
    def footprint_bytes(self):
        return self.footprint * self.elem_bytes

    @property
    def fits(self) -> bool | None:
        """Whether one point's footprint fits ``buffer`` (None without a buffer or with unknown sizes)."""
        if self.buffer is None:
            return None
        n = self.value(self.footprint_bytes)
        return None if n is None else n <= self.buffer

    @property
    def rows_in_buffer(self) -> int | None:
        """How many points of the parallel ranks fit in ``buffer`` at once."""
        n = self.value(self.footprint_bytes) if self.buffer is not None else None
        return None if not n else int(self.buffer // n)

    @property
    def extra_traffic(self):
        """Bytes written and re-read when the footprint does not fit the buffer (0 when it fits)."""
        if self.fits:
            return 0
        return self.spill * self.footprint_points * self.elem_bytes

    # ---- JSON -------------------------------------------------------------------------------------
    def quantity(self, expr) -> dict:
        return {"expr": str(expr), "value": self.value(expr)}

    def to_json(self) -> dict:
        """The report as plain JSON data, schema ``einattn.analysis/1`` (see the module docstring)."""
        q = self.quantity
        buffer = None
        if self.buffer is not None:
            buffer = {
                "bytes": self.buffer,
                "fits": self.fits,
                "rows": self.rows_in_buffer,
                "extra_traffic": q(self.extra_traffic),
            }
        return {
            "schema": SCHEMA,
            "file": self.name,
            "rank": self.rank,
            "classification": self.classification,
            "sizes": dict(self.sizes),
            "relations": dict(self.relations),
            "symbols": list(self.symbols),
            "passes": dict(self.passes),
            "notes": list(self.notes),
            "stabilizers": list(self.stabilizers),
            "barriers": [b.to_json() for b in self.barriers],
            "groups": {r: [list(g) for g in gs] for r, gs in self.groups.items()},
            "footprint": {
                **q(self.footprint),
                "per": list(self.footprint_per),
                "points": q(self.footprint_points),
                "bytes": q(self.footprint_bytes),
                "terms": [
                    {
                        "tensor": t.tensor,
                        "kind": t.kind,
                        "rank": t.rank,
                        "cut": t.cut if t.kind == "barrier" else None,
                        "reason": t.reason,
                        **q(t.expr),
                    }
                    for t in self.footprint_terms
                ],
                "buffer": buffer,
            },
            "ops": {
                "total": {c: q(n) for c, n in self.ops.items()},
                "einsums": {label: {c: q(n) for c, n in cs.items()} for label, cs in self.einsum_ops.items()},
                "flops": q(self.flops),
            },
            "intensity": {
                "elem_bytes": self.elem_bytes,
                "compulsory_bytes": q(self.compulsory_bytes),
                "flops_per_byte": q(self.intensity),
            },
        }

    def to_text(self, width: int = 100) -> str:
        """The readable report (rich tables, no colour), as the CLI prints it."""
        from .render import render_report

        return render_report(self, width)
