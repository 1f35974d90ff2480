"""A hypothesis strategy for random, valid small .ein programs that make and consume absent points, and the
harness that runs one program on every backend configuration against the NumPy reference.

Programs are over the ranks ``p`` (rows), ``m`` (reduced: keys) and ``f`` (features) of the inputs
``A[p, m], B[m, f], D[p, f]`` and the integer tensor ``I[p]`` (gathers and filters; its values are drawn in
and out of range). A program is 3-8 intermediate statements drawn from a menu of forms:

* filters: affine (``m <= p - 1``), ``%``, ``//``, ``abs``, ``min``/``max``/``clamp``, reads of ``I`` (out of
  range: absent), chained comparisons with an integer param (``0 <= p - m < W``), float literals
  (``p - m < 1.5``), combined with ``and``, ``or``, ``not``;
* reads shifted past the end (``D[p + 2, f]``), by an integer param (``D[p + S, f]``, ``S * p``), through
  ``//``, ``%``, ``abs``, ``min``/``max``/``clamp``, sizes (``P - 1 - p``), at a constant (``A[p, 0]``), with
  another rank (``D[m, f]``), and gathers through ``I``;
* sums, max and min reductions over masked ranks (``::`` with several ranks too, ``:: +(m)``);
* every function of the registry (exp, exp2, log, log2, sqrt, rsqrt of safe arguments, tanh, sigmoid, relu,
  elu, softplus, square, abs, max, min, clamp), sizes and float params as values, constants ``1e30``,
  ``-1e30``, ``inf``, ``-inf``, ``2.5e-1``;
* ``??`` with constants and with other tensors; products, sums, differences, guarded divisions; a statement
  reading another one twice; 3-pass softmax blocks (which ``passes="auto"`` rewrites to a 1-pass loop);
* a second rank of ``p``'s size (``rank N = P``): prefix sums, bands, reversed reads, reduced with
  ``max``/``min``/``+``;
* optionally one or two recurrences over an iterative rank (``m`` itself, the tiles ``m1`` of a partition
  ``rank M = M1 * M0`` read at ``m1 * M0 + m0 ± 1``, or ``t`` of ``param T`` steps reading past the end of
  ``m``): a one-state update with ``??`` (as in docs/language.md; from a local tensor or from an input read
  past the end), a two-state logsumexp, or the 1-pass online softmax (three states), its states starting
  present or absent; read as the final state, a history, the state before, at a constant step, reduced
  over the steps, or the whole iterative tensor as an output;
* 1-2 outputs, some of them intermediates that later statements read again.

``head_programs()`` draws attention-shaped programs with batch and head ranks (``Q[b, h, p, e], K[b, g, m,
e], V[b, g, m, f], I[m] : int``): GQA-style head reads (``h // R`` with ``param R``, ``h % R``, out of range),
key reads shifted by params, filters with params and document ids, an alias rank, score transforms, and the
3-pass, 2-pass, sigmoid or hand-written online softmax (over tiles or keys, three states in several
layouts, started at ``-inf``, ``-1e30``, ``0`` or absent; outputs that are final states, logsumexps,
histories, whole iterative tensors).

``programs()`` draws a :class:`FuzzProgram` (text, IR, notes); ``data_for`` (``head_data``) draws sizes
(0-6) and data; ``run_case`` compares configurations with the NumPy reference (torch in float64 in several
configurations, with a gradient recorded, float32 at ``einattn.testing.TOLERANCES``, gradients against
finite differences and across configurations, one kernel called repeatedly on non-contiguous inputs of
other sizes; triton in float32 and float64) and returns the failures.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import einattn
from einattn.ir import Program
from einattn.testing import compare

RANKS = ("p", "m", "f")
# Known bugs whose forms ``programs(avoid=...)`` can leave out, so that a run finds the others (each has a
# regression test in tests/test_fuzz.py):
#   "clamp_empty": triton, clamp(x, 0, N - 1) with N = 0 is taken as >= 0: a read at index -1;
#   "softmax_empty_row": torch with a gradient recorded, exp(S - G) with G a max whose mask was removed is
#                  taken as finite: NaN on a row where S is absent everywhere (forward through `?? 0`, and
#                  the gradient);
#   "contract_broadcast": torch, a contraction whose factors lack a rank of its left-hand side is not
#                  broadcast along it (T[m, p] = D[p // 2, f] * D[0, 0] comes back [1, P]);
#   "gather_present_sum": torch, `X + (Y ?? 0) ?? Y` with X a read through `_gather` (out of range there)
#                  adds the clamped read's value where X is absent.
# Session 9 (fixed, regression tests in tests/test_triton.py, test_constants_of_every_kind):
#   "triton_const_exp": triton, `exp` or `sigmoid` of a constant (`exp(2)`, `exp(C)` with a param C) raised:
#                  the generated `_exp(2.0)` read `x.dtype` of a Python float;
#   "triton_inf_const": triton, `inf` combined with another constant (`inf + 2`, `-inf * C`) raised: the
#                  generated `tl.broadcast_to((float("inf") + 2.0), ...)` was given a Python float.
#   "triton_float_int_literal": triton, a filter comparing with an integral float (`p >= 2.0`) and then
#                  using `p % 2` raised: the expression memo took the literal 2.0 for the divisor 2.
KNOWN_BUGS: frozenset[str] = frozenset()  # (forms a known bug would fail: none left)
# what a test of the torch backend alone leaves out (the triton bugs' forms are drawn there)
KNOWN_TORCH_BUGS: frozenset[str] = frozenset(b for b in KNOWN_BUGS if not b.startswith("triton_"))
INPUTS = {"A": ("p", "m"), "B": ("m", "f"), "D": ("p", "f")}
HEADER_INPUTS = "input A[p, m], B[m, f], D[p, f], I[p] : int"


@dataclass(frozen=True)
class FuzzProgram:
    text: str
    program: Program = field(repr=False, compare=False)
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints the text
        printer.text(f"FuzzProgram(\n{self.text})")


def parse_quietly(text: str) -> Program:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einattn.EinWarning)
        return einattn.parse(text, "<fuzz>")


# ---- expressions ---------------------------------------------------------------------------------------


class _Ctx:
    """The tensors defined so far (name -> ranks) and the counter of fresh names."""

    def __init__(self, avoid=frozenset()):
        self.avoid = frozenset(avoid)
        self.tensors: dict[str, tuple[str, ...]] = dict(INPUTS)
        self.n = 0
        self.decls: dict[str, str] = {}  # name -> declaration (params, partitions, aliases)

    def decl(self, line: str) -> None:
        """Declare a param, a partition or an alias once (the first declaration of a name wins)."""
        self.decls.setdefault(line.split("=")[0].split()[-1], line)

    def fresh(self, prefix: str = "T") -> str:
        self.n += 1
        return f"{prefix}{self.n}"


@st.composite
def _index(draw, rank: str, space: tuple[str, ...], avoid=frozenset(), ctx=None) -> tuple[str, set[str]]:
    """An index expression for a dimension whose own rank is ``rank``, over the statement's ``space``."""
    own = rank if rank in space else None
    base = own if own is not None and draw(st.integers(0, 5)) < 5 else draw(st.sampled_from(space))
    kind = draw(
        st.sampled_from(
            ["plain"] * 6
            + ["shift", "shift", "back", "div", "mod", "abs", "min", "clamp", "gather", "gather", "const"]
            + (["param", "max", "size"] if ctx is not None else [])
        )
    )
    if kind == "plain":
        return base, {base}
    if kind == "param":  # an integer param in an index (it may be negative)
        ctx.decl(f"param S = {draw(st.integers(-1, 2))}")
        return draw(st.sampled_from([f"{base} + S", f"{base} - S", f"S * {base}"])), {base}
    if kind == "max":
        return draw(
            st.sampled_from([f"max({base} - 1, 0)", f"max({base}, 1) - 1", f"{rank.upper()} - 1 - {base}"])
        ), {base}
    if kind == "size":  # a size in an index: reversed, or past the end
        return draw(st.sampled_from([f"{base} + {rank.upper()} - 2", f"({base} + 1) % {rank.upper()}"])), {
            base
        }
    if kind == "shift":
        return f"{base} + {draw(st.integers(1, 2))}", {base}
    if kind == "back":
        return f"{base} - 1", {base}
    if kind == "div":
        return f"{base} // 2", {base}
    if kind == "mod":
        return draw(
            st.sampled_from([f"({base} + 1) % 3", f"{base} % 2", f"({base} + 1) % {rank.upper()}"])
        ), {base}
    if kind == "abs":
        return f"abs({base} - 2)", {base}
    if kind == "min":
        return f"min({base}, 2)", {base}
    if kind == "clamp":
        if "clamp_empty" in avoid:  # (known bug: triton reads clamp(x, 0, N - 1) at -1 when N = 0)
            return f"clamp({base} - 1, 0, 3)", {base}
        return f"clamp({base} - 1, 0, {rank.upper()} - 1)", {base}
    if kind == "gather":
        return draw(st.sampled_from([f"I[{base}]", f"I[{base}] - 1", f"I[{base} // 2]"])), {base}
    return draw(st.sampled_from(["0", "1"])), set()


@st.composite
def _read(draw, ctx: _Ctx, space: tuple[str, ...], name: str | None = None) -> tuple[str, set[str]]:
    if name is None:
        # prefer tensors whose ranks are in the space (plain reads); others get their ranks substituted
        fits = sorted(n for n, rs in ctx.tensors.items() if set(rs) <= set(space))
        pool = fits if fits and draw(st.integers(0, 4)) else sorted(ctx.tensors)
        name = draw(st.sampled_from(pool))
    rs = ctx.tensors[name]
    if not rs:
        return name, set()
    parts, used = [], set()
    for r in rs:
        text, u = draw(_index(r, space, ctx.avoid, ctx))
        parts.append(text)
        used |= u
    return f"{name}[{', '.join(parts)}]", used


# binary forms of the value menu (besides + - * and the two below), in the order they are drawn
_BINARY_FORMS = {
    "max": "max({a}, {b})",
    "min": "min({a}, {b})",
    "??": "({a} ?? {b})",
    "div": "({a} / (1 + square({b})))",
    "div2": "({a} / (2 + tanh({b})))",
    "divpos": "({a} / (0.5 + exp({b})))",
    "dflt_sum": "(({a} ?? 0) + ({b} ?? 0))",
}


def _plain_read(text: str) -> bool:
    """Whether ``text`` is a read whose indices are distinct ranks, maybe shifted (``X[p + 2, f]``)."""
    m = re.fullmatch(r"[A-Z][A-Z0-9]*\[(.*)\]", text)
    if not m:
        return False
    parts = [x.strip() for x in m.group(1).split(",")]
    ranks = [re.fullmatch(r"([a-z][a-z0-9]*)( [+-] \d+)?", x) for x in parts]
    return all(ranks) and len({r.group(1) for r in ranks}) == len(ranks)


UNARY = [
    "exp({})",
    "exp({} - 1)",
    "exp2({})",
    "tanh({})",
    "sigmoid({})",
    "relu({})",
    "square({})",
    "abs({})",
    "-{}",
    "log(abs({}) + 0.5)",
    "log(1 + square({}))",
    "sqrt(square({}) + 1)",
    "sqrt(abs({}) + 0.25)",
]
# the rest of the function registry, sizes and params as values, huge and infinite constants
UNARY_MORE = [
    "log2(abs({}) + 0.5)",
    "rsqrt(square({}) + 1)",
    "elu({})",
    "softplus({})",
    "clamp({}, -1, 2)",
    "clamp({}, C, 1e30)",
    "max({}, -1e30)",
    "min({}, inf)",
    "{} * M",
    "{} / (F + 1)",
    "{} * C",
    "exp2(-abs({}))",
    "log(softplus({}))",
]
CONSTS = ["0", "1", "2", "0.5", "-1", "3"]
CONSTS_MORE = ["1e30", "-1e30", "2.5e-1", "P", "C", "-inf", "inf", "1.5E1"]


@st.composite
def _value(draw, ctx: _Ctx, space: tuple[str, ...], depth: int) -> tuple[str, set[str]]:
    """(text, ranks used) of a random value expression; every leaf is a read, a constant or a coordinate."""
    kinds = ["read", "read", "read", "const"] + (
        ["unary", "unary", "binary", "binary", "binary", "twice"] if depth else []
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "read":
        return draw(_read(ctx, space))
    if kind == "const":
        more = CONSTS_MORE
        if "triton_inf_const" in ctx.avoid:  # (known bug: triton, `inf + 2` is not folded: a Python float)
            more = [c for c in more if "inf" not in c]
        c = draw(st.sampled_from([*CONSTS, *more, "coord"]))
        if c == "C":
            ctx.decl(f"param C = {draw(st.sampled_from(['0.5', '-2', '3', '1e-3']))}")
        if c == "coord":
            a = draw(st.sampled_from(space))
            b = draw(st.sampled_from(space))
            return (f"({a} - {b})", {a, b}) if a != b else (f"{a}", {a})
        return c, set()
    if kind == "unary":
        a, ra = draw(_value(ctx, space, depth - 1))
        f = draw(st.sampled_from(UNARY + UNARY_MORE))
        if "C" in f:
            ctx.decl(f"param C = {draw(st.sampled_from(['0.5', '-2', '3', '1e-3']))}")
        return f.format(f"({a})" if not a.endswith("]") else a), ra
    if kind == "twice":  # one tensor read twice, the second time shifted or through a function
        name = draw(
            st.sampled_from(
                sorted(n for n in ctx.tensors if set(ctx.tensors[n]) <= set(space)) or sorted(ctx.tensors)
            )
        )
        a, ra = draw(_read(ctx, space, name))
        b, rb = draw(_read(ctx, space, name))
        form = draw(
            st.sampled_from(
                [
                    "{a} * {b}",
                    "{a} - {b}",
                    "max({a}, {b})",
                    "{a} ?? {b}",
                    "({a} ?? 0) + {b}",
                    "exp({a} - {b})",
                ]
            )
        )
        return "(" + form.format(a=a, b=b) + ")", ra | rb
    a, ra = draw(_value(ctx, space, depth - 1))
    b, rb = draw(_value(ctx, space, depth - 1))
    op = draw(st.sampled_from(["+", "-", "*", "*", *_BINARY_FORMS, "??c", "present_sum"]))
    used = ra | rb
    if op == "??c":
        return f"({a} ?? {draw(st.sampled_from([*CONSTS, '-inf']))})", ra
    if op == "present_sum":  # the sum of the present terms (the rewrite's running-state update)
        if "gather_present_sum" in ctx.avoid and not _plain_read(a):  # (known bug: a gather is not 0 there)
            a = f"({a} * 1)"
        return f"({a} + ({b} ?? 0) ?? {b})", used
    if op in _BINARY_FORMS:
        return _BINARY_FORMS[op].format(a=a, b=b), used
    return f"({a} {op} {b})", used


@st.composite
def _atom(draw, space: tuple[str, ...], gathers: bool = True, ctx=None) -> tuple[str, set[str]]:
    a = draw(st.sampled_from(space))
    b = draw(st.sampled_from(space))
    kinds = ["affine", "affine", "affine", "mod", "div", "abs", "const"] + (["gather"] if gathers else [])
    if ctx is not None:
        kinds += ["chain", "float", "param", "minmax"]
    kind = draw(st.sampled_from(kinds))
    cmp = draw(st.sampled_from(["<=", "<", ">=", ">", "!=", "=="]))
    c = draw(st.integers(-2, 2))
    off = f" + {c}" if c > 0 else (f" - {-c}" if c < 0 else "")
    if kind == "chain":  # a chained comparison with an integer param: a window
        ctx.decl(f"param W = {draw(st.integers(0, 3))}")
        return draw(
            st.sampled_from([f"0 <= {a} - {b} < W", f"{a} - W < {b} <= {a}", f"-1 <= {a} - {b} <= 1 < W"])
        ), {
            a,
            b,
        }
    if kind == "float":  # a float literal compared with integers
        floats = ["1.5", "-0.5", ".5"] + ([] if "triton_float_int_literal" in ctx.avoid else ["2.", "1e0"])
        return f"{a} - {b} {cmp} {draw(st.sampled_from(floats))}", {a, b}
    if kind == "param":
        ctx.decl(f"param W = {draw(st.integers(0, 3))}")
        return draw(
            st.sampled_from([f"{a} < W", f"{a} * W >= {b}", f"{a} % (W + 1) == 0", f"abs({a} - {b}) <= W"])
        ), {
            a,
            b,
        }
    if kind == "minmax":
        return draw(
            st.sampled_from(
                [f"min({a}, {b}) {cmp} 1", f"max({a}, {b}) {cmp} {a.upper()} - 1", f"clamp({a}, 1, 2) == {b}"]
            )
        ), {
            a,
            b,
        }
    if kind == "affine":
        return (f"{a} {cmp} {b}{off}" if a != b else f"{a} {cmp} {2 + c}"), {a, b}
    if kind == "mod":
        return (
            f"{a} % {draw(st.integers(2, 3))} {draw(st.sampled_from(['==', '!=']))} "
            f"{draw(st.integers(0, 1))}",
            {a},
        )
    if kind == "div":
        return f"{a} // 2 {cmp} {b}{off}", {a, b}
    if kind == "abs":
        return f"abs({a} - {b}) {draw(st.sampled_from(['<', '<=', '>']))} {draw(st.integers(0, 2))}", {a, b}
    if kind == "gather":
        return draw(
            st.sampled_from([f"I[{a}] == I[{b}]", f"I[{a}] <= {b}", f"I[{a}] != 1", f"I[{a} + 1] >= I[{a}]"])
        ), {a, b}
    return draw(st.sampled_from([f"{a} < 0", f"{a} >= 0", f"{a} < 2", f"{a} != {a.upper()} - 1"])), {a}


@st.composite
def _filter(draw, space: tuple[str, ...], gathers: bool = True, ctx=None) -> tuple[str, set[str]]:
    """A filter; without ``gathers`` it reads no ``I`` (a read out of range makes the point absent whatever
    the rest of the predicate says)."""
    a, ra = draw(_atom(space, gathers, ctx))
    form = draw(st.sampled_from(["one", "one", "one", "and", "or", "not"]))
    if form == "one":
        return a, ra
    if form == "not":
        return f"not ({a})", ra
    b, rb = draw(_atom(space, gathers, ctx))
    return f"({a}) {form} ({b})", ra | rb


LHS_SHAPES = [("p", "f"), ("p", "f"), ("p", "m"), ("p", "m"), ("p",), ("p",), ("m", "p"), ("f",), ()]


def _lhs(name: str, ranks: tuple[str, ...]) -> str:
    return f"{name}[{', '.join(ranks)}]" if ranks else name


@st.composite
def _statement(draw, ctx: _Ctx) -> list[str]:
    """One intermediate statement (or a short block: the 3-pass softmax) from the menu."""
    form = draw(st.sampled_from(["general"] * 8 + ["reduce", "reduce", "softmax", "contract", "alias"]))
    if form == "alias":  # a second rank of p's size (`rank N = P`): a prefix sum, a band, a reverse
        ctx.decl("rank N = P")
        src = draw(st.sampled_from(sorted(n for n, rs in ctx.tensors.items() if "p" in rs)))
        at = draw(st.sampled_from(["n", "n", "n + 1", "P - 1 - n"]))
        rest = tuple(r for r in ctx.tensors[src] if r != "p")
        read = f"{src}[{', '.join(at if r == 'p' else r for r in ctx.tensors[src])}]"
        other, _ = draw(_value(ctx, ("p", *rest), 1))
        w = draw(
            st.sampled_from(["n <= p", "n < p", "abs(n - p) <= 1", "n == p", "n >= p - W", "n != p", ""])
        )
        if "W" in w:
            ctx.decl(f"param W = {draw(st.integers(0, 3))}")
        body = draw(st.sampled_from(["{r}", "{r} * {o}", "exp({r} - {o})", "{r} ?? {o}", "max({r}, {o})"]))
        op = draw(st.sampled_from(["", "", " :: max(n)", " :: min(n)", " :: +(n)"]))
        name = ctx.fresh("N")
        lhs = ("p", *rest)
        ctx.tensors[name] = lhs
        return [f"{_lhs(name, lhs)} = {body.format(r=read, o=other)}{op}" + (f"  where {w}" if w else "")]
    if form == "contract":  # a sum of products (a matmul), often added to another term by its one reader
        left = draw(st.sampled_from(sorted(n for n, rs in ctx.tensors.items() if set(rs) == {"p", "m"})))
        right = draw(
            st.sampled_from(
                sorted(n for n, rs in ctx.tensors.items() if set(rs) == {"m", "f"} or rs == ("p", "f"))
            )
        )
        if "contract_broadcast" in ctx.avoid:  # (known bug: keep p in the product)
            a = f"{left}[{', '.join(ctx.tensors[left])}]"
        else:
            a, _ = draw(_read(ctx, ("p", "m"), left))
        rr = "m, f" if set(ctx.tensors[right]) == {"m", "f"} else draw(st.sampled_from(["m, f", "p, f"]))
        if ctx.tensors[right] == ("f", "m"):
            rr = "f, m"
        b = f"{right}[{rr}]"
        filt = ""
        if draw(st.booleans()):
            w, _ = draw(_filter(("p", "m", "f"), ctx=ctx))
            filt = f"  where {w}"
        name = ctx.fresh("C")
        lines = [f"{name}[p, f] = {a} * {b}{filt}"]
        ctx.tensors[name] = ("p", "f")
        if draw(st.booleans()):
            other, _ = draw(_value(ctx, ("p", "f"), 1))
            form2 = draw(
                st.sampled_from(
                    [
                        "({x} ?? 0) + {y}",
                        "{x} + {y}",
                        "{x} + ({y} ?? 0) ?? {y}",
                        "{y} + ({x} ?? 0)",
                        "{y} - {x}",
                    ]
                )
            )
            acc = ctx.fresh("Z")
            lines.append(f"{acc}[p, f] = " + form2.format(x=f"{name}[p, f]", y=other))
            ctx.tensors[acc] = ("p", "f")
        return lines
    if form == "softmax":
        # (known bug: this leaves no row of the scores empty: src = A, and key 0 passes the filter)
        safe = "softmax_empty_row" in ctx.avoid
        src = (
            "A"
            if safe
            else draw(
                st.sampled_from(sorted(n for n, rs in ctx.tensors.items() if rs in (("p", "m"), ("m", "p"))))
            )
        )
        score = f"{src}[{', '.join(ctx.tensors[src])}]"
        filt = ""
        if draw(st.booleans()):
            w, _ = draw(_filter(("p", "m"), gathers=not safe))
            filt = f"  where (m == 0) or ({w})" if safe else f"  where {w}"
        g, s, e, d, o = (ctx.fresh(x) for x in ("G", "S", "E", "N", "O"))
        scale = draw(st.sampled_from(["", " * 0.5"] + ([] if safe else [" + D[p, 0]"])))
        lines = [
            f"{s}[p, m] = {score}{scale}{filt}",
            f"{g}[p] = {s}[p, m] :: max(m)",
            f"{e}[p, m] = exp({s}[p, m] - {g}[p])",
            f"{d}[p] = {e}[p, m]",
        ]
        last = draw(st.sampled_from(["av", "av_deferred", "probs"]))
        if last == "av":
            lines.append(f"{o}[p, f] = {e}[p, m] * B[m, f] / {d}[p]")
            ctx.tensors.update({s: ("p", "m"), g: ("p",), e: ("p", "m"), d: ("p",), o: ("p", "f")})
        elif last == "av_deferred":
            n = ctx.fresh("U")
            lines += [f"{n}[p, f] = {e}[p, m] * B[m, f]", f"{o}[p, f] = {n}[p, f] / {d}[p]"]
            ctx.tensors.update(
                {s: ("p", "m"), g: ("p",), e: ("p", "m"), d: ("p",), n: ("p", "f"), o: ("p", "f")}
            )
        else:
            lines.append(f"{o}[p, m] = {e}[p, m] / {d}[p]")
            ctx.tensors.update({s: ("p", "m"), g: ("p",), e: ("p", "m"), d: ("p",), o: ("p", "m")})
        return lines
    lhs = draw(st.sampled_from(LHS_SHAPES))
    extra = [r for r in RANKS if r not in lhs]
    red_ranks = (
        draw(
            st.lists(
                st.sampled_from(extra),
                unique=True,
                min_size=1 if form == "reduce" and extra else 0,
                max_size=2,
            )
        )
        if extra
        else []
    )
    space = tuple(lhs) + tuple(red_ranks)
    if not space:
        space = ("p",)
    depth = draw(st.integers(0, 2))
    expr, used = draw(_value(ctx, space, depth))
    summed = set(space) - set(lhs)
    if summed and "contract_broadcast" in ctx.avoid:  # (known bug: a reduced value lacking an lhs rank)
        lhs = tuple(r for r in lhs if r in used)
    filt, fused = "", set()
    if draw(st.integers(0, 2)) == 0 or (form == "reduce" and draw(st.booleans())):
        filt, fused = draw(_filter(space, ctx=ctx))
    used |= fused
    reduced = sorted((used | set()) - set(lhs))
    op = ""
    if reduced and (form == "reduce" or draw(st.booleans())):
        chosen = draw(st.lists(st.sampled_from(reduced), unique=True, min_size=1))
        kind = draw(st.sampled_from(["max", "max", "min", "+"]))
        op = f" :: {kind}({', '.join(chosen)})"
    name = ctx.fresh()
    ctx.tensors[name] = tuple(lhs)
    return [f"{_lhs(name, tuple(lhs))} = {expr}{op}" + (f"  where {filt}" if filt else "")]


# ---- recurrences ---------------------------------------------------------------------------------------

STATE_INITS = {
    "sum": ["0", "1", "0  where p < 0"],
    "max": ["-inf", "0", "-inf  where p < 0"],
    "min": ["inf", "0", "inf  where p < 0"],
}


def _update(kind: str, form: int, s: str, x: str, c: str) -> str:
    if kind == "sum":
        return [
            f"{s} * {c} + ({x} ?? 0)",
            f"{x} + ({s} ?? 0) ?? {s}",
            f"({x} ?? 0) + {s}",
            f"{s} + {x}",
            f"{s} * {c} + {x} ?? {s}",
        ][form % 5]
    op = kind
    return [
        f"{op}({s}, {x}) ?? {s}",
        f"{op}({s} ?? {x}, {x} ?? {s})",
        f"{op}({s}, {x} ?? {s})",
        f"{op}({s}, {x})",
        f"{op}({s}, {x} * {c}) ?? {s}",
    ][form % 5]


@st.composite
def _recurrence(draw, ctx: _Ctx) -> tuple[list[str], list[str], list[str]]:
    """(declarations, statements, candidate outputs) of a recurrence over m, over the tiles m1 of m, or over
    a rank t of T = 1-4 steps (a param) that reads L[p, t] past the end of m."""
    how = draw(st.sampled_from(["tiled", "tiled", "m", "m", "t"]))
    tiled = how == "tiled"
    decls: list[str] = []
    lines: list[str] = []
    # the local tensor L[p, m]: a fresh masked value over (p, m)
    expr, _ = draw(_value(ctx, ("p", "m"), draw(st.integers(0, 1))))
    filt = ""
    if draw(st.booleans()):
        w, _ = draw(_filter(("p", "m"), ctx=ctx))
        filt = f"  where {w}"
    loc = ctx.fresh("L")
    lines.append(f"{loc}[p, m] = {expr}{filt}")
    ctx.tensors[loc] = ("p", "m")
    if tiled:
        m0 = draw(st.integers(1, 4))
        decls += [f"param M0 = {m0}", "rank M = M1 * M0"]
        r, R = "m1", "M1"
        bl = ctx.fresh("BL")
        off = draw(st.sampled_from(["", "", "", " + 1", " - 1"]))  # (past the end, before the start)
        lines.append(f"{bl}[p, m1, m0] = {loc}[p, m1 * M0 + m0{off}]")
    elif how == "t":
        decls.append(f"param T = {draw(st.integers(1, 4))}")
        r, R = "t", "T"
        loc2 = ctx.fresh("L")
        lines.append(f"{loc2}[p, t] = {loc}[p, {draw(st.sampled_from(['t', 't', 't + 1', 'T - 1 - t']))}]")
        ctx.tensors[loc2] = ("p", "t")
        loc = loc2
    else:
        r, R = "m", "M"
    outs = []
    style = draw(st.sampled_from(["one", "one", "softmax", "lse"]))
    if style == "lse":  # two states: a running max and the sum of exponentials under it (a logsumexp)
        rm, rs, y = ctx.fresh("RM"), ctx.fresh("RS"), ctx.fresh("Y")
        absent_start = draw(st.booleans())
        cond = "  where p < 0" if absent_start else ""
        if tiled:
            lm, sl = ctx.fresh("LM"), ctx.fresh("SL")
            lines.append(f"{lm}[p, m1] = {bl}[p, m1, m0] :: max(m0)")
            x = f"{lm}[p, m1]"
        else:
            x = f"{loc}[p, {r}]"
        init = draw(st.sampled_from(["-inf", "-1e30", "0"]))
        lines += [f"{rm}[0, p] = {'-inf' if absent_start else init}{cond}", f"{rs}[0, p] = 0{cond}"]
        a, b = f"{rm}[{r}, p]", f"{rm}[{r} + 1, p]"
        if absent_start:
            lines.append(f"{b} = max({a} ?? {x}, {x} ?? {a})")
        else:
            lines.append(
                f"{b} = "
                + draw(
                    st.sampled_from(
                        [f"max({a}, {x}) ?? {a}", f"max({a}, {x} ?? -inf)", f"max({a}, {x} ?? {a})"]
                    )
                )
            )
        if tiled:
            lines.append(f"{sl}[p, m1] = exp({bl}[p, m1, m0] - {b})")
            term = f"{sl}[p, m1]"
        else:
            term = f"exp({x} - {b})"
        scale = f"{rs}[{r}, p] * exp({a} - {b})"
        if absent_start:
            upd = f"{term} + ({scale} ?? 0) ?? {scale}"
        else:
            upd = draw(st.sampled_from([f"({term} ?? 0) + {scale}", f"{term} + {scale} ?? {scale}"]))
        lines.append(f"{rs}[{r} + 1, p] = {upd}")
        lines.append(f"{y}[p] = {rm}[{R}, p] + log({rs}[{R}, p])")
        ctx.tensors[y] = ("p",)
        outs.append(y)
        if draw(st.integers(0, 3)) == 0:
            outs.append(draw(st.sampled_from([rm, rs])))  # a whole iterative tensor: every state
        return decls, lines, outs
    if style == "one":
        kind = draw(st.sampled_from(["sum", "max", "min"]))
        source = draw(st.sampled_from(["local"] * 4 + ["input"]))
        if source == "input":  # an input read inside the step, past the end at the last steps
            x = "A"
            xr = (
                f"A[p, {r} + 1]"
                if not tiled
                else draw(st.sampled_from(["A[p, m1 * M0 + M0]", "A[p, m1 + 1]"]))
            )
        elif tiled:
            x = ctx.fresh("LX")
            red = {"sum": "", "max": " :: max(m0)", "min": " :: min(m0)"}[
                draw(st.sampled_from(["sum", "max", "min"]))
            ]
            lines.append(f"{x}[p, m1] = {bl}[p, m1, m0]{red}")
            xr = f"{x}[p, {r}]"
        else:
            x = loc
            xr = f"{x}[p, {r}]"
        st_name = ctx.fresh("R")
        init = draw(st.sampled_from(STATE_INITS[kind]))
        upd = _update(
            kind,
            draw(st.integers(0, 4)),
            f"{st_name}[{r}, p]",
            xr,
            draw(st.sampled_from(["0.5", "1"])),
        )
        lines += [f"{st_name}[0, p] = {init}", f"{st_name}[{r} + 1, p] = {upd}"]
        read = draw(st.sampled_from(["final", "final", "history", "before", "all", "const", "sumhist"]))
        y = ctx.fresh("Y")
        if read == "final":
            lines.append(f"{y}[p] = {st_name}[{R}, p]")
            ctx.tensors[y] = ("p",)
        elif read == "history":
            lines.append(f"{y}[p, {r}] = {st_name}[{r} + 1, p]")
            if r == "m":  # (a history over the tiles m1 or steps t is not read again: no rank of the pool)
                ctx.tensors[y] = ("p", "m")
        elif read == "all":  # the iterative tensor itself is an output: every state
            y = st_name
        elif read == "const":
            lines.append(f"{y}[p] = {st_name}[1, p] ?? {st_name}[0, p]")
            ctx.tensors[y] = ("p",)
        elif read == "sumhist":
            lines.append(f"{y}[p] = {st_name}[{r}, p] :: {draw(st.sampled_from(['+', 'max', 'min']))}({r})")
            ctx.tensors[y] = ("p",)
        else:
            lines.append(f"{y}[p] = {st_name}[{r}, p] ?? 0")
            ctx.tensors[y] = ("p",)
        outs.append(y)
        return decls, lines, outs
    # the 1-pass online softmax (FuseMax's Cascade 5) over the local tensor as scores
    guarded = draw(st.booleans())
    absent_start = draw(st.booleans())
    rm, rd, rn = ctx.fresh("RM"), ctx.fresh("RD"), ctx.fresh("RN")
    lm, sln, sld, slnv, prm, o = (ctx.fresh(n) for n in ("LM", "SLN", "SLD", "SLNV", "PRM", "AV"))
    if tiled:
        bv = ctx.fresh("BV")
        lines.append(f"{bv}[m1, m0, f] = B[m1 * M0 + m0, f]")
        tile, vread, red = f"{bl}[p, m1, m0]", f"{bv}[m1, m0, f]", "m0"
    else:
        tile, vread, red = f"{loc}[p, {r}]", f"B[{r}, f]", None
    if red:
        lines.append(f"{lm}[p, m1] = {tile} :: max(m0)")
        lmr = f"{lm}[p, m1]"
    else:
        lmr = tile  # one key per step: the local max is the score itself
    sp = f"{rm}[{r}, p]"
    nx = f"{rm}[{r} + 1, p]"
    lines.append(f"{rm}[0, p] = -inf" + ("  where p < 0" if absent_start else ""))
    lines.append(f"{rd}[0, p] = 0" + ("  where p < 0" if absent_start else ""))
    lines.append(f"{rn}[0, p, f] = 0" + ("  where p < 0" if absent_start else ""))
    if absent_start:
        lines.append(f"{nx} = max({sp} ?? {lmr}, {lmr} ?? {sp})")
    elif guarded:
        lines.append(f"{nx} = max({sp}, {lmr}) ?? {sp}")
    else:
        lines.append(f"{nx} = max({sp}, {lmr} ?? -inf)")
    if red:
        lines.append(f"{sln}[p, m1, m0] = exp({tile} - {nx})")
        lines.append(f"{sld}[p, m1] = {sln}[p, m1, m0]")
        lines.append(f"{slnv}[p, m1, f] = {sln}[p, m1, m0] * {vread}")
        sldr, slnvr = f"{sld}[p, m1]", f"{slnv}[p, m1, f]"
    else:
        lines.append(f"{sln}[p, {r}] = exp({tile} - {nx})")
        lines.append(f"{slnv}[p, {r}, f] = {sln}[p, {r}] * {vread}")
        sldr, slnvr = f"{sln}[p, {r}]", f"{slnv}[p, {r}, f]"
    lines.append(f"{prm}[p, {r}] = exp({sp} - {nx})" + (" ?? 1" if guarded or absent_start else ""))
    if absent_start:
        lines.append(
            f"{rd}[{r} + 1, p] = {sldr} + ({rd}[{r}, p] * {prm}[p, {r}] ?? 0) ?? {rd}[{r}, p] * {prm}[p, {r}]"
        )
        lines.append(
            f"{rn}[{r} + 1, p, f] = {slnvr} + ({rn}[{r}, p, f] * {prm}[p, {r}] ?? 0)"
            f" ?? {rn}[{r}, p, f] * {prm}[p, {r}]"
        )
    else:
        lines.append(f"{rd}[{r} + 1, p] = ({sldr} ?? 0) + {rd}[{r}, p] * {prm}[p, {r}]")
        lines.append(f"{rn}[{r} + 1, p, f] = ({slnvr} ?? 0) + {rn}[{r}, p, f] * {prm}[p, {r}]")
    lines.append(f"{o}[p, f] = {rn}[{R}, p, f] / {rd}[{R}, p]")
    ctx.tensors[o] = ("p", "f")
    outs.append(o)
    return decls, lines, outs


@st.composite
def programs(
    draw, min_statements: int = 3, max_statements: int = 8, recurrence: bool | None = None, avoid=frozenset()
) -> FuzzProgram:
    """A random valid program (rejects the rare invalid draw with ``assume``). ``avoid``: forms of known bugs
    to leave out (names from :data:`KNOWN_BUGS`)."""
    ctx = _Ctx(avoid)
    lines: list[str] = []
    decls: list[str] = []
    produced: list[str] = []
    n = draw(st.integers(min_statements, max_statements))
    rec_at: set[int] = set()
    if recurrence is None:
        recurrence = draw(st.integers(0, 2)) == 0
    if recurrence:
        rec_at = {draw(st.integers(0, n - 1))}
        if draw(st.integers(0, 3)) == 0:  # a second recurrence (another iterative rank, or the same one)
            rec_at.add(draw(st.integers(0, n - 1)))
    notes = []
    for k in range(n):
        if k in rec_at:
            d, ls, outs = draw(_recurrence(ctx))
            decls += [x for x in d if x.split("=")[0] not in {y.split("=")[0] for y in decls}]
            lines += ls
            produced += outs
            notes.append("recurrence")
            continue
        before = set(ctx.tensors)
        lines += draw(_statement(ctx))
        produced += [t for t in ctx.tensors if t not in before]
    # outputs: the last tensor made, and maybe another one (often one that later statements read)
    last = produced[-1]
    outputs = [last]
    others = [t for t in produced if t != last]
    if others and draw(st.booleans()):
        outputs.append(draw(st.sampled_from(others)))
    if draw(st.booleans()):
        outputs.reverse()
    decls += [d for d in ctx.decls.values() if d not in decls]
    text = "\n".join([HEADER_INPUTS, *decls, f"output {', '.join(outputs)}", *lines]) + "\n"
    return _program(text, avoid, tuple(notes))


def _program(text: str, avoid, notes: tuple[str, ...]) -> FuzzProgram:
    """The drawn program, parsed (a text the checker rejects is not a program: hypothesis draws again)."""
    if "triton_const_exp" in avoid:  # (a fixed bug's form: `_exp(2.0)` read a Python float's dtype)
        assume(not _const_call(text, ("exp", "sigmoid")))
    try:
        prog = parse_quietly(text)
    except einattn.EinError:
        assume(False)
        raise
    return FuzzProgram(text, prog, notes)


def _const_call(text: str, functions: tuple[str, ...]) -> bool:
    """Whether ``text`` calls one of ``functions`` on a constant (no read, coordinate or size in it)."""
    for m in re.finditer(r"\b(" + "|".join(functions) + r")\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        arg = re.sub(r"\b[a-z0-9]+\(|\d+\.?\d*[eE][+-]?\d+|\binf\b", "(", text[m.end() : i - 1])
        if "[" not in arg and not re.search(r"[a-zA-BD-Z]", arg):
            return True
    return False


# ---- sizes and data ------------------------------------------------------------------------------------

KINDS = ("normal", "normal", "ties", "large", "mixed")


def _values(rng, shapes: dict, kind: str, large: float, mixed: float) -> dict:
    """Float64 data of each shape: ``normal``, ``ties`` (small integers), ``large`` (normal times ``large``),
    or else half small integers, half normal times ``mixed``."""
    x = {}
    for name, shape in shapes.items():
        if kind == "normal":
            v = rng.standard_normal(shape)
        elif kind == "ties":
            v = rng.integers(-2, 3, size=shape).astype(float)
        elif kind == "large":
            v = rng.standard_normal(shape) * large
        else:
            v = np.where(
                rng.random(shape) < 0.5, rng.integers(-1, 2, size=shape), rng.standard_normal(shape) * mixed
            )
        x[name] = np.asarray(v, dtype=np.float64)
    return x


@st.composite
def data_for(draw, prog: Program, max_size: int = 6, zero: bool = True) -> dict:
    """Sizes (0 occasionally, 1 often) and float64 inputs; ``I`` holds values in and out of range."""

    def size():
        if zero and draw(st.integers(0, 15)) == 0:
            return 0
        return draw(st.sampled_from([1, 1, 2, 3, 4, 5, 6][: max_size + 1]))

    P, M, F = size(), size(), size()
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shapes = {"A": (P, M), "B": (M, F), "D": (P, F)}
    x = _values(rng, shapes, kind, large=30, mixed=4)
    ints = draw(st.sampled_from(["range", "sorted", "wide"]))
    if ints == "range":
        x["I"] = rng.integers(0, max(P, 1), size=(P,))
    elif ints == "sorted":
        x["I"] = np.sort(rng.integers(0, 3, size=(P,)))
    else:
        x["I"] = rng.integers(-1, max(P, M, F) + 2, size=(P,))
    x["I"] = x["I"].astype(np.int64)
    return {"sizes": {"P": P, "M": M, "F": F}, "kind": kind, "inputs": x}


# ---- running -------------------------------------------------------------------------------------------

TORCH_CONFIGS = {
    "torch": {},
    "torch-row_block=1": {"row_block": 1},
    "torch-skip_tiles=False": {"skip_tiles": False},
    "torch-as-written": {"passes": "as-written"},
    "torch-auto": {"passes": "auto"},
    "torch-auto-tile=2": {"passes": "auto", "tile": 2},
}
# the forward pass with inputs that require a gradient (other code paths: nothing in place, checkpoints)
GRAD_CONFIGS = {
    "torch-grad": {},
    "torch-grad-row_block=1": {"row_block": 1},
    "torch-grad-as-written": {"passes": "as-written"},
    "torch-grad-recompute=False": {"recompute": False},
}
# more configurations for a long run (run_case(..., more=True)): tiles of 1 and 3, blocks of 2 rows, no blocks
MORE_CONFIGS = {
    "torch-auto-tile=1": {"passes": "auto", "tile": 1},
    "torch-auto-tile=3-row_block=2": {"passes": "auto", "tile": 3, "row_block": 2},
    "torch-row_block=0": {"row_block": 0},
    "torch-auto-tile=2-skip_tiles=False": {"passes": "auto", "tile": 2, "skip_tiles": False},
}
# configurations whose gradients (of a weighted sum of the outputs) must equal the as-written one's
GRAD_COMPARE = {
    "default": {},
    "row_block=1": {"row_block": 1},
    "recompute=False": {"recompute": False},
    "skip_tiles=False": {"skip_tiles": False},
    "auto-tile=2": {"passes": "auto", "tile": 2},
    "auto-tile=3-row_block=2-recompute=False": {
        "passes": "auto",
        "tile": 3,
        "row_block": 2,
        "recompute": False,
    },
}
# float32 configurations (torch at einattn.testing.TOLERANCES, on well-conditioned data)
FLOAT32_CONFIGS = {
    "torch-f32": {},
    "torch-f32-as-written": {"passes": "as-written"},
    "torch-f32-tile=2": {"tile": 2},
}
NUMPY_CONFIGS = {"numpy-auto": {"passes": "auto"}, "numpy-auto-tile=2": {"passes": "auto", "tile": 2}}


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def reference(prog: Program, x: dict):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _tuple(einattn.compile(prog, backend="numpy")(**x))


def _torch_inputs(x: dict, dtype, requires_grad: bool = False):
    import torch

    out = {}
    for n, a in x.items():
        if a.dtype.kind == "i":
            out[n] = torch.as_tensor(a, dtype=torch.int64)
        else:
            out[n] = torch.as_tensor(a).to(dtype).requires_grad_(requires_grad)
    return out


def _check(name, prog, got, want, tol, failures, want32=None):
    """``want32``: for a float32 result, a function giving the NumPy reference computed in float32; a result
    that misses the float64 reference but equals it is float32's own (a state started at 0 rather than -inf
    underflows: 0 / 0 where float64 keeps 1e-59 / 1e-59), not a bug."""
    got = _tuple(got)
    if len(got) != len(want):
        failures.append((name, f"{len(got)} outputs, expected {len(want)}"))
        return
    for k, (out, g, w) in enumerate(zip(prog.outputs, got, want)):
        if tol > 1e-6:  # float32: what overflows float32's range is infinite there
            with np.errstate(over="ignore"):
                w = np.asarray(w, dtype=np.float64).astype(np.float32).astype(np.float64)
        try:
            err = compare(g, w, tol)
        except AssertionError as e:
            err, why = None, f"`{out}`: {e}"
        else:
            why = None if err <= tol else f"`{out}`: error {err:.3g} > {tol:g}"
        if why is not None and want32 is not None:
            try:
                if compare(g, _tuple(want32())[k], tol) <= tol:
                    continue
            except AssertionError:
                pass
        if why is not None:
            failures.append((name, why))


def _attempt(failures, name, prog, backend, opts, inputs, want, tol, want32=None) -> None:
    """Compile and run one configuration and check it (:func:`_check`); an exception is a failure too."""
    try:
        with np.errstate(all="ignore"):
            got = einattn.compile(prog, backend=backend, **opts)(**inputs)
        got = tuple(g.detach() if hasattr(g, "detach") else g for g in _tuple(got))
    except Exception as e:
        failures.append((name, f"raised {type(e).__name__}: {e}"))
        return
    _check(name, prog, got, want, tol, failures, want32)


def run_case(
    prog: Program,
    x: dict,
    configs=None,
    numpy_configs=None,
    grad: bool = False,
    grad_mode_forward: bool = True,
    triton: bool = False,
    more: bool = False,
    float32: bool = False,
    grad_compare: bool = False,
    x_other: dict | None = None,
    triton64: bool = False,
) -> list[tuple[str, str]]:
    """Every requested configuration against the float64 NumPy reference: a list of (config, message).
    ``more``: :data:`MORE_CONFIGS` too; ``float32``: torch in float32 at its tolerance; ``grad_compare``: the
    gradients of every :data:`GRAD_COMPARE` configuration equal the as-written ones (finite programs)."""
    import torch

    want = reference(prog, x)
    failures: list[tuple[str, str]] = []
    configs = TORCH_CONFIGS if configs is None else configs
    if more:
        configs = {**configs, **MORE_CONFIGS}
    numpy_configs = NUMPY_CONFIGS if numpy_configs is None else numpy_configs
    xt = _torch_inputs(x, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, opts in numpy_configs.items():
            _attempt(failures, name, prog, "numpy", opts, x, want, 1e-10)
        for name, opts in configs.items():
            _attempt(failures, name, prog, "torch", opts, xt, want, 1e-10)
        if grad_mode_forward:  # the forward pass with a gradient recorded takes other paths (no in-place)
            xg = _torch_inputs(x, torch.float64, requires_grad=True)
            for name, opts in GRAD_CONFIGS.items():
                _attempt(failures, name, prog, "torch", opts, xg, want, 1e-10)
        if grad and all_finite(prog, x):
            msg = gradcheck(prog, x)
            if msg:
                failures.append(("torch-gradcheck", msg))
        if grad_compare and all_finite(prog, x):
            failures += compare_gradients(prog, x, float32_configs=FLOAT32_CONFIGS if float32 else None)
        if float32:
            from einattn.testing import TOLERANCES

            x32 = _torch_inputs(x, torch.float32)
            for name, opts in FLOAT32_CONFIGS.items():
                _attempt(failures, name, prog, "torch", opts, x32, want, TOLERANCES[("torch", "float32")])
        runs = (  # float64: exact up to tanh, elu and softplus, written out (about 3e-12)
            (
                triton,
                torch.float32,
                1e-4,
                (("triton-auto", {"tile": 2}), ("triton-as-written", {"passes": "as-written"})),
            ),
            (
                triton64,
                torch.float64,
                1e-7,
                (("triton64-auto", {"tile": 2}), ("triton64-general", {"path": "general"})),
            ),
        )
        memo: dict = {}

        def want32():  # the NumPy reference in float32 (computed once, when a float32 result misses)
            if "w" not in memo:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    memo["w"] = einattn.compile(prog, backend="numpy", dtype="float32")(**x)
            return memo["w"]

        for wanted, dtype, tol, configs in runs:
            if not wanted:
                continue
            xs = _torch_inputs(x, dtype)
            if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
                xs = {n: v.cuda() for n, v in xs.items()}
            for name, opts in configs:
                ref32 = want32 if dtype == torch.float32 else None
                _attempt(failures, name, prog, "triton", opts, xs, want, tol, ref32)
        if x_other is not None:
            failures += reuse_calls(
                prog, x, x_other, want, backends=("torch", "triton") if triton else ("torch",)
            )
    return failures


def _strided(a: np.ndarray, dtype, int_dtype):
    """``a`` as a torch tensor that is not contiguous (every other element of a wider buffer, transposed)."""
    import torch

    t = torch.as_tensor(a, dtype=int_dtype if a.dtype.kind == "i" else dtype)
    if t.ndim == 0:
        return t
    wide = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype)
    wide[..., ::2] = t
    out = wide[..., ::2]
    if t.ndim >= 2:  # the same values, laid out with the first two dimensions swapped in memory
        out = out.transpose(0, 1).contiguous().transpose(0, 1)
    return out


REUSE_CONFIGS = {
    "torch": {},
    "torch-auto-tile=2": {"passes": "auto", "tile": 2},
    "torch-row_block=1": {"row_block": 1},
}


def reuse_calls(prog: Program, x: dict, x_other: dict, want, backends=("torch",)) -> list[tuple[str, str]]:
    """One compiled kernel called three times, on ``x`` (non-contiguous, int32 ids), ``x_other`` (other sizes)
    and ``x`` again: what a call keeps (buffers, masks, matmul geometry) must not change the next call."""
    import torch

    want_other = reference(prog, x_other)
    failures: list[tuple[str, str]] = []
    runs = [
        (f"{b}-reuse-{n}", b, o)
        for b in backends
        for n, o in (REUSE_CONFIGS.items() if b == "torch" else {"auto": {"tile": 2}}.items())
    ]
    for name, backend, opts in runs:
        dtype, tol = (torch.float64, 1e-10) if backend == "torch" else (torch.float32, 1e-4)
        try:
            kernel = einattn.compile(prog, backend=backend, **opts)
            for k, (xx, ww) in enumerate(((x, want), (x_other, want_other), (x, want))):
                xs = {n: _strided(a, dtype, torch.int32 if k == 0 else torch.int64) for n, a in xx.items()}
                _check(f"{name}-call{k + 1}", prog, kernel(**xs), ww, tol, failures)
        except Exception as e:
            failures.append((name, f"raised {type(e).__name__}: {e}"))
    return failures


def all_finite(prog: Program, x: dict) -> bool:
    """Whether every tensor of the cascade, intermediates included, is finite at its present points (a NaN
    that the spec's own arithmetic makes, exp(-inf - -inf) of a running max over nothing, has no gradient)."""
    text = prog.source.text if prog.source else None
    if text is None:
        return False
    names = list(dict.fromkeys(e.tensor for e in prog.einsums))
    lines = [ln for ln in text.splitlines() if not ln.startswith("output")]
    every = parse_quietly("\n".join([*lines, f"output {', '.join(names)}"]) + "\n")
    return all(np.all(np.isfinite(w)) for w in reference(every, x))


def gradcheck(prog: Program, x: dict, **opts) -> str | None:
    """torch.autograd.gradcheck of the torch kernel (float64) in its float inputs; a message if it fails."""
    import torch

    xg = _torch_inputs(x, torch.float64, requires_grad=True)
    floats = [n for n, v in xg.items() if v.dtype.is_floating_point and v.numel()]
    if not floats:
        return None
    kernel = einattn.compile(prog, backend="torch", **opts)

    def fn(*args):
        kw = dict(xg)
        kw.update(zip(floats, args))
        return _tuple(kernel(**kw))

    with torch.no_grad():
        outs = fn(*[xg[n] for n in floats])
    if any(o.numel() and o.abs().max() > 1e12 for o in outs if o.is_floating_point()):
        # finite differences cannot see a derivative under so large a value: `A * B + 1e30` moves by
        # 1e-7 when A moves by gradcheck's 1e-6, far below the output's float64 spacing (1e14): 0
        return None
    try:
        torch.autograd.gradcheck(fn, [xg[n] for n in floats], atol=1e-6, rtol=1e-4)
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:400]}"
    return None


# ---- attention-shaped programs with batch and head ranks -------------------------------------------------

HEAD_HEADER = "input Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f], I[m] : int"
# the key/value head a query head reads: GQA's h // R, out of range past the last group (absent), ...
KV_HEADS = [
    "h // R",
    "h // R",
    "h // R",
    "h",
    "h % R",
    "h % G",
    "min(h, G - 1)",
    "0",
    "h // R + 1",
    "G - 1 - h",
]
# the key position a score reads (m; past the end: absent)
KEY_POS = ["{m}"] * 6 + ["{m} + 1", "{m} - 1", "{m} + S"]
HEAD_ATOMS = [
    "{m} <= p",
    "{m} <= p",
    "{m} <= p + 1",
    "{m} < p - 1",
    "{m} >= p",
    "0 <= p - {m} < W",
    "p - W < {m} <= p",
    "abs(p - {m}) <= W",
    "I[{m}] == I[p]",
    "I[{m}] <= I[p]",
    "{m} % 2 == 0",
    "p - {m} < 1.5",
    "{m} != 0",
    "{m} < M - 1",
    "p < P - 1",
    "h // R < 1",
    "h != 1",
    "b == 0",
    "{m} // 2 <= p",
    "{m} == min(p, 2)",
    "p >= 2 * {m} - W",
    "{m} <= p - H + h",
]


@st.composite
def _head_filter(draw, m: str) -> str:
    """A filter over (b, h, m, p) with the key position written ``m`` (``m1 * M0 + m0`` in a tile)."""
    a = draw(st.sampled_from(HEAD_ATOMS)).format(m=m)
    form = draw(st.sampled_from(["one", "one", "one", "and", "or", "not"]))
    if form == "one":
        return a
    if form == "not":
        return f"not ({a})"
    b = draw(st.sampled_from(HEAD_ATOMS)).format(m=m)
    return f"({a}) {form} ({b})"


def _bhp(*mid: str, state: str | None = None, pos: int = 2) -> str:
    """Indices ``b, h, *mid, p`` with an iterative index ``state`` inserted at ``pos``."""
    idx = ["b", "h", *mid, "p"]
    if state is not None:
        idx.insert(pos, state)
    return ", ".join(idx)


@st.composite
def head_programs(draw, avoid=frozenset(), streaming: bool | None = None) -> FuzzProgram:
    """A random attention-shaped program over ``Q[b, h, p, e], K[b, g, m, e], V[b, g, m, f]`` and ``I[m]``
    (document ids): GQA-style head reads (``h // R`` and others, out of range: absent), key reads shifted past
    the end, filters with params (``0 <= p - m < W``), floats, gathers, head coordinates; an optional query
    smoothing over an alias rank (``rank N = P``); score transforms; a normaliser: the 3-pass softmax, a
    2-pass form, sigmoid, or a hand-written 1-pass online softmax (three states, started at ``-inf``,
    ``-1e30`` or absent, guarded with ``??`` in several ways) over tiles ``rank M = M1 * M0`` or over ``m``
    itself; outputs that are final states, logsumexps, histories and whole iterative tensors."""
    decls = {f"param R = {draw(st.integers(1, 3))}"}
    lines: list[str] = []
    kv = draw(st.sampled_from(KV_HEADS))
    pos = draw(st.sampled_from(KEY_POS))
    if "S" in pos:
        decls.add(f"param S = {draw(st.integers(-1, 2))}")
    scale = draw(st.sampled_from(["", "", " * rsqrt(E)", " * 0.5", " * C"]))
    if "C" in scale:
        decls.add(f"param C = {draw(st.sampled_from(['0.75', '2.5e-1', '-1', '1e0']))}")
    filt = ""
    if draw(st.integers(0, 3)):
        filt = draw(_head_filter("{m}"))
        if "W" in filt:
            decls.add(f"param W = {draw(st.integers(0, 3))}")
    q = "Q"
    if draw(st.integers(0, 5)) == 0:  # smoothed queries over an alias rank of p
        decls.add("rank N = P")
        w = draw(
            st.sampled_from(["0 <= p - n <= 1", "n < p", "abs(n - p) < 2", "n == p", "n <= p and n % 2 == 0"])
        )
        lines.append(f"QS[b, h, p, e] = Q[b, h, n, e] * 0.5  where {w}")
        q = "QS"
    outputs: list[str] = []
    extra: list[str] = []  # other tensors an output may be
    styles = ["softmax", "softmax", "twopass", "sigmoid", "online", "online", "online", "scan"]
    if streaming is not None:
        styles = ["online", "online", "scan"] if streaming else ["softmax", "twopass", "sigmoid"]
    style = draw(st.sampled_from(styles))
    kpos = pos.format(m="m")
    mfilt = filt.format(m="m")
    tiled = style == "online"
    if not tiled:
        lines.append(
            f"SC[b, h, m, p] = {q}[b, h, p, e] * K[b, {kv}, {kpos}, e]{scale}"
            + (f"  where {mfilt}" if mfilt else "")
        )
        score = "SC[b, h, m, p]"
        vread = f"V[b, {kv}, {kpos}, f]"
        transform = draw(
            st.sampled_from(["none", "none", "softcap", "alibi", "fill", "floor", "mix", "random"])
        )
        if transform == "random":  # a random value over the scores' space (reads of Q, K, V re-indexed)
            ctx = _Ctx(avoid)
            ctx.tensors = {"SC": ("b", "h", "m", "p"), "Q": ("b", "h", "p", "e"), "K": ("b", "g", "m", "e")}
            v, _ = draw(_value(ctx, ("b", "h", "m", "p"), 2))
            decls.update(ctx.decls.values())
            lines.append(f"ST[b, h, m, p] = SC[b, h, m, p] + {v}")
            score = "ST[b, h, m, p]"
            extra.append("ST")
        elif transform != "none":
            t = {
                "softcap": "2 * tanh(SC[b, h, m, p] / 2)",
                "alibi": "SC[b, h, m, p] + 0.25 * (m - p) * (h + 1)",
                "fill": "SC[b, h, m, p] ?? -1e30",
                "floor": "max(SC[b, h, m, p], -2)",
                "mix": "SC[b, h, m, p] + (SC[b, h, m + 1, p] ?? 0) * 0.5",
            }[transform]
            lines.append(f"ST[b, h, m, p] = {t}")
            score = "ST[b, h, m, p]"
            extra.append("ST")
        extra.append("SC")
    if style == "softmax":
        lines += [
            f"GM[b, h, p] = {score} :: max(m)",
            f"EX[b, h, m, p] = exp({score} - GM[b, h, p])",
            "DEN[b, h, p] = EX[b, h, m, p]",
        ]
        if draw(st.booleans()):
            lines.append(f"O[b, h, p, f] = EX[b, h, m, p] * {vread} / DEN[b, h, p]")
        else:
            lines += [
                f"U[b, h, p, f] = EX[b, h, m, p] * {vread}",
                "O[b, h, p, f] = U[b, h, p, f] / DEN[b, h, p]",
            ]
        extra += ["GM", "DEN"]
        if draw(st.booleans()):
            lines.append("LSE[b, h, p] = GM[b, h, p] + log(DEN[b, h, p])")
            extra.append("LSE")
        outputs.append("O")
    elif style == "twopass":
        lines += [
            f"GM[b, h, p] = {score} :: max(m)",
            f"U[b, h, p, f] = exp({score} - GM[b, h, p]) * {vread}",
            f"DEN[b, h, p] = exp({score} - GM[b, h, p])",
            "O[b, h, p, f] = U[b, h, p, f] / DEN[b, h, p]"
            if draw(st.booleans())
            else "O[b, h, p, f] = U[b, h, p, f] / (DEN[b, h, p] ?? 1)",
        ]
        extra += ["GM", "DEN", "U"]
        outputs.append("O")
    elif style == "sigmoid":
        lines.append(f"O[b, h, p, f] = sigmoid({score} - 1) * {vread}")
        outputs.append("O")
    else:
        outputs += draw(
            _head_online(decls, lines, extra, q, kv, pos, scale, filt, tiled, score if not tiled else None)
        )
    if draw(st.integers(0, 3)) == 0:  # a statement after the normaliser
        post = draw(
            st.sampled_from(
                [
                    "Z[b, p, f] = O[b, h, p, f]",
                    "Z[b, h, p] = O[b, h, p, f] :: max(f)",
                    "Z[b, h, p, f] = O[b, h, p, f] * 2 + O[b, h, p - 1, f] ?? 0",
                    "Z[b, h, p, f] = O[b, h // R, p, f]",
                ]
            )
        )
        lines.append(post)
        outputs.append("Z")
    if extra and draw(st.booleans()):
        outputs.insert(draw(st.integers(0, len(outputs))), draw(st.sampled_from(extra)))
    outputs = list(dict.fromkeys(outputs))
    text = "\n".join([HEAD_HEADER, *sorted(decls), f"output {', '.join(outputs)}", *lines]) + "\n"
    return _program(text, avoid, ("heads", style))


@st.composite
def _head_online(draw, decls, lines, extra, q, kv, pos, scale, filt, tiled, score) -> list[str]:
    """The hand-written online softmax: statements appended to ``lines``; returns the outputs."""
    if tiled:
        decls.add(f"param M0 = {draw(st.integers(1, 4))}")
        decls.add("rank M = M1 * M0")
        r, R = "m1", "M1"
        key = "m1 * M0 + m0"
        kpos = pos.format(m=key)
        where = filt.format(m=f"({key})")
        direct = draw(st.booleans())  # K and V read in the tile, or through the tiles BK, BV
        kt = f"K[b, {kv}, {kpos}, e]" if direct else "BK[b, h, m1, m0, e]"
        vt = f"V[b, {kv}, {kpos}, f]" if direct else "BV[b, h, m1, m0, f]"
        if not direct:
            lines += [
                f"BK[b, h, m1, m0, e] = K[b, {kv}, {kpos}, e]",
                f"BV[b, h, m1, m0, f] = V[b, {kv}, {kpos}, f]",
            ]
        lines.append(
            f"BQK[b, h, m1, m0, p] = {q}[b, h, p, e] * {kt}{scale}" + (f"  where {where}" if where else "")
        )
        tile = "BQK[b, h, m1, m0, p]"
        lines.append(f"LM[b, h, m1, p] = {tile} :: max(m0)")
        lm = "LM[b, h, m1, p]"
    else:
        r, R = "m", "M"
        tile = score.replace("m, p]", "m, p]")
        vt = f"V[b, {kv}, {pos.format(m='m')}, f]"
        lm = tile
    k = draw(st.integers(2, 3))  # where the iterative index goes in RM and RD
    at = lambda s: _bhp(state=s, pos=k)  # noqa: E731
    nv = draw(st.sampled_from(["f", "nvf"]))  # RNV[b, h, m1, p, f] or RNV[b, h, f, m1, p]

    def atn(s):
        return f"b, h, {s}, p, f" if nv == "f" else f"b, h, f, {s}, p"

    start = draw(st.sampled_from(["-inf", "-inf", "-1e30", "absent", "0"]))
    absent = start == "absent"
    cond = "  where p < 0" if absent else ""
    lines += [
        f"RM[{at('0')}] = " + ("-inf" if absent else start) + cond,
        f"RD[{at('0')}] = 0" + cond,
        f"RNV[{atn('0')}] = 0" + cond,
    ]
    rm0, rm1 = f"RM[{at(r)}]", f"RM[{at(r + ' + 1')}]"
    rd0, rd1 = f"RD[{at(r)}]", f"RD[{at(r + ' + 1')}]"
    rn0, rn1 = f"RNV[{atn(r)}]", f"RNV[{atn(r + ' + 1')}]"
    if absent:
        upd = f"max({rm0} ?? {lm}, {lm} ?? {rm0})"
    else:
        upd = draw(
            st.sampled_from(
                [
                    f"max({rm0}, {lm})",
                    f"max({rm0}, {lm}) ?? {rm0}",
                    f"max({rm0}, {lm} ?? -inf)",
                    f"max({rm0}, {lm} ?? -1e30)",
                ]
            )
        )
    lines.append(f"{rm1} = {upd}")
    if tiled:
        lines += [
            f"SLN[b, h, m1, m0, p] = exp({tile} - {rm1})",
            "SLD[b, h, m1, p] = SLN[b, h, m1, m0, p]",
            f"SLNV[b, h, m1, p, f] = SLN[b, h, m1, m0, p] * {vt}",
        ]
        sld, slnv = "SLD[b, h, m1, p]", "SLNV[b, h, m1, p, f]"
    else:
        lines += [f"SLN[b, h, m, p] = exp({tile} - {rm1})", f"SLNV[b, h, m, p, f] = SLN[b, h, m, p] * {vt}"]
        sld, slnv = "SLN[b, h, m, p]", "SLNV[b, h, m, p, f]"
    guard = draw(st.sampled_from(["", " ?? 1"])) if not absent else " ?? 1"
    lines.append(f"PRM[b, h, {r}, p] = exp({rm0} - {rm1}){guard}")
    prm = f"PRM[b, h, {r}, p]"
    form = draw(st.sampled_from(["dflt", "present", "plain", "spd"])) if not absent else "present"
    if form == "dflt":
        lines += [f"{rd1} = ({sld} ?? 0) + {rd0} * {prm}", f"{rn1} = ({slnv} ?? 0) + {rn0} * {prm}"]
    elif form == "plain":
        lines += [f"{rd1} = {sld} + {rd0} * {prm} ?? {rd0}", f"{rn1} = {slnv} + {rn0} * {prm} ?? {rn0}"]
    elif form == "spd":
        lines += [
            f"SPD[b, h, {r}, p] = {rd0} * {prm}",
            f"{rd1} = ({sld} ?? 0) + SPD[b, h, {r}, p]",
            f"SPNV[b, h, {r}, p, f] = {rn0} * {prm}",
            f"{rn1} = ({slnv} ?? 0) + SPNV[b, h, {r}, p, f]",
        ]
    else:
        lines += [
            f"{rd1} = {sld} + ({rd0} * {prm} ?? 0) ?? {rd0} * {prm}",
            f"{rn1} = {slnv} + ({rn0} * {prm} ?? 0) ?? {rn0} * {prm}",
        ]
    fin = lambda s: s.replace(f"{r} + 1", R)  # noqa: E731
    outs = []
    last = draw(st.sampled_from(["final", "final", "final", "prefix"]))
    if last == "final":
        lines.append(f"O[b, h, p, f] = {fin(rn1)} / {fin(rd1)}")
    else:  # every prefix's output (a history of the states)
        lines.append(f"O[b, h, {r}, p, f] = {rn1} / {rd1}")
    outs.append("O")
    more = draw(st.sampled_from(["", "", "lse", "max", "states", "den"]))
    if more == "lse":
        lines.append(f"LSE[b, h, p] = {fin(rm1)} + log({fin(rd1)})")
        outs.append("LSE")
    elif more == "max":
        lines.append(f"FM[b, h, p] = {fin(rm1)} ?? 0")
        outs.append("FM")
    elif more == "states":
        outs.append(draw(st.sampled_from(["RM", "RD", "RNV"])))
    elif more == "den":
        lines.append(f"DN[b, h, p] = {fin(rd1)}")
        outs.append("DN")
    if draw(st.booleans()):
        outs.reverse()
    return outs


@st.composite
def head_data(draw, prog: Program, max_size: int = 6, kinds=KINDS) -> dict:
    """Sizes and float64 inputs of a head program: B 1-2, H 1-4, G 1-3, P and M 0-max_size, E and F 1-3."""
    B = draw(st.integers(1, 2))
    H = draw(st.integers(1, 4))
    G = draw(st.integers(1, 3))

    def seq():
        return 0 if draw(st.integers(0, 15)) == 0 else draw(st.integers(1, max_size))

    P, M = seq(), seq()
    E, F = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = {"Q": (B, H, P, E), "K": (B, G, M, E), "V": (B, G, M, F)}
    x = _values(rng, shapes, kind, large=8, mixed=3)
    ints = draw(st.sampled_from(["sorted", "sorted", "wide"]))
    x["I"] = (
        np.sort(rng.integers(0, 3, size=(M,))) if ints == "sorted" else rng.integers(-1, 4, size=(M,))
    ).astype(np.int64)
    return {"sizes": {"B": B, "H": H, "G": G, "P": P, "M": M, "E": E, "F": F}, "kind": kind, "inputs": x}


def compare_gradients(
    prog: Program, x: dict, configs=None, tol: float = 1e-8, float32_configs=None, tol32: float = 1e-3
) -> list[tuple[str, str]]:
    """The gradients of ``sum(w * out)`` (fixed weights) in every configuration against those of
    ``passes="as-written"`` in float64; ``float32_configs`` compute in float32 (the CPU's own exp and its
    backward) within ``tol32``."""
    import torch

    configs = GRAD_COMPARE if configs is None else configs

    def grads(opts, dtype=torch.float64):
        xg = _torch_inputs(x, dtype, requires_grad=True)
        floats = [n for n, v in xg.items() if v.dtype.is_floating_point]
        outs = _tuple(einattn.compile(prog, backend="torch", **opts)(**xg))
        gen = torch.Generator().manual_seed(0)
        loss = sum(
            (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum() for o in outs
        )
        if not loss.requires_grad:
            return {n: torch.zeros_like(xg[n]) for n in floats}
        gs = torch.autograd.grad(loss, [xg[n] for n in floats], allow_unused=True)
        return {n: torch.zeros_like(xg[n]) if g is None else g for n, g in zip(floats, gs)}

    failures = []
    try:
        want = grads({"passes": "as-written"})
    except Exception as e:
        return [("grad-as-written", f"raised {type(e).__name__}: {e}")]
    runs = [(n, o, torch.float64, tol) for n, o in configs.items()]
    runs += [(f"f32-{n}", o, torch.float32, tol32) for n, o in (float32_configs or {}).items()]
    for name, opts, dtype, t in runs:
        try:
            got = grads(opts, dtype)
        except Exception as e:
            failures.append((f"grad-{name}", f"raised {type(e).__name__}: {e}"))
            continue
        for n, w in want.items():
            try:
                err = compare(got[n], w.detach().numpy(), t)
            except AssertionError as e:
                failures.append((f"grad-{name}", f"d/d{n}: {e}"))
                continue
            if not err <= t:
                failures.append((f"grad-{name}", f"d/d{n}: error {err:.3g} > {t:g}"))
    return failures
