"""A fresh, migrated ledger database for one test, and a small market's events to fill it.

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
from protocol import Deposit, ListInstrument, NewOrder
from runtime.postgres import connect, create_database, url_with_credentials
from tests.integration.database_faults import database_of

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PASSWORD = "ledger-test-password"
SYMBOL = "H100-EU-1"

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
