"""What the services' commands share: a supervised service run until a signal, the
`migrate` command, and one subcommand run with its errors turned into an exit code.

`gpux ledger run`, `gpux index run` and `gpux delivery run` each build their supervisor
and hand it here; the command closes what it opened (the event log) once this returns.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from prometheus_client import CollectorRegistry

from runtime.observability import MetricsServer
from runtime.postgres import connect
from runtime.retry import Supervisor

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "migrate_schema", "run_command",
           "run_until_signal"]

EXIT_OK = 0
EXIT_FAILED = 1  # a problem found, or a failure
EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

ErrorTypes = tuple[type[BaseException], ...]


def run_command(program: str, command: Coroutine[Any, Any, int], *,
                usage_errors: ErrorTypes, failure_errors: ErrorTypes) -> int:
    """Run one subcommand's coroutine with logging to stderr; return its exit code, or print
    `program: error` and return EXIT_USAGE for an error of `usage_errors`, EXIT_FAILED for
    one of `failure_errors` (any other error is a bug and propagates)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        return asyncio.run(command)
    except usage_errors as error:
        print(f"{program}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except failure_errors as error:
        print(f"{program}: {error}", file=sys.stderr)
        return EXIT_FAILED


async def migrate_schema(database_url: str, schema: str,
                         migrate: Callable[[asyncpg.Connection], Awaitable[None]],
                         out: TextIO) -> int:
    """`gpux SERVICE migrate`: apply the schema's migrations over one connection."""
    connection = await connect(database_url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    print(f"schema {schema} is up to date", file=out)
    return EXIT_OK


async def run_until_signal(supervisor: Supervisor[Any], registry: CollectorRegistry,
                           metrics_port: int, logger: logging.Logger) -> None:
    """Run `supervisor` until SIGINT or SIGTERM (or a failure it does not retry).

    With `metrics_port` >= 0 (0: any free port, logged to `logger`) serve `registry` on
    /metrics and the supervisor's health on /healthz while it runs; -1 serves nothing.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    metrics_server = None
    try:
        if metrics_port >= 0:
            metrics_server = MetricsServer(registry, supervisor.healthy, port=metrics_port)
            await metrics_server.start()
            logger.info("metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
        await supervisor.run(stop)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
