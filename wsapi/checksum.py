"""Compute the book checksum a client uses to prove its copy of the top of a book.

The checksum is the CRC-32 (IEEE 802.3, as zlib.crc32), as an unsigned 32-bit integer, of
the UTF-8 bytes of the string

    BIDS "|" ASKS

where BIDS is the best 10 bid levels, best (highest) price first, and ASKS the best 10 ask
levels, best (lowest) price first, each level written `PRICE:QUANTITY` and the levels of a
side joined by ",". PRICE is the canonical USDC decimal string (no trailing zeros, no dot
for a whole number: "2.15", "2.1", "3"); QUANTITY the integer number of GPU-hours. An empty
side is the empty string, so an empty book is "|" (checksum 2343686810).

Example: bids 2.15 x 10 and 2.1 x 4, asks 2.2 x 3 give "2.15:10,2.1:4|2.2:3".
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

DEPTH: Final = 10


def checksum_string(bids: Iterable[tuple[str, int]], asks: Iterable[tuple[str, int]]) -> str:
    """Return the checksummed string of the best levels given, best first on each side."""
    bid_text = ",".join(f"{price}:{quantity}" for price, quantity in bids)
    ask_text = ",".join(f"{price}:{quantity}" for price, quantity in asks)
    return f"{bid_text}|{ask_text}"


def book_checksum(bids: Iterable[tuple[str, int]], asks: Iterable[tuple[str, int]]) -> int:
    """Return the CRC-32 of the checksum string of the top levels (callers pass <= 10)."""
    return zlib.crc32(checksum_string(bids, asks).encode()) & 0xFFFFFFFF
