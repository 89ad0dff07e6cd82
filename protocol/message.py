"""The shape every command and event shares (PROTOCOL.md, Encoding)."""

from __future__ import annotations

import msgspec


class Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="type",
):
    """Base of commands and events: frozen, keyword-only, tagged by its snake_case `type`;
    an unknown field is an error, and a field at its default is left out of the encoding."""
