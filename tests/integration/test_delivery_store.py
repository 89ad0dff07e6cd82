"""The delivery schema on a real PostgreSQL: intake that takes every event once, the samples'
chain enforced by the database (each minute extends the previous one, none twice, none
changed or deleted), certificates owed per holder key, and reports answered once."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from delivery import store
from delivery.evidence import StoredSample
from delivery.store import Assignment, Instrument, Progress
from runtime.postgres import connect, create_database, drop_database

START_NS = 1_800_000_000 * 10**9
HOUR_NS = 3600 * 10**9
SIGNER = "ed25519:0123456789abcdef"


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"delivery_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    connection = await connect(url)
    await store.migrate(connection)
    await store.publish_signer(connection, SIGNER, bytes(range(32)), 1)
    yield connection
    await connection.close()
    await drop_database(database_url, name)


INSTRUMENT = Instrument(symbol="H100.eu.h1", gpu="H100-SXM-80GB", region="eu-north",
                        delivery_start_ns=START_NS, delivery_hours=1, listed_seq=3)


def assigned(holder: str, seq: int) -> Assignment:
    return Assignment(issue_id="op.i1", holder=holder, instrument=INSTRUMENT.symbol,
                      issuer="op", node_id="n-1", quantity=4, window_start_ns=START_NS,
                      window_end_ns=START_NS + HOUR_NS, assigned_seq=seq)


def sample(minute: int, prev_hash: bytes) -> StoredSample:
    body = f"minute {minute}".encode()
    return StoredSample(minute=minute, body=body, sample_hash=hashlib.sha256(body).digest(),
                        prev_hash=prev_hash, signer_id=SIGNER, signature=bytes(64))


async def test_a_batch_applied_twice_stores_each_event_once_with_its_position(
    connection: asyncpg.Connection,
) -> None:
    assert await store.progress(connection) is None
    batch = ([INSTRUMENT], [assigned("alice", 9), assigned("bob", 10)],
             Progress(last_seq=10, next_offset=14))
    await store.apply_events(connection, *batch)
    await store.apply_events(connection, *batch)  # read again after a crash before the commit
    assert await store.progress(connection) == Progress(last_seq=10, next_offset=14)
    active = await store.active_assignments(connection, START_NS + 1, 100)
    assert [(a.holder, a.gpu, a.window_minutes, a.quantity) for a in active] == [
        ("alice", "H100-SXM-80GB", 60, 4), ("bob", "H100-SXM-80GB", 60, 4)]
    assert await store.active_assignments(connection, START_NS, 100) == []
    with pytest.raises(ValueError, match="behind"):
        await store.apply_events(connection, [], [], Progress(last_seq=9, next_offset=13))


async def test_samples_extend_the_chain_once_each_and_never_change(
    connection: asyncpg.Connection,
) -> None:
    await store.apply_events(connection, [INSTRUMENT], [assigned("alice", 9)],
                             Progress(last_seq=9, next_offset=9))
    with pytest.raises(store.ChainRefused):  # minute 0 links to zeros
        await store.append_sample(connection, "op.i1", "alice", sample(0, b"\x01" * 32), 7)
    first = sample(0, store.ZERO_HASH)
    await store.append_sample(connection, "op.i1", "alice", first, 7)
    with pytest.raises(store.ChainRefused):  # the minute is taken
        await store.append_sample(connection, "op.i1", "alice", first, 7)
    with pytest.raises(store.ChainRefused):  # a gap
        await store.append_sample(connection, "op.i1", "alice", sample(2, first.sample_hash), 7)
    with pytest.raises(store.ChainRefused):  # a broken link
        await store.append_sample(connection, "op.i1", "alice", sample(1, store.ZERO_HASH), 7)
    second = sample(1, first.sample_hash)
    await store.append_sample(connection, "op.i1", "alice", second, 7)
    with pytest.raises(store.ChainRefused):  # beyond the window's 60 minutes
        await store.append_sample(connection, "op.i1", "alice", sample(60, second.sample_hash), 7)
    assert await store.samples(connection, "op.i1", "alice") == [first, second]
    for statement in ("UPDATE delivery.samples SET written_ns = 0",
                      "DELETE FROM delivery.samples WHERE minute = 1"):
        with pytest.raises(asyncpg.RaiseError):
            await connection.execute(statement)
    assert await store.samples(connection, "op.i1", "alice") == [first, second]


async def test_certificates_are_owed_per_holder_key_until_stored(
    connection: asyncpg.Connection,
) -> None:
    await store.apply_events(connection, [INSTRUMENT], [assigned("alice", 9)],
                             Progress(last_seq=9, next_offset=9))
    for fingerprint in ("SHA256:a", "SHA256:b"):
        await connection.execute(
            "INSERT INTO delivery.ssh_keys (account, fingerprint, public_key, added_ns) "
            "VALUES ('alice', $1, 'ssh-ed25519 AAAA', 0)", fingerprint)
    missing = await store.missing_certificates(connection, START_NS, 100)
    assert [m.fingerprint for m in missing] == ["SHA256:a", "SHA256:b"]
    serials = [await store.next_serial(connection) for _ in missing]
    assert len(set(serials)) == 2
    assert await store.store_certificate(connection, missing[0], serials[0], "cert a",
                                         START_NS, START_NS + HOUR_NS, 1)
    assert not await store.store_certificate(connection, missing[0], serials[1], "cert a2",
                                             START_NS, START_NS + HOUR_NS, 1)
    assert [m.fingerprint for m in await store.missing_certificates(
        connection, START_NS, 100)] == ["SHA256:b"]
    assert await store.missing_certificates(connection, START_NS + HOUR_NS, 100) == []


async def test_a_report_is_written_once_and_answered_once(
    connection: asyncpg.Connection,
) -> None:
    await store.apply_events(connection, [INSTRUMENT], [assigned("alice", 9)],
                             Progress(last_seq=9, next_offset=9))
    row = store.ReportRow(issue_id="op.i1", holder="alice", node_id="n-1", issuer="op",
                          delivered_ppm=750_000, delivered_minutes=45, window_minutes=60,
                          evidence_root=bytes(32), quality=b'{"delivered_ppm": 750000}',
                          reported_ns=5, outcome=None)
    assert await store.write_report(connection, row) == row
    other = store.ReportRow(**{**{f: getattr(row, f) for f in row.__struct_fields__},
                               "delivered_ppm": 1})
    assert await store.write_report(connection, other) == row
    assert await store.active_assignments(connection, START_NS + 1, 100) == []
    assert await store.pending_reports(connection, 10) == [row]
    await store.record_outcome(connection, "op.i1", "alice", "settled")
    await store.record_outcome(connection, "op.i1", "alice", "already_reported")
    assert await store.pending_reports(connection, 10) == []
    stored = await store.report(connection, "op.i1", "alice")
    assert stored is not None and stored.outcome == "settled"


async def test_gpux_delivery_migrate_creates_the_schema_and_runs_again(database_url: str) -> None:
    name = f"delivery_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    try:
        for _ in range(2):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gpux", "delivery", "migrate", "--database-url", url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
            assert out.decode().strip() == "schema delivery is up to date"
        connection = await connect(url)
        try:
            assert await store.progress(connection) is None
        finally:
            await connection.close()
    finally:
        await drop_database(database_url, name)
