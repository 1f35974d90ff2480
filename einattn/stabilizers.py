"""Stabilizers: tensors whose value the outputs do not depend on, so that their gradient is zero.

Softmax subtracts the max before the exponential only to keep it in range: ``exp(QK - GM) / sum exp(QK - GM)``
is the same for any ``GM``. Autograd does not know that. It differentiates the max (a comparison of the whole
tile with its max, a count of ties, a division, a product) and sends through it terms that cancel exactly.
A backend may instead compute a *stabilizer* without recording its gradient (``detach`` in PyTorch): the
derivative of the outputs is then the same, with the cancelling terms left out.

**The proof.** A tensor ``C`` is a stabilizer when every output is unchanged by adding an arbitrary ``c`` to
``C`` (``c`` may vary along ``C``'s own ranks, and from one state to the next for a running state). Each
value gets a *form*, how it depends on ``c``:

* ``INV``: not at all;
* ``ADD(e)``: ``x + e . c``, for a vector ``e`` of integer coefficients over the perturbations;
* ``MUL(e)``: ``x * exp(e . c)``.

``C`` itself is ``ADD(c)``. Then ``ADD - ADD`` is ``ADD``; ``exp(ADD(e))`` is ``MUL(e)``; ``log(MUL(e))`` is
``ADD(e)``; products and quotients of ``MUL`` add and subtract exponents; a sum of ``MUL(e)`` terms with the
same ``e`` is ``MUL(e)``, also as a ``+`` reduction over ranks along which ``c`` does not vary; ``max`` and
``min`` keep an ``ADD`` (``max(a + c, b + c) = max(a, b) + c``) and a ``MUL`` (``exp`` is positive);
``a ?? b`` keeps a form both sides share. Anything else that depends on ``c`` is unknown, and ``C`` is no
stabilizer. A constant 0 (or a statement that is never present) has every ``MUL`` form.

A running state ``S`` (an iterative tensor other than ``C``) is proved by induction: its form at step ``t`` is
assumed to be one of a few shapes (``INV``, ``MUL(k c_t)``, ``ADD(k c_t)`` for small ``k``) and the update
must give the same shape at ``t + 1``. For FuseMax's 1-pass cascade with ``C = RM``, the running
denominator is ``MUL(-c_t)``: ``RD[t+1] = SLD + RD[t] * exp(RM[t] - RM[t+1])`` is
``MUL(-c_{t+1}) + MUL(-c_t) * MUL(c_t - c_{t+1})``, and the output ``RNV / RD`` is ``INV``.

>>> import einattn
>>> sorted(stabilizers(einattn.load("examples/causal_1pass.ein")))
['RM']
>>> sorted(stabilizers(einattn.load("examples/lse.ein")))  # L = GM + log(SD): the max cancels there too
['GM']
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from fractions import Fraction

from . import syntax as S
from .ir import Einsum, Program, program_cache, size_name
from .skip import never_present

Exponent = tuple[tuple[str, Fraction], ...]  # sorted (perturbation, coefficient), no zero coefficient
_MAX_STATES = 4  # running states proved together by induction, at most (else: no stabilizer)


@dataclass(frozen=True)
class Form:
    kind: str  # "inv" | "add" | "mul"
    e: Exponent = ()

    @staticmethod
    def of(kind: str, e: dict[str, Fraction]) -> Form:
        e = tuple(sorted((s, c) for s, c in e.items() if c))
        return INV if not e else Form(kind, e)


INV = Form("inv")
ZERO = Form("zero")  # the constant 0: every MUL form
_UNKNOWN = None  # depends on the perturbation in a way the rules do not cover


def _add(a: Exponent, b: Exponent, k: int = 1) -> dict[str, Fraction]:
    out = dict(a)
    for s, c in b:
        out[s] = out.get(s, Fraction(0)) + k * c
    return out


def _as_mul(f: Form) -> Form | None:
    """A form usable as a factor: INV is MUL(0); ZERO stays ZERO; ADD is not."""
    return f if f.kind in ("mul", "zero") or f is INV else None


@program_cache()
def stabilizers(prog: Program) -> frozenset[str]:
    """The tensors of ``prog`` that are stabilizers (see the module doc), among those computed by a max or a
    min: a ``::`` reduction, or ``max(...)`` (a running state's update, a max with a sink's logit)."""
    return frozenset(c for c in _candidates(prog) if _Proof(prog, c).holds())


def is_max(prog: Program, name: str) -> bool:
    """``name`` is computed by a max (``:: max`` or ``max(...)``), not a min."""
    return any(
        any(op == "max" for _, op in e.reduce) or (isinstance(e.expr, S.Call) and e.expr.fn == "max")
        for e in prog.definitions(name)
        if e.kind != "init"
    )


# What a backend floors them at: the lowest finite value of the compute dtype (float32 -3.4e38, float64
# -1.8e308; torch_runtime._stable and the triton helper `_floor` do the same). Any finite floor keeps
# exp(-inf - -inf) defined, and the lowest loses nothing: a row whose scores all lie below a higher floor (a
# padding mask of torch.finfo(dtype).min added to every key of the row) would weigh every key 0, and 0 / 0.


def lowest(dtype) -> float:
    """The floor of a running max in compute dtype ``dtype`` (a NumPy or torch float dtype, or its name)."""
    import numpy as np

    return float(np.finfo(np.dtype(str(dtype).replace("torch.", ""))).min)


def floored(prog: Program) -> frozenset[str]:
    """The stabilizers that a backend floors at a finite value (:func:`lowest`) in einattn.rewrite's
    streamed form of a spec: its running maxes. The derivation (``exp(x - a) = exp(x - b) * exp(b - a)``)
    takes them finite; a max of ``-inf`` scores (a ``-inf`` padding mask over a whole first tile) would
    make ``exp(-inf - -inf)`` NaN where the spec as written is finite. Any value is right for a stabilizer."""
    from .rewrite.exact import exact_copies

    copies = exact_copies(prog)
    # a running max whose value an output reads from an exact copy (einattn.rewrite.exact): read only as
    # the shift of its exponentials, the floor changes no output but where the max is not finite, which
    # the copy marks; the copy itself keeps the exact value
    maxes = ({s for s in stabilizers(prog) if is_max(prog, s)} - set(copies)) | set(copies.values())
    return frozenset(maxes)


def _candidates(prog: Program) -> list[str]:
    out = []
    for t in prog.tensors:
        defs = prog.definitions(t.name)
        if t.is_input or not defs or t.name in prog.outputs:
            continue
        updates = [e for e in defs if e.kind != "init"]
        if len(updates) != 1:
            continue
        e = updates[0]
        named = any(op in ("max", "min") for _, op in e.reduce) and t.iterative is None
        if named or (isinstance(e.expr, S.Call) and e.expr.fn in ("max", "min")):
            out.append(t.name)
    return out


class _Proof:
    """The forms of every tensor under a perturbation of ``c`` (one candidate)."""

    def __init__(self, prog: Program, candidate: str):
        self.prog, self.c = prog, candidate
        self.ct = prog.tensor(candidate)
        self.hyp: dict[str, Form] = {}  # a running state's assumed form at step t (perturbation "t")
        self.memo: dict[str, Form | None] = {}
        self.deps: dict[str, bool] = {}

    def holds(self) -> bool:
        states = [
            t.name
            for t in self.prog.tensors
            if t.iterative is not None and t.name != self.c and self._depends(t.name)
        ]
        if len(states) > _MAX_STATES:  # (each guess is a walk of the program: 9 ** states of them)
            return False
        shapes = [Form.of(kind, {"t": Fraction(k)}) for kind in ("mul", "add") for k in (-1, 1, -2, 2)]
        shapes.insert(1, INV)  # the running sums' MUL(-c_t) first, then INV: the usual answers
        for guess in itertools.product(shapes, repeat=len(states)):
            self.hyp, self.memo = dict(zip(states, guess)), {}
            if all(self._consistent(s) for s in states) and all(map(self._invariant, self.prog.outputs)):
                return True
        return False

    def _invariant(self, output: str) -> bool:
        if not self._depends(output):
            return True
        if self.prog.tensor(output).iterative is not None:  # every state of the history
            return self.hyp.get(output) is INV
        return self.tensor(output) in (INV, ZERO)

    def _depends(self, name: str) -> bool:
        """Whether ``name`` reads the candidate, directly or through other tensors."""
        if name not in self.deps:
            self.deps[name] = self._reads_candidate(name)
        return self.deps[name]

    def _reads_candidate(self, name: str) -> bool:
        if name == self.c:
            return True
        seen = {name}
        todo = [name]
        while todo:
            for e in self.prog.definitions(todo.pop()):
                for rd in e.reads():
                    if rd.tensor == self.c:
                        return True
                    if rd.tensor not in seen:
                        seen.add(rd.tensor)
                        todo.append(rd.tensor)
        return False

    def _consistent(self, state: str) -> bool:
        """The update of ``state`` gives at ``t + 1`` the form assumed at ``t``; its initial value fits."""
        want = self.hyp[state]
        for e in self.prog.definitions(state):
            got = self.statement(e)
            if e.kind == "init":
                absent = e.filter is not None and never_present(self.prog, e.filter)  # fits any form
                ok = (got is ZERO and want.kind in ("mul", "inv")) or got == _shift(want, "0") or absent
            else:
                ok = got == _shift(want, "t+1") or (got is ZERO and want.kind == "mul")
            if not ok:
                return False
        return True

    # ---- forms ----------------------------------------------------------------------------------------
    def tensor(self, name: str) -> Form | None:
        """The form of a whole tensor (outputs, values read outside its loop)."""
        if name not in self.memo:
            self.memo[name] = _UNKNOWN  # (no cycle but through a state, which `read` handles)
            defs = [e for e in self.prog.definitions(name) if e.kind != "init"]
            self.memo[name] = self.statement(defs[0]) if len(defs) == 1 else _UNKNOWN
        return self.memo[name]

    def statement(self, e: Einsum) -> Form | None:
        if e.filter is not None and any(
            self._depends(n.tensor) for n in e.filter.walk() if isinstance(n, S.Read)
        ):
            return _UNKNOWN
        if e.filter is not None and never_present(self.prog, e.filter):
            return ZERO
        f = self.expr(e.expr)
        for r, op in e.reduce:
            f = self._reduce(f, r, op)
        return f

    def _varies(self, f: Form, rank: str) -> bool:
        """Whether a perturbation in ``f`` varies along ``rank`` (the candidate's own ranks)."""
        return bool(f.e) and rank in self.ct.ranks  # (a running state's varies along its steps too)

    def _reduce(self, f: Form | None, rank: str, op: str) -> Form | None:
        if f is _UNKNOWN or f is INV or f is ZERO:
            return f
        if self._varies(f, rank):
            return _UNKNOWN
        if op == "+":
            return f if f.kind == "mul" else _UNKNOWN
        return f  # max / min of x + c, or of x * exp(c) > 0

    def read(self, rd: S.Read) -> Form | None:
        t = self.prog.tensor(rd.tensor)
        if rd.tensor == self.c:
            if not self._plain(rd, t):
                return _UNKNOWN
            return Form.of("add", {self._step(rd, t): Fraction(1)})
        if not self._depends(rd.tensor):
            return INV
        if t.iterative is not None:
            if rd.tensor not in self.hyp or not self._plain(rd, t):
                return _UNKNOWN
            return _shift(self.hyp[rd.tensor], self._step(rd, t))
        if not self._plain(rd, t):
            return _UNKNOWN
        return self.tensor(rd.tensor)

    def _plain(self, rd: S.Read, t) -> bool:
        """Every rank of the tensor read at its own coordinate (the iterative one as ``r``, ``r + 1`` or the
        final ``R``): the perturbation read is the one of the same point."""
        for k, (r, ix) in enumerate(zip(t.ranks, rd.indices)):
            if k == t.iterative:
                if self._step(rd, t) is None:
                    return False
            elif ix != S.Coord(r):
                return False
        return True

    @staticmethod
    def _step(rd: S.Read, t) -> str | None:
        """The perturbation of the state read: "t" (``r``), "t+1" (``r + 1``), "final" (``R``), "0"."""
        if t.iterative is None:
            return "c"
        ix, r = rd.indices[t.iterative], t.ranks[t.iterative]
        return {
            S.Coord(r): "t",
            S.Binary("+", S.Coord(r), S.Const(1)): "t+1",
            S.Size(r): "final",
            S.Param(size_name(r)): "final",  # (`param M1 = 4` fixes the number of steps: `RM[M1]` is final)
            S.Const(0): "0",
        }.get(ix)

    def expr(self, x: S.Expr) -> Form | None:
        if isinstance(x, S.Const):
            return ZERO if x.value == 0 else INV
        if isinstance(x, (S.Coord, S.Size, S.Param)):
            return INV
        if isinstance(x, S.Read):
            return self.read(x)
        if isinstance(x, S.Default):
            a, b = self.expr(x.a), self.expr(x.b)
            return _same(a, b)
        if isinstance(x, S.Unary):
            return _neg(self.expr(x.x))
        if isinstance(x, S.Binary):
            return _binary(x.op, self.expr(x.a), self.expr(x.b))
        if isinstance(x, S.Call):
            args = [self.expr(a) for a in x.args]
            if any(a is _UNKNOWN for a in args):
                return _UNKNOWN
            if all(a is INV for a in args):
                return INV
            if x.fn == "exp" and args[0].kind == "add":
                return Form("mul", args[0].e)
            if x.fn == "log" and args[0].kind == "mul":
                return Form("add", args[0].e)
            if x.fn in ("max", "min"):
                return functools.reduce(_same, args)
            return _UNKNOWN
        return _UNKNOWN


def _shift(f: Form, step: str | None) -> Form | None:
    """A state's form at step ``t`` rewritten for the state read at ``step``."""
    if step is None:
        return _UNKNOWN
    if f is INV or f is ZERO:
        return f
    return Form.of(f.kind, {step if s == "t" else s: c for s, c in f.e})


def _mul_or_zero(f: Form | None) -> bool:
    return f is not None and (f.kind == "mul" or f is ZERO)


def _neg(f: Form | None) -> Form | None:
    if f is _UNKNOWN or f is INV or f is ZERO:
        return f
    return Form.of("add", {s: -c for s, c in f.e}) if f.kind == "add" else f


def _same(a: Form | None, b: Form | None) -> Form | None:
    """The form of a value that is either ``a`` or ``b`` (``??``, ``max``, a sum of terms)."""
    if a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    if a is ZERO:
        return b if _mul_or_zero(b) or b is INV else _UNKNOWN
    if b is ZERO:
        return a if _mul_or_zero(a) or a is INV else _UNKNOWN
    return a if a == b else _UNKNOWN


def _binary(op: str, a: Form | None, b: Form | None) -> Form | None:
    if a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    if op in "+-":
        kinds = {a.kind, b.kind}
        if "add" in kinds:  # (x + e c) +- (y + f c); a constant 0 is x + 0 c
            if kinds - {"add", "inv", "zero"}:
                return _UNKNOWN
            ea = a.e if a.kind == "add" else ()
            eb = b.e if b.kind == "add" else ()
            return Form.of("add", _add(ea, eb, 1 if op == "+" else -1))
        return _same(a, b)  # x e^c +- y e^c = (x +- y) e^c
    if op in ("*", "/"):
        if a is ZERO or (b is ZERO and op == "*"):
            return ZERO
        ma, mb = _as_mul(a), _as_mul(b)
        if ma is None or mb is None or mb is ZERO:
            return _UNKNOWN
        return Form.of("mul", _add(ma.e, mb.e, 1 if op == "*" else -1))
    return INV if a is INV and b is INV else _UNKNOWN
