"""After the faults: check the venue end to end, collecting every problem rather than the first.

1. The logs: the event topic equals, byte for byte, a replay of the command topic through
   `matching_engine.core.Engine`; seq runs 1..N without a gap or a duplicate.
2. Three ways: the replayed engine's balances == the ledger's (its own `reconcile`, and
   the hash chain verifies) == the Vault's on chain, for every account and asset. The
   chain side is computed explicitly: engine total, minus unsettled trades (fees
   included), plus withdrawals not yet paid out, plus deposits not yet credited; after
   the drain all three tails must be empty.
3. Settlement: batch ids 1..B, each settled once on chain (one `BatchSettled` per id, the
   same root), every trade in exactly one batch; every withdrawal paid out once.
4. Deposits: every Vault deposit credited exactly once, to the depositor's address.
5. Orders: every order the gateway acknowledged as accepted is in the events with the same
   order id, and is either done (filled or canceled) or open in the final state; every
   rejection the gateway reported is the engine's.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from eventlog.reading import read_to_end
from ledger import reads
from ledger.journal import CHAIN_ACCOUNT
from ledger.reconcile import engine_balances, reconcile
from ledger.verify import verify_chain
from matching_engine.core import Engine
from protocol import (
    FEE_ACCOUNT,
    USDC,
    Deposited,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    OrderRejected,
    Trade,
    WithdrawalRejected,
    Withdrawn,
    decode_command,
    decode_event,
    encode,
    parse_micro,
)
from settlement.chain import USDC_ASSET, token_id
from settlement.errors import SettlementError
from settlement.fills import ChainFill
from settlement.proofs import prove
from tests.chaos.load import Depositor, LoadStats, Withdrawer
from tests.chaos.venue import Venue

READ_TIMEOUT_S = 180.0
RECORDS_MAX = 5_000_000

Balances = dict[tuple[str, str], int]


@dataclass
class Audit:
    """What the audit found: counts for the report, and every problem."""

    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, holds: bool, problem: str) -> None:
        if not holds:
            self.problems.append(problem)

    def same(self, what: str, left: object, right: object) -> None:
        """Record a problem unless `left == right`; name only what differs."""
        if left == right:
            return
        if isinstance(left, (set, frozenset)) and isinstance(right, (set, frozenset)):
            detail = f"only left {_short(sorted(left - right, key=str))}, " \
                     f"only right {_short(sorted(right - left, key=str))}"
        elif isinstance(left, dict) and isinstance(right, dict):
            keys = sorted((k for k in left.keys() | right.keys() if left.get(k) != right.get(k)),
                          key=str)
            detail = _short({k: (left.get(k), right.get(k)) for k in keys[:20]}) + \
                f" ({len(keys)} keys differ, shown as (left, right))"
        else:
            detail = f"{_short(left)} != {_short(right)}"
        self.problems.append(f"{what}: {detail}")


def _short(value: object, length_max: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= length_max else text[:length_max] + "..."


async def _read_topic(venue: Venue, topic: str) -> list[bytes]:
    consumer = venue.event_log.consumer(topic, start="earliest", isolation="read_committed")
    await consumer.start()
    try:
        records = await read_to_end(consumer, records_max=RECORDS_MAX, timeout_s=READ_TIMEOUT_S)
    finally:
        await consumer.stop()
    return [record.value for record in records]


def _token_units(asset: str, amount: str | int) -> int:
    return parse_micro(amount, "amount") if asset == USDC else int(amount)


def _add(balances: Balances, account: str, asset: str, amount: int) -> None:
    balances[(account, asset)] = balances.get((account, asset), 0) + amount


def _trade_deltas(rows: Iterable[asyncpg.Record]) -> Balances:
    """Net what trades move per (account, asset), as settlement nets a batch."""
    deltas: Balances = {}
    for row in rows:
        notional = int(row["price_micro"]) * int(row["quantity"])
        buyer_fee, seller_fee = int(row["buyer_fee_micro"]), int(row["seller_fee_micro"])
        _add(deltas, row["buyer"], USDC, -(notional + buyer_fee))
        _add(deltas, row["seller"], USDC, notional - seller_fee)
        _add(deltas, FEE_ACCOUNT, USDC, buyer_fee + seller_fee)
        _add(deltas, row["seller"], row["instrument"], -int(row["quantity"]))
        _add(deltas, row["buyer"], row["instrument"], int(row["quantity"]))
    return deltas


async def audit_venue(venue: Venue, stats: LoadStats, depositor: Depositor,
                      withdrawer: Withdrawer) -> Audit:
    audit = Audit()
    commands = await _read_topic(venue, venue.commands_topic)
    event_bytes = await _read_topic(venue, venue.events_topic)
    engine = Engine()
    replayed = [encode(event) for value in commands
                for event in engine.apply(decode_command(value))]
    engine.validate()
    events = [decode_event(value) for value in event_bytes]
    seqs = [event.seq for event in events]
    audit.counts.update(commands=len(commands), events=len(events))
    audit.same("first seq that breaks 1, 2, 3, ...",
               _first_difference(seqs, list(range(1, len(seqs) + 1))), None)
    audit.same("event count, topic vs replay", len(event_bytes), len(replayed))
    audit.same("first event where the topic and the replay of the commands differ",
               _first_difference(event_bytes, replayed), None)
    conn = await asyncpg.connect(venue.venue_url)
    try:
        await _check_ledger(audit, venue, conn, engine, events)
        await _check_chain(audit, venue, conn, engine, events)
        await _check_settlement(audit, venue, conn, events)
    finally:
        await conn.close()
    await asyncio.to_thread(_check_deposits, audit, venue, depositor, events)
    _check_orders(audit, stats, engine, events)
    _check_withdrawals(audit, withdrawer, commands, events)
    return audit


def _first_difference(left: list[Any], right: list[Any]) -> int | None:
    """Return the first index where two lists differ (or where one ends), None if equal."""
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return index
    return None if len(left) == len(right) else min(len(left), len(right))


async def _check_ledger(audit: Audit, venue: Venue, conn: asyncpg.Connection, engine: Engine,
                        events: list[Any]) -> None:
    report = await reconcile(conn, venue.event_log, commands_topic=venue.commands_topic)
    audit.same("ledger reconcile seq vs last event seq", report.seq, events[-1].seq)
    audit.same("ledger vs engine differences", report.differences, [])
    ledger_balances = await reads.balances(conn)
    audit.same("ledger balances vs the replayed engine", dict(ledger_balances),
               engine_balances(engine))
    verified = await verify_chain(conn)
    audit.check(verified.ok, f"the ledger's hash chain is broken: {verified.broken}")
    trades = sum(isinstance(event, Trade) for event in events)
    withdrawn = sum(isinstance(event, Withdrawn) for event in events)
    audit.same("ledger.trades rows vs trade events",
               await conn.fetchval("SELECT count(*) FROM ledger.trades"), trades)
    audit.same("ledger.withdrawals rows vs withdrawn events",
               await conn.fetchval("SELECT count(*) FROM ledger.withdrawals"), withdrawn)
    covered = await conn.fetchval("SELECT sum(last_seq - first_seq + 1) FROM ledger.checkpoints")
    audit.same("events covered by ledger checkpoints", covered, len(events))
    audit.counts.update(trades=trades, withdrawals=withdrawn, ledger_balances=len(ledger_balances))


async def _tails(venue: Venue, conn: asyncpg.Connection, events: list[Any]
                 ) -> tuple[Balances, Balances, Balances]:
    """Return what the chain lags the engine by: unsettled trades, unpaid withdrawals,
    uncredited deposits (each per account and asset)."""
    settled = await conn.fetchval("SELECT coalesce(max(last_seq), 0) FROM settlement.batches "
                                  "WHERE status = 'settled'")
    unsettled = _trade_deltas(await conn.fetch("SELECT * FROM ledger.trades WHERE seq > $1",
                                               settled))
    paid = {int(row[0]) for row in await conn.fetch(
        "SELECT withdrawal_seq FROM settlement.payouts WHERE status = 'settled'")}
    unpaid: Balances = {}
    for event in events:
        if isinstance(event, Withdrawn) and event.seq not in paid:
            _add(unpaid, event.account, event.asset, _token_units(event.asset, event.amount))
    credited = {event.deposit_id for event in events if isinstance(event, Deposited)}
    uncredited: Balances = {}
    for entry in await asyncio.to_thread(_chain_deposits, venue):
        if entry[0] not in credited:
            _add(uncredited, entry[1], entry[2], entry[3])
    return unsettled, unpaid, uncredited


def _chain_deposits(venue: Venue) -> list[tuple[str, str, str, int]]:
    """Return (deposit id, depositor, asset name, amount) of every Vault deposit on chain."""
    contracts = venue.contracts
    names = {token_id(symbol): symbol for symbol in venue.symbols} | {USDC_ASSET: USDC}
    logs = contracts.vault.events.Deposited().get_logs(
        from_block=contracts.deployment.block_number, to_block="latest")
    return [(f"0x{bytes(entry['transactionHash']).hex()}:{entry['logIndex']}",
             str(entry["args"]["depositor"]), names.get(int(entry["args"]["asset"]), "?"),
             int(entry["args"]["amount"])) for entry in logs]


async def _check_chain(audit: Audit, venue: Venue, conn: asyncpg.Connection, engine: Engine,
                       events: list[Any]) -> None:
    unsettled, unpaid, uncredited = await _tails(venue, conn, events)
    audit.counts.update(unsettled_tail=len(unsettled), unpaid_tail=len(unpaid),
                        uncredited_tail=len(uncredited))
    for name, tail in (("unsettled trades", unsettled), ("unpaid withdrawals", unpaid),
                       ("uncredited deposits", uncredited)):
        audit.same(f"tail of {name} after the drain", {k: v for k, v in tail.items() if v}, {})
    in_engine = engine_balances(engine)
    addresses = {wallet.address: wallet.address for wallet in venue.wallets}
    addresses[FEE_ACCOUNT] = venue.fee_wallet.address
    strangers = {account for account, _ in in_engine
                 if account not in addresses and account != CHAIN_ACCOUNT}
    audit.same("engine accounts holding money that settle nowhere", strangers, set())
    assets = {USDC: USDC_ASSET} | {symbol: token_id(symbol) for symbol in venue.symbols}
    expected: Balances = {}
    for account in addresses:
        for asset in assets:
            key = (account, asset)
            expected[key] = (in_engine.get(key, 0) - unsettled.get(key, 0) + unpaid.get(key, 0)
                             + uncredited.get(key, 0))
    on_chain = await asyncio.to_thread(_vault_balances, venue, addresses, assets)
    differences = {key: (expected[key], on_chain[key]) for key in expected
                   if expected[key] != on_chain[key]}
    audit.same("engine (less its tails) vs Vault balances, (expected, chain)", differences, {})
    audit.counts["chain_balances_compared"] = len(expected)
    fees_earned = (await reads.fees_earned(conn)).total_micro
    audit.same("fees: the engine's fees account vs the ledger's fees earned",
               in_engine.get((FEE_ACCOUNT, USDC), 0), fees_earned)
    audit.counts["fees_micro"] = fees_earned
    held = await asyncio.to_thread(_custody, venue, assets)
    for asset, amount in held.items():
        total = sum(on_chain[(account, asset)] for account in addresses)
        audit.same(f"{asset} the Vault holds vs the sum of its balances", amount, total)
    await _check_wallets(audit, venue, conn, assets)


def _vault_balances(venue: Venue, addresses: dict[str, str], assets: dict[str, int]) -> Balances:
    return {(account, asset): venue.contracts.vault_balance(address, asset_id)
            for account, address in addresses.items() for asset, asset_id in assets.items()}


def _custody(venue: Venue, assets: dict[str, int]) -> dict[str, int]:
    """Return what the Vault holds of each asset in the token contracts themselves."""
    contracts = venue.contracts
    vault = contracts.vault.address
    held = {USDC: int(contracts.usdc.functions.balanceOf(vault).call())}
    for asset, asset_id in assets.items():
        if asset != USDC:
            held[asset] = int(contracts.gpu_hours.functions.balanceOf(vault, asset_id).call())
    return held


async def _check_wallets(audit: Audit, venue: Venue, conn: asyncpg.Connection,
                         assets: dict[str, int]) -> None:
    """Each wallet deposited all it was given, so outside the Vault it holds its payouts."""
    paid: Balances = {}
    for row in await conn.fetch("SELECT address, asset, amount FROM settlement.payouts"):
        name = next(a for a, asset_id in assets.items() if asset_id == int(row["asset"]))
        _add(paid, row["address"], name, int(row["amount"]))

    def held() -> Balances:
        contracts = venue.contracts
        found: Balances = {}
        for wallet in venue.wallets:
            found[(wallet.address, USDC)] = int(
                contracts.usdc.functions.balanceOf(wallet.address).call())
            for asset, asset_id in assets.items():
                if asset != USDC:
                    found[(wallet.address, asset)] = int(
                        contracts.gpu_hours.functions.balanceOf(wallet.address, asset_id).call())
        return found

    outside = await asyncio.to_thread(held)
    expected = {key: paid.get(key, 0) for key in outside}
    audit.same("wallet holdings outside the Vault vs their payouts", outside, expected)


async def _check_settlement(audit: Audit, venue: Venue, conn: asyncpg.Connection,
                            events: list[Any]) -> None:
    batches = await conn.fetch("SELECT batch_id, first_seq, last_seq, fill_count, fills_root, "
                               "status, tx_hash FROM settlement.batches ORDER BY batch_id")
    ids = [int(row["batch_id"]) for row in batches]
    audit.same("batch ids", ids, list(range(1, len(ids) + 1)))
    audit.same("batches not settled", [i for i, row in zip(ids, batches, strict=True)
                                       if row["status"] != "settled"], [])
    for before, after in zip(batches, batches[1:], strict=False):
        audit.check(after["first_seq"] > before["last_seq"],
                    f"batches {before['batch_id']} and {after['batch_id']} overlap in seq")
    fills = await conn.fetch("SELECT batch_id, seq, trade_id, leaf, fill "
                             "FROM settlement.batch_fills")
    trade_events = {event.trade_id: event for event in events if isinstance(event, Trade)}
    trades = {trade_id: event.seq for trade_id, event in trade_events.items()}
    _check_fills(audit, fills, trade_events)
    await _check_proofs(audit, venue, conn, [row["trade_id"] for row in fills])
    settled_ids = Counter(row["trade_id"] for row in fills)
    audit.same("trades settled more than once",
               {t: n for t, n in settled_ids.items() if n > 1}, {})
    audit.same("trades settled vs trades in the events", set(settled_ids), set(trades))
    audit.same("fill seq vs trade seq", {row["trade_id"]: int(row["seq"]) for row in fills},
               {trade_id: seq for trade_id, seq in trades.items() if trade_id in settled_ids})
    ranges = {int(row["batch_id"]): (int(row["first_seq"]), int(row["last_seq"]))
              for row in batches}
    outside = [row["trade_id"] for row in fills
               if not ranges[int(row["batch_id"])][0] <= row["seq"]
               <= ranges[int(row["batch_id"])][1]]
    audit.same("fills outside their batch's seq range", outside, [])
    audit.same("sum of fill counts vs fills", sum(int(row["fill_count"]) for row in batches),
               len(fills))
    chain = await asyncio.to_thread(_chain_jobs, venue, len(ids))
    audit.same("BatchSettled events per batch id",
               Counter(batch_id for batch_id, _ in chain.settled), Counter(ids))
    audit.same("the transaction of each batch, stored vs its BatchSettled event",
               {int(row["batch_id"]): bytes(row["tx_hash"] or b"") for row in batches},
               dict(chain.settled))
    audit.same("batch roots on chain vs stored", chain.roots,
               {int(row["batch_id"]): bytes(row["fills_root"]) for row in batches})
    audit.same("root of the batch after the last", chain.next_root, b"\0" * 32)
    payouts = await conn.fetch("SELECT withdrawal_seq, account, asset, amount, status "
                               "FROM settlement.payouts ORDER BY withdrawal_seq")
    withdrawn = {event.seq: event for event in events if isinstance(event, Withdrawn)}
    audit.same("payouts vs withdrawn events", [int(r["withdrawal_seq"]) for r in payouts],
               sorted(withdrawn))
    audit.same("payouts not settled", [int(r["withdrawal_seq"]) for r in payouts
                                       if r["status"] != "settled"], [])
    audit.same("PaidOut events per withdrawal", Counter(chain.paid), Counter(withdrawn.keys()))
    for row in payouts:
        event = withdrawn.get(int(row["withdrawal_seq"]))
        if event is not None:
            audit.same(f"payout {row['withdrawal_seq']} vs its withdrawal",
                       (row["account"], int(row["amount"])),
                       (event.account, _token_units(event.asset, event.amount)))
    audit.counts.update(batches=len(ids), payouts=len(payouts))


@dataclass(frozen=True)
class _ChainJobs:
    """What the chain holds of settlement: roots, (batch id, tx) per BatchSettled event,
    withdrawal id per PaidOut event, and the root of the batch after the last (empty)."""

    roots: dict[int, bytes]
    settled: list[tuple[int, bytes]]
    paid: list[int]
    next_root: bytes


def _chain_jobs(venue: Venue, batch_count: int) -> _ChainJobs:
    contracts = venue.contracts
    start = contracts.deployment.block_number
    vault_events = contracts.vault.events
    return _ChainJobs(
        roots={batch_id: contracts.batch_root(batch_id) for batch_id in range(1, batch_count + 1)},
        settled=[(int(entry["args"]["batchId"]), bytes(entry["transactionHash"])) for entry in
                 vault_events.BatchSettled().get_logs(from_block=start, to_block="latest")],
        paid=[int(entry["args"]["withdrawalId"]) for entry in
              vault_events.PaidOut().get_logs(from_block=start, to_block="latest")],
        next_root=contracts.batch_root(batch_count + 1),
    )


def _check_fills(audit: Audit, fills: list[asyncpg.Record], trades: dict[str, Trade]) -> None:
    """Each stored leaf is the trade as the engine made it, buyer and seller resolved."""
    wrong: list[str] = []
    for row in fills:
        fill = msgspec.json.decode(row["fill"], type=ChainFill)
        trade = trades.get(row["trade_id"])
        if trade is None:
            continue  # reported with the set comparison
        taker_buys = trade.aggressor_side == "buy"
        buyer, seller = ((trade.taker_account, trade.maker_account) if taker_buys
                         else (trade.maker_account, trade.taker_account))
        buyer_fee, seller_fee = ((trade.taker_fee, trade.maker_fee) if taker_buys
                                 else (trade.maker_fee, trade.taker_fee))
        expected = ChainFill(
            seq=trade.seq, trade_id=int(trade.trade_id), asset=token_id(trade.instrument),
            price_micro=parse_micro(trade.price, "price"), quantity=trade.quantity,
            buyer=buyer, seller=seller, buyer_fee_micro=parse_micro(buyer_fee, "fee"),
            seller_fee_micro=parse_micro(seller_fee, "fee"))
        if fill != expected or bytes(row["leaf"]) != expected.leaf():
            wrong.append(f"trade {trade.trade_id}: stored {fill}, engine {expected}")
    audit.same("settled fills that differ from the engine's trades", wrong[:5], [])


async def _check_proofs(audit: Audit, venue: Venue, conn: asyncpg.Connection,
                        trade_ids: list[str]) -> None:
    """Prove a sample of fills against the roots on chain, as `gpux settlement prove` does."""
    if not trade_ids:
        return
    ordered = sorted(trade_ids, key=int)
    sample = {ordered[0], ordered[-1], *random.Random(5).sample(ordered, min(8, len(ordered)))}
    for trade_id in sorted(sample, key=int):
        try:
            proof = await prove(conn, venue.contracts, trade_id)
        except SettlementError as error:
            audit.problems.append(f"no proof of trade {trade_id}: {error}")
            continue
        audit.check(proof.verified,
                    f"the proof of trade {trade_id} does not verify on chain")
    audit.counts["fills_proved"] = len(sample)


def _check_deposits(audit: Audit, venue: Venue, depositor: Depositor, events: list[Any]) -> None:
    on_chain = _chain_deposits(venue)
    deposited = [event for event in events if isinstance(event, Deposited)]
    credited = Counter(event.deposit_id for event in deposited)
    audit.same("deposits credited more than once", {d: n for d, n in credited.items() if n > 1},
               {})
    audit.same("deposits credited vs deposits on chain",
               {(e.deposit_id, e.account, e.asset, _token_units(e.asset, e.amount))
                for e in deposited},
               {(deposit_id, depositor_address, asset, amount)
                for deposit_id, depositor_address, asset, amount in on_chain})
    made = {deposit.deposit_id for deposit in depositor.deposits}
    audit.same("deposits the depositor made that were never credited", made - set(credited), set())
    audit.counts.update(deposits=len(on_chain), deposit_failures=len(depositor.failures))


@dataclass
class _Life:
    """One accepted order as the events tell it."""

    account: str
    client_order_id: str
    remaining: int
    done: bool = False


def _lives(events: list[Any]) -> dict[str, _Life]:
    lives: dict[str, _Life] = {}
    for event in events:
        if isinstance(event, OrderAccepted):
            lives[event.order_id] = _Life(event.account, event.client_order_id, event.quantity)
        elif isinstance(event, Trade):
            for order_id in (event.maker_order_id, event.taker_order_id):
                life = lives[order_id]
                life.remaining -= event.quantity
                life.done = life.done or life.remaining == 0
        elif isinstance(event, (OrderAmended, OrderReduced)):
            life = lives[event.order_id]
            life.remaining = event.remaining_quantity
            life.done = life.done or life.remaining == 0
        elif isinstance(event, OrderCanceled):
            lives[event.order_id].done = True
    return lives


def _check_orders(audit: Audit, stats: LoadStats, engine: Engine, events: list[Any]) -> None:
    lives = _lives(events)
    open_ids = {order["order_id"] for order in engine.final_state()["open_orders"]}
    audit.same("open orders never accepted", open_ids - set(lives), set())
    audit.same("orders both done and open",
               sorted(order_id for order_id in open_ids if lives[order_id].done), [])
    audit.same("orders neither done nor open",
               sorted(order_id for order_id, life in lives.items()
                      if not life.done and order_id not in open_ids), [])
    accepted = {(life.account, life.client_order_id): order_id
                for order_id, life in lives.items()}
    rejected = {(event.account, event.client_order_id): event.reason
                for event in events if isinstance(event, OrderRejected)}
    lost: list[str] = []
    misreported: list[str] = []
    outcomes_of_unknown: Counter[str] = Counter()
    for record in stats.orders:
        key = (record.account, record.client_order_id)
        if record.status == "accepted":
            if accepted.get(key) != record.order_id:
                lost.append(f"{key}: acknowledged {record.order_id}, events {accepted.get(key)}")
        elif record.status == "rejected":
            if rejected.get(key) != record.reason or key in accepted:
                misreported.append(f"{key}: told {record.reason}, events {rejected.get(key)}")
        else:
            outcomes_of_unknown["accepted" if key in accepted else
                                "rejected" if key in rejected else "never reached"] += 1
    audit.same("acknowledged orders missing from the events", lost, [])
    audit.same("rejections told that the engine did not make", misreported, [])
    statuses = Counter(record.status for record in stats.orders)
    audit.counts.update(orders_sent=len(stats.orders), orders_accepted=statuses["accepted"],
                        orders_rejected=statuses["rejected"], orders_unknown=statuses["unknown"],
                        unknown_outcomes=dict(outcomes_of_unknown), open_orders=len(open_ids),
                        orders_in_events=len(lives))


def _check_withdrawals(audit: Audit, withdrawer: Withdrawer, commands: list[bytes],
                       events: list[Any]) -> None:
    logged = Counter(value for value in commands if b'"type":"withdraw"' in value)
    missing = [command for command in withdrawer.sent if logged[encode(command)] == 0]
    audit.same("withdrawals confirmed by the broker but not in the command log", missing, [])
    by_reason: defaultdict[str, int] = defaultdict(int)
    for event in events:
        if isinstance(event, Withdrawn):
            by_reason["withdrawn"] += 1
        elif isinstance(event, WithdrawalRejected):
            by_reason[event.reason] += 1
    audit.counts.update(withdrawals_sent=len(withdrawer.sent),
                        withdrawals_unconfirmed=len(withdrawer.unconfirmed),
                        withdrawal_outcomes=dict(by_reason))
