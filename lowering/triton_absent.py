"""Which tensors can hold absent points: only those carry a presence mask in the Triton kernels.

The rules are the language's, read statically: a filter makes points absent; a read out of bounds is absent
(an index is known in bounds only when it is the plain coordinate of the tensor's own rank, or a state index
``r``, ``r + 1``, ``R``, ``0`` of an iterative dimension); a division by a size in an index can be by zero;
absence propagates through every operation except ``a ?? b``, which is absent only where both sides are;
a reduction is absent where no point of it is present.
"""

from __future__ import annotations

from einattn import syntax as S
from einattn.ir import Program

from .triton_expr import in_bounds


def expr_maybe_absent(prog: Program, e: S.Expr | None, absent: set[str]) -> bool:
    if e is None:
        return False
    if isinstance(e, (S.Const, S.Param, S.Size, S.Coord)):
        return False
    if isinstance(e, S.Read):
        if e.tensor in absent:
            return True
        for k, ix in enumerate(e.indices):
            if not in_bounds(prog, e.tensor, k, ix) or expr_maybe_absent(prog, ix, absent):
                return True
        return False
    if isinstance(e, S.Default):
        return expr_maybe_absent(prog, e.a, absent) and expr_maybe_absent(prog, e.b, absent)
    if isinstance(e, S.Binary) and e.op in ("//", "%"):
        if not isinstance(e.b, (S.Const, S.Param)):
            return True
        if isinstance(e.b, S.Const) and e.b.value == 0:
            return True
        if isinstance(e.b, S.Param) and prog.param_values[e.b.name] == 0:
            return True
    return any(expr_maybe_absent(prog, c, absent) for c in e.children())


def statement_maybe_absent(prog: Program, expr: S.Expr, filt: S.Expr | None, absent: set[str]) -> bool:
    return filt is not None or expr_maybe_absent(prog, expr, absent)


def absent_tensors(prog: Program, statements, empty: bool = False) -> frozenset[str]:
    """Tensors that may hold absent points. ``statements``: objects with ``target``, ``expr``, ``filter`` (and
    ``red_ranks`` when ``empty``: then a reduction over a rank whose size may be 0 is absent too).

    Iterated to a fixpoint, since a recurrence reads its own earlier states.
    """
    fixed = {r for r in prog.ranks if r.upper() in prog.param_values}  # sized by a param: never empty
    absent: set[str] = set()
    changed = True
    while changed:
        changed = False
        for st in statements:
            if st.target in absent:
                continue
            reduces_empty = empty and any(r not in fixed for r in getattr(st, "red_ranks", ()))
            if reduces_empty or statement_maybe_absent(prog, st.expr, st.filter, absent):
                absent.add(st.target)
                changed = True
    return frozenset(absent)
