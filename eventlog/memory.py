"""A read-only event log over records held in memory, for benchmarks and tests that measure
or script what reads a log (the projector, the read-ahead) without a log's own costs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from eventlog.port import Consumer, EventLog, Isolation, Producer, Record, StartPosition, TopicSpec

__all__ = ["MemoryConsumer", "MemoryLog"]

IDLE_WAIT_MS_MAX = 50


class MemoryConsumer(Consumer):
    """Serve `records` in order from `start`, as a consumer of their partition would."""

    def __init__(self, records: Sequence[Record], start: int = 0, *, topic: str = "memory"
                 ) -> None:
        self.topic = topic
        self.partition = 0
        self.group_id = None
        self.records = records
        self._position = start

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def getmany(self, max_records: int, timeout_ms: int) -> list[Record]:
        batch = list(self.records[self._position:self._position + max_records])
        if not batch:
            await asyncio.sleep(min(timeout_ms, IDLE_WAIT_MS_MAX) / 1000)
        self._position += len(batch)
        return batch

    def seek(self, offset: int) -> None:
        self._position = offset

    async def position(self) -> int:
        return self._position

    async def end_offset(self) -> int:
        return len(self.records)

    async def commit(self, offset: int) -> None:
        raise NotImplementedError("a memory log stores no group offsets")


class MemoryLog(EventLog):
    """Hand out consumers of one in-memory partition; it takes no writes."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        return None

    def _new_producer(self, transactional_id: str | None) -> Producer:
        raise NotImplementedError("a memory log is read-only")

    def _new_consumer(self, topic: str, partition: int, group_id: str | None,
                      isolation: Isolation, start: StartPosition) -> Consumer:
        return MemoryConsumer(self.records, start if isinstance(start, int) else 0, topic=topic)

    async def end_offset(self, topic: str, partition: int = 0, *,
                         isolation: Isolation = "read_committed") -> int:
        return len(self.records)

    async def committed_offset(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        return None

    async def close(self) -> None:
        return None
