"""The pattern of online normalisation, matched on a draft with every side condition checked.

For a rank R::

    GM[p]    = X[m, p] :: max(m)          the max
    SN[m, p] = f(X[m, p] - GM[p])         a shift of it
    T[p, ..] = SN[m, p] * G[m, ..]        a sum of the shift over R
    ... reads GM or T, not m ...          a final

Side conditions, each checked (a failure is a located :class:`RewriteError`):

* the max is one ``max`` reduction over R (associative and commutative, so it runs tile by tile);
* every statement that reads the max along R is a shift ``f(X - c)`` with ``f(a - c) = f(a - b) * f(b - c)``
  (sympy), ``c`` the max or a value computed from it without R, and ``X`` the very values whose max is taken
  (so the running max bounds each tile: nothing overflows that the original would not);
* every reader of a shift is a ``+``-reduction over R that uses it once, as a factor, with the other factors
  independent of the max (so rescaling the running sum by ``f(old - new)`` is exact);
* whatever else reads these values does so without R (a final), and no output carries R.

The 1-pass rule (``online``) needs all of them (``strict``); the 2-pass rule only the shifts'.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import syntax as S
from ..ir import Einsum, coords
from .derivation import Derivation
from .draft import Draft, depends_on, full_reductions, make_einsum, plain_index
from .rules import (
    RewriteError,
    ShiftFn,
    factors,
    hole,
    named_reductions,
    product,
    refuse,
    rewrite_expr,
    shift_at_zero,
    shift_multiplicative,
    stmt_text,
    subst,
    tensors_read,
    text,
    unify,
)

# ---- the pattern -------------------------------------------------------------------------------------------


@dataclass
class Shift:
    """``SN = f(X - c)``: ``c`` reads the max (``direct``) or a value computed from it without the rank; ``f``
    is in the frame of the max's ranks (``sigma`` maps them into SN's)."""

    e: Einsum
    f: ShiftFn
    x: S.Expr
    c: S.Read
    sigma: dict[str, S.Expr]  # the max's output ranks -> expressions in SN's frame
    direct: bool


@dataclass
class Sum:
    """``T = sum over R of SN * G``: a running sum of the shift ``SN``."""

    e: Einsum
    shift: Shift
    tau: dict[str, S.Expr]  # SN's ranks -> expressions in T's frame


@dataclass
class Group:
    mx: Einsum
    dep: set[str]
    shifts: list[Shift]
    sums: list[Sum]


def reads_any(e: Einsum, names: set[str]) -> bool:
    return bool((tensors_read(e.expr) | tensors_read(e.filter)) & names)


def _shift(draft: Draft, rank: str, g_mx: Einsum, dep: set[str], s: Einsum, strict: bool) -> Shift | None:
    """``s`` as a shift of the max, or None (2-pass: tiled as it is); 1-pass refuses what does not fit.

    The 2-pass rule (not ``strict``) refuses only a single function of the difference (``relu(X - GM)``,
    a shift of other values than the max's); a statement that merely contains one (``exp((X - GM) * W[m])``)
    it tiles as it is."""
    try:
        return _shift_checked(draft, rank, g_mx, dep, s, strict)
    except RewriteError:
        parts = _shift_parts(s.expr, dep, rank)
        if strict or (parts is not None and ShiftFn(parts[0]).name is not None):  # (`relu(X - GM)`)
            raise
        return None


def _shift_checked(
    draft: Draft, rank: str, g_mx: Einsum, dep: set[str], s: Einsum, strict: bool
) -> Shift | None:
    e = s.expr
    parts = _shift_parts(e, dep, rank) if not tensors_read(s.filter) & dep else None
    if parts is None:
        if not strict:
            return None
        why = draft.blocked.get(s.tensor)
        readers = sorted(tensors_read(s.expr) & dep)
        raise refuse(
            rank,
            f"`{s.tensor}` needs {', '.join(f'`{r}`' for r in readers)} at every point of {rank}: "
            f"`{stmt_text(s)}`" + (f" ({why})" if why else ""),
            s,
            hint=f"only f(x - {g_mx.tensor}) shifts and sums over {rank} of them can follow a running max; "
            "a division by the softmax denominator must be deferred past the sum over "
            f"{rank} (write the sum over {rank} of the unnormalised values, then divide)",
        )
    body, x, c = parts
    here = ShiftFn(body)  # (in SN's frame: the proof does not depend on the frame)
    whole = sorted(tensors_read(body) & full_reductions(draft.einsums, rank))
    if whole:
        raise refuse(
            rank,
            f"`{text(e)}` reads `{whole[0]}`, which needs every point of {rank} (a reduction over "
            f"{rank}): the running rescaling would need it before the loop",
            s,
            hint=f"scale by a value computed without a reduction over {rank}, or compute it in a pass of its "
            "own (the rewrite then streams the rest)",
        )
    if not shift_multiplicative(here):
        f0 = here.apply(S.Const(0))
        raise refuse(
            rank,
            f"`{text(e)}` is not multiplicative under shifts",
            s,
            hint="a running max needs f(a - c) = f(a - b) * f(b - c) to rescale earlier tiles; sympy proves "
            f"it for exp and exp2 of the difference, scaled by a factor free of {rank}, but not for "
            f"f(d) = {here.key}"
            + (
                f" (f(0) = {text(f0)} is not 1: write the part of the exponent that is not the difference "
                "as a factor of its own, `exp(x - c) * exp(k)`)"
                if shift_at_zero(here) not in (None, 1)
                and any(
                    isinstance(n, S.Call) and n.fn in ("exp", "exp2") for n in here.apply(S.Const(0)).walk()
                )
                else ""
            ),
        )
    variables = set(g_mx.lhs_ranks)
    sigma: dict[str, S.Expr] = {}
    direct = c.tensor == g_mx.tensor
    if direct:
        sigma = dict(zip(g_mx.lhs_ranks, c.indices))
    if (
        not unify(g_mx.expr, x, variables, sigma)
        or set(sigma) != variables
        or subst(g_mx.filter, sigma) != s.filter
        or any(rank in coords(v) for v in sigma.values())
    ):
        raise refuse(
            rank,
            f"the values shifted in `{s.tensor}` (`{text(x)}`"
            + (f" where `{text(s.filter)}`" if s.filter is not None else "")
            + f") are not the values whose max is `{g_mx.tensor}` (`{text(g_mx.expr)}`"
            + (f" where `{text(g_mx.filter)}`" if g_mx.filter is not None else "")
            + ")",
            s,
            hint="a running max bounds a tile's values only when it is the max of those same values; "
            "shift the scores by the max of the scores",
        )
    # f in the max's frame: the running sums are rescaled by f(old - new) at each point of the max. Each
    # index expression that sigma gives a rank of the max (`h`, or `h // 2` for the max's `g`) is that rank.
    mark = {v: S.Coord(f"<{r}>") for r, v in sigma.items()}
    marked = rewrite_expr(
        body, lambda n: mark.get(n) if not isinstance(n, (S.Const, S.Param, S.Size)) else None
    )
    lost = sorted(r for r in set(coords(marked)) if not r.startswith("<"))
    if lost:
        raise refuse(
            rank,
            f"`{text(e)}` scales the difference by a value along {', '.join(lost)}, which the max "
            f"`{g_mx.tensor}` does not have",
            s,
            hint=f"the running max rescales earlier tiles by f(old - new) once for each point of "
            f"`{g_mx.tensor}`: the factor of the difference may vary only along its ranks",
        )
    back = {f"<{r}>": S.Coord(r) for r in sigma}
    return Shift(s, ShiftFn(subst(marked, back)), x, c, sigma, direct)


def _shift_parts(e: S.Expr, dep: set[str], rank: str) -> tuple[S.Expr, S.Expr, S.Read] | None:
    """``e`` as ``f(X - c)``: ``(f's body with the difference as the hole, X, c)``, or None. ``c`` is a read
    of the max (or of a value computed from it) without ``rank``; nothing else in ``e`` reads the max. The
    difference may be spelled ``X - c``, ``-(c - X)``, ``X + -c`` or ``-c + X``."""
    found: list[tuple[S.Expr, S.Read]] = []

    def the_max(c: S.Expr) -> bool:
        return isinstance(c, S.Read) and c.tensor in dep and rank not in coords(c)

    def free(x: S.Expr) -> bool:
        return not tensors_read(x) & dep

    def difference(n: S.Expr) -> tuple[S.Expr, S.Read] | None:
        if isinstance(n, S.Binary) and n.op == "-" and the_max(n.b) and free(n.a):
            return n.a, n.b  # X - c
        negated = isinstance(n, S.Unary) and isinstance(n.x, S.Binary) and n.x.op == "-"
        if negated and the_max(n.x.a) and free(n.x.b):
            return n.x.b, n.x.a  # -(c - X)
        if isinstance(n, S.Binary) and n.op == "+":
            for x, c in ((n.a, n.b), (n.b, n.a)):
                if isinstance(c, S.Unary) and the_max(c.x) and free(x):
                    return x, c.x  # X + -c, -c + X
        return None

    def visit(n: S.Expr):
        d = difference(n)
        if d is not None:
            found.append(d)
            return hole()
        return None

    body = rewrite_expr(e, visit)
    if len(found) != 1 or tensors_read(body) & dep or body == hole():
        return None
    return body, found[0][0], found[0][1]


def _peel(f: S.Expr, mx: set[str], rank: str, whole: set[str]) -> list[S.Expr]:
    """``exp(a - k)`` -> ``[exp(a), exp(-k)]`` while ``a`` shifts by the max itself (``mx``) and ``k`` reads
    neither the max nor a value that needs every point of ``rank`` (``whole``), and is constant along
    ``rank`` (exp of a sum is the product of the exps, exp2 alike): the shift, and a weight the readers take.

    At the row's argmax ``a`` is 0 and the spec computes ``exp(k)`` itself, so ``exp(k)`` overflows only
    where the spec does, provided every reader sums the argmax (the caller checks that no reader filters).
    A shift by a value computed from the max (``GM + C``), or a ``k`` along the rank (a bias), can make
    ``exp(a)`` underflow where ``exp(k)`` overflows; the spec may write that product itself."""
    if isinstance(f, S.Call) and f.fn in ("exp", "exp2") and len(f.args) == 1:
        arg = f.args[0]
        if isinstance(arg, S.Binary) and arg.op in ("+", "-"):
            a, k = arg.a, arg.b
            if arg.op == "+" and not tensors_read(a) & mx:
                a, k = k, a
            free = not tensors_read(k) & (mx | whole) and rank not in coords(k)
            if tensors_read(a) & mx and free:
                if arg.op == "-":
                    k = S.Const(-k.value) if isinstance(k, S.Const) else S.Unary("-", k)
                return [*_peel(S.Call(f.fn, (a,)), mx, rank, whole), S.Call(f.fn, (k,))]
    return [f]


def _shift_shaped(e: S.Expr, dep: set[str], rank: str) -> bool:
    """``f(x - c)`` with ``c`` a read of the max (or of a value computed from it) without ``rank``."""
    return _shift_parts(e, dep, rank) is not None


def name_inline_shifts(draft: Draft, rank: str, deriv: Derivation) -> list[str]:
    """``SD[p] = exp(S[m, p] - GM[p])``: a sum over ``rank`` whose summand has a shift of the max as a factor,
    written inline (by the spec, or by the division deferral), reads it from a statement of its own,
    ``ESD[m, p] = exp(S[m, p] - GM[p])``; sums with the same shift share it. The pattern then sees a shift
    and its sums. Returns what was named, one phrase a statement."""
    changed: list[str] = []
    for mx in [e for e in draft.einsums if (rank, "max") in e.reduce and e.kind == "plain"]:
        dep = depends_on(draft, {mx.tensor})
        whole = full_reductions(draft.einsums, rank)  # (naming a shift adds no reduction)
        named: dict[tuple[S.Expr, S.Expr | None], tuple[str, list[str]]] = {}
        for r in list(draft.einsums):
            if r.kind != "plain" or rank not in r.reduced or any(op != "+" for _, op in r.reduce):
                continue
            if tensors_read(r.filter) & dep:
                continue
            fs = factors(r.expr)
            hits = [k for k, (f, inv) in enumerate(fs) if not inv and tensors_read(f) & dep]
            if len(hits) != 1 or isinstance(fs[hits[0]][0], S.Read):
                continue
            f = fs[hits[0]][0]
            parts = _shift_parts(f, dep, rank)
            if parts is None or any(tensors_read(fi) & dep for k, (fi, _) in enumerate(fs) if k != hits[0]):
                continue
            late = [fi for k, (fi, _) in enumerate(fs) if k != hits[0] and tensors_read(fi) & whole]
            if late:
                raise refuse(
                    rank,
                    f"`{r.tensor}` sums `{text(f)}` times `{text(late[0])}`, which needs every point of "
                    f"{rank} (a reduction over {rank}): a running sum would need it before the loop",
                    r,
                    hint=f"compute `{text(late[0])}` in a pass of its own, or leave it out of the sum over "
                    f"{rank}",
                )
            # the shift's own filter is the max's (the pattern requires it); the sum keeps its filter
            filt = r.filter if mx.filter is not None and r.filter is not None else None
            if filt is not None and not set(coords(filt)) <= set(coords(f)):
                continue
            key = (f, filt)
            if key not in named:
                ranks = [x for x in r.space if x in coords(f)]
                name = draft.fresh("E" + r.tensor)
                shift = make_einsum(name, plain_index(ranks), f, filt, span=r.span)
                draft.einsums.insert(next(k for k, e in enumerate(draft.einsums) if e is r), shift)
                named[key] = (name, ranks)
                deriv.step(
                    "name the shift",
                    r,
                    f"the shift `{text(f)}` in the sum `{r.tensor}` is computed by a statement of its own",
                    [stmt_text(shift)],
                    ["a value computed once and read is the value computed in place"],
                )
                changed.append(f"`{text(f)}` named `{name}`")
            name, ranks = named[key]  # (f is the same text: its coordinates are the same names here)
            read = S.Read(name, tuple(S.Coord(x) for x in ranks))
            new_r = make_einsum(
                r.tensor,
                r.index,
                product([(read if k == hits[0] else fi, inv) for k, (fi, inv) in enumerate(fs)]),
                r.filter,
                named_reductions(r),
                span=r.span,
            )
            draft.replace(r, [new_r])
    return changed


def weights_into_readers(draft: Draft, rank: str, deriv: Derivation) -> list[str]:
    """``SN[m, p] = f(X[m, p] - GM[p]) * W[m]``: a shift times factors that do not depend on the max (per-key
    weights, a gate, a constant) becomes the shift alone, and each reader of ``SN`` reads ``SN * W`` in its
    own frame (``SD[p] = SN[m, p] * W[m]``). The value every reader sees is the same product; the readers are
    then sums of the shift with max-independent factors, which the running max rescales exactly. Applies to
    statements that are no output and take no reduction. Returns what moved, one phrase a statement."""
    changed: list[str] = []
    for mx in [e for e in draft.einsums if (rank, "max") in e.reduce and e.kind == "plain"]:
        dep = depends_on(draft, {mx.tensor})
        whole = full_reductions(draft.einsums, rank)  # (moving weights changes no reduction over the rank)
        for s in list(draft.einsums):
            if s is mx or s.kind != "plain" or s.reduce or s.tensor in draft.outputs:
                continue
            if rank not in s.lhs_ranks or not any(x is s for x in draft.einsums):  # (replaced as a reader)
                continue
            readers = draft.readers(s.tensor)
            peelable = all(r.filter is None for r in readers)  # every reader sums the row's argmax too
            fs = [
                (g, inv)
                for f, inv in factors(s.expr)
                for g in (_peel(f, {mx.tensor}, rank, whole) if peelable and not inv else [f])
            ]
            peeled = len(fs) > len(factors(s.expr))
            shifts = [k for k, (f, inv) in enumerate(fs) if not inv and _shift_shaped(f, dep, rank)]
            if len(fs) < 2 or len(shifts) != 1 or tensors_read(s.filter) & dep:
                continue
            weights = [fi for k, fi in enumerate(fs) if k != shifts[0]]
            if not readers or any(tensors_read(f) & (dep | whole) for f, _ in weights):
                continue
            new_s = make_einsum(s.tensor, s.index, fs[shifts[0]][0], s.filter, (), span=s.span)
            lhs = s.lhs_ranks

            def weighted(n: S.Expr, name=s.tensor, lhs=lhs, weights=weights):
                if isinstance(n, S.Read) and n.tensor == name:
                    rho = dict(zip(lhs, n.indices))
                    return product([(n, False), *((subst(f, rho), inv) for f, inv in weights)])
                return None

            produced = [stmt_text(new_s)]
            for r in readers:
                expr = rewrite_expr(r.expr, weighted)
                filt = rewrite_expr(r.filter, weighted) if r.filter is not None else None
                new_r = make_einsum(r.tensor, r.index, expr, filt, named_reductions(r), span=r.span)
                draft.replace(r, [new_r])
                produced.append(stmt_text(new_r))
            draft.replace(s, [new_s])
            moved = " * ".join(("1 / " if inv else "") + text(f) for f, inv in weights)
            deriv.step(
                "weights into readers",
                s,
                f"`{moved}` does not depend on `{mx.tensor}`: `{s.tensor}` keeps the shift alone and its "
                "readers multiply by it",
                produced,
                [
                    *(["exp(a + k) = exp(a) * exp(k), exp2 alike"] if peeled else []),
                    f"`{moved}` reads nothing computed from `{mx.tensor}`",
                    f"`{s.tensor}` is no output and reduces nothing: every reader sees the same product",
                ],
            )
            changed.append(f"`{moved}` moved from `{s.tensor}` into its readers")
    return changed


def _users(draft: Draft, e: Einsum) -> str:
    """The name the user wrote for ``e``'s tensor: a statement a rule derived (division deferral's `N2`) is
    named after the spec's statement at its place."""
    spec = draft.source
    if e.tensor in {x.tensor for x in spec.einsums} or e.span is None:
        return e.tensor
    mine = next((x.tensor for x in spec.einsums if x.span is not None and x.span.line == e.span.line), None)
    return mine or e.tensor


def _sum(draft: Draft, rank: str, dep: set[str], sh: Shift, r: Einsum) -> Sum | str:
    """``r`` as a running sum of ``sh``, or why it is not one."""
    sn = sh.e.tensor
    if rank not in r.space:
        return f"`{r.tensor}` reads `{sn}` at one point of {rank}"
    if rank not in r.reduced:
        why = draft.blocked.get(r.tensor)
        return f"`{r.tensor}` needs `{sn}` at every point of {rank}: `{stmt_text(r)}`" + (
            f" ({why})" if why else ""
        )
    if r.kind != "plain":
        return f"`{r.label}` is an iterative update"
    bad = [op for _, op in r.reduce if op != "+"]
    if bad:
        return (
            f"`{r.tensor}` reduces `{sn}` with `{bad[0]}`; only a `+` reduction can be rescaled when the "
            "running "
            "max changes"
        )
    fs = factors(r.expr)
    hits = [(f, inv) for f, inv in fs if isinstance(f, S.Read) and f.tensor == sn]
    total = sum(1 for rd in r.reads() if rd.tensor == sn)
    if len(hits) != 1 or hits[0][1] or total != 1:
        return f"`{r.tensor}` does not use `{sn}` linearly (once, as a factor): `{text(r.expr)}`"
    for f, _ in fs:
        if f is not hits[0][0] and tensors_read(f) & dep:
            return f"`{_users(draft, r)}` multiplies `{sn}` by `{text(f)}`, which depends on the max"
    if tensors_read(r.filter) & dep:
        return f"the filter of `{r.tensor}` depends on the max"
    tau = dict(zip(sh.e.lhs_ranks, hits[0][0].indices))
    # the running sum is rescaled by the max's change at each of its points: the max must not vary along a
    # rank the sum also reduces (a total over the rows of per-row maxes: one sum, many rescalings)
    summed = set(r.reduced) - {rank}
    for q in sorted({x for ix in sh.c.indices for x in coords(ix)} - {rank}):
        over = sorted(set(coords(tau[q])) & summed) if q in tau else []
        if over:
            return (
                f"`{r.tensor}` sums `{sn}` over {', '.join(over)} too, along which its max varies: one "
                f"running sum cannot be rescaled by a different max at each point of {', '.join(over)}"
            )
    return Sum(r, sh, tau)


def analyse(draft: Draft, rank: str, strict: bool) -> list[Group]:
    """Find each max over ``rank`` with its shifts and sums, checking every side condition.

    ``strict`` (1-pass): everything that depends on the max must be a shift, a sum or a final.
    """
    groups = []
    seen_dep: set[str] = set()
    for mx in [e for e in draft.einsums if (rank, "max") in e.reduce]:
        if mx.kind != "plain":
            raise refuse(rank, f"`{mx.label}` is an iterative update", mx)
        if mx.reduce != ((rank, "max"),):
            others = [r for r, _ in mx.reduce if r != rank]
            if all(op == "max" for _, op in mx.reduce):
                raise refuse(
                    rank,
                    f"`{mx.tensor}` takes one max over {rank} and {', '.join(others)} together",
                    mx,
                    hint=f"the rewrite streams one rank: take the max over {', '.join(others)} in a "
                    f"statement of its own first, then the max over {rank}",
                )
            raise refuse(
                rank,
                f"`{mx.tensor}` also sums {', '.join(others)} in the statement taking the max over {rank}",
                mx,
                hint="compute the scores in a statement of their own, then take their max",
            )
        dep = depends_on(draft, {mx.tensor})
        along = {e.tensor for e in draft.einsums if e.tensor in dep and rank in e.space}
        if along & seen_dep:  # two maxes may meet only after their sums over the rank (finals)
            both = sorted(along & seen_dep)[0]
            what = (
                f"`{mx.tensor}` takes a max over {rank} of values that depend on another max over {rank}"
                if both == mx.tensor
                else f"`{both}` depends on `{mx.tensor}` and on another max over {rank}, along {rank}"
            )
            raise refuse(rank, what, draft.definition(both) or mx)
        seen_dep |= along
        shifts = []
        for s in draft.einsums:
            if s is mx or rank not in s.lhs_ranks or not reads_any(s, dep):
                continue
            sh = _shift(draft, rank, mx, dep, s, strict)
            if sh is not None:
                shifts.append(sh)
        sums = []
        for sh in shifts:
            if strict and sh.e.tensor in draft.outputs:
                raise refuse(rank, f"output `{sh.e.tensor}` needs every point of {rank}", sh.e)
            for r in draft.readers(sh.e.tensor):
                got = _sum(draft, rank, dep, sh, r)
                if isinstance(got, Sum):
                    sums.append(got)
                elif strict:
                    raise refuse(
                        rank,
                        got,
                        r,
                        hint=f"after a running max, `{sh.e.tensor}` may only be summed over {rank} "
                        f"(e.g. `SD = {sh.e.tensor}`, `SNV = {sh.e.tensor} * V`), then combined without "
                        f"{rank}",
                    )
        if strict:
            done = {mx.tensor} | {sh.e.tensor for sh in shifts} | {sm.e.tensor for sm in sums}
            for s in draft.einsums:
                if s.tensor in done or rank not in s.space or not reads_any(s, dep):
                    continue
                names = ", ".join(
                    f"`{t}`" for t in sorted((tensors_read(s.expr) | tensors_read(s.filter)) & dep)
                )
                why = draft.blocked.get(s.tensor)
                raise refuse(
                    rank,
                    f"`{s.tensor}` combines {names} with values along {rank}: `{stmt_text(s)}`"
                    + (f" ({why})" if why else ""),
                    s,
                    hint=f"what depends on the max over {rank} may be used along {rank} only inside "
                    "f(x - max) "
                    f"and sums of it",
                )
        groups.append(Group(mx, dep, shifts, sums))
    return groups
