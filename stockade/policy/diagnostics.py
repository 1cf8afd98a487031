"""Load-time findings about a policy: errors (the policy is refused) and warnings (it loads).

Every finding points at a place in the YAML (file, line, column, and the dotted key path), so
`stockade policy check` can print them in the `file:line:col: error: ...` form editors jump to.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from ..errors import StockadeError
from ..records import Struct

ERROR = "error"
WARNING = "warning"


class Diagnostic(Struct, frozen=True):
    severity: str  # ERROR or WARNING
    message: str  # what is wrong, naming the offending value and what is accepted
    source: str  # the file name, or "<string>"
    line: int  # 1-based; 0 when the finding has no place (e.g. an unreadable file)
    column: int  # 1-based
    path: str = ""  # dotted location, e.g. "network_policies.gh.endpoints[0].port"
    hint: str | None = None  # how to fix it, when there is something more to say

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def format(self) -> str:
        """`file:line:col: severity: path: message` plus an indented hint line."""
        where = f"{self.source}:{self.line}:{self.column}" if self.line else self.source
        what = f"{self.path}: {self.message}" if self.path else self.message
        text = f"{where}: {self.severity}: {what}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity, "message": self.message, "file": self.source,
            "line": self.line, "column": self.column, "path": self.path, "hint": self.hint,
        }


class PolicyError(StockadeError):
    """A policy that cannot be used; carries every error found, not just the first."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(d for d in diagnostics if d.is_error)
        first = self.diagnostics[0].format() if self.diagnostics else "invalid policy"
        more = len(self.diagnostics) - 1
        message = first if more <= 0 else f"{first}\n(and {more} more error{'s' * (more > 1)})"
        super().__init__(message, hint="run `stockade policy check FILE` to list every problem")

    def format_all(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or "" when nothing is close."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if value.lower() in lowered and value not in options:  # a case slip: `REST`, `Enforce`
        return f" (did you mean '{lowered[value.lower()]}'?)"
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(f"'{c}'" for c in choices)
