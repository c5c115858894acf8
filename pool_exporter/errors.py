"""The one exception a subcommand raises for an operational error."""

from __future__ import annotations


class CliError(Exception):
    """An operational error: printed as one `error: ...` line, exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
