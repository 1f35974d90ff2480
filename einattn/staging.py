"""Staging: a multi-pass cascade as a sequence of 1-pass programs, one fused kernel each.

A cascade that re-reads a sequence rank after a full reduction over it (the backward pass of attention reads
the softmax's max, its denominator and ``sum_m dA * A`` at every key) is not one loop over tiles. The rewrite
removes such barriers where it can prove an online form (FuseMax's rules); what is left is *staged*:

1. **Cut.** Every statement that reduces over a sequence rank, every value over one sequence rank that a
   value over two reads (a row's statistic), and every output is *materialised*: its values are computed by
   one stage and read by later stages as inputs. Such a tensor is small (a vector per query row, a gradient
   of an input); a key-by-query one refuses staging. Everything else (scores, probabilities, their
   cotangents: the ``M x P`` values) is recomputed tile by tile inside each stage that needs it, never
   written to memory. A reduction over two sequence ranks, or over one and a batch-like rank, is first split
   into a part per row (per batch entry, per head) and a small sum of the parts.
2. **Group.** Materialised tensors are placed in order into stages; a stage streams one rank (the one its
   tensors reduce over), and a tensor joins an existing stage over the same rank when every tensor it reads
   is computed by then and the stage with it still has a 1-pass form (the softmax's max and denominator
   share one stage through the online rewrite; ``sum_m dA * A``, read at every key by ``dQ``, cannot).
   Tensors that nothing else reads, and parts that only small sums read, wait for the last stage they fit
   (``dK`` joins ``dV``).
3. **Rewrite.** Each stage is rewritten into its 1-pass form over its rank (running max and sums, or
   streamed sums), which the triton backend compiles into one fused kernel.

**Absent points** cross a stage boundary exactly: where the presence analysis bounds a materialised tensor
by affine constraints (a fully masked row of a sliding window has no max), the reading stage declares it as
an input ``<T>_in`` and restores its absence with the same constraints as a filter; where it cannot (a
data-dependent filter), the computing stage also outputs an indicator ``<T>_ok`` (1 present, 0 absent),
which :func:`run` turns into integers and the reading stage's filter reads.

``stages(prog, sequence)`` returns the stages; :func:`run` evaluates them with any backend's kernels.
The staged program computes what the program computes (``tests/test_staging.py`` checks that on NumPy
for the backward passes of the examples and of random cascades).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import syntax as S
from .absence import analyse, describable, presence_filter, presence_ranks
from .errors import EinError, EinWarning
from .graph import schedule
from .ir import Einsum, LhsIndex, Program, Tensor, coords


class StagingError(EinError):
    """The program cannot be staged into 1-pass programs (why, in the message)."""


@dataclass(frozen=True)
class Stage:
    """One program of a staged cascade.

    ``program``: the stage in its 1-pass form over ``rank`` (or as written, ``rank`` None, when it
    reduces over no sequence rank); ``written``: before the rewrite; ``outputs``: the tensors of the
    original program it computes (its outputs, same names); ``inputs``: for each input of the stage, the
    tensor of the original program it takes (an input of the original, or an earlier stage's output).
    """

    program: Program
    written: Program
    rank: str | None
    outputs: tuple[str, ...]
    inputs: dict

    sequence: frozenset = frozenset()
    indicators: tuple = ()  # outputs that say where a materialised tensor is present (1) or absent (0)

    @property
    def dense(self) -> bool:
        """Whether a statement of the stage as written spans two sequence ranks (an ``M x P`` value): such a
        stage needs its 1-pass form (one fused kernel) to hold only tiles of it."""
        return any(len(set(e.space) & self.sequence) > 1 for e in self.written.einsums)


class _Stager:
    def __init__(self, prog: Program, sequence: set[str], tile: int):
        self.prog, self.seq, self.tile = prog, sequence, tile
        self.order = [step.einsum for step in schedule(prog)]
        self.defs = {e.tensor: e for e in self.order}
        self.pos = {e.tensor: i for i, e in enumerate(self.order)}
        self.presence = analyse(prog)
        # ranks an indicator always keeps: the sequence ranks (a fused stage's outputs keep its rows) and
        # those of every key-by-query statement (its programs' ranks: batch, heads)
        dense = [set(e.space) for e in self.order if len(set(e.space) & sequence) > 1]
        self.kept = set(sequence) | (set.intersection(*dense) if dense else set())

        def seq_ranks(e: Einsum) -> set[str]:
            return set(e.space) & sequence

        # a value over one sequence rank that a value over two reads (a row's statistic, `dAV / SD`): a
        # stage streaming the other rank would recompute it per tile from per-tile values
        wide = {rd.tensor for e in self.order if len(seq_ranks(e)) > 1 for rd in e.reads()}
        self.cut = [
            e.tensor
            for e in self.order
            if e.tensor in prog.outputs
            or any(r in sequence for r in e.reduced)
            or (e.tensor in wide and len(seq_ranks(e)) == 1)
        ]
        cutset = set(self.cut)
        for n in self.cut:
            if len(set(prog.tensor(n).ranks) & sequence) > 1:
                raise StagingError(
                    f"`{n}` spans {' and '.join(r for r in prog.tensor(n).ranks if r in sequence)}: a "
                    "key-by-query value that a stage would write whole (a bias tensor's gradient), where the "
                    "stages hold such values one tile at a time",
                    span=self.defs[n].span,
                )
        # the rank a tensor's stage streams: the sequence rank it reduces (one: _split_reductions)
        self.rank: dict[str, str | None] = {
            t: next((r for r in self.defs[t].reduced if r in sequence), None) for t in self.cut
        }
        self.closure: dict[str, list[Einsum]] = {}
        self.deps: dict[str, set[str]] = {}
        for t in self.cut:
            stmts, deps, stack, seen = [], set(), [t], {t}
            while stack:
                e = self.defs[stack.pop()]
                stmts.append(e)
                for rd in e.reads():
                    n = rd.tensor
                    if prog.tensor(n).is_input or n in seen:
                        continue
                    if n in cutset:
                        deps.add(n)
                        continue
                    seen.add(n)
                    stack.append(n)
            self.closure[t] = sorted(stmts, key=lambda e: self.pos[e.tensor])
            self.deps[t] = deps
            if not any(len(seq_ranks(e)) > 1 for e in stmts):  # small: computed as written, no streaming
                self.rank[t] = None
        # a materialised tensor that a later stage reads and whose absent points the analysis cannot describe
        # (a data-dependent filter: a padded batch's `m < klen[b]`) travels with an indicator, 1 where
        # present, 0 where not
        taken = {t.name for t in prog.tensors} | set(prog.param_values)
        self.ok: dict[str, str] = {}
        for n in self.cut:  # (or a constraint on a size that a tensor's name hides: `G` for rank `g`)
            if not describable(self.presence.tensor(n), taken) and any(n in self.deps[u] for u in self.cut):
                name = f"{n}_ok"
                while name in taken:
                    name += "_"
                taken.add(name)
                self.ok[n] = name

    def ok_ranks(self, n: str) -> tuple[str, ...]:
        """The ranks of ``n``'s indicator: those its presence may vary along (:func:`presence_ranks`), the
        sequence ranks and the ranks of every key-by-query statement (batch, heads); not a feature rank
        along which it is the same (a cotangent gated by an output's presence under a padding mask varies
        along the rows, and a fused stage takes no filter along a feature rank)."""
        varies = presence_ranks(self.prog, n) | self.kept
        return tuple(r for r in self.prog.tensor(n).ranks if r in varies)

    # ---- building one stage ------------------------------------------------------------------------------
    def build(self, members: list[str], rank: str | None) -> Stage:
        prog = self.prog
        stmts: dict[str, Einsum] = {}
        for t in members:
            for e in self.closure[t]:
                stmts[e.tensor] = e
        body = sorted(stmts.values(), key=lambda e: self.pos[e.tensor])
        read = {rd.tensor for e in body for rd in e.reads()}
        inputs: list[Tensor] = []
        taken: dict[str, str] = {}
        restore: list[Einsum] = []
        names = {t.name for t in prog.tensors} | set(prog.param_values)
        for n in prog.inputs:
            if n in read:
                inputs.append(prog.tensor(n))
                taken[n] = n
        for n in self.cut:
            if n not in read or n in stmts:
                continue
            t = prog.tensor(n)
            presence = self.presence.tensor(n)
            if n in self.ok:  # its indicator, an integer input, restores its absent points
                ok, kept = self.ok[n], self.ok_ranks(n)
                inputs.append(Tensor(ok, kept, "int", "input"))
                taken[ok] = ok
                cond = S.Compare("!=", S.Read(ok, tuple(S.Coord(r) for r in kept)), S.Const(0))
            else:
                cond = presence_filter(presence)
            if cond is None:
                inputs.append(Tensor(n, t.ranks, "float", "input"))
                taken[n] = n
                continue
            alias = f"{n}_in"
            while alias in names:
                alias += "_"
            names.add(alias)
            inputs.append(Tensor(alias, t.ranks, "float", "input"))
            taken[alias] = n
            idx = tuple(S.Coord(r) for r in t.ranks)
            restore.append(
                Einsum(n, tuple(LhsIndex(r) for r in t.ranks), S.Read(alias, idx), (), cond, t.ranks)
            )
        # a size that a restored filter (or the body) names, of a rank no input of the stage has: an input
        # of the program that has it is passed too (for its shape only)
        sized = {
            n.rank
            for e in body + restore
            for root in (e.expr, e.filter)
            if root is not None
            for n in root.walk()
            if isinstance(n, S.Size)
        }
        sized |= {r for e in body + restore for r in (*e.space, *e.lhs_ranks)}  # (every rank's size)
        aliases = dict(prog.aliases)
        params = prog.param_values
        bound = {r for t in inputs for r in t.ranks}
        for r in sorted(sized - bound):
            if aliases.get(r) in bound or r.upper() in params or r in bound:
                continue
            carrier = next((n for n in prog.inputs if r in prog.tensor(n).ranks and n not in taken), None)
            if carrier is None:
                raise StagingError(f"a stage needs the size of rank `{r}`, which none of its inputs has")
            inputs.append(prog.tensor(carrier))
            taken[carrier] = carrier
        from .format import format_parts

        used = {r for e in body + restore for r in (*e.space, *e.lhs_ranks)} | {
            r for t in inputs for r in t.ranks
        }
        aliases = [(a, b) for a, b in prog.aliases if a in used and b in used]
        header = [f"stage of {prog.name}: {', '.join(members)}" + (f" (streams {rank})" if rank else "")]
        indicators = []
        for n in members:
            if n in self.ok:
                ranks, kept = prog.tensor(n).ranks, self.ok_ranks(n)
                here = S.Read(n, tuple(S.Coord(r) for r in ranks))
                one = S.Binary("+", S.Const(1), S.Call("step", (S.Unary("-", S.Call("abs", (here,))),)))
                # over the ranks its presence varies along: the same at every point of the others, whose
                # max is that value (absent where every point is, 0 once the stage returns it)
                dropped = tuple((r, "max") for r in ranks if r not in kept)
                index = tuple(LhsIndex(r) for r in kept)
                space = (*kept, *(r for r, _ in dropped))
                indicators.append(Einsum(self.ok[n], index, one, dropped, None, space))
        outputs = (*members, *(e.tensor for e in indicators))
        text = format_parts(
            inputs, outputs, prog.params, (), restore + body + indicators, header=header, aliases=aliases
        )
        from .api import parse

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EinWarning)
                written = parse(text, f"{prog.name} (stage: {', '.join(members)})")
        except EinError as err:
            raise StagingError(f"a stage does not check ({err.message})") from None
        program = written
        if rank is not None:
            program = self._one_pass(written, rank, members)
        return Stage(
            program,
            written,
            rank,
            tuple(members),
            taken,
            frozenset(self.seq),
            tuple(e.tensor for e in indicators),
        )

    def _one_pass(self, written: Program, rank: str, members: list[str]) -> Program:
        from .rewrite import RewriteError, _multipass, rewrite, stream

        if _multipass(written, rank) is not None:
            try:
                new, _ = rewrite(written, 1, rank, self.tile)
            except RewriteError as err:
                raise StagingError(err.message, span=err.span) from None
        else:
            new = stream(written, rank, self.tile, always=True) or written
        if not new.iterative_ranks:
            raise StagingError(
                f"{', '.join(f'`{m}`' for m in members)}: no 1-pass form over {rank} (a max over it with "
                "no sum normalised by it, or a read that the rewrite does not split into tiles)",
                span=self.defs[members[0]].span,
            )
        return new

    # ---- grouping ----------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        readers: dict[str, set[str]] = {t: set() for t in self.cut}
        for u in self.cut:
            for d in self.deps[u]:
                readers[d].add(u)
        # late: what nothing reads, and what only late per-row values read (a part per head, then its sum)
        late = {t for t in self.cut if not readers[t]}
        grew = True
        while grew:
            grew = False
            for t in self.cut:
                if t not in late and all(u in late and self.rank[u] is None for u in readers[t]):
                    late.add(t)
                    grew = True
        inner = [t for t in self.cut if t not in late]
        sinks = [t for t in self.cut if t in late]
        groups: list[tuple[str | None, list[str], Stage]] = []
        where: dict[str, int] = {}
        for t in inner + sinks:
            rank = self.rank[t]
            earliest = max((where[d] for d in self.deps[t]), default=-1)
            # a sink waits for the last stage it fits; a tensor that others read, for the first
            candidates = (
                range(len(groups) - 1, max(earliest, 0) - 1, -1)
                if t in sinks
                else range(max(earliest, 0), len(groups))
            )
            placed = False
            for i in candidates:
                r, members, current = groups[i]
                # a stage still without a 1-pass form takes what reads it (a max, then `max(MK, sink)`,
                # then the sum normalised by it)
                pending = isinstance(current, StagingError) and bool(self.deps[t] & set(members))
                if r != rank and not (pending and rank is None):
                    continue
                try:
                    stage = self.build([*members, t], r)
                except StagingError as err:
                    if not pending:
                        continue
                    stage = err
                groups[i] = (r, [*members, t], stage)
                where[t] = i
                placed = True
                break
            if not placed:  # a stage of its own; one with no 1-pass form alone (a max without the sums
                # normalised by it) waits for the tensors that give it one
                try:
                    stage = self.build([t], rank)
                except StagingError as err:
                    stage = err
                groups.append((rank, [t], stage))
                where[t] = len(groups) - 1
        for _, _, stage in groups:
            if isinstance(stage, StagingError):
                raise stage
        return [stage for _, _, stage in groups]


def stages(prog: Program, sequence: Iterable[str], tile: int = 64) -> list[Stage]:
    """``prog`` as a sequence of 1-pass programs streaming the ``sequence`` ranks (see the module). Raises
    :class:`StagingError` with the reason when it cannot be staged."""
    if prog.iterative_ranks or prog.partitions:
        raise StagingError(
            "the program already has iterative ranks or partitions: stage the cascade as written"
        )
    order = [r for r in dict.fromkeys(sequence) if r in prog.ranks]
    return _Stager(_split_reductions(prog, order), set(order), tile).stages()


def _conjuncts(f: S.Expr | None) -> list[S.Expr]:
    if f is None:
        return []
    if isinstance(f, S.Logic) and f.op == "and":
        return _conjuncts(f.a) + _conjuncts(f.b)
    return [f]


def _conjunction(parts: list[S.Expr]) -> S.Expr | None:
    out = None
    for c in parts:
        out = c if out is None else S.Logic("and", out, c)
    return out


def _split_reductions(prog: Program, sequence: list[str]) -> Program:
    """``prog`` with each reduction over several sequence ranks, or over one and a batch-like rank, split in
    two: over the first sequence rank (and features) into a part that keeps the rest, then over the rest
    (``dslope[h]``, a sum over keys and queries: a sum over keys per query, then over queries; a per-key
    bias's ``dkb[h, m]``, a sum over queries and the batch: per batch entry, then over it). Same values: the
    reductions are one
    associative, commutative operator (:func:`einattn.autodiff` splits mixed ones), and a part is absent
    exactly where every point it reduces is."""
    from .format import format_parts

    names = {t.name for t in prog.tensors} | set(prog.param_values)
    seq = set(sequence)
    dense = [e for e in prog.einsums if len(set(e.space) & seq) > 1]
    # batch-like ranks: in every key-by-query statement, never summed by a contraction of features (b, h);
    # a fused stage runs one program per point of them, so a sum over them is a small sum of parts
    features = {r for e in dense if not set(e.reduced) & seq for r in e.reduced}
    batch = set.intersection(*(set(e.space) for e in dense)) - seq - features if dense else set()
    out: list[Einsum] = []
    changed = False
    for e in prog.einsums:
        over = [r for r in sequence if r in e.reduced]
        if len(over) < 2 and not (over and set(e.reduced) & batch):
            out.append(e)
            continue
        changed = True
        ops = {op for _, op in e.reduce}
        if len(ops) != 1:
            raise StagingError(f"`{e.tensor}` mixes reductions over sequence ranks", span=e.span)
        (op,) = ops
        keep = [r for r in e.reduced if r != over[0] and (r in seq or r in batch)]
        part = f"{e.tensor}_part"
        while part in names:
            part += "_"
        names.add(part)
        # a grouped read's gradient (`dV[b, g, m, f] = ... where h // R == g`): the part stays per head
        # (`h`), and the group's filter moves to the sum over the heads, so the part needs no `g`
        conjuncts = _conjuncts(e.filter)
        grouping = [
            c
            for c in conjuncts
            if isinstance(c, S.Compare)
            and c.op == "=="
            and isinstance(c.b, S.Coord)
            and c.b.rank in e.lhs_ranks
            and c.b.rank not in coords(e.expr)
            and set(coords(c.a)) <= set(keep)
            and not any(c.b.rank in coords(o) for o in conjuncts if o is not c)
        ]
        dropped = {c.b.rank for c in grouping}
        lhs = (*(r for r in e.lhs_ranks if r not in dropped), *keep)
        first = tuple((r, op) for r in e.reduced if r not in keep)
        out.append(
            Einsum(
                part,
                tuple(LhsIndex(r) for r in lhs),
                e.expr,
                first,
                _conjunction([c for c in conjuncts if all(c is not g for g in grouping)]),
                (*lhs, *(r for r, _ in first)),
                e.span,
            )
        )
        rest = tuple((r, op) for r in keep)
        read = S.Read(part, tuple(S.Coord(r) for r in lhs))
        out.append(
            Einsum(e.tensor, e.index, read, rest, _conjunction(grouping), (*e.lhs_ranks, *keep), e.span)
        )
    if not changed:
        return prog
    from .api import parse

    text = format_parts(
        [prog.tensor(n) for n in prog.inputs], prog.outputs, prog.params, (), out, aliases=prog.aliases
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EinWarning)
        return parse(text, prog.name)


@dataclass(frozen=True)
class StagedBackward:
    """The backward pass of a spec as 1-pass stages: ``gradient`` (``einattn.grad`` with the outputs
    saved), its ``stages``, and the ``sequence`` ranks they stream (the forward's streamed rank, its rows)."""

    gradient: object
    stages: list
    sequence: tuple


def forward_sequence(prog: Program, tile: int = 64) -> tuple[str, str]:
    """(streamed rank, row rank) of ``prog``'s forward pass as one fused loop over tiles (its 1-pass form,
    as the triton backend fuses it); a :class:`StagingError` where it has none."""
    from .lowering.triton_fused import Refusal, match
    from .rewrite import for_backend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EinWarning)
        one, _ = for_backend(prog, "auto", tile)
    plan = match(one)
    if isinstance(plan, Refusal):
        raise StagingError(f"the forward pass is not one fused loop over tiles: {plan.reason}")
    return plan.parent, plan.row


def backward(spec, sequence=None, wrt=None, params=None, tile: int = 64) -> StagedBackward:
    """The backward pass of ``spec`` (a path, text or program) as the triton backend runs it: derived with
    the outputs saved (``einattn.grad(spec, wrt, saved=outputs)``) and staged over ``sequence`` (default:
    :func:`forward_sequence`). ``wrt``: the inputs to differentiate, among those an output depends on (the
    others are left out); an :class:`~einattn.EinError` where there is nothing to differentiate or no
    stages."""
    from .api import _program
    from .autodiff import grad
    from .check import normalize_params

    prog = _program(spec).with_params(normalize_params(params))
    if prog.iterative_ranks:
        raise StagingError(
            "the spec is written in its 1-pass form (running states are not differentiated: write the "
            "3-pass cascade and let passes='auto' derive the forward)"
        )
    sequence = tuple(sequence) if sequence is not None else forward_sequence(prog, tile)
    if wrt is not None:
        active = grad(prog).gradients
        wrt = tuple(n for n in active if n in wrt)
        if not wrt:
            raise EinError("no input that requires a gradient reaches an output")
    gradient = grad(prog, wrt=wrt, saved=prog.outputs)
    return StagedBackward(gradient, stages(gradient.program, sequence, tile), sequence)


def run(staged: list[Stage], inputs: dict, call: Callable[[Stage, dict], dict]) -> dict:
    """Evaluate ``staged`` on ``inputs`` (the original program's inputs by name): ``call(stage, xs)`` runs
    one stage on its inputs by stage name and returns its outputs by name. Returns every tensor computed."""
    values = dict(inputs)
    for stage in staged:
        xs = {name: values[src] for name, src in stage.inputs.items()}
        values.update(call(stage, xs))
        for name in stage.indicators:  # (read as integer inputs by later stages' filters)
            values[name] = as_int(values[name])
    return values


def as_int(x):
    """An indicator (0 or 1 floats) as 32-bit integers, for a NumPy array or a torch tensor."""
    if hasattr(x, "astype"):
        return x.astype("int32")
    import torch

    return x.to(torch.int32)


__all__ = ["Stage", "StagedBackward", "StagingError", "backward", "forward_sequence", "run", "stages"]
