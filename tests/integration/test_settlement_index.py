"""The price index published on chain with the settlement batches, on real anvil and
PostgreSQL: the values of `index.values` (written by `index.store.write_values`, as the
index service does) go to the IndexOracle once the batch through their last_seq has settled,
bounded per transaction, one publication before each next batch and the rest of a backlog
when nothing else waits; a submitter restarted at any point of a publication, or a `run`
killed with SIGKILL, publishes each value once; an oracle holding another value stops it;
`gpux settlement index-status` reads a value back and compares it with the database."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount

from index import store as index_store
from index.calculator import IndexCalculator
from index.value import MINUTE_NS, IndexValue, Source
from matching_engine.core import Engine
from protocol import Deposit, ListInstrument, NewOrder, encode
from runtime.postgres import drop_database
from settlement import store
from settlement.chain import Chain, Contracts, deploy, dev_account
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.errors import RefusedError
from settlement.fills import Fill
from settlement.index_chain import differences, index_key, publication, read_value
from settlement.jobs import IndexJob
from settlement.submitter import Outcome, Submitter, SubmitterConfig
from settlement.testing import (
    create_ledger_tables,
    drive,
    fresh_database,
    idle,
    insert_trades,
    settled,
)
from tests.helpers import eventually, kill_if_running, stop_cleanly
from tests.integration.database_faults import database_of

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "H100-SXM-80GB.eu-west.2026-12-05T12"
GPU, OTHER_GPU, REGION = "H100-SXM-80GB", "A100-SXM-80GB", "eu-west"
MINUTE = 29_500_000  # 2026-02-02T02:40Z, in minutes since the epoch
CONFIRMATIONS = 2


@dataclass
class Rig:
    """Fresh contracts, a migrated database (ledger, index, settlement) and the wallets of
    the trades."""

    contracts: Contracts
    conn: asyncpg.Connection
    database_url: str
    settler: LocalAccount
    buyer: LocalAccount

    def submitter(self, cls: type[Submitter] = Submitter, **overrides: int) -> Submitter:
        settings: dict[str, Any] = {"batch_interval_ms": 0, **overrides}
        config = SubmitterConfig(confirmations=CONFIRMATIONS, poll_interval_ms=10, **settings)
        return cls(self.contracts, self.conn, self.settler, config)

    def mine(self) -> None:
        self.contracts.chain.rpc("anvil_mine", ["0x1"])

    def settler_nonce(self) -> int:
        return int(self.contracts.chain.w3.eth.get_transaction_count(self.settler.address))

    async def add_trades(self, seqs: Sequence[int]) -> None:
        await insert_trades(self.conn, [Fill(
            seq=seq, trade_id=str(seq), instrument=SYMBOL, price_micro=2_000_000, quantity=1,
            buyer=self.buyer.address, seller="op-1", buyer_fee_micro=0, seller_fee_micro=0,
        ) for seq in seqs])  # fmt: skip

    async def add_values(self, values: Sequence[IndexValue]) -> None:
        """Write values as the index service does: each last_seq's in one transaction."""
        for last_seq in sorted({value.last_seq for value in values}):
            async with self.conn.transaction():
                await index_store.write_values(
                    self.conn, [value for value in values if value.last_seq == last_seq])


@pytest.fixture
async def rig(eth_rpc_url: str, database_url: str) -> AsyncIterator[Rig]:
    chain = Chain(eth_rpc_url)
    admin, settler = dev_account(0), dev_account(4)
    contracts = Contracts(chain, deploy(chain, admin, settler=settler.address,
                                        minter=admin.address))
    url = await fresh_database(database_url, "index")
    conn = await asyncpg.connect(url)
    await store.migrate(conn)  # the index's migrations too
    await create_ledger_tables(conn)
    buyer, seller, fees = (new_wallet(contracts) for _ in range(3))
    deposit_usdc(contracts, buyer, 1_000_000_000)
    deposit_tokens(contracts, admin, seller, SYMBOL, 100, account="op-1")
    await store.register_account(conn, "op-1", seller.address)
    await store.register_account(conn, "fees", fees.address)
    try:
        yield Rig(contracts, conn, url, settler, buyer)
    finally:
        await conn.close()
        await drop_database(database_url, database_of(url))


def index_value(gpu: str, minute: int, last_seq: int, value_micro: int | None = 2_000_000,
                source: Source = "trades") -> IndexValue:
    traded = source == "trades"
    return IndexValue(
        gpu=gpu, region=REGION, minute_ns=minute * MINUTE_NS, value_micro=value_micro,
        source=source, trade_count=5 if traded else 0, volume=40 if traded else 0,
        instrument_count=1 if traded else 0, sufficient=traded,
        inputs_hash=hashlib.sha256(f"{gpu}/{minute}/{last_seq}".encode()).digest(),
        last_seq=last_seq,
    )  # fmt: skip


def assert_on_chain(rig: Rig, values: Sequence[IndexValue]) -> None:
    for value in values:
        on_chain = read_value(rig.contracts, value.gpu, value.region, value.minute_ns)
        assert on_chain is not None, value
        assert differences(value, on_chain) == []


def assert_not_on_chain(rig: Rig, values: Sequence[IndexValue]) -> None:
    for value in values:
        assert read_value(rig.contracts, value.gpu, value.region, value.minute_ns) is None


def publication_events(rig: Rig) -> list[tuple[bytes, int]]:
    """(key, minute) of every IndexPublished event of the rig's oracle, in chain order."""
    logs = rig.contracts.index_oracle.events.IndexPublished().get_logs(
        from_block=rig.contracts.deployment.block_number, to_block="latest")
    return [(bytes(entry["args"]["key"]), int(entry["args"]["minute"])) for entry in logs]


def keys(values: Sequence[IndexValue]) -> list[tuple[bytes, int]]:
    return [(index_key(value.gpu, value.region), value.minute_ns // MINUTE_NS)
            for value in values]


async def test_each_settled_batch_is_followed_by_the_values_up_to_its_last_seq(
    rig: Rig,
) -> None:
    # in index order: by last_seq, minute, gpu (A100 before H100), region
    through_2 = [index_value(OTHER_GPU, MINUTE, 2), index_value(GPU, MINUTE, 2)]
    through_4 = [index_value(OTHER_GPU, MINUTE + 1, 4, None, source="none"),
                 index_value(GPU, MINUTE + 1, 4, 2_100_000)]
    after_4 = [index_value(OTHER_GPU, MINUTE + 2, 6, 2_050_000, source="mid"),
               index_value(GPU, MINUTE + 2, 6, 2_200_000, source="last")]
    await rig.add_trades([1, 2, 3, 4])
    await rig.add_values([*through_2, *through_4, *after_4])
    submitter = rig.submitter()
    outcomes = await drive(submitter, settled)  # the batch of seqs 1..4
    assert outcomes[0] == Outcome.STORED and await store.open_index_publication(rig.conn) is None
    await rig.add_trades([5, 6, 7])
    assert await submitter.step() == Outcome.STORED  # the values first, then the next batch
    stored = await store.open_index_publication(rig.conn)
    assert stored is not None and stored.batch_id == 1
    assert stored.index_values == [*through_2, *through_4]
    await drive(submitter, settled)
    assert_on_chain(rig, [*through_2, *through_4])
    assert_not_on_chain(rig, after_4)  # never ahead of the trades settled
    await drive(submitter, settled)  # the batch of seqs 5..7
    batch = await store.get_batch(rig.conn, 2)
    assert batch is not None and (batch.first_seq, batch.last_seq) == (5, 7)
    await drive(submitter, settled)
    assert_on_chain(rig, after_4)
    second = await store.get_index_publication(rig.conn, 2)
    assert second is not None and second.status == "settled" and second.batch_id == 2
    assert await submitter.step() == Outcome.IDLE
    assert publication_events(rig) == keys([*through_2, *through_4, *after_4])
    assert submitter.metrics.registry.get_sample_value(
        "gpux_settlement_index_values_published_total") == 6


async def test_a_backlog_goes_out_a_bounded_publication_per_batch_and_the_rest_when_idle(
    rig: Rig,
) -> None:
    # one event released seven values at once (a quiet log passing four minutes)
    burst = sorted([*(index_value(GPU, MINUTE + n, 2) for n in range(4)),
                    *(index_value(OTHER_GPU, MINUTE + n, 2) for n in range(3))],
                   key=lambda value: (value.minute_ns, value.gpu))
    await rig.add_trades([1, 2])
    await rig.add_values(burst)
    submitter = rig.submitter(index_values_max=3)
    await drive(submitter, settled)  # the batch of seqs 1..2
    await rig.add_trades([3, 4])
    kinds = []
    for _ in range(4):  # index, batch, index (after the batch), index (nothing else to do)
        assert await submitter.step() == Outcome.STORED
        kinds.append("index" if await store.open_index_publication(rig.conn) else "batch")
        await drive(submitter, settled)
    assert kinds == ["index", "batch", "index", "index"]
    publications = [await store.get_index_publication(rig.conn, number) for number in (1, 2, 3)]
    assert [(p.batch_id, p.index_values) for p in publications if p is not None] == [
        (1, burst[:3]), (2, burst[3:6]), (2, burst[6:])]
    assert_on_chain(rig, burst)
    assert publication_events(rig) == keys(burst)
    assert await submitter.step() == Outcome.IDLE


class Killed(Exception):
    """Stands for the process dying at that point."""


class DiesBeforeBroadcast(Submitter):
    async def _broadcast(self, signed: SignedTransaction) -> None:
        raise Killed


@pytest.mark.parametrize("death", ["stored", "recorded", "sent", "sent_unrecorded"])
async def test_a_submitter_restarted_mid_publication_publishes_each_value_once(
    rig: Rig, death: str,
) -> None:
    values = [index_value(OTHER_GPU, MINUTE, 1), index_value(GPU, MINUTE, 1),
              index_value(GPU, MINUTE + 1, 2, 2_300_000)]
    await rig.add_trades([1, 2])
    await rig.add_values(values)
    first = rig.submitter()
    await drive(first, settled)  # the batch
    assert await first.step() == Outcome.STORED
    stored = await store.open_index_publication(rig.conn)
    assert stored is not None and stored.status == "pending"
    nonce = rig.settler_nonce()
    if death == "recorded":  # the signed transaction recorded, never broadcast
        with pytest.raises(Killed):
            await rig.submitter(DiesBeforeBroadcast).step()
        recorded = await store.open_index_publication(rig.conn)
        assert recorded is not None and recorded.status == "sent"
        assert rig.settler_nonce() == nonce
    elif death == "sent":  # broadcast and mined, not yet confirmed
        assert await first.step() == Outcome.SENT
    elif death == "sent_unrecorded":  # a predecessor sent it and died before recording it
        rig.contracts.chain.transact(IndexJob(stored).call(rig.contracts), rig.settler)
    outcomes = await drive(rig.submitter(), idle)
    if death in ("sent", "sent_unrecorded"):
        assert Outcome.SENT not in outcomes and Outcome.RESENT not in outcomes
    assert rig.settler_nonce() == nonce + 1  # one transaction, whoever sent it
    published = await store.get_index_publication(rig.conn, stored.publication_id)
    assert published is not None and published.status == "settled"
    assert published.tx_hash is not None
    assert_on_chain(rig, values)
    assert publication_events(rig) == keys(values)


async def test_an_oracle_holding_another_value_stops_the_submitter(rig: Rig) -> None:
    """The chain is asked first: a value it holds otherwise (a store reset under a live
    oracle) is for a person to look at, and nothing is sent over it."""
    ours = index_value(GPU, MINUTE, 1)
    await rig.add_trades([1])
    await rig.add_values([ours])
    submitter = rig.submitter()
    await drive(submitter, settled)
    assert await submitter.step() == Outcome.STORED
    theirs = index_value(GPU, MINUTE, 1, 9_000_000)
    rig.contracts.chain.transact(
        rig.contracts.index_oracle.functions.publish([publication(theirs)]), rig.settler)
    nonce = rig.settler_nonce()
    with pytest.raises(RefusedError):
        await submitter.step()
    assert rig.settler_nonce() == nonce
    stored = await store.open_index_publication(rig.conn)
    assert stored is not None and stored.status == "pending"


async def test_a_run_killed_with_sigkill_mid_publication_publishes_each_value_once(
    rig: Rig, tmp_path: Path,
) -> None:
    """`gpux settlement run` sends the publication and is killed while it waits for its
    confirmations; started again, it asks the chain first and sends nothing more."""
    values = [index_value(OTHER_GPU, MINUTE, 1), index_value(GPU, MINUTE, 2)]
    await rig.add_trades([1, 2])
    await rig.add_values(values)
    deployment_path = tmp_path / "deployment.json"
    rig.contracts.deployment.save(deployment_path)
    env = {**os.environ, "ETH_RPC_URL": rig.contracts.chain.rpc_url,
           "DATABASE_URL": rig.database_url, "GPUX_DEPLOYMENT": str(deployment_path),
           "GPUX_SETTLER_KEY": "0x" + bytes(rig.settler.key).hex(), "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "run.log"
    nonce = rig.settler_nonce()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "settlement", "run", "--confirmations", "3",
             "--batch-interval-ms", "0", "--poll-interval-ms", "20", "--no-payouts"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("a"))

    async def publication_is(status: str) -> bool:
        stored = await store.get_index_publication(rig.conn, 1)
        return stored is not None and stored.status == status

    async def mined_while_the_batch_confirms() -> bool:
        batch = await store.get_batch(rig.conn, 1)
        if batch is None or batch.status != "settled":
            rig.mine()  # blocks for the batch's confirmations; none once it has settled
        return read_value(rig.contracts, GPU, REGION, values[1].minute_ns) is not None

    runner = start()
    try:
        await eventually(mined_while_the_batch_confirms, timeout_s=60,
                         message="the publication sent by `run` and mined")
        runner.kill()  # SIGKILL: mined, one block of the three it waits for
        runner.wait()
        assert await publication_is("sent")
        assert rig.settler_nonce() == nonce + 2  # the batch, the publication
        runner = start()

        async def settled_while_mining() -> bool:
            rig.mine()
            return await publication_is("settled")

        await eventually(settled_while_mining, timeout_s=60,
                         message="the publication settled by the restarted `run`")
        stop_cleanly(runner, log_path)
    finally:
        kill_if_running(runner)
    assert rig.settler_nonce() == nonce + 2
    assert_on_chain(rig, values)
    assert publication_events(rig) == keys(values)


def gpux_settlement(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpux", "settlement", *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_index_status_reads_a_value_from_the_chain_and_compares_it_with_the_database(
    rig: Rig, tmp_path: Path,
) -> None:
    values = [index_value(GPU, MINUTE, 1), index_value(GPU, MINUTE + 1, 1, 2_400_000)]
    await rig.add_trades([1])
    await rig.add_values(values)
    await drive(rig.submitter(), idle)
    deployment_path = tmp_path / "deployment.json"
    rig.contracts.deployment.save(deployment_path)
    env = {**os.environ, "ETH_RPC_URL": rig.contracts.chain.rpc_url,
           "GPUX_DEPLOYMENT": str(deployment_path), "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    latest = gpux_settlement("index-status", GPU, REGION, env=env)
    assert latest.returncode == 0, latest.stderr
    status = json.loads(latest.stdout)
    assert status["minute_ns"] == values[1].minute_ns
    assert status["key"] == "0x" + index_key(GPU, REGION).hex()
    assert status["on_chain"] == {"value_micro": 2_400_000, "source": "trades",
                                  "sufficient": True,
                                  "inputs_hash": "0x" + values[1].inputs_hash.hex()}
    assert "in_database" not in status
    env["DATABASE_URL"] = rig.database_url
    at_minute = gpux_settlement("index-status", GPU, REGION, "--minute", "2026-02-02T02:40",
                                env=env)
    assert at_minute.returncode == 0, at_minute.stderr
    status = json.loads(at_minute.stdout)
    assert status["minute_ns"] == values[0].minute_ns == MINUTE * MINUTE_NS
    assert status["on_chain"] == status["in_database"] and status["differences"] == []
    async with rig.conn.transaction():  # the database's value no longer what was published
        await index_store.write_values(rig.conn, [index_value(GPU, MINUTE, 1, 2_000_001)])
    differing = gpux_settlement("index-status", GPU, REGION, "--minute",
                                str(MINUTE * MINUTE_NS), env=env)
    assert differing.returncode == 1
    assert json.loads(differing.stdout)["differences"] == ["value_micro"]
    unpublished = gpux_settlement("index-status", GPU, REGION, "--minute",
                                  str((MINUTE + 5) * MINUTE_NS), env=env)
    assert unpublished.returncode == 0, unpublished.stderr
    assert json.loads(unpublished.stdout)["on_chain"] is None


def engine_events(trade_price: str) -> list[bytes]:
    """The events of a small market made by the Python engine: an H100 hour listed, a
    maker's ask, a taker's buy at minute MINUTE, then a deposit two minutes later whose ts
    releases the values of the minutes passed."""
    start_ns = MINUTE * MINUTE_NS
    hour_ns = 3_600 * 10**9
    commands = [
        ListInstrument(ts=start_ns, symbol=SYMBOL, gpu=GPU, region=REGION,
                       delivery_start=start_ns + 2 * hour_ns, delivery_hours=1, tick_size="0.01",
                       max_order_quantity=100, maker_fee_bps=0, taker_fee_bps=0),
        Deposit(ts=start_ns, account="op-1", asset=SYMBOL, amount=10),
        Deposit(ts=start_ns, account="buyer", asset="USDC", amount="1000"),
        NewOrder(ts=start_ns + 1, account="op-1", client_order_id="ask", instrument=SYMBOL,
                 side="sell", order_type="limit", price=trade_price, quantity=8),
        NewOrder(ts=start_ns + 2, account="buyer", client_order_id="bid", instrument=SYMBOL,
                 side="buy", order_type="limit", price=trade_price, quantity=8,
                 time_in_force="ioc"),
        Deposit(ts=start_ns + 2 * MINUTE_NS, account="buyer", asset="USDC", amount="1"),
    ]
    engine = Engine()
    return [encode(event) for command in commands for event in engine.apply(command)]


async def test_index_verify_recomputes_the_values_from_the_events_and_finds_them_on_chain(
    rig: Rig, tmp_path: Path,
) -> None:
    events = engine_events("2.15")
    values = IndexCalculator().feed(events)
    assert [value.source for value in values] == ["trades", "trades"]  # minutes +1 and +2
    assert {value.value_micro for value in values} == {2_150_000}
    await rig.add_trades([max(value.last_seq for value in values)])
    await rig.add_values(values)
    await drive(rig.submitter(), idle)
    deployment_path = tmp_path / "deployment.json"
    rig.contracts.deployment.save(deployment_path)

    def verify(lines: list[bytes]) -> subprocess.CompletedProcess[str]:
        events_path = tmp_path / "events.jsonl"
        events_path.write_bytes(b"".join(line + b"\n" for line in lines))
        return subprocess.run(
            [sys.executable, "-m", "gpux", "index", "verify", "--events", str(events_path),
             "--rpc", rig.contracts.chain.rpc_url, "--deployment", str(deployment_path),
             "--database-url", rig.database_url],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=120, check=False)

    agreeing = verify(events)
    assert agreeing.returncode == 0, agreeing.stdout + agreeing.stderr
    assert "database: 0 differences" in agreeing.stdout
    assert "chain: 2 values compared, 0 not published yet, 0 differences" in agreeing.stdout
    # a log whose trade printed at another price: the chain and the database both disagree
    altered = verify(engine_events("2.16"))
    assert altered.returncode == 1
    chain_differences = [line for line in altered.stdout.splitlines()
                         if line.startswith("DIFF") and "\ton chain " in line]
    assert {line.split("\t")[3] for line in chain_differences} == {"value_micro",
                                                                    "inputs_hash"}
    assert "chain: 2 values compared, 0 not published yet, 4 differences" in altered.stdout
