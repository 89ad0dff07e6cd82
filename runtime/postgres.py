"""Connect to PostgreSQL: the one place every service opens its database connections.

Every connection is bounded (`connect_timeout_s`, `command_timeout_s`). A connection made
with `role=` runs `SET ROLE` first, so a process that logs in as an administrator still
writes with the service role's privileges only.

Services that outlive the database's restarts (the projector, settlement) recognise a lost
connection with `is_connection_failure` and get a new one with `reconnect`: the broken
connection is closed, then connecting is retried with bounded exponential backoff
(`runtime.retry`), each failed attempt logged. A new connection carries no state
of the old one: the caller resumes from what the database holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from runtime.retry import Backoff, RetryPolicy, describe_error

__all__ = [
    "ConnectionConfig",
    "ConnectionOpener",
    "MigratedPool",
    "close_quietly",
    "connect",
    "create_database",
    "drop_database",
    "is_connection_failure",
    "reconnect",
    "url_with_credentials",
    "url_with_database",
]

CLOSE_TIMEOUT_S = 5.0

log = logging.getLogger("gpux.postgres")

ConnectionOpener = Callable[[], Awaitable[asyncpg.Connection]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Bound how long connecting and each statement may take."""

    connect_timeout_s: float = 10.0
    command_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise ValueError("connect_timeout_s and command_timeout_s must be > 0")


async def connect(
    database_url: str,
    *,
    role: str | None = None,
    config: ConnectionConfig | None = None,
    application_name: str = "gpux",
) -> asyncpg.Connection:
    """Open one connection; with `role`, act as that role for the whole session.

    `application_name` names the connection in `pg_stat_activity`.
    """
    config = config or ConnectionConfig()
    connection: asyncpg.Connection = await asyncpg.connect(
        database_url,
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
        server_settings={"application_name": application_name},
    )
    if role is not None:
        try:
            await connection.execute(f"SET ROLE {_identifier(role)}")
        except BaseException:
            await connection.close()
            raise
    return connection


class MigratedPool:
    """A small pool opened on first use, the schema's migrations applied before it is used.

    For a reader of another service's schema (the gateway's index and delivery sources): it
    may start before that service, since the migrations are idempotent and each schema's
    take turns under an advisory lock. A pool that fails to open or migrate is closed, and
    the next use tries again. Every wait is bounded by `timeout_s` (connecting, each
    statement). Cancellation: `run` may be cancelled with its caller (asyncpg gives the
    connection back to the pool).
    """

    def __init__(self, database_url: str, migrate: Callable[[asyncpg.Connection], Awaitable[None]],
                 *, size_max: int, timeout_s: float) -> None:
        if size_max < 1 or timeout_s <= 0:
            raise ValueError(f"size_max {size_max} must be >= 1 and timeout_s {timeout_s} > 0")
        self.database_url = database_url
        self.migrate = migrate
        self.size_max = size_max
        self.timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _opened(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.database_url, min_size=1, max_size=self.size_max,
                    timeout=self.timeout_s, command_timeout=self.timeout_s)
                try:
                    async with pool.acquire() as connection:
                        await self.migrate(connection)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection, opening the pool first if need be."""
        async with (await self._opened()).acquire() as connection:
            return await work(connection)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def is_connection_failure(error: BaseException) -> bool:
    """Tell whether `error` means the database went away (retriable), not a refusal.

    A server restart shows up as any of these, depending on what the connection was doing:
    the socket closing or refusing (OSError, ConnectionResetError), the server saying it
    shuts down, crashed or is starting (AdminShutdownError, CrashShutdownError,
    CannotConnectNowError), asyncpg finding the connection gone or closed
    (ConnectionDoesNotExistError and the other PostgresConnectionErrors, InterfaceError),
    or its protocol left mid-operation by the loss (InternalClientError, "cannot switch to
    state ..."). A connection that raised any of them must be closed, not used again.
    """
    return isinstance(error, _CONNECTION_FAILURES)


_CONNECTION_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def close_quietly(connection: asyncpg.Connection) -> None:
    """Close `connection` within CLOSE_TIMEOUT_S, or drop it: never raise, never hang."""
    try:
        await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 -- a connection that cannot close cleanly is dropped
        connection.terminate()


async def reconnect(
    broken: asyncpg.Connection,
    failure: BaseException,
    open_connection: ConnectionOpener,
    stop: asyncio.Event,
    *,
    what: str,
    policy: RetryPolicy | None = None,
    logger: logging.Logger = log,
) -> asyncpg.Connection | None:
    """Replace a connection the database dropped with `failure`; None if `stop` comes first.

    Close `broken`, then open a connection with `open_connection`, retrying connection
    failures (the server still down or starting up) with bounded exponential backoff. Any
    other failure (a refused password, a missing database) is raised at once, and the
    last connection failure once `policy.attempts_max` attempts have failed. Progress is
    logged to `logger` (the caller's), each message starting with `what`.
    """
    logger.warning("%s: lost the database connection (%s); reconnecting", what,
                   describe_error(failure))
    await close_quietly(broken)
    backoff = Backoff(policy or RetryPolicy(), what, logger)
    while not stop.is_set():
        try:
            connection = await open_connection()
        except Exception as error:
            if not is_connection_failure(error):
                raise
            if not await backoff.wait_after(error, stop):
                return None
            continue
        logger.info("%s: connected to the database again after %d failed attempt(s)", what,
                    backoff.failures)
        return connection
    return None


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
    await _run_once(admin_url, f"CREATE DATABASE {_identifier(database)}")
    return url_with_database(admin_url, database)


async def drop_database(admin_url: str, database: str) -> None:
    """Drop a database, disconnecting whoever is still connected to it."""
    await _run_once(admin_url, f"DROP DATABASE IF EXISTS {_identifier(database)} WITH (FORCE)")


async def _run_once(database_url: str, statement: str) -> None:
    """Run one statement on a connection of its own (CREATE/DROP DATABASE need one)."""
    connection = await connect(database_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
