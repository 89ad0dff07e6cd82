"""Keep the next 24 delivery hours listed and the demo accounts funded for each of them.

On every start and then every few minutes: list the hours that are missing (admin
commands straight to the commands topic), register and deposit the demo accounts'
GPU-hours of every open hour that has none on chain yet (and, on the first start, their
USDC), then wait until the deposit watcher has had the engine credit the last deposit, so
whoever opens the page finds the accounts funded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gpux.dev.chain import fund_gpu_hours, fund_usdc_accounts, unregistered
from gpux.dev.market import listing_commands
from gpux.dev.venue import Venue
from matching_engine.core import Engine

log = logging.getLogger("gpux.dev")

LIST_INTERVAL_S = 300.0
CREDIT_TIMEOUT_S = 120.0


class Lister:
    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    def _engine(self) -> Engine:
        engine = self.venue.engine_state
        if engine is None:
            raise RuntimeError("the engine is not running")
        return engine

    async def list_and_fund(self, *, fund_usdc: bool) -> int:
        """List the missing hours and fund what needs it; return how many were listed."""
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
        """List and fund every LIST_INTERVAL_S until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIST_INTERVAL_S)
            if not stop.is_set():
                await self.list_and_fund(fund_usdc=False)

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CREDIT_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {CREDIT_TIMEOUT_S:.0f} s until {what}")
            await asyncio.sleep(0.05)
