"""Server messages: replies to requests and the feeds, as msgspec Structs tagged by `type`.

Each is encoded once (JSON bytes) and the same bytes go to every subscriber. Optional
fields are omitted when absent; docs/asyncapi.yaml is the schema a client reads.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

API_VERSION: Final = "1"
Status = Literal["ok", "accepted", "rejected", "error"]
Kind = Literal["snapshot", "update"]


class _Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every server message."""


class RateUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The bucket a request was charged to: tokens left of `burst`, refilled per second."""

    bucket: str
    remaining: int
    burst: int
    per_second: float


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: str
    message: str
    field: str | None = None
    retry_after_ms: int | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The engine's answer to one order-entry command."""

    op: str
    status: Status
    client_order_id: str | None = None
    order_id: str | None = None
    instrument: str | None = None
    reason: str | None = None
    price: str | None = None
    quantity: int | None = None
    remaining_quantity: int | None = None
    canceled_quantity: int | None = None
    canceled: int | None = None


class Hello(_Message, tag="hello", frozen=True, kw_only=True):
    """Sent on connect: the login challenge nonce and what the server allows."""

    api_version: str
    gateway_id: str
    nonce: str
    server_time_ns: int
    frame_bytes_max: int
    heartbeat_interval_ms: int
    batch_size_max: int
    mass_quote_size_max: int


class Reply(_Message, tag="reply", frozen=True, kw_only=True):
    req_id: int | None
    op: str
    status: Status
    reason: str | None = None
    result: Any = None
    error: ErrorBody | None = None
    rate_limit: RateUsage | None = None


class Notice(_Message, tag="notice", frozen=True, kw_only=True):
    """Tell the client something it did not ask about (dead-man's switch fired, closing)."""

    code: str
    message: str
    ts: int


class Heartbeat(_Message, tag="heartbeat", frozen=True, kw_only=True):
    """Sent every heartbeat interval: server time and the last event seq applied."""

    ts: int
    event_seq: int


class BookMessage(_Message, tag="book", frozen=True, kw_only=True):
    """An L2 snapshot or the levels that changed: [price, quantity], quantity 0 removes."""

    instrument: str
    kind: Kind
    seq: int
    prev_seq: int
    ts: int
    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]
    checksum: int


class TradeItem(msgspec.Struct, frozen=True, kw_only=True, array_like=False):
    trade_id: str
    price: str
    quantity: int
    aggressor_side: str
    ts: int


class TradesMessage(_Message, tag="trades", frozen=True, kw_only=True):
    instrument: str
    kind: Kind
    trades: list[TradeItem]


class TickerMessage(_Message, tag="ticker", frozen=True, kw_only=True, omit_defaults=True):
    instrument: str
    ts: int
    bid: str | None = None
    bid_quantity: int = 0
    ask: str | None = None
    ask_quantity: int = 0
    last: str | None = None
    volume_24h: int = 0
    high_24h: str | None = None
    low_24h: str | None = None


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    start_ns: int
    open: str
    high: str
    low: str
    close: str
    volume: int
    trades: int


class CandlesMessage(_Message, tag="candles", frozen=True, kw_only=True):
    instrument: str
    interval: str
    kind: Kind
    candles: list[Candle]


class OrderReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One execution report: what happened to an order of the account, and its state now."""

    event: Literal[
        "accepted", "rejected", "fill", "canceled", "amended", "reduced",
        "cancel_rejected", "amend_rejected", "open",
    ]
    client_order_id: str
    seq: int
    ts: int
    status: Literal["open", "filled", "canceled", "rejected"] | None = None
    order_id: str | None = None
    instrument: str | None = None
    side: str | None = None
    order_type: str | None = None
    price: str | None = None
    quantity: int | None = None
    filled_quantity: int | None = None
    remaining_quantity: int | None = None
    fill_price: str | None = None
    fill_quantity: int | None = None
    reason: str | None = None


class OrdersMessage(_Message, tag="orders", frozen=True, kw_only=True):
    kind: Kind
    orders: list[OrderReport]


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    instrument: str
    client_order_id: str
    order_id: str
    side: str
    price: str
    quantity: int
    fee: str
    liquidity: Literal["maker", "taker"]
    seq: int
    ts: int


class FillsMessage(_Message, tag="fills", frozen=True, kw_only=True):
    kind: Kind
    fills: list[Fill]


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    available: str | int
    held: str | int


class BalancesMessage(_Message, tag="balances", frozen=True, kw_only=True):
    kind: Kind
    seq: int
    balances: dict[str, Balance]


class InstrumentSpec(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    gpu: str
    region: str
    delivery_start: int
    delivery_hours: int
    tick_size: str
    max_order_quantity: int
    maker_fee_bps: int
    taker_fee_bps: int
    status: Literal["open", "closed"]


SERVER_MESSAGE_TYPES: Final = (
    Hello, Reply, Notice, Heartbeat, BookMessage, TradesMessage, TickerMessage,
    CandlesMessage, OrdersMessage, FillsMessage, BalancesMessage,
)

_encoder: Final = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """Encode a server message as JSON bytes."""
    return _encoder.encode(message)
