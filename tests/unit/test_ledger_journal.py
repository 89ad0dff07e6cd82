"""The ledger's pure core: events to balanced postings (bonds and redemption too), the hash
chain, gaps, comparison with the engine."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from eventlog.port import Record
from ledger.errors import EventError, SeqGapError
from ledger.journal import (
    CHAIN_ACCOUNT,
    GENESIS_HASH,
    JournalBatch,
    JournalBuilder,
    bond_released_entry,
    capacity_issued_entry,
    delivery_settled_postings,
    entry_hash,
    postings_of,
)
from ledger.reconcile import (
    Difference,
    compare_balances,
    engine_balances,
    unredeemed_balances,
)
from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import (
    BondReleased,
    CapacityIssued,
    DeliverySettled,
    Deposit,
    Deposited,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
    Trade,
    Withdraw,
    Withdrawn,
    encode,
)
from tests.integration.ledger_db import (
    PLAIN_SYMBOL,
    ZERO_BOND_SYMBOL,
    delivery_commands,
    delivery_listing,
)

SYMBOL = "H100-EU-1"


def trade(aggressor_side: str = "buy", **overrides: Any) -> Trade:
    fields: dict[str, Any] = {
        "seq": 7, "ts": 100, "trade_id": "3", "instrument": SYMBOL, "price": "2.5",
        "quantity": 4, "aggressor_side": aggressor_side, "maker_account": "maker",
        "maker_client_order_id": "m1", "maker_order_id": "1", "maker_fee": "0.002",
        "taker_account": "taker", "taker_client_order_id": "t1", "taker_order_id": "2",
        "taker_fee": "0.005",
    }
    fields.update(overrides)
    return Trade(**fields)


def records(events: list[Any], first_offset: int = 0) -> list[Record]:
    return [Record("events", 0, first_offset + index, None, encode(event))
            for index, event in enumerate(events)]


def sums_per_asset(postings: list[tuple[int, str, str, int]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for _seq, _account, asset, amount in postings:
        totals[asset] += amount
    return dict(totals)


def test_deposit_moves_the_amount_from_the_chain_to_the_account() -> None:
    usdc = Deposited(seq=1, ts=1, account="alice", asset="USDC", amount="12.5")
    tokens = Deposited(seq=2, ts=1, account="alice", asset=SYMBOL, amount=30)
    assert postings_of(usdc) == [(1, CHAIN_ACCOUNT, "USDC", -12_500_000),
                                 (1, "alice", "USDC", 12_500_000)]
    assert postings_of(tokens) == [(2, CHAIN_ACCOUNT, SYMBOL, -30), (2, "alice", SYMBOL, 30)]


def test_withdrawal_moves_the_amount_from_the_account_to_the_chain() -> None:
    event = Withdrawn(seq=1, ts=1, account="alice", asset="USDC", amount="0.000001")
    assert postings_of(event) == [(1, CHAIN_ACCOUNT, "USDC", 1), (1, "alice", "USDC", -1)]


def test_trade_with_a_buying_taker_charges_the_taker_as_buyer() -> None:
    postings = postings_of(trade("buy"))
    # notional 4 * 2.5 = 10 USDC; the taker buys and pays its fee, the maker sells
    assert postings == sorted([
        (7, "taker", "USDC", -10_005_000), (7, "maker", "USDC", 9_998_000),
        (7, "fees", "USDC", 7_000), (7, "maker", SYMBOL, -4), (7, "taker", SYMBOL, 4),
    ])
    assert sums_per_asset(postings) == {"USDC": 0, SYMBOL: 0}


def test_trade_with_a_selling_taker_makes_the_maker_the_buyer() -> None:
    postings = postings_of(trade("sell"))
    assert (7, "maker", "USDC", -10_002_000) in postings
    assert (7, "taker", "USDC", 9_995_000) in postings
    assert (7, "maker", SYMBOL, 4) in postings and (7, "taker", SYMBOL, -4) in postings
    assert sums_per_asset(postings) == {"USDC": 0, SYMBOL: 0}


def test_trade_without_fees_has_no_fee_posting() -> None:
    postings = postings_of(trade(maker_fee="0", taker_fee="0"))
    assert all(account != "fees" for _, account, _, _ in postings)
    assert len(postings) == 4


def test_postings_of_one_account_and_asset_are_merged() -> None:
    postings = postings_of(trade("buy", taker_account="fees"))
    fee_usdc = [p for p in postings if p[1] == "fees" and p[2] == "USDC"]
    assert fee_usdc == [(7, "fees", "USDC", -10_005_000 + 7_000)]
    assert sums_per_asset(postings) == {"USDC": 0, SYMBOL: 0}


def test_impossible_money_events_are_refused() -> None:
    with pytest.raises(ValueError):
        postings_of(trade(aggressor_side="up"))
    with pytest.raises(ValueError):
        postings_of(Deposited(seq=1, ts=1, account="a", asset="USDC", amount=5))
    with pytest.raises(ValueError):
        postings_of(Deposited(seq=1, ts=1, account="a", asset="USDC", amount="0"))


def test_entry_hash_chains_and_covers_every_posting() -> None:
    postings = [(1, "a", "USDC", -5), (1, "b", "USDC", 5)]
    first = entry_hash(GENESIS_HASH, 1, postings)
    assert first == entry_hash(GENESIS_HASH, 1, list(postings))
    assert first != entry_hash(GENESIS_HASH, 2, postings)
    assert first != entry_hash(bytes([1]) * 32, 1, postings)
    assert first != entry_hash(GENESIS_HASH, 1, [(1, "a", "USDC", -6), (1, "b", "USDC", 6)])
    canonical = b'[1,[[1,"a","USDC",-5],[1,"b","USDC",5]]]'
    assert first == hashlib.sha256(GENESIS_HASH + canonical).digest()


def test_entry_hash_encoding_is_unambiguous() -> None:
    """Text that mimics separators must not hash like the postings it imitates."""
    honest = [(1, "a", "USDC", -5), (1, "b", "USDC", 5)]
    forged = [(1, "a", 'USDC",-5],[1,"b","USDC', 5)]
    assert entry_hash(GENESIS_HASH, 1, honest) != entry_hash(GENESIS_HASH, 1, forged)


def test_builder_books_money_events_and_advances_over_the_rest() -> None:
    engine = Engine()
    events = [event for command in Workload(instruments=2, accounts=4, seed=3).setup()
              for event in engine.apply(command)]
    builder = JournalBuilder(0, GENESIS_HASH)
    batch = builder.build(records(events))
    assert batch.failure is None
    assert (batch.first_seq, batch.last_seq, batch.next_offset) == (1, len(events), len(events))
    money = [event for event in events if isinstance(event, Deposited)]
    assert [entry[0] for entry in batch.entries] == [event.seq for event in money]
    assert len(events) > len(money), "listings move no money yet advance the seq"
    previous = GENESIS_HASH
    for seq, kind, _ts, prev_hash, stored_hash in batch.entries:
        assert kind == "deposited" and prev_hash == previous
        postings = sorted(row for row in batch.postings if row[0] == seq)
        assert stored_hash == entry_hash(prev_hash, seq, postings)
        previous = stored_hash
    assert builder.head_hash == previous == batch.head_hash


def test_builder_stops_at_a_gap_keeping_the_rows_before_it() -> None:
    events = [Deposited(seq=seq, ts=1, account="a", asset="USDC", amount="1")
              for seq in (1, 2, 4)]
    builder = JournalBuilder(0, GENESIS_HASH)
    batch = builder.build(records(events, first_offset=10))
    assert isinstance(batch.failure, SeqGapError)
    assert (batch.failure.expected_seq, batch.failure.got_seq) == (3, 4)
    assert batch.failure.offset == 12
    assert (batch.last_seq, batch.next_offset, len(batch.entries)) == (2, 12, 2)
    with pytest.raises(ValueError):
        builder.extend(batch, records(events[2:]))


def test_builder_refuses_a_repeated_seq_and_an_undecodable_event() -> None:
    builder = JournalBuilder(5, GENESIS_HASH)
    repeated = builder.build(records([Deposited(seq=5, ts=1, account="a", asset="USDC",
                                                amount="1")]))
    assert isinstance(repeated.failure, SeqGapError) and repeated.event_count == 0
    garbage = JournalBuilder(0, GENESIS_HASH).build(
        [Record("events", 0, 0, None, b'{"type":"trade","seq":1}')]
    )
    assert isinstance(garbage.failure, EventError) and garbage.failure.offset == 0


def ledger_balances(batch: JournalBatch) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for _seq, account, asset, amount in batch.postings:
        totals[(account, asset)] += amount
    return {key: amount for key, amount in totals.items() if amount}


def test_journal_of_a_workload_equals_the_engine_balances() -> None:
    workload = Workload(instruments=3, accounts=8, seed=11)
    commands: list[Any] = workload.setup()
    for index, command in enumerate(workload.flow(3000)):
        commands.append(command)
        if index % 100 == 0:
            commands.append(Withdraw(ts=command.ts, account=f"acct{index % 8}", asset="USDC",
                                     amount="3.25"))
        if index % 333 == 0:
            commands.append(Deposit(ts=command.ts, account="late", asset="GPU-1", amount=7))
    engine = Engine()
    events = [event for command in commands for event in engine.apply(command)]
    batch = JournalBuilder(0, GENESIS_HASH).build(records(events))
    assert batch.failure is None and batch.last_seq == engine.seq
    assert sum(1 for e in events if isinstance(e, Trade)) == len(batch.trades) > 100
    assert sum(1 for e in events if isinstance(e, Withdrawn)) == len(batch.withdrawals) > 10
    by_entry: dict[tuple[int, str], int] = defaultdict(int)
    for seq, _account, asset, amount in batch.postings:
        by_entry[(seq, asset)] += amount
    assert not any(by_entry.values()), "every entry balances per asset"
    assert compare_balances(ledger_balances(batch), engine_balances(engine)) == []


def test_compare_balances_lists_every_difference() -> None:
    ledger = {("a", "USDC"): 5, ("b", "USDC"): 7, ("c", "X"): 1}
    engine = {("a", "USDC"): 5, ("b", "USDC"): 8, ("d", "X"): 2}
    assert compare_balances(ledger, engine) == [
        Difference(account="b", asset="USDC", ledger=7, engine=8),
        Difference(account="c", asset="X", ledger=1, engine=0),
        Difference(account="d", asset="X", ledger=0, engine=2),
    ]


def test_engine_balances_put_the_outside_world_on_the_chain_account() -> None:
    engine = Engine()
    engine.apply(Deposit(ts=1, account="alice", asset="USDC", amount="2.5"))
    engine.apply(Deposit(ts=1, account="bob", asset="USDC", amount="1"))
    assert engine_balances(engine) == {
        ("alice", "USDC"): 2_500_000, ("bob", "USDC"): 1_000_000,
        (CHAIN_ACCOUNT, "USDC"): -3_500_000,
    }
    assert msgspec.json.encode(engine_balances(Engine())) == b"{}"


BOND = "@bond:i1"


def issued(bond: str = "30", seq: int = 4) -> CapacityIssued:
    return CapacityIssued(seq=seq, ts=3, issue_id="i1", account="op", instrument=SYMBOL,
                          node_id="n1", quantity=10, bond=bond)


def settled(compensation: str, delivered_ppm: int = 750_000) -> DeliverySettled:
    return DeliverySettled(seq=9, ts=5, instrument=SYMBOL, issue_id="i1", issuer="op",
                           holder="bob", quantity=4, delivered_ppm=delivered_ppm,
                           compensation=compensation)


def listed(symbol: str = SYMBOL, bond: str | None = "3") -> InstrumentListed:
    listing = delivery_listing(symbol, bond)
    return InstrumentListed(seq=1, ts=1, **{field: getattr(listing, field)
                                            for field in listing.__struct_fields__
                                            if field != "ts"})


def test_an_issue_moves_its_bond_to_the_bond_account_and_mints_its_tokens() -> None:
    postings, row = capacity_issued_entry(issued(), 3_000000)
    assert postings == [(4, BOND, "USDC", 30_000000), (4, CHAIN_ACCOUNT, SYMBOL, -10),
                        (4, "op", SYMBOL, 10), (4, "op", "USDC", -30_000000)]
    assert row == (4, "i1", "op", SYMBOL, "n1", 10, 30_000000, 3)
    zero_bond, _row = capacity_issued_entry(issued(bond="0"), 0)
    assert zero_bond == [(4, CHAIN_ACCOUNT, SYMBOL, -10), (4, "op", SYMBOL, 10)]


def test_releases_and_reports_pay_out_of_the_bond_and_zero_moves_nothing() -> None:
    release = BondReleased(seq=8, ts=5, issue_id="i1", account="op", quantity=6, amount="18")
    assert bond_released_entry(release) == (
        [(8, BOND, "USDC", -18_000000), (8, "op", "USDC", 18_000000)],
        (8, "i1", "op", 6, 18_000000, 5))
    nothing = BondReleased(seq=8, ts=5, issue_id="i1", account="op", quantity=6, amount="0")
    assert bond_released_entry(nothing) == ([], (8, "i1", "op", 6, 0, 5))
    # 4 GPU-hours at 3 USDC, a quarter undelivered: 3 USDC to the holder
    assert delivery_settled_postings(settled("3"), 3_000000) == [
        (9, BOND, "USDC", -3_000000), (9, "bob", "USDC", 3_000000)]
    assert delivery_settled_postings(settled("0", 1_000_000), 3_000000) == []


def test_amounts_the_listing_does_not_give_are_refused() -> None:
    with pytest.raises(ValueError, match="bond"):
        capacity_issued_entry(issued(bond="29"), 3_000000)
    with pytest.raises(ValueError, match="compensation"):
        delivery_settled_postings(settled("3.000001"), 3_000000)
    with pytest.raises(ValueError, match="delivered_ppm"):
        delivery_settled_postings(settled("0", 1_000_001), 3_000000)
    plain = JournalBuilder(0, GENESIS_HASH).build(
        records([listed(bond=None), Deposited(seq=2, ts=1, account="op", asset="USDC",
                                              amount="100"), issued(seq=3)]))
    assert isinstance(plain.failure, EventError) and "not a deliverable" in str(plain.failure)
    assert (plain.last_seq, len(plain.entries)) == (2, 1), "the rows before it are kept"
    closed = JournalBuilder(0, GENESIS_HASH).build(
        records([listed(), InstrumentClosed(seq=2, ts=1, symbol=SYMBOL), issued(seq=3)]))
    assert isinstance(closed.failure, EventError) and "closed" in str(closed.failure)


def delivery_events() -> tuple[Engine, list[Any]]:
    """Return the engine after `delivery_commands` and the events it made of them."""
    engine = Engine()
    return engine, [event for command in delivery_commands()
                    for event in engine.apply(command)]


def test_a_close_redeems_every_holder_in_the_batch_of_the_trades_before_it() -> None:
    _engine, events = delivery_events()
    batch = JournalBuilder(0, GENESIS_HASH).build(records(events))
    assert batch.failure is None
    close_seq = next(event.seq for event in events if isinstance(event, InstrumentClosed))
    assert [entry[1] for entry in batch.entries if entry[0] == close_seq] == ["redeemed"]
    # op1 kept 4 of its 10, op2 5 of its 8 (an order resting at close), bob 3 of the 4 it
    # bought, carol 5, dave 3 of its 5 deposited: 20 tokens leave the venue.
    assert [posting for posting in batch.postings if posting[0] == close_seq] == [
        (close_seq, CHAIN_ACCOUNT, SYMBOL, 20), (close_seq, "bob", SYMBOL, -3),
        (close_seq, "carol", SYMBOL, -5), (close_seq, "dave", SYMBOL, -3),
        (close_seq, "op1", SYMBOL, -4), (close_seq, "op2", SYMBOL, -5)]
    token_balances = {key: amount for key, amount in ledger_balances(batch).items()
                      if key[1] in (SYMBOL, ZERO_BOND_SYMBOL)}
    assert token_balances == {}, "nobody holds a redeemed token, the chain included"
    assert ledger_balances(batch)[("bob", PLAIN_SYMBOL)] == 7, "no bond: nothing redeemed"
    assert [row[1:3] for row in batch.redemptions] == [(SYMBOL, 20), (ZERO_BOND_SYMBOL, 5)]
    assert [row[1] for row in batch.issues] == ["i1", "i2", "i3"]
    assert sum(row[3] for row in batch.bond_releases if row[1] == "i1") == 7
    assert [row[0] for row in batch.instruments] == [SYMBOL, ZERO_BOND_SYMBOL, PLAIN_SYMBOL]


def test_the_journal_equals_the_engine_after_every_delivery_command() -> None:
    engine = Engine()
    builder = JournalBuilder(0, GENESIS_HASH)
    booked: dict[tuple[str, str], int] = defaultdict(int)
    redeemed: list[str] = []
    for command in delivery_commands():
        batch = builder.build(records(engine.apply(command)))
        assert batch.failure is None
        for _seq, account, asset, amount in batch.postings:
            booked[(account, asset)] += amount
        redeemed += [row[1] for row in batch.redemptions]
        ledger = {key: amount for key, amount in booked.items() if amount}
        expected = engine_balances(engine)
        assert compare_balances(ledger, expected) == [], command
        assert unredeemed_balances(redeemed, ledger, expected) == []
    assert redeemed == [SYMBOL, ZERO_BOND_SYMBOL]
    # i1's bob assignment settled, carol's not: 3 GPU-hours at 3 USDC still bonded
    assert booked[(BOND, "USDC")] == 9_000000
    assert booked[("@bond:i2", "USDC")] == 3_000000, "dave's 1 GPU-hour still bonded"
    assert ("@bond:i3", "USDC") not in booked, "a bond of 0 never posts"


def test_batch_boundaries_do_not_change_the_journal() -> None:
    _engine, events = delivery_events()
    whole = JournalBuilder(0, GENESIS_HASH).build(records(events))
    builder = JournalBuilder(0, GENESIS_HASH)
    pieces = [builder.build(records([event], first_offset=index))
              for index, event in enumerate(events)]
    for field_name in ("entries", "postings", "trades", "withdrawals", "instruments",
                       "issues", "bond_releases", "redemptions", "delivery_reports"):
        assert [row for piece in pieces for row in getattr(piece, field_name)] == getattr(
            whole, field_name), field_name
    assert builder.head_hash == whole.head_hash


def test_engine_balances_put_bonds_on_their_accounts_against_the_chain() -> None:
    engine = Engine()
    engine.apply(delivery_listing(SYMBOL, "3"))
    engine.apply(Deposit(ts=2, account="op", asset="USDC", amount="100"))
    engine.apply(IssueCapacity(ts=3, account="op", issue_id="i1", instrument=SYMBOL,
                               node_id="n1", quantity=10))
    assert engine_balances(engine) == {
        ("op", "USDC"): 70_000000, (BOND, "USDC"): 30_000000, ("op", SYMBOL): 10,
        (CHAIN_ACCOUNT, "USDC"): -100_000000, (CHAIN_ACCOUNT, SYMBOL): -10,
    }


def test_unredeemed_balances_name_every_token_left_after_a_close() -> None:
    ledger = {("a", SYMBOL): 2, ("a", "USDC"): 5, (CHAIN_ACCOUNT, SYMBOL): -2}
    engine = {("b", SYMBOL): 1, ("a", "USDC"): 5}
    assert unredeemed_balances([SYMBOL], ledger, engine) == [
        Difference(account=CHAIN_ACCOUNT, asset=SYMBOL, ledger=-2, engine=0),
        Difference(account="a", asset=SYMBOL, ledger=2, engine=0),
        Difference(account="b", asset=SYMBOL, ledger=0, engine=1),
    ]
    assert unredeemed_balances([], ledger, engine) == []
