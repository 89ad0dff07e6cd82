"""Process a partition exactly once: read a batch, transform it, write outputs and offset.

`TransactionalProcessor` is the consume-transform-produce loop the matching engine runs.
Each step takes the records read ahead while the previous batch was written (at most
`batch_size_max`, waiting at most `batch_interval_ms` for the first), calls the transform
and writes its outputs to `output_topic` at once, inside the open transaction. The
transaction commits, with the consumer group's next offset, on its own cadence: when it has
been open `commit_interval_ms` or holds `commit_records_max` input records or
`commit_outputs_max` outputs (0 ms: after every batch). Either a transaction's outputs and
offset both become visible to read_committed readers or neither does, so a crash anywhere
loses nothing and duplicates nothing for them. A read_uncommitted reader sees outputs
before their commit; when the transform is a deterministic function of the input (the
engine is), a crash's aborted outputs are written again, byte for byte, after recovery, so
such a reader drops what it has seen by its own sequence numbers (docs/exactly-once.md).
Its life cycle:

1. `start()` starts the transactional producer first, which fences any older instance and
   completes the transaction it left open, and only then reads the committed offset: read
   in the other order, the offset could predate a commit still being completed.
2. `replay(from_offset, apply)` re-applies the records between a snapshot's offset and the
   committed offset without producing anything (their outputs were already published).
   The caller checks what it rebuilt (the engine compares its event seq with the log's)
   before the first batch.
3. `process_batch()` / `run(stop)` continue from the committed offset. The hooks
   `after_commit(committed)` (metrics, snapshots: the state now matches the committed
   offset) and `on_idle()` (a lag gauge) run outside any transaction. `run` commits what is
   open when `stop` is set.

On a failure the open transaction is aborted, the read-ahead dropped and the consumer
rewound to the committed offset; then the error propagates. When the transform itself
refuses a batch, the batches before it in the open transaction are committed first: their
outputs may have been read already, and they are sound. The transform has changed the
caller's state past that offset, so the caller recovers by rebuilding its state (snapshot
plus `replay`) before processing again. After `FencedError` another instance owns the
work: stop, never retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from eventlog.errors import LogClosedError, LogError
from eventlog.port import Consumer, EventLog, Producer, Record
from eventlog.readahead import ReadAhead
from eventlog.reading import for_each_batch_until
from runtime.config import require_positive

__all__ = ["BatchResult", "ProcessorConfig", "TransactionalProcessor", "Transform"]

log = logging.getLogger("gpux.eventlog.processor")

Transform = Callable[[Sequence[Record]], Sequence[bytes]]
AfterCommit = Callable[["BatchResult"], Awaitable[None]]
OnIdle = Callable[[], Awaitable[None]]

SEND_CHUNK_SIZE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Name the input, the output, the group and the transactional id; bound every batch."""

    input_topic: str
    output_topic: str
    group_id: str
    transactional_id: str
    input_partition: int = 0
    output_partition: int = 0
    batch_size_max: int = 1_000
    batch_interval_ms: int = 2
    read_ahead_batches: int = 2
    outputs_max: int = 1_000_000
    replay_batch_size_max: int = 10_000
    replay_timeout_s: float = 3600.0
    commit_interval_ms: int = 0  # 0: commit after every batch
    commit_records_max: int = 100_000
    # Bounds the outputs a crash can abort, which read_uncommitted readers must check again.
    commit_outputs_max: int = 100_000

    def __post_init__(self) -> None:
        names = (self.input_topic, self.output_topic, self.group_id, self.transactional_id)
        if not all(names):
            raise ValueError(
                "input_topic, output_topic, group_id and transactional_id must be non-empty")
        require_positive(
            self, "batch_size_max", "read_ahead_batches", "outputs_max", "replay_batch_size_max",
        )
        if min(self.batch_interval_ms, self.commit_interval_ms) < 0:
            raise ValueError("batch_interval_ms and commit_interval_ms must be >= 0")
        if min(self.input_partition, self.output_partition) < 0 or self.replay_timeout_s <= 0:
            raise ValueError("partitions must be >= 0 and replay_timeout_s > 0")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Say what a batch (or a transaction of batches) consumed and produced."""

    first_offset: int
    next_offset: int
    record_count: int
    output_count: int


async def _no_hook(*_: object) -> None:
    return None


def _joined(open_batches: BatchResult | None, batch: BatchResult) -> BatchResult:
    """What a transaction holds once `batch` is written in it too."""
    if open_batches is None:
        return batch
    return BatchResult(open_batches.first_offset, batch.next_offset,
                       open_batches.record_count + batch.record_count,
                       open_batches.output_count + batch.output_count)


class TransactionalProcessor:
    """Run consume-transform-produce over one input partition, restartable exactly once."""

    def __init__(self, event_log: EventLog, config: ProcessorConfig, transform: Transform, *,
                 after_commit: AfterCommit = _no_hook, on_idle: OnIdle = _no_hook) -> None:
        self.config = config
        self.committed_offset: int | None = None
        self._log = event_log
        self._transform = transform
        self._after_commit = after_commit
        self._on_idle = on_idle
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._reader: ReadAhead | None = None
        self._open: BatchResult | None = None  # what the open transaction holds; None: none
        self._opened_at_s = 0.0

    async def start(self) -> int:
        """Fence older instances, then return the offset processing resumes from."""
        if self._producer is not None:
            raise LogClosedError("a processor starts once")
        config = self.config
        producer = self._log.producer(config.transactional_id)
        await producer.start()
        self._producer = producer
        committed = await self._log.committed_offset(
            config.group_id, config.input_topic, config.input_partition)
        self.committed_offset = committed or 0
        return self.committed_offset

    async def replay(self, from_offset: int, apply: Callable[[Sequence[Record]], object]) -> int:
        """Re-apply the input records from `from_offset` up to the committed offset,
        unpublished; return how many. Call between `start()` and the first batch."""
        _, resume_offset = self._running()
        if not 0 <= from_offset <= resume_offset:
            raise ValueError(f"replay from {from_offset} is outside 0..{resume_offset}")
        if from_offset == resume_offset:
            return 0
        config = self.config
        reader = self._log.consumer(
            config.input_topic, partition=config.input_partition, start=from_offset)
        async with reader:
            return await for_each_batch_until(
                reader, resume_offset, apply,
                batch_size_max=config.replay_batch_size_max, timeout_s=config.replay_timeout_s)

    async def process_batch(self) -> BatchResult | None:
        """Transform the next batch and write its outputs in the open transaction; commit
        when due. Return the batch; None (after `on_idle`) when no record came within one
        batch interval."""
        producer, _ = self._running()
        config = self.config
        reader = self._reader or await self._start_reading()
        records = await reader.take(config.batch_size_max, config.batch_interval_ms)
        try:
            if not records:
                if self._open is not None and self._commit_due():
                    await self._commit(producer)
                await self._on_idle()
                return None
            try:
                outputs = self._transform(records)
                if len(outputs) > config.outputs_max:
                    raise LogError(f"transform made {len(outputs)} outputs, over outputs_max")
            except Exception:
                await self._commit_before_failed_batch(producer)
                raise
            batch = BatchResult(records[0].offset, records[-1].offset + 1, len(records),
                                len(outputs))
            await self._send(producer, batch, outputs)
            if self._commit_due():
                await self._commit(producer)
        except BaseException as error:
            await self._abort_and_rewind(producer, error)
            raise
        return batch

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set, then commit what is open."""
        while not stop.is_set():
            await self.process_batch()
        producer, _ = self._running()
        if self._open is not None:
            try:
                await self._commit(producer)
            except BaseException as error:
                await self._abort_and_rewind(producer, error)
                raise

    async def stop(self) -> None:
        """Stop reading and the producer, aborting a transaction still open (else the broker
        would hold readers of committed data back until its transaction timeout)."""
        reader, consumer, producer = self._reader, self._consumer, self._producer
        self._reader = self._consumer = None
        if reader is not None:
            await reader.stop()
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            abort_error = await self._abort(producer)
            if abort_error is not None:
                log.warning("aborting the open transaction on stop failed: %s", abort_error)
            await producer.stop()

    async def _start_reading(self) -> ReadAhead:
        config = self.config
        if self._consumer is None:
            self._consumer = self._log.consumer(
                config.input_topic, partition=config.input_partition, group_id=config.group_id,
                start=self._running()[1])
            await self._consumer.start()
        reader = self._reader = ReadAhead(
            self._consumer, records_max=config.batch_size_max * config.read_ahead_batches)
        await reader.start()
        return reader

    async def _send(self, producer: Producer, batch: BatchResult, outputs: Sequence[bytes]
                    ) -> None:
        """Write `batch`'s `outputs` in the open transaction, opening one if none is."""
        config = self.config
        if self._open is None:
            await producer.begin()
            self._opened_at_s = time.monotonic()
        self._open = _joined(self._open, batch)
        for start in range(0, len(outputs), SEND_CHUNK_SIZE_MAX):
            await producer.send_batch(config.output_topic,
                                      outputs[start:start + SEND_CHUNK_SIZE_MAX],
                                      partition=config.output_partition)

    def _commit_due(self) -> bool:
        open_batches = self._open
        config = self.config
        return open_batches is not None and (
            open_batches.record_count >= config.commit_records_max
            or open_batches.output_count >= config.commit_outputs_max
            or time.monotonic() - self._opened_at_s >= config.commit_interval_ms / 1000)

    async def _commit_before_failed_batch(self, producer: Producer) -> None:
        """The transform refused a batch: commit the batches before it, whose outputs readers
        may already have seen, without `after_commit` (the caller's state is part way into
        the refused batch: nothing may be taken from it now)."""
        if self._open is not None:
            await self._commit(producer, notify=False)

    async def _commit(self, producer: Producer, *, notify: bool = True) -> None:
        """Commit the open transaction with the group's next offset; then `after_commit`."""
        committed = self._open
        assert committed is not None
        config = self.config
        await producer.send_offsets(
            config.group_id,
            {(config.input_topic, config.input_partition): committed.next_offset})
        await producer.commit()
        self._open = None
        self.committed_offset = committed.next_offset
        if notify:
            await self._after_commit(committed)

    async def _abort_and_rewind(self, producer: Producer, cause: BaseException) -> None:
        """After `cause`: abort the open transaction (a failed abort is noted on `cause`)
        and read again from the committed offset."""
        abort_error = await self._abort(producer)
        if abort_error is not None:
            cause.add_note(f"aborting the transaction also failed: {abort_error!r}")
        _, committed = self._running()
        await self._rewind(committed)

    async def _abort(self, producer: Producer) -> LogError | None:
        """Abort the open transaction, if one is; return the abort's own failure."""
        if self._open is None:
            return None
        self._open = None
        try:
            await producer.abort()
        except LogError as error:
            return error
        return None

    async def _rewind(self, offset: int) -> None:
        """Drop what was read ahead and read again from `offset` (the committed offset)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        if self._consumer is not None:
            self._consumer.seek(offset)

    def _running(self) -> tuple[Producer, int]:
        """The producer and the committed offset, once `start()` has run."""
        if self._producer is None or self.committed_offset is None:
            raise LogClosedError("processor is not running")
        return self._producer, self.committed_offset
