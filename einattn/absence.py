"""Where a program can have absent points: a static analysis for backends that carry presence masks.

A point of a tensor is absent when a filter is false there, when a read there goes out of bounds, or when it
is computed from absent points (see the language reference). A backend must carry a presence mask only for
tensors that can have absent points; this module says which, and where.

The analysis describes the presence of every value by a :data:`Presence`:

* ``frozenset()`` -- present everywhere (no mask needed);
* a frozenset of :class:`Affine` constraints ``a . x + c >= 0`` over rank variables -- present exactly
  where all hold (``m <= p`` is ``p - m >= 0``; a ragged tile read ``K[m1 * M0 + m0]`` is
  ``M - 1 - M0 m1 - m0 >= 0``);
* ``None`` -- unknown (a data-dependent filter, a gather, a ``??`` of two maybe-absent values...): it may be
  absent anywhere.

Rules: a read adds its out-of-bounds constraints and the presence of the tensor read, with the tensor's ranks
replaced by the affine index expressions (an index ``x // c``, ``x`` affine and ``c`` a positive constant,
is in bounds exactly where ``0 <= x <= c n - 1``: GQA's ``K[b, h // R, m, e]`` is present where
``R G - 1 - h >= 0``); elementwise operations take the union of their operands'
constraints; ``a ?? b`` is present everywhere when either side is; a filter adds its comparisons (conjunctions
of affine comparisons, negations included; anything else is unknown); a reduction is present where some point
of the reduced ranks is, which Fourier-Motzkin elimination computes exactly when the reduced rank has a
coefficient of +-1 in every constraint (else: unknown). An iterative tensor is present everywhere when its
initialiser is and its update is, assuming the previous state is (induction over the steps); else unknown.

Constraints that hold for every point of the ranks' ranges are dropped, proved with sizes >= 1; with
``empty=True`` sizes may be 0, so a reduction over a possibly empty rank stays maybe-absent (a backend
compiles that variant when an input has a zero size).

Constant parts of constraints are linear combinations of *atoms*: ``("size", r)`` the size of rank ``r`` (a
param-sized rank's size is its number), ``("index", r)`` a fixed loop index, and products of atoms. A backend
renders atoms as code.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from . import syntax as S
from .ir import Einsum, Program, coords, size_name

Atom = tuple  # ("size", r) | ("index", r) | ("prod", atom, atom)


@dataclass(frozen=True, order=True)
class Lin:
    """``const + sum(coef * atom)`` with integer coefficients: a quantity known at call time."""

    terms: tuple[tuple[Atom, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(atom: Atom, coef: int = 1) -> Lin:
        return Lin(((atom, coef),)) if coef else Lin()

    def __add__(self, other: Lin) -> Lin:
        acc = dict(self.terms)
        for a, c in other.terms:
            acc[a] = acc.get(a, 0) + c
        return Lin(tuple(sorted((a, c) for a, c in acc.items() if c)), self.const + other.const)

    def scale(self, k: int) -> Lin:
        return Lin(tuple((a, c * k) for a, c in self.terms if c * k), self.const * k)

    def __neg__(self) -> Lin:
        return self.scale(-1)

    def __sub__(self, other: Lin) -> Lin:
        return self + (-other)

    @property
    def is_number(self) -> bool:
        return not self.terms


def num(k: int) -> Lin:
    return Lin((), k)


@dataclass(frozen=True, order=True)
class Affine:
    """``sum(coef * rank) + const``: rank variables with integer coefficients, plus a :class:`Lin`."""

    coefs: tuple[tuple[str, int], ...]
    const: Lin

    @staticmethod
    def make(coefs: dict[str, int], const: Lin) -> Affine:
        return Affine(tuple(sorted((r, c) for r, c in coefs.items() if c)), const)

    def __add__(self, other: Affine) -> Affine:
        acc = dict(self.coefs)
        for r, c in other.coefs:
            acc[r] = acc.get(r, 0) + c
        return Affine.make(acc, self.const + other.const)

    def scale(self, k: int) -> Affine:
        return Affine.make({r: c * k for r, c in self.coefs}, self.const.scale(k))

    def __neg__(self) -> Affine:
        return self.scale(-1)

    def __sub__(self, other: Affine) -> Affine:
        return self + (-other)

    def coef(self, rank: str) -> int:
        return dict(self.coefs).get(rank, 0)

    @property
    def ranks(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.coefs)

    def substitute(self, rank: str, value: Affine) -> Affine:
        """Replace ``rank`` by ``value``."""
        k = self.coef(rank)
        if not k:
            return self
        rest = Affine.make({r: c for r, c in self.coefs if r != rank}, self.const)
        return rest + value.scale(k)


Presence = frozenset | None
ALWAYS: frozenset = frozenset()


def conj(*parts: Presence) -> Presence:
    """The conjunction of presences (unknown if any is)."""
    out: set = set()
    for p in parts:
        if p is None:
            return None
        out |= p
    return frozenset(out)


class Analysis:
    """The presence of every tensor, statement and expression of one program (results are cached)."""

    exact = True  # (:class:`Necessary`: False)

    def __init__(self, prog: Program, empty: bool = False):
        self.prog, self.empty = prog, empty
        self.params = prog.param_values
        self._tensors: dict[str, Presence] = {}
        self._statements: dict[Einsum, Presence] = {}
        self._busy: set[str] = set()

    # ---- affine forms -----------------------------------------------------------------------------------
    def size(self, rank: str) -> Lin:
        """The size of a rank: a number for a param-sized rank, else an atom."""
        v = self.params.get(size_name(rank))
        return num(v) if isinstance(v, int) else Lin.of(("size", rank))

    def affine(self, e: S.Expr, fixed: frozenset[str] = frozenset()) -> Affine | None:
        """``e`` as an affine form, or None. Ranks in ``fixed`` are loop indices (atoms), not variables."""
        if isinstance(e, S.Const):
            return Affine.make({}, num(e.value)) if isinstance(e.value, int) else None
        if isinstance(e, S.Coord):
            if e.rank in fixed:
                return Affine.make({}, Lin.of(("index", e.rank)))
            return Affine.make({e.rank: 1}, Lin())
        if isinstance(e, S.Size):
            return Affine.make({}, self.size(e.rank))
        if isinstance(e, S.Param):
            v = self.params[e.name]
            return Affine.make({}, num(v)) if isinstance(v, int) else None
        if isinstance(e, S.Unary) and e.op == "-":
            a = self.affine(e.x, fixed)
            return None if a is None else -a
        if isinstance(e, S.Binary) and e.op in "+-*":
            a, b = self.affine(e.a, fixed), self.affine(e.b, fixed)
            if a is None or b is None:
                return None
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if a.coefs and b.coefs:
                return None
            if b.coefs:
                a, b = b, a
            if b.const.is_number:
                return a.scale(b.const.const)
            if a.coefs:
                return None  # a rank variable times a size: not affine with integer coefficients
            return Affine.make({}, _product(a.const, b.const))
        return None

    def quotient(self, e: S.Expr) -> tuple[Affine, int] | None:
        """``(x, c)`` where ``e`` is ``x // c``, ``x`` affine and ``c`` a positive integer constant."""
        if not (isinstance(e, S.Binary) and e.op == "//"):
            return None
        x, c = self.affine(e.a), self.affine(e.b)
        if x is None or c is None or c.coefs or not c.const.is_number or c.const.const <= 0:
            return None
        return x, c.const.const

    # ---- proofs -----------------------------------------------------------------------------------------
    def lower(self, atom: Atom) -> int | None:
        if atom[0] == "size":
            return 0 if self.empty else 1
        if atom[0] == "index":
            return 0
        lo = [self.lower(a) for a in atom[1:]]
        return None if None in lo else math.prod(lo)

    def nonneg(self, x: Lin, facts: dict[Atom, Lin] | None = None) -> bool:
        """Whether ``x >= 0`` for every size >= 1 (>= 0 when ``empty``) and every loop index in range.

        ``facts`` bounds atoms from above (a loop index is below its rank's size); an atom with a negative
        coefficient is replaced by its bound, then every atom by its lower bound.
        """
        for _ in range(4):
            neg = [(a, c) for a, c in x.terms if c < 0 and facts and a in facts]
            if not neg:
                break
            for a, c in neg:
                x = x - Lin.of(a, c) + facts[a].scale(c)
        total = x.const
        for a, c in x.terms:
            lo = self.lower(a)
            if c < 0 or lo is None:
                return False
            total += c * lo
        return total >= 0

    def always(self, c: Affine, facts: dict[Atom, Lin] | None = None) -> bool:
        """Whether constraint ``c >= 0`` holds at every point of its ranks' ranges."""
        low = c.const
        for r, k in c.coefs:
            if k < 0:
                low = low + (self.size(r) - num(1)).scale(k)
        return self.nonneg(low, facts)

    def simplify(self, p: Presence, facts: dict[Atom, Lin] | None = None) -> Presence:
        return None if p is None else frozenset(c for c in p if not self.always(c, facts))

    def eliminate(self, p: Presence, rank: str, facts: dict[Atom, Lin] | None = None) -> Presence:
        """Presence of "some point of ``rank`` in its range is present" (Fourier-Motzkin, unit coefs)."""
        if p is None:
            return None
        cons = set(p) | {Affine.make({rank: 1}, Lin()), Affine.make({rank: -1}, self.size(rank) - num(1))}
        lows = [c for c in cons if c.coef(rank) > 0]
        highs = [c for c in cons if c.coef(rank) < 0]
        if any(abs(c.coef(rank)) != 1 for c in lows + highs):
            return None
        out = {c for c in cons if c.coef(rank) == 0}
        out |= {lo + hi for lo in lows for hi in highs}
        return self.simplify(frozenset(out), facts)

    # ---- presence ---------------------------------------------------------------------------------------
    def tensor(self, name: str) -> Presence:
        """Presence of tensor ``name`` over its own ranks."""
        if name in self._tensors:
            return self._tensors[name]
        t = self.prog.tensor(name)
        if t.is_input:
            return ALWAYS
        if name in self._busy:  # an iterative tensor read by its own update: assume the previous state
            return ALWAYS
        if t.iterative is None:
            self._warm(name)
        defs = self.prog.definitions(name)
        if t.iterative is None:
            result = self.statement(defs[0])
        else:  # induction: present if the initialiser is, and the update is given the previous state
            known = (set(self._tensors), set(self._statements))
            self._busy.add(name)
            try:
                ok = all(self.statement(e) == ALWAYS for e in defs)
            finally:
                self._busy.discard(name)
            result = ALWAYS if ok else None
            if not ok:  # what was derived from the failed assumption is void
                for k in set(self._tensors) - known[0]:
                    del self._tensors[k]
                for k in set(self._statements) - known[1]:
                    del self._statements[k]
        self._tensors[name] = result
        return result

    def _warm(self, name: str) -> None:
        """Compute the presence of what ``name`` reads first, dependencies before their readers, so that
        the recursion of :meth:`tensor` stays shallow on a long chain of statements (``T2 = T1 * 2``, ...:
        about seven frames a statement, a RecursionError past 150 of them)."""
        order, seen, stack = [], set(), [(name, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            t = self.prog.tensor(n)
            if n in seen or n in self._tensors or t.is_input or t.iterative is not None:
                continue
            seen.add(n)
            stack.append((n, True))
            stack.extend((rd.tensor, False) for e in self.prog.definitions(n) for rd in e.reads())
        for n in order[:-1]:  # (the last is `name` itself)
            self.tensor(n)

    def may_be_absent(self, name: str) -> bool:
        return self.tensor(name) != ALWAYS

    def statement(self, e: Einsum) -> Presence:
        """Presence of the statement's result over its left-hand ranks (the reduced ranks eliminated)."""
        if e not in self._statements:
            p = self.space(e)
            for r in e.reduced:
                p = self.eliminate(p, r)
            self._statements[e] = p
        return self._statements[e]

    def space(self, e: Einsum) -> Presence:
        """Presence over the statement's whole iteration space, before its reduction."""
        return conj(self.filter(e.filter), self.expr(e.expr))

    def filter(self, f: S.Expr | None) -> Presence:
        if f is None:
            return ALWAYS
        if isinstance(f, S.Logic) and f.op == "and":
            return conj(self.filter(f.a), self.filter(f.b))
        if isinstance(f, S.Not) and isinstance(f.x, S.Compare):
            return self.filter(S.Compare(_NEGATE[f.x.op], f.x.a, f.x.b))
        if isinstance(f, S.Compare):
            folded = _abs_bound(f)
            if folded is not None:  # `abs(x) < c` is `-c < x < c`: a conjunction of affine comparisons
                return self.filter(folded)
            a, b = self.affine(f.a), self.affine(f.b)
            if a is None or b is None:
                return None
            d = b - a  # a op b  ->  constraints on b - a
            cons = {
                "<=": [d],
                "<": [d - Affine.make({}, num(1))],
                ">=": [-d],
                ">": [-d - Affine.make({}, num(1))],
                "==": [d, -d],
            }.get(f.op)
            return None if cons is None else self.simplify(frozenset(cons))
        return None

    def expr(self, e: S.Expr) -> Presence:
        """Presence of an expression over the ranks it mentions."""
        if isinstance(e, (S.Const, S.Coord, S.Size, S.Param)):
            return ALWAYS
        if isinstance(e, S.Read):
            return self.read(e)
        if isinstance(e, S.Default):
            a, b = self.expr(e.a), self.expr(e.b)
            if a == ALWAYS or b == ALWAYS:
                return ALWAYS
            return a if a == b else None
        return conj(*(self.expr(c) for c in e.children()))

    def read(self, rd: S.Read) -> Presence:
        t = self.prog.tensor(rd.tensor)
        inner = self.tensor(rd.tensor)
        cons: set[Affine] = set()
        forms: list[Affine | None] = []
        for k, (r, ix) in enumerate(zip(t.ranks, rd.indices)):
            forms.append(self.affine(ix))
            if self.in_bounds(t, k, ix):
                continue
            bound = self.bounds(ix, forms[-1], self.size(r) + num(int(k == t.iterative)))
            if bound is None and self.exact:
                return None
            cons |= bound or set()
        if inner is None:
            return None
        for c in inner:
            if any(forms[t.ranks.index(r)] is None for r in c.ranks):
                if self.exact:
                    return None
                continue
            sub = Affine.make({}, c.const)
            for r, k in c.coefs:
                sub = sub + forms[t.ranks.index(r)].scale(k)
            cons.add(sub)
        return self.simplify(frozenset(cons))

    def bounds(self, ix: S.Expr, a: Affine | None, extent: Lin) -> set[Affine] | None:
        """The constraints under which index ``ix`` (``a``: its affine form, or None) lies in ``[0,
        extent)``, or None (not affine). ``x // c`` (``x`` affine, ``c`` a positive constant) is in ``[0, n)``
        exactly where ``0 <= x <= c n - 1``: GQA's ``K[b, h // R]``; ``x % c`` always, where ``c <= n`` is
        proved (``K[b, h % G]``)."""
        if a is None and isinstance(ix, S.Binary) and ix.op == "%" and self.affine(ix.a) is not None:
            # `x % c` is in [0, c): in bounds wherever c <= n (GQA's heads as `K[b, h % G, m, e]`); a size
            # that may be 0 (`empty`) makes it a zero divisor, absent
            c = self.affine(ix.b)
            fits = c is not None and not c.coefs and not self.empty
            if fits and (
                c.const == extent
                or (c.const.is_number and c.const.const > 0 and self.nonneg(extent - c.const))
            ):
                return set()
            return None
        if a is None:
            q = self.quotient(ix)
            if q is None:
                return None
            a, extent = q[0], extent.scale(q[1])
        return {a, Affine.make({}, extent - num(1)) - a}

    # ---- implication ----------------------------------------------------------------------------------
    def implies(self, a: S.Expr, b: S.Expr) -> bool:
        """Whether ``b`` is present at every point of a statement's space where ``a`` is.

        Proved by finding a read that ``a`` needs (:meth:`needs`) among the reads any one of which makes
        ``b`` present (:meth:`suffices`). In the rewritten cascade's ``exp(BQK[m1, m0, p] - RM[m1 + 1, p])``,
        a present score makes its tile's max ``LM[m1, p]`` present, and that makes the new running max
        ``max(RM ?? LM, LM ?? RM)`` present: the difference is absent exactly where the score is."""
        if self.expr(b) == ALWAYS:
            return True
        found = self.suffices(b)
        return found is _ANY or any(_match(s, r, {}) for r in self.needs(a) for s in found)

    def needs(self, e: S.Expr) -> frozenset[S.Read]:
        """Reads that are present wherever ``e`` is."""
        if isinstance(e, S.Read):
            return frozenset({e})
        if isinstance(e, S.Default):  # either side may be the present one
            return self.needs(e.a) & self.needs(e.b)
        out: frozenset[S.Read] = frozenset()
        for c in e.children():
            out |= self.needs(c)
        return out

    def suffices(self, e: S.Expr, depth: int = 8) -> frozenset[S.Read] | object:
        """Read patterns any one of which, present, makes ``e`` present (:data:`_ANY`: ``e`` is always
        present). A pattern is a read whose indices may hold wildcards (``Coord("?m0")``), each a rank that
        a defining statement reduces, standing for any point of its range."""
        if isinstance(e, S.Read):
            t = self.prog.tensor(e.tensor)
            if self.tensor(e.tensor) == ALWAYS and all(
                self.in_bounds(t, k, ix) for k, ix in enumerate(e.indices)
            ):
                return _ANY
            inner = self._unfold(e, depth)
            return _ANY if inner is _ANY else frozenset({e}) | inner
        if isinstance(e, S.Default):  # present where either side is
            a, b = self.suffices(e.a, depth), self.suffices(e.b, depth)
            return _ANY if _ANY in (a, b) else a | b
        # an operation is present where all its operands are: a pattern must serve each maybe-absent one
        parts = [p for p in (self.suffices(c, depth) for c in e.children()) if p is not _ANY]
        return functools.reduce(frozenset.__and__, parts) if parts else _ANY

    def _unfold(self, rd: S.Read, depth: int) -> frozenset[S.Read] | object:
        """Patterns that make ``rd`` present through its tensor's definition: the definition's own
        patterns, its left-hand ranks replaced by ``rd``'s indices and its reduced ranks by wildcards.

        Unfolded: reads in bounds by their form (a present witness then lies in the reduced rank's range)
        of a tensor with one definition (an iterative one through its update, read as ``r + 1``: the state
        the reader's own step computes) that has no filter."""
        t = self.prog.tensor(rd.tensor)
        if depth <= 0 or t.is_input or not rd.indices:
            return frozenset()
        if not all(self.in_bounds(t, k, ix) for k, ix in enumerate(rd.indices)):
            return frozenset()
        defs = [e for e in self.prog.definitions(rd.tensor) if e.kind != "init"]
        if len(defs) != 1 or defs[0].filter is not None:
            return frozenset()
        e = defs[0]
        if len(set(e.lhs_ranks)) != len(e.lhs_ranks):
            return frozenset()
        mapping: dict[str, S.Expr] = {}
        for lhs, ix in zip(e.index, rd.indices):
            if lhs.kind == "step":  # the reader's `r + 1`: its own `r` is the step's
                if not (isinstance(ix, S.Binary) and ix.op == "+" and ix.b == S.Const(1)):
                    return frozenset()
                ix = ix.a
            mapping[lhs.rank] = ix
        mapping |= {r: S.Coord("?" + r) for r in e.reduced}
        inner = self.suffices(e.expr, depth - 1)
        if inner is _ANY:
            return _ANY
        return frozenset(q for q in (S.subst(p, mapping) for p in inner) if _witnesses_in_range(self.prog, q))

    def in_bounds(self, t, k: int, ix: S.Expr) -> bool:
        """Index ``ix`` of dimension ``k`` of tensor ``t`` is in bounds by its form alone."""
        r = t.ranks[k]
        if k == t.iterative:
            return ix in (S.Coord(r), S.Binary("+", S.Coord(r), S.Const(1)), S.Size(r), S.Const(0))
        return ix == S.Coord(r)


_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


_ANY = object()  # (implication) always present: any read makes it so


def _abs_bound(f: S.Compare) -> S.Expr | None:
    """``abs(x) < c`` (also ``<=``, and ``c > abs(x)``...) as ``-c < x and x < c``; None for anything else
    (``abs(x) > c`` is a disjunction)."""
    op, a, b = f.op, f.a, f.b
    if isinstance(b, S.Call) and b.fn == "abs" and not (isinstance(a, S.Call) and a.fn == "abs"):
        op, a, b = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op), b, a
    if not (isinstance(a, S.Call) and a.fn == "abs") or op not in ("<", "<="):
        return None
    x = a.args[0]
    return S.Logic("and", S.Compare(op, S.Unary("-", b), x), S.Compare(op, x, b))


def _witnesses_in_range(prog: Program, pattern: S.Read) -> bool:
    """Every wildcard of ``pattern`` is a whole index of a dimension of its own rank: a present read's index
    there is then a point of the reduced rank's range."""
    t = prog.tensor(pattern.tensor)
    for r, ix in zip(t.ranks, pattern.indices):
        wild = [n for n in ix.walk() if isinstance(n, S.Coord) and n.rank.startswith("?")]
        if wild and ix != S.Coord("?" + r):
            return False
    return True


def _match(pattern: S.Expr, e: S.Expr, bound: dict[str, S.Expr]) -> bool:
    """Whether ``e`` is ``pattern`` with its wildcards (``Coord("?r")``) bound consistently."""
    if isinstance(pattern, S.Coord) and pattern.rank.startswith("?"):
        if pattern.rank in bound:
            return bound[pattern.rank] == e
        bound[pattern.rank] = e
        return True
    if isinstance(pattern, S.Read):
        return (
            isinstance(e, S.Read)
            and e.tensor == pattern.tensor
            and len(e.indices) == len(pattern.indices)
            and all(_match(p, x, bound) for p, x in zip(pattern.indices, e.indices))
        )
    return pattern == e


def _product(a: Lin, b: Lin) -> Lin:
    out = num(a.const * b.const)
    for x, c in a.terms:
        out = out + Lin.of(x, c * b.const)
    for y, d in b.terms:
        out = out + Lin.of(y, d * a.const)
    for x, c in a.terms:
        for y, d in b.terms:
            out = out + Lin.of(("prod", *sorted((x, y))), c * d)
    return out


@functools.lru_cache(maxsize=128)
def _affine_expr(a: Affine) -> S.Expr | None:
    """``a`` as an index expression of the language (None when it holds a loop index)."""
    terms: list[tuple[S.Expr, int]] = [(S.Coord(r), c) for r, c in a.coefs]
    for atom, c in a.const.terms:
        e = _atom_expr(atom)
        if e is None:
            return None
        terms.append((e, c))
    out: S.Expr | None = None
    for e, c in terms:
        mag = e if abs(c) == 1 else S.Binary("*", S.Const(abs(c)), e)
        if out is None:
            out = mag if c > 0 else S.Unary("-", mag)
        else:
            out = S.Binary("+" if c > 0 else "-", out, mag)
    k = a.const.const
    if out is None:
        return S.Const(k)
    return S.Binary("+" if k >= 0 else "-", out, S.Const(abs(k))) if k else out


def _atom_expr(atom) -> S.Expr | None:
    if atom[0] == "size":
        return S.Size(atom[1])
    if atom[0] == "prod":
        a, b = _atom_expr(atom[1]), _atom_expr(atom[2])
        return None if a is None or b is None else S.Binary("*", a, b)
    return None  # a loop index: only in iterative programs, which are not staged


def describable(presence: Presence, names) -> bool:
    """Whether :func:`presence_filter` writes ``presence`` as a filter of a program whose tensors are
    ``names``: known, and no constraint reads a size that a tensor's name hides (a tensor `G` hides rank
    `g`'s size `G`)."""

    def ok(atom) -> bool:
        if atom[0] == "size":
            return size_name(atom[1]) not in names
        return atom[0] == "prod" and ok(atom[1]) and ok(atom[2])

    return presence is not None and all(ok(atom) for c in presence for atom, _ in c.const.terms)


def presence_filter(presence: frozenset) -> S.Expr | None:
    """The constraints ``a >= 0`` of a presence as a filter of the language (None: present everywhere), to
    restore a tensor's absent points where its values cross a program boundary (a stage's input, a saved
    forward value). Raises ValueError for a constraint on a loop index (iterative programs only)."""
    out = None
    for a in sorted(presence):
        e = _affine_expr(a)
        if e is None:
            raise ValueError("a presence constraint holds a loop index")
        c = S.Compare(">=", e, S.Const(0))
        out = c if out is None else S.Logic("and", out, c)
    return out


class Necessary(Analysis):
    """Constraints that hold wherever a value is present, where :class:`Analysis` may say "unknown": the
    affine part of what it knows. A padded batch's scores, ``QK = Q * K[b, h // R, m, e]  where m <
    klen[b]``, have an unknown presence, and still a necessary ``R G - 1 - h >= 0``. Each result is a set
    of constraints that present points satisfy (never None, possibly missing some): a data-dependent
    filter, an index that is not affine, a constraint of a reduced rank with a coefficient other than +-1
    and an iterative tensor add none; ``a ?? b`` keeps the constraints common to both sides."""

    exact = False

    def tensor(self, name: str) -> frozenset:
        p = super().tensor(name)
        return ALWAYS if p is None else p

    def filter(self, f: S.Expr | None) -> frozenset:
        p = super().filter(f)
        return ALWAYS if p is None else p

    def eliminate(self, p: Presence, rank: str, facts: dict[Atom, Lin] | None = None) -> frozenset:
        p = frozenset(c for c in p or () if abs(c.coef(rank)) <= 1)
        return super().eliminate(p, rank, facts)

    def expr(self, e: S.Expr) -> frozenset:
        if isinstance(e, S.Default):
            return self.expr(e.a) & self.expr(e.b)
        p = super().expr(e)
        return ALWAYS if p is None else p


def presence_ranks(prog: Program, name: str) -> frozenset[str]:
    """The ranks of tensor ``name`` along which its presence may vary (a superset): those its filter or the
    presence of its terms mention. An input's point is present; a read ``X[.., r, ..]`` at the dimension
    declared ``r`` is in bounds, so only a computed ``X``'s own presence ranks and indices of any other form
    (``m + 1``, ``h // R``, a gather) count. The cotangent of ``O[p, f] = NV[p, f] / SD[p]`` under a padding
    mask, gated by ``O``'s presence, varies along ``p`` alone: the indicator that carries it between stages
    needs no feature rank (einattn.staging)."""
    return _presence_ranks(prog)[name]


@functools.lru_cache(maxsize=64)
def _presence_ranks(prog: Program) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {t.name: frozenset() for t in prog.tensors if t.is_input}

    def varying(x: S.Expr) -> set[str]:
        if isinstance(x, S.Read):
            t = prog.tensor(x.tensor)
            own = out.get(x.tensor, frozenset(t.ranks))
            found: set[str] = set()
            for r, ix in zip(t.ranks, x.indices):
                if r in own or ix != S.Coord(r):
                    found |= set(coords(ix))
                found |= varying(ix)  # (a gather's own read)
            return found
        found = set()
        for c in x.children():
            found |= varying(c)
        return found

    for _ in range(len(prog.einsums) + 1):  # (statements in any order: until nothing changes)
        changed = False
        for e in prog.einsums:
            t = prog.tensor(e.tensor)
            ranks = frozenset(t.ranks)
            single = t.iterative is None and len(prog.definitions(e.tensor)) == 1
            if single and all(i.kind == "rank" for i in e.index):
                mentioned = varying(e.expr)
                if e.filter is not None:
                    mentioned |= set(coords(e.filter)) | varying(e.filter)
                ranks = frozenset(r for r in t.ranks if r in mentioned)
            if out.get(e.tensor) != ranks:
                out[e.tensor], changed = ranks, True
        if not changed:
            break
    return out


def analyse(prog: Program, empty: bool = False) -> Analysis:
    """The (cached) presence analysis of ``prog``; ``empty``: sizes may be zero."""
    return Analysis(prog, empty)
