"""The SDK's errors: a small tree whose `retriable` flag says whether the same call may succeed.

The engine's business rejections are not here: they come back as values
(`OrderResult.status == "rejected"` with the engine's `reason`).
"""

from __future__ import annotations

from wsapi.messages import Reply


class ClientError(Exception):
    """Base of the SDK's errors; `retriable` says whether the same call may succeed later."""

    retriable = False


class RequestFailed(ClientError):
    """The gateway refused a request (status "error"): see `code`, `field`, `retry_after_ms`."""

    def __init__(self, reply: Reply) -> None:
        error = reply.error
        self.code = error.code if error else "error"
        self.field = error.field if error else None
        self.retry_after_ms = error.retry_after_ms if error else None
        self.reply = reply
        self.retriable = self.retry_after_ms is not None
        message = error.message if error else "request failed"
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{reply.op}: {self.code}{where}: {message}")


class ConnectionLost(ClientError):
    """The connection dropped before the reply came; retry (client_order_id keeps it safe)."""

    retriable = True


class SubscriptionOverflow(ClientError):
    """The subscription's queue filled up because it was not read fast enough."""
