"""Walk the journal's hash chain and report the first broken link (`gpux ledger verify`).

For each entry in seq order: its `prev_hash` must be the previous entry's `hash` (the
genesis hash for the first), its `hash` must be what its postings hash to, its postings
must exist and balance per asset, and after it no account but the chain's may hold a
negative balance (a bond account included). The first entry that fails any of these is
reported with the reason; an altered, inserted or removed posting, or a rewritten hash,
breaks the chain at the entry it touches or at the one after it. Then every issue whose
bond releases add up to its quantity must have an empty bond account, and no issue may be
released beyond its quantity; the first that fails is reported at its last release.

The walk reads bounded pages (keyset pagination on seq), so memory stays flat however long
the journal is (it grows with the accounts and issues, whose balances it keeps), and runs
in one read-only snapshot, so batches committed meanwhile cannot skew it.
"""

from __future__ import annotations

from collections import defaultdict

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from ledger.journal import CHAIN_ACCOUNT, GENESIS_HASH, PostingRow, bond_account, entry_hash
from protocol import USDC

__all__ = ["BrokenLink", "VerifyReport", "verify_chain"]

PAGE_ENTRIES_MAX = 5_000

Balances = dict[tuple[str, str], int]  # (account, asset) -> amount


class BrokenLink(msgspec.Struct, frozen=True, kw_only=True):
    """The first entry (or bond release) at which the journal does not hold, and why."""

    seq: int
    reason: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the walk saw: entries checked, the head it reached, the first broken link, and
    how many issues had their bonds checked."""

    entries_checked: int
    head_seq: int
    head_hash: str
    broken: BrokenLink | None
    issues_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_chain(
    connection: asyncpg.Connection, page_entries_max: int = PAGE_ENTRIES_MAX
) -> VerifyReport:
    """Walk every entry in seq order, then every issue's bond; stop at the first failure."""
    if page_entries_max < 1:
        raise ValueError("page_entries_max must be >= 1")
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        balances: Balances = defaultdict(int)
        report = await _walk(connection, page_entries_max, balances)
        if report.broken is not None:
            return report
        issues = await connection.fetch(
            "SELECT r.issue_id, i.quantity, r.released, r.last_seq "
            "FROM (SELECT issue_id, sum(quantity) AS released, max(seq) AS last_seq "
            "      FROM ledger.bond_releases GROUP BY issue_id) AS r "
            "LEFT JOIN ledger.issues AS i USING (issue_id) ORDER BY r.last_seq"
        )
    for issue in issues:
        reason = _bond_reason(issue["issue_id"], issue["quantity"], int(issue["released"]),
                              balances)
        if reason is not None:
            return msgspec.structs.replace(
                report, broken=BrokenLink(seq=issue["last_seq"], reason=reason))
    return msgspec.structs.replace(report, issues_checked=len(issues))


async def _walk(
    connection: asyncpg.Connection, page_entries_max: int, balances: Balances
) -> VerifyReport:
    """Walk the entries in seq order, summing their postings into `balances`."""
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
            entry_postings = postings.get(seq, [])
            reason = _broken_reason(previous_hash, bytes(entry["prev_hash"]),
                                    bytes(entry["hash"]), seq, entry_postings)
            if reason is None:
                reason = _negative_reason(balances, entry_postings)
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


def _negative_reason(balances: Balances, postings: list[PostingRow]) -> str | None:
    """Add the entry's postings to `balances`; return why when one of them goes negative."""
    for _seq, account, asset, amount in postings:
        balance = balances[(account, asset)] = balances[(account, asset)] + amount
        if balance < 0 and account != CHAIN_ACCOUNT:
            return f"the balance of {account} in {asset} goes negative: {balance}"
    return None


def _bond_reason(issue_id: str, quantity: int | None, released: int,
                 balances: Balances) -> str | None:
    """Return why an issue's releases do not add up with its bond account, or None."""
    if quantity is None:
        return f"bond released for issue {issue_id}, which was never issued"
    if released > quantity:
        return f"issue {issue_id} released {released} GPU-hours of the {quantity} it issued"
    left = balances.get((bond_account(issue_id), USDC), 0)
    if released == quantity and left != 0:
        return f"issue {issue_id} is fully released, yet its bond account holds {left}"
    return None
