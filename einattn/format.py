"""IR -> .ein text: the inverse of :func:`einattn.parse`, so that ``parse(format(p)) == p``.

The printer is a small table of operator precedences (the grammar's, lowest first) and one rule: a child is
parenthesised only when its precedence is lower than its parent's, or equal on the right of a left-associative
operator. Everything else is layout, chosen to read like the examples:

* declarations first (``input``, ``param``, ``rank`` partitions and aliases, ``output``), then one statement
  per line, in source order;
* ``=`` aligned within a paragraph (statements not separated by a blank line), two spaces before ``where``;
* ``:: op(ranks)`` only where the reduction is not the default (``+`` over the right-only ranks in order);
* comments of the source (when the program has one) are kept: the file header, the comment lines and blank
  lines above each item, and each item's trailing comment.

>>> import einattn
>>> p = einattn.parse("input X[i, j]\\noutput Y\\nY[i] = (X[i, j] + 1) * 2 :: max(j)")
>>> print(einattn.format(p), end="")
input  X[i, j]
output Y
<BLANKLINE>
Y[i] = (X[i, j] + 1) * 2 :: max(j)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import syntax as S
from .errors import InternalError
from .ir import Einsum, Partition, Program, Tensor, size_name

# ---- expressions ---------------------------------------------------------------------------------------

# Precedence, lowest first, exactly as in grammar/ein.lark: ?? < or < and < not < compare < +- < */ < unary.
_DEFAULT, _OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 10)
_BINARY_PREC = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "//": _PRODUCT, "%": _PRODUCT}


def format_number(v: int | float) -> str:
    """A literal that the lexer reads back as the same value (``inf`` for infinity, ``repr`` otherwise)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InternalError(f"not a number: {v!r}")
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        raise InternalError("NaN has no .ein spelling")
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _prec(e: S.Expr) -> int:
    if isinstance(e, S.Default):
        return _DEFAULT
    if isinstance(e, S.Logic):
        return _OR if e.op == "or" else _AND
    if isinstance(e, S.Not):
        return _NOT
    if isinstance(e, S.Compare):
        return _COMPARE
    if isinstance(e, S.Binary):
        return _BINARY_PREC[e.op]
    if isinstance(e, S.Unary):
        return _UNARY
    if isinstance(e, S.Const) and math.copysign(1.0, e.value) < 0:
        return _UNARY  # printed with a leading minus
    return _ATOM


def _wrap(e: S.Expr, parens: bool) -> str:
    text = format_expr(e)
    return f"({text})" if parens else text


def format_expr(e: S.Expr) -> str:
    """One expression (value, index or filter) with the fewest parentheses that keep its tree."""
    if isinstance(e, S.Const):
        return format_number(e.value)
    if isinstance(e, S.Coord):
        return e.rank
    if isinstance(e, S.Size):
        return size_name(e.rank)
    if isinstance(e, S.Param):
        return e.name
    if isinstance(e, S.Name):
        return e.id
    if isinstance(e, S.Read):
        if not e.indices:
            return e.tensor
        return f"{e.tensor}[{', '.join(format_expr(i) for i in e.indices)}]"
    if isinstance(e, S.Call):
        return f"{e.fn}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, S.Unary):
        if isinstance(e.x, S.Const):
            raise InternalError("a negated constant is a negative constant in the IR")
        return f"{e.op}{_wrap(e.x, _prec(e.x) <= _UNARY)}"  # `-(-x)` rather than `--x`
    if isinstance(e, S.Not):
        return f"not {_wrap(e.x, _prec(e.x) < _NOT)}"
    if isinstance(e, S.Compare):
        return f"{_wrap(e.a, _prec(e.a) < _SUM)} {e.op} {_wrap(e.b, _prec(e.b) < _SUM)}"
    if isinstance(e, (S.Binary, S.Logic, S.Default)):
        p = _prec(e)
        op = "??" if isinstance(e, S.Default) else e.op
        return f"{_wrap(e.a, _prec(e.a) < p)} {op} {_wrap(e.b, _prec(e.b) <= p)}"
    raise InternalError(f"cannot format {type(e).__name__}")


# ---- statements ------------------------------------------------------------------------------------------


def format_lhs(e: Einsum) -> str:
    if not e.index:
        return e.tensor
    return f"{e.tensor}[{', '.join(str(ix) for ix in e.index)}]"


def reduction_clause(e: Einsum) -> tuple[str, tuple[str, ...]] | None:
    """The ``:: op(ranks)`` that makes the checker rebuild ``e.reduce``; None when the default is right.

    The checker sums the unnamed reduced ranks first, in iteration-space order, then applies the named ones in
    the order written. So the named ranks are the shortest suffix of ``e.reduce`` with one operator whose
    complement is exactly the default ``+`` prefix.
    """
    reduce = tuple(e.reduce)
    lhs = set(e.lhs_ranks)
    reduced = [r for r in e.space if r not in lhs]
    if sorted(reduced) != sorted(r for r, _ in reduce):
        raise InternalError(f"`{e.label}`: reduced ranks {reduce} do not match its iteration space")
    for k in range(len(reduce), -1, -1):
        prefix, suffix = reduce[:k], reduce[k:]
        if len({op for _, op in suffix}) > 1:
            break
        named = {r for r, _ in suffix}
        if prefix == tuple((r, "+") for r in reduced if r not in named):
            if not suffix:
                return None
            return suffix[0][1], tuple(r for r, _ in suffix)
    raise InternalError(f"`{e.label}`: the reduction {reduce} has no .ein spelling (one `::` operator only)")


def format_einsum(e: Einsum, lhs_width: int = 0) -> str:
    """``LHS = expr [:: op(ranks)] [  where filter]`` on one line, the LHS padded to ``lhs_width``."""
    text = f"{format_lhs(e).ljust(lhs_width)} = {format_expr(e.expr)}"
    clause = reduction_clause(e)
    if clause is not None:
        text += f" :: {clause[0]}({', '.join(clause[1])})"
    if e.filter is not None:
        text += f"  where {format_expr(e.filter)}"
    return text


def format_tensor_decl(t: Tensor) -> str:
    shape = f"[{', '.join(t.ranks)}]" if t.ranks else ""
    return f"{t.name}{shape}{' : int' if t.dtype == 'int' else ''}"


def format_partition(p: Partition) -> str:
    return f"{size_name(p.parent)} = {size_name(p.outer)} * {size_name(p.inner)}"


# ---- comments of the source --------------------------------------------------------------------------------


@dataclass
class _Comments:
    """Comments and blank lines of a source, keyed by the item they belong to."""

    header: list[str] = field(default_factory=list)
    above: dict[tuple, list[str]] = field(default_factory=dict)  # "" is a blank line
    trailing: dict[tuple, str] = field(default_factory=dict)
    footer: list[str] = field(default_factory=list)
    input_groups: list[tuple[str, ...]] = field(default_factory=list)
    output_groups: list[tuple[str, ...]] = field(default_factory=list)


def _item_key(item: S.Item) -> tuple:
    if isinstance(item, S.InputDecl):
        return ("input", tuple(d.name for d in item.tensors))
    if isinstance(item, S.OutputDecl):
        return ("output", item.names)
    if isinstance(item, S.ParamDecl):
        return ("param", item.name)
    if isinstance(item, S.RankDecl):
        return ("rank", item.parent.lower())
    if isinstance(item, S.RankAlias):
        return ("alias", item.name.lower())
    kind = "plain"
    for ix in item.indices or ():
        if isinstance(ix, S.Const):
            kind = "init"
        elif isinstance(ix, S.Binary):
            kind = "step"
    return ("stmt", item.tensor if kind == "plain" else f"{item.tensor}.{kind}")


def _item_lines(item: S.Item) -> tuple[int, int]:
    span = item.span
    return span.line, span.line if isinstance(item, S.ParamDecl) else span.end_line


def _squeeze(lines: list[str]) -> list[str]:
    """Runs of blank lines become one."""
    out: list[str] = []
    for line in lines:
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return out


def _collect_comments(prog: Program) -> _Comments | None:
    if prog.source is None or not prog.source.text:
        return None
    from .parser import parse as parse_module

    try:
        module = parse_module(prog.source.text, prog.source.name)
    except Exception:  # the source no longer parses: print without comments
        return None
    lines = prog.source.text.splitlines()
    out = _Comments()

    def comment(k: int) -> str | None:
        text = lines[k - 1] if 0 < k <= len(lines) else ""
        return text[text.index("#") :].rstrip() if "#" in text else None

    def gap(first: int, last: int) -> list[str]:
        got = []
        for k in range(first, last + 1):
            text = lines[k - 1].strip()
            if not text:
                got.append("")
            elif text.startswith("#"):
                got.append(text.rstrip())
        return got

    prev_end = 0
    items = list(module.items)
    for n, item in enumerate(items):
        start, end = _item_lines(item)
        key = _item_key(item)
        above = _squeeze(gap(prev_end + 1, start - 1))
        if n == 0:
            out.header = _trim(above)
            above = []
        out.above[key] = above
        trail = [c for k in range(start, end + 1) if (c := comment(k)) is not None]
        if trail:
            out.trailing[key] = "  ".join(trail)
        prev_end = end
        if isinstance(item, S.InputDecl):
            out.input_groups.append(key[1])
        elif isinstance(item, S.OutputDecl):
            out.output_groups.append(key[1])
    out.footer = _trim(_squeeze(gap(prev_end + 1, len(lines))))
    return out


def _trim(lines: list[str]) -> list[str]:
    while lines and lines[0] == "":
        lines = lines[1:]
    while lines and lines[-1] == "":
        lines = lines[:-1]
    return lines


# ---- the program -------------------------------------------------------------------------------------------


def _groups(names: tuple[str, ...], source_groups: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The source's grouping of names into lines when it still matches, else one group."""
    if source_groups and tuple(n for g in source_groups for n in g) == tuple(names):
        return source_groups
    return [tuple(names)] if names else []


def comment_text(text: str) -> str:
    """Text made safe for one comment line: a file name may hold a newline, which would end the comment."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def format_parts(
    inputs: Iterable[Tensor],
    outputs: Iterable[str],
    params: Iterable[tuple[str, int | float]],
    partitions: Iterable[Partition],
    einsums: Iterable[Einsum],
    comments: _Comments | None = None,
    header: Iterable[str] = (),
    notes: dict[str, str] | None = None,
    aliases: Iterable[tuple[str, str]] = (),
) -> str:
    """The text of a program given its parts (used by rewrites to print a program before checking it).

    ``header`` lines are printed as ``# `` comments at the top; ``notes`` maps an Einsum label to a trailing
    comment (without the ``#``); ``aliases`` are ``rank S = T`` pairs ``(s, t)``.
    """
    inputs, outputs, einsums = list(inputs), tuple(outputs), list(einsums)
    c = comments or _Comments()
    notes = notes or {}
    lines: list[str] = []

    def emit(code: str, key: tuple) -> None:
        for x in c.above.get(key, ()):
            if not (x == "" and (not lines or lines[-1] == "")):
                lines.append(x)
        lines.append(code + (f"  {c.trailing[key]}" if key in c.trailing else ""))

    lines.extend(f"# {comment_text(h)}".rstrip() for h in header)
    lines.extend(c.header)
    by_name = {t.name: t for t in inputs}
    for group in _groups(tuple(by_name), c.input_groups):
        emit("input  " + ", ".join(format_tensor_decl(by_name[n]) for n in group), ("input", group))
    for name, value in params:
        emit(f"param  {name} = {format_number(value)}", ("param", name))
    for p in partitions:
        emit(f"rank   {format_partition(p)}", ("rank", p.parent))
    for name, target in aliases:
        emit(f"rank   {size_name(name)} = {size_name(target)}", ("alias", name))
    for group in _groups(outputs, c.output_groups):
        emit("output " + ", ".join(group), ("output", group))

    # statements: paragraphs (separated by blank lines) align `=` and trailing comments
    paragraphs: list[list[tuple[list[str], Einsum, str | None]]] = [[]]
    for e in einsums:
        key = ("stmt", e.label)
        above = list(c.above.get(key, ()))
        if "" in above and paragraphs[-1]:
            paragraphs.append([])
        trail = c.trailing.get(key)
        if e.label in notes:
            trail = (trail + "  " if trail else "") + f"# {comment_text(notes[e.label])}"
        paragraphs[-1].append((above, e, trail))
    for para in paragraphs:
        if not para:
            continue
        if lines and lines[-1] != "":
            lines.append("")
        width = max(len(format_lhs(e)) for _, e, _ in para)
        codes = [format_einsum(e, width) for _, e, _ in para]
        with_comment = [len(code) for code, (_, _, t) in zip(codes, para) if t]
        col = min(max(with_comment, default=0), 100) + 2
        for code, (above, _, trail) in zip(codes, para):
            for x in above:
                if not (x == "" and (not lines or lines[-1] == "")):
                    lines.append(x)
            lines.append((code.ljust(col) if len(code) < col else code + "  ") + trail if trail else code)
    if c.footer:
        lines.append("")
        lines.extend(c.footer)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def format_program(prog: Program, comments: bool = True) -> str:
    """The .ein text of ``prog``; ``einattn.parse`` of it gives back an equal program.

    With ``comments`` (the default) the comments of the program's source are kept.
    """
    return format_parts(
        (prog.tensor(n) for n in prog.inputs),
        prog.outputs,
        prog.params,
        prog.partitions,
        prog.einsums,
        _collect_comments(prog) if comments else None,
        aliases=getattr(prog, "aliases", ()),
    )


__all__ = ["format_einsum", "format_expr", "format_number", "format_parts", "format_program"]
