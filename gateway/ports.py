"""What the gateway core is given to act through: a transport to the connections, a sink
for commands bound for the log, a port that verifies logins, and a desk that answers the
delivery requests from the delivery database (gateway.service provides them; the tests give
stubs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.correlation import Group
from wsapi.requests import DeliveryAccess, Login, LoginWallet, RegisterNode, RegisterSshKey


class Transport(Protocol):
    """Deliver bytes to connections (without waiting) and close them."""

    def push(self, conn_id: int, payload: bytes) -> None: ...

    def push_many(self, conn_ids: Iterable[int], payload: bytes) -> None: ...

    def close(self, conn_id: int, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class Submission:
    """Commands to append to the log, in order; `group` is told if the write fails."""

    payloads: list[bytes]
    group: Group | None


class CommandSink(Protocol):
    def room(self) -> int:
        """Return how many more submissions fit in the bounded queue."""
        ...

    def offer(self, submission: Submission) -> bool:
        """Queue a submission; False when the queue is full."""
        ...


class AuthPort(Protocol):
    def begin(self, conn_id: int, req_id: int, request: Login | LoginWallet, nonce: str) -> None:
        """Verify the login in the background, then call `GatewayCore.login_result`."""
        ...


class DeskPort(Protocol):
    def begin(self, conn_id: int, req_id: int, op: str, account: str,
              request: RegisterNode | RegisterSshKey | DeliveryAccess) -> None:
        """Answer the request in the background, then call `GatewayCore.desk_result`."""
        ...
