"""A working copy of a program that rewrite rules edit, then turn back into a checked :class:`Program`.

Rules build new statements with the IR's own node types (:func:`make_einsum` computes the iteration space and
reductions exactly as the checker does). :meth:`Draft.finish` prints the result with the formatter and runs it
through the front end again, so that every rewritten program is verified like a hand-written one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .. import syntax as S
from ..errors import EinError, InternalError
from ..format import format_parts
from ..ir import Einsum, LhsIndex, Partition, Program, Tensor, coords, size_name
from .rules import reads


def make_einsum(
    tensor: str,
    index: tuple[LhsIndex, ...],
    expr: S.Expr,
    filter: S.Expr | None = None,
    named: tuple[tuple[str, str], ...] = (),
    span=None,
) -> Einsum:
    """An Einsum whose space and reductions are what the checker would derive from its text.

    ``named`` are the ``:: op(ranks)`` reductions (applied last, in this order); every other right-only rank
    is summed first, in order of appearance.
    """
    lhs = [ix.rank for ix in index if ix.kind != "init"]
    space = list(lhs)
    for r in coords(expr) + coords(filter):
        if r not in space:
            space.append(r)
    named_ranks = [r for r, _ in named]
    for r in named_ranks:
        if r not in space or r in lhs:
            raise InternalError(f"`{tensor}`: cannot reduce `{r}`")
    reduce = tuple((r, "+") for r in space if r not in lhs and r not in named_ranks) + tuple(named)
    return Einsum(tensor, tuple(index), expr, reduce, filter, tuple(space), span=span)


def plain_index(ranks) -> tuple[LhsIndex, ...]:
    return tuple(LhsIndex(r) for r in ranks)


@dataclass
class Draft:
    """Mutable lists of the program's parts; statements keep source order until a rule reorders them."""

    source: Program
    inputs: list[Tensor]
    outputs: list[str]
    params: list[tuple[str, int | float]]
    partitions: list[Partition]
    einsums: list[Einsum]
    notes: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # tensor -> why a rule could not remove it
    aliases: list[tuple[str, str]] = field(default_factory=list)  # `rank S = T` as (s, t)

    @classmethod
    def of(cls, prog: Program) -> Draft:
        return cls(
            prog,
            [prog.tensor(n) for n in prog.inputs],
            list(prog.outputs),
            list(prog.params),
            list(prog.partitions),
            list(prog.einsums),
            aliases=list(getattr(prog, "aliases", ())),
        )

    # ---- lookups --------------------------------------------------------------------------------------
    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)

    def definition(self, tensor: str) -> Einsum | None:
        """The plain statement defining ``tensor`` (None for inputs and iterative tensors)."""
        defs = [e for e in self.einsums if e.tensor == tensor]
        return defs[0] if len(defs) == 1 and defs[0].kind == "plain" else None

    def ranks_of(self, tensor: str) -> tuple[str, ...]:
        t = self.input(tensor)
        if t is not None:
            return t.ranks
        for e in self.einsums:
            if e.tensor == tensor and e.kind != "init":
                return tuple(ix.rank for ix in e.index)
        raise InternalError(f"no tensor `{tensor}` in the draft")

    def readers(self, tensor: str) -> list[Einsum]:
        return [e for e in self.einsums if any(r.tensor == tensor for r in e.reads())]

    def names(self) -> set[str]:
        ranks = {r for e in self.einsums for r in e.space} | {r for t in self.inputs for r in t.ranks}
        for p in self.partitions:
            ranks |= {p.parent, p.outer, p.inner}
        return (
            {t.name for t in self.inputs}
            | {e.tensor for e in self.einsums}
            | {n for n, _ in self.params}
            | ranks
            | {size_name(r) for r in ranks}
        )

    def fresh(self, base: str, taken: set[str] | None = None) -> str:
        """``base``, or ``base2``, ``base3``, ... : a name used by nothing in the program."""
        used = self.names() | (taken or set())
        if base not in used:
            return base
        k = 2
        while f"{base}{k}" in used:
            k += 1
        return f"{base}{k}"

    def fresh_rank(self, base: str) -> str:
        used = self.names()
        name, k = base, 0
        while name in used or size_name(name) in used:
            k += 1
            name = f"{base}_{k}"
        return name

    # ---- edits --------------------------------------------------------------------------------------------
    def replace(self, old: Einsum, new: list[Einsum]) -> None:
        k = next(i for i, e in enumerate(self.einsums) if e is old)
        self.einsums[k : k + 1] = new

    def remove(self, old: Einsum) -> None:
        self.replace(old, [])

    def dce(self) -> None:
        """Drop statements whose tensor nobody reads and that is not an output."""
        while True:
            needed = set(self.outputs) | {
                r.tensor for e in self.einsums for r in e.reads() if r.tensor != e.tensor
            }
            dead = [e for e in self.einsums if e.tensor not in needed]
            if not dead:
                return
            self.einsums = [e for e in self.einsums if e.tensor in needed]

    # ---- back to a program ---------------------------------------------------------------------------------
    def text(self, header=()) -> str:
        ranks = {r for e in self.einsums for r in e.space} | {r for t in self.inputs for r in t.ranks}
        return format_parts(
            self.inputs,
            self.outputs,
            self.params,
            self.partitions,
            self.einsums,
            header=header,
            notes=self.notes,
            aliases=[(s, t) for s, t in self.aliases if s in ranks and t in ranks],  # those still meaningful
        )

    def finish(self, header=(), filename: str = "<rewrite>") -> Program:
        """Print, parse and check the draft: a rewrite yields a program the front end accepts."""
        from ..api import parse

        text = self.text(header)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return parse(text, filename)
        except EinError as e:
            first = e.message if hasattr(e, "message") else str(e).splitlines()[0]
            raise InternalError(
                f"a rewrite produced an invalid program ({first})\n{e}\n--- program ---\n{text}"
            ) from None


def depends_on(draft: Draft, seeds: set[str]) -> set[str]:
    """Every tensor whose value depends (transitively) on one of ``seeds``; the seeds included."""
    out = set(seeds)
    changed = True
    while changed:
        changed = False
        for e in draft.einsums:
            if e.tensor not in out and any(r.tensor in out for r in e.reads()):
                out.add(e.tensor)
                changed = True
    return out


def full_reductions(einsums, rank: str) -> set[str]:
    """Tensors that depend on a full reduction over ``rank`` (a statement whose output drops it)."""
    seeds = {e.tensor for e in einsums if rank in e.reduced}
    out = set(seeds)
    changed = True
    while changed:
        changed = False
        for e in einsums:
            if e.tensor not in out and any(r.tensor in out for r in e.reads()):
                out.add(e.tensor)
                changed = True
    return out


def first_multipass(einsums, rank: str) -> Einsum | None:
    """The first Einsum that re-reads a fiber of ``rank`` after a full reduction over it, if any.

    FuseMax's counting rule (``shared/reference/fusemax.md`` section 2): an Einsum whose iteration space holds
    ``rank``, that reads a tensor along ``rank`` together with a value depending on a full ``rank``-reduction,
    starts a new pass. An iterative rank's recurrence is not a full reduction.
    """
    einsums = list(einsums)
    full = full_reductions(einsums, rank)
    for e in einsums:
        if rank not in e.space:
            continue
        along = any(rank in coords(ix) for rd in e.reads() for ix in rd.indices) or rank in coords(e.expr)
        if along and any(rd.tensor in full for rd in reads(e.expr) + reads(e.filter)):
            return e
    return None
