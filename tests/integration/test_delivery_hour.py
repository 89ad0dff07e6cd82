"""A delivered hour end to end on real services: the issue's "done when".

Engine and gateway on the session's Kafka and PostgreSQL (the gateway serving the delivery
database), the delivery service with its real SSH prober, and Debian's OpenSSH as the node.
An admin lists a deliverable hour starting a few seconds ahead; the operator registers its
node through the gateway, issues 4 GPU-hours and sells them to a holder, who registers an
SSH key. The close assigns; the service certifies the holder's key; the holder fetches the
certificate with the SDK and logs in with `ssh` inside the window. The prober measures the
hour with a compressed minute; the node refuses the prober for 15 minutes; the report
settles with the measured ppm and its compensation; `gpux delivery verify` exits 0; the
quality record shows the hour.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from delivery import store
from delivery.ca import generate_user_key
from delivery.classes import demo_floors
from delivery.config import ServiceConfig
from delivery.evidence import decode_sample
from delivery.keys import VenueKeys
from delivery.service import DeliveryService
from delivery.sshd_config import principals_lines
from eventlog.kafka import KafkaLog
from gateway.config import GatewayConfig
from gateway.store import PostgresKeyStore
from gateway.store import migrate as migrate_gateway
from gpux.venue import Venue, VenueConfig
from harness.sshd import SshdService
from matching_engine.config import EngineConfig
from runtime.postgres import drop_database
from sdk.access import write_access
from sdk.client import ApiKey, Client
from settlement.testing import fresh_database
from tests.delivery_probe_faults import forced_command
from tests.helpers import eventually
from tests.integration.database_faults import database_of

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "H100-SXM-80GB.eu-north.hour"
OPERATOR, HOLDER, DELIVERY = "op-north", "alice", "gpux.delivery"
ISSUE, NODE = "op-north.hour.n-1", "n-hour-1"
MINUTE_MS = 4_000  # a real sshd starts the responder (python, numpy) per session: ~1-2 s
DELIVERY_IN_S = 8
OUTAGE_FIRST, OUTAGE_MINUTES = 20, 15
RESPONDER_COMMAND = forced_command("honest", 8, 81559)
WAIT_S = 150.0


@pytest.fixture
async def venue(kafka_log: KafkaLog, namespace: str, database_url: str
                ) -> AsyncIterator[tuple[Venue, str, PostgresKeyStore]]:
    url = await fresh_database(database_url, "hour")
    await migrate_gateway(url)
    connection = await asyncpg.connect(url)
    await store.migrate(connection)
    await connection.close()
    keys = await PostgresKeyStore.open(url)
    venue = Venue(kafka_log, VenueConfig(
        engine=EngineConfig(topic_namespace=namespace, transactional_id=f"{namespace}engine",
                            group_id=f"{namespace}engine", batch_interval_ms=2),
        gateway=GatewayConfig(port=0, clock_interval_ms=200, request_timeout_ms=20_000,
                              delivery_database_url=url, quality_poll_interval_ms=200),
    ), key_store=keys)
    try:
        await venue.start()
        yield venue, url, keys
    finally:
        await venue.stop()
        await keys.close()
        await drop_database(database_url, database_of(url))


async def test_a_deliverable_hour_is_accessed_measured_reported_and_verified(
    venue: tuple[Venue, str, PostgresKeyStore], kafka_log: KafkaLog, kafka_bootstrap: str,
    namespace: str, sshd_service: SshdService, tmp_path: Path,
) -> None:
    running, url, keys = venue
    gateway_url = running.urls[0]
    keys_dir = tmp_path / "delivery-keys"
    ca_line = VenueKeys(keys_dir).ca.public_key_line()  # the key the service will load
    sshd_service.authorize([ca_line], principals_lines(NODE, RESPONDER_COMMAND))
    admin_key = ApiKey(*await keys.add_key("admin-north", "admin"))
    operator_key = ApiKey(*await keys.add_key(OPERATOR, "operator"))
    holder_key = ApiKey(*await keys.add_key(HOLDER, "trader"))
    delivery_key = await keys.add_key(DELIVERY, "delivery")
    config = ServiceConfig(keys_dir=keys_dir, minute_ms=MINUTE_MS, floors=demo_floors(),
                           topic_namespace=namespace, schedule_interval_ms=100,
                           certificate_interval_ms=200, report_interval_ms=300,
                           gateway_url=gateway_url, api_key=delivery_key)
    service = DeliveryService(kafka_log, url, config)
    stop = asyncio.Event()
    service_task = asyncio.create_task(service.run(stop))
    conn = await asyncpg.connect(url)
    try:
        async with Client(gateway_url, credentials=admin_key) as admin, \
                Client(gateway_url, credentials=operator_key) as op, \
                Client(gateway_url, credentials=holder_key) as alice:
            await eventually(service.ready.is_set, timeout_s=WAIT_S, message="service ready")
            for account in (OPERATOR, HOLDER):
                assert (await admin.deposit(account, "USDC", "100")).accepted
            delivery_start = time.time_ns() + DELIVERY_IN_S * 10**9
            listed = await admin.list_instrument(
                symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-north",
                delivery_start=delivery_start, delivery_hours=1, tick_size="0.01",
                max_order_quantity=100, maker_fee_bps=0, taker_fee_bps=0,
                bond_per_gpu_hour="3")
            assert listed.accepted, listed
            registered = await op.register_node(
                NODE, gpu="H100-SXM-80GB", region="eu-north", gpu_count=8,
                gpu_memory_mib=81_559, host=sshd_service.host, port=sshd_service.port,
                login=sshd_service.login, host_key=sshd_service.host_key_line)
            assert registered.ca_public_key.split()[:2] == ca_line.split()[:2]
            issued = await op.issue_capacity(SYMBOL, NODE, 4, issue_id=ISSUE)
            assert issued.status == "accepted", issued
            assert (await op.new_order(SYMBOL, "sell", 4, "2.50")).accepted
            assert (await alice.new_order(SYMBOL, "buy", 4, "2.50")).accepted
            identity = tmp_path / "alice" / "id_ed25519"
            identity.with_name("id_ed25519.pub").parent.mkdir()
            identity.with_name("id_ed25519.pub").write_text(generate_user_key(identity) + "\n")
            await alice.register_ssh_key(identity.with_name("id_ed25519.pub").read_text())

            # The close assigns; the service certifies alice's key; she logs in.
            async def certified() -> bool:
                items = await alice.delivery_access(ISSUE)
                return bool(items) and bool(items[0].certificates) and items[0].host is not None

            await eventually(certified, timeout_s=WAIT_S, interval_s=0.2,
                             message="alice's certificate")
            [line] = write_access(await alice.delivery_access(ISSUE), identity)
            assert line.ssh_command is not None
            await eventually(lambda: time.time_ns() > delivery_start, timeout_s=WAIT_S)
            login = await asyncio.to_thread(
                subprocess.run, f"{line.ssh_command} echo in-the-window", shell=True,
                capture_output=True, timeout=30, check=False)
            assert login.returncode == 0, login.stderr
            assert b"in-the-window" in login.stdout

            # The node refuses the prober for 15 compressed minutes.
            async def minutes(count: int) -> bool:
                return len(await store.samples(conn, ISSUE, HOLDER)) >= count

            await eventually(lambda: minutes(OUTAGE_FIRST), timeout_s=WAIT_S,
                             message=f"{OUTAGE_FIRST} minutes measured")
            sshd_service.authorize([ca_line], [principals_lines(NODE, RESPONDER_COMMAND)[0]])
            await eventually(lambda: minutes(OUTAGE_FIRST + OUTAGE_MINUTES), timeout_s=WAIT_S,
                             message="the outage's minutes")
            sshd_service.authorize([ca_line], principals_lines(NODE, RESPONDER_COMMAND))

            async def settled() -> bool:
                row = await store.report(conn, ISSUE, HOLDER)
                return row is not None and row.outcome is not None

            await eventually(settled, timeout_s=WAIT_S, interval_s=0.2,
                             message="the report answered")
            report = await store.report(conn, ISSUE, HOLDER)
            assert report is not None and report.outcome == "settled"
            outcomes = [decode_sample(s.body).outcome
                        for s in await store.samples(conn, ISSUE, HOLDER)]
            down = outcomes.count("unreachable")
            assert OUTAGE_MINUTES - 1 <= down <= OUTAGE_MINUTES + 1, [
                (i, o) for i, o in enumerate(outcomes) if o != "delivered"]
            assert report.delivered_ppm == (60 - down) * 1_000_000 // 60
            [assignment] = (await alice.deliveries()).assignments
            compensation_micro = 4 * 3_000_000 * (1_000_000 - report.delivered_ppm) // 1_000_000
            assert assignment.delivered_ppm == report.delivered_ppm
            assert assignment.evidence == report.evidence_root.hex()
            assert assignment.compensation is not None
            assert round(float(assignment.compensation) * 1_000_000) == compensation_micro

            async def quality_shows() -> bool:
                records = await alice.quality(OPERATOR)
                return bool(records) and records[0].hours == 1

            await eventually(quality_shows, timeout_s=WAIT_S, interval_s=0.2,
                             message="the quality record")
    finally:
        stop.set()
        await service_task
        await conn.close()
        sshd_service.authorize([], [])
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gpux", "delivery", "verify", ISSUE, HOLDER, "--database-url",
         url, "--kafka", kafka_bootstrap, "--topic-namespace", namespace],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
