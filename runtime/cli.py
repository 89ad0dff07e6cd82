"""What the `run` commands of the services share: a supervised service, run until a signal.

`gpux ledger run` and `gpux index run` each build their supervisor and hand it here; the
command closes what it opened (the event log) once this returns.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from prometheus_client import CollectorRegistry

from runtime.observability import MetricsServer
from runtime.retry import Supervisor

__all__ = ["run_until_signal"]


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
