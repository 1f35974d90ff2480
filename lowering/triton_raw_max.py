"""The fused kernel's running max held in the units of the raw scores: the scale and ``log2 e`` one product.

The rewrite's online softmax computes, per tile, ``SLN = exp(BQK - RM')`` and ``PRM = exp(RM - RM')`` with
``RM' = max(RM, LM)``, ``LM`` the tile's max of ``BQK`` and ``BQK = (Q . K) * rsqrt(E)``. As written, each
score costs a product by the scale, a subtraction, a product by ``log2 e`` (``exp`` is ``exp2`` on a GPU)
and the ``exp2``. Where every tile whose max the running max takes is a product with the same scalar
factors ``s``, provably positive, the kernel computes the tile without them (the raw ``Q . K``), takes its
max (a positive factor commutes with max), holds ``RM / s`` (the variable ``t_RM`` is in the raw scores'
units) and, with ``c = s * log2 e`` (``t_BQK_log2``, once per program), computes

* ``RM' / s = max(RM / s, LM_raw)``: no product at all;
* ``SLN = exp2((BQK_raw - RM' / s) * c)``: a subtraction and one product per score, then ``exp2``;
* ``PRM = exp2((RM / s - RM' / s) * c)``.

Machine code of the loop over whole tiles (sm_90, float16, head dim 64, 64 rows, 4 warps, ``python -m
einattn.lowering.triton_aot``): 372 instructions before, 340 after; Triton's fused-attention tutorial has
291, with ``exp2(fma(qk, c, -m * c))``, which this form does not use: ``m * c`` is rounded, and at scores of
1e9 its rounding (hundreds, in the exponent) makes ``exp2`` overflow where the scores as written give a
finite answer (a reviewer's case, ``tests/test_review_s16_triton.py``).

Exactness: the subtraction is exact where the score is near the max (the max's own exponent is 0, at any
magnitude), and scores and maxes stay in their own units, so nothing overflows that did not (a padding
bias of ``torch.finfo(float32).min`` inside the product gives equal scores, as written). It applies only
where every read of the running max is one of these forms (not read after the loop, as a log-sum-exp
output reads it) and the tile maxes are read by its step alone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

from einattn import syntax as S
from einattn.ir import Einsum
from einattn.rewrite.exact import shift_operands as exp_operands
from einattn.rewrite.rules import factors, product, tensors_read

LOG2E = 1.4426950408889634


@dataclass
class RawMax:
    """Which running maxes the kernel holds in the raw scores' units (divided by their scale ``s``)."""

    states: frozenset[str] = frozenset()
    # such a state -> a tile computed without ``s``, whose ``<tile>_log2`` variable holds s * log2 e
    scale: dict[str, str] = field(default_factory=dict)
    # a tile computed without its scalar factors -> (its statement without them, the scalar)
    folded: dict[str, tuple[Einsum, S.Expr]] = field(default_factory=dict)


def _plain(rd: S.Expr, prog) -> bool:
    """``rd`` reads a tensor at its own coordinates."""
    return isinstance(rd, S.Read) and rd.indices == tuple(S.Coord(r) for r in prog.tensor(rd.tensor).ranks)


# literal factors folded: within float32's range with room for a few products (a factor 1e-46 is 0 in
# float32, and a masked score's (-inf - m) * 0 would be NaN)
BOUNDS = (1e-12, 1e12)


def _scalar(x: S.Expr) -> bool:
    return not any(isinstance(n, (S.Coord, S.Read)) for n in x.walk())


def _positive_scalar(x: S.Expr, params: dict) -> bool:
    """``x`` is the same at every point and in (0, +inf]: so ``max(v * x) = max(v) * x`` and ``-inf * x``
    is ``-inf``. Literals and params in :data:`BOUNDS`, ``rsqrt`` of a value in [0, +inf) (``rsqrt(E)``),
    ``sqrt`` of one in (0, +inf], products of such values, and quotients by a value in [0, +inf)
    (``/ sqrt(E)``)."""
    if isinstance(x, S.Const | S.Param):
        v = x.value if isinstance(x, S.Const) else params.get(x.name)
        return isinstance(v, (int, float)) and BOUNDS[0] <= v <= BOUNDS[1]
    if isinstance(x, S.Call) and len(x.args) == 1 and _scalar(x.args[0]):
        if x.fn == "rsqrt":
            return _finite_nonnegative(x.args[0], params)
        if x.fn == "sqrt":
            return _positive_scalar(x.args[0], params)
    if isinstance(x, S.Binary) and x.op == "*":
        return _positive_scalar(x.a, params) and _positive_scalar(x.b, params)
    if isinstance(x, S.Binary) and x.op == "/":
        return _positive_scalar(x.a, params) and _finite_nonnegative(x.b, params)
    return False


def _finite_nonnegative(x: S.Expr, params: dict) -> bool:
    """``x`` is the same at every point and in [0, +inf): sizes, their square roots, such literals."""
    if isinstance(x, S.Size):
        return True
    if isinstance(x, S.Const | S.Param):
        v = x.value if isinstance(x, S.Const) else params.get(x.name)
        return isinstance(v, (int, float)) and (v == 0 or BOUNDS[0] <= v <= BOUNDS[1])
    if isinstance(x, S.Call) and x.fn == "sqrt" and len(x.args) == 1:
        return _finite_nonnegative(x.args[0], params)
    return False


def _max_like(e: S.Expr, state: str) -> list[S.Read] | None:
    """The reads of other tensors in a running max's step built of ``max`` and ``??`` over reads; None if
    the step is anything else."""
    if isinstance(e, S.Read):
        return [] if e.tensor == state else [e]
    if isinstance(e, S.Const):  # (``LM ?? -inf``: in the raw units too, see raw_constants)
        return []
    if isinstance(e, S.Default) or (isinstance(e, S.Call) and e.fn == "max" and len(e.args) == 2):
        parts = (e.a, e.b) if isinstance(e, S.Default) else e.args
        out: list[S.Read] = []
        for a in parts:
            got = _max_like(a, state)
            if got is None:
                return None
            out += got
        return out
    return None


def raw_constants(e: S.Expr, scalar: S.Expr) -> S.Expr:
    """A running max's init or step with its constants in the raw scores' units: divided by the scale
    (``max(RM, LM ?? -1e30)``); 0 and the infinities are their own quotients."""
    if isinstance(e, S.Const):
        return e if e.value == 0 or abs(e.value) == float("inf") else S.Binary("/", e, scalar)
    if isinstance(e, S.Default):
        return S.Default(raw_constants(e.a, scalar), raw_constants(e.b, scalar))
    if isinstance(e, S.Call):
        return S.Call(e.fn, tuple(raw_constants(a, scalar) for a in e.args))
    return e


def _shifted(a: S.Expr, prog, state: str, sources: set[str]) -> bool:
    """``a`` of ``exp(a - RM')`` reads the running max ``state`` itself (the correction ``exp(RM - RM')``)
    or a tile of ``sources`` at its own coordinates."""
    return isinstance(a, S.Read) and (a.tensor == state or (a.tensor in sources and _plain(a, prog)))


def _confined(e: S.Expr, tensor: str, m: str, ok) -> bool:
    """Every read of ``tensor`` in ``e`` lies in an ``exp(a - m)`` that reads it (as ``a`` or as ``m``) and
    whose ``a`` satisfies ``ok``."""
    pair = exp_operands(e, {m})
    if pair is not None and tensor in (pair[1].tensor, getattr(pair[0], "tensor", None)):
        return ok(pair[0])
    if isinstance(e, S.Read) and e.tensor == tensor:
        return False
    return all(_confined(c, tensor, m, ok) for c in e.children())


def plan_raw_max(p) -> RawMax:
    """The running maxes of fused plan ``p`` that the kernel can hold in the raw scores' units (see the
    module)."""
    prog = p.prog
    statements = [*p.prologue, *p.inits, *p.body, *p.epilogue]
    defs = {e.tensor: e for e in p.body if e.kind != "step"}
    steps = {e.tensor: e for e in p.body if e.kind == "step"}
    inits = {e.tensor: e for e in p.inits}
    out = RawMax()
    chosen: set[str] = set()
    for m in sorted(p.states):
        step, init = steps.get(m), inits.get(m)
        if step is None or init is None or step.filter is not None or not isinstance(init.expr, S.Const):
            continue
        maxed = _max_like(step.expr, m)
        if not maxed or any(not _plain(x, prog) or x.tensor not in defs for x in maxed):
            continue
        others = [e for e in statements if e is not step and e is not init]
        if any(e in p.epilogue and m in tensors_read(e.expr) for e in others):
            continue  # the final max read as a value (a log-sum-exp): as written
        if any({x.tensor for x in maxed} & (tensors_read(e.expr) | tensors_read(e.filter)) for e in others):
            continue  # a tile max read by another statement: it must keep its value
        folds = [_fold(p, statements, defs, x.tensor, m) for x in maxed]
        if any(f is None for f in folds) or len({f[2] for f in folds}) != 1:
            continue  # (one scale: the state's units are those of every tile it takes the max of)
        sources = {f[0] for f in folds}

        # (the shifts: exp(RM - RM'), or exp(T - RM') of a folded tile T)
        shift = partial(_shifted, prog=prog, state=m, sources=sources)
        if not all(_confined(e.expr, m, m, shift) and m not in tensors_read(e.filter) for e in others):
            continue
        chosen.add(m)
        out.scale[m] = folds[0][0]
        for source, einsum, scalar in folds:
            out.folded[source] = (einsum, scalar)
    out.states = frozenset(chosen)
    return out


def _fold(p, statements, defs, local: str, m: str) -> tuple[str, Einsum, S.Expr] | None:
    """``(T, T's statement without its scalar factors, their product)`` where ``local`` is ``T :: max(tile)``
    and every other read of ``T`` is ``exp(T - m)``; None otherwise."""
    prog = p.prog
    le = defs[local]
    if le.reduce != ((p.col, "max"),) or le.filter is not None or not _plain(le.expr, prog):
        return None
    source = le.expr.tensor
    te = defs.get(source)
    if te is None or source in p.states:
        return None
    for e in statements:
        if e is le or e is te:
            continue
        if source in tensors_read(e.filter) or not _confined(e.expr, source, m, lambda a: _plain(a, prog)):
            return None
    fs = factors(te.expr)
    scalars = [(f, inv) for f, inv in fs if _scalar(f)]
    rest = [(f, inv) for f, inv in fs if (f, inv) not in scalars]
    if not scalars or not rest or any(inv for _, inv in rest):
        return None
    scalar = product(scalars)
    if not _positive_scalar(scalar, prog.param_values):
        return None
    return source, replace(te, expr=product(rest)), scalar
