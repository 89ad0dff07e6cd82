"""The engine service (`gpux engine`): commands in, events out, exactly once.

The loop reads a batch of commands (bounded by `batch_size_max` and `batch_interval_ms`),
applies them to the core, and writes the batch's events together with the consumer's next
command offset in one transaction. On start it takes over the transactional id (fencing
any older instance and completing what it left open), loads the newest snapshot at or
below the committed command offset, and re-applies the commands between the two without
publishing their events again. It then checks that its event seq equals the last committed
event's seq before it publishes anything: a mismatch means the logs and the engine
disagree, and the service refuses to run rather than write a second truth.

Two cores can run it (`--core`, matching_engine.cores): the Python core (the default) and
the native Rust core (byte-identical events, about ten times the commands a second, built
by `make native`). Both write and read the same snapshots, so either restores the other's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventlog.errors import FencedError, LogError
from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from eventlog.port import (
    COMMANDS_TOPIC,
    EVENTS_TOPIC,
    Consumer,
    EventLog,
    Producer,
    Record,
    TopicSpec,
)
from eventlog.readahead import ReadAhead
from gpux.observability import MetricsServer, configure_logging
from matching_engine.core import Engine
from matching_engine.cores import CORES, Core, PythonCore, new_core
from matching_engine.snapshots import ForkedSnapshots, SnapshotStore
from protocol import decode_event

log = logging.getLogger("gpux.engine")

TAIL_SCAN_OFFSETS = 256
READ_AHEAD_BATCHES = 2
SNAPSHOT_WAIT_S = 60.0
LAG_INTERVAL_S = 1.0
RETRIES_MAX = 30
RETRY_BACKOFF_MIN_S = 0.2
RETRY_BACKOFF_MAX_S = 5.0


class EngineStateError(Exception):
    """The engine's recovered state disagrees with the event log: refuse to publish."""


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches, snapshots and names itself on the log."""

    batch_size_max: int = 2000
    batch_interval_ms: int = 5
    # Recovery re-applies at most this many commands (plus a batch) after the snapshot: the
    # Python core re-applies 60-120k commands a second here. Snapshots are written by a
    # forked child (matching_engine.snapshots.ForkedSnapshots); the loop pays for the fork.
    snapshot_every_commands: int = 100_000
    snapshot_dir: Path | None = None
    snapshots_kept_max: int = 3
    transactional_id: str = "gpux-engine"
    group_id: str = "gpux-engine"
    catch_up_batch_max: int = 10_000
    # Prefixed to both topic names, so several venues (or test runs) share one cluster.
    topic_namespace: str = ""
    core: str = "python"

    @property
    def commands_topic(self) -> str:
        return self.topic_namespace + COMMANDS_TOPIC

    @property
    def events_topic(self) -> str:
        return self.topic_namespace + EVENTS_TOPIC

    def __post_init__(self) -> None:
        for name in ("batch_size_max", "batch_interval_ms", "snapshot_every_commands",
                     "snapshots_kept_max", "catch_up_batch_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {self.core!r}")


@dataclass
class EngineStats:
    commands: int = 0
    events: int = 0
    batches: int = 0
    recovered_commands: int = 0
    recovery_s: float = 0.0


class EngineMetrics:
    """The engine's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.commands = Counter("gpux_engine_commands", "Commands applied",
                                registry=self.registry)
        self.events = Counter("gpux_engine_events", "Events published", registry=self.registry)
        self.batch_size = Histogram(
            "gpux_engine_batch_size_commands", "Commands per transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "gpux_engine_batch_seconds", "Apply plus transaction time of one batch",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
            registry=self.registry,
        )
        self.lag = Gauge("gpux_engine_consumer_lag_commands",
                         "Commands in the log not yet applied", registry=self.registry)
        self.seq = Gauge("gpux_engine_event_seq", "Seq of the last event published",
                         registry=self.registry)
        self.recovery_seconds = Gauge("gpux_engine_recovery_seconds",
                                      "Time the last recovery took", registry=self.registry)
        self.command_wait = Histogram(
            "gpux_engine_command_wait_seconds",
            "From the stamp (ts) of a batch's first command to the start of its batch: the "
            "way through the log and the wait for the batch before (wall clocks)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.snapshots = Counter("gpux_engine_snapshots", "Snapshots the forked children "
                                 "finished, by outcome", ["outcome"], registry=self.registry)
        self.snapshot_seconds = Gauge(
            "gpux_engine_snapshot_seconds", "From the fork to the child's exit, last snapshot",
            registry=self.registry)

    def snapshot_done(self, ok: bool, seconds: float) -> None:
        """Count a snapshot child that exited (called from its watcher thread)."""
        self.snapshots.labels("written" if ok else "failed").inc()
        self.snapshot_seconds.set(seconds)


_STAMP_DIGITS = re.compile(rb" *([0-9]{1,19})")
_STAMP_SEARCH_BYTES = 64


def _stamp_ns(value: bytes) -> int | None:
    """Return a command record's `ts` for the wait metric, read without decoding the record
    (outside input: the codec alone bounds its nesting): the digits after the first `"ts":`
    near the start, as the gateway and msgspec write commands; None when there are none."""
    at = value.find(b'"ts":', 0, _STAMP_SEARCH_BYTES)
    if at < 0:
        return None
    digits = _STAMP_DIGITS.match(value, at + 5)
    return int(digits.group(1)) if digits else None


class EngineService:
    """Run the core over a log; `run()` returns when `stop` is set."""

    def __init__(
        self, event_log: EventLog, config: EngineConfig, metrics: EngineMetrics | None = None
    ) -> None:
        self.log = event_log
        self.config = config
        self.metrics = metrics or EngineMetrics()
        self._lag_checked_at = 0.0
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
        # offset of the next command to apply: everything before it is committed
        self.next_offset = 0

    @property
    def engine(self) -> Engine:
        """The Python core's engine, whose state the dev status line and tests read; the
        native core keeps its state in Rust (use `core.final_state()` for either)."""
        if not isinstance(self.core, PythonCore):
            raise TypeError(f"the {self.core.name} core has no Python Engine to read")
        return self.core.engine

    async def run(self, stop: asyncio.Event) -> None:
        await self.log.create_topics(
            [TopicSpec(name=self.config.commands_topic), TopicSpec(name=self.config.events_topic)]
        )
        producer = self.log.producer(self.config.transactional_id)
        await producer.start()
        try:
            consumer = await self._recover()
            try:
                self.ready.set()
                await self._serve(producer, consumer, stop)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
            if self.snapshot_writer is not None:
                await asyncio.to_thread(self.snapshot_writer.wait, SNAPSHOT_WAIT_S)

    async def _recover(self) -> Consumer:
        """Rebuild the state the committed events reflect; return a consumer right after it."""
        started = time.perf_counter()
        config = self.config
        committed = await self.log.committed_offset(config.group_id, config.commands_topic) or 0
        snapshot = self.snapshots.latest(committed) if self.snapshots is not None else None
        offset = 0
        if snapshot is not None:
            self.core = type(self.core).restore(snapshot.engine)
            offset = snapshot.command_offset
            if self.core.seq != snapshot.event_seq:
                raise EngineStateError(f"snapshot at {offset} has seq {self.core.seq}, "
                                       f"recorded {snapshot.event_seq}")
        loaded = time.perf_counter()
        consumer = self.log.consumer(
            self.config.commands_topic, group_id=self.config.group_id, start=offset
        )
        await consumer.start()
        replayed = await self._replay_until(consumer, committed)
        caught_up = time.perf_counter()
        last_seq = await self._last_committed_seq()
        if self.core.seq != last_seq:
            await consumer.stop()
            raise EngineStateError(
                f"after replaying commands up to offset {committed} the engine is at event seq "
                f"{self.core.seq}, but the event log ends at seq {last_seq}"
            )
        self.stats.recovered_commands = replayed
        self.next_offset = committed
        self.metrics.recovery_seconds.set(time.perf_counter() - started)
        self.metrics.seq.set(self.core.seq)
        self.stats.recovery_s = time.perf_counter() - started
        log.info("recovered: snapshot at %s, replayed %d commands to offset %d, seq %d, "
                 "%.3f s (%s core; snapshot %.3f s, replay %.3f s, seq check %.3f s)",
                 offset if snapshot else "none", replayed, committed, last_seq,
                 self.stats.recovery_s, self.core.name, loaded - started, caught_up - loaded,
                 time.perf_counter() - caught_up)
        return consumer

    async def _replay_until(self, consumer: Consumer, committed: int) -> int:
        """Apply the already-published commands before `committed` without publishing."""
        replayed = 0
        while await consumer.position() < committed:
            records = await consumer.getmany(self.config.catch_up_batch_max, 1000)
            if records and records[-1].offset >= committed:
                before = [record for record in records if record.offset < committed]
                self.core.replay([record.value for record in before])
                consumer.seek(committed)
                return replayed + len(before)
            self.core.replay([record.value for record in records])
            replayed += len(records)
        return replayed

    async def _last_committed_seq(self) -> int:
        """Return the seq of the last committed event (0 for an empty event log)."""
        end = await self.log.end_offset(self.config.events_topic)
        start = end
        while start > 0:
            start = max(0, start - TAIL_SCAN_OFFSETS)
            last = await self._last_record(start, end)
            if last is not None:
                return decode_event(last.value).seq
        return 0

    async def _last_record(self, start: int, end: int) -> Record | None:
        consumer = self.log.consumer(self.config.events_topic, start=start)
        await consumer.start()
        try:
            last: Record | None = None
            while await consumer.position() < end:
                records = await consumer.getmany(TAIL_SCAN_OFFSETS, 1000)
                if records:
                    last = records[-1]
            return last
        finally:
            await consumer.stop()

    async def _serve(self, producer: Producer, consumer: Consumer, stop: asyncio.Event) -> None:
        """Process batches until `stop`; each wait for commands lasts one batch interval.

        The commands are read ahead while a batch commits (eventlog.readahead), so the next
        batch holds all that arrived meanwhile.
        """
        config = self.config
        records_max = config.batch_size_max * READ_AHEAD_BATCHES
        async with ReadAhead(consumer, records_max=records_max) as reader:
            while not stop.is_set():
                records = await reader.take(config.batch_size_max, config.batch_interval_ms)
                if records:
                    await self._process(producer, records)
                else:
                    await self._update_lag()

    async def _process(self, producer: Producer, records: list[Record]) -> None:
        """Apply a batch and publish its events and next offset in one transaction."""
        started = time.perf_counter()
        stamp_ns = _stamp_ns(records[0].value)
        if stamp_ns is not None:
            self.metrics.command_wait.observe(max(0, time.time_ns() - stamp_ns) / 1e9)
        payloads = self.core.apply_records([record.value for record in records])
        next_offset = records[-1].offset + 1
        await producer.begin()
        try:
            if payloads:
                await producer.send_batch(self.config.events_topic, payloads)
            await producer.send_offsets(
                self.config.group_id, {(self.config.commands_topic, 0): next_offset}
            )
            await producer.commit()
        except BaseException:
            # The engine has moved past what is committed: the caller must recover anew.
            await _abort_quietly(producer)
            raise
        self.next_offset = next_offset
        self.stats.commands += len(records)
        self.stats.events += len(payloads)
        self.stats.batches += 1
        metrics = self.metrics
        metrics.commands.inc(len(records))
        metrics.events.inc(len(payloads))
        metrics.batch_size.observe(len(records))
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.seq.set(self.core.seq)
        await self._update_lag()
        self._since_snapshot += len(records)
        if self._since_snapshot >= self.config.snapshot_every_commands:
            self.save_snapshot(next_offset)

    async def _update_lag(self) -> None:
        """Refresh the lag gauge at most once per LAG_INTERVAL_S (it costs a log request)."""
        now = time.monotonic()
        if now - self._lag_checked_at < LAG_INTERVAL_S:
            return
        self._lag_checked_at = now
        end = await self.log.end_offset(self.config.commands_topic)
        self.metrics.lag.set(max(0, end - self.next_offset))

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


async def _abort_quietly(producer: Producer) -> None:
    try:
        await producer.abort()
    except Exception as error:  # the original failure is the one worth raising
        log.warning("abort after a failed batch also failed: %s", error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpux engine", description=__doc__.split("\n")[0])
    add_log_flags(parser)
    parser.add_argument("--snapshot-dir", type=Path, help="where snapshots go (none: no snapshots)")
    parser.add_argument("--batch-size-max", type=int, default=EngineConfig.batch_size_max)
    parser.add_argument("--batch-interval-ms", type=int, default=EngineConfig.batch_interval_ms)
    parser.add_argument("--snapshot-every-commands", type=int,
                        default=EngineConfig.snapshot_every_commands)
    parser.add_argument("--transactional-id", default=EngineConfig.transactional_id)
    parser.add_argument("--group-id", default=EngineConfig.group_id)
    parser.add_argument("--core", choices=CORES, default=EngineConfig.core,
                        help="matching core: python or native (Rust, built by `make native`); "
                             "both read and write the same snapshots")
    parser.add_argument("--metrics-port", type=int, default=9101,
                        help="serve /metrics and /healthz here (0: any free port, -1: off)")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines")
    return parser.parse_args(argv)


class EngineSupervisor:
    """Run the service; after a retriable log failure, recover anew (bounded, with backoff).

    A failure mid-batch leaves the in-memory engine past what is committed, so every retry
    starts from a fresh engine and the recovery path. A fenced engine stops for good:
    another instance owns the transactional id now.
    """

    def __init__(self, event_log: EventLog, config: EngineConfig) -> None:
        self.log = event_log
        self.config = config
        self.metrics = EngineMetrics()
        self.service: EngineService | None = None

    def healthy(self) -> bool:
        return self.service is not None and self.service.ready.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff_s = RETRY_BACKOFF_MIN_S
        for attempt in range(1, RETRIES_MAX + 1):
            self.service = EngineService(self.log, self.config, self.metrics)
            try:
                await self.service.run(stop)
                return
            except LogError as error:
                if isinstance(error, FencedError) or not error.retriable or attempt == RETRIES_MAX:
                    raise
                log.warning("log failure (%s); recovering again in %.1f s (attempt %d of %d)",
                            error, backoff_s, attempt, RETRIES_MAX)
            self.service = None
            try:
                await asyncio.wait_for(stop.wait(), backoff_s)
                return
            except TimeoutError:
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)


async def serve(args: argparse.Namespace) -> None:
    config = EngineConfig(
        batch_size_max=args.batch_size_max, batch_interval_ms=args.batch_interval_ms,
        snapshot_every_commands=args.snapshot_every_commands, snapshot_dir=args.snapshot_dir,
        transactional_id=args.transactional_id, group_id=args.group_id,
        topic_namespace=args.topic_namespace, core=args.core,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        event_log = open_log_from(args)
    except LogFlagsError as error:
        raise SystemExit(f"gpux engine: {error}") from None
    supervisor = EngineSupervisor(event_log, config)
    metrics_server = None
    if args.metrics_port >= 0:
        metrics_server = MetricsServer(supervisor.metrics.registry, supervisor.healthy,
                                       port=args.metrics_port)
        await metrics_server.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
    try:
        await supervisor.run(stop)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
        await event_log.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(json_logs=args.json_logs)
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))
    return 0
