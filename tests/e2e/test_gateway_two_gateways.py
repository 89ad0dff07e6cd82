"""Two gateway processes serve one market: orders through either, the same books everywhere.

The engine runs in this process; the gateways are `gpux gateway` subprocesses on real Kafka
and PostgreSQL. One gateway starts only after orders have flowed, so it rebuilds the books
from the start of the events topic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import TopicSpec
from gateway.store import PostgresKeyStore, migrate
from harness.ports import free_ports, port_is_open
from matching_engine.config import EngineConfig
from matching_engine.service import EngineService
from sdk.client import ApiKey, Client
from tests.helpers import eventually
from wsapi.messages import OrdersMessage

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gateway_process(
    kafka: str, database_url: str, namespace: str, port: int, name: str, log_path: Path,
    *extra: str,
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gpux", "gateway", "--kafka", kafka, "--database-url",
             database_url, "--port", str(port), "--topic-namespace", namespace,
             "--gateway-id", name, *extra],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def listening(process: subprocess.Popen[bytes], port: int) -> bool:
    assert process.poll() is None, f"the gateway exited with {process.returncode}"
    return port_is_open(port)


async def test_two_gateway_processes_serve_one_market_consistently(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    namespace = f"gw2{uuid.uuid4().hex[:8]}."
    run = uuid.uuid4().hex[:6]
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    admin = ApiKey(*await store.add_key(f"admin2-{run}", "admin"))
    alice = ApiKey(*await store.add_key(f"alice2-{run}", "trader"))
    bob = ApiKey(*await store.add_key(f"bob2-{run}", "trader"))
    await store.close()
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    engine = EngineService(event_log, EngineConfig(
        topic_namespace=namespace, transactional_id=f"{namespace}engine",
        group_id=f"{namespace}engine", batch_interval_ms=2))
    await event_log.create_topics([TopicSpec(name=engine.config.commands_topic),
                                   TopicSpec(name=engine.config.events_topic)])
    stop = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop))
    port_a, port_b = free_ports(2)
    symbol = f"H100.two.{run}"
    try:
        with gateway_process(kafka_bootstrap, database_url, namespace, port_a, "ga",
                             tmp_path / "ga.log") as process_a:
            await eventually(lambda: listening(process_a, port_a), timeout_s=60,
                             message="gateway A listens")
            url_a = f"ws://127.0.0.1:{port_a}"
            async with Client(url_a, credentials=admin) as a:
                assert (await a.list_instrument(
                    symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                    delivery_start=time.time_ns() + 86_400 * 10**9, delivery_hours=1,
                    tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                    taker_fee_bps=0)).accepted
                for account in (f"alice2-{run}", f"bob2-{run}"):
                    assert (await a.deposit(account, "USDC", "100000")).accepted
                    assert (await a.deposit(account, symbol, 1000)).accepted
            async with Client(url_a, credentials=alice) as alice_a:
                for n in range(20):
                    side = "buy" if n % 2 else "sell"
                    price = f"{2 + (-1 if side == 'buy' else 1) * (n % 5 + 1) / 100:.2f}"
                    assert (await alice_a.new_order(symbol, side, n + 1, price,  # type: ignore[arg-type]
                                                    client_order_id=f"a{n}")).accepted
            with gateway_process(kafka_bootstrap, database_url, namespace, port_b, "gb",
                                 tmp_path / "gb.log") as process_b:
                await eventually(lambda: listening(process_b, port_b), timeout_s=60,
                                 message="gateway B listens after rebuilding")
                url_b = f"ws://127.0.0.1:{port_b}"
                async with Client(url_a, credentials=alice) as alice_a, \
                        Client(url_b, credentials=alice) as alice_b, \
                        Client(url_b, credentials=bob) as bob_b:
                    book_a = await alice_a.watch_book(symbol)
                    book_b = await bob_b.watch_book(symbol)
                    assert book_a.levels() == book_b.levels() and book_a.seq == book_b.seq
                    reports_on_b = await alice_b.subscribe("orders")
                    assert isinstance(await reports_on_b.get(5), OrdersMessage)
                    taken = await bob_b.new_order(symbol, "buy", 7, "2.03",
                                                  client_order_id="b-take")
                    assert taken.accepted
                    placed = await alice_a.new_order(symbol, "buy", 3, "1.90",
                                                     client_order_id="a-late")
                    assert placed.accepted
                    retry_on_b = await alice_b.new_order(symbol, "buy", 3, "1.90",
                                                         client_order_id="a-late")
                    assert retry_on_b.reason == "duplicate_client_order_id"

                    def same_books() -> bool:
                        return (book_a.seq == book_b.seq and book_a.levels() == book_b.levels()
                                and book_a.checksum() == book_b.checksum())

                    await eventually(same_books, timeout_s=15, message="both books agree")
                    assert any(level[0] == "1.9" for level in book_a.levels()[0])

                    async def alice_sees_her_order_on_b() -> bool:
                        reports = []
                        while not reports_on_b.queue.empty():
                            reports += reports_on_b.queue.get_nowait().orders
                        seen.update((r.client_order_id, r.event) for r in reports)
                        return ("a-late", "accepted") in seen and ("a0", "fill") in seen

                    seen: set[tuple[str, str]] = set()
                    await eventually(alice_sees_her_order_on_b, timeout_s=15,
                                     message="gateway B reports alice's order placed on A")
    finally:
        stop.set()
        await engine_task
        await event_log.close()


async def test_two_gateway_processes_share_one_port_with_reuse_port(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    """`--reuse-port`: both processes bind the same port, the kernel spreads connections
    over them, and each answers the orders of its own connections from its own reading of
    the events."""
    namespace = f"gwr{uuid.uuid4().hex[:8]}."
    run = uuid.uuid4().hex[:6]
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    admin = ApiKey(*await store.add_key(f"adminr-{run}", "admin"))
    trader = ApiKey(*await store.add_key(f"carolr-{run}", "trader"))
    await store.close()
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    engine = EngineService(event_log, EngineConfig(
        topic_namespace=namespace, transactional_id=f"{namespace}engine",
        group_id=f"{namespace}engine", batch_interval_ms=2))
    await event_log.create_topics([TopicSpec(name=engine.config.commands_topic),
                                   TopicSpec(name=engine.config.events_topic)])
    stop = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop))
    (port,) = free_ports(1)
    url = f"ws://127.0.0.1:{port}"
    symbol = f"H100.reuse.{run}"
    try:
        with gateway_process(kafka_bootstrap, database_url, namespace, port, "gr1",
                             tmp_path / "gr1.log", "--reuse-port") as first, \
                gateway_process(kafka_bootstrap, database_url, namespace, port, "gr2",
                                tmp_path / "gr2.log", "--reuse-port") as second:
            await eventually(lambda: listening(first, port) and listening(second, port),
                             timeout_s=60, message="both gateways run on one port")
            async with Client(url, credentials=admin) as a:
                assert (await a.list_instrument(
                    symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                    delivery_start=time.time_ns() + 86_400 * 10**9, delivery_hours=1,
                    tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                    taker_fee_bps=0)).accepted
                assert (await a.deposit(f"carolr-{run}", "USDC", "100000")).accepted
            clients: dict[str, Client] = {}  # gateway id -> a connection it serves
            try:
                for _ in range(64):  # the kernel hashes each connection to one of the two
                    client = Client(url, credentials=trader)
                    await client.connect()
                    assert client.hello is not None
                    if client.hello.gateway_id in clients:
                        await client.close()
                    else:
                        clients[client.hello.gateway_id] = client
                    if len(clients) == 2:
                        break
                assert sorted(clients) == ["gr1", "gr2"]
                for number, (gateway_id, client) in enumerate(sorted(clients.items())):

                    async def listed(client: Client = client) -> bool:
                        return symbol in {i.symbol for i in await client.instruments()}

                    await eventually(listed, timeout_s=15,
                                     message=f"{gateway_id} has read the listing")
                    placed = await client.new_order(symbol, "buy", 1, f"1.{number}0",
                                                    client_order_id=f"r{number}")
                    assert placed.accepted, (gateway_id, placed)
            finally:
                for client in clients.values():
                    await client.close()
    finally:
        stop.set()
        await engine_task
        await event_log.close()
