"""One error root for everything a user can get wrong, and a separate class for einattn's own bugs.

Every error about a spec carries a :class:`Span` and renders as ``file:line:col: error: message`` followed by
the source line, a caret under the offending text, and a hint when there is one. Errors about call-time
arguments (shapes, dtypes) have no span and render as ``error: message``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """The text of one spec and the name it is reported under (a path, or ``<string>``)."""

    name: str
    text: str = field(repr=False)

    @functools.cached_property
    def _lines(self) -> list[str]:
        # split once: the checker reads a line per literal, and a split per call made a long spec quadratic
        return self.text.split("\n")

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) as the parser counts lines: at ``\n`` only (``str.splitlines`` also
        breaks at form feeds and Unicode line separators, which a comment may hold)."""
        lines = self._lines
        return lines[number - 1].rstrip("\r") if 1 <= number <= len(lines) else ""

    def text_of(self, span: Span) -> str:
        """The source text a single-line span covers."""
        if span.line != span.end_line:
            return ""
        return self.line(span.line)[span.column - 1 : span.end_column - 1]


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range in a :class:`Source`. Spans never take part in IR equality."""

    source: Source = field(repr=False)
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.column}"


class EinError(Exception):
    """Root of every user-facing einattn error (bad spec, bad arguments, bad options).

    ``line`` and ``column`` are 1-based and None for errors that have no place in a spec.
    """

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        self.message = message
        self.span = span
        self.hint = hint
        super().__init__(self.render())

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    @property
    def filename(self) -> str | None:
        return self.span.source.name if self.span else None

    def render(self) -> str:
        return render(self.kind, self.message, self.span, self.hint)


class EinWarning(UserWarning):
    """A warning about a spec (an unused input, a refused rewrite); rendered like an error."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        self.message, self.span, self.hint = message, span, hint
        super().__init__(render("warning", message, span, hint))


class InternalError(Exception):
    """An invariant of einattn itself failed: a bug, never the user's fault (CLI exit code 2)."""


def render(kind: str, message: str, span: Span | None, hint: str | None) -> str:
    if span is None:
        out = f"{kind}: {message}"
    else:
        out = f"{span}: {kind}: {message}"
        text = span.source.line(span.line).expandtabs(1)
        if text.strip():
            width = (
                span.end_column - span.column if span.end_line == span.line else len(text) - span.column + 1
            )
            gutter = f"{span.line:>4} | "
            out += f"\n{gutter}{text}\n{' ' * (len(gutter) + span.column - 1)}{'^' * max(1, width)}"
    if hint:
        out += f"\nhint: {hint}"
    return out
