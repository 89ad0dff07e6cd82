"""JSON (the reference form) and msgpack codecs for commands and events.

`decode_command` never raises on bad input: a command that does not fit becomes a
`MalformedCommand` carrying what the engine needs to reject it by the protocol's rules.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from protocol.commands import IDENTIFIER_PATTERN, AnyCommand, MalformedCommand
from protocol.events import AnyEvent

Format = Literal["json", "msgpack"]
FORMATS: Final = ("json", "msgpack")

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_command_decoders: Final[dict[str, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]]] = {
    "json": msgspec.json.Decoder(AnyCommand),
    "msgpack": msgspec.msgpack.Decoder(AnyCommand),
}
_event_decoders: Final[dict[str, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]]] = {
    "json": msgspec.json.Decoder(AnyEvent),
    "msgpack": msgspec.msgpack.Decoder(AnyEvent),
}
_generic_decoders: Final[dict[str, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]]] = {
    "json": msgspec.json.Decoder(),
    "msgpack": msgspec.msgpack.Decoder(),
}
# What msgspec raises on undecodable input besides DecodeError: invalid UTF-8 in a string
# (UnicodeDecodeError) and nesting deeper than the interpreter's recursion limit.
_UNDECODABLE: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def encode(message: msgspec.Struct, fmt: Format = "json") -> bytes:
    """Encode a command or an event; the bytes are the same on every run and machine."""
    if fmt == "json":
        return _json_encoder.encode(message)
    return _msgpack_encoder.encode(message)


def decode_event(data: bytes, fmt: Format = "json") -> AnyEvent:
    """Decode one event, raising msgspec.ValidationError or DecodeError if it is malformed."""
    event: AnyEvent = _event_decoders[fmt].decode(data)
    return event


def decode_command(data: bytes | str, fmt: Format = "json") -> AnyCommand | MalformedCommand:
    """Decode one command; anything that does not fit comes back as a MalformedCommand."""
    if isinstance(data, str):
        data = data.encode()
    try:
        command: AnyCommand = _command_decoders[fmt].decode(data)
        return command
    except (msgspec.ValidationError, *_UNDECODABLE) as error:
        return _salvage(data, fmt, str(error))


def _salvage(data: bytes, fmt: Format, error: str) -> MalformedCommand:
    """Pick out the well-formed fields of a command that failed to decode."""
    try:
        raw = _generic_decoders[fmt].decode(data)
    except _UNDECODABLE as decode_error:
        return MalformedCommand(type="", error=f"not {fmt}: {decode_error}")
    if not isinstance(raw, dict):
        return MalformedCommand(type="", error=f"expected an object, got {type(raw).__name__}")
    command_type = raw.get("type")
    return MalformedCommand(
        type=command_type if isinstance(command_type, str) else "",
        error=error,
        ts=_valid_ts(raw.get("ts")),
        account=_valid_identifier(raw.get("account")),
        client_order_id=_valid_identifier(raw.get("client_order_id")),
        instrument=_string(raw.get("instrument")),
        asset=_string(raw.get("asset")),
        amount=_amount(raw.get("amount")),
    )


def _valid_identifier(value: Any) -> str | None:
    if isinstance(value, str) and _IDENTIFIER.match(value):
        return value
    return None


def _valid_ts(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _amount(value: Any) -> str | int | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None
