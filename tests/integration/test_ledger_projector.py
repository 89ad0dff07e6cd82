"""The projector on real Kafka and PostgreSQL: exactly once under SIGKILL, gaps, reads.

The engine runs in-process on a unique topic namespace (as in the engine's Kafka test);
the projector runs as `python -m gpux ledger run` and is killed with SIGKILL again and
again while events stream. Afterwards the journal must reconcile with a replay of the
command topic, hold one entry per money-moving event, and verify.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from eventlog.kafka import KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, EventLog, TopicSpec
from harness.ports import free_port
from ledger import reads
from ledger.errors import SeqGapError
from ledger.journal import CHAIN_ACCOUNT
from ledger.projector import Projector, ProjectorConfig
from ledger.reconcile import reconcile
from ledger.verify import verify_chain
from matching_engine.config import EngineConfig
from matching_engine.service import EngineService
from matching_engine.snapshots import SnapshotStore
from matching_engine.workload import Workload
from protocol import AnyCommand, Deposit, Deposited, NewOrder, Trade, Withdraw, encode
from runtime.postgres import connect
from tests.helpers import eventually, feed, kill_if_running, read_topic, stop_cleanly
from tests.integration.ledger_db import (
    ROOT,
    SYMBOL,
    LedgerDatabase,
    engine_events,
    opening_commands,
)
from tests.integration.ledger_flow import (
    assert_journal_holds_each_event_once,
    replayed_seq,
    start_projector,
    workload_commands,
)
from tests.integration.metrics_probe import health, scrape

KILLS = 4
FLOW_COMMANDS = 6000

# Every test's database is migrated by `gpux ledger migrate`, as an operator does.
pytestmark = pytest.mark.parametrize("ledger_db", ["cli"], indirect=True)


def command_stream() -> list[AnyCommand]:
    """Return a workload with withdrawals (some refused) and a duplicate deposit mixed in."""

    def mixed_in(index: int, ts: int) -> list[AnyCommand]:
        commands: list[AnyCommand] = []
        if index % 150 == 0:
            commands.append(Withdraw(ts=ts, account=f"acct{index % 16}", asset="USDC",
                                     amount="12.5"))
        if index % 700 == 0:
            commands.append(Withdraw(ts=ts, account=f"acct{index % 16}", asset="GPU-1",
                                     amount=3))
            commands.append(Withdraw(ts=ts, account="acct1", asset="USDC",
                                     amount="99999999999"))  # more than it has: refused
            commands.append(Deposit(ts=ts, account="acct2", asset="USDC", amount="5",
                                    deposit_id="tx-1"))  # refused after the first
        return commands

    return workload_commands(Workload(instruments=4, accounts=16, seed=5), FLOW_COMMANDS,
                             mixed_in)


async def stored_progress(database_url: str) -> tuple[reads.Checkpoint | None, int]:
    """Return the journal's last checkpoint and how many entries it holds."""
    connection = await connect(database_url)
    try:
        return await reads.last_checkpoint(connection), await reads.entry_count(connection)
    finally:
        await connection.close()


async def ledger_seq(database_url: str) -> int:
    checkpoint, _entries = await stored_progress(database_url)
    return 0 if checkpoint is None else checkpoint.last_seq


async def test_projector_killed_repeatedly_books_every_event_exactly_once(
    kafka_log: KafkaLog, kafka_bootstrap: str, ledger_db: LedgerDatabase, namespace: str,
    tmp_path: Path,
) -> None:
    commands_topic, events_topic = namespace + COMMANDS_TOPIC, namespace + EVENTS_TOPIC
    commands = command_stream()
    payloads = [encode(command) for command in commands]
    total_events = replayed_seq(commands)
    await kafka_log.create_topics([TopicSpec(name=commands_topic), TopicSpec(name=events_topic)])
    snapshot_dir = tmp_path / "snapshots"
    engine = EngineService(kafka_log, EngineConfig(
        topic_namespace=namespace, transactional_id=f"{namespace}engine",
        group_id=f"{namespace}engine", batch_size_max=40, snapshot_dir=snapshot_dir,
        snapshot_every_commands=1500,
    ))
    stop_engine = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop_engine))
    feeder = asyncio.create_task(feed(kafka_log, commands_topic, payloads, pause_s=0.01))
    log_path = tmp_path / "projector.log"
    rng = random.Random(7)
    projector = start_projector(kafka_bootstrap, namespace, ledger_db.service_url, log_path)
    kills_while_streaming = 0
    try:
        for kill in range(KILLS):
            target = (kill + 1) * total_events // (KILLS + 2)

            async def reached(target: int = target) -> bool:
                return await ledger_seq(ledger_db.owner_url) >= target

            await eventually(reached, timeout_s=60, message=f"ledger reached seq {target}")
            await asyncio.sleep(rng.uniform(0, 0.05))
            projector.send_signal(signal.SIGKILL)
            projector.wait(timeout=30)
            kills_while_streaming += not feeder.done()
            projector = start_projector(kafka_bootstrap, namespace, ledger_db.service_url,
                                        log_path)
        await feeder

        async def caught_up() -> bool:
            return await ledger_seq(ledger_db.owner_url) >= total_events

        await eventually(caught_up, timeout_s=90, message="ledger applied every event")
        stop_cleanly(projector, log_path)
        assert engine.engine.seq == total_events
        events = await read_topic(kafka_log, events_topic)
    finally:
        kill_if_running(projector)
        stop_engine.set()
        await engine_task
    assert kills_while_streaming >= 1, "the kills should land while commands still stream"
    # Every start resumes; a retried attempt inside one process (a broker hiccup) does too.
    assert log_path.read_text().count("resuming after seq") >= KILLS + 1
    assert len(events) == total_events
    connection = await connect(ledger_db.owner_url)
    try:
        report = await assert_journal_holds_each_event_once(connection, kafka_log, events,
                                                            commands_topic)
        assert report.balances_compared > 16 * 5
        midway = await reconcile(connection, kafka_log, commands_topic=commands_topic,
                                 at_seq=total_events // 2)
        assert midway.differences == [] and midway.seq <= total_events // 2
        snapshots = SnapshotStore(snapshot_dir)
        assert snapshots.latest(len(payloads)) is not None
        for at_seq in (total_events // 2, total_events):  # replay from an engine snapshot
            from_snapshot = await reconcile(connection, kafka_log, at_seq=at_seq,
                                            commands_topic=commands_topic, snapshots=snapshots)
            assert from_snapshot.differences == [] and from_snapshot.seq <= at_seq
        assert (await verify_chain(connection)).ok
    finally:
        await connection.close()
    result = subprocess.run(
        [sys.executable, "-m", "gpux", "ledger", "reconcile", "--database-url",
         ledger_db.owner_url, "--kafka", kafka_bootstrap, "--topic-namespace", namespace],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"seq {total_events}:" in result.stdout and " 0 differences" in result.stdout


def small_market_events() -> list[Any]:
    """Return the engine's events for deposits, two fills, fees and a withdrawal."""
    return engine_events([
        *opening_commands(),
        NewOrder(ts=5, account="alice", client_order_id="b2", instrument=SYMBOL, side="buy",
                 order_type="limit", price="2.4", quantity=1),
        NewOrder(ts=6, account="bob", client_order_id="s2", instrument=SYMBOL, side="sell",
                 order_type="market", quantity=1),
        Withdraw(ts=7, account="alice", asset="USDC", amount="100"),
    ])


async def publish(event_log: EventLog, namespace: str, events: list[Any]) -> None:
    topic = namespace + EVENTS_TOPIC
    await event_log.create_topics([TopicSpec(name=topic)])
    await feed(event_log, topic, [encode(event) for event in events])


async def project(event_log: EventLog, service_url: str, namespace: str,
                  events: list[Any]) -> Projector:
    """Publish the events and run a projector in process until it applied all of them."""
    await publish(event_log, namespace, events)
    projector = Projector(event_log, service_url, ProjectorConfig(topic_namespace=namespace))
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        await eventually(lambda: task.done() or projector.applied_seq >= len(events),
                         message=f"projector applied seq {len(events)}")
    finally:
        stop.set()
        await task
    return projector


async def test_reads_give_balances_statements_fees_and_unsettled_trades(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    events = small_market_events()
    await project(kafka_log, ledger_db.service_url, namespace, events)
    trades = [event for event in events if isinstance(event, Trade)]
    assert [(t.price, t.quantity, t.aggressor_side) for t in trades] == [
        ("2.5", 4, "buy"), ("2.4", 1, "sell")]
    first_trade, second_trade = trades
    connection = await connect(ledger_db.service_url)
    try:
        # alice bought 4 at 2.5 as taker (20 bps) and 1 at 2.4 as maker (10 bps)
        alice_usdc = 1000_000000 - (10_000000 + 20_000) - (2_400000 + 2_400) - 100_000000
        now = await reads.balances(connection)
        assert now[("alice", "USDC")] == alice_usdc
        assert now[("alice", SYMBOL)] == 5
        assert now[("bob", SYMBOL)] == 45
        assert now[("bob", "USDC")] == (10_000000 - 10_000) + (2_400000 - 4_800)
        assert now[("fees", "USDC")] == 30_000 + 7_200
        assert now[(CHAIN_ACCOUNT, "USDC")] == -1000_000000 + 100_000000
        before_trades = await reads.balances(connection, at_seq=first_trade.seq - 1)
        assert before_trades[("alice", "USDC")] == 1000_000000
        assert ("fees", "USDC") not in before_trades
        assert await reads.balances(connection, at_seq=first_trade.seq, account="alice") == {
            ("alice", "USDC"): 1000_000000 - 10_020000, ("alice", SYMBOL): 4}
        lines = await reads.statement(connection, "alice", asset="USDC")
        assert [(line.kind, line.amount, line.balance) for line in lines] == [
            ("deposited", 1000_000000, 1000_000000),
            ("trade", -10_020000, 989_980000),
            ("trade", -2_402400, 987_577600),
            ("withdrawn", -100_000000, alice_usdc),
        ]
        fees = await reads.fees_earned(connection)
        assert (fees.total_micro, fees.by_instrument_micro) == (37_200, {SYMBOL: 37_200})
        assert (await reads.fees_earned(connection, at_seq=first_trade.seq)).total_micro == 30_000
        unsettled = await reads.unsettled_trades(connection, after_seq=0, limit=10)
        assert [(t.seq, t.buyer, t.seller, t.buyer_fee_micro, t.seller_fee_micro)
                for t in unsettled] == [
            (first_trade.seq, "alice", "bob", 20_000, 10_000),
            (second_trade.seq, "alice", "bob", 2_400, 4_800)]
        assert [t.seq for t in await reads.unsettled_trades(
            connection, after_seq=first_trade.seq, limit=10)] == [second_trade.seq]
        assert await reads.unsettled_trades(connection, after_seq=second_trade.seq,
                                            limit=10) == []
        withdrawals = await reads.withdrawals_after(connection, after_seq=0, limit=10)
        assert [(w.account, w.asset, w.amount) for w in withdrawals] == [
            ("alice", "USDC", 100_000000)]
    finally:
        await connection.close()
    result = subprocess.run(
        [sys.executable, "-m", "gpux", "ledger", "statement", "alice", "--csv",
         "--database-url", ledger_db.service_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["asset"], row["amount"], row["balance"]) for row in rows] == [
        ("USDC", "1000", "1000"), (SYMBOL, "4", "4"), ("USDC", "-10.02", "989.98"),
        (SYMBOL, "1", "5"), ("USDC", "-2.4024", "987.5776"), ("USDC", "-100", "887.5776")]


async def test_projector_stops_at_a_seq_gap_and_never_skips_it(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    events = small_market_events()
    missing = next(event.seq for event in events if isinstance(event, Trade))
    await publish(kafka_log, namespace, [event for event in events if event.seq != missing])
    config = ProjectorConfig(topic_namespace=namespace, batch_size_max=2)
    for _attempt in range(2):  # a restart meets the same gap again
        projector = Projector(kafka_log, ledger_db.service_url, config)
        with pytest.raises(SeqGapError) as caught:
            await asyncio.wait_for(projector.run(asyncio.Event()), 30)
        assert (caught.value.expected_seq, caught.value.got_seq) == (missing, missing + 1)
        assert projector.applied_seq == missing - 1
    checkpoint, entries = await stored_progress(ledger_db.service_url)
    assert checkpoint is not None and checkpoint.last_seq == missing - 1
    assert checkpoint.next_offset == missing - 1  # offsets count from 0, seqs from 1
    assert entries == 2  # the two deposits


async def test_events_that_move_no_money_still_advance_the_stored_seq(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    events = small_market_events()
    first_deposit = next(event.seq for event in events if isinstance(event, Deposited))
    quiet = events[: first_deposit - 1]  # the listing only
    assert quiet
    await project(kafka_log, ledger_db.service_url, namespace, quiet)
    checkpoint, entries = await stored_progress(ledger_db.service_url)
    assert checkpoint is not None and checkpoint.last_seq == len(quiet)
    assert entries == 0


async def test_a_refused_write_stops_the_projector_without_losing_its_place(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    events = small_market_events()
    last_trade = [event for event in events if isinstance(event, Trade)][-1]
    await publish(kafka_log, namespace, events)
    connection = await connect(ledger_db.owner_url)
    try:  # a row the projector will collide with, planted behind its back
        await connection.execute(
            "INSERT INTO ledger.trades VALUES ($1, $2, 'X', 1, 1, 'a', 'b', 0, 0, 'a', 'b', "
            "'buy', 0)", 10**9, last_trade.trade_id)
    finally:
        await connection.close()
    projector = Projector(kafka_log, ledger_db.service_url,
                          ProjectorConfig(topic_namespace=namespace, batch_size_max=2))
    with pytest.raises(asyncpg.UniqueViolationError):
        await asyncio.wait_for(projector.run(asyncio.Event()), 30)
    assert projector.applied_seq < last_trade.seq
    assert await ledger_seq(ledger_db.owner_url) == projector.applied_seq


async def test_gpux_ledger_run_serves_its_metrics_and_health(
    kafka_log: KafkaLog, kafka_bootstrap: str, ledger_db: LedgerDatabase, namespace: str,
    tmp_path: Path,
) -> None:
    topic = namespace + EVENTS_TOPIC
    await kafka_log.create_topics([TopicSpec(name=topic)])
    events = small_market_events()
    port = free_port()
    log_path = tmp_path / "projector.log"
    projector = start_projector(kafka_bootstrap, namespace, ledger_db.service_url, log_path,
                                "--batch-size-max", "3", "--metrics-port", str(port))
    try:
        async def healthy() -> bool:
            assert projector.poll() is None, log_path.read_text()[-3000:]
            return await health(port) == 200

        await eventually(healthy, timeout_s=60, message="/healthz answers 200")
        before = await scrape(port)
        assert before["gpux_ledger_events_total"] == 0
        assert before["gpux_ledger_reconnects_total"] == 0
        await publish(kafka_log, namespace, events)

        async def applied() -> bool:
            return (await scrape(port)).get("gpux_ledger_event_seq") == len(events)

        await eventually(applied, timeout_s=60, message="/metrics shows every event applied")
        after = await scrape(port)
        assert after["gpux_ledger_events_total"] == len(events)
        assert after["gpux_ledger_batch_size_events_sum"] == len(events)
        batches = after["gpux_ledger_batch_size_events_count"]
        assert batches == after["gpux_ledger_batch_seconds_count"] >= -(-len(events) // 3)
        assert after["gpux_ledger_batch_seconds_sum"] > 0
        connection = await connect(ledger_db.service_url)
        try:
            assert after["gpux_ledger_entries_total"] == await reads.entry_count(connection) > 0
        finally:
            await connection.close()

        async def caught_up() -> bool:
            return (await scrape(port)).get("gpux_ledger_consumer_lag_events") == 0

        await eventually(caught_up, timeout_s=30, message="the lag gauge reaches 0")
        assert (await scrape(port))["gpux_ledger_reconnects_total"] == 0
        assert await health(port) == 200
        stop_cleanly(projector, log_path)
    finally:
        kill_if_running(projector)
