"""Connect to the ledger's PostgreSQL database: the one place that opens connections.

Every connection is bounded (`connect_timeout_s`, `command_timeout_s`). A connection made
with `role=` runs `SET ROLE` first, so a process that logs in as an administrator still
writes with the service role's privileges only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

__all__ = [
    "SERVICE_ROLE",
    "ConnectionConfig",
    "connect",
    "create_database",
    "drop_database",
    "is_connection_failure",
    "url_with_credentials",
    "url_with_database",
]

SERVICE_ROLE = "gpux_ledger"


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Bound how long connecting and each statement may take."""

    connect_timeout_s: float = 10.0
    command_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise ValueError("connect_timeout_s and command_timeout_s must be > 0")


async def connect(
    database_url: str, *, role: str | None = None, config: ConnectionConfig | None = None
) -> asyncpg.Connection:
    """Open one connection; with `role`, act as that role for the whole session."""
    config = config or ConnectionConfig()
    connection: asyncpg.Connection = await asyncpg.connect(
        database_url,
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
        server_settings={"application_name": "gpux-ledger"},
    )
    if role is not None:
        try:
            await connection.execute(f"SET ROLE {_identifier(role)}")
        except BaseException:
            await connection.close()
            raise
    return connection


def is_connection_failure(error: BaseException) -> bool:
    """Tell whether `error` means the database went away (retriable), not a refusal."""
    return isinstance(
        error,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | TimeoutError,
    )


def _identifier(name: str) -> str:
    """Quote `name` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def url_with_credentials(database_url: str, user: str, password: str) -> str:
    """Return `database_url` with its user and password replaced."""
    parts = urlsplit(database_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_with_database(database_url: str, database: str) -> str:
    """Return `database_url` pointing at another database of the same server."""
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""),
                       parts.query, parts.fragment))


async def create_database(admin_url: str, database: str) -> str:
    """Create an empty database on `admin_url`'s server; return its URL (same credentials)."""
    connection = await connect(admin_url)
    try:
        await connection.execute(f"CREATE DATABASE {_identifier(database)}")
    finally:
        await connection.close()
    return url_with_database(admin_url, database)


async def drop_database(admin_url: str, database: str) -> None:
    """Drop a database, disconnecting whoever is still connected to it."""
    connection = await connect(admin_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_identifier(database)} WITH (FORCE)")
    finally:
        await connection.close()
