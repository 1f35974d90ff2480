"""A running max whose value an output reads: an exact copy for the reads, the running max a stabilizer.

The backends floor the rewrite's running maxes at the dtype's lowest finite value (``stabilizers.floored``),
so that a first tile of ``-inf`` scores (a padding bias) does not make ``exp(-inf - -inf)`` NaN where the
spec is finite. Flooring changes nothing only where no output depends on the max's value. Where one does
(``output O, GM`` returns the max itself; ``output SD`` a denominator alone), this pass, run on the
rewritten program, makes the floor exact there too:

* the max's value is read from a copy ``XM`` of the running max (the same start and step, never floored):
  ``GM = RM[M1]`` becomes ``GM = XM[M1]``;
* a running sum ``S`` computed against the running max is read at its end as ``S[M1] + (XM[M1] - XM[M1])``:
  the floored max gives the spec's sum wherever the row's max is finite, and the added term is 0 there; a
  row whose max is ``-inf`` (every present score ``-inf``) or ``+inf`` gets NaN, as the spec's
  ``exp(-inf - -inf)`` is.

The running max is then read only as the shift of its exponentials (``exp(X - RM')``, ``exp(RM - RM')``),
and ``stabilizers.floored`` floors it (:func:`exact_copies` finds the pair)."""

from __future__ import annotations

from .. import syntax as S
from ..ir import Program
from .draft import Draft


def _is_shift(e: S.Expr, m: str) -> bool:
    """``exp(a - b)`` with ``b`` a read of ``m`` (and ``a`` a read of ``m`` or free of it)."""
    if not (isinstance(e, S.Call) and e.fn == "exp" and isinstance(e.args[0], S.Binary)):
        return False
    d = e.args[0]
    if d.op != "-" or not (isinstance(d.b, S.Read) and d.b.tensor == m):
        return False
    return (isinstance(d.a, S.Read) and d.a.tensor == m) or not _reads(d.a, m)


def _reads(e: S.Expr | None, m: str) -> bool:
    return e is not None and any(isinstance(n, S.Read) and n.tensor == m for n in e.walk())


def _other_reads(e: S.Expr, m: str) -> list[S.Read]:
    """The reads of ``m`` in ``e`` outside shifts."""
    if _is_shift(e, m):
        return []
    if isinstance(e, S.Read):
        own = [e] if e.tensor == m else []
        return own + [r for i in e.indices for r in _other_reads(i, m)]
    return [r for c in e.children() for r in _other_reads(c, m)]


def shift_only(prog: Program, m: str) -> bool:
    """``m`` is a running state read only by its own updates and as the shift of exponentials."""
    t = prog.tensor(m)
    if t.iterative is None:
        return False
    for e in prog.einsums:
        if e.tensor == m:
            continue
        if _reads(e.filter, m) or _other_reads(e.expr, m):
            return False
    return True


def exact_copies(prog: Program) -> dict[str, str]:
    """The running maxes that are another's exact copy (:func:`exact_maxes`), each with the running max it
    copies: the same statements but for the name, the other read only as a shift. The copies are never
    floored (their value is an output's, and their ``-inf`` is what marks a row's sums NaN: ``XRM - XRM``,
    which a stabilizer proof sees as free of ``XRM``); the running maxes they copy always are."""
    states = [t.name for t in prog.tensors if t.iterative is not None and _is_running_max(prog, t.name)]
    out = {}
    for x in states:
        for m in states:
            if m != x and shift_only(prog, m) and not shift_only(prog, x):
                mine = [_rename_state(e, x, m) for e in prog.einsums if e.tensor == x]
                if mine == [e for e in prog.einsums if e.tensor == m]:
                    out[x] = m
    return out


def _final(rd: S.Read, prog: Program) -> bool:
    t = prog.tensor(rd.tensor)
    return t.iterative is not None and rd.indices[t.iterative] == S.Size(t.iter_rank)


def exact_maxes(prog: Program, stable, written=frozenset()) -> Program:
    """``prog`` (a rewritten program) with an exact copy of each running max that is not a stabilizer
    (``stable``: those that are) and whose other reads are final values, as the module says; ``prog`` where
    there is none. One running max at a time, each on the program the previous one made. ``written``: the
    spec's own running states (a hand-written 1-pass loop beside a rewritten softmax), left as written."""
    done: set[str] = set(written)
    while True:
        todo = [
            t.name
            for t in prog.tensors
            if t.iterative is not None
            and t.name not in stable
            and t.name not in done
            and _is_running_max(prog, t.name)
        ]
        if not todo:
            return prog
        m = todo[0]
        done.add(m)
        copied = _copy(prog, m)
        if copied is not None:
            done.add(copied[1])
            prog = copied[0]


def _copy(prog: Program, m: str) -> tuple[Program, str] | None:
    """``prog`` with running max ``m``'s exact copy (and its name), or None where ``m`` needs none."""
    others = [r for e in prog.einsums if e.tensor != m for r in _other_reads(e.expr, m) + _filter_reads(e, m)]
    if any(not _final(r, prog) or r in _filter_reads_all(prog, m) for r in others):
        return None
    sums = _sums_against(prog, m)
    if not others and not sums:
        return None
    xm = _fresh("X" + m, {t.name for t in prog.tensors})
    copies = [e for e in prog.einsums if e.tensor == m]
    draft = Draft.of(prog)
    out = []
    for e in draft.einsums:
        if e.tensor != m:
            e = _replace_finals(e, prog, m, xm, sums)
        out.append(e)
        if e is copies[-1]:
            out.extend(_rename_state(c, m, xm) for c in copies)
    draft.einsums = out
    return draft.finish(filename=f"<rewrite of {prog.name}>"), xm


def _filter_reads(e, m: str) -> list[S.Read]:
    return [] if e.filter is None else [n for n in e.filter.walk() if isinstance(n, S.Read) and n.tensor == m]


def _filter_reads_all(prog: Program, m: str) -> list[S.Read]:
    return [r for e in prog.einsums for r in _filter_reads(e, m)]


def _is_running_max(prog: Program, m: str) -> bool:
    steps = [e for e in prog.einsums if e.tensor == m and e.kind == "step"]
    return len(steps) == 1 and isinstance(steps[0].expr, S.Call) and steps[0].expr.fn == "max"


def _sums_against(prog: Program, m: str) -> set[str]:
    """The running states (other than ``m``) of ``m``'s loop whose updates depend on ``m``."""
    deps: dict[str, set[str]] = {}
    for e in prog.einsums:
        deps.setdefault(e.tensor, set()).update(r.tensor for r in e.reads())
    out = set()
    loop = prog.tensor(m).iter_rank
    for t in prog.tensors:
        if t.iterative is None or t.name == m or t.iter_rank != loop:
            continue
        seen, todo = set(), [t.name]
        while todo:
            x = todo.pop()
            for y in deps.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        if m in seen:
            out.add(t.name)
    return out


def _fresh(name: str, names: set[str]) -> str:
    k, base = 0, name
    while name in names:
        k += 1
        name = f"{base}{k}"
    names.add(name)
    return name


def _rename_state(e, m: str, xm: str):
    """``m``'s statement ``e`` as the copy's: ``m`` read and written as ``xm``."""
    from dataclasses import replace

    def visit(x: S.Expr):
        if isinstance(x, S.Read) and x.tensor == m:
            return S.Read(xm, tuple(S.rewrite_expr(i, visit) for i in x.indices))
        return None

    filt = None if e.filter is None else S.rewrite_expr(e.filter, visit)
    return replace(e, tensor=xm, expr=S.rewrite_expr(e.expr, visit), filter=filt)


def _replace_finals(e, prog: Program, m: str, xm: str, sums: set[str]):
    """``e`` reading the copy's final value for ``m``'s, and each final sum against ``m`` plus
    ``XM - XM`` at the same point (0, or NaN where the max is not finite)."""
    from dataclasses import replace

    def visit(x: S.Expr):
        if isinstance(x, S.Read) and _final(x, prog):
            t = prog.tensor(x.tensor)
            if x.tensor == m:
                return S.Read(xm, x.indices)
            if x.tensor in sums:
                mt = prog.tensor(m)
                at = dict(zip(t.ranks, x.indices))
                if any(r not in at for k, r in enumerate(mt.ranks) if k != mt.iterative):
                    return x  # (the max has a rank the sum has not: left as it is)
                idx = tuple(
                    S.Size(mt.iter_rank) if k == mt.iterative else at[r] for k, r in enumerate(mt.ranks)
                )
                xr = S.Read(xm, idx)
                return S.Binary("+", x, S.Binary("-", xr, xr))
            return x
        return None

    if not any(_final(r, prog) and (r.tensor == m or r.tensor in sums) for r in e.reads()):
        return e
    return replace(e, expr=S.rewrite_expr(e.expr, visit))
