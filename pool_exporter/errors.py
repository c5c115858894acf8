"""The exceptions a subcommand raises for an operational error."""

from __future__ import annotations


class CliError(Exception):
    """An operational error: printed as one `error: ...` line, exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class MissingExtra(CliError):
    """An optional dependency that is not installed, and the extra that brings it."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        super().__init__(
            f"{what} needs {module}, which is not installed: pip install 'pool-exporter[{extra}]'"
        )
        self.extra = extra
