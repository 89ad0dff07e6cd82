"""The loop the deposit watcher and the submitter share: step, retry, reconnect, pause.

`run()` calls the service's `_step()` until `stop`. A retriable `SettlementError` (a chain
node that does not answer, say) is counted and the next step tries again. A lost database
connection is replaced through `reopen`, retrying per `reconnect_policy`, and the next step
starts from what the database holds, as after a restart; without `reopen` it is raised.
When a step found nothing to do, the loop pauses one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import asyncpg  # type: ignore[import-untyped]

from runtime.postgres import ConnectionOpener, is_connection_failure, reconnect
from runtime.retry import RetryPolicy
from settlement.errors import SettlementError
from settlement.metrics import SettlementMetrics

__all__ = ["SteppingService"]


class SteppingService:
    """Base of a settlement service that works in steps on one database connection."""

    def __init__(self, conn: asyncpg.Connection, *, name: str, label: str,
                 poll_interval_ms: int, reopen: ConnectionOpener | None,
                 reconnect_policy: RetryPolicy | None,
                 metrics: SettlementMetrics | None) -> None:
        self.conn = conn
        self.reopen = reopen
        self.reconnect_policy = reconnect_policy
        self.metrics = metrics if metrics is not None else SettlementMetrics()
        self._name = name  # in log lines
        self._label = label  # of the retry and reconnect counters
        self._poll_interval_s = poll_interval_ms / 1000
        self._log = logging.getLogger(f"gpux.settlement.{label}")
        self._running = False

    def healthy(self) -> bool:
        """Tell whether `run()` is looping on an open database connection."""
        return self._running and not self.conn.is_closed()

    async def run(self, stop: asyncio.Event) -> None:
        """Step until `stop`; pause a poll interval whenever there is nothing to do now."""
        self._running = True
        try:
            await self._loop(stop)
        finally:
            self._running = False

    async def _step(self) -> bool:
        """Do one round of work; return whether more is waiting now (no pause)."""
        raise NotImplementedError

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await self._step()
            except SettlementError as error:
                if not error.retriable:
                    raise
                self.metrics.retries.labels(self._label).inc()
                self._log.warning("%s: %s; retrying", self._name, error)
            except Exception as error:
                if self.reopen is None or not is_connection_failure(error):
                    raise
                conn = await reconnect(self.conn, error, self.reopen, stop, what=self._name,
                                       policy=self.reconnect_policy, logger=self._log)
                if conn is None:
                    return
                self.conn = conn
                self.metrics.reconnects.labels(self._label).inc()
                continue
            if not busy:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_interval_s)
