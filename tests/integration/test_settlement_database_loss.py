"""Settlement (`gpux settlement run --kafka`) keeps running through lost database connections.

The submitter and the deposit watcher run as one `python -m gpux settlement run` process on a
real anvil, PostgreSQL and Kafka (the engine in-process credits the deposit commands). Trades
arrive in `ledger.trades` and deposits are made on chain while the process loses its
PostgreSQL connections again and again, each time just after a batch was stored: the server
terminates its sessions (on the session's PostgreSQL), or the whole server restarts (a
cluster of the test's own: a fast shutdown, then a SIGKILL with crash recovery). The same
process must reconnect and go on from what the store holds; afterwards every trade is in
exactly one batch, every batch settled exactly once on chain (one `BatchSettled` each, its
root on chain, the Vault's balances moved once), and every deposit credited exactly once.
Its /metrics counts the connections replaced, and /healthz answers 200 again afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from eventlog.kafka import KafkaLog
from eventlog.port import EventLog
from harness.paths import tail
from harness.ports import free_port
from matching_engine.config import EngineConfig
from protocol import Deposited, decode_event
from runtime.postgres import drop_database
from settlement import store
from settlement.chain import USDC_ASSET, Chain, Contracts, deploy, dev_account, token_id
from settlement.cli import APPLICATION_NAME as SETTLEMENT_APPLICATION
from settlement.dev import WALLET_ETH_WEI, deposit_tokens, deposit_usdc, new_wallet
from settlement.fills import Fill
from settlement.testing import create_ledger_tables, fresh_database, insert_trades
from tests.helpers import eventually, kill_if_running, read_topic, stop_cleanly
from tests.integration.database_faults import (
    database_of,
    end_live_sessions,
    observe,
    own_postgres,
    query_while_restarting,
)
from tests.integration.engine_run import engine_with_instrument
from tests.integration.metrics_probe import health, scrape

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "H100-SXM-80GB.eu-west.2026-05-01T00"
PRICE_MICRO = 2_500_000
TRADES_PER_ROUND = 6
BATCH_SIZE_MAX = 4
DEPOSIT_MICRO = 3_000_000
SETTLE_TIMEOUT_S = 120.0

Fault = Callable[[], Awaitable[None]]


@dataclass
class Rig:
    """Contracts, wallets, a migrated database and the engine's topics for one test."""

    contracts: Contracts
    deployment_path: Path
    settler: LocalAccount
    buyer: LocalAccount
    seller: LocalAccount
    fees: LocalAccount
    database_url: str
    event_log: EventLog
    engine_config: EngineConfig
    fills: list[Fill] = field(default_factory=list)
    deposit_ids: list[str] = field(default_factory=list)

    def balances(self) -> dict[str, tuple[int, int]]:
        asset = token_id(SYMBOL)
        return {name: (self.contracts.vault_balance(wallet.address, USDC_ASSET),
                       self.contracts.vault_balance(wallet.address, asset))
                for name, wallet in (("buyer", self.buyer), ("seller", self.seller),
                                     ("fees", self.fees))}

    async def add_trades(self, count: int) -> None:
        """Append trades of 1..3 GPU-hours from the seller ("op-1") to the buyer, with fees."""
        fills = []
        for _ in range(count):
            seq = len(self.fills) + 1
            quantity = 1 + seq % 3
            fills.append(Fill(seq=seq, trade_id=str(seq), instrument=SYMBOL,
                              price_micro=PRICE_MICRO, quantity=quantity,
                              buyer=self.buyer.address, seller="op-1",
                              buyer_fee_micro=quantity * 2_000, seller_fee_micro=quantity * 1_000))
            self.fills.append(fills[-1])
        connection = await observe(self.database_url)
        try:
            await insert_trades(connection, fills)
        finally:
            await connection.close()

    async def deposit(self) -> None:
        """Deposit USDC from a new wallet; remember the id the watcher will give it."""
        wallet = new_wallet(self.contracts)
        receipt = await asyncio.to_thread(deposit_usdc, self.contracts, wallet, DEPOSIT_MICRO)
        self.deposit_ids.append(
            f"0x{bytes(receipt['transactionHash']).hex()}:{receipt['logs'][-1]['logIndex']}")

    async def credited(self) -> list[str]:
        """Return the deposit id of every `deposited` event so far, repeats included."""
        values = await read_topic(self.event_log, self.engine_config.events_topic)
        events = [decode_event(value) for value in values]
        return [event.deposit_id for event in events if isinstance(event, Deposited)]

    async def stored(self, query: str) -> int | None:
        value = await query_while_restarting(self.database_url, query)
        return None if value is None else int(value)


def funded_wallet(chain: Chain) -> LocalAccount:
    wallet: LocalAccount = Account.create()
    chain.rpc("anvil_setBalance", [wallet.address, hex(WALLET_ETH_WEI)])
    return wallet


async def prepare_venue(eth_rpc_url: str, admin_url: str, event_log: EventLog,
                        engine_config: EngineConfig, tmp_path: Path) -> Rig:
    chain = Chain(eth_rpc_url)
    admin, settler = dev_account(0), funded_wallet(chain)  # a settler of its own: own nonces
    deployment = deploy(chain, admin, settler=settler.address, minter=admin.address)
    deployment_path = tmp_path / "deployment.json"
    deployment.save(deployment_path)
    contracts = Contracts(chain, deployment)
    database_url = await fresh_database(admin_url, prefix="settlement_loss")
    buyer, seller, fees = new_wallet(contracts), new_wallet(contracts), new_wallet(contracts)
    connection = await observe(database_url)
    try:
        await store.migrate(connection)
        await create_ledger_tables(connection)
        await store.register_account(connection, "op-1", seller.address)
        await store.register_account(connection, "fees", fees.address)
    finally:
        await connection.close()
    deposit_usdc(contracts, buyer, 10_000_000_000)
    deposit_tokens(contracts, admin, seller, SYMBOL, 1_000, account="op-1")
    return Rig(contracts, deployment_path, settler, buyer, seller, fees, database_url,
                 event_log, engine_config)


@pytest.fixture
async def engine(kafka_bootstrap: str) -> AsyncIterator[tuple[KafkaLog, EngineConfig]]:
    """Run the engine in-process on a fresh namespace, with the trades' instrument listed."""
    async with engine_with_instrument(kafka_bootstrap, "sloss", SYMBOL) as run:
        yield run.event_log, run.config


def start_settlement(venue: Rig, eth_rpc_url: str, kafka_bootstrap: str, log_path: Path,
                     metrics_port: int) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "settlement", "run", "--rpc", eth_rpc_url,
             "--deployment", str(venue.deployment_path), "--database-url", venue.database_url,
             "--confirmations", "1", "--batch-size-max", str(BATCH_SIZE_MAX),
             "--batch-interval-ms", "0", "--poll-interval-ms", "50", "--kafka", kafka_bootstrap,
             "--topic-namespace", venue.engine_config.topic_namespace,
             "--metrics-port", str(metrics_port)],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT),
                 "GPUX_SETTLER_KEY": "0x" + bytes(venue.settler.key).hex()},
        )  # fmt: skip


async def settle_through_faults(venue: Rig, eth_rpc_url: str, kafka_bootstrap: str,
                                faults: list[Fault], tmp_path: Path) -> None:
    """Feed trades and deposits to a running settlement process, injecting each fault just
    after a new batch is stored; then wait until everything is settled and credited."""
    before = venue.balances()
    log_path = tmp_path / "settlement.log"
    port = free_port()
    process = start_settlement(venue, eth_rpc_url, kafka_bootstrap, log_path, port)

    def still_running() -> None:
        assert process.poll() is None, (
            f"settlement exited with {process.returncode}:\n{tail(log_path, 40)}")

    async def batches_beyond(count: int) -> bool:
        still_running()
        stored = await venue.stored("SELECT count(*) FROM settlement.batches")
        return stored is not None and stored > count

    try:
        for fault in faults:
            batches = await venue.stored("SELECT count(*) FROM settlement.batches")
            assert batches is not None
            await venue.add_trades(TRADES_PER_ROUND)
            await venue.deposit()
            await eventually(lambda batches=batches: batches_beyond(batches),
                             timeout_s=SETTLE_TIMEOUT_S, message="a new batch stored")
            await fault()
        await venue.add_trades(TRADES_PER_ROUND)  # and some after the last fault
        await venue.deposit()

        async def all_settled_and_credited() -> bool:
            still_running()
            settled = await venue.stored("SELECT coalesce(max(last_seq), 0) "
                                         "FROM settlement.batches WHERE status = 'settled'")
            if settled is None or settled < len(venue.fills):
                return False
            return set(venue.deposit_ids) <= set(await venue.credited())

        await eventually(all_settled_and_credited, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.1,
                         message="every trade settled and every deposit credited")
        await check_metrics_after_faults(port, len(faults), still_running)
        stop_cleanly(process, log_path)
    finally:
        kill_if_running(process)
    await check_settled_once(venue, before)


async def check_metrics_after_faults(port: int, faults: int,
                                    still_running: Callable[[], None]) -> None:
    """Each fault replaced the submitter's connection (the watcher's at least once), and
    /healthz answers 200 again: both loops run on open connections."""

    async def recovered() -> bool:
        still_running()
        return await health(port) == 200

    await eventually(recovered, timeout_s=30, message="/healthz answers 200 after the faults")
    metrics = await scrape(port)
    assert metrics['gpux_settlement_reconnects_total{component="submitter"}'] >= faults
    assert metrics['gpux_settlement_reconnects_total{component="deposits"}'] >= 1
    assert metrics["gpux_settlement_batches_settled_total"] >= 1


async def check_settled_once(venue: Rig, before: dict[str, tuple[int, int]]) -> None:
    connection = await observe(venue.database_url)
    try:
        batches = await connection.fetch(
            "SELECT batch_id, first_seq, last_seq, fill_count, fills_root, status "
            "FROM settlement.batches ORDER BY batch_id")
        leaves = await connection.fetchval("SELECT count(DISTINCT trade_id) "
                                           "FROM settlement.batch_fills")
    finally:
        await connection.close()
    assert [row["batch_id"] for row in batches] == list(range(1, len(batches) + 1))
    assert all(row["status"] == "settled" for row in batches)
    assert [(row["first_seq"], row["last_seq"]) for row in batches] == [
        (previous["last_seq"] + 1 if previous is not None else 1, row["last_seq"])
        for previous, row in zip([None, *batches[:-1]], batches, strict=True)
    ], "batches cover the trades in order, without gap or overlap"
    assert sum(row["fill_count"] for row in batches) == leaves == len(venue.fills)
    contracts = venue.contracts
    settled_events = await asyncio.to_thread(lambda: list(
        contracts.vault.events.BatchSettled().get_logs(
            from_block=contracts.deployment.block_number, to_block="latest")))
    assert sorted(int(event["args"]["batchId"]) for event in settled_events) == [
        row["batch_id"] for row in batches], "each batch settled on chain exactly once"
    for row in batches:
        assert contracts.batch_root(row["batch_id"]) == bytes(row["fills_root"])
    hours = sum(fill.quantity for fill in venue.fills)
    notional = hours * PRICE_MICRO
    assert venue.balances() == {
        "buyer": (before["buyer"][0] - notional - hours * 2_000, before["buyer"][1] + hours),
        "seller": (before["seller"][0] + notional - hours * 1_000, before["seller"][1] - hours),
        "fees": (before["fees"][0] + hours * 3_000, 0),
    }, "the Vault moved every trade's money and tokens once"
    credited = await venue.credited()
    assert all(credited.count(deposit_id) == 1 for deposit_id in venue.deposit_ids), (
        "every deposit credited exactly once")


async def test_settlement_goes_on_after_the_server_ends_its_sessions_again_and_again(
    eth_rpc_url: str, database_url: str, kafka_bootstrap: str,
    engine: tuple[KafkaLog, EngineConfig], tmp_path: Path,
) -> None:
    venue = await prepare_venue(eth_rpc_url, database_url, *engine, tmp_path)
    terminated: list[int] = []

    async def end_sessions() -> None:
        terminated.append(await end_live_sessions(database_url,
                                                   database_of(venue.database_url),
                                                   SETTLEMENT_APPLICATION))

    await settle_through_faults(venue, eth_rpc_url, kafka_bootstrap, [end_sessions] * 4,
                                tmp_path)
    assert terminated and all(ended >= 1 for ended in terminated), terminated
    await drop_database(database_url, database_of(venue.database_url))


async def test_settlement_goes_on_after_postgresql_restarts_and_crashes(
    eth_rpc_url: str, kafka_bootstrap: str, engine: tuple[KafkaLog, EngineConfig],
    tmp_path: Path,
) -> None:
    with own_postgres(tmp_path / "postgres") as postgres:
        venue = await prepare_venue(eth_rpc_url, postgres.url, *engine, tmp_path)

        async def restart() -> None:  # a fast shutdown: the server ends every session
            await asyncio.to_thread(postgres.restart)

        async def crash() -> None:  # SIGKILL: sockets just close; crash recovery on start
            await asyncio.to_thread(postgres.kill)
            await asyncio.to_thread(postgres.restart)

        await settle_through_faults(venue, eth_rpc_url, kafka_bootstrap, [restart, crash],
                                    tmp_path)
