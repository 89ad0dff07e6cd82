"""The index service's recovery: recompute a day of minutes from the event log.

    python -m benchmarks.index_recompute [--trades 1000000] [--runs 3] [--profile]

The log is a day of a busy venue made by the Python engine core before the clock starts:
three GPU classes in one region, the next 24 delivery hours of each listed at midnight and
one more hour of each every hour (so 72 books are open at any time, and one of each class
closes every hour); a market maker keeps 3 price levels on each side of every book, each
level two orders of 20 GPU-hours, and puts an order back as soon as one is filled; takers
send immediate-or-cancel orders of 1 to 60 GPU-hours that cross up to 3 levels, most of them
on the nearest hours, evenly over the day until `--trades` trades have printed. A last
event at the next midnight releases the day's 1,440th minute. The records are the engine's
JSON, as the service reads them from Kafka, in batches of 10,000.

Figures, each the best of `--runs`, in CPU seconds of this process (the machine is shared):
the recompute by each calculator (`feed` over every batch: all 1,440 minutes of the 3
classes), the Python reference (`IndexCalculator`) and the Rust one the service runs when
it is built (`NativeIndexCalculator`, `make native`), whose values are checked equal to
the reference's; and the baseline of the same run, plain msgspec decoding of every record
into the protocol's event types (`msgspec.json.Decoder(AnyEvent)`) and nothing else.
Target: under 1 s for 10^6 trades.
"""

from __future__ import annotations

import argparse
import collections
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import msgspec

from index.calculator import CALCULATORS, default_calculator, new_calculator
from index.value import MINUTE_NS, IndexValue
from matching_engine.core import Engine
from protocol import AnyCommand, AnyEvent, Deposit, ListInstrument, NewOrder, encode
from protocol.commands import Side
from protocol.events import OrderAccepted, Trade

Result = TypeVar("Result")

TARGET_S = 1.0
BATCH_RECORDS = 10_000
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
DAY_START_NS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 10**9
REGION = "eu-west"
TICK_MICRO = 10_000
# GPU class -> mid price in ticks (0.01 USDC)
CLASSES = {"H100-SXM-80GB": 215, "A100-SXM-80GB": 130, "L40S-48GB": 80}
LEVELS = 3
ORDERS_PER_LEVEL = 2
MAKER_QUANTITY = 20
TAKER_QUANTITY_MAX = 60
TRADES_PER_TAKER_ESTIMATE = 1.7  # spreads the takers over the day; the run counts exactly
MAKER = "mm"
TAKERS = tuple(f"taker{number}" for number in range(8))


def price_text(ticks: int) -> str:
    micro = ticks * TICK_MICRO
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


class DayFlow:
    """Drive the engine through the day; keep the events as the engine encodes them."""

    def __init__(self, trades_wanted: int, seed: int) -> None:
        self.engine = Engine()
        self.records: list[bytes] = []
        self.trades = 0
        self.trades_wanted = trades_wanted
        self.rng = random.Random(seed)
        self.open_hours: dict[str, list[int]] = {gpu: [] for gpu in CLASSES}
        self.resting: dict[str, tuple[str, Side, int]] = {}  # maker order id -> its place
        self.filled: dict[str, int] = collections.Counter()
        self.client_ids = 0

    def apply(self, command: AnyCommand) -> list[AnyEvent]:
        events = self.engine.apply(command)
        for event in events:
            self.records.append(encode(event))
            if isinstance(event, Trade):
                self.trades += 1
                self.filled[event.maker_order_id] += event.quantity
        return events

    def next_client_id(self) -> str:
        self.client_ids += 1
        return f"c{self.client_ids}"

    def list_hour(self, ts: int, delivery_start: int) -> None:
        for gpu, mid in CLASSES.items():
            symbol = f"{gpu}.{REGION}.{delivery_start // HOUR_NS}"
            self.apply(ListInstrument(
                ts=ts, symbol=symbol, gpu=gpu, region=REGION, delivery_start=delivery_start,
                delivery_hours=1, tick_size="0.01", max_order_quantity=10_000,
                maker_fee_bps=2, taker_fee_bps=5))
            for account in (MAKER, *TAKERS):
                self.apply(Deposit(ts=ts, account=account, asset=symbol, amount=10**9))
            self.open_hours[gpu].append(delivery_start)
            for level in range(1, LEVELS + 1):
                for _ in range(ORDERS_PER_LEVEL):
                    self.quote(ts, symbol, "buy", mid - level)
                    self.quote(ts, symbol, "sell", mid + level)

    def quote(self, ts: int, symbol: str, side: Side, ticks: int) -> None:
        [accepted] = self.apply(NewOrder(
            ts=ts, account=MAKER, client_order_id=self.next_client_id(), instrument=symbol,
            side=side, order_type="limit", price=price_text(ticks), quantity=MAKER_QUANTITY))
        assert isinstance(accepted, OrderAccepted), accepted
        self.resting[accepted.order_id] = (symbol, side, ticks)

    def take(self, ts: int) -> None:
        gpu = self.rng.choice(list(CLASSES))
        hours = [hour for hour in self.open_hours[gpu] if hour > ts]
        nearest = min(int(self.rng.expovariate(1 / 4)), len(hours) - 1)
        delivery_start = hours[nearest]
        symbol = f"{gpu}.{REGION}.{delivery_start // HOUR_NS}"
        is_buy = self.rng.random() < 0.5
        limit = CLASSES[gpu] + (LEVELS if is_buy else -LEVELS)
        self.apply(NewOrder(ts=ts, account=self.rng.choice(TAKERS),
                            client_order_id=self.next_client_id(), instrument=symbol,
                            side="buy" if is_buy else "sell", order_type="limit",
                            price=price_text(limit),
                            quantity=self.rng.randint(1, TAKER_QUANTITY_MAX), time_in_force="ioc"))
        for order_id in [o for o, filled in self.filled.items() if filled >= MAKER_QUANTITY]:
            del self.filled[order_id]
            self.quote(ts, *self.resting.pop(order_id))

    def run(self) -> list[bytes]:
        self.apply(Deposit(ts=DAY_START_NS, account=MAKER, asset="USDC", amount="1000000000"))
        for taker in TAKERS:
            self.apply(Deposit(ts=DAY_START_NS, account=taker, asset="USDC", amount="1000000000"))
        for hour in range(1, 25):
            self.list_hour(DAY_START_NS, DAY_START_NS + hour * HOUR_NS)
        takers_total = int(self.trades_wanted / TRADES_PER_TAKER_ESTIMATE)
        step_ns = DAY_NS // takers_total
        next_listing_ns = DAY_START_NS + HOUR_NS + 10**9
        ts = DAY_START_NS
        while self.trades < self.trades_wanted:
            ts = min(ts + step_ns, DAY_START_NS + DAY_NS - 1)
            if ts >= next_listing_ns:
                self.list_hour(ts, next_listing_ns - 10**9 + 24 * HOUR_NS)
                next_listing_ns += HOUR_NS
            self.take(ts)
        self.apply(Deposit(ts=DAY_START_NS + DAY_NS, account=MAKER, asset="USDC", amount="1"))
        return self.records


def batches(records: list[bytes]) -> list[list[bytes]]:
    return [records[start:start + BATCH_RECORDS]
            for start in range(0, len(records), BATCH_RECORDS)]


def recompute(log: list[list[bytes]], calculator_name: str) -> list[IndexValue]:
    calculator = new_calculator(calculator_name)
    return [value for batch in log for value in calculator.feed(batch)]


def decode_all(log: list[list[bytes]]) -> int:
    decode = msgspec.json.Decoder(AnyEvent).decode
    return sum(len([decode(record) for record in batch]) for batch in log)


def best_cpu_s(run: Callable[[], Result], runs: int) -> tuple[float, Result]:
    timings_s = []
    for _ in range(runs):
        started_s = time.process_time()
        result = run()
        timings_s.append(time.process_time() - started_s)
    return min(timings_s), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.index_recompute",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calculators", nargs="+", choices=CALCULATORS,
                        help="which to time (default: both when the native one is built)")
    parser.add_argument("--profile", action="store_true",
                        help="pyinstrument one recompute by the Python calculator")
    args = parser.parse_args(argv)
    started_s = time.perf_counter()
    records = DayFlow(args.trades, args.seed).run()
    kinds = collections.Counter(record[9:record.index(b'"', 9)].decode() for record in records)
    print(f"log: {len(records):,} events made in {time.perf_counter() - started_s:.0f} s: "
          + ", ".join(f"{kind} {count:,}" for kind, count in kinds.most_common()))
    log = batches(records)
    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            recompute(log, "python")
        profiler.print()
        return 0
    names = args.calculators or (CALCULATORS if default_calculator() == "native"
                                 else ("python",))
    timed = {name: best_cpu_s(partial(recompute, log, name), args.runs) for name in names}
    decode_s, _ = best_cpu_s(partial(decode_all, log), args.runs)
    for name, (index_s, values) in timed.items():
        print(f"{name:<10}: {index_s:6.2f} s CPU for {len(values):,} values "
              f"({kinds['trade']:,} trades, {len(records):,} events, "
              f"{len(records) / index_s:,.0f} events/s; best of {args.runs}); "
              f"{index_s / decode_s:.2f} x the baseline; target < {TARGET_S:.0f} s")
    print(f"baseline  : {decode_s:6.2f} s CPU to decode every event (msgspec, AnyEvent; "
          f"{len(records) / decode_s:,.0f} events/s)")
    if len(timed) == len(CALCULATORS):
        same = timed["python"][1] == timed["native"][1]
        print(f"values    : native {'equal to' if same else 'DIFFERENT FROM'} python's")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
