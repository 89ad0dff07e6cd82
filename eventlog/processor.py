"""Process a partition exactly once: read a batch, transform it, write outputs and offset.

`TransactionalProcessor` is the consume-transform-produce loop the matching engine runs.
Each step takes the records read ahead while the previous batch committed (at most
`batch_size_max`, waiting at most `batch_interval_ms` for the first), calls the transform,
then in ONE transaction writes the outputs to `output_topic` and the consumer group's next
offset. Either both become visible or neither does, so a crash anywhere loses nothing and
duplicates nothing. Its life cycle:

1. `start()` starts the transactional producer first, which fences any older instance and
   completes the transaction it left open, and only then reads the committed offset: read
   in the other order, the offset could predate a commit still being completed.
2. `replay(from_offset, apply)` re-applies the records between a snapshot's offset and the
   committed offset without producing anything (their outputs were already published).
   The caller checks what it rebuilt (the engine compares its event seq with the log's)
   before the first batch.
3. `process_batch()` / `run(stop)` continue from the committed offset. The hooks
   `after_commit(records, output_count)` (metrics, snapshots) and `on_idle()` (a lag
   gauge) run between batches, outside any transaction.

On a failure the transaction is aborted, the read-ahead dropped and the consumer rewound to
the batch's first record, which is the committed offset; then the error propagates. The
transform may have changed the caller's state before the failure, so the caller recovers by
rebuilding that state (snapshot plus `replay`) up to the committed offset before processing
again. After `FencedError` another instance owns the work: stop, never retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from eventlog.errors import LogClosedError, LogError
from eventlog.port import Consumer, EventLog, Producer, Record
from eventlog.readahead import ReadAhead
from eventlog.reading import for_each_batch_until
from runtime.config import require_positive

__all__ = ["BatchResult", "ProcessorConfig", "TransactionalProcessor", "Transform"]

Transform = Callable[[Sequence[Record]], Sequence[bytes]]
AfterCommit = Callable[[Sequence[Record], int], Awaitable[None]]
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

    def __post_init__(self) -> None:
        names = (self.input_topic, self.output_topic, self.group_id, self.transactional_id)
        if not all(names):
            raise ValueError(
                "input_topic, output_topic, group_id and transactional_id must be non-empty")
        require_positive(
            self, "batch_size_max", "read_ahead_batches", "outputs_max", "replay_batch_size_max",
        )
        if self.batch_interval_ms < 0:
            raise ValueError(f"batch_interval_ms must be >= 0, got {self.batch_interval_ms}")
        if min(self.input_partition, self.output_partition) < 0 or self.replay_timeout_s <= 0:
            raise ValueError("partitions must be >= 0 and replay_timeout_s > 0")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Say what one committed batch consumed and produced."""

    first_offset: int
    next_offset: int
    record_count: int
    output_count: int


async def _no_hook(*_: object) -> None:
    return None


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
        """Process the next batch exactly once; None (after `on_idle`) when no record came
        within one batch interval."""
        producer, _ = self._running()
        config = self.config
        reader = self._reader or await self._start_reading()
        records = await reader.take(config.batch_size_max, config.batch_interval_ms)
        if not records:
            await self._on_idle()
            return None
        first = records[0]
        next_offset = records[-1].offset + 1
        try:
            outputs = self._transform(records)
            if len(outputs) > config.outputs_max:
                raise LogError(f"transform made {len(outputs)} outputs, over outputs_max")
            await self._write(producer, outputs, next_offset)
        except BaseException:
            await self._rewind(first.offset)
            raise
        self.committed_offset = next_offset
        await self._after_commit(records, len(outputs))
        return BatchResult(first.offset, next_offset, len(records), len(outputs))

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set."""
        while not stop.is_set():
            await self.process_batch()

    async def stop(self) -> None:
        """Stop reading and the producer; an open transaction is aborted by the broker."""
        reader, consumer, producer = self._reader, self._consumer, self._producer
        self._reader = self._consumer = None
        if reader is not None:
            await reader.stop()
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
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

    async def _write(self, producer: Producer, outputs: Sequence[bytes], next_offset: int
                     ) -> None:
        """Write `outputs` and the group's next offset in one transaction; abort on failure."""
        config = self.config
        async with producer.transaction():
            for start in range(0, len(outputs), SEND_CHUNK_SIZE_MAX):
                await producer.send_batch(config.output_topic,
                                          outputs[start:start + SEND_CHUNK_SIZE_MAX],
                                          partition=config.output_partition)
            await producer.send_offsets(
                config.group_id, {(config.input_topic, config.input_partition): next_offset})

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
