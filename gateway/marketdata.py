"""The public side of the projection: each instrument's book, trades, candles and ticker.

Pure, like `gateway.projection` that drives it: order events change levels through
`level`, trades through `add_trade`; `updates` returns the feed messages of what changed.
Every gateway that applies the same events holds the same books, so each instrument's book
sequence number and checksum agree across gateways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.books import L2Book
from gateway.marketstats import MarketStats
from gateway.messages import encode
from protocol import InstrumentClosed, InstrumentListed, format_micro
from wsapi.messages import (
    BookMessage,
    CandlesMessage,
    Instrument,
    TickerMessage,
    TradeItem,
    TradesMessage,
)


class ProjectionError(Exception):
    """The event stream broke an invariant the projection relies on (a gap in seq, ...)."""


@dataclass(slots=True)
class InstrumentState:
    spec: InstrumentListed
    hold_fee_bps: int
    stats: MarketStats
    book: L2Book = field(default_factory=L2Book)
    closed: bool = False
    seq: int = 0
    published_seq: int = 0
    ticker_dirty: bool = False

    def spec_message(self) -> Instrument:
        spec = self.spec
        return Instrument(
            symbol=spec.symbol, gpu=spec.gpu, region=spec.region,
            delivery_start=spec.delivery_start, delivery_hours=spec.delivery_hours,
            tick_size=spec.tick_size, max_order_quantity=spec.max_order_quantity,
            maker_fee_bps=spec.maker_fee_bps, taker_fee_bps=spec.taker_fee_bps,
            status="closed" if self.closed else "open", bond_per_gpu_hour=spec.bond_per_gpu_hour,
        )


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """One encoded feed message and who it is for: an instrument's or an account's subscribers."""

    channel: str
    key: str
    payload: bytes


Wanted = Callable[[str, str], bool]


@dataclass(slots=True)
class LogPosition:
    """The seq and the engine time of the last event applied, shared by the projection's
    parts (market data and accounts)."""

    event_seq: int = 0
    time_ns: int = 0


def everything(channel: str, key: str) -> bool:
    """The `Wanted` of a caller that wants every message built."""
    return True


class MarketData:
    """Hold every instrument's public state; tell which changed since the last `updates`."""

    def __init__(self, position: LogPosition, *, trades_kept_max: int,
                 candles_kept_max: int) -> None:
        self.position = position
        self.trades_kept_max = trades_kept_max
        self.candles_kept_max = candles_kept_max
        self.instruments: dict[str, InstrumentState] = {}
        self._dirty: set[str] = set()

    def handlers(self) -> dict[type[Any], Callable[[Any], None]]:
        """Return the method that applies each type of event the market data follows."""
        return {InstrumentListed: self.listed, InstrumentClosed: self.closed}

    def listed(self, event: InstrumentListed) -> None:
        self.instruments[event.symbol] = InstrumentState(
            spec=event, hold_fee_bps=max(event.maker_fee_bps, event.taker_fee_bps),
            stats=MarketStats(trades_kept_max=self.trades_kept_max,
                              candles_kept_max=self.candles_kept_max),
        )

    def closed(self, event: InstrumentClosed) -> None:
        instrument = self.instruments[event.symbol]
        instrument.closed = True
        instrument.seq += 1
        self._dirty.add(event.symbol)

    def level(self, instrument: InstrumentState, is_buy: bool, price: int, delta: int) -> None:
        """Change the quantity resting at one price of a book by `delta`."""
        if delta == 0:
            return
        instrument.book.add(is_buy, price, delta)
        instrument.seq += 1
        instrument.ticker_dirty = True
        self._dirty.add(instrument.spec.symbol)

    def add_trade(self, instrument: InstrumentState, item: TradeItem, price: int) -> None:
        instrument.stats.add_trade(item, price)
        instrument.ticker_dirty = True

    # -- output ----------------------------------------------------------------------------

    def updates(self, wanted: Wanted) -> list[FeedUpdate]:
        """The feed messages of the instruments changed since the last call."""
        updates: list[FeedUpdate] = []
        for symbol in sorted(self._dirty):
            instrument = self.instruments.get(symbol)
            if instrument is not None:
                updates += self._instrument_updates(instrument, wanted)
        self._dirty.clear()
        return updates

    def _instrument_updates(self, instrument: InstrumentState, wanted: Wanted) -> list[FeedUpdate]:
        symbol = instrument.spec.symbol
        updates: list[FeedUpdate] = []
        if instrument.seq != instrument.published_seq:
            bids, asks = instrument.book.take_changes()
            if wanted("book", symbol):
                updates.append(FeedUpdate("book", symbol, encode(BookMessage(
                    instrument=symbol, kind="update", seq=instrument.seq,
                    prev_seq=instrument.published_seq, ts=self.position.time_ns, bids=bids,
                    asks=asks, checksum=instrument.book.checksum(),
                ))))
            instrument.published_seq = instrument.seq
        trades = instrument.stats.take_new_trades()
        if trades and wanted("trades", symbol):
            updates.append(FeedUpdate("trades", symbol, encode(
                TradesMessage(instrument=symbol, kind="update", trades=trades))))
        candles = instrument.stats.take_dirty_candles()
        if candles and wanted("candles", symbol):
            updates.append(FeedUpdate("candles", symbol, encode(CandlesMessage(
                instrument=symbol, interval="1m", kind="update", candles=candles))))
        if instrument.ticker_dirty:
            instrument.ticker_dirty = False
            if wanted("ticker", symbol):
                updates.append(FeedUpdate("ticker", symbol, encode(self.ticker(symbol))))
        return updates

    # -- snapshots -------------------------------------------------------------------------

    def book_snapshot(self, symbol: str) -> BookMessage:
        """Return the whole book as of the last flush (call between flushes only)."""
        instrument = self.instruments[symbol]
        if instrument.book.touched() or instrument.seq != instrument.published_seq:
            raise ProjectionError("book snapshot taken with unflushed changes")
        bids, asks = instrument.book.levels()
        return BookMessage(
            instrument=symbol, kind="snapshot", seq=instrument.seq, prev_seq=instrument.seq,
            ts=self.position.time_ns, bids=bids, asks=asks, checksum=instrument.book.checksum(),
        )

    def trades_snapshot(self, symbol: str) -> TradesMessage:
        trades = list(self.instruments[symbol].stats.trades)
        return TradesMessage(instrument=symbol, kind="snapshot", trades=trades)

    def candles_snapshot(self, symbol: str, count: int) -> CandlesMessage:
        candles = self.instruments[symbol].stats.recent_candles(count)
        return CandlesMessage(instrument=symbol, interval="1m", kind="snapshot", candles=candles)

    def ticker(self, symbol: str) -> TickerMessage:
        instrument = self.instruments[symbol]
        bid = instrument.book.best_bid()
        ask = instrument.book.best_ask()
        last = instrument.stats.last_price
        volume, high, low = instrument.stats.window_24h(self.position.time_ns)
        return TickerMessage(
            instrument=symbol, ts=self.position.time_ns,
            bid=format_micro(bid[0]) if bid else None, bid_quantity=bid[1] if bid else 0,
            ask=format_micro(ask[0]) if ask else None, ask_quantity=ask[1] if ask else 0,
            last=format_micro(last) if last is not None else None, volume_24h=volume,
            high_24h=format_micro(high) if high is not None else None,
            low_24h=format_micro(low) if low is not None else None,
        )

    def instrument_specs(self) -> list[Instrument]:
        return [instrument.spec_message() for instrument in self.instruments.values()]
