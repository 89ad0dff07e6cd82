"""The engine service (`gpux engine`): commands in, events out, exactly once.

The service runs the core inside the event log's consume-transform-produce loop
(`eventlog.processor.TransactionalProcessor`): each batch of commands (bounded by
`batch_size_max` and `batch_interval_ms`) is applied to the core, and the batch's events
are written together with the consumer's next command offset in one transaction. On start
it takes over the transactional id (fencing any older instance and completing what it left
open), loads the newest snapshot at or below the committed command offset, and re-applies
the commands between the two without publishing their events again. It then checks that
its event seq equals the last committed event's seq before it publishes anything: a
mismatch means the logs and the engine disagree, and the service refuses to run rather
than write a second truth.

Two cores can run it (`--core`, matching_engine.cores): the Python core (the default) and
the native Rust core (byte-identical events, about ten times the commands a second, built
by `make native`). Both write and read the same snapshots, so either restores the other's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from eventlog.errors import FencedError, LogError
from eventlog.lag import LagGauge
from eventlog.port import Consumer, EventLog, Record, TopicSpec
from eventlog.processor import BatchResult, ProcessorConfig, TransactionalProcessor
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.cores import Core, PythonCore, new_core
from matching_engine.errors import EngineStateError
from matching_engine.metrics import EngineMetrics, EngineStats, stamp_ns
from matching_engine.snapshots import ForkedSnapshots, SnapshotStore
from protocol import decode_event
from runtime.retry import RetryPolicy, Supervisor

__all__ = ["EngineService", "EngineSupervisor"]

log = logging.getLogger("gpux.engine")

TAIL_SCAN_OFFSETS = 256
# A poll over a run of aborted records returns nothing but moves the position: wait little.
TAIL_SCAN_POLL_MS = 50
SNAPSHOT_WAIT_S = 60.0
LAG_INTERVAL_S = 1.0


class EngineService:
    """Run the core over a log; `run()` returns when `stop` is set."""

    def __init__(
        self, event_log: EventLog, config: EngineConfig, metrics: EngineMetrics | None = None
    ) -> None:
        self.log = event_log
        self.config = config
        self.metrics = metrics or EngineMetrics()
        self.lag = LagGauge(event_log, config.commands_topic, self.metrics.lag, LAG_INTERVAL_S)
        self.snapshots = (
            SnapshotStore(config.snapshot_dir, config.snapshots_kept_max)
            if config.snapshot_dir is not None else None
        )
        self.snapshot_writer = (
            ForkedSnapshots(self.snapshots, on_done=self.metrics.snapshot_done)
            if self.snapshots is not None else None)
        self.core: Core = new_core(config.core)
        self.stats = EngineStats()
        self.ready = asyncio.Event()
        self._since_snapshot = 0
        self.processor = TransactionalProcessor(
            event_log,
            ProcessorConfig(
                input_topic=config.commands_topic, output_topic=config.events_topic,
                group_id=config.group_id, transactional_id=config.transactional_id,
                batch_size_max=config.batch_size_max, batch_interval_ms=config.batch_interval_ms,
                replay_batch_size_max=config.catch_up_batch_max,
                commit_interval_ms=config.commit_interval_ms,
                commit_records_max=config.commit_records_max,
                commit_outputs_max=config.commit_events_max,
            ),
            self._apply, after_commit=self._after_commit, on_idle=self._update_lag,
        )

    @property
    def engine(self) -> Engine:
        """The Python core's engine, whose state the dev status line and tests read; the
        native core keeps its state in Rust (use `core.final_state()` for either)."""
        if not isinstance(self.core, PythonCore):
            raise TypeError(f"the {self.core.name} core has no Python Engine to read")
        return self.core.engine

    @property
    def next_offset(self) -> int:
        """The offset of the next command to apply: everything before it is committed."""
        return self.processor.committed_offset or 0

    def healthy(self) -> bool:
        """Tell whether the service has recovered and serves."""
        return self.ready.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        await self.log.create_topics(
            [TopicSpec(name=self.config.commands_topic), TopicSpec(name=self.config.events_topic)]
        )
        try:
            await self._recover()
            self.ready.set()
            await self.processor.run(stop)
        finally:
            await self.processor.stop()
            if self.snapshot_writer is not None:
                await asyncio.to_thread(self.snapshot_writer.wait, SNAPSHOT_WAIT_S)

    async def _recover(self) -> None:
        """Rebuild the state the committed events reflect, up to the committed offset."""
        started = time.perf_counter()
        committed = await self.processor.start()
        snapshot = self.snapshots.latest(committed) if self.snapshots is not None else None
        offset = 0
        if snapshot is not None:
            self.core = type(self.core).restore(snapshot.engine)
            offset = snapshot.command_offset
            if self.core.seq != snapshot.event_seq:
                raise EngineStateError(f"snapshot at {offset} has seq {self.core.seq}, "
                                       f"recorded {snapshot.event_seq}")
        loaded = time.perf_counter()
        replayed = await self.processor.replay(
            offset, lambda records: self.core.replay([record.value for record in records]))
        caught_up = time.perf_counter()
        last_seq = await self._last_committed_seq()
        if self.core.seq != last_seq:
            raise EngineStateError(
                f"after replaying commands up to offset {committed} the engine is at event seq "
                f"{self.core.seq}, but the event log ends at seq {last_seq}"
            )
        self.stats.recovered_commands = replayed
        self.metrics.recovery_seconds.set(time.perf_counter() - started)
        self.metrics.seq.set(self.core.seq)
        self.stats.recovery_s = time.perf_counter() - started
        log.info("recovered: snapshot at %s, replayed %d commands to offset %d, seq %d, "
                 "%.3f s (%s core; snapshot %.3f s, replay %.3f s, seq check %.3f s)",
                 offset if snapshot else "none", replayed, committed, last_seq,
                 self.stats.recovery_s, self.core.name, loaded - started, caught_up - loaded,
                 time.perf_counter() - caught_up)

    async def _last_committed_seq(self) -> int:
        """Return the seq of the last committed event (0 for an empty event log).

        Reads back from the end in windows that double (256 offsets, then 512 before those,
        ...) on one consumer: the tail can be a long run of a killed engine's aborted
        records, which a read_committed reader skips.
        """
        end = await self.log.end_offset(self.config.events_topic)
        if end == 0:
            return 0
        consumer = self.log.consumer(self.config.events_topic, start=end)
        async with consumer:
            window, stop = TAIL_SCAN_OFFSETS, end
            while stop > 0:
                start = max(0, stop - window)
                last = await _last_record_before(consumer, start, stop)
                if last is not None:
                    return decode_event(last.value).seq
                window, stop = window * 2, start
        return 0

    def _apply(self, records: Sequence[Record]) -> list[bytes]:
        """The processor's transform: apply a batch of commands, return its events."""
        started = time.perf_counter()
        stamp = stamp_ns(records[0].value)
        if stamp is not None:
            self.metrics.command_wait.observe(max(0, time.time_ns() - stamp) / 1e9)
        events = self.core.apply_records([record.value for record in records])
        metrics = self.metrics
        metrics.batch_size.observe(len(records))
        metrics.batch_seconds.observe(time.perf_counter() - started)
        self.stats.batches += 1
        return events

    async def _after_commit(self, committed: BatchResult) -> None:
        """The committed offset has moved: count, refresh the gauges, snapshot when due."""
        self.stats.commands += committed.record_count
        self.stats.events += committed.output_count
        metrics = self.metrics
        metrics.commands.inc(committed.record_count)
        metrics.events.inc(committed.output_count)
        metrics.seq.set(self.core.seq)
        await self._update_lag()
        self._since_snapshot += committed.record_count
        if self._since_snapshot >= self.config.snapshot_every_commands:
            self.save_snapshot(committed.next_offset)

    async def _update_lag(self) -> None:
        await self.lag.refresh(self.next_offset)

    def save_snapshot(self, command_offset: int) -> None:
        """Start writing the state as of `command_offset` (all commands before it applied)
        in a forked child; while the previous one is still being written, do nothing."""
        if self.snapshot_writer is None:
            return
        started = time.perf_counter()
        if self.snapshot_writer.start(command_offset, self.core.seq, self.core.snapshot):
            self._since_snapshot = 0
            log.info("snapshot at command offset %d (seq %d) forked in %.3f s", command_offset,
                     self.core.seq, time.perf_counter() - started)


async def _last_record_before(consumer: Consumer, start: int, stop: int) -> Record | None:
    """The last record `consumer` reads from `start` up to (not including) `stop`."""
    consumer.seek(start)
    last: Record | None = None
    while await consumer.position() < stop:
        for record in await consumer.getmany(TAIL_SCAN_OFFSETS, TAIL_SCAN_POLL_MS):
            if record.offset < stop:
                last = record
    return last


def is_retriable(error: BaseException) -> bool:
    """Tell whether recovering anew may get past `error`: a retriable log failure, but never
    fencing (another instance owns the transactional id now)."""
    return isinstance(error, LogError) and error.retriable and not isinstance(error, FencedError)


class EngineSupervisor(Supervisor[EngineService]):
    """Run the service; after a retriable log failure, recover anew (bounded, with backoff).

    A failure mid-batch leaves the in-memory engine past what is committed, so every retry
    starts from a fresh engine and the recovery path. A fenced engine stops for good.
    """

    def __init__(self, event_log: EventLog, config: EngineConfig,
                 policy: RetryPolicy | None = None) -> None:
        self.metrics = EngineMetrics()
        super().__init__(lambda: EngineService(event_log, config, self.metrics),
                         what="engine", policy=policy or RetryPolicy(),
                         is_retriable=is_retriable, logger=log)

    @property
    def service(self) -> EngineService | None:
        """The service running now; None between attempts."""
        return self.current
