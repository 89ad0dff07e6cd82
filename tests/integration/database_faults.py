"""Take PostgreSQL away from a running service, as a failover does, and watch it come back.

Two faults, both real connection losses:
- `end_live_sessions`: the server ends the service's sessions (`pg_terminate_backend`), found
  by database and `application_name`; the session's shared PostgreSQL stays up for others;
- `OwnPostgres`: a PostgreSQL cluster of the test's own, to restart (a fast shutdown, or a
  SIGKILL and crash recovery) without disturbing any other test.

The test's own connections are named `OBSERVER_APPLICATION`, so no fault reaches them, and
`query_while_restarting` treats a lost connection as "not yet" rather than as a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from harness.errors import ServiceError
from harness.postgres import PostgresService
from runtime.postgres import connect, is_connection_failure
from tests.helpers import eventually

OBSERVER_APPLICATION = "gpux-test-observer"


def database_of(url: str) -> str:
    """Return the database name of a PostgreSQL URL."""
    return urlsplit(url).path.lstrip("/")


async def observe(url: str) -> asyncpg.Connection:
    """Open a connection for the test itself, named so that no fault targets it."""
    return await connect(url, application_name=OBSERVER_APPLICATION)


async def terminate_backends(admin_url: str, database: str, application_name: str) -> int:
    """End every session of `application_name` on `database`; return how many were ended."""
    connection = await observe(admin_url)
    try:
        ended: int = await connection.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()",
            database, application_name,
        )  # fmt: skip
    finally:
        await connection.close()
    return ended


async def end_live_sessions(admin_url: str, database: str, application_name: str) -> int:
    """End the service's sessions once it has some: a fault that lands while the service is
    between connections (still backing off from the previous fault) would end nothing."""
    ended = 0

    async def ended_some() -> bool:
        nonlocal ended
        ended = await terminate_backends(admin_url, database, application_name)
        return ended > 0

    await eventually(ended_some, timeout_s=60, interval_s=0.05,
                     message=f"{application_name} has sessions to end")
    return ended


async def query_while_restarting(url: str, query: str, *args: Any) -> Any:
    """Return the value of `query`, or None while the server cannot be reached."""
    try:
        connection = await observe(url)
    except Exception as error:
        if is_connection_failure(error):
            return None
        raise
    try:
        return await connection.fetchval(query, *args)
    except Exception as error:
        if is_connection_failure(error):
            return None
        raise
    finally:
        connection.terminate()


@contextmanager
def own_postgres(run_dir: Path) -> Iterator[PostgresService]:
    """Run a PostgreSQL cluster for one test; like the session's, a cluster that cannot be
    had fails the test under CI=true and skips it elsewhere."""
    service = PostgresService(run_dir)
    try:
        service.start()
    except ServiceError as error:
        service.stop()
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"a PostgreSQL of the test's own is unavailable: {error}", pytrace=False)
        pytest.skip(f"a PostgreSQL of the test's own is unavailable: {error}")
    try:
        yield service
    finally:
        service.stop()
