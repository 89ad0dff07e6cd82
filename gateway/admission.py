"""Who may hold a connection: limits per IP, per account and per key, and the login deadline.

Pure: the core calls it with monotonic time and closes what it names. Behind one NAT or
proxy many traders share an IP, so an IP is held only to a high backstop
(`connections_per_ip_max`). What an IP may hold *without logging in* is small
(`anonymous_per_ip_max`): a new connection past it closes one of that IP's anonymous
connections, the oldest that never sent a frame first, then the oldest without a
subscription, then the oldest, so a trader who reconnects always gets in however many
sockets a neighbour leaves open. A connection younger than `anonymous_grace_ms` or with a
login under way is never the one closed (traders behind one NAT reconnecting together
after a restart must not evict each other between `hello` and their login); the IP then
holds more for a moment, up to the backstop. An anonymous
connection that has sent nothing within `login_deadline_ms` of its `hello` (no login, no
request, no subscription) is closed. Logged-in connections count against their account
and their key.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from gateway.auth import Principal
from gateway.config import GatewayConfig
from gateway.session import Session

# The names of the limits, as in `hello.limits`, the metrics and the logs.
CONNECTIONS: Final = "connections_max"
CONNECTIONS_PER_IP: Final = "connections_per_ip_max"
ANONYMOUS_PER_IP: Final = "anonymous_per_ip_max"
LOGIN_DEADLINE: Final = "login_deadline_ms"
CONNECTIONS_PER_ACCOUNT: Final = "connections_per_account_max"
CONNECTIONS_PER_KEY: Final = "connections_per_key_max"


def key_of(principal: Principal) -> str:
    """The credential a login used: its key id, or the wallet with its account."""
    return f"{principal.credential}:{principal.account}"


class Admission:
    """Count connections per IP (all, and anonymous ones in the order they came), per
    account and per key, and keep the login deadlines in the order they fall due."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.open_count = 0
        self.by_ip: dict[str, int] = {}
        self.anonymous_by_ip: dict[str, dict[int, Session]] = {}  # oldest first
        self.by_account: dict[str, int] = {}
        self.by_key: dict[str, int] = {}
        self._deadlines: deque[tuple[int, Session]] = deque()

    def refusal(self, ip: str) -> str | None:
        """Return the limit a new connection from `ip` would break, or None."""
        if self.open_count >= self.config.connections_max:
            return CONNECTIONS
        if self.by_ip.get(ip, 0) >= self.config.connections_per_ip_max:
            return CONNECTIONS_PER_IP
        return None

    def open(self, session: Session, mono_ns: int) -> list[Session]:
        """Count a new anonymous session; return the sessions to close to make room."""
        self.open_count += 1
        self.by_ip[session.ip] = self.by_ip.get(session.ip, 0) + 1
        anonymous = self.anonymous_by_ip.setdefault(session.ip, {})
        evicted = []
        young_after_ns = mono_ns - self.config.anonymous_grace_ms * 1_000_000
        while len(anonymous) >= self.config.anonymous_per_ip_max:
            oldest = _eviction_choice(anonymous, young_after_ns)
            if oldest is None:
                break  # all young or logging in: let this one exceed the allowance
            evicted.append(oldest)
            self.close(oldest)
        session.opened_ns = mono_ns
        anonymous[session.conn_id] = session
        self.watch(session, mono_ns)
        return evicted

    def watch(self, session: Session, mono_ns: int) -> None:
        """Give an anonymous session `login_deadline_ms` from now to send something."""
        session.spoke = False
        self._deadlines.append((mono_ns + self.config.login_deadline_ms * 1_000_000, session))

    def login_refusal(self, principal: Principal) -> str | None:
        """Return the limit a login as `principal` would break, or None."""
        if self.by_account.get(principal.account, 0) >= self.config.connections_per_account_max:
            return CONNECTIONS_PER_ACCOUNT
        if self.by_key.get(key_of(principal), 0) >= self.config.connections_per_key_max:
            return CONNECTIONS_PER_KEY
        return None

    def logged_in(self, session: Session) -> None:
        """Move `session`, whose principal is set, from its IP's anonymous ones to its
        account's and key's."""
        assert session.principal is not None
        self._forget_anonymous(session)
        account, key = session.principal.account, key_of(session.principal)
        self.by_account[account] = self.by_account.get(account, 0) + 1
        self.by_key[key] = self.by_key.get(key, 0) + 1

    def close(self, session: Session) -> None:
        """Stop counting a session (once; closing twice changes nothing)."""
        if session.closed:
            return
        session.closed = True
        self.open_count -= 1
        _decrement(self.by_ip, session.ip)
        if session.principal is None:
            self._forget_anonymous(session)
        else:
            _decrement(self.by_account, session.principal.account)
            _decrement(self.by_key, key_of(session.principal))

    def overdue(self, mono_ns: int) -> list[Session]:
        """Return the open anonymous sessions past their login deadline that have sent
        nothing since it was set (each once)."""
        overdue = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= mono_ns:
            _, session = deadlines.popleft()
            if not session.closed and session.principal is None and not session.spoke:
                overdue.append(session)
        return overdue

    def _forget_anonymous(self, session: Session) -> None:
        anonymous = self.anonymous_by_ip.get(session.ip)
        if anonymous is not None:
            anonymous.pop(session.conn_id, None)
            if not anonymous:
                del self.anonymous_by_ip[session.ip]


def _eviction_choice(anonymous: dict[int, Session], young_after_ns: int) -> Session | None:
    """The oldest session that never sent a frame, else the oldest without a subscription,
    else the oldest; never one logging in or opened after `young_after_ns`."""
    choices: list[Session | None] = [None, None, None]
    for session in anonymous.values():
        if session.login_pending or session.opened_ns > young_after_ns:
            continue
        rank = 0 if not session.spoke else 1 if not session.subscriptions else 2
        if rank == 0:
            return session
        if choices[rank] is None:
            choices[rank] = session
    return choices[1] or choices[2]


def _decrement(counts: dict[str, int], key: str) -> None:
    count = counts.get(key, 1) - 1
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)
