"""The index's table on a real PostgreSQL: the migration, idempotent upserts, and the reads
the gateway and settlement use (a class's history, the latest per class, the values after a
seq with each seq's rows whole)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from msgspec.structs import replace

from index import store
from index.value import MINUTE_NS, IndexValue, Source
from runtime.postgres import connect, create_database, drop_database

T0 = 29_000_000 * MINUTE_NS


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"index_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    connection = await connect(url)
    await store.migrate(connection)
    yield connection
    await connection.close()
    await drop_database(database_url, name)


def value(gpu: str, minute: int, last_seq: int, *, region: str = "eu-west",
          value_micro: int | None = 2_150_000, source: Source = "trades") -> IndexValue:
    trades = source == "trades"
    return IndexValue(
        gpu=gpu, region=region, minute_ns=T0 + minute * MINUTE_NS, value_micro=value_micro,
        source=source, trade_count=3 if trades else 0, volume=24 if trades else 0,
        instrument_count=2 if trades else 0, sufficient=False,
        inputs_hash=hashlib.sha256(f"{gpu}{minute}{value_micro}".encode()).digest(),
        last_seq=last_seq,
    )


async def write(connection: asyncpg.Connection, rows: list[IndexValue]) -> None:
    async with connection.transaction():
        await store.write_values(connection, rows)


async def test_upserts_are_idempotent_and_reads_return_what_was_written(
    connection: asyncpg.Connection,
) -> None:
    rows = [value("H100", 1, 10), value("A100", 1, 10, source="mid", value_micro=1_300_000),
            value("H100", 2, 15, source="last"), value("A100", 2, 15, source="none",
                                                        value_micro=None)]
    await write(connection, rows)
    await write(connection, rows)  # a restart writes the same rows again
    assert await connection.fetchval("SELECT count(*) FROM index.values") == 4
    history = await store.values(connection, "H100", "eu-west", T0, T0 + 10 * MINUTE_NS, 100)
    assert history == [rows[0], rows[2]]
    assert await store.values(connection, "H100", "eu-west", T0 + 2 * MINUTE_NS,
                              T0 + 10 * MINUTE_NS, 100) == [rows[2]]
    assert await store.values(connection, "H100", "eu-west", T0, T0 + 10 * MINUTE_NS, 1) == [
        rows[0]]
    assert await store.latest(connection) == [rows[3], rows[2]]  # A100 before H100


async def test_a_changed_value_replaces_the_stored_one(connection: asyncpg.Connection) -> None:
    await write(connection, [value("H100", 1, 10)])
    changed = value("H100", 1, 10, value_micro=2_000_000)
    await write(connection, [changed])
    assert await store.latest(connection) == [changed]


async def test_values_after_hands_out_each_last_seq_whole(
    connection: asyncpg.Connection,
) -> None:
    # one event released minutes 1..3 of both classes at once (a quiet log), the next minute 4
    group = [value(gpu, minute, 10) for minute in (1, 2, 3) for gpu in ("H100", "A100")]
    later = [value("H100", 4, 12), value("A100", 4, 12)]
    await write(connection, group + later)
    first = await store.values_after(connection, 0, 1)
    assert [(row.last_seq, row.minute_ns, row.gpu) for row in first] == [
        (10, row.minute_ns, row.gpu)
        for row in sorted(group, key=lambda row: (row.minute_ns, row.gpu))]
    assert await store.values_after(connection, 10, 5) == sorted(later, key=lambda r: r.gpu)
    assert await store.values_after(connection, 12, 5) == []
    assert len(await store.values_after(connection, 0, 2)) == 8


async def test_the_table_refuses_a_row_that_contradicts_itself(
    connection: asyncpg.Connection,
) -> None:
    bad = [
        value("H100", 1, 10, source="none"),  # a value under source "none"
        value("H100", 1, 10, source="trades", value_micro=None),
        replace(value("H100", 1, 10, source="mid"), trade_count=2),
        replace(value("H100", 1, 10), minute_ns=T0 + 1),
        replace(value("H100", 1, 10), inputs_hash=b"short"),
        replace(value("H100", 1, 10, source="last"), sufficient=True),
    ]
    for row in bad:
        with pytest.raises(asyncpg.CheckViolationError):
            await write(connection, [row])
    assert await connection.fetchval("SELECT count(*) FROM index.values") == 0
