"""The gateway on a crowded, hostile network: many clients behind one IP, idle and noisy
neighbours, duplicate and half-broken frames. Real Kafka, PostgreSQL, engine and gateway,
real sockets from 127.0.0.1 (one IP for every client, as behind a NAT).

Each test is one numbered case of the issue that found them; each failed on the gateway as
it was (4f7fea9): 200 connections per IP with idle anonymous ones kept for ever, logins
charged to the anonymous bucket, venue cancels reported as the trader's, duplicate req_ids
executed twice, a readable req_id lost, limits nowhere a client could read them, and every
closed instrument sent to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets

from eventlog.kafka import KafkaConfig, KafkaLog
from gateway.config import GatewayConfig
from gateway.store import PostgresKeyStore, migrate
from gateway.testing import ApiContract
from gpux.venue import Venue
from sdk.client import ApiKey, Client
from tests.helpers import eventually
from wsapi.messages import OrdersMessage

DAY_NS = 86_400 * 10**9
LOGIN_DEADLINE_MS = 1_000
IDLE_SOCKETS = 500
WAIT_S = 20.0
CONFIG = GatewayConfig(port=0, clock_interval_ms=100, login_deadline_ms=LOGIN_DEADLINE_MS,
                       eip712_chain_id=31337, request_timeout_ms=20_000)


@dataclass
class Market:
    venue: Venue
    store: PostgresKeyStore
    admin: ApiKey
    contract: ApiContract
    run: str

    @property
    def url(self) -> str:
        return self.venue.urls[0]

    def client(self, credentials: Any = None, **options: Any) -> Client:
        return Client(self.url, credentials=credentials, on_frame=self.contract.hook(),
                      reconnect=False, **options)

    async def trader(self, name: str, usdc: str = "10000") -> tuple[str, ApiKey]:
        account = f"{name}-{self.run}"
        key = ApiKey(*await self.store.add_key(account, "trader"))
        async with self.client(self.admin) as admin:
            assert (await admin.deposit(account, "USDC", usdc)).accepted
        return account, key

    async def instrument(self, name: str, starts_in_ns: int = DAY_NS) -> str:
        symbol = f"H100.{name}.{self.run}"
        async with self.client(self.admin) as admin:
            listed = await admin.list_instrument(
                symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=time.time_ns() + starts_in_ns, delivery_hours=1,
                tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0)
            assert listed.status == "accepted", listed
        return symbol


@pytest.fixture(scope="module")
async def market(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Market]:
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    admin = ApiKey(*await store.add_key(f"admin-{uuid.uuid4().hex[:6]}", "admin"))
    try:
        async with Venue.running(event_log, namespace=f"gwh{uuid.uuid4().hex[:8]}.",
                                 key_store=store, gateway=CONFIG) as venue:
            yield Market(venue=venue, store=store, admin=admin, contract=ApiContract(),
                         run=uuid.uuid4().hex[:6])
    finally:
        await event_log.close()
        await store.close()


# -- raw websocket clients ----------------------------------------------------------------------


async def open_raw(url: str) -> tuple[websockets.ClientConnection, dict[str, Any]]:
    ws = await websockets.connect(url, open_timeout=WAIT_S)
    hello: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    assert hello["type"] == "hello"
    return ws, hello


async def replies_to(ws: websockets.ClientConnection, req_id: int | None,
                     count: int = 1) -> list[dict[str, Any]]:
    """Read until `count` replies carrying `req_id` came (other frames skipped)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while len(found) < count:
        remaining_s = deadline - time.monotonic()
        assert remaining_s > 0, f"no reply with req_id {req_id} within {WAIT_S} s"
        message = json.loads(await asyncio.wait_for(ws.recv(), remaining_s))
        if message["type"] == "reply" and message["req_id"] == req_id:
            found.append(message)
    return found


async def log_in_raw(ws: websockets.ClientConnection, hello: dict[str, Any], key: ApiKey,
                     req_id: int = 1) -> dict[str, Any]:
    fields = key.login_fields(hello["nonce"], time.time_ns() // 1_000_000)
    await ws.send(json.dumps({**fields, "req_id": req_id}))
    return (await replies_to(ws, req_id))[0]


@contextlib.asynccontextmanager
async def pinging(url: str, per_second: float) -> AsyncIterator[list[str]]:
    """An anonymous neighbour pinging at `per_second`; yields the statuses it got."""
    statuses: list[str] = []
    ws, _ = await open_raw(url)

    async def ping() -> None:
        req_id = 1
        while True:
            await ws.send(json.dumps({"op": "ping", "req_id": req_id}))
            req_id += 1
            await asyncio.sleep(1 / per_second)

    async def read() -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "reply" and message["op"] == "ping":
                statuses.append(message["status"])

    tasks = [asyncio.create_task(ping()), asyncio.create_task(read())]
    try:
        yield statuses
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()


async def close_all(sockets: list[websockets.ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# -- 1 and 2: one IP, many clients ---------------------------------------------------------------


async def test_1_idle_anonymous_sockets_from_one_ip_never_lock_out_a_trader(
    market: Market,
) -> None:
    _, key = await market.trader("nat")
    idle: list[websockets.ClientConnection] = []
    try:
        for _ in range(IDLE_SOCKETS):  # a neighbour's leaked sockets: never log in, never send
            idle.append((await open_raw(market.url))[0])
        async with pinging(market.url, per_second=50) as pings:
            first_try = 0
            for _ in range(20):
                ws, hello = await open_raw(market.url)
                try:
                    reply = await log_in_raw(ws, hello, key)
                    first_try += reply["status"] == "ok"
                finally:
                    await ws.close()
            assert pings, "the neighbour's pings were answered"
        assert first_try == 20
        await eventually(lambda: all(ws.close_code is not None for ws in idle),
                         timeout_s=WAIT_S, message="every idle socket was closed")
        assert {ws.close_code for ws in idle} == {1008}, "closed as a policy, with its code"
        anonymous = market.venue.gateways[0].core.admission.anonymous_by_ip
        assert len(anonymous.get("127.0.0.1", {})) <= CONFIG.anonymous_per_ip_max
    finally:
        await close_all(idle)


async def test_1_an_anonymous_connection_that_never_sends_is_closed_at_the_deadline(
    market: Market,
) -> None:
    symbol = await market.instrument("deadline")
    idle, _ = await open_raw(market.url)
    reading, _ = await open_raw(market.url)
    await reading.send(json.dumps({"op": "subscribe", "req_id": 1, "channel": "trades",
                                   "instrument": symbol}))
    try:
        await asyncio.wait_for(idle.wait_closed(), WAIT_S)
        assert idle.close_code == 1008
        await asyncio.sleep(2 * LOGIN_DEADLINE_MS / 1000)
        await reading.send(json.dumps({"op": "ping", "req_id": 2}))
        assert (await replies_to(reading, 2))[0]["status"] == "ok", "a market-data reader stays"
    finally:
        await close_all([idle, reading])


async def test_2_logins_have_a_bucket_anonymous_traffic_cannot_drain(market: Market) -> None:
    _, key = await market.trader("login-bucket")
    async with pinging(market.url, per_second=25) as pings:
        await eventually(lambda: "error" in pings, timeout_s=WAIT_S, interval_s=0.05,
                         message="the neighbour has drained the anonymous bucket")
        statuses = []
        for _ in range(10):
            ws, hello = await open_raw(market.url)
            try:
                statuses.append((await log_in_raw(ws, hello, key))["status"])
            finally:
                await ws.close()
    assert statuses == ["ok"] * 10


# -- 3: who canceled -----------------------------------------------------------------------------


async def next_canceled(orders: Any, client_order_id: str) -> str:
    """Read the orders feed until the order's `canceled` report; return its reason."""
    while True:
        message = await orders.get(WAIT_S)
        assert isinstance(message, OrdersMessage)
        for report in message.orders:
            if report.client_order_id == client_order_id and report.event == "canceled":
                return str(report.reason)


async def test_3_cancels_the_venue_makes_carry_their_own_reasons(market: Market) -> None:
    _, key = await market.trader("reasons")
    symbol = await market.instrument("reasons")
    async with market.client(key) as watcher:
        orders = await watcher.subscribe("orders")
        async with market.client(key, cancel_on_disconnect="session") as leaving:
            assert (await leaving.new_order(symbol, "buy", 1, "1.00",
                                            client_order_id="gone")).accepted
        assert await next_canceled(orders, "gone") == "disconnect"

        assert (await watcher.new_order(symbol, "buy", 1, "1.00",
                                        client_order_id="switch")).accepted
        await watcher.cancel_all_after(1)
        assert await next_canceled(orders, "switch") == "dead_man_switch"

        for cid in ("mine", "all"):
            assert (await watcher.new_order(symbol, "buy", 1, "1.00",
                                            client_order_id=cid)).accepted
        assert (await watcher.cancel_order("mine")).accepted
        assert await next_canceled(orders, "mine") == "user"
        await watcher.mass_cancel(symbol)
        assert await next_canceled(orders, "all") == "mass_cancel"


# -- 4 and 5: exact replies ---------------------------------------------------------------------


def new_order_frame(req_id: int, client_order_id: str, symbol: str, **overrides: Any) -> str:
    return json.dumps({"op": "new_order", "req_id": req_id, "client_order_id": client_order_id,
                       "instrument": symbol, "side": "buy", "order_type": "limit",
                       "price": "1.00", "quantity": 1, **overrides})


async def test_4_a_req_id_still_pending_is_refused_as_a_duplicate(market: Market) -> None:
    _, key = await market.trader("dup")
    symbol = await market.instrument("dup")
    ws, hello = await open_raw(market.url)
    try:
        assert (await log_in_raw(ws, hello, key))["status"] == "ok"
        await ws.send(new_order_frame(503, "dupA", symbol))
        await ws.send(new_order_frame(503, "dupB", symbol))
        replies = await replies_to(ws, 503, count=2)
        assert sorted(reply["status"] for reply in replies) == ["accepted", "error"]
        refused = next(reply for reply in replies if reply["status"] == "error")
        assert refused["error"]["code"] == "duplicate_request"
        await ws.send(json.dumps({"op": "open_orders", "req_id": 504}))
        open_orders = (await replies_to(ws, 504))[0]["result"]["orders"]
        assert [order["client_order_id"] for order in open_orders] == ["dupA"]
        await ws.send(new_order_frame(503, "dupC", symbol))  # answered: the id is free again
        assert (await replies_to(ws, 503))[0]["status"] == "accepted"
    finally:
        await ws.close()


async def test_5_a_readable_req_id_is_kept_whatever_else_is_wrong(market: Market) -> None:
    ws, _ = await open_raw(market.url)
    try:
        await ws.send(new_order_frame(42, "x", "H100.none").replace('"quantity": 1',
                                                                    '"quantity": 1e400'))
        reply = (await replies_to(ws, 42))[0]
        assert reply["status"] == "error" and reply["error"]["code"] == "invalid_request"
    finally:
        await ws.close()


# -- 6: limits a client can read ------------------------------------------------------------------


async def test_6_hello_announces_the_chain_id_and_every_limit(market: Market) -> None:
    ws, hello = await open_raw(market.url)
    await ws.close()
    assert market.contract.check("recv", json.dumps(hello)) == []
    assert hello["eip712_chain_id"] == 31337
    assert hello["login_window_ms"] == CONFIG.login_window_ms
    limits = hello["limits"]
    for name in ("connections_max", "connections_per_ip_max", "anonymous_per_ip_max",
                 "anonymous_grace_ms",
                 "login_deadline_ms", "connections_per_account_max", "connections_per_key_max",
                 "subscriptions_per_session_max", "pending_per_session_max",
                 "request_timeout_ms", "instruments_page_max"):
        assert limits[name] == getattr(CONFIG, name), name
    assert limits["rate_limits"]["login_ip"] == {
        "per_second": CONFIG.login_ip_limit.per_second, "burst": CONFIG.login_ip_limit.burst}
    assert set(limits["rate_limits"]) >= {"anonymous", "trader", "ip", "login_key"}


async def test_6_instruments_are_open_ones_by_default_and_closed_ones_page_by_cursor(
    market: Market,
) -> None:
    _, key = await market.trader("pager")  # a trader's bucket: anonymous pages may run dry
    closing = await market.instrument("closing", starts_in_ns=2 * 10**9)
    open_ones = [await market.instrument(f"open{index}") for index in range(3)]
    async with market.client(key) as trader:
        await eventually(lambda: _has_closed(trader, closing), timeout_s=WAIT_S,
                         interval_s=0.2, message="the instrument closed at its delivery")
        listed = {spec.symbol for spec in await trader.instruments()}
        assert closing not in listed and set(open_ones) <= listed
        paged: list[str] = []
        cursor = None
        while True:
            fields: dict[str, Any] = {"status": "all", "limit": 1}
            if cursor is not None:
                fields["cursor"] = cursor
            result = (await trader.request("instruments", **fields)).result
            assert len(result["instruments"]) <= 1
            paged += [spec["symbol"] for spec in result["instruments"]]
            cursor = result.get("next_cursor")
            if cursor is None:
                break
        everything = [spec.symbol for spec in await trader.instruments(status="all")]
        assert paged == everything and {closing, *open_ones} <= set(paged)


async def _has_closed(client: Client, symbol: str) -> bool:
    return symbol in {spec.symbol for spec in await client.instruments(status="closed")}
