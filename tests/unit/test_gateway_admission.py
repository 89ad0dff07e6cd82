"""Connection admission without I/O: who is closed to make room, who is refused a login,
who is past the login deadline."""

from __future__ import annotations

from gateway.admission import (
    CONNECTIONS_PER_ACCOUNT,
    CONNECTIONS_PER_IP,
    CONNECTIONS_PER_KEY,
    Admission,
)
from gateway.auth import Principal
from gateway.config import GatewayConfig
from gateway.session import Session

MS = 1_000_000


GRACE_MS = 2_000
LATER = 10 * GRACE_MS * MS  # when the sessions opened at 0 are no longer young


def admission(**config: int) -> Admission:
    return Admission(GatewayConfig(anonymous_grace_ms=GRACE_MS, **config))  # type: ignore[arg-type]


def session(conn_id: int, ip: str = "10.0.0.1") -> Session:
    return Session(conn_id=conn_id, ip=ip, nonce="n")


def test_a_new_connection_past_the_anonymous_allowance_closes_the_oldest_silent_one() -> None:
    gate = admission(anonymous_per_ip_max=3)
    speaking, subscribed, silent = session(1), session(2), session(3)
    for each in (speaking, subscribed, silent):
        assert gate.open(each, 0) == []
    speaking.spoke = subscribed.spoke = True
    subscribed.subscriptions.add(("book", "H100"))
    fourth = session(4)
    assert gate.open(fourth, LATER) == [silent]
    fourth.spoke = True
    assert gate.open(session(5), LATER) == [speaking], "then the oldest without a subscription"
    assert silent.closed and speaking.closed and gate.by_ip["10.0.0.1"] == 3


def test_a_connection_logging_in_is_never_closed_to_make_room() -> None:
    gate = admission(anonymous_per_ip_max=1)
    logging_in = session(1)
    gate.open(logging_in, 0)
    logging_in.login_pending = True
    assert gate.open(session(2), LATER) == []
    assert not logging_in.closed


def test_young_connections_are_not_closed_to_make_room() -> None:
    """Traders behind one NAT reconnecting at once must not evict each other before their
    login: the IP holds more than its allowance until they are older than the grace."""
    gate = admission(anonymous_per_ip_max=2)
    first, second = session(1), session(2)
    gate.open(first, 0)
    gate.open(second, GRACE_MS * MS // 2)
    assert gate.open(session(3), GRACE_MS * MS // 2 + 1) == []
    assert gate.open(session(4), GRACE_MS * MS + 1) == [first], "the first one is old now"
    assert not second.closed

def test_other_ips_keep_their_own_allowance_and_the_backstop_refuses() -> None:
    gate = admission(anonymous_per_ip_max=1, connections_per_ip_max=2)
    gate.open(session(1, "10.0.0.1"), 0)
    assert gate.open(session(2, "10.0.0.2"), 0) == []
    assert gate.open(session(3, "10.0.0.1"), LATER)  # closes 1: the IP holds one anonymous
    assert gate.refusal("10.0.0.1") is None
    logged = session(4, "10.0.0.1")
    gate.open(logged, 2 * LATER)
    logged.principal = Principal("alice", "trader", "k1")
    gate.logged_in(logged)
    assert gate.refusal("10.0.0.1") == CONNECTIONS_PER_IP


def test_logins_are_counted_per_account_and_per_key() -> None:
    gate = admission(connections_per_account_max=2, connections_per_key_max=1)
    first = session(1)
    gate.open(first, 0)
    first.principal = Principal("alice", "trader", "k1")
    gate.logged_in(first)
    assert gate.login_refusal(Principal("alice", "trader", "k1")) == CONNECTIONS_PER_KEY
    assert gate.login_refusal(Principal("alice", "trader", "k2")) is None
    second = session(2)
    gate.open(second, 0)
    second.principal = Principal("alice", "trader", "k2")
    gate.logged_in(second)
    assert gate.login_refusal(Principal("alice", "trader", "k3")) == CONNECTIONS_PER_ACCOUNT
    gate.close(first)
    gate.close(first)  # twice changes nothing
    assert gate.login_refusal(Principal("alice", "trader", "k1")) is None
    assert gate.by_account == {"alice": 1} and gate.open_count == 1


def test_the_login_deadline_closes_only_anonymous_connections_that_sent_nothing() -> None:
    gate = admission(login_deadline_ms=100)
    silent, spoke, logged = session(1), session(2), session(3)
    for each in (silent, spoke, logged):
        gate.open(each, 0)
    spoke.spoke = True
    logged.principal = Principal("bob", "trader", "k")
    gate.logged_in(logged)
    assert gate.overdue(99 * MS) == []
    assert gate.overdue(100 * MS) == [silent]
    assert gate.overdue(200 * MS) == [], "each once"
    gate.watch(spoke, 200 * MS)  # a failed login: the deadline starts again
    assert gate.overdue(300 * MS) == [spoke]
