"""A hypothesis strategy for random, valid small .ein programs that make and consume absent points, and the
harness that runs one program on every backend configuration against the NumPy reference.

Programs are over the ranks ``p`` (rows), ``m`` (reduced: keys) and ``f`` (features) of the inputs
``A[p, m], B[m, f], D[p, f]`` and the integer tensor ``I[p]`` (gathers and filters; its values are drawn in
and out of range). A program is 3-8 intermediate statements drawn from a menu of forms:

* filters: affine (``m <= p - 1``), ``%``, ``//``, ``abs``, reads of ``I`` (out of range: absent), combined
  with ``and``, ``or``, ``not``;
* reads shifted past the end (``D[p + 2, f]``), through ``//``, ``%``, ``abs``, ``min``/``clamp``, at a
  constant (``A[p, 0]``), with another rank (``D[m, f]``), and gathers through ``I``;
* sums, max and min reductions over masked ranks (``::`` with several ranks too);
* functions (exp, exp2, log and sqrt of positive values, tanh, sigmoid, relu, square, abs, max, min);
* ``??`` with constants and with other tensors; products, sums, differences, guarded divisions; a statement
  reading another one twice; 3-pass softmax blocks (which ``passes="auto"`` rewrites to a 1-pass loop);
* optionally a recurrence over an iterative rank (``m`` itself, or the tiles ``m1`` of a partition
  ``rank M = M1 * M0``): a one-state update with ``??`` (as in docs/language.md) or the 1-pass online softmax,
  its states starting present or absent;
* 1-2 outputs, some of them intermediates that later statements read again.

``programs()`` draws a :class:`FuzzProgram` (text, IR, notes); ``data_for`` draws sizes (0-6) and data;
``run_case`` compares configurations with the NumPy reference and returns the failures.
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
KNOWN_BUGS: frozenset[str] = frozenset()  # (forms a known bug would fail: none left)
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

    def fresh(self, prefix: str = "T") -> str:
        self.n += 1
        return f"{prefix}{self.n}"


@st.composite
def _index(draw, rank: str, space: tuple[str, ...], avoid=frozenset()) -> tuple[str, set[str]]:
    """An index expression for a dimension whose own rank is ``rank``, over the statement's ``space``."""
    own = rank if rank in space else None
    base = own if own is not None and draw(st.integers(0, 5)) < 5 else draw(st.sampled_from(space))
    kind = draw(
        st.sampled_from(
            ["plain"] * 6
            + ["shift", "shift", "back", "div", "mod", "abs", "min", "clamp", "gather", "gather", "const"]
        )
    )
    if kind == "plain":
        return base, {base}
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
        text, u = draw(_index(r, space, ctx.avoid))
        parts.append(text)
        used |= u
    return f"{name}[{', '.join(parts)}]", used


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
CONSTS = ["0", "1", "2", "0.5", "-1", "3"]


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
        c = draw(st.sampled_from([*CONSTS, "coord"]))
        if c == "coord":
            a = draw(st.sampled_from(space))
            b = draw(st.sampled_from(space))
            return (f"({a} - {b})", {a, b}) if a != b else (f"{a}", {a})
        return c, set()
    if kind == "unary":
        a, ra = draw(_value(ctx, space, depth - 1))
        return draw(st.sampled_from(UNARY)).format(f"({a})" if not a.endswith("]") else a), ra
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
    op = draw(
        st.sampled_from(
            [
                "+",
                "-",
                "*",
                "*",
                "max",
                "min",
                "??",
                "??c",
                "div",
                "div2",
                "divpos",
                "dflt_sum",
                "present_sum",
            ]
        )
    )
    used = ra | rb
    if op == "max" or op == "min":
        return f"{op}({a}, {b})", used
    if op == "??":
        return f"({a} ?? {b})", used
    if op == "??c":
        return f"({a} ?? {draw(st.sampled_from([*CONSTS, '-inf']))})", ra
    if op == "div":
        return f"({a} / (1 + square({b})))", used
    if op == "div2":
        return f"({a} / (2 + tanh({b})))", used
    if op == "divpos":
        return f"({a} / (0.5 + exp({b})))", used
    if op == "dflt_sum":
        return f"(({a} ?? 0) + ({b} ?? 0))", used
    if op == "present_sum":  # the sum of the present terms (the rewrite's running-state update)
        if "gather_present_sum" in ctx.avoid and not _plain_read(
            a
        ):  # (known bug: a gather is not 0 where absent)
            a = f"({a} * 1)"
        return f"({a} + ({b} ?? 0) ?? {b})", used
    return f"({a} {op} {b})", used


@st.composite
def _atom(draw, space: tuple[str, ...], gathers: bool = True) -> tuple[str, set[str]]:
    a = draw(st.sampled_from(space))
    b = draw(st.sampled_from(space))
    kinds = ["affine", "affine", "affine", "mod", "div", "abs", "const"] + (["gather"] if gathers else [])
    kind = draw(st.sampled_from(kinds))
    cmp = draw(st.sampled_from(["<=", "<", ">=", ">", "!=", "=="]))
    c = draw(st.integers(-2, 2))
    off = f" + {c}" if c > 0 else (f" - {-c}" if c < 0 else "")
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
def _filter(draw, space: tuple[str, ...], gathers: bool = True) -> tuple[str, set[str]]:
    """A filter; without ``gathers`` it reads no ``I`` (a read out of range makes the point absent whatever
    the rest of the predicate says)."""
    a, ra = draw(_atom(space, gathers))
    form = draw(st.sampled_from(["one", "one", "one", "and", "or", "not"]))
    if form == "one":
        return a, ra
    if form == "not":
        return f"not ({a})", ra
    b, rb = draw(_atom(space, gathers))
    return f"({a}) {form} ({b})", ra | rb


LHS_SHAPES = [("p", "f"), ("p", "f"), ("p", "m"), ("p", "m"), ("p",), ("p",), ("m", "p"), ("f",), ()]


def _lhs(name: str, ranks: tuple[str, ...]) -> str:
    return f"{name}[{', '.join(ranks)}]" if ranks else name


@st.composite
def _statement(draw, ctx: _Ctx) -> list[str]:
    """One intermediate statement (or a short block: the 3-pass softmax) from the menu."""
    form = draw(st.sampled_from(["general"] * 8 + ["reduce", "reduce", "softmax", "contract"]))
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
            w, _ = draw(_filter(("p", "m", "f")))
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
        filt, fused = draw(_filter(space))
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
    """(declarations, statements, candidate outputs) of a recurrence over m or over the tiles m1 of m."""
    tiled = draw(st.booleans())
    decls: list[str] = []
    lines: list[str] = []
    # the local tensor L[p, m]: a fresh masked value over (p, m)
    expr, _ = draw(_value(ctx, ("p", "m"), draw(st.integers(0, 1))))
    filt = ""
    if draw(st.booleans()):
        w, _ = draw(_filter(("p", "m")))
        filt = f"  where {w}"
    loc = ctx.fresh("L")
    lines.append(f"{loc}[p, m] = {expr}{filt}")
    ctx.tensors[loc] = ("p", "m")
    if tiled:
        m0 = draw(st.integers(1, 4))
        decls += [f"param M0 = {m0}", "rank M = M1 * M0"]
        r, R = "m1", "M1"
        bl = ctx.fresh("BL")
        lines.append(f"{bl}[p, m1, m0] = {loc}[p, m1 * M0 + m0]")
    else:
        r, R = "m", "M"
    outs = []
    style = draw(st.sampled_from(["one", "one", "softmax"]))
    if style == "one":
        kind = draw(st.sampled_from(["sum", "max", "min"]))
        if tiled:
            x = ctx.fresh("LX")
            red = {"sum": "", "max": " :: max(m0)", "min": " :: min(m0)"}[
                draw(st.sampled_from(["sum", "max", "min"]))
            ]
            lines.append(f"{x}[p, m1] = {bl}[p, m1, m0]{red}")
        else:
            x = loc
        st_name = ctx.fresh("R")
        init = draw(st.sampled_from(STATE_INITS[kind]))
        upd = _update(
            kind,
            draw(st.integers(0, 4)),
            f"{st_name}[{r}, p]",
            f"{x}[p, {r}]",
            draw(st.sampled_from(["0.5", "1"])),
        )
        lines += [f"{st_name}[0, p] = {init}", f"{st_name}[{r} + 1, p] = {upd}"]
        read = draw(st.sampled_from(["final", "final", "history", "before"]))
        y = ctx.fresh("Y")
        if read == "final":
            lines.append(f"{y}[p] = {st_name}[{R}, p]")
            ctx.tensors[y] = ("p",)
        elif read == "history":
            lines.append(f"{y}[p, {r}] = {st_name}[{r} + 1, p]")
            if r == "m":  # (a history over the tiles m1 is not read again: m1 is no rank of the pool)
                ctx.tensors[y] = ("p", "m")
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
        tile, vread, red = f"{loc}[p, m]", "B[m, f]", None
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
        lines.append(f"{sln}[p, m] = exp({tile} - {nx})")
        lines.append(f"{slnv}[p, m, f] = {sln}[p, m] * {vread}")
        sldr, slnvr = f"{sln}[p, m]", f"{slnv}[p, m, f]"
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
    rec_at = -1
    if recurrence is None:
        recurrence = draw(st.integers(0, 2)) == 0
    if recurrence:
        rec_at = draw(st.integers(0, n - 1))
    notes = []
    for k in range(n):
        if k == rec_at:
            d, ls, outs = draw(_recurrence(ctx))
            decls += d
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
    text = "\n".join([HEADER_INPUTS, *decls, f"output {', '.join(outputs)}", *lines]) + "\n"
    try:
        prog = parse_quietly(text)
    except einattn.EinError:
        assume(False)
        raise
    return FuzzProgram(text, prog, tuple(notes))


# ---- sizes and data ------------------------------------------------------------------------------------

KINDS = ("normal", "normal", "ties", "large", "mixed")


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
    x: dict = {}
    for name, shape in shapes.items():
        if kind == "normal":
            v = rng.standard_normal(shape)
        elif kind == "ties":
            v = rng.integers(-2, 3, size=shape).astype(float)
        elif kind == "large":
            v = rng.standard_normal(shape) * 30
        else:
            v = np.where(
                rng.random(shape) < 0.5, rng.integers(-1, 2, size=shape), rng.standard_normal(shape) * 4
            )
        x[name] = np.asarray(v, dtype=np.float64)
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


def _check(name, prog, got, want, tol, failures):
    got = _tuple(got)
    if len(got) != len(want):
        failures.append((name, f"{len(got)} outputs, expected {len(want)}"))
        return
    for out, g, w in zip(prog.outputs, got, want):
        try:
            err = compare(g, w, tol)
        except AssertionError as e:
            failures.append((name, f"`{out}`: {e}"))
            continue
        if not err <= tol:
            failures.append((name, f"`{out}`: error {err:.3g} > {tol:g}"))


def run_case(
    prog: Program,
    x: dict,
    configs=None,
    numpy_configs=None,
    grad: bool = False,
    grad_mode_forward: bool = True,
    triton: bool = False,
) -> list[tuple[str, str]]:
    """Every requested configuration against the float64 NumPy reference: a list of (config, message)."""
    import torch

    want = reference(prog, x)
    failures: list[tuple[str, str]] = []
    configs = TORCH_CONFIGS if configs is None else configs
    numpy_configs = NUMPY_CONFIGS if numpy_configs is None else numpy_configs
    xt = _torch_inputs(x, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, opts in numpy_configs.items():
            try:
                with np.errstate(all="ignore"):
                    got = einattn.compile(prog, backend="numpy", **opts)(**x)
            except Exception as e:
                failures.append((name, f"raised {type(e).__name__}: {e}"))
                continue
            _check(name, prog, got, want, 1e-10, failures)
        for name, opts in configs.items():
            try:
                got = einattn.compile(prog, backend="torch", **opts)(**xt)
            except Exception as e:
                failures.append((name, f"raised {type(e).__name__}: {e}"))
                continue
            _check(name, prog, got, want, 1e-10, failures)
        if grad_mode_forward:  # the forward pass with a gradient recorded takes other paths (no in-place)
            xg = _torch_inputs(x, torch.float64, requires_grad=True)
            for name, opts in GRAD_CONFIGS.items():
                try:
                    got = einattn.compile(prog, backend="torch", **opts)(**xg)
                    got = tuple(g.detach() for g in _tuple(got))
                except Exception as e:
                    failures.append((name, f"raised {type(e).__name__}: {e}"))
                    continue
                _check(name, prog, got, want, 1e-10, failures)
        if grad and all_finite(prog, x):
            msg = gradcheck(prog, x)
            if msg:
                failures.append(("torch-gradcheck", msg))
        if triton:
            xs = _torch_inputs(x, torch.float32)
            if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
                xs = {n: v.cuda() for n, v in xs.items()}
            for name, opts in (("triton-auto", {"tile": 2}), ("triton-as-written", {"passes": "as-written"})):
                try:
                    got = einattn.compile(prog, backend="triton", **opts)(**xs)
                except Exception as e:
                    failures.append((name, f"raised {type(e).__name__}: {e}"))
                    continue
                _check(name, prog, got, want, 1e-4, failures)
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
    floats = [n for n in ("A", "B", "D") if xg[n].numel()]
    if not floats:
        return None
    kernel = einattn.compile(prog, backend="torch", **opts)

    def fn(*args):
        kw = dict(xg)
        kw.update(zip(floats, args))
        return _tuple(kernel(**kw))

    try:
        torch.autograd.gradcheck(fn, [xg[n] for n in floats], atol=1e-6, rtol=1e-4)
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:400]}"
    return None
