"""What `gpux dev` prints every few seconds: engine seq and trades, the seq the ledger has
projected, the trades not yet settled on chain, connected clients and the nearest books;
then, when delivery runs, the hours measured and settled (`delivery.reports`) and the
caller's delivery note (the next demo hour).
(The figures behind it are on /metrics, from each service's own metrics.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]

from gpux.dev.bots import LEAD_NS
from gpux.dev.market import GPU_CLASSES, REGION
from matching_engine.core import Engine
from protocol import format_micro
from settlement import store as settlement_store

log = logging.getLogger("gpux.dev")
STATUS_INTERVAL_S = 10.0


def market_summary(engine: Engine, now_ns: int) -> str:
    """Return best bid/ask of the nearest delivery hour of each GPU class the bots trade."""
    parts = []
    for gpu in GPU_CLASSES:
        instrument = min((i for i in engine.instruments.values()
                          if i.gpu == gpu and i.region == REGION and not i.closed
                          and i.delivery_start > now_ns + LEAD_NS),
                         key=lambda i: i.delivery_start, default=None)
        if instrument is None:
            continue
        bid, ask = instrument.bids.best_price(), instrument.asks.best_price()
        parts.append(f"{gpu.split('-')[0]} {format_micro(bid) if bid else '-'}"
                     f"/{format_micro(ask) if ask else '-'}")
    return "  ".join(parts)


class StatusReporter:
    """Print one status line every `interval_s`."""

    def __init__(self, database_url: str,
                 engine: Callable[[], Engine | None], connections: Callable[[], int],
                 interval_s: float = STATUS_INTERVAL_S,
                 delivery: Callable[[], str] | None = None) -> None:
        self.database_url = database_url
        self.engine = engine
        self.connections = connections
        self.interval_s = interval_s
        self.delivery = delivery

    async def run(self, stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(self.database_url)
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.interval_s)
                except TimeoutError:
                    print(await self.line(connection), flush=True)
        finally:
            await connection.close()

    async def line(self, connection: asyncpg.Connection) -> str:
        ledger_seq = int(await connection.fetchval(
            "SELECT coalesce(max(last_seq), 0) FROM ledger.checkpoints"))
        settled_seq = await settlement_store.settled_through(connection)
        backlog = int(await connection.fetchval(
            "SELECT count(*) FROM ledger.trades WHERE seq > $1", settled_seq))
        engine = self.engine()
        clock = time.strftime("%H:%M:%S")
        if engine is None:
            return f"{clock}  engine recovering"
        line = (f"{clock}  seq {engine.seq}  trades {engine.trade_counter}  ledger {ledger_seq}"
                f"  unsettled {backlog}  clients {self.connections()}  "
                + market_summary(engine, time.time_ns()))
        if self.delivery is not None:
            line += f"\n{clock}  {await delivery_summary(connection)}  {self.delivery()}"
        return line


async def delivery_summary(connection: asyncpg.Connection) -> str:
    """The hours measured, how many the engine settled, and how many fell short."""
    row = await connection.fetchrow(
        "SELECT count(*) AS measured, count(*) FILTER (WHERE outcome = 'settled') AS settled,"
        " count(*) FILTER (WHERE delivered_ppm < 1000000) AS short FROM delivery.reports")
    return (f"delivery: {row['measured']} hours measured, {row['settled']} settled, "
            f"{row['short']} short")
