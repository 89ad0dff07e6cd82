"""Delivery reports' evidence (issue 17), pure: the ledger's report rows, the evidence leaf and
how batches carry it. A batch with no report keeps the tree it had before reports were
batched, pinned by its root."""

from __future__ import annotations

import pytest
from eth_abi.abi import decode as abi_decode
from hypothesis import given
from hypothesis import strategies as st

from eventlog.port import Record
from ledger.errors import EventError
from ledger.journal import GENESIS_HASH, JournalBuilder
from ledger.reads import DeliveryPosting, DeliveryReport, TradeRecord
from matching_engine.core import Engine
from protocol import DeliverySettled, encode
from protocol.commands import EVIDENCE_MAX_LENGTH
from settlement.batching import Blocked, entries, in_seq_order, plan_batch, settleable_prefix
from settlement.batching import split as split_items
from settlement.merkle import MerkleTree, verify
from settlement.moves import MOVE_LEAF_TAG, ChainMove
from settlement.reports import (
    EVIDENCE_LEAF_TAG,
    EVIDENCE_LEAF_TYPES,
    ChainEvidence,
    chain_evidence,
    to_chain_evidence,
)
from tests.integration.ledger_db import delivery_commands

SYMBOL = "H100-SXM-80GB.eu-north.2026-06-01T00"
ADDRESSES = {"fees": "0x" + "fe" * 20, "alice": "0x" + "a1" * 20, "op-1": "0x" + "11" * 20,
             "bob": "0x" + "b0" * 20}
ROOT_BEFORE_REPORTS = "6c0f2bb88c436a7dc062809e18863da11732f366325cb2ad1ee930a2ac2a771c"
EVIDENCE = "9f2c41d0" * 8


def sale(seq: int = 5) -> TradeRecord:
    return TradeRecord(seq=seq, trade_id=str(seq), instrument=SYMBOL, price_micro=2_500_000,
                       quantity=4, buyer="alice", seller="op-1", buyer_fee_micro=20_000,
                       seller_fee_micro=10_000)


def postings(seq: int, kind: str, *moves: tuple[str, str, int]) -> list[DeliveryPosting]:
    return [DeliveryPosting(seq=seq, kind=kind, account=account, asset=asset, amount=amount,
                            ts=0) for account, asset, amount in moves]


def issue() -> list[DeliveryPosting]:
    return postings(4, "capacity_issued", ("@bond:i-1", "USDC", 30_000_000),
                    ("@chain", SYMBOL, -10), ("op-1", "USDC", -30_000_000), ("op-1", SYMBOL, 10))


def compensation(seq: int = 13) -> list[DeliveryPosting]:
    return postings(seq, "delivery_settled", ("@bond:i-1", "USDC", -3_000_000),
                    ("alice", "USDC", 3_000_000))


def report(seq: int = 13, holder: str = "alice", ppm: int = 900_000,
           evidence: str | None = EVIDENCE) -> DeliveryReport:
    return DeliveryReport(seq=seq, issue_id="i-1", holder=holder, delivered_ppm=ppm,
                          evidence=evidence, ts=0)


# --- the leaf -----------------------------------------------------------------------------


def test_the_evidence_leaf_encodes_its_tag_then_the_report() -> None:
    leaf = to_chain_evidence(report())
    decoded = abi_decode(EVIDENCE_LEAF_TYPES, leaf.encode())
    assert decoded == (EVIDENCE_LEAF_TAG, 13, "i-1", "alice", 900_000, EVIDENCE)
    assert to_chain_evidence(report(evidence=None)).evidence == ""
    with pytest.raises(ValueError, match="delivered_ppm"):
        chain_evidence(13, "i-1", "alice", 1_000_001, None)


@given(st.integers(0, 2**63 - 1), st.integers(0, 1_000_000), st.text(max_size=128))
def test_no_fill_or_move_leaf_can_equal_an_evidence_leaf(seq: int, ppm: int,
                                                         evidence: str) -> None:
    """The first word tells them apart: a fill's seq is below 2**63, a move's is its tag."""
    encoded = ChainEvidence(seq=seq, issue_id="i-1", holder="alice", delivered_ppm=ppm,
                            evidence=evidence).encode()
    first_word = encoded[:32]
    assert first_word == EVIDENCE_LEAF_TAG != MOVE_LEAF_TAG
    assert int.from_bytes(first_word, "big") >= 2**63
    move = ChainMove(seq=seq, kind="delivery_settled", account="alice", wallet=ADDRESSES["alice"],
                     asset=0, amount=ppm)
    assert move.encode()[:32] != first_word


def test_every_field_of_the_report_changes_the_leaf() -> None:
    leaf = to_chain_evidence(report()).leaf()
    changed = [report(seq=14), report(holder="bob"), report(ppm=900_001),
               report(evidence=EVIDENCE[:-1] + "1"), report(evidence=None)]
    assert len({leaf, *(to_chain_evidence(other).leaf() for other in changed)}) == 6


# --- batches ------------------------------------------------------------------------------


def test_a_batch_without_reports_has_the_tree_it_had_before_reports() -> None:
    items = in_seq_order([sale()], [*issue(), *compensation()], 10)
    prefix, blocked = settleable_prefix(items, ADDRESSES)
    fills, moves, reports = split_items(prefix)
    assert blocked is None and reports == []
    plan = plan_batch(fills, ADDRESSES, moves, reports)
    assert plan.fills_root.hex() == ROOT_BEFORE_REPORTS
    assert plan.evidence == [] and (plan.first_seq, plan.last_seq) == (4, 13)


def test_a_report_settles_with_its_entry_and_its_leaf_comes_after_fills_and_moves() -> None:
    items = in_seq_order([sale()], [*issue(), *compensation()], 10, [report()])
    assert [type(item).__name__ for item in entries(items)[-1]] == [
        "DeliveryPosting", "DeliveryPosting", "DeliveryReport"], "one entry, the report last"
    prefix, blocked = settleable_prefix(items, ADDRESSES)
    assert blocked is None and prefix == items
    fills, moves, reports = split_items(prefix)
    plan = plan_batch(fills, ADDRESSES, moves, reports)
    assert plan.fills_root.hex() != ROOT_BEFORE_REPORTS
    leaves = [*(fill.leaf() for fill in plan.fills), *(move.leaf() for move in plan.moves),
              *(leaf.leaf() for leaf in plan.evidence)]
    tree = MerkleTree(leaves)
    assert tree.root == plan.fills_root
    evidence_leaf = to_chain_evidence(report()).leaf()
    assert leaves[-1] == evidence_leaf
    assert verify(tree.proof(len(leaves) - 1), plan.fills_root, evidence_leaf)
    forged = to_chain_evidence(report(ppm=1_000_000)).leaf()
    assert not verify(tree.proof(len(leaves) - 1), plan.fills_root, forged)


def test_a_batch_of_reports_alone_moves_nothing() -> None:
    """A report of full delivery on a bond of 0 has no entry: its batch holds its leaf only."""
    reports = [report(seq=20, ppm=1_000_000), report(seq=21, holder="bob")]
    plan = plan_batch([], ADDRESSES, [], reports)
    assert plan.assets == [] and plan.deltas == [] and plan.supply == []
    assert (plan.first_seq, plan.last_seq) == (20, 21) and len(plan.evidence) == 2
    with pytest.raises(ValueError, match="at least one"):
        plan_batch([], ADDRESSES)


def test_a_report_needs_no_address_and_waits_behind_what_does() -> None:
    items = in_seq_order([], [*compensation(13), *postings(14, "bond_released",
                                                           ("@bond:i-1", "USDC", -1),
                                                           ("carol", "USDC", 1))],
                         10, [report(13), report(15, holder="dave")])
    prefix, blocked = settleable_prefix(items, ADDRESSES)
    assert [item.seq for item in prefix] == [13, 13, 13]
    assert blocked == Blocked(14, ["carol"])
    prefix, blocked = settleable_prefix(items, {**ADDRESSES, "carol": "0x" + "ca" * 20})
    assert [item.seq for item in prefix] == [13, 13, 13, 14, 14, 15] and blocked is None


def test_a_full_read_of_reports_bounds_the_items_like_the_other_reads() -> None:
    fills = [sale(2), sale(9)]
    reports = [report(3), report(5, holder="bob")]
    assert [item.seq for item in in_seq_order(fills, [], 3, reports)] == [2, 3, 5]
    # 2 reports read of at most 2: a report at 6 may lie between 5 and the trade at 9
    assert [item.seq for item in in_seq_order(fills, [], 2, reports)] == [2, 3]
    assert [item.seq for item in in_seq_order([], [], 2, [report(3)])] == [3]


# --- the ledger's rows --------------------------------------------------------------------


def test_the_journal_keeps_every_report_with_or_without_money() -> None:
    engine = Engine()
    events = [event for command in delivery_commands() for event in engine.apply(command)]
    records = [Record(topic="events", partition=0, offset=index, key=None, value=encode(event))
               for index, event in enumerate(events)]
    batch = JournalBuilder(0, GENESIS_HASH).build(records)
    assert batch.failure is None
    settled = [event for event in events if isinstance(event, DeliverySettled)]
    assert batch.delivery_reports == [
        (event.seq, event.issue_id, event.holder, event.delivered_ppm, event.evidence, event.ts)
        for event in settled]
    assert [row[1:5] for row in batch.delivery_reports] == [
        ("i1", "bob", 750_000, None), ("i2", "carol", 1_000_000, "00ff"),
        ("i3", "bob", 0, None)]
    entry_seqs = {entry[0] for entry in batch.entries}
    assert [event.seq in entry_seqs for event in settled] == [True, False, False], (
        "full delivery and a bond of 0 owe nothing: a report row without an entry")


def test_evidence_longer_than_the_protocol_allows_stops_the_journal() -> None:
    event = DeliverySettled(seq=1, ts=5, instrument=SYMBOL, issue_id="i1", issuer="op",
                            holder="bob", quantity=4, delivered_ppm=1_000_000,
                            compensation="0", evidence="f" * (EVIDENCE_MAX_LENGTH + 1))
    builder = JournalBuilder(0, GENESIS_HASH)
    builder.delivery.bonds[SYMBOL] = 3_000_000
    batch = builder.build([Record(topic="events", partition=0, offset=0, key=None,
                                  value=encode(event))])
    assert isinstance(batch.failure, EventError) and "evidence" in str(batch.failure)
    assert batch.delivery_reports == []
