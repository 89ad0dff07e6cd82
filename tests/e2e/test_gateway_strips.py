"""Strips and the price index end to end: SDK and CLI -> gateway -> engine (Python core) ->
gateway -> SDK over real Kafka and PostgreSQL, every frame checked against docs/asyncapi.yaml.

Makers rest on six consecutive hours; a buyer quotes a strip, then buys it, through the SDK
and through `gpux trade strip`; the replies carry every leg's fills and the totals, and the
fills, orders and balances feeds follow the leg trades. A strip refused for liquidity
changes nothing. Index values written into the index store reach the `index` feed and
`GET /index`, `/index/latest` (and `gpux trade index`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventlog.kafka import KafkaConfig, KafkaLog
from gateway.config import GatewayConfig
from gateway.store import PostgresKeyStore, migrate
from gateway.testing import ApiContract
from gpux.venue import Venue
from index import store as index_store
from index.value import MINUTE_NS, IndexValue
from protocol import parse_micro
from runtime.postgres import connect, create_database, drop_database
from sdk import cli
from sdk.client import ApiKey, Client
from tests.helpers import eventually
from wsapi.messages import (
    BalancesMessage,
    FillsMessage,
    IndexMessage,
    OrdersMessage,
    StripResult,
)

HOUR_NS = 3600 * 10**9
GPU = "H100-SXM-80GB"
HOURS = 6
TAKER_FEE_BPS = 5


@dataclass
class Market:
    venue: Venue
    store: PostgresKeyStore
    contract: ApiContract
    admin: ApiKey
    index_url: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def url(self) -> str:
        return self.venue.urls[0]

    @asynccontextmanager
    async def client(self, credentials: Any = None) -> AsyncIterator[Client]:
        async with Client(self.url, credentials=credentials,
                          on_frame=self.contract.hook()) as client:
            yield client

    async def key(self, name: str, role: str = "trader") -> tuple[str, ApiKey]:
        account = f"{name}-{self.run}"
        return account, ApiKey(*await self.store.add_key(account, role))

    async def hours(self, region: str, start_ns: int) -> list[str]:
        """List HOURS consecutive hourly instruments of GPU in `region` from `start_ns`."""
        symbols = [f"H100.{region}.{index}" for index in range(HOURS)]
        async with self.client(self.admin) as admin:
            for index, symbol in enumerate(symbols):
                result = await admin.list_instrument(
                    symbol=symbol, gpu=GPU, region=region,
                    delivery_start=start_ns + index * HOUR_NS, delivery_hours=1,
                    tick_size="0.01", max_order_quantity=1000, maker_fee_bps=2,
                    taker_fee_bps=TAKER_FEE_BPS)
                assert result.accepted, result
        return symbols

    async def fund(self, account: str, usdc: str, tokens: dict[str, int]) -> None:
        async with self.client(self.admin) as admin:
            assert (await admin.deposit(account, "USDC", usdc)).accepted
            for symbol, amount in tokens.items():
                assert (await admin.deposit(account, symbol, amount)).accepted


@pytest.fixture(scope="module")
async def market(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Market]:
    """A venue whose gateway reads the index from a database of this module's own: the
    store's `last_seq` counts one venue's events, and other tests' venues share the server."""
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    namespace = f"gwstrip{uuid.uuid4().hex[:8]}."
    index_database = f"gwstrip_{uuid.uuid4().hex[:12]}"
    index_url = await create_database(database_url, index_database)
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    config = GatewayConfig(port=0, clock_interval_ms=100, request_timeout_ms=20_000,
                           index_database_url=index_url, index_poll_interval_ms=100)
    admin = ApiKey(*await store.add_key(f"admin-{uuid.uuid4().hex[:6]}", "admin"))
    try:
        async with Venue.running(event_log, namespace=namespace, key_store=store,
                                 gateway=config) as venue:
            yield Market(venue=venue, store=store, contract=ApiContract(), admin=admin,
                         index_url=index_url)
    finally:
        await event_log.close()
        await store.close()
        await drop_database(database_url, index_database)


def next_hour_ns(days_ahead: int) -> int:
    now = time.time_ns()
    return now - now % HOUR_NS + days_ahead * 86_400 * 10**9


def iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def rest_asks(market: Market, maker_key: ApiKey, symbols: list[str]) -> None:
    """Two levels per hour: 5 at 2.40 + h/100 and 10 at 2.50 + h/100 in hour h."""
    async with market.client(maker_key) as maker:
        for index, symbol in enumerate(symbols):
            for level, (price, quantity) in enumerate(((240, 5), (250, 10))):
                result = await maker.new_order(symbol, "sell", quantity,
                                               f"{(price + index) / 100:.2f}",
                                               client_order_id=f"ask-{index}-{level}")
                assert result.accepted, result


async def run_cli(market: Market, key: ApiKey, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["--url", market.url, "--key",
                                              f"{key.key_id}:{key.private_key}", *args])


async def test_a_strip_quoted_then_bought_through_the_sdk_and_the_cli(market: Market) -> None:
    region = f"eu-{market.run}"
    start_ns = next_hour_ns(2)
    symbols = await market.hours(region, start_ns)
    maker, maker_key = await market.key("maker")
    buyer, buyer_key = await market.key("buyer")
    await market.fund(maker, "1", dict.fromkeys(symbols, 100))
    await market.fund(buyer, "1000", {symbols[0]: 10})
    await rest_asks(market, maker_key, symbols)
    async with market.client(buyer_key) as buyer_client:
        # The buyer's own cheapest ask on the first hour is passed over, by quote and strip.
        own = await buyer_client.new_order(symbols[0], "sell", 4, "2.00",
                                           client_order_id="own-ask")
        assert own.accepted
        fills = await buyer_client.subscribe("fills")
        orders = await buyer_client.subscribe("orders")
        balances = await buyer_client.subscribe("balances")
        for feed in (fills, orders, balances):
            assert (await feed.get(10)).kind == "snapshot"
        legs = await buyer_client.strip_instruments(GPU, region, start_ns, HOURS)
        assert legs == symbols
        quote = await buyer_client.strip_quote(legs, "buy", 8, "200")
        assert quote.executable, quote
        assert [[(f.price, f.quantity) for f in leg.fills] for leg in quote.legs] == [
            [(f"{2.40 + h / 100:.2f}".rstrip("0"), 5), (f"{2.50 + h / 100:.2f}".rstrip("0"), 3)]
            for h in range(HOURS)]
        result = await buyer_client.new_strip_order(legs, "buy", 8, "200",
                                                    client_order_id=f"strip-{market.run}")
        assert result.accepted and result.strip_id, result
        assert result.notional == quote.notional
        assert parse_micro(result.fees) <= parse_micro(quote.fees)
        assert [(leg.instrument, leg.client_order_id, leg.filled) for leg in result.legs] == [
            (symbol, f"strip-{market.run}:{index}", 8) for index, symbol in enumerate(symbols)]
        assert parse_micro(result.total) == parse_micro(result.notional) + parse_micro(
            result.fees)

        traded = await feed_items(fills, FillsMessage, lambda m: m.fills, HOURS * 2)
        assert {(f.client_order_id, f.order_id, f.liquidity) for f in traded} == {
            (f"strip-{market.run}:{index}", result.strip_id, "taker") for index in range(HOURS)}
        assert sorted(f.trade_id for f in traded) == sorted(
            fill.trade_id for leg in result.legs for fill in leg.fills if fill.trade_id)
        reports = await feed_items(orders, OrdersMessage, lambda m: m.orders, 2 + HOURS * 2)
        events = [(r.event, r.client_order_id) for r in reports]
        assert events[0] == ("strip_accepted", f"strip-{market.run}")
        assert events[-1] == ("strip_done", f"strip-{market.run}")

        async def paid() -> bool:
            usdc = (await buyer_client.balances())["USDC"]
            return parse_micro(usdc.available) == parse_micro("1000") - parse_micro(
                result.total)

        await eventually(paid, message="the buyer paid the strip's total")
        bought = await buyer_client.balances()
        assert [bought[symbol].available for symbol in symbols[1:]] == [8] * (HOURS - 1)
        assert bought[symbols[0]].available == 10 - 4 + 8 and bought[symbols[0]].held == 4
        assert any(isinstance(m, BalancesMessage) for m in drain(balances))

        # The CLI: a quote, then a strip of 2 more per hour at the second level.
        assert await run_cli(market, buyer_key, "strip", "--gpu", GPU, "--region", region,
                             "--from", iso(start_ns), "--hours", str(HOURS), "--quantity",
                             "2", "--max-total", "40", "--quote") == 0
        assert await run_cli(market, buyer_key, "strip", "--gpu", GPU, "--region", region,
                             "--from", iso(start_ns), "--hours", str(HOURS), "--quantity",
                             "2", "--max-total", "40", "--cid", f"cli-{market.run}") == 0
        after_cli = await feed_items(fills, FillsMessage, lambda m: m.fills, HOURS)
        assert {f.client_order_id for f in after_cli} == {
            f"cli-{market.run}:{index}" for index in range(HOURS)}
        assert {f.price for f in after_cli} == {
            f"{2.50 + h / 100:.2f}".rstrip("0") for h in range(HOURS)}
        # A buy over its limit is refused by the CLI's strip too, and changes nothing.
        assert await run_cli(market, buyer_key, "strip", "--gpu", GPU, "--region", region,
                             "--from", iso(start_ns), "--hours", str(HOURS), "--quantity",
                             "1", "--max-total", "1") == 1
    assert market.contract.violations == []


async def test_a_strip_refused_for_liquidity_changes_nothing(market: Market) -> None:
    region = f"us-{market.run}"
    start_ns = next_hour_ns(3)
    symbols = await market.hours(region, start_ns)
    maker, maker_key = await market.key("maker2")
    buyer, buyer_key = await market.key("buyer2")
    await market.fund(maker, "1", dict.fromkeys(symbols, 100))
    await market.fund(buyer, "1000", {})
    await rest_asks(market, maker_key, symbols)
    async with market.client(maker_key) as m:
        assert (await m.cancel_order("ask-3-1")).accepted  # hour 3 now offers 5 only
    async with market.client(buyer_key) as buyer_client:
        books = [await buyer_client.watch_book(symbol) for symbol in symbols]
        before = ([book.levels(10) for book in books], await buyer_client.balances())
        quote = await buyer_client.strip_quote(symbols, "buy", 8)
        assert quote.reason == "insufficient_liquidity"
        assert [leg.filled for leg in quote.legs] == [8, 8, 8, 5, 8, 8]
        refused: StripResult = await buyer_client.new_strip_order(symbols, "buy", 8, "1000")
        assert refused.status == "rejected" and refused.reason == "insufficient_liquidity"
        assert refused.legs == [] and refused.strip_id is None
        await buyer_client.ping()  # a round trip: every event of the strip is applied
        after = ([book.levels(10) for book in books], await buyer_client.balances())
        assert after == before
    async with market.client(maker_key) as m:
        assert len(await m.open_orders()) == 2 * HOURS - 1
    assert market.contract.violations == []


async def test_index_values_reach_the_feed_and_http(market: Market) -> None:
    region = f"ap-{market.run}"
    await market.hours(region, next_hour_ns(4))
    connection = await connect(market.index_url)
    try:
        await index_store.migrate(connection)
        last_seq = int(await connection.fetchval(
            "SELECT coalesce(max(last_seq), 0) FROM index.values"))
        first_minute = time.time_ns() // MINUTE_NS * MINUTE_NS - 10 * MINUTE_NS

        def row(minute: int, seq: int, micro: int | None) -> IndexValue:
            return IndexValue(
                gpu=GPU, region=region, minute_ns=first_minute + minute * MINUTE_NS,
                value_micro=micro, source="trades" if micro else "last" if minute else "none",
                trade_count=4 if micro else 0, volume=32 if micro else 0,
                instrument_count=2 if micro else 0, sufficient=bool(micro),
                inputs_hash=bytes([minute]) * 32, last_seq=seq)

        async with market.client() as watcher:
            one = await watcher.index(GPU, region)
            every = await watcher.index()
            snapshot = await one.get(10)
            assert isinstance(snapshot, IndexMessage) and snapshot.values == []
            assert isinstance(await every.get(10), IndexMessage)
            async with connection.transaction():
                await index_store.write_values(connection, [row(0, last_seq + 1, None)])
            async with connection.transaction():
                await index_store.write_values(connection, [row(1, last_seq + 2, 2_437_500),
                                                            row(2, last_seq + 3, 2_450_000)])
            seen = await feed_items(one, IndexMessage, lambda m: m.values, 3)
            assert [(p.value, p.source, p.last_seq) for p in seen] == [
                (None, "none", last_seq + 1), ("2.4375", "trades", last_seq + 2),
                ("2.45", "trades", last_seq + 3)]
            assert seen[2].inputs_hash == "02" * 32 and seen[2].minute == iso(
                first_minute + 2 * MINUTE_NS)
            assert seen[2].minute_ns == first_minute + 2 * MINUTE_NS

            async def in_every() -> bool:
                return any(p.region == region and p.last_seq == last_seq + 3
                           for message in drain(every) for p in message.values)

            await eventually(in_every, message="the feed of every class has the value")
            history = await watcher.index_history(GPU, region, first_minute,
                                                  first_minute + 2 * MINUTE_NS)
            assert [(p.minute_ns, p.value) for p in history] == [
                (first_minute, None), (first_minute + MINUTE_NS, "2.4375")]
            latest = [p for p in await watcher.index_latest() if p.region == region]
            assert [(p.gpu, p.value, p.sufficient) for p in latest] == [(GPU, "2.45", True)]
        async with market.client() as late:  # a later reader's snapshot: the latest value
            snapshot = await (await late.index(GPU, region)).get(10)
            assert [p.value for p in snapshot.values] == ["2.45"]
    finally:
        await connection.close()
    assert await asyncio.to_thread(cli.main, [
        "--url", market.url, "index", "--gpu", GPU, "--region", region,
        "--from", iso(first_minute), "--to", iso(first_minute + 5 * MINUTE_NS)]) == 0
    assert market.contract.violations == []


def drain(subscription: Any) -> list[Any]:
    """Every message queued on a subscription now."""
    messages = []
    while not subscription.queue.empty():
        messages.append(subscription.queue.get_nowait())
    return messages


async def feed_items(subscription: Any, kind: type, items: Any, count: int,
                     timeout_s: float = 20.0) -> list[Any]:
    """Read messages of `kind` until they hold `count` items; return those items."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count:
        message = await subscription.get(max(0.01, deadline - time.monotonic()))
        if isinstance(message, kind):
            found += items(message)
    return found
