"""The one venue builder: a venue's services as asyncio tasks of one process.

`VenueConfig` says what runs. The engine (under its supervisor) and `gateways` gateways
always; with `database_url` and `ledger`, the ledger projector (its schema migrated first);
with `settlement`, the deposit watcher and the batch submitter; with `index`, the price
index service (its schema migrated first, so readers find the table from the start); with
`delivery`, the delivery service (delivery.service: certificates, probes, signed samples,
reports), its schema migrated first too and started after the gateways, since it sends its
reports through the first one with `delivery_api_key` (a `delivery`-role key).
`gpux dev` runs all of it on embedded defaults (gpux.dev.venue); the gateway's end-to-end
tests and the fan-out benchmark run an engine and a gateway over Kafka or the embedded log
(`Venue.running`).
The gateway's key store is the caller's (PostgreSQL in `gpux dev`, in memory in tests;
None: no logins).

`start` brings the services up in the order they depend on each other and returns once the
engine and every gateway answer; `failed` completes when any of them stops on its own (a
venue with a dead part should not look alive); `stop` sets their common stop event and
waits for each, bounded, then closes what they used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from delivery import store as delivery_store
from delivery.config import ServiceConfig
from delivery.metrics import DeliveryMetrics
from delivery.service import DeliverySupervisor
from eventlog.port import EventLog, Producer, TopicSpec
from gateway.auth import KeyStore
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.service import GatewayService, ProcessRequest
from index import store as index_store
from index.metrics import IndexMetrics
from index.service import IndexServiceConfig, IndexSupervisor
from ledger.metrics import LedgerMetrics
from ledger.migrate import apply_migrations
from ledger.projector import ProjectorConfig, ProjectorSupervisor
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.service import EngineSupervisor
from protocol import FEE_ACCOUNT, AnyCommand, encode
from runtime.observability import MetricsServer
from runtime.postgres import connect
from settlement import store as settlement_store
from settlement.chain import Contracts
from settlement.deposits import DepositWatcher, WatcherConfig
from settlement.metrics import SettlementMetrics
from settlement.submitter import Submitter, SubmitterConfig

__all__ = ["SettlementParts", "Venue", "VenueConfig"]

log = logging.getLogger("gpux.venue")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SettlementParts:
    """What settlement runs with: the contracts, the key that sends the settling
    transactions, the fee account's wallet, and the two services' settings."""

    contracts: Contracts
    settler: Any  # an eth_account LocalAccount
    fee_address: str
    watcher: WatcherConfig = WatcherConfig()
    submitter: SubmitterConfig = SubmitterConfig()


@dataclass(frozen=True)
class VenueConfig:
    """Which services run and how; the engine's topic namespace is the gateways' too."""

    engine: EngineConfig = EngineConfig()
    gateway: GatewayConfig = GatewayConfig()
    gateways: int = 1
    database_url: str | None = None  # the ledger and settlement need one
    ledger: ProjectorConfig | None = None  # None: no ledger projector
    settlement: SettlementParts | None = None  # None: no settlement
    index: IndexServiceConfig | None = None  # None: no price index service
    delivery: ServiceConfig | None = None  # None: no delivery service
    # The delivery service's (key_id, private_key) of a `delivery`-role key: it reports
    # through the first gateway (its URL is known once the gateway listens). None: the
    # service measures and stores reports but sends none.
    delivery_api_key: tuple[str, str] | None = None
    metrics_port: int = -1  # -1: no metrics server; 0: any free port

    def __post_init__(self) -> None:
        if self.gateways < 1:
            raise ValueError(f"gateways must be >= 1, got {self.gateways}")
        if (self.ledger or self.settlement or self.index or self.delivery) is not None \
                and self.database_url is None:
            raise ValueError("the ledger, settlement, the index and delivery need database_url")
        if self.delivery_api_key is not None and self.delivery is None:
            raise ValueError("delivery_api_key is for the delivery service: give delivery")


@dataclass
class Venue:
    """Engine, gateways and, as configured, ledger and settlement over one event log."""

    event_log: EventLog
    config: VenueConfig
    key_store: KeyStore | None = None
    process_request: ProcessRequest | None = None  # plain HTTP on the first gateway's port
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    gateways: list[GatewayService] = field(default_factory=list)
    producer: Producer | None = None
    metrics_server: MetricsServer | None = None
    gateway_metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    ledger_metrics: LedgerMetrics = field(default_factory=LedgerMetrics)
    settlement_metrics: SettlementMetrics = field(default_factory=SettlementMetrics)
    index_metrics: IndexMetrics = field(default_factory=IndexMetrics)
    delivery_metrics: DeliveryMetrics = field(default_factory=DeliveryMetrics)
    delivery: DeliverySupervisor | None = None
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _closers: list[Callable[[], Coroutine[Any, Any, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = EngineSupervisor(self.event_log, self.config.engine)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, event_log: EventLog, *, namespace: str,
                      gateway: GatewayConfig | None = None, key_store: KeyStore | None = None,
                      engine_batch_interval_ms: int = 2) -> AsyncIterator[Venue]:
        """Run an engine and a gateway on `namespace` (any free port) until the block exits."""
        venue = cls(event_log, VenueConfig(
            engine=EngineConfig(topic_namespace=namespace, transactional_id=f"{namespace}engine",
                                group_id=f"{namespace}engine",
                                batch_interval_ms=engine_batch_interval_ms),
            gateway=dataclasses.replace(gateway or GatewayConfig(), port=0),
        ), key_store=key_store)
        try:
            await venue.start()
            yield venue
        finally:
            await venue.stop()

    # -- what callers read -------------------------------------------------------------------

    @property
    def engine_state(self) -> Engine | None:
        """The Python core's state once the engine serves; None before (or on the native
        core, whose state is in Rust)."""
        service = self.engine.service
        if service is None or not service.ready.is_set() or service.core.name != "python":
            return None
        return service.engine

    @property
    def contracts(self) -> Contracts:
        """Settlement's contracts (a venue without settlement has none)."""
        assert self.config.settlement is not None, "this venue runs no settlement"
        return self.config.settlement.contracts

    @property
    def gateway(self) -> GatewayService | None:
        return self.gateways[0] if self.gateways else None

    @property
    def port(self) -> int:
        """The first gateway's port."""
        gateway = self.gateway
        assert gateway is not None and gateway.port is not None, "the venue has not started"
        return gateway.port

    @property
    def urls(self) -> list[str]:
        return [f"ws://{g.config.host}:{g.port}" for g in self.gateways]

    def healthy(self) -> bool:
        return (self.engine.healthy() and bool(self.gateways)
                and (self.delivery is None or self.delivery.healthy())
                and all(g.ready.is_set() for g in self.gateways)
                and all(not task.done() for task in self._tasks.values()))

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate, then start the services in dependency order; return when all answer."""
        config = self.config
        await self._migrate()
        await self.event_log.create_topics([TopicSpec(name=config.engine.commands_topic),
                                            TopicSpec(name=config.engine.events_topic)])
        self._spawn("engine", self.engine.run(self.stop_event))
        await self._until(self.engine.healthy, "the engine recovered")
        self.producer = self.event_log.producer()
        await self.producer.start()
        self._closers.append(self.producer.stop)
        if config.ledger is not None:
            assert config.database_url is not None
            projector = ProjectorSupervisor(self.event_log, config.database_url,
                                            config.ledger, self.ledger_metrics)
            self._spawn("ledger", projector.run(self.stop_event))
        if config.index is not None:
            assert config.database_url is not None
            index = IndexSupervisor(
                self.event_log, config.database_url,
                dataclasses.replace(config.index, topic_namespace=config.engine.topic_namespace),
                self.index_metrics)
            self._spawn("index", index.run(self.stop_event))
        if config.settlement is not None:
            await self._start_settlement(config.settlement)
        await self._start_gateways()
        await self._start_delivery()
        await self._start_metrics()

    async def _migrate(self) -> None:
        config = self.config
        if config.database_url is None:
            return
        connection = await connect(config.database_url)
        try:
            if config.ledger is not None:
                await apply_migrations(connection)
            if config.index is not None:
                await index_store.migrate(connection)
            if config.delivery is not None:
                await delivery_store.migrate(connection)
            if config.settlement is not None:
                await settlement_store.migrate(connection)
                await settlement_store.register_account(connection, FEE_ACCOUNT,
                                                        config.settlement.fee_address)
        finally:
            await connection.close()

    async def _start_settlement(self, parts: SettlementParts) -> None:
        database_url = self.config.database_url
        assert database_url is not None and self.producer is not None

        async def reopen() -> asyncpg.Connection:  # a dropped connection is replaced
            return await connect(database_url, application_name="gpux-settlement")

        watcher_connection = await reopen()
        submitter_connection = await reopen()
        self._closers += [watcher_connection.close, submitter_connection.close]
        namespace = self.config.engine.topic_namespace
        watcher = DepositWatcher(
            parts.contracts, watcher_connection, self.producer,
            dataclasses.replace(parts.watcher, topic_namespace=namespace),
            reopen=reopen, metrics=self.settlement_metrics)
        submitter = Submitter(parts.contracts, submitter_connection, parts.settler,
                              parts.submitter, reopen=reopen, metrics=self.settlement_metrics)
        self._spawn("deposits", watcher.run(self.stop_event))
        self._spawn("settlement", submitter.run(self.stop_event))

    async def _start_gateways(self) -> None:
        base = self.config.gateway
        for index in range(self.config.gateways):
            gateway = GatewayService(
                self.event_log,
                dataclasses.replace(
                    base, topic_namespace=self.config.engine.topic_namespace,
                    port=base.port if index == 0 else 0,
                    gateway_id=base.gateway_id if index == 0 else f"{base.gateway_id}{index}",
                    clock_interval_ms=base.clock_interval_ms if index == 0 else None),
                self.key_store,
                process_request=self.process_request if index == 0 else None,
                metrics=self.gateway_metrics if index == 0 else None)
            self.gateways.append(gateway)
            self._spawn(f"gateway{index}" if index else "gateway", gateway.run(self.stop_event))
        for gateway in self.gateways:
            await self._until(gateway.ready.is_set, "the gateway listens")

    async def _start_delivery(self) -> None:
        """Start the delivery service once the gateway it reports through listens; return
        when it serves (its keys loaded and published)."""
        config = self.config
        if config.delivery is None:
            return
        assert config.database_url is not None
        service_config = dataclasses.replace(
            config.delivery, topic_namespace=config.engine.topic_namespace)
        if config.delivery_api_key is not None:
            service_config = dataclasses.replace(service_config, gateway_url=self.urls[0],
                                                 api_key=config.delivery_api_key)
        self.delivery = DeliverySupervisor(self.event_log, config.database_url, service_config,
                                           self.delivery_metrics)
        self._spawn("delivery", self.delivery.run(self.stop_event))
        await self._until(self.delivery.healthy, "the delivery service serves")

    async def _start_metrics(self) -> None:
        if self.config.metrics_port < 0:
            return
        registries = [self.engine.metrics.registry, self.gateway_metrics.registry]
        if self.config.ledger is not None:
            registries.append(self.ledger_metrics.registry)
        if self.config.settlement is not None:
            registries.append(self.settlement_metrics.registry)
        if self.config.index is not None:
            registries.append(self.index_metrics.registry)
        if self.config.delivery is not None:
            registries.append(self.delivery_metrics.registry)
        self.metrics_server = MetricsServer(registries, self.healthy,
                                            host=self.config.gateway.host,
                                            port=self.config.metrics_port)
        await self.metrics_server.start()

    async def stop(self) -> None:
        """Stop every service (each bounded), then close what they used."""
        self.stop_event.set()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in late:
                log.warning("%s did not stop within %.0f s: cancelling it", task.get_name(),
                            STOP_TIMEOUT_S)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), CLOSE_TIMEOUT_S)
        self._closers.clear()

    def close_on_stop(self, close: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Have `stop` close something the services used, after they have stopped."""
        self._closers.append(close)

    # -- running -----------------------------------------------------------------------------

    async def failed(self) -> str:
        """Wait until a service stops on its own; return what happened to it."""
        while True:
            tasks = list(self._tasks.values())
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception() if not task.cancelled() else None
                return f"{task.get_name()} stopped" + (f": {error!r}" if error else "")

    async def send_commands(self, commands: list[AnyCommand]) -> None:
        """Write admin commands (listings) straight to the commands topic."""
        assert self.producer is not None, "the venue has not started"
        if commands:
            await self.producer.send_batch(self.config.engine.commands_topic,
                                           [encode(c) for c in commands])

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.create_task(coroutine, name=name)

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until `condition` holds; raise if a service dies or it takes too long."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not condition():
            for task in self._tasks.values():
                if task.done():
                    error = None if task.cancelled() else task.exception()
                    raise RuntimeError(f"{task.get_name()} stopped before {what}") from error
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {READY_TIMEOUT_S:.0f} s for {what}")
            await asyncio.sleep(0.05)
