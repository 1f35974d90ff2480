"""Text -> :class:`einattn.syntax.Module`, with located, friendly syntax errors.

The grammar lives in ``grammar/ein.lark``. Lark's LALR parser with a contextual lexer is fast and gives
exact positions; a small post-lexer drops newlines inside brackets so statements may continue across lines.
"""

from __future__ import annotations

import functools
import math
import re

import lark
from lark import Token, v_args
from lark.visitors import Transformer_NonRecursive

from . import syntax as S
from .errors import EinError, Source, Span

# Readable names for the grammar's terminals, used in "expected ..." messages.
_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "INF": "`inf`",
    "_NL": "end of line",
    "$END": "end of file",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "COMMA": "`,`",
    "EQUAL": "`=`",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "STAR": "`*`",
    "SLASH": "`/`",
    "COLON": "`:`",
    "CMPOP": "a comparison",
    "REDOP": "a reduction operator (`+`, `max` or `min`)",
    "SIGN": "a sign",
}


class _BracketNewlines:
    """Post-lexer: newlines inside (...) or [...] are whitespace."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@functools.lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    from .grammar import grammar_text

    return lark.Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        postlex=_BracketNewlines(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


MAX_DEPTH = 100
"""How deeply one expression may nest (operations, calls and reads on its longest path; brackets are free).

Every later stage (the checker, the analyses, the backends' generated source) walks expressions recursively,
and Python limits both its recursion and the brackets of one line of source; 100 leaves a wide margin below
both. A longer expression is split into several statements."""

_TOO_DEEP = "expression nested too deeply"
_TOO_DEEP_HINT = (
    f"an expression nests at most {MAX_DEPTH} operations deep (a sum of about {MAX_DEPTH} terms); "
    "split it into several statements"
)


def parse(text: str, filename: str = "<string>") -> S.Module:
    """Parse .ein source text into a syntax module (no semantic checks)."""
    # line endings as files are read (universal newlines): "\r\n" and a lone "\r" (old Mac files) end a line
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    source = Source(filename, text)
    try:
        # (a line continued by `\` at the very end of the file is continued by nothing: one more newline)
        tree = _lark().parse(text + ("\n\n" if text.rstrip(" \t\f").endswith("\\") else "\n"))
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    except RecursionError:  # pragma: no cover - the LALR parser does not recurse
        raise EinError(_TOO_DEEP, _first_line(source), hint=_TOO_DEEP_HINT) from None
    try:
        module = _ToSyntax(source).transform(tree)  # non-recursive: any depth is fine here
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, EinError):
            raise e.orig_exc from None
        raise
    except RecursionError:  # pragma: no cover - the transformer does not recurse
        raise EinError(_TOO_DEEP, _first_line(source), hint=_TOO_DEEP_HINT) from None
    for item in module.items:
        if isinstance(item, S.Statement):
            _check_depth(item)
    return module


def _first_line(source: Source) -> Span:
    return Span(source, 1, 1, 1, 2)


def _depth(e: S.Expr) -> int:
    """Nodes on the longest path from ``e`` to a leaf, without recursion (``e`` may be very deep)."""
    deepest, stack = 0, [(e, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in node.children())
    return deepest


def _check_depth(st: S.Statement) -> None:
    """Reject an expression nested more than :data:`MAX_DEPTH` deep, at that expression."""
    for root in (*(st.indices or ()), st.expr, st.filter):
        if root is not None and _depth(root) > MAX_DEPTH:
            raise EinError(_TOO_DEEP, root.span or st.span, hint=_TOO_DEEP_HINT)


# Characters copied from papers and word processors, and what they mean in the language.
_UNICODE_HINTS = {
    "×": "a product is `*`",
    "·": "a product is `*`",
    "⋅": "a product is `*`",
    "∗": "a product is `*`",
    "∙": "a product is `*`",
    "÷": "a division is `/`",
    "∕": "a division is `/`",
    "−": "a minus is `-` (this is the Unicode minus sign)",
    "–": "a minus is `-` (this is a dash)",
    "—": "a minus is `-` (this is a dash)",
    "≤": "less than or equal is written `<=`",
    "≥": "greater than or equal is written `>=`",
    "≠": "not equal is written `!=`",
    "≦": "less than or equal is written `<=`",
    "≧": "greater than or equal is written `>=`",
    "∞": "infinity is written `inf`",
    "√": "a square root is `sqrt(x)`",
    "∑": "a rank that appears only on the right-hand side is summed: `S[p] = X[p, m]`",
    "“": "the .ein language has no strings",
    "”": "the .ein language has no strings",
    "‘": "the .ein language has no strings",
    "’": "the .ein language has no strings",
    "\u00a0": "a non-breaking space: use an ordinary space",
}


def _syntax_error(e: lark.exceptions.UnexpectedInput, source: Source) -> EinError:
    line, col = max(1, e.line or 1), max(1, e.column or 1)
    lines = source.text.splitlines()
    if line > len(lines):  # the appended final newline: point just past the end of the text
        line = max(1, len(lines))
        col = len(lines[line - 1]) + 1 if lines else 1
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        ch = source.line(line)[col - 1 : col] or "?"
        shown = repr(ch) if not ch.isprintable() or ch == " " else f"`{ch}`"
        hint = None
        if ch == "\t":
            hint = None
        elif ch in "\"'":
            hint = "the .ein language has no strings"
        elif ch in _UNICODE_HINTS:
            hint = _UNICODE_HINTS[ch]
        elif not ch.isascii():
            hint = "names are ASCII letters, digits and `_`"
        elif ch == "?":
            hint = "the default operator is written `??`"
        elif ch == "=":
            hint = "comparisons in a `where` filter are written `==`"
        elif ch == "@":
            hint = "a product is written `*`, and the ranks it shares are summed: `Q[p, e] * K[m, e]`"
        elif ch == ";":
            hint = "one statement per line: drop the `;`, and put what follows it on a line of its own"
        return EinError(f"unexpected character {shown}", Span(source, line, col, line, col + 1), hint)
    token = getattr(e, "token", None)
    expected = sorted({_TOKEN_NAMES.get(t, f"`{_literal(t)}`") for t in (e.expected or ()) if t != "_NL"})
    if isinstance(token, Token) and token.type != "$END":
        what = "end of line" if token.type == "_NL" else f"`{token.value}`"
        width = 1 if token.type == "_NL" else max(1, len(token.value))
        if token.type == "_NL":
            col = len(source.line(line)) + 1 if token.line != line else col
    else:
        what, width = "end of file", 1
    hint = None
    if expected:
        shown = ", ".join(expected[:6]) + (", ..." if len(expected) > 6 else "")
        hint = f"expected {shown}"
    # at the end of the file every bracket counts (lark places the end at the last token, which may close one)
    opened = _open_bracket(source.text, *((10**9, 0) if what == "end of file" else (line, col)))
    if opened is not None and (what in ("end of line", "end of file") or opened[1] < line):
        ch, ol, oc = opened
        hint = f"the `{ch}` opened at line {ol}, column {oc} is never closed"
    elif isinstance(token, Token) and token.value == "=" and "`=`" not in expected:
        hint = "a statement has one `=`; a comparison in a filter is written `==`"
    elif (
        isinstance(token, Token)
        and token.value in ("::", "where")
        and _has_filter(source.line(line)[: col - 1])
    ):
        hint = (
            "the reduction comes before the filter: `LHS = expression :: max(m) where predicate`"
            if token.value == "::"
            else "a statement has one filter: combine the conditions with `and`"
        )
    elif (
        isinstance(token, Token)
        and token.value == "::"
        and "::" in source.line(line)[: col - 1].split("#", 1)[0]
    ):
        hint = "a statement has one reduction operator: reduce with the other in a statement of its own"
    elif isinstance(token, Token) and token.value == "::" and opened is not None:
        hint = (
            "`:: op(rank)` reduces a whole statement's right-hand side, not a part in brackets: reduce in a "
            "statement of its own (`MX[p] = S[p, m] :: max(m)`), then read its result here"
        )
    return EinError(f"unexpected {what}", Span(source, line, col, line, col + width), hint)


def _has_filter(before: str) -> bool:
    """Whether the text of a line before a token holds a `where` (the statement's filter has begun)."""
    return re.search(r"(?<![A-Za-z0-9_])where(?![A-Za-z0-9_])", before.split("#", 1)[0]) is not None


def _open_bracket(text: str, line: int, col: int) -> tuple[str, int, int] | None:
    """The innermost bracket still open at (line, col), as (char, line, column), or None."""
    stack: list[tuple[str, int, int]] = []
    for ln, row in enumerate(text.splitlines()[:line], start=1):
        for c, ch in enumerate(row, start=1):
            if ln == line and c >= col:
                break
            if ch == "#":
                break
            if ch in "([":
                stack.append((ch, ln, c))
            elif ch in ")]" and stack:
                stack.pop()
    return stack[-1] if stack else None


_LITERALS = {
    "DOUBLE_QUESTION": "??",
    "DOUBLE_COLON": "::",
    "SLASH": "/",
    "PERCENT": "%",
    "__ANON_0": "//",
}


def _literal(terminal: str) -> str:
    try:
        pattern = _lark().get_terminal(terminal).pattern
        if isinstance(pattern, lark.lexer.PatternStr):
            return pattern.value
    except KeyError:
        pass
    return _LITERALS.get(terminal, terminal.lower())


def _number(tok: Token) -> int | float:
    """An int for an integer literal that fits exactly in a float, else a float (``inf`` when too large)."""
    text = str(tok)
    if "." in text or "e" in text or "E" in text or len(text) > 15:
        return float(text)  # never int(): Python limits int(str) to 4300 digits
    return int(text)


class _ToSyntax(Transformer_NonRecursive):
    """Lark tree -> frozen syntax nodes with spans."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span:
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(
            self.source, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1
        )

    # ---- program -------------------------------------------------------------------------------
    def start(self, items):
        return S.Module(tuple(i for i in items if i is not None), self.source)

    @v_args(meta=True)
    def input_decl(self, meta, decls):
        return S.InputDecl(tuple(decls), span=self._span(meta))

    @v_args(meta=True)
    def tensor_decl(self, meta, children):
        name, shape, dtype = children
        ranks = tuple(str(t) for t in shape) if shape is not None else None
        spans = tuple(self._tspan(t) for t in shape) if shape is not None else ()
        dtype_name = str(dtype) if dtype is not None else "float"
        if dtype is not None and dtype_name not in ("int", "float"):
            raise EinError(
                f"unknown element type `{dtype_name}`", self._tspan(dtype), hint="use `: int` or `: float`"
            )
        return S.TensorDecl(str(name), ranks, dtype_name, span=self._tspan(name), name_spans=spans)

    def shape(self, children):
        return [c for c in children if c is not None]

    def dtype(self, children):
        return children[0]

    @v_args(meta=True)
    def output_decl(self, meta, names):
        return S.OutputDecl(
            tuple(str(n) for n in names),
            span=self._span(meta),
            name_spans=tuple(self._tspan(n) for n in names),
        )

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, (value, literal) = children
        return S.ParamDecl(str(name), value, span=self._tspan(name), literal=literal)

    def signed_number(self, children):
        """``(value, literal)``: the number and its source text (``-12``, ``inf``)."""
        sign, tok = children
        value = math.inf if tok.type == "INF" else _number(tok)
        negative = sign is not None and str(sign) == "-"
        return (-value if negative else value), ("-" if negative else "") + str(tok)

    @v_args(meta=True)
    def rank_decl(self, meta, names):
        return S.RankDecl(
            *(str(n) for n in names), span=self._span(meta), name_spans=tuple(self._tspan(n) for n in names)
        )

    @v_args(meta=True)
    def alias_decl(self, meta, names):
        return S.RankAlias(
            *(str(n) for n in names), span=self._span(meta), name_spans=tuple(self._tspan(n) for n in names)
        )

    @v_args(meta=True)
    def einsum(self, meta, children):
        (name, indices, lhs_span), expr, reduction, filt = children
        op, ranks, rspans = reduction if reduction is not None else (None, (), ())
        return S.Statement(
            str(name),
            indices,
            expr,
            op,
            ranks,
            filt,
            span=self._span(meta),
            lhs_span=lhs_span,
            reduce_spans=rspans,
        )

    @v_args(meta=True)
    def lhs(self, meta, children):
        name, *indices = children
        return name, (tuple(indices) if indices else None), self._span(meta)

    def reduction(self, children):
        op, *ranks = children
        return str(op), tuple(str(r) for r in ranks), tuple(self._tspan(r) for r in ranks)

    def filter(self, children):
        return children[0]

    # ---- expressions ---------------------------------------------------------------------------
    def number(self, children):
        (tok,) = children
        return S.Const(_number(tok), span=self._tspan(tok))

    def inf(self, children):
        return S.Const(math.inf, span=self._tspan(children[0]))

    def name(self, children):
        (tok,) = children
        return S.Name(str(tok), span=self._tspan(tok))

    @v_args(meta=True)
    def read(self, meta, children):
        name, *indices = children
        return S.Read(str(name), tuple(indices), span=self._span(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        return S.Call(str(name), tuple(a for a in args if a is not None), span=self._span(meta))

    @v_args(meta=True)
    def neg(self, meta, children):
        (x,) = children
        if isinstance(x, S.Const):  # fold literal negation so `-inf` and `-1` are constants
            return S.Const(-x.value, span=self._span(meta))
        return S.Unary("-", x, span=self._span(meta))

    def _binary(op):
        @v_args(meta=True)
        def build(self, meta, children):
            a, b = children
            return S.Binary(op, a, b, span=self._span(meta))

        return build

    add, sub, mul, div, floordiv, mod = (
        _binary("+"),
        _binary("-"),
        _binary("*"),
        _binary("/"),
        _binary("//"),
        _binary("%"),
    )

    @v_args(meta=True)
    def compare(self, meta, children):
        operands, ops = children[0::2], [str(t) for t in children[1::2]]
        span = self._span(meta)
        result = None
        for op, a, b in zip(ops, operands, operands[1:]):
            cmp = S.Compare(op, a, b, span=span)
            result = cmp if result is None else S.Logic("and", result, cmp, span=span)
        return result

    @v_args(meta=True)
    def and_(self, meta, children):
        return S.Logic("and", *children, span=self._span(meta))

    @v_args(meta=True)
    def or_(self, meta, children):
        return S.Logic("or", *children, span=self._span(meta))

    @v_args(meta=True)
    def not_(self, meta, children):
        return S.Not(children[0], span=self._span(meta))

    @v_args(meta=True)
    def default(self, meta, children):
        return S.Default(*children, span=self._span(meta))
