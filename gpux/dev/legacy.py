"""`gpux dev`: the venue in one process on embedded defaults, with a live demo market.

It opens the embedded log under the data directory, lists the next 24 delivery hours for
three GPU classes, funds demo accounts, runs the engine service, and drives a demo order
flow (quotes around a reference price per GPU class, and takers that cross them), printing
the market every few seconds. Ctrl-C stops it cleanly; starting it again resumes the same
market from the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from eventlog.embedded import EmbeddedLog
from eventlog.port import COMMANDS_TOPIC, Producer
from matching_engine.core import Engine
from matching_engine.service import EngineConfig, EngineService
from protocol import AnyCommand, Deposit, ListInstrument, NewOrder, encode, format_micro

log = logging.getLogger("gpux.dev")

HOUR_NS = 3600 * 10**9
DELIVERY_HOURS_AHEAD = 24
GPU_CLASSES = {"H100-SXM-80GB": 2_150_000, "A100-SXM-80GB": 1_300_000, "L40S-48GB": 800_000}
REGION = "eu-west"
TICK_MICRO = 10_000
DEMO_ACCOUNTS = ("maker-1", "maker-2", "taker-1", "taker-2", "alice")
STATUS_INTERVAL_S = 3.0


def symbol_for(gpu: str, delivery_start_ns: int) -> str:
    hour = datetime.fromtimestamp(delivery_start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H")
    return f"{gpu}.{REGION}.{hour}"


def upcoming_hours(now_ns: int) -> Iterator[int]:
    first = (now_ns // HOUR_NS + 1) * HOUR_NS
    return (first + hour * HOUR_NS for hour in range(DELIVERY_HOURS_AHEAD))


def listings(engine: Engine, now_ns: int) -> list[AnyCommand]:
    """List every upcoming delivery hour not yet listed; fund demo accounts on first start."""
    commands: list[AnyCommand] = []
    for gpu in GPU_CLASSES:
        for start in upcoming_hours(now_ns):
            symbol = symbol_for(gpu, start)
            if symbol not in engine.instruments:
                commands.append(ListInstrument(
                    ts=now_ns, symbol=symbol, gpu=gpu, region=REGION, delivery_start=start,
                    delivery_hours=1, tick_size=format_micro(TICK_MICRO),
                    max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5,
                ))
                commands += [
                    Deposit(ts=now_ns, account=account, asset=symbol, amount=100_000)
                    for account in DEMO_ACCOUNTS
                ]
    if not engine.balances:
        commands += [
            Deposit(ts=now_ns, account=account, asset="USDC", amount="10000000")
            for account in DEMO_ACCOUNTS
        ]
    return commands


class DemoFlow:
    """Quotes and takers on the nearest delivery hours, so the books are alive."""

    def __init__(self, engine: Engine, producer: Producer, rate_per_s: float) -> None:
        self.engine = engine
        self.producer = producer
        self.interval_s = 1.0 / rate_per_s
        self.rng = random.Random()
        self.run_id = f"{time.time_ns() // 10**6 % 10**9:x}"
        self.counter = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.producer.send(COMMANDS_TOPIC, encode(self._next_order()))
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    def _next_order(self) -> NewOrder:
        now_ns = time.time_ns()
        gpu = self.rng.choice(list(GPU_CLASSES))
        start = next(upcoming_hours(now_ns)) + self.rng.randrange(3) * HOUR_NS
        reference = GPU_CLASSES[gpu] // TICK_MICRO
        self.counter += 1
        is_buy = self.rng.random() < 0.5
        taker = self.rng.random() < 0.25
        offset = -self.rng.randint(0, 2) if taker else self.rng.randint(1, 8)
        ticks = reference - offset if is_buy else reference + offset
        account = self.rng.choice(DEMO_ACCOUNTS[2:] if taker else DEMO_ACCOUNTS[:2])
        return NewOrder(
            ts=now_ns, account=account, client_order_id=f"d{self.run_id}-{self.counter}",
            instrument=symbol_for(gpu, start), side="buy" if is_buy else "sell",
            order_type="limit", price=format_micro(ticks * TICK_MICRO),
            quantity=self.rng.randint(1, 25), time_in_force="ioc" if taker else "gtc",
        )


def market_lines(engine: Engine) -> list[str]:
    lines = []
    for gpu in GPU_CLASSES:
        instrument = next((i for i in engine.instruments.values()
                           if i.gpu == gpu and not i.closed), None)
        if instrument is None:
            continue
        bid = instrument.bids.best_price()
        ask = instrument.asks.best_price()
        lines.append(
            f"  {instrument.symbol:<36} bid {format_micro(bid) if bid else '-':>8}"
            f"  ask {format_micro(ask) if ask else '-':>8}"
            f"  levels {len(instrument.bids.keys):>3}/{len(instrument.asks.keys):<3}"
        )
    return lines


async def report(service: EngineService, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_S)
        except TimeoutError:
            stats = service.stats
            print(f"engine: {stats.commands} commands, {stats.events} events, "
                  f"{service.engine.trade_counter} trades, seq {service.engine.seq}")
            print("\n".join(market_lines(service.engine)), flush=True)


async def run(data_dir: Path, rate_per_s: float, duration_s: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration_s is not None:
        loop.call_later(duration_s, stop.set)
    event_log = EmbeddedLog.open(data_dir / "log")
    service = EngineService(event_log, EngineConfig(
        snapshot_dir=data_dir / "snapshots", snapshot_every_commands=20_000,
    ))
    engine_task = asyncio.create_task(service.run(stop))
    producer = event_log.producer()
    await producer.start()
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        setup = listings(service.engine, time.time_ns())
        if setup:
            await producer.send_batch(COMMANDS_TOPIC, [encode(command) for command in setup])
        print(f"gpux dev: venue running on the embedded log in {data_dir} "
              f"({len(service.engine.instruments)} instruments before this start); Ctrl-C stops",
              flush=True)
        flow = DemoFlow(service.engine, producer, rate_per_s)
        await asyncio.gather(flow.run(stop), report(service, stop))
    finally:
        stop.set()
        await producer.stop()
        await engine_task
        await event_log.close()
    print("gpux dev: stopped cleanly", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpux dev", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/dev"))
    parser.add_argument("--rate", type=float, default=50.0, help="demo orders per second")
    parser.add_argument("--duration-s", type=float, help="stop after this long (default: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args.data_dir, args.rate, args.duration_s))
    return 0
