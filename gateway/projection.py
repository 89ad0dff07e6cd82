"""Project the event log into what the gateway serves: books, market data, orders, balances.

Pure: `apply` takes events in seq order, `flush` returns the feed messages for everything
that changed since the last flush, encoded once. The state is in three parts:
`gateway.marketdata` (each instrument's book, trades, candles and ticker, the same on every
gateway), `gateway.accounts` (each account's open orders, balances, fills and reports) and
`gateway.deliveries` (each account's issues, assignments and delivery events).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway import marketdata
from gateway.accounts import Accounts, OpenOrder
from gateway.deliveries import Deliveries
from protocol import AnyEvent
from wsapi.messages import (
    BalancesMessage,
    BookMessage,
    CandlesMessage,
    DeliveryEvent,
    Fill,
    Instrument,
    OrderReport,
    TickerMessage,
    TradesMessage,
)

__all__ = ["Projection"]


class Projection:
    """Apply events to the market data and the accounts; hand out their snapshots and, per
    flush, the changes as feed messages."""

    def __init__(self, *, trades_kept_max: int = 50, candles_kept_max: int = 1440,
                 fills_kept_max: int = 100, delivery_events_kept_max: int = 100,
                 deliveries_settled_kept_max: int = 1000,
                 reports_wanted: Callable[[str], bool] = lambda account: True) -> None:
        self.position = marketdata.LogPosition()
        self.market = marketdata.MarketData(self.position, trades_kept_max=trades_kept_max,
                                            candles_kept_max=candles_kept_max)
        self.accounts = Accounts(self.position, self.market, fills_kept_max=fills_kept_max,
                                 reports_wanted=reports_wanted)
        self.delivery = Deliveries(self.position, self.market,
                                   events_kept_max=delivery_events_kept_max,
                                   settled_kept_max=deliveries_settled_kept_max)
        # Deliveries checks an event's amounts before accounts moves them.
        self._handlers = _chained(
            self.market.handlers(), self.delivery.handlers(), self.accounts.handlers())

    @property
    def event_seq(self) -> int:
        return self.position.event_seq

    @property
    def time_ns(self) -> int:
        return self.position.time_ns

    @property
    def instruments(self) -> dict[str, marketdata.InstrumentState]:
        return self.market.instruments

    @property
    def orders(self) -> dict[str, OpenOrder]:
        return self.accounts.orders

    @property
    def open_by_client(self) -> dict[tuple[str, str], OpenOrder]:
        return self.accounts.open_by_client

    @property
    def balances(self) -> dict[str, dict[str, list[int]]]:
        return self.accounts.balances

    def apply(self, event: AnyEvent) -> None:
        """Apply one event; events must come in seq order with no gap."""
        position = self.position
        if event.seq != position.event_seq + 1:
            raise marketdata.ProjectionError(f"event seq {event.seq} after {position.event_seq}")
        position.event_seq = event.seq
        position.time_ns = max(position.time_ns, event.ts)
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def flush(
        self, wanted: marketdata.Wanted = marketdata.everything
    ) -> list[marketdata.FeedUpdate]:
        """Return the feed messages for everything changed since the last flush.

        Messages nobody wants (`wanted(channel, key)` false) are not built, but the state
        moves on all the same, so a later snapshot and the sequence numbers stay right.
        """
        return (self.market.updates(wanted) + self.accounts.updates(wanted)
                + self.delivery.updates(wanted))

    # -- snapshots and queries -------------------------------------------------------------

    def book_snapshot(self, symbol: str) -> BookMessage:
        return self.market.book_snapshot(symbol)

    def trades_snapshot(self, symbol: str) -> TradesMessage:
        return self.market.trades_snapshot(symbol)

    def candles_snapshot(self, symbol: str, count: int) -> CandlesMessage:
        return self.market.candles_snapshot(symbol, count)

    def ticker(self, symbol: str) -> TickerMessage:
        return self.market.ticker(symbol)

    def instrument_specs(self) -> list[Instrument]:
        return self.market.instrument_specs()

    def recent_fills(self, account: str) -> list[Fill]:
        return self.accounts.recent_fills(account)

    def balances_message(self, account: str) -> BalancesMessage:
        return self.accounts.balances_message(account)

    def open_orders(self, account: str, instrument: str | None = None) -> list[OrderReport]:
        return self.accounts.open_orders(account, instrument)

    def recent_delivery_events(self, account: str) -> list[DeliveryEvent]:
        return self.delivery.recent_events(account)

    def deliveries(self, account: str) -> dict[str, Any]:
        """The `deliveries` result of an account: its issues and assignments."""
        return self.delivery.result(account)


Handler = Callable[[Any], None]


def _chained(*parts: dict[type[Any], Handler]) -> dict[type[Any], Handler]:
    """One handler per event type: a part's own, or, for a type several parts follow (an
    instrument's close: market data, then balances), one that calls theirs in order."""
    by_type: dict[type[Any], list[Handler]] = {}
    for part in parts:
        for kind, handler in part.items():
            by_type.setdefault(kind, []).append(handler)
    return {kind: handlers[0] if len(handlers) == 1 else _in_order(handlers)
            for kind, handlers in by_type.items()}


def _in_order(handlers: list[Handler]) -> Handler:
    def apply(event: Any) -> None:
        for handler in handlers:
            handler(event)

    return apply
