"""The ledger's and settlement's metrics live beside every other service's in one process,
and their loops tell /healthz whether they run on an open database connection."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from ledger.metrics import LedgerMetrics
from ledger.projector import ProjectorConfig, ProjectorSupervisor
from matching_engine.metrics import EngineMetrics
from settlement.chain import dev_account
from settlement.metrics import SettlementMetrics
from settlement.submitter import Outcome, Submitter, SubmitterConfig


def names(registry: CollectorRegistry) -> set[str]:
    return {metric.name for metric in registry.collect()}


def test_every_service_can_register_in_one_process_and_one_registry() -> None:
    # two of each in one process, as a test or `gpux dev` may make them: no clash
    ledger, settlement = LedgerMetrics(), SettlementMetrics()
    LedgerMetrics(), SettlementMetrics()
    services = [names(EngineMetrics().registry), names(GatewayMetrics().registry),
                names(ledger.registry), names(settlement.registry)]
    assert all(services)
    assert len(set().union(*services)) == sum(map(len, services)), "no name in two services"
    shared = CollectorRegistry()
    EngineMetrics(shared)
    LedgerMetrics(shared)
    SettlementMetrics(shared)  # a duplicate name would raise ValueError here
    assert names(shared) == services[0] | services[2] | services[3]


def test_a_projector_supervisor_is_unhealthy_before_it_runs() -> None:
    event_log: Any = object()  # never used before run()
    supervisor = ProjectorSupervisor(event_log, "postgresql://unused", ProjectorConfig())
    assert not supervisor.healthy()


class StubConn:
    """The backlog query's answer; closed on demand, as a connection the database dropped."""

    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    async def fetch(self, query: str, *args: object) -> list[dict[str, int]]:
        assert "ledger.trades" in query
        return [{"settled_seq": 7, "unsettled_trades": 3, "unpaid_withdrawals": 1,
                 "open_batches": 1, "open_payouts": 0, "open_index_publications": 0}]


class OneStep(Submitter):
    """Look at its own health during a step, then stop."""

    def __init__(self, stop: asyncio.Event) -> None:
        contracts: Any = type("Contracts", (), {"chain": None})()
        super().__init__(contracts, StubConn(), dev_account(0), SubmitterConfig())
        self.stop = stop
        self.seen: list[bool] = []

    async def step(self) -> Outcome:
        self.seen.append(self.healthy())
        self.conn.closed = True
        self.seen.append(self.healthy())
        self.conn.closed = False
        self.stop.set()
        return Outcome.IDLE


async def test_a_submitter_is_healthy_only_while_it_runs_on_an_open_connection() -> None:
    stop = asyncio.Event()
    submitter = OneStep(stop)
    assert not submitter.healthy()
    await submitter.run(stop)
    assert submitter.seen == [True, False]
    assert not submitter.healthy()
    registry = submitter.metrics.registry
    assert registry.get_sample_value("gpux_settlement_settled_trade_seq") == 7
    assert registry.get_sample_value("gpux_settlement_unsettled_trades") == 3
    assert registry.get_sample_value("gpux_settlement_unpaid_withdrawals") == 1
    assert registry.get_sample_value("gpux_settlement_open_jobs", {"kind": "batch"}) == 1
