"""A market maker: quote both sides around a reference price, skewed by inventory.

Every refresh it reads the reference (a fixed price, else the book's mid, else the last
quote's), its inventory (token balance less the target), plans `levels` bids and asks
`spread_ticks` apart around the reference shifted by `-inventory * skew_ticks_per_unit`,
stops adding to a side past `inventory_max`, and replaces its quotes with one mass quote
when the plan changed. A dead-man's switch (`cancel_all_after`) pulls the quotes if the bot
dies; on a clean stop it cancels them.

    python -m sdk.bots.market_maker --url ws://127.0.0.1:8765 --instrument SYMBOL \\
        --reference 2.15 (credentials from GPUX_KEY_ID / GPUX_PRIVATE_KEY)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
from dataclasses import dataclass

from sdk.book import LocalBook, price_micro
from sdk.client import Client, ClientError, Quote
from sdk.signing import ApiKey

log = logging.getLogger("gpux.bots.market_maker")
MICRO_PER_USDC = 1_000_000


@dataclass(frozen=True, slots=True)
class MarketMakerConfig:
    instrument: str
    reference_price: str | None = None
    spread_ticks: int = 4
    levels: int = 3
    level_spacing_ticks: int = 1
    quantity_per_level: int = 5
    target_inventory: int = 0
    skew_ticks_per_unit: float = 0.1
    inventory_max: int = 200
    refresh_interval_s: float = 1.0
    dead_man_timeout_s: int = 10
    post_only: bool = True

    def __post_init__(self) -> None:
        if self.spread_ticks < 1 or self.levels < 1 or self.level_spacing_ticks < 1:
            raise ValueError("spread_ticks, levels and level_spacing_ticks must be >= 1")
        if self.quantity_per_level < 1 or self.inventory_max < 0:
            raise ValueError("quantity_per_level must be >= 1 and inventory_max >= 0")
        if self.refresh_interval_s <= 0 or self.dead_man_timeout_s < 1:
            raise ValueError("refresh_interval_s must be > 0 and dead_man_timeout_s >= 1")


def format_price(micro: int) -> str:
    whole, fraction = divmod(micro, MICRO_PER_USDC)
    return str(whole) if fraction == 0 else f"{whole}.{fraction:06d}".rstrip("0")


def plan_quotes(
    config: MarketMakerConfig, reference_micro: int, tick_micro: int, inventory: int
) -> list[Quote]:
    """Return the quotes to hold: bids then asks, best first, skewed against the inventory."""
    if reference_micro <= 0 or tick_micro <= 0:
        raise ValueError("reference and tick must be positive")
    skew_ticks = math.floor(-inventory * config.skew_ticks_per_unit + 0.5)
    center_ticks = reference_micro // tick_micro + skew_ticks
    half_spread = config.spread_ticks // 2
    best_bid = center_ticks - half_spread
    best_ask = best_bid + config.spread_ticks
    quotes: list[Quote] = []
    if inventory < config.inventory_max:
        for level in range(config.levels):
            ticks = best_bid - level * config.level_spacing_ticks
            if ticks > 0:
                quotes.append(Quote(f"mmb{level}", "buy", format_price(ticks * tick_micro),
                                    config.quantity_per_level, config.post_only))
    if inventory > -config.inventory_max:
        for level in range(config.levels):
            ticks = best_ask + level * config.level_spacing_ticks
            quotes.append(Quote(f"mma{level}", "sell", format_price(ticks * tick_micro),
                                config.quantity_per_level, config.post_only))
    return quotes


def reference_from_book(book: LocalBook) -> int | None:
    """Return the mid in micro-USDC, or the one side's price, or None for an empty book."""
    bid, ask = book.best_bid(), book.best_ask()
    if bid and ask:
        return (price_micro(bid[0]) + price_micro(ask[0])) // 2
    if bid or ask:
        return price_micro((bid or ask)[0])  # type: ignore[index]
    return None


class MarketMaker:
    """Run `MarketMakerConfig` on a logged-in client until `stop` is set."""

    def __init__(self, client: Client, config: MarketMakerConfig) -> None:
        self.client = client
        self.config = config
        self.quotes_sent = 0
        self.last_plan: list[Quote] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        specs = {spec.symbol: spec for spec in await self.client.instruments()}
        tick_micro = price_micro(specs[config.instrument].tick_size)
        book = await self.client.watch_book(config.instrument)
        fixed = price_micro(config.reference_price) if config.reference_price else None
        reference = fixed
        try:
            while not stop.is_set():
                try:
                    await self.client.cancel_all_after(config.dead_man_timeout_s)
                    reference = fixed or reference_from_book(book) or reference
                    if reference is not None:
                        await self.refresh(reference, tick_micro)
                except ClientError as error:
                    log.warning("market maker cycle failed: %s", error)
                try:
                    await asyncio.wait_for(stop.wait(), config.refresh_interval_s)
                except TimeoutError:
                    pass
        finally:
            if self.client.connected:
                await self.client.mass_cancel(config.instrument)
                await self.client.cancel_all_after(0)

    async def refresh(self, reference_micro: int, tick_micro: int) -> None:
        """Quote around `reference_micro`; send a mass quote only if the plan changed."""
        balances = await self.client.balances()
        balance = balances.get(self.config.instrument)
        tokens = int(balance.available) + int(balance.held) if balance else 0
        inventory = tokens - self.config.target_inventory
        plan = self.plan(reference_micro, tick_micro, inventory)
        if not await self.needs_sending(plan):
            return
        result = await self.client.mass_quote(self.config.instrument, plan)
        self.quotes_sent += 1
        self.last_plan = plan
        rejected = [r for r in result.results if r.status != "accepted"]
        if rejected:
            log.info("%d quotes on %s rejected (first: %s)", len(rejected),
                     self.config.instrument, rejected[0].reason)
            self.last_plan = None  # try again next cycle

    def plan(self, reference_micro: int, tick_micro: int, inventory: int) -> list[Quote]:
        """The quotes to rest now (a subclass may rename or reshape them)."""
        return plan_quotes(self.config, reference_micro, tick_micro, inventory)

    async def needs_sending(self, plan: list[Quote]) -> bool:
        """Whether `plan` must be sent: here, when it differs from the last one sent."""
        return plan != self.last_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpux trade market-maker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--instrument", required=True)
    parser.add_argument("--reference", help="fixed reference price (default: the book's mid)")
    parser.add_argument("--spread-ticks", type=int, default=4)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--quantity", type=int, default=5)
    parser.add_argument("--target-inventory", type=int, default=0)
    parser.add_argument("--skew-ticks-per-unit", type=float, default=0.1)
    parser.add_argument("--refresh-interval-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, help="stop after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = MarketMakerConfig(
        instrument=args.instrument, reference_price=args.reference,
        spread_ticks=args.spread_ticks, levels=args.levels, quantity_per_level=args.quantity,
        target_inventory=args.target_inventory, skew_ticks_per_unit=args.skew_ticks_per_unit,
        refresh_interval_s=args.refresh_interval_s,
    )
    asyncio.run(_run(args.url, config, args.duration_s))
    return 0


async def _run(url: str, config: MarketMakerConfig, duration_s: float | None) -> None:
    key = ApiKey(os.environ["GPUX_KEY_ID"], os.environ["GPUX_PRIVATE_KEY"])
    stop = asyncio.Event()
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    async with Client(url, credentials=key, cancel_on_disconnect="session") as client:
        await MarketMaker(client, config).run(stop)


if __name__ == "__main__":
    raise SystemExit(main())
