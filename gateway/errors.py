"""The gateway's own errors; the codes a reply carries are the API's (wsapi.errors)."""

from __future__ import annotations

from wsapi.errors import AUTH_FAILED, RequestError


class GatewayError(Exception):
    """Base of the gateway's errors that are not a refused request."""


class AuthError(RequestError):
    """Refuse a login: bad signature, unknown key, stale timestamp or replayed nonce."""

    def __init__(self, message: str) -> None:
        super().__init__(AUTH_FAILED, message)


class StoreError(GatewayError):
    """Fail to use the gateway's PostgreSQL schema; `retriable` says if a retry may help."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
