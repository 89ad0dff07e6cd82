"""What `gpux dev` prints every few seconds: engine seq and trades, the seq the ledger has
projected, the trades not yet settled on chain, connected clients and the nearest books.
(The figures behind it are on /metrics, from each service's own metrics.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]

from gpux.dev.bots import LEAD_NS
from gpux.dev.market import GPU_CLASSES
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
                          if i.gpu == gpu and not i.closed and i.delivery_start > now_ns + LEAD_NS),
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
                 interval_s: float = STATUS_INTERVAL_S) -> None:
        self.database_url = database_url
        self.engine = engine
        self.connections = connections
        self.interval_s = interval_s

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
        return (f"{clock}  seq {engine.seq}  trades {engine.trade_counter}  ledger {ledger_seq}"
                f"  unsettled {backlog}  clients {self.connections()}  "
                + market_summary(engine, time.time_ns()))
