"""The analysis' operation counts equal the operations an instrumented run of the NumPy reference performs.

The reference evaluates each operation on arrays broadcast over exactly the ranks its operands vary over,
which is the analysis' counting rule (a loop-invariant subexpression costs one op per point of its own
ranks, one for a rank-free one that reads data; constants are folded; a reduction costs one combine per
point it reduces). So counting the elements each NumPy operation produces, per class, is an independent
measurement of what the analysis predicts symbolically. A multiply-add (``madd``) is a multiply plus the
add of its reduction: the run counts them apart, so the comparison is on ``mul + madd`` and ``add + madd``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from einattn.lowering import numpy_backend as NB
from hypothesis import given
from hypothesis import strategies as st

import einattn
from einattn import syntax as S
from einattn.functions import FUNCTIONS
from einattn.ir import size_name
from einattn.sizes import bind_sizes
from einattn.testing import cascades, inputs_for, sizes_for

ROOT = Path(__file__).resolve().parent.parent
BINARY_CLASS = {"+": "add", "-": "add", "*": "mul", "/": "div"}


class CountingEvaluator(NB.Evaluator):
    """The reference evaluator, counting the elements every value operation produces (index arithmetic and
    filters are addressing, not counted; the contraction fast path is off so that nothing is fused)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.counts: Counter = Counter()
        self.shapes: dict[int, tuple] = {}  # the shape each node's value was computed with, this evaluation

    def value(self, e, sp, integer=False):
        v, m = super().value(e, sp, integer)  # evaluates (and records) the operands first
        self.shapes[id(e)] = np.shape(v)
        if isinstance(e, S.Default):  # a select yields the broadcast of both sides (the reference shortcuts
            # `a ?? b` to `a` when nothing in `a` is absent; count it as the select it stands for)
            self.shapes[id(e)] = np.broadcast_shapes(*(self.shapes[id(c)] for c in e.children()))
        if not integer:
            cls = self._class(e)
            shape = np.broadcast_shapes(*(self.shapes[id(c)] for c in e.children())) if cls else ()
            if cls and (len(shape) > 0 or any(isinstance(x, S.Read) for x in e.walk())):
                # (operands that vary over no rank and read no tensor are a folded constant; a scalar's
                # data, `a * b`, costs one op)
                # numpy computed on the broadcast of the operands (a `??` select counts like an operation)
                self.counts[cls] += int(np.prod(shape))
        return v, m

    @staticmethod
    def _class(e):
        if isinstance(e, S.Binary):
            return BINARY_CLASS.get(e.op, "other")
        if isinstance(e, (S.Unary, S.Default)):
            return "other"
        if isinstance(e, S.Call):
            cls = FUNCTIONS[e.fn].op_class
            return cls if cls in ("mul", "add", "max", "div", "exp") else "other"
        return None

    def _contraction(self, e, sp):
        return None

    def _reduce(self, e, sp, v, m):
        remaining = list(sp.shape)
        for op in ("+", "max", "min"):
            axes = [sp.axis[r] for r, o in e.reduce if o == op]
            if axes:
                self.counts["add" if op == "+" else "max"] += int(np.prod(remaining))
                for a in axes:
                    remaining[a] = 1
        return super()._reduce(e, sp, v, m)


def measured(prog, inputs) -> Counter:
    arrays = {
        n: np.asarray(x, dtype=np.int64 if prog.tensor(n).dtype == "int" else np.float64)
        for n, x in inputs.items()
    }
    sizes = bind_sizes(prog, {n: a.shape for n, a in arrays.items()})
    ev = CountingEvaluator(prog, sizes, np.float64)
    ev.run(arrays)
    return ev.counts


def predicted(prog, sizes: dict) -> Counter:
    report = einattn.analyze(prog, sizes=sizes)
    ops = {c: int(report.value(n)) for c, n in report.ops.items()}
    out = Counter({c: n for c, n in ops.items() if c != "madd"})
    out["mul"] += ops.get("madd", 0)
    out["add"] += ops.get("madd", 0)
    return out


def _clean(c: Counter) -> dict:
    return {k: v for k, v in c.items() if v}


def check(prog, inputs):
    sizes = {
        size_name(r): n for r, n in bind_sizes(prog, {k: np.shape(v) for k, v in inputs.items()}).items()
    }
    assert _clean(measured(prog, inputs)) == _clean(predicted(prog, sizes)), prog.name


EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.ein"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples(path):
    prog = einattn.load(path).with_params({"M0": 3} if "M0" in einattn.load(path).param_values else {})
    rng = np.random.default_rng(0)
    # M0 = 3 divides M = 6: the analysis counts a partitioned rank as M1 * M0 = M points, while a ragged
    # last tile makes the run compute the padded grid M1 * M0 > M (the analysis' model, documented)
    shape_of = {"b": 2, "h": 2, "p": 5, "e": 3, "m": 6, "f": 2, "g": 1}
    x = {}
    for n in prog.inputs:
        t = prog.tensor(n)
        x[n] = rng.standard_normal(tuple(shape_of[r] for r in t.ranks))
    check(prog, x)


@given(st.data())
def test_random_cascades(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = data.draw(cascades())
    sizes = data.draw(sizes_for(spec.program, 1, 4))
    check(spec.program, data.draw(inputs_for(spec.program, sizes)))
