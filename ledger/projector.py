"""The projector (`gpux ledger run`): events in, journal rows out, each event exactly once.

It reads the events topic `read_committed` from the log offset stored with the last
applied batch, turns records into journal rows (`ledger.journal`) and appends each batch,
with its checkpoint, in one database transaction (`ledger.store`). Restart is the same
path as start: read the checkpoint (and the delivery state a close needs), seek there,
go on. Nothing is ever skipped: an event whose seq is not the next one stops the projector
with `SeqGapError` after the rows before it are stored.

A bounded pipeline keeps both cores busy: a reader task fetches, decodes and builds the
next batch while the writer's COPYs run on the database server, and the writer keeps up to
`writer_connections` batches in flight on as many connections, committing them strictly in
seq order (`Projector._write`).

`ProjectorSupervisor` (what `gpux ledger run` runs) restarts it after a lost connection and
keeps its `LedgerMetrics` across restarts; its `healthy()` backs `/healthz`: a projector
that has resumed, has not ended and holds open database connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from eventlog.errors import LogError
from eventlog.lag import LagGauge
from eventlog.port import EVENTS_TOPIC, Consumer, EventLog, Record, TopicSpec
from ledger.errors import ConnectionLostError, LedgerError
from ledger.journal import JournalBatch, JournalBuilder
from ledger.metrics import LedgerMetrics
from ledger.migrate import SERVICE_ROLE
from ledger.store import (
    Position,
    acquire_writer_lock,
    append_batch,
    read_delivery_state,
    read_position,
)
from runtime.config import require_positive
from runtime.postgres import ConnectionConfig, close_quietly, connect, is_connection_failure
from runtime.retry import RetryPolicy, Supervisor

__all__ = ["Projector", "ProjectorConfig", "ProjectorStats", "ProjectorSupervisor",
           "run_supervised"]

log = logging.getLogger("gpux.ledger")
APPLICATION_NAME = "gpux-ledger"  # how pg_stat_activity names the projector's connections
LAG_INTERVAL_S = 1.0  # the lag gauge costs a request to the log: at most this often


@dataclass(frozen=True)
class ProjectorConfig:
    """How the projector batches, whom it acts as, and where it reads."""

    batch_size_max: int = 10_000
    batch_interval_ms: int = 50
    poll_timeout_ms: int = 200
    queue_batches_max: int = 2
    # Connections appending batches at once; batches still commit strictly in order.
    writer_connections: int = 2
    # Records built between two yields to the event loop: bounds how long the reader
    # keeps the writer from feeding the database.
    build_slice_records: int = 500
    database_role: str | None = SERVICE_ROLE
    writer_lock_timeout_s: float = 30.0
    connection: ConnectionConfig = ConnectionConfig()
    # Bounds `run_supervised`'s restarts after one outage (the database or the log gone).
    retry: RetryPolicy = RetryPolicy()
    # Prefixed to the events topic's name, as the engine's `topic_namespace`.
    topic_namespace: str = ""

    @property
    def events_topic(self) -> str:
        return self.topic_namespace + EVENTS_TOPIC

    def __post_init__(self) -> None:
        require_positive(
            self, "batch_size_max", "batch_interval_ms", "poll_timeout_ms", "queue_batches_max",
            "build_slice_records", "writer_connections",
        )
        if self.writer_lock_timeout_s <= 0:
            raise ValueError("writer_lock_timeout_s must be > 0")


@dataclass(slots=True)
class ProjectorStats:
    """Count what this projector committed; `append_s` sums the appends' durations, which
    overlap when several writer connections are in use."""

    events: int = 0
    entries: int = 0
    postings: int = 0
    batches: int = 0
    append_s: float = 0.0


_Item = JournalBatch | BaseException | None  # None: the reader stopped cleanly


class Projector:
    """Project the events topic into the journal; `run()` returns when `stop` is set."""

    def __init__(self, event_log: EventLog, database_url: str, config: ProjectorConfig,
                 metrics: LedgerMetrics | None = None) -> None:
        self.log = event_log
        self.database_url = database_url
        self.config = config
        self.metrics = metrics if metrics is not None else LedgerMetrics()
        self.stats = ProjectorStats()
        self.ready = asyncio.Event()
        self.position: Position | None = None  # as stored by the last committed batch
        self._connections: list[asyncpg.Connection] = []
        self._ended = False
        self.lag = LagGauge(event_log, config.events_topic, self.metrics.lag, LAG_INTERVAL_S)

    def healthy(self) -> bool:
        """Tell whether the projector runs: resumed, not ended, its connections all open."""
        connections = self._connections
        return (self.ready.is_set() and not self._ended and bool(connections)
                and not any(connection.is_closed() for connection in connections))

    @property
    def applied_seq(self) -> int:
        """Return the seq of the last event whose batch is committed (0 before any)."""
        return 0 if self.position is None else self.position.last_seq

    async def run(self, stop: asyncio.Event) -> None:
        """Resume from the stored checkpoint and project until `stop` is set."""
        connections: list[asyncpg.Connection] = self._connections
        try:
            for _ in range(self.config.writer_connections):
                connections.append(await connect(
                    self.database_url, role=self.config.database_role,
                    config=self.config.connection, application_name=APPLICATION_NAME,
                ))
            await acquire_writer_lock(connections[0], self.config.writer_lock_timeout_s)
            position = self.position = await read_position(connections[0])
            delivery = await read_delivery_state(connections[0])
            self.metrics.seq.set(position.last_seq)
            # The engine creates the topic too; creating it here lets either start first.
            await self.log.create_topics([TopicSpec(name=self.config.events_topic)])
            consumer = self.log.consumer(self.config.events_topic, isolation="read_committed",
                                         start=position.next_offset)
            await consumer.start()
            try:
                log.info("resuming after seq %d at offset %d", position.last_seq,
                         position.next_offset)
                self.ready.set()
                builder = JournalBuilder(position.last_seq, position.head_hash, delivery)
                await self._pipeline(connections, consumer, builder, stop)
            finally:
                await consumer.stop()
        finally:
            self._ended = True
            for connection in connections:
                await close_quietly(connection)

    async def _pipeline(
        self,
        connections: list[asyncpg.Connection],
        consumer: Consumer,
        builder: JournalBuilder,
        stop: asyncio.Event,
    ) -> None:
        """Run the reader as a task and the writer here, joined by a bounded queue."""
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self.config.queue_batches_max)
        reader = asyncio.create_task(self._read(consumer, builder, queue, stop))
        try:
            await self._write(connections, queue)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(
        self,
        consumer: Consumer,
        builder: JournalBuilder,
        queue: asyncio.Queue[_Item],
        stop: asyncio.Event,
    ) -> None:
        """Build batches until `stop`; hand over any failure after the batches before it."""
        try:
            while not stop.is_set():
                records = await self._next_records(consumer)
                await self._refresh_lag()
                if not records:
                    self._check_connections()
                    continue
                batch = await self._build(builder, records)
                await queue.put(batch)
                if batch.failure is not None:
                    return
        except Exception as error:  # noqa: BLE001 -- handed to the writer, which raises it
            await queue.put(error)
            return
        await queue.put(None)

    def _check_connections(self) -> None:
        """Raise when a connection closed while idle (a restarted or terminated session).

        Without this an idle projector would notice only at its next write, and report
        unhealthy until then.
        """
        closed = sum(connection.is_closed() for connection in self._connections)
        if closed:
            raise ConnectionLostError(f"{closed} of {len(self._connections)} database "
                                      "connections closed while waiting for events")

    async def _refresh_lag(self) -> None:
        """The lag gauge: the log's end minus the offset after the last committed batch."""
        if self.position is not None:
            await self.lag.refresh(self.position.next_offset)

    async def _build(self, builder: JournalBuilder, records: list[Record]) -> JournalBatch:
        """Build one batch in slices, yielding between them so the writer's COPY flows."""
        batch = builder.new_batch()
        step = self.config.build_slice_records
        for start in range(0, len(records), step):
            builder.extend(batch, records[start:start + step])
            if batch.failure is not None:
                break
            await asyncio.sleep(0)
        return batch

    async def _next_records(self, consumer: Consumer) -> list[Record]:
        """Wait up to one poll for records, then take more until the batch or interval ends."""
        size_max = self.config.batch_size_max
        records = await consumer.getmany(size_max, self.config.poll_timeout_ms)
        if not records:
            return records
        deadline_s = time.monotonic() + self.config.batch_interval_ms / 1000
        while len(records) < size_max and time.monotonic() < deadline_s:
            more = await consumer.getmany(size_max - len(records), 0)
            if not more:
                break
            records += more
        return records

    async def _write(
        self, connections: list[asyncpg.Connection], queue: asyncio.Queue[_Item]
    ) -> None:
        """Append batches until the reader stops; raise what it hands over.

        Up to one batch per connection is in flight, each in its own transaction: their
        COPYs overlap on the server, but each inserts its checkpoint, and so commits,
        only after the batch before it committed. The checkpoint trigger refuses any
        other order, so a crash can never leave a later batch without an earlier one.
        A failed append stops the writer at once, even while no new batch arrives.
        """
        in_flight: deque[asyncio.Task[None]] = deque()
        failed = asyncio.Event()
        item: _Item | _Failed = None
        try:
            for launched in itertools.count():
                item = await _next_item(queue, failed)
                if item is None or isinstance(item, BaseException | _Failed):
                    break
                if item.event_count > 0:
                    if len(in_flight) == len(connections):
                        await in_flight.popleft()
                    previous = in_flight[-1] if in_flight else None
                    connection = connections[launched % len(connections)]
                    task = asyncio.create_task(self._append_after(connection, item, previous))
                    task.add_done_callback(lambda done: _note_failure(done, failed))
                    in_flight.append(task)
                if item.failure is not None:
                    break
            while in_flight:
                await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, JournalBatch) and item.failure is not None:
            raise item.failure

    async def _append_after(
        self,
        connection: asyncpg.Connection,
        batch: JournalBatch,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Append a batch, committing only once `previous` (the batch before) committed."""
        started_s = time.perf_counter()

        async def previous_committed() -> None:
            if previous is not None:
                await asyncio.shield(previous)  # shielded: never cancel the batch before

        await append_batch(connection, batch, before_checkpoint=previous_committed)
        self._note_committed(batch, time.perf_counter() - started_s)

    def _note_committed(self, batch: JournalBatch, append_s: float) -> None:
        self.position = Position(batch.last_seq, batch.next_offset, batch.head_hash)
        stats = self.stats
        stats.events += batch.event_count
        stats.entries += len(batch.entries)
        stats.postings += len(batch.postings)
        stats.batches += 1
        stats.append_s += append_s
        metrics = self.metrics
        metrics.events.inc(batch.event_count)
        metrics.entries.inc(len(batch.entries))
        metrics.batch_size.observe(batch.event_count)
        metrics.batch_seconds.observe(append_s)
        metrics.seq.set(batch.last_seq)


class _Failed:
    """Say that an append failed while the writer waited for the next batch."""


async def _next_item(queue: asyncio.Queue[_Item], failed: asyncio.Event) -> _Item | _Failed:
    """Return the next item of the queue, or `_Failed` as soon as `failed` is set."""
    if failed.is_set():
        return _Failed()
    getter = asyncio.ensure_future(queue.get())
    failure = asyncio.ensure_future(failed.wait())
    try:
        await asyncio.wait((getter, failure), return_when=asyncio.FIRST_COMPLETED)
    finally:
        failure.cancel()
        if not getter.done():
            getter.cancel()  # an item it might have taken no longer matters: we stop
    return getter.result() if getter.done() and not getter.cancelled() else _Failed()


def _note_failure(task: asyncio.Task[None], failed: asyncio.Event) -> None:
    if not task.cancelled() and task.exception() is not None:
        failed.set()


def is_retriable(error: BaseException) -> bool:
    """Tell whether running the projector again may get past `error`."""
    if isinstance(error, LogError | LedgerError):
        return error.retriable
    return is_connection_failure(error)


class ProjectorSupervisor(Supervisor[Projector]):
    """Run the projector; after a retriable failure start it again (bounded, with backoff).

    Each attempt is a fresh projector on new connections, resuming from the checkpoint the
    database holds, exactly as after a crash: a batch whose commit was lost with the
    connection is either in the database or read again, never both. A projector that got
    as far as resuming ends the outage, so the next failure starts a new count of attempts
    (`config.retry`). A gap, a bad event or a refused write is not retriable: it is raised.
    Every attempt reports to the same `metrics`.
    """

    def __init__(self, event_log: EventLog, database_url: str, config: ProjectorConfig,
                 metrics: LedgerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else LedgerMetrics()
        super().__init__(
            lambda: Projector(event_log, database_url, config, self.metrics),
            what="projector", policy=config.retry, is_retriable=is_retriable,
            on_restart=self.metrics.restarts.inc, logger=log,
        )


async def run_supervised(
    event_log: EventLog, database_url: str, config: ProjectorConfig, stop: asyncio.Event,
    *, metrics: LedgerMetrics | None = None,
) -> None:
    """Run `ProjectorSupervisor` until `stop` (or a failure that is not retriable)."""
    await ProjectorSupervisor(event_log, database_url, config, metrics).run(stop)
