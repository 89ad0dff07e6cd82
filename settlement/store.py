"""The PostgreSQL adapter: schema `settlement`, and reads of the ledger's tables.

Reads the trades, delivery postings, delivery reports and withdrawals it settles through the
ledger's read API (`ledger.reads`), and counts its backlog against the ledger's tables.

Tables:
- `accounts`: the wallet address each named exchange account settles to. An account that
  is itself a wallet address (0x + 40 hex) needs no row. A deposit may bind an account that
  has none (`bind_account`), except a reserved one (`settlement.accounts`): those, `fees`
  first, only the operator registers.
- `batches`: one row per batch, stored `pending` before its transaction is first sent, then
  `sent` (nonce, every transaction hash broadcast, last fees), then `settled` (the mined
  transaction, block, gas) once it has its confirmations.
- `batch_fills`, `batch_moves`, `batch_evidence`: the leaves of each batch (its fills,
  then its delivery moves, then its delivery reports' evidence), for proofs.
- `payouts`: one row per withdrawal of `ledger.withdrawals` paid out by `Vault.payout`,
  with the same `pending` / `sent` / `settled` life as a batch.
- `index_publications`: values of the price index (`index.values`, read through
  `index.store`) published by `IndexOracle.publish`, each with the settled batch they follow,
  and the same life as a batch.
- `watchers`: the next block each deposit watcher reads.

Migrations are the files `settlement/migrations/NNN_name.sql`, applied by
`runtime.migrations` and recorded in `settlement.schema_migrations`. `migrate` applies the
index's too: the submitter reads `index.values`, which stays empty (nothing to publish) on a
venue that runs no index service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import asyncpg  # type: ignore[import-untyped]
import msgspec

from index import store as index_store
from index.value import IndexValue
from ledger import reads
from ledger.reads import WithdrawalRecord
from runtime.migrations import apply_migrations, load_migrations
from settlement.accounts import is_reserved_account, is_wallet_address
from settlement.errors import SettlementError
from settlement.fills import ChainFill, Fill, SupplyTuple
from settlement.moves import ChainMove, Move
from settlement.reports import ChainEvidence, Report

BatchStatus = Literal["pending", "sent", "settled"]
JobT = TypeVar("JobT")
JobTable = Literal["batches", "payouts", "index_publications"]
_KEY_COLUMN: Final = {"batches": "batch_id", "payouts": "withdrawal_seq",
                      "index_publications": "publication_id"}
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"


async def migrate(conn: asyncpg.Connection) -> None:
    """Apply the index's and settlement's migrations not yet applied (`runtime.migrations`;
    the index's advisory lock lets the index service migrate at the same time)."""
    await index_store.migrate(conn)
    await apply_migrations(conn, "settlement", load_migrations(MIGRATIONS_DIR))


# --- accounts --------------------------------------------------------------------------


async def register_account(conn: asyncpg.Connection, account: str, address: str) -> None:
    """Set the wallet address a named account settles to (replacing an earlier one)."""
    await conn.execute(
        "INSERT INTO settlement.accounts (account, address) VALUES ($1, $2) "
        "ON CONFLICT (account) DO UPDATE SET address = EXCLUDED.address, registered_at = now()",
        account, address,
    )  # fmt: skip


async def bind_account(conn: asyncpg.Connection, account: str, address: str) -> str:
    """Register `account` to `address` unless it has an address already; return the address.

    Only named accounts that are not the exchange's own may be bound so (a deposit's first
    naming): a wallet address settles to itself, and a reserved account (`fees`, "gpux."
    names) only ever to what the operator registers.
    """
    if is_wallet_address(account) or is_reserved_account(account):
        raise ValueError(f"account {account!r} cannot be bound by a deposit")
    row = await conn.fetchrow(
        "INSERT INTO settlement.accounts (account, address) VALUES ($1, $2) "
        "ON CONFLICT (account) DO UPDATE SET account = EXCLUDED.account RETURNING address",
        account, address,
    )  # fmt: skip
    bound: str = row["address"]
    return bound


async def addresses(conn: asyncpg.Connection, accounts: Iterable[str]) -> dict[str, str]:
    """Return the address of each account that has one (wallet addresses map to themselves)."""
    found = {account: account for account in accounts if is_wallet_address(account)}
    named = [account for account in accounts if account not in found]
    if named:
        rows = await conn.fetch(
            "SELECT account, address FROM settlement.accounts WHERE account = ANY($1::text[])",
            named,
        )
        found.update({row["account"]: row["address"] for row in rows})
    return found


# --- deposit watchers ----------------------------------------------------------------------


async def next_block(conn: asyncpg.Connection, name: str) -> int | None:
    value: int | None = await conn.fetchval(
        "SELECT next_block FROM settlement.watchers WHERE name = $1", name
    )
    return value


async def save_next_block(conn: asyncpg.Connection, name: str, block: int) -> None:
    await conn.execute(
        "INSERT INTO settlement.watchers (name, next_block) VALUES ($1, $2) ON CONFLICT (name) "
        "DO UPDATE SET next_block = EXCLUDED.next_block, updated_at = now()",
        name, block,
    )  # fmt: skip


# --- trades ----------------------------------------------------------------------------------


async def read_unsettled(conn: asyncpg.Connection, after_seq: int, limit: int
                         ) -> tuple[list[Fill], list[Move], list[Report]]:
    """Return up to `limit` trades, the postings of up to `limit` delivery entries and up to
    `limit` delivery reports after `after_seq`, from one snapshot of the ledger (so no read
    sees rows another missed: `batching.in_seq_order` relies on it)."""
    with _ledger_tables():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            fills = await reads.unsettled_trades(conn, after_seq, limit)
            moves = await reads.delivery_postings(conn, after_seq, limit)
            reports = await reads.delivery_reports_after(conn, after_seq, limit)
    return fills, moves, reports


async def read_withdrawals(conn: asyncpg.Connection, after_seq: int, limit: int
                           ) -> list[WithdrawalRecord]:
    """Return up to `limit` rows of `ledger.withdrawals` after `after_seq`, in seq order."""
    with _ledger_tables():
        return await reads.withdrawals_after(conn, after_seq, limit)


async def first_unpaid_withdrawals(conn: asyncpg.Connection, after_seq: int,
                                   assets: Sequence[str]) -> dict[str, int]:
    """Return, per asset of `assets`, the seq of its first withdrawal after `after_seq`."""
    if not assets:
        return {}
    with _ledger_tables():
        return await reads.first_withdrawals_of(conn, after_seq, assets)


async def first_unsettled_after(conn: asyncpg.Connection, seq: int) -> int | None:
    """Return the seq of the first trade or delivery entry after `seq`, or None."""
    with _ledger_tables():
        trade = await reads.first_trade_after(conn, seq)
        moves = await reads.delivery_postings(conn, seq, 1)
    found = [first for first in (trade, moves[0].seq if moves else None) if first is not None]
    return min(found, default=None)


@contextmanager
def _ledger_tables() -> Iterator[None]:
    """Turn a missing ledger table (the ledger not migrated yet) into a retriable error."""
    try:
        yield
    except asyncpg.UndefinedTableError as error:
        raise SettlementError(f"the ledger's table is missing ({error}): is the ledger "
                              "migrated?", retriable=True) from error


# --- batches ---------------------------------------------------------------------------------


class SendState(msgspec.Struct, kw_only=True):
    """How far a stored transaction job (a batch, a payout) has got."""

    status: BatchStatus
    nonce: int | None = None
    tx_hashes: list[bytes] = []
    max_fee_per_gas: int | None = None
    priority_fee_per_gas: int | None = None
    sent_at: datetime | None = None
    send_count: int = 0
    tx_hash: bytes | None = None
    block_number: int | None = None
    gas_used: int | None = None


class Batch(SendState, kw_only=True):
    """A stored batch: what `Vault.settle` is called with, and how far it has got."""

    batch_id: int
    first_seq: int
    last_seq: int
    fill_count: int
    move_count: int = 0
    evidence_count: int = 0
    fills_root: bytes
    assets: list[int]
    deltas: list[int]
    supply: list[SupplyTuple] = []


class Payout(SendState, kw_only=True):
    """A stored payout: what `Vault.payout` is called with, and how far it has got."""

    withdrawal_seq: int
    account: str
    address: str
    asset: int
    amount: int


IndexPosition = tuple[int, int, str, str]  # (last_seq, minute_ns, gpu, region)


def index_position(value: IndexValue) -> IndexPosition:
    """Return a value's place in the order `index.store.values_after` reads them in."""
    return value.last_seq, value.minute_ns, value.gpu, value.region


class IndexPublication(SendState, kw_only=True):
    """A stored publication: the values `IndexOracle.publish` is called with (in index
    order), the settled batch whose last_seq bounds theirs, and how far it has got."""

    publication_id: int
    batch_id: int
    index_values: list[IndexValue]

    @property
    def position(self) -> IndexPosition:
        """Where the next publication starts: after this one's last value."""
        return index_position(self.index_values[-1])


_BATCH_COLUMNS: Final = ", ".join(Batch.__struct_fields__)
_PAYOUT_COLUMNS: Final = ", ".join(Payout.__struct_fields__)
_PUBLICATION_COLUMNS: Final = ", ".join(IndexPublication.__struct_fields__)


def _send_state(row: asyncpg.Record) -> dict[str, Any]:
    values: dict[str, Any] = dict(row)
    values["tx_hashes"] = [bytes(tx_hash) for tx_hash in values["tx_hashes"]]
    for name in ("max_fee_per_gas", "priority_fee_per_gas"):
        if values[name] is not None:
            values[name] = int(values[name])
    return values


def _batch(row: asyncpg.Record) -> Batch:
    values = _send_state(row)
    values["assets"] = [int(asset) for asset in values["assets"]]
    values["deltas"] = [int(delta) for delta in values["deltas"]]
    values["supply"] = msgspec.json.decode(values["supply"], type=list[SupplyTuple])
    return Batch(**values)


def _payout(row: asyncpg.Record) -> Payout:
    values = _send_state(row)
    values["asset"] = int(values["asset"])
    values["amount"] = int(values["amount"])
    return Payout(**values)


def _index_publication(row: asyncpg.Record) -> IndexPublication:
    values = _send_state(row)
    values["index_values"] = msgspec.json.decode(values["index_values"], type=list[IndexValue])
    return IndexPublication(**values)


async def _open_job(conn: asyncpg.Connection, table: JobTable, columns: str,
                    parse: Callable[[asyncpg.Record], JobT]) -> JobT | None:
    """The job of `table` not yet settled with the lowest key, parsed; None when none is."""
    row = await conn.fetchrow(f"SELECT {columns} FROM settlement.{table} WHERE status <> "
                              f"'settled' ORDER BY {_KEY_COLUMN[table]} LIMIT 1")
    return parse(row) if row is not None else None


async def _get_job(conn: asyncpg.Connection, table: JobTable, columns: str,
                   parse: Callable[[asyncpg.Record], JobT], key: int) -> JobT | None:
    """The job of `table` with `key`, parsed; None when there is none."""
    row = await conn.fetchrow(
        f"SELECT {columns} FROM settlement.{table} WHERE {_KEY_COLUMN[table]} = $1", key)
    return parse(row) if row is not None else None


async def open_batch(conn: asyncpg.Connection) -> Batch | None:
    """Return the oldest batch not yet settled (the submitter keeps at most one open)."""
    return await _open_job(conn, "batches", _BATCH_COLUMNS, _batch)


async def get_batch(conn: asyncpg.Connection, batch_id: int) -> Batch | None:
    return await _get_job(conn, "batches", _BATCH_COLUMNS, _batch, batch_id)


async def batched_through(conn: asyncpg.Connection) -> tuple[int, int]:
    """Return (the last trade seq in any batch, the last batch id); zeros when none."""
    row = await conn.fetchrow(
        "SELECT coalesce(max(last_seq), 0) AS seq, coalesce(max(batch_id), 0) AS batch_id "
        "FROM settlement.batches"
    )
    return int(row["seq"]), int(row["batch_id"])


async def settled_through(conn: asyncpg.Connection) -> int:
    """Return the last trade seq of the settled batches (batches settle in order)."""
    value = await conn.fetchval(
        "SELECT coalesce(max(last_seq), 0) FROM settlement.batches WHERE status = 'settled'"
    )
    return int(value)


async def insert_batch(conn: asyncpg.Connection, batch: Batch, fills: Sequence[ChainFill],
                       trade_ids: Sequence[str], moves: Sequence[ChainMove] = (),
                       evidence: Sequence[ChainEvidence] = ()) -> None:
    """Store a new pending batch with its leaves (fills, then moves, then evidence), in one
    transaction."""
    counts = (batch.fill_count, batch.move_count, batch.evidence_count)
    if counts != (len(fills), len(moves), len(evidence)):
        raise ValueError(f"batch {batch.batch_id} counts {counts} fills, moves and evidence "
                         f"leaves, given {(len(fills), len(moves), len(evidence))}")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO settlement.batches (batch_id, first_seq, last_seq, fill_count, "
            "move_count, evidence_count, fills_root, assets, deltas, supply, status) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending')",
            batch.batch_id, batch.first_seq, batch.last_seq, batch.fill_count,
            batch.move_count, batch.evidence_count, batch.fills_root, batch.assets,
            batch.deltas, msgspec.json.encode(batch.supply).decode(),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "batch_fills", schema_name="settlement",
            columns=["batch_id", "leaf_index", "seq", "trade_id", "leaf", "fill"],
            records=[
                (batch.batch_id, index, fill.seq, trade_id, fill.leaf(),
                 msgspec.json.encode(fill).decode())
                for index, (fill, trade_id) in enumerate(zip(fills, trade_ids, strict=True))
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "batch_moves", schema_name="settlement",
            columns=["batch_id", "leaf_index", "seq", "account", "asset", "leaf", "move"],
            records=[
                (batch.batch_id, len(fills) + index, move.seq, move.account, move.asset,
                 move.leaf(), msgspec.json.encode(move).decode())
                for index, move in enumerate(moves)
            ],
        )  # fmt: skip
        if evidence:
            first_index = len(fills) + len(moves)
            await conn.copy_records_to_table(
                "batch_evidence", schema_name="settlement",
                columns=["batch_id", "leaf_index", "seq", "issue_id", "holder", "leaf",
                         "evidence"],
                records=[
                    (batch.batch_id, first_index + index, leaf.seq, leaf.issue_id,
                     leaf.holder, leaf.leaf(), msgspec.json.encode(leaf).decode())
                    for index, leaf in enumerate(evidence)
                ],
            )  # fmt: skip


async def record_send(conn: asyncpg.Connection, table: JobTable, key: int, nonce: int,
                      tx_hash: bytes, max_fee_per_gas: int, priority_fee_per_gas: int) -> None:
    """Record a signed transaction of a batch or payout before it is broadcast."""
    await conn.execute(
        f"UPDATE settlement.{table} SET status = 'sent', nonce = $2, "
        "tx_hashes = array_append(tx_hashes, $3::bytea), max_fee_per_gas = $4, "
        "priority_fee_per_gas = $5, sent_at = now(), send_count = send_count + 1 "
        f"WHERE {_KEY_COLUMN[table]} = $1 AND status <> 'settled'",
        key, nonce, tx_hash, max_fee_per_gas, priority_fee_per_gas,
    )  # fmt: skip


async def mark_settled(conn: asyncpg.Connection, table: JobTable, key: int, tx_hash: bytes,
                       block_number: int, gas_used: int) -> float | None:
    """Mark a job settled; return the seconds from its storing to now (database clock), or
    None when no such job was stored."""
    seconds = await conn.fetchval(
        f"UPDATE settlement.{table} SET status = 'settled', tx_hash = $2, block_number = $3, "
        f"gas_used = $4, settled_at = now() WHERE {_KEY_COLUMN[table]} = $1 "
        "RETURNING extract(epoch FROM settled_at - created_at)",
        key, tx_hash, block_number, gas_used,
    )  # fmt: skip
    return float(seconds) if seconds is not None else None


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    """What is left to settle and pay: `unsettled_trades` saturates at the count asked for."""

    settled_seq: int
    unsettled_trades: int
    unpaid_withdrawals: int
    open_batches: int
    open_payouts: int
    open_index_publications: int


BACKLOG_QUERY: Final = """
WITH settled AS (
    SELECT coalesce(max(last_seq), 0) AS seq FROM settlement.batches WHERE status = 'settled'
), paid AS (
    SELECT coalesce(max(withdrawal_seq), 0) AS seq FROM settlement.payouts
)
SELECT (SELECT seq FROM settled) AS settled_seq,
       (SELECT count(*) FROM (SELECT 1 FROM ledger.trades
                              WHERE seq > (SELECT seq FROM settled) LIMIT $1) AS t)
           AS unsettled_trades,
       (SELECT count(*) FROM (SELECT 1 FROM ledger.withdrawals
                              WHERE seq > (SELECT seq FROM paid) LIMIT $1) AS w)
           AS unpaid_withdrawals,
       (SELECT count(*) FROM settlement.batches WHERE status <> 'settled') AS open_batches,
       (SELECT count(*) FROM settlement.payouts WHERE status <> 'settled') AS open_payouts,
       (SELECT count(*) FROM settlement.index_publications WHERE status <> 'settled')
           AS open_index_publications
"""


async def backlog(conn: asyncpg.Connection, count_max: int) -> Backlog:
    """Return what is left to settle and pay, counting at most `count_max` rows of each."""
    with _ledger_tables():
        rows = await conn.fetch(BACKLOG_QUERY, count_max)
    return Backlog(**{name: int(value) for name, value in dict(rows[0]).items()})


# --- payouts ---------------------------------------------------------------------------------


async def open_payout(conn: asyncpg.Connection) -> Payout | None:
    """Return the oldest payout not yet settled (the submitter keeps at most one open)."""
    return await _open_job(conn, "payouts", _PAYOUT_COLUMNS, _payout)


async def get_payout(conn: asyncpg.Connection, withdrawal_seq: int) -> Payout | None:
    return await _get_job(conn, "payouts", _PAYOUT_COLUMNS, _payout, withdrawal_seq)


async def paid_through(conn: asyncpg.Connection) -> int:
    """Return the seq of the last withdrawal with a stored payout (0 when none)."""
    value = await conn.fetchval("SELECT coalesce(max(withdrawal_seq), 0) FROM settlement.payouts")
    return int(value)


async def insert_payout(conn: asyncpg.Connection, payout: Payout) -> None:
    await conn.execute(
        "INSERT INTO settlement.payouts (withdrawal_seq, account, address, asset, amount, "
        "status) VALUES ($1, $2, $3, $4, $5, 'pending')",
        payout.withdrawal_seq, payout.account, payout.address, payout.asset, payout.amount,
    )  # fmt: skip


# --- index publications ---------------------------------------------------------------------


class IndexProgress(msgspec.Struct, frozen=True, kw_only=True):
    """How far the index is published: the last settled batch (zeros when none has settled)
    and the last publication's id, batch and position (0, 0 and None when there is none)."""

    settled_batch_id: int
    settled_seq: int
    publication_id: int
    published_batch_id: int
    position: IndexPosition | None


async def index_progress(conn: asyncpg.Connection) -> IndexProgress:
    settled = await conn.fetchrow(
        "SELECT batch_id, last_seq FROM settlement.batches WHERE status = 'settled' "
        "ORDER BY batch_id DESC LIMIT 1")
    last = await conn.fetchrow(
        "SELECT publication_id, batch_id, last_seq, minute_ns, gpu, region "
        "FROM settlement.index_publications ORDER BY publication_id DESC LIMIT 1")
    return IndexProgress(
        settled_batch_id=settled["batch_id"] if settled is not None else 0,
        settled_seq=settled["last_seq"] if settled is not None else 0,
        publication_id=last["publication_id"] if last is not None else 0,
        published_batch_id=last["batch_id"] if last is not None else 0,
        position=(last["last_seq"], last["minute_ns"], last["gpu"], last["region"])
        if last is not None else None,
    )  # fmt: skip


async def read_index_values(conn: asyncpg.Connection, after: IndexPosition | None,
                            through_seq: int, limit: int) -> list[IndexValue]:
    """Return up to `limit` values of `index.values` after position `after` (from the start
    when None) with a last_seq of at most `through_seq`, in index order.

    `index.store.values_after` hands out whole last_seqs; a publication may end inside one
    (one event can release more values than a transaction takes), so the last_seq of `after`
    is read again and what is not after it is left out.
    """
    after_seq = after[0] - 1 if after is not None else 0
    rows = await index_store.values_after(conn, after_seq, limit + 1)
    return [row for row in rows
            if row.last_seq <= through_seq
            and (after is None or index_position(row) > after)][:limit]


async def open_index_publication(conn: asyncpg.Connection) -> IndexPublication | None:
    """Return the oldest publication not yet settled (the submitter keeps at most one open)."""
    return await _open_job(conn, "index_publications", _PUBLICATION_COLUMNS,
                           _index_publication)


async def get_index_publication(conn: asyncpg.Connection, publication_id: int
                                ) -> IndexPublication | None:
    return await _get_job(conn, "index_publications", _PUBLICATION_COLUMNS,
                          _index_publication, publication_id)


async def insert_index_publication(conn: asyncpg.Connection,
                                   publication: IndexPublication) -> None:
    if not publication.index_values:
        raise ValueError(f"publication {publication.publication_id} holds no value")
    last_seq, minute_ns, gpu, region = publication.position
    await conn.execute(
        "INSERT INTO settlement.index_publications (publication_id, batch_id, last_seq, "
        "minute_ns, gpu, region, value_count, index_values, status) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')",
        publication.publication_id, publication.batch_id, last_seq, minute_ns, gpu, region,
        len(publication.index_values), msgspec.json.encode(publication.index_values).decode(),
    )  # fmt: skip


class StoredFill(msgspec.Struct, frozen=True):
    batch_id: int
    leaf_index: int
    fill: ChainFill


async def find_fill(conn: asyncpg.Connection, trade_id: str) -> StoredFill | None:
    row = await conn.fetchrow(
        "SELECT batch_id, leaf_index, fill FROM settlement.batch_fills WHERE trade_id = $1",
        trade_id,
    )
    if row is None:
        return None
    fill = msgspec.json.decode(row["fill"], type=ChainFill)
    return StoredFill(batch_id=row["batch_id"], leaf_index=row["leaf_index"], fill=fill)


class StoredMove(msgspec.Struct, frozen=True):
    batch_id: int
    leaf_index: int
    move: ChainMove


async def find_move(conn: asyncpg.Connection, seq: int, account: str, asset: int
                    ) -> StoredMove | None:
    """Return the stored move of the ledger's posting (seq, account, asset id), or None."""
    row = await conn.fetchrow(
        "SELECT batch_id, leaf_index, move FROM settlement.batch_moves "
        "WHERE seq = $1 AND account = $2 AND asset = $3",
        seq, account, asset,
    )  # fmt: skip
    if row is None:
        return None
    move = msgspec.json.decode(row["move"], type=ChainMove)
    return StoredMove(batch_id=row["batch_id"], leaf_index=row["leaf_index"], move=move)


class StoredEvidence(msgspec.Struct, frozen=True):
    batch_id: int
    leaf_index: int
    evidence: ChainEvidence


async def find_evidence(conn: asyncpg.Connection, issue_id: str, holder: str
                        ) -> StoredEvidence | None:
    """Return the stored evidence leaf of the report of (`issue_id`, `holder`), or None."""
    row = await conn.fetchrow(
        "SELECT batch_id, leaf_index, evidence FROM settlement.batch_evidence "
        "WHERE issue_id = $1 AND holder = $2",
        issue_id, holder,
    )  # fmt: skip
    if row is None:
        return None
    evidence = msgspec.json.decode(row["evidence"], type=ChainEvidence)
    return StoredEvidence(batch_id=row["batch_id"], leaf_index=row["leaf_index"],
                          evidence=evidence)


async def batch_leaves(conn: asyncpg.Connection, batch_id: int) -> list[bytes]:
    """Return a batch's leaves in tree order: its fills, then its moves, then its evidence."""
    rows = await conn.fetch(
        "SELECT leaf_index, leaf FROM settlement.batch_fills WHERE batch_id = $1 UNION ALL "
        "SELECT leaf_index, leaf FROM settlement.batch_moves WHERE batch_id = $1 UNION ALL "
        "SELECT leaf_index, leaf FROM settlement.batch_evidence WHERE batch_id = $1 "
        "ORDER BY leaf_index",
        batch_id,
    )
    return [bytes(row["leaf"]) for row in rows]
