"""The state of one client connection: who it is, what it subscribed to, what it placed."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.auth import Principal


@dataclass(slots=True)
class Session:
    """One websocket connection's protocol state; the I/O layer owns the socket."""

    conn_id: int
    ip: str
    nonce: str | None  # the login challenge; None once a login attempt has used it
    principal: Principal | None = None
    login_pending: bool = False
    spoke: bool = False  # sent a frame since connecting (or since a failed login)
    opened_ns: int = 0  # monotonic
    cancel_on_disconnect: str = "off"
    subscriptions: set[tuple[str, str]] = field(default_factory=set)
    # req_ids awaiting their reply (a login, or the engine): a second one is a duplicate
    pending: set[int] = field(default_factory=set)
    # client order ids placed through this session, for cancel-on-disconnect "session"
    placed: OrderedDict[str, None] = field(default_factory=OrderedDict)
    closed: bool = False
    # The rate limiter's bucket names for this session, and the principal they are for.
    bucket_names: tuple[Principal | None, str, str] | None = None

    @property
    def account(self) -> str | None:
        return self.principal.account if self.principal is not None else None

    def remember_placed(self, client_order_id: str, kept_max: int) -> None:
        """Note an order placed here; forget the oldest beyond `kept_max`."""
        self.placed[client_order_id] = None
        self.placed.move_to_end(client_order_id)
        while len(self.placed) > kept_max:
            self.placed.popitem(last=False)
