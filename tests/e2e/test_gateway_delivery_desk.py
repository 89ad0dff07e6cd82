"""The gateway's delivery desk and quality record on a real PostgreSQL: an operator registers
a node (refused until a delivery service has published its CA, then recorded, then updated;
another account's claim to the id forbidden), a holder registers SSH keys (idempotent, at
most ten) and reads its assignment's access, pending until a certificate is issued and then
with the certificate and `ssh` line, which the SDK writes out; a reported hour reaches the
`quality` feed, the `quality` request and `GET /quality`. Every frame is checked against
docs/asyncapi.yaml.

The delivery service's own rows (the CA's key, an instrument and an assignment, a
certificate, a report) are written here through `delivery.registry` and plain SQL, as the
service would; the venue runs on the embedded log with keys held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery import cli as delivery_cli
from delivery import registry
from delivery.ca import CertificateAuthority, holder_principal, public_key_line_of
from delivery.quality import HourRecord, Incident
from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from gateway.config import GatewayConfig
from gateway.testing import ApiContract, MemoryKeyStore
from gpux.venue import Venue
from runtime.postgres import connect, create_database, drop_database
from sdk.access import fingerprint, write_access
from sdk.client import ApiKey, Client, RequestFailed, Subscription
from wsapi.messages import QualityMessage

HOUR_NS = 3600 * 10**9
GPU = "H100-SXM-80GB"


def new_key_line() -> str:
    return public_key_line_of(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
async def delivery_url(database_url: str) -> AsyncIterator[str]:
    """A delivery database of the test's own (its reports' ids start at 1)."""
    name = f"gwdesk_{uuid.uuid4().hex[:12]}"
    yield await create_database(database_url, name)
    await drop_database(database_url, name)


async def test_nodes_keys_access_and_the_quality_record_through_the_gateway(
    delivery_url: str,
) -> None:
    contract = ApiContract()
    store = MemoryKeyStore()
    operator = ApiKey(*store.add_key("op1", "operator"))
    rival = ApiKey(*store.add_key("op2", "operator"))
    holder = ApiKey(*store.add_key("alice", "trader"))
    config = GatewayConfig(port=0, delivery_database_url=delivery_url,
                           quality_poll_interval_ms=50)
    ca = CertificateAuthority.generate()
    host_key = new_key_line()
    node = dict(gpu=GPU, region="eu-west", gpu_count=8, gpu_memory_mib=81_559,
                host="127.0.0.1", port=2222, login="gpux", host_key=host_key,
                inventory={"source": "profile", "device": "H100"})
    with tempfile.TemporaryDirectory(prefix="gpux-desk-") as directory:
        event_log = EmbeddedLog.open(Path(directory) / "log", EmbeddedConfig(fsync=False))
        try:
            async with Venue.running(event_log, namespace="desk.", key_store=store,
                                     gateway=config) as venue:
                url = venue.urls[0]
                database = await connect(delivery_url)
                try:
                    async with Client(url, credentials=operator, on_frame=contract.hook()) as op, \
                            Client(url, credentials=rival, on_frame=contract.hook()) as op2, \
                            Client(url, credentials=holder, on_frame=contract.hook()) as alice, \
                            Client(url, on_frame=contract.hook()) as anyone:
                        # Public: no login (a subscription keeps the connection open).
                        feed = await anyone.quality_feed()
                        with pytest.raises(RequestFailed) as no_ca:
                            await op.register_node("n-17", **node)  # type: ignore[arg-type]
                        assert no_ca.value.code == "unavailable" and no_ca.value.retriable
                        await registry.publish_ca(database, ca.public_key_line(), time.time_ns())
                        registered = await op.register_node("n-17", **node)  # type: ignore[arg-type]
                        assert (registered.ca_public_key, registered.holder_principal,
                                registered.prober_principal) == (
                            ca.public_key_line(), holder_principal("n-17"), "gpux-prober")
                        await op.register_node("n-17", **{**node, "port": 2200})  # type: ignore[arg-type]
                        stored = await registry.node(database, "n-17")
                        assert stored is not None and (stored.port, stored.account) == (2200, "op1")
                        with pytest.raises(RequestFailed) as taken:
                            await op2.register_node("n-17", **node)  # type: ignore[arg-type]
                        assert (taken.value.code, taken.value.field) == ("forbidden", "$.node_id")
                        with pytest.raises(RequestFailed) as bad_key:
                            await op.register_node("n-18", **{**node, "host_key": "ssh-rsa AAAA"})  # type: ignore[arg-type]
                        assert bad_key.value.field == "$.host_key"

                        await keys_and_access(database, ca, alice, tempfile_dir=Path(directory))
                        await access_from_the_command_line(url, holder, Path(directory))
                        await quality_record(database, url, op, anyone, feed)
                finally:
                    await database.close()
        finally:
            await event_log.close()
    assert contract.violations == []


async def keys_and_access(database: object, ca: CertificateAuthority, alice: Client,
                          tempfile_dir: Path) -> None:
    identity = tempfile_dir / "id_ed25519"
    private = ed25519.Ed25519PrivateKey.generate()
    identity.write_text("not read by the SDK")
    key_line = public_key_line_of(private)
    identity.with_name("id_ed25519.pub").write_text(key_line + " alice@laptop\n")
    first = await alice.register_ssh_key(key_line + " alice@laptop")
    assert (first.fingerprint, first.added) == (fingerprint(key_line), True)
    assert not (await alice.register_ssh_key(key_line)).added, "the same key again"
    for _ in range(9):
        assert (await alice.register_ssh_key(new_key_line())).added
    with pytest.raises(RequestFailed) as limit:
        await alice.register_ssh_key(new_key_line())
    assert (limit.value.code, limit.value.field) == ("ssh_key_limit", "$.public_key")

    start_ns = time.time_ns() // HOUR_NS * HOUR_NS + HOUR_NS
    connection = database
    await connection.execute(  # type: ignore[attr-defined]
        "INSERT INTO delivery.instruments VALUES ($1, $2, 'eu-west', $3, 1, 1)",
        "H100.eu.h1", GPU, start_ns)
    await connection.execute(  # type: ignore[attr-defined]
        "INSERT INTO delivery.assignments VALUES ('op1-h1-n17', 'alice', 'H100.eu.h1', 'op1', "
        "'n-17', 5, $1, $2, 7)", start_ns, start_ns + HOUR_NS)
    (pending,) = await alice.delivery_access()
    assert pending.pending and pending.certificates == [] and pending.ssh_command is None
    assert (pending.host, pending.port, pending.window_start) == ("127.0.0.1", 2200, start_ns)
    certificate = ca.issue(key_line, "alice/op1-h1-n17", [holder_principal("n-17")], start_ns,
                           start_ns + HOUR_NS, serial=1)
    await connection.execute(  # type: ignore[attr-defined]
        "INSERT INTO delivery.certificates VALUES ('op1-h1-n17', 'alice', $1, 1, $2, $3, $4, "
        "$5)", fingerprint(key_line), certificate, start_ns, start_ns + HOUR_NS, time.time_ns())
    (item,) = await alice.delivery_access("op1-h1-n17")
    assert not item.pending and item.certificates[0].certificate == certificate
    assert item.ssh_command is not None and "gpux@127.0.0.1" in item.ssh_command
    assert await alice.delivery_access("another-issue") == []
    (line,) = write_access([item], identity)
    assert line.ssh_command is not None
    assert (tempfile_dir / item.certificates[0].file).read_text().strip() == certificate


async def access_from_the_command_line(url: str, holder: ApiKey, directory: Path) -> None:
    """`gpux delivery access HOLDER` prints the holder's ssh line, and refuses a key that logs
    in as another account."""
    identity = directory / "id_ed25519"
    key = f"{holder.key_id}:{holder.private_key}"
    argv = ["access", "alice", "--url", url, "--key", key, "--identity", str(identity)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert await asyncio.to_thread(delivery_cli.main, argv) == 0
    assert "# op1-h1-n17 node n-17" in printed.getvalue()
    assert "gpux@127.0.0.1" in printed.getvalue()
    assert await asyncio.to_thread(delivery_cli.main, ["access", "bob", *argv[2:]]) == 2


async def quality_record(database: object, url: str, op: Client, anyone: Client,
                         feed: Subscription) -> None:
    snapshot = await feed.get(10)
    assert isinstance(snapshot, QualityMessage) and snapshot.operators == []
    hour = HourRecord(
        issue_id="op1-h1-n17", holder="alice", operator="op1", node_id="n-17", gpu=GPU,
        region="eu-west", window_start_ns=HOUR_NS, quantity=5, window_minutes=60,
        delivered_minutes=45, unmeasured_minutes=0, delivered_ppm=750_000,
        challenges_passed=3, challenges_failed=1, throughput_ratios=[1.2, 1.4, 2.0],
        incidents=[Incident(first_minute=45, last_minute=59, outcome="unreachable")])
    await database.execute(  # type: ignore[attr-defined]
        "INSERT INTO delivery.reports (issue_id, holder, node_id, issuer, delivered_ppm, "
        "delivered_minutes, window_minutes, evidence_root, quality, reported_ns) VALUES "
        "('op1-h1-n17', 'alice', 'n-17', 'op1', 750000, 45, 60, $1, $2::jsonb, 1)",
        bytes(32), msgspec.json.encode(hour).decode())
    update = await feed.get(10)
    assert isinstance(update, QualityMessage) and update.kind == "update"
    (record,) = update.operators
    assert (record.operator, record.hours, record.gpu_hours_assigned,
            record.gpu_hours_delivered, record.incidents_count) == ("op1", 1, 5, 3_750_000, 1)
    assert record.delivered_share_histogram["75-90"] == 1
    assert record.throughput_ratio_percentiles is not None
    assert record.throughput_ratio_percentiles.p50 == 1.4
    assert [node.node_id for node in record.nodes] == ["n-17"]
    assert await anyone.quality("op1") == [record]
    assert await op.quality_http() == [record]
    assert await op.quality_http("nobody") == []
    http_url = url.replace("ws://", "http://")
    with pytest.raises(urllib.error.HTTPError) as bad:
        # In a thread: the gateway answering it runs on this event loop.
        await asyncio.to_thread(urllib.request.urlopen, http_url + "/quality?who=op1",
                                timeout=10)
    assert bad.value.code == 400 and "who" in json.loads(bad.value.read())["error"]
