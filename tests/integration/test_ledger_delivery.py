"""Delivery (v2) in the journal on real Kafka and PostgreSQL: bond accounts, redemption at
close, a projector restarted between any two events, verify and reconcile, and the
postings settlement reads.

The events come from the Python engine core (`delivery_commands` applied in process); the
commands go to the commands topic too, which reconcile replays.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from eventlog.kafka import KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, EventLog, Record, TopicSpec
from ledger import reads
from ledger.journal import CHAIN_ACCOUNT, GENESIS_HASH, JournalBatch, JournalBuilder, entry_hash
from ledger.migrate import SERVICE_ROLE
from ledger.projector import Projector, ProjectorConfig
from ledger.reads import DeliveryPosting
from ledger.reconcile import ReconcileReport, engine_balances, reconcile
from ledger.store import append_batch, read_position
from ledger.verify import VerifyReport, verify_chain
from matching_engine.core import Engine
from protocol import (
    BondReleased,
    CapacityIssued,
    Deposited,
    InstrumentListed,
    Tick,
    encode,
)
from runtime.postgres import connect
from tests.helpers import eventually, feed
from tests.integration.ledger_db import (
    ROOT,
    SYMBOL,
    ZERO_BOND_SYMBOL,
    LedgerDatabase,
    delivery_commands,
)

BOND = "@bond:i1"

# (seq, kind, postings as (account, asset, amount)): alice issues 10 GPU-hours with a bond
# of 30 USDC, sells 4 to bob, the instrument closes, bob's delivery is reported 75 %
# delivered and the rest of the bond goes back to alice.
HAND_WRITTEN_ENTRIES = [
    (1, "deposited", [(CHAIN_ACCOUNT, "USDC", -100_000000), ("alice", "USDC", 100_000000)]),
    (2, "capacity_issued", [("alice", "USDC", -30_000000), (BOND, "USDC", 30_000000),
                            (CHAIN_ACCOUNT, SYMBOL, -10), ("alice", SYMBOL, 10)]),
    (3, "trade", [("alice", SYMBOL, -4), ("bob", SYMBOL, 4)]),
    (4, "redeemed", [("alice", SYMBOL, -6), ("bob", SYMBOL, -4), (CHAIN_ACCOUNT, SYMBOL, 10)]),
    (5, "delivery_settled", [(BOND, "USDC", -3_000000), ("bob", "USDC", 3_000000)]),
    (6, "bond_released", [(BOND, "USDC", -27_000000), ("alice", "USDC", 27_000000)]),
]


def hand_written_batch() -> JournalBatch:
    """Return HAND_WRITTEN_ENTRIES as one chained batch, postings sorted as the builder
    sorts them."""
    batch = JournalBatch(1, len(HAND_WRITTEN_ENTRIES), len(HAND_WRITTEN_ENTRIES), GENESIS_HASH)
    for seq, kind, moves in HAND_WRITTEN_ENTRIES:
        postings = sorted((seq, account, asset, amount) for account, asset, amount in moves)
        new_hash = entry_hash(batch.head_hash, seq, postings)
        batch.entries.append((seq, kind, seq * 10, batch.head_hash, new_hash))
        batch.postings += postings
        batch.head_hash = new_hash
    return batch


async def test_delivery_postings_gives_whole_delivery_entries_in_order(
    ledger_db: LedgerDatabase,
) -> None:
    connection = await connect(ledger_db.service_url, role=SERVICE_ROLE)
    try:
        await append_batch(connection, hand_written_batch())
        found = await reads.delivery_postings(connection, after_seq=0, limit=100)
        assert found == [
            DeliveryPosting(seq=seq, kind=kind, account=account, asset=asset, amount=amount,
                            ts=seq * 10)
            for seq, kind, moves in HAND_WRITTEN_ENTRIES
            if kind not in ("deposited", "trade")
            for account, asset, amount in sorted(moves)
        ]
        assert [posting.account for posting in found if posting.seq == 2] == [
            BOND, CHAIN_ACCOUNT, "alice", "alice"], "accounts in byte order, '@' first"
        first_page = await reads.delivery_postings(connection, after_seq=0, limit=2)
        assert [posting.seq for posting in first_page] == [2, 2, 2, 2, 4, 4, 4]
        second_page = await reads.delivery_postings(connection, after_seq=first_page[-1].seq,
                                                    limit=2)
        assert first_page + second_page == found
        assert await reads.delivery_postings(connection, after_seq=6, limit=1) == []
    finally:
        await connection.close()


def delivery_run() -> tuple[Engine, list[Any], int]:
    """Return the engine after `delivery_commands`, its events, and the seq its close ends at."""
    engine = Engine()
    events: list[Any] = []
    close_seq = 0
    for command in delivery_commands():
        events += engine.apply(command)
        if isinstance(command, Tick):
            close_seq = engine.seq
    return engine, events, close_seq


async def prepare_topics(event_log: EventLog, namespace: str) -> str:
    """Put the commands on the namespace's commands topic, for reconcile to replay, and
    create its events topic; return the events topic's name."""
    commands_topic, events_topic = namespace + COMMANDS_TOPIC, namespace + EVENTS_TOPIC
    await event_log.create_topics([TopicSpec(name=commands_topic)])
    await feed(event_log, commands_topic, [encode(command) for command in delivery_commands()])
    await event_log.create_topics([TopicSpec(name=events_topic)])
    return events_topic


async def run_projector_to(event_log: EventLog, service_url: str, config: ProjectorConfig,
                           seq: int) -> None:
    """Run a fresh projector until it applied `seq`, then stop it."""
    projector = Projector(event_log, service_url, config)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        await eventually(lambda: task.done() or projector.applied_seq >= seq,
                         message=f"projector applied seq {seq}")
    finally:
        stop.set()
        await task


def pure_batch(events: list[Any]) -> JournalBatch:
    """Return the journal batch the pure builder makes of the events in one go."""
    batch = JournalBuilder(0, GENESIS_HASH).build([Record("events", 0, index, None,
                                                          encode(event))
                                                   for index, event in enumerate(events)])
    assert batch.failure is None
    return batch


def pure_head_hash(events: list[Any]) -> bytes:
    """Return the head hash of the journal the pure builder makes of the events in one go."""
    return pure_batch(events).head_hash


async def checked_journal(connection: Any, event_log: EventLog, namespace: str,
                          engine: Engine, close_seq: int) -> tuple[VerifyReport,
                                                                   ReconcileReport]:
    """Assert the journal's balances are the engine's, and verify and reconcile (at the end
    and right after the close) find nothing; return their reports."""
    assert await reads.balances(connection) == engine_balances(engine)
    verified = await verify_chain(connection)
    assert verified.ok, verified.broken
    commands_topic = namespace + COMMANDS_TOPIC
    reconciled = await reconcile(connection, event_log, commands_topic=commands_topic)
    assert reconciled.ok and reconciled.seq == engine.seq, reconciled
    after_close = await reconcile(connection, event_log, commands_topic=commands_topic,
                                  at_seq=close_seq)
    assert after_close.ok and after_close.seq == close_seq, after_close
    return verified, reconciled


async def test_projector_restarted_between_any_two_events_books_delivery_as_the_engine(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    engine, events, close_seq = delivery_run()
    topic = await prepare_topics(kafka_log, namespace)
    config = ProjectorConfig(topic_namespace=namespace)
    for event in events:  # each event alone, then a new projector: it must resume from the
        await feed(kafka_log, topic, [encode(event)])  # database, holdings included
        await run_projector_to(kafka_log, ledger_db.service_url, config, event.seq)
    connection = await connect(ledger_db.service_url)
    try:
        assert (await read_position(connection)).head_hash == pure_head_hash(events)
        verified, reconciled = await checked_journal(connection, kafka_log, namespace,
                                                     engine, close_seq)
        assert verified.issues_checked == 3 and reconciled.balances_compared == 10
        kinds = [row[0] for row in await connection.fetch(
            "SELECT kind FROM ledger.entries WHERE kind NOT IN ('deposited', 'trade', "
            "'withdrawn') ORDER BY seq")]
        assert kinds == [
            "capacity_issued", "capacity_issued", "capacity_issued",  # i3: tokens only
            "redeemed", "bond_released", "bond_released",  # SYMBOL's close
            "redeemed",  # ZERO_BOND_SYMBOL's close: its release of 0 has no entry
            "delivery_settled", "bond_released",  # bob's report on i1
            "bond_released",  # carol's on i2, delivered in full: no compensation
        ]
        assert await reads.redeemed_instruments(connection) == [SYMBOL, ZERO_BOND_SYMBOL]
        await check_bond_reads(connection)
        # every report, also those that moved no money, as the pure journal keeps them
        reports = await reads.delivery_reports_after(connection, 0, 100)
        assert [(report.seq, report.issue_id, report.holder, report.delivered_ppm,
                 report.evidence, report.ts) for report in reports] == pure_batch(
                     events).delivery_reports
        assert [(report.issue_id, report.holder, report.evidence) for report in reports] == [
            ("i1", "bob", None), ("i2", "carol", "00ff"), ("i3", "bob", None)]
        carol = await reads.delivery_report(connection, "i2", "carol")
        assert carol is not None and carol.delivered_ppm == 1_000_000
        assert await reads.delivery_report(connection, "i1", "carol") is None
    finally:
        await connection.close()


async def check_bond_reads(connection: Any) -> None:
    """The bond reads: per issue (a bond account's balance and statement) and per issuer."""
    # i1: 30 USDC bonded; 4 GPU-hours released at close (12), bob's 3 settled (2.25 to bob,
    # 6.75 back); carol's 3 still bonded (9).
    assert await reads.balances(connection, account="@bond:i1") == {
        ("@bond:i1", "USDC"): 9_000000}
    lines = await reads.statement(connection, "@bond:i1")
    assert [(line.kind, line.amount, line.balance) for line in lines] == [
        ("capacity_issued", 30_000000, 30_000000), ("bond_released", -12_000000, 18_000000),
        ("delivery_settled", -2_250000, 15_750000), ("bond_released", -6_750000, 9_000000)]
    op1 = await reads.bonds(connection, issuer="op1")
    assert [(bond.issue_id, bond.quantity, bond.bond, bond.bonded_quantity, bond.account,
             bond.balance) for bond in op1] == [
        ("i1", 10, 30_000000, 3, "@bond:i1", 9_000000),
        ("i3", 5, 0, 0, "@bond:i3", 0)]
    everyone = await reads.bonds(connection)
    assert [bond.issue_id for bond in everyone] == ["i1", "i2", "i3"]
    at_issue = await reads.bonds(connection, at_seq=op1[0].seq)
    assert [(bond.issue_id, bond.bonded_quantity, bond.balance) for bond in at_issue] == [
        ("i1", 10, 30_000000)]
    assert [bond.issue_id for bond in await reads.bonds(connection, after_seq=op1[0].seq,
                                                        limit=1)] == ["i2"]


async def test_a_close_in_the_batch_of_the_trades_before_it_redeems_what_they_moved(
    kafka_log: KafkaLog, ledger_db: LedgerDatabase, namespace: str
) -> None:
    engine, events, close_seq = delivery_run()
    topic = await prepare_topics(kafka_log, namespace)
    await feed(kafka_log, topic, [encode(event) for event in events], chunk_size=len(events))
    await run_projector_to(kafka_log, ledger_db.service_url,
                           ProjectorConfig(topic_namespace=namespace), len(events))
    connection = await connect(ledger_db.service_url)
    try:
        batches = await connection.fetch("SELECT first_seq, last_seq FROM ledger.checkpoints")
        assert [(row[0], row[1]) for row in batches] == [(1, len(events))], "one batch"
        assert (await read_position(connection)).head_hash == pure_head_hash(events)
        await checked_journal(connection, kafka_log, namespace, engine, close_seq)
        settlement = await reads.delivery_postings(connection, after_seq=0, limit=100)
        assert {posting.kind for posting in settlement} == {
            "capacity_issued", "redeemed", "bond_released", "delivery_settled"}
        burned = [(posting.account, posting.amount) for posting in settlement
                  if posting.kind == "redeemed" and posting.asset == SYMBOL]
        assert burned == [(CHAIN_ACCOUNT, 20), ("bob", -3), ("carol", -5), ("dave", -3),
                          ("op1", -4), ("op2", -5)]
    finally:
        await connection.close()
    result = subprocess.run(
        [sys.executable, "-m", "gpux", "ledger", "bonds", "--account", "op1",
         "--database-url", ledger_db.service_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(row[1], row[6], row[7], row[8], row[9]) for row in rows[1:]] == [
        ("i1", "30", "3", "@bond:i1", "9"), ("i3", "0", "0", "@bond:i3", "0")]


async def append_hand_written(url: str, events: list[Any]) -> None:
    """Append events as one batch through the projector's store, continuing the journal."""
    connection = await connect(url, role=SERVICE_ROLE)
    try:
        position = await read_position(connection)
        batch = JournalBuilder(position.last_seq, position.head_hash).build(
            [Record("events", 0, position.next_offset + index, None, encode(event))
             for index, event in enumerate(events)])
        assert batch.failure is None
        await append_batch(connection, batch)
    finally:
        await connection.close()


def bonded_issue() -> list[Any]:
    """A deliverable listing, 100 USDC for op and its issue i1 of 10 GPU-hours (30 USDC)."""
    listing = delivery_commands()[0]
    return [
        InstrumentListed(seq=1, ts=1, **{field: getattr(listing, field)
                                         for field in listing.__struct_fields__
                                         if field != "ts"}),
        Deposited(seq=2, ts=1, account="op", asset="USDC", amount="100"),
        CapacityIssued(seq=3, ts=1, issue_id="i1", account="op", instrument=SYMBOL,
                       node_id="n1", quantity=10, bond="30"),
    ]


async def verified(url: str) -> VerifyReport:
    connection = await connect(url)
    try:
        return await verify_chain(connection)
    finally:
        await connection.close()


# The engine never releases more than an issue's bond nor leaves a released bond behind; a
# faulty engine could, and verify must say so.


async def test_verify_finds_a_bond_account_gone_negative(ledger_db: LedgerDatabase) -> None:
    await append_hand_written(ledger_db.service_url, [
        *bonded_issue(),
        BondReleased(seq=4, ts=2, issue_id="i1", account="op", quantity=6, amount="18"),
        BondReleased(seq=5, ts=2, issue_id="i1", account="op", quantity=4, amount="18"),
    ])
    report = await verified(ledger_db.service_url)
    assert report.broken is not None and report.broken.seq == 5
    assert "@bond:i1" in report.broken.reason and report.entries_checked == 3


async def test_verify_finds_a_fully_released_bond_left_over(ledger_db: LedgerDatabase) -> None:
    await append_hand_written(ledger_db.service_url, [
        *bonded_issue(),
        BondReleased(seq=4, ts=2, issue_id="i1", account="op", quantity=6, amount="18"),
        BondReleased(seq=5, ts=2, issue_id="i1", account="op", quantity=4, amount="0"),
    ])
    report = await verified(ledger_db.service_url)
    assert report.broken is not None and report.broken.seq == 5, "at its last release"
    assert "i1" in report.broken.reason and report.entries_checked == 3
