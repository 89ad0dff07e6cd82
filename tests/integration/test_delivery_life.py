"""A bond's whole life on the real services, through what its users have.

One venue (engine on Kafka, gateway, ledger projector, deposit watcher and settlement
submitter, as `gpux dev` runs them) on the session's Kafka, PostgreSQL and anvil. An
operator and a trader fund themselves with USDC deposited into the Vault; an admin lists a
deliverable instrument (bond 3 USDC per GPU-hour) whose delivery starts a few seconds
later; the operator issues 10 GPU-hours and sells 6 to the trader, all through the SDK.
The venue's clock closes the instrument at `delivery_start`: the operator's own 4 tokens
release their bond and the trader's 6 are assigned; the delivery service reports them
75 % delivered, which pays the trader 4.5 USDC and releases 13.5 to the operator. At each
step the SDK's replies and feeds, the ledger and the Vault show the exact amounts; at the
end the ledger verifies and reconciles with the engine, the Vault equals the ledger with
the bonds' escrow empty, and the compensation and the release prove on chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
import pytest
from eth_account.signers.local import LocalAccount

from eventlog.kafka import KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC
from gateway.cli import main as gateway_cli
from gateway.config import GatewayConfig
from gateway.store import PostgresKeyStore
from gateway.store import migrate as migrate_gateway
from gateway.testing import ApiContract
from gpux.venue import SettlementParts, Venue, VenueConfig
from ledger import reads
from ledger.journal import CHAIN_ACCOUNT, bond_account
from ledger.projector import ProjectorConfig
from ledger.reconcile import compare_balances, engine_balances, reconcile
from ledger.verify import verify_chain
from matching_engine.config import EngineConfig
from protocol import (
    FEE_ACCOUNT,
    USDC,
    AnyEvent,
    BondReleased,
    CapacityIssued,
    DeliveryAssigned,
    DeliverySettled,
    InstrumentClosed,
    decode_event,
)
from runtime.postgres import drop_database
from sdk.client import ApiKey, Client, Subscription
from settlement.chain import BOND_ESCROW, Chain, Contracts, deploy, dev_account
from settlement.deposits import WatcherConfig
from settlement.dev import deposit_usdc, new_wallet
from settlement.moves import asset_id
from settlement.proofs import prove_move
from settlement.submitter import SubmitterConfig
from settlement.testing import fresh_database
from tests.helpers import eventually, read_topic
from tests.integration.database_faults import database_of
from wsapi.messages import DeliveryEvent

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "H100-SXM-80GB.eu-north.life"
TOKEN = asset_id(SYMBOL)
OPERATOR, TRADER, DELIVERY = "op-north", "alice", "gpux.delivery"
ISSUE, NODE = "op-north.life.n-17", "n-17"
BOND = bond_account(ISSUE)
DELIVERED_PPM, EVIDENCE = 750_000, "9f2c41d0"
DEPOSIT = 100_000_000  # micro-USDC each of them deposits
DELIVERY_IN_S = 12  # from listing to delivery_start: room for the issue, its settlement, a trade
CLOCK_INTERVAL_MS = 200  # the gateway's clock: its tick after delivery_start closes the hour
WAIT_S = 60.0  # the longest any one step may take to show
DELIVERY_KINDS = (CapacityIssued, InstrumentClosed, BondReleased, DeliveryAssigned,
                  DeliverySettled)

Holdings = dict[tuple[str, str], int]


@dataclass
class Life:
    """The running venue, the wallets behind its accounts, and what the test reads with."""

    venue: Venue
    event_log: KafkaLog
    namespace: str
    contracts: Contracts
    conn: asyncpg.Connection  # the venue's database: gateway keys, ledger and settlement
    database_url: str
    keys: PostgresKeyStore
    operator: LocalAccount
    trader: LocalAccount
    fees: LocalAccount
    api: ApiContract

    @asynccontextmanager
    async def client(self, key: ApiKey) -> AsyncIterator[Client]:
        """An SDK client logged in with `key`, its frames checked against the API document."""
        async with Client(self.venue.urls[0], credentials=key, on_frame=self.api.hook(),
                          request_timeout_s=20) as client:
            yield client

    def vault(self) -> Holdings:
        """The Vault's non-zero balances under the accounts' names ("escrow" for the bonds'
        escrow), and ("custody", SYMBOL): the tokens the Vault holds on the token contract."""
        contracts = self.contracts
        wallets = {OPERATOR: self.operator.address, TRADER: self.trader.address,
                   FEE_ACCOUNT: self.fees.address, "escrow": BOND_ESCROW}
        held = {(name, asset): contracts.vault_balance(address, asset_id(asset))
                for name, address in wallets.items() for asset in (USDC, SYMBOL)}
        held[("custody", SYMBOL)] = int(contracts.gpu_hours.functions.balanceOf(
            contracts.vault.address, TOKEN).call())
        return {key: amount for key, amount in held.items() if amount != 0}

    async def until_vault_holds(self, expected: Holdings, what: str) -> None:
        """Wait until settlement has brought the Vault to `expected`."""
        try:
            await eventually(lambda: self.vault() == expected, timeout_s=WAIT_S,
                             interval_s=0.2, message=what)
        except AssertionError as error:
            raise AssertionError(f"{error}: the Vault holds {self.vault()}, "
                                 f"expected {expected}") from None

    async def until_ledger_at(self, seq: int) -> None:
        async def caught_up() -> bool:
            checkpoint = await reads.last_checkpoint(self.conn)
            return checkpoint is not None and checkpoint.last_seq >= seq

        await eventually(caught_up, timeout_s=WAIT_S, message=f"the ledger reaching seq {seq}")

    async def bond_in_ledger(self) -> tuple[int, int]:
        """The issue's GPU-hours still bonded and its bond account's balance, per the ledger."""
        [bond] = await reads.bonds(self.conn)
        assert (bond.issue_id, bond.issuer, bond.instrument, bond.node_id, bond.quantity,
                bond.bond, bond.account) == (ISSUE, OPERATOR, SYMBOL, NODE, 10, 30_000_000, BOND)
        return bond.bonded_quantity, bond.balance

    async def events(self) -> list[AnyEvent]:
        """Every event of the venue's engine so far."""
        values = await read_topic(self.event_log, self.namespace + EVENTS_TOPIC)
        return [decode_event(value) for value in values]


@pytest.fixture
async def life(kafka_log: KafkaLog, namespace: str, database_url: str, eth_rpc_url: str
               ) -> AsyncIterator[Life]:
    """Fresh contracts and a fresh database, and a venue running every service on them."""
    chain = Chain(eth_rpc_url)
    settler = dev_account(3)
    contracts = Contracts(chain, deploy(chain, dev_account(0), settler=settler.address,
                                        minter=dev_account(0).address))
    operator, trader, fees = (new_wallet(contracts) for _ in range(3))
    url = await fresh_database(database_url, "life")
    await migrate_gateway(url)
    keys = await PostgresKeyStore.open(url)
    venue = Venue(kafka_log, VenueConfig(
        engine=EngineConfig(topic_namespace=namespace, transactional_id=f"{namespace}engine",
                            group_id=f"{namespace}engine", batch_interval_ms=2),
        gateway=GatewayConfig(port=0, clock_interval_ms=CLOCK_INTERVAL_MS,
                              request_timeout_ms=20_000),
        database_url=url,
        ledger=ProjectorConfig(topic_namespace=namespace, batch_interval_ms=5),
        settlement=SettlementParts(
            contracts=contracts, settler=settler, fee_address=fees.address,
            watcher=WatcherConfig(confirmations=1, poll_interval_ms=100),
            submitter=SubmitterConfig(confirmations=1, batch_interval_ms=100,
                                      poll_interval_ms=50)),
    ), key_store=keys)
    conn = await asyncpg.connect(url)
    try:
        await venue.start()
        yield Life(venue, kafka_log, namespace, contracts, conn, url, keys, operator, trader,
                   fees, ApiContract())
    finally:
        await venue.stop()
        await conn.close()
        await keys.close()
        await drop_database(database_url, database_of(url))


class DeliveryFeed:
    """An account's `deliveries` feed and the events it has brought so far."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.events: list[DeliveryEvent] = []

    async def first(self, count: int) -> list[tuple[Any, ...]]:
        """Wait for the feed's first `count` events; return each as (event, issue_id,
        issuer, holder, quantity, its USDC amount)."""
        async def came() -> bool:
            while not self.subscription.queue.empty():
                self.events += self.subscription.queue.get_nowait().events
            return len(self.events) >= count

        await eventually(came, timeout_s=WAIT_S, message=f"{count} events on a deliveries feed")
        return [(e.event, e.issue_id, e.issuer, e.holder, e.quantity,
                 e.bond or e.amount or e.compensation) for e in self.events]


async def holdings(client: Client) -> dict[str, str | int]:
    """What the client's account has available, per asset."""
    return {asset: balance.available for asset, balance in (await client.balances()).items()}


async def until_holdings(client: Client, expected: dict[str, str | int], who: str) -> None:
    async def shown() -> bool:
        return await holdings(client) == expected

    try:
        await eventually(shown, timeout_s=WAIT_S, message=f"{who}'s balances")
    except AssertionError as error:
        raise AssertionError(f"{error}: {await holdings(client)}, expected {expected}") from None


async def delivery_service_key(database_url: str) -> ApiKey:
    """The delivery service's credential, made as the venue's operators make it, with
    `gpux gateway add-key --account gpux.delivery --role delivery`."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = await asyncio.to_thread(gateway_cli, [
            "add-key", "--database-url", database_url, "--account", DELIVERY,
            "--role", "delivery"])
    assert code == 0, output.getvalue()
    fields = dict(line.split(":", 1) for line in output.getvalue().splitlines() if ":" in line)
    return ApiKey(fields["key_id"].strip(), fields["private_key"].strip())


async def prove_from_the_command_line(life: Life, tmp_path: Path, seq: int, account: str,
                                      asset: str) -> dict[str, Any]:
    """Run `gpux settlement prove --move SEQ ACCOUNT ASSET`; return its JSON."""
    deployment_path = tmp_path / "deployment.json"
    life.contracts.deployment.save(deployment_path)
    env = {**os.environ, "ETH_RPC_URL": life.contracts.chain.rpc_url,
           "DATABASE_URL": life.database_url, "GPUX_DEPLOYMENT": str(deployment_path),
           "PYTHONPATH": str(ROOT)}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gpux", "settlement", "prove", "--move", str(seq), account, asset],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    proof: dict[str, Any] = json.loads(result.stdout)
    return proof


def timeless(event: AnyEvent) -> AnyEvent:
    """The event with seq and ts 0, to compare with one written here (the run sets both)."""
    return msgspec.structs.replace(event, seq=0, ts=0)


async def test_a_bond_from_issue_to_payout_as_its_users_the_ledger_and_the_chain_see_it(
    life: Life, tmp_path: Path,
) -> None:
    admin_key = ApiKey(*await life.keys.add_key("admin-north", "admin"))
    operator_key = ApiKey(*await life.keys.add_key(OPERATOR, "operator"))
    trader_key = ApiKey(*await life.keys.add_key(TRADER, "trader"))
    delivery_key = await delivery_service_key(life.database_url)
    async with life.client(admin_key) as admin, life.client(operator_key) as op, \
            life.client(trader_key) as alice, life.client(delivery_key) as delivery:
        # 1. Both fund themselves through the Vault; the admin lists a deliverable hour.
        for wallet, account in ((life.operator, OPERATOR), (life.trader, TRADER)):
            await asyncio.to_thread(deposit_usdc, life.contracts, wallet, DEPOSIT, account)
        await until_holdings(op, {USDC: "100"}, "the operator")
        await until_holdings(alice, {USDC: "100"}, "the trader")
        delivery_start = time.time_ns() + DELIVERY_IN_S * 10**9
        listed = await admin.list_instrument(
            symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-north",
            delivery_start=delivery_start, delivery_hours=1, tick_size="0.01",
            max_order_quantity=100, maker_fee_bps=10, taker_fee_bps=20, bond_per_gpu_hour="3")
        assert listed.accepted, listed
        [spec] = [spec for spec in await alice.instruments() if spec.symbol == SYMBOL]
        assert (spec.bond_per_gpu_hour, spec.status) == ("3", "open")
        op_feed = DeliveryFeed(await op.subscribe("deliveries"))
        alice_feed = DeliveryFeed(await alice.subscribe("deliveries"))

        # 2. The operator bonds 10 GPU-hours: 30 USDC from its available into @bond:ISSUE.
        issued = await op.issue_capacity(SYMBOL, NODE, 10, issue_id=ISSUE)
        assert (issued.status, issued.issue_id, issued.instrument, issued.node_id,
                issued.quantity, issued.bond) == (
            "accepted", ISSUE, SYMBOL, NODE, 10, "30"), issued
        assert await holdings(op) == {USDC: "70", SYMBOL: 10}
        assert await op_feed.first(1) == [
            ("capacity_issued", ISSUE, OPERATOR, None, 10, "30")]
        await life.until_ledger_at(op_feed.events[0].seq)
        assert await life.bond_in_ledger() == (10, 30_000_000)
        await life.until_vault_holds({
            (OPERATOR, USDC): 70_000_000, (OPERATOR, SYMBOL): 10, (TRADER, USDC): DEPOSIT,
            ("escrow", USDC): 30_000_000, ("custody", SYMBOL): 10,
        }, "the issue settled: its tokens minted into custody, its bond in escrow")
        assert life.contracts.symbol_of(TOKEN) == SYMBOL

        # 3. The trader buys 6 at 2.50 from the operator (maker fee 0.015, taker fee 0.03).
        ask = await op.new_order(SYMBOL, "sell", 6, "2.50", client_order_id="ask")
        bid = await alice.new_order(SYMBOL, "buy", 6, "2.50", client_order_id="bid")
        assert ask.accepted and bid.accepted, (ask, bid)
        await until_holdings(op, {USDC: "84.985", SYMBOL: 4}, "the operator")
        await until_holdings(alice, {USDC: "84.97", SYMBOL: 6}, "the trader")
        assert time.time_ns() < delivery_start, "the trade came after delivery_start"

        # 4. The venue's clock ticks past delivery_start: the hour closes.
        assert await alice_feed.first(1) == [
            ("delivery_assigned", ISSUE, OPERATOR, TRADER, 6, None)]
        assert await op_feed.first(3) == [
            ("capacity_issued", ISSUE, OPERATOR, None, 10, "30"),
            ("bond_released", ISSUE, OPERATOR, None, 4, "12"),
            ("delivery_assigned", ISSUE, OPERATOR, TRADER, 6, None)]
        await until_holdings(op, {USDC: "96.985"}, "the operator")
        await until_holdings(alice, {USDC: "84.97"}, "the trader")
        assert SYMBOL in {spec.symbol for spec in await alice.instruments("closed")}
        await life.until_ledger_at(alice_feed.events[0].seq)  # the close's last event
        assert await life.bond_in_ledger() == (6, 18_000_000)
        await life.until_vault_holds({
            (OPERATOR, USDC): 96_985_000, (TRADER, USDC): 84_970_000, (FEE_ACCOUNT, USDC): 45_000,
            ("escrow", USDC): 18_000_000,
        }, "the close settled: every token burned, the operator's 4 hours' bond released")
        assert life.contracts.vault.functions.redeemed(TOKEN).call()

        # 5. The delivery service reports 75 % delivered: 4.5 to the trader, 13.5 released.
        report = await delivery.delivery_report(ISSUE, TRADER, DELIVERED_PPM, evidence=EVIDENCE)
        assert (report.status, report.issue_id, report.instrument, report.holder,
                report.quantity, report.delivered_ppm, report.compensation,
                report.evidence) == (
            "accepted", ISSUE, SYMBOL, TRADER, 6, DELIVERED_PPM, "4.5", EVIDENCE), report
        assert (await alice_feed.first(2))[1] == (
            "delivery_settled", ISSUE, OPERATOR, TRADER, 6, "4.5")
        assert (await op_feed.first(5))[3:] == [
            ("delivery_settled", ISSUE, OPERATOR, TRADER, 6, "4.5"),
            ("bond_released", ISSUE, OPERATOR, None, 6, "13.5")]
        await until_holdings(op, {USDC: "110.485"}, "the operator")
        await until_holdings(alice, {USDC: "89.47"}, "the trader")
        [issue] = (await op.deliveries()).issues
        assert (issue.issue_id, issue.quantity, issue.bonded_quantity, issue.bond,
                issue.status) == (ISSUE, 10, 0, "0", "settled")
        [assignment] = (await alice.deliveries()).assignments
        assert (assignment.issue_id, assignment.holder, assignment.quantity, assignment.status,
                assignment.delivered_ppm, assignment.compensation, assignment.evidence) == (
            ISSUE, TRADER, 6, "settled", DELIVERED_PPM, "4.5", EVIDENCE)

    # The engine's events of the bond, in order.
    events = await life.events()
    bond_events = [event for event in events if isinstance(event, DELIVERY_KINDS)]
    assert [timeless(event) for event in bond_events] == [
        CapacityIssued(seq=0, ts=0, issue_id=ISSUE, account=OPERATOR, instrument=SYMBOL,
                       node_id=NODE, quantity=10, bond="30"),
        InstrumentClosed(seq=0, ts=0, symbol=SYMBOL),
        BondReleased(seq=0, ts=0, issue_id=ISSUE, account=OPERATOR, quantity=4, amount="12"),
        DeliveryAssigned(seq=0, ts=0, instrument=SYMBOL, issue_id=ISSUE, issuer=OPERATOR,
                         node_id=NODE, holder=TRADER, quantity=6),
        DeliverySettled(seq=0, ts=0, instrument=SYMBOL, issue_id=ISSUE, issuer=OPERATOR,
                        holder=TRADER, quantity=6, delivered_ppm=DELIVERED_PPM,
                        compensation="4.5", evidence=EVIDENCE),
        BondReleased(seq=0, ts=0, issue_id=ISSUE, account=OPERATOR, quantity=6, amount="13.5"),
    ]
    issue_seq, close_seq, release_seq, _, settled_seq, paid_seq = (
        event.seq for event in bond_events)
    assert issue_seq == op_feed.events[0].seq

    # 6. The ledger books it all, verifies, and reconciles with the engine.
    engine = life.venue.engine_state
    assert engine is not None and engine.seq == events[-1].seq
    await life.until_ledger_at(engine.seq)
    postings = await reads.delivery_postings(life.conn, 0, 100)
    assert sorted((p.seq, p.kind, p.account, p.asset, p.amount) for p in postings) == sorted([
        (issue_seq, "capacity_issued", OPERATOR, USDC, -30_000_000),
        (issue_seq, "capacity_issued", BOND, USDC, 30_000_000),
        (issue_seq, "capacity_issued", CHAIN_ACCOUNT, SYMBOL, -10),
        (issue_seq, "capacity_issued", OPERATOR, SYMBOL, 10),
        (close_seq, "redeemed", OPERATOR, SYMBOL, -4),
        (close_seq, "redeemed", TRADER, SYMBOL, -6),
        (close_seq, "redeemed", CHAIN_ACCOUNT, SYMBOL, 10),
        (release_seq, "bond_released", BOND, USDC, -12_000_000),
        (release_seq, "bond_released", OPERATOR, USDC, 12_000_000),
        (settled_seq, "delivery_settled", BOND, USDC, -4_500_000),
        (settled_seq, "delivery_settled", TRADER, USDC, 4_500_000),
        (paid_seq, "bond_released", BOND, USDC, -13_500_000),
        (paid_seq, "bond_released", OPERATOR, USDC, 13_500_000),
    ])
    ledger = await reads.balances(life.conn)
    assert ledger == {(OPERATOR, USDC): 110_485_000, (TRADER, USDC): 89_470_000,
                      (FEE_ACCOUNT, USDC): 45_000, (CHAIN_ACCOUNT, USDC): -2 * DEPOSIT}
    assert await life.bond_in_ledger() == (0, 0)
    verified = await verify_chain(life.conn)
    assert (verified.ok, verified.entries_checked, verified.head_seq,
            verified.issues_checked) == (True, 8, paid_seq, 1), verified
    reconciled = await reconcile(life.conn, life.event_log,
                                 commands_topic=life.namespace + COMMANDS_TOPIC)
    assert (reconciled.ok, reconciled.seq) == (True, engine.seq), reconciled
    assert compare_balances(ledger, engine_balances(engine)) == []

    # Settlement brings the Vault to the ledger, and the payout proves on chain.
    await life.until_vault_holds(
        {key: amount for key, amount in ledger.items() if key[0] != CHAIN_ACCOUNT},
        "the report settled: the escrow empty, the Vault equal to the ledger")
    compensation = await prove_move(life.conn, life.contracts, settled_seq, TRADER, USDC)
    assert compensation.verified and compensation.move["kind"] == "delivery_settled"
    assert (compensation.move["wallet"], compensation.move["amount"]) == (
        life.trader.address, "4500000")
    from_the_bond = await prove_move(life.conn, life.contracts, settled_seq, BOND, USDC)
    assert from_the_bond.verified
    assert (from_the_bond.move["wallet"], from_the_bond.move["amount"]) == (
        BOND_ESCROW, "-4500000")
    release = await prove_from_the_command_line(life, tmp_path, paid_seq, OPERATOR, USDC)
    assert (release["verified_by_vault"], release["verified_locally"]) == (True, True)
    assert (release["move"]["kind"], release["move"]["wallet"], release["move"]["amount"]) == (
        "bond_released", life.operator.address, "13500000")
    assert life.api.violations == []
