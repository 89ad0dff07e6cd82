"""Trades, 1-minute candles and the 24-hour ticker figures of one instrument, from its trades.

Time is the engine's (each event's `ts`), so every gateway computes the same candles.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from protocol import format_micro
from wsapi.messages import Candle, TradeItem

MINUTE_NS: Final = 60 * 10**9
DAY_NS: Final = 24 * 60 * MINUTE_NS


class CandleState:
    """One minute's open, high, low, close (micro-USDC), volume and trade count."""

    __slots__ = ("start_ns", "open", "high", "low", "close", "volume", "trades")

    def __init__(self, start_ns: int, price: int) -> None:
        self.start_ns = start_ns
        self.open = self.high = self.low = self.close = price
        self.volume = 0
        self.trades = 0

    def add(self, price: int, quantity: int) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += quantity
        self.trades += 1

    def message(self) -> Candle:
        return Candle(
            start_ns=self.start_ns, open=format_micro(self.open), high=format_micro(self.high),
            low=format_micro(self.low), close=format_micro(self.close), volume=self.volume,
            trades=self.trades,
        )


class MarketStats:
    """Recent trades, candles (bounded) and the last price of one instrument."""

    __slots__ = ("trades", "candles", "last_price", "new_trades", "dirty_candles")

    def __init__(self, *, trades_kept_max: int, candles_kept_max: int) -> None:
        self.trades: deque[TradeItem] = deque(maxlen=trades_kept_max)
        self.candles: deque[CandleState] = deque(maxlen=candles_kept_max)
        self.last_price: int | None = None
        self.new_trades: list[TradeItem] = []
        self.dirty_candles: dict[int, CandleState] = {}

    def add_trade(self, item: TradeItem, price: int) -> None:
        self.trades.append(item)
        self.new_trades.append(item)
        self.last_price = price
        start_ns = item.ts - item.ts % MINUTE_NS
        candle = self.candles[-1] if self.candles else None
        if candle is None or candle.start_ns < start_ns:
            candle = CandleState(start_ns, price)
            self.candles.append(candle)
        elif candle.start_ns > start_ns:  # engine time never goes back; keep it that way
            raise AssertionError("trade ts before the current candle")
        candle.add(price, item.quantity)
        self.dirty_candles[candle.start_ns] = candle

    def window_24h(self, now_ns: int) -> tuple[int, int | None, int | None]:
        """Return volume, high and low of the candles in the 24 hours up to `now_ns`."""
        volume, high, low = 0, None, None
        for candle in reversed(self.candles):
            if candle.start_ns + MINUTE_NS <= now_ns - DAY_NS:
                break
            volume += candle.volume
            high = candle.high if high is None else max(high, candle.high)
            low = candle.low if low is None else min(low, candle.low)
        return volume, high, low

    def take_new_trades(self) -> list[TradeItem]:
        trades, self.new_trades = self.new_trades, []
        return trades

    def take_dirty_candles(self) -> list[Candle]:
        candles = [candle.message() for _, candle in sorted(self.dirty_candles.items())]
        self.dirty_candles.clear()
        return candles

    def recent_candles(self, count: int) -> list[Candle]:
        return [candle.message() for candle in list(self.candles)[-count:]]
