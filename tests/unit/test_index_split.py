"""Property: the index is a function of the event log alone, however the log is cut.

Hypothesis draws order flows (limit orders that rest or not, market orders, cancels,
amends, strips over consecutive hours, time moving by seconds to most of an hour so
instruments close and enter the 24-hour horizon) for the Python engine over two GPU
classes. The events, fed to the calculator whole, one at a time or cut at drawn points,
give the same values, and those equal a reference written from the methodology directly:
the trades in the window scanned for each minute, and the mid read from the engine's own
books at the moment the minute passed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.calculator import HORIZON_NS, MIN_TRADES, MIN_VOLUME, WINDOW_MINUTES, IndexCalculator
from index.value import MINUTE_NS, IndexValue, Source
from matching_engine.core import Engine
from protocol import (
    AmendOrder,
    AnyCommand,
    AnyEvent,
    CancelOrder,
    Deposit,
    ListInstrument,
    NewOrder,
    Tick,
    encode,
)
from protocol.commands import NewStripOrder, Side
from protocol.events import InstrumentListed, Trade
from protocol.money import format_micro, parse_micro

HOUR_NS = 60 * MINUTE_NS
T0 = 29_000_000 * MINUTE_NS + 17 * 10**9  # between two minute boundaries
CLASSES = ("H100", "A100")
ACCOUNTS = ("alice", "bob", "carol")
# delivery hours after T0's hour; the last is beyond the horizon until two hours have passed
DELIVERY_HOURS = (1, 2, 3, 26)
STEPS_NS = (0, 10**9, 20 * 10**9, 61 * 10**9, 7 * MINUTE_NS, 40 * MINUTE_NS)


def symbol(gpu: str, hour: int) -> str:
    return f"{gpu}-{hour}"


def setup(ts: int) -> list[AnyCommand]:
    hour_start = ts // HOUR_NS * HOUR_NS
    commands: list[AnyCommand] = [
        ListInstrument(ts=ts, symbol=symbol(gpu, hour), gpu=gpu, region="eu-west",
                       delivery_start=hour_start + hour * HOUR_NS, delivery_hours=1,
                       tick_size="0.01", max_order_quantity=100, maker_fee_bps=0,
                       taker_fee_bps=0)
        for gpu in CLASSES for hour in DELIVERY_HOURS]
    for account in ACCOUNTS:
        commands.append(Deposit(ts=ts, account=account, asset="USDC", amount="1000000"))
        commands += [Deposit(ts=ts, account=account, asset=symbol(gpu, hour), amount=10_000)
                     for gpu in CLASSES for hour in DELIVERY_HOURS]
    return commands


@st.composite
def flows(draw: st.DrawFn) -> list[AnyCommand]:
    """Setup, then order flow with time moving on."""
    commands = setup(T0)
    ts = T0
    for number in range(draw(st.integers(5, 60))):
        ts += draw(st.sampled_from(STEPS_NS))
        account = draw(st.sampled_from(ACCOUNTS))
        gpu = draw(st.sampled_from(CLASSES))
        hour = draw(st.sampled_from(DELIVERY_HOURS))
        side: Side = draw(st.sampled_from(("buy", "sell")))
        client_order_id = f"c{number}"
        kind = draw(st.sampled_from(("limit", "limit", "limit", "ioc", "market", "cancel",
                                     "amend", "strip", "tick")))
        price = f"2.{draw(st.integers(0, 30)):02d}"
        quantity = draw(st.integers(1, 6))
        if kind in ("limit", "ioc"):
            commands.append(NewOrder(
                ts=ts, account=account, client_order_id=client_order_id,
                instrument=symbol(gpu, hour), side=side, order_type="limit", price=price,
                quantity=quantity, time_in_force="gtc" if kind == "limit" else "ioc"))
        elif kind == "market":
            commands.append(NewOrder(
                ts=ts, account=account, client_order_id=client_order_id,
                instrument=symbol(gpu, hour), side=side, order_type="market",
                quantity=quantity))
        elif kind in ("cancel", "amend"):
            target = f"c{draw(st.integers(0, max(number - 1, 0)))}"
            if kind == "cancel":
                commands.append(CancelOrder(ts=ts, account=account, client_order_id=target))
            else:
                commands.append(AmendOrder(ts=ts, account=account, client_order_id=target,
                                           new_price=price, new_quantity=quantity + 2))
        elif kind == "strip":
            first = draw(st.sampled_from((1, 2)))
            commands.append(NewStripOrder(
                ts=ts, account=account, client_order_id=client_order_id, side=side,
                instruments=[symbol(gpu, first), symbol(gpu, first + 1)],
                quantity=quantity, limit_total="100" if side == "buy" else "1"))
        else:
            commands.append(Tick(ts=ts))
    # an event two minutes on releases the values of the flow's end
    commands.append(Deposit(ts=ts + 2 * MINUTE_NS, account="alice", asset="USDC", amount="1"))
    return commands


def reference_values(commands: list[AnyCommand]) -> tuple[list[bytes], list[IndexValue]]:
    """Run the engine; compute each minute's values from the methodology, on the state the
    engine holds when the first event at or after the minute comes out."""
    engine = Engine()
    records: list[bytes] = []
    trades: list[Trade] = []
    listings: dict[str, InstrumentListed] = {}
    previous: dict[tuple[str, str], IndexValue] = {}
    expected: list[IndexValue] = []
    last_ts: int | None = None  # of the last event
    for command in commands:
        due: list[IndexValue] = []  # kept only if the command emits an event at its ts
        if last_ts is not None:
            ts = max(command.ts, engine.time)
            last = dict(previous)
            for minute_ns in range((last_ts // MINUTE_NS + 1) * MINUTE_NS, ts + 1, MINUTE_NS):
                for key in sorted({(e.gpu, e.region) for e in listings.values()}):
                    last[key] = reference_value(engine, key, minute_ns, trades, listings,
                                                last.get(key), len(records))
                    due.append(last[key])
        events: list[AnyEvent] = engine.apply(command)
        if not events:
            continue
        assert len({event.ts for event in events}) == 1  # one command, one ts
        expected += due
        previous.update({(value.gpu, value.region): value for value in due})
        last_ts = events[0].ts
        for event in events:
            records.append(encode(event))
            if isinstance(event, Trade):
                trades.append(event)
            elif isinstance(event, InstrumentListed):
                listings[event.symbol] = event
    return records, expected


def reference_value(engine: Engine, key: tuple[str, str], minute_ns: int, trades: list[Trade],
                    listings: dict[str, InstrumentListed], previous: IndexValue | None,
                    last_seq: int) -> IndexValue:
    gpu, region = key
    eligible = {s for s, e in listings.items() if (e.gpu, e.region) == key
                and minute_ns <= e.delivery_start < minute_ns + HORIZON_NS}
    inputs = [t for t in trades if t.instrument in eligible
              and minute_ns - WINDOW_MINUTES * MINUTE_NS <= t.ts < minute_ns]

    def value(value_micro: int | None, source: Source, inputs_hash: bytes,
              volume: int = 0) -> IndexValue:
        return IndexValue(
            gpu=gpu, region=region, minute_ns=minute_ns, value_micro=value_micro,
            source=source, trade_count=len(inputs), volume=volume,
            instrument_count=len({t.instrument for t in inputs}),
            sufficient=len(inputs) >= MIN_TRADES and volume >= MIN_VOLUME,
            inputs_hash=inputs_hash, last_seq=last_seq)

    if inputs:
        volume = sum(t.quantity for t in inputs)
        notional = sum(parse_micro(t.price) * t.quantity for t in inputs)
        by_minute: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for t in inputs:
            by_minute[t.ts // MINUTE_NS].append((t.seq, parse_micro(t.price), t.quantity))
        first = minute_ns // MINUTE_NS - WINDOW_MINUTES
        digests = [hashlib.sha256(msgspec.json.encode(by_minute[first + i])).hexdigest()
                   for i in range(WINDOW_MINUTES)]
        return value(notional // volume, "trades",
                     hashlib.sha256(msgspec.json.encode(["trades", digests])).digest(), volume)
    quotes = []
    for name in sorted(eligible):
        book = engine.instruments[name]
        bid, ask = book.bids.best_price(), book.asks.best_price()
        if bid is not None and ask is not None:
            quotes.append((name, bid, ask))
    if quotes:
        mid = sum((bid + ask) // 2 for _, bid, ask in quotes) // len(quotes)
        return value(mid, "mid", hashlib.sha256(msgspec.json.encode(["mid", quotes])).digest())
    if previous is not None and previous.value_micro is not None:
        return value(previous.value_micro, "last", hashlib.sha256(
            msgspec.json.encode(["last", previous.inputs_hash.hex()])).digest())
    return value(None, "none", hashlib.sha256(b'["none"]').digest())


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow=flows(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_cut_of_the_log_gives_the_values_the_methodology_defines(
    flow: list[AnyCommand], cuts: list[int]
) -> None:
    records, expected = reference_values(flow)
    whole = IndexCalculator().feed(records)
    assert whole == expected
    one_by_one = IndexCalculator()
    assert [value for record in records for value in one_by_one.feed([record])] == expected
    points = sorted({cut % (len(records) + 1) for cut in cuts} | {0, len(records)})
    pieces = IndexCalculator()
    assert [value for start, end in zip(points, points[1:], strict=False)
            for value in pieces.feed(records[start:end])] == expected


def test_the_flows_exercise_every_source() -> None:
    """The reference sees trades, mids, last values and none in a fixed flow, so the
    property above compares more than one kind of value."""
    ts = T0
    flow = setup(ts)
    flow.append(Tick(ts=ts + MINUTE_NS))
    flow.append(NewOrder(ts=ts + 2 * MINUTE_NS, account="alice", client_order_id="b",
                         instrument="H100-1", side="buy", order_type="limit", price="2.00",
                         quantity=2))
    flow.append(NewOrder(ts=ts + 2 * MINUTE_NS, account="bob", client_order_id="s",
                         instrument="H100-1", side="sell", order_type="limit", price="2.10",
                         quantity=1))
    flow.append(NewOrder(ts=ts + 3 * MINUTE_NS, account="carol", client_order_id="t",
                         instrument="H100-1", side="sell", order_type="market", quantity=1))
    flow.append(CancelOrder(ts=ts + 4 * MINUTE_NS, account="bob", client_order_id="s"))
    flow.append(Deposit(ts=ts + 70 * MINUTE_NS, account="alice", asset="USDC", amount="1"))
    records, expected = reference_values(flow)
    sources = {value.source for value in expected}
    assert sources == {"none", "mid", "trades", "last"}
    assert IndexCalculator().feed(records) == expected
    assert format_micro(next(v for v in expected if v.source == "trades").value_micro or 0) == "2"
