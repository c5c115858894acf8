"""Database URLs for the sidecar's connections: parsed into psycopg arguments, shown and
reported without their password (pool_exporter.redact is the one way a URL is printed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL, make_url

from pool_exporter import redact


class DatabaseUrlError(ValueError):
    """The URL cannot be used; the message never repeats the URL (it may hold a password)."""


@dataclass(frozen=True)
class Target:
    """Where to connect: psycopg keyword arguments, and a name that is safe to log."""

    kwargs: dict[str, Any]
    display: str
    password: str | None


def parse_url(url: str) -> Target:
    """A `postgresql://` URL (SQLAlchemy's `postgresql+driver://` too) as psycopg arguments."""
    try:
        redact.split(url)
    except redact.MalformedUrl as exc:
        raise DatabaseUrlError(f"the database URL: {exc}") from None
    try:
        parsed: URL = make_url(url.strip())
    except Exception:
        raise DatabaseUrlError(
            "the database URL is not a URL (expected postgresql://user:password@host:port/db)"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseUrlError(
            f"the database URL must be a PostgreSQL one (postgresql://...), "
            f"not {parsed.get_backend_name()!r}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in parsed.query.items():
        kwargs[key] = value[-1] if isinstance(value, tuple) else value
    fields: tuple[tuple[str, str | int | None], ...] = (
        ("host", parsed.host),
        ("port", parsed.port),
        ("user", parsed.username),
        ("password", parsed.password),
        ("dbname", parsed.database),
    )
    for key, field_value in fields:
        if field_value is not None:
            kwargs[key] = field_value
    host = kwargs.get("host") or "localhost"
    display = f"{host}:{kwargs.get('port', 5432)}/{kwargs.get('dbname', '')}"
    password = parsed.password
    return Target(kwargs, display, str(password) if password else None)


def safe_error(target: Target, exc: Exception | None) -> str:
    """The first line of a connection error, fit for a log line: withheld whole (never masked
    inside other text, see pool_exporter.redact) when it holds the target's password."""
    if exc is None:
        return ""
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else ""
    if target.password and target.password in detail:
        detail = "(details withheld: they contain the password)"
    return redact.text(f"{type(exc).__name__}: {detail}")
