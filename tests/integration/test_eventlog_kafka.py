"""The Kafka adapter against a real broker: crash mid-transaction, and topic configs."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import pytest

from eventlog.errors import LogError
from eventlog.kafka import KafkaLog
from eventlog.port import Isolation, Record, TopicSpec
from eventlog.reading import read_until, settled_end_offset
from tests.helpers import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = [b"committed-0", b"committed-1", b"committed-2"]
PARTIAL = [b"partial-%d" % i for i in range(5)]
READY_LINE = b"partial batch sent\n"

# Commits one batch, sends part of a second in an open transaction, says so, then waits
# to be killed. Arguments: bootstrap servers, topic, transactional id.
CRASHING_PRODUCER = f"""
import asyncio, sys
from eventlog.kafka import KafkaConfig, KafkaLog

async def main(bootstrap, topic, transactional_id):
    log = KafkaLog(KafkaConfig(bootstrap_servers=bootstrap))
    producer = log.producer(transactional_id)
    await producer.start()
    async with producer.transaction():
        await producer.send_batch(topic, {COMMITTED!r})
    await producer.begin()
    await producer.send_batch(topic, {PARTIAL!r})
    sys.stdout.buffer.write({READY_LINE!r})
    sys.stdout.flush()
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:4]))
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def read_from_start(
    log: KafkaLog, topic: str, end_offset: int, isolation: Isolation
) -> list[Record]:
    async with log.consumer(topic, isolation=isolation, start="earliest") as consumer:
        return await read_until(consumer, end_offset, timeout_s=30)


async def start_crashing_producer(
    bootstrap: str, topic: str, transactional_id: str
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_PRODUCER,
        bootstrap,
        topic,
        transactional_id,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert line == READY_LINE, f"producer exited early with {await process.wait()}"
    return process


async def test_producer_killed_mid_transaction_leaves_no_partial_batch(
    kafka_log: KafkaLog, kafka_bootstrap: str
) -> None:
    topic, transactional_id = unique("crash"), unique("crash-tx")
    await kafka_log.create_topics([TopicSpec(name=topic)])
    process = await start_crashing_producer(kafka_bootstrap, topic, transactional_id)
    try:
        written_min = len(COMMITTED) + 1 + len(PARTIAL)  # records, commit marker, partial
        await eventually(
            lambda: _end_at_least(kafka_log, topic, written_min),
            timeout_s=30,
            message="the partial batch reached the broker",
        )
    finally:
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    async with kafka_log.producer(transactional_id):  # fences the dead one, aborting its batch
        end_offset = await settled_end_offset(kafka_log, topic, timeout_s=30)
    committed = await read_from_start(kafka_log, topic, end_offset, "read_committed")
    everything = await read_from_start(kafka_log, topic, end_offset, "read_uncommitted")

    assert [r.value for r in committed] == COMMITTED
    assert [r.value for r in everything] == COMMITTED + PARTIAL
    assert end_offset > everything[-1].offset + 1  # an abort marker closed the partial batch


async def _end_at_least(log: KafkaLog, topic: str, offset: int) -> bool:
    return await log.end_offset(topic, isolation="read_uncommitted") >= offset


async def test_created_topic_has_the_partitions_and_configs_of_its_spec(
    kafka_log: KafkaLog,
) -> None:
    spec = TopicSpec(
        name=unique("configured"),
        partitions=3,
        retention_ms=3_600_000,
        min_insync_replicas=1,
        cleanup_policy="compact",
    )
    await kafka_log.create_topics([spec])
    await kafka_log.create_topics([spec])  # existing with the same layout: accepted

    configs = await kafka_log.describe_topic_config(spec.name)
    async with kafka_log.consumer(spec.name, partition=2, start="earliest") as last_partition:
        last_partition_end = await last_partition.end_offset()

    assert configs["retention.ms"] == "3600000"
    assert configs["min.insync.replicas"] == "1"
    assert configs["cleanup.policy"] == "compact"
    assert last_partition_end == 0


async def test_venue_topics_keep_records_forever_by_default(kafka_log: KafkaLog) -> None:
    spec = TopicSpec(name=unique("venue"))
    await kafka_log.create_topics([spec])

    configs = await kafka_log.describe_topic_config(spec.name)

    assert configs["retention.ms"] == "-1"
    assert configs["cleanup.policy"] == "delete"


async def test_a_send_after_a_failed_send_in_a_transaction_fails_at_once(
    kafka_log: KafkaLog, kafka_bootstrap: str,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

    topic = unique("small-records")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1,
                                            topic_configs={"max.message.bytes": "1000"})])
    finally:
        await admin.close()
    producer = kafka_log.producer(unique("fail-fast"))
    await producer.start()
    refusals: list[LogError] = []

    async def refused() -> bool:
        try:
            await producer.send_batch(topic, [])  # sends nothing; checks the earlier sends
        except LogError as error:
            refusals.append(error)
            return True
        return False

    try:
        await producer.begin()
        await producer.send_batch(topic, [b"x" * 5000])  # queued; the broker refuses it
        await eventually(refused, message="the refusal raised by a later send")
        with pytest.raises(LogError):
            await producer.send_batch(topic, [b"after"])
        await producer.abort()
    finally:
        await producer.stop()

    assert not refusals[0].retriable
    # no record reached the partition: its one offset is the abort's marker
    assert await kafka_log.end_offset(topic, isolation="read_uncommitted") == 1
