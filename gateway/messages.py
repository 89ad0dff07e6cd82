"""Encode server messages, and the API version and limits `hello` announces.

Each message is encoded once (JSON bytes) and the same bytes go to every subscriber.
Optional fields are omitted when absent; docs/asyncapi.yaml is the schema a client reads.
The shapes are defined once, in `wsapi.messages`: the gateway imports them from there, and
clients decode with them.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.config import GatewayConfig
from wsapi.messages import Limits, RateLimitSpec

__all__ = ["API_VERSION", "announced_limits", "encode"]

API_VERSION: Final = "1"

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
