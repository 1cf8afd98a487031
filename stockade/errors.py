"""Errors that cross module boundaries, and the exit codes of the CLI contract (DESIGN.md §5)."""

from __future__ import annotations

# Exit codes of `stockade run` (the command's own code otherwise; 128+N when killed by signal N).
EXIT_TIMEOUT = 124
EXIT_STOCKADE_FAILURE = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
# Exit code of the other commands when their input is invalid (a bad policy, an unknown sandbox).
EXIT_INVALID = 1


class StockadeError(Exception):
    """A failure stockade reports to the user as one clear message (never a traceback)."""

    exit_code: int = EXIT_STOCKADE_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
