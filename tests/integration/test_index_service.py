"""The index service on real Kafka and PostgreSQL: `gpux index run` follows the events the
engine service writes while commands still stream, is killed with SIGKILL twice and starts
again, and ends with exactly the rows the calculator makes of the whole log, which
`gpux index verify` recomputes from the topic (and from a JSON Lines file of it) without a
difference; a row changed behind the service's back is a difference."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from eventlog.kafka import KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, TopicSpec
from index import store
from index.calculator import IndexCalculator
from index.cli import format_minute
from index.value import MINUTE_NS, IndexValue
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.service import EngineService
from protocol import AnyCommand, CancelOrder, Deposit, ListInstrument, NewOrder, encode
from protocol.commands import NewStripOrder, Side
from runtime.postgres import connect, create_database, drop_database
from tests.helpers import eventually, feed, kill_if_running, read_topic, stop_cleanly

ROOT = Path(__file__).resolve().parents[2]
HOUR_NS = 60 * MINUTE_NS
T0 = 29_000_000 * MINUTE_NS + 5 * 10**9
CLASSES = {"H100-SXM-80GB": 215, "A100-SXM-80GB": 130}  # mid in cents
ACCOUNTS = ("alice", "bob", "carol", "dave")
STEPS = 1_200
STEP_NS = 7_500_000_000  # 1,200 steps of 7.5 s: two and a half hours
KILLS = 2


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    name = f"index_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    yield url
    await drop_database(database_url, name)


def listings(ts: int, hours: range) -> list[AnyCommand]:
    """List delivery hours (counted from T0's hour) of both classes; fund every account."""
    commands: list[AnyCommand] = []
    for hour in hours:
        for gpu in CLASSES:
            symbol = f"{gpu}.{hour}"
            commands.append(ListInstrument(
                ts=ts, symbol=symbol, gpu=gpu, region="eu-west",
                delivery_start=T0 // HOUR_NS * HOUR_NS + hour * HOUR_NS, delivery_hours=1,
                tick_size="0.01", max_order_quantity=1_000, maker_fee_bps=2, taker_fee_bps=5))
            commands += [Deposit(ts=ts, account=account, asset=symbol, amount=100_000)
                         for account in ACCOUNTS]
    return commands


def order_flow(seed: int) -> list[AnyCommand]:
    """Resting orders, crossing ioc and market orders, cancels and strips over 2.5 hours,
    with one more delivery hour listed after the first hour."""
    rng = random.Random(seed)
    commands = listings(T0, range(1, 5))
    commands += [Deposit(ts=T0, account=account, asset="USDC", amount="10000000")
                 for account in ACCOUNTS]
    for step in range(STEPS):
        ts = T0 + step * STEP_NS
        if step == STEPS // 2:
            commands += listings(ts, range(5, 6))
        gpu = rng.choice(list(CLASSES))
        hour = rng.randint(1, 5)
        account = rng.choice(ACCOUNTS)
        side: Side = rng.choice(("buy", "sell"))
        roll = rng.random()
        symbol = f"{gpu}.{hour}"
        if roll < 0.55:
            offset = rng.randint(1, 4)
            cents = CLASSES[gpu] - offset if side == "buy" else CLASSES[gpu] + offset
            commands.append(NewOrder(ts=ts, account=account, client_order_id=f"o{step}",
                                     instrument=symbol, side=side, order_type="limit",
                                     price=f"{cents / 100:.2f}", quantity=rng.randint(1, 8)))
        elif roll < 0.8:
            commands.append(NewOrder(ts=ts, account=account, client_order_id=f"o{step}",
                                     instrument=symbol, side=side, order_type="market",
                                     quantity=rng.randint(1, 5)))
        elif roll < 0.95:
            commands.append(CancelOrder(ts=ts, account=account,
                                        client_order_id=f"o{rng.randrange(step + 1)}"))
        else:
            first = rng.randint(1, 4)
            commands.append(NewStripOrder(
                ts=ts, account=account, client_order_id=f"s{step}", side=side,
                instruments=[f"{gpu}.{first}", f"{gpu}.{first + 1}"], quantity=1,
                limit_total="100" if side == "buy" else "0.01"))
    return commands


def start_index(bootstrap: str, namespace: str, database_url: str, log_path: Path
                ) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "index", "run", "--kafka", bootstrap,
             "--database-url", database_url, "--topic-namespace", namespace,
             "--batch-size-max", "200"],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)


async def stored_rows(database_url: str) -> list[IndexValue]:
    connection = await connect(database_url)
    try:
        rows = await connection.fetch("SELECT DISTINCT gpu, region FROM index.values")
        return [value for row in sorted(rows, key=tuple) for value in await store.values(
            connection, row["gpu"], row["region"], 0, 2**62, store.LIMIT_MAX)]
    finally:
        await connection.close()


async def row_count(database_url: str) -> int:
    connection = await connect(database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'index' "
            "AND table_name = 'values'")
        if count:
            count = await connection.fetchval("SELECT count(*) FROM index.values")
        return count
    finally:
        await connection.close()


def verify(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpux", "index", "verify", *arguments],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


async def test_a_killed_service_restarts_into_the_rows_verify_recomputes(
    kafka_log: KafkaLog, kafka_bootstrap: str, database: str, namespace: str, tmp_path: Path,
) -> None:
    commands = order_flow(seed=3)
    engine_core = Engine()
    engine_events = [encode(event) for command in commands for event in engine_core.apply(command)]
    await kafka_log.create_topics([TopicSpec(name=namespace + COMMANDS_TOPIC),
                                   TopicSpec(name=namespace + EVENTS_TOPIC)])
    engine = EngineService(kafka_log, EngineConfig(
        topic_namespace=namespace, transactional_id=f"{namespace}engine",
        group_id=f"{namespace}engine", batch_size_max=40))
    stop_engine = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop_engine))
    feeder = asyncio.create_task(feed(kafka_log, namespace + COMMANDS_TOPIC,
                                      [encode(command) for command in commands], pause_s=0.05,
                                      chunk_size=10))
    log_path = tmp_path / "index.log"
    service = start_index(kafka_bootstrap, namespace, database, log_path)
    kills_while_streaming = 0
    try:
        for kill in range(KILLS):
            rows_before = await row_count(database)

            async def wrote_more(rows_before: int = rows_before) -> bool:
                return await row_count(database) > rows_before + 20

            await eventually(wrote_more, timeout_s=120, message=f"rows before kill {kill}")
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=30)
            kills_while_streaming += not feeder.done()
            service = start_index(kafka_bootstrap, namespace, database, log_path)
        await feeder
        events = await all_events(kafka_log, namespace, len(engine_events))
        expected = IndexCalculator().feed(events)

        async def caught_up() -> bool:
            return await row_count(database) == len(expected)

        await eventually(caught_up, timeout_s=120, message="the index wrote every value")
        stop_cleanly(service, log_path)
    finally:
        kill_if_running(service)
        stop_engine.set()
        await engine_task
    assert events == engine_events  # the service's engine wrote what the core makes
    assert kills_while_streaming >= 1, "a kill should land while the engine still writes"
    # Every start recomputes; a retried attempt inside one process (a broker hiccup) does too.
    assert log_path.read_bytes().count(b"recomputing the index") >= KILLS + 1
    assert {value.source for value in expected} >= {"trades", "mid"}
    assert await stored_rows(database) == sorted(expected, key=lambda v: (v.gpu, v.region,
                                                                           v.minute_ns))

    from_topic = verify("--kafka", kafka_bootstrap, "--topic-namespace", namespace,
                        "--database-url", database)
    assert from_topic.returncode == 0, from_topic.stdout + from_topic.stderr
    assert f"{len(expected)} values of 2 classes recomputed" in from_topic.stdout
    assert "database: 0 differences" in from_topic.stdout

    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(events) + b"\n")
    chosen = next(value for value in reversed(expected) if value.source == "trades")
    one_minute = verify("--events", str(events_file), "--gpu", chosen.gpu, "--region",
                        chosen.region, "--minute", format_minute(chosen.minute_ns))
    assert one_minute.returncode == 0, one_minute.stderr
    assert one_minute.stdout.splitlines()[1].split("\t")[9] == chosen.inputs_hash.hex()

    connection: asyncpg.Connection = await connect(database)
    try:
        await connection.execute(
            "UPDATE index.values SET value_micro = value_micro + 1 WHERE gpu = $1 AND "
            "region = $2 AND minute_ns = $3", chosen.gpu, chosen.region, chosen.minute_ns)
    finally:
        await connection.close()
    tampered = verify("--events", str(events_file), "--database-url", database)
    assert tampered.returncode == 1
    [difference] = [line for line in tampered.stdout.splitlines() if line.startswith("DIFF")]
    assert difference.split("\t")[:4] == [f"DIFF {format_minute(chosen.minute_ns)}",
                                          chosen.gpu, chosen.region, "value_micro"]


async def all_events(kafka_log: KafkaLog, namespace: str, count: int) -> list[bytes]:
    """The whole events topic once it holds `count` events."""
    events: list[bytes] = []

    async def complete() -> bool:
        events[:] = await read_topic(kafka_log, namespace + EVENTS_TOPIC)
        return len(events) >= count

    await eventually(complete, timeout_s=120, message=f"the engine wrote {count} events")
    return events
