"""Test support: a fresh database per test module with the ledger's tables, and trades and
withdrawals written into them as the ledger projector would. Never used outside tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from ledger.migrate import apply_migrations
from runtime.postgres import create_database
from settlement.fills import Fill


async def fresh_database(superuser_url: str, prefix: str = "settlement") -> str:
    """Create an empty database and return its URL (same server and credentials)."""
    return await create_database(superuser_url, f"{prefix}_{uuid.uuid4().hex[:10]}")


async def create_ledger_tables(conn: asyncpg.Connection) -> None:
    """The ledger's schema, by the ledger's own migrations."""
    await apply_migrations(conn)


async def insert_trades(conn: asyncpg.Connection, fills: Sequence[Fill], ts: int = 0) -> None:
    """Append fills to `ledger.trades` as the ledger projector would (without their
    journal entries: settlement reads only the trades)."""
    await conn.executemany(
        "INSERT INTO ledger.trades VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
        "'buy', $12)",
        [(f.seq, f.trade_id, f.instrument, f.price_micro, f.quantity, f.buyer, f.seller,
          f.buyer_fee_micro, f.seller_fee_micro, f.seller, f.buyer, ts) for f in fills],
    )  # fmt: skip


async def insert_withdrawal(conn: asyncpg.Connection, seq: int, account: str, asset: str,
                            amount: int) -> None:
    await conn.execute("INSERT INTO ledger.withdrawals VALUES ($1, $2, $3, $4, 0)",
                       seq, account, asset, amount)
