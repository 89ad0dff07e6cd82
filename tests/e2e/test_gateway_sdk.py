"""SDK -> gateway -> engine -> gateway -> SDK over real Kafka and PostgreSQL, every command
and feed, each frame checked against docs/asyncapi.yaml.

One venue (engine and gateway in this process, a fresh topic namespace, a clock ticking every
100 ms) serves the whole module; each test uses its own accounts and instruments.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
import websockets

from eventlog.kafka import KafkaConfig, KafkaLog
from gateway.config import ANONYMOUS, GatewayConfig, RateLimit
from gateway.store import PostgresKeyStore, migrate
from gateway.testing import ApiContract
from gpux.venue import Venue
from sdk.bots.market_maker import MarketMaker, MarketMakerConfig
from sdk.bots.operator_quoter import Capacity, OperatorQuoter
from sdk.client import (
    ApiKey,
    Client,
    Quote,
    RequestFailed,
    Wallet,
    amend_item,
    cancel_item,
    mass_cancel_item,
    new_order_item,
)
from tests.helpers import eventually
from wsapi.messages import (
    BalancesMessage,
    BookMessage,
    FillsMessage,
    IndexMessage,
    OrdersMessage,
    TickerMessage,
    TradesMessage,
)

DAY_NS = 86_400 * 10**9
ANONYMOUS_LIMIT = RateLimit(per_second=20, burst=40)


@dataclass
class Market:
    venue: Venue
    store: PostgresKeyStore
    event_log: KafkaLog
    namespace: str
    contract: ApiContract
    admin: ApiKey
    database_url: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def url(self) -> str:
        return self.venue.urls[0]

    @asynccontextmanager
    async def client(self, credentials: Any = None, **options: Any) -> AsyncIterator[Client]:
        async with Client(self.url, credentials=credentials, on_frame=self.contract.hook(),
                          **options) as client:
            yield client

    async def key(self, name: str, role: str = "trader") -> tuple[str, ApiKey]:
        account = f"{name}-{self.run}"
        return account, ApiKey(*await self.store.add_key(account, role))

    async def instrument(self, name: str, *, fees: tuple[int, int] = (2, 5)) -> str:
        symbol = f"H100.{name}.{self.run}"
        async with self.client(self.admin) as admin:
            result = await admin.list_instrument(
                symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=time.time_ns() + DAY_NS, delivery_hours=1, tick_size="0.01",
                max_order_quantity=1000, maker_fee_bps=fees[0], taker_fee_bps=fees[1])
            assert result.status == "accepted", result
        return symbol

    async def fund(self, account: str, usdc: str = "100000", tokens: dict[str, int] | None = None
                   ) -> None:
        async with self.client(self.admin) as admin:
            assert (await admin.deposit(account, "USDC", usdc)).accepted
            for symbol, amount in (tokens or {}).items():
                assert (await admin.deposit(account, symbol, amount)).accepted



@pytest.fixture(scope="module")
async def market(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Market]:
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    namespace = f"gws{uuid.uuid4().hex[:8]}."
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    limits = dict(GatewayConfig().role_limits)
    limits["market_maker"] = RateLimit(per_second=5000, burst=5000)
    limits[ANONYMOUS] = ANONYMOUS_LIMIT
    config = GatewayConfig(port=0, clock_interval_ms=100, heartbeat_interval_ms=300,
                           role_limits=limits, request_timeout_ms=20_000,
                           delivery_database_url=database_url)
    admin_account = f"admin-{uuid.uuid4().hex[:6]}"
    admin = ApiKey(*await store.add_key(admin_account, "admin"))
    try:
        async with Venue.running(event_log, namespace=namespace, key_store=store,
                                 gateway=config) as venue:
            yield Market(venue=venue, store=store, event_log=event_log, namespace=namespace,
                         contract=ApiContract(), admin=admin, database_url=database_url)
    finally:
        await event_log.close()
        await store.close()


async def test_admin_lists_instruments_and_credits_deposits_and_others_may_not(
    market: Market,
) -> None:
    symbol = await market.instrument("admin")
    account, key = await market.key("trader-a")
    async with market.client(market.admin) as admin:
        again = await admin.list_instrument(
            symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
            delivery_start=time.time_ns() + DAY_NS, delivery_hours=1, tick_size="0.01",
            max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0)
        assert again.status == "rejected" and again.reason == "duplicate_instrument"
        assert (await admin.deposit(account, "USDC", "10", deposit_id=f"d-{market.run}")).accepted
        duplicate = await admin.deposit(account, "USDC", "10", deposit_id=f"d-{market.run}")
        assert duplicate.status == "rejected" and duplicate.reason == "duplicate_deposit"
        bad_asset = await admin.deposit(account, "NOPE", 3)
        assert bad_asset.status == "rejected" and bad_asset.reason == "unknown_asset"
    async with market.client(key) as trader:
        specs = {spec.symbol: spec for spec in await trader.instruments()}
        assert specs[symbol].tick_size == "0.01" and specs[symbol].status == "open"
        assert (await trader.balances())["USDC"].available == "10"
        for call in (trader.deposit(account, "USDC", "5"),
                     trader.list_instrument(symbol="X", gpu="g", region="r", delivery_start=1,
                                            delivery_hours=1, tick_size="1",
                                            max_order_quantity=1, maker_fee_bps=0,
                                            taker_fee_bps=0),
                     trader.mass_quote(symbol, [])):
            with pytest.raises(RequestFailed) as refused:
                await call
            assert refused.value.code == "forbidden"


async def test_every_order_type_gets_the_engines_answer_and_execution_reports(
    market: Market,
) -> None:
    symbol = await market.instrument("types")
    buyer, buyer_key = await market.key("buyer")
    seller, seller_key = await market.key("seller")
    await market.fund(buyer)
    await market.fund(seller, tokens={symbol: 500})
    async with market.client(buyer_key) as b, market.client(seller_key) as s:
        orders = await b.subscribe("orders")
        fills = await b.subscribe("fills")
        assert isinstance(await orders.get(5), OrdersMessage)
        assert isinstance(await fills.get(5), FillsMessage)
        rest = await s.new_order(symbol, "sell", 10, "2.20", client_order_id="ask1")
        assert rest.accepted and rest.order_id
        post = await s.new_order(symbol, "sell", 5, "2.30", client_order_id="ask2",
                                 post_only=True)
        assert post.accepted
        crossing = await b.new_order(symbol, "buy", 5, "2.50", client_order_id="b-post",
                                     post_only=True)
        assert crossing.status == "rejected" and crossing.reason == "post_only_would_cross"
        ioc = await b.new_order(symbol, "buy", 4, "2.20", client_order_id="b-ioc",
                                time_in_force="ioc")
        assert ioc.accepted
        fok = await b.new_order(symbol, "buy", 100, "2.20", client_order_id="b-fok",
                                time_in_force="fok")
        assert fok.accepted  # accepted, then canceled (fok) with no trade
        market_buy = await b.new_order(symbol, "buy", 2, client_order_id="b-mkt")
        assert market_buy.accepted
        gtd = await b.new_order(symbol, "buy", 3, "1.50", client_order_id="b-gtd",
                                time_in_force="gtd", expire_at=time.time_ns() + 2 * 10**9)
        assert gtd.accepted
        resting = await b.new_order(symbol, "buy", 7, "1.90", client_order_id="b-gtc")
        retry = await b.new_order(symbol, "buy", 7, "1.90", client_order_id="b-gtc")
        assert resting.accepted
        assert retry.status == "rejected" and retry.reason == "duplicate_client_order_id"
        amended = await b.amend_order("b-gtc", new_price="1.95", new_quantity=9)
        assert amended.accepted and amended.price == "1.95" and amended.remaining_quantity == 9
        unknown = await b.amend_order("nope", new_quantity=1)
        assert unknown.status == "rejected" and unknown.reason == "unknown_order"
        canceled = await b.cancel_order("b-gtc")
        assert canceled.accepted and canceled.canceled_quantity == 9
        again = await b.cancel_order("b-gtc")
        assert again.status == "rejected" and again.reason == "unknown_order"
        broke = await b.new_order(symbol, "buy", 1000, "999", client_order_id="b-big")
        assert broke.status == "rejected" and broke.reason == "insufficient_funds"
        bad_tick = await b.new_order(symbol, "buy", 1, "1.001", client_order_id="b-tick")
        assert bad_tick.status == "rejected" and bad_tick.reason == "invalid_price"
        mass = await s.mass_cancel(symbol)
        assert mass.accepted and mass.canceled == 2  # ask1 (partly filled) and ask2
        reports: list[Any] = []

        async def expired() -> bool:
            while not orders.queue.empty():
                reports.extend(orders.queue.get_nowait().orders)
            return any(r.client_order_id == "b-gtd" and r.reason == "expired" for r in reports)

        await eventually(expired, timeout_s=10, message="the clock expired the gtd order")
        events = {(r.client_order_id, r.event, r.reason) for r in reports}
        assert ("b-ioc", "fill", None) in events and ("b-fok", "canceled", "fok") in events
        assert ("b-mkt", "fill", None) in events and ("b-gtc", "amended", None) in events
        assert ("b-big", "rejected", "insufficient_funds") in events
        assert ("b-post", "rejected", "post_only_would_cross") in events
        my_fills = [f for message in _drain(fills) for f in message.fills]
        assert [(f.client_order_id, f.quantity, f.liquidity) for f in my_fills] == [
            ("b-ioc", 4, "taker"), ("b-mkt", 2, "taker")]


async def test_batch_is_validated_whole_then_applied_in_order_and_mass_quote_replaces(
    market: Market,
) -> None:
    symbol = await market.instrument("batch")
    account, key = await market.key("mm", "market_maker")
    await market.fund(account, tokens={symbol: 1000})
    async with market.client(key) as mm:
        core = market.venue.gateways[0].core
        before = core.commands_sent  # the clock's ticks move the topic, not this
        with pytest.raises(RequestFailed) as refused:
            await mm.batch([new_order_item(symbol, "buy", 1, "1.00", client_order_id="x1"),
                            new_order_item(symbol, "buy", 1, "1.0000001", client_order_id="x2")])
        assert refused.value.code == "invalid_request"
        assert refused.value.field == "$.orders[1].price"
        assert core.commands_sent == before, "nothing of a refused batch was sent"
        results = await mm.batch([
            new_order_item(symbol, "buy", 5, "1.00", client_order_id="q1"),
            new_order_item(symbol, "sell", 5, "3.00", client_order_id="q2"),
            amend_item("q1", new_quantity=8),
            cancel_item("q2"),
            cancel_item("q2"),
            mass_cancel_item(symbol),
        ])
        assert [(r.op, r.status) for r in results] == [
            ("new_order", "accepted"), ("new_order", "accepted"), ("amend_order", "accepted"),
            ("cancel_order", "accepted"), ("cancel_order", "rejected"),
            ("mass_cancel", "accepted")]
        assert results[5].canceled == 1
        book = await mm.watch_book(symbol)
        first = await mm.mass_quote(symbol, [Quote("b1", "buy", "1.90", 10),
                                             Quote("a1", "sell", "2.10", 10)])
        assert first.canceled == 0 and all(r.accepted for r in first.results)
        second = await mm.mass_quote(symbol, [Quote("b1", "buy", "1.95", 12),
                                              Quote("a1", "sell", "2.05", 12, post_only=True)])
        assert second.canceled == 2 and all(r.accepted for r in second.results)
        await eventually(lambda: book.levels() == ([("1.95", 12)], [("2.05", 12)]),
                         timeout_s=10, message="the book shows only the second quotes")
        assert [o.client_order_id for o in await mm.open_orders(symbol)] == ["b1", "a1"]


async def test_public_and_private_feeds_follow_a_trade(market: Market) -> None:
    symbol = await market.instrument("feeds")
    maker, maker_key = await market.key("maker")
    taker, taker_key = await market.key("taker")
    await market.fund(maker, tokens={symbol: 100})
    await market.fund(taker)
    async with market.client() as watcher, market.client(maker_key) as m, \
            market.client(taker_key) as t:
        feeds = {channel: await watcher.subscribe(channel, symbol)  # type: ignore[arg-type]
                 for channel in ("trades", "ticker", "candles", "book")}
        balances = await t.subscribe("balances")
        assert isinstance(await balances.get(5), BalancesMessage)
        assert (await m.new_order(symbol, "sell", 10, "2.50", client_order_id="s1")).accepted
        assert (await t.new_order(symbol, "buy", 4, "2.50", client_order_id="t1")).accepted

        async def traded() -> bool:
            return any(isinstance(m, TradesMessage) and m.kind == "update"
                       for m in _peek(feeds["trades"]))

        await eventually(traded, timeout_s=10, message="a trade on the trades feed")
        trades = [tr for msg in _drain(feeds["trades"]) for tr in msg.trades]
        assert [(tr.price, tr.quantity, tr.aggressor_side) for tr in trades] == [
            ("2.5", 4, "buy")]
        await eventually(lambda: any(isinstance(x, TickerMessage) and x.last == "2.5"
                                     for x in _peek(feeds["ticker"])), timeout_s=10)
        ticker = [x for x in _drain(feeds["ticker"]) if x.last == "2.5"][-1]
        assert ticker.ask == "2.5" and ticker.ask_quantity == 6 and ticker.volume_24h == 4
        candles = [c for msg in _drain(feeds["candles"]) for c in msg.candles]
        assert candles[-1].volume == 4 and candles[-1].close == "2.5"
        books = _drain(feeds["book"])
        assert isinstance(books[0], BookMessage) and books[0].kind == "snapshot"
        await eventually(lambda: any(isinstance(b, BalancesMessage) and b.kind == "update"
                                     and symbol in b.balances for b in _peek(balances)),
                         timeout_s=10)
        assert (await t.balances())[symbol].available == 4
        await watcher.unsubscribe(feeds["trades"])
        assert (await t.new_order(symbol, "buy", 1, "2.50", client_order_id="t2")).accepted
        await eventually(lambda: any(isinstance(x, TickerMessage) and x.volume_24h == 5
                                     for x in _peek(feeds["ticker"])), timeout_s=10)
        assert _drain(feeds["trades"]) == [], "no trades after unsubscribing"
        await eventually(lambda: watcher.last_heartbeat is not None, timeout_s=5,
                         message="a heartbeat")


async def test_dead_man_switch_and_cancel_on_disconnect_cancel_orders(market: Market) -> None:
    symbol = await market.instrument("dms")
    account, key = await market.key("dms")
    await market.fund(account)
    async with market.client(key) as c:
        assert (await c.new_order(symbol, "buy", 1, "1.00", client_order_id="d1")).accepted
        armed = await c.cancel_all_after(1)
        assert armed == {"armed": True, "timeout_s": 1}

        async def all_canceled() -> bool:
            return not await c.open_orders(symbol)

        await eventually(all_canceled, timeout_s=10, message="the dead-man's switch fired")
        assert any(n.code == "dead_man_switch" for n in c.notices)
        assert (await c.new_order(symbol, "buy", 1, "1.00", client_order_id="d2")).accepted
        assert await c.cancel_all_after(0) == {"armed": False}
    for scope, survivors in (("session", ["d2"]), ("account", [])):
        async with market.client(key, cancel_on_disconnect=scope, reconnect=False) as c:
            assert c.login is not None and c.login.cancel_on_disconnect == scope
            assert (await c.new_order(symbol, "buy", 1, "1.00",
                                      client_order_id=f"cod-{scope}")).accepted
        async with market.client(key) as c:

            async def gone(cid: str = f"cod-{scope}") -> bool:
                return cid not in {o.client_order_id for o in await c.open_orders(symbol)}

            await eventually(gone, timeout_s=10, message=f"cancel on disconnect ({scope})")
            assert [o.client_order_id for o in await c.open_orders(symbol)] == survivors


async def test_logins_refuse_replays_stale_timestamps_bad_signatures_and_wrong_roles(
    market: Market,
) -> None:
    account, key = await market.key("auth")
    async with websockets.connect(market.url) as ws:
        hello = _loads(await ws.recv())
        fields = key.login_fields(hello["nonce"], time.time_ns() // 1_000_000)
        login = {**fields, "req_id": 1}
        await ws.send(_dumps(login))
        assert (await _reply(ws))["status"] == "ok"
    async with websockets.connect(market.url) as ws:
        await ws.recv()
        await ws.send(_dumps(login))  # the same signed frame on a new connection
        reply = await _reply(ws)
        assert reply["status"] == "error" and reply["error"]["code"] == "auth_failed"
    async with websockets.connect(market.url) as ws:
        hello = _loads(await ws.recv())
        stale = {**key.login_fields(hello["nonce"], time.time_ns() // 1_000_000 - 120_000),
                 "req_id": 2}
        await ws.send(_dumps(stale))
        reply = await _reply(ws)
        assert reply["error"]["code"] == "auth_failed" and "timestamp" in reply["error"]["message"]
        fresh = {**key.login_fields(hello["nonce"], time.time_ns() // 1_000_000), "req_id": 3}
        await ws.send(_dumps(fresh))  # the nonce of this connection was spent by the stale try
        assert (await _reply(ws))["error"]["code"] == "auth_failed"
    _, other = await market.key("other")
    async with websockets.connect(market.url) as ws:
        hello = _loads(await ws.recv())
        forged = {**other.login_fields(hello["nonce"], time.time_ns() // 1_000_000),
                  "key_id": key.key_id, "req_id": 4}
        await ws.send(_dumps(forged))
        assert (await _reply(ws))["error"]["code"] == "auth_failed"
    async with market.client() as anonymous:
        with pytest.raises(RequestFailed) as refused:
            await anonymous.new_order("X", "buy", 1, "1")
        assert refused.value.code == "unauthenticated"
    wallet = Wallet("0x" + "4c" * 32)
    async with market.client(wallet) as w:
        assert w.login is not None and w.login.account == wallet.address
        assert w.login.role == "trader"
        assert w.login.account.startswith("0x") and w.login.account != w.login.account.lower()
    async with websockets.connect(market.url) as ws:
        hello = _loads(await ws.recv())
        signed = wallet.login_fields(hello["nonce"], time.time_ns() // 1_000_000)
        other_wallet = Wallet("0x" + "5d" * 32)
        await ws.send(_dumps({**signed, "address": other_wallet.address, "req_id": 5}))
        assert (await _reply(ws))["error"]["code"] == "auth_failed"


async def test_rate_limits_refuse_with_retry_after_and_every_reply_shows_usage(
    market: Market,
) -> None:
    # From another loopback address: the anonymous bucket is per IP.
    async with market.client(local_address=("127.0.0.2", 0)) as anonymous:
        started = time.monotonic()
        replies = await asyncio.gather(*(anonymous.request("ping") for _ in range(5)))
        refill = math.ceil(ANONYMOUS_LIMIT.per_second * (time.monotonic() - started))
        usage = [reply.rate_limit.remaining for reply in replies if reply.rate_limit]
        assert len(usage) == 5
        # Each ping is charged a token; the bucket refills only as fast as time passes.
        assert all(later <= earlier - 1 + refill for earlier, later in pairwise(usage)), (
            usage, refill)
        assert usage[-1] <= usage[0] - (len(usage) - 1) + refill, (usage, refill)
        # Sent at once, so the bucket has no time to refill between them.
        outcomes = await asyncio.gather(*(anonymous.request("time") for _ in range(100)),
                                        return_exceptions=True)
        refused = next((error for error in outcomes if isinstance(error, RequestFailed)), None)
        assert refused is not None and refused.code == "rate_limited"
        assert refused.retry_after_ms is not None and refused.retry_after_ms > 0
        await asyncio.sleep(refused.retry_after_ms / 1000)
        assert (await anonymous.request("time")).status == "ok"


async def test_local_book_equals_the_engines_after_thousands_of_random_orders(
    market: Market,
) -> None:
    symbol = await market.instrument("random", fees=(0, 0))
    makers = [await market.key(f"rnd{i}", "market_maker") for i in range(3)]
    for account, _ in makers:
        await market.fund(account, usdc="100000000", tokens={symbol: 1_000_000})
    rng = random.Random(11)
    async with market.client() as watcher:
        book = await watcher.watch_book(symbol)
        clients = [Client(market.url, credentials=key, on_frame=market.contract.hook())
                   for _, key in makers]
        for client in clients:
            await client.connect()
        try:
            live: list[tuple[int, str]] = []
            sent = 0

            async def one(n: int) -> None:
                index = rng.randrange(len(clients))
                client = clients[index]
                roll = rng.random()
                if roll < 0.2 and live:
                    owner, cid = live.pop(rng.randrange(len(live)))
                    await clients[owner].cancel_order(cid)
                elif roll < 0.3 and live:
                    owner, cid = live[rng.randrange(len(live))]
                    await clients[owner].amend_order(cid, new_quantity=rng.randint(1, 30))
                else:
                    side = rng.choice(("buy", "sell"))
                    ticks = 1000 + (rng.randint(-15, 5) if side == "buy" else rng.randint(-5, 15))
                    cid = f"r{n}"
                    result = await client.new_order(symbol, side, rng.randint(1, 20),  # type: ignore[arg-type]
                                                    f"{ticks / 100:.2f}", client_order_id=cid)
                    if result.accepted:
                        live.append((index, cid))

            for start in range(0, 2000, 50):
                await asyncio.gather(*(one(n) for n in range(start, start + 50)))
                sent += 50
        finally:
            for client in clients:
                await client.close()
        engine = market.venue.engine_state
        assert engine is not None
        engine_book = engine.instruments[symbol]
        expected_bids = _engine_levels(engine_book.bids)
        expected_asks = _engine_levels(engine_book.asks)
        await eventually(lambda: book.levels() == (expected_bids, expected_asks), timeout_s=15,
                         message="the local book equals the engine's")
        gateway_book = market.venue.gateways[0].core.projection.instruments[symbol].book
        assert book.checksum() == gateway_book.checksum()
        assert book.updates_applied >= 30 and book.resyncs == 0  # every update checksummed
        assert sent == 2000


async def test_reconnect_logs_in_again_and_resubscribes_the_book(market: Market) -> None:
    symbol = await market.instrument("reconnect")
    account, key = await market.key("reconnect")
    await market.fund(account)
    async with market.client(key) as c:
        book = await c.watch_book(symbol)
        gateway = market.venue.gateways[0]
        for connection in list(gateway.transport.connections.values()):
            connection.transport.abort()
        await eventually(lambda: c.reconnects == 1 and c.connected, timeout_s=10,
                         message="the client reconnected")
        assert (await c.new_order(symbol, "buy", 2, "1.23", client_order_id="after")).accepted
        await eventually(lambda: book.levels() == ([("1.23", 2)], []), timeout_s=10,
                         message="the resubscribed book shows the new order")
        book.bids.clear()  # corrupt the local copy: the next update's checksum disagrees
        assert (await c.new_order(symbol, "buy", 1, "1.20", client_order_id="next")).accepted
        await eventually(lambda: book.resyncs == 1 and book.synced
                         and book.levels() == ([("1.23", 2), ("1.2", 1)], []), timeout_s=10,
                         message="the client resynchronised the book from a snapshot")


async def test_market_maker_bot_quotes_both_sides_and_skews_after_a_fill(market: Market) -> None:
    symbol = await market.instrument("mmbot", fees=(0, 0))
    mm_account, mm_key = await market.key("mmbot", "market_maker")
    taker, taker_key = await market.key("mmtaker")
    await market.fund(mm_account, tokens={symbol: 100})
    await market.fund(taker)
    config = MarketMakerConfig(instrument=symbol, reference_price="2.00", spread_ticks=4,
                               levels=2, quantity_per_level=5, target_inventory=100,
                               skew_ticks_per_unit=0.5, refresh_interval_s=0.1)
    stop = asyncio.Event()
    async with market.client(mm_key) as mm_client, market.client(taker_key) as t:
        bot = MarketMaker(mm_client, config)
        running = asyncio.create_task(bot.run(stop))
        book = await t.watch_book(symbol)
        await eventually(lambda: book.levels() == ([("1.98", 5), ("1.97", 5)],
                                                   [("2.02", 5), ("2.03", 5)]),
                         timeout_s=10, message="the bot quotes around 2.00")
        assert (await t.new_order(symbol, "buy", 4, "2.02", client_order_id="lift")).accepted
        # 4 tokens sold: inventory -4, so the quotes move up 2 ticks
        await eventually(lambda: book.levels() == ([("2", 5), ("1.99", 5)],
                                                   [("2.04", 5), ("2.05", 5)]),
                         timeout_s=10, message="the bot skews its quotes up")
        stop.set()
        await running
        await eventually(lambda: book.levels() == ([], []), timeout_s=10,
                         message="the bot pulled its quotes on stop")


async def test_operator_quoter_keeps_asks_for_the_coming_hours(market: Market) -> None:
    run = market.run
    gpu = f"TESTGPU-{run}"
    now = time.time_ns()
    hour = 3600 * 10**9
    async with market.client(market.admin) as admin:
        for offset in (1, 2, 30):
            assert (await admin.list_instrument(
                symbol=f"{gpu}.h{offset}", gpu=gpu, region="eu-west",
                delivery_start=now + offset * hour, delivery_hours=1, tick_size="0.01",
                max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0)).accepted
    account, key = await market.key("operator", "operator")
    await market.fund(account, tokens={f"{gpu}.h1": 3, f"{gpu}.h2": 50, f"{gpu}.h30": 50})
    capacity = Capacity.from_yaml(
        f"region: eu-west\nhours_ahead: 12\nclasses:\n  {gpu}: {{gpus: 8, price: '2.40'}}\n")
    async with market.client(key) as client:
        quoter = OperatorQuoter(client, capacity)
        plan = await quoter.refresh(time.time_ns())
        assert {symbol: q.quantity if q else 0 for symbol, q in plan.items()} == {
            f"{gpu}.h1": 3, f"{gpu}.h2": 8}
        resting = {(o.instrument, o.price, o.remaining_quantity)
                   for o in await client.open_orders()}
        assert resting == {(f"{gpu}.h1", "2.4", 3), (f"{gpu}.h2", "2.4", 8)}
        sent = quoter.mass_quotes_sent
        await quoter.refresh(time.time_ns())
        assert quoter.mass_quotes_sent == sent, "nothing changed, nothing sent"


async def test_delivery_from_issue_through_close_to_report_as_each_party_sees_it(
    market: Market,
) -> None:
    """An operator issues 8 GPU-hours (bond 3 USDC each) and sells 5 to a trader; at close
    its own 3 release their bond and the trader's 5 are assigned; the delivery service
    reports 95% delivered: the trader is paid 0.75 USDC, the operator gets 14.25 back."""
    run = market.run
    symbol, later = f"H100.deliv.{run}", f"H100.deliv-later.{run}"
    plain = await market.instrument("deliv-plain")
    operator, operator_key = await market.key("deliv-op", "operator")
    trader, trader_key = await market.key("deliv-trader")
    delivery_key = await _cli_delivery_key(market.database_url)
    await market.fund(operator, usdc="1000")
    await market.fund(trader, usdc="1000")
    issue_id = f"op-{run}-n17"
    async with market.client(operator_key) as op, market.client(trader_key) as t, \
            market.client(delivery_key) as delivery, market.client(market.admin) as admin:
        op_feed, t_feed = await op.subscribe("deliveries"), await t.subscribe("deliveries")
        assert (await op_feed.get(5)).kind == "snapshot"
        assert (await t_feed.get(5)).kind == "snapshot"
        # Listed last, so the 8 s to its close are for issuing and trading only.
        start = time.time_ns() + 8 * 10**9  # the venue's clock closes it then
        for listed, delivery_start in ((symbol, start), (later, start + DAY_NS)):
            assert (await admin.list_instrument(
                symbol=listed, gpu="H100-SXM-80GB", region="eu-west",
                delivery_start=delivery_start, delivery_hours=1, tick_size="0.01",
                max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0,
                bond_per_gpu_hour="3")).accepted
        specs = {spec.symbol: spec for spec in await t.instruments()}
        assert (specs[symbol].bond_per_gpu_hour, specs[plain].bond_per_gpu_hour) == ("3", None)

        issued = await op.issue_capacity(symbol, "n-17", 8, issue_id=issue_id)
        assert (issued.status, issued.issue_id, issued.quantity, issued.bond) == (
            "accepted", issue_id, 8, "24")
        again = await op.issue_capacity(symbol, "n-17", 8, issue_id=issue_id)
        assert (again.status, again.reason) == ("rejected", "duplicate_issue")
        for refused_call in (t.issue_capacity(symbol, "n-1", 1),
                             t.delivery_report(issue_id, trader, 1_000_000),
                             admin.delivery_report(issue_id, trader, 1_000_000),
                             delivery.new_order(symbol, "buy", 1, "2.00")):
            with pytest.raises(RequestFailed) as refused:
                await refused_call
            assert refused.value.code == "forbidden"
        assert (await op.balances())["USDC"].available == "976"
        assert (await op.new_order(symbol, "sell", 5, "2.00", client_order_id="d-ask")).accepted
        assert (await t.new_order(symbol, "buy", 5, "2.00", client_order_id="d-bid")).accepted
        assert await asyncio.to_thread(_cli, market.url, operator_key, "issue", "--instrument",
                                       later, "--node", "n-18", "--quantity", "2") == 0

        trader_events = await _delivery_events(t_feed, "delivery_assigned")
        assert [(e.event, e.issue_id, e.issuer, e.holder, e.quantity) for e in trader_events] == [
            ("delivery_assigned", issue_id, operator, trader, 5)]
        early = await delivery.delivery_report(issue_id, operator, 1_000_000)
        assert (early.status, early.reason) == ("rejected", "not_assigned")
        report = await delivery.delivery_report(issue_id, trader, 950_000, evidence="9f2c41d0")
        assert (report.status, report.quantity, report.compensation, report.evidence) == (
            "accepted", 5, "0.75", "9f2c41d0")
        twice = await delivery.delivery_report(issue_id, trader, 950_000)
        assert (twice.status, twice.reason) == ("rejected", "already_reported")

        op_events = await _delivery_events(op_feed, "delivery_settled", "bond_released")
        assert [(e.event, e.quantity, e.bond or e.amount or e.compensation or e.reason)
                for e in op_events if e.issue_id == issue_id] == [
            ("capacity_issued", 8, "24"), ("issue_rejected", None, "duplicate_issue"),
            ("bond_released", 3, "9"),
            ("delivery_assigned", 5, None), ("delivery_settled", 5, "0.75"),
            ("bond_released", 5, "14.25")]
        assert [e.event for e in await _delivery_events(t_feed, "delivery_settled")] == [
            "delivery_settled"]
        assert {asset: b.available for asset, b in (await op.balances()).items()} == {
            "USDC": "1003.25", later: 2}  # 1000 - 24 - 6 bonded later + 10 + 9 + 14.25
        assert {asset: b.available for asset, b in (await t.balances()).items()} == {
            "USDC": "990.75"}

        mine = await op.deliveries()
        assert [(i.issue_id, i.quantity, i.bonded_quantity, i.bond, i.status)
                for i in mine.issues] == [(issue_id, 8, 0, "0", "settled"),
                                          (mine.issues[1].issue_id, 2, 2, "6", "open")]
        theirs = await t.deliveries()
        assert theirs.issues == []
        assert mine.assignments == theirs.assignments
        [assignment] = theirs.assignments
        assert (assignment.delivery_start, assignment.node_id, assignment.quantity,
                assignment.status, assignment.delivered_ppm, assignment.compensation) == (
            start, "n-17", 5, "settled", 950_000, "0.75")
    assert await asyncio.to_thread(_cli, market.url, operator_key, "deliveries") == 0


async def _cli_delivery_key(database_url: str) -> ApiKey:
    """Make the delivery service's credential as the venue's operators do, with
    `gpux gateway add-key --account gpux.delivery --role delivery`."""
    import contextlib
    import io

    from gateway.cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = await asyncio.to_thread(main, [
            "add-key", "--database-url", database_url, "--account", "gpux.delivery",
            "--role", "delivery"])
    assert code == 0, output.getvalue()
    fields = dict(line.split(":", 1) for line in output.getvalue().splitlines() if ":" in line)
    return ApiKey(fields["key_id"].strip(), fields["private_key"].strip())


def _cli(url: str, key: ApiKey, *command: str) -> int:
    """Run `gpux trade` with `key` (in a thread: it runs its own event loop)."""
    from sdk.cli import main

    return main(["--url", url, "--key", f"{key.key_id}:{key.private_key}", *command])


async def _delivery_events(feed: Any, *awaited: str) -> list[Any]:
    """Read a deliveries feed until each event kind in `awaited` came; return its events."""
    seen: list[Any] = []

    async def came() -> bool:
        while not feed.queue.empty():
            seen.extend(feed.queue.get_nowait().events)
        return all(any(e.event == kind for e in seen) for kind in awaited)

    await eventually(came, timeout_s=30, message=f"{', '.join(awaited)} on the deliveries feed")
    return seen


async def test_a_strip_is_quoted_then_traded_and_the_index_feed_answers(market: Market) -> None:
    """Strips and the index in this module's traffic (tests/e2e/test_gateway_strips.py
    tells their whole story)."""
    start_ns = (time.time_ns() // 3_600_000_000_000 + 48) * 3_600_000_000_000
    symbols = [f"H100.strip{hour}.{market.run}" for hour in range(2)]
    async with market.client(market.admin) as admin:
        for hour, symbol in enumerate(symbols):
            assert (await admin.list_instrument(
                symbol=symbol, gpu="H100-SXM-80GB", region=f"strip-{market.run}",
                delivery_start=start_ns + hour * 3_600_000_000_000, delivery_hours=1,
                tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                taker_fee_bps=0)).accepted
    maker, maker_key = await market.key("strip-maker")
    buyer, buyer_key = await market.key("strip-buyer")
    await market.fund(maker, tokens=dict.fromkeys(symbols, 10))
    await market.fund(buyer)
    async with market.client(maker_key) as m, market.client(buyer_key) as b:
        for symbol in symbols:
            assert (await m.new_order(symbol, "sell", 10, "2.00")).accepted
        quote = await b.strip_quote(symbols, "buy", 4, "16")
        assert quote.executable and quote.total == "16"
        strip = await b.new_strip_order(symbols, "buy", 4, "16")
        assert strip.accepted and strip.notional == "16"
        index = await b.index("H100-SXM-80GB", f"strip-{market.run}")
        snapshot = await index.get(10)
        assert isinstance(snapshot, IndexMessage) and snapshot.values == []


async def test_ssh_keys_access_and_the_quality_record_are_answered(market: Market) -> None:
    """The delivery desk and the quality record in this module's traffic
    (tests/e2e/test_gateway_delivery_desk.py tells their whole story)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from delivery.ca import public_key_line_of
    from wsapi.messages import QualityMessage

    _, holder_key = await market.key("access-holder")
    key_line = public_key_line_of(ed25519.Ed25519PrivateKey.generate())
    async with market.client(holder_key) as holder, market.client() as anyone:
        assert (await holder.register_ssh_key(key_line)).added
        assert await holder.delivery_access() == []
        with pytest.raises(RequestFailed) as refused:
            await holder.register_node(
                f"n-{market.run}", gpu="H100-SXM-80GB", region="eu-west", gpu_count=1,
                gpu_memory_mib=81_559, host="127.0.0.1", port=22, login="gpux",
                host_key=key_line)
        assert refused.value.code == "forbidden", "a trader registers no node"
        feed = await anyone.quality_feed()
        assert isinstance(await feed.get(10), QualityMessage)
        assert isinstance(await anyone.quality(f"nobody-{market.run}"), list)


async def test_every_documented_message_was_seen_and_all_traffic_matched_the_schema(
    market: Market,
) -> None:
    assert market.contract.violations == []
    missing = set(market.contract.unseen())
    assert missing == set(), f"never exercised: {sorted(missing)}"


def _engine_levels(side: Any) -> list[tuple[str, int]]:
    from protocol import format_micro

    levels: dict[int, int] = {}
    order_of: list[int] = []
    for order in side.orders_in_priority():
        if order.price not in levels:
            order_of.append(order.price)
            levels[order.price] = 0
        levels[order.price] += order.quantity - order.filled
    return [(format_micro(price), levels[price]) for price in order_of]


def _drain(subscription: Any) -> list[Any]:
    items = []
    while not subscription.queue.empty():
        items.append(subscription.queue.get_nowait())
    return items


def _peek(subscription: Any) -> list[Any]:
    return list(subscription.queue._queue)


async def _reply(ws: Any) -> dict[str, Any]:
    """Return the next reply on a raw connection, skipping heartbeats."""
    while True:
        message = _loads(await ws.recv())
        if message["type"] == "reply":
            return message


def _loads(text: str | bytes) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(text)
    return value


def _dumps(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value)
