"""Frozen syntax nodes: what the parser produces and, for expressions, what the IR is made of.

Expressions are one small algebra shared by values, index expressions and filters. The parser produces
:class:`Name` for every bare identifier; the checker (``einattn.check``) resolves each one to a
:class:`Coord`, :class:`Size`, :class:`Param` or scalar :class:`Read`; no :class:`Name` survives into the IR.

Every node carries a ``span`` that is excluded from equality and hashing: two programs that say the same thing
compare equal wherever they were written, which is what ``parse(format(p)) == p`` needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .errors import Span


def _span():
    """A source span field: excluded from equality, hashing and repr."""
    return field(default=None, compare=False, hash=False, repr=False)


# ---- expressions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    def children(self) -> tuple[Expr, ...]:
        return ()

    def walk(self) -> Iterator[Expr]:
        """This node and every node below it, parents first."""
        yield self
        for c in self.children():
            yield from c.walk()


@dataclass(frozen=True)
class Const(Expr):
    """A number. ``value`` is an int for integer literals (usable in indices), else a float (inf too)."""

    value: int | float
    span: Span | None = _span()


@dataclass(frozen=True)
class Name(Expr):
    """A bare identifier before name resolution (parser output only)."""

    id: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Coord(Expr):
    """The coordinate of a rank variable: ``p`` in ``(p - m)``; also a plain index ``Q[p, e]``."""

    rank: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Size(Expr):
    """The size of a rank, spelled in upper case: ``E`` is the size of ``e``; bound at call time."""

    rank: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Param(Expr):
    """A compile-time constant declared with ``param NAME = value``."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Read(Expr):
    """A tensor read ``T[i, j]``; ``indices`` is empty for a scalar tensor."""

    tensor: str
    indices: tuple[Expr, ...]
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return self.indices


@dataclass(frozen=True)
class Call(Expr):
    """A function from the registry in ``einattn.functions``: ``exp(x)``, ``max(a, b)``."""

    fn: str
    args: tuple[Expr, ...]
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return self.args


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # "-"
    x: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.x,)


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # + - * / // %
    a: Expr
    b: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Compare(Expr):
    """``a op b`` for op in < <= > >= == !=. Chains ``a < b <= c`` are desugared to ``and``."""

    op: str
    a: Expr
    b: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Logic(Expr):
    op: str  # "and" | "or"
    a: Expr
    b: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Not(Expr):
    x: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.x,)


@dataclass(frozen=True)
class Default(Expr):
    """``a ?? b``: ``a`` where it is present, ``b`` where ``a`` is absent."""

    a: Expr
    b: Expr
    span: Span | None = _span()

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)


# ---- expression surgery ----------------------------------------------------------------------------


def rebuild(e: Expr, children: list[Expr] | tuple[Expr, ...]) -> Expr:
    """``e`` with new children (same node type and fields); spans are dropped."""
    children = tuple(children)
    if isinstance(e, Read):
        return Read(e.tensor, children)
    if isinstance(e, Call):
        return Call(e.fn, children)
    if isinstance(e, Unary):
        return Unary(e.op, children[0])
    if isinstance(e, Not):
        return Not(children[0])
    if isinstance(e, (Binary, Compare, Logic)):
        return type(e)(e.op, children[0], children[1])
    if isinstance(e, Default):
        return Default(children[0], children[1])
    return replace(e, span=None) if hasattr(e, "span") else e


def rewrite_expr(e: Expr, fn) -> Expr:
    """Top-down rewrite: ``fn(node)`` returns a replacement (not visited further) or None to recurse."""
    new = fn(e)
    if new is not None:
        return new
    kids = e.children()
    if not kids:
        return e
    return rebuild(e, [rewrite_expr(c, fn) for c in kids])


def subst(e: Expr | None, mapping: dict[str, Expr]) -> Expr | None:
    """Replace rank coordinates: ``Coord(r)`` -> ``mapping[r]`` (a simultaneous substitution)."""
    if e is None or not mapping:
        return e
    return rewrite_expr(e, lambda n: mapping.get(n.rank) if isinstance(n, Coord) else None)


# ---- statements (parser output) ----------------------------------------------------------------------


@dataclass(frozen=True)
class TensorDecl:
    name: str
    shape: tuple[str, ...] | None  # None: a scalar
    dtype: str  # "float" | "int"
    span: Span | None = _span()
    name_spans: tuple[Span, ...] = field(default=(), compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class InputDecl:
    tensors: tuple[TensorDecl, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class OutputDecl:
    names: tuple[str, ...]
    span: Span | None = _span()
    name_spans: tuple[Span, ...] = field(default=(), compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class ParamDecl:
    name: str
    value: int | float
    span: Span | None = _span()
    literal: str | None = field(default=None, compare=False, hash=False, repr=False)  # the number as written


@dataclass(frozen=True)
class RankDecl:
    """``rank M = M1 * M0``: m = m1 * M0 + m0, M1 = ceil(M / M0)."""

    parent: str
    outer: str
    inner: str
    span: Span | None = _span()
    name_spans: tuple[Span, ...] = field(default=(), compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class RankAlias:
    """``rank S = T``: rank ``s`` has the size of rank ``t`` (two ranks over the same positions)."""

    name: str
    target: str
    span: Span | None = _span()
    name_spans: tuple[Span, ...] = field(default=(), compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Statement:
    """``LHS = expr [:: op(ranks)] [where filter]`` as written (indices unresolved)."""

    tensor: str
    indices: tuple[Expr, ...] | None  # None: a scalar LHS
    expr: Expr
    reduce_op: str | None
    reduce_ranks: tuple[str, ...]
    filter: Expr | None
    span: Span | None = _span()
    lhs_span: Span | None = _span()
    reduce_spans: tuple[Span, ...] = field(default=(), compare=False, hash=False, repr=False)


Item = InputDecl | OutputDecl | ParamDecl | RankDecl | RankAlias | Statement


@dataclass(frozen=True)
class Module:
    """A parsed spec, before semantic checks."""

    items: tuple[Item, ...]
    source: object = field(default=None, compare=False, hash=False, repr=False)
