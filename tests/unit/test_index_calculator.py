"""The index calculator from its rules (docs/index-methodology.md): the volume-weighted
average of the window's trades, the window's edges in time and delivery, closed
instruments left out, the mid, last and none fallbacks, what the inputs hash commits to,
several minutes released at once, and the book it keeps from the order events. Every test
runs on both calculators: the Python reference and the native one (`make native`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from index.calculator import (
    CALCULATORS,
    HORIZON_NS,
    MIN_TRADES,
    MIN_VOLUME,
    Calculator,
    new_calculator,
)
from index.errors import EventError, SeqGapError
from index.value import MINUTE_NS, IndexValue
from protocol import encode
from protocol.events import (
    Deposited,
    Event,
    InstrumentClosed,
    InstrumentListed,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    Trade,
)

HOUR_NS = 60 * MINUTE_NS
T = 29_000_000 * MINUTE_NS  # a minute boundary (and an hour's)
H100, A100 = "H100-SXM-80GB", "A100-SXM-80GB"


def micro(text: str) -> int:
    whole, _, fraction = text.partition(".")
    return int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))


NewCalculator = Callable[[], Calculator]


@pytest.fixture(params=CALCULATORS)
def new(request: pytest.FixtureRequest) -> NewCalculator:
    """Make calculators of one kind: each test runs once per kind."""
    name: str = request.param
    return lambda: new_calculator(name)


class Log:
    """Events with seqs from 1, written in the engine's encoding."""

    def __init__(self, new: NewCalculator) -> None:
        self.new = new
        self.events: list[Event] = []
        self.order_ids = 0

    def add(self, event_type: type[Event], ts: int, **fields: Any) -> Event:
        event = event_type(seq=len(self.events) + 1, ts=ts, **fields)
        self.events.append(event)
        return event

    def listing(self, symbol: str, delivery_start: int, ts: int = T - 2 * HOUR_NS,
             gpu: str = H100, region: str = "eu-west") -> None:
        self.add(InstrumentListed, ts, symbol=symbol, gpu=gpu, region=region,
                 delivery_start=delivery_start, delivery_hours=1, tick_size="0.01",
                 max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5)

    def trade(self, ts: int, symbol: str, price: str, quantity: int,
              maker_order_id: str = "m0", taker_order_id: str = "t0") -> None:
        self.add(Trade, ts, trade_id=str(len(self.events)), instrument=symbol, price=price,
                 quantity=quantity, aggressor_side="buy", maker_account="mm",
                 maker_client_order_id="c", maker_order_id=maker_order_id, maker_fee="0",
                 taker_account="taker", taker_client_order_id="c", taker_order_id=taker_order_id,
                 taker_fee="0")

    def order(self, ts: int, symbol: str, side: str, price: str | None, quantity: int,
              time_in_force: str = "gtc", order_type: str = "limit") -> str:
        self.order_ids += 1
        order_id = f"o{self.order_ids}"
        self.add(OrderAccepted, ts, account="mm", client_order_id=order_id, order_id=order_id,
                 instrument=symbol, side=side, order_type=order_type, price=price,
                 quantity=quantity, time_in_force=time_in_force, post_only=False,
                 stp="cancel_newest")
        return order_id

    def cancel(self, ts: int, symbol: str, order_id: str) -> None:
        self.add(OrderCanceled, ts, account="mm", client_order_id=order_id, order_id=order_id,
                 instrument=symbol, reason="user", canceled_quantity=1)

    def nothing(self, ts: int) -> None:
        """An event the index does not read, which still moves time on."""
        self.add(Deposited, ts, account="x", asset="USDC", amount="1")

    def values(self) -> list[IndexValue]:
        return self.new().feed_events(self.events)


def at(values: list[IndexValue], minute_ns: int, gpu: str = H100) -> IndexValue:
    [value] = [v for v in values if v.minute_ns == minute_ns and v.gpu == gpu]
    return value


def test_a_value_is_the_volume_weighted_average_of_the_windows_trades(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("H-2", T + 2 * HOUR_NS)
    log.trade(T - 30 * MINUTE_NS, "H-1", "2.10", 3)
    log.trade(T - 20 * MINUTE_NS, "H-2", "2.15", 4)
    log.trade(T - 1, "H-1", "2.00", 1)
    assert [v for v in log.values() if v.minute_ns == T] == []  # nothing at T passed it yet
    log.nothing(T)
    value = at(log.values(), T)
    notional = 3 * 2_100_000 + 4 * 2_150_000 + 1 * 2_000_000
    assert value.value_micro == notional // 8 == 2_112_500
    assert (value.source, value.trade_count, value.volume, value.instrument_count) == (
        "trades", 3, 8, 2)
    assert value.last_seq == 5  # the last event before T


def test_the_average_is_floored_to_the_micro_usdc(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.trade(T - MINUTE_NS, "H-1", "2.000001", 1)
    log.trade(T - MINUTE_NS, "H-1", "2.000002", 2)
    log.nothing(T)
    assert at(log.values(), T).value_micro == (2_000_001 + 2 * 2_000_002) // 3 == 2_000_001


def test_the_window_holds_the_last_sixty_minutes_exactly(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + 3 * HOUR_NS)
    log.trade(T - HOUR_NS - 1, "H-1", "9.00", 1)  # a nanosecond too old for T
    log.trade(T - HOUR_NS, "H-1", "2.00", 1)  # the oldest that counts for T
    log.nothing(T - 1)
    log.trade(T, "H-1", "5.00", 1)  # at T: counts from T + 1 minute on
    log.nothing(T + MINUTE_NS)
    values = log.values()
    assert (at(values, T).value_micro, at(values, T).trade_count) == (2_000_000, 1)
    assert at(values, T - MINUTE_NS).trade_count == 2  # 9.00 and 2.00 both in its window
    after = at(values, T + MINUTE_NS)
    assert (after.value_micro, after.trade_count) == (5_000_000, 1)  # 2.00 left with T - 60 min


def test_only_instruments_delivered_in_the_next_24_hours_count(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("due-now", T)  # still tradable at T: its close comes with the first ts >= T
    log.listing("last-hour", T + HORIZON_NS - HOUR_NS)
    log.listing("too-far", T + HORIZON_NS)
    log.trade(T - MINUTE_NS, "due-now", "2.00", 1)
    log.trade(T - MINUTE_NS, "last-hour", "3.00", 1)
    log.trade(T - MINUTE_NS, "too-far", "100.00", 5)
    log.nothing(T)
    value = at(log.values(), T)
    assert (value.value_micro, value.trade_count, value.instrument_count) == (2_500_000, 2, 2)


def test_a_closed_instruments_trades_leave_the_index_at_its_close(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("closing", T - 30 * MINUTE_NS)
    log.listing("open", T + HOUR_NS)
    log.trade(T - 40 * MINUTE_NS, "closing", "9.00", 10)
    log.trade(T - 40 * MINUTE_NS, "open", "2.00", 1)
    log.add(InstrumentClosed, T - 30 * MINUTE_NS, symbol="closing")
    log.nothing(T)
    values = log.values()
    before = at(values, T - 30 * MINUTE_NS)  # the close is at its ts, after this boundary
    assert (before.trade_count, before.value_micro) == (2, (90_000_000 + 2_000_000) // 11)
    assert (at(values, T).trade_count, at(values, T).value_micro) == (1, 2_000_000)


def test_without_trades_the_index_is_the_mean_of_the_books_mids(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("H-2", T + 2 * HOUR_NS)
    log.listing("H-3", T + 3 * HOUR_NS)
    log.order(T - 5 * MINUTE_NS, "H-1", "buy", "2.00", 1)
    log.order(T - 5 * MINUTE_NS, "H-1", "sell", "2.03", 1)  # mid 2.015
    log.order(T - 5 * MINUTE_NS, "H-2", "buy", "2.10", 1)
    log.order(T - 5 * MINUTE_NS, "H-2", "buy", "2.11", 1)  # the best bid
    log.order(T - 5 * MINUTE_NS, "H-2", "sell", "2.20", 1)  # mid 2.155
    log.order(T - 5 * MINUTE_NS, "H-3", "buy", "2.50", 1)  # one side only: not a quote
    log.nothing(T)
    value = at(log.values(), T)
    assert value.value_micro == (2_015_000 + 2_155_000) // 2
    assert (value.source, value.trade_count, value.volume, value.instrument_count,
            value.sufficient) == ("mid", 0, 0, 0, False)
    expected = hashlib.sha256(msgspec.json.encode(
        ["mid", [["H-1", 2_000_000, 2_030_000], ["H-2", 2_110_000, 2_200_000]]])).digest()
    assert value.inputs_hash == expected


def test_each_mid_is_floored_then_their_mean(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("H-2", T + 2 * HOUR_NS)
    log.order(T - MINUTE_NS, "H-1", "buy", "2.000001", 1)
    log.order(T - MINUTE_NS, "H-1", "sell", "2.000002", 1)  # floor(4000003 / 2) = 2000001
    log.order(T - MINUTE_NS, "H-2", "buy", "2.000002", 1)
    log.order(T - MINUTE_NS, "H-2", "sell", "2.000002", 1)  # 2000002
    log.nothing(T)
    assert at(log.values(), T).value_micro == (2_000_001 + 2_000_002) // 2


def test_then_the_last_value_then_none(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + 2 * HOUR_NS)
    log.listing("H-2", T + 2 * HOUR_NS, gpu=A100)  # a class that never trades nor quotes
    log.trade(T - MINUTE_NS, "H-1", "2.00", 1)
    log.nothing(T + HOUR_NS + MINUTE_NS)
    values = log.values()
    previous = at(values, T + HOUR_NS - MINUTE_NS)  # the trade's last minute in the window
    first_last = at(values, T + HOUR_NS)
    following = at(values, T + HOUR_NS + MINUTE_NS)
    assert previous.source == "trades"
    assert (first_last.source, first_last.value_micro) == ("last", 2_000_000)
    assert first_last.inputs_hash == hashlib.sha256(
        msgspec.json.encode(["last", previous.inputs_hash.hex()])).digest()
    assert (following.source, following.value_micro) == ("last", 2_000_000)
    assert following.inputs_hash == hashlib.sha256(
        msgspec.json.encode(["last", first_last.inputs_hash.hex()])).digest()
    for value in (v for v in values if v.gpu == A100):
        assert (value.source, value.value_micro, value.inputs_hash) == (
            "none", None, hashlib.sha256(b'["none"]').digest())


def test_the_trades_hash_is_the_documented_one(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("H-2", T + 25 * HOUR_NS)  # beyond 24 h: its trade is not an input
    log.trade(T - HOUR_NS, "H-1", "2.10", 3)  # minute 0 of the window
    log.trade(T - HOUR_NS + 1, "H-2", "2.00", 1)
    log.trade(T - HOUR_NS + 2, "H-1", "2.20", 1)
    log.trade(T - 1, "H-1", "2.30", 2)  # minute 59
    log.nothing(T)
    minutes = ["[]"] * 60
    minutes[0] = "[[3,2100000,3],[5,2200000,1]]"
    minutes[59] = "[[6,2300000,2]]"
    digests = [hashlib.sha256(text.encode()).hexdigest() for text in minutes]
    expected = hashlib.sha256(msgspec.json.encode(["trades", digests])).digest()
    assert at(log.values(), T).inputs_hash == expected


def test_the_hash_changes_with_any_input_and_only_with_an_input(new: NewCalculator) -> None:
    def value_with(price: str = "2.10", quantity: int = 3, far_price: str = "9.00",
                   second_seq_shift: bool = False) -> IndexValue:
        log = Log(new)
        log.listing("H-1", T + HOUR_NS)
        log.listing("far", T + 30 * HOUR_NS)
        if second_seq_shift:
            log.nothing(T - 10 * MINUTE_NS)
        log.trade(T - 10 * MINUTE_NS, "H-1", price, quantity)
        log.trade(T - 10 * MINUTE_NS, "far", far_price, 1)
        log.trade(T - 5 * MINUTE_NS, "H-1", "2.10", 3)
        log.nothing(T)
        return at(log.values(), T)

    base = value_with()
    assert value_with(price="2.11").inputs_hash != base.inputs_hash
    assert value_with(quantity=4).inputs_hash != base.inputs_hash
    assert value_with(second_seq_shift=True).inputs_hash != base.inputs_hash  # other seqs
    same = value_with(far_price="50.00")  # not an input: beyond the 24 hours
    assert (same.inputs_hash, same.value_micro) == (base.inputs_hash, base.value_micro)


def test_an_event_that_passes_several_minutes_releases_each_of_them(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("A-1", T + HOUR_NS, gpu=A100)
    log.trade(T - 1, "H-1", "2.00", 1)
    calculator = new()
    calculator.feed_events(log.events)
    log.nothing(T + 3 * MINUTE_NS + 5)  # passes T, T + 1, T + 2 and T + 3 minutes
    released = calculator.feed([encode(log.events[-1])])
    assert [(v.minute_ns - T) // MINUTE_NS for v in released] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [v.gpu for v in released[:2]] == [A100, H100]  # by gpu, then region
    assert {v.last_seq for v in released} == {3}
    assert all(v.source == "trades" for v in released if v.gpu == H100)


def test_the_book_follows_the_order_events(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    bid = log.order(T - 9 * MINUTE_NS, "H-1", "buy", "2.00", 5)
    ask = log.order(T - 9 * MINUTE_NS, "H-1", "sell", "2.40", 2)
    log.order(T - 9 * MINUTE_NS, "H-1", "sell", "2.10", 3, time_in_force="ioc")  # never rests
    log.order(T - 9 * MINUTE_NS, "H-1", "buy", None, 3, order_type="market")
    better_ask = log.order(T - 9 * MINUTE_NS, "H-1", "sell", "2.30", 4, time_in_force="gtd")
    log.nothing(T - 8 * MINUTE_NS)  # mid (2.00 + 2.30) / 2
    log.add(OrderAmended, T - 8 * MINUTE_NS, account="mm", client_order_id=bid, order_id=bid,
            instrument="H-1", price="2.20", quantity=5, remaining_quantity=5)
    log.nothing(T - 7 * MINUTE_NS)  # mid (2.20 + 2.30) / 2
    log.add(OrderReduced, T - 7 * MINUTE_NS, account="mm", client_order_id=better_ask,
            order_id=better_ask, instrument="H-1", reason="stp", reduced_quantity=3,
            remaining_quantity=1)
    log.nothing(T - 6 * MINUTE_NS)  # same mid: the ask still rests
    log.cancel(T - 6 * MINUTE_NS, "H-1", better_ask)
    log.nothing(T - 5 * MINUTE_NS)  # mid (2.20 + 2.40) / 2
    log.cancel(T - 5 * MINUTE_NS, "H-1", ask)
    log.nothing(T - 4 * MINUTE_NS)  # no ask: the last value
    values = log.values()
    mids = [at(values, T - minutes * MINUTE_NS).value_micro for minutes in (8, 7, 6, 5)]
    assert mids == [2_150_000, 2_250_000, 2_250_000, 2_300_000]
    assert at(values, T - 4 * MINUTE_NS).source == "last"


def test_trades_empty_the_makers_and_a_strips_taker_is_passed_over(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.listing("H-2", T + 2 * HOUR_NS)
    log.order(T - 2 * HOUR_NS, "H-1", "buy", "2.00", 4)
    ask = log.order(T - 2 * HOUR_NS, "H-1", "sell", "2.20", 2)
    log.order(T - 2 * HOUR_NS, "H-1", "sell", "2.60", 2)
    log.trade(T - 2 * HOUR_NS, "H-1", "2.20", 2, maker_order_id=ask, taker_order_id="strip-7")
    log.nothing(T)  # the trade is out of the window: the mid of 2.00 and 2.60
    value = at(log.values(), T)
    assert (value.source, value.value_micro) == ("mid", 2_300_000)


def test_sufficiency_needs_enough_trades_and_volume(new: NewCalculator) -> None:
    def flags(trades: int, quantity: int) -> bool:
        log = Log(new)
        log.listing("H-1", T + HOUR_NS)
        for _ in range(trades):
            log.trade(T - MINUTE_NS, "H-1", "2.00", quantity)
        log.nothing(T)
        return at(log.values(), T).sufficient

    enough = -(-MIN_VOLUME // MIN_TRADES)  # the quantity per trade that reaches MIN_VOLUME
    assert flags(MIN_TRADES, enough)
    assert not flags(MIN_TRADES - 1, MIN_VOLUME)
    assert not flags(MIN_TRADES, (MIN_VOLUME - 1) // MIN_TRADES)


def test_the_encoding_of_a_record_does_not_change_the_values(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.order(T - 3 * MINUTE_NS, "H-1", "buy", "2.00", 4)
    log.order(T - 3 * MINUTE_NS, "H-1", "sell", "2.20", 4)
    log.trade(T - 2 * MINUTE_NS, "H-1", "2.10", 1)
    log.nothing(T)
    canonical = [encode(event) for event in log.events]
    # keys in another order, with spaces: the kinds must be told from the decoded type
    reordered = [msgspec.json.format(msgspec.json.encode(
        dict(reversed(list(msgspec.json.decode(record).items())))), indent=1)
        for record in canonical]
    assert new().feed(reordered) == new().feed(canonical)


def test_a_log_the_index_cannot_follow_is_refused(new: NewCalculator) -> None:
    log = Log(new)
    log.listing("H-1", T + HOUR_NS)
    log.trade(T - MINUTE_NS, "H-1", "2.00", 1)
    records = [encode(event) for event in log.events]
    with pytest.raises(SeqGapError):
        new().feed(records[1:])  # not from seq 1
    with pytest.raises(SeqGapError):
        new().feed([records[0], records[0]])
    unlisted = Log(new)
    unlisted.trade(T, "nowhere", "2.00", 1)
    with pytest.raises(EventError, match="never listed"):
        unlisted.values()
    backwards = Log(new)
    backwards.nothing(T)
    backwards.nothing(T - 1)
    with pytest.raises(EventError, match="before"):
        backwards.values()
    with pytest.raises(EventError):
        new().feed([b"not json"])
    bad_price = Log(new)
    bad_price.listing("H-1", T + HOUR_NS)
    bad_price.trade(T, "H-1", "2.0000001", 1)
    with pytest.raises(EventError, match="seq 2"):
        bad_price.values()
