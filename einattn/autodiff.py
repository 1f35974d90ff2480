"""Reverse-mode differentiation of a cascade: its backward pass, derived as a cascade of extended Einsums.

:func:`grad` takes a program and returns the program of its gradients (a :class:`Gradient`): the inputs of
the forward program and one *cotangent* per output (``dAV[b, h, p, f]``: the gradient of the loss with
respect to ``AV``, what ``out.backward(dAV)`` feeds), the outputs the gradients of the float inputs asked
for (``dQ``, ``dK``, ``dV``). It is an ordinary program: every backend runs it, ``einattn analyze`` counts
its passes, and it prints as ``.ein`` (``einattn grad FILE``).

**The rule.** A statement ``T[l] = E :: +(r) where F`` is, for each read ``X[i(l, r)]`` of a float tensor in
``E``, a contribution to the cotangent of ``X``:

    dX[x] += dT[l] * dE/dX[i(l, r)]   summed over every (l, r) with i(l, r) = x, where F

written as one Einsum per read: a plain index keeps its rank (``K[b, h, m, e]`` gives ``dK[b, h, m, e]``,
summed over ``p``); an index ``a * r + c`` with ``a = +-1`` is solved for ``r`` (a shifted read ``X[i + 1]``
gives ``dT[i - 1]``, a relative-position table ``T[p - m + M]`` gives ``dT[.., d + m - M, m]``), and any
other (``h // R``, a gather ``KC[table[b, m // S], ...]``) keeps its ranks summed under the filter
``index == x``. The derivative ``dE/dX`` is symbolic (:func:`_derivative`): the chain rule through
``+ - * /`` and every function of the registry, with PyTorch's conventions at kinks (``relu``, ``abs`` and
``step`` take 0 at 0; ``max``/``min`` split a tie evenly, as ``torch.maximum``). Where ``E`` recurs in its
derivative (``exp``, ``sigmoid``, a quotient) the derivative reads ``T`` instead of computing it again.

A ``:: max`` (or ``min``) reduction sends the cotangent to the points that attain the maximum, split evenly
between ties (as ``torch.amax``): ``hit / N[l]``, ``hit`` 1 where ``E = T[l]``
(``step(|d| + 1) - step(d) - step(-d)``, ``d = T[l] - E`` clamped to finite values, so that equal infinities
tie) and ``N`` the number of such points, counted once per statement.

**Absent points.** A term of the forward sum that is absent contributes nothing, so its contribution to
every gradient must be absent too: the gradient statement keeps the forward filter ``F``, and where ``E``
can be absent at points where its derivative is present (``X[i + 1] + Y[i]``: the derivative with respect to
``Y`` is 1, present past the end of ``X``), the contribution is gated by ``+ step(-abs(E))``, which is 0
where ``E`` is present and absent where it is not (absence analysis, :mod:`einattn.absence`, decides where).
``a ?? b`` sends the cotangent to ``a`` where ``a`` is present and to ``b`` elsewhere. The outputs give the
caller 0 at absent points, and so do the gradients.

**Stabilizers** (:mod:`einattn.stabilizers`: softmax's max) take no cotangent: the outputs do not depend on
them, and their terms would cancel exactly.

A statement that reduces with two operators (``Y[i] = X[i, j, k] :: max(k)``: a sum over ``j``, then a max
over ``k``) is first written as two statements, each with one (:func:`_split_mixed`).

**Saved values** (``saved=``): computed tensors whose forward values the caller passes (autograd keeps the
outputs) are inputs of the backward program, their absent points restored by the presence analysis's
constraints (``O_in``). They allow one reassociation: where ``T``'s one reader is a saved linear sum ``O =
sum_R T * W`` (or ``X`` is read in a saved sum's own summand), ``sum_R dT * T * g = sum_F dO * O * g``:
softmax's ``sum_m dA * A`` becomes FlashAttention-2's ``rowsum(dO * O)``, applied only where both sides are
proved present at the same points (:meth:`_Builder.euler`). A gate that varies only along a contribution's
own ranks is added after its reduction, so that the reduction stays a contraction.

**What it refuses** (a located :class:`EinError`): iterative ranks, the running states of a 1-pass cascade:
differentiate the cascade as written (3-pass), whose forward pass ``passes="auto"`` derives.

>>> import einattn
>>> g = einattn.grad("examples/attention_3pass.ein")
>>> g.cotangents, g.gradients
({'AV': 'dAV'}, {'Q': 'dQ', 'K': 'dK', 'V': 'dV'})
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

from . import syntax as S
from .absence import Analysis, Necessary, conj, describable, presence_filter
from .errors import EinError, EinWarning, InternalError
from .graph import schedule
from .ir import Einsum, LhsIndex, Program, Tensor, renamed, renamed_expr, size_name
from .ir import coords as _coords
from .stabilizers import stabilizers

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class Gradient:
    """The backward program of a forward one (see the module)."""

    program: Program
    cotangents: dict  # forward output -> the name of its cotangent input
    gradients: dict  # forward input -> the name of its gradient output (in the order asked)
    forward: Program
    saved: tuple = ()  # forward tensors the backward program takes as inputs (their values, not recomputed)
    saved_inputs: dict = field(default_factory=dict)  # backward input -> the forward tensor it holds

    @property
    def text(self) -> str:
        from .format import format_program

        return format_program(self.program)


# ---- building expressions, with the zeros and ones folded away ------------------------------------------


def _const(e: S.Expr | None) -> float | None:
    return e.value if isinstance(e, S.Const) else None


def _add(a: S.Expr | None, b: S.Expr | None) -> S.Expr | None:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(b, S.Unary) and b.op == "-":
        return S.Binary("-", a, b.x)
    if isinstance(_const(b), (int, float)) and _const(b) < 0:
        return S.Binary("-", a, S.Const(-b.value))
    return S.Binary("+", a, b)


def _neg(a: S.Expr | None) -> S.Expr | None:
    if a is None:
        return None
    if isinstance(a, S.Unary) and a.op == "-":
        return a.x
    if _const(a) is not None:
        return S.Const(-a.value)
    return S.Unary("-", a)


def _sub(a: S.Expr | None, b: S.Expr | None) -> S.Expr | None:
    return _add(a, _neg(b))


def _mul(a: S.Expr | None, b: S.Expr | None) -> S.Expr | None:
    if a is None or b is None:
        return None
    ka, kb = _const(a), _const(b)
    if ka is not None and kb is not None:
        return S.Const(ka * kb)
    if ka == 1:
        return b
    if kb == 1:
        return a
    if ka == -1:
        return _neg(b)
    if kb == -1:
        return _neg(a)
    if isinstance(b, S.Binary) and b.op == "/" and _const(b.a) == 1:
        return S.Binary("/", a, b.b)
    if isinstance(a, S.Binary) and a.op == "/" and _const(a.a) == 1:
        return S.Binary("/", b, a.b)
    return S.Binary("*", a, b)


def _div(a: S.Expr | None, b: S.Expr) -> S.Expr | None:
    if a is None:
        return None
    if _const(b) == 1:
        return a
    return S.Binary("/", a, b)


def _call(fn: str, *args: S.Expr) -> S.Expr:
    return S.Call(fn, tuple(args))


def _k(v: float) -> S.Expr:
    return S.Const(float(v))


_BIG = 3.0e38  # (finite in float32 too)


def _gap(a: S.Expr, b: S.Expr) -> S.Expr:
    """``a - b``, with both clamped to finite values first: equal infinities give 0 (``inf - inf`` is NaN)."""
    lo, hi = _k(-_BIG), _k(_BIG)
    return S.Binary("-", _call("clamp", a, lo, hi), _call("clamp", b, lo, hi))


def _equal(d: S.Expr) -> S.Expr:
    """1 where ``d`` is 0, else 0 (a NaN too): ``step(|d| + 1) - step(d) - step(-d)``."""
    return _sub(
        _sub(_call("step", _add(_call("abs", d), S.Const(1))), _call("step", d)), _call("step", _neg(d))
    )


def _present(a: S.Expr) -> S.Expr:
    """0 where ``a`` is present (any value, NaN and infinities too), absent where it is absent."""
    return _call("step", _neg(_call("abs", a)))


def _indicator(a: S.Expr) -> S.Expr:
    """1 where ``a`` is present, 0 where it is absent."""
    return S.Default(S.Binary("+", _present(a), S.Const(1)), S.Const(0))


def _value_reads(e: S.Expr):
    """The reads of ``e`` that are values (not the reads inside an index: those are integers)."""
    if isinstance(e, S.Read):
        yield e
        return
    for c in e.children():
        yield from _value_reads(c)


# ---- the symbolic derivative -----------------------------------------------------------------------------


def _derivative(e: S.Expr, var: S.Read, present) -> S.Expr | None:
    """``de/dvar`` (None: zero), ``var`` a read (every read equal to it is the same variable). ``present(a)``
    says whether ``a`` is present wherever the statement's term is (``a ?? b`` then is ``a``)."""

    def d(x: S.Expr) -> S.Expr | None:
        if isinstance(x, S.Read):
            return S.Const(1) if x == var else None
        if isinstance(x, (S.Const, S.Coord, S.Size, S.Param)):
            return None
        if isinstance(x, S.Unary):
            return _neg(d(x.x))
        if isinstance(x, S.Binary):
            da, db = d(x.a), d(x.b)
            if x.op == "+":
                return _add(da, db)
            if x.op == "-":
                return _sub(da, db)
            if x.op == "*":
                return _add(_mul(da, x.b), _mul(x.a, db))
            if x.op == "/":  # (da - (a / b) db) / b
                return _div(_sub(da, _mul(x, db)), x.b)
            if x.op == "%":  # a - b floor(a / b)
                return _sub(da, _mul(db, S.Binary("//", x.a, x.b)))
            if x.op == "//":  # piecewise constant
                return None
            raise InternalError(f"no derivative for operator {x.op!r}")
        if isinstance(x, S.Default):
            da, db = d(x.a), d(x.b)
            if present(x.a):
                return da
            if da is None and db is None:
                return None
            keep = _indicator(x.a)
            return _add(_mul(keep, da), _mul(_sub(S.Const(1), keep), db))
        if isinstance(x, S.Call):
            return _call_derivative(x, d)
        raise InternalError(f"no derivative for {type(x).__name__}")

    return d(e)


def _call_derivative(x: S.Call, d) -> S.Expr | None:
    fn, args = x.fn, x.args
    if fn == "clamp":  # min(max(x, lo), hi), as the backends compute it (ties split as there)
        return d(_call("min", _call("max", args[0], args[1]), args[2]))
    if fn in ("max", "min"):
        a, b = args
        da, db = d(a), d(b)
        if da is None and db is None:
            return None
        # as torch.maximum: the larger side takes the cotangent, a tie splits it, and where the
        # comparison fails (a NaN) both sides take it
        d_ = _gap(a, b)
        gt, lt = _call("step", d_), _call("step", _neg(d_))
        half = _mul(_k(0.5), _equal(d_))
        wa, wb = _sub(_sub(S.Const(1), lt), half), _sub(_sub(S.Const(1), gt), half)
        if fn == "min":
            wa, wb = wb, wa
        return _add(_mul(wa, da), _mul(wb, db))
    (a,) = args
    da = d(a)
    if da is None or fn == "step":
        return None
    local = {
        "exp": lambda: x,
        "exp2": lambda: _mul(x, _k(_LN2)),
        "log": lambda: S.Binary("/", S.Const(1), a),
        "log2": lambda: S.Binary("/", S.Const(1), _mul(a, _k(_LN2))),
        "sqrt": lambda: S.Binary("/", _k(0.5), x),
        "rsqrt": lambda: _mul(_k(-0.5), _mul(x, _mul(x, x))),
        "tanh": lambda: _sub(S.Const(1), _call("square", x)),
        "sigmoid": lambda: _mul(x, _sub(S.Const(1), x)),
        # step(x), and 1 at NaN, as torch's threshold_backward (a NaN is not <= 0)
        "relu": lambda: _sub(
            _add(_call("step", a), S.Const(1)), _call("step", _add(_call("abs", a), S.Const(1)))
        ),
        "elu": lambda: _add(
            _call("step", a),
            _mul(_sub(S.Const(1), _call("step", a)), _call("exp", _call("min", a, S.Const(0)))),
        ),
        "softplus": lambda: _call("sigmoid", a),
        "abs": lambda: _sub(_call("step", a), _call("step", _neg(a))),
        "square": lambda: _mul(_k(2.0), a),
    }
    if fn not in local:
        raise InternalError(f"no derivative for function {fn!r}")
    return _mul(local[fn](), da)


def _fold(e: S.Expr) -> S.Expr:
    """``e`` with additions of 0 and arithmetic on integer constants folded (``i - (0 + 1)`` is ``i - 1``)."""
    kids = [_fold(c) for c in e.children()]
    if isinstance(e, S.Unary) and _const(kids[0]) is not None:
        return S.Const(-kids[0].value)
    if isinstance(e, S.Binary) and e.op in "+-*":
        a, b = kids
        ka, kb = _const(a), _const(b)
        if isinstance(ka, int) and isinstance(kb, int):
            return S.Const({"+": ka + kb, "-": ka - kb, "*": ka * kb}[e.op])
        if e.op in "+-" and kb == 0:
            return a
        if e.op == "+" and ka == 0:
            return b
        if e.op == "-" and ka == 0:
            return _neg(b)
    return S.rebuild(e, kids) if kids else e


def _canonical(an: Analysis, e: S.Expr | None) -> S.Expr | None:
    """``e`` with each affine index of a read written as ``a r + ... + c`` (``m - (m - m2)`` is ``m2``)."""

    def affine(x: S.Expr) -> S.Expr:
        aff = an.affine(x)
        if aff is None or any(a[0] != "size" for a, _ in aff.const.terms):
            return _fold(x)
        out = None
        for r, k in sorted(aff.coefs, key=lambda rk: rk[1] < 0):  # (positive terms first)
            out = _add(out, _mul(S.Const(k), S.Coord(r)))
        for (_, r), k in aff.const.terms:
            out = _add(out, _mul(S.Const(k), S.Size(r)))
        if aff.const.const or out is None:
            out = _add(out, S.Const(aff.const.const))
        return _fold(out)

    def read(x: S.Expr):
        if isinstance(x, S.Read):
            return S.Read(x.tensor, tuple(affine(S.rewrite_expr(i, read)) for i in x.indices))
        return None

    return None if e is None else S.rewrite_expr(e, read)


def _product_factors(e: S.Expr) -> list[S.Expr]:
    """The factors of a product ``a * b * ...`` (the expression itself when it is not one)."""
    if isinstance(e, S.Binary) and e.op == "*":
        return _product_factors(e.a) + _product_factors(e.b)
    return [e]


def _without(e: S.Expr, x: S.Expr) -> S.Expr | None:
    """``g`` such that ``e = x * g`` (``x`` one factor of a product, possibly negated or divided), or
    None. ``g`` does not contain ``x`` (nor read ``x``'s tensor, where ``x`` is a read)."""
    if e == x:
        return S.Const(1)
    if isinstance(e, S.Unary) and e.op == "-":
        g = _without(e.x, x)
        return None if g is None else _neg(g)
    if isinstance(e, S.Binary) and e.op in "*/":
        reads = [_holds(side, x) for side in (e.a, e.b)]
        if e.op == "/" and reads == [True, False]:
            g = _without(e.a, x)
            return None if g is None else _div(g, e.b)
        if e.op == "*" and reads == [True, False]:
            g = _without(e.a, x)
            return None if g is None else _mul(g, e.b)
        if e.op == "*" and reads == [False, True]:
            g = _without(e.b, x)
            return None if g is None else _mul(e.a, g)
    return None


def _holds(e: S.Expr, x: S.Expr) -> bool:
    """Whether ``e`` contains ``x`` (reads ``x``'s tensor, where ``x`` is a read)."""
    if isinstance(x, S.Read):
        return any(isinstance(n, S.Read) and n.tensor == x.tensor for n in e.walk())
    return any(n == x for n in e.walk())


def _replace(e: S.Expr | None, old: S.Expr, new: S.Expr) -> S.Expr | None:
    """``e`` with every subexpression equal to ``old`` replaced by ``new``."""
    if e is None:
        return None
    return S.rewrite_expr(e, lambda n: new if n == old else None)


# ---- the backward program --------------------------------------------------------------------------------


class _Names:
    """Fresh names for tensors and ranks, clear of everything the program uses."""

    def __init__(self, prog: Program):
        self.taken = {t.name for t in prog.tensors} | {n for n, _ in prog.params}
        self.taken |= set(prog.ranks) | {size_name(r) for r in prog.ranks}
        self.taken |= {a for a, _ in prog.aliases}

    def tensor(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def rank(self, base: str) -> str:
        k = 1
        while True:
            name = f"{base}{k}" if not base[-1:].isdigit() else f"{base}_{k}"
            if name not in self.taken and size_name(name) not in self.taken:
                self.taken |= {name, size_name(name)}
                return name
            k += 1


def _split_mixed(prog: Program, names: _Names) -> Program:
    """``prog`` with each statement that reduces with two operators (``Y[i] = X[i, j, k] :: max(k)``: a sum
    over ``j``, then a max over ``k``) written as two: ``Y_sum[i, k] = X[i, j, k]``, ``Y[i] = Y_sum[i, k] ::
    max(k)``. The same values; each statement then reduces with one operator, as the rule needs."""
    einsums, tensors = [], list(prog.tensors)
    for e in prog.einsums:
        ops = list(dict.fromkeys(op for _, op in e.reduce))
        if len(ops) < 2:
            einsums.append(e)
            continue
        first = ops[0]  # (the reductions apply in order: the implicit + ranks first)
        inner = tuple(r for r, op in e.reduce if op == first)
        outer = tuple((r, op) for r, op in e.reduce if op != first)
        lhs = (*e.lhs_ranks, *(r for r, _ in outer))
        u = names.tensor(f"{e.tensor}_{'sum' if first == '+' else first}")
        einsums.append(
            Einsum(
                u,
                tuple(LhsIndex(r) for r in lhs),
                e.expr,
                tuple((r, first) for r in inner),
                e.filter,
                (*lhs, *inner),
                e.span,
            )
        )
        einsums.append(
            replace(
                e,
                expr=S.Read(u, tuple(S.Coord(r) for r in lhs)),
                reduce=outer,
                filter=None,
                space=(*e.lhs_ranks, *(r for r, _ in outer)),
            )
        )
        tensors.append(Tensor(u, lhs))
    return replace(prog, tensors=tuple(tensors), einsums=tuple(einsums))


_BIG_TERM = 40  # nodes: a statement larger than this has its shared operands named (below)


def _named_operands(prog: Program, names: _Names) -> Program:
    """``prog`` with the operands that derivatives repeat written as statements of their own, in statements
    larger than ``_BIG_TERM`` nodes: the non-leaf arguments of ``max``, ``min`` and ``clamp`` and the left
    side of ``??``. The derivative of ``max(a, b)`` reads ``a`` and ``b``; through 30 nested maxima each
    read's derivative would spell out every level (the text grows with the square of the nesting). The values
    are the same: each new tensor holds the operand at every point of the ranks it mentions."""
    einsums, tensors = [], list(prog.tensors)
    order = {r: k for k, r in enumerate(prog.ranks)}

    def size(x: S.Expr) -> int:
        return sum(1 for _ in x.walk())

    for e in prog.einsums:
        if size(e.expr) <= _BIG_TERM:
            einsums.append(e)
            continue

        def name(x: S.Expr, e: Einsum = e) -> S.Expr:
            if isinstance(x, (S.Read, S.Const, S.Coord, S.Size, S.Param)):
                return x
            ranks = tuple(sorted({c.rank for c in x.walk() if isinstance(c, S.Coord)}, key=order.get))
            t = names.tensor(f"{e.tensor}_t")
            einsums.append(Einsum(t, tuple(LhsIndex(r) for r in ranks), x, (), None, ranks, e.span))
            tensors.append(Tensor(t, ranks))
            return S.Read(t, tuple(S.Coord(r) for r in ranks))

        def walk(x: S.Expr, name=name) -> S.Expr:  # bottom-up: inner operands are named first
            kids = [walk(c) for c in x.children()] if not isinstance(x, S.Read) else list(x.children())
            if isinstance(x, S.Call) and x.fn in ("max", "min", "clamp"):
                kids = [name(k) for k in kids]
            elif isinstance(x, S.Default):
                kids = [name(kids[0]), kids[1]]
            return S.rebuild(x, kids) if kids else x

        einsums.append(replace(e, expr=walk(e.expr)))
    return replace(prog, tensors=tuple(tensors), einsums=tuple(einsums))


def _needed(prog: Program, roots, given=frozenset()) -> set[str]:
    """The tensors that the tensors ``roots`` read, transitively (``roots`` included), not through the
    tensors ``given`` (whose values are inputs)."""
    defs = {e.tensor: e for e in prog.einsums}
    need: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name not in need and name in defs and name not in given:
            need.add(name)
            stack += [rd.tensor for rd in defs[name].reads()]
    return need


class _Builder:
    def __init__(self, prog: Program, wrt: tuple[str, ...], names: _Names, saved=frozenset()):
        self.prog, self.wrt, self.saved = prog, wrt, frozenset(saved)
        self.source: dict[str, Einsum] = {}  # contribution -> the forward statement whose read sent it
        self.an = Analysis(prog)
        self.necessary = Necessary(prog)
        self.names = names
        self.cut = stabilizers(prog)
        self.aliases: list[tuple[str, str]] = list(prog.aliases)
        self.statements: list[Einsum] = []  # the backward statements, in order
        self.parts: dict[str, list[str]] = {}  # tensor -> its contributions' tensors
        self.grads: dict[str, str] = {}  # tensor -> its cotangent's tensor
        self.shapes: dict[str, tuple[str, ...]] = {}  # backward tensor -> its ranks
        self.presence: dict[str, str] = {}  # statement -> the tensor of its term's presence (a gate)
        self.counts: dict[str, str] = {}  # max/min statement -> the tensor counting the points that attain it
        self.seeds: set[str] = set()  # the cotangents of the outputs (inputs of the backward program)
        # names that a size cannot take (`K`: the tensor, not the size of rank k)
        self.hidden = {t.name for t in prog.tensors}

    # which tensors carry a cotangent: those between an input asked for and an output
    def active(self, order: list[Einsum]) -> set[str]:
        float_inputs = {n for n in self.prog.inputs if self.prog.tensor(n).dtype == "float"}
        forward = set(self.wrt)
        for e in order:
            if e.tensor not in self.cut and any(r.tensor in forward for r in _value_reads(e.expr)):
                forward.add(e.tensor)
        backward = set(self.prog.outputs)
        for e in reversed(order):
            if e.tensor in backward and e.tensor not in self.cut:
                backward |= {r.tensor for r in _value_reads(e.expr)}
        return {
            t
            for t in forward & backward
            if t not in self.cut and (t in float_inputs or t not in self.prog.inputs)
        }

    def emit(self, name: str, lhs: tuple[str, ...], expr: S.Expr, reduced: tuple[str, ...], filt, op="+"):
        self.statements.append(
            Einsum(
                name,
                tuple(LhsIndex(r) for r in lhs),
                expr,
                tuple((r, op) for r in reduced),
                filt,
                (*lhs, *reduced),
            )
        )
        self.shapes[name] = lhs

    def cotangent(self, t: str) -> str | None:
        """The cotangent of ``t`` (its contributions summed), emitted on first use; None where every
        contribution is 0 (``X1`` in ``exp(X0 ?? X1)``, X0 a scalar: the default is never taken)."""
        if t in self.grads:
            return self.grads[t]
        ranks = self.prog.tensor(t).ranks
        parts = self.parts.get(t, [])
        if not parts:
            return None
        if len(parts) == 1 and self.shapes[parts[0]] == ranks:
            self.grads[t] = parts[0]
            return parts[0]
        name = self.names.tensor(f"d{t}")
        here = tuple(S.Coord(r) for r in ranks)
        terms = [S.Default(S.Read(p, here), S.Const(0)) for p in parts]
        total = terms[0]
        for term in terms[1:]:
            total = S.Binary("+", total, term)
        if t not in self.prog.inputs and self.an.tensor(t) != frozenset():  # absent where t is
            total = S.Binary("+", total, _present(S.Read(t, here)))
        self.emit(name, ranks, total, (), None)
        self.grads[t] = name
        return name

    def contribution(self, e: Einsum, var: S.Read, dT: str) -> None:
        """The part of ``var.tensor``'s cotangent that statement ``e`` sends through its read ``var``."""
        x = var.tensor
        op = e.reduce[0][1] if e.reduce else "+"  # (one operator: _split_mixed)
        lhs_here = S.Read(dT, tuple(S.Coord(r) for r in e.lhs_ranks))
        value_here = S.Read(e.tensor, tuple(S.Coord(r) for r in e.lhs_ranks))

        def present(a: S.Expr) -> bool:
            return self.an.expr(a) == frozenset()

        deriv = _derivative(e.expr, var, present)
        if deriv is None:
            return
        if not e.reduce:  # T = E where F: T holds E wherever the term is present
            deriv = _replace(deriv, e.expr, value_here)
        term, gate = deriv, None
        if op in ("max", "min"):  # the points that attain it, ties split evenly
            hit = _equal(_gap(value_here, e.expr))  # 1 where the term attains the max (min)
            if e.label not in self.counts:  # how many points do, once per statement
                self.counts[e.label] = self.names.tensor(f"N{e.tensor}")
                self.emit(self.counts[e.label], e.lhs_ranks, hit, e.reduced, e.filter)
            term = _div(_mul(term, hit), S.Read(self.counts[e.label], tuple(S.Coord(r) for r in e.lhs_ranks)))
        else:
            gate = self.gate(e, deriv, dT, value_here)
        whole = _mul(lhs_here, term if gate is None else S.Binary("+", term, gate))
        term = _mul(lhs_here, term)

        # the ranks of the contribution: the read's plain ranks, solved affine indices, or a filter
        space = set(e.space)
        decl = self.prog.tensor(x).ranks
        lhs: list[str] = []
        sub: dict[str, S.Expr] = {}
        conds: list[S.Expr] = []
        for j, ix in enumerate(var.indices):
            others = {
                c.rank
                for k, o in enumerate(var.indices)
                if k != j
                for c in o.walk()
                if isinstance(c, S.Coord)
            }
            plain = isinstance(ix, S.Coord) and ix.rank in space and ix.rank not in others
            if plain and ix.rank not in lhs and ix.rank not in sub:  # the contribution keeps the rank
                lhs.append(ix.rank)
                continue
            y = decl[j] if decl[j] not in space and decl[j] not in lhs else self.alias(decl[j])
            lhs.append(y)
            solved = self.solve(ix, space - set(lhs) - set(sub) - others, y)
            if solved is None:  # summed over, under `index == y`
                conds.append(S.Compare("==", ix, S.Coord(y)))
                continue
            r, value = solved
            value = S.subst(value, sub)  # (composed with the ranks solved before)
            sub = {k: S.subst(v, {r: value}) for k, v in sub.items()}
            sub[r] = value
            if not self.bounded(term, r):  # r = value must stay within r's range
                if size_name(r) in self.hidden:
                    raise EinError(
                        f"cannot differentiate `{e.tensor}`: its gradient bounds rank `{r}` by its size "
                        f"`{size_name(r)}`, which the tensor `{size_name(r)}` hides",
                        span=e.span,
                        hint=f"rename the tensor `{size_name(r)}`",
                    )
                conds += [S.Compare("<=", S.Const(0), S.Coord(r)), S.Compare("<", S.Coord(r), S.Size(r))]
        reduced = tuple(r for r in e.space if r not in lhs and r not in sub)
        filt = e.filter
        for c in conds:
            filt = c if filt is None else S.Logic("and", filt, c)
        term, gate, whole, filt = (
            _canonical(self.an, _fold(S.subst(x, sub))) if x is not None else None
            for x in (term, gate, whole, filt)
        )
        name = self.names.tensor(f"d{x}_{e.tensor}")
        lhs = tuple(lhs)
        euler = None if gate is not None or conds or sub or e.filter else self.euler(e, deriv, lhs, reduced)
        if euler is not None:
            self.emit(name, lhs, euler[0], euler[1], None)
        elif gate is not None and reduced and set(_coords(gate)) <= set(lhs):
            # the gate varies only along the contribution's own ranks: added after the reduction (the same
            # values and presence), so that the reduction stays a plain contraction (`tl.dot` in a fused
            # kernel) instead of summing a gate broadcast along its reduced ranks
            value = self.names.tensor(f"{name}_v")
            self.emit(value, lhs, *self._summed(term, filt, reduced))
            self.emit(name, lhs, S.Binary("+", S.Read(value, tuple(S.Coord(r) for r in lhs)), gate), (), None)
        else:
            self.emit(name, lhs, *self._summed(whole, filt, reduced))
        self.parts.setdefault(x, []).append(name)
        self.source[name] = e

    @staticmethod
    def _summed(term: S.Expr, filt, reduced: tuple[str, ...]) -> tuple:
        """(term, reduced ranks, filter) of a contribution: a sum over a rank the term and the filter do not
        vary along is R times the term."""
        mentioned = {r for x in (term, filt) if x is not None for r in _coords(x)}
        for r in reduced:
            if r not in mentioned:
                term = _mul(term, S.Size(r))
        return term, tuple(r for r in reduced if r in mentioned), filt

    def euler(self, e: Einsum, deriv: S.Expr, lhs: tuple[str, ...], reduced: tuple[str, ...]):
        """``(term, reduced ranks)`` of ``sum_R dT * T * g`` written as ``sum_F dO * O * g``, or None.

        Where ``T``'s one reader is a saved ``O[l, F] = sum_R T[l, R] * W`` (linear in ``T``), ``dT = sum_F
        dO * W`` and ``sum_R dT * T = sum_F dO * (sum_R T * W) = sum_F dO * O``: the sum over the keys
        becomes one over the features of the saved output. Softmax's ``sum_m dA * A`` (the denominator's
        cotangent, ``A = SN / SD``) becomes ``sum_f dAV * AV``, FlashAttention-2's ``rowsum(dO * O)``: no
        pass over the keys. Applied only where the presence analysis proves both sides present at the same
        points."""
        if not self.saved or not reduced:
            return None
        if e.reduce:
            return self.euler_own(e, deriv, lhs, reduced)
        here = S.Read(e.tensor, tuple(S.Coord(r) for r in e.lhs_ranks))
        g = _without(deriv, here)
        if g is None or not set(_coords(g)) <= set(lhs):
            return None
        parts = self.parts.get(e.tensor, [])
        if len(parts) != 1 or parts[0] not in self.source:
            return None
        o = self.source[parts[0]]
        if o.tensor not in self.saved or o.filter is not None or o.kind != "plain":
            return None
        if any(op != "+" for _, op in o.reduce) or set(o.reduced) != set(reduced):
            return None
        factors = _product_factors(o.expr)
        plain = S.Read(e.tensor, tuple(S.Coord(r) for r in self.prog.tensor(e.tensor).ranks))
        mine = [f for f in factors if any(isinstance(n, S.Read) and n.tensor == e.tensor for n in f.walk())]
        if mine != [plain] or not set(lhs) <= set(o.lhs_ranks):
            return None
        if set(self.prog.tensor(e.tensor).ranks) != set(lhs) | set(reduced):
            return None
        return self.rowsum(o, self.an.expr(S.Binary("*", here, g)), reduced, lhs, g)

    def rowsum(self, o: Einsum, before, reduced: tuple[str, ...], lhs: tuple[str, ...], g: S.Expr):
        """``(sum_F dO * O * g, F)``, where its presence is ``before``'s (the term it replaces, over its
        space, summed over ``reduced``); else None. A saved ``O`` keeps its absent points (``O_in``)."""
        rest = tuple(r for r in o.lhs_ranks if r not in lhs)
        at = tuple(S.Coord(r) for r in o.lhs_ranks)
        after = self.an.expr(S.Binary("*", S.Read(o.tensor, at), g))
        for r in reduced:
            before = self.an.eliminate(before, r)
        for r in rest:
            after = self.an.eliminate(after, r)
        if before is None or after is None or self.an.simplify(before) != self.an.simplify(after):
            return None
        d_o = self.cotangent(o.tensor)
        if d_o is None:
            return None
        return _mul(_mul(S.Read(d_o, at), S.Read(o.tensor, at)), g), rest

    def euler_own(self, e: Einsum, deriv: S.Expr, lhs: tuple[str, ...], reduced: tuple[str, ...]):
        """The same identity where the read is in a saved sum's own summand: ``O[l, F] = sum_R E`` with
        ``dE/dX = E * g`` (``g`` free of ``R``: ``E = N * V / D`` gives ``-E / D``), so ``sum_(R, F)
        dO * E * g = sum_F dO * O * g``: softmax attention written in one statement, ``O = N * V / D``; ``g``
        may vary along ``O``'s own ranks (a sink's gradient: ``g = -exp(SINK[h] - G[b, h, p]) / D'``)."""
        if e.tensor not in self.saved or e.kind != "plain" or any(op != "+" for _, op in e.reduce):
            return None
        g = _without(deriv, e.expr)  # (g may vary along O's own ranks: a sink's `exp(SINK[h] - G[b, h, p])`)
        if g is None or not set(_coords(g)) <= set(e.lhs_ranks) or not set(lhs) <= set(e.lhs_ranks):
            return None
        if set(reduced) != set(e.reduced) | (set(e.lhs_ranks) - set(lhs)):
            return None
        before = conj(self.an.filter(e.filter), self.an.expr(S.Binary("*", e.expr, g)))
        return self.rowsum(e, before, reduced, lhs, g)

    def bounded(self, term: S.Expr, r: str) -> bool:
        """Whether ``term`` is absent wherever rank ``r`` leaves its range: it reads ``r`` plainly at a
        dimension of rank ``r`` (out of range, the read is absent), outside any ``??``."""

        def walk(x: S.Expr) -> bool:
            if isinstance(x, S.Default):  # (a read under ?? is replaced where absent)
                return False
            if isinstance(x, S.Read):
                ranks = self.shapes[x.tensor] if x.tensor in self.shapes else self.prog.tensor(x.tensor).ranks
                if any(
                    ix == S.Coord(r) and d < len(ranks) and ranks[d] == r for d, ix in enumerate(x.indices)
                ):
                    return True
            return any(walk(c) for c in x.children())

        return walk(term)

    def alias(self, rank: str) -> str:
        """A fresh rank with the size of ``rank`` (``rank X1 = X``)."""
        new = self.names.rank(rank)
        self.aliases.append((new, rank))
        return new

    def solve(self, ix: S.Expr, free: set[str], y: str):
        """``(r, value)`` where ``ix = y`` solves to ``r = value`` (``ix`` affine with ``r``'s coefficient
        +-1, ``r`` a rank in ``free``), or None."""
        aff = self.an.affine(ix)
        if aff is None:
            return None
        for r, a in aff.coefs:
            if r in free and a in (1, -1):
                rest = _fold(S.subst(ix, {r: S.Const(0)}))
                value = S.Binary("-", S.Coord(y), rest) if a == 1 else S.Binary("-", rest, S.Coord(y))
                if _const(rest) == 0:
                    value = S.Coord(y) if a == 1 else S.Unary("-", S.Coord(y))
                return r, value
        return None

    def gate(self, e: Einsum, deriv: S.Expr, dT: str, here: S.Read) -> S.Expr | None:
        """What makes a contribution absent where the forward term ``e.expr`` is (the forward sum skips
        the term there), or None where nothing has to: 0 where the term is present, absent elsewhere.

        A cotangent is absent wherever its tensor is (an invariant: each contribution to it is absent where
        the term that read the tensor is, and a sum of contributions is gated by the tensor), except the
        cotangent of an output, an input of the backward program, present everywhere. ``here`` is
        ``e``'s tensor read at its left-hand side."""
        if not e.reduce:  # the term is present exactly where the tensor is
            if dT not in self.seeds or self.an.tensor(e.tensor) == frozenset():
                return None
            return _present(here)
        whole = self.an.expr(e.expr)
        if whole == frozenset():
            return None
        # what holds wherever the contribution is present: the derivative's and the filter's constraints,
        # and the tensor's, as the cotangent is absent wherever the tensor is (the invariant above); the
        # affine part where the presence is unknown (`m < klen[b]`: GQA's `R G - 1 - h >= 0` still holds)
        have = self.necessary.expr(deriv) | self.necessary.filter(e.filter)
        if dT not in self.seeds:
            have |= self.necessary.tensor(e.tensor)
        if whole is not None and whole <= have:
            return None
        gates = None
        if not any(isinstance(n, S.Default) for n in e.expr.walk()):  # (else a read may be absent, rescued)
            pres = {rd: self.an.expr(rd) for rd in dict.fromkeys(_value_reads(e.expr))}
            sure = self.an.needs(deriv)  # (reads of the derivative itself: present wherever it is)
            gates = [rd for rd, p in pres.items() if rd not in sure and (p is None or not p <= have)]
        if gates is not None and len(gates) <= 2:  # the presence of the reads that can be absent
            total = None
            for rd in gates:
                total = _add(total, _present(rd))
            return total
        # the term's presence, once per statement: a gate of the whole term in each contribution would
        # repeat it once per read (quadratic in the reads of a long sum)
        if e.label not in self.presence:
            name = self.names.tensor(f"P{e.tensor}")
            self.emit(name, e.space, _present(e.expr), (), e.filter)
            self.presence[e.label] = name
        return S.Read(self.presence[e.label], tuple(S.Coord(r) for r in e.space))


def grad(spec, wrt=None, params=None, saved=()) -> Gradient:
    """The backward program of ``spec`` (a path, text or :class:`Program`): see the module. ``wrt``: the
    float inputs to differentiate with respect to (default: every float input the outputs depend on);
    ``params``: overrides, as for :func:`einattn.compile`; ``saved``: computed tensors (the outputs, say)
    whose values the caller has from the forward pass: inputs of the backward program, after the
    cotangents, instead of statements recomputing them (autograd keeps a function's outputs)."""
    from .api import _program, parse
    from .check import normalize_params
    from .format import format_parts

    prog = _program(spec).with_params(normalize_params(params))
    for t in prog.tensors:
        if t.iterative is not None:
            raise EinError(
                f"cannot differentiate `{t.name}`: it is an iterative tensor (a running state)",
                span=t.span,
                hint='differentiate the cascade as written (the 3-pass form); `passes="auto"` derives '
                "its 1-pass forward pass",
            )
    floats = [n for n in prog.inputs if prog.tensor(n).dtype == "float"]
    if wrt is None:
        asked = None
    else:
        asked = (wrt,) if isinstance(wrt, str) else tuple(dict.fromkeys(wrt))  # (each input once)
        for n in asked:
            if n not in prog.inputs:
                raise EinError(
                    f"`{n}` is not an input of the spec", hint=f"its inputs: {', '.join(prog.inputs)}"
                )
            if n not in floats:
                raise EinError(f"`{n}` is an integer input: it has no gradient", hint="ask for float inputs")
    saved = (saved,) if isinstance(saved, str) else tuple(dict.fromkeys(saved))
    for n in saved:
        if n in prog.inputs or not any(t.name == n for t in prog.tensors):
            raise EinError(
                f"`{n}` is not a computed tensor of the spec: only computed values are saved",
                hint=f"its outputs: {', '.join(prog.outputs)}",
            )
    # a computed tensor named as a rank's size (`G[b, h, p]` hides rank g's size `G`) is renamed, so that
    # the gradient's filters can bound the rank (`where -h + 2 * G - 1 >= 0`: GQA's heads past the last group)
    sizes = {size_name(r) for r in prog.ranks}
    kept = {*prog.inputs, *prog.outputs, *saved}
    hiding = [t.name for t in prog.tensors if t.name in sizes and t.name not in kept]
    names = _Names(prog)
    moved = {n: names.tensor(n) for n in hiding}
    prog = renamed(prog, moved)
    prog = _named_operands(_split_mixed(prog, names), names)
    # a saved value's absent points arrive as 0: an input `X_in` restores them with the presence analysis's
    # constraints as a filter; a value whose absence the analysis cannot describe is recomputed instead
    an = Analysis(prog)
    restore: list[Einsum] = []
    held: dict[str, str] = {}  # backward input -> forward tensor
    hidden = {t.name for t in prog.tensors}
    for n in saved:
        presence = an.tensor(n)
        if not describable(presence, hidden):
            continue
        cond = presence_filter(presence)
        if cond is None:
            held[n] = n
            continue
        alias = names.tensor(f"{n}_in")
        held[alias] = n
        ranks = prog.tensor(n).ranks
        here = tuple(S.Coord(r) for r in ranks)
        restore.append(Einsum(n, tuple(LhsIndex(r) for r in ranks), S.Read(alias, here), (), cond, ranks))
    saved = tuple(held.values())
    b = _Builder(prog, asked if asked is not None else tuple(floats), names, saved)
    order = [step.einsum for step in schedule(prog)]  # (no recurrence: every step is dense)
    active = b.active(order)
    targets = tuple(n for n in (asked or floats) if n in active)
    if asked is not None and len(targets) < len(asked):
        missing = [n for n in asked if n not in active]
        raise EinError(
            f"no output depends on {', '.join(f'`{n}`' for n in missing)}: the gradient is 0",
            hint="ask for inputs that an output reads, through values (not filters or indices)",
        )
    if not targets:
        raise EinError("no output depends on a float input: there is nothing to differentiate")

    cot = {o: b.names.tensor(f"d{o}") for o in prog.outputs if o in active}
    for o, name in cot.items():
        b.parts[o] = [name]
        b.shapes[name] = prog.tensor(o).ranks
        b.seeds.add(name)
    for e in reversed(order):
        if e.tensor not in active:
            continue
        dT = b.cotangent(e.tensor)
        if dT is None:
            continue
        seen: set[S.Read] = set()
        for rd in _value_reads(e.expr):
            if rd.tensor in active and rd not in seen:
                seen.add(rd)
                b.contribution(e, rd, dT)
    outs = []
    for n in targets:
        name = b.cotangent(n)
        if name is None:  # 0 (as 0 * X, without the NaN of 0 * inf)
            ranks = prog.tensor(n).ranks
            name = b.names.tensor(f"d{n}")
            b.emit(name, ranks, _present(S.Read(n, tuple(S.Coord(r) for r in ranks))), (), None)
        outs.append(name)
    # an input's one contribution is its gradient: named after the input (`dQ`, not `dQ_QK`)
    final = {o: b.names.tensor(f"d{n}") for n, o in zip(targets, outs) if o in b.parts.get(n, ())}
    b.statements = [
        replace(
            st,
            tensor=final.get(st.tensor, st.tensor),
            expr=renamed_expr(st.expr, final),
            filter=renamed_expr(st.filter, final),
        )
        for st in b.statements
    ]
    outs = tuple(final.get(o, o) for o in outs)

    # the forward statements the backward reads, and the inputs
    need = _needed(prog, [rd.tensor for st in b.statements for rd in st.reads()], frozenset(saved))
    forward = [e for e in order if e.tensor in need]
    read = {rd.tensor for e in forward + b.statements for rd in e.reads()}
    forward = [e for e in restore if e.tensor in read] + forward
    inputs = [prog.tensor(n) for n in prog.inputs]
    inputs += [Tensor(name, prog.tensor(o).ranks, "float", "input") for o, name in cot.items()]
    held = {a: n for a, n in held.items() if n in read}
    inputs += [Tensor(a, prog.tensor(n).ranks, "float", "input") for a, n in held.items()]
    saved = tuple(held.values())
    header = [
        f"gradient of {prog.name} with respect to {', '.join(targets)} (einattn.autodiff, reverse mode)",
        "inputs: the forward inputs, then the cotangent of each output (d<output>: d loss / d output)"
        + (f", then the saved forward values {', '.join(saved)}" if saved else ""),
    ]
    if moved:
        header.append(
            "renamed: "
            + ", ".join(f"{n} -> {m}" for n, m in moved.items())
            + " (each hid the size of a rank, which the gradient's filters read)"
        )
    text = format_parts(
        inputs,
        outs,
        prog.params,
        prog.partitions,
        [*forward, *b.statements],
        header=header,
        aliases=b.aliases,
    )
    try:
        with warnings.catch_warnings():  # (the derived text's warnings are not the user's to act on)
            warnings.simplefilter("ignore", EinWarning)
            back = parse(text, f"{prog.name} (gradient)")
    except EinError as err:  # (a bug of this module: the derived text must be a valid spec)
        raise InternalError(f"the derived gradient does not check: {err}\n{text}") from err
    back = replace(back, warnings=())
    return Gradient(back, cot, dict(zip(targets, outs)), prog, saved, held)


__all__ = ["Gradient", "grad"]
