"""Which tiles of the streamed rank a fused kernel visits, and which it can run without masks.

Interval arithmetic on affine filters (:func:`tile_range`): over one program's rows ``row_lo..row_hi`` and the
lanes ``0..M0-1`` of a tile, the tiles ``it`` where a filter *can* hold (the loop bounds: causal and sliding
window skip the rest) and where it holds at *every* point (whole tiles: no mask). :func:`empty_step_identity`
decides whether skipping is exact: a step over an entirely absent tile must leave the running state unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from einattn import syntax as S
from einattn.absence import _abs_bound
from einattn.errors import InternalError

from .triton_expr import int_literal

if TYPE_CHECKING:
    from .triton_fused import FusedPlan


def affine(
    e: S.Expr, params: dict, runtime: Callable[[S.Read], str | None] | None = None
) -> tuple[dict[str, int], list[tuple[int, str]]] | None:
    """``e`` as integer coefficients of coordinates plus constant terms ``(coefficient, code)``, or None.

    ``runtime`` gives the kernel code of a read that is constant for the program (a ``: int`` input read at
    the program's parallel coordinates, ``klen[b]``), or None: such a read is a constant term too."""
    if isinstance(e, S.Read) and runtime is not None:
        code = runtime(e)
        return None if code is None else ({}, [(1, code)])
    if isinstance(e, S.Const):
        return ({}, [(1, str(e.value))]) if isinstance(e.value, int) else None
    if isinstance(e, S.Param):
        v = params[e.name]
        return ({}, [(1, str(v))]) if isinstance(v, int) else None
    if isinstance(e, S.Size):
        return {}, [(1, f"size_{e.rank}")]
    if isinstance(e, S.Coord):
        return {e.rank: 1}, []
    if isinstance(e, S.Unary):
        x = affine(e.x, params, runtime)
        return None if x is None else _scale(x, -1)
    if isinstance(e, S.Binary) and e.op in ("+", "-"):
        a, b = affine(e.a, params, runtime), affine(e.b, params, runtime)
        if a is None or b is None:
            return None
        if e.op == "-":
            b = _scale(b, -1)
        cs = dict(a[0])
        for k, v in b[0].items():
            cs[k] = cs.get(k, 0) + v
        return {k: v for k, v in cs.items() if v}, a[1] + b[1]
    if isinstance(e, S.Binary) and e.op == "*":
        a, b = affine(e.a, params, runtime), affine(e.b, params, runtime)
        if a is None or b is None:
            return None
        for x, y in ((a, b), (b, a)):
            if not x[0] and len(x[1]) == 1 and x[1][0][1].lstrip("-").isdigit():
                return _scale(y, x[1][0][0] * int(x[1][0][1]))
        return None
    return None


def _scale(x, c: int):
    return {k: v * c for k, v in x[0].items() if v * c}, [(k * c, code) for k, code in x[1] if k * c]


def _sum(terms: list[tuple[int, str]]) -> str:
    """Kernel code of a sum of terms; constants as large as ``triton_expr.WIDE`` are int64 (no wrap)."""
    out = ""
    for c, code in terms:
        if code == "0":
            continue
        if code.lstrip("-").isdigit():
            c, code = c * int(code), "1"
        mag = abs(c)
        piece = int_literal(mag) if code == "1" else (code if mag == 1 else f"{int_literal(mag)} * {code}")
        if not out:
            out = piece if c > 0 else f"-{piece}"
        else:
            out += f" + {piece}" if c > 0 else f" - {piece}"
    return out or "0"


UNKNOWN = "unknown"  # full_range: nothing proved


def tile_range(
    plan: FusedPlan,
    f: S.Expr | None,
    neg: bool = False,
    forall: bool = False,
    runtime: Callable[[S.Read], str | None] | None = None,
) -> tuple[str | None, str | None] | str:
    """(lo, hi) code bounding the tiles of ``it`` where filter ``f`` holds for this program's rows.

    ``forall=False``: where it *can* hold at some point of the tile (None: no bound). ``forall=True``: where
    it holds at *every* point of the tile (rows ``row_lo..row_hi``, lanes ``0..M0-1``), or :data:`UNKNOWN`.
    ``runtime``: as for :func:`affine` (per-batch sequence lengths bound the loop: ``m < klen[b]``).
    """
    if f is None:
        return None, None
    if isinstance(f, S.Not):
        return tile_range(plan, f.x, not neg, forall, runtime)
    if isinstance(f, S.Logic):
        a, b = tile_range(plan, f.a, neg, forall, runtime), tile_range(plan, f.b, neg, forall, runtime)
        conj = (f.op == "and") != neg
        if forall and (not conj or UNKNOWN in (a, b)):
            return UNKNOWN
        if conj:
            return _pick(a[0], b[0], "tl.maximum"), _pick(a[1], b[1], "tl.minimum")
        lo = None if a[0] is None or b[0] is None else f"tl.minimum({a[0]}, {b[0]})"
        hi = None if a[1] is None or b[1] is None else f"tl.maximum({a[1]}, {b[1]})"
        return lo, hi
    unbounded = UNKNOWN if forall else (None, None)
    if not isinstance(f, S.Compare):
        return unbounded
    # a window written with abs: `abs(p - m) < W` is `-W < p - m and p - m < W`; `abs(x) >= c` its negation
    window, flip = _abs_bound(f), False
    if window is None and f.op in (">", ">="):
        window, flip = _abs_bound(S.Compare("<=" if f.op == ">" else "<", f.a, f.b)), True
    if window is not None:
        return tile_range(plan, window, neg != flip, forall, runtime)
    op = f.op
    if neg:
        op = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[op]
    d = affine(S.Binary("-", f.a, f.b), plan.prog.param_values, runtime)
    if d is None or (forall and op in ("==", "!=")):
        return unbounded
    forms = {"<": [(d, 1)], "<=": [(d, 0)], ">": [(_scale(d, -1), 1)], ">=": [(_scale(d, -1), 0)]}
    forms["=="] = [(d, 0), (_scale(d, -1), 0)]
    lo = hi = None
    for (cs, consts), plus in forms.get(op, []):
        c = cs.get(plan.it, 0)
        outside = any(k not in plan.par and k not in (plan.row, plan.col, plan.it) for k in cs)
        # c * it + rest <= 0, with rest = the other terms; over the tile, rest ranges over [rest_lo, rest_hi]:
        # some point passes iff c * it + rest_lo <= 0, every point iff c * it + rest_hi <= 0
        terms = [] if outside else _rest(plan, cs, list(consts) + ([(plus, "1")] if plus else []), forall)
        rest = _sum(terms)
        if c == 0 and not outside and plan.col not in cs:
            # a filter on the rows alone (`p < qlen[b]`): for this program's rows, every tile or none
            hi = _pick(hi, f"tl.where({rest} <= 0, size_{plan.it}, 0)", "tl.minimum")
            continue
        if c == 0 or outside:
            if forall:
                return UNKNOWN
            continue
        if c > 0:  # it <= floor(-rest / c)
            bound = f"_floordiv({_sum(_negate(terms))}, {c}) + 1" if c != 1 else f"{_sum(_negate(terms))} + 1"
            hi = _pick(hi, bound, "tl.minimum")
        else:  # it >= ceil(rest / -c)
            bound = f"-_floordiv({_sum(_negate(terms))}, {-c})" if c != -1 else rest
            lo = _pick(lo, bound, "tl.maximum")
    return lo, hi


def _rest(plan: FusedPlan, cs: dict[str, int], terms: list, forall: bool) -> list:
    """The terms other than the tile number's at their least (``forall``: greatest) over the program's rows
    ``row_lo..row_hi`` and a tile's lanes."""
    terms = list(terms)
    for k, v in cs.items():
        if k == plan.it:
            continue
        if k == plan.row:
            terms.append((v, "row_lo" if (v > 0) != forall else "row_hi"))
        elif k == plan.col:
            if (v < 0) != forall:
                terms.append((v, f"(size_{plan.col} - 1)"))
        else:
            terms.append((v, f"i_{k}"))
    return terms


def _negate(terms):
    return [(-c, code) for c, code in terms]


def _pick(a, b, fn):
    if a is None:
        return b
    if b is None:
        return a
    return f"{fn}({a}, {b})"


# ---- does an empty tile leave the running state unchanged? ----------------------------------------------


def empty_step_identity(plan: FusedPlan, skipped: set[str]) -> tuple[bool, bool]:
    """(from a finite state, from the initial state): whether a step in which the statements ``skipped``
    are entirely absent leaves every running state exactly as it was.

    Checked by evaluating the step on sample values with the language's semantics (NumPy, float64): the
    first is what skipping tiles *after* the last useful one needs (the state is then finite), the second
    what skipping tiles *before* the first useful one needs (the state is still the initial one).
    """
    from .numpy_backend import BINARY, FUNCTIONS

    prog = plan.prog
    params = prog.param_values

    def run(seed: int, initial: bool) -> bool:
        rng = random.Random(seed)
        sizes: dict[str, int] = {}
        cur: dict[str, tuple[float, bool]] = {}
        nxt: dict[str, tuple[float, bool]] = {}
        vals: dict[str, tuple[float, bool]] = {}
        randoms: dict[object, float] = {}

        def rnd(key) -> float:
            if key not in randoms:
                randoms[key] = rng.uniform(-2.0, 2.0)
            return randoms[key]

        def ev(e: S.Expr) -> tuple[float, bool]:
            if isinstance(e, S.Const):
                return float(e.value), True
            if isinstance(e, S.Param):
                return float(params[e.name]), True
            if isinstance(e, S.Size):
                return float(sizes.setdefault(e.rank, rng.randint(1, 9))), True
            if isinstance(e, S.Coord):
                return float(rng.randint(0, 3)), True
            if isinstance(e, S.Read):
                t = prog.tensor(e.tensor)
                if t.iterative is not None:
                    ix = e.indices[t.iterative]
                    if ix == S.Coord(plan.it):
                        return cur[e.tensor]
                    return nxt[e.tensor]
                if e.tensor in vals:
                    return vals[e.tensor]
                return rnd(e.tensor), True
            if isinstance(e, S.Call):
                args = [ev(a) for a in e.args]
                return float(FUNCTIONS[e.fn](*(np.float64(v) for v, _ in args))), all(p for _, p in args)
            if isinstance(e, S.Unary):
                v, p = ev(e.x)
                return -v, p
            if isinstance(e, S.Binary):
                (a, pa), (b, pb) = ev(e.a), ev(e.b)
                return float(BINARY[e.op](np.float64(a), np.float64(b))), pa and pb
            if isinstance(e, S.Default):
                a, pa = ev(e.a)
                return (a, True) if pa else ev(e.b)
            raise InternalError(f"cannot probe {type(e).__name__}")

        with np.errstate(all="ignore"):
            for name in plan.states:
                if initial:
                    init = next(x for x in plan.inits if x.tensor == name)
                    v, present = ev(init.expr)
                    cur[name] = (v, present and init.filter is None)
                else:
                    cur[name] = (rng.uniform(-3.0, 3.0), True)
            for e in plan.body:
                if e.tensor in skipped:
                    res = (float("nan"), False)
                else:
                    if e.filter is not None:
                        return False  # a filter that does not bound the tiles: nothing can be skipped
                    res = ev(e.expr)
                    if e.reduce and res[1] and res[0] != 0 and any(op == "+" for _, op in e.reduce):
                        # a sum over the points of its ranks: one copy per point (M0 * R), not R
                        res = (res[0] * rng.randint(2, 9), True)
                if e.kind == "step":
                    nxt[e.tensor] = res
                else:
                    vals[e.tensor] = res
        for name in plan.states:
            (a, pa), (b, pb) = cur[name], nxt[name]
            if pa != pb or (pa and a != b):
                return False
        return True

    finite = all(run(seed, False) for seed in range(3))
    initial = all(run(seed, True) for seed in range(2))
    return finite, initial
