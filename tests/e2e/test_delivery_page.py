"""The trading page's delivery access and quality record in headless Chromium: carol holds 5
GPU-hours of op-7's node at close; her Deliveries tab shows the assignment waiting for an SSH
key, she registers one through the page's form, and once the delivery service has certified
it the row shows the `ssh` line with a copy button; the Quality tab, public, lists op-7's
record from the `quality` feed when its hour is reported. No console error, every frame
within docs/asyncapi.yaml.

The venue (engine and gateway in this process) runs on the embedded log with keys in memory;
its gateway serves web/dist and reads a delivery database of this module's own on the real
PostgreSQL, where the test writes what the delivery service would (its CA's key, the
assignment it read from the log, the certificate it issued, the report of the hour).
Screenshots and the console go to test-artifacts/delivery-page/.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery import registry
from delivery.ca import CertificateAuthority, holder_principal, public_key_line_of
from delivery.quality import HourRecord, Incident
from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from eventlog.port import COMMANDS_TOPIC
from gateway.config import GatewayConfig
from gateway.static import StaticSite
from gateway.testing import MemoryKeyStore
from gpux.venue import Venue, VenueConfig
from matching_engine.config import EngineConfig
from protocol import AnyCommand, Deposit, ListInstrument, Tick, encode
from runtime.postgres import connect, create_database, drop_database
from sdk.access import fingerprint
from sdk.client import ApiKey, Client
from tests.e2e.browser import Browser, chromium_path, unavailable
from tests.e2e.test_trading_page import assert_pages_kept_the_contract
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
SITE_DIR = ROOT / "web" / "dist"
ARTIFACTS = ROOT / "test-artifacts" / "delivery-page"
NAMESPACE = "dpage."
MINUTE_NS = 60 * 10**9
HOUR_NS = 60 * MINUTE_NS
GPU = "H100-SXM-80GB"
REGION = "eu-west"
NODE = "h100-node-7"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    async with Browser.launch(str(executable), tmp_path / "profile", ARTIFACTS) as launched:
        yield launched


@pytest.fixture
async def delivery_url(database_url: str) -> AsyncIterator[str]:
    name = f"dpage_{uuid.uuid4().hex[:12]}"
    yield await create_database(database_url, name)
    await drop_database(database_url, name)


async def send(event_log: EmbeddedLog, commands: list[AnyCommand]) -> None:
    producer = event_log.producer()
    await producer.start()
    try:
        await producer.send_batch(NAMESPACE + COMMANDS_TOPIC, [encode(c) for c in commands])
    finally:
        await producer.stop()


async def test_page_registers_a_key_shows_the_ssh_line_and_the_operators_record(
    delivery_url: str, browser: Browser
) -> None:
    if not (SITE_DIR / "index.html").is_file():
        unavailable(f"{SITE_DIR} is not built: run `npm run build:web`")
    site = StaticSite.from_directory(SITE_DIR)
    store = MemoryKeyStore()
    keys = {name: store.add_key(name, role) for name, role in (
        ("carol", "trader"), ("op-7", "operator"))}
    now = time.time_ns()
    soon, later = f"{GPU}.{REGION}.soon", f"{GPU}.{REGION}.later"
    start = now + 10 * MINUTE_NS
    issue_id = f"op-7.{soon}.{NODE}"
    with tempfile.TemporaryDirectory(prefix="gpux-dpage-") as directory:
        event_log = EmbeddedLog.open(Path(directory) / "log", EmbeddedConfig(fsync=False))
        venue = Venue(event_log, VenueConfig(
            engine=EngineConfig(topic_namespace=NAMESPACE, transactional_id=f"{NAMESPACE}engine",
                                group_id=f"{NAMESPACE}engine", batch_interval_ms=2),
            # The index in the same database (its own schema): the page reads GET /index.
            gateway=GatewayConfig(port=0, delivery_database_url=delivery_url,
                                  quality_poll_interval_ms=100, index_database_url=delivery_url),
        ), key_store=store, process_request=site.process_request)
        database = await connect(delivery_url)
        try:
            await venue.start()
            url = venue.urls[0]
            ca = CertificateAuthority.generate()
            await hour_assigned_to_carol(venue, event_log, url, keys, soon, later, start,
                                         issue_id)
            await registry.migrate(database)  # as the delivery service does at its start
            await registry.publish_ca(database, ca.public_key_line(), time.time_ns())
            async with Client(url, credentials=ApiKey(*keys["op-7"]), reconnect=False) as op:
                await op.register_node(
                    NODE, gpu=GPU, region=REGION, gpu_count=8, gpu_memory_mib=81_559,
                    host="127.0.0.1", port=2222, login="gpux",
                    host_key=public_key_line_of(ed25519.Ed25519PrivateKey.generate()))
            # What the delivery service writes when it reads the assignment from the log.
            await database.execute(
                "INSERT INTO delivery.instruments VALUES ($1, $2, $3, $4, 1, 1)",
                soon, GPU, REGION, start)
            await database.execute(
                "INSERT INTO delivery.assignments VALUES ($1, 'carol', $2, 'op-7', $3, 5, $4, "
                "$5, 2)", issue_id, soon, NODE, start, start + HOUR_NS)

            key_id, private_key = keys["carol"]
            carol = await browser.new_page(1600, 1000)
            await carol.goto(f"{url.replace('ws://', 'http://', 1)}/#key={key_id}:{private_key}"
                             f"&account=carol&instrument={later}")
            await carol.wait_for("document.getElementById('account-name').textContent"
                                 " === 'carol'", "carol is logged in")
            await carol.click("#tab-deliveries")
            row = f'#deliveries-body tr[data-issue-id="{issue_id}"][data-holder="carol"]'
            await carol.wait_for(f"document.querySelector('{row} [data-action=register-key]')"
                                 " !== null", "the assignment waits for an SSH key")
            await carol.screenshot("01-access-pending")

            key_line = public_key_line_of(ed25519.Ed25519PrivateKey.generate())
            await carol.fill("#ssh-key-input", key_line + " carol@laptop")
            await carol.click("#ssh-key-submit")
            await carol.wait_for("document.getElementById('ssh-key-status').textContent"
                                 f" === 'Registered: {fingerprint(key_line)}'",
                                 "the page registered carol's key")
            known = await registry.ssh_keys(database, "carol")
            assert known == [(fingerprint(key_line), key_line)]

            # The delivery service certifies the key for the window; the page polls for it.
            certificate = ca.issue(key_line, f"carol/{issue_id}", [holder_principal(NODE)],
                                   start, start + HOUR_NS, serial=1)
            await database.execute(
                "INSERT INTO delivery.certificates VALUES ($1, 'carol', $2, 1, $3, $4, $5, $6)",
                issue_id, fingerprint(key_line), certificate, start, start + HOUR_NS,
                time.time_ns())
            await carol.wait_for(f"document.querySelector('{row} [data-field=ssh]') !== null",
                                 "the ssh line shows once the certificate is issued")
            line = await carol.text(f"{row} [data-field=ssh]")
            assert line.startswith("ssh -i ~/.ssh/id_ed25519 -o CertificateFile=gpux-")
            assert line.endswith("-p 2222 gpux@127.0.0.1"), line
            assert await carol.evaluate(
                f"document.querySelector('{row} [data-action=copy-ssh]') !== null")
            await carol.screenshot("02-access-ssh-line")

            # The hour is measured and reported: op-7's record is public on the Quality tab.
            hour = HourRecord(
                issue_id=issue_id, holder="carol", operator="op-7", node_id=NODE, gpu=GPU,
                region=REGION, window_start_ns=start, quantity=5, window_minutes=60,
                delivered_minutes=45, unmeasured_minutes=0, delivered_ppm=750_000,
                challenges_passed=3, challenges_failed=0, throughput_ratios=[1.2, 1.4, 2.0],
                incidents=[Incident(first_minute=45, last_minute=59, outcome="unreachable")])
            await database.execute(
                "INSERT INTO delivery.reports (issue_id, holder, node_id, issuer, "
                "delivered_ppm, delivered_minutes, window_minutes, evidence_root, quality, "
                "reported_ns) VALUES ($1, 'carol', $2, 'op-7', 750000, 45, 60, $3, $4::jsonb, "
                "$5)", issue_id, NODE, bytes(32), msgspec.json.encode(hour).decode(),
                time.time_ns())
            anyone = await browser.new_page(1600, 1000)
            await anyone.goto(f"{url.replace('ws://', 'http://', 1)}/#instrument={later}")
            await anyone.wait_for("!document.getElementById('tab-quality').hidden",
                                  "the gateway keeps a quality record: the tab shows")
            await anyone.click("#tab-quality")
            record = '#quality-body tr[data-operator="op-7"]'
            await anyone.wait_for(f"document.querySelector('{record}') !== null",
                                  "op-7's record shows without a login")
            assert await anyone.text(f"{record} [data-field=share]") == "75%"
            assert await anyone.text(f"{record} [data-field=delivered]") == "3.75 / 5"
            assert await anyone.text(f"{record} [data-field=ratios]") == "1.20 / 1.40 / 2.00"
            assert await anyone.text(f"{record} [data-field=incidents]") == "1"
            assert await anyone.evaluate(
                f"document.querySelector('{record} [data-bucket=\"75-90\"]').dataset.count"
            ) == "1"
            await anyone.screenshot("03-quality-record")
            sent = assert_pages_kept_the_contract({"carol": carol, "anyone": anyone})
            assert {"register_ssh_key", "delivery_access"} <= sent, sent
        finally:
            await database.close()
            await venue.stop()
            await event_log.close()


async def hour_assigned_to_carol(venue: Venue, event_log: EmbeddedLog, url: str,
                                 keys: dict[str, tuple[str, str]], soon: str, later: str,
                                 start: int, issue_id: str) -> None:
    """op-7 issues 8 GPU-hours of its node on an hour about to close and sells 5 to carol;
    trading closes: carol's 5 are assigned to her."""
    now = time.time_ns()
    listing = dict(gpu=GPU, region=REGION, delivery_hours=1, tick_size="0.01",
                   max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0)
    await send(event_log, [
        ListInstrument(ts=now, symbol=soon, delivery_start=start, bond_per_gpu_hour="3",
                       **listing),  # type: ignore[arg-type]
        ListInstrument(ts=now, symbol=later, delivery_start=start + 24 * HOUR_NS,
                       **listing),  # type: ignore[arg-type]
        Deposit(ts=now, account="op-7", asset="USDC", amount="1000"),
        Deposit(ts=now, account="carol", asset="USDC", amount="1000"),
    ])
    core = venue.gateways[0].core
    await eventually(lambda: {soon, later} <= core.projection.instruments.keys()
                     and core.projection.event_seq >= 4, message="the hours are listed")
    async with Client(url, credentials=ApiKey(*keys["op-7"]), reconnect=False) as op, \
            Client(url, credentials=ApiKey(*keys["carol"]), reconnect=False) as carol:
        assert (await op.issue_capacity(soon, NODE, 8, issue_id)).accepted
        assert (await op.new_order(soon, "sell", 8, "2.15")).accepted
        assert (await carol.new_order(soon, "buy", 5, "2.15")).accepted
    await send(event_log, [Tick(ts=start)])
    await eventually(lambda: any(
        assignment.holder == "carol"
        for assignment in core.projection.deliveries("carol")["assignments"]),
        message="carol's 5 GPU-hours are assigned at close")
