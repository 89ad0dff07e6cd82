"""The whole venue for the fault suite, on its own Kafka broker, PostgreSQL cluster and chain.

Nothing here touches the session's shared services: the suite kills its own broker, database
and node, so the tests that run after it find theirs as they left them.

Layout: one topic namespace; the database `venue` holds the ledger's and settlement's
schemas (settlement reads `ledger.trades`), `gateway` the gateway's keys. On chain, dev
account 0 deploys, 1 mints GPU-hour capacity (the suite's depositor) and 2 settles, so
the settler's nonces are its own. Accounts are wallet addresses that settle to themselves;
`fees` settles to a wallet of its own. The operator, a wallet account too, issues bonded
capacity with an API key of the operator role; the delivery service reports with a key of
the delivery role (account `gpux.delivery`, which never holds money).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from eth_account.signers.local import LocalAccount

from eventlog.errors import LogError
from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, TopicSpec
from gateway.store import PostgresKeyStore
from gateway.store import migrate as migrate_gateway
from harness.kafka import KafkaService
from harness.ports import free_port, port_is_open
from harness.postgres import PostgresService
from harness.service import Service
from ledger.migrate import SERVICE_ROLE, apply_migrations, set_service_password
from protocol import (
    AnyEvent,
    BondReleased,
    DeliveryAssigned,
    Deposited,
    InstrumentClosed,
    decode_event,
)
from runtime.postgres import create_database, url_with_credentials
from sdk.client import ApiKey
from settlement import store as settlement_store
from settlement.chain import Chain, Contracts, Deployment, deploy, dev_account
from settlement.dev import new_wallet
from tests.chaos.processes import DurableAnvil, GpuxProcess, child_env

log = logging.getLogger("gpux.chaos")

LEDGER_PASSWORD = "chaos-ledger"
DELIVERY_ACCOUNT = "gpux.delivery"
DELIVERY_KINDS_SQL = "'capacity_issued', 'bond_released', 'delivery_settled', 'redeemed'"
PROBE_TIMEOUT_S = 2.0
TAIL_FETCH_MAX = 5_000
TAIL_POLL_MS = 200
TAIL_RETRY_S = 0.5


@dataclass(frozen=True)
class Infrastructure:
    """The broker, the database cluster and the chain node, all the suite's own."""

    kafka: KafkaService
    postgres: PostgresService
    anvil: DurableAnvil

    @classmethod
    async def start(cls, root: Path) -> Infrastructure:
        """Start the three at once (the broker takes longest); stop all if one fails."""
        services = cls(KafkaService(root / "kafka"), PostgresService(root / "postgres"),
                       DurableAnvil(root / "anvil"))
        started = await asyncio.gather(
            *(asyncio.to_thread(service.start) for service in services.all()),
            return_exceptions=True)
        failures = [result for result in started if isinstance(result, BaseException)]
        if failures:
            services.stop()
            raise failures[0]
        return services

    def all(self) -> list[Service]:
        return [self.kafka, self.postgres, self.anvil]

    def stop(self) -> None:
        for service in self.all():
            try:
                service.stop()
            except Exception as error:  # noqa: BLE001 -- stop the others anyway
                log.warning("stopping %s failed: %s", service.name, error)


class EventTail:
    """Follow the events topic (read_committed) from the start, surviving broker outages."""

    def __init__(self, event_log: KafkaLog, topic: str) -> None:
        self.log = event_log
        self.topic = topic
        self.events: list[AnyEvent] = []
        self.deposit_ids: set[str] = set()
        self.assignments: list[DeliveryAssigned] = []
        self.closed: set[str] = set()  # instruments whose close's events have all been read
        self._closing: str | None = None
        self.next_offset = 0
        self.errors = 0
        self.last_error = ""

    @property
    def seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._follow(stop)
            except Exception as error:  # noqa: BLE001 -- the tail must outlive the broker's faults
                self.errors += 1
                self.last_error = repr(error)
                log.info("event tail: %s; reading again from offset %d", error, self.next_offset)
                try:
                    await asyncio.wait_for(stop.wait(), TAIL_RETRY_S)
                except TimeoutError:
                    pass

    async def _follow(self, stop: asyncio.Event) -> None:
        consumer = self.log.consumer(self.topic, start=self.next_offset,
                                     isolation="read_committed")
        await consumer.start()
        try:
            while not stop.is_set():
                for record in await consumer.getmany(TAIL_FETCH_MAX, TAIL_POLL_MS):
                    event = decode_event(record.value)
                    self.events.append(event)
                    self._note(event)
                    self.next_offset = record.offset + 1
        finally:
            await consumer.stop()

    def _note(self, event: AnyEvent) -> None:
        """Keep deposit ids and assignments; an instrument counts as closed once an event
        follows its close's assignments and releases (one command's events are contiguous,
        so by then every assignment of the close has been read)."""
        if isinstance(event, Deposited) and event.deposit_id is not None:
            self.deposit_ids.add(event.deposit_id)
        if isinstance(event, DeliveryAssigned):
            self.assignments.append(event)
        if self._closing is not None and not isinstance(event,
                                                        (DeliveryAssigned, BondReleased)):
            self.closed.add(self._closing)
            self._closing = None
        if isinstance(event, InstrumentClosed):
            self._closing = event.symbol


@dataclass
class Venue:
    """Everything the suite runs and the handles it needs to drive and inspect it."""

    root: Path
    infrastructure: Infrastructure
    namespace: str
    event_log: KafkaLog
    venue_url: str
    gateway_db_url: str
    deployment_path: Path
    contracts: Contracts
    minter: LocalAccount
    settler: LocalAccount
    fee_wallet: LocalAccount
    wallets: list[LocalAccount]
    operator: LocalAccount
    admin_key: ApiKey
    operator_key: ApiKey
    delivery_key: ApiKey
    gateway_port: int
    metrics_port: int
    engine: GpuxProcess | None = None
    ledger: GpuxProcess | None = None
    settlement: GpuxProcess | None = None
    gateway: GpuxProcess | None = None
    tail: EventTail | None = None
    symbols: list[str] = field(default_factory=list)  # listed without a bond
    deliverable: list[str] = field(default_factory=list)  # every one listed with a bond
    tradable: list[str] = field(default_factory=list)  # the load's: not closed (shared)

    @property
    def all_symbols(self) -> list[str]:
        return [*self.symbols, *self.deliverable]

    @property
    def commands_topic(self) -> str:
        return self.namespace + COMMANDS_TOPIC

    @property
    def events_topic(self) -> str:
        return self.namespace + EVENTS_TOPIC

    @property
    def engine_group(self) -> str:
        return f"{self.namespace}engine"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}"

    def services(self) -> list[GpuxProcess]:
        return [s for s in (self.engine, self.ledger, self.settlement, self.gateway)
                if s is not None]

    # --- progress probes (never raise: the thing they ask may be down) -------------------

    async def engine_applied(self) -> int:
        """Return the engine's committed command offset, -1 while the broker does not answer."""
        try:
            return await asyncio.wait_for(
                self.event_log.committed_offset(self.engine_group, self.commands_topic),
                PROBE_TIMEOUT_S * 3) or 0
        except (LogError, OSError, TimeoutError):
            return -1

    async def commands_end(self) -> int:
        try:
            return await asyncio.wait_for(
                self.event_log.end_offset(self.commands_topic, isolation="read_uncommitted"),
                PROBE_TIMEOUT_S * 3)
        except (LogError, OSError, TimeoutError):
            return -1

    async def query(self, sql: str, *args: object) -> list[asyncpg.Record] | None:
        """Run one query on the venue database; None while it does not answer."""
        try:
            conn = await asyncpg.connect(self.venue_url, timeout=PROBE_TIMEOUT_S,
                                         command_timeout=PROBE_TIMEOUT_S * 5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None
        finally:
            try:
                await conn.close(timeout=PROBE_TIMEOUT_S)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    async def ledger_seq(self) -> int:
        rows = await self.query("SELECT coalesce(max(last_seq), 0) FROM ledger.checkpoints")
        return -1 if rows is None else int(rows[0][0])

    async def settled_through(self) -> int:
        """Return the last trade seq of the settled batches (-1 when the database is down)."""
        rows = await self.query("SELECT coalesce(max(last_seq), 0) FROM settlement.batches "
                                "WHERE status = 'settled'")
        return -1 if rows is None else int(rows[0][0])

    async def last_settleable_seq(self) -> int:
        """Return the seq of the ledger's last entry settlement puts on chain: a trade or a
        delivery entry (issue, bond release, compensation, redemption)."""
        rows = await self.query("SELECT coalesce(max(seq), 0) FROM ledger.entries "
                                f"WHERE kind IN ('trade', {DELIVERY_KINDS_SQL})")
        return -1 if rows is None else int(rows[0][0])

    async def unpaid_withdrawals(self) -> int:
        rows = await self.query(
            "SELECT count(*) FROM ledger.withdrawals w LEFT JOIN settlement.payouts p "
            "ON p.withdrawal_seq = w.seq WHERE p.status IS DISTINCT FROM 'settled'")
        return -1 if rows is None else int(rows[0][0])

    # --- building it -----------------------------------------------------------------------

    def engine_seq(self) -> int:
        """Return the seq of the engine's last published event, -1 when it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
                text = response.read().decode()
        except OSError:
            return -1
        for line in text.splitlines():
            if line.startswith("gpux_engine_event_seq "):
                return int(float(line.split()[1]))
        return -1

    def engine_healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/healthz"
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def make_services(self, snapshot_every_commands: int) -> None:
        kafka = self.infrastructure.kafka.bootstrap_servers
        env = child_env(GPUX_SETTLER_KEY="0x" + bytes(self.settler.key).hex())
        services_dir = self.root / "services"
        namespace = ["--topic-namespace", self.namespace]
        self.engine = GpuxProcess(services_dir, "engine", [
            "engine", "--log", "kafka", "--kafka", kafka, *namespace,
            "--transactional-id", self.engine_group, "--group-id", self.engine_group,
            "--snapshot-dir", str(self.root / "snapshots"),
            "--snapshot-every-commands", str(snapshot_every_commands),
            "--batch-size-max", "500", "--batch-interval-ms", "5",
            "--metrics-port", str(self.metrics_port),
        ], env, probe=self.engine_healthy)
        service_url = url_with_credentials(self.venue_url, SERVICE_ROLE, LEDGER_PASSWORD)
        self.ledger = GpuxProcess(services_dir, "ledger", [
            "ledger", "run", "--kafka", kafka, "--database-url", service_url, *namespace,
            "--batch-size-max", "500", "--batch-interval-ms", "20",
        ], env)
        self.settlement = GpuxProcess(services_dir, "settlement", [
            "settlement", "run", "--rpc", self.infrastructure.anvil.url,
            "--deployment", str(self.deployment_path), "--database-url", self.venue_url,
            "--confirmations", "1", "--batch-interval-ms", "300", "--poll-interval-ms", "100",
            "--kafka", kafka, *namespace,
        ], env)
        self.gateway = GpuxProcess(services_dir, "gateway", [
            "gateway", "serve", "--kafka", kafka, "--database-url", self.gateway_db_url,
            "--port", str(self.gateway_port), "--gateway-id", "chaos", *namespace,
        ], env, probe=lambda: port_is_open(self.gateway_port))

    async def start_services(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(service.start) for service in self.services()))

    def stop_services(self) -> None:
        for service in reversed(self.services()):
            service.stop()


async def _prepare_databases(admin_url: str, fee_address: str) -> tuple[str, str]:
    """Create and migrate the venue and gateway databases; return their URLs."""
    venue_url = await create_database(admin_url, "venue")
    gateway_url = await create_database(admin_url, "gateway")
    conn = await asyncpg.connect(venue_url)
    try:
        await apply_migrations(conn)
        await set_service_password(conn, LEDGER_PASSWORD)
        await settlement_store.migrate(conn)
        await settlement_store.register_account(conn, "fees", fee_address)
    finally:
        await conn.close()
    await migrate_gateway(gateway_url)
    return venue_url, gateway_url


async def _prepare_keys(gateway_url: str, wallets: Sequence[LocalAccount],
                        operator: LocalAccount) -> tuple[ApiKey, ApiKey, ApiKey]:
    """Give the trading wallets the market maker's rate limits; return API keys of the
    admin, the operator (for its wallet account) and the delivery service."""
    key_store = await PostgresKeyStore.open(gateway_url)
    try:
        for wallet in wallets:
            await key_store.set_role(wallet.address, "market_maker")
        return (ApiKey(*await key_store.add_key("chaos-admin", "admin")),
                ApiKey(*await key_store.add_key(operator.address, "operator")),
                ApiKey(*await key_store.add_key(DELIVERY_ACCOUNT, "delivery")))
    finally:
        await key_store.close()


def _deploy(rpc_url: str, wallet_count: int, path: Path
            ) -> tuple[Contracts, list[LocalAccount], LocalAccount, LocalAccount]:
    """Deploy; return the contracts, the trading wallets, the fee wallet and the operator's."""
    chain = Chain(rpc_url)
    deployer, minter, settler = dev_account(0), dev_account(1), dev_account(2)
    deployment = deploy(chain, deployer, settler=settler.address, minter=minter.address)
    deployment.save(path)
    contracts = Contracts(chain, Deployment.load(path))
    wallets = [new_wallet(contracts) for _ in range(wallet_count)]
    return contracts, wallets, new_wallet(contracts), new_wallet(contracts)


async def build_venue(root: Path, infrastructure: Infrastructure, wallet_count: int,
                      snapshot_every_commands: int) -> Venue:
    """Create databases, topics and contracts, then the (not yet started) services."""
    deployment_path = root / "deployment.json"
    contracts, wallets, fee_wallet, operator = await asyncio.to_thread(
        _deploy, infrastructure.anvil.url, wallet_count, deployment_path)
    venue_url, gateway_url = await _prepare_databases(infrastructure.postgres.url,
                                                      fee_wallet.address)
    admin_key, operator_key, delivery_key = await _prepare_keys(gateway_url, wallets, operator)
    namespace = f"chaos{uuid.uuid4().hex[:8]}."
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=infrastructure.kafka.bootstrap_servers,
                                     request_timeout_ms=5_000, start_timeout_ms=10_000))
    await event_log.create_topics([TopicSpec(name=namespace + COMMANDS_TOPIC),
                                   TopicSpec(name=namespace + EVENTS_TOPIC)])
    venue = Venue(
        root=root, infrastructure=infrastructure, namespace=namespace, event_log=event_log,
        venue_url=venue_url, gateway_db_url=gateway_url, deployment_path=deployment_path,
        contracts=contracts, minter=dev_account(1), settler=dev_account(2),
        fee_wallet=fee_wallet, wallets=wallets, operator=operator, admin_key=admin_key,
        operator_key=operator_key, delivery_key=delivery_key,
        gateway_port=free_port(), metrics_port=free_port(),
    )
    venue.make_services(snapshot_every_commands)
    venue.tail = EventTail(event_log, venue.events_topic)
    return venue
