"""Fuzz the gateway with thousands of malformed, oversized, wrongly typed and badly signed
frames: each gets an error reply or a clean close, the gateway keeps running, and not one
command reaches the commands topic.

The gateway runs on real Kafka and PostgreSQL in a thread with its own event loop, so
hypothesis drives it from plain synchronous code over real websockets.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from eventlog.kafka import KafkaConfig, KafkaLog
from gateway.config import ANONYMOUS, ROLES, GatewayConfig, RateLimit
from gateway.service import GatewayService
from gateway.store import PostgresKeyStore, migrate
from sdk.signing import ApiKey

FRAME_BYTES_MAX = 4096
REFUSAL_CODES = {"invalid_json", "invalid_request", "unknown_op", "auth_failed",
                 "unauthenticated"}


@dataclass
class FuzzGateway:
    url: str
    key: ApiKey
    loop: asyncio.AbstractEventLoop
    service: GatewayService
    task: asyncio.Future[None]
    event_log: KafkaLog

    def commands_end(self) -> int:
        return asyncio.run_coroutine_threadsafe(self.event_log.end_offset(
            self.service.commands_topic, isolation="read_uncommitted"), self.loop).result(30)


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str, database_url: str) -> Iterator[FuzzGateway]:
    unlimited = RateLimit(per_second=100_000, burst=100_000)
    limits = {role: unlimited for role in (*ROLES, ANONYMOUS)}
    # The fuzzer logs in again after every frame that closes its connection.
    config = GatewayConfig(port=0, frame_bytes_max=FRAME_BYTES_MAX, role_limits=limits,
                           request_timeout_ms=1000, ip_limit=unlimited,
                           login_ip_limit=unlimited, login_key_limit=unlimited,
                           topic_namespace=f"fuzz{uuid.uuid4().hex[:8]}.")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await migrate(database_url)
        store = await PostgresKeyStore.open(database_url)
        event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
        service = GatewayService(event_log, config, store)
        stop = asyncio.Event()
        holder.update(stop=stop, service=service, event_log=event_log,
                      key=ApiKey(*await store.add_key(f"fuzz-{uuid.uuid4().hex[:6]}", "trader")))
        task = asyncio.ensure_future(service.run(stop))
        holder["task"] = task
        await service.ready.wait()
        ready.set()
        try:
            await task
        finally:
            await event_log.close()
            await store.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60), "the gateway did not start"
    service = holder["service"]
    yield FuzzGateway(url=f"ws://127.0.0.1:{service.port}", key=holder["key"], loop=loop,
                      service=service, task=holder["task"], event_log=holder["event_log"])
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(30)


class Session:
    """A logged-in synchronous connection, reopened whenever the gateway closes it."""

    def __init__(self, gateway: FuzzGateway) -> None:
        self.gateway = gateway
        self.connection: ClientConnection | None = None
        self.stack = ExitStack()
        self.closes: list[int] = []

    def open(self) -> ClientConnection:
        if self.connection is None:
            self.stack.close()
            connection = self.stack.enter_context(
                connect(self.gateway.url, max_size=None, compression=None))
            hello = json.loads(connection.recv(timeout=10))
            login = self.gateway.key.login_fields(hello["nonce"], time.time_ns() // 1_000_000)
            connection.send(json.dumps({**login, "req_id": 0}))
            assert next_reply(connection)["status"] == "ok"
            self.connection = connection
        return self.connection

    def exchange(self, frame: str | bytes) -> dict[str, Any] | None:
        """Send a frame; return its reply, or None when the gateway closed the connection."""
        connection = self.open()
        try:
            connection.send(frame)
            return next_reply(connection)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the gateway dropped the connection without a close"
            self.closes.append(closed.rcvd.code)
            self.connection = None
            return None


def next_reply(connection: ClientConnection) -> dict[str, Any]:
    """Return the next reply, skipping heartbeats."""
    while True:
        message: dict[str, Any] = json.loads(connection.recv(timeout=10))
        if message["type"] == "reply":
            return message


VALID_ORDER: dict[str, Any] = {
    "op": "new_order", "req_id": 7, "client_order_id": "fz1", "instrument": "H100.fuzz",
    "side": "buy", "order_type": "limit", "price": "2.15", "quantity": 3,
}
REQUIRED = ("op", "client_order_id", "instrument", "side", "order_type", "quantity", "req_id")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=12)
wrong_values = st.one_of(
    st.just(None), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(min_value=2**63), st.integers(max_value=-1),
)


def _right_type(name: str, value: Any) -> bool:
    """Tell whether `value` has a JSON type the field accepts (so it would not be wrong)."""
    if value is None:
        return name in ("price", "expire_at")
    if name in ("quantity", "expire_at"):
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "post_only":
        return isinstance(value, bool)
    return isinstance(value, str)


@st.composite
def mutated_orders(draw: st.DrawFn) -> tuple[str, str]:
    """Return (frame, the field at fault) for a new_order broken in exactly one way."""
    order = dict(VALID_ORDER)
    how = draw(st.sampled_from(["drop", "extra", "wrong", "range", "pattern"]))
    if how == "drop":
        name = draw(st.sampled_from(REQUIRED))
        del order[name]
    elif how == "extra":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in VALID_ORDER
                                                            and n not in (
            "time_in_force", "expire_at", "post_only", "stp")))
        order[name] = draw(json_values)
    elif how == "wrong":
        name = draw(st.sampled_from(["client_order_id", "instrument", "side", "order_type",
                                     "price", "quantity", "post_only", "stp", "expire_at"]))
        value = draw(wrong_values)
        order[name] = [value] if _right_type(name, value) else value
    elif how == "range":
        name = draw(st.sampled_from(["quantity", "req_id", "expire_at"]))
        order[name] = draw(st.integers(max_value=-1) | st.integers(min_value=2**63))
    else:
        name = draw(st.sampled_from(["price", "client_order_id", "instrument"]))
        bad_values = {
            "price": ["", "1e3", "-1", ".5", "2.1234567", "2,15", "abc", "1" * 13, " 2"],
            "client_order_id": ["", "a b", "x" * 65, "gpux.reserved", "é", "a\n"],
            "instrument": ["", "a b", "x" * 65, "é", "a/b"],
        }[name]
        order[name] = draw(st.sampled_from(bad_values))
    return json.dumps(order), name


garbage = st.one_of(
    st.integers(min_value=600, max_value=2000).map(
        lambda depth: '{"op": "ping", "req_id": 1, "x": ' + "[" * depth + "]" * depth + "}"),
    st.binary(max_size=200).map(lambda data: b"\xff" + data),
    st.text(max_size=200).filter(lambda text: not text.strip().startswith("{")),
    json_values.filter(lambda value: not isinstance(value, dict)).map(json.dumps),
    st.dictionaries(st.text(max_size=8).filter(lambda key: key != "op"), json_values,
                    max_size=5).map(json.dumps),
    st.text(max_size=20).filter(lambda op: op not in {
        "login", "login_wallet", "new_order", "cancel_order", "amend_order", "mass_cancel",
        "batch", "mass_quote", "cancel_all_after", "subscribe", "unsubscribe", "instruments",
        "time", "ping", "open_orders", "balances", "list_instrument", "deposit"}).map(
        lambda op: json.dumps({"op": op, "req_id": 1})),
)
oversized = st.integers(min_value=FRAME_BYTES_MAX + 1, max_value=4 * FRAME_BYTES_MAX).map(
    lambda size: json.dumps({"op": "ping", "req_id": 1, "pad": "x" * size}))


@given(frames=st.lists(st.one_of(mutated_orders(), garbage.map(lambda f: (f, None)),
                                 oversized.map(lambda f: (f, "close"))),
                       min_size=1, max_size=12))
@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_malformed_frames_get_an_error_or_a_clean_close_and_never_reach_the_engine(
    gateway: FuzzGateway, frames: list[tuple[str | bytes, str | None]]
) -> None:
    session = _session(gateway)
    for frame, fault in frames:
        reply = session.exchange(frame)
        if fault == "close":
            assert reply is None and session.closes[-1] == 1009
            continue
        assert reply is not None, f"no reply to {frame!r:.200}"
        assert reply["status"] == "error" and reply["error"]["code"] in REFUSAL_CODES, reply
        if fault is not None:
            assert reply["error"]["field"].startswith(f"$.{fault}"), (reply, frame)
    _counters["frames"] += len(frames)


@given(signature=st.binary(min_size=64, max_size=64), skew_ms=st.integers(-10**6, 10**6),
       key_id=st.sampled_from(["own", "unknown"]))
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_badly_signed_logins_are_refused(
    gateway: FuzzGateway, signature: bytes, skew_ms: int, key_id: str
) -> None:
    import base64

    with connect(gateway.url, compression=None) as connection:
        json.loads(connection.recv(timeout=10))
        connection.send(json.dumps({
            "op": "login", "req_id": 1,
            "key_id": gateway.key.key_id if key_id == "own" else "kunknown000000",
            "timestamp_ms": time.time_ns() // 1_000_000 + skew_ms,
            "signature": base64.b64encode(signature).decode(),
        }))
        reply = next_reply(connection)
        assert reply["status"] == "error" and reply["error"]["code"] == "auth_failed"
    _counters["frames"] += 1


def test_the_gateway_survived_and_the_engine_received_nothing(gateway: FuzzGateway) -> None:
    assert not gateway.task.done(), "the gateway stopped"
    assert gateway.commands_end() == _counters.setdefault("commands_end", 0)
    assert gateway.service.core.commands_sent == 0
    assert _counters["frames"] >= 2000, _counters
    reply = _session(gateway).exchange(json.dumps({"op": "ping", "req_id": 99}))
    assert reply is not None and reply["status"] == "ok"


_counters: dict[str, int] = {"frames": 0}
_sessions: dict[int, Session] = {}


def _session(gateway: FuzzGateway) -> Session:
    session = _sessions.get(id(gateway))
    if session is None:
        session = _sessions[id(gateway)] = Session(gateway)
        _counters["commands_end"] = gateway.commands_end()
    return session
