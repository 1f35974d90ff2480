"""IR -> .ein text: the inverse of :func:`einattn.parse`, so that ``parse(format(p)) == p``.

The printer is a small table of operator precedences (the grammar's, lowest first) and one rule: a child is
parenthesised only when its precedence is lower than its parent's, or equal on the right of a left-associative
operator. Everything else is layout, chosen to read like the examples:

* declarations first (``input``, ``param``, ``rank`` partitions and aliases, ``output``), then one statement
  per line, in source order;
* ``=`` aligned within a run of statements (a blank or comment line starts a new one), two spaces before
  ``where``; trailing comments aligned within a run of statements or of declarations;
* a statement longer than 110 characters broken over lines, its value in parentheses, as a pretty-printer
  breaks (:func:`format_einsum_lines`): before the operators of a sum or product, after the commas of indices
  and arguments, each continuation aligned under the first operand, index or argument;
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
    return repr(v).replace("e+", "e")  # (1e30, not 1e+30)


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
    return f"{format_lhs(e).ljust(lhs_width)} = {format_expr(e.expr)}{_tail(e)}"


def _tail(e: Einsum) -> str:
    text = ""
    clause = reduction_clause(e)
    if clause is not None:
        text += f" :: {clause[0]}({', '.join(clause[1])})"
    if e.filter is not None:
        text += f"  where {format_expr(e.filter)}"
    return text


LINE = 110  # the longest line the formatter makes where it can break one (the project's line length)


def format_einsum_lines(e: Einsum, lhs_width: int = 0) -> list[str]:
    """:func:`format_einsum`, broken over lines when longer than :data:`LINE`, as a pretty-printer breaks
    (Oppen, Wadler): the value goes in parentheses and breaks before the operators of its outermost sum or
    product, aligned under its first operand; a read's indices or a call's arguments that do not fit break
    after their commas, aligned under the first; inner sums and products the same way. A part that fits on
    its line stays whole."""
    text = format_einsum(e, lhs_width)
    if len(text) <= LINE:
        return [text]
    head = f"{format_lhs(e).ljust(lhs_width)} = ("
    lines = _render([head, _doc(e.expr), ")" + _tail(e)])
    return lines if max(map(len, lines)) < len(text) else [text]


# A document: a str (text), a list (one after the other), ("line",) (a space, or a line break when its group
# breaks), ("group", doc) (broken only when it does not fit), ("align", doc) (its line breaks go to the
# column where it starts).


def _doc(e: S.Expr):
    if isinstance(e, S.Read) and e.indices:
        return ("group", [e.tensor + "[", ("align", _joined([_doc(i) for i in e.indices])), "]"])
    if isinstance(e, S.Call):
        return ("group", [e.fn + "(", ("align", _joined([_doc(a) for a in e.args])), ")"])
    if isinstance(e, S.Binary):
        p = _prec(e)
        chain = _chain(e)
        parts = []
        for k, (op, x) in enumerate(chain):
            inner = _doc(x)
            if (_prec(x) <= p) if op else (_prec(x) < p):
                inner = ["(", ("align", inner), ")"]
            parts += [("line",), op + " ", inner] if k else [inner]
        return ("group", ("align", parts))
    return format_expr(e)


def _joined(items: list) -> list:
    out: list = []
    for k, x in enumerate(items):
        out += [",", ("line",), x] if k else [x]
    return out


def _chain(e: S.Expr) -> list[tuple[str, S.Expr]]:
    """The operands of the outermost sum or product, with the operator before each (``""`` first)."""
    p = _prec(e)
    out: list[tuple[str, S.Expr]] = []
    x = e
    while isinstance(x, S.Binary) and _prec(x) == p:
        out.append((x.op, x.b))
        x = x.a
    out.append(("", x))
    return out[::-1]


def _flat(doc) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, list):
        return "".join(_flat(d) for d in doc)
    if doc[0] == "line":
        return " "
    return _flat(doc[-1])


def _render(doc) -> list[str]:
    """The lines of ``doc``. A group that fits (with the text that must follow it on its line) is printed
    flat; in one that does not, each line break is taken only where the next piece would not fit (filling
    lines, as the hand-written specs do)."""
    lines = [""]
    col = 0

    def upto_line(items, start: int, after: int) -> int:  # the flat width from items[start] to a break
        width = 0
        for x in items[start:]:
            if isinstance(x, tuple) and x[0] == "line":
                return width
            width += len(_flat(x))
        return width + after

    def run(d, indent: int, flat: bool, after: int) -> None:
        nonlocal col
        if isinstance(d, str):
            lines[-1] += d
            col += len(d)
        elif isinstance(d, list):
            for k, x in enumerate(d):
                if isinstance(x, tuple) and x[0] == "line":
                    if flat or col + 1 + upto_line(d, k + 1, after) <= LINE:
                        lines[-1] += " "
                        col += 1
                    else:
                        lines.append(" " * indent)
                        col = indent
                else:
                    run(x, indent, flat, upto_line(d, k + 1, after))
        elif d[0] == "group":
            run(d[1], indent, flat or col + len(_flat(d[1])) + after <= LINE, after)
        else:  # align
            run(d[1], col, flat, after)

    run(doc, 0, False, 0)
    return lines


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

    run: list[tuple[str, str | None]] = []  # declarations on consecutive lines: their comments align

    def flush() -> None:
        lines.extend(_commented([code for code, _ in run], [t for _, t in run]))
        run.clear()

    def emit(code: str, key: tuple) -> None:
        above = c.above.get(key, ())
        if above:
            flush()
        for x in above:
            if not (x == "" and (not lines or lines[-1] == "")):
                lines.append(x)
        run.append((code, c.trailing.get(key)))

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
    flush()

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
        runs = [[]]  # statements under a comment line start a run of their own: `=` aligns within a run
        for item in para:
            if item[0] and runs[-1]:
                runs.append([])
            runs[-1].append(item)
        codes = []
        for run in runs:
            width = max(len(format_lhs(e)) for _, e, _ in run)
            codes += [format_einsum_lines(e, width) for _, e, _ in run]
        for x, (above, _, _) in zip(_commented([c[-1] for c in codes], [t for _, _, t in para]), para):
            for y in above:
                if not (y == "" and (not lines or lines[-1] == "")):
                    lines.append(y)
            lines.extend(codes.pop(0)[:-1])
            lines.append(x)
    if c.footer:
        lines.append("")
        lines.extend(c.footer)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _commented(codes: list[str], trails: list[str | None]) -> list[str]:
    """Lines of code with their trailing comments (None: none), the comments aligned two spaces after the
    longest commented line (up to column 100; a longer line takes its comment two spaces after it)."""
    col = min(max((len(x) for x, t in zip(codes, trails) if t), default=0), 100) + 2
    return [(x.ljust(col) if len(x) < col else x + "  ") + t if t else x for x, t in zip(codes, trails)]


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
