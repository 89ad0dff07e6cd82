"""Engine core throughput on a mixed order flow, beside a plain baseline book; and the time
of a 24-leg strip beside 24 IOC orders doing the same fills.

    python -m benchmarks.engine_core [--commands N] [--seed S] [--strips N] [--strips-only]

The flow is `matching_engine.workload.Workload` on 8 books and 64 accounts: 50% passive
limit orders around the touch, 18% cancels, 10% amends, 15% aggressive limit orders that
trade (2% of all as ioc), 5% market orders.
Commands are decoded before the clock starts, so the figure is the core alone; the same
flow also runs through a baseline book (sortedcontainers, price-time, no risk checks, no
events) in the same process, so the ratio means something on a noisy machine.

The native core (`gpux_native`, matching_engine/native, `make native`) runs the same flow
given as JSON Lines bytes, decode and encode included: `apply_batch(bytes) -> bytes` of
events, which the run checks byte for byte against the Python core's events. It is timed
twice: in batches of 4,096 commands (what a service loop or replay hands it) and as one
batch of the whole flow (whose 100 MB of events costs fresh memory pages).

Strips (PROTOCOL.md v2): 24 consecutive hours, each with a deep book of asks of 2 GPU-hours
from 4 maker accounts, the price a tick higher every 16 orders. One account buys 4 GPU-hours
a leg `--strips` times, as strips (one `new_strip_order` each: 48 fills) and, from the same
state, as 24 limit IOC buys a round (the same 48 fills, checked). Each core runs through
`matching_engine.cores` (JSON Lines records in, event payloads out, decode and encode
included); the figure is per strip against per 24 IOC orders, the issue's target at most 1.5
on the native core.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import msgspec
from sortedcontainers import SortedDict

from matching_engine.core import Engine
from matching_engine.cores import NativeCore, PythonCore
from matching_engine.workload import DELIVERY_START_NS, Workload, price_text
from protocol import (
    AmendOrder,
    AnyCommand,
    CancelOrder,
    Deposit,
    ListInstrument,
    NewOrder,
    NewStripOrder,
    encode,
)

TARGET_COMMANDS_PER_S = 1_000_000
WORKLOAD = Workload(instruments=8, accounts=64)
STRIP_LEGS = 24
STRIP_QUANTITY = 4  # GPU-hours a leg, two makers' worth
STRIP_MAKER_QUANTITY = 2
STRIP_MAKERS = 4
STRIP_ORDERS_PER_LEVEL = 16
STRIP_TARGET_RATIO = 1.5
HOUR_NS = 3_600 * 10**9


class BaselineBook:
    """A plain price-time book: SortedDict of price -> insertion-ordered dict of orders,
    no risk checks, no fees, no events."""

    def __init__(self) -> None:
        self.bids: Any = SortedDict()
        self.asks: Any = SortedDict()
        self.orders: dict[tuple[str, str], list[Any]] = {}

    def new(self, key: tuple[str, str], is_buy: bool, price: int, quantity: int,
            is_market: bool) -> None:
        book = self.asks if is_buy else self.bids
        while quantity and book:
            best = book.peekitem(0 if is_buy else -1)
            level_price, level = best
            if not is_market and (level_price > price if is_buy else level_price < price):
                break
            maker = next(iter(level.values()))
            traded = min(quantity, maker[1])
            quantity -= traded
            maker[1] -= traded
            if maker[1] == 0:
                del level[maker[0]]
                del self.orders[maker[0]]
                if not level:
                    del book[level_price]
        if quantity and not is_market:
            own = self.bids if is_buy else self.asks
            order = [key, quantity, price, is_buy]
            own.setdefault(price, {})[key] = order
            self.orders[key] = order

    def cancel(self, key: tuple[str, str]) -> None:
        order = self.orders.pop(key, None)
        if order is None:
            return
        book = self.bids if order[3] else self.asks
        level = book[order[2]]
        del level[key]
        if not level:
            del book[order[2]]


def run_baseline(commands: list[AnyCommand]) -> float:
    books = {symbol: BaselineBook() for symbol in WORKLOAD.symbols()}
    where: dict[tuple[str, str], BaselineBook] = {}
    start = time.perf_counter()
    for command in commands:
        if type(command) is NewOrder:
            key = (command.account, command.client_order_id)
            book = books[command.instrument]
            price = 0 if command.price is None else round(float(command.price) * 1e6)
            book.new(key, command.side == "buy", price, command.quantity,
                     command.order_type == "market")
            where[key] = book
        elif type(command) is CancelOrder:
            key = (command.account, command.client_order_id)
            book = where.get(key)
            if book is not None:
                book.cancel(key)
        elif type(command) is AmendOrder:
            key = (command.account, command.client_order_id)
            book = where.get(key)
            if book is not None and key in book.orders:
                order = book.orders[key]
                book.cancel(key)
                assert command.new_price is not None and command.new_quantity is not None
                book.new(key, order[3], round(float(command.new_price) * 1e6),
                         command.new_quantity, False)
    return time.perf_counter() - start


def run_engine(commands: list[AnyCommand]) -> tuple[float, int]:
    engine = Engine()
    for command in WORKLOAD.setup():
        engine.apply(command)
    events = 0
    apply = engine.apply
    start = time.perf_counter()
    for command in commands:
        events += len(apply(command))
    return time.perf_counter() - start, events


def json_lines(commands: list[AnyCommand]) -> bytes:
    return b"".join(encode(command) + b"\n" for command in commands)


def python_events(commands: list[AnyCommand]) -> bytes:
    """The Python core's events for the flow (after the setup), encoded, for the check."""
    engine = Engine()
    for command in WORKLOAD.setup():
        engine.apply(command)
    return b"".join(encode(event) + b"\n" for c in commands for event in engine.apply(c))


def run_native(setup: bytes, batches: list[bytes]) -> tuple[float, bytes]:
    """Time the native core over the flow's JSON Lines batches: decode, match, encode."""
    import gpux_native

    engine = gpux_native.NativeEngine()
    engine.apply_batch(setup)
    apply_batch = engine.apply_batch
    start = time.perf_counter()
    events = [apply_batch(batch) for batch in batches]
    elapsed = time.perf_counter() - start
    return elapsed, b"".join(events)


def in_batches(flow: bytes, lines_per_batch: int) -> list[bytes]:
    """Split JSON Lines at line ends into batches of `lines_per_batch` lines."""
    lines = flow.splitlines(keepends=True)
    return [b"".join(lines[i:i + lines_per_batch]) for i in range(0, len(lines), lines_per_batch)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="profile the engine run")
    parser.add_argument("--native-runs", type=int, default=5, help="native timings, best kept")
    parser.add_argument("--batch-lines", type=int, default=4096,
                        help="commands per native apply_batch call (as replay buffers)")
    parser.add_argument("--strips", type=int, default=1_000,
                        help="24-leg strips (and rounds of 24 IOC orders) to time; 0: none")
    parser.add_argument("--strips-only", action="store_true", help="time strips only")
    args = parser.parse_args(argv)
    failed = 0 if args.strips_only else print_flow_figures(args)
    if args.strips and not args.profile:
        failed |= print_strip_figures(args.strips, args.native_runs)
    return failed


def print_flow_figures(args: argparse.Namespace) -> int:
    """Time the mixed flow on the baseline and both cores; 1 when the cores' events differ."""
    commands = Workload(seed=args.seed).flow(args.commands)
    gc.collect()
    gc.disable()
    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as profiler:
            run_engine(commands)
        profiler.print()
        return 0
    baseline_s = min(run_baseline(commands) for _ in range(2))
    engine_s, events = min(run_engine(commands) for _ in range(2))
    native = native_figures(commands, args.native_runs, args.batch_lines)
    gc.enable()
    engine_rate = len(commands) / engine_s
    baseline_rate = len(commands) / baseline_s
    print(f"commands: {len(commands):,} (events from the engine: {events:,})")
    print(f"engine core    : {engine_rate:12,.0f} commands/s   "
          f"(target {TARGET_COMMANDS_PER_S:,})")
    print(f"baseline book  : {baseline_rate:12,.0f} commands/s   (no risk, no events)")
    print(f"engine/baseline: {engine_rate / baseline_rate:12.2f}")
    if native is None:
        print("native core    : not built (make native)")
        return 0
    identical = True
    for label, (native_s, same, flow_bytes, event_bytes) in native.items():
        native_rate = len(commands) / native_s
        identical &= same
        print(f"native core    : {native_rate:12,.0f} commands/s   ({label}; JSON Lines in and "
              f"out, {flow_bytes / native_s / 1e6:,.0f} MB/s of commands, "
              f"{event_bytes / native_s / 1e6:,.0f} MB/s of events)")
    best_rate = len(commands) / min(figure[0] for figure in native.values())
    print(f"native/engine  : {best_rate / engine_rate:12.2f}   "
          f"(events byte-identical to the engine core: {'yes' if identical else 'NO'})")
    print(f"native/baseline: {best_rate / baseline_rate:12.2f}   "
          f"(target {TARGET_COMMANDS_PER_S:,} commands/s on one core)")
    return 0 if identical else 1


def native_figures(
    commands: list[AnyCommand], runs: int, lines_per_batch: int
) -> dict[str, tuple[float, bool, int, int]] | None:
    """Per batching: best of `runs` native timings, whether the events equal the Python
    core's byte for byte, the flow's and the events' sizes."""
    try:
        import gpux_native  # noqa: F401
    except ImportError:
        return None
    setup, flow = json_lines(WORKLOAD.setup()), json_lines(commands)
    expected = python_events(commands)
    figures = {}
    for label, batches in (
        (f"batches of {lines_per_batch:,} commands", in_batches(flow, lines_per_batch)),
        ("the whole flow in one batch", [flow]),
    ):
        best_s, identical = float("inf"), True
        for _ in range(runs):
            seconds, events = run_native(setup, batches)
            best_s, identical = min(best_s, seconds), identical and events == expected
            del events
        figures[label] = (best_s, identical, len(flow), len(expected))
    return figures


# -- strips ------------------------------------------------------------------------------


def strip_legs() -> list[str]:
    return [f"STRIP-{index:02d}" for index in range(STRIP_LEGS)]


def strip_setup(rounds: int) -> list[AnyCommand]:
    """The legs, listed one hour after the other, funded makers and their asks, deep enough
    for `rounds` strips, and the buyer's USDC."""
    legs = strip_legs()
    commands: list[AnyCommand] = [
        ListInstrument(ts=1, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                       delivery_start=DELIVERY_START_NS + index * HOUR_NS, delivery_hours=1,
                       tick_size="0.01", max_order_quantity=1_000, maker_fee_bps=2,
                       taker_fee_bps=5)
        for index, symbol in enumerate(legs)
    ]
    makers = [f"maker{index}" for index in range(STRIP_MAKERS)]
    commands += [Deposit(ts=1, account=maker, asset=symbol, amount=10**9)
                 for maker in makers for symbol in legs]
    commands.append(Deposit(ts=1, account="buyer", asset="USDC", amount="1000000000"))
    asks_per_leg = rounds * STRIP_QUANTITY // STRIP_MAKER_QUANTITY
    for symbol in legs:
        for index in range(asks_per_leg):
            commands.append(NewOrder(
                ts=1, account=makers[index % STRIP_MAKERS], client_order_id=f"{symbol}-{index}",
                instrument=symbol, side="sell", order_type="limit",
                price=price_text(1_000 + index // STRIP_ORDERS_PER_LEVEL),
                quantity=STRIP_MAKER_QUANTITY,
            ))
    return commands


def strip_records(rounds: int) -> list[bytes]:
    legs = strip_legs()
    return [encode(NewStripOrder(ts=2, account="buyer", client_order_id=f"s{round_}",
                                 side="buy", instruments=legs, quantity=STRIP_QUANTITY,
                                 limit_total="1000000"))
            for round_ in range(rounds)]


def ioc_records(rounds: int) -> list[bytes]:
    """Per round, one limit IOC buy a leg, priced above every ask: the strip's fills."""
    return [encode(NewOrder(ts=2, account="buyer", client_order_id=f"i{round_}-{index}",
                            instrument=symbol, side="buy", order_type="limit", price="1000",
                            quantity=STRIP_QUANTITY, time_in_force="ioc"))
            for round_ in range(rounds) for index, symbol in enumerate(strip_legs())]


def time_records(core_class: type[PythonCore] | type[NativeCore], setup: bytes,
                 records: list[bytes], runs: int) -> tuple[float, list[tuple[Any, ...]]]:
    """Best of `runs` timings of the records on a core restored from the setup's snapshot,
    and the fills of the last run: (instrument, price, quantity, maker order, fees)."""
    best_s = float("inf")
    payloads: list[bytes] = []
    for _ in range(runs):
        core = core_class.restore(setup)
        start = time.perf_counter()
        payloads = core.apply_records(records)
        best_s = min(best_s, time.perf_counter() - start)
    fills = [(e["instrument"], e["price"], e["quantity"], e["maker_order_id"], e["maker_fee"],
              e["taker_fee"])
             for e in map(msgspec.json.decode, payloads) if e["type"] == "trade"]
    return best_s, fills


def strip_figures(core_class: type[PythonCore] | type[NativeCore], rounds: int,
                  runs: int) -> tuple[float, float, bool]:
    """Seconds per strip, seconds per 24 IOC orders, and whether they made the same fills."""
    builder = PythonCore()
    builder.apply_records([encode(command) for command in strip_setup(rounds)])
    setup = builder.snapshot()
    strip_s, strip_fills = time_records(core_class, setup, strip_records(rounds), runs)
    ioc_s, ioc_fills = time_records(core_class, setup, ioc_records(rounds), runs)
    same = strip_fills == ioc_fills and len(strip_fills) == rounds * STRIP_LEGS * (
        STRIP_QUANTITY // STRIP_MAKER_QUANTITY)
    return strip_s / rounds, ioc_s / rounds, same


def print_strip_figures(rounds: int, native_runs: int) -> int:
    """Print each built core's figures; 1 when some core's strips and IOCs filled apart."""
    print(f"strips: {rounds:,} of {STRIP_LEGS} legs x {STRIP_QUANTITY} GPU-hours, "
          f"{STRIP_LEGS * STRIP_QUANTITY // STRIP_MAKER_QUANTITY} fills each, "
          f"beside {STRIP_LEGS} IOC orders a round doing the same fills")
    cores: list[tuple[str, type[PythonCore] | type[NativeCore], int]] = [
        ("python", PythonCore, 2)]
    try:
        import gpux_native  # noqa: F401
        cores.append(("native", NativeCore, native_runs))
    except ImportError:
        print("native core    : not built (make native)")
    all_same = True
    for name, core_class, runs in cores:
        strip_s, ioc_s, same = strip_figures(core_class, rounds, runs)
        all_same &= same
        target = f"   (target <= {STRIP_TARGET_RATIO})" if name == "native" else ""
        print(f"{name} core{' ' * (7 - len(name))}: strip {strip_s * 1e6:9,.1f} us   "
              f"{STRIP_LEGS} IOC orders {ioc_s * 1e6:9,.1f} us   strip/IOC "
              f"{strip_s / ioc_s:5.2f}{target}   (same fills: {'yes' if same else 'NO'})")
    return 0 if all_same else 1


if __name__ == "__main__":
    raise SystemExit(main())
