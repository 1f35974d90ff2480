"""Split-K and context parallelism: the associative merge of partial softmax states, from the 1-pass form.

The running states of the 1-pass cascade (a max ``RM`` and sums ``RD``, ``RNV`` rescaled by it) are exactly
what a part of the rank R contributes. :func:`split_k` cuts the derived cascade into three programs:

* ``partial``: the 1-pass cascade run on one part of R (the inputs along R sliced to the part, ``param OFF``
  its first index when the spec uses R's coordinates, e.g. in a causal filter); its outputs are the final
  states and a presence flag ``SEEN`` (0 where the part has no present point);
* ``merge``: the states of S parts stacked along a new rank ``s`` combine like the second level of the 2-pass
  cascade: ``M = max over s of M_s``, ``C_s = f(M_s - M)``, ``T = sum over s of T_s * C_s`` (max is
  associative, and ``f(a - c) = f(a - b) * f(b - c)``); the result has the partial's own format, so merges
  nest;
* ``finish``: the spec's outputs from a merged state (the statements of the 1-pass cascade after its loop).

Absent points survive the cut: a part that saw nothing has ``SEEN = 0`` and is skipped by the merge's filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import syntax as S
from ..errors import EinError
from ..format import format_expr
from ..ir import Einsum, Program, Tensor, coords
from .deferral import defer
from .derivation import Derivation
from .draft import Draft, make_einsum, plain_index
from .online import online
from .rules import RewriteError, ShiftFn, coord_tuple, insert, named_reductions, refuse, rewrite_expr


@dataclass(frozen=True)
class SplitK:
    """The three programs of a split evaluation over ``rank`` (see the module docstring).

    ``states`` names the partial outputs that ``merge`` takes stacked (as ``NAME_s[s, ...]``) and returns, and
    that ``finish`` takes; ``offset`` is the param that shifts a part's coordinates (None if the spec never
    uses them); ``total`` the param that holds the whole rank's size, which the spec's ``M`` stands for in
    every program that uses it (None if none does).
    """

    partial: Program
    merge: Program
    finish: Program
    states: tuple[str, ...]
    split_rank: str
    offset: str | None
    derivation: Derivation
    total: str | None = None


def _with_offset(draft: Draft, rank: str, prog: Program) -> tuple[str | None, str | None]:
    """Use global coordinates in a part: ``m`` -> ``m + OFF`` except where ``m`` indexes a dimension of
    ``rank`` (an input's, which the caller slices to the part, or a tensor computed in the part). A tensor
    read at ``m`` along a dimension of another rank (``seg[m]`` of ``seg[n]``, read at ``p`` too) is not
    sliced: it is read at ``m + OFF``. A dimension of ``rank`` read at a shifted position (``V[m + 1, f]``, a
    convolution's ``K[m + k - 1, e]``) would need a neighbouring part's points: refused. The size ``M``
    written in an expression (decoding's ``m <= p + M - P``) is the whole rank's, not the part's: it becomes
    ``param M_ALL``. Returns the two params (None where the spec has no such use)."""
    param = draft.fresh("OFF")
    shifted = S.Binary("+", S.Coord(rank), S.Param(param))
    total = draft.fresh(f"{rank.upper()}_ALL")
    uses: set[str] = set()

    declared = {t.name: t.ranks for t in prog.tensors}

    def visit(n: S.Expr):
        if isinstance(n, S.Coord) and n.rank == rank:
            uses.add(param)
            return shifted
        if isinstance(n, S.Size) and n.rank == rank:
            uses.add(total)
            return S.Param(total, n.span)
        if isinstance(n, S.Read):
            own = declared.get(n.tensor)
            indices = []
            for k, i in enumerate(n.indices):
                along = own is not None and k < len(own) and own[k] == rank
                if along and i == S.Coord(rank):
                    indices.append(i)  # the part's own slice
                    continue
                if along:  # (a shifted position, or a fixed one such as `K[0, e]`, `K[M - 1, e]`)
                    raise RewriteError(
                        f"cannot split over {rank}: `{n.tensor}` is read at `{format_expr(i)}` along "
                        f"`{rank}`, so a part would need points of its neighbours",
                        getattr(n, "span", None),
                        "split over a rank that every tensor along it reads at the coordinate itself",
                    )
                indices.append(rewrite_expr(i, visit))
            return S.Read(n.tensor, tuple(indices))
        return None

    new = []
    for e in draft.einsums:
        expr = rewrite_expr(e.expr, visit)
        filt = rewrite_expr(e.filter, visit) if e.filter is not None else None
        if expr != e.expr or filt != e.filter:
            e = make_einsum(e.tensor, e.index, expr, filt, named_reductions(e), span=e.span)
        new.append(e)
    draft.einsums = new
    draft.params.extend((name, 0) for name in (param, total) if name in uses)
    return (param if param in uses else None), (total if total in uses else None)


def _reads_param(e: Einsum, name: str) -> bool:
    parts = (e.expr,) if e.filter is None else (e.expr, e.filter)
    return any(isinstance(n, S.Param) and n.name == name for x in parts for n in x.walk())


def _merge_reads(f: ShiftFn, prog: Program, lhs: tuple[str, ...], rank: str, span=None) -> set[str]:
    """The inputs and params of the spec that the rescaling ``f`` reads: the merge takes them too. A size or
    a computed tensor it cannot take: refused."""
    names: set[str] = set()
    own = dict(prog.params)
    for n in f.reads():
        if isinstance(n, S.Param) and n.name in own:  # (not OFF or M_ALL: a part's own)
            names.add(n.name)
        elif isinstance(n, S.Read) and n.tensor in prog.inputs and set(coords(n)) <= set(lhs):
            names.add(n.tensor)
        else:
            what = (  # (the whole size M, which a part reads as a param of its own)
                f"`{rank.upper()}`, the size of the whole of {rank}"
                if isinstance(n, S.Param)
                else f"`{format_expr(n)}`"
            )
            spelled = ShiftFn(  # (as the spec writes it: M, not the parts' own param)
                rewrite_expr(
                    f.body, lambda x: S.Size(rank) if isinstance(x, S.Param) and x.name not in own else None
                )
            ).key
            raise RewriteError(
                f"cannot split over {rank}: the merge rescales the parts' sums by f(d) = {spelled}, which "
                f"reads {what}, and a merge takes only the parts' states, the spec's params and inputs "
                f"along {', '.join(lhs) or 'no rank'}",
                getattr(n, "span", None) or span,
                "scale the scores before their max (`S = QK / T`, `GM = S :: max(m)`, `exp(S - GM)`)",
            )
    return names


def _free_of_the_rank(d: Draft, prog: Program, rank: str, names: set[str], states: set[str]) -> list[Einsum]:
    """What the finish needs besides the merged states: statements free of the split rank (an output
    `T = X * 2`, a per-row bias the finals read), computed there from the spec's inputs. A value computed
    along the rank outside the normalised sums (`T[p] = S[p, m]`, a second softmax over other keys) has no
    merge: refused, located. ``names`` (the finals) grows with what is pulled in."""
    loop = {rank} | {x for p in d.partitions if p.parent == rank for x in (p.outer, p.inner)}
    inputs = {t.name for t in d.inputs}
    pulled: list[Einsum] = []

    def pull(t: str) -> None:
        if t in names or t in inputs or t in states:
            return
        defs = [e for e in d.einsums if e.tensor == t]
        for e in defs:
            if set(e.space) & loop:
                raise RewriteError(
                    f"cannot split over {rank}: `{t}` is computed along {rank} outside the normalised sums "
                    "that a merge combines (a part would give only its own share of it)",
                    e.span,
                    f"split a spec whose every use of {rank} is inside its softmax's sums, or compute `{t}` "
                    "apart",
                )
        names.add(t)
        for e in defs:
            for r in e.reads():
                pull(r.tensor)
        pulled.extend(defs)

    finals = [e for e in d.einsums if e.tensor in names]
    for o in prog.outputs:
        pull(o)
    for e in finals:
        for r in e.reads():
            pull(r.tensor)
    return pulled


def split_k(prog: Program, rank: str = "m", tile: int = 64) -> SplitK:
    """Derive the partial, merge and finish programs of ``prog`` split along ``rank``.

    Raises :class:`RewriteError` when the 1-pass form cannot be derived (the merge is its second level).
    """
    if rank not in prog.ranks:
        raise EinError(f"rank `{rank}` does not appear in {prog.name}")
    for sized, by in prog.aliases:
        if by == rank and not any(sized in prog.tensor(n).ranks for n in prog.inputs):
            user = next((e for e in prog.einsums if sized in e.space), None)
            raise RewriteError(
                f"cannot split over {rank}: rank `{sized}` takes its size from `{rank}` "
                f"(`rank {sized.upper()} = {rank.upper()}`), and a part holds only its own points of {rank}",
                user.span if user is not None else None,
                f"give `{sized}` its size from an input (the queries' `[{sized}, ...]`), or do not split",
            )
    deriv = Derivation(prog.name, f"--split-k --rank {rank} --tile {tile}")
    d = Draft.of(prog)
    offset, total = _with_offset(d, rank, prog)
    defer(d, rank, deriv)
    states = online(d, rank, tile, deriv, guard=True)  # (a part may be empty)
    if not states:
        raise refuse(rank, "there is no max over it whose normalised sums could be merged")
    outer = next(p.outer for p in d.partitions if p.parent == rank)
    final = S.Size(outer)
    iterative = {st.name: st.pos for st in states} | {sm.name: sm.pos for st in states for sm in st.sums}

    def at_end(rd: S.Read) -> bool:
        return rd.tensor in iterative and rd.indices[iterative[rd.tensor]] == final

    # the finals: statements after the loop (reading a state at M1), and everything computed from them
    finals: list[Einsum] = []
    names: set[str] = set()
    for e in d.einsums:
        if (
            e.kind == "plain"
            and outer not in e.space
            and any(at_end(r) or r.tensor in names for r in e.reads())
        ):
            finals.append(e)
            names.add(e.tensor)
    pulled = _free_of_the_rank(d, prog, rank, names, set(iterative))  # (the partial may need them too)

    # ---- partial: the loop, with the final states as outputs -----------------------------------------------
    part = Draft(
        prog,
        d.inputs,
        [],
        d.params,
        d.partitions,
        [e for e in d.einsums if e not in finals],
        d.notes,
        aliases=list(d.aliases),
    )
    state_names: list[str] = []
    merge_stmts: list[Einsum] = []
    merge_inputs: list[Tensor] = []
    finish_stmts: list[Einsum] = []
    finish_inputs: list[Tensor] = []
    taken = set(d.names())
    split = "s"
    while split in taken or split.upper() in taken:
        split += "_"

    def fresh(base: str) -> str:
        """A new name ``X`` for a state, with ``X_s`` (its stacked form, the merge's input) free too."""
        name = base
        k = 2
        while name in taken or f"{name}_s" in taken:
            name = f"{base}{k}"
            k += 1
        taken.update({name, f"{name}_s"})
        return name

    merge_needs: set[str] = set()  # the spec's inputs and params that a rescaling reads (f(d) = exp(d / T))
    for st in states:
        lhs = tuple(r for k, r in enumerate(st.ranks) if k != st.pos)
        own = coord_tuple(lhs)
        fm, seen = fresh("F" + st.name), fresh("SEEN")
        end = S.Read(st.name, insert(own, st.pos, final))
        part.einsums.append(make_einsum(fm, plain_index(lhs), end))
        part.einsums.append(
            make_einsum(seen, plain_index(lhs), S.Binary("+", S.Binary("*", end, S.Const(0)), S.Const(1)))
        )
        part.notes[seen] = "1 where the part saw a present point, else 0"
        state_names += [fm, seen]
        # merge: the stacked states of the parts
        fm_s, seen_s = f"{fm}_s", f"{seen}_s"  # (reserved with the names)
        merge_inputs += [
            Tensor(fm_s, (split, *lhs), "float", "input"),
            Tensor(seen_s, (split, *lhs), "int", "input"),
        ]
        stacked = (S.Coord(split), *own)
        present = S.Compare(">", S.Read(seen_s, stacked), S.Const(0))
        merge_stmts.append(
            make_einsum(fm, plain_index(lhs), S.Read(fm_s, stacked), present, ((split, "max"),))
        )
        merge_stmts.append(
            make_einsum(seen, plain_index(lhs), S.Read(seen_s, stacked), None, ((split, "max"),))
        )
        factors: dict[ShiftFn, str] = {}
        # finish: the merged max, absent where no part saw a point
        finish_inputs += [Tensor(fm, lhs, "float", "input"), Tensor(seen, lhs, "int", "input")]
        finish_stmts.append(
            make_einsum(
                st.name, plain_index(lhs), S.Read(fm, own), S.Compare(">", S.Read(seen, own), S.Const(0))
            )
        )
        for sm in st.sums:
            lt = tuple(r for k, r in enumerate(sm.ranks) if k != sm.pos)
            here = coord_tuple(lt)
            if sm.f not in factors:
                cf = fresh("C" if not factors else f"C{sm.f.name or 'F'}")
                factors[sm.f] = cf
                shift = sm.f.apply(S.Binary("-", S.Read(fm_s, stacked), S.Read(fm, own)))
                merge_stmts.append(make_einsum(cf, plain_index((split, *lhs)), shift, present))
                merge_needs |= _merge_reads(sm.f, prog, lhs, rank, sm.span)
            ft = fresh("F" + sm.name)
            part.einsums.append(
                make_einsum(ft, plain_index(lt), S.Read(sm.name, insert(here, sm.pos, final)))
            )
            state_names.append(ft)
            ft_s = f"{ft}_s"  # (reserved with the name)
            merge_inputs.append(Tensor(ft_s, (split, *lt), "float", "input"))
            summand = S.Binary(
                "*",
                S.Read(ft_s, (S.Coord(split), *here)),
                S.Read(factors[sm.f], (S.Coord(split), *sm.frame)),
            )
            merge_stmts.append(make_einsum(ft, plain_index(lt), summand))
            finish_inputs.append(Tensor(ft, lt, "float", "input"))
            seen_here = S.Compare(">", S.Read(seen, sm.frame), S.Const(0))
            finish_stmts.append(make_einsum(sm.name, plain_index(lt), S.Read(ft, here), seen_here))
    part.outputs = list(state_names)
    part.dce()
    for e in part.einsums:  # a reduction over the whole rank that the loop reads: a part's own share of it
        if any(r == rank for r, _ in e.reduce) and e.tensor not in iterative:
            raise RewriteError(
                f"cannot split over {rank}: `{e.tensor}` reduces over the whole of {rank} and the "
                "normalised sums read it (a part would compute only its own share of it)",
                e.span,
                f"split a spec whose every use of {rank} is inside its softmax's sums, or compute "
                f"`{e.tensor}` apart and pass it as an input",
            )
    deriv.note(
        f"partial: the loop over {outer} on one part of {rank}; outputs "
        + ", ".join(state_names)
        + (f"; param {offset} is the part's first index along {rank}" if offset else "")
        + (f"; param {total} is the size of the whole of {rank} (the spec's {rank.upper()})" if total else "")
    )
    partial = part.finish(header=deriv.lines(), filename=f"<partial of {prog.name}>")

    merge_outputs = list(state_names)
    merge_inputs += [prog.tensor(n) for n in sorted(merge_needs) if n in prog.inputs]
    merge_params = [(n, v) for n, v in prog.params if n in merge_needs]
    md = Draft(prog, merge_inputs, merge_outputs, merge_params, [], merge_stmts, {}, aliases=list(d.aliases))
    merge = md.finish(
        header=[
            f"merge of partial states of {prog.name} over disjoint parts of {rank}, stacked along {split}",
            "max is associative; f(a - c) = f(a - b) * f(b - c) rescales each part's sums to the merged max",
        ],
        filename=f"<merge of {prog.name}>",
    )

    # ---- finish: the spec's outputs from a merged state ----------------------------------------------------
    def visit(n: S.Expr):
        if isinstance(n, S.Read) and at_end(n):
            pos = iterative[n.tensor]
            return S.Read(n.tensor, tuple(i for k, i in enumerate(n.indices) if k != pos))
        return None

    body = pulled + [
        make_einsum(e.tensor, e.index, rewrite_expr(e.expr, visit), e.filter, named_reductions(e))
        for e in finals
    ]
    used = {r.tensor for e in body for r in e.reads()}
    originals = [t for t in d.inputs if t.name in used]
    # a rank of the finish that no state or input it reads sizes (`O[p, f]` of a query-tiled spec, whose
    # states are along p1, p0): the spec's input along it comes too, for its size
    have = {r for t in finish_inputs + originals for r in t.ranks}
    sized = {
        n.rank
        for e in body
        for x in (e.expr, e.filter)
        if x is not None
        for n in x.walk()
        if isinstance(n, S.Size)
    }  # (a size written in an expression, `+ E`, `rsqrt(E)`, needs its rank too)
    for r in sorted(({r for e in body for r in e.space} | sized) - have):
        src = next((t for t in d.inputs if r in t.ranks and t not in originals), None)
        if src is not None:
            originals.append(src)
            have |= set(src.ranks)
    whole = [(total, 0)] if total and any(_reads_param(e, total) for e in body) else []
    params = [*prog.params, *whole]
    fd = Draft(
        prog,
        finish_inputs + originals,
        list(prog.outputs),
        params,
        [],
        finish_stmts + body,
        {},
        aliases=list(d.aliases),
    )
    finish = fd.finish(
        header=[f"outputs of {prog.name} from a merged state over {rank}"],
        filename=f"<finish of {prog.name}>",
    )
    return SplitK(partial, merge, finish, tuple(state_names), split, offset, deriv, total)
