"""The price index end to end with the real index service: a strip trades two hours of a class
through the gateway, the index service (`index.service`) computes the class's value from the
events at the minute boundary after them and writes it to its store, and the gateway's `index`
feed, `GET /index` and `/index/latest` carry it, on real Kafka and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from eventlog.kafka import KafkaConfig, KafkaLog
from gateway.config import GatewayConfig
from gateway.store import PostgresKeyStore, migrate
from gateway.testing import ApiContract
from gpux.venue import Venue
from index.service import IndexService, IndexServiceConfig
from index.value import MINUTE_NS
from protocol import Deposit
from runtime.postgres import create_database, drop_database
from sdk.client import ApiKey, Client
from wsapi.messages import IndexMessage, IndexPoint

HOUR_NS = 3600 * 10**9
GPU = "H100-SXM-80GB"
VALUE_TIMEOUT_S = 30.0


@pytest.fixture
async def index_url(database_url: str) -> AsyncIterator[str]:
    """A database of the test's own: the store's `last_seq` counts one venue's events."""
    name = f"gwindex_{uuid.uuid4().hex[:12]}"
    yield await create_database(database_url, name)
    await drop_database(database_url, name)


async def test_the_services_value_of_a_strips_trades_reaches_the_feed_and_http(
    kafka_bootstrap: str, database_url: str, index_url: str,
) -> None:
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    namespace = f"gwindex{uuid.uuid4().hex[:8]}."
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    contract = ApiContract()
    run = uuid.uuid4().hex[:6]
    region = f"ix-{run}"
    config = GatewayConfig(port=0, clock_interval_ms=100, request_timeout_ms=20_000,
                           index_database_url=index_url, index_poll_interval_ms=100)
    admin = ApiKey(*await store.add_key(f"admin-{run}", "admin"))
    maker = ApiKey(*await store.add_key(f"maker-{run}", "trader"))
    buyer = ApiKey(*await store.add_key(f"buyer-{run}", "trader"))
    stop = asyncio.Event()
    try:
        async with Venue.running(event_log, namespace=namespace, key_store=store,
                                 gateway=config) as venue:
            service = IndexService(event_log, index_url,
                                   IndexServiceConfig(topic_namespace=namespace))
            task = asyncio.create_task(service.run(stop))
            try:
                url = venue.urls[0]
                # Hours starting within the next 24 hours: the index's horizon.
                start_ns = time.time_ns() // HOUR_NS * HOUR_NS + 2 * HOUR_NS
                symbols = [f"H100.{region}.{hour}" for hour in range(2)]
                async with Client(url, credentials=admin, on_frame=contract.hook()) as a:
                    for hour, symbol in enumerate(symbols):
                        assert (await a.list_instrument(
                            symbol=symbol, gpu=GPU, region=region,
                            delivery_start=start_ns + hour * HOUR_NS, delivery_hours=1,
                            tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                            taker_fee_bps=0)).accepted
                        assert (await a.deposit(f"maker-{run}", symbol, 10)).accepted
                    assert (await a.deposit(f"buyer-{run}", "USDC", "100")).accepted
                async with Client(url, credentials=maker, on_frame=contract.hook()) as m, \
                        Client(url, credentials=buyer, on_frame=contract.hook()) as b:
                    feed = await b.index(GPU, region)
                    assert isinstance(await feed.get(10), IndexMessage)
                    for symbol, price in zip(symbols, ("2.40", "2.50"), strict=True):
                        assert (await m.new_order(symbol, "sell", 10, price)).accepted
                    sent_ns = time.time_ns()
                    strip = await b.new_strip_order(symbols, "buy", 3, "20")
                    assert strip.accepted and strip.notional == "14.7"
                    # A value comes out with the first event past its minute boundary: rather
                    # than wait for the next minute, an admin command stamped at it (the
                    # engine's time is the latest stamp it has seen) makes that event.
                    boundary_ns = (time.time_ns() // MINUTE_NS + 1) * MINUTE_NS
                    await venue.send_commands([Deposit(ts=boundary_ns, account=f"buyer-{run}",
                                                       asset="USDC", amount="1")])
                    value = await first_from_trades(feed)
                    # The trades' minute ends at boundary_ns, or a minute earlier when a
                    # minute turned while the strip was answered (the clock's tick ends it).
                    trades_boundary_ns = (sent_ns // MINUTE_NS + 1) * MINUTE_NS
                    assert value.minute_ns in {trades_boundary_ns, boundary_ns}
                    # floor(sum(price x quantity) / sum(quantity)): (3 x 2.40 + 3 x 2.50) / 6
                    assert (value.value, value.trade_count, value.volume,
                            value.instrument_count) == ("2.45", 2, 6, 2)
                    assert len(value.inputs_hash) == 64
                    history = await b.index_history(GPU, region, value.minute_ns - HOUR_NS,
                                                    value.minute_ns + 60 * 10**9)
                    assert value in history
                    latest = [p for p in await b.index_latest() if p.region == region]
                    assert len(latest) == 1 and latest[0].minute_ns >= value.minute_ns
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)
    finally:
        await event_log.close()
        await store.close()
    assert contract.violations == []


async def first_from_trades(feed: object) -> IndexPoint:
    """Read the index feed until a value computed from trades comes."""
    deadline = time.monotonic() + VALUE_TIMEOUT_S
    while True:
        message = await feed.get(max(0.01, deadline - time.monotonic()))  # type: ignore[attr-defined]
        for point in message.values:
            if point.source == "trades":
                return point  # type: ignore[no-any-return]
