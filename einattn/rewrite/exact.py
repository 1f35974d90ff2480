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

from dataclasses import replace

from .. import syntax as S
from ..ir import Einsum, Program
from .draft import Draft, depends_on
from .rules import tensors_read
from .tiling import replace_reads


def shift_operands(e: S.Expr, tensors) -> tuple[S.Expr, S.Read] | None:
    """``(a, b)`` where ``e`` is ``exp(a - b)`` and ``b`` reads a tensor in ``tensors``; else None."""
    if not (isinstance(e, S.Call) and e.fn == "exp" and len(e.args) == 1):
        return None
    d = e.args[0]
    if isinstance(d, S.Binary) and d.op == "-" and isinstance(d.b, S.Read) and d.b.tensor in tensors:
        return d.a, d.b
    return None


def _is_shift(e: S.Expr, m: str) -> bool:
    """``exp(a - m)`` with ``a`` a read of ``m`` (the correction) or free of it."""
    pair = shift_operands(e, {m})
    if pair is None:
        return False
    a = pair[0]
    return (isinstance(a, S.Read) and a.tensor == m) or m not in tensors_read(a)


def _other_reads(e: S.Expr, m: str) -> list[S.Read]:
    """The reads of ``m`` in ``e`` outside shifts."""
    if _is_shift(e, m):
        return []
    own = [e] if isinstance(e, S.Read) and e.tensor == m else []
    return own + [r for c in e.children() for r in _other_reads(c, m)]


def shift_only(prog: Program, m: str) -> bool:
    """``m`` is a running state read only by its own updates and as the shift of exponentials."""
    if prog.tensor(m).iterative is None:
        return False
    return not any(
        m in tensors_read(e.filter) or _other_reads(e.expr, m) for e in prog.einsums if e.tensor != m
    )


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
    others = [e for e in prog.einsums if e.tensor != m]
    if any(m in tensors_read(e.filter) for e in others):
        return None
    finals = [r for e in others for r in _other_reads(e.expr, m)]
    if not all(_final(r, prog) for r in finals):
        return None
    draft = Draft.of(prog)
    loop = prog.tensor(m).iter_rank
    sums = {  # the running states of m's loop computed against m
        t
        for t in depends_on(draft, {m}) - {m}
        if prog.tensor(t).iterative is not None and prog.tensor(t).iter_rank == loop
    }
    if not finals and not sums:
        return None
    xm = draft.fresh("X" + m)
    mine = [e for e in prog.einsums if e.tensor == m]
    out = []
    for e in draft.einsums:
        out.append(e if e.tensor == m else _replace_finals(e, prog, m, xm, sums))
        if e is mine[-1]:
            out.extend(_rename_state(c, m, xm) for c in mine)
    draft.einsums = out
    return draft.finish(filename=f"<rewrite of {prog.name}>"), xm


def _is_running_max(prog: Program, m: str) -> bool:
    steps = [e for e in prog.einsums if e.tensor == m and e.kind == "step"]
    return len(steps) == 1 and isinstance(steps[0].expr, S.Call) and steps[0].expr.fn == "max"


def _rename_state(e: Einsum, m: str, xm: str) -> Einsum:
    """``m``'s statement ``e`` as the copy's: ``m`` read and written as ``xm``."""
    return replace(replace_reads(e, {m: lambda rd: S.Read(xm, rd.indices)}), tensor=xm)


def _replace_finals(e: Einsum, prog: Program, m: str, xm: str, sums: set[str]) -> Einsum:
    """``e`` reading the copy's final value for ``m``'s, and each final sum against ``m`` plus
    ``XM - XM`` at the same point (0, or NaN where the max is not finite)."""
    mt = prog.tensor(m)

    def final_max(rd: S.Read) -> S.Expr:
        return S.Read(xm, rd.indices) if _final(rd, prog) else rd

    def final_sum(rd: S.Read) -> S.Expr:
        at = dict(zip(prog.tensor(rd.tensor).ranks, rd.indices))
        if not _final(rd, prog) or any(r not in at for k, r in enumerate(mt.ranks) if k != mt.iterative):
            return rd  # (the max has a rank the sum has not: left as it is)
        xr = S.Read(xm, tuple(S.Size(r) if k == mt.iterative else at[r] for k, r in enumerate(mt.ranks)))
        return S.Binary("+", rd, S.Binary("-", xr, xr))

    return replace_reads(e, {m: final_max} | dict.fromkeys(sums, final_sum))
