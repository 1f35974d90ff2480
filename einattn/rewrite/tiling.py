"""Splitting a rank into tiles: ``rank M = M1 * M0``, ``m = m1 * M0 + m0``, statement by statement."""

from __future__ import annotations

from .. import syntax as S
from ..ir import Einsum, LhsIndex, Partition, coords, size_name
from .draft import Draft, make_einsum, plain_index
from .rules import (
    conj,
    coord_tuple,
    named_reductions,
    refuse,
    rewrite_expr,
    text,
)

# ---- tiling ------------------------------------------------------------------------------------------------


class Tiler:
    """Rewrites statements from rank ``rank`` to the tile ranks ``outer`` (m1) and ``inner`` (m0).

    A tensor in ``tiled`` is read at ``[.., m1, m0, ..]`` in place of ``[.., m, ..]``; an input read at ``m``
    is first copied into tiles (``BK = K[.., m1 * M0 + m0, ..]``; an integer input is read in place, since
    temporaries hold floats); any other use of ``m`` becomes
    ``m1 * M0 + m0``. A tiled statement that reads nothing tiled gets the filter ``m1 * M0 + m0 < M``, so that
    the ragged last tile has no point the original did not have.
    """

    def __init__(self, draft: Draft, rank: str, outer: str, inner: str, tile_param: str):
        self.draft, self.rank, self.outer, self.inner, self.param = draft, rank, outer, inner, tile_param
        self.tiled: dict[str, tuple[str, int]] = {}
        self.blocks: list[Einsum] = []
        self._block_names: dict[tuple[str, int], str] = {}

    def flat(self) -> S.Expr:
        return S.Binary("+", S.Binary("*", S.Coord(self.outer), S.Param(self.param)), S.Coord(self.inner))

    def in_range(self) -> S.Expr:
        return S.Compare("<", self.flat(), S.Size(self.rank))

    def expr(self, e: S.Expr | None, override: dict[str, tuple[str, int]] | None = None) -> S.Expr | None:
        if e is None:
            return None
        rank = self.rank

        def visit(n: S.Expr):
            if isinstance(n, S.Coord) and n.rank == rank:
                return self.flat()
            if isinstance(n, S.Read):
                target = (override or {}).get(n.tensor) or self.tiled.get(n.tensor)
                if target is not None:
                    return self._tiled_read(n, *target, override)
                inp = self.draft.input(n.tensor)
                if inp is not None and inp.dtype == "float" and S.Coord(rank) in n.indices:
                    pos = n.indices.index(S.Coord(rank))
                    return self._tiled_read(n, self._block(inp.name, pos), pos, override)
            return None

        return rewrite_expr(e, visit)

    def _tiled_read(self, n: S.Read, name: str, pos: int, override) -> S.Read:
        idx = n.indices
        if idx[pos] != S.Coord(self.rank) or any(
            self.rank in coords(i) for k, i in enumerate(idx) if k != pos
        ):
            raise refuse(
                self.rank,
                f"`{text(n)}` reads `{n.tensor}` at a computed position along {self.rank}",
                n,
                hint=f"a tensor that is split into tiles must be read by `{self.rank}` itself",
            )
        rest = [self.expr(i, override) for i in idx]
        return S.Read(name, (*rest[:pos], S.Coord(self.outer), S.Coord(self.inner), *rest[pos + 1 :]))

    def _block(self, name: str, pos: int) -> str:
        key = (name, pos)
        if key not in self._block_names:
            inp = self.draft.input(name)
            new = self.draft.fresh("B" + name, set(self._block_names.values()))
            ranks = (*inp.ranks[:pos], self.outer, self.inner, *inp.ranks[pos + 1 :])
            idx = tuple(self.flat() if k == pos else S.Coord(r) for k, r in enumerate(inp.ranks))
            filt = None if inp.ranks[pos] == self.rank else self.in_range()
            self.blocks.append(make_einsum(new, plain_index(ranks), S.Read(name, idx), filt))
            self._block_names[key] = new
        return self._block_names[key]

    def index(self, index: tuple[LhsIndex, ...]) -> tuple[LhsIndex, ...]:
        out: list[LhsIndex] = []
        for ix in index:
            if ix.rank == self.rank and ix.kind == "rank":
                out += [LhsIndex(self.outer), LhsIndex(self.inner)]
            else:
                out.append(ix)
        return tuple(out)

    def named(self, e: Einsum, outer_in_lhs: bool) -> tuple[tuple[str, str], ...]:
        out = []
        for r, op in named_reductions(e):
            if r != self.rank:
                out.append((r, op))
            elif outer_in_lhs:
                out.append((self.inner, op))
            else:
                out += [(self.outer, op), (self.inner, op)]
        return tuple(out)

    def names(self) -> set[str]:
        return {n for n, _ in self.tiled.values()} | set(self._block_names.values())

    def bounded(self, e: S.Expr, names: set[str]) -> bool:
        """Is ``e`` absent wherever ``m1 * M0 + m0 >= M``? (Absence propagates; ``??`` needs both sides.)"""
        if isinstance(e, S.Read):
            return e.tensor in names
        if isinstance(e, S.Default):
            return self.bounded(e.a, names) and self.bounded(e.b, names)
        return any(self.bounded(c, names) for c in e.children())

    def statement(
        self, name: str, index, expr: S.Expr, filt: S.Expr | None, named=(), override=None
    ) -> Einsum:
        """A tiled statement: ``expr`` and ``filt`` are rewritten, the ragged-tile filter added if needed."""
        new_expr = self.expr(expr, override)
        new_filt = self.expr(filt, override)
        tiled_names = self.names() | {n for n, _ in (override or {}).values()}
        if not self.bounded(new_expr, tiled_names):
            new_filt = conj(new_filt, self.in_range())
        return make_einsum(name, index, new_expr, new_filt, named)

    def tile_upstream(self, up: list[Einsum], taken: set[str]) -> tuple[list[Einsum], list[Einsum]]:
        """The statements of ``up`` that no earlier group has tiled, and their tiled copies
        (``B<name>[.., m1, m0, ..]``)."""
        new = [u for u in up if u.tensor not in self.tiled]
        for u in new:
            name = self.draft.fresh("B" + u.tensor, self.names() | taken)
            self.tiled[u.tensor] = (name, u.lhs_ranks.index(self.rank))
        tiled = [
            self.statement(
                self.tiled[u.tensor][0], self.index(u.index), u.expr, u.filter, self.named(u, False)
            )
            for u in new
        ]
        return new, tiled


def tile_position(e: Einsum, rank: str) -> int:
    """Where the tile rank goes among ``e``'s output ranks: the place of ``rank`` in the summand's order."""
    order = list(coords(e.expr)) + [r for r in coords(e.filter) if r not in coords(e.expr)]
    lhs = list(e.lhs_ranks)
    if rank in order:
        for r in order[order.index(rank) + 1 :]:
            if r in lhs:
                return lhs.index(r)
    return len(lhs)


def upstream(draft: Draft, rank: str, roots: list[Einsum], exclude: set[str]) -> list[Einsum]:
    """The statements along ``rank`` that ``roots`` read, transitively (the scores' path): tiled with them."""
    found: list[Einsum] = []
    stack = list(roots)
    while stack:
        e = stack.pop()
        for rd in e.reads():
            if rd.tensor in exclude or draft.input(rd.tensor) is not None or rd.tensor == e.tensor:
                continue
            d = draft.definition(rd.tensor)
            if d is None:
                if rank in draft.ranks_of(rd.tensor):
                    raise refuse(rank, f"`{rd.tensor}` is an iterative tensor along {rank}", e)
                continue
            if rank in d.lhs_ranks and d not in found:
                found.append(d)
                stack.append(d)
    order = {id(e): k for k, e in enumerate(draft.einsums)}
    return sorted(found, key=lambda e: order[id(e)])


def absence_varies(rank: str, stmts: list[Einsum], draft: Draft) -> bool:
    """Can a whole tile of ``rank`` be absent while others are not (a filter or index expression along it)?"""
    for e in stmts:
        if rank in coords(e.filter):
            return True
        for rd in e.reads():
            for k, ix in enumerate(rd.indices):
                if ix == S.Coord(rank):
                    if _declared_rank(draft, rd.tensor, k) != rank:  # (read past its end: absent)
                        return True
                elif rank in coords(ix):
                    return True
    return False


def _declared_rank(draft: Draft, tensor: str, k: int) -> str | None:
    """The rank of dimension ``k`` of ``tensor`` (an input's declaration, or its statement's left-hand side);
    None where it is not a plain rank."""
    inp = draft.input(tensor)
    if inp is not None:
        return inp.ranks[k]
    for d in draft.einsums:
        if d.tensor == tensor and k < len(d.index):
            ix = d.index[k]
            return ix.rank if ix.kind == "rank" else None
    return None


def setup_tiles(draft: Draft, rank: str, tile: int, at: Einsum) -> Tiler:
    if not any(rank in t.ranks for t in draft.inputs):
        raise refuse(
            rank,
            f"{rank} indexes no input (its size {size_name(rank)} is given otherwise), so it cannot be split "
            "into tiles",
            at,
            hint=f"a partition `rank {size_name(rank)} = ...` needs an input indexed by {rank}; the rewrite "
            "streams a sequence rank such as the keys' m",
        )
    aliased = dict(draft.aliases).get(rank)
    if aliased is not None:
        raise refuse(
            rank,
            f"the size of {rank} is declared as the size of {aliased} (`rank {size_name(rank)} = "
            f"{size_name(aliased)}`), and a rank with an alias cannot also be split into tiles",
            at,
            hint=f"stream over {aliased}, or give {rank} its size through an input",
        )
    outer = draft.fresh_rank(rank + "1")
    inner = draft.fresh_rank(rank + "0")
    param = size_name(inner)
    draft.params.append((param, tile))
    draft.partitions.append(Partition(rank, outer, inner, "inner"))
    return Tiler(draft, rank, outer, inner, param)


def replace_reads(e: Einsum, mapping) -> Einsum:
    """``e`` with each read of a tensor in ``mapping`` replaced by ``mapping[tensor](read)``."""

    def visit(n):
        if isinstance(n, S.Read) and n.tensor in mapping:
            return mapping[n.tensor](n)
        return None

    expr = rewrite_expr(e.expr, visit)
    filt = rewrite_expr(e.filter, visit) if e.filter is not None else None
    if expr == e.expr and filt == e.filter:
        return e
    return make_einsum(e.tensor, e.index, expr, filt, named_reductions(e), span=e.span)


def untile(e: Einsum, tiled: str, t: Tiler) -> Einsum:
    """An output keeps its shape: ``T[.., m, ..] = BT[.., m // M0, m % M0, ..]``."""
    p = e.lhs_ranks.index(t.rank)
    idx = list(coord_tuple(e.lhs_ranks))
    idx[p : p + 1] = [
        S.Binary("//", S.Coord(t.rank), S.Param(t.param)),
        S.Binary("%", S.Coord(t.rank), S.Param(t.param)),
    ]
    return make_einsum(e.tensor, e.index, S.Read(tiled, tuple(idx)))


def note_partition(deriv, rank: str, t: Tiler, up: list[Einsum], tiled_up: list[Einsum]) -> None:
    """The derivation's step for the values along ``rank`` that ``t`` computes tile by tile."""
    from .rules import stmt_text

    deriv.step(
        "partition",
        up[0],
        f"the values along {rank} are computed tile by tile: "
        + ", ".join(f"`{u.tensor}` -> `{t.tiled[u.tensor][0]}`" for u in up),
        [stmt_text(e) for e in tiled_up],
        ["elementwise along " + rank + ": any order of its points gives the same values"],
    )
