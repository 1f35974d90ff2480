"""The NumPy reference backend: the oracle every other backend is checked against.

It evaluates the schedule of ``einattn.graph`` directly: each Einsum is computed over its iteration space by
broadcasting (one array axis per rank), then reduced; a recurrence runs one step at a time. Clarity first:
every value is a pair (``v``, ``m``) of values and a presence mask (``m is None`` means all present), which is
exactly the language's absent-point semantics:

* a filter that is false, or an out-of-bounds read, makes a point absent;
* absence propagates through every elementwise operation; ``a ?? b`` takes ``b`` where ``a`` is absent;
* reductions skip absent points; a reduction with no present point is absent;
* an output's absent points are delivered as 0.

Products summed over ranks take a contraction fast path (``numpy.einsum``) when every factor is finite, so
that moderate sizes do not materialise the whole iteration space. It equals the point-by-point definition up
to the order of floating-point operations (the sum's association, ``x / y`` as ``x * (1 / y)``); with an
infinite factor the order matters (``inf + -inf``), so the general path is taken. So it is when the sum
comes out infinite or NaN: finite factors can overflow in a product at an absent point (the values there are
whatever the operations gave: ``exp(0 - -709.75)`` times a clamped read), which the definition never forms.
"""

from __future__ import annotations

import numbers

import numpy as np

from einattn import syntax as S
from einattn.errors import EinError, InternalError
from einattn.graph import Dense, schedule
from einattn.ir import Einsum, Program
from einattn.kernel import Kernel
from einattn.sizes import bind_sizes, extents
from einattn.stabilizers import floored, lowest


def _sigmoid(x):
    with np.errstate(over="ignore"):
        z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


FUNCTIONS = {
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "log2": np.log2,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "abs": np.abs,
    "square": np.square,
    "step": lambda x: np.greater(x, 0).astype(np.result_type(x, np.float16)),
    "max": np.maximum,
    "min": np.minimum,
    "clamp": lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
}

BINARY = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "//": np.floor_divide,
    "%": np.mod,
}

COMPARE = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}

REDUCE = {"+": (np.sum, 0.0), "max": (np.max, -np.inf), "min": (np.min, np.inf)}


def _and(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a & b


class Buffer:
    """Storage of one tensor: values and presence (None: all present)."""

    __slots__ = ("m", "v")

    def __init__(self, v: np.ndarray, m: np.ndarray | None):
        self.v, self.m = v, m


class Space:
    """The iteration space of one Einsum evaluation: an axis per rank, each over a range of coordinates."""

    def __init__(self, ranks: tuple[str, ...], sizes: dict[str, int], fixed: dict[str, int]):
        self.ranks = ranks
        self.axis = {r: k for k, r in enumerate(ranks)}
        self.start = {r: fixed.get(r, 0) for r in ranks}
        self.length = {r: 1 if r in fixed else sizes[r] for r in ranks}
        self.shape = tuple(self.length[r] for r in ranks)

    def coord(self, rank: str) -> np.ndarray:
        shape = [1] * len(self.ranks)
        shape[self.axis[rank]] = self.length[rank]
        start = self.start[rank]
        return np.arange(start, start + self.length[rank], dtype=np.int64).reshape(shape)


class Evaluator:
    def __init__(self, prog: Program, sizes: dict[str, int], dtype, floor: frozenset[str] = frozenset()):
        """``floor``: stabilizers stored at least the lowest finite value of the dtype
        (``einattn.stabilizers.lowest``): the running maxes of a program the rewrite derived, as every
        backend stores them (see ``NumpyKernel``)."""
        self.prog, self.sizes, self.dtype, self.floor = prog, sizes, np.dtype(dtype), floor
        self.params = prog.param_values
        self.buffers: dict[str, Buffer] = {}

    # ---- expressions ----------------------------------------------------------------------------------
    def value(self, e: S.Expr, sp: Space, integer: bool = False):
        """(values, mask) of ``e`` over ``sp``, broadcastable to ``sp.shape``; ints when ``integer``."""
        if isinstance(e, S.Const):
            if integer:  # a float constant may be compared in a filter (`p - m < 2.5`): keep it exact
                return np.asarray(e.value, dtype=np.int64 if isinstance(e.value, int) else np.float64), None
            return np.asarray(e.value, dtype=self.dtype), None
        if isinstance(e, S.Coord):
            c = sp.coord(e.rank)
            return (c if integer else c.astype(self.dtype)), None
        if isinstance(e, S.Size):
            return np.asarray(self.sizes[e.rank], dtype=np.int64 if integer else self.dtype), None
        if isinstance(e, S.Param):
            v = self.params[e.name]
            if integer and not isinstance(v, int):
                return np.asarray(v), None
            return np.asarray(v, dtype=np.int64 if integer else self.dtype), None
        if isinstance(e, S.Read):
            return self.read(e, sp, integer)
        if isinstance(e, S.Call):
            vals = [self.value(a, sp, integer) for a in e.args]
            mask = None
            for _, m in vals:
                mask = _and(mask, m)
            return FUNCTIONS[e.fn](*(v for v, _ in vals)), mask
        if isinstance(e, S.Unary):
            v, m = self.value(e.x, sp, integer)
            return -v, m
        if isinstance(e, S.Binary):
            (a, ma), (b, mb) = self.value(e.a, sp, integer), self.value(e.b, sp, integer)
            if integer and e.op in ("//", "%"):
                nonzero = np.asarray(b) != 0  # a zero divisor makes the point absent, never an exception
                b = np.where(nonzero, b, 1)
                mb = _and(mb, None if nonzero.all() else nonzero)
            return BINARY[e.op](a, b), _and(ma, mb)
        if isinstance(e, S.Default):
            (a, ma), (b, mb) = self.value(e.a, sp, integer), self.value(e.b, sp, integer)
            if ma is None:
                return a, None
            return np.where(ma, a, b), (None if mb is None else ma | mb)
        raise InternalError(f"no NumPy evaluation for {type(e).__name__}")

    def condition(self, e: S.Expr, sp: Space):
        """(truth, mask) of a filter over ``sp``."""
        if isinstance(e, S.Compare):
            (a, ma), (b, mb) = self.value(e.a, sp, True), self.value(e.b, sp, True)
            return COMPARE[e.op](a, b), _and(ma, mb)
        if isinstance(e, S.Logic):
            (a, ma), (b, mb) = self.condition(e.a, sp), self.condition(e.b, sp)
            return (a & b if e.op == "and" else a | b), _and(ma, mb)
        if isinstance(e, S.Not):
            a, ma = self.condition(e.x, sp)
            return ~a, ma
        raise InternalError(f"not a condition: {type(e).__name__}")

    def read(self, e: S.Read, sp: Space, integer: bool):
        buf = self.buffers[e.tensor]
        ext = buf.v.shape
        if not e.indices:
            return buf.v, buf.m
        view = self._plain_view(e, buf, sp)
        if view is not None:
            return view
        idx, mask = [], None
        for k, ix in enumerate(e.indices):
            i, m = self.value(ix, sp, integer=True)
            i = np.asarray(i)
            if i.dtype.kind == "f":  # a non-integer param reached an index: absent rather than wrong
                raise EinError(f"index {k} of `{e.tensor}` is not an integer", e.span)
            inside = (i >= 0) & (i < ext[k])
            mask = _and(mask, _and(m, inside))
            idx.append(np.clip(i, 0, max(ext[k] - 1, 0)))
        if any(n == 0 for n in ext):
            shape = np.broadcast_shapes(*(i.shape for i in idx))
            return np.zeros(shape, buf.v.dtype), np.zeros(shape, bool)
        v = buf.v[tuple(idx)]
        if not integer and v.dtype.kind in "iub":
            v = v.astype(self.dtype)
        if buf.m is not None:
            mask = _and(mask, buf.m[tuple(idx)])
        if mask is not None and mask.all():
            mask = None
        return v, mask

    def _plain_view(self, e: S.Read, buf: Buffer, sp: Space):
        """Reads like ``T[b, h, m, p]`` (distinct ranks, in bounds) are a sliced, transposed view."""
        ranks = []
        for k, ix in enumerate(e.indices):
            if not isinstance(ix, S.Coord) or ix.rank in ranks:
                return None
            r = ix.rank
            if sp.start[r] + sp.length[r] > buf.v.shape[k]:
                return None
            ranks.append(r)
        sl = tuple(slice(sp.start[r], sp.start[r] + sp.length[r]) for r in ranks)
        order = sorted(range(len(ranks)), key=lambda k: sp.axis[ranks[k]])
        shape = [1] * len(sp.ranks)
        for r in ranks:
            shape[sp.axis[r]] = sp.length[r]
        v = buf.v[sl].transpose(order).reshape(shape)
        m = None if buf.m is None else buf.m[sl].transpose(order).reshape(shape)
        return v, m

    # ---- statements --------------------------------------------------------------------------------
    def einsum(self, e: Einsum, fixed: dict[str, int]) -> None:
        sp = Space(e.space, self.sizes, fixed)
        fast = self._contraction(e, sp)
        if fast is not None:
            v, m = fast
        else:
            v, m = self.value(e.expr, sp)
            if e.filter is not None:
                f, fm = self.condition(e.filter, sp)
                m = _and(_and(m, fm), np.broadcast_to(f, np.broadcast_shapes(np.shape(f), np.shape(v))))
            v, m = self._reduce(e, sp, v, m)
        self._write(e, sp, v, m)

    def _reduce(self, e: Einsum, sp: Space, v, m):
        nl = len(e.lhs_ranks)
        if e.reduce:
            v = np.broadcast_to(v, sp.shape)
            if m is not None:
                m = np.broadcast_to(m, sp.shape)
            for op in ("+", "max", "min"):
                axes = tuple(sp.axis[r] for r, o in e.reduce if o == op)
                if not axes:
                    continue
                fn, identity = REDUCE[op]
                if m is None:
                    if any(sp.shape[a] == 0 for a in axes):
                        m = np.ones(v.shape, bool)  # becomes all-absent below
                        v = fn(np.where(m, v, identity), axis=axes, keepdims=True, initial=identity)
                        m = np.zeros(v.shape, bool)
                    else:
                        v = fn(v, axis=axes, keepdims=True)
                else:
                    v = fn(np.where(m, v, identity), axis=axes, keepdims=True, initial=identity)
                    m = m.any(axis=axes, keepdims=True)
            v = v.reshape(v.shape[:nl])
            if m is not None:
                m = m.reshape(m.shape[:nl])
        return v, m

    def _contraction(self, e: Einsum, sp: Space):
        """Sum of a product over ranks via numpy.einsum, when all factors are finite (see the module doc)."""
        if not e.reduce or any(op != "+" for _, op in e.reduce):
            return None
        factors = _factors(e.expr)
        if factors is None or len(factors) < 2:
            return None
        arrays, masks = [], []
        for f, inverse in factors:
            v, m = self.value(f, sp)
            if inverse:
                v = 1.0 / v
            arrays.append(np.asarray(v, self.dtype))
            masks.append(m)
        if e.filter is not None:
            f, fm = self.condition(e.filter, sp)
            masks.append(_and(np.asarray(f), fm))
        masks = [m for m in masks if m is not None]
        if not all(np.isfinite(a).all() for a in arrays):
            return None  # inf + -inf, or 0 * inf at an absent point: only the point-by-point order is right
        letters = {r: chr(ord("a") + k) for k, r in enumerate(sp.ranks)}
        if len(letters) > 52:
            return None
        operands, subs = [], []
        for a in arrays + [m.astype(self.dtype) for m in masks]:
            keep = [k for k in range(a.ndim) if a.shape[k] != 1 or sp.shape[k] == 1] if a.ndim else []
            operands.append(a.reshape([a.shape[k] for k in keep]) if a.ndim else a)
            subs.append("".join(letters[sp.ranks[k]] for k in keep))
        out_ranks = [r for r in e.lhs_ranks if any(letters[r] in s for s in subs)]
        spec = ",".join(subs) + "->" + "".join(letters[r] for r in out_ranks)
        v = np.einsum(spec, *operands, optimize=True)
        used = set("".join(subs))
        for r, _ in e.reduce:  # a summed rank that no factor varies along: each point adds the same term
            if letters[r] not in used:
                v = v * sp.length[r]
        if not np.isfinite(v).all():
            return None  # an overflow, perhaps at an absent point: the point-by-point definition decides
        shape = [sp.length[r] if r in out_ranks else 1 for r in e.lhs_ranks]
        v = np.asarray(v).reshape(shape)
        m = None
        if masks:
            msubs = subs[len(arrays) :]
            mout = [r for r in out_ranks if any(letters[r] in s for s in msubs)]
            m = (
                np.einsum(
                    ",".join(msubs) + "->" + "".join(letters[r] for r in mout), *operands[len(arrays) :]
                )
                > 0
            )
            m = np.broadcast_to(m.reshape([sp.length[r] if r in mout else 1 for r in e.lhs_ranks]), shape)
            if any(sp.length[r] == 0 for r in e.reduced):  # (a summed rank no mask varies along: no point)
                m = np.zeros(shape, bool)
        elif any(sp.length[r] == 0 for r in e.reduced):
            m = np.zeros(shape, bool)
        return v, m

    def _write(self, e: Einsum, sp: Space, v, m) -> None:
        t = self.prog.tensor(e.tensor)
        buf = self.buffers[e.tensor]
        region, shape = [], []
        for ix in e.index:
            if ix.kind == "init":
                region.append(slice(0, 1))
                shape.append(1)
            else:
                start = sp.start[ix.rank] + (ix.kind == "step")
                region.append(slice(start, start + sp.length[ix.rank]))
                shape.append(sp.length[ix.rank])
        v = np.broadcast_to(np.asarray(v, self.dtype).reshape(_lhs_shape(np.shape(v), e, t)), shape)
        if e.tensor in self.floor and e.kind != "init":
            v = np.maximum(v, lowest(v.dtype))  # (NaN stays NaN)
        region = tuple(region)
        whole = all(s.start == 0 and s.stop == n for s, n in zip(region, buf.v.shape))
        if m is not None:
            m = np.broadcast_to(np.asarray(m).reshape(_lhs_shape(np.shape(m), e, t)), shape)
        if whole:
            buf.v = np.array(v, self.dtype)
            buf.m = None if m is None or m.all() else np.array(m)
            return
        buf.v[region] = v
        if buf.m is None:
            if m is None:
                return
            buf.m = np.ones(buf.v.shape, bool)
        buf.m[region] = True if m is None else m

    # ---- the program ------------------------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, arr in inputs.items():
            self.buffers[name] = Buffer(arr, None)
        for t in self.prog.tensors:
            if not t.is_input:
                shape = extents(self.prog, t.name, self.sizes)
                self.buffers[t.name] = Buffer(np.zeros(shape, self.dtype), np.zeros(shape, bool))
        with np.errstate(all="ignore"):
            for step in schedule(self.prog):
                if isinstance(step, Dense):
                    self.einsum(step.einsum, {})
                else:
                    for k in range(self.sizes[step.rank]):
                        for e in step.body:
                            self.einsum(e, {step.rank: k})
        outs = []
        for name in self.prog.outputs:
            buf = self.buffers[name]
            v = buf.v if buf.m is None else np.where(buf.m, buf.v, 0)
            outs.append(np.array(v, dtype=self.dtype if self.prog.tensor(name).dtype == "float" else v.dtype))
        return outs


def _lhs_shape(shape, e: Einsum, t) -> list[int]:
    """Insert the length-1 axis of an initialiser's iterative dimension (absent from its space)."""
    shape = list(shape) + [1] * (len(e.lhs_ranks) - len(shape))
    if e.kind == "init":
        shape.insert(t.iterative, 1)
    return shape


def _factors(expr: S.Expr):
    """``a * b / c`` -> [(a, False), (b, False), (c, True)]; None if the top is not a product."""
    if isinstance(expr, S.Binary) and expr.op in ("*", "/"):
        left = _factors(expr.a) or [(expr.a, False)]
        right = [(expr.b, expr.op == "/")] if expr.op == "/" else (_factors(expr.b) or [(expr.b, False)])
        return left + right
    return None


OPTIONS = ("dtype", "passes", "tile")


class NumpyKernel(Kernel):
    """The reference. ``passes`` defaults to ``"as-written"``: the oracle evaluates the spec's own cascade;
    ``passes="auto"`` evaluates the rewritten one (how the rewrite itself is tested end to end)."""

    backend = "numpy"

    def __init__(self, program: Program, options: dict):
        unknown = [k for k in options if k not in OPTIONS]
        if unknown:
            raise EinError(
                f"unknown numpy backend option `{unknown[0]}`", hint=f"options: {', '.join(OPTIONS)}"
            )
        tile = options.get("tile", 64)  # (checked where unused too)
        if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or not 1 <= tile <= 2**31 - 1:
            raise EinError(f"option tile must be a positive integer, got {tile!r}")
        written = program
        self.floor: frozenset[str] = frozenset()
        if options.get("passes", "as-written") != "as-written":
            import warnings

            from einattn.rewrite import for_backend

            program, found = for_backend(program, options["passes"], options.get("tile", 64))
            for w in found:
                warnings.warn(w, stacklevel=5)
            # the rewrite's running maxes are stored finite, as the torch and triton backends store them:
            # `exp(-inf - -inf)` was NaN where a -inf mask covers a whole first tile (the spec is finite)
            self.floor = floored(program) if program is not written else frozenset()
        super().__init__(program, options, written)
        try:
            self.dtype = np.dtype(options.get("dtype") or np.float64)
        except TypeError:
            raise EinError(f"unknown dtype `{options.get('dtype')}`", hint="use float64 or float32") from None
        if self.dtype not in (np.float32, np.float64):
            raise EinError(
                f"the NumPy backend computes in float32 or float64, not {self.dtype}",
                hint="16-bit floats run on the torch or triton backend (the CLI: --backend torch)",
            )

    def run(self, inputs):
        arrays = {}
        for name, x in inputs.items():
            t = self.program.tensor(name)
            a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
            if t.dtype == "int":
                if a.dtype == object and a.size and all(type(v) is int for v in a.flat):
                    big = max(a.flat, key=abs)  # Python integers that no int64 holds
                    raise EinError(f"input `{name}` is {big}, beyond a 64-bit integer's range")
                if a.dtype.kind not in "iub":
                    raise EinError(f"input `{name}` is declared `: int` but was given {a.dtype} values")
                if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
                    # (uint64 values from 2**63 on wrapped to negative ones: `i < n`, n = 2**63, kept nothing)
                    raise EinError(f"input `{name}` is {int(a.max())}, beyond a 64-bit integer's range")
                a = a.astype(np.int64)
            else:
                if a.dtype.kind not in "iubf":
                    raise EinError(f"input `{name}` must be real numbers, got {a.dtype}")
                a = a.astype(self.dtype)
            arrays[name] = a
        sizes = bind_sizes(self.program, {n: a.shape for n, a in arrays.items()})
        return Evaluator(self.program, sizes, self.dtype, self.floor).run(arrays)


def compile_program(program: Program, **options) -> NumpyKernel:
    return NumpyKernel(program, options)
