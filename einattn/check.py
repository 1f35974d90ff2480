"""Semantic checks: :class:`einattn.syntax.Module` -> :class:`einattn.ir.Program`.

Every problem is an :class:`EinError` at the offending text. Checks run in the order a reader would: names and
declarations, then each statement's left-hand side, then expressions (values, indices, filters), then the
whole-program facts (definitions, outputs, sizes). Dataflow facts that need the graph (cycles) live in
``einattn.graph``.
"""

from __future__ import annotations

import difflib
import keyword
import math
import numbers
import warnings
from collections.abc import Mapping

from . import syntax as S
from .errors import EinError, EinWarning, Span
from .functions import FUNCTIONS
from .ir import Einsum, LhsIndex, Partition, Program, Tensor, coords, size_name

RESERVED = {"input", "output", "param", "rank", "where", "and", "or", "not", "inf", "int", "float"}
MAX_INT = 2**31 - 1


def is_rank_name(name: str) -> bool:
    """A rank variable is lower case (``m``, ``m1``, ``_o``): it has a letter, and no upper-case one."""
    return any(c.isalpha() for c in name) and name == name.lower()


def _caseless(name: str, span: Span | None) -> EinError:
    """A name without a letter (``_``, ``_1``) is neither a rank variable nor a size: both spellings agree."""
    return EinError(
        f"`{name}` cannot name a rank: it has no letter",
        span,
        hint="a rank variable is lower case and its size is its upper-case spelling (`m` and `M`), "
        "so a rank name needs a letter",
    )


def _suggest(name: str, candidates, loose: bool = True) -> str | None:
    """A did-you-mean hint: a different case, then one substituted character (`mo` for `m0`), then difflib."""
    candidates = [c for c in candidates if c != name]
    close = [c for c in candidates if c.lower() == name.lower()]
    close = close or [
        c for c in candidates if len(c) == len(name) > 1 and sum(a != b for a, b in zip(c, name)) == 1
    ]
    if loose:
        close = close or difflib.get_close_matches(name, candidates, n=1)
    return f"did you mean `{close[0]}`?" if close else None


# Names users reach for that are not functions of the language, with what to write instead.
_NOT_FUNCTIONS = {
    "softmax": "softmax is a cascade: a max reduction, `exp(x - max)`, a sum and a division "
    "(see examples/attention_3pass.ein)",
    "sum": "a rank that appears only on the right-hand side is summed: `S[p] = X[p, m]`",
    "mean": "sum over the rank and divide by its size: `S[p] = X[p, m] / M`",
    "pow": "multiply, or use `square`, `exp` and `log`",
}


def check_name(name: str, span: Span | None, what: str) -> None:
    """Names reach generated source: only plain identifiers that no backend can confuse with its own."""
    if name.startswith("__") or keyword.iskeyword(name) or name in RESERVED or not name.isidentifier():
        raise EinError(
            f"`{name}` cannot be used as a {what} name",
            span,
            hint="names must not be keywords or start with `__`",
        )
    if len(name) > 64:
        raise EinError(f"{what} name `{name[:20]}...` is longer than 64 characters", span)


def _shared_in_product(call: S.Call, summed: set[str], outside: set[str]) -> set[str]:
    """The summed ranks of a contraction written inside ``call``: a product of two factors that read
    tensors along them, neither factor's ranks strictly within the other's (a per-key scale
    `QK[m, p] * T[m]` is none), ranks that the statement reads nowhere outside the call (``outside``:
    `exp(QK * T) * V[m, f]` sums over `m` outside too). Coordinates (`(m - p) * (m - p)`) are no reads."""
    out: set[str] = set()
    stack = list(call.args)
    while stack:
        x = stack.pop()
        if isinstance(x, S.Binary) and x.op == "*":
            a, b = _read_ranks(x.a), _read_ranks(x.b)
            if not (a < b or b < a):  # (equal ranks, `(Q - K) * (Q - K)` or `Q * Q`, are a contraction too)
                out |= (summed & a & b) - outside
        stack.extend(x.children())
    return out


def _read_ranks(e: S.Expr) -> set[str]:
    """The ranks of the tensor reads in ``e`` (their index expressions' coordinates)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, S.Read):
            out |= {r for ix in x.indices for r in coords(ix)}
        stack.extend(x.children())
    return out


def _outside_calls(e: S.Expr) -> set[str]:
    """The ranks that ``e`` reads through tensors outside any function call."""
    if isinstance(e, S.Call):
        return set()
    if isinstance(e, S.Read):
        return _read_ranks(e)
    return set().union(*(_outside_calls(c) for c in e.children()))


class _Checker:
    def __init__(self, module: S.Module):
        self.module = module
        self.source = module.source
        self.inputs: dict[str, S.TensorDecl] = {}
        self.outputs: list[tuple[str, Span]] = []
        self.params: dict[str, S.ParamDecl] = {}
        self.rank_decls: list[S.RankDecl] = []
        self.alias_decls: list[S.RankAlias] = []
        self.stmts: list[S.Statement] = []
        self.warnings: list[EinWarning] = []

    # ---- 1. declarations -------------------------------------------------------------------------
    def collect(self) -> None:
        for item in self.module.items:
            if isinstance(item, S.InputDecl):
                for d in item.tensors:
                    check_name(d.name, d.span, "tensor")
                    if d.name in self.inputs:
                        raise EinError(
                            f"input `{d.name}` is declared twice",
                            d.span,
                            hint=f"first declared at line {self.inputs[d.name].span.line}",
                        )
                    for r, sp in zip(d.shape or (), d.name_spans):
                        if r == r.upper() == r.lower():
                            raise _caseless(r, sp)
                        if not is_rank_name(r):
                            raise EinError(
                                f"`{r}` is a rank size; a declaration names rank variables",
                                sp,
                                hint=f"write `{r.lower()}`: the size `{r}` is bound from the tensor's shape",
                            )
                        check_name(r, sp, "rank")
                    if d.shape and len(set(d.shape)) != len(d.shape):
                        dup = next(r for r in d.shape if d.shape.count(r) > 1)
                        raise EinError(f"rank `{dup}` appears twice in the declaration of `{d.name}`", d.span)
                    self.inputs[d.name] = d
            elif isinstance(item, S.OutputDecl):
                for n, sp in zip(item.names, item.name_spans):
                    if any(n == o for o, _ in self.outputs):
                        raise EinError(f"output `{n}` is declared twice", sp)
                    self.outputs.append((n, sp))
            elif isinstance(item, S.ParamDecl):
                check_name(item.name, item.span, "param")
                if item.name in self.params:
                    raise EinError(f"param `{item.name}` is declared twice", item.span)
                if item.name in self.inputs:
                    raise EinError(f"`{item.name}` is both an input and a param", item.span)
                self.params[item.name] = item
            elif isinstance(item, S.RankDecl):
                self.rank_decls.append(item)
            elif isinstance(item, S.RankAlias):
                self.alias_decls.append(item)
            else:
                self.stmts.append(item)
        if not self.outputs:
            first = self.module.items[0].span if self.module.items else Span(self.source, 1, 1, 1, 2)
            raise EinError("the spec declares no output", first, hint="add a line `output NAME`")

    # ---- 2. left-hand sides and tensor definitions ------------------------------------------------
    def lhs(self, st: S.Statement) -> tuple[LhsIndex, ...]:
        check_name(st.tensor, st.lhs_span, "tensor")
        if st.tensor in self.inputs:
            raise EinError(
                f"`{st.tensor}` is an input and cannot be assigned",
                st.lhs_span,
                hint="give the result a new name",
            )
        if st.tensor in self.params:
            raise EinError(f"`{st.tensor}` is a param and cannot be assigned", st.lhs_span)
        out: list[LhsIndex] = []
        for ix in st.indices or ():
            if isinstance(ix, S.Name) and is_rank_name(ix.id):
                check_name(ix.id, ix.span, "rank")
                out.append(LhsIndex(ix.id))
            elif isinstance(ix, S.Const) and ix.value == 0 and isinstance(ix.value, int):
                out.append(LhsIndex("", "init"))
            elif (
                isinstance(ix, S.Binary)
                and ix.op == "+"
                and isinstance(ix.a, S.Name)
                and is_rank_name(ix.a.id)
                and isinstance(ix.b, S.Const)
                and ix.b.value == 1
            ):
                out.append(LhsIndex(ix.a.id, "step"))
            elif isinstance(ix, S.Name) and ix.id == ix.id.upper() == ix.id.lower():
                raise _caseless(ix.id, ix.span)
            elif isinstance(ix, S.Name):
                raise EinError(
                    f"`{ix.id}` is a rank size; the left-hand side takes rank variables",
                    ix.span,
                    hint=f"did you mean `{ix.id.lower()}`?",
                )
            else:
                raise EinError(
                    "a left-hand index must be a rank variable, `0` or `r + 1`",
                    ix.span,
                    hint="`0` initialises an iterative rank and `r + 1` updates it; "
                    "use index arithmetic on the right-hand side instead",
                )
        ranks = [ix.rank for ix in out if ix.kind != "init"]
        for r in ranks:
            if ranks.count(r) > 1:
                raise EinError(f"rank `{r}` appears twice on the left-hand side", st.lhs_span)
        special = [ix for ix in out if ix.kind != "rank"]
        if len(special) > 1:
            raise EinError("a left-hand side may have only one iterative index (`0` or `r + 1`)", st.lhs_span)
        return tuple(out)

    def definitions(self, lhs: dict[int, tuple[LhsIndex, ...]]) -> dict[str, Tensor]:
        """Group statements by tensor; pair each ``init`` with its ``step``; give each tensor its ranks."""
        by_tensor: dict[str, list[int]] = {}
        for i, st in enumerate(self.stmts):
            by_tensor.setdefault(st.tensor, []).append(i)
        tensors: dict[str, Tensor] = {}
        for d in self.inputs.values():
            tensors[d.name] = Tensor(d.name, tuple(d.shape or ()), d.dtype, "input", None, d.span)
        for name, ids in by_tensor.items():
            kinds = {i: next((x.kind for x in lhs[i] if x.kind != "rank"), "plain") for i in ids}
            plain = [i for i in ids if kinds[i] == "plain"]
            inits = [i for i in ids if kinds[i] == "init"]
            steps = [i for i in ids if kinds[i] == "step"]
            if len(plain) > 1 or (plain and (inits or steps)) or len(inits) > 1 or len(steps) > 1:
                first, second = ids[0], ids[1]
                raise EinError(
                    f"tensor `{name}` is defined twice",
                    self.stmts[second].lhs_span,
                    hint=f"first defined at line {self.stmts[first].span.line}; only an iterative tensor has "
                    "two statements (`T[0, ...]` and `T[r + 1, ...]`)",
                )
            if plain:
                ix = lhs[plain[0]]
                tensors[name] = Tensor(
                    name, tuple(x.rank for x in ix), "float", "temp", None, self.stmts[plain[0]].span
                )
                continue
            if not steps:
                st = self.stmts[inits[0]]
                raise EinError(
                    f"iterative tensor `{name}` is initialised but never updated",
                    st.lhs_span,
                    hint=f"add an update such as `{name}[r + 1, ...] = f({name}[r, ...], ...)`",
                )
            step_ix = lhs[steps[0]]
            pos = next(k for k, x in enumerate(step_ix) if x.kind == "step")
            if not inits:
                st = self.stmts[steps[0]]
                raise EinError(
                    f"iterative tensor `{name}` is updated but never initialised",
                    st.lhs_span,
                    hint=f"add `{self._init_text(name, step_ix)} = ...` (e.g. 0 or -inf)",
                )
            init_ix = lhs[inits[0]]
            init_pos = next(k for k, x in enumerate(init_ix) if x.kind == "init")
            others_step = [x.rank for k, x in enumerate(step_ix) if k != pos]
            others_init = [x.rank for k, x in enumerate(init_ix) if k != init_pos]
            if init_pos != pos or others_step != others_init:
                raise EinError(
                    f"the initialiser of `{name}` does not match its update",
                    self.stmts[inits[0]].lhs_span,
                    hint=f"write it as `{self._init_text(name, step_ix)}`",
                )
            r = step_ix[pos].rank
            lhs[inits[0]] = tuple(LhsIndex(r, "init") if k == pos else x for k, x in enumerate(init_ix))
            ranks = tuple(x.rank for x in step_ix)
            tensors[name] = Tensor(name, ranks, "float", "temp", pos, self.stmts[steps[0]].span)
        return tensors

    @staticmethod
    def _init_text(name: str, ix: tuple[LhsIndex, ...]) -> str:
        return f"{name}[{', '.join('0' if x.kind == 'step' else x.rank for x in ix)}]"

    # ---- 3. names -----------------------------------------------------------------------------------
    def collect_ranks(self, tensors: dict[str, Tensor], lhs: dict[int, tuple[LhsIndex, ...]]) -> list[str]:
        ranks: dict[str, None] = {}
        for d in self.inputs.values():
            ranks.update(dict.fromkeys(d.shape or ()))
        for i in range(len(self.stmts)):
            ranks.update(dict.fromkeys(x.rank for x in lhs[i] if x.kind != "init"))

        def index_names(e: S.Expr, in_index: bool):
            if isinstance(e, S.Name) and in_index:
                yield e
            elif isinstance(e, S.Read):
                for ix in e.indices:
                    yield from index_names(ix, True)
            else:
                for c in e.children():
                    yield from index_names(c, in_index)

        for st in self.stmts:
            for root in (st.expr, st.filter):
                if root is None:
                    continue
                for n in index_names(root, False):
                    if n.id in tensors or n.id in self.params:
                        continue
                    if is_rank_name(n.id):
                        check_name(n.id, n.span, "rank")
                        ranks.setdefault(n.id)
                    elif n.id == n.id.upper() == n.id.lower():
                        raise _caseless(n.id, n.span)
        for rd in self.rank_decls:
            for name, sp in zip((rd.parent, rd.outer, rd.inner), rd.name_spans):
                if name == name.upper() == name.lower():
                    raise _caseless(name, sp)
                if is_rank_name(name):
                    raise EinError(
                        f"`{name}` is a rank variable; a rank declaration names sizes",
                        sp,
                        hint=f"write `rank {rd.parent.upper()} = {rd.outer.upper()} * {rd.inner.upper()}`",
                    )
            for name in (rd.outer, rd.inner):
                if name.lower() not in ranks:
                    ranks.setdefault(name.lower())
        for ad in self.alias_decls:
            for name, sp in zip((ad.name, ad.target), ad.name_spans):
                if name == name.upper() == name.lower():
                    raise _caseless(name, sp)
                if is_rank_name(name):
                    raise EinError(
                        f"`{name}` is a rank variable; a rank declaration names sizes",
                        sp,
                        hint=f"write `rank {ad.name.upper()} = {ad.target.upper()}`",
                    )
        for r in ranks:
            if r in tensors:
                t = tensors[r]
                raise EinError(
                    f"`{r}` is used both as a tensor and as a rank variable",
                    t.span,
                    hint="rename the tensor",
                )
            if r in self.params:
                raise EinError(f"`{r}` is used both as a param and as a rank variable", self.params[r].span)
        return list(ranks)

    # ---- 4. expressions -------------------------------------------------------------------------------
    def resolve(self, e: S.Expr, ctx: str) -> S.Expr:
        """Resolve names and check what ``ctx`` allows.

        ``value``: a float expression. ``index``: an integer, affine expression (a tensor index).
        ``filter``: a condition. ``cmp``: an operand of a comparison in a filter (like ``index``, but a float
        constant or param is allowed: ``p - m < 2.5``).
        """
        if isinstance(e, S.Const):
            if ctx == "index" and not isinstance(e.value, int):
                text = e.span.source.text_of(e.span) if e.span is not None else _fmt_num(e.value)
                if text.isdigit():  # an integer literal too long to be exact
                    raise EinError(
                        f"integer `{text[:24]}{'...' * (len(text) > 24)}` is too large for an index", e.span
                    )
                raise EinError(f"an index must be an integer, got `{_fmt_num(e.value)}`", e.span)
            if ctx == "index" and abs(e.value) > MAX_INT:
                raise EinError(f"integer `{e.value}` is too large for an index", e.span)
            text = e.span.source.text_of(e.span) if e.span is not None else None
            if _overflowed(e.value, text):
                raise EinError(
                    f"number `{text[:24]}{'...' * (len(text) > 24)}` is too large for a float64",
                    e.span,
                    hint="a number is at most about 1.8e308; write `inf` for infinity",
                )
            return e
        if isinstance(e, S.Name):
            return self.resolve_name(e, ctx)
        if isinstance(e, S.Read):
            return self.resolve_read(e, ctx)
        if isinstance(e, S.Call):
            fn = FUNCTIONS.get(e.fn)
            if fn is None:
                raise EinError(
                    f"unknown function `{e.fn}`",
                    e.span,
                    hint=_NOT_FUNCTIONS.get(e.fn)
                    or _suggest(e.fn, FUNCTIONS)
                    or f"known functions: {', '.join(FUNCTIONS)}",
                )
            if len(e.args) != fn.arity:
                hint = None
                if e.fn in ("max", "min") and len(e.args) == 1:
                    hint = f"to reduce over a rank, write `... :: {e.fn}(m)` after the expression"
                raise EinError(
                    f"`{e.fn}` takes {fn.arity} argument{'s' * (fn.arity != 1)}, got {len(e.args)}",
                    e.span,
                    hint,
                )
            if ctx in ("index", "cmp") and not fn.index_ok:
                raise EinError(
                    f"`{e.fn}` cannot be used in an index or filter; they are integer expressions",
                    e.span,
                    hint="only min, max, clamp and abs may appear there",
                )
            return S.Call(e.fn, tuple(self.resolve(a, ctx) for a in e.args), span=e.span)
        if isinstance(e, S.Unary):
            return S.Unary(e.op, self.resolve(e.x, ctx), span=e.span)
        if isinstance(e, S.Binary):
            a, b = self.resolve(e.a, ctx), self.resolve(e.b, ctx)
            if ctx in ("index", "cmp"):
                if e.op == "/":
                    raise EinError(
                        "`/` in an index expression; indices are integers",
                        e.span,
                        hint="use `//` (floor division)",
                    )
                if e.op == "*" and not (_constant(a) or _constant(b)):
                    raise EinError(
                        "index expression is not affine: it multiplies two variables",
                        e.span,
                        hint="an index may multiply a rank variable only by a constant, param or size",
                    )
                if e.op in ("//", "%") and not _constant(b):
                    raise EinError(
                        f"`{e.op}` in an index must be by a constant, param or size",
                        e.b.span or e.span,
                    )
            elif e.op in ("//", "%"):
                raise EinError(
                    f"`{e.op}` is for index expressions; values use `+ - * /`",
                    e.span,
                    hint=f"index a table by it instead, e.g. `T[h, p {e.op} M0]`",
                )
            return S.Binary(e.op, a, b, span=e.span)
        if isinstance(e, S.Default):
            if ctx != "value":
                raise EinError("`??` cannot be used in an index or filter", e.span)
            return S.Default(self.resolve(e.a, ctx), self.resolve(e.b, ctx), span=e.span)
        if isinstance(e, (S.Compare, S.Logic, S.Not)):
            if ctx == "value":
                raise EinError(
                    "a condition cannot be used as a value",
                    e.span,
                    hint="conditions belong in a filter: `... where m <= p`",
                )
            if ctx in ("index", "cmp"):
                raise EinError("a condition cannot be used as an index", e.span)
            if isinstance(e, S.Compare):
                a, b = self.resolve(e.a, "cmp"), self.resolve(e.b, "cmp")
                return S.Compare(e.op, a, b, span=e.span)
            if isinstance(e, S.Not):
                return S.Not(self.resolve_filter(e.x), span=e.span)
            return S.Logic(e.op, self.resolve_filter(e.a), self.resolve_filter(e.b), span=e.span)
        raise EinError(f"unsupported expression `{type(e).__name__}`", getattr(e, "span", None))

    def resolve_filter(self, e: S.Expr) -> S.Expr:
        if not isinstance(e, (S.Compare, S.Logic, S.Not)):
            raise EinError(
                "a filter must be a condition",
                e.span,
                hint="compare coordinates or integer tensors, e.g. `where m <= p`",
            )
        return self.resolve(e, "filter")

    def names_a_size(self, n: str) -> bool:
        """Whether ``n`` is spelled as the size of one of the spec's ranks (``S`` beside a rank ``s``)."""
        return n == size_name(n.lower()) and n.lower() in self.ranks

    def resolve_name(self, e: S.Name, ctx: str) -> S.Expr:
        n = e.id
        if n in self.tensors:
            t = self.tensors[n]
            if t.ranks:
                hint = f"write `{n}[{', '.join(t.ranks)}]`"
                if self.names_a_size(n):
                    hint += (
                        f"; for the size of rank `{n.lower()}`, rename the tensor: the tensor `{n}` hides "
                        "the size of the same name"
                    )
                raise EinError(f"tensor `{n}` is used without indices", e.span, hint=hint)
            return self.resolve_read(S.Read(n, (), span=e.span), ctx)
        if n in self.params:
            v, literal = self.params[n].value, self.params[n].literal
            # a param that sizes a rank is reported at its declaration (check_params)
            if ctx == "index" and _too_large(v, literal) and not self.names_a_size(n):
                raise EinError(
                    f"param `{n}` = {_shown(v, literal)} is too large for an index",
                    e.span,
                    hint=f"a param used in an index is at most {MAX_INT} (2^31 - 1)",
                )
            if (
                ctx == "index"
                and not isinstance(v, int)
                and not (self.names_a_size(n) and _too_large(v, literal))
            ):
                raise EinError(
                    f"param `{n}` = {_fmt_num(v)} is not an integer and cannot be used in an index", e.span
                )
            return S.Param(n, span=e.span)
        if n in self.size_names:
            return S.Size(self.size_names[n], span=e.span)
        if n in self.ranks:
            return S.Coord(n, span=e.span)
        scalars = [t for t, info in self.tensors.items() if not info.ranks]
        if n.isupper():  # meant as a size or a param
            known = sorted(self.size_names) + list(self.params)
            hint = _suggest(n, known) or f"the sizes and params of this spec are: {', '.join(known)}"
        else:
            hint = _suggest(n, scalars + list(self.params) + list(self.size_names) + list(self.ranks))
            if n.islower() and len(n) <= 3:  # (a rank that only a filter mentions has no size)
                rank = (
                    f"a rank variable gets its size from a tensor it indexes (an input's declaration or a "
                    f"statement's left-hand side); `{n}` indexes none, so it has no size"
                )
                hint = f"{hint} Or: {rank}" if hint else rank
        raise EinError(
            f"undefined name `{n}`",
            e.span,
            hint=hint or "a bare name is a scalar tensor, a param, a rank variable or a size (upper case)",
        )

    def resolve_read(self, e: S.Read, ctx: str) -> S.Expr:
        t = self.tensors.get(e.tensor)
        if t is None:
            if e.tensor in self.params or e.tensor in self.ranks or e.tensor in self.size_names:
                raise EinError(f"`{e.tensor}` is not a tensor and cannot be indexed", e.span)
            raise EinError(
                f"undefined tensor `{e.tensor}`",
                e.span,
                hint=_suggest(e.tensor, self.tensors)
                or "declare it with `input` or define it with a statement",
            )
        if len(e.indices) != len(t.ranks):
            shown = f" [{', '.join(t.ranks)}]" if t.ranks else " (a scalar, read without indices)"
            if t.ranks:
                hint = f"index every rank of `{e.tensor}`, in its order: `{e.tensor}[{', '.join(t.ranks)}]`"
            else:
                hint = f"read the scalar as `{e.tensor}`, or give it ranks (where it is declared or defined)"
            raise EinError(
                f"tensor `{e.tensor}` has {len(t.ranks)} rank{'s' * (len(t.ranks) != 1)}{shown} "
                f"but is used with {len(e.indices)}",
                e.span,
                hint=hint,
            )
        if ctx != "value" and t.dtype != "int":
            if ctx == "index":
                raise EinError(
                    f"float tensor `{e.tensor}` cannot be used in an index",
                    e.span,
                    hint="declare it `: int` to gather with it",
                )
            raise EinError(
                f"a filter compares float tensor `{e.tensor}`",
                e.span,
                hint="filters compare coordinates and integer tensors (declared `: int`); "
                "to mask on values, use an expression and `??`",
            )
        return S.Read(e.tensor, tuple(self.resolve(ix, "index") for ix in e.indices), span=e.span)

    # ---- 5. statements ----------------------------------------------------------------------------------
    def einsum(self, st: S.Statement, index: tuple[LhsIndex, ...]) -> Einsum:
        expr = self.resolve(st.expr, "value")
        filt = self.resolve_filter(st.filter) if st.filter is not None else None
        lhs_ranks = [x.rank for x in index if x.kind != "init"]
        space = list(lhs_ranks)
        for r in coords(expr) + coords(filt):
            if r not in space:
                space.append(r)
        reduced = [r for r in space if r not in lhs_ranks]
        named = {}
        for r, sp in zip(st.reduce_ranks, st.reduce_spans):
            if r in lhs_ranks:
                raise EinError(
                    f"`{r}` cannot be reduced: it is on the left-hand side",
                    sp,
                    hint="a reduced rank appears on the right only",
                )
            if r not in reduced:
                raise EinError(
                    f"`{r}` does not appear on the right-hand side, so nothing reduces it",
                    sp,
                    hint=(
                        "name a rank that the right-hand side reads and the left-hand side does not: "
                        + ", ".join(f"`{x}`" for x in sorted(reduced))
                        if reduced
                        else "every rank of the right-hand side is on the left: drop the reduction"
                    ),
                )
            if r in named:
                raise EinError(f"`{r}` is named twice in the reduction", sp)
            named[r] = st.reduce_op
        reduce = tuple((r, "+") for r in reduced if r not in named) + tuple(named.items())
        return Einsum(st.tensor, index, expr, reduce, filt, tuple(space), span=st.span)

    # ---- the whole program ---------------------------------------------------------------------------------
    def run(self) -> Program:
        self.collect()
        lhs = {i: self.lhs(st) for i, st in enumerate(self.stmts)}
        self.tensors = self.definitions(lhs)
        self.ranks = self.collect_ranks(self.tensors, lhs)
        self.size_names = {size_name(r): r for r in self.ranks if size_name(r) not in self.params}
        for sz, r in self.size_names.items():
            if sz in self.tensors:
                t = self.tensors[sz]
                if not t.ranks:  # a scalar tensor would shadow the size
                    raise EinError(f"scalar tensor `{sz}` has the name of the size of rank `{r}`", t.span)
        partitions = self.partitions()
        aliases = self.aliases()
        einsums = tuple(self.einsum(st, lhs[i]) for i, st in enumerate(self.stmts))
        for name, sp in self.outputs:
            if name not in self.tensors:
                raise EinError(
                    f"output `{name}` is never defined",
                    sp,
                    hint=_suggest(name, self.tensors) or f"add a statement `{name}[...] = ...`",
                )
            if name in self.inputs:
                d = self.inputs[name]
                ix = f"[{', '.join(d.shape)}]" if d.shape else ""
                raise EinError(
                    f"output `{name}` is an input; every output must be defined by a statement",
                    sp,
                    hint=f"to return the input unchanged, copy it: `{name}_OUT{ix} = {name}{ix}` "
                    f"and `output {name}_OUT`",
                )
        for st, e in zip(self.stmts, einsums):
            self.warn_constant_terms(st, e)
            self.warn_product_inside_call(st, e)
        used = {rd.tensor for e in einsums for rd in e.reads()} | {n for n, _ in self.outputs}
        for name, d in self.inputs.items():
            if name not in used:
                self.warnings.append(EinWarning(f"input `{name}` is never used", d.span))
        for st in self.stmts:
            if st.tensor not in used:
                self.warnings.append(
                    EinWarning(
                        f"`{st.tensor}` is computed but never used",
                        st.lhs_span,
                        hint="read it in another statement or list it in `output`",
                    )
                )
        prog = Program(
            inputs=tuple(self.inputs),
            outputs=tuple(n for n, _ in self.outputs),
            params=tuple((n, p.value) for n, p in self.params.items()),
            partitions=partitions,
            tensors=tuple(self.tensors.values()),
            einsums=einsums,
            ranks=tuple(self.ranks),
            aliases=aliases,
            source=self.source,
            warnings=tuple(self.warnings),
            param_spans=tuple((n, p.span) for n, p in self.params.items() if p.span is not None),
        )
        check_params(prog, dict(prog.param_spans), {n: p.literal for n, p in self.params.items()})
        self.check_sizes(prog, einsums)
        return prog

    def warn_constant_terms(self, st, e: Einsum) -> None:
        """A term added to a summed product that does not vary along the summed ranks is added once per
        point of them (the sum covers the whole right-hand side, section 5 of the language reference):
        `S[m, p] = Q[p, e] * K[m, e] + B[m]` adds `E * B[m]`. Legal, and almost never meant: a warning."""
        summed = {r for r, op in e.reduce if op == "+"}
        if not summed:
            return
        terms, stack = [], [e.expr]
        while stack:
            x = stack.pop()
            if isinstance(x, S.Binary) and x.op in "+-":
                stack += [x.b, x.a]
            else:
                terms.append(x)
        varying = [t for t in terms if summed & set(coords(t))]
        if len(terms) < 2 or not varying:
            return
        for t in terms:
            if summed & set(coords(t)):
                continue
            ranks = ", ".join(f"`{r}`" for r in sorted(summed))
            sizes = " * ".join(size_name(r) for r in sorted(summed))
            self.warnings.append(
                EinWarning(
                    f"this term does not vary along the summed rank{'s' if len(summed) > 1 else ''} {ranks}: "
                    f"the sum covers the whole right-hand side, so it is added {sizes} times",
                    getattr(t, "span", None) or st.lhs_span,
                    hint=f"sum the product in a statement of its own and add the term in the next one "
                    f"(`{st.tensor}0[...] = ...` then `{st.tensor}[...] = {st.tensor}0[...] + ...`)",
                )
            )

    def warn_product_inside_call(self, st, e: Einsum) -> None:
        """A product of factors that share a summed rank inside a function (`C * tanh(Q[p, e] * K[m, e] / C)`)
        is a contraction written inside the call, but the sum covers the whole right-hand side (section 5 of
        the language reference): the function is applied to each product, then summed. Legal, and almost
        never meant (softcapping, `exp(Q * K)`): a warning. `exp(S[m, p] - M[p])` summed over `m` (a softmax
        denominator) has no such product and is not warned about."""
        summed = {r for r, op in e.reduce if op == "+"}
        if not summed:
            return
        outside = _outside_calls(e.expr)
        stack = [e.expr]
        while stack:
            x = stack.pop()
            if isinstance(x, S.Call):
                shared = _shared_in_product(x, summed, outside)
                if shared:
                    ranks = ", ".join(f"`{r}`" for r in sorted(shared))
                    self.warnings.append(
                        EinWarning(
                            f"a product summed over {ranks} inside `{x.fn}(...)`: the sum covers the whole "
                            f"right-hand side, so `{x.fn}` is applied to each product and the results are "
                            f"summed, not `{x.fn}` of the sum",
                            x.span or st.lhs_span,
                            hint=f"sum the product in a statement of its own (`{st.tensor}0[...] = ...`), "
                            f"then apply `{x.fn}` to it in the next one",
                        )
                    )
                    continue
            stack.extend(x.children())

    def partitions(self) -> tuple[Partition, ...]:
        out = []
        seen: dict[str, S.RankDecl] = {}
        used = {r for st in self.stmts for r in _stmt_names(st)} | {
            r for d in self.inputs.values() for r in d.shape or ()
        }
        for rd in self.rank_decls:
            parent, outer, inner = rd.parent.lower(), rd.outer.lower(), rd.inner.lower()
            for name, sp in zip((parent, outer, inner), rd.name_spans):
                if name in seen:
                    raise EinError(
                        f"rank `{name}` is already part of a partition",
                        sp,
                        hint=f"see line {seen[name].span.line}",
                    )
            if len({parent, outer, inner}) < 3:
                raise EinError("a partition needs three different ranks", rd.span)
            seen.update(dict.fromkeys((parent, outer, inner), rd))
            if outer not in used and inner not in used:
                raise EinError(
                    f"partition `{rd.parent} = {rd.outer} * {rd.inner}` is never used",
                    rd.span,
                    hint=f"index a tensor by `{outer}` and `{inner}` "
                    f"(e.g. `K[{outer} * {rd.inner} + {inner}, e]`) or remove the declaration",
                )
            if parent not in used:
                raise EinError(
                    f"rank `{parent}` of the partition is never used",
                    rd.name_spans[0],
                    hint=f"index a tensor by `{parent}` (normally an input, which gives its size)",
                )
            in_p, out_p = rd.inner in self.params, rd.outer in self.params
            if in_p == out_p:
                raise EinError(
                    f"exactly one part of `{rd.parent} = {rd.outer} * {rd.inner}` must be a param",
                    rd.span,
                    hint=f"remove `param {rd.outer}`: its size is derived as ceil({rd.parent} / {rd.inner})"
                    if in_p
                    else f"declare the tile size, e.g. `param {rd.inner} = 64`",
                )
            out.append(Partition(parent, outer, inner, "inner" if in_p else "outer", span=rd.span))
        self.partition_list = out
        return tuple(out)

    def aliases(self) -> tuple[tuple[str, str], ...]:
        out: dict[str, str] = {}
        for ad in self.alias_decls:
            name, target = ad.name.lower(), ad.target.lower()
            for r, sp in zip((name, target), ad.name_spans):
                if r not in self.ranks:
                    raise EinError(f"`{r.upper()}` is not the size of a rank of this spec", sp)
            if name == target:
                raise EinError("a rank cannot take its own size", ad.span)
            if name in out:
                raise EinError(f"the size of rank `{name}` is declared twice", ad.name_spans[0])
            if any(name in (p.parent, p.outer, p.inner) for p in self.partition_list):
                raise EinError(
                    f"rank `{name}` is part of a partition; its size comes from there", ad.name_spans[0]
                )
            out[name] = target
        for name in out:  # no cycles: `rank S = T` and `rank T = S`
            seen, r = {name}, out[name]
            while r in out:
                if r in seen:
                    ad = next(a for a in self.alias_decls if a.name.lower() == name)
                    raise EinError("rank sizes are declared in terms of each other", ad.span)
                seen.add(r)
                r = out[r]
        return tuple(out.items())

    def check_sizes(self, prog: Program, einsums) -> None:
        """Every rank needs a size: an input dimension, a param of the upper-case name, or a partition."""
        bound = {r for t in prog.tensors if t.is_input for r in t.ranks}
        bound |= {r for r in prog.ranks if size_name(r) in prog.param_values}
        for p in prog.partitions:
            bound |= {p.outer, p.inner}
        for _ in prog.aliases:
            bound |= {s for s, t in prog.aliases if t in bound}
        for r in prog.ranks:
            if r in bound:
                continue
            span = next(
                (
                    n.span
                    for e in einsums
                    for root in (e.expr, e.filter)
                    if root is not None
                    for n in root.walk()
                    if isinstance(n, S.Coord) and n.rank == r
                ),
                next((e.span for e in einsums if r in e.space), None),
            )
            raise EinError(
                f"the size of rank `{r}` is unknown",
                span,
                hint=_suggest(r, sorted(bound))
                or f"index an input by `{r}`, or declare `param {size_name(r)} = ...`",
            )


def _stmt_names(st: S.Statement):
    for root in (st.expr, st.filter, *(st.indices or ())):
        if root is not None:
            for n in root.walk():
                if isinstance(n, S.Name):
                    yield n.id


def _constant(e: S.Expr) -> bool:
    """No rank variable and no tensor read below: a compile-time or size-time constant."""
    return not any(isinstance(n, (S.Coord, S.Read)) for n in e.walk())


def _fmt_num(v) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _integer_literal(literal: str | None) -> bool:
    return literal is not None and literal.lstrip("+-").isdigit()


def _overflowed(value, literal: str | None) -> bool:
    """Whether a number written ``literal`` read as an infinity without being `inf` (``1e400``)."""
    return (
        isinstance(value, float)
        and math.isinf(value)
        and literal is not None
        and "inf" not in literal.lower()
    )


def _shown(v, literal: str | None = None) -> str:
    """A param's value for a message: as written when known, a huge integer by its size only."""
    if literal is not None:
        return literal if len(literal) <= 24 else f"{literal[:24]}..."
    if isinstance(v, int) and abs(v) >= 10**24:
        return f"about {'-' * (v < 0)}2^{abs(v).bit_length() - 1}"  # str() of a huge int may fail
    return _fmt_num(v)


def _too_large(v, literal: str | None, limit: int = MAX_INT) -> bool:
    """Beyond ``limit``; an integer literal that had to be read as a float is always beyond it."""
    if isinstance(v, int):
        return abs(v) > limit
    return _integer_literal(literal) and not math.isnan(v)


def sized_params(prog: Program) -> set[str]:
    """Params that size a rank or a partition's tile: positive integers."""
    return {size_name(r) for r in prog.ranks} | {getattr(p, p.tile).upper() for p in prog.partitions}


def index_params(prog: Program) -> set[str]:
    """Params that occur inside an index (``X[i + S]``): they must be integers that fit an index."""
    out: set[str] = set()
    for e in prog.einsums:
        for root in (e.expr, e.filter):
            for node in root.walk() if root is not None else ():
                if isinstance(node, S.Read):
                    for ix in node.indices:
                        out |= {n.name for n in ix.walk() if isinstance(n, S.Param)}
    return out


def check_params(
    prog: Program, spans: dict[str, Span] | None = None, literals: dict[str, str] | None = None
) -> None:
    """Params that size a rank (tiles) must be positive integers; params in an index, integers that fit one;
    every param, a number of float64's range. ``spans`` locate the declarations and ``literals`` give their
    numbers as written (an integer literal too long to be exact is read as a float)."""
    values = prog.param_values
    sized = sized_params(prog)
    indexed = index_params(prog)
    for name, v in values.items():
        where, literal = (spans or {}).get(name), (literals or {}).get(name)
        shown = _shown(v, literal)
        if isinstance(v, float) and math.isnan(v):
            raise EinError(f"param `{name}` is NaN", where)
        if name in sized:
            if _too_large(v, literal) and v > 0:
                raise EinError(
                    f"param `{name}` = {shown} is too large for a rank size",
                    where,
                    hint=f"a rank size is at most {MAX_INT} (2^31 - 1)",
                )
            if not isinstance(v, int) or v < 1:
                raise EinError(
                    f"param `{name}` sizes a rank and must be a positive integer, got {shown}", where
                )
        if name in indexed:
            if _too_large(v, literal):
                raise EinError(
                    f"param `{name}` = {shown} is too large for an index",
                    where,
                    hint=f"a param used in an index is at most {MAX_INT} (2^31 - 1)",
                )
            if not isinstance(v, int):
                raise EinError(
                    f"param `{name}` = {shown} is not an integer and cannot be used in an index", where
                )
        if isinstance(v, int) or _integer_literal(literal) or _overflowed(v, literal):
            try:
                fits = math.isfinite(float(v))
            except OverflowError:
                fits = False
            if not fits:
                raise EinError(
                    f"param `{name}` = {shown} is too large",
                    where,
                    hint="a param is a float64 value (at most about 1.8e308) wherever it is used as a value",
                )


def normalize_params(params) -> dict[str, int | float] | None:
    """The ``params=`` of ``compile`` and ``analyze`` as plain Python numbers, or a clear error.

    Any integer (``int``, ``numpy.int64``, ...) becomes an ``int`` and any other real number
    (``numpy.float32``, ``fractions.Fraction``) a ``float``; ``bool`` is not a number here. Values are
    checked against the spec by :meth:`Program.with_params`.
    """
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise EinError(
            f"params must be a dict of param names to numbers, got {type(params).__name__} {params!r:.60}",
            hint='e.g. params={"M0": 64}',
        )
    out: dict[str, int | float] = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise EinError(f"param names are strings, got {name!r:.60}", hint='e.g. params={"M0": 64}')
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise EinError(f"param `{name}` must be a number, got {value!r:.60}")
        if isinstance(value, numbers.Integral):
            out[name] = int(value)
            continue
        try:
            out[name] = float(value)
        except OverflowError:
            raise EinError(
                f"param `{name}` is too large", hint="a param is a float64 value (at most about 1.8e308)"
            ) from None
    return out


def check(module: S.Module) -> Program:
    """Run every semantic check; return the IR. Warnings are issued with :func:`warnings.warn`."""
    prog = _Checker(module).run()
    from .graph import build_graph

    build_graph(prog)  # validates the dataflow: cycles must go through an iterative rank
    for w in prog.warnings:
        warnings.warn(w, stacklevel=3)
    return prog
