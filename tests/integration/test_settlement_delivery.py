"""Delivery (v2) settled on chain from the ledger's rows, on real anvil and PostgreSQL.

The journal holds what the ledger books for a deliverable instrument (PROTOCOL.md "Delivery
(v2)"): an issue with its bond, trades of the issued tokens, a withdrawal of one token, the
close (redemption, the issuer's own share released, the unassigned hour released) and two
delivery reports, one partial. The submitter settles it all in batches contiguous in seq,
with the payout of the withdrawal before the redemption; afterwards every Vault balance is
the ledger's, the bonds' escrow is empty, the tokens are burned, and `prove` verifies a
compensation and a bond release on chain. A submitter restarted at any point of the batch
that carries the bond moves pays and releases each of them exactly once. Last, the Python
engine core's own delivery market, booked by the ledger's journal builder, settles to the
ledger's balances with the bonds of unreported assignments still in escrow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount

from eventlog.port import Record
from ledger import reads
from ledger.journal import BOND_ACCOUNT_PREFIX, CHAIN_ACCOUNT, GENESIS_HASH, JournalBuilder
from ledger.store import append_batch
from matching_engine.core import Engine
from protocol import (
    USDC,
    AnyCommand,
    Deposited,
    effects,
    encode,
)
from protocol.money import parse_micro
from runtime.postgres import drop_database
from settlement import store
from settlement.batching import Blocked, Item, in_seq_order, settleable_prefix
from settlement.chain import BOND_ESCROW, USDC_ASSET, Chain, Contracts, deploy, dev_account
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.fills import Fill
from settlement.moves import Move, asset_id
from settlement.proofs import prove, prove_move
from settlement.submitter import Outcome, Submitter, SubmitterConfig
from settlement.testing import (
    Entry,
    append_entries,
    create_ledger_tables,
    drive,
    fresh_database,
    idle,
)
from tests.integration import ledger_db
from tests.integration.database_faults import database_of

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "H100-SXM-80GB.eu-north.2026-06-01T00"
TOKEN = asset_id(SYMBOL)
ISSUE = "i-1"
BOND = BOND_ACCOUNT_PREFIX + ISSUE
BOND_PER_HOUR = 3_000_000
PRICE = 2_500_000
CONFIRMATIONS = 2
ISSUER, BOB = "op-1", "bob"  # named accounts; alice trades as her wallet address
WITHDRAWAL_SEQ, CLOSE_SEQ, COMPENSATION_SEQ, RELEASE_SEQ = 7, 8, 13, 14


@dataclass
class Rig:
    """Fresh contracts, a migrated database with the ledger's tables, and the wallets."""

    contracts: Contracts
    conn: asyncpg.Connection
    database_url: str
    settler: LocalAccount
    issuer: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    fees: LocalAccount

    @property
    def addresses(self) -> dict[str, str]:
        """The wallet address each trading account of the hand-made journal settles to."""
        return {ISSUER: self.issuer.address, self.alice.address: self.alice.address,
                BOB: self.bob.address, "fees": self.fees.address}

    def submitter(self, cls: type[Submitter] = Submitter, **overrides: int) -> Submitter:
        settings: dict[str, Any] = {"batch_interval_ms": 0, "batch_size_max": 3, **overrides}
        config = SubmitterConfig(confirmations=CONFIRMATIONS, poll_interval_ms=10, **settings)
        return cls(self.contracts, self.conn, self.settler, config)


@pytest.fixture
async def rig(eth_rpc_url: str, database_url: str) -> AsyncIterator[Rig]:
    chain = Chain(eth_rpc_url)
    admin, settler = dev_account(0), dev_account(3)
    contracts = Contracts(chain, deploy(chain, admin, settler=settler.address,
                                        minter=admin.address))
    url = await fresh_database(database_url, "delivery")
    conn = await asyncpg.connect(url)
    await store.migrate(conn)
    await create_ledger_tables(conn)
    issuer, alice, bob, fees = (new_wallet(contracts) for _ in range(4))
    for wallet, amount in ((issuer, 100_000_000), (alice, 500_000_000), (bob, 500_000_000)):
        deposit_usdc(contracts, wallet, amount)
    for account, wallet in ((ISSUER, issuer), (BOB, bob), ("fees", fees)):
        await store.register_account(conn, account, wallet.address)
    try:
        yield Rig(contracts, conn, url, settler, issuer, alice, bob, fees)
    finally:
        await conn.close()
        await drop_database(database_url, database_of(url))


def trade(seq: int, buyer: str, quantity: int) -> Entry:
    return Entry.of_trade(Fill(
        seq=seq, trade_id=str(seq), instrument=SYMBOL, price_micro=PRICE, quantity=quantity,
        buyer=buyer, seller=ISSUER, buyer_fee_micro=quantity * 5_000,
        seller_fee_micro=quantity * 2_500,
    ))  # fmt: skip


def bond_paid(seq: int, kind: str, account: str, amount: int) -> Entry:
    return Entry(seq=seq, kind=kind, postings=[(BOND, USDC, -amount), (account, USDC, amount)])


def opening(rig: Rig) -> list[Entry]:
    """Deposits (made on chain by the rig), the issue of 10 GPU-hours with its bond, and the
    issuer's sales of 4 to alice and 3 to bob."""
    alice = rig.alice.address
    bond = effects.bond(10, BOND_PER_HOUR)
    return [
        Entry(seq=1, kind="deposited", postings=[(CHAIN_ACCOUNT, USDC, -100_000_000),
                                                 (ISSUER, USDC, 100_000_000)]),
        Entry(seq=2, kind="deposited", postings=[(CHAIN_ACCOUNT, USDC, -500_000_000),
                                                 (alice, USDC, 500_000_000)]),
        Entry(seq=3, kind="deposited", postings=[(CHAIN_ACCOUNT, USDC, -500_000_000),
                                                 (BOB, USDC, 500_000_000)]),
        Entry(seq=4, kind="capacity_issued", postings=[
            (ISSUER, USDC, -bond), (BOND, USDC, bond), (CHAIN_ACCOUNT, SYMBOL, -10),
            (ISSUER, SYMBOL, 10)]),
        trade(5, alice, 4),
        trade(6, BOB, 3),
    ]  # fmt: skip


def closing(rig: Rig) -> list[Entry]:
    """Bob withdraws one token; the close redeems the rest: the issuer's 3 release their
    bond, alice (4) and bob (2) are assigned (seqs 10, 11: no money), and the hour withdrawn
    releases its bond; alice's delivery is 75 % done, bob's not at all (his release of 0
    makes no entry)."""
    alice = rig.alice.address
    alice_compensation = effects.compensation(4, BOND_PER_HOUR, 750_000)
    bob_compensation = effects.compensation(2, BOND_PER_HOUR, 0)
    return [
        Entry.of_withdrawal(WITHDRAWAL_SEQ, BOB, SYMBOL, 1),
        Entry(seq=CLOSE_SEQ, kind="redeemed", postings=[
            (ISSUER, SYMBOL, -3), (alice, SYMBOL, -4), (BOB, SYMBOL, -2),
            (CHAIN_ACCOUNT, SYMBOL, 9)]),
        bond_paid(9, "bond_released", ISSUER, effects.bond(3, BOND_PER_HOUR)),
        bond_paid(12, "bond_released", ISSUER, effects.bond(1, BOND_PER_HOUR)),
        bond_paid(COMPENSATION_SEQ, "delivery_settled", alice, alice_compensation),
        bond_paid(RELEASE_SEQ, "bond_released", ISSUER,
                  effects.bond(4, BOND_PER_HOUR) - alice_compensation),
        bond_paid(15, "delivery_settled", BOB, bob_compensation),
    ]  # fmt: skip


async def assert_vault_matches_ledger(rig: Rig) -> None:
    """Every Vault balance of the rig's wallets and the escrow is the ledger's."""
    expected: Counter[tuple[str, int]] = Counter()
    for (account, asset), amount in (await reads.balances(rig.conn)).items():
        if account == CHAIN_ACCOUNT:
            continue
        address = BOND_ESCROW if account.startswith(BOND_ACCOUNT_PREFIX) else (
            rig.addresses[account])
        expected[(address, asset_id(asset))] += amount
    addresses = [*rig.addresses.values(), BOND_ESCROW]
    on_chain = {(address, asset): rig.contracts.vault_balance(address, asset)
                for address in addresses for asset in (USDC_ASSET, TOKEN)}
    assert on_chain == {key: expected[key] for key in on_chain}


def custody(rig: Rig, token: int = TOKEN) -> int:
    """What the Vault holds of `token` on the token contract itself."""
    contracts = rig.contracts
    return int(contracts.gpu_hours.functions.balanceOf(contracts.vault.address, token).call())


async def assert_every_move_settled_once(rig: Rig) -> None:
    """Each delivery posting is the leaf of exactly one batch, settled; batches are
    contiguous in seq and each settled once on chain."""
    postings = await reads.delivery_postings(rig.conn, 0, 1000)
    rows = await rig.conn.fetch("SELECT seq, account, asset FROM settlement.batch_moves")
    assert Counter((row["seq"], row["account"], int(row["asset"])) for row in rows) == Counter(
        (posting.seq, posting.account, asset_id(posting.asset)) for posting in postings)
    batches = await rig.conn.fetch("SELECT batch_id, first_seq, last_seq, status "
                                   "FROM settlement.batches ORDER BY batch_id")
    assert {row["status"] for row in batches} == {"settled"}
    for before, after in zip(batches, batches[1:], strict=False):
        assert after["first_seq"] > before["last_seq"]
    events = rig.contracts.vault.events.BatchSettled().get_logs(
        from_block=rig.contracts.deployment.block_number, to_block="latest")
    assert sorted(int(event["args"]["batchId"]) for event in events) == [
        row["batch_id"] for row in batches]


async def test_issuance_trades_close_and_reports_settle_until_the_vault_is_the_ledger(
    rig: Rig, tmp_path: Path,
) -> None:
    await append_entries(rig.conn, opening(rig))
    submitter = rig.submitter()
    await drive(submitter, idle)
    await assert_vault_matches_ledger(rig)
    assert rig.contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == effects.bond(10, BOND_PER_HOUR)
    assert custody(rig) == 10
    assert rig.contracts.symbol_of(TOKEN) == SYMBOL

    await append_entries(rig.conn, closing(rig), last_seq=16)
    outcomes = await drive(submitter, idle)
    assert Outcome.SETTLED in outcomes
    await assert_vault_matches_ledger(rig)
    assert rig.contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == 0
    assert custody(rig) == 0 and rig.contracts.vault.functions.redeemed(TOKEN).call()
    held = rig.contracts.gpu_hours.functions.balanceOf(rig.bob.address, TOKEN).call()
    assert held == 1, "the withdrawn token, paid out before the redemption"
    payout = await store.get_payout(rig.conn, WITHDRAWAL_SEQ)
    redemption = await rig.conn.fetchrow("SELECT block_number FROM settlement.batches "
                                         "WHERE first_seq <= $1 AND last_seq >= $1", CLOSE_SEQ)
    assert payout is not None and payout.block_number is not None
    assert payout.block_number < redemption["block_number"]
    await assert_every_move_settled_once(rig)
    postings = await reads.delivery_postings(rig.conn, 0, 1000)
    assert submitter.metrics.registry.get_sample_value(
        "gpux_settlement_moves_settled_total") == len(postings)

    compensation = await prove_move(rig.conn, rig.contracts, COMPENSATION_SEQ,
                                    rig.alice.address, USDC)
    assert compensation.verified
    assert compensation.move["amount"] == str(effects.compensation(4, BOND_PER_HOUR, 750_000))
    assert compensation.move["kind"] == "delivery_settled"
    bond_side = await prove_move(rig.conn, rig.contracts, COMPENSATION_SEQ, BOND, USDC)
    assert bond_side.verified and bond_side.move["wallet"] == BOND_ESCROW
    assert (await prove(rig.conn, rig.contracts, "5")).verified  # a fill beside the moves
    proved = prove_from_the_command_line(rig, tmp_path, str(RELEASE_SEQ), ISSUER, USDC)
    assert proved["verified_by_vault"] is True and proved["verified_locally"] is True
    assert proved["move"]["kind"] == "bond_released"
    assert proved["move"]["wallet"] == rig.issuer.address
    assert int(proved["move"]["amount"]) == 9_000_000


def prove_from_the_command_line(rig: Rig, tmp_path: Path, seq: str, account: str,
                                asset: str) -> dict[str, Any]:
    """Run `gpux settlement prove --move SEQ ACCOUNT ASSET`; return its JSON."""
    deployment_path = tmp_path / "deployment.json"
    rig.contracts.deployment.save(deployment_path)
    env = {**os.environ, "ETH_RPC_URL": rig.contracts.chain.rpc_url,
           "DATABASE_URL": rig.database_url, "GPUX_DEPLOYMENT": str(deployment_path),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "gpux", "settlement", "prove", "--move", seq, account, asset],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    proof: dict[str, Any] = json.loads(result.stdout)
    return proof


class Killed(Exception):
    """Stands for the process dying at that point."""


class DiesBeforeBroadcast(Submitter):
    async def _broadcast(self, signed: SignedTransaction) -> None:
        raise Killed


async def bond_batch_is(rig: Rig, status: str) -> bool:
    """Tell whether the batch carrying the reports' bond moves is open with `status`."""
    batch = await store.open_batch(rig.conn)
    return (batch is not None and batch.first_seq <= COMPENSATION_SEQ <= batch.last_seq
            and batch.status == status)


@pytest.mark.parametrize("death", ["stored", "recorded", "sent", "sent_unrecorded"])
async def test_a_submitter_restarted_mid_batch_pays_and_releases_each_bond_once(
    rig: Rig, death: str,
) -> None:
    await append_entries(rig.conn, [*opening(rig), *closing(rig)], last_seq=16)
    first = rig.submitter(batch_size_max=100)

    async def bond_batch_stored(outcome: Outcome) -> bool:
        return await bond_batch_is(rig, "pending")

    await drive(first, bond_batch_stored)
    batch = await store.open_batch(rig.conn)
    assert batch is not None and batch.move_count > 0 and batch.supply
    if death == "recorded":  # the signed transaction recorded, never broadcast
        doomed = rig.submitter(DiesBeforeBroadcast, batch_size_max=100)
        with pytest.raises(Killed):
            await doomed.step()
        assert await bond_batch_is(rig, "sent")
    elif death == "sent":  # broadcast and mined, not yet confirmed
        assert await first.step() == Outcome.SENT
    elif death == "sent_unrecorded":  # a predecessor sent it and died before recording it
        rig.contracts.chain.transact(rig.contracts.vault.functions.settle(
            batch.batch_id, batch.fills_root, batch.assets, batch.deltas, batch.supply),
            rig.settler)
    outcomes = await drive(rig.submitter(batch_size_max=100), idle)
    if death in ("sent", "sent_unrecorded"):
        assert Outcome.SENT not in outcomes and Outcome.RESENT not in outcomes
    await assert_vault_matches_ledger(rig)
    await assert_every_move_settled_once(rig)
    assert rig.contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == 0
    assert custody(rig) == 0


# --- the engine's own delivery flow, booked by the ledger's journal ---------------------

# The market of `ledger_db.delivery_commands` (two issuers bond ledger_db.SYMBOL and sell,
# bob and carol buy, dave deposits tokens minted outside the venue, a bond of 0, an hour
# listed without a bond, withdrawals before the close), cut at its close.
MARKET_TOKEN = asset_id(ledger_db.SYMBOL)


class Venue:
    """The engine core, the ledger's journal builder over its events, and the chain side of
    each deposit the engine credits (made from the account's wallet)."""

    def __init__(self, rig: Rig, wallets: dict[str, LocalAccount]) -> None:
        self.rig = rig
        self.wallets = wallets
        self.engine = Engine()
        self.journal = JournalBuilder(0, GENESIS_HASH)
        self.offset = 0

    async def run(self, commands: list[AnyCommand]) -> None:
        events = [event for command in commands for event in self.engine.apply(command)]
        for event in events:
            if isinstance(event, Deposited):
                self.deposit_on_chain(event)
        records = []
        for event in events:
            records.append(Record(topic="events", partition=0, offset=self.offset, key=None,
                                  value=encode(event)))
            self.offset += 1
        batch = self.journal.build(records)
        assert batch.failure is None, batch.failure
        await append_batch(self.rig.conn, batch)

    def deposit_on_chain(self, event: Deposited) -> None:
        wallet = self.wallets[event.account]
        if event.asset == USDC:
            deposit_usdc(self.rig.contracts, wallet, parse_micro(str(event.amount), "amount"))
        else:
            assert isinstance(event.amount, int)
            deposit_tokens(self.rig.contracts, dev_account(0), wallet, event.asset, event.amount)


async def test_the_engines_delivery_flow_booked_by_the_ledger_settles_to_its_balances(
    rig: Rig,
) -> None:
    wallets = {account: new_wallet(rig.contracts)
               for account in ("op1", "op2", "bob", "carol", "dave")}
    for account, wallet in wallets.items():
        await store.register_account(rig.conn, account, wallet.address)
    venue = Venue(rig, wallets)
    await venue.run(ledger_db.delivery_until_close())
    submitter = rig.submitter(batch_size_max=4)
    await drive(submitter, idle)
    await venue.run(ledger_db.delivery_close_and_reports())
    await drive(submitter, idle)

    ledger = await reads.balances(rig.conn)
    bonds = sum(amount for (account, _), amount in ledger.items()
                if account.startswith(BOND_ACCOUNT_PREFIX))
    assert bonds > 0, "unreported assignments keep their bonds"
    assert rig.contracts.vault_balance(BOND_ESCROW, USDC_ASSET) == bonds
    addresses = {account: wallet.address for account, wallet in wallets.items()}
    addresses["fees"] = rig.fees.address
    assert {account for account, _ in ledger if not account.startswith("@")} <= set(addresses)
    for account, address in addresses.items():
        for asset in (USDC, ledger_db.SYMBOL, ledger_db.ZERO_BOND_SYMBOL, ledger_db.PLAIN_SYMBOL):
            assert rig.contracts.vault_balance(address, asset_id(asset)) == ledger.get(
                (account, asset), 0), (account, asset)
    vault = rig.contracts.vault.functions
    assert vault.redeemed(MARKET_TOKEN).call()
    assert vault.redeemed(asset_id(ledger_db.ZERO_BOND_SYMBOL)).call()
    assert not vault.redeemed(asset_id(ledger_db.PLAIN_SYMBOL)).call()
    assert custody(rig, MARKET_TOKEN) == 0
    assert rig.contracts.vault_balance(wallets["bob"].address,
                                       asset_id(ledger_db.PLAIN_SYMBOL)) == 7
    tokens = rig.contracts.gpu_hours.functions
    assert [tokens.balanceOf(wallets[account].address, MARKET_TOKEN).call()
            for account in ("dave", "bob")] == [2, 1], "withdrawn before the close, paid out"
    await assert_every_move_settled_once(rig)


# --- cutting batches from trades and delivery entries (pure) ------------------------------


def posting(seq: int, kind: str, account: str, asset: str, amount: int) -> Move:
    return Move(seq=seq, kind=kind, account=account, asset=asset, amount=amount, ts=0)


def sale(seq: int) -> Fill:
    return Fill(seq=seq, trade_id=str(seq), instrument=SYMBOL, price_micro=PRICE, quantity=1,
                buyer="alice", seller=ISSUER, buyer_fee_micro=0, seller_fee_micro=0)


def release(seq: int, account: str = ISSUER) -> list[Move]:
    return [posting(seq, "bond_released", BOND, USDC, -1), posting(seq, "bond_released",
                                                                   account, USDC, 1)]


def test_items_merge_in_seq_order_within_what_both_reads_cover() -> None:
    fills = [sale(2), sale(5)]
    moves = [*release(3), *release(7)]
    assert [item.seq for item in in_seq_order(fills, moves, 4)] == [2, 3, 3, 5, 7, 7]
    assert [item.seq for item in in_seq_order(fills, moves, 3)] == [2, 3, 3, 5]
    # 2 trades read of at most 2: a delivery entry at 6 may lie between 5 and the next trade
    assert [item.seq for item in in_seq_order(fills, [*release(3), *release(6)], 2)] == [2, 3, 3]
    # 2 entries read of at most 2: a delivery entry at 8 may come before the trade at 9
    assert [item.seq for item in in_seq_order([sale(9)], moves, 2)] == [3, 3, 7, 7]
    assert in_seq_order([], [], 5) == []


def test_a_batch_never_splits_an_entry_and_a_redemption_waits_for_earlier_payouts() -> None:
    addresses = {"fees": "0x" + "fe" * 20, "alice": "0x" + "a1" * 20, ISSUER: "0x" + "11" * 20}
    redemption = [posting(6, "redeemed", CHAIN_ACCOUNT, SYMBOL, 2),
                  posting(6, "redeemed", "alice", SYMBOL, -1),
                  posting(6, "redeemed", ISSUER, SYMBOL, -1)]
    items: list[Item] = [sale(2), *release(3), *redemption, *release(8, "carol")]
    prefix, blocked = settleable_prefix(items, addresses)
    assert [item.seq for item in prefix] == [2, 3, 3, 6, 6, 6]
    assert blocked == Blocked(8, ["carol"])
    prefix, blocked = settleable_prefix(items, addresses, unpaid_withdrawals={SYMBOL: 4})
    assert [item.seq for item in prefix] == [2, 3, 3]
    assert blocked == Blocked(6, [], 4)
    prefix, _ = settleable_prefix(items, addresses, unpaid_withdrawals={SYMBOL: 7})
    assert [item.seq for item in prefix] == [2, 3, 3, 6, 6, 6]
    # Another asset's payouts, USDC's or another hour's, never hold a redemption back.
    prefix, _ = settleable_prefix(items, addresses,
                                  unpaid_withdrawals={USDC: 4, SYMBOL + "x": 5})
    assert [item.seq for item in prefix] == [2, 3, 3, 6, 6, 6]

