"""The best bid and ask of each instrument, kept from the public order events.

Only the orders that can rest are kept: limit orders good till canceled or till a date. An
immediate-or-cancel, fill-or-kill or market order never rests once its command is done, and
the index reads the book only between timestamps (docs/index-methodology.md), so it never
sees one; the trades and cancels that name an order the book does not hold (those orders, a
strip's `strip_id`) change nothing. Every other order is kept from its `order_accepted`
(with its whole quantity, which its own trades as a taker then reduce) until a trade, a
reduction or a cancel leaves nothing of it. Each instrument's side is a map of price level
to the quantity resting there, so the best price is the largest bid or smallest ask key.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RESTING_TIMES_IN_FORCE", "Book"]

RESTING_TIMES_IN_FORCE: Final = frozenset(("gtc", "gtd"))


class _Order:
    __slots__ = ("levels", "price", "remaining")

    def __init__(self, levels: dict[int, int], price: int, remaining: int) -> None:
        self.levels = levels  # its instrument's side: price -> quantity resting there
        self.price = price
        self.remaining = remaining


class Book:
    """Resting orders and price levels of every open instrument."""

    def __init__(self) -> None:
        self.orders: dict[str, _Order] = {}
        self.sides: dict[str, tuple[dict[int, int], dict[int, int]]] = {}  # bids, asks

    def list(self, symbol: str) -> None:
        self.sides[symbol] = ({}, {})

    def close(self, symbol: str) -> None:
        """Forget a closed instrument (the engine canceled its orders just before)."""
        self.sides.pop(symbol, None)

    def accept(self, order_id: str, symbol: str, is_buy: bool, price: int, quantity: int
               ) -> None:
        """Keep a limit order that may rest; ValueError for an id already kept or an
        instrument not open."""
        if order_id in self.orders:
            raise ValueError(f"order {order_id} accepted twice")
        sides = self.sides.get(symbol)
        if sides is None:
            raise ValueError(f"order {order_id} accepted on {symbol}, which is not open")
        levels = sides[0] if is_buy else sides[1]
        self.orders[order_id] = _Order(levels, price, quantity)
        levels[price] = levels.get(price, 0) + quantity

    def fill(self, maker_order_id: str, taker_order_id: str, quantity: int) -> None:
        """Take a trade's quantity off its maker and its taker, those the book keeps."""
        orders = self.orders
        order = orders.get(maker_order_id)
        if order is not None:
            self._set_remaining(maker_order_id, order, order.remaining - quantity)
        order = orders.get(taker_order_id)
        if order is not None:
            self._set_remaining(taker_order_id, order, order.remaining - quantity)

    def reduce(self, order_id: str, remaining: int) -> None:
        order = self.orders.get(order_id)
        if order is not None:
            self._set_remaining(order_id, order, remaining)

    def cancel(self, order_id: str) -> None:
        order = self.orders.get(order_id)
        if order is not None:
            self._set_remaining(order_id, order, 0)

    def amend(self, order_id: str, price: int, remaining: int) -> None:
        order = self.orders.get(order_id)
        if order is None:
            return
        levels = order.levels
        self._set_remaining(order_id, order, 0)
        if remaining > 0:
            self.orders[order_id] = _Order(levels, price, remaining)
            levels[price] = levels.get(price, 0) + remaining

    def best(self, symbol: str) -> tuple[int | None, int | None]:
        """The best bid and the best ask of an open instrument (None for an empty side)."""
        bids, asks = self.sides[symbol]
        return (max(bids) if bids else None), (min(asks) if asks else None)

    def _set_remaining(self, order_id: str, order: _Order, remaining: int) -> None:
        if remaining < 0:
            raise ValueError(f"order {order_id} filled beyond its quantity")
        levels, price = order.levels, order.price
        left = levels[price] - order.remaining + remaining
        if left:
            levels[price] = left
        else:
            del levels[price]
        if remaining:
            order.remaining = remaining
        else:
            del self.orders[order_id]
