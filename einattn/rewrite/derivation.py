"""A record of a rewrite: each rule application, where it applied, what it produced and why it is allowed."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from ..ir import Einsum


@dataclass(frozen=True)
class Step:
    """One rule application.

    ``rule`` names the rule; ``at`` is the Einsum label in the program the rule read (``line`` its source
    line, or None for a statement that an earlier step created); ``summary`` says what happened in one
    sentence; ``produced`` holds the new statements as .ein text; ``conditions`` the side conditions that were
    checked.
    """

    rule: str
    at: str
    line: int | None
    summary: str
    produced: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()

    def lines(self, number: int, width: int = 106) -> list[str]:
        where = f" (line {self.line})" if self.line else ""
        out = textwrap.wrap(
            f"{number}. {self.rule} at `{self.at}`{where}: {self.summary}", width, subsequent_indent="   "
        )
        out += [f"     {p}" for p in self.produced]
        if self.conditions:
            out += textwrap.wrap(
                "checked: " + "; ".join(self.conditions),
                width,
                initial_indent="   ",
                subsequent_indent="     ",
            )
        return out


@dataclass
class Derivation:
    """The steps that turned ``source`` (a spec's name) into the rewritten program, in order."""

    source: str
    options: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def step(
        self, rule: str, at: Einsum | str, summary: str, produced=(), conditions=(), line: int | None = None
    ) -> None:
        if isinstance(at, Einsum):
            if line is None and at.span is not None:
                line = at.span.line
            at = at.label
        self.steps.append(Step(rule, at, line, summary, tuple(produced), tuple(conditions)))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def lines(self) -> list[str]:
        """The derivation as comment lines (without ``#``), as `einattn rewrite` prints it."""
        out = [f"derived by einattn rewrite {self.options} from {self.source}"]
        for k, s in enumerate(self.steps, 1):
            out += s.lines(k)
        for n in self.notes:
            out += textwrap.wrap(n, 106)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __len__(self) -> int:
        return len(self.steps)
