"""Read where a msgspec validation error points, so an error of ours can name the field.

msgspec says where a value is wrong in its message (`... - at `$.rows[0].index``) and, for an
unknown or missing field, names it (`Object contains unknown field `extra``). `invalid_path`
turns that into one JSON path (`$.rows[0].index`, `$.extra`; `$` for the whole document)
and the message without its location. Pure; the one place that reads msgspec's wording.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["invalid_path"]

_AT: Final = re.compile(r" - at `(?P<path>\$[^`]*)`\Z")
_NAMED: Final = re.compile(r"(?:unknown|missing required) field `(?P<name>.*)`\Z", re.DOTALL)


def invalid_path(message: str) -> tuple[str, str]:
    """(the JSON path of the wrong value, the message without its location) of a
    `msgspec.ValidationError`'s message."""
    match = _AT.search(message)
    path = match.group("path") if match else "$"
    text = message[: match.start()] if match else message
    named = _NAMED.search(text)
    if named is not None:
        path = f"{path}.{named.group('name')}"
    return path, text
