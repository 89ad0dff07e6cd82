"""Read the journal: balances at any seq, statements, fees, bonds, delivery reports, and rows
for settlement.

A bond is the account `@bond:ISSUE_ID`: `balances` and `statement` show it like any other
account, and `bonds` lists the issues (of one issuer, or all) with what each still holds.

Every function takes an open asyncpg connection (any role with SELECT on schema ledger)
and returns plain values or frozen Structs; amounts are integers (micro-USDC for USDC,
whole tokens otherwise). Every list is bounded by a `limit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from ledger.journal import BOND_ACCOUNT_PREFIX, CHAIN_ACCOUNT, DELIVERY_ENTRY_KINDS

__all__ = [
    "CHAIN_ACCOUNT",
    "BondRecord",
    "Checkpoint",
    "DeliveryPosting",
    "DeliveryReport",
    "FeesEarned",
    "StatementLine",
    "TradeRecord",
    "WithdrawalRecord",
    "balances",
    "bonds",
    "delivery_postings",
    "delivery_report",
    "delivery_reports_after",
    "entry_count",
    "fees_earned",
    "first_trade_after",
    "last_checkpoint",
    "redeemed_instruments",
    "statement",
    "unsettled_trades",
    "withdrawals_after",
    "first_withdrawals_of",
]

LIMIT_MAX = 1_000_000

Balances = dict[tuple[str, str], int]  # (account, asset) -> amount


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The projector's newest checkpoint: the last applied seq and the log offset after it."""

    last_seq: int
    next_offset: int


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    """One posting of an account, with the account's balance in that asset after it."""

    seq: int
    ts: int
    kind: str
    asset: str
    amount: int
    balance: int


class FeesEarned(msgspec.Struct, frozen=True, kw_only=True):
    """Fees the venue charged up to a seq, in micro-USDC: in total and per instrument."""

    total_micro: int
    by_instrument_micro: dict[str, int]


class TradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `ledger.trades`: a fill as settlement settles it (USDC in micro-USDC,
    quantity in GPU-hours), with who made and who took it."""

    seq: int
    trade_id: str
    instrument: str
    price_micro: int
    quantity: int
    buyer: str
    seller: str
    buyer_fee_micro: int
    seller_fee_micro: int
    maker_account: str = ""
    taker_account: str = ""
    aggressor_side: str = ""
    ts: int = 0

    @property
    def notional_micro(self) -> int:
        return self.price_micro * self.quantity


class WithdrawalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `ledger.withdrawals`: a payout settlement owes the account."""

    seq: int
    account: str
    asset: str
    amount: int
    ts: int


class BondRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One issue and its bond: `quantity` and `bond` (micro-USDC) as issued,
    `bonded_quantity` the GPU-hours neither released nor settled yet, `balance` what the
    bond account `account` holds."""

    seq: int
    issue_id: str
    issuer: str
    instrument: str
    node_id: str
    quantity: int
    bond: int
    bonded_quantity: int
    account: str
    balance: int


class DeliveryPosting(msgspec.Struct, frozen=True, kw_only=True):
    """One posting of a Delivery (v2) entry, as settlement carries it on chain.

    `kind` is the entry's: capacity_issued, bond_released, delivery_settled or redeemed;
    `amount` is signed (micro-USDC for USDC, whole tokens otherwise); a bond's account is
    `@bond:ISSUE_ID`, the outside world `@chain`.
    """

    seq: int
    kind: str
    account: str
    asset: str
    amount: int
    ts: int


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `ledger.delivery_reports`: a `delivery_settled` as reported, the share
    delivered in ppm and its evidence (None when the report gave none)."""

    seq: int
    issue_id: str
    holder: str
    delivered_ppm: int
    evidence: str | None
    ts: int


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIMIT_MAX}, got {limit}")


async def last_checkpoint(connection: asyncpg.Connection) -> Checkpoint | None:
    """Return the newest checkpoint, or None before the first batch."""
    row = await connection.fetchrow(
        "SELECT last_seq, next_offset FROM ledger.checkpoints ORDER BY last_seq DESC LIMIT 1"
    )
    return None if row is None else Checkpoint(last_seq=row[0], next_offset=row[1])


async def entry_count(connection: asyncpg.Connection, at_seq: int | None = None) -> int:
    """Return how many journal entries there are with seq <= `at_seq` (all by default)."""
    count: int = await connection.fetchval(
        "SELECT count(*) FROM ledger.entries WHERE $1::bigint IS NULL OR seq <= $1", at_seq
    )
    return count


async def balances(
    connection: asyncpg.Connection, at_seq: int | None = None, account: str | None = None
) -> Balances:
    """Return every non-zero balance per (account, asset) after the entries up to `at_seq`.

    A balance is the sum of the account's postings in the asset with entry seq <= `at_seq`.
    """
    rows = await connection.fetch(
        "SELECT account, asset, sum(amount) AS amount FROM ledger.postings "
        "WHERE ($1::bigint IS NULL OR seq <= $1) AND ($2::text IS NULL OR account = $2) "
        "GROUP BY account, asset HAVING sum(amount) <> 0",
        at_seq, account,
    )
    return {(row["account"], row["asset"]): int(row["amount"]) for row in rows}


async def statement(
    connection: asyncpg.Connection,
    account: str,
    *,
    asset: str | None = None,
    after_seq: int = 0,
    limit: int = 10_000,
) -> list[StatementLine]:
    """Return the account's postings with seq > `after_seq`, each with its running balance.

    Lines come in seq order (assets by name within one entry); page on with the last seq.
    """
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT seq, ts, kind, asset, amount, balance FROM ("
        "  SELECT p.seq, e.ts, e.kind, p.asset, p.amount,"
        "         sum(p.amount) OVER (PARTITION BY p.asset ORDER BY p.seq) AS balance"
        "    FROM ledger.postings AS p JOIN ledger.entries AS e ON e.seq = p.seq"
        "   WHERE p.account = $1 AND ($2::text IS NULL OR p.asset = $2)"
        ") AS lines WHERE seq > $3 ORDER BY seq, asset LIMIT $4",
        account, asset, after_seq, limit,
    )
    return [
        StatementLine(seq=row["seq"], ts=row["ts"], kind=row["kind"], asset=row["asset"],
                      amount=row["amount"], balance=int(row["balance"]))
        for row in rows
    ]


async def fees_earned(connection: asyncpg.Connection, at_seq: int | None = None) -> FeesEarned:
    """Return the maker and taker fees of every trade with seq <= `at_seq`."""
    rows = await connection.fetch(
        "SELECT instrument, sum(buyer_fee_micro + seller_fee_micro) AS fees "
        "FROM ledger.trades WHERE $1::bigint IS NULL OR seq <= $1 "
        "GROUP BY instrument ORDER BY instrument",
        at_seq,
    )
    by_instrument = {row["instrument"]: int(row["fees"]) for row in rows}
    return FeesEarned(total_micro=sum(by_instrument.values()),
                      by_instrument_micro=by_instrument)


async def unsettled_trades(
    connection: asyncpg.Connection, after_seq: int, limit: int
) -> list[TradeRecord]:
    """Return up to `limit` trades with seq > `after_seq`, in seq order.

    Settlement owns what "settled" means; here unsettled is simply "after its watermark".
    """
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT seq, trade_id, instrument, price_micro, quantity, buyer, seller, "
        "buyer_fee_micro, seller_fee_micro, maker_account, taker_account, aggressor_side, ts "
        "FROM ledger.trades WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq, limit,
    )
    return [TradeRecord(**dict(row)) for row in rows]


async def withdrawals_after(
    connection: asyncpg.Connection, after_seq: int, limit: int
) -> list[WithdrawalRecord]:
    """Return up to `limit` withdrawals with seq > `after_seq`, in seq order."""
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT seq, account, asset, amount, ts FROM ledger.withdrawals "
        "WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq, limit,
    )
    return [WithdrawalRecord(**dict(row)) for row in rows]


async def first_withdrawals_of(
    connection: asyncpg.Connection, after_seq: int, assets: Sequence[str]
) -> dict[str, int]:
    """Return, for each of `assets` withdrawn after `after_seq`, the seq of its first such
    withdrawal (assets with none are left out)."""
    rows = await connection.fetch(
        "SELECT asset, min(seq) AS seq FROM ledger.withdrawals "
        "WHERE seq > $1 AND asset = ANY($2::text[]) GROUP BY asset",
        after_seq, list(assets),
    )
    return {row["asset"]: row["seq"] for row in rows}


_DELIVERY_KINDS_SQL = ", ".join(f"'{kind}'" for kind in DELIVERY_ENTRY_KINDS)


async def delivery_postings(
    connection: asyncpg.Connection, after_seq: int, limit: int
) -> list[DeliveryPosting]:
    """Return the postings of the first `limit` Delivery entries with seq > `after_seq`.

    `limit` counts entries, and each entry comes whole: page on with the last posting's seq.
    Postings come ordered by seq, then account, then asset, in byte order whatever the
    database's collation. The kinds are written out in the query, as in the partial index
    `entries_delivery` it must match to be used.
    """
    _check_limit(limit)
    rows = await connection.fetch(
        "SELECT p.seq, e.kind, p.account, p.asset, p.amount, e.ts FROM ("
        "  SELECT seq, kind, ts FROM ledger.entries"
        f"  WHERE seq > $1 AND kind IN ({_DELIVERY_KINDS_SQL}) ORDER BY seq LIMIT $2"
        ") AS e JOIN ledger.postings AS p ON p.seq = e.seq "
        'ORDER BY p.seq, p.account COLLATE "C", p.asset COLLATE "C"',
        after_seq, limit,
    )
    return [DeliveryPosting(**dict(row)) for row in rows]


_REPORT_COLUMNS = "seq, issue_id, holder, delivered_ppm, evidence, ts"


async def delivery_reports_after(
    connection: asyncpg.Connection, after_seq: int, limit: int
) -> list[DeliveryReport]:
    """Return up to `limit` delivery reports with seq > `after_seq`, in seq order."""
    _check_limit(limit)
    rows = await connection.fetch(
        f"SELECT {_REPORT_COLUMNS} FROM ledger.delivery_reports WHERE seq > $1 "
        "ORDER BY seq LIMIT $2",
        after_seq, limit,
    )
    return [DeliveryReport(**dict(row)) for row in rows]


async def delivery_report(
    connection: asyncpg.Connection, issue_id: str, holder: str
) -> DeliveryReport | None:
    """Return the report of the assignment (`issue_id`, `holder`), or None when there is
    none (not reported yet, or reported before the ledger kept reports)."""
    row = await connection.fetchrow(
        f"SELECT {_REPORT_COLUMNS} FROM ledger.delivery_reports "
        "WHERE issue_id = $1 AND holder = $2",
        issue_id, holder,
    )
    return None if row is None else DeliveryReport(**dict(row))


async def bonds(
    connection: asyncpg.Connection,
    *,
    issuer: str | None = None,
    at_seq: int | None = None,
    after_seq: int = 0,
    limit: int = 10_000,
) -> list[BondRecord]:
    """Return the issues with seq in (`after_seq`, `at_seq`], of `issuer` (all by default),
    in the order issued, each with its bond as the entries up to `at_seq` leave it.

    A bond account's postings are all in Delivery entries, which the partial index
    `entries_delivery` finds without reading the trades.
    """
    _check_limit(limit)
    rows = await connection.fetch(
        "WITH released AS ("
        "  SELECT issue_id, sum(quantity) AS quantity FROM ledger.bond_releases"
        "   WHERE $1::bigint IS NULL OR seq <= $1 GROUP BY issue_id"
        "), held AS ("
        "  SELECT p.account, sum(p.amount) AS amount"
        "    FROM ledger.entries AS e JOIN ledger.postings AS p ON p.seq = e.seq"
        f"  WHERE e.kind IN ({_DELIVERY_KINDS_SQL}) AND ($1::bigint IS NULL OR e.seq <= $1)"
        "     AND starts_with(p.account, $5) GROUP BY p.account"
        ") "
        "SELECT i.seq, i.issue_id, i.account AS issuer, i.instrument, i.node_id, i.quantity,"
        "       i.bond, i.quantity - coalesce(r.quantity, 0) AS bonded_quantity,"
        "       $5 || i.issue_id AS account, coalesce(h.amount, 0) AS balance"
        "  FROM ledger.issues AS i LEFT JOIN released AS r ON r.issue_id = i.issue_id"
        "  LEFT JOIN held AS h ON h.account = $5 || i.issue_id"
        " WHERE ($1::bigint IS NULL OR i.seq <= $1) AND ($2::text IS NULL OR i.account = $2)"
        "   AND i.seq > $3 ORDER BY i.seq LIMIT $4",
        at_seq, issuer, after_seq, limit, BOND_ACCOUNT_PREFIX,
    )
    return [BondRecord(**{**dict(row), "bonded_quantity": int(row["bonded_quantity"]),
                          "balance": int(row["balance"])}) for row in rows]


async def redeemed_instruments(
    connection: asyncpg.Connection, at_seq: int | None = None
) -> list[str]:
    """Return the deliverable instruments closed (their tokens redeemed) up to `at_seq`."""
    rows = await connection.fetch(
        "SELECT instrument FROM ledger.redemptions WHERE $1::bigint IS NULL OR seq <= $1 "
        "ORDER BY seq",
        at_seq,
    )
    return [row["instrument"] for row in rows]


async def first_trade_after(connection: asyncpg.Connection, seq: int) -> int | None:
    """Return the seq of the first trade after `seq`, or None."""
    value = await connection.fetchval("SELECT min(seq) FROM ledger.trades WHERE seq > $1", seq)
    return int(value) if value is not None else None
