"""The index service (`gpux index run`): the event log in, `index.values` rows out.

At every start it reads the events topic `read_committed` from the earliest offset, feeds
the calculator (`index.calculator`) and upserts the values it releases (`index.store`),
then follows the log. Recomputing is the recovery: the values are a pure function of the
log and rows are upserted by their key, so a service killed at any point, even between two
writes, starts again into the same rows. Each batch of records is one transaction holding
whole groups of values (all those one event released), which is what `store.values_after`
relies on.

`IndexSupervisor` (what `gpux index run` and the venue run) restarts it after a lost
connection and keeps its `IndexMetrics`; its `healthy()` backs `/healthz`. An event the
calculator cannot follow is not retriable: the service stops rather than publish values
computed without it. The calculator is the native one when it is built (`calculator`:
"python" or "native", the same values either way), so a restart recomputes the log faster.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from eventlog.errors import LogError
from eventlog.lag import LagGauge
from eventlog.port import EVENTS_TOPIC, EventLog, TopicSpec
from index import store
from index.calculator import CALCULATORS, default_calculator, new_calculator
from index.errors import ConnectionLostError, PriceIndexError
from index.metrics import IndexMetrics
from index.value import IndexValue
from runtime.config import require_positive
from runtime.postgres import ConnectionConfig, close_quietly, connect, is_connection_failure
from runtime.retry import RetryPolicy, Supervisor

__all__ = ["IndexService", "IndexServiceConfig", "IndexSupervisor", "is_retriable"]

log = logging.getLogger("gpux.index")
APPLICATION_NAME = "gpux-index"  # how pg_stat_activity names the service's connection
LAG_INTERVAL_S = 1.0  # the lag gauge costs a request to the log: at most this often


@dataclass(frozen=True)
class IndexServiceConfig:
    """How the service reads and writes, and where it reads."""

    batch_size_max: int = 10_000
    poll_timeout_ms: int = 200
    # Records fed to the calculator between two yields to the event loop: bounds how long
    # a catch-up keeps the other services of one process (`gpux dev`) waiting.
    feed_slice_records: int = 2_000
    write_rows_max: int = 5_000  # rows per upsert statement
    connection: ConnectionConfig = ConnectionConfig()
    # Bounds the supervisor's restarts after one outage (the database or the log gone).
    retry: RetryPolicy = RetryPolicy()
    # Prefixed to the events topic's name, as the engine's `topic_namespace`.
    topic_namespace: str = ""
    # Which calculator recomputes the index (index.calculator.CALCULATORS).
    calculator: str = field(default_factory=default_calculator)

    @property
    def events_topic(self) -> str:
        return self.topic_namespace + EVENTS_TOPIC

    def __post_init__(self) -> None:
        require_positive(self, "batch_size_max", "poll_timeout_ms", "feed_slice_records",
                         "write_rows_max")
        if self.calculator not in CALCULATORS:
            raise ValueError(f"calculator must be one of {CALCULATORS}, got {self.calculator!r}")


class IndexService:
    """Recompute the index from the start of the log, then follow it, until `stop`."""

    def __init__(self, event_log: EventLog, database_url: str, config: IndexServiceConfig,
                 metrics: IndexMetrics | None = None) -> None:
        self.log = event_log
        self.database_url = database_url
        self.config = config
        self.metrics = metrics if metrics is not None else IndexMetrics()
        self.ready = asyncio.Event()
        self.calculator = new_calculator(config.calculator)
        self.lag = LagGauge(event_log, config.events_topic, self.metrics.lag, LAG_INTERVAL_S)
        self._connection: asyncpg.Connection | None = None
        self._ended = False

    def healthy(self) -> bool:
        """Tell whether the service runs: started, not ended, its connection open."""
        connection = self._connection
        return (self.ready.is_set() and not self._ended and connection is not None
                and not connection.is_closed())

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        try:
            connection = self._connection = await connect(
                self.database_url, config=config.connection, application_name=APPLICATION_NAME)
            await store.migrate(connection)
            # The engine creates the topic too; creating it here lets either start first.
            await self.log.create_topics([TopicSpec(name=config.events_topic)])
            consumer = self.log.consumer(config.events_topic, isolation="read_committed",
                                         start="earliest")
            await consumer.start()
            try:
                log.info("recomputing the index from the start of %s", config.events_topic)
                self.ready.set()
                next_offset = 0
                while not stop.is_set():
                    records = await consumer.getmany(config.batch_size_max,
                                                     config.poll_timeout_ms)
                    if records:
                        next_offset = records[-1].offset + 1
                    await self.lag.refresh(next_offset)
                    if not records:
                        if connection.is_closed():
                            raise ConnectionLostError("the database connection closed while "
                                                      "waiting for events")
                        continue
                    released = await self._feed([record.value for record in records])
                    await self._write(connection, released)
            finally:
                await consumer.stop()
        finally:
            self._ended = True
            if self._connection is not None:
                await close_quietly(self._connection)

    async def _feed(self, values: list[bytes]) -> list[IndexValue]:
        """Feed the calculator in slices, yielding to the event loop between them."""
        released: list[IndexValue] = []
        step = self.config.feed_slice_records
        for start in range(0, len(values), step):
            released += self.calculator.feed(values[start:start + step])
            await asyncio.sleep(0)
        self.metrics.seq.set(self.calculator.seq)
        return released

    async def _write(self, connection: asyncpg.Connection, released: list[IndexValue]) -> None:
        """Upsert one batch's values in one transaction (whole groups of one last_seq)."""
        if not released:
            return
        step = self.config.write_rows_max
        async with connection.transaction():
            for start in range(0, len(released), step):
                await store.write_values(connection, released[start:start + step])
        self.metrics.values.inc(len(released))
        self.metrics.minute.set(released[-1].minute_ns // 10**9)


def is_retriable(error: BaseException) -> bool:
    """Tell whether running the service again may get past `error`."""
    if isinstance(error, LogError | PriceIndexError):
        return error.retriable
    return is_connection_failure(error)


class IndexSupervisor(Supervisor[IndexService]):
    """Run the service; after a retriable failure start a fresh one (bounded, with backoff),
    which recomputes from the start of the log as after a crash. Every attempt reports to
    the same `metrics`."""

    def __init__(self, event_log: EventLog, database_url: str, config: IndexServiceConfig,
                 metrics: IndexMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else IndexMetrics()
        super().__init__(
            lambda: IndexService(event_log, database_url, config, self.metrics),
            what="index", policy=config.retry, is_retriable=is_retriable,
            on_restart=self.metrics.restarts.inc, logger=log,
        )
