"""Engine core throughput on a mixed order flow, beside a plain baseline book.

    python -m benchmarks.engine_core [--commands N] [--seed S]

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
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from sortedcontainers import SortedDict

from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import AmendOrder, AnyCommand, CancelOrder, NewOrder, encode

TARGET_COMMANDS_PER_S = 1_000_000
WORKLOAD = Workload(instruments=8, accounts=64)


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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
