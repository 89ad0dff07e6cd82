"""Test support: a fresh database per test module, and stand-ins for the ledger's tables.

`ledger.trades` and `ledger.withdrawals` belong to the ledger package; until its migrations
can be run from settlement's tests, `create_ledger_trades_stand_in` creates tables with the
columns settlement reads, as in ledger/migrations/001_journal.sql: trades(seq bigint pk,
trade_id, instrument, price_micro, quantity, buyer, seller, buyer_fee_micro,
seller_fee_micro, maker_account, taker_account, aggressor_side, ts) and withdrawals(seq,
account, asset, amount, ts), amounts in integer base units (micro-USDC or GPU-hours). Never
used outside tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from runtime.postgres import create_database
from settlement.fills import Fill

LEDGER_TRADES_STAND_IN = """
CREATE SCHEMA IF NOT EXISTS ledger;
CREATE TABLE IF NOT EXISTS ledger.trades (
    seq bigint PRIMARY KEY,
    trade_id text NOT NULL UNIQUE,
    instrument text NOT NULL,
    price_micro bigint NOT NULL,
    quantity bigint NOT NULL,
    buyer text NOT NULL,
    seller text NOT NULL,
    buyer_fee_micro bigint NOT NULL,
    seller_fee_micro bigint NOT NULL,
    maker_account text NOT NULL,
    taker_account text NOT NULL,
    aggressor_side text NOT NULL,
    ts bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger.withdrawals (
    seq bigint PRIMARY KEY,
    account text NOT NULL,
    asset text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    ts bigint NOT NULL
);
"""


async def fresh_database(superuser_url: str, prefix: str = "settlement") -> str:
    """Create an empty database and return its URL (same server and credentials)."""
    return await create_database(superuser_url, f"{prefix}_{uuid.uuid4().hex[:10]}")


async def create_ledger_trades_stand_in(conn: asyncpg.Connection) -> None:
    await conn.execute(LEDGER_TRADES_STAND_IN)


async def insert_trades(conn: asyncpg.Connection, fills: Sequence[Fill], ts: int = 0) -> None:
    """Append fills to the stand-in table as the ledger projector would."""
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
