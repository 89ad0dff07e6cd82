"""The ledger's pure core: events to balanced postings, the hash chain, gaps, comparison."""

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
    entry_hash,
    postings_of,
)
from ledger.reconcile import Difference, compare_balances, engine_balances
from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import Deposit, Deposited, Trade, Withdraw, Withdrawn, encode

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
