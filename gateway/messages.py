"""Server messages: replies to requests and the feeds, as msgspec Structs tagged by `type`.

Each is encoded once (JSON bytes) and the same bytes go to every subscriber. Optional
fields are omitted when absent; docs/asyncapi.yaml is the schema a client reads. The
shapes are defined once, in `sdk.messages`, which clients decode with: the gateway imports
them from there (under the names it has always used) so the two can never drift apart.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from gateway.config import GatewayConfig
from sdk.messages import (
    Balance,
    BalancesMessage,
    BookMessage,
    Candle,
    CandlesMessage,
    Fill,
    FillsMessage,
    Heartbeat,
    Hello,
    Kind,
    Limits,
    Notice,
    OrderReport,
    OrdersMessage,
    RateLimitSpec,
    Reply,
    TickerMessage,
    TradeItem,
    TradesMessage,
)
from sdk.messages import ErrorInfo as ErrorBody
from sdk.messages import Instrument as InstrumentSpec
from sdk.messages import RateLimitUsage as RateUsage

__all__ = [
    "API_VERSION", "SERVER_MESSAGE_TYPES", "Balance", "BalancesMessage", "BookMessage", "Candle",
    "CandlesMessage", "ErrorBody", "Fill", "FillsMessage", "Heartbeat", "Hello",
    "InstrumentSpec", "Kind", "Limits", "Notice", "OrderReport", "OrdersMessage", "Outcome",
    "RateUsage", "Reply", "Status", "TickerMessage", "TradeItem", "TradesMessage",
    "announced_limits", "encode",
]

API_VERSION: Final = "1"
Status = Literal["ok", "accepted", "rejected", "error"]


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


SERVER_MESSAGE_TYPES: Final = (
    Hello, Reply, Notice, Heartbeat, BookMessage, TradesMessage, TickerMessage,
    CandlesMessage, OrdersMessage, FillsMessage, BalancesMessage,
)

_encoder: Final = msgspec.json.Encoder()


def announced_limits(config: GatewayConfig) -> Limits:
    """Return every limit of `config` a client must respect, for `hello`."""
    rates = {role: RateLimitSpec(per_second=limit.per_second, burst=limit.burst)
             for role, limit in config.role_limits.items()}
    for name, limit in (("ip", config.ip_limit), ("login_ip", config.login_ip_limit),
                        ("login_key", config.login_key_limit)):
        rates[name] = RateLimitSpec(per_second=limit.per_second, burst=limit.burst)
    counts = {name: getattr(config, name)  # each Limits field is a GatewayConfig one
              for name in Limits.__struct_fields__ if name != "rate_limits"}
    return Limits(**counts, rate_limits=rates)


def encode(message: msgspec.Struct) -> bytes:
    """Encode a server message as JSON bytes."""
    return _encoder.encode(message)
