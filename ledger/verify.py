"""Walk the journal's hash chain and report the first broken link (`gpux ledger verify`).

For each entry in seq order: its `prev_hash` must be the previous entry's `hash` (the
genesis hash for the first), its `hash` must be what its postings hash to, and its
postings must exist and balance per asset. The first entry that fails any of these is
reported with the reason; an altered, inserted or removed posting, or a rewritten hash,
breaks the chain at the entry it touches or at the one after it.

The walk reads bounded pages (keyset pagination on seq), so memory stays flat however long
the journal is.
"""

from __future__ import annotations

from collections import defaultdict

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from ledger.journal import GENESIS_HASH, PostingRow, entry_hash

__all__ = ["BrokenLink", "VerifyReport", "verify_chain"]

PAGE_ENTRIES_MAX = 5_000


class BrokenLink(msgspec.Struct, frozen=True, kw_only=True):
    """The first entry whose link in the chain does not hold, and why."""

    seq: int
    reason: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the walk saw: entries checked, the head it reached, the first broken link."""

    entries_checked: int
    head_seq: int
    head_hash: str
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_chain(
    connection: asyncpg.Connection, page_entries_max: int = PAGE_ENTRIES_MAX
) -> VerifyReport:
    """Walk every entry in seq order; stop at the first broken link."""
    if page_entries_max < 1:
        raise ValueError("page_entries_max must be >= 1")
    previous_hash = GENESIS_HASH
    previous_seq = 0
    checked = 0
    while True:
        entries = await connection.fetch(
            "SELECT seq, prev_hash, hash FROM ledger.entries WHERE seq > $1 "
            "ORDER BY seq LIMIT $2",
            previous_seq, page_entries_max,
        )
        if not entries:
            return VerifyReport(entries_checked=checked, head_seq=previous_seq,
                                head_hash=previous_hash.hex(), broken=None)
        postings = await _postings_between(connection, entries[0]["seq"], entries[-1]["seq"])
        for entry in entries:
            seq = entry["seq"]
            reason = _broken_reason(previous_hash, bytes(entry["prev_hash"]),
                                    bytes(entry["hash"]), seq, postings.get(seq, []))
            if reason is not None:
                return VerifyReport(entries_checked=checked, head_seq=previous_seq,
                                    head_hash=previous_hash.hex(),
                                    broken=BrokenLink(seq=seq, reason=reason))
            previous_hash, previous_seq = bytes(entry["hash"]), seq
            checked += 1


async def _postings_between(
    connection: asyncpg.Connection, first_seq: int, last_seq: int
) -> dict[int, list[PostingRow]]:
    """Return the postings of entries first_seq..last_seq, per seq, sorted."""
    rows = await connection.fetch(
        "SELECT seq, account, asset, amount FROM ledger.postings "
        "WHERE seq BETWEEN $1 AND $2",
        first_seq, last_seq,
    )
    by_seq: dict[int, list[PostingRow]] = defaultdict(list)
    for row in rows:
        by_seq[row["seq"]].append((row["seq"], row["account"], row["asset"], row["amount"]))
    for postings in by_seq.values():
        postings.sort()
    return by_seq


def _broken_reason(
    expected_prev_hash: bytes,
    prev_hash: bytes,
    stored_hash: bytes,
    seq: int,
    postings: list[PostingRow],
) -> str | None:
    """Return why this entry breaks the chain, or None when its link holds."""
    if prev_hash != expected_prev_hash:
        return (f"prev_hash {prev_hash.hex()} is not the previous entry's hash "
                f"{expected_prev_hash.hex()}")
    if not postings:
        return "the entry has no postings"
    totals: dict[str, int] = defaultdict(int)
    for _seq, _account, asset, amount in postings:
        totals[asset] += amount
    unbalanced = sorted(asset for asset, total in totals.items() if total != 0)
    if unbalanced:
        return f"postings do not balance in {', '.join(unbalanced)}"
    computed = entry_hash(prev_hash, seq, postings)
    if computed != stored_hash:
        return (f"hash {stored_hash.hex()} does not match its postings "
                f"(they hash to {computed.hex()})")
    return None
