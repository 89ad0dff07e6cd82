"""The ways a request fails, as replies carry them: a code a client can branch on.

Each error becomes a reply `{"status": "error", "error": {"code": ..., "message": ...}}`;
`field` names the offending field (a JSON path such as `$.orders[2].price`) when there is
one, `retry_after_ms` says when trying again may succeed.
"""

from __future__ import annotations

from typing import Final

# Error codes on the wire (docs/asyncapi.yaml, ErrorCode).
INVALID_JSON: Final = "invalid_json"
INVALID_REQUEST: Final = "invalid_request"
UNKNOWN_OP: Final = "unknown_op"
UNAUTHENTICATED: Final = "unauthenticated"
AUTH_FAILED: Final = "auth_failed"
ALREADY_AUTHENTICATED: Final = "already_authenticated"
FORBIDDEN: Final = "forbidden"
RATE_LIMITED: Final = "rate_limited"
OVERLOADED: Final = "overloaded"
TOO_MANY_PENDING: Final = "too_many_pending"
DUPLICATE_REQUEST: Final = "duplicate_request"
TIMEOUT: Final = "timeout"
UNAVAILABLE: Final = "unavailable"
SUBSCRIPTION_LIMIT: Final = "subscription_limit"
UNKNOWN_INSTRUMENT: Final = "unknown_instrument"
CONNECTION_LIMIT: Final = "connection_limit"
SSH_KEY_LIMIT: Final = "ssh_key_limit"

ERROR_CODES: Final = frozenset({
    INVALID_JSON, INVALID_REQUEST, UNKNOWN_OP, UNAUTHENTICATED, AUTH_FAILED,
    ALREADY_AUTHENTICATED, FORBIDDEN, RATE_LIMITED, OVERLOADED, TOO_MANY_PENDING,
    DUPLICATE_REQUEST, TIMEOUT, UNAVAILABLE, SUBSCRIPTION_LIMIT, UNKNOWN_INSTRUMENT,
    CONNECTION_LIMIT, SSH_KEY_LIMIT,
})


class RequestError(Exception):
    """Refuse one client request; the connection stays open."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_ms = retry_after_ms
