"""The index calculator: the pure core of the index, a function of the event log alone.

No clock, no I/O: `IndexCalculator.feed` takes encoded events in seq order and returns the
values their timestamps released. For every (gpu, region) listed so far and every minute
boundary T (a multiple of 60e9 ns) that the events' `ts` passes, the value at T is computed
from the state after every event with `ts < T`; so the values of T come out when the first
event with `ts >= T` arrives, a quiet log publishes late, and an event that passes several
boundaries releases a value for each. `docs/index-methodology.md` states the rules; in
short, for T and one class:

- inputs: the trades with `ts` in [T - 60 min, T) on the class's instruments whose
  `delivery_start` is in [T, T + 24 h) (still tradable at T, delivered in the next 24 hours);
- `trades`: their volume-weighted average price, floor(sum(price * qty) / sum(qty));
- else `mid`: over the same instruments with both a best bid and a best ask at T, the floor
  of the mean of floor((bid + ask) / 2);
- else `last`: the class's previous value; else `none`.

`inputs_hash` commits to the exact inputs (the methodology, section 6, and `_trades_hash`
say how), so anyone holding the public events recomputes the same 32 bytes.

Why intermediate states never matter: every event of one command carries the same `ts`
(the engine's time when it applied the command), so the state "after every event with
ts < T" always falls between two commands, never inside one: an immediate-or-cancel order
that rests for the length of its own command, or a strip's legs half executed, are never
seen. The book (`index.book`) relies on that.

Speed: the index reads few kinds of events and few fields of them (`index.events`). Between
two minute boundaries nothing is published, so a run of events that passes none is applied
without reading every event's `ts` and `seq`: the run's first and last events are decoded
to check that the seqs follow on and where the run ends, events of kinds the index does not
use are skipped on their first bytes, orders that never rest on their time in force, and
the rest are decoded down to their used fields.
Trades are kept per class and minute, with each minute's totals per instrument and the
hash of its inputs computed once (again only when the set of instruments in the window
changes), so a boundary costs a sum over the class's instruments, not over its trades.

Two implementations: `IndexCalculator` here is the reference, and `NativeIndexCalculator`
runs the same steps in Rust (`gpux_native`, built by `make native`; `index.rs` in the
engine's crate), several times faster, with the same values and the same errors for the same
records fed in the same batches (tests/unit/test_index_native.py). `new_calculator` picks the
native one when it is built, as the engine's replay picks its native core; the service and
`gpux index verify` take either by name (`--calculator python|native`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import itemgetter, mul
from typing import Any, Final, Protocol

import msgspec

from index import events
from index.book import RESTING_TIMES_IN_FORCE, Book
from index.errors import EventError, SeqGapError
from index.value import MINUTE_NS, IndexValue, Source
from protocol import encode
from protocol.errors import ProtocolError
from protocol.events import EVENT_TYPES, Event
from protocol.money import parse_positive_micro

__all__ = [
    "CALCULATORS",
    "GAP_MINUTES_MAX",
    "HORIZON_NS",
    "MIN_TRADES",
    "MIN_VOLUME",
    "WINDOW_MINUTES",
    "Calculator",
    "IndexCalculator",
    "NativeIndexCalculator",
    "default_calculator",
    "new_calculator",
]

WINDOW_MINUTES: Final = 60
HORIZON_NS: Final = 24 * 3600 * 10**9
# Data sufficiency (docs/index-methodology.md, "Data sufficiency"): a value from trades is
# `sufficient` with at least this many trades and GPU-hours in its window.
MIN_TRADES: Final = 5
MIN_VOLUME: Final = 40
# A log whose ts jumps further than this while classes are listed is refused rather than
# made to publish a value for every minute of the jump.
GAP_MINUTES_MAX: Final = 366 * 24 * 60
EMPTY_MINUTE_DIGEST: Final = hashlib.sha256(b"[]").hexdigest()
_PRICES_CACHED_MAX: Final = 1 << 16  # price texts remembered (a book has few levels)
CALCULATORS: Final = ("python", "native")

_encode = msgspec.json.Encoder().encode
_price_of = itemgetter(1)
_quantity_of = itemgetter(2)
# How an order that never rests says so in compact JSON (market orders are ioc or fok
# too): `"time_in_force":"` cannot occur inside a string value, whose quotes are escaped,
# so the last one in a record is the field itself.
_TIME_IN_FORCE: Final = b'"time_in_force":"'
_NEVER_RESTING: Final = (b'ioc"', b'fok"')
_decode_listed = msgspec.json.Decoder(events.Listed).decode
_decode_closed = msgspec.json.Decoder(events.Closed).decode
_decode_accepted = msgspec.json.Decoder(events.Accepted).decode
_decode_trade = msgspec.json.Decoder(events.TradeFields).decode
_decode_canceled = msgspec.json.Decoder(events.Canceled).decode
_decode_amended = msgspec.json.Decoder(events.Amended).decode
_decode_reduced = msgspec.json.Decoder(events.Reduced).decode


def _unknown(record: bytes) -> None:
    """Stand for "no handler known" in the handler maps' lookups."""
    raise AssertionError("never called")


class _Instrument:
    """A listed instrument and its trades in its class's window (count, GPU-hours, and
    the sum of price * quantity in micro-USDC)."""

    __slots__ = ("closed", "delivery_start", "notional", "series", "symbol", "trades",
                 "volume")

    def __init__(self, symbol: str, series: _Series, delivery_start: int) -> None:
        self.symbol = symbol
        self.series = series
        self.delivery_start = delivery_start
        self.closed = False
        self.trades = 0
        self.volume = 0
        self.notional = 0


class _Minute:
    """One class's trades of one minute, as (seq, price, quantity) per instrument in seq
    order; once the minute has passed, their totals per instrument (count, GPU-hours,
    notional) and the hash of those on the instruments in the window (for
    `digest_version`)."""

    __slots__ = ("digest", "digest_version", "minute", "totals", "trades")

    def __init__(self, minute: int) -> None:
        self.minute = minute  # ts // MINUTE_NS of its trades
        self.trades: dict[_Instrument, list[tuple[int, int, int]]] = {}
        self.totals: dict[_Instrument, tuple[int, int, int]] = {}
        self.digest = ""
        self.digest_version = -1


class _Series:
    """The index of one (gpu, region): its open instruments, the minutes of trades in its
    window, the instruments eligible at the last boundary and the last value published."""

    __slots__ = ("current", "eligible", "eligible_set", "eligible_version", "gpu",
                 "instruments", "previous", "region", "window")

    def __init__(self, gpu: str, region: str) -> None:
        self.gpu = gpu
        self.region = region
        self.instruments: list[_Instrument] = []  # listed and not closed, in listing order
        self.current: _Minute | None = None  # trades of the minute in progress
        self.window: deque[_Minute] = deque()  # past minutes with trades, oldest first
        self.eligible: tuple[_Instrument, ...] = ()
        self.eligible_set: frozenset[_Instrument] = frozenset()
        self.eligible_version = 0
        self.previous: IndexValue | None = None


class IndexCalculator:
    """Feed it the event log from seq 1, in order; it returns every value as it falls due."""

    def __init__(self) -> None:
        self.seq = 0  # of the last event fed
        self.ts: int | None = None  # of the last event fed
        self.book = Book()
        self.instruments: dict[str, _Instrument] = {}
        self.series: dict[tuple[str, str], _Series] = {}
        self._series_order: list[_Series] = []  # by (gpu, region): the order values come in
        self._prices: dict[str, int] = {}
        handlers: dict[str, Callable[[bytes], None]] = {
            "instrument_listed": self._on_listed, "instrument_closed": self._on_closed,
            "order_accepted": self._on_accepted, "trade": self._on_trade,
            "order_canceled": self._on_canceled, "order_amended": self._on_amended,
            "order_reduced": self._on_reduced,
        }
        self._handlers_by_type: dict[str, Callable[[bytes], None] | None] = {
            tag: handlers.get(tag) for tag in EVENT_TYPES}
        self._handlers_by_prefix = {events.canonical_prefix(tag): handler
                                    for tag, handler in self._handlers_by_type.items()}

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, records: Sequence[bytes]) -> list[IndexValue]:
        """Apply encoded events (the next ones of the log, in seq order); return the values
        of every minute boundary they passed, by minute, then gpu, then region.

        Raise `SeqGapError` or `EventError` on a log the index cannot follow; the calculator
        is then unusable (start a new one from seq 1).
        """
        released: list[IndexValue] = []
        start, end = 0, len(records)
        while start < end:
            if self.ts is None:
                self._apply_one(records[start], released)
                start += 1
                continue
            boundary = (self.ts // MINUTE_NS + 1) * MINUTE_NS
            last = self._head(records[end - 1])
            if last.ts < boundary:
                self._apply_run(records, start, end, last)
                break
            crossing = self._first_at_or_after(records, start, end - 1, boundary)
            if crossing > start:
                self._apply_run(records, start, crossing, self._head(records[crossing - 1]))
            self._apply_one(records[crossing], released)
            start = crossing + 1
        return released

    def feed_events(self, log_events: Iterable[Event]) -> list[IndexValue]:
        """`feed` for decoded events (tests, tools): each is encoded as the engine does."""
        return self.feed([encode(event) for event in log_events])

    def _head(self, record: bytes) -> events.Head:
        try:
            return events.decode_head(record)
        except msgspec.DecodeError as error:
            raise EventError(f"undecodable event after seq {self.seq}: {error}") from error

    def _first_at_or_after(self, records: Sequence[bytes], low: int, high: int,
                           boundary: int) -> int:
        """The first index in [low, high] whose event has ts >= boundary (high's has)."""
        while low < high:
            middle = (low + high) // 2
            if self._head(records[middle]).ts >= boundary:
                high = middle
            else:
                low = middle + 1
        return low

    def _apply_one(self, record: bytes, released: list[IndexValue]) -> None:
        """Apply one event, releasing first the values of every boundary its ts passes."""
        head = self._head(record)
        if head.seq != self.seq + 1:
            raise SeqGapError(self.seq + 1, head.seq)
        if self.ts is not None:
            if head.ts < self.ts:
                raise EventError(f"ts {head.ts} is before the previous event's {self.ts}",
                                 seq=head.seq)
            self._pass_boundaries(head.ts, released)
        handler = self._handler_of(head, head.seq)
        if handler is not None:
            try:
                handler(record)
            except (msgspec.DecodeError, ValueError) as error:  # ValidationError included
                raise EventError(str(error), seq=head.seq) from error
        self.seq, self.ts = head.seq, head.ts

    def _apply_run(self, records: Sequence[bytes], start: int, end: int,
                   last: events.Head) -> None:
        """Apply records[start:end], which pass no minute boundary: no value falls due
        inside, so only the first and last events' seq and ts are read."""
        first = self._head(records[start])
        if first.seq != self.seq + 1:
            raise SeqGapError(self.seq + 1, first.seq)
        if last.seq != self.seq + end - start:
            raise SeqGapError(self.seq + end - start, last.seq)
        assert self.ts is not None
        if first.ts < self.ts:
            raise EventError(f"ts {first.ts} is before the previous event's {self.ts}",
                             seq=first.seq)
        by_prefix = self._handlers_by_prefix.get
        index = start
        try:
            for index in range(start, end):
                record = records[index]
                handler = by_prefix(record[:events.PREFIX_BYTES], _unknown)
                if handler is _unknown:  # not the engine's encoding: go by the decoded type
                    handler = self._handler_of(self._head(record), self.seq + index - start + 1)
                if handler is not None:
                    handler(record)
        except (msgspec.DecodeError, ValueError) as error:  # ValidationError included
            raise EventError(str(error), seq=self.seq + index - start + 1) from error
        self.seq, self.ts = last.seq, last.ts

    def _handler_of(self, head: events.Head, seq: int) -> Callable[[bytes], None] | None:
        """What applies an event of `head.type` (None: one the index does not read)."""
        handler = self._handlers_by_type.get(head.type, _unknown)
        if handler is _unknown:
            raise EventError(f"unknown event type {head.type!r}", seq=seq)
        return handler

    # -- the events the index reads -----------------------------------------------------------

    def _on_listed(self, record: bytes) -> None:
        event = _decode_listed(record)
        if event.symbol in self.instruments:
            raise ValueError(f"instrument {event.symbol} listed twice")
        key = (event.gpu, event.region)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(event.gpu, event.region)
            self._series_order = [self.series[key] for key in sorted(self.series)]
        instrument = _Instrument(event.symbol, series, event.delivery_start)
        self.instruments[event.symbol] = instrument
        series.instruments.append(instrument)
        self.book.list(event.symbol)

    def _on_closed(self, record: bytes) -> None:
        event = _decode_closed(record)
        instrument = self._instrument(event.symbol)
        if not instrument.closed:
            instrument.closed = True
            instrument.series.instruments.remove(instrument)
            self.book.close(event.symbol)

    def _on_accepted(self, record: bytes) -> None:
        at = record.rfind(_TIME_IN_FORCE) + len(_TIME_IN_FORCE)
        if record[at:at + 4] in _NEVER_RESTING and at >= len(_TIME_IN_FORCE):
            return  # an order that never rests: not worth decoding
        event = _decode_accepted(record)
        if event.order_type != "limit" or event.time_in_force not in RESTING_TIMES_IN_FORCE:
            return
        if event.price is None:
            raise ValueError(f"limit order {event.order_id} has no price")
        if event.quantity < 1:
            raise ValueError(f"order quantity must be >= 1, got {event.quantity}")
        self.book.accept(event.order_id, event.instrument, event.side == "buy",
                         self._price(event.price), event.quantity)

    def _on_trade(self, record: bytes) -> None:
        trade = _decode_trade(record)
        instrument = self.instruments.get(trade.instrument)
        if instrument is None:
            raise ValueError(f"instrument {trade.instrument} was never listed")
        price = self._prices.get(trade.price) or self._price(trade.price)
        quantity = trade.quantity
        if quantity < 1:
            raise ValueError(f"trade quantity must be >= 1, got {quantity}")
        self.book.fill(trade.maker_order_id, trade.taker_order_id, quantity)
        series = instrument.series
        minute = series.current
        if minute is None:
            minute = series.current = _Minute(trade.ts // MINUTE_NS)
        elif minute.minute != trade.ts // MINUTE_NS:
            raise ValueError(f"trade at ts {trade.ts} is outside minute {minute.minute} of "
                             "the events around it")
        trades = minute.trades.get(instrument)
        if trades is None:
            minute.trades[instrument] = [(trade.seq, price, quantity)]
        else:
            trades.append((trade.seq, price, quantity))

    def _on_canceled(self, record: bytes) -> None:
        self.book.cancel(_decode_canceled(record).order_id)

    def _on_amended(self, record: bytes) -> None:
        event = _decode_amended(record)
        self.book.amend(event.order_id, self._price(event.price), event.remaining_quantity)

    def _on_reduced(self, record: bytes) -> None:
        event = _decode_reduced(record)
        self.book.reduce(event.order_id, event.remaining_quantity)

    def _instrument(self, symbol: str) -> _Instrument:
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise ValueError(f"instrument {symbol} was never listed")
        return instrument

    def _price(self, text: str) -> int:
        price = self._prices.get(text)
        if price is None:
            try:
                price = parse_positive_micro(text, "price")
            except ProtocolError as error:
                raise ValueError(str(error)) from error
            if len(self._prices) >= _PRICES_CACHED_MAX:
                self._prices.clear()
            self._prices[text] = price
        return price

    # -- minute boundaries ---------------------------------------------------------------------

    def _pass_boundaries(self, ts: int, released: list[IndexValue]) -> None:
        """Release the values of every boundary T with self.ts < T <= ts."""
        assert self.ts is not None
        first = (self.ts // MINUTE_NS + 1) * MINUTE_NS
        if ts < first or not self._series_order:
            return
        minutes = (ts - first) // MINUTE_NS + 1
        if minutes > GAP_MINUTES_MAX:
            raise EventError(f"ts jumps {minutes} minutes from {self.ts} to {ts}: more than "
                             f"the {GAP_MINUTES_MAX} the index publishes at once",
                             seq=self.seq + 1)
        for minute_ns in range(first, ts + 1, MINUTE_NS):
            for series in self._series_order:
                released.append(self._value_at(series, minute_ns))

    def _value_at(self, series: _Series, minute_ns: int) -> IndexValue:
        """Close the series' minutes before `minute_ns` and compute its value there."""
        minute = minute_ns // MINUTE_NS
        self._end_minute(series)
        window = series.window
        while window and window[0].minute < minute - WINDOW_MINUTES:
            for instrument, (count, volume, notional) in window.popleft().totals.items():
                instrument.trades -= count
                instrument.volume -= volume
                instrument.notional -= notional
        self._update_eligible(series, minute_ns)
        trades = volume = notional = traded_instruments = 0
        for instrument in series.eligible:
            if instrument.trades:
                trades += instrument.trades
                volume += instrument.volume
                notional += instrument.notional
                traded_instruments += 1
        if trades:
            value = IndexValue(
                gpu=series.gpu, region=series.region, minute_ns=minute_ns,
                value_micro=notional // volume, source="trades", trade_count=trades,
                volume=volume, instrument_count=traded_instruments,
                sufficient=trades >= MIN_TRADES and volume >= MIN_VOLUME,
                inputs_hash=self._trades_hash(series, minute), last_seq=self.seq)
        else:
            value = self._fallback(series, minute_ns)
        series.previous = value
        return value

    def _end_minute(self, series: _Series) -> None:
        """Total the minute in progress per instrument and move it into the window."""
        current = series.current
        if current is None:
            return
        series.current = None
        for instrument, trades in current.trades.items():
            count = len(trades)
            volume = sum(map(_quantity_of, trades))
            notional = sum(map(mul, map(_price_of, trades), map(_quantity_of, trades)))
            current.totals[instrument] = (count, volume, notional)
            instrument.trades += count
            instrument.volume += volume
            instrument.notional += notional
        series.window.append(current)

    def _update_eligible(self, series: _Series, minute_ns: int) -> None:
        """The instruments whose trades count at `minute_ns`: delivery in the next 24 h."""
        horizon_ns = minute_ns + HORIZON_NS
        eligible = tuple(instrument for instrument in series.instruments
                         if minute_ns <= instrument.delivery_start < horizon_ns)
        if eligible != series.eligible:
            series.eligible = eligible
            series.eligible_set = frozenset(eligible)
            series.eligible_version += 1

    def _fallback(self, series: _Series, minute_ns: int) -> IndexValue:
        """The value when no trade counts: the mid of the books, else the last value."""
        quotes = []
        for instrument in series.eligible:
            bid, ask = self.book.best(instrument.symbol)
            if bid is not None and ask is not None:
                quotes.append((instrument.symbol, bid, ask))
        previous = series.previous
        if quotes:
            quotes.sort()
            mids = sum((bid + ask) // 2 for _symbol, bid, ask in quotes)
            value_micro: int | None = mids // len(quotes)
            source: Source = "mid"
            inputs_hash = hashlib.sha256(_encode(("mid", quotes))).digest()
        elif previous is not None and previous.value_micro is not None:
            value_micro = previous.value_micro
            source = "last"
            inputs_hash = hashlib.sha256(_encode(("last", previous.inputs_hash.hex()))).digest()
        else:
            value_micro = None
            source = "none"
            inputs_hash = hashlib.sha256(_encode(("none",))).digest()
        return IndexValue(
            gpu=series.gpu, region=series.region, minute_ns=minute_ns, value_micro=value_micro,
            source=source, trade_count=0, volume=0, instrument_count=0, sufficient=False,
            inputs_hash=inputs_hash, last_seq=self.seq)

    def _trades_hash(self, series: _Series, minute: int) -> bytes:
        """sha256 of ["trades", [the digest of each minute of the window, oldest first]]."""
        digests = []
        window = iter(series.window)
        held = next(window, None)
        for each in range(minute - WINDOW_MINUTES, minute):
            if held is not None and held.minute == each:
                digests.append(self._minute_digest(series, held))
                held = next(window, None)
            else:
                digests.append(EMPTY_MINUTE_DIGEST)
        return hashlib.sha256(_encode(("trades", digests))).digest()

    def _minute_digest(self, series: _Series, minute: _Minute) -> str:
        """Hex sha256 of [[seq, price, quantity], ...]: the minute's trades on the
        instruments eligible now, in seq order (remembered until those change)."""
        if minute.digest_version != series.eligible_version:
            eligible = series.eligible_set
            lists = [trades for instrument, trades in minute.trades.items()
                     if instrument in eligible]
            triples = lists[0] if len(lists) == 1 else sorted(chain.from_iterable(lists))
            minute.digest = hashlib.sha256(_encode(triples)).hexdigest()
            minute.digest_version = series.eligible_version
        return minute.digest


class Calculator(Protocol):
    """What the service and verify ask of a calculator; both give the same answers."""

    @property
    def seq(self) -> int:
        """The seq of the last event fed (0 before any)."""
        ...

    def feed(self, records: Sequence[bytes]) -> list[IndexValue]:
        """Apply the next encoded events; return the values they released."""
        ...

    def feed_events(self, log_events: Iterable[Event]) -> list[IndexValue]:
        """`feed` for decoded events, encoded as the engine does."""
        ...


class NativeIndexCalculator:
    """`IndexCalculator` in Rust (`gpux_native.NativeIndexCalculator`): the same values for the
    same records fed in the same batches, and the same error classes for a log it cannot
    follow; after an error every later `feed` raises it again.

    Where it can differ (matching_engine/native/README.md): integers the index uses beyond
    the i128 range, and their sums, are an `EventError` (Python's are unbounded); a record
    nested deeper than 512 levels is an `EventError` (msgspec's RecursionError depends on the
    Python stack)."""

    def __init__(self) -> None:
        native = _native_module()
        self._seq_gap_error = native.IndexSeqGapError
        self._event_error = native.IndexEventError
        self._calculator = native.NativeIndexCalculator(list(EVENT_TYPES), events.PREFIX_BYTES)

    @property
    def seq(self) -> int:
        return int(self._calculator.seq)

    def feed(self, records: Sequence[bytes]) -> list[IndexValue]:
        """`IndexCalculator.feed`: raise `SeqGapError` or `EventError` on a log the index
        cannot follow."""
        try:
            rows = self._calculator.feed(records)
        except self._seq_gap_error as gap:
            expected_seq, got_seq = gap.args
            raise SeqGapError(expected_seq, int(got_seq)) from gap
        except self._event_error as error:
            message, seq = error.args
            raise EventError(message, seq=seq) from error
        return [
            IndexValue(gpu=gpu, region=region, minute_ns=minute_ns, value_micro=value_micro,
                       source=source, trade_count=trade_count, volume=volume,
                       instrument_count=instrument_count, sufficient=sufficient,
                       inputs_hash=inputs_hash, last_seq=last_seq)
            for (gpu, region, minute_ns, value_micro, source, trade_count, volume,
                 instrument_count, sufficient, inputs_hash, last_seq) in rows]

    def feed_events(self, log_events: Iterable[Event]) -> list[IndexValue]:
        return self.feed([encode(event) for event in log_events])


def default_calculator() -> str:
    """The native calculator when it is built, else the Python one."""
    return "native" if importlib.util.find_spec("gpux_native") is not None else "python"


def new_calculator(name: str | None = None) -> Calculator:
    """A calculator by name (`CALCULATORS`), `default_calculator()` when None; ValueError for
    another name or the native one not built."""
    name = default_calculator() if name is None else name
    if name == "python":
        return IndexCalculator()
    if name == "native":
        return NativeIndexCalculator()
    raise ValueError(f"calculator must be one of {CALCULATORS}, got {name!r}")


def _native_module() -> Any:
    try:
        import gpux_native
    except ImportError as error:
        raise ValueError("the native index calculator is not built: run `make native`"
                         ) from error
    return gpux_native
