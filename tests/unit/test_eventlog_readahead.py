"""The read-ahead: keeps reading while its owner is busy, in order, within its bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventlog.embedded import EmbeddedLog
from eventlog.errors import LogClosedError, LogError
from eventlog.memory import MemoryConsumer
from eventlog.port import Record, TopicSpec
from eventlog.readahead import ReadAhead

TOPIC = "gpux.commands"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    opened = EmbeddedLog.open(tmp_path / "log")
    await opened.create_topics([TopicSpec(name=TOPIC)])
    yield opened
    await opened.close()


async def send(log: EmbeddedLog, values: list[bytes]) -> None:
    async with log.producer() as producer:
        await producer.send_batch(TOPIC, values)


async def take_all(reader: ReadAhead, count: int, batch_max: int) -> list[Record]:
    taken: list[Record] = []
    for _ in range(count * 10):
        if len(taken) >= count:
            break
        batch = await reader.take(batch_max, 200)
        assert len(batch) <= batch_max
        taken += batch
    return taken


async def test_records_come_out_in_order_in_batches_of_at_most_max_records(
    log: EmbeddedLog,
) -> None:
    values = [b"%d" % index for index in range(50)]
    await send(log, values)
    async with log.consumer(TOPIC, start="earliest") as consumer:
        async with ReadAhead(consumer, records_max=10) as reader:
            taken = await take_all(reader, 50, batch_max=4)
    assert [record.value for record in taken] == values
    assert [record.offset for record in taken] == list(range(50))


async def test_records_written_while_the_owner_is_busy_are_read_meanwhile(
    log: EmbeddedLog,
) -> None:
    async with log.consumer(TOPIC, start="earliest") as consumer:
        async with ReadAhead(consumer, records_max=100) as reader:
            assert await reader.take(10, 0) == []
            await send(log, [b"a", b"b", b"c"])
            for _ in range(100):  # the owner is busy elsewhere; the reader is not
                await asyncio.sleep(0.01)
                if await consumer.position() == 3:
                    break
            assert await consumer.position() == 3
            assert [record.value for record in await reader.take(10, 0)] == [b"a", b"b", b"c"]


class ScriptedConsumer(MemoryConsumer):
    """Hand out numbered records on request, note each request's size, then fail."""

    def __init__(self, records_total: int) -> None:
        super().__init__([Record(TOPIC, 0, offset, None, b"") for offset in range(records_total)],
                         topic=TOPIC)
        self.requested: list[int] = []

    async def getmany(self, max_records: int, timeout_ms: int) -> list[Record]:
        self.requested.append(max_records)
        await asyncio.sleep(0)
        if await self.position() >= len(self.records):
            raise LogError("broker gone")
        return await super().getmany(max_records, timeout_ms)



async def test_the_buffer_never_holds_more_than_records_max() -> None:
    consumer = ScriptedConsumer(records_total=1_000)
    async with ReadAhead(consumer, records_max=8) as reader:
        await asyncio.sleep(0.05)  # the reader fills the buffer and waits for room
        assert consumer.requested and max(consumer.requested) <= 8
        assert await consumer.position() == 8
        assert len(await reader.take(3, 0)) == 3
        await asyncio.sleep(0.01)
        assert await consumer.position() == 11
    assert all(1 <= size <= 8 for size in consumer.requested)


async def test_the_readers_error_is_raised_once_the_buffer_is_empty() -> None:
    consumer = ScriptedConsumer(records_total=5)
    async with ReadAhead(consumer, records_max=100) as reader:
        taken = await take_all(reader, 5, batch_max=100)
        assert [record.offset for record in taken] == [0, 1, 2, 3, 4]
        with pytest.raises(LogError, match="broker gone"):
            await reader.take(10, 1_000)


async def test_a_stopped_read_ahead_refuses_to_take_or_start_again() -> None:
    reader = ReadAhead(ScriptedConsumer(records_total=5), records_max=10)
    with pytest.raises(LogClosedError):
        await reader.take(1, 0)
    await reader.start()
    await reader.stop()
    with pytest.raises(LogClosedError):
        await reader.take(1, 0)
    with pytest.raises(LogClosedError):
        await reader.start()
    with pytest.raises(ValueError, match="records_max"):
        ReadAhead(ScriptedConsumer(records_total=0), records_max=0)
