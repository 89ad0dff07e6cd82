"""Keep an L2 book (price -> total quantity per side) and the levels touched since a flush."""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from protocol import format_micro
from wsapi.checksum import DEPTH, book_checksum


class L2Book:
    """Aggregate resting quantity by price; bids and asks keyed by micro-USDC price."""

    __slots__ = ("bids", "asks", "touched_bids", "touched_asks")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.touched_bids: set[int] = set()
        self.touched_asks: set[int] = set()

    def add(self, is_buy: bool, price: int, delta: int) -> None:
        """Add `delta` (negative to remove) at a level; a level reaching zero goes away."""
        side = self.bids if is_buy else self.asks
        quantity = side.get(price, 0) + delta
        if quantity < 0:
            raise AssertionError(f"level {price} would go negative ({quantity})")
        if quantity == 0:
            side.pop(price, None)
        else:
            side[price] = quantity
        (self.touched_bids if is_buy else self.touched_asks).add(price)

    def touched(self) -> bool:
        return bool(self.touched_bids or self.touched_asks)

    def take_changes(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Return the touched levels with their quantity now (0: gone), best first; reset."""
        bids = [(format_micro(price), self.bids.get(price, 0))
                for price in sorted(self.touched_bids, reverse=True)]
        asks = [(format_micro(price), self.asks.get(price, 0))
                for price in sorted(self.touched_asks)]
        self.touched_bids.clear()
        self.touched_asks.clear()
        return bids, asks

    def levels(
        self, depth: int | None = None
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Return the levels best first on each side, `depth` of each at most (None: all)."""
        bid_prices = islice(reversed(self.bids), depth) if depth else reversed(self.bids)
        ask_prices = islice(iter(self.asks), depth) if depth else iter(self.asks)
        return (
            [(format_micro(p), self.bids[p]) for p in bid_prices],
            [(format_micro(p), self.asks[p]) for p in ask_prices],
        )

    def best_bid(self) -> tuple[int, int] | None:
        if not self.bids:
            return None
        price, quantity = self.bids.peekitem(-1)
        return int(price), int(quantity)

    def best_ask(self) -> tuple[int, int] | None:
        if not self.asks:
            return None
        price, quantity = self.asks.peekitem(0)
        return int(price), int(quantity)

    def checksum(self) -> int:
        bids, asks = self.levels(DEPTH)
        return book_checksum(bids, asks)
