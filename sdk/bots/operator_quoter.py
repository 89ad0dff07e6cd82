"""An operator's quoter: keep asks on the book for the coming delivery hours of its GPUs.

The capacity file (YAML) says what the operator has:

    region: eu-west
    hours_ahead: 12          # quote the delivery hours starting within the next 12 hours
    lead_minutes: 5          # stop quoting an hour this close to its delivery
    classes:
      H100-SXM-80GB: {gpus: 8, price: "2.40"}
      A100-SXM-80GB: {gpus: 16, price: "1.45"}

Each refresh it lists the instruments, and for every open one of its region and GPU classes
in the window it wants one ask of min(gpus, GPU-hour tokens it holds) at the class price; it
sends a mass quote for an instrument only when what rests differs from that.

    python -m sdk.bots.operator_quoter --config capacity.yaml --url ws://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from sdk.book import price_micro
from sdk.client import Client, ClientError, Quote
from sdk.signing import ApiKey
from wsapi.messages import Balance, Instrument, OrderReport

log = logging.getLogger("gpux.bots.operator")
HOUR_NS = 3600 * 10**9


class CapacityError(ValueError):
    """The capacity file is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class GpuClass:
    gpus: int
    price: str


@dataclass(frozen=True, slots=True)
class Capacity:
    region: str
    hours_ahead: int
    lead_minutes: int
    classes: dict[str, GpuClass]

    @classmethod
    def from_yaml(cls, text: str) -> Capacity:
        data: Any = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise CapacityError("the capacity file must be a mapping")
        classes = data.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise CapacityError("classes: a mapping of GPU class to {gpus, price} is required")
        parsed: dict[str, GpuClass] = {}
        for name, spec in classes.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("gpus"), int) \
                    or spec["gpus"] < 0 or not isinstance(spec.get("price"), str):
                raise CapacityError(f"classes.{name}: needs gpus (integer >= 0) and price "
                                    "(a decimal string)")
            parsed[str(name)] = GpuClass(gpus=spec["gpus"], price=spec["price"])
        region = data.get("region")
        hours_ahead = data.get("hours_ahead", 24)
        lead_minutes = data.get("lead_minutes", 5)
        if not isinstance(region, str) or not region:
            raise CapacityError("region: a region name is required")
        if not isinstance(hours_ahead, int) or not 1 <= hours_ahead <= 24 * 14:
            raise CapacityError("hours_ahead: an integer within 1..336")
        if not isinstance(lead_minutes, int) or lead_minutes < 0:
            raise CapacityError("lead_minutes: an integer >= 0")
        return cls(region=region, hours_ahead=hours_ahead, lead_minutes=lead_minutes,
                   classes=parsed)


def quote_id(symbol: str) -> str:
    """Return the client order id of the operator's ask on `symbol` (stable, <= 64 chars)."""
    return "opq-" + hashlib.sha256(symbol.encode()).hexdigest()[:16]


def plan_asks(
    capacity: Capacity, instruments: list[Instrument], balances: dict[str, Balance],
    now_ns: int,
) -> dict[str, Quote | None]:
    """Return, per instrument in the window, the ask to hold (None: hold nothing)."""
    window_start = now_ns + capacity.lead_minutes * 60 * 10**9
    window_end = now_ns + capacity.hours_ahead * HOUR_NS
    plan: dict[str, Quote | None] = {}
    for spec in instruments:
        gpu_class = capacity.classes.get(spec.gpu)
        if (gpu_class is None or spec.region != capacity.region or spec.status != "open"
                or not window_start <= spec.delivery_start <= window_end):
            continue
        balance = balances.get(spec.symbol)
        tokens = int(balance.available) + int(balance.held) if balance else 0
        quantity = min(gpu_class.gpus, tokens, spec.max_order_quantity)
        plan[spec.symbol] = (Quote(quote_id(spec.symbol), "sell", gpu_class.price, quantity)
                             if quantity > 0 else None)
    return plan


def resting_matches(quote: Quote | None, resting: list[OrderReport]) -> bool:
    """Tell whether the orders resting on an instrument are exactly the wanted ask."""
    if quote is None:
        return not resting
    return (len(resting) == 1 and resting[0].client_order_id == quote.client_order_id
            and resting[0].price is not None
            and price_micro(resting[0].price) == price_micro(quote.price)
            and resting[0].remaining_quantity == quote.quantity)


class OperatorQuoter:
    """Keep the planned asks resting; `refresh` once, or `run` until stopped."""

    def __init__(self, client: Client, capacity: Capacity) -> None:
        self.client = client
        self.capacity = capacity
        self.mass_quotes_sent = 0

    async def refresh(self, now_ns: int) -> dict[str, Quote | None]:
        instruments = await self.client.instruments()
        balances = await self.client.balances()
        plan = plan_asks(self.capacity, instruments, balances, now_ns)
        open_orders = await self.client.open_orders()
        for symbol, quote in plan.items():
            resting = [o for o in open_orders if o.instrument == symbol]
            if resting_matches(quote, resting):
                continue
            result = await self.client.mass_quote(symbol, [quote] if quote else [])
            self.mass_quotes_sent += 1
            for outcome in result.results:
                if not outcome.accepted:
                    log.warning("ask on %s rejected: %s", symbol, outcome.reason)
        return plan

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        while not stop.is_set():
            try:
                await self.refresh(time.time_ns())
            except ClientError as error:
                log.warning("operator refresh failed: %s", error)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpux trade operator",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--config", type=Path, required=True, help="capacity YAML file")
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    capacity = Capacity.from_yaml(args.config.read_text())
    asyncio.run(_run(args.url, capacity, args.interval_s, args.duration_s))
    return 0


async def _run(url: str, capacity: Capacity, interval_s: float, duration_s: float | None) -> None:
    key = ApiKey(os.environ["GPUX_KEY_ID"], os.environ["GPUX_PRIVATE_KEY"])
    stop = asyncio.Event()
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    async with Client(url, credentials=key) as client:
        await OperatorQuoter(client, capacity).run(stop, interval_s)


if __name__ == "__main__":
    raise SystemExit(main())
