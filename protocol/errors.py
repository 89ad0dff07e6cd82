"""Errors raised when outside input does not fit the protocol."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A value on the wire is malformed; `field` names where, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
