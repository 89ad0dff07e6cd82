"""Exact fixed-point money: USDC with 6 decimals, integer micro-USDC inside.

On the wire an amount or a price is a decimal string ("2.15", "1000"); inside it is an
integer count of micro-USDC. Floats never touch money.
"""

from __future__ import annotations

import re

from protocol.errors import ProtocolError

USDC_DECIMALS = 6
MICRO_PER_USDC = 10**USDC_DECIMALS
# Large enough for any real balance, small enough for a signed 64-bit column.
MICRO_MAX = 10**18

_DECIMAL = re.compile(r"(?P<whole>[0-9]{1,19})(?:\.(?P<fraction>[0-9]{1,32}))?")


_PARSE_CACHE_SIZE_MAX = 1 << 16
_parsed: dict[str, int] = {}


def parse_micro(text: object, field: str = "amount") -> int:
    """Parse a non-negative USDC decimal string into micro-USDC, naming `field` on error.

    Valid strings are remembered (prices repeat: a book has few levels), so most calls are
    one dict lookup; what fails to parse is never cached and raises each time.
    """
    if not isinstance(text, str):
        raise ProtocolError(field, f"expected a decimal string, got {type(text).__name__}")
    cached = _parsed.get(text)
    if cached is not None:
        return cached
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ProtocolError(field, f"{text!r} is not a decimal string like '2.15'")
    fraction = match.group("fraction") or ""
    if len(fraction) > USDC_DECIMALS:
        raise ProtocolError(field, f"{text!r} has more than {USDC_DECIMALS} decimals")
    micro: int = (int(match.group("whole")) * MICRO_PER_USDC
                  + int(fraction.ljust(USDC_DECIMALS, "0")))
    if micro > MICRO_MAX:
        raise ProtocolError(field, f"{text!r} is above the maximum {format_micro(MICRO_MAX)}")
    if len(_parsed) >= _PARSE_CACHE_SIZE_MAX:
        _parsed.clear()
    _parsed[text] = micro
    return micro


def parse_positive_micro(text: object, field: str = "amount") -> int:
    """Parse a strictly positive USDC decimal string into micro-USDC."""
    micro = parse_micro(text, field)
    if micro == 0:
        raise ProtocolError(field, "must be greater than zero")
    return micro


_FORMAT_CACHE_SIZE_MAX = 1 << 16
_formatted: dict[int, str] = {}


def format_micro(micro: int) -> str:
    """Format micro-USDC as the canonical decimal string: no trailing zeros, no dot if whole."""
    text = _formatted.get(micro)
    if text is None:
        if len(_formatted) >= _FORMAT_CACHE_SIZE_MAX:
            _formatted.clear()
        text = _formatted[micro] = _format_micro(micro)
    return text


def _format_micro(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_PER_USDC)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")


def parse_token_amount(value: object, field: str = "amount") -> int:
    """Parse a whole-number token amount: a JSON integer or a string of digits, at least 1."""
    if isinstance(value, bool):
        raise ProtocolError(field, "expected a whole number, got bool")
    if isinstance(value, str):
        if not value.isdigit() or not value.isascii() or len(value) > 19:
            raise ProtocolError(field, f"{value!r} is not a whole number")
        value = int(value)
    if not isinstance(value, int):
        raise ProtocolError(field, f"expected a whole number, got {type(value).__name__}")
    if value < 1:
        raise ProtocolError(field, "must be at least 1")
    if value > MICRO_MAX:
        raise ProtocolError(field, f"{value} is above the maximum {MICRO_MAX}")
    return value
