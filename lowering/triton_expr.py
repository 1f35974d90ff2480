"""Rendering .ein expressions as Triton code over register tiles, with the language's absent points.

Both Triton paths (one kernel per Einsum, and the fused streaming kernel) render expressions through
:class:`Renderer`. A rendered value is a :class:`Value`: Triton code for the values, the tile *axes* it spans
(named after ranks, or ``o``/``r`` in the general path), a presence mask (``None``: present everywhere),
and, when known, the value it holds at absent points (``fill``: a masked load or a skipped sum holds 0, a
skipped max holds -inf), which lets ``x ?? 0`` cost nothing.

A tile has at most two axes. A value spanning fewer axes than the expression it takes part in is broadcast
by :meth:`Env.expand` (``x[:, None]``), in the fixed axis order of the kernel. Where a value comes from (a
pointer load, a register variable, a coordinate) is the kernel's business: the renderer asks its :class:`Env`.

The function table :data:`FUNCTIONS` has one entry per function of ``einattn.functions``; the helpers it names
(``_tanh``, ...) are defined in :data:`HELPERS`, which every generated module starts with.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from einattn import syntax as S
from einattn.errors import EinError, InternalError
from einattn.ir import Program


class Unsupported(Exception):
    """This path cannot express the program; the message says why (the fused path falls back on it)."""


# One entry per function of einattn.functions.FUNCTIONS: a format string over the rendered arguments.
FUNCTIONS: dict[str, str] = {
    "exp": "_exp({0})",
    "exp2": "tl.exp2({0})",
    "log": "tl.log({0})",
    "log2": "tl.log2({0})",
    "sqrt": "tl.sqrt({0})",
    "rsqrt": "tl.rsqrt({0})",
    "tanh": "_tanh({0})",
    "sigmoid": "_sigmoid({0})",
    "relu": "_max({0}, 0.0)",
    "elu": "_elu({0})",
    "softplus": "_softplus({0})",
    "abs": "tl.abs({0})",
    "square": "({0} * {0})",
    "step": "tl.where({0} > 0, 1.0, 0.0)",
    "max": "_max({0}, {1})",
    "min": "_min({0}, {1})",
    "clamp": "_min(_max({0}, {1}), {2})",
}

# Integer versions, for index expressions and filters (only functions with ``index_ok``).
INT_FUNCTIONS: dict[str, str] = {
    "abs": "tl.abs({0})",
    "max": "tl.maximum({0}, {1})",
    "min": "tl.minimum({0}, {1})",
    "clamp": "tl.minimum(tl.maximum({0}, {1}), {2})",
}

COMPARE = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}

# Triton code every generated module starts with. Integer `//` and `%` in Triton truncate towards zero (on
# the GPU and in the interpreter alike); the language has Python's floor semantics, which these restore
# whichever rounding the division uses. tanh, expm1 and log1p are written out because the interpreter has no
# libdevice; each is accurate to a few float32 ulps.
HELPERS = """\
@triton.jit
def _floordiv(a, b):
    q = a // b
    r = a - q * b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), q - 1, q)


@triton.jit
def _floormod(a, b):
    return a - _floordiv(a, b) * b


@triton.jit
def _max(a, b):  # NaN is a value (IEEE, as NumPy and torch): tl.maximum's default drops it
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _min(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _rmax(x, axis: tl.constexpr):  # tl.max drops NaN too
    return tl.reduce(x, axis, _max)


@triton.jit
def _rmin(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _min)


@triton.jit
def _exp(x):  # float32: ex2.approx.ftz, one instruction (tl.exp adds a denormal-range fix-up: 4 more)
    return tl.exp2(x * 1.4426950408889634)


@triton.jit
def _wide(x, WIDE: tl.constexpr):  # tile coordinates in an offset: int64 where a tensor spans 2**31 elements
    return x.to(tl.int64) if WIDE else x


@triton.jit
def _floor(x):  # a running max of the rewrite at least the lowest finite value (einattn.stabilizers.lowest)
    if x.dtype == tl.float64:
        return _max(x, -1.7976931348623157e308)
    return _max(x, -3.4028234663852886e38)


@triton.jit
def _tanh(x):
    a = tl.abs(x)
    big = 1.0 - 2.0 / (_exp(2.0 * a) + 1.0)
    x2 = x * x
    # Taylor to x^15 below 0.3: the first term left out is 7.6e-13 there (float64 keeps 1e-12)
    tail = x2 * (21844.0 / 6081075.0 + x2 * (-929569.0 / 638512875.0))
    tail = 62.0 / 2835.0 + x2 * (-1382.0 / 155925.0 + tail)
    small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * tail))))
    return tl.where(a < 0.3, small, tl.where(x < 0, -big, big))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + _exp(-x))


@triton.jit
def _elu(x):
    n = _min(x, 0.0)
    series = n * (1.0 + n * (0.5 + n * (1.0 / 6.0 + n * (1.0 / 24.0 + n * (1.0 / 120.0 + n / 720.0)))))
    return tl.where(x > 0, x, tl.where(n > -0.03, series, _exp(n) - 1.0))


@triton.jit
def _softplus(x):
    y = _exp(-tl.abs(x))
    u = 1.0 + y  # log1p(y) as log(u) * y / (u - 1): the rounding of 1 + y cancels (Goldberg), any dtype
    log1p = tl.where(u == 1.0, y, tl.log(u) * (y / tl.where(u == 1.0, 1.0, u - 1.0)))
    return tl.maximum(x, 0.0) + log1p
"""


def _literal_types(e: S.Expr) -> tuple[type, ...]:
    """The types of the number literals in ``e``, in order."""
    if isinstance(e, S.Const):
        return (type(e.value),)
    return tuple(t for c in e.children() for t in _literal_types(c))


def literal(v) -> str:
    """A Python/Triton literal for a number (inf spelled so that Triton's frontend accepts it)."""
    if isinstance(v, float):
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '-float("inf")'
        return repr(v)
    return str(int(v))


WIDE = 1 << 24
"""Integer constants from this magnitude on are int64 in kernels: Triton makes a literal that fits int32 an
int32, and ``m + W`` with ``param W = 2**31 - 1`` (a window disabled) would wrap. Coordinates and sizes are
int32 (up to 2**31 - 1 points a rank); sums of a few of them and smaller constants stay in range."""


def int_literal(v: int) -> str:
    """An integer constant for index and filter arithmetic: int64 where int32 arithmetic on it could wrap."""
    return f"tl.full((), {int(v)}, tl.int64)" if abs(int(v)) >= WIDE else str(int(v))


def float_literal(v) -> str:
    return literal(float(v))


@dataclass(frozen=True)
class Tile:
    """Triton code and the axes it spans (in the kernel's axis order); ``()`` is a scalar."""

    code: str
    axes: tuple[str, ...] = ()


@dataclass
class Value:
    """A rendered expression: values, presence (None: present), fill at absent points, and kind.

    ``kind`` is ``f`` (floating point, the compute dtype), ``i`` (integer) or ``x`` (a float in an integer
    context: a comparison with ``2.5``).
    """

    val: Tile
    mask: Tile | None = None
    fill: str | None = None
    kind: str = "f"
    raw: str | None = None  # a float load before conversion to the compute dtype (a tl.dot operand)
    lane_zero: bool = False  # 0 on the padding lanes of its axes (a masked load)
    above: bool = False  # never -inf (a running max floored: _floor); NaN only from NaN
    # the presence a statement folded into ``fill`` (its mask dropped: a -inf filled score tile), kept along
    # the values whose fill follows from it: their absent points, where they hold ``fill``
    folded: Tile | None = None


NEG_INF = '-float("inf")'


class Env:
    """What a kernel tells the renderer: axes, coordinates, sizes and how tensors are read."""

    axes: tuple[str, ...] = ()

    # mask code -> its two terms (``a & b``), or (the mask, None) for a name bound to a mask: what
    # :meth:`FusedEnv.any_over` factors. None where no env factors masks (nothing is recorded).
    conjunctions: dict[str, tuple[Tile, Tile | None]] | None = None

    def coord(self, rank: str) -> Tile:
        raise NotImplementedError

    def size(self, rank: str) -> str:
        raise NotImplementedError

    def read(self, r: Renderer, node: S.Read, ctx: str) -> Value:
        raise NotImplementedError

    def as_float(self, code: str, dtype: str) -> str:
        """An integer coordinate as a float value."""
        return f"{atom(code)}.to({dtype})"

    def emit(self, line: str) -> None:
        raise NotImplementedError

    def exp_raw_max(self, r: Renderer, e: S.Call) -> Value | None:
        """``exp`` of a difference whose subtracted value the kernel holds in other units (the fused
        kernel's running max: lowering.triton_raw_max), or None to render ``e`` as written."""
        return None

    def temp(self, stem: str) -> str:
        raise NotImplementedError

    # ---- broadcasting ---------------------------------------------------------------------------------
    def order(self, axes) -> tuple[str, ...]:
        s = set(axes)
        out = tuple(a for a in self.axes if a in s)
        if len(out) != len(s):
            raise InternalError(f"unknown axes {sorted(s - set(out))}")
        if len(out) > 2:
            raise Unsupported(f"a value spans three tile axes ({', '.join(out)}); tiles have at most two")
        return out

    def expand(self, t: Tile, axes: tuple[str, ...]) -> str:
        """``t`` broadcast to ``axes`` (a superset of its own axes, in kernel order)."""
        if t.axes == axes or not t.axes:
            return t.code
        if len(t.axes) == 1 and len(axes) == 2:
            code = atom(t.code)
            return f"{code}[:, None]" if axes[0] == t.axes[0] else f"{code}[None, :]"
        raise InternalError(f"cannot broadcast axes {t.axes} to {axes}")

    def full(self, t: Tile, axes: tuple[str, ...], dtype: str) -> str:
        """``t`` materialised on all of ``axes`` (a store or a loop-carried value needs the whole tile)."""
        if t.axes == axes:
            return t.code
        shape = ", ".join(self.extent(a) for a in axes)
        if not t.axes and (is_literal(t.code) or t.code in ("True", "False") or _CONSTANT.fullmatch(t.code)):
            return f"tl.full([{shape}], {t.code}, {dtype})"  # (a Python number cannot be broadcast)
        return f"tl.broadcast_to({self.expand(t, axes)}, [{shape}])"

    def extent(self, axis: str) -> str:
        raise NotImplementedError


# arithmetic on number literals only (`0.5 * 0.5`): a compile-time constant
_CONSTANT = re.compile(r'(?:[0-9eE.+\-*/() ]|float\("inf"\))+')


def in_dtype(code: str, dtype: str) -> str:
    """A scalar float's ``code`` to assign to a variable: a compile-time constant (number literals and
    arithmetic on them, ``(0.1 * 3.0)``) made a value of ``dtype``. Assigned as it is, a Python float is a
    float32 constant to Triton (its code generator and its interpreter alike), where written inline it takes
    the other operand's dtype: float64 kernels lost 1e-8 there."""
    if is_literal(code) or _CONSTANT.fullmatch(code):
        return f"tl.full((), {code}, {dtype})"
    return code


def atom(code: str) -> str:
    """``code`` made safe to index or call a method on: parenthesised unless it already is one unit."""
    if code.isidentifier():
        return code
    depth, start = 0, 0
    if code.startswith("("):
        start = 0
    else:
        k = 0
        while k < len(code) and (code[k].isalnum() or code[k] in "_."):
            k += 1
        if k == 0 or k >= len(code) or code[k] != "(":
            return f"({code})"
        start = k
    for k in range(start, len(code)):
        if code[k] == "(":
            depth += 1
        elif code[k] == ")":
            depth -= 1
            if depth == 0:
                return code if k == len(code) - 1 else f"({code})"
    return f"({code})"


def join(*ts: Tile | None) -> tuple[str, ...]:
    axes: set[str] = set()
    for t in ts:
        if t is not None:
            axes |= set(t.axes)
    return tuple(axes)


def is_constant(e: S.Expr) -> bool:
    return not any(isinstance(n, (S.Coord, S.Read)) for n in e.walk())


class Renderer:
    """Renders one statement's expressions into an :class:`Env`, sharing equal subexpressions."""

    def __init__(self, env: Env, prog: Program, compute: str = "CD"):
        self.env = env
        self.prog = prog
        self.params = prog.param_values
        self.compute = compute
        self.memo: dict[tuple, Value] = {}

    # ---- masks ----------------------------------------------------------------------------------------
    def mask_and(self, a: Tile | None, b: Tile | None) -> Tile | None:
        if a is None or a.code == "True":
            return b
        if b is None or a == b or b.code == "True":
            return a
        return self.logic("&", a, b)

    def mask_or(self, a: Tile, b: Tile) -> Tile:
        return self.logic("|", a, b)

    def logic(self, op: str, a: Tile, b: Tile) -> Tile:
        """``a & b`` or ``a | b`` of masks. A scalar with a tile is written ``tl.where``: the interpreter
        turns ``scalar & tile`` of booleans into integers, which tl.load then refuses as a mask."""
        axes = self.env.order(join(a, b))
        if bool(a.axes) != bool(b.axes):
            s, t = (a, b) if not a.axes else (b, a)
            if op == "&":
                return Tile(f"tl.where({s.code}, {t.code}, False)", axes)
            return Tile(f"tl.where({s.code}, True, {t.code})", axes)
        out = Tile(f"({self.env.expand(a, axes)} {op} {self.env.expand(b, axes)})", axes)
        if op == "&" and self.env.conjunctions is not None:
            self.env.conjunctions[out.code] = (a, b)
        return out

    def binary(self, op: str, a: Tile, b: Tile) -> Tile:
        axes = self.env.order(join(a, b))
        return Tile(f"({self.env.expand(a, axes)} {op} {self.env.expand(b, axes)})", axes)

    def where(self, cond: Tile, a: Tile, b: Tile) -> Tile:
        axes = self.env.order(join(cond, a, b))
        e = self.env.expand
        return Tile(f"tl.where({e(cond, axes)}, {e(a, axes)}, {e(b, axes)})", axes)

    def named(self, stem: str, t: Tile) -> Tile:
        """Bind ``t`` to a fresh variable (keeps long expressions readable and shared)."""
        if t.code.isidentifier() or is_literal(t.code):
            return t
        name = self.env.temp(stem)
        self.env.emit(f"{name} = {t.code}")
        return Tile(name, t.axes)

    def present(self, v: Value, identity: str) -> Tile:
        """The values with absent points replaced by ``identity`` (what a reduction must see)."""
        if v.mask is None or v.fill == identity:
            return v.val
        return self.where(v.mask, v.val, Tile(identity))

    # ---- values ---------------------------------------------------------------------------------------
    def value(self, e: S.Expr, ctx: str = "f") -> Value:
        """``ctx``: ``f`` a float value, ``i`` an integer index, ``c`` a comparison operand in a filter."""
        key = (e, ctx, _literal_types(e))  # (`2` and `2.0` are equal nodes: `p % 2` needs the integer)
        if key not in self.memo:
            self.memo[key] = self._value(e, ctx)
        return self.memo[key]

    def _value(self, e: S.Expr, ctx: str) -> Value:
        integer = ctx in ("i", "c")
        if isinstance(e, S.Const):
            if integer and isinstance(e.value, int):
                return Value(Tile(int_literal(e.value)), kind="i")
            if integer:
                return Value(Tile(float_literal(e.value)), kind="x")
            return Value(Tile(float_literal(e.value)))
        if isinstance(e, S.Param):
            v = self.params[e.name]
            if integer and isinstance(v, int):
                return Value(Tile(int_literal(v)), kind="i")
            if ctx == "i":
                raise EinError(f"param `{e.name}` = {v} is not an integer and cannot be used in an index")
            return Value(Tile(float_literal(v)), kind="x" if integer else "f")
        if isinstance(e, S.Size):
            code = self.env.size(e.rank)
            return Value(Tile(code), kind="i") if integer else Value(Tile(f"{code}.to({self.compute})"))
        if isinstance(e, S.Coord):
            t = self.env.coord(e.rank)
            if integer:
                return Value(t, kind="i")
            return Value(Tile(self.env.as_float(t.code, self.compute), t.axes))
        if isinstance(e, S.Read):
            return self.env.read(self, e, ctx)
        if isinstance(e, S.Call):
            if not integer and e.fn == "exp":
                held = self.env.exp_raw_max(self, e)  # a kernel holding the subtracted max in other units
                if held is not None:
                    return held
            if not integer and e.fn in ("max", "min") and len(e.args) == 2:
                folded = self._extremum_of_default(e)
                if folded is not None:
                    return folded
            args = [self.value(a, ctx) for a in e.args]
            table = INT_FUNCTIONS if integer else FUNCTIONS
            if e.fn not in table:
                raise InternalError(f"`{e.fn}` has no Triton {'integer ' if integer else ''}form")
            axes = self.env.order(join(*(a.val for a in args)))
            codes = [self.env.expand(a.val, axes) for a in args]
            if not integer and not axes and all(is_literal(c) or _CONSTANT.fullmatch(c) for c in codes):
                # a function of constants (`log(G)`, `rsqrt(E)` with `param E`): in the compute dtype (a
                # Python float is a float32 constant to Triton: float64 kernels lost 1e-8 there)
                codes = [f"tl.full((), {c}, {self.compute})" for c in codes]
            mask = None
            for a in args:
                mask = self.mask_and(mask, a.mask)
            kind = "x" if any(a.kind == "x" for a in args) else args[0].kind
            # exp(-inf) = 0: an argument -inf at absent points gives a value 0 there
            fill = "0.0" if e.fn == "exp" and not integer and args[0].fill == NEG_INF else None
            folded = args[0].folded if fill else None
            return Value(Tile(table[e.fn].format(*codes), axes), mask, fill=fill, kind=kind, folded=folded)
        if isinstance(e, S.Unary):
            x = self.value(e.x, ctx)
            return Value(Tile(f"(-{x.val.code})", x.val.axes), x.mask, kind=x.kind)
        if isinstance(e, S.Binary):
            return self._binary(e, ctx)
        if isinstance(e, S.Default):
            a, b = self.value(e.a, ctx), self.value(e.b, ctx)
            if a.mask is None:
                return a
            if b.mask is None and b.val.code == a.fill:
                return Value(a.val, None)
            mask = None if b.mask is None else self.mask_or(a.mask, b.mask)
            return Value(self.where(a.mask, a.val, b.val), mask)
        raise InternalError(f"no Triton rendering for {type(e).__name__}")

    def _extremum_of_default(self, e: S.Call) -> Value | None:
        """``max(X, Y ?? X)`` (either order) where ``X`` is present and ``Y`` holds max's identity (-inf) at
        its absent points is ``max(X, Y)``: the running max of a rewritten cascade whose state is present,
        with no select."""
        identity = NEG_INF if e.fn == "max" else 'float("inf")'
        for k in (0, 1):
            d, other = e.args[1 - k], e.args[k]
            if not isinstance(d, S.Default):
                continue
            x, y, z = self.value(other), self.value(d.a), self.value(d.b)
            if x.mask is None and z.mask is None and z.val.code == x.val.code and y.fill == identity:
                axes = self.env.order(join(x.val, y.val))
                codes = [self.env.expand(t, axes) for t in (x.val, y.val)]
                return Value(Tile(FUNCTIONS[e.fn].format(*codes), axes), None)
        return None

    def _binary(self, e: S.Binary, ctx: str) -> Value:
        a, b = self.value(e.a, ctx), self.value(e.b, ctx)
        mask = self.mask_and(a.mask, b.mask)
        kind = "x" if "x" in (a.kind, b.kind) else a.kind
        if e.op in ("//", "%"):
            if kind != "i":
                raise EinError("`//` and `%` need integer operands")
            fn = "_floordiv" if e.op == "//" else "_floormod"
            divisor = b.val
            if not _nonzero_literal(divisor.code):
                # a zero divisor (a size of 0) makes the point absent, never a fault
                nz = Tile(f"({divisor.code} != 0)", divisor.axes)
                mask = self.mask_and(mask, nz)
                divisor = self.where(nz, divisor, Tile("1"))
            axes = self.env.order(join(a.val, divisor))
            code = f"{fn}({self.env.expand(a.val, axes)}, {self.env.expand(divisor, axes)})"
            return Value(Tile(code, axes), mask, kind="i")
        if e.op == "/" and kind == "i":
            raise EinError("`/` in an index expression; indices are integers")
        if kind == "i" and e.op in ("*", "+", "-") and _is_int(a.val.code) and _is_int(b.val.code):
            # two literals (`W * W`): the value, int64 from 2**24 on (Python's arithmetic, which never wraps)
            x, y = int(a.val.code), int(b.val.code)
            value = x * y if e.op == "*" else x + y if e.op == "+" else x - y
            value = (value + 2**63) % 2**64 - 2**63  # (int64 arithmetic, as the other backends')
            return Value(Tile(int_literal(value)), mask, kind="i")
        if kind == "i" and e.op == "*" and not self._tile_start(e):
            # a product in a filter or an index can pass int32's range where the coordinates do not
            # (`m * W * W < p`, `K[(m * W * W) // (W * W), e]`): int64 (adding an int64 zero also widens
            # the loop's Python int under the interpreter)
            a = Value(Tile(f"({a.val.code} + tl.zeros([], tl.int64))", a.val.axes), a.mask, kind="i")
        elif kind == "i" and e.op in ("+", "-") and _reads(e) and not a.val.code.endswith("tl.int64))"):
            # a sum or difference of a value read from an `: int` tensor: int64, as NumPy and torch compute
            # it, since an int32 input near its ends wraps (`doc[m] - doc[p] <= 0` with doc[m] = -2**31)
            a = Value(Tile(f"({a.val.code} + tl.zeros([], tl.int64))", a.val.axes), a.mask, kind="i")
        fill = folded = None
        if kind == "f" and e.op == "-" and a.fill == NEG_INF and b.mask is None and b.above:
            fill, folded = NEG_INF, a.folded  # -inf - b = -inf for every b but -inf (and NaN)
        elif kind == "f" and e.op == "+" and a.fill == "0.0" and b.mask is None:
            fill, folded = b.val.code, a.folded  # 0 + b where a is absent (and symmetrically)
        elif kind == "f" and e.op == "+" and b.fill == "0.0" and a.mask is None:
            fill, folded = a.val.code, b.folded
        return Value(self.binary(e.op, a.val, b.val), mask, fill=fill, kind=kind, folded=folded)

    def _tile_start(self, e: S.Binary) -> bool:
        """``m1 * M0`` of a partition ``rank M = M1 * M0``: below the rank's size plus a tile, int32."""
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(x, S.Coord) and isinstance(y, S.Param):
                for part in self.prog.partitions:
                    if part.outer == x.rank and y.name == part.inner.upper():
                        return True
        return False

    # ---- filters --------------------------------------------------------------------------------------
    def condition(self, e: S.Expr) -> tuple[Tile, Tile | None]:
        """(truth, presence) of a filter: a filter that reads an absent point makes that point absent."""
        if isinstance(e, S.Compare):
            a, b = self.value(e.a, "c"), self.value(e.b, "c")
            if _is_int(a.val.code) and _is_int(b.val.code):  # a constant condition (`where 0 != 0`)
                truth = eval(f"{a.val.code} {COMPARE[e.op]} {b.val.code}")
                return Tile(str(truth)), None
            return self.binary(COMPARE[e.op], a.val, b.val), self.mask_and(a.mask, b.mask)
        if isinstance(e, S.Logic):
            (a, ma), (b, mb) = self.condition(e.a), self.condition(e.b)
            return self.logic("&" if e.op == "and" else "|", a, b), self.mask_and(ma, mb)
        if isinstance(e, S.Not):
            a, ma = self.condition(e.x)
            return Tile(f"(~{a.code})", a.axes), ma
        raise InternalError(f"not a condition: {type(e).__name__}")

    def filtered(self, e: S.Expr | None) -> Tile | None:
        """The presence a filter imposes (truth and presence together), or None without a filter."""
        if e is None:
            return None
        truth, mask = self.condition(e)
        return self.mask_and(mask, truth)

    # ---- tensor reads through pointers ------------------------------------------------------------------
    def index_values(self, node: S.Read) -> list[Value]:
        return [self.value(ix, "i") for ix in node.indices]

    def pointer_load(
        self,
        node: S.Read,
        ptr: str,
        strides: list[str],
        extents: list[str | None],
        ctx: str,
        lanes: Tile | None = None,
        presence_ptr: str | None = None,
        wide: bool = True,
        stem: str | None = None,
        dtype_cast: bool = True,
        proved: list[str | None] | None = None,
        widen: str | None = None,
    ) -> Value:
        """A masked load of ``ptr[index...]``.

        ``extents[k]`` is the code of dimension k's extent, or None where the index is known to be in bounds;
        ``proved[k]`` a compile-time flag that, when true, says so (the check folds away).
        ``lanes`` masks padding lanes of the tile (not absent points, only memory safety). ``wide`` computes
        offsets in int64 (else only scalar parts are widened, and the tile parts where the compile-time flag
        ``widen`` is true: ``_wide(offs_p, WIDE)``).
        """
        idx = self.index_values(node)
        mask: Tile | None = None
        for k, (ix, v, ext) in enumerate(zip(node.indices, idx, extents)):
            mask = self.mask_and(mask, v.mask)
            if ext is None:
                continue
            if nonnegative(ix, self.params):
                inb = Tile(f"({v.val.code} < {ext})", v.val.axes)
            else:
                inb = self.logic(
                    "&", Tile(f"({v.val.code} >= 0)", v.val.axes), Tile(f"({v.val.code} < {ext})", v.val.axes)
                )
            if proved and proved[k]:
                inb = Tile(f"({inb.code} | {proved[k]})", inb.axes)
            mask = self.mask_and(mask, inb)
        terms = []
        for v, st in zip(idx, strides):
            if v.val.code == "0":
                continue
            c = v.val.code
            if re.fullmatch(r"\(?-?\d+\)?", c):  # a constant index (`X[2, i]`, a param): a Python int
                c = f"tl.full((), {c.strip('()')}, tl.int64)"
            elif not v.val.axes and not re.fullmatch(r"i_\w+", c):
                # a scalar other than a program's index (`i_h`, a tensor): the tile loop's index, which the
                # interpreter makes a Python int (no `.to`)
                c = f"tl.full((), {c}, tl.int64)"
            elif wide or not v.val.axes:
                c = f"{atom(c)}.to(tl.int64)"
            elif widen:
                c = f"_wide({c}, {widen})"
            terms.append(Tile(f"{c} * {st}", v.val.axes))
        off: Tile = Tile("0")
        for t in terms:
            off = t if off.code == "0" else self.binary("+", off, t)
        if mask is not None and len(mask.code) > 40:
            mask = self.named(f"{stem or node.tensor}_ok", mask)
        load_mask = self.mask_and(mask, lanes)
        if load_mask is not None and not load_mask.axes and off.axes:
            # a condition on scalars only (`0 < size_g`) is a Python bool under the interpreter, which tl.load
            # refuses as a mask: spread it over the tile
            full = self.env.full(Tile("True"), off.axes, "tl.int1")
            load_mask = Tile(f"({full} & {load_mask.code})", off.axes)
        axes = self.env.order(join(off, load_mask))
        off_code = self.env.full(off, axes, "tl.int32") if off.axes != axes else off.code
        name = self.env.temp(stem or node.tensor)
        if presence_ptr is not None and off.axes:
            self.env.emit(f"{name}_off = {off_code}")
            off_code = f"{name}_off"
        if load_mask is None:
            self.env.emit(f"{name} = tl.load({ptr} + {off_code})")
        else:
            self.env.emit(
                f"{name} = tl.load({ptr} + {off_code}, mask={self.env.expand(load_mask, axes)}, other=0)"
            )
        val = Tile(name, axes)
        kind = "f"
        t = self.prog.tensor(node.tensor)
        if t.dtype == "int":
            kind = "i" if ctx in ("i", "c") else "f"
            if kind == "f":
                val = Tile(f"{name}.to({self.compute})", axes)
        elif ctx in ("i", "c"):
            raise EinError(f"float tensor `{node.tensor}` cannot be used in an index or filter", node.span)
        elif dtype_cast:
            val = Tile(f"{name}.to({self.compute})", axes)
        if presence_ptr is not None:
            pname = f"{name}_present"
            mcode = f", mask={self.env.expand(load_mask, axes)}, other=0" if load_mask is not None else ""
            self.env.emit(f"{pname} = tl.load({presence_ptr} + {off_code}{mcode}) != 0")
            mask = self.mask_and(mask, Tile(pname, axes))
        fill = "0.0" if (mask is not None and presence_ptr is None and kind == "f") else None
        return Value(val, mask, fill=fill, kind=kind, raw=name if kind == "f" and t.dtype != "int" else None)


def is_literal(code: str) -> bool:
    """Whether ``code`` is a number literal (a compile-time constant in Triton)."""
    try:
        float(code)
        return True
    except ValueError:
        return code in ('float("inf")', '-float("inf")')


def _reads(e: S.Expr) -> bool:
    """Whether ``e`` reads a tensor (in an index or a filter: an `: int` input's value)."""
    return any(isinstance(x, S.Read) for x in e.walk())


def _is_int(code: str) -> bool:
    return code.lstrip("-").isdigit()


def _nonzero_literal(code: str) -> bool:
    try:
        return int(code) != 0
    except ValueError:
        return False


def nonnegative(e: S.Expr, params: dict) -> bool:
    """Whether an integer index expression is >= 0 at every point, by its form (coordinates and sizes are)."""
    if isinstance(e, (S.Coord, S.Size)):
        return True
    if isinstance(e, S.Const):
        return isinstance(e.value, int) and e.value >= 0
    if isinstance(e, S.Param):
        return isinstance(params[e.name], int) and params[e.name] >= 0
    if isinstance(e, S.Binary) and e.op in ("+", "*", "//"):
        return nonnegative(e.a, params) and nonnegative(e.b, params)
    if isinstance(e, S.Binary) and e.op == "%":
        return nonnegative(e.b, params) and not (isinstance(e.b, S.Const) and e.b.value == 0)
    if isinstance(e, S.Call) and e.fn == "max":
        return nonnegative(e.args[0], params) or nonnegative(e.args[1], params)
    if isinstance(e, S.Call) and e.fn == "min":
        return nonnegative(e.args[0], params) and nonnegative(e.args[1], params)
    if isinstance(e, S.Call) and e.fn == "clamp":  # min(max(x, lo), hi): hi = I - 1 is -1 when I = 0
        low = nonnegative(e.args[1], params) or nonnegative(e.args[0], params)
        return low and nonnegative(e.args[2], params)
    return False


def in_bounds(prog: Program, tensor: str, k: int, ix: S.Expr) -> bool:
    """Whether index ``ix`` at dimension ``k`` of ``tensor`` is in bounds at every point, by its form."""
    t = prog.tensor(tensor)
    if t.iterative == k:
        r = t.ranks[k]
        return (
            ix == S.Coord(r)
            or ix == S.Binary("+", S.Coord(r), S.Const(1))
            or ix == S.Size(r)
            or ix == S.Const(0)
        )
    return ix == S.Coord(t.ranks[k])


def fmt_expr(e: S.Expr, parent: int = 0) -> str:
    """The .ein spelling of an expression (for comments in generated code)."""
    prec = {"??": 1, "or": 2, "and": 3, "not": 4, "cmp": 5, "+": 6, "-": 6, "*": 7, "/": 7, "//": 7, "%": 7}
    if isinstance(e, S.Const):
        v = e.value
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v) if isinstance(v, float) else str(v)
    if isinstance(e, S.Param):
        return e.name
    if isinstance(e, S.Size):
        return e.rank.upper()
    if isinstance(e, S.Coord):
        return e.rank
    if isinstance(e, S.Read):
        return e.tensor + (f"[{', '.join(fmt_expr(i) for i in e.indices)}]" if e.indices else "")
    if isinstance(e, S.Call):
        return f"{e.fn}({', '.join(fmt_expr(a) for a in e.args)})"
    if isinstance(e, S.Unary):
        return f"-{fmt_expr(e.x, 8)}"
    if isinstance(e, S.Binary):
        p = prec[e.op]
        text = f"{fmt_expr(e.a, p)} {e.op} {fmt_expr(e.b, p + 1)}"
    elif isinstance(e, S.Default):
        p = prec["??"]
        text = f"{fmt_expr(e.a, p)} ?? {fmt_expr(e.b, p + 1)}"
    elif isinstance(e, S.Compare):
        p = prec["cmp"]
        text = f"{fmt_expr(e.a, p + 1)} {e.op} {fmt_expr(e.b, p + 1)}"
    elif isinstance(e, S.Logic):
        p = prec[e.op]
        text = f"{fmt_expr(e.a, p)} {e.op} {fmt_expr(e.b, p + 1)}"
    elif isinstance(e, S.Not):
        p = prec["not"]
        text = f"not {fmt_expr(e.x, p)}"
    else:
        raise InternalError(f"cannot format {type(e).__name__}")
    return f"({text})" if p < parent else text


def fmt_einsum(e) -> str:
    """``QK[b, h, m, p] = Q[b, h, p, e] * K[b, h, m, e] * rsqrt(E) where m <= p`` for an IR Einsum."""
    lhs = e.tensor + (f"[{', '.join(str(ix) for ix in e.index)}]" if e.index else "")
    text = f"{lhs} = {fmt_expr(e.expr)}"
    named = [r for r, op in e.reduce if op != "+"]
    ops = {op for _, op in e.reduce if op != "+"}
    if named:
        text += f" :: {ops.pop()}({', '.join(named)})"
    if e.filter is not None:
        text += f" where {fmt_expr(e.filter)}"
    return text


ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*) = ")  # a line of generated code that assigns a name


def drop_unused(lines: list[str]) -> list[str]:
    """Remove assignments whose variable nothing reads (presence masks that no statement needed), repeatedly.

    The Triton compiler would drop them too; the interpreter would not, and the source reads better without.
    """
    lines = list(lines)
    changed = True
    while changed:
        changed = False
        text = "\n".join(lines)
        counts: dict[str, int] = {}
        for word in re.findall(r"[A-Za-z_]\w*", text):
            counts[word] = counts.get(word, 0) + 1
        assigned: dict[str, int] = {}
        for line in lines:
            if m := ASSIGN.match(line):
                assigned[m.group(1)] = assigned.get(m.group(1), 0) + 1
        # a name that occurs only where it is assigned (in one loop or several) is read nowhere
        unread = {n for n, k in assigned.items() if counts.get(n, 0) == k}
        if unread:
            lines = [ln for ln in lines if not ((m := ASSIGN.match(ln)) and m.group(1) in unread)]
            changed = True
    return lines
