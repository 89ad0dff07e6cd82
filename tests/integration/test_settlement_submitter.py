"""The batcher and submitter on real anvil and PostgreSQL, with the faults it must survive:
a restart after an unrecorded send, a kill between recording and broadcasting, a stuck and
a dropped transaction, a reorganisation shorter than N, and the chain node restarted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount

from harness.anvil import AnvilService, dumped_chain
from settlement import store
from settlement.chain import USDC_ASSET, Chain, Contracts, deploy, dev_account, token_id
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.errors import ChainUnavailableError
from settlement.fills import Fill
from settlement.proofs import prove
from settlement.submitter import Outcome, Submitter, SubmitterConfig
from settlement.testing import (
    create_ledger_tables,
    fresh_database,
    insert_trades,
    insert_withdrawal,
)

SYMBOL = "H200-SXM-141GB.us-west.2026-03-01T00"
CONFIRMATIONS = 3
PRICE_MICRO = 2_000_000


@dataclass
class Rig:
    """The deployed contracts, a migrated database and the wallets that settle, buy, sell
    and collect fees."""
    contracts: Contracts
    conn: asyncpg.Connection
    settler: LocalAccount
    buyer: LocalAccount
    seller: LocalAccount
    fees: LocalAccount
    next_seq: int = 1

    @property
    def chain(self) -> Chain:
        return self.contracts.chain

    def submitter(self, **overrides: int) -> Submitter:
        settings = {"batch_interval_ms": 0, **overrides}
        config = SubmitterConfig(confirmations=CONFIRMATIONS, poll_interval_ms=10, **settings)
        return Submitter(self.contracts, self.conn, self.settler, config)

    def mine(self, blocks: int = 1) -> None:
        self.chain.rpc("anvil_mine", [hex(blocks)])

    def settler_nonce(self) -> int:
        return int(self.chain.w3.eth.get_transaction_count(self.settler.address))

    async def add_trades(self, count: int, buyer: str | None = None) -> list[Fill]:
        """Trades of 1..3 GPU-hours from the seller ("op-1") to the buyer, with fees."""
        fills = []
        for _ in range(count):
            seq = self.next_seq
            quantity = 1 + seq % 3
            fills.append(Fill(seq=seq, trade_id=str(seq), instrument=SYMBOL,
                              price_micro=PRICE_MICRO, quantity=quantity,
                              buyer=buyer or self.buyer.address, seller="op-1",
                              buyer_fee_micro=quantity * 2_000, seller_fee_micro=quantity * 1_000))
            self.next_seq += 1
        await insert_trades(self.conn, fills)
        return fills

    async def add_withdrawal(self, account: str, asset: str, amount: int) -> int:
        seq = self.next_seq
        self.next_seq += 1
        await insert_withdrawal(self.conn, seq, account, asset, amount)
        return seq


@pytest.fixture(scope="module")
async def venue(eth_rpc_url: str, database_url: str) -> AsyncIterator[Rig]:
    chain = Chain(eth_rpc_url)
    admin, settler = dev_account(0), dev_account(2)
    deployment = deploy(chain, admin, settler=settler.address, minter=admin.address)
    contracts = Contracts(chain, deployment)
    conn = await asyncpg.connect(await fresh_database(database_url))
    await store.migrate(conn)
    await create_ledger_tables(conn)
    buyer, seller, fees = new_wallet(contracts), new_wallet(contracts), new_wallet(contracts)
    deposit_usdc(contracts, buyer, 100_000_000_000)
    deposit_tokens(contracts, admin, seller, SYMBOL, 10_000, account="op-1")
    await store.register_account(conn, "op-1", seller.address)
    await store.register_account(conn, "fees", fees.address)
    try:
        yield Rig(contracts, conn, settler, buyer, seller, fees)
    finally:
        await conn.close()


async def drive(venue: Rig, submitter: Submitter, steps_max: int = 40) -> list[Outcome]:
    """Step until the open batch settles, mining a block whenever one is awaited."""
    outcomes: list[Outcome] = []
    for _ in range(steps_max):
        outcome = await submitter.step()
        outcomes.append(outcome)
        if outcome == Outcome.SETTLED:
            return outcomes
        if outcome in (Outcome.CONFIRMING, Outcome.WAITING):
            venue.mine()
    raise AssertionError(f"no settlement after {steps_max} steps: {outcomes}")


@contextmanager
def automine_off(venue: Rig) -> Iterator[None]:
    venue.chain.rpc("evm_setAutomine", [False])
    try:
        yield
    finally:
        venue.chain.rpc("evm_setAutomine", [True])


def balances(venue: Rig) -> dict[str, tuple[int, int]]:
    asset = token_id(SYMBOL)
    return {name: (venue.contracts.vault_balance(wallet.address, USDC_ASSET),
                   venue.contracts.vault_balance(wallet.address, asset))
            for name, wallet in (("buyer", venue.buyer), ("seller", venue.seller),
                                 ("fees", venue.fees))}


async def test_trades_settle_as_one_netted_batch_whose_fills_prove(venue: Rig) -> None:
    before = balances(venue)
    fills = await venue.add_trades(30)
    submitter = venue.submitter()
    outcomes = await drive(venue, submitter)
    # Sent once, then only awaited: anvil's automine may answer before or after it mines.
    assert outcomes[:2] == [Outcome.STORED, Outcome.SENT]
    assert set(outcomes[2:-1]) <= {Outcome.WAITING, Outcome.CONFIRMING}
    assert await submitter.step() == Outcome.IDLE
    hours = sum(fill.quantity for fill in fills)
    notional = hours * PRICE_MICRO
    after = balances(venue)
    assert after["buyer"] == (before["buyer"][0] - notional - hours * 2_000,
                              before["buyer"][1] + hours)
    assert after["seller"] == (before["seller"][0] + notional - hours * 1_000,
                               before["seller"][1] - hours)
    assert after["fees"] == (before["fees"][0] + hours * 3_000, 0)
    batch = await store.get_batch(venue.conn, 1)
    assert batch is not None and batch.status == "settled"
    assert (batch.first_seq, batch.last_seq, batch.fill_count) == (1, 30, 30)
    assert len(batch.deltas) == 5  # buyer, seller, fees in USDC; buyer, seller in tokens
    for trade_id in ("1", "17", "30"):
        proof = await prove(venue.conn, venue.contracts, trade_id)
        assert proof.verified and proof.batch_id == "1"
        assert proof.tx_hash == "0x" + (batch.tx_hash or b"").hex()


async def test_a_trade_of_an_account_without_address_waits_for_its_registration(
    venue: Rig,
) -> None:
    carol = new_wallet(venue.contracts)
    deposit_usdc(venue.contracts, carol, 1_000_000_000)
    await venue.add_trades(2)
    await venue.add_trades(1, buyer="carol")
    await venue.add_trades(1)
    submitter = venue.submitter()
    await drive(venue, submitter)
    assert await submitter.step() == Outcome.WAITING_FOR_ACCOUNTS
    assert await submitter.step() == Outcome.WAITING_FOR_ACCOUNTS
    batch = await store.get_batch(venue.conn, 2)
    assert batch is not None and batch.fill_count == 2  # stops before carol's trade
    await store.register_account(venue.conn, "carol", carol.address)
    await drive(venue, submitter)
    batch = await store.get_batch(venue.conn, 3)
    assert batch is not None and (batch.first_seq, batch.fill_count) == (33, 2)
    assert venue.contracts.vault_balance(carol.address, token_id(SYMBOL)) == 1 + 33 % 3


async def test_after_a_restart_a_batch_sent_but_not_recorded_is_not_sent_again(
    venue: Rig,
) -> None:
    await venue.add_trades(5)
    first = venue.submitter()
    assert await first.step() == Outcome.STORED
    batch = await store.open_batch(venue.conn)
    assert batch is not None and batch.status == "pending"
    # The previous incarnation broadcast the batch and died before recording anything.
    venue.chain.transact(venue.contracts.vault.functions.settle(
        batch.batch_id, batch.fills_root, batch.assets, batch.deltas, batch.supply),
        venue.settler)
    nonce = venue.settler_nonce()
    outcomes = await drive(venue, venue.submitter())
    assert Outcome.SENT not in outcomes and Outcome.RESENT not in outcomes
    assert venue.settler_nonce() == nonce


async def test_a_withdrawal_is_paid_out_once_the_trades_before_it_settle(venue: Rig) -> None:
    fills = await venue.add_trades(2)
    seq = await venue.add_withdrawal("op-1", "USDC", 1_500_000)
    patient = venue.submitter(batch_interval_ms=60_000)
    assert await patient.step() == Outcome.WAITING_FOR_SETTLEMENT
    assert await store.get_payout(venue.conn, seq) is None
    vault_before = venue.contracts.vault_balance(venue.seller.address, USDC_ASSET)
    submitter = venue.submitter()
    await drive(venue, submitter)  # the batch of the two trades
    outcomes = await drive(venue, submitter)  # then the payout
    assert outcomes[:2] == [Outcome.STORED, Outcome.SENT]
    payout = await store.get_payout(venue.conn, seq)
    assert payout is not None and payout.status == "settled"
    assert payout.address == venue.seller.address and payout.amount == 1_500_000
    earned = sum(fill.quantity * (PRICE_MICRO - 1_000) for fill in fills)
    assert venue.contracts.vault_balance(venue.seller.address, USDC_ASSET) == (
        vault_before + earned - 1_500_000)
    assert venue.contracts.usdc.functions.balanceOf(venue.seller.address).call() == 1_500_000
    assert venue.contracts.vault.functions.withdrawalPaid(seq).call()


async def test_a_withdrawal_of_an_account_without_address_waits(venue: Rig) -> None:
    seq = await venue.add_withdrawal("dave", "USDC", 1)
    submitter = venue.submitter()
    assert await submitter.step() == Outcome.WAITING_FOR_ACCOUNTS
    dave = new_wallet(venue.contracts)
    deposit_usdc(venue.contracts, dave, 5)
    await store.register_account(venue.conn, "dave", dave.address)
    await drive(venue, submitter)
    payout = await store.get_payout(venue.conn, seq)
    assert payout is not None and payout.status == "settled"
    assert venue.contracts.vault_balance(dave.address, USDC_ASSET) == 4


class Killed(Exception):
    """Stands for the process dying at that point."""


class DiesBeforeBroadcast(Submitter):
    async def _broadcast(self, signed: SignedTransaction) -> None:
        raise Killed


async def test_killed_between_recording_and_broadcast_sends_with_the_same_nonce(
    venue: Rig,
) -> None:
    await venue.add_trades(4)
    config = venue.submitter().config
    doomed = DiesBeforeBroadcast(venue.contracts, venue.conn, venue.settler, config)
    assert await doomed.step() == Outcome.STORED
    nonce = venue.settler_nonce()
    with pytest.raises(Killed):
        await doomed.step()
    batch = await store.open_batch(venue.conn)
    assert batch is not None and batch.status == "sent" and batch.nonce == nonce
    outcomes = await drive(venue, venue.submitter())
    assert outcomes[0] == Outcome.RESENT
    assert venue.settler_nonce() == nonce + 1


async def test_a_stuck_transaction_is_replaced_with_higher_fees(venue: Rig) -> None:
    await venue.add_trades(3)
    submitter = venue.submitter(stuck_after_ms=0)
    with automine_off(venue):
        assert await submitter.step() == Outcome.STORED
        assert await submitter.step() == Outcome.SENT
        sent = await store.open_batch(venue.conn)
        assert sent is not None and sent.max_fee_per_gas is not None
        assert await submitter.step() == Outcome.BUMPED
        batch = await store.open_batch(venue.conn)
        assert batch is not None and len(batch.tx_hashes) == 2
        assert batch.max_fee_per_gas is not None
        assert batch.max_fee_per_gas >= sent.max_fee_per_gas * 125 // 100
        venue.mine()
        await drive(venue, submitter)
    settled = await store.get_batch(venue.conn, batch.batch_id)
    assert settled is not None and settled.tx_hash == batch.tx_hashes[-1]


async def test_a_transaction_dropped_from_the_mempool_is_sent_again(venue: Rig) -> None:
    await venue.add_trades(3)
    submitter = venue.submitter()
    nonce = venue.settler_nonce()
    with automine_off(venue):
        assert await submitter.step() == Outcome.STORED
        assert await submitter.step() == Outcome.SENT
        batch = await store.open_batch(venue.conn)
        assert batch is not None
        venue.chain.rpc("anvil_dropTransaction", ["0x" + batch.tx_hashes[-1].hex()])
        assert await submitter.step() == Outcome.RESENT
        venue.mine()
        await drive(venue, submitter)
    assert venue.settler_nonce() == nonce + 1


async def test_a_settlement_undone_by_a_short_reorg_is_sent_again(venue: Rig) -> None:
    await venue.add_trades(3)
    submitter = venue.submitter()
    assert await submitter.step() == Outcome.STORED
    snapshot = venue.chain.rpc("evm_snapshot")
    assert await submitter.step() == Outcome.SENT  # mined at once (automine)
    venue.mine(CONFIRMATIONS - 2)
    assert await submitter.step() == Outcome.CONFIRMING  # N-1 confirmations
    venue.chain.rpc("evm_revert", [snapshot])
    batch = await store.open_batch(venue.conn)
    assert batch is not None and venue.contracts.batch_root(batch.batch_id) == b"\0" * 32
    outcomes = await drive(venue, submitter)
    assert Outcome.RESENT in outcomes
    settled = await store.get_batch(venue.conn, batch.batch_id)
    assert settled is not None and settled.status == "settled"
    assert venue.contracts.batch_root(batch.batch_id) == batch.fills_root


async def test_the_chain_node_restarted_under_a_pending_batch(
    venue: Rig, anvil_service: AnvilService, tmp_path: Path
) -> None:
    """A node that goes away is retried; the mempool it lost is made good by a resend."""
    await venue.add_trades(3)
    submitter = venue.submitter()
    with automine_off(venue):
        assert await submitter.step() == Outcome.STORED
        assert await submitter.step() == Outcome.SENT
        state = venue.chain.rpc("anvil_dumpState")
    anvil_service.kill()
    with pytest.raises(ChainUnavailableError) as raised:
        await submitter.step()
    assert raised.value.retriable
    anvil_service.save_chain(dumped_chain(state), tmp_path / "chain.json")
    try:  # a node on the same port with the old one's chain and an empty mempool
        anvil_service.restart()
    finally:
        anvil_service.chain_path = None
    outcomes = await drive(venue, submitter)
    assert Outcome.RESENT in outcomes
    assert await submitter.step() == Outcome.IDLE
