"""Append journal batches to PostgreSQL and read back where the journal stands.

`append_batch` writes one batch in one transaction: entries, postings and the side rows
(trades, withdrawals, listings, issues, bond releases, redemptions, delivery reports) by
COPY, then the checkpoint row (last applied seq and the log offset after it). A crash
anywhere loses the whole transaction, so the database always holds whole batches and a
checkpoint that says exactly where they end; `read_position` and `read_delivery_state`
read back what the journal builder continues from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from ledger.errors import LedgerStateError, LockTimeoutError
from ledger.journal import (
    BOND_RELEASE_COLUMNS,
    CHAIN_ACCOUNT,
    DELIVERY_REPORT_COLUMNS,
    ENTRY_COLUMNS,
    GENESIS_HASH,
    INSTRUMENT_COLUMNS,
    ISSUE_COLUMNS,
    POSTING_COLUMNS,
    REDEMPTION_COLUMNS,
    TRADE_COLUMNS,
    WITHDRAWAL_COLUMNS,
    DeliveryState,
    JournalBatch,
)

__all__ = ["Position", "acquire_writer_lock", "append_batch", "read_delivery_state",
           "read_position"]

SCHEMA = "ledger"
# Held for the whole session by the one projector allowed to write ("gpuxLEDG").
WRITER_LOCK_KEY = 0x6770_7578_4C45_4447
LOCK_POLL_INTERVAL_S = 0.1

_INSERT_CHECKPOINT = (
    "INSERT INTO ledger.checkpoints (first_seq, last_seq, next_offset) VALUES ($1, $2, $3)"
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where the journal stands: the last applied seq, the log offset after it, the head hash."""

    last_seq: int
    next_offset: int
    head_hash: bytes


async def read_position(connection: asyncpg.Connection) -> Position:
    """Return the newest checkpoint and the hash of the newest entry (zeros when empty)."""
    checkpoint = await connection.fetchrow(
        "SELECT last_seq, next_offset FROM ledger.checkpoints ORDER BY last_seq DESC LIMIT 1"
    )
    head = await connection.fetchrow(
        "SELECT seq, hash FROM ledger.entries ORDER BY seq DESC LIMIT 1"
    )
    if checkpoint is None:
        if head is not None:
            raise LedgerStateError(f"entry {head['seq']} exists without any checkpoint")
        return Position(0, 0, GENESIS_HASH)
    if head is not None and head["seq"] > checkpoint["last_seq"]:
        raise LedgerStateError(
            f"entry {head['seq']} lies beyond checkpoint {checkpoint['last_seq']}"
        )
    head_hash = GENESIS_HASH if head is None else bytes(head["hash"])
    return Position(checkpoint["last_seq"], checkpoint["next_offset"], head_hash)


async def read_delivery_state(connection: asyncpg.Connection) -> DeliveryState:
    """Return the deliverable instruments' bonds, and the holdings of those still open, as
    the journal stands.

    The holdings are summed from the postings since the oldest open deliverable listing
    (earlier postings cannot touch its token): a scan of the journal since then, once per
    start, and none at all while no deliverable instrument is open.
    """
    listed = await connection.fetch(
        "SELECT i.symbol, i.seq, i.bond_per_gpu_hour, r.seq IS NULL AS open "
        "FROM ledger.instruments AS i LEFT JOIN ledger.redemptions AS r "
        "ON r.instrument = i.symbol WHERE i.bond_per_gpu_hour IS NOT NULL"
    )
    state = DeliveryState(
        bonds={row["symbol"]: row["bond_per_gpu_hour"] for row in listed},
        holdings={row["symbol"]: {} for row in listed if row["open"]},
    )
    if state.holdings:
        rows = await connection.fetch(
            "SELECT account, asset, sum(amount) AS amount FROM ledger.postings "
            "WHERE seq >= $1 AND asset = ANY($2::text[]) AND account <> $3 "
            "GROUP BY account, asset HAVING sum(amount) <> 0",
            min(row["seq"] for row in listed if row["open"]), list(state.holdings),
            CHAIN_ACCOUNT,
        )
        for row in rows:
            state.holdings[row["asset"]][row["account"]] = int(row["amount"])
    return state


async def acquire_writer_lock(connection: asyncpg.Connection, timeout_s: float) -> None:
    """Take the session lock only one projector may hold; wait up to `timeout_s` for it.

    A projector killed with SIGKILL loses its connection and so its lock at once; the
    wait covers a predecessor still shutting down.
    """
    deadline_s = time.monotonic() + timeout_s
    while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK_KEY):
        if time.monotonic() >= deadline_s:
            raise LockTimeoutError(f"another projector held the writer lock for {timeout_s} s")
        await asyncio.sleep(LOCK_POLL_INTERVAL_S)


async def append_batch(
    connection: asyncpg.Connection,
    batch: JournalBatch,
    *,
    before_checkpoint: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Append the batch's rows and its checkpoint atomically.

    `before_checkpoint` is awaited inside the transaction after the rows are written and
    before the checkpoint row: a caller that writes batches on several connections waits
    there for the batch before to commit. If it raises, the transaction rolls back.
    """
    if batch.event_count < 1:
        raise ValueError("a batch to append holds at least one event")
    async with connection.transaction():
        if batch.entries:
            await connection.copy_records_to_table(
                "entries", schema_name=SCHEMA, columns=ENTRY_COLUMNS, records=batch.entries
            )
            await connection.copy_records_to_table(
                "postings", schema_name=SCHEMA, columns=POSTING_COLUMNS, records=batch.postings
            )
        if batch.trades:
            await connection.copy_records_to_table(
                "trades", schema_name=SCHEMA, columns=TRADE_COLUMNS, records=batch.trades
            )
        for table, columns, records in (
            ("withdrawals", WITHDRAWAL_COLUMNS, batch.withdrawals),
            ("instruments", INSTRUMENT_COLUMNS, batch.instruments),
            ("issues", ISSUE_COLUMNS, batch.issues),
            ("bond_releases", BOND_RELEASE_COLUMNS, batch.bond_releases),
            ("redemptions", REDEMPTION_COLUMNS, batch.redemptions),
            ("delivery_reports", DELIVERY_REPORT_COLUMNS, batch.delivery_reports),
        ):
            if records:
                await connection.copy_records_to_table(
                    table, schema_name=SCHEMA, columns=columns, records=records
                )
        if before_checkpoint is not None:
            await before_checkpoint()
        await connection.execute(
            _INSERT_CHECKPOINT, batch.first_seq, batch.last_seq, batch.next_offset
        )
