"""Keep the next 24 delivery hours listed and the demo accounts funded for each of them.

On every start, just after every hour and every few minutes: list the hours that are
missing (admin commands straight to the commands topic), register and deposit the demo
accounts' GPU-hours of every open hour that has none on chain yet (and, on the first start,
their USDC), then wait until the deposit watcher has had the engine credit the last
deposit. A start funds only the nearest hours before the page's URL is printed (a few
hundred transactions for all 72 take a while on a busy machine); `run` funds the rest
right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gpux.dev.chain import fund_gpu_hours, fund_usdc_accounts, unregistered
from gpux.dev.market import GPU_CLASSES, listing_commands
from gpux.venue import Venue
from matching_engine.core import Engine

log = logging.getLogger("gpux.dev")

LIST_INTERVAL_S = 300.0
AFTER_THE_HOUR_S = 2.0  # list the new hour just after an hour closes
CREDIT_TIMEOUT_S = 120.0


class Lister:
    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    def _engine(self) -> Engine:
        engine = self.venue.engine_state
        if engine is None:
            raise RuntimeError("the engine is not running")
        return engine

    async def list_and_fund(self, *, fund_usdc: bool, hours_max: int | None = None) -> int:
        """List the missing hours and fund what needs it (the nearest `hours_max` delivery
        hours of it, when given); return how many were listed."""
        commands = listing_commands(self._engine().instruments, time.time_ns())
        await self.venue.send_commands(list(commands))
        symbols = [command.symbol for command in commands]
        await self._until(lambda: all(s in self._engine().instruments for s in symbols),
                          "the engine listed the new hours")
        contracts = self.venue.contracts
        last = await asyncio.to_thread(fund_usdc_accounts, contracts) if fund_usdc else None
        open_hours = sorted((i for i in self._engine().instruments.values() if not i.closed),
                            key=lambda i: (i.delivery_start, i.symbol))
        to_fund = await asyncio.to_thread(unregistered, contracts, [i.symbol for i in open_hours])
        if hours_max is not None:
            to_fund = to_fund[:hours_max * len(GPU_CLASSES)]
        last = await asyncio.to_thread(fund_gpu_hours, contracts, to_fund) or last
        if last is not None:
            account, asset = last
            await self._until(
                lambda: asset in self._engine().balances.get(account, {}),
                f"the deposits were credited ({account} {asset})")
        if symbols or to_fund:
            log.info("listed %d hours, funded %d", len(symbols), len(to_fund))
        return len(symbols)

    async def run(self, stop: asyncio.Event) -> None:
        """List and fund just after each hour, and every LIST_INTERVAL_S, until `stop`."""
        while not stop.is_set():
            await self.list_and_fund(fund_usdc=False)
            to_the_hour_s = 3600 - time.time() % 3600 + AFTER_THE_HOUR_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(LIST_INTERVAL_S, to_the_hour_s))

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CREDIT_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {CREDIT_TIMEOUT_S:.0f} s until {what}")
            await asyncio.sleep(0.05)
