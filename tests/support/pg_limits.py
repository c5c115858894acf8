"""A role and a database with a CONNECTION LIMIT on the real PostgreSQL, for the tests of what
the sidecar reports about limits: unique names (the server is shared), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def libpq(pg_url: str) -> str:
    """The URL as libpq reads it (SQLAlchemy's `postgresql+psycopg://` scheme dropped)."""
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


def connect(pg_url: str, **params: str) -> psycopg.Connection:
    """A connection of the test's own, with `params` (user=, dbname=, ...) in place of the
    URL's."""
    return psycopg.connect(make_conninfo(libpq(pg_url), **params), autocommit=True)


def execute(pg_url: str, statement: str, name: str) -> None:
    """A statement about the object `name`, quoted as an identifier where `{}` stands."""
    with connect(pg_url) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


def unique(kind: str) -> str:
    return f"pool_exporter_test_{kind}_{uuid.uuid4().hex[:8]}"


@contextmanager
def limited_role(pg_url: str, limit: int = 5) -> Iterator[str]:
    """A login role with CONNECTION LIMIT `limit`; its sessions ended and the role dropped at
    the end."""
    role = unique("role")
    execute(pg_url, f"CREATE ROLE {{}} LOGIN CONNECTION LIMIT {int(limit)}", role)
    try:
        yield role
    finally:
        with connect(pg_url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        execute(pg_url, "DROP ROLE {}", role)


@contextmanager
def limited_database(pg_url: str, limit: int = 3) -> Iterator[str]:
    """A database with CONNECTION LIMIT `limit`; dropped at the end, its sessions ended."""
    database = unique("db")
    execute(pg_url, f"CREATE DATABASE {{}} CONNECTION LIMIT {int(limit)}", database)
    try:
        yield database
    finally:
        execute(pg_url, "DROP DATABASE {} WITH (FORCE)", database)
