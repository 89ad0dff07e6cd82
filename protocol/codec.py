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
# No command nests at all; outside input may. msgspec walks nested values recursively in C
# and trusts the interpreter's recursion limit, which a host (a test runner, a profiler) may
# raise far beyond what the C stack holds, so nesting is capped here, before msgspec sees it.
NESTING_MAX: Final = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_NON_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def encode(message: msgspec.Struct, fmt: Format = "json") -> bytes:
    """Encode a command or an event; the bytes are the same on every run and machine."""
    if fmt == "json":
        return _json_encoder.encode(message)
    return _msgpack_encoder.encode(message)


def decode_event(data: bytes, fmt: Format = "json") -> AnyEvent:
    """Decode one event, raising msgspec.ValidationError or DecodeError if it is malformed.

    ValidationError (a DecodeError) names the field at fault; DecodeError alone means the
    bytes are not the format, not UTF-8 where a string is, or nested past NESTING_MAX."""
    if _nesting_exceeds(data, fmt, NESTING_MAX):
        raise msgspec.DecodeError(f"nested deeper than {NESTING_MAX} levels")
    try:
        event: AnyEvent = _event_decoders[fmt].decode(data)
    except (UnicodeDecodeError, RecursionError) as error:
        raise msgspec.DecodeError(f"not {fmt}: {error}") from error
    return event


def decode_command(data: bytes | str, fmt: Format = "json") -> AnyCommand | MalformedCommand:
    """Decode one command; anything that does not fit comes back as a MalformedCommand."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8 below
    if _nesting_exceeds(data, fmt, NESTING_MAX):
        return MalformedCommand(type="", error=f"nested deeper than {NESTING_MAX} levels")
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


def _nesting_exceeds(data: bytes, fmt: Format, limit: int) -> bool:
    """Whether `data` nests deeper than `limit`: checked before msgspec, which recurses in C
    (even the typed decoders do, to skip an unknown field's value or find a late tag)."""
    if fmt == "json":
        return json_nesting_exceeds(data, limit)
    return _msgpack_nesting_exceeds(data, limit)


def json_nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether the JSON text's arrays and objects nest deeper than `limit` (strings are
    skipped whole; the text need not be valid JSON nor UTF-8)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case, a flat object, without a regex pass
    brackets = _JSON_STRING.sub(b"", data).translate(None, _JSON_NON_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _msgpack_nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether arrays and maps nest deeper than `limit`: walks the headers without recursion.

    Truncated or invalid input answers False and is left to msgspec to refuse."""
    open_levels = [1]  # values still to read at each open level; the root is one value
    position, size = 0, len(data)
    while open_levels:
        if position >= size:
            return False
        open_levels[-1] -= 1
        children, skip = _msgpack_header(data, position + 1, data[position])
        if skip < 0:
            return False
        position += 1 + skip
        if children:
            open_levels.append(children)
            if len(open_levels) > limit + 1:
                return True
        while open_levels and open_levels[-1] == 0:
            open_levels.pop()
    return False


_MSGPACK_FIXED_SIZES: Final = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}
_MSGPACK_EXT_SIZES: Final = {0xc7: 1, 0xc8: 2, 0xc9: 4}
_MSGPACK_SCALAR_SIZES: Final = {
    0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
    0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17,
}


def _msgpack_header(data: bytes, position: int, byte: int) -> tuple[int | None, int]:
    """(child values or None for a scalar, bytes to skip after the type byte); -1 if invalid."""
    if byte <= 0x7f or byte >= 0xe0:
        return None, 0
    if 0x80 <= byte <= 0x8f:
        return 2 * (byte & 0x0f), 0
    if 0x90 <= byte <= 0x9f:
        return byte & 0x0f, 0
    if 0xa0 <= byte <= 0xbf:
        return None, byte & 0x1f
    if byte in _MSGPACK_SCALAR_SIZES:
        return None, _MSGPACK_SCALAR_SIZES[byte]
    if byte in _MSGPACK_FIXED_SIZES:
        width = _MSGPACK_FIXED_SIZES[byte]
        return None, width + int.from_bytes(data[position:position + width], "big")
    if byte in _MSGPACK_EXT_SIZES:
        width = _MSGPACK_EXT_SIZES[byte]
        return None, width + 1 + int.from_bytes(data[position:position + width], "big")
    if byte in (0xdc, 0xdd, 0xde, 0xdf):
        width = 2 if byte in (0xdc, 0xde) else 4
        count = int.from_bytes(data[position:position + width], "big")
        return (2 * count if byte >= 0xde else count), width
    return None, -1


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
