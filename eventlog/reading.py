"""Read a partition up to an offset, in bounded batches and bounded time.

"Up to the end" must compare the consumer's position with the end offset, not the last
record's offset: Kafka's read_committed end offset (the last stable offset) counts
transaction markers and aborted records, which no consumer ever returns.

Kafka also writes a transaction's markers after `commit()` returns, so for a moment the
read_committed end still stops before the transaction just committed. A reader that must
see everything committed so far, once the writers are done (a test, an audit), waits for
`settled_end_offset`: the point where no transaction is in flight any more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from eventlog.errors import LogError, LogTimeoutError
from eventlog.port import Consumer, EventLog, Record

__all__ = ["for_each_batch_until", "read_to_end", "read_until", "settled_end_offset"]

_POLL_TIMEOUT_MS_MAX = 200
_SETTLE_POLL_INTERVAL_S = 0.02


async def settled_end_offset(
    log: EventLog, topic: str, partition: int = 0, *, timeout_s: float = 30.0
) -> int:
    """Return the end offset once no transaction is in flight on the partition.

    That is when the read_committed end (the last stable offset) reaches the
    read_uncommitted end (the high watermark). Raise LogTimeoutError if a transaction
    stays open for `timeout_s`.
    """
    deadline_s = time.monotonic() + timeout_s
    while True:
        committed_end = await log.end_offset(topic, partition, isolation="read_committed")
        written_end = await log.end_offset(topic, partition, isolation="read_uncommitted")
        if committed_end >= written_end:
            return committed_end
        if time.monotonic() >= deadline_s:
            raise LogTimeoutError(
                f"{topic}[{partition}] has a transaction open from offset {committed_end}"
            )
        await asyncio.sleep(_SETTLE_POLL_INTERVAL_S)


async def for_each_batch_until(
    consumer: Consumer,
    end_offset: int,
    apply: Callable[[Sequence[Record]], object],
    *,
    batch_size_max: int = 1_000,
    timeout_s: float = 60.0,
) -> int:
    """Call `apply` on each batch of records below `end_offset`; return how many there were.

    Leave the consumer positioned at `end_offset` (or where it was, if already past).
    Raise LogTimeoutError if the end is not reached within `timeout_s`.
    """
    if batch_size_max < 1 or timeout_s <= 0:
        raise ValueError("batch_size_max must be >= 1 and timeout_s > 0")
    deadline_s = time.monotonic() + timeout_s
    applied = 0
    while await consumer.position() < end_offset:
        remaining_ms = int((deadline_s - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            position = await consumer.position()
            raise LogTimeoutError(f"at offset {position}, not {end_offset}, after {timeout_s}s")
        batch = await consumer.getmany(batch_size_max, min(remaining_ms, _POLL_TIMEOUT_MS_MAX))
        wanted = [record for record in batch if record.offset < end_offset]
        if len(wanted) < len(batch):
            consumer.seek(end_offset)
        if wanted:
            apply(wanted)
            applied += len(wanted)
    return applied


async def read_until(
    consumer: Consumer,
    end_offset: int,
    *,
    records_max: int = 1_000_000,
    timeout_s: float = 60.0,
) -> list[Record]:
    """Return the records from the consumer's position up to (not including) `end_offset`."""
    records: list[Record] = []

    def collect(batch: Sequence[Record]) -> None:
        if len(records) + len(batch) > records_max:
            raise LogError(f"more than records_max={records_max} records before {end_offset}")
        records.extend(batch)

    await for_each_batch_until(consumer, end_offset, collect, timeout_s=timeout_s)
    return records


async def read_to_end(
    consumer: Consumer, *, records_max: int = 1_000_000, timeout_s: float = 60.0
) -> list[Record]:
    """Return every record from the consumer's position to the end it sees right now."""
    end_offset = await consumer.end_offset()
    return await read_until(consumer, end_offset, records_max=records_max, timeout_s=timeout_s)
