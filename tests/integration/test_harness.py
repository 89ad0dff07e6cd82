"""The harness's services are real: Kafka, PostgreSQL and anvil answer real clients."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import harness.kafka
from harness.anvil import json_rpc
from harness.kafka import KafkaService
from harness.postgres import PostgresService

RPC_TIMEOUT_S = 5.0
KAFKA_TIMEOUT_MS = 20_000


async def first_records(
    kafka_bootstrap: str, topic: str, **options: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Return what one poll from the topic's start gives (one record at most)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, **options,
    )  # fmt: skip
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=KAFKA_TIMEOUT_MS, max_records=1)
    finally:
        await consumer.stop()
    return [record for batch in batches.values() for record in batch]


async def test_kafka_round_trips_one_message(kafka_bootstrap: str) -> None:
    topic = f"harness-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    records = await first_records(kafka_bootstrap, topic)
    assert [(record.key, record.value) for record in records] == [(b"k", b"hello")]
    assert records[0].offset == metadata.offset


async def test_kafka_commits_a_transaction(kafka_bootstrap: str) -> None:
    topic = f"harness-tx-{uuid.uuid4().hex[:12]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"harness-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
    finally:
        await producer.stop()
    records = await first_records(kafka_bootstrap, topic, isolation_level="read_committed")
    assert [record.value for record in records] == [b"committed"]


async def test_postgres_runs_queries_as_superuser(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT 1") == 1
        assert await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = user")
        await connection.execute("CREATE TEMP TABLE greeting (word text NOT NULL)")
        await connection.execute("INSERT INTO greeting VALUES ('hello')")
        assert await connection.fetchval("SELECT word FROM greeting") == "hello"
    finally:
        await connection.close()


async def test_postgres_keeps_committed_rows_after_sigkill(
    postgres_service: PostgresService,
) -> None:
    table = f"survivor_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(postgres_service.url)
    try:
        await connection.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        await connection.execute(f"INSERT INTO {table} VALUES (42)")
    finally:
        await connection.close()
    old_pid = postgres_service.pid
    postgres_service.kill()
    postgres_service.restart()
    assert postgres_service.pid != old_pid
    connection = await asyncpg.connect(postgres_service.url)
    try:
        assert await connection.fetchval(f"SELECT id FROM {table}") == 42
    finally:
        await connection.close()


def test_anvil_answers_chain_id_and_mines_a_block(eth_rpc_url: str) -> None:
    assert json_rpc(eth_rpc_url, "eth_chainId", [], RPC_TIMEOUT_S) == hex(31337)
    before = int(str(json_rpc(eth_rpc_url, "eth_blockNumber", [], RPC_TIMEOUT_S)), 16)
    json_rpc(eth_rpc_url, "evm_mine", [], RPC_TIMEOUT_S)
    after = int(str(json_rpc(eth_rpc_url, "eth_blockNumber", [], RPC_TIMEOUT_S)), 16)
    assert after == before + 1


def test_kafka_storage_formats_with_a_cluster_id_that_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One random id in 64 starts with "-", which the storage tool took for an option: the
    fault suite once failed to start its broker so (seen in a fresh-clone CI run)."""
    cluster_id = "-" + "A" * 21
    monkeypatch.setattr(harness.kafka, "random_cluster_id", lambda: cluster_id)
    service = KafkaService(tmp_path / "kafka")
    service._prepare()
    meta = (service.data_dir / "meta.properties").read_text(encoding="utf-8")
    assert f"cluster.id={cluster_id}" in meta
