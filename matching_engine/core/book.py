"""Orders and price-time priority books: flat, integer prices, no I/O.

A book side keeps its price levels in a dict keyed by price and a sorted list of priority
keys (the price for asks, minus the price for bids), so the best level is the first key.
A level is a FIFO of orders with lazy removal: a canceled order is marked and skipped when
it reaches the front; the level disappears as soon as its last live order leaves.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator

from protocol.effects import order_hold


class Instrument:
    """A listed GPU-hour contract with its two book sides."""

    __slots__ = (
        "symbol", "gpu", "region", "delivery_start", "delivery_hours", "tick",
        "max_order_quantity", "maker_fee_bps", "taker_fee_bps", "hold_fee_bps", "closed",
        "bond", "bids", "asks", "parsed_prices",
    )

    def __init__(
        self, *, symbol: str, gpu: str, region: str, delivery_start: int, delivery_hours: int,
        tick: int, max_order_quantity: int, maker_fee_bps: int, taker_fee_bps: int,
        closed: bool = False, bond: int | None = None,
    ) -> None:
        self.symbol = symbol
        self.gpu = gpu
        self.region = region
        self.delivery_start = delivery_start
        self.delivery_hours = delivery_hours
        self.tick = tick
        self.max_order_quantity = max_order_quantity
        self.maker_fee_bps = maker_fee_bps
        self.taker_fee_bps = taker_fee_bps
        self.hold_fee_bps = max(maker_fee_bps, taker_fee_bps)
        self.closed = closed
        # micro-USDC per GPU-hour of a deliverable instrument (v2, Delivery), else None
        self.bond = bond
        self.bids = BookSide(is_buy=True)
        self.asks = BookSide(is_buy=False)
        # price text -> micro-USDC (0 when invalid): order flow repeats a few prices
        self.parsed_prices: dict[str, int] = {}

    def side(self, is_buy: bool) -> BookSide:
        return self.bids if is_buy else self.asks

    def opposite(self, is_buy: bool) -> BookSide:
        return self.asks if is_buy else self.bids


class Order:
    """One order; mutable, owned by the engine. `price` is micro-USDC (0 for market)."""

    __slots__ = (
        "order_id", "account", "client_order_id", "instrument", "is_buy", "is_market",
        "price", "quantity", "filled", "time_in_force", "expire_at", "post_only", "stp",
        "hold", "resting", "open",
    )

    def __init__(
        self, *, order_id: int, account: str, client_order_id: str, instrument: Instrument,
        is_buy: bool, is_market: bool, price: int, quantity: int, time_in_force: str,
        expire_at: int | None, post_only: bool, stp: str, filled: int = 0,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.instrument = instrument
        self.is_buy = is_buy
        self.is_market = is_market
        self.price = price
        self.quantity = quantity
        self.filled = filled
        self.time_in_force = time_in_force
        self.expire_at = expire_at
        self.post_only = post_only
        self.stp = stp
        self.hold = 0
        self.resting = False
        self.open = True

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled

    def required_hold(self) -> int:
        """What this order must hold now: USDC for a limit buy, tokens for a sell."""
        return order_hold(self.is_buy, self.is_market, self.quantity - self.filled, self.price,
                          self.instrument.hold_fee_bps)

    def requeued(self) -> Order:
        """Return a copy to append at the back of a level; this object goes dead."""
        copy = Order(
            order_id=self.order_id, account=self.account, client_order_id=self.client_order_id,
            instrument=self.instrument, is_buy=self.is_buy, is_market=self.is_market,
            price=self.price, quantity=self.quantity, time_in_force=self.time_in_force,
            expire_at=self.expire_at, post_only=self.post_only, stp=self.stp,
            filled=self.filled,
        )
        copy.hold = self.hold
        self.open = False
        self.resting = False
        self.hold = 0
        return copy


class Level:
    """The orders resting at one price, oldest first; `live` counts the resting ones."""

    __slots__ = ("price", "orders", "live")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.live = 0

    def front(self) -> Order:
        """Return the oldest resting order, dropping dead ones from the front."""
        orders = self.orders
        while not orders[0].resting:
            orders.popleft()
        return orders[0]

    def resting_orders(self) -> Iterator[Order]:
        return (order for order in self.orders if order.resting)


class BookSide:
    """One side of one book."""

    __slots__ = ("is_buy", "keys", "levels")

    def __init__(self, is_buy: bool) -> None:
        self.is_buy = is_buy
        self.keys: list[int] = []
        self.levels: dict[int, Level] = {}

    def best(self) -> Level | None:
        if not self.keys:
            return None
        key = self.keys[0]
        return self.levels[-key if self.is_buy else key]

    def best_price(self) -> int | None:
        if not self.keys:
            return None
        key = self.keys[0]
        return -key if self.is_buy else key

    def add(self, order: Order) -> None:
        """Append the order at the back of its price level."""
        price = order.price
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level(price)
            insort(self.keys, -price if self.is_buy else price)
        level.orders.append(order)
        level.live += 1
        order.resting = True

    def remove(self, order: Order) -> None:
        """Take a resting order off the book; its level goes when it was the last one."""
        order.resting = False
        level = self.levels[order.price]
        level.live -= 1
        if level.live == 0:
            del self.levels[order.price]
            key = -order.price if self.is_buy else order.price
            del self.keys[bisect_left(self.keys, key)]
        elif len(level.orders) > 2 * level.live + 16:
            level.orders = deque(level.resting_orders())

    def levels_in_priority(self) -> Iterator[Level]:
        levels = self.levels
        if self.is_buy:
            return (levels[-key] for key in self.keys)
        return (levels[key] for key in self.keys)

    def orders_in_priority(self) -> Iterator[Order]:
        for level in self.levels_in_priority():
            yield from level.resting_orders()

    def crosses(self, is_buy: bool, price: int) -> bool:
        """Whether an order on the other side at `price` would meet this side's best."""
        best = self.best_price()
        if best is None:
            return False
        return price >= best if is_buy else price <= best
