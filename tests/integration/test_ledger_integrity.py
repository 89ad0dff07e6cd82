"""The journal's integrity on real PostgreSQL: append-only, balanced, chained, migrated.

Each test gets a fresh database on the session's server, migrated, with the service role
able to log in; rows are appended through the projector's own store path.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from eventlog.port import Record
from ledger.journal import GENESIS_HASH, JournalBuilder
from ledger.migrate import SERVICE_ROLE, Migration, apply_migrations, load_migrations
from ledger.store import append_batch, read_position
from ledger.verify import verify_chain
from protocol import NewOrder, Withdraw, encode
from runtime.postgres import connect
from tests.integration.ledger_db import (
    ROOT,
    SYMBOL,
    LedgerDatabase,
    engine_events,
    opening_commands,
)


def trading_events() -> list[Any]:
    """Return the events of deposits, a few fills and a withdrawal, from the engine core."""
    return engine_events([
        *opening_commands(),
        NewOrder(ts=5, account="alice", client_order_id="b2", instrument=SYMBOL, side="buy",
                 order_type="market", quantity=3),
        Withdraw(ts=6, account="alice", asset="USDC", amount="100"),
    ])


async def append_events(url: str, events: list[Any]) -> None:
    """Append the events as one batch through the projector's store, as the service role."""
    connection = await connect(url, role=SERVICE_ROLE)
    try:
        position = await read_position(connection)
        builder = JournalBuilder(position.last_seq, position.head_hash)
        batch = builder.build([Record("events", 0, position.next_offset + index, None,
                                      encode(event)) for index, event in enumerate(events)])
        assert batch.failure is None
        await append_batch(connection, batch)
    finally:
        await connection.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpux", "ledger", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_migrations_are_recorded_and_applied_once(ledger_db: LedgerDatabase) -> None:
    connection = await connect(ledger_db.owner_url)
    try:
        assert await apply_migrations(connection) == []
        recorded = await connection.fetch(
            "SELECT version, name FROM ledger.schema_migrations ORDER BY version"
        )
        assert [(row[0], row[1]) for row in recorded] == [
            (m.version, m.name) for m in load_migrations()
        ]
        changed = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in load_migrations()]
        with pytest.raises(Exception, match="changed since it was applied"):
            await apply_migrations(connection, changed)
    finally:
        await connection.close()
    result = run_cli("migrate", "--database-url", ledger_db.owner_url)
    assert result.returncode == 0 and "up to date" in result.stdout, result.stderr


async def test_service_role_cannot_update_delete_or_truncate(ledger_db: LedgerDatabase) -> None:
    await append_events(ledger_db.service_url, trading_events())
    connection = await asyncpg.connect(ledger_db.service_url)
    try:
        assert await connection.fetchval("SELECT current_user") == SERVICE_ROLE
        for statement in (
            "UPDATE ledger.postings SET amount = amount + 1",
            "DELETE FROM ledger.postings",
            "UPDATE ledger.entries SET ts = 0",
            "DELETE FROM ledger.entries WHERE seq = 2",
            "TRUNCATE ledger.postings",
            "DELETE FROM ledger.checkpoints",
            "UPDATE ledger.issues SET bond = 0",
            "DELETE FROM ledger.bond_releases",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
        assert await connection.fetchval("SELECT count(*) FROM ledger.postings") > 0
    finally:
        await connection.close()


async def test_even_the_owner_cannot_change_history(ledger_db: LedgerDatabase) -> None:
    await append_events(ledger_db.service_url, trading_events())
    connection = await connect(ledger_db.owner_url)
    try:
        assert await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = "
                                         "current_user")
        for statement in (
            "UPDATE ledger.postings SET amount = amount + 1 WHERE false",
            "DELETE FROM ledger.trades",
            "TRUNCATE ledger.entries CASCADE",
            "UPDATE ledger.withdrawals SET amount = 1",
            "DELETE FROM ledger.instruments",
            "UPDATE ledger.issues SET bond = 0",
            "TRUNCATE ledger.bond_releases",
            "DELETE FROM ledger.redemptions",
        ):
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                await connection.execute(statement)
        await connection.execute("SET session_replication_role = replica")
        with pytest.raises(asyncpg.RestrictViolationError):
            await connection.execute("DELETE FROM ledger.postings")
    finally:
        await connection.close()


async def test_verify_names_the_entry_altered_behind_the_services_back(
    ledger_db: LedgerDatabase,
) -> None:
    await append_events(ledger_db.service_url, trading_events())
    result = run_cli("verify", "--database-url", ledger_db.owner_url)
    assert result.returncode == 0 and result.stdout.startswith("ok:"), result.stderr
    connection = await connect(ledger_db.owner_url)
    try:
        trade_seq = await connection.fetchval(
            "SELECT min(seq) FROM ledger.entries WHERE kind = 'trade'"
        )
        assert (await verify_chain(connection)).ok
        async with connection.transaction():
            await connection.execute(
                "ALTER TABLE ledger.postings DISABLE TRIGGER postings_refuse_update_delete"
            )
            # Skim one micro-USDC off the fee and hand it to the seller: still balanced.
            await connection.execute(
                "UPDATE ledger.postings SET amount = amount - 1 "
                "WHERE seq = $1 AND account = 'fees'", trade_seq)
            await connection.execute(
                "UPDATE ledger.postings SET amount = amount + 1 "
                "WHERE seq = $1 AND account = 'bob' AND asset = 'USDC'", trade_seq)
            await connection.execute(
                "ALTER TABLE ledger.postings ENABLE ALWAYS TRIGGER postings_refuse_update_delete"
            )
        report = await verify_chain(connection)
    finally:
        await connection.close()
    assert report.broken is not None and report.broken.seq == trade_seq
    assert "does not match its postings" in report.broken.reason
    result = run_cli("verify", "--database-url", ledger_db.owner_url)
    assert result.returncode == 1
    assert f"BROKEN at entry seq {trade_seq}" in result.stdout


async def test_verify_finds_a_rewritten_hash_at_the_next_entry(
    ledger_db: LedgerDatabase,
) -> None:
    await append_events(ledger_db.service_url, trading_events())
    connection = await connect(ledger_db.owner_url)
    try:
        first, second = await connection.fetch(
            "SELECT seq FROM ledger.entries ORDER BY seq LIMIT 2"
        )
        async with connection.transaction():
            await connection.execute(
                "ALTER TABLE ledger.entries DISABLE TRIGGER entries_refuse_update_delete"
            )
            await connection.execute(
                "UPDATE ledger.entries SET hash = sha256(hash) WHERE seq = $1", first[0]
            )
            await connection.execute(
                "ALTER TABLE ledger.entries ENABLE ALWAYS TRIGGER entries_refuse_update_delete"
            )
        report = await verify_chain(connection)
    finally:
        await connection.close()
    assert report.broken is not None and report.broken.seq == first[0]
    assert report.entries_checked == 0


async def test_the_database_rejects_an_unbalanced_entry(ledger_db: LedgerDatabase) -> None:
    connection = await asyncpg.connect(ledger_db.service_url)
    insert_entry = ("INSERT INTO ledger.entries (seq, kind, ts, prev_hash, hash) "
                    "VALUES ($1, 'deposited', 1, $2, $2)")
    insert_posting = ("INSERT INTO ledger.postings (seq, account, asset, amount) VALUES "
                      "($1, 'alice', 'USDC', $2), ($1, '@chain', 'USDC', $3)")
    try:
        async with connection.transaction():
            await connection.execute(insert_entry, 1, GENESIS_HASH)
            await connection.execute(insert_posting, 1, 5, -5)  # balanced: accepted
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance in USDC"):
            async with connection.transaction():
                await connection.execute(insert_entry, 2, GENESIS_HASH)
                await connection.execute(insert_posting, 2, 5, -4)
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            async with connection.transaction():  # each statement must balance by itself
                await connection.execute(insert_entry, 3, GENESIS_HASH)
                await connection.execute("INSERT INTO ledger.postings VALUES "
                                         "(3, 'alice', 'USDC', 5)")
                await connection.execute("INSERT INTO ledger.postings VALUES "
                                         "(3, '@chain', 'USDC', -5)")
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="no journal entry"):
            await connection.execute(insert_posting, 4, 5, -5)
        assert await connection.fetchval("SELECT count(*) FROM ledger.entries") == 1
    finally:
        await connection.close()


async def test_checkpoints_refuse_a_gap(ledger_db: LedgerDatabase) -> None:
    events = trading_events()
    await append_events(ledger_db.service_url, events[:3])
    connection = await asyncpg.connect(ledger_db.service_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="does not continue"):
            await connection.execute(
                "INSERT INTO ledger.checkpoints (first_seq, last_seq, next_offset) "
                "VALUES (5, 6, 6)"
            )
    finally:
        await connection.close()
    await append_events(ledger_db.service_url, events[3:])
    connection = await connect(ledger_db.owner_url)
    try:
        assert (await read_position(connection)).last_seq == len(events)
        assert (await verify_chain(connection)).ok
    finally:
        await connection.close()
