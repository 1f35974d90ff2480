"""Pass reduction: derive the 1-pass (or 2-pass) cascade of a spec, with every side condition checked.

>>> import einattn
>>> from einattn.rewrite import rewrite
>>> prog = einattn.load("examples/attention_3pass.ein")
>>> one_pass, derivation = rewrite(prog, passes=1, rank="m", tile=64)
>>> [s.rule for s in derivation.steps]
['defer division', 'partition', 'online max', 'running sum', 'running sum']

The pipeline, one stage per line (each stage a table of patterns, see the modules):

1. ``deferral.defer``  FuseMax rule 1: divisions by a value reduced over R move past later sums over R;
2. ``online.online``   FuseMax rule 2: a max over R becomes a running max over tiles, with rescaled sums
   (``passes=2``: ``twopass.two_level``, a per-tile max and correction factors instead);
3. ``Draft.finish``    print and re-check the result through the front end (verification between stages);
4. ``first_multipass`` the result must be 1-pass over R and over the tile rank, or the rewrite is refused.

A rule that cannot prove its side condition raises :class:`RewriteError` (an :class:`einattn.EinError`) at the
Einsum concerned. :func:`auto_rewrite` turns that into a warning and keeps the spec's own form.
"""

from __future__ import annotations

import numbers

from ..errors import EinError, EinWarning, InternalError
from ..ir import Program
from .deferral import defer
from .derivation import Derivation, Step
from .draft import Draft, first_multipass
from .exact import exact_maxes
from .online import online
from .rules import RewriteError, refuse, stmt_text
from .twopass import two_level

__all__ = [
    "Derivation",
    "RewriteError",
    "Step",
    "auto_rewrite",
    "for_backend",
    "rewrite",
    "split_k",
    "stream",
]


def _check_options(prog: Program, passes, rank: str, tile) -> None:
    if passes not in (1, 2):
        raise EinError(f"passes must be 1 or 2, got {passes!r}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise EinError(f"the tile size must be a positive integer, got {tile!r}")
    if rank not in prog.ranks:
        known = ", ".join(prog.ranks)
        raise EinError(f"rank `{rank}` does not appear in {prog.name}", hint=f"its ranks are: {known}")


def _already_tiled(prog: Program, rank: str) -> str | None:
    p = prog.partition_of(rank)
    if p is not None:
        decl = f"rank {p.parent.upper()} = {p.outer.upper()} * {p.inner.upper()}"
        return f"the spec already splits {rank} (`{decl}`)"
    if rank in prog.iterative_ranks:
        return f"{rank} is already an iterative rank"
    return None


def _multipass(prog: Program, rank: str):
    """The first Einsum that re-reads ``rank`` (or the tiles of ``rank``, if the spec splits it) after a full
    reduction over it."""
    p = prog.partition_of(rank)
    for r in (rank, p.outer) if p is not None and p.parent == rank else (rank,):
        bad = first_multipass(prog.einsums, r)
        if bad is not None:
            return bad, r
    return None


def rewrite(
    prog: Program, passes: int = 1, rank: str = "m", tile: int = 64, *, fewer_than: int | None = None
) -> tuple[Program, Derivation]:
    """The ``passes``-pass form of ``prog`` over ``rank`` (tiles of ``tile``), and how it was derived.

    A spec that is already in that form comes back unchanged, with a note in the derivation. Raises
    :class:`RewriteError` (located at the offending Einsum) when a side condition fails. ``fewer_than``
    (``passes="auto"``): the rules' result is kept when it has fewer passes over ``rank`` than that, though
    more than ``passes`` (a value computed over the whole rank first keeps a pass of its own).
    """
    _check_options(prog, passes, rank, tile)
    deriv = Derivation(prog.name, f"--passes {passes} --rank {rank} --tile {tile}")
    found = _multipass(prog, rank)
    multipass, over = found if found is not None else (None, rank)
    tiled = _already_tiled(prog, rank)
    if tiled is not None:
        if multipass is not None:
            raise refuse(
                rank,
                f"{tiled}, and `{multipass.tensor}` still re-reads {over} after a full reduction over {over}",
                multipass,
                hint=f"write the natural (untiled) cascade over {rank}; einattn derives tiled forms from it",
            )
        deriv.note(f"nothing to rewrite: {tiled} and the cascade does not re-read it")
        return prog, deriv
    if multipass is None:
        deriv.note(f"nothing to rewrite: the cascade is already 1-pass over {rank}")
        return prog, deriv
    draft = Draft.of(prog)
    if passes == 1:
        defer(draft, rank, deriv)  # FuseMax rule 1: division deferral
        online(draft, rank, tile, deriv)  # FuseMax rule 2: running max and rescaled running sums
    else:
        two_level(draft, rank, tile, deriv)  # per-tile max and correction factors
    if not deriv.steps:
        if multipass is not None and passes == 1:
            raise refuse(
                rank,
                f"no rule applies, and `{multipass.tensor}` re-reads {rank} after a full reduction over it: "
                f"`{stmt_text(multipass)}`",
                multipass,
                hint="the rewrite streams a max over the rank and sums normalised by it (softmax), and "
                "defers "
                "divisions by sums over it",
            )
        deriv.note(
            "nothing to rewrite: the cascade is already "
            f"{'1-pass' if multipass is None else 'in this form'} over {rank}"
        )
        return prog, deriv
    new = draft.finish(header=deriv.lines(), filename=f"<rewrite of {prog.name}>")
    if passes == 1:
        p = new.partition_of(rank)
        for r in (rank, *((p.outer,) if p else ())):
            bad = first_multipass(new.einsums, r)
            if bad is not None:
                orig = next((e for e in prog.einsums if e.tensor == bad.tensor), None)
                raise refuse(
                    rank,
                    f"after the rewrite, `{bad.tensor}` still re-reads {r} after a full reduction: "
                    f"`{stmt_text(bad)}`",
                    orig,
                )
    from einattn.analysis import analyze  # (the analysis imports nothing of the rewrite at module level)

    got = analyze(new).passes.get(rank, 1)
    if got > passes and (fewer_than is None or got >= fewer_than):  # counted as `einattn analyze` counts
        raise refuse(
            rank,
            f"the derived cascade is still {got}-pass over {rank}, not {passes}-pass: `{multipass.tensor}` "
            f"and what it reads need every point of {rank} before the rules apply (`{stmt_text(multipass)}`)",
            multipass,
            hint="the rules stream a max over the rank and sums normalised by it (softmax); a value "
            f"computed over the whole of {rank} first (a mean, a total) keeps a pass of its own",
        )
    return new, deriv


def for_backend(
    prog: Program, passes: str = "auto", tile: int = 64, stream: bool = True
) -> tuple[Program, list[EinWarning]]:
    """The program a backend compiles: ``passes="auto"`` the fewest-pass form the rewrite proves,
    ``"as-written"`` the spec's own cascade. Shared by every backend that streams (torch, triton).
    ``stream``: rule 3 too (:mod:`einattn.rewrite.streaming`).

    A bug in the rewrite (an :class:`InternalError`) must not stop a spec that runs as written: it becomes a
    warning and the spec is compiled as written.
    """
    if passes not in ("auto", "as-written"):
        raise EinError(f"passes must be 'auto' or 'as-written', got {passes!r}")
    if passes == "as-written":
        return prog, []
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or not 1 <= tile <= 2**31 - 1:
        raise EinError(
            f"tile must be a whole number of keys from 1 to 2**31 - 1, got {tile!r}",
            hint="the rewrite's tile (option `tile`), e.g. 64 or 256",
        )
    try:
        return auto_rewrite(prog, tile=int(tile), stream=stream)
    except InternalError as e:
        reason = str(e).splitlines()[0]
        return prog, [EinWarning(f"the rewrite failed ({reason}); compiling the spec as written")]


def auto_rewrite(prog: Program, tile: int = 64, stream: bool = True) -> tuple[Program, list[EinWarning]]:
    """The fewest-pass form that the rewrite can prove, or ``prog`` itself with warnings saying why not.

    For every rank that the cascade re-reads after a full reduction: if it indexes an input and a max is taken
    over it (a softmax over a sequence), try the 1-pass rewrite, and when it is refused keep what division
    deferral alone proves (fewer passes, not one) and warn with the refusal; otherwise only deferral can help,
    and it is applied silently when it does.
    """
    found: list[EinWarning] = []
    user = prog  # refusals found in a rewritten program are located in the user's spec (same tensor)
    parts = {r for p in prog.partitions for r in (p.outer, p.inner)}
    for rank in prog.ranks:
        if rank in parts or _multipass(prog, rank) is None:
            continue
        tiled = _already_tiled(prog, rank) is not None
        sequence = any(rank in prog.tensor(n).ranks for n in prog.inputs)
        refusal = None
        if tiled or (sequence and any((rank, "max") in e.reduce for e in prog.einsums)):
            try:
                prog, _ = rewrite(prog, 1, rank, tile)
                continue
            except RewriteError as e:
                refusal, where = e, _in_spec(e.span, prog, user)  # (before deferral replaces `prog`)
        before = prog
        deferred = False
        if not tiled:
            deriv = Derivation(prog.name, f"--rank {rank} (deferral only)")
            draft = Draft.of(prog)
            if defer(draft, rank, deriv):
                prog = draft.finish(header=deriv.lines(), filename=f"<rewrite of {prog.name}>")
                deferred = True
        if refusal is not None and not tiled:
            # the rules' form with a pass left before them (a total over the rank that the softmax's scores
            # need first) still beats deferral alone: keep it when it has fewer passes
            from einattn.analysis import analyze

            try:
                prog, _ = rewrite(before, 1, rank, tile, fewer_than=analyze(prog).passes.get(rank, 1))
                found.append(
                    EinWarning(f"{refusal.message}; the rules stream what follows it", where, refusal.hint)
                )
                continue
            except RewriteError:
                pass
        if refusal is not None:
            then = "only divisions are deferred" if deferred else "compiling the spec as written"
            found.append(EinWarning(f"{refusal.message}; {then}", where, refusal.hint))
    if prog is not user:  # a running max whose value an output reads: an exact copy (rewrite.exact)
        from ..stabilizers import stabilizers

        written = {t.name for t in user.tensors if t.iterative is not None}
        prog = exact_maxes(prog, stabilizers(prog), written)
    return (_streamed(prog, tile) if stream else prog), found


def _streamed(prog: Program, tile: int) -> Program:
    """``prog`` with the sums over each 1-pass sequence rank that pair its points with another rank's made
    running sums over tiles (:mod:`einattn.rewrite.streaming`: sigmoid and causal linear attention hold a
    tile of their scores, not all of them), or ``prog`` itself where that does not apply."""
    from einattn.analysis.passes import count
    from einattn.analysis.pipeline import SEQUENCE_NAMES, streamed_rank

    # the keys: a rank named as sequences are (m, k, t, ...), else the one the analysis reports; the first
    # of them whose sums the rule streams (a feature rank f summed twice must not take the keys' place)
    named = [r for r in SEQUENCE_NAMES if r in prog.ranks]
    for rank in named:
        new = stream(prog, rank, tile)
        if new is not None:
            return new
    rank = streamed_rank(prog, count(prog))  # (counted only when no rank is named so)
    new = stream(prog, rank, tile) if rank is not None and rank not in named else None
    return prog if new is None else new


def stream(prog: Program, rank: str, tile: int = 64, always: bool = False) -> Program | None:
    """Rule 3 over ``rank`` (:mod:`einattn.rewrite.streaming`): ``prog`` with its sums over ``rank`` made
    running sums over tiles, its derivation as the header; None where the rule does not apply."""
    from .streaming import stream_sums

    if rank not in prog.ranks or _multipass(prog, rank) is not None:
        return None
    deriv = Derivation(prog.name, f"--rank {rank} --tile {tile} (streamed sums)")
    draft = Draft.of(prog)
    try:
        if stream_sums(draft, rank, tile, deriv, always):
            return draft.finish(header=deriv.lines(), filename=f"<rewrite of {prog.name}>")
    except RewriteError:
        pass  # (a read along the rank at a computed position: as written along it)
    return None


def _in_spec(span, derived: Program, user: Program):
    """``span``, a place in ``derived`` (a program an earlier rewrite made of ``user``), moved to the user's
    statement that defines the same tensor (the rewrite keeps the names of the statements it does not
    change); unchanged when it is the user's already or has no counterpart there."""
    if span is None or derived is user:
        return span
    at = (span.source, span.line)
    name = next((e.tensor for e in derived.einsums if e.span and (e.span.source, e.span.line) == at), None)
    mine = next((e.span for e in user.einsums if e.tensor == name and e.span is not None), None)
    return mine or span


def split_k(prog: Program, rank: str = "m", tile: int = 64):
    """The split-K / context-parallel form: see :func:`einattn.rewrite.merge.split_k`."""
    from .merge import split_k as _split_k

    return _split_k(prog, rank, tile)
