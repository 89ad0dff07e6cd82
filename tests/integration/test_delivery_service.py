"""The delivery service on real Kafka and PostgreSQL, with a compressed minute.

The nodes here speak the real challenge exchange (`delivery.challenge.Responder`, numpy)
through a hand-written in-process probe client in place of SSH (the SSH path is the hour's
end-to-end test's): one node down for 15 of its 60 minutes, one answering with wrong rows,
one too slowly. The service itself runs as `gpux delivery run` in a subprocess for the kill
test: SIGKILLed mid-hour, started again, it writes no minute twice, the minutes nobody probed
are `unmeasured`, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import msgspec
import pytest

from delivery import store
from delivery.challenge import (
    CommitmentMessage,
    Inventory,
    Responder,
    RowsMessage,
    decode_message,
    encode_message,
    select_backend,
)
from delivery.classes import ClassFloor, demo_floors
from delivery.config import ServiceConfig
from delivery.evidence import check_chain, decode_sample
from delivery.service import DeliveryService
from delivery.transport import ProbeError
from eventlog.kafka import KafkaLog
from eventlog.port import EVENTS_TOPIC
from protocol import encode
from protocol.events import DeliveryAssigned, InstrumentListed
from runtime.postgres import create_database, drop_database
from tests.helpers import eventually, feed

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
GPU, REGION = "H100-SXM-80GB", "eu-north"
MINUTE_MS = 250
WINDOW_MINUTES = 60
START_IN_MS = 4_000  # from now to the window's start: room for the service to start
OUTAGE = range(20, 35)  # 15 minutes down


INVENTORY = Inventory(gpu_count=8, gpu_memory_mib=81_920, device="numpy")
class Channel:
    """The node side of one session: a Responder, possibly lying or slow."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.responder = Responder(select_backend("numpy"), INVENTORY)
        self.replies: list[bytes] = []

    async def send_line(self, line: bytes) -> None:
        message = decode_message(line)
        reply = self.responder.handle(message)
        if self.node.commitment_delay_s and isinstance(reply, CommitmentMessage):
            await asyncio.sleep(self.node.commitment_delay_s)
        if self.node.wrong_rows and isinstance(reply, RowsMessage):
            rows = [msgspec.structs.replace(row, values=[v + 1 for v in row.values])
                    for row in reply.rows]
            reply = RowsMessage(rows=rows)
        self.replies.append(encode_message(reply))

    async def receive_line(self) -> bytes:
        return self.replies.pop(0)


class FakeNode:
    """A node reached without SSH; down during the minutes of `outage`."""

    def __init__(self, *, wrong_rows: bool = False, commitment_delay_s: float = 0.0) -> None:
        self.wrong_rows = wrong_rows
        self.commitment_delay_s = commitment_delay_s
        self.window_start_ns = 0
        self.outage: range = range(0)
        self.sessions = 0


class FakeProber:
    """Stands for `delivery.transport.ProberClient`: finds the node by its port."""

    nodes: dict[int, FakeNode] = {}

    def __init__(self, key_path: Path, certificate_line: str) -> None:
        assert key_path.exists() and certificate_line.startswith("ssh-ed25519-cert")

    async def probe(self, host: str, port: int, login: str, host_key_line: str,
                    exchange: Callable[[Any], Awaitable[T]]) -> T:
        node = self.nodes[port]
        minute = (time.time_ns() - node.window_start_ns) // (MINUTE_MS * 1_000_000)
        if minute in node.outage:
            raise ProbeError("connection refused", retriable=True)
        node.sessions += 1
        return await exchange(Channel(node))


async def publish(kafka_log: KafkaLog, namespace: str, symbol: str, start_ns: int,
                  assignments: list[tuple[str, str, str]]) -> None:
    """List a deliverable hour and assign (issue, holder, node) on it, 8 GPU-hours each."""
    events: list[Any] = [InstrumentListed(
        seq=1, ts=1, symbol=symbol, gpu=GPU, region=REGION, delivery_start=start_ns,
        delivery_hours=1, tick_size="0.01", max_order_quantity=100, maker_fee_bps=0,
        taker_fee_bps=0, bond_per_gpu_hour="3")]
    events += [DeliveryAssigned(seq=2 + i, ts=2, instrument=symbol, issue_id=issue,
                                issuer="op", node_id=node, holder=holder, quantity=8)
               for i, (issue, holder, node) in enumerate(assignments)]
    await feed(kafka_log, namespace + EVENTS_TOPIC, [encode(event) for event in events])


async def register(connection: asyncpg.Connection, node_id: str, port: int) -> None:
    await connection.execute(
        "INSERT INTO delivery.nodes (node_id, account, gpu, region, gpu_count, gpu_memory_mib, "
        "host, port, login, host_key, inventory, registered_ns, updated_ns) VALUES "
        "($1, 'op', $2, $3, 8, 81920, '127.0.0.1', $4, 'gpux', 'ssh-ed25519 AAAA', '{}', 0, 0)",
        node_id, GPU, REGION, port)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    name = f"delivery_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    connection = await asyncpg.connect(url)
    await store.migrate(connection)
    yield url, connection
    await connection.close()
    await drop_database(database_url, name)


async def until_reported(connection: asyncpg.Connection, issue: str, holder: str,
                         timeout_s: float = 60) -> store.ReportRow:
    async def reported() -> bool:
        return await store.report(connection, issue, holder) is not None

    await eventually(reported, timeout_s=timeout_s, interval_s=0.2,
                     message=f"the report of {issue}/{holder}")
    row = await store.report(connection, issue, holder)
    assert row is not None
    return row


async def sound_chain(connection: asyncpg.Connection, issue: str, holder: str
                      ) -> list[str]:
    stored = await store.samples(connection, issue, holder)
    keys = await store.signer_keys(connection)
    assert check_chain(stored, keys, WINDOW_MINUTES) == []
    return [decode_sample(sample.body).outcome for sample in stored]


async def test_an_outage_a_liar_and_a_slow_node_are_measured_as_such(
    kafka_log: KafkaLog, namespace: str, database: tuple[str, asyncpg.Connection],
    tmp_path: Path,
) -> None:
    url, connection = database
    start_ns = time.time_ns() + START_IN_MS * 1_000_000
    down, liar, slow = FakeNode(), FakeNode(wrong_rows=True), FakeNode(commitment_delay_s=0.035)
    down.outage = OUTAGE
    FakeProber.nodes = {2201: down, 2202: liar, 2203: slow}
    for port, node in FakeProber.nodes.items():
        node.window_start_ns = start_ns
        await register(connection, f"n-{port}", port)
    await publish(kafka_log, namespace, "H100.eu.svc", start_ns, [
        ("op.down", "alice", "n-2201"), ("op.liar", "alice", "n-2202"),
        ("op.slow", "bob", "n-2203")])
    floors = demo_floors()
    floors[GPU] = ClassFloor(gpu=GPU, challenge_n=64, answer_ms_max=20, gpu_memory_mib_min=0)
    config = ServiceConfig(keys_dir=tmp_path / "keys", minute_ms=MINUTE_MS,
                           challenges_per_hour=10, floors=floors, topic_namespace=namespace,
                           schedule_interval_ms=100, certificate_interval_ms=200)
    service = DeliveryService(kafka_log, url, config, prober_factory=FakeProber)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    try:
        reports = [await until_reported(connection, issue, holder) for issue, holder in
                   (("op.down", "alice"), ("op.liar", "alice"), ("op.slow", "bob"))]
    finally:
        stop.set()
        await running
    # Down 15 of 60 minutes, give or take the minute the outage cut. A probe the service
    # itself started too late is `unmeasured` (the venue's lateness, on a loaded machine)
    # and counts as delivered, so each count allows for those minutes and no more.
    outcomes = await sound_chain(connection, "op.down", "alice")
    lost = [minute for minute, outcome in enumerate(outcomes) if outcome == "unreachable"]
    late_in_outage = [minute for minute in OUTAGE if outcomes[minute] == "unmeasured"]
    assert set(lost) <= set(range(OUTAGE.start - 1, OUTAGE.stop + 1)), outcomes
    assert len(lost) + len(late_in_outage) in (15, 16), outcomes
    assert reports[0].delivered_minutes == 60 - len(lost)
    assert reports[0].delivered_ppm == (60 - len(lost)) * 1_000_000 // 60
    # The liar and the slow node: every challenge minute (0 and 10 others) probed is failed.
    for (issue, holder), row in zip((("op.liar", "alice"), ("op.slow", "bob")), reports[1:],
                                    strict=True):
        outcomes = await sound_chain(connection, issue, holder)
        failed = outcomes.count("challenge_failed")
        assert 11 - outcomes.count("unmeasured") <= failed <= 11, outcomes
        assert set(outcomes) <= {"challenge_failed", "delivered", "unmeasured"}, outcomes
        assert row.delivered_minutes == 60 - failed
        assert row.delivered_ppm == (60 - failed) * 1_000_000 // 60
    stored = await store.samples(connection, "op.slow", "bob")
    reasons = {decode_sample(s.body).challenge.reason for s in stored  # type: ignore[union-attr]
               if decode_sample(s.body).challenge is not None}
    assert reasons == {"too_slow"}
    stored = await store.samples(connection, "op.liar", "alice")
    reasons = {decode_sample(s.body).challenge.reason for s in stored  # type: ignore[union-attr]
               if decode_sample(s.body).challenge is not None}
    assert reasons == {"wrong_rows"}


def start_service(url: str, kafka_bootstrap: str, namespace: str, keys_dir: Path
                  ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpux", "delivery", "run", "--kafka", kafka_bootstrap,
         "--database-url", url, "--keys-dir", str(keys_dir), "--minute-ms", str(MINUTE_MS),
         "--topic-namespace", namespace, "--floors", "demo"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_service_killed_mid_hour_resumes_without_a_minute_twice(
    kafka_log: KafkaLog, kafka_bootstrap: str, namespace: str,
    database: tuple[str, asyncpg.Connection], tmp_path: Path,
) -> None:
    url, connection = database
    process = start_service(url, kafka_bootstrap, namespace, tmp_path / "keys")
    try:
        async def started() -> bool:
            return bool(await store.signer_keys(connection))

        # The hour is listed once the service runs, so how slowly a loaded machine starts a
        # process cannot cost the first minutes.
        await eventually(started, timeout_s=60, interval_s=0.05, message="service started")
        start_ns = time.time_ns() + 2_000 * 1_000_000
        # The node was never registered: each probed minute is unreachable, which tells
        # them from the minutes nobody probed.
        await publish(kafka_log, namespace, "H100.eu.kill", start_ns,
                      [("op.k", "carol", "n-x")])

        async def some_minutes() -> bool:
            return len(await store.samples(connection, "op.k", "carol")) >= 10

        await eventually(some_minutes, timeout_s=60, interval_s=0.05,
                         message="ten minutes written")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = len(await store.samples(connection, "op.k", "carol"))
        await asyncio.sleep(8 * MINUTE_MS / 1000)  # the service is down for ~8 minutes
        process = start_service(url, kafka_bootstrap, namespace, tmp_path / "keys")
        report = await until_reported(connection, "op.k", "carol", timeout_s=90)
    finally:
        process.kill()
        process.wait(timeout=10)
    outcomes = await sound_chain(connection, "op.k", "carol")
    assert len(outcomes) == WINDOW_MINUTES
    assert set(outcomes[:killed_at]) == {"unreachable"}
    missed = outcomes.count("unmeasured")
    assert 6 <= missed <= 40, outcomes  # the kill, the wait and the restart
    assert outcomes[killed_at:killed_at + missed] == ["unmeasured"] * missed
    assert set(outcomes[killed_at + missed:]) == {"unreachable"}
    assert report.delivered_ppm == missed * 1_000_000 // WINDOW_MINUTES
    assignments = await connection.fetchval("SELECT count(*) FROM delivery.assignments")
    assert assignments == 1
