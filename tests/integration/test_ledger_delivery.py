"""Delivery (v2) in the journal on real PostgreSQL: bond accounts, redemption at close, and
the postings settlement reads."""

from __future__ import annotations

from ledger import reads
from ledger.journal import CHAIN_ACCOUNT, GENESIS_HASH, JournalBatch, entry_hash
from ledger.migrate import SERVICE_ROLE
from ledger.reads import DeliveryPosting
from ledger.store import append_batch
from runtime.postgres import connect
from tests.integration.ledger_db import SYMBOL, LedgerDatabase

BOND = "@bond:i1"

# (seq, kind, postings as (account, asset, amount)): alice issues 10 GPU-hours with a bond
# of 30 USDC, sells 4 to bob, the instrument closes, bob's delivery is reported 75 %
# delivered and the rest of the bond goes back to alice.
HAND_WRITTEN_ENTRIES = [
    (1, "deposited", [(CHAIN_ACCOUNT, "USDC", -100_000000), ("alice", "USDC", 100_000000)]),
    (2, "capacity_issued", [("alice", "USDC", -30_000000), (BOND, "USDC", 30_000000),
                            (CHAIN_ACCOUNT, SYMBOL, -10), ("alice", SYMBOL, 10)]),
    (3, "trade", [("alice", SYMBOL, -4), ("bob", SYMBOL, 4)]),
    (4, "redeemed", [("alice", SYMBOL, -6), ("bob", SYMBOL, -4), (CHAIN_ACCOUNT, SYMBOL, 10)]),
    (5, "delivery_settled", [(BOND, "USDC", -3_000000), ("bob", "USDC", 3_000000)]),
    (6, "bond_released", [(BOND, "USDC", -27_000000), ("alice", "USDC", 27_000000)]),
]


def hand_written_batch() -> JournalBatch:
    """Return HAND_WRITTEN_ENTRIES as one chained batch, postings sorted as the builder
    sorts them."""
    batch = JournalBatch(1, len(HAND_WRITTEN_ENTRIES), len(HAND_WRITTEN_ENTRIES), GENESIS_HASH)
    for seq, kind, moves in HAND_WRITTEN_ENTRIES:
        postings = sorted((seq, account, asset, amount) for account, asset, amount in moves)
        new_hash = entry_hash(batch.head_hash, seq, postings)
        batch.entries.append((seq, kind, seq * 10, batch.head_hash, new_hash))
        batch.postings += postings
        batch.head_hash = new_hash
    return batch


async def test_delivery_postings_gives_whole_delivery_entries_in_order(
    ledger_db: LedgerDatabase,
) -> None:
    connection = await connect(ledger_db.service_url, role=SERVICE_ROLE)
    try:
        await append_batch(connection, hand_written_batch())
        found = await reads.delivery_postings(connection, after_seq=0, limit=100)
        assert found == [
            DeliveryPosting(seq=seq, kind=kind, account=account, asset=asset, amount=amount,
                            ts=seq * 10)
            for seq, kind, moves in HAND_WRITTEN_ENTRIES
            if kind not in ("deposited", "trade")
            for account, asset, amount in sorted(moves)
        ]
        assert [posting.account for posting in found if posting.seq == 2] == [
            BOND, CHAIN_ACCOUNT, "alice", "alice"], "accounts in byte order, '@' first"
        first_page = await reads.delivery_postings(connection, after_seq=0, limit=2)
        assert [posting.seq for posting in first_page] == [2, 2, 2, 2, 4, 4, 4]
        second_page = await reads.delivery_postings(connection, after_seq=first_page[-1].seq,
                                                    limit=2)
        assert first_page + second_page == found
        assert await reads.delivery_postings(connection, after_seq=6, limit=1) == []
    finally:
        await connection.close()
