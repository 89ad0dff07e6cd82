"""A local copy of an instrument's L2 book, kept in step by the `book` feed and proved by
its checksum (docs/asyncapi.yaml, BookChecksum).

`apply` takes a snapshot (replacing everything) or an update (levels set to a quantity; 0
removes). An update whose `prev_seq` is not the `seq` last applied is a gap, and a checksum
that does not match the copy is a divergence: both raise, and the caller resubscribes for a
fresh snapshot (`sdk.session` decides this by itself).
"""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from wsapi.checksum import DEPTH as CHECKSUM_DEPTH
from wsapi.checksum import book_checksum
from wsapi.messages import BookMessage

MICRO_PER_USDC = 1_000_000


class BookError(Exception):
    """The local book can no longer be trusted; resubscribe for a snapshot."""


class BookGap(BookError):
    """An update does not follow the last one applied."""


class ChecksumMismatch(BookError):
    """After an update the local top 10 levels disagree with the server's checksum."""


def price_micro(price: str) -> int:
    """Parse a canonical USDC decimal string to integer micro-USDC."""
    whole, _, fraction = price.partition(".")
    if len(fraction) > 6 or not whole.isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(f"not a USDC price: {price!r}")
    return int(whole) * MICRO_PER_USDC + int(fraction.ljust(6, "0") or "0")


class LocalBook:
    """Hold one instrument's levels: price (micro-USDC) -> (price text, quantity)."""

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.seq: int | None = None
        self.ts = 0
        self.updates_applied = 0
        self.resyncs = 0

    @property
    def synced(self) -> bool:
        return self.seq is not None

    def reset(self) -> None:
        """Forget everything: the next message must be a snapshot."""
        self.bids.clear()
        self.asks.clear()
        self.seq = None

    def apply(self, message: BookMessage) -> None:
        """Apply a snapshot or an update; raise BookError if the copy cannot be trusted."""
        if message.instrument != self.instrument:
            raise ValueError(f"message for {message.instrument}, book of {self.instrument}")
        if message.kind == "snapshot":
            self.bids.clear()
            self.asks.clear()
        elif self.seq is None:
            raise BookGap("an update before any snapshot")
        elif message.prev_seq != self.seq:
            self.reset()
            raise BookGap(f"update from seq {message.prev_seq}, the book is at {self.seq}")
        for side, levels in ((self.bids, message.bids), (self.asks, message.asks)):
            for price, quantity in levels:
                key = price_micro(price)
                if quantity:
                    side[key] = (price, quantity)
                else:
                    side.pop(key, None)
        self.seq = message.seq
        self.ts = message.ts
        self.updates_applied += 1
        if self.checksum() != message.checksum:
            self.reset()
            raise ChecksumMismatch(f"checksum differs at seq {message.seq}")

    def levels(
        self, depth: int | None = None
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Return (bids, asks) best first, `depth` levels of each at most (None: all)."""
        bids = [self.bids[k] for k in islice(reversed(self.bids), depth)]
        asks = [self.asks[k] for k in islice(iter(self.asks), depth)]
        return bids, asks

    def checksum(self) -> int:
        return book_checksum(*self.levels(CHECKSUM_DEPTH))

    def best_bid(self) -> tuple[str, int] | None:
        return self.bids.peekitem(-1)[1] if self.bids else None

    def best_ask(self) -> tuple[str, int] | None:
        return self.asks.peekitem(0)[1] if self.asks else None
