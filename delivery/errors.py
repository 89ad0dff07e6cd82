"""Name the ways delivery fails, so callers branch on a class or a flag, not on text.

Every error this package raises on purpose is a `DeliveryError`; its `retriable` flag says
whether the same call may succeed if made again (a node that did not answer in time, a
connection reset). A `ChallengeError` is a broken challenge exchange: a malformed or
oversized wire message, a message out of turn, an unavailable compute backend. Business
outcomes (a challenge answered wrongly, a node below its class floor) are values
(`ChallengeResult`, a sample's `outcome`), not exceptions.
"""

from __future__ import annotations

from runtime.errors import RetriableError

__all__ = ["ChallengeError", "DeliveryError"]


class DeliveryError(RetriableError):
    """Fail a delivery operation; `retriable` says whether trying again may succeed."""


class ChallengeError(DeliveryError):
    """Refuse a challenge message or step: malformed, too long, out of turn, or no backend.

    `field` is the JSON path of the wire message's value at fault (`$.seed`,
    `$.rows[0].index`; `$` for the whole message), None when no message is at fault."""

    def __init__(self, message: str, *, field: str | None = None,
                 retriable: bool | None = None) -> None:
        super().__init__(message, retriable=retriable)
        self.field = field
