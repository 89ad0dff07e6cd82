"""What the index reads of an event: the few fields it needs of the few kinds it uses.

Every event gives its `type`, `seq` and `ts`; of listings, closes, trades and the order
events that move the book the index decodes only the fields it uses (msgspec skips the
rest without building them). The kind of an event is told from the first bytes of its
record when it is encoded as the engine encodes it (`{"type":"trade","seq":...`: the tag
first, then `seq`), so the events the index does not use are skipped undecoded; a record
encoded otherwise (keys in another order, spaces) is read through its decoded `type`, so
the answer never depends on the encoding.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.events import EVENT_TYPES

__all__ = [
    "PREFIX_BYTES",
    "Accepted",
    "Amended",
    "Canceled",
    "Closed",
    "Head",
    "Listed",
    "Reduced",
    "TradeFields",
    "canonical_prefix",
    "decode_head",
]


class Head(msgspec.Struct, frozen=True, gc=False):
    """The fields every event has."""

    type: str
    seq: int
    ts: int


class Listed(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    symbol: str
    gpu: str
    region: str
    delivery_start: int


class Closed(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    symbol: str


class Accepted(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    seq: int
    ts: int
    order_id: str
    instrument: str
    side: str
    order_type: str
    price: str | None = None
    quantity: int
    time_in_force: str


class TradeFields(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    instrument: str
    price: str
    quantity: int
    maker_order_id: str
    taker_order_id: str


class Canceled(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    order_id: str


class Amended(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    order_id: str
    price: str
    remaining_quantity: int


class Reduced(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    order_id: str
    remaining_quantity: int


decode_head = msgspec.json.Decoder(Head).decode


def canonical_prefix(tag: str) -> bytes:
    """The first PREFIX_BYTES bytes of an event of type `tag` as the engine encodes it."""
    return (b'{"type":"' + tag.encode() + b'","seq":')[:PREFIX_BYTES]


def _shortest_distinct_prefix(tags: list[str]) -> int:
    """The fewest leading bytes that tell every event type apart in the engine's encoding."""
    for size in range(10, 64):
        prefixes = {(b'{"type":"' + tag.encode() + b'","seq":')[:size] for tag in tags}
        if len(prefixes) == len(tags):
            return size
    raise AssertionError("event types share a 64-byte prefix")


PREFIX_BYTES: Final = _shortest_distinct_prefix(list(EVENT_TYPES))
