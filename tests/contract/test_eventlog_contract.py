"""The event log contract: every adapter (embedded, Kafka) must pass each of these tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from eventlog.errors import FencedError, TopicError, TransactionStateError
from eventlog.port import Consumer, EventLog, Record, TopicSpec
from eventlog.processor import BatchResult, ProcessorConfig, TransactionalProcessor
from eventlog.reading import read_to_end, read_until, settled_end_offset
from tests.helpers import eventually

Name = Callable[[str], str]
OpenLog = Callable[[], EventLog]


async def create(log: EventLog, *topics: str, partitions: int = 1) -> None:
    await log.create_topics([TopicSpec(name=topic, partitions=partitions) for topic in topics])


async def read_settled(log: EventLog, consumer: Consumer) -> list[Record]:
    """Read on to the end once the writers' last transactions have settled."""
    end_offset = await settled_end_offset(log, consumer.topic, consumer.partition)
    return await read_until(consumer, end_offset, timeout_s=30)


async def read_all(log: EventLog, topic: str, *, partition: int = 0) -> list[Record]:
    async with log.consumer(topic, partition=partition, start="earliest") as consumer:
        return await read_settled(log, consumer)


async def values_of(log: EventLog, topic: str, *, partition: int = 0) -> list[bytes]:
    return [record.value for record in await read_all(log, topic, partition=partition)]


async def send_values(log: EventLog, topic: str, values: Sequence[bytes]) -> None:
    async with log.producer() as producer:
        await producer.send_batch(topic, values)


def upper(records: Sequence[Record]) -> list[bytes]:
    """The transform of these tests: one upper-cased output per input."""
    return [record.value.upper() for record in records]


def processor_for(
    log: EventLog, input_topic: str, output_topic: str,
    transform: Callable[[Sequence[Record]], list[bytes]] = upper, **limits: int,
) -> Callable[[str, str], TransactionalProcessor]:
    def make(group_id: str, transactional_id: str) -> TransactionalProcessor:
        config = ProcessorConfig(
            input_topic=input_topic,
            output_topic=output_topic,
            group_id=group_id,
            transactional_id=transactional_id,
            **limits,
        )
        return TransactionalProcessor(log, config, transform)

    return make


async def source_holding(log: EventLog, name: Name, output_topic: str,
                         values: Sequence[bytes]) -> str:
    """Create a source topic holding `values` (and the output topic); return its name."""
    source = name("source")
    await create(log, source, output_topic)
    await send_values(log, source, values)
    return source


async def committed_settles_at(log: EventLog, group: str, topic: str, offset: int) -> None:
    """Wait for the group's committed offset: Kafka shows it once the markers are written."""

    async def committed_is_offset() -> bool:
        return await log.committed_offset(group, topic) == offset

    await eventually(committed_is_offset, timeout_s=30, message=f"{group} committed {offset}")


async def process_next_batch(processor: TransactionalProcessor) -> BatchResult:
    """Process the next batch, skipping idle polls that found no record in time."""
    for _ in range(100):
        result = await processor.process_batch()
        if result is not None:
            return result
    raise AssertionError("no batch came in 100 idle polls")


async def process_until(processor: TransactionalProcessor, next_offset: int) -> None:
    for _ in range(100):
        if processor.committed_offset == next_offset:
            return
        await processor.process_batch()
    raise AssertionError(f"processor stuck at {processor.committed_offset}, not {next_offset}")


async def test_send_assigns_consecutive_offsets_read_back_in_order(
    event_log: EventLog, topic: str
) -> None:
    await create(event_log, topic)
    async with event_log.producer() as producer:
        single_offsets = [await producer.send(topic, b"v%d" % i) for i in range(3)]
        batch_offsets = await producer.send_batch(topic, [b"v3", b"v4"])
        keyed_offset = await producer.send(topic, b"v5", key=b"key")

    records = await read_all(event_log, topic)

    assert single_offsets == [0, 1, 2]
    assert batch_offsets == [3, 4]
    assert keyed_offset == 5
    assert [r.offset for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r.value for r in records] == [b"v%d" % i for i in range(6)]
    assert [r.key for r in records] == [None] * 5 + [b"key"]
    assert {(r.topic, r.partition) for r in records} == {(topic, 0)}


async def test_consumer_starts_at_earliest_latest_or_an_explicit_offset(
    event_log: EventLog, topic: str
) -> None:
    await create(event_log, topic)
    await send_values(event_log, topic, [b"a", b"b", b"c", b"d"])

    async with event_log.consumer(topic, start=2) as from_two:
        assert await from_two.position() == 2
        assert [r.value for r in await read_to_end(from_two)] == [b"c", b"d"]
        from_two.seek(1)
        assert [r.value for r in await read_to_end(from_two)] == [b"b", b"c", b"d"]
    async with event_log.consumer(topic, start="latest") as latest:
        assert await latest.position() == 4
        await send_values(event_log, topic, [b"e"])
        assert [r.value for r in await latest.getmany(10, 10_000)] == [b"e"]


async def test_waiting_consumer_wakes_when_a_record_arrives(
    event_log: EventLog, topic: str
) -> None:
    await create(event_log, topic)
    async with event_log.consumer(topic, start="latest") as consumer:
        waiting = asyncio.create_task(consumer.getmany(10, 20_000))
        await send_values(event_log, topic, [b"wake"])
        records = await asyncio.wait_for(waiting, 20)

    assert [r.value for r in records] == [b"wake"]


async def test_consumer_resumes_from_the_offset_its_group_committed(
    event_log: EventLog, topic: str, name: Name
) -> None:
    group = name("group")
    await create(event_log, topic)
    await send_values(event_log, topic, [b"0", b"1", b"2", b"3", b"4"])
    assert await event_log.committed_offset(group, topic) is None

    async with event_log.consumer(topic, group_id=group) as first:
        assert await first.position() == 0  # no commit yet: "committed" falls back to earliest
        await first.commit(3)
    async with event_log.consumer(topic, group_id=group, start="committed") as second:
        assert await second.position() == 3
        assert [r.value for r in await read_to_end(second)] == [b"3", b"4"]

    assert await event_log.committed_offset(group, topic) == 3


async def test_committed_transaction_becomes_visible_all_at_once(
    event_log: EventLog, topic: str, name: Name
) -> None:
    await create(event_log, topic)
    values = [b"tx-%03d" % i for i in range(50)]
    async with (
        event_log.producer(name("tx")) as producer,
        event_log.consumer(topic, start="earliest") as watcher,
    ):
        await producer.begin()
        assert await producer.send_batch(topic, values) is None
        assert await producer.send(topic, b"tx-last") is None
        assert await watcher.getmany(100, 300) == []
        assert await event_log.end_offset(topic) == 0
        await producer.commit()
        seen = await read_settled(event_log, watcher)

    assert [r.value for r in seen] == [*values, b"tx-last"]
    assert [r.offset for r in seen] == list(range(51))


async def test_aborted_transaction_is_never_seen_by_a_read_committed_consumer(
    event_log: EventLog, topic: str, name: Name
) -> None:
    await create(event_log, topic)
    async with (
        event_log.consumer(topic, start="earliest") as early_reader,
        event_log.producer(name("tx")) as producer,
    ):
        async with producer.transaction():
            await producer.send_batch(topic, [b"a1", b"a2"])
        await producer.begin()
        await producer.send_batch(topic, [b"x1", b"x2", b"x3"])
        await producer.abort()
        with pytest.raises(RuntimeError):
            async with producer.transaction():
                await producer.send(topic, b"x4")
                raise RuntimeError("abandon the transaction")
        async with producer.transaction():
            await producer.send(topic, b"b1")
        seen_by_early_reader = [r.value for r in await read_settled(event_log, early_reader)]

    assert seen_by_early_reader == [b"a1", b"a2", b"b1"]
    assert await values_of(event_log, topic) == [b"a1", b"a2", b"b1"]


async def test_transaction_over_two_topics_and_offsets_is_all_or_nothing(
    event_log: EventLog, topic: str, name: Name
) -> None:
    other, source, group = name("other"), name("source"), name("group")
    await create(event_log, topic, other, source)
    await send_values(event_log, source, [b"s0", b"s1", b"s2"])
    async with event_log.producer(name("tx")) as producer:
        await producer.begin()
        await producer.send(topic, b"lost-1")
        await producer.send(other, b"lost-2")
        await producer.send_offsets(group, {(source, 0): 2})
        await producer.abort()
        assert await event_log.committed_offset(group, source) is None

        async with producer.transaction():
            await producer.send(topic, b"kept-1")
            await producer.send(other, b"kept-2")
            await producer.send_offsets(group, {(source, 0): 3})

    assert await values_of(event_log, topic) == [b"kept-1"]
    assert await values_of(event_log, other) == [b"kept-2"]


async def test_offsets_committed_in_a_transaction_are_where_a_restarted_consumer_resumes(
    event_log: EventLog, reopen_log: OpenLog, topic: str, name: Name
) -> None:
    source, group, transactional_id = name("source"), name("group"), name("tx")
    await create(event_log, topic, source)
    await send_values(event_log, source, [b"c%d" % i for i in range(10)])
    async with event_log.producer(transactional_id) as producer:
        async with producer.transaction():
            await producer.send_batch(topic, [b"e0", b"e1"])
            await producer.send_offsets(group, {(source, 0): 7})
    await event_log.close()

    restarted = reopen_log()
    async with restarted.producer(transactional_id):  # completes the old transaction first
        assert await restarted.committed_offset(group, source) == 7
    async with restarted.consumer(source, group_id=group, start="committed") as consumer:
        assert await consumer.position() == 7
        assert [r.value for r in await read_settled(restarted, consumer)] == [b"c7", b"c8", b"c9"]


async def test_processor_restarted_resumes_after_its_last_batch_without_duplicates(
    event_log: EventLog, reopen_log: OpenLog, topic: str, name: Name
) -> None:
    source = await source_holding(event_log, name, topic, [b"c%d" % i for i in range(10)])
    group, transactional_id = name("group"), name("tx")
    make = processor_for(event_log, source, topic, batch_size_max=4)
    first = make(group, transactional_id)
    assert await first.start() == 0
    await process_until(first, 10)
    await first.stop()
    await event_log.close()

    restarted_log = reopen_log()
    await send_values(restarted_log, source, [b"c10", b"c11"])
    make = processor_for(restarted_log, source, topic, batch_size_max=4)
    second = make(group, transactional_id)
    assert await second.start() == 10
    await process_until(second, 12)
    await second.stop()

    assert await values_of(restarted_log, topic) == [b"C%d" % i for i in range(12)]
    await committed_settles_at(restarted_log, group, source, 12)


async def test_processor_replays_up_to_the_committed_offset_without_producing(
    event_log: EventLog, topic: str, name: Name
) -> None:
    source = await source_holding(event_log, name, topic, [b"c%d" % i for i in range(8)])
    group, transactional_id = name("group"), name("tx")
    make = processor_for(event_log, source, topic, batch_size_max=3)
    first = make(group, transactional_id)
    await first.start()
    await process_until(first, 8)
    await first.stop()

    second = make(group, transactional_id)
    assert await second.start() == 8
    replayed: list[Record] = []
    assert await second.replay(2, replayed.extend) == 6
    await second.stop()

    assert [r.offset for r in replayed] == [2, 3, 4, 5, 6, 7]
    assert await values_of(event_log, topic) == [b"C%d" % i for i in range(8)]


async def test_processor_failure_aborts_and_rewinds_to_the_committed_offset(
    event_log: EventLog, topic: str, name: Name
) -> None:
    source = await source_holding(event_log, name, topic, [b"c%d" % i for i in range(6)])
    group = name("group")
    failing = {"transform": True}

    def transform(records: Sequence[Record]) -> list[bytes]:
        if failing["transform"] and records[0].offset >= 3:
            raise ValueError("transform failed")
        return upper(records)

    processor = processor_for(event_log, source, topic, transform, batch_size_max=3)(
        group, name("tx"))
    await processor.start()
    await process_next_batch(processor)
    with pytest.raises(ValueError, match="transform failed"):
        await process_next_batch(processor)
    await committed_settles_at(event_log, group, source, 3)

    failing["transform"] = False
    result = await process_next_batch(processor)
    await processor.stop()

    assert (result.first_offset, result.next_offset) == (3, 6)
    assert await values_of(event_log, topic) == [b"C%d" % i for i in range(6)]


async def test_processor_commits_on_its_cadence_and_what_precedes_a_refused_batch(
    event_log: EventLog, topic: str, name: Name
) -> None:
    """Batches of 3 in transactions of 6 records: nothing is committed after the first
    batch. The transform refusing the fourth batch commits the third first (its outputs may
    have been read; `after_commit` is not called, as the caller's state is part way into
    the refused batch); once the transform takes it, every output is there once."""
    source = await source_holding(event_log, name, topic, [b"c%d" % i for i in range(12)])
    group = name("group")
    failing = {"transform": True}
    committed: list[tuple[int, int]] = []

    def transform(records: Sequence[Record]) -> list[bytes]:
        if failing["transform"] and records[0].offset >= 9:
            raise ValueError("transform failed")
        return upper(records)

    async def after_commit(batch: BatchResult) -> None:
        committed.append((batch.first_offset, batch.next_offset))

    config = ProcessorConfig(input_topic=source, output_topic=topic, group_id=group,
                             transactional_id=name("tx"), batch_size_max=3,
                             commit_interval_ms=3_600_000, commit_records_max=6)
    processor = TransactionalProcessor(event_log, config, transform, after_commit=after_commit)
    await processor.start()
    await process_next_batch(processor)
    assert processor.committed_offset == 0 and committed == []
    await process_next_batch(processor)
    assert processor.committed_offset == 6 and committed == [(0, 6)]
    await process_next_batch(processor)  # 6..9, in a new transaction
    with pytest.raises(ValueError, match="transform failed"):
        await process_next_batch(processor)
    assert processor.committed_offset == 9
    await committed_settles_at(event_log, group, source, 9)

    failing["transform"] = False
    await process_next_batch(processor)  # 9..12, open
    stop = asyncio.Event()
    stop.set()
    await processor.run(stop)  # commits what is open
    await processor.stop()

    assert committed == [(0, 6), (9, 12)]
    assert await values_of(event_log, topic) == [b"C%d" % i for i in range(12)]


async def test_processor_run_commits_what_is_open_when_stopped(
    event_log: EventLog, topic: str, name: Name
) -> None:
    source = await source_holding(event_log, name, topic, [b"c0", b"c1"])
    group = name("group")
    config = ProcessorConfig(input_topic=source, output_topic=topic, group_id=group,
                             transactional_id=name("tx"), commit_interval_ms=3_600_000)
    processor = TransactionalProcessor(event_log, config, upper)
    await processor.start()
    await process_next_batch(processor)
    assert processor.committed_offset == 0
    stop = asyncio.Event()
    stop.set()
    await processor.run(stop)
    await processor.stop()

    assert processor.committed_offset == 2
    await committed_settles_at(event_log, group, source, 2)
    assert await values_of(event_log, topic) == [b"C0", b"C1"]


async def test_processor_write_failure_inside_the_transaction_leaves_nothing(
    event_log: EventLog, topic: str, name: Name
) -> None:
    source = await source_holding(event_log, name, topic, [b"c0", b"c1"])
    group = name("group")
    # The output topic has only partition 0.
    processor = processor_for(event_log, source, topic, output_partition=1)(group, name("tx"))
    await processor.start()
    with pytest.raises(TopicError):
        await process_next_batch(processor)
    with pytest.raises(TopicError):
        await process_next_batch(processor)  # rewound: the same batch fails the same way
    await processor.stop()

    assert await event_log.committed_offset(group, source) is None
    assert await values_of(event_log, topic) == []


async def test_newer_producer_with_the_same_transactional_id_fences_the_older(
    event_log: EventLog, topic: str, name: Name
) -> None:
    transactional_id = name("tx")
    await create(event_log, topic)
    older = event_log.producer(transactional_id)
    await older.start()
    await older.begin()
    await older.send(topic, b"from-older")
    async with event_log.producer(transactional_id) as newer:
        with pytest.raises(FencedError):
            await older.commit()
        await older.abort()
        with pytest.raises(FencedError):
            await older.begin()
        async with newer.transaction():
            await newer.send(topic, b"from-newer")
    await older.stop()

    assert await values_of(event_log, topic) == [b"from-newer"]


async def test_end_offset_counts_past_transaction_markers_and_read_to_end_stops_there(
    event_log: EventLog, topic: str, name: Name
) -> None:
    await create(event_log, topic)
    async with event_log.producer(name("tx")) as producer:
        for value in (b"t0", b"t1", b"t2"):
            async with producer.transaction():
                await producer.send(topic, value)

    end_offset = await settled_end_offset(event_log, topic)
    async with event_log.consumer(topic, start="earliest") as consumer:
        assert await consumer.end_offset() == end_offset
        records = await read_to_end(consumer)
        position = await consumer.position()

    assert [r.value for r in records] == [b"t0", b"t1", b"t2"]
    assert end_offset >= 3  # Kafka counts one commit marker per transaction
    assert position == end_offset


async def test_create_topics_is_idempotent_and_keeps_partitions_apart(
    event_log: EventLog, topic: str
) -> None:
    await create(event_log, topic, partitions=2)
    await create(event_log, topic, partitions=2)
    async with event_log.producer() as producer:
        assert await producer.send(topic, b"p0", partition=0) == 0
        assert await producer.send(topic, b"p1", partition=1) == 0
        with pytest.raises(TopicError):
            await producer.send(topic, b"nowhere", partition=2)
    with pytest.raises(TopicError):
        await create(event_log, topic, partitions=3)
    with pytest.raises(TopicError):
        async with event_log.consumer(topic, partition=2, start="earliest"):
            pass

    assert await values_of(event_log, topic, partition=0) == [b"p0"]
    assert await values_of(event_log, topic, partition=1) == [b"p1"]


async def test_transactional_calls_out_of_order_are_refused(
    event_log: EventLog, topic: str, name: Name
) -> None:
    await create(event_log, topic)
    async with event_log.producer(name("tx")) as transactional:
        with pytest.raises(TransactionStateError):
            await transactional.send(topic, b"outside")
        with pytest.raises(TransactionStateError):
            await transactional.commit()
        with pytest.raises(TransactionStateError):
            await transactional.send_offsets("group", {(topic, 0): 1})
        await transactional.begin()
        with pytest.raises(TransactionStateError):
            await transactional.begin()
        await transactional.abort()
    async with event_log.producer() as plain:
        with pytest.raises(TransactionStateError):
            await plain.begin()
