"""The checked, immutable IR of a cascade.

A :class:`Program` is what every later phase reads (analysis, rewrites, lowerings). It is a frozen,
hashable value: compile caches key on it, rewrites build new ones with ``dataclasses.replace``.

Fields, in prose:

* ``inputs``: the tensors the caller passes, in declaration order (positional call order).
* ``outputs``: the result tensors, in ``output`` order.
* ``params``: ``(name, value)`` compile-time constants, overridable with :meth:`Program.with_params`.
* ``partitions``: ``rank M = M1 * M0`` facts, as rank variables (``m``, ``m1``, ``m0``).
* ``tensors``: one :class:`Tensor` per input and per defined tensor: its rank variables (one per dimension),
  element type, and for an iterative tensor which dimension is iterative (its extent is the rank's size + 1:
  states 0 .. R).
* ``einsums``: the statements in source order. Each has its LHS indices (:class:`LhsIndex`), its right-hand
  expression with every name resolved (``einattn.syntax`` expression nodes, no ``Name`` left), the iteration
  space (LHS ranks then reduced ranks), the reduction operator of each reduced rank in application order
  (``+`` ranks first, then the ``::`` ranks), and the filter predicate (or None).
* ``ranks``: every rank variable in order of first appearance.
* ``aliases``: ``(s, t)`` pairs from ``rank S = T``: rank ``s`` has the size of rank ``t``.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field, replace

from . import syntax as S
from .errors import EinError, InternalError, Source, Span


@dataclass(frozen=True)
class LhsIndex:
    """One left-hand index: ``kind`` is ``rank`` (plain ``r``), ``init`` (``0``) or ``step`` (``r + 1``).

    For ``init`` the rank is the iterative rank of the tensor, taken from its update statement.
    """

    rank: str
    kind: str = "rank"

    def __str__(self) -> str:
        return {"rank": self.rank, "init": "0", "step": f"{self.rank} + 1"}[self.kind]


@dataclass(frozen=True)
class Einsum:
    tensor: str
    index: tuple[LhsIndex, ...]
    expr: S.Expr
    reduce: tuple[tuple[str, str], ...]  # (rank, op) in the order reductions apply
    filter: S.Expr | None
    space: tuple[str, ...]  # iteration space: LHS ranks then reduced ranks
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def kind(self) -> str:
        """``plain``, ``init`` (writes state 0) or ``step`` (writes state r + 1)."""
        for ix in self.index:
            if ix.kind != "rank":
                return ix.kind
        return "plain"

    @property
    def lhs_ranks(self) -> tuple[str, ...]:
        """Ranks that index the output (the iterative rank of a ``step`` included, not of an ``init``)."""
        return tuple(ix.rank for ix in self.index if ix.kind != "init")

    @property
    def reduced(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.reduce)

    @property
    def label(self) -> str:
        """A unique, readable name: the tensor, with ``.init``/``.step`` for iterative statements."""
        return self.tensor if self.kind == "plain" else f"{self.tensor}.{self.kind}"

    def reads(self) -> tuple[S.Read, ...]:
        """Every tensor read in the expression and filter, nested index reads included."""
        roots = (self.expr,) + ((self.filter,) if self.filter is not None else ())
        return tuple(n for root in roots for n in root.walk() if isinstance(n, S.Read))


@dataclass(frozen=True)
class Tensor:
    name: str
    ranks: tuple[str, ...]
    dtype: str = "float"  # "float" | "int"
    role: str = "temp"  # "input" | "temp"
    iterative: int | None = None  # the iterative dimension, if any
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def is_input(self) -> bool:
        return self.role == "input"

    @property
    def iter_rank(self) -> str | None:
        return self.ranks[self.iterative] if self.iterative is not None else None


@dataclass(frozen=True)
class Partition:
    """``rank M = M1 * M0``: ``m = m1 * M0 + m0``; ``tile`` names the part fixed by a param."""

    parent: str
    outer: str
    inner: str
    tile: str  # "inner" or "outer": which part's size is a param
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Program:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[tuple[str, int | float], ...]
    partitions: tuple[Partition, ...]
    tensors: tuple[Tensor, ...]
    einsums: tuple[Einsum, ...]
    ranks: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()  # (rank, rank whose size it takes), from `rank S = T`
    source: Source | None = field(default=None, compare=False, hash=False, repr=False)
    warnings: tuple = field(default=(), compare=False, hash=False, repr=False)
    # where each param is declared (the checker's spans), to locate an override the spec cannot take
    param_spans: tuple[tuple[str, Span], ...] = field(default=(), compare=False, hash=False, repr=False)

    # ---- lookups --------------------------------------------------------------------------------
    @functools.cached_property
    def _tensor_map(self) -> dict[str, Tensor]:
        return {t.name: t for t in self.tensors}

    def tensor(self, name: str) -> Tensor:
        try:
            return self._tensor_map[name]
        except KeyError:
            raise InternalError(f"no tensor {name!r} in the program") from None

    @property
    def param_values(self) -> dict[str, int | float]:
        return dict(self.params)

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else "<program>"

    def definitions(self, tensor: str) -> tuple[Einsum, ...]:
        """The statements that write ``tensor`` (one, or an init and a step)."""
        return tuple(e for e in self.einsums if e.tensor == tensor)

    def partition_of(self, rank: str) -> Partition | None:
        """The partition in which ``rank`` is the parent or a part."""
        for p in self.partitions:
            if rank in (p.parent, p.outer, p.inner):
                return p
        return None

    @property
    def iterative_ranks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.iter_rank for t in self.tensors if t.iterative is not None))

    # ---- changes ----------------------------------------------------------------------------------
    def with_params(self, overrides: dict[str, int | float] | None) -> Program:
        """A copy with some params given new values (compile-time overrides)."""
        from .check import index_params, normalize_params, sized_params

        overrides = normalize_params(overrides)  # numpy numbers are numbers; a clear error otherwise
        if not overrides:
            return self
        current = dict(self.params)
        exact = sized_params(self) | index_params(self)
        for name, value in overrides.items():
            if name not in current:
                known = ", ".join(current) or "none"
                hint = f"the spec declares these params: {known}"
                if any(size_name(r) == name for r in self.ranks):
                    hint = (
                        f"`{name}` is the size of rank `{name.lower()}`, set by the inputs' shapes (the CLI: "
                        f"--size {name}={value}); {hint}"
                    )
                raise EinError(f"unknown param `{name}`", hint=hint)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EinError(f"param `{name}` must be a number, got {value!r}")
            if isinstance(current[name], int) and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif isinstance(value, int) and (
                isinstance(current[name], float) or (abs(value) >= 10**15 and name not in exact)
            ):
                # as the spec's own literals read (einattn.parser._number): a float where the declaration
                # is one, and for an integer too long to be exact in one (no int64 to wrap in a filter);
                # a param that sizes a rank or is in an index stays an integer, which check_params bounds
                with contextlib.suppress(OverflowError):  # (beyond float64: check_params says so below)
                    value = float(value)
            current[name] = value
        new = replace(self, params=tuple(current.items()))
        from .check import check_params

        check_params(new, dict(self.param_spans))
        return new


def renamed(prog: Program, mapping: dict[str, str]) -> Program:
    """``prog`` with tensors renamed (``mapping``: old name -> new; the others kept), for a backend that
    must not use the spec's names as they are in generated source (a tensor named ``torch`` or ``tl``)."""

    def name(n: str) -> str:
        return mapping.get(n, n)

    def expr(e: S.Expr | None) -> S.Expr | None:
        return renamed_expr(e, mapping)

    return replace(
        prog,
        inputs=tuple(map(name, prog.inputs)),
        outputs=tuple(map(name, prog.outputs)),
        tensors=tuple(replace(t, name=name(t.name)) for t in prog.tensors),
        einsums=tuple(
            replace(e, tensor=name(e.tensor), expr=expr(e.expr), filter=expr(e.filter)) for e in prog.einsums
        ),
    )


def renamed_expr(e: S.Expr | None, mapping: dict[str, str]) -> S.Expr | None:
    """``e`` with the tensors it reads renamed (``mapping``: old name -> new; the others kept)."""

    def read(x: S.Expr):
        if isinstance(x, S.Read):
            return S.Read(mapping.get(x.tensor, x.tensor), tuple(renamed_expr(i, mapping) for i in x.indices))
        return None

    return None if e is None else S.rewrite_expr(e, read)


def program_cache(maxsize: int = 256):
    """``functools.lru_cache`` for functions of a :class:`Program`, keyed on the program *and its source*.

    Program equality ignores spans (two files with the same statements are equal), so a plain cache could
    return a result whose spans point into the other file. Keying on the source as well keeps locations right.
    """

    def decorate(fn):
        @functools.lru_cache(maxsize=maxsize)
        def cached(prog, source, *args):
            return fn(prog, *args)

        @functools.wraps(fn)
        def wrapper(prog, *args):
            return cached(prog, prog.source, *args)

        wrapper.cache_clear = cached.cache_clear
        return wrapper

    return decorate


def size_name(rank: str) -> str:
    """The upper-case spelling that denotes a rank's size: ``m1`` -> ``M1``."""
    return rank.upper()


def coords(expr: S.Expr | None) -> tuple[str, ...]:
    """Rank variables an expression mentions, in order of first appearance."""
    if expr is None:
        return ()
    return tuple(dict.fromkeys(n.rank for n in expr.walk() if isinstance(n, S.Coord)))
