"""Keep reading a partition into a bounded buffer while its owner is busy writing.

A Kafka consumer holds one fetch response per partition and fetches again only once that
one is read. A loop that reads a batch and then spends a transaction writing it therefore
finds, when it reads again, only what a fetch answered early in that transaction; the
records that arrived later wait for another fetch, after the next batch's transaction.
`ReadAhead` reads on in a task of its own, so the next batch holds everything that arrived
while the previous one committed (measured in benchmarks/e2e.py: the first command of a
batch was about two batch times old at the batch's start).

Records taken from the buffer are the owner's. Records still buffered are not processed:
after a failure the owner stops the read-ahead and reads again from its committed offset.
"""

from __future__ import annotations

import asyncio

from eventlog.errors import LogClosedError
from eventlog.port import Consumer, Record, Startable

__all__ = ["ReadAhead"]

POLL_TIMEOUT_MS = 100


class ReadAhead(Startable):
    """Read `consumer` ahead into a buffer of at most `records_max` records."""

    def __init__(self, consumer: Consumer, *, records_max: int) -> None:
        if records_max < 1:
            raise ValueError(f"records_max must be >= 1, got {records_max}")
        self._consumer = consumer
        self._records_max = records_max
        self._buffer: list[Record] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        if self._task is not None or self._stopped:
            raise LogClosedError("a read-ahead starts once")
        self._task = asyncio.create_task(self._fill(), name="read-ahead")

    async def stop(self) -> None:
        """Stop reading; what is still buffered is dropped."""
        self._stopped = True
        task = self._task
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - the reader's error was or will be raised by take
            pass
        self._buffer.clear()

    async def take(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Return up to `max_records` buffered records, waiting at most `timeout_ms` for one.

        Raise the reader's error once the buffer is empty and the reader has failed.
        """
        if max_records < 1 or timeout_ms < 0:
            raise ValueError("max_records must be >= 1 and timeout_ms >= 0")
        task = self._task
        if task is None or self._stopped:
            raise LogClosedError("the read-ahead is not running")
        if not self._buffer:
            if task.done():
                task.result()
                raise LogClosedError("the read-ahead stopped")
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait([arrived, task], timeout=timeout_ms / 1000,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
            if not self._buffer and task.done():
                task.result()
                raise LogClosedError("the read-ahead stopped")
        records = self._buffer[:max_records]
        del self._buffer[:max_records]
        self._room.set()
        return records

    async def _fill(self) -> None:
        buffer = self._buffer
        while True:
            room = self._records_max - len(buffer)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            records = await self._consumer.getmany(room, POLL_TIMEOUT_MS)
            if records:
                buffer.extend(records)
                self._arrived.set()
