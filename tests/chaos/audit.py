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
6. Delivery: every deliverable instrument closed; each issue's bond released or paid out
   exactly once and in full (the events: bond issued = releases + compensation, each
   assignment settled once, at the delivery service's delivered_ppm, with the protocol's
   compensation and the rest released to the issuer; the ledger: its issues, releases and
   bond accounts the same, reconcile `ok`, so no redeemed token left anywhere; the chain:
   every delivery posting in one settled batch, the Vault's bond escrow equal to the
   ledger's bonds (0), a closed token's custody 0 and marked redeemed); every report the
   delivery service was told about is the engine's.
7. Client feeds (`tests.chaos.feed_audit`): every feed message and reply a client received
   that carries a seq equals what the committed log gives at that seq, and no seq is
   skipped or repeated on any one subscription.

Bonds settle on chain to one address, `Vault.BOND_ESCROW`: the three-way comparison folds
every `@bond:ISSUE_ID` account into one (`ESCROW`) that settles there.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from eventlog.reading import read_to_end
from ledger import reads
from ledger.journal import BOND_ACCOUNT_PREFIX, CHAIN_ACCOUNT
from ledger.reconcile import engine_balances, reconcile
from ledger.verify import verify_chain
from matching_engine.core import Engine
from protocol import (
    FEE_ACCOUNT,
    USDC,
    BondReleased,
    CapacityIssued,
    DeliveryAssigned,
    DeliverySettled,
    Deposited,
    InstrumentClosed,
    InstrumentListed,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    OrderRejected,
    ReportRejected,
    Trade,
    WithdrawalRejected,
    Withdrawn,
    decode_command,
    decode_event,
    effects,
    encode,
    parse_micro,
)
from settlement.chain import BOND_ESCROW, USDC_ASSET, token_id
from settlement.errors import SettlementError
from settlement.fills import ChainFill
from settlement.proofs import prove
from tests.chaos.feed_audit import audit_feeds
from tests.chaos.feeds import FeedRecorder
from tests.chaos.load import Depositor, LoadStats, Reporter, Withdrawer
from tests.chaos.venue import Venue

READ_TIMEOUT_S = 180.0
RECORDS_MAX = 5_000_000
ESCROW = "@bond"  # every issue's bond account, as the Vault holds them (BOND_ESCROW)

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


async def _read_topic(venue: Venue, topic: str, isolation: str = "read_committed"
                      ) -> list[bytes]:
    consumer = venue.event_log.consumer(topic, start="earliest", isolation=isolation)
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


def _settles_as(account: str) -> str:
    """The account a balance settles as on chain: every bond account is the escrow."""
    return ESCROW if account.startswith(BOND_ACCOUNT_PREFIX) else account


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
                      withdrawer: Withdrawer, reporter: Reporter,
                      recorder: FeedRecorder | None = None) -> Audit:
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
        await _check_delivery(audit, venue, conn, engine, events, reporter)
    finally:
        await conn.close()
    await asyncio.to_thread(_check_deposits, audit, venue, depositor, events)
    _check_orders(audit, stats, engine, events)
    _check_withdrawals(audit, withdrawer, commands, events)
    if recorder is not None:
        await _check_client_feeds(audit, venue, recorder, event_bytes, events)
    return audit


class _Seq(msgspec.Struct):
    seq: int


async def _check_client_feeds(audit: Audit, venue: Venue, recorder: FeedRecorder,
                              event_bytes: list[bytes], events: list[Any]) -> None:
    """What every client was told at a seq against the committed log (feed_audit); and
    how many of those seqs the gateway may have read first from a transaction the engine's
    kill aborted: the events topic read uncommitted holds those copies too, each of which
    must be the committed event's bytes."""
    started = time.perf_counter()
    feeds = audit_feeds(recorder, event_bytes, events)
    every = await _read_topic(venue, venue.events_topic, isolation="read_uncommitted")
    copies: Counter[int] = Counter()
    for value in every:
        seq = msgspec.json.decode(value, type=_Seq).seq
        copies[seq] += 1
        committed = event_bytes[seq - 1] if 0 < seq <= len(event_bytes) else None
        if value != committed:
            audit.problems.append(f"an uncommitted copy of seq {seq} is not the committed "
                                  f"event: {_short(value)} vs {_short(committed)}")
    aborted = {seq for seq, count in copies.items() if count > 1}
    counts = audit.counts["client_feeds"] = dict(sorted(feeds.counts.items()))
    counts["events_read_uncommitted"] = len(every)
    counts["seqs_with_an_aborted_copy"] = len(aborted)
    counts["seqs_seen_with_an_aborted_copy"] = len(feeds.seqs_seen & aborted)
    counts["audit_seconds"] = round(time.perf_counter() - started, 1)
    audit.problems += feeds.problems


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
    audit.same("balances of redeemed tokens left (ledger reconcile)", report.unredeemed, [])
    audit.check(report.ok, "the ledger's reconcile report is not ok")
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
    """Return what the chain lags the engine by: unsettled trades and delivery entries,
    unpaid withdrawals, uncredited deposits (each per account, bonds as ESCROW, and asset)."""
    settled = await conn.fetchval("SELECT coalesce(max(last_seq), 0) FROM settlement.batches "
                                  "WHERE status = 'settled'")
    unsettled = _trade_deltas(await conn.fetch("SELECT * FROM ledger.trades WHERE seq > $1",
                                               settled))
    for posting in await reads.delivery_postings(conn, settled, reads.LIMIT_MAX):
        if posting.account != CHAIN_ACCOUNT:  # a supply change, no balance on chain
            _add(unsettled, _settles_as(posting.account), posting.asset, posting.amount)
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
    names = {token_id(symbol): symbol for symbol in venue.all_symbols} | {USDC_ASSET: USDC}
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
    for name, tail in (("unsettled trades and delivery entries", unsettled),
                       ("unpaid withdrawals", unpaid),
                       ("uncredited deposits", uncredited)):
        audit.same(f"tail of {name} after the drain", {k: v for k, v in tail.items() if v}, {})
    in_engine: Balances = {}
    for (account, asset), amount in engine_balances(engine).items():
        _add(in_engine, _settles_as(account), asset, amount)
    addresses: dict[str, str] = {wallet.address: wallet.address
                                 for wallet in [*venue.wallets, venue.operator]}
    addresses[FEE_ACCOUNT] = venue.fee_wallet.address
    addresses[ESCROW] = BOND_ESCROW
    strangers = {account for account, _ in in_engine
                 if account not in addresses and account != CHAIN_ACCOUNT}
    audit.same("engine accounts holding money that settle nowhere", strangers, set())
    assets = {USDC: USDC_ASSET} | {symbol: token_id(symbol) for symbol in venue.all_symbols}
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
        for wallet in [*venue.wallets, venue.operator]:
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
    await _check_moves(audit, conn, ranges)
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


async def _check_moves(audit: Audit, conn: asyncpg.Connection,
                       ranges: dict[int, tuple[int, int]]) -> None:
    """Every posting of a delivery entry is the leaf of exactly one batch, inside its seq
    range, and the batches' move counts add up to them."""
    postings = await reads.delivery_postings(conn, 0, reads.LIMIT_MAX)
    moves = await conn.fetch("SELECT batch_id, seq, account, asset FROM settlement.batch_moves")
    audit.same("delivery postings settled vs postings in the ledger",
               Counter((int(row["seq"]), row["account"], int(row["asset"])) for row in moves),
               Counter((posting.seq, posting.account, USDC_ASSET if posting.asset == USDC
                        else token_id(posting.asset)) for posting in postings))
    outside = [(int(row["seq"]), row["account"]) for row in moves
               if not ranges[int(row["batch_id"])][0] <= row["seq"]
               <= ranges[int(row["batch_id"])][1]]
    audit.same("moves outside their batch's seq range", outside, [])
    audit.same("sum of move counts vs moves", await conn.fetchval(
        "SELECT coalesce(sum(move_count), 0) FROM settlement.batches"), len(moves))
    audit.counts["delivery_postings_settled"] = len(moves)


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


@dataclass
class _Issue:
    """One issue as the events tell it: what was bonded, released and paid out of it."""

    issue: CapacityIssued
    bond_per_hour: int
    released: int = 0  # micro-USDC, to the issuer
    released_quantity: int = 0
    compensated: int = 0  # micro-USDC, to holders
    releases: int = 0


async def _check_delivery(audit: Audit, venue: Venue, conn: asyncpg.Connection,
                          engine: Engine, events: list[Any], reporter: Reporter) -> None:
    """Every bond released or paid out exactly once and in full, in the events, the ledger
    and the Vault; every report answered as the engine decided."""
    closed = {event.symbol for event in events if isinstance(event, InstrumentClosed)}
    audit.same("deliverable instruments not closed", set(venue.deliverable) - closed, set())
    deliverable = set(venue.deliverable)
    audit.counts.update(
        deliverable_instruments=len(deliverable),
        deliverable_trades=sum(isinstance(e, Trade) and e.instrument in deliverable
                               for e in events),
        deliverable_withdrawals=sum(isinstance(e, Withdrawn) and e.asset in deliverable
                                    for e in events))
    state = engine.final_state()
    audit.same("issues with GPU-hours still bonded in the final state", state["issues"], [])
    audit.same("assignments not reported in the final state", state["deliveries"], [])
    issues = _check_bond_events(audit, events)
    _check_reports(audit, events, reporter)
    bonds_held = await _check_bond_ledger(audit, conn, issues)
    await asyncio.to_thread(_check_bond_chain, audit, venue, bonds_held, await _redeemed(conn))


def _check_bond_events(audit: Audit, events: list[Any]) -> dict[str, _Issue]:
    """Each issue's bond = its releases + its compensation (nothing is left bonded); each
    assignment settled once, for its quantity, with the protocol's compensation, the rest
    of its bond released to the issuer by the event right after."""
    bond_per_hour = {event.symbol: parse_micro(event.bond_per_gpu_hour, "bond")
                     for event in events
                     if isinstance(event, InstrumentListed) and event.bond_per_gpu_hour}
    issues: dict[str, _Issue] = {}
    assigned: dict[tuple[str, str], int] = {}
    assignments: Counter[tuple[str, str]] = Counter()
    settled: Counter[tuple[str, str]] = Counter()
    wrong: list[str] = []
    for index, event in enumerate(events):
        if isinstance(event, CapacityIssued):
            issues[event.issue_id] = _Issue(event, bond_per_hour[event.instrument])
        elif isinstance(event, BondReleased):
            issue = issues[event.issue_id]
            issue.released += parse_micro(event.amount, "amount")
            issue.released_quantity += event.quantity
            issue.releases += 1
            if event.account != issue.issue.account:
                wrong.append(f"seq {event.seq}: bond released to {event.account}")
        elif isinstance(event, DeliveryAssigned):
            key = (event.issue_id, event.holder)
            assignments[key] += 1
            assigned[key] = event.quantity
        elif isinstance(event, DeliverySettled):
            key = (event.issue_id, event.holder)
            settled[key] += 1
            issue = issues[event.issue_id]
            compensation = parse_micro(event.compensation, "compensation")
            issue.compensated += compensation
            bond = effects.bond(event.quantity, issue.bond_per_hour)
            expected = effects.compensation(event.quantity, issue.bond_per_hour,
                                            event.delivered_ppm)
            release = events[index + 1] if index + 1 < len(events) else None
            if event.quantity != assigned.get(key) or compensation != expected:
                wrong.append(f"seq {event.seq}: {key} settled {event.quantity} for "
                             f"{compensation}, assigned {assigned.get(key)}, owed {expected}")
            if not (isinstance(release, BondReleased) and release.issue_id == event.issue_id
                    and release.quantity == event.quantity
                    and parse_micro(release.amount, "amount") == bond - compensation):
                wrong.append(f"seq {event.seq}: {key} not followed by the release of "
                             f"{bond - compensation}: {release}")
    audit.same("delivery events that do not follow the protocol", wrong[:10], [])
    audit.same("assignments made more than once",
               {key: count for key, count in assignments.items() if count > 1}, {})
    audit.same("assignments settled other than once",
               {key: settled[key] for key in assignments.keys() | settled.keys()
                if settled[key] != 1 or key not in assignments}, {})
    unpaid = {issue_id: (parse_micro(issue.issue.bond, "bond"), issue.released,
                         issue.compensated, issue.issue.quantity, issue.released_quantity)
              for issue_id, issue in issues.items()
              if parse_micro(issue.issue.bond, "bond") != issue.released + issue.compensated
              or issue.issue.quantity != issue.released_quantity}
    audit.same("issues whose bond is not released and paid out in full, (bond, released, "
               "compensation, GPU-hours, GPU-hours released)", unpaid, {})
    audit.counts.update(
        issues=len(issues), assignments=len(assignments),
        bonds_micro=sum(parse_micro(issue.issue.bond, "bond") for issue in issues.values()),
        released_micro=sum(issue.released for issue in issues.values()),
        compensation_micro=sum(issue.compensated for issue in issues.values()),
        bond_releases=sum(issue.releases for issue in issues.values()))
    return issues


def _check_reports(audit: Audit, events: list[Any], reporter: Reporter) -> None:
    """The delivery service reported every assignment; what it was told is the engine's:
    an accepted report is the one settlement of its assignment, at its delivered_ppm and
    evidence; the only rejection is `already_reported`, of a report sent again."""
    assigned = {(e.issue_id, e.holder) for e in events if isinstance(e, DeliveryAssigned)}
    settlements = {(e.issue_id, e.holder): e for e in events if isinstance(e, DeliverySettled)}
    reports = reporter.reports
    audit.same("assignments never reported", assigned - set(reports), set())
    audit.same("reports of no assignment", set(reports) - assigned, set())
    refused = {key: report.outcome for key, report in reports.items()
               if report.outcome not in ("accepted", "already_reported")}
    audit.same("reports refused otherwise than already_reported", refused, {})
    differ: list[str] = []
    for key, report in reports.items():
        settlement = settlements.get(key)
        if settlement is None:
            continue  # reported with the assignments settled other than once
        told = report.compensation if report.outcome == "accepted" else settlement.compensation
        if ((settlement.delivered_ppm, settlement.evidence, settlement.compensation)
                != (report.delivered_ppm, report.evidence, told)):
            differ.append(f"{key}: reported {report.delivered_ppm} {report.evidence!r} told "
                          f"{told}, settled {settlement.delivered_ppm} "
                          f"{settlement.evidence!r} {settlement.compensation}")
    audit.same("reports that differ from their settlement", differ[:10], [])
    audit.same("report rejections in the events other than already_reported",
               [e for e in events if isinstance(e, ReportRejected)
                and e.reason != "already_reported"], [])
    outcomes = Counter(report.outcome for report in reports.values())
    sends = sum(report.sends for report in reports.values())
    audit.counts.update(
        reports=len(reports), reports_accepted=outcomes["accepted"],
        reports_already_reported=outcomes["already_reported"], report_sends=sends,
        reports_by_ppm=dict(Counter(report.delivered_ppm for report in reports.values())))


async def _check_bond_ledger(audit: Audit, conn: asyncpg.Connection,
                             issues: dict[str, _Issue]) -> int:
    """The ledger's issues and releases are the events', and every bond account is empty;
    return what the bond accounts hold together."""
    bonds = await reads.bonds(conn, limit=reads.LIMIT_MAX)
    audit.same("ledger issues (issuer, instrument, GPU-hours, bond) vs capacity_issued",
               {bond.issue_id: (bond.issuer, bond.instrument, bond.quantity, bond.bond)
                for bond in bonds},
               {issue_id: (issue.issue.account, issue.issue.instrument, issue.issue.quantity,
                           parse_micro(issue.issue.bond, "bond"))
                for issue_id, issue in issues.items()})
    audit.same("ledger bonds left (GPU-hours, micro-USDC)",
               {bond.issue_id: (bond.bonded_quantity, bond.balance) for bond in bonds
                if bond.bonded_quantity or bond.balance}, {})
    released = {row["issue_id"]: (int(row["count"]), int(row["quantity"]), int(row["amount"]))
                for row in await conn.fetch(
                    "SELECT issue_id, count(*), sum(quantity) AS quantity, "
                    "sum(amount) AS amount FROM ledger.bond_releases GROUP BY issue_id")}
    audit.same("ledger bond releases (count, GPU-hours, micro-USDC) vs bond_released events",
               released, {issue_id: (issue.releases, issue.released_quantity, issue.released)
                          for issue_id, issue in issues.items() if issue.releases})
    return sum(bond.balance for bond in bonds)


async def _redeemed(conn: asyncpg.Connection) -> dict[str, int]:
    """Return the tokens each closed deliverable instrument redeemed, as the ledger booked."""
    rows = await conn.fetch("SELECT instrument, quantity FROM ledger.redemptions")
    return {row["instrument"]: int(row["quantity"]) for row in rows}


def _check_bond_chain(audit: Audit, venue: Venue, bonds_held: int,
                      redeemed: dict[str, int]) -> None:
    """The bond escrow holds what the ledger's bond accounts hold (nothing, once every
    assignment is reported); every closed token is burned from custody and marked redeemed
    (when its close redeemed anything)."""
    contracts = venue.contracts
    audit.same("the Vault's bond escrow (USDC) vs the ledger's bond accounts",
               contracts.vault_balance(BOND_ESCROW, USDC_ASSET), bonds_held)
    audit.same("deliverable instruments closed in the ledger", set(redeemed),
               set(venue.deliverable))
    vault = contracts.vault.functions
    custody = {symbol: int(contracts.gpu_hours.functions.balanceOf(
        contracts.vault.address, token_id(symbol)).call()) for symbol in venue.deliverable}
    audit.same("closed tokens the Vault still holds", {s: n for s, n in custody.items() if n}, {})
    marked = {symbol: bool(vault.redeemed(token_id(symbol)).call())
              for symbol in venue.deliverable}
    audit.same("closed tokens marked redeemed on chain", marked,
               {symbol: redeemed.get(symbol, 0) > 0 for symbol in venue.deliverable})
    audit.counts.update(tokens_redeemed=sum(redeemed.values()))
