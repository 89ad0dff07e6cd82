"""The venue's services as asyncio tasks of one process, with one /metrics port for all.

Each service is built from the classes its own command uses (matching_engine.service,
ledger.cli, settlement.cli, gateway.cli): the engine supervisor, the ledger projector
(supervised), the deposit watcher and the batch submitter, the gateway with the trading
page and a clock. `start` brings them up in the order they depend on each other and
returns once the engine and the gateway answer; `failed` completes when any of them stops
on its own (which `gpux dev` treats as fatal: a venue with a dead part should not look
alive); `stop` sets their common stop event and waits for each, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from eventlog.port import COMMANDS_TOPIC, EventLog, Producer
from gateway import store as gateway_store
from gateway.config import GatewayConfig, RateLimit
from gateway.metrics import GatewayMetrics
from gateway.service import GatewayService
from gateway.static import StaticSite
from gpux.dev.chain import DEV_CHAIN_ID, settler
from gpux.dev.market import FEES_WALLET
from gpux.dev.site import DevSite
from ledger.metrics import LedgerMetrics
from ledger.migrate import apply_migrations
from ledger.projector import ProjectorConfig, run_supervised
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.service import EngineSupervisor
from protocol import FEE_ACCOUNT, AnyCommand, encode
from runtime.observability import MetricsServer
from runtime.postgres import connect as ledger_connect
from settlement import store as settlement_store
from settlement.chain import Contracts, dev_account
from settlement.deposits import DepositWatcher, WatcherConfig
from settlement.metrics import SettlementMetrics
from settlement.submitter import Submitter, SubmitterConfig

log = logging.getLogger("gpux.dev")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# anvil mines a block per transaction: one confirmation is as deep as a dev chain gets
# without waiting for further traffic.
CONFIRMATIONS = 1
SETTLEMENT_BATCH_INTERVAL_MS = 2000
DEPOSIT_POLL_INTERVAL_MS = 500
CLOCK_INTERVAL_MS = 1000
SNAPSHOT_EVERY_COMMANDS = 20_000


def dev_role_limits() -> dict[str, RateLimit]:
    """The gateway's limits, with room for the demo operator's first quotes on all 72 hours
    at once (one mass quote each)."""
    limits = dict(GatewayConfig().role_limits)
    limits["operator"] = RateLimit(per_second=50, burst=200)
    return limits


@dataclass(frozen=True)
class VenueConfig:
    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8765
    metrics_port: int = -1  # -1: no metrics server; 0: any free port


class Venue:
    """Engine, ledger, settlement and gateway over one event log, one database, one chain."""

    def __init__(self, event_log: EventLog, contracts: Contracts, config: VenueConfig) -> None:
        self.event_log = event_log
        self.contracts = contracts
        self.config = config
        self.stop_event = asyncio.Event()
        self.engine = EngineSupervisor(event_log, EngineConfig(
            snapshot_dir=config.data_dir / "snapshots",
            snapshot_every_commands=SNAPSHOT_EVERY_COMMANDS,
        ))
        self.gateway_metrics = GatewayMetrics()
        self.ledger_metrics = LedgerMetrics()
        self.settlement_metrics = SettlementMetrics()
        self.gateway: GatewayService | None = None
        self.key_store: gateway_store.PostgresKeyStore | None = None
        self.metrics_server: MetricsServer | None = None
        self.producer: Producer | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closers: list[Callable[[], Coroutine[Any, Any, Any]]] = []

    # -- what callers read -------------------------------------------------------------------

    @property
    def engine_state(self) -> Engine | None:
        service = self.engine.service
        return service.engine if service is not None and service.ready.is_set() else None

    @property
    def port(self) -> int:
        assert self.gateway is not None and self.gateway.port is not None
        return self.gateway.port

    def healthy(self) -> bool:
        return (self.engine.healthy() and self.gateway is not None
                and self.gateway.ready.is_set()
                and all(not task.done() for task in self._tasks.values()))

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate, then start the services in dependency order; return when all answer."""
        database_url = self.config.database_url
        await self._migrate(database_url)
        self._spawn("engine", self.engine.run(self.stop_event))
        await self._until(self.engine.healthy, "the engine recovered")
        self.producer = self.event_log.producer()
        await self.producer.start()
        self._closers.append(self.producer.stop)
        self._spawn("ledger", run_supervised(self.event_log, database_url, ProjectorConfig(),
                                             self.stop_event, metrics=self.ledger_metrics))
        await self._start_settlement(database_url)
        await self._start_gateway(database_url)
        await self._start_metrics()

    async def _migrate(self, database_url: str) -> None:
        connection = await ledger_connect(database_url)
        try:
            await apply_migrations(connection)
            await settlement_store.migrate(connection)
            await settlement_store.register_account(connection, FEE_ACCOUNT,
                                                    dev_account(FEES_WALLET).address)
        finally:
            await connection.close()
        await gateway_store.migrate(database_url)

    async def _start_settlement(self, database_url: str) -> None:
        watcher_connection = await asyncpg.connect(database_url)
        self._closers.append(watcher_connection.close)
        submitter_connection = await asyncpg.connect(database_url)
        self._closers.append(submitter_connection.close)
        assert self.producer is not None
        # With `reopen`, both replace a connection the database dropped, as `gpux settlement`.
        async def reopen() -> asyncpg.Connection:
            connection: asyncpg.Connection = await asyncpg.connect(database_url)
            return connection

        watcher = DepositWatcher(self.contracts, watcher_connection, self.producer, WatcherConfig(
            confirmations=CONFIRMATIONS, poll_interval_ms=DEPOSIT_POLL_INTERVAL_MS),
            reopen=reopen, metrics=self.settlement_metrics)
        submitter = Submitter(self.contracts, submitter_connection, settler(), SubmitterConfig(
            confirmations=CONFIRMATIONS, batch_interval_ms=SETTLEMENT_BATCH_INTERVAL_MS),
            reopen=reopen, metrics=self.settlement_metrics)
        self._spawn("deposits", watcher.run(self.stop_event))
        self._spawn("settlement", submitter.run(self.stop_event))

    async def _start_gateway(self, database_url: str) -> None:
        key_store = await gateway_store.PostgresKeyStore.open(database_url)
        self.key_store = key_store
        proof_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        site = DevSite(StaticSite.from_directory(), proof_pool, self.contracts)
        config = GatewayConfig(host=self.config.host, port=self.config.port,
                               clock_interval_ms=CLOCK_INTERVAL_MS, role_limits=dev_role_limits(),
                               eip712_chain_id=DEV_CHAIN_ID)
        self.gateway = GatewayService(self.event_log, config, key_store,
                                      process_request=site.process_request,  # type: ignore[arg-type]
                                      metrics=self.gateway_metrics)
        # closed after the gateway's task has ended (closers run after the tasks)
        self._closers += [key_store.close, proof_pool.close]
        self._spawn("gateway", self.gateway.run(self.stop_event))
        gateway = self.gateway
        await self._until(gateway.ready.is_set, "the gateway listens")

    async def _start_metrics(self) -> None:
        if self.config.metrics_port < 0:
            return
        registries = [self.engine.metrics.registry, self.gateway_metrics.registry,
                      self.ledger_metrics.registry, self.settlement_metrics.registry]
        self.metrics_server = MetricsServer(registries, self.healthy, host=self.config.host,
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
                await asyncio.wait_for(close(), 10)

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
        assert self.producer is not None
        if commands:
            await self.producer.send_batch(COMMANDS_TOPIC, [encode(c) for c in commands])

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
