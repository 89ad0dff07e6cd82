"""Keep the next 24 delivery hours listed, and fund the demo accounts on the first start.

On every start, just after every hour and every few minutes: list the hours that are
missing (admin commands straight to the commands topic), each bonded at 1.5 times its
class's latest price index value (read from `index.values`; the reference price while the
index has none). On the first start of a chain,
deposit the demo accounts' USDC through the Vault and wait until the deposit watcher has
had the engine credit the last deposit. The GPU-hours of each hour are not funded here: the
demo's operator and market maker issue them (gpux.dev.bots).

With a `DemoSchedule`, every pass also lists the next demo delivery hours (gpux.dev.market:
H100 in `eu-west-demo`, the first `lead` after the start, then one every `interval`), and
passes come at least twice per interval so one is always listed ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpux.dev.chain import fund_usdc_accounts
from gpux.dev.market import (
    REGION,
    demo_anchor_ns,
    demo_listing_commands,
    demo_starts,
    listing_commands,
)
from gpux.venue import Venue
from index import store as index_store
from matching_engine.core import Engine
from runtime.postgres import connect

log = logging.getLogger("gpux.dev")

LIST_INTERVAL_S = 300.0
AFTER_THE_HOUR_S = 2.0  # list the new hour just after an hour closes
CREDIT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DemoSchedule:
    """When the demo delivery hours start: `anchor_ns`, then every `interval_ns`."""

    anchor_ns: int
    interval_ns: int

    @classmethod
    def from_start(cls, started_ns: int, lead_s: float, interval_s: float) -> DemoSchedule:
        if lead_s < 0 or interval_s < 60:
            raise ValueError(f"the demo lead must be >= 0 s and its interval >= 60 s, got "
                             f"{lead_s} and {interval_s}")
        return cls(anchor_ns=demo_anchor_ns(started_ns, int(lead_s * 1e9)),
                   interval_ns=int(interval_s * 1e9))

    def next_start_ns(self, now_ns: int) -> int:
        """The start of the next demo hour that is still ahead of `now_ns`."""
        if now_ns < self.anchor_ns:
            return self.anchor_ns
        return self.anchor_ns + ((now_ns - self.anchor_ns) // self.interval_ns + 1) \
            * self.interval_ns


class Lister:
    def __init__(self, venue: Venue, demo: DemoSchedule | None = None) -> None:
        self.venue = venue
        self.demo = demo

    def _engine(self) -> Engine:
        engine = self.venue.engine_state
        if engine is None:
            raise RuntimeError("the engine is not running")
        return engine

    async def list_and_fund(self, *, fund_usdc: bool) -> int:
        """List the missing hours and, when `fund_usdc`, deposit the demo accounts' USDC;
        return how many hours were listed."""
        now_ns = time.time_ns()
        listed = self._engine().instruments
        commands = listing_commands(listed, now_ns, await self._latest_index())
        if self.demo is not None:
            commands += demo_listing_commands(
                listed, now_ns, demo_starts(self.demo.anchor_ns, self.demo.interval_ns, now_ns))
        await self.venue.send_commands(list(commands))
        symbols = [command.symbol for command in commands]
        await self._until(lambda: all(s in self._engine().instruments for s in symbols),
                          "the engine listed the new hours")
        if fund_usdc:
            last = await asyncio.to_thread(fund_usdc_accounts, self.venue.contracts)
            if last is not None:
                account, asset = last
                await self._until(
                    lambda: asset in self._engine().balances.get(account, {}),
                    f"the deposits were credited ({account} {asset})")
        if symbols:
            log.info("listed %d hours", len(symbols))
        return len(symbols)

    async def _latest_index(self) -> dict[str, int]:
        """GPU class -> its latest index value in the demo's region (classes with one)."""
        config = self.venue.config
        if config.index is None or config.database_url is None:
            return {}
        connection = await connect(config.database_url, application_name="gpux-dev-lister")
        try:
            latest = await index_store.latest(connection)
        finally:
            await connection.close()
        return {value.gpu: value.value_micro for value in latest
                if value.region == REGION and value.value_micro is not None}

    async def run(self, stop: asyncio.Event) -> None:
        """List just after each hour, and every LIST_INTERVAL_S, until `stop`."""
        while not stop.is_set():
            await self.list_and_fund(fund_usdc=False)
            to_the_hour_s = 3600 - time.time() % 3600 + AFTER_THE_HOUR_S
            interval_s = LIST_INTERVAL_S
            if self.demo is not None:
                interval_s = min(interval_s, self.demo.interval_ns / 2e9)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(interval_s, to_the_hour_s))

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CREDIT_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {CREDIT_TIMEOUT_S:.0f} s until {what}")
            await asyncio.sleep(0.05)
