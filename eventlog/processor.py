"""Process a partition exactly once: read a batch, transform it, write outputs and offset.

`consume_transform_produce` does one step. It reads up to `batch_size_max` records (waiting
at most `batch_interval_ms` after the first to fill the batch), calls the transform, then in
ONE transaction writes the outputs and the consumer group's next offset. Either both become
visible or neither does, so a crash anywhere loses nothing and duplicates nothing.

`TransactionalProcessor` wraps the step in the life cycle a service such as the matching
engine needs:

1. `start()` starts the transactional producer first, which fences any older instance and
   completes the transaction it left open, and only then reads the committed offset: read
   in the other order, the offset could predate a commit still being completed.
2. `replay(from_offset, apply)` optionally re-applies the records between a snapshot's
   offset and the committed offset without producing anything (their outputs were
   already published).
3. `process_batch()` / `run(stop)` continue from the committed offset.

On a failure the transaction is aborted and the consumer rewound to the batch's first
record, which is the committed offset; then the error propagates. The transform may have
changed the caller's state before the failure, so the caller recovers by rebuilding that
state (snapshot plus `replay`) up to the committed offset before processing again. After
`FencedError` another instance owns the work: stop, never retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventlog.errors import LogClosedError, LogError
from eventlog.port import Consumer, EventLog, Producer, Record
from eventlog.reading import for_each_batch_until

__all__ = [
    "BatchResult",
    "Output",
    "ProcessorConfig",
    "Transform",
    "TransactionalProcessor",
    "consume_transform_produce",
    "read_batch",
    "write_transaction",
]

log = logging.getLogger("eventlog.processor")

Output = tuple[str, bytes]
Transform = Callable[[Sequence[Record]], Sequence[Output]]

_SEND_CHUNK_SIZE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Name the input, the group and the transactional id, and bound every batch and wait."""

    input_topic: str
    group_id: str
    transactional_id: str
    input_partition: int = 0
    output_partition: int = 0
    batch_size_max: int = 1_000
    batch_interval_ms: int = 2
    idle_timeout_ms: int = 100
    outputs_max: int = 100_000
    replay_batch_size_max: int = 10_000
    replay_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not (self.input_topic and self.group_id and self.transactional_id):
            raise ValueError("input_topic, group_id and transactional_id must be non-empty")
        if min(self.batch_size_max, self.outputs_max, self.replay_batch_size_max) < 1:
            raise ValueError("batch_size_max, outputs_max and replay_batch_size_max must be >= 1")
        if min(self.batch_interval_ms, self.idle_timeout_ms) < 0:
            raise ValueError("batch_interval_ms and idle_timeout_ms must be >= 0")
        if min(self.input_partition, self.output_partition) < 0 or self.replay_timeout_s <= 0:
            raise ValueError("partitions must be >= 0 and replay_timeout_s > 0")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Say what one committed batch consumed and produced."""

    first_offset: int
    next_offset: int
    record_count: int
    output_count: int


async def read_batch(
    consumer: Consumer, *, batch_size_max: int, batch_interval_ms: int, idle_timeout_ms: int
) -> list[Record]:
    """Return up to `batch_size_max` records, or none after `idle_timeout_ms` without any.

    Once the first record is in, keep adding for at most `batch_interval_ms` more.
    """
    records = await consumer.getmany(batch_size_max, idle_timeout_ms)
    if not records:
        return records
    deadline_s = time.monotonic() + batch_interval_ms / 1000
    while len(records) < batch_size_max:
        remaining_ms = int((deadline_s - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        more = await consumer.getmany(batch_size_max - len(records), remaining_ms)
        if not more:
            break
        records.extend(more)
    return records


def _by_topic(outputs: Sequence[Output]) -> dict[str, list[bytes]]:
    """Group output values by topic, keeping their order within each topic."""
    grouped: dict[str, list[bytes]] = {}
    for topic, value in outputs:
        grouped.setdefault(topic, []).append(value)
    return grouped


async def write_transaction(
    producer: Producer,
    outputs: Sequence[Output],
    *,
    group_id: str,
    offsets: dict[tuple[str, int], int],
    output_partition: int = 0,
) -> None:
    """Write `outputs` and `group_id`'s `offsets` in one transaction; abort on any failure."""
    await producer.begin()
    try:
        for topic, values in _by_topic(outputs).items():
            for start in range(0, len(values), _SEND_CHUNK_SIZE_MAX):
                chunk = values[start : start + _SEND_CHUNK_SIZE_MAX]
                await producer.send_batch(topic, chunk, partition=output_partition)
        await producer.send_offsets(group_id, offsets)
        await producer.commit()
    except BaseException as exc:
        await _abort_noting_failure(producer, exc)
        raise


async def _abort_noting_failure(producer: Producer, cause: BaseException) -> None:
    """Abort the open transaction; if that fails too, note it on `cause` and carry on."""
    try:
        await producer.abort()
    except LogError as abort_error:
        log.warning("abort after %r failed: %r", cause, abort_error)
        cause.add_note(f"aborting the transaction also failed: {abort_error!r}")


async def consume_transform_produce(
    consumer: Consumer,
    producer: Producer,
    transform: Transform,
    *,
    group_id: str,
    batch_size_max: int,
    batch_interval_ms: int,
    idle_timeout_ms: int,
    outputs_max: int,
    output_partition: int = 0,
) -> BatchResult | None:
    """Process one batch exactly once; return None when no record came in time.

    On any failure, abort, rewind the consumer to the batch's first record and re-raise.
    Cancellation is handled the same way: the transaction is aborted, never half-written.
    """
    records = await read_batch(
        consumer,
        batch_size_max=batch_size_max,
        batch_interval_ms=batch_interval_ms,
        idle_timeout_ms=idle_timeout_ms,
    )
    if not records:
        return None
    first = records[0]
    next_offset = records[-1].offset + 1
    try:
        outputs = transform(records)
        if len(outputs) > outputs_max:
            raise LogError(f"transform made {len(outputs)} outputs, over outputs_max")
        await write_transaction(
            producer,
            outputs,
            group_id=group_id,
            offsets={(first.topic, first.partition): next_offset},
            output_partition=output_partition,
        )
    except BaseException:
        consumer.seek(first.offset)
        raise
    return BatchResult(first.offset, next_offset, len(records), len(outputs))


class TransactionalProcessor:
    """Run consume-transform-produce over one input partition, restartable exactly once."""

    def __init__(self, log: EventLog, config: ProcessorConfig, transform: Transform) -> None:
        self.config = config
        self.committed_offset: int | None = None
        self.resume_offset: int | None = None
        self._log = log
        self._transform = transform
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None

    async def start(self) -> int:
        """Fence older instances, then return the offset processing resumes from."""
        if self._producer is not None:
            raise LogClosedError("a processor starts once")
        config = self.config
        producer = self._log.producer(config.transactional_id)
        await producer.start()
        self._producer = producer
        self.committed_offset = await self._log.committed_offset(
            config.group_id, config.input_topic, config.input_partition
        )
        consumer = self._log.consumer(
            config.input_topic,
            partition=config.input_partition,
            group_id=config.group_id,
            start="committed",
        )
        await consumer.start()
        self._consumer = consumer
        self.resume_offset = await consumer.position()
        return self.resume_offset

    async def replay(self, from_offset: int, apply: Callable[[Sequence[Record]], object]) -> int:
        """Re-apply the input records from `from_offset` up to the resume offset, unpublished.

        Return how many records were applied. Call between `start()` and the first batch.
        """
        self._running()
        resume_offset = self._resume_offset()
        if not 0 <= from_offset <= resume_offset:
            raise ValueError(f"replay from {from_offset} is outside 0..{resume_offset}")
        config = self.config
        reader = self._log.consumer(
            config.input_topic, partition=config.input_partition, start=from_offset
        )
        async with reader:
            return await for_each_batch_until(
                reader,
                resume_offset,
                apply,
                batch_size_max=config.replay_batch_size_max,
                timeout_s=config.replay_timeout_s,
            )

    async def process_batch(self) -> BatchResult | None:
        """Process the next batch exactly once; None when no record came within idle time."""
        consumer, producer = self._running()
        config = self.config
        result = await consume_transform_produce(
            consumer,
            producer,
            self._transform,
            group_id=config.group_id,
            batch_size_max=config.batch_size_max,
            batch_interval_ms=config.batch_interval_ms,
            idle_timeout_ms=config.idle_timeout_ms,
            outputs_max=config.outputs_max,
            output_partition=config.output_partition,
        )
        if result is not None:
            self.committed_offset = result.next_offset
        return result

    async def run(self, stop: asyncio.Event, *, batches_max: int | None = None) -> int:
        """Process batches until `stop` is set (or `batches_max` ran); return the count."""
        batches = 0
        while not stop.is_set() and (batches_max is None or batches < batches_max):
            if await self.process_batch() is not None:
                batches += 1
        return batches

    async def stop(self) -> None:
        """Stop the consumer and the producer; an open transaction is aborted by the broker."""
        consumer, producer = self._consumer, self._producer
        self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    def _running(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            raise LogClosedError("processor is not running")
        return self._consumer, self._producer

    def _resume_offset(self) -> int:
        if self.resume_offset is None:
            raise LogClosedError("processor is not running")
        return self.resume_offset
