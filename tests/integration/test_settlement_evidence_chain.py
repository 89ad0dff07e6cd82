"""Delivery reports' evidence on chain (issue 17), on real anvil and PostgreSQL.

The Python engine core runs the Delivery market of `ledger_db.delivery_until_close`, closes
it and takes three reports with evidence roots (one partial, one in full, one on a bond of
0); the ledger's journal builder books the events into a migrated database as the projector
does, and the submitter settles them. Each report is then an evidence leaf of a settled
batch: `gpux settlement prove --evidence` proves it against the Vault's root, and
`settlement.evidence.check_on_chain` accepts the report as made and names what a forged
share or root changes. A report of full delivery on a bond of 0 moves no money and settles
in a batch of its own. A v1 journal (trades and withdrawals, no report) settles with no
evidence leaf, its batch roots those of its fills alone, as before reports were batched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from eth_account.signers.local import LocalAccount

from eventlog.port import Record
from ledger import reads
from ledger.journal import GENESIS_HASH, JournalBuilder
from ledger.store import append_batch
from matching_engine.core import Engine
from protocol import USDC, AnyCommand, DeliveryReport, Deposited, Tick, encode
from protocol.money import parse_micro
from runtime.postgres import drop_database
from settlement import store
from settlement.chain import Chain, Contracts, deploy, dev_account
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.evidence import check_on_chain
from settlement.fills import Fill
from settlement.merkle import MerkleTree
from settlement.proofs import prove_evidence
from settlement.reports import chain_evidence
from settlement.submitter import Submitter, SubmitterConfig
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
CONFIRMATIONS = 2
ACCOUNTS = ("op1", "op2", "bob", "carol", "dave")
BOB_ROOT, CAROL_ROOT = "9f2c41d0" * 8, "0e11a5c3" * 8
# (issue_id, holder, delivered_ppm, evidence): bob's hour of op1 75 % delivered, carol's of
# op2 in full, bob's of the zero bond not at all (its report gave no evidence)
REPORTS = [("i1", "bob", 750_000, BOB_ROOT), ("i2", "carol", 1_000_000, CAROL_ROOT),
           ("i3", "bob", 0, None)]


@dataclass
class Rig:
    """Fresh contracts, a migrated database with the ledger's tables, the accounts' wallets,
    and the deployment file the command line reads."""

    contracts: Contracts
    conn: asyncpg.Connection
    database_url: str
    settler: LocalAccount
    wallets: dict[str, LocalAccount]
    deployment_path: Path

    def submitter(self, batch_size_max: int) -> Submitter:
        config = SubmitterConfig(confirmations=CONFIRMATIONS, poll_interval_ms=10,
                                 batch_interval_ms=0, batch_size_max=batch_size_max)
        return Submitter(self.contracts, self.conn, self.settler, config)

    async def check(self, issue_id: str, holder: str, delivered_ppm: int,
                    evidence: str | None) -> list[str]:
        return await check_on_chain(self.contracts.chain.rpc_url, self.deployment_path,
                                    self.database_url, issue_id, holder, delivered_ppm,
                                    evidence)


@pytest.fixture
async def rig(eth_rpc_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    chain = Chain(eth_rpc_url)
    admin, settler = dev_account(0), dev_account(3)
    contracts = Contracts(chain, deploy(chain, admin, settler=settler.address,
                                        minter=admin.address))
    deployment_path = tmp_path / "deployment.json"
    contracts.deployment.save(deployment_path)
    url = await fresh_database(database_url, "evidence")
    conn = await asyncpg.connect(url)
    await store.migrate(conn)
    await create_ledger_tables(conn)
    wallets = {account: new_wallet(contracts) for account in (*ACCOUNTS, "fees")}
    for account, wallet in wallets.items():
        await store.register_account(conn, account, wallet.address)
    try:
        yield Rig(contracts, conn, url, settler, wallets, deployment_path)
    finally:
        await conn.close()
        await drop_database(database_url, database_of(url))


class Venue:
    """The engine core and the ledger's journal builder over its events (what the projector
    books, appended by the projector's own `append_batch`); each deposit the engine credits
    is made on chain from the account's wallet."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.engine = Engine()
        self.journal = JournalBuilder(0, GENESIS_HASH)
        self.offset = 0

    async def run(self, commands: list[AnyCommand]) -> None:
        events = [event for command in commands for event in self.engine.apply(command)]
        contracts = self.rig.contracts
        for event in events:
            if isinstance(event, Deposited):
                wallet = self.rig.wallets[event.account]
                if event.asset == USDC:
                    deposit_usdc(contracts, wallet, parse_micro(str(event.amount), "amount"))
                else:
                    assert isinstance(event.amount, int)
                    deposit_tokens(contracts, dev_account(0), wallet, event.asset,
                                   event.amount)
        records = []
        for event in events:
            records.append(Record(topic="events", partition=0, offset=self.offset, key=None,
                                  value=encode(event)))
            self.offset += 1
        batch = self.journal.build(records)
        assert batch.failure is None, batch.failure
        await append_batch(self.rig.conn, batch)


def close_and_report() -> list[AnyCommand]:
    ts = ledger_db.DELIVERY_START + 2
    return [Tick(ts=ledger_db.DELIVERY_START + 1),
            *(DeliveryReport(ts=ts, issue_id=issue_id, holder=holder, delivered_ppm=ppm,
                             evidence=evidence) for issue_id, holder, ppm, evidence in REPORTS)]


async def settled_market(rig: Rig, batch_size_max: int) -> Submitter:
    """Run the market to its reports and settle everything; return the submitter."""
    venue = Venue(rig)
    await venue.run(ledger_db.delivery_until_close())
    submitter = rig.submitter(batch_size_max)
    await drive(submitter, idle)
    await venue.run(close_and_report())
    await drive(submitter, idle)
    return submitter


def prove_from_the_command_line(rig: Rig, issue_id: str, holder: str
                                ) -> subprocess.CompletedProcess[str]:
    """Run `gpux settlement prove --evidence ISSUE HOLDER`."""
    env = {**os.environ, "ETH_RPC_URL": rig.contracts.chain.rpc_url,
           "DATABASE_URL": rig.database_url, "GPUX_DEPLOYMENT": str(rig.deployment_path),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gpux", "settlement", "prove", "--evidence", issue_id, holder],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_each_report_is_proved_on_chain_and_a_forged_one_is_not(rig: Rig) -> None:
    submitter = await settled_market(rig, batch_size_max=4)
    reports = await reads.delivery_reports_after(rig.conn, 0, 100)
    assert [(report.issue_id, report.holder, report.delivered_ppm, report.evidence)
            for report in reports] == REPORTS
    rows = await rig.conn.fetch("SELECT b.status, e.seq, e.issue_id, e.holder FROM "
                                "settlement.batch_evidence AS e JOIN settlement.batches AS b "
                                "USING (batch_id) ORDER BY e.seq")
    assert [(row["status"], row["seq"], row["issue_id"], row["holder"]) for row in rows] == [
        ("settled", report.seq, report.issue_id, report.holder) for report in reports]
    assert submitter.metrics.registry.get_sample_value(
        "gpux_settlement_reports_settled_total") == len(REPORTS)

    result = prove_from_the_command_line(rig, "i1", "bob")
    assert result.returncode == 0, result.stderr
    proof: dict[str, Any] = json.loads(result.stdout)
    assert proof["verified_locally"] is True and proof["verified_by_vault"] is True
    assert proof["evidence"] == {"seq": str(reports[0].seq), "issue_id": "i1", "holder": "bob",
                                 "delivered_ppm": "750000", "evidence": BOB_ROOT}
    assert proof["chain_root"] == proof["stored_root"]
    unreported = prove_from_the_command_line(rig, "i1", "carol")
    assert unreported.returncode == 1 and "i1" in unreported.stderr

    for issue_id, holder, ppm, evidence in REPORTS:
        assert await rig.check(issue_id, holder, ppm, evidence) == [], (issue_id, holder)
        assert (await prove_evidence(rig.conn, rig.contracts, issue_id, holder)).verified

    forged_share = await rig.check("i1", "bob", 1_000_000, BOB_ROOT)
    assert any("delivered_ppm" in problem for problem in forged_share)
    assert any("does not prove" in problem for problem in forged_share)
    assert any("verifyLeaf" in problem for problem in forged_share)
    forged_root = await rig.check("i2", "carol", 1_000_000, BOB_ROOT)
    assert any(problem.startswith("evidence") for problem in forged_root)
    assert any("does not prove" in problem for problem in forged_root)
    assert await rig.check("i3", "bob", 0, "") == [], "no evidence is the empty string"
    assert any("no settlement batch" in problem
               for problem in await rig.check("i1", "carol", 0, None))
    assert any(problem.startswith("the chain")
               for problem in await check_on_chain(rig.contracts.chain.rpc_url,
                                                   rig.deployment_path.with_name("none"),
                                                   rig.database_url, "i1", "bob", 750_000,
                                                   BOB_ROOT))
    unreachable = await check_on_chain(rig.contracts.chain.rpc_url, rig.deployment_path,
                                       "postgresql://nobody@127.0.0.1:1/none", "i1", "bob",
                                       750_000, BOB_ROOT)
    assert len(unreachable) == 1 and unreachable[0].startswith("the database")


async def test_an_evidence_leaf_costs_settle_nothing_and_alone_settles_with_no_delta(
    rig: Rig,
) -> None:
    """One entry per batch. Bob's compensation batch (two moves and his report's leaf) costs
    `settle` the same gas with or without the leaf in its tree: the call carries the root
    only. The zero bond's report (no compensation, a release of 0) makes a batch of one
    evidence leaf, which the Vault settles with no delta."""
    venue = Venue(rig)
    await venue.run(ledger_db.delivery_until_close())
    submitter = rig.submitter(batch_size_max=1)
    await drive(submitter, idle)
    await venue.run(close_and_report())
    bob_i1, _carol, i3 = await reads.delivery_reports_after(rig.conn, 0, 100)

    async def compensation_batch_stored(_outcome: object) -> bool:
        batch = await store.open_batch(rig.conn)
        return batch is not None and batch.first_seq == bob_i1.seq

    await drive(submitter, compensation_batch_stored)
    stored = await store.open_batch(rig.conn)
    assert stored is not None and stored.status == "pending"
    assert (stored.fill_count, stored.move_count, stored.evidence_count) == (0, 2, 1)
    leaves = await store.batch_leaves(rig.conn, stored.batch_id)
    assert leaves[-1] == chain_evidence(bob_i1.seq, "i1", "bob", 750_000, BOB_ROOT).leaf()

    def settle_gas(root: bytes) -> int:
        call = rig.contracts.vault.functions.settle(stored.batch_id, root, stored.assets,
                                                    stored.deltas, stored.supply)
        return int(call.estimate_gas({"from": rig.settler.address}))

    with_leaf = settle_gas(stored.fills_root)
    without_leaf = settle_gas(MerkleTree(leaves[:-1]).root)
    assert abs(with_leaf - without_leaf) < 400, "the root's bytes only: calldata noise"
    await drive(submitter, idle)
    batch = await rig.conn.fetchrow(
        "SELECT batch_id, fill_count, move_count, evidence_count, fills_root, deltas, status, "
        "gas_used FROM settlement.batches WHERE first_seq = $1", i3.seq)
    assert (batch["fill_count"], batch["move_count"], batch["evidence_count"]) == (0, 0, 1)
    assert batch["deltas"] == [] and batch["status"] == "settled"
    leaf = chain_evidence(i3.seq, "i3", "bob", 0, None).leaf()
    assert bytes(batch["fills_root"]) == leaf == rig.contracts.batch_root(batch["batch_id"])
    assert await rig.check("i3", "bob", 0, None) == []
    print(f"settle gas of bob's compensation batch: {with_leaf} with its evidence leaf, "
          f"{without_leaf} without; of a batch holding one evidence leaf alone: "
          f"{batch['gas_used']}")


async def test_a_v1_journal_settles_with_the_roots_of_its_fills_alone(rig: Rig) -> None:
    """No report, no evidence leaf: every batch's root is the tree of its fills, as it was
    before settlement batched reports."""
    wallets = rig.wallets
    deposit_usdc(rig.contracts, wallets["bob"], 100_000_000)
    deposit_tokens(rig.contracts, dev_account(0), wallets["op1"], ledger_db.SYMBOL, 10)
    entries = [
        Entry(seq=1, kind="deposited", postings=[("@chain", USDC, -100_000_000),
                                                 ("bob", USDC, 100_000_000)]),
        Entry(seq=2, kind="deposited", postings=[("@chain", ledger_db.SYMBOL, -10),
                                                 ("op1", ledger_db.SYMBOL, 10)]),
        *(Entry.of_trade(Fill(seq=seq, trade_id=str(seq), instrument=ledger_db.SYMBOL,
                              price_micro=2_500_000, quantity=1, buyer="bob", seller="op1",
                              buyer_fee_micro=2_500, seller_fee_micro=1_000))
          for seq in range(3, 8)),
    ]
    await append_entries(rig.conn, entries)
    await drive(rig.submitter(batch_size_max=2), idle)
    batches = await rig.conn.fetch("SELECT batch_id, fills_root, evidence_count, status "
                                   "FROM settlement.batches ORDER BY batch_id")
    assert len(batches) == 3 and {row["status"] for row in batches} == {"settled"}
    assert {row["evidence_count"] for row in batches} == {0}
    assert await rig.conn.fetchval("SELECT count(*) FROM settlement.batch_evidence") == 0
    for row in batches:
        fills = await rig.conn.fetch("SELECT leaf FROM settlement.batch_fills "
                                     "WHERE batch_id = $1 ORDER BY leaf_index", row["batch_id"])
        root = MerkleTree([bytes(fill["leaf"]) for fill in fills]).root
        assert bytes(row["fills_root"]) == root == rig.contracts.batch_root(row["batch_id"])
