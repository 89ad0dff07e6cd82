"""The gateway's state machine with no I/O: a stub transport, the pure engine behind a stub
command sink, and a stub login check. Fast, and every reply is correlated by req_id."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from gateway.auth import Principal
from gateway.config import ANONYMOUS, GatewayConfig, RateLimit
from gateway.core import GatewayCore, Submission
from matching_engine.core import Engine
from protocol import Deposit, ListInstrument, decode_command
from wsapi.requests import Login, LoginWallet

NOW_NS = 1_700_000_000_000_000_000
DELIVERY_NS = NOW_NS + 86_400 * 10**9


class StubTransport:
    def __init__(self) -> None:
        self.frames: dict[int, list[dict[str, Any]]] = {}
        self.closed: dict[int, int] = {}

    def push(self, conn_id: int, payload: bytes) -> None:
        self.frames.setdefault(conn_id, []).append(json.loads(payload))

    def push_many(self, conn_ids: Iterable[int], payload: bytes) -> None:
        for conn_id in conn_ids:
            self.push(conn_id, payload)

    def close(self, conn_id: int, code: int, reason: str) -> None:
        self.closed[conn_id] = code


class EngineSink:
    """Apply submitted commands to a pure engine at once (or refuse when `full`)."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.submissions: list[Submission] = []
        self.full = False

    def room(self) -> int:
        return 0 if self.full else 100

    def offer(self, submission: Submission) -> bool:
        if self.full:
            return False
        self.submissions.append(submission)
        return True

    def run(self, core: GatewayCore) -> None:
        pending, self.submissions = self.submissions, []
        events = [event for submission in pending for payload in submission.payloads
                  for event in self.engine.apply(decode_command(payload))]
        core.apply_events(events)


class StubAuth:
    def __init__(self) -> None:
        self.core: GatewayCore | None = None
        self.accounts: dict[str, tuple[str, str]] = {}  # key id -> (account, role)

    def begin(self, conn_id: int, req_id: int, request: Login | LoginWallet, nonce: str) -> None:
        assert self.core is not None and isinstance(request, Login)
        account, role = self.accounts[request.key_id]
        self.core.login_result(conn_id, req_id, "login", Principal(account, role, request.key_id),
                               request.cancel_on_disconnect, 0)


def make_core(**config: Any) -> tuple[GatewayCore, StubTransport, EngineSink, StubAuth]:
    transport, sink, auth = StubTransport(), EngineSink(), StubAuth()
    core = GatewayCore(GatewayConfig(**config), transport, sink, auth)
    auth.core = core
    setup = [ListInstrument(ts=NOW_NS, symbol="H100.a", gpu="H100", region="eu",
                            delivery_start=DELIVERY_NS, delivery_hours=1, tick_size="0.01",
                            max_order_quantity=100, maker_fee_bps=0, taker_fee_bps=0),
             Deposit(ts=NOW_NS, account="alice", asset="USDC", amount="1000"),
             Deposit(ts=NOW_NS, account="bob", asset="H100.a", amount=50)]
    core.apply_events([e for command in setup for e in sink.engine.apply(command)])
    return core, transport, sink, auth


def connect(core: GatewayCore, auth: StubAuth, conn_id: int, account: str | None,
            role: str = "trader", cancel_on_disconnect: str = "off") -> None:
    assert core.connect(conn_id, "10.0.0.1", NOW_NS, 0)
    if account is not None:
        key_id = f"key{conn_id:08d}"
        auth.accounts[key_id] = (account, role)
        send(core, conn_id, {"op": "login", "req_id": 0, "key_id": key_id,
                             "timestamp_ms": NOW_NS // 1_000_000, "signature": "A" * 88,
                             "cancel_on_disconnect": cancel_on_disconnect})


def send(core: GatewayCore, conn_id: int, frame: dict[str, Any], mono_ns: int = 0) -> None:
    core.receive(conn_id, json.dumps(frame), NOW_NS, mono_ns)


def replies(transport: StubTransport, conn_id: int) -> dict[int, dict[str, Any]]:
    return {f["req_id"]: f for f in transport.frames.get(conn_id, []) if f["type"] == "reply"}


ORDER = {"op": "new_order", "instrument": "H100.a", "order_type": "limit", "quantity": 2}


def test_orders_are_answered_by_req_id_after_the_engine_applies_them() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, "alice")
    connect(core, auth, 2, "bob")
    send(core, 2, {**ORDER, "req_id": 5, "client_order_id": "s1", "side": "sell",
                   "price": "2"})
    send(core, 1, {**ORDER, "req_id": 6, "client_order_id": "b1", "side": "buy", "price": "2"})
    assert 6 not in replies(transport, 1), "no reply before the engine answers"
    stamps = [decode_command(p).ts for s in sink.submissions for p in s.payloads]
    assert stamps == [NOW_NS, NOW_NS], "ts is stamped from the clock the caller passes"
    sink.run(core)
    assert replies(transport, 2)[5]["status"] == "accepted"
    assert replies(transport, 1)[6]["result"]["order_id"] == "2"


def test_a_batch_with_new_and_cancel_of_one_id_gets_each_outcome_in_order() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, "alice")
    send(core, 1, {"op": "batch", "req_id": 9, "orders": [
        {**ORDER, "op": "new_order", "client_order_id": "x", "side": "buy", "price": "1"},
        {"op": "cancel_order", "client_order_id": "x"},
        {"op": "cancel_order", "client_order_id": "x"},
        {"op": "mass_cancel"}]})
    sink.run(core)
    results = replies(transport, 1)[9]["result"]["results"]
    assert [(r["op"], r["status"]) for r in results] == [
        ("new_order", "accepted"), ("cancel_order", "accepted"), ("cancel_order", "rejected"),
        ("mass_cancel", "accepted")]
    assert results[3]["canceled"] == 0


def test_refusals_send_nothing_to_the_engine() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, None)
    connect(core, auth, 2, "alice")
    send(core, 1, {**ORDER, "req_id": 1, "client_order_id": "a", "side": "buy", "price": "1"})
    send(core, 2, {"op": "deposit", "req_id": 2, "account": "alice", "asset": "USDC",
                   "amount": "5"})
    send(core, 2, {"op": "mass_quote", "req_id": 3, "instrument": "H100.a", "quotes": []})
    send(core, 2, {"op": "batch", "req_id": 4, "orders": [
        {**ORDER, "op": "new_order", "client_order_id": "d", "side": "buy", "price": "1"},
        {**ORDER, "op": "new_order", "client_order_id": "d", "side": "buy", "price": "1"}]})
    assert sink.submissions == []
    assert replies(transport, 1)[1]["error"]["code"] == "unauthenticated"
    errors = {req_id: r["error"] for req_id, r in replies(transport, 2).items() if req_id}
    assert errors[2]["code"] == "forbidden" and errors[3]["code"] == "forbidden"
    assert errors[4]["field"] == "$.orders[1].client_order_id"
    sink.full = True
    send(core, 2, {**ORDER, "req_id": 5, "client_order_id": "e", "side": "buy", "price": "1"})
    overloaded = replies(transport, 2)[5]["error"]
    assert overloaded["code"] == "overloaded" and overloaded["retry_after_ms"] > 0


def test_rate_limit_refusal_carries_retry_after_and_usage() -> None:
    limits = dict(GatewayConfig().role_limits)
    limits[ANONYMOUS] = RateLimit(per_second=2, burst=2)
    core, transport, _, auth = make_core(role_limits=limits)
    connect(core, auth, 1, None)
    for req_id in range(3):
        send(core, 1, {"op": "ping", "req_id": req_id})
    answers = replies(transport, 1)
    assert [answers[i]["rate_limit"]["remaining"] for i in (0, 1)] == [1, 0]
    assert answers[2]["error"] == {"code": "rate_limited", "message": answers[2]["error"][
        "message"], "retry_after_ms": 500}


def test_pending_requests_time_out_and_the_dead_man_switch_cancels() -> None:
    core, transport, sink, auth = make_core(request_timeout_ms=1000)
    connect(core, auth, 1, "alice")
    send(core, 1, {**ORDER, "req_id": 1, "client_order_id": "t", "side": "buy", "price": "1"})
    core.housekeeping(NOW_NS, 2 * 10**9)
    reply = replies(transport, 1)[1]
    assert reply["status"] == "error" and reply["error"]["code"] == "timeout"
    sink.run(core)  # the late answer finds nothing pending: no second reply
    assert len([f for f in transport.frames[1] if f.get("req_id") == 1]) == 1
    send(core, 1, {"op": "cancel_all_after", "req_id": 2, "timeout_s": 5}, mono_ns=0)
    core.housekeeping(NOW_NS, 4 * 10**9)
    assert sink.submissions == []
    core.housekeeping(NOW_NS, 6 * 10**9)
    assert [type(decode_command(p)).__name__ for s in sink.submissions
            for p in s.payloads] == ["MassCancel"]
    assert any(f["type"] == "notice" for f in transport.frames[1])


def test_cancel_on_disconnect_session_cancels_only_this_sessions_open_orders() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, "alice", cancel_on_disconnect="session")
    connect(core, auth, 2, "alice")
    send(core, 1, {**ORDER, "req_id": 1, "client_order_id": "mine", "side": "buy", "price": "1"})
    send(core, 2, {**ORDER, "req_id": 1, "client_order_id": "other", "side": "buy",
                   "price": "1"})
    sink.run(core)
    core.disconnect(1, NOW_NS)
    sink.run(core)
    assert [o.client_order_id for o in core.projection.open_orders("alice")] == ["other"]


def test_the_fills_snapshot_holds_the_accounts_latest_fills_oldest_first() -> None:
    core, transport, sink, auth = make_core(fills_snapshot_max=3)
    connect(core, auth, 1, "alice")
    connect(core, auth, 2, "bob")
    for index in range(4):
        send(core, 2, {**ORDER, "req_id": 10 + index, "client_order_id": f"s{index}",
                       "side": "sell", "price": f"{2 + index}", "quantity": 1})
        send(core, 1, {**ORDER, "req_id": 20 + index, "client_order_id": f"b{index}",
                       "side": "buy", "price": f"{2 + index}", "quantity": 1})
    sink.run(core)
    connect(core, auth, 3, "alice")  # a page opened after the fills
    send(core, 3, {"op": "subscribe", "req_id": 1, "channel": "fills"})
    send(core, 2, {"op": "subscribe", "req_id": 50, "channel": "fills"})
    alice = [f for f in transport.frames[3] if f["type"] == "fills"]
    assert [f["kind"] for f in alice] == ["snapshot"]
    assert [(f["client_order_id"], f["price"], f["liquidity"]) for f in alice[0]["fills"]] == [
        ("b1", "3", "taker"), ("b2", "4", "taker"), ("b3", "5", "taker")]
    bob = [f for f in transport.frames[2] if f["type"] == "fills"]
    assert [f["client_order_id"] for f in bob[0]["fills"]] == ["s1", "s2", "s3"]
    send(core, 2, {**ORDER, "req_id": 60, "client_order_id": "s9", "side": "sell",
                   "price": "9", "quantity": 1})
    send(core, 3, {**ORDER, "req_id": 2, "client_order_id": "b9", "side": "buy",
                   "price": "9", "quantity": 1})
    sink.run(core)
    alice = [f for f in transport.frames[3] if f["type"] == "fills"]
    assert [f["kind"] for f in alice] == ["snapshot", "update"]
    assert [f["client_order_id"] for f in alice[1]["fills"]] == ["b9"]


def test_subscriptions_get_a_snapshot_then_updates_and_private_ones_need_a_login() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, None)
    connect(core, auth, 2, "bob")
    send(core, 1, {"op": "subscribe", "req_id": 1, "channel": "book", "instrument": "H100.a"})
    send(core, 1, {"op": "subscribe", "req_id": 2, "channel": "orders"})
    send(core, 1, {"op": "subscribe", "req_id": 3, "channel": "book", "instrument": "nope"})
    send(core, 2, {**ORDER, "req_id": 1, "client_order_id": "s", "side": "sell", "price": "3"})
    sink.run(core)
    frames = transport.frames[1]
    assert [f["type"] for f in frames] == ["hello", "reply", "book", "reply", "reply", "book"]
    assert frames[2]["kind"] == "snapshot" and frames[5]["asks"] == [["3", 2]]
    assert frames[5]["prev_seq"] == frames[2]["seq"]
    assert replies(transport, 1)[2]["error"]["code"] == "unauthenticated"
    assert replies(transport, 1)[3]["error"]["code"] == "unknown_instrument"
