"""A fresh, migrated ledger database for one test, and small markets' events to fill it.

The database is migrated in process (`ledger.migrate`) or by `gpux ledger migrate`, and the
service role can log in by password, as the projector does.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]

from ledger.migrate import SERVICE_ROLE, apply_migrations, set_service_password
from matching_engine.core import Engine
from protocol import (
    AnyCommand,
    DeliveryReport,
    Deposit,
    IssueCapacity,
    ListInstrument,
    NewOrder,
    Tick,
    Withdraw,
)
from runtime.postgres import connect, create_database, url_with_credentials
from tests.integration.database_faults import database_of

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PASSWORD = "ledger-test-password"
SYMBOL = "H100-EU-1"
ZERO_BOND_SYMBOL = "A100-EU-1"  # deliverable with a bond of 0
PLAIN_SYMBOL = "L4-EU-1"  # listed without a bond: closes as in v1
DELIVERY_START = 1_000

MigrateBy = Literal["library", "cli"]


@dataclass(frozen=True)
class LedgerDatabase:
    owner_url: str  # the admin (a superuser), on the fresh database
    service_url: str  # the service role, logging in by password

    @property
    def name(self) -> str:
        return database_of(self.owner_url)


async def create_ledger_database(
    admin_url: str, *, prefix: str = "ledger", migrate_by: MigrateBy = "library",
    connect_as: Callable[[str], Awaitable[asyncpg.Connection]] = connect,
) -> LedgerDatabase:
    """Create a database named `prefix`_<random> and migrate it, in process (on a connection
    from `connect_as`) or by `gpux ledger migrate`; the caller drops it."""
    owner_url = await create_database(admin_url, f"{prefix}_{uuid.uuid4().hex[:12]}")
    if migrate_by == "cli":
        result = subprocess.run(
            [sys.executable, "-m", "gpux", "ledger", "migrate", "--database-url", owner_url,
             "--service-password", SERVICE_PASSWORD],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
    else:
        connection = await connect_as(owner_url)
        try:
            await apply_migrations(connection)
            await set_service_password(connection, SERVICE_PASSWORD)
        finally:
            await connection.close()
    return LedgerDatabase(owner_url,
                          url_with_credentials(owner_url, SERVICE_ROLE, SERVICE_PASSWORD))


def opening_commands() -> list[Any]:
    """List SYMBOL, fund alice (USDC) and bob (GPU-hours), and fill alice's limit buy of 4 at
    2.6 against bob's offer of 10 at 2.5."""
    return [
        ListInstrument(ts=1, symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
                       delivery_start=10**18, delivery_hours=1, tick_size="0.01",
                       max_order_quantity=100, maker_fee_bps=10, taker_fee_bps=20),
        Deposit(ts=2, account="alice", asset="USDC", amount="1000"),
        Deposit(ts=2, account="bob", asset=SYMBOL, amount=50),
        NewOrder(ts=3, account="bob", client_order_id="s1", instrument=SYMBOL, side="sell",
                 order_type="limit", price="2.5", quantity=10),
        NewOrder(ts=4, account="alice", client_order_id="b1", instrument=SYMBOL, side="buy",
                 order_type="limit", price="2.6", quantity=4),
    ]


def engine_events(commands: list[Any]) -> list[Any]:
    """Return the events a fresh engine core makes of the commands, in order."""
    engine = Engine()
    return [event for command in commands for event in engine.apply(command)]


def delivery_listing(symbol: str, bond_per_gpu_hour: str | None) -> ListInstrument:
    """Return a listing whose delivery starts at DELIVERY_START: a Tick past it closes it."""
    return ListInstrument(ts=1, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                          delivery_start=DELIVERY_START, delivery_hours=1, tick_size="0.01",
                          max_order_quantity=100, maker_fee_bps=10, taker_fee_bps=20,
                          bond_per_gpu_hour=bond_per_gpu_hour)


def limit_order(ts: int, account: str, client_order_id: str, symbol: str,
                side: Literal["buy", "sell"], price: str, quantity: int) -> NewOrder:
    return NewOrder(ts=ts, account=account, client_order_id=client_order_id,
                    instrument=symbol, side=side, order_type="limit", price=price,
                    quantity=quantity)


def delivery_commands() -> list[AnyCommand]:
    """Return a Delivery market from listing to reports, one command per step.

    SYMBOL (bond 3 USDC per GPU-hour): op1 issues 10 and sells 6, op2 issues 8 and sells 3
    (its other 5 rest at close), bob buys 4 and withdraws 1, carol buys 5, dave deposits 5
    never issued here and withdraws 2. ZERO_BOND_SYMBOL (bond 0): op1 issues 5 and sells 2
    to bob. PLAIN_SYMBOL (no bond): bob deposits 7. A tick closes all three; then bob's
    delivery of op1's issue is reported 75 % delivered, carol's of op2's in full (with
    evidence), bob's of the zero bond not at all; the other assignments stay unreported.
    """
    return [*delivery_until_close(), *delivery_close_and_reports()]


def delivery_until_close() -> list[AnyCommand]:
    """Return the commands of `delivery_commands` before its close: listings, deposits,
    issues, trades and withdrawals."""
    return [
        delivery_listing(SYMBOL, "3"), delivery_listing(ZERO_BOND_SYMBOL, "0"),
        delivery_listing(PLAIN_SYMBOL, None),
        *(Deposit(ts=2, account=account, asset="USDC", amount="1000")
          for account in ("op1", "op2", "bob", "carol")),
        Deposit(ts=2, account="dave", asset=SYMBOL, amount=5),
        Deposit(ts=2, account="bob", asset=PLAIN_SYMBOL, amount=7),
        IssueCapacity(ts=3, account="op1", issue_id="i1", instrument=SYMBOL, node_id="n1",
                      quantity=10),
        IssueCapacity(ts=3, account="op2", issue_id="i2", instrument=SYMBOL, node_id="n2",
                      quantity=8),
        IssueCapacity(ts=3, account="op1", issue_id="i3", instrument=ZERO_BOND_SYMBOL,
                      node_id="n1", quantity=5),
        limit_order(4, "op1", "s1", SYMBOL, "sell", "2.5", 6),
        limit_order(4, "op2", "s2", SYMBOL, "sell", "2.6", 8),
        limit_order(5, "bob", "b1", SYMBOL, "buy", "2.6", 4),
        limit_order(5, "carol", "c1", SYMBOL, "buy", "2.6", 5),
        limit_order(5, "op1", "s3", ZERO_BOND_SYMBOL, "sell", "1", 2),
        limit_order(5, "bob", "b2", ZERO_BOND_SYMBOL, "buy", "1", 2),
        Withdraw(ts=6, account="dave", asset=SYMBOL, amount=2),
        Withdraw(ts=6, account="bob", asset=SYMBOL, amount=1),
    ]


def delivery_close_and_reports() -> list[AnyCommand]:
    """Return the close of `delivery_commands` and the delivery reports after it."""
    return [
        Tick(ts=DELIVERY_START + 1),
        DeliveryReport(ts=DELIVERY_START + 2, issue_id="i1", holder="bob",
                       delivered_ppm=750_000),
        DeliveryReport(ts=DELIVERY_START + 2, issue_id="i2", holder="carol",
                       delivered_ppm=1_000_000, evidence="00ff"),
        DeliveryReport(ts=DELIVERY_START + 2, issue_id="i3", holder="bob", delivered_ppm=0),
    ]
