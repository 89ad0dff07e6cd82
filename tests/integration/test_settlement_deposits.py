"""Vault deposits reach the engine as `deposit` commands: once, and only when N blocks deep.

The engine service runs in-process on the real Kafka; the watcher reads a real anvil and
keeps its progress in a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from eth_utils import to_checksum_address

from eventlog.port import EventLog, Producer
from matching_engine.config import EngineConfig
from protocol import Deposited, DepositRejected, decode_event
from settlement import store
from settlement.chain import Chain, Contracts, deploy, dev_account
from settlement.deposits import DepositWatcher, WatcherConfig
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.testing import fresh_database
from tests.helpers import eventually, read_topic
from tests.integration.engine_run import engine_with_instrument

SYMBOL = "H100-SXM-80GB.eu-west.2026-02-01T00"
CONFIRMATIONS = 3


@dataclass
class Rig:
    """The deployed contracts, a migrated database, the event log and the engine's topics
    the deposit watcher writes to."""
    contracts: Contracts
    conn: asyncpg.Connection
    event_log: EventLog
    producer: Producer
    engine_config: EngineConfig

    def watcher(self) -> DepositWatcher:
        config = WatcherConfig(confirmations=CONFIRMATIONS,
                               topic_namespace=self.engine_config.topic_namespace)
        return DepositWatcher(self.contracts, self.conn, self.producer, config)

    def mine(self, blocks: int) -> None:
        self.contracts.chain.rpc("anvil_mine", [hex(blocks)])

    async def deposit_events(self) -> list[Deposited | DepositRejected]:
        values = await read_topic(self.event_log, self.engine_config.events_topic)
        events = [decode_event(value) for value in values]
        return [e for e in events if isinstance(e, (Deposited, DepositRejected))]


@pytest.fixture(scope="module")
async def venue(eth_rpc_url: str, database_url: str, kafka_bootstrap: str
                ) -> AsyncIterator[Rig]:
    chain = Chain(eth_rpc_url)
    admin = dev_account(0)
    contracts = Contracts(chain, deploy(chain, admin, settler=admin.address,
                                        minter=admin.address))
    conn = await asyncpg.connect(await fresh_database(database_url))
    await store.migrate(conn)
    try:
        async with engine_with_instrument(kafka_bootstrap, "s", SYMBOL) as run:
            yield Rig(contracts, conn, run.event_log, run.producer, run.config)
    finally:
        await conn.close()


async def test_confirmed_deposits_are_credited_once_even_when_read_again(venue: Rig) -> None:
    contracts = venue.contracts
    buyer, operator = new_wallet(contracts), new_wallet(contracts)
    usdc = deposit_usdc(contracts, buyer, 1_250_500_000)
    tokens = deposit_tokens(contracts, dev_account(0), operator, SYMBOL, 40, account="op-1")
    usdc_id = f"0x{bytes(usdc['transactionHash']).hex()}:{usdc['logs'][-1]['logIndex']}"
    token_id = f"0x{bytes(tokens['transactionHash']).hex()}:{tokens['logs'][-1]['logIndex']}"
    watcher = venue.watcher()
    start = await store.next_block(venue.conn, "deposits")
    venue.mine(CONFIRMATIONS - 1)  # the token deposit has N-1 blocks on top: N confirmations
    assert await watcher.step() == 2
    assert await store.bind_account(venue.conn, "op-1", buyer.address) == operator.address

    # A watcher that died before storing its progress reads the same blocks again.
    await store.save_next_block(venue.conn, "deposits", start or 0)
    assert await watcher.step() == 2

    async def both_refused_the_second_time() -> bool:
        events = await venue.deposit_events()
        return sum(isinstance(e, DepositRejected) for e in events) >= 2

    await eventually(both_refused_the_second_time, message="both repeats answered")
    events = await venue.deposit_events()
    credited = [e for e in events if isinstance(e, Deposited)
                and e.deposit_id in (usdc_id, token_id)]
    assert [(e.account, e.asset, e.amount) for e in credited] == [
        (buyer.address, "USDC", "1250.5"), ("op-1", SYMBOL, 40)]
    rejected = [(e.account, e.reason) for e in events if isinstance(e, DepositRejected)]
    assert rejected == [(buyer.address, "duplicate_deposit"), ("op-1", "duplicate_deposit")]


async def test_a_deposit_dropped_by_a_short_reorg_is_never_credited(venue: Rig) -> None:
    contracts = venue.contracts
    chain = contracts.chain
    wallet = new_wallet(contracts)
    watcher = venue.watcher()
    await watcher.step()  # read up to here first
    chain.transact(contracts.usdc.functions.mint(wallet.address, 10_000_000), wallet)
    chain.transact(contracts.usdc.functions.approve(contracts.vault.address, 10_000_000), wallet)
    snapshot = chain.rpc("evm_snapshot")
    doomed = chain.transact(contracts.vault.functions.deposit(0, 7_000_000, ""), wallet)
    venue.mine(CONFIRMATIONS - 2)  # N-1 confirmations: not deep enough
    assert await watcher.step() == 0
    assert chain.rpc("evm_revert", [snapshot]) is True
    # another history: a different deposit, then enough blocks for everything to be N deep
    kept = chain.transact(contracts.vault.functions.deposit(0, 3_000_000, ""), wallet)
    venue.mine(CONFIRMATIONS + 2)
    assert await watcher.step() == 1
    doomed_id = f"0x{bytes(doomed['transactionHash']).hex()}:{doomed['logs'][-1]['logIndex']}"
    kept_id = f"0x{bytes(kept['transactionHash']).hex()}:{kept['logs'][-1]['logIndex']}"
    assert doomed_id != kept_id

    async def kept_credited() -> bool:
        events = await venue.deposit_events()
        return any(isinstance(e, Deposited) and e.deposit_id == kept_id for e in events)

    await eventually(kept_credited, message="the deposit on the surviving chain is credited")
    events = await venue.deposit_events()
    credited_ids = [e.deposit_id for e in events if isinstance(e, Deposited)]
    assert doomed_id not in credited_ids
    assert credited_ids.count(kept_id) == 1
    (credited,) = [e for e in events if isinstance(e, Deposited) and e.deposit_id == kept_id]
    assert (credited.account, credited.amount) == (to_checksum_address(wallet.address), "3")
    assert contracts.vault_balance(wallet.address, 0) == 3_000_000
