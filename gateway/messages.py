"""Server messages: replies to requests and the feeds, as msgspec Structs tagged by `type`.

Each is encoded once (JSON bytes) and the same bytes go to every subscriber. Optional
fields are omitted when absent; docs/asyncapi.yaml is the schema a client reads. The
shapes are defined once, in `wsapi.messages`, which clients decode with.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.config import GatewayConfig
from wsapi.messages import (
    Balance,
    BalancesMessage,
    BookMessage,
    Candle,
    CandlesMessage,
    ErrorInfo,
    Fill,
    FillsMessage,
    Heartbeat,
    Hello,
    Instrument,
    Kind,
    Limits,
    Notice,
    OrderReport,
    OrderResult,
    OrdersMessage,
    RateLimitSpec,
    RateLimitUsage,
    Reply,
    TickerMessage,
    TradeItem,
    TradesMessage,
)

__all__ = [
    "API_VERSION", "SERVER_MESSAGE_TYPES", "Balance", "BalancesMessage", "BookMessage", "Candle",
    "CandlesMessage", "ErrorInfo", "Fill", "FillsMessage", "Heartbeat", "Hello",
    "Instrument", "Kind", "Limits", "Notice", "OrderReport", "OrdersMessage", "OrderResult",
    "RateLimitUsage", "Reply", "TickerMessage", "TradeItem", "TradesMessage",
    "announced_limits", "encode",
]

API_VERSION: Final = "1"


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
