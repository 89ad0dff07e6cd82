"""Test support: a fresh database per test module with the ledger's tables, and trades,
withdrawals, delivery reports and journal entries written into them as the ledger projector
would; a submitter
stepped on a dev chain until an outcome; a contract call checked to revert with a custom
error. Never used outside tests."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg  # type: ignore[import-untyped]
import msgspec
from eth_utils.crypto import keccak
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError

from ledger.journal import CHAIN_ACCOUNT, JournalBatch, PostingRow, entry_hash
from ledger.migrate import apply_migrations
from ledger.store import append_batch, read_position
from protocol import effects
from runtime.postgres import create_database
from settlement.chain import Contracts
from settlement.fills import Fill
from settlement.submitter import Outcome, Submitter

Posting = tuple[str, str, int]  # (account, asset, signed amount)


async def fresh_database(superuser_url: str, prefix: str = "settlement") -> str:
    """Create an empty database and return its URL (same server and credentials)."""
    return await create_database(superuser_url, f"{prefix}_{uuid.uuid4().hex[:10]}")


async def create_ledger_tables(conn: asyncpg.Connection) -> None:
    """The ledger's schema, by the ledger's own migrations."""
    await apply_migrations(conn)


async def insert_trades(conn: asyncpg.Connection, fills: Sequence[Fill], ts: int = 0) -> None:
    """Append fills to `ledger.trades` as the ledger projector would (without their
    journal entries: settlement reads only the trades)."""
    await conn.executemany(
        "INSERT INTO ledger.trades VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
        "'buy', $12)",
        [(f.seq, f.trade_id, f.instrument, f.price_micro, f.quantity, f.buyer, f.seller,
          f.buyer_fee_micro, f.seller_fee_micro, f.seller, f.buyer, ts) for f in fills],
    )  # fmt: skip


async def insert_withdrawal(conn: asyncpg.Connection, seq: int, account: str, asset: str,
                            amount: int) -> None:
    await conn.execute("INSERT INTO ledger.withdrawals VALUES ($1, $2, $3, $4, 0)",
                       seq, account, asset, amount)


Report = tuple[str, str, int, str | None]  # (issue_id, holder, delivered_ppm, evidence)


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A journal entry to append: its postings, and the side row of a trade, withdrawal or
    delivery report. An entry whose postings are all zero (a report of full delivery) leaves
    only its side row, as the journal books it."""

    seq: int
    kind: str
    postings: list[Posting] = []
    trade: Fill | None = None
    withdrawal: tuple[str, str, int] | None = None  # (account, asset, amount)
    report: Report | None = None

    @classmethod
    def of_trade(cls, fill: Fill) -> Entry:
        moves = effects.trade_moves(fill.buyer, fill.buyer_fee_micro, fill.seller,
                                    fill.seller_fee_micro, fill.instrument, fill.quantity,
                                    fill.price_micro)
        return cls(seq=fill.seq, kind="trade", postings=list(moves), trade=fill)

    @classmethod
    def of_withdrawal(cls, seq: int, account: str, asset: str, amount: int) -> Entry:
        return cls(seq=seq, kind="withdrawn", postings=[(account, asset, -amount),
                                                        (CHAIN_ACCOUNT, asset, amount)],
                   withdrawal=(account, asset, amount))


def _postings(entry: Entry) -> list[PostingRow]:
    """Merge per (account, asset), drop zeros and sort, as the ledger's journal does."""
    totals: dict[tuple[str, str], int] = {}
    for account, asset, amount in entry.postings:
        totals[(account, asset)] = totals.get((account, asset), 0) + amount
    return sorted((entry.seq, account, asset, amount)
                  for (account, asset), amount in totals.items() if amount != 0)


async def append_entries(conn: asyncpg.Connection, entries: Sequence[Entry],
                         last_seq: int | None = None) -> None:
    """Append `entries` (in seq order) to the journal, hash-chained and checkpointed through
    `last_seq` (default: the last entry's seq); the seqs between are events without money."""
    position = await read_position(conn)
    last = last_seq if last_seq is not None else entries[-1].seq
    batch = JournalBatch(position.last_seq + 1, last, last + 1, position.head_hash)
    for entry in entries:
        postings = _postings(entry)
        ts = entry.seq * 1000
        if postings:
            new_hash = entry_hash(batch.head_hash, entry.seq, postings)
            batch.entries.append((entry.seq, entry.kind, ts, batch.head_hash, new_hash))
            batch.postings += postings
            batch.head_hash = new_hash
        if entry.trade is not None:
            fill = entry.trade
            batch.trades.append((fill.seq, fill.trade_id, fill.instrument, fill.price_micro,
                                 fill.quantity, fill.buyer, fill.seller, fill.buyer_fee_micro,
                                 fill.seller_fee_micro, fill.seller, fill.buyer, "buy", ts))
        if entry.withdrawal is not None:
            batch.withdrawals.append((entry.seq, *entry.withdrawal, ts))
        if entry.report is not None:
            batch.delivery_reports.append((entry.seq, *entry.report, ts))
    await append_batch(conn, batch)


async def drive(submitter: Submitter, until: Callable[[Outcome], Awaitable[bool]],
                steps_max: int = 200) -> list[Outcome]:
    """Step `submitter` until `until(outcome)`, mining a block on its chain (anvil) whenever
    one is awaited; return the outcomes. Fail after `steps_max` steps."""
    outcomes: list[Outcome] = []
    for _ in range(steps_max):
        outcome = await submitter.step()
        outcomes.append(outcome)
        if await until(outcome):
            return outcomes
        if outcome in (Outcome.CONFIRMING, Outcome.WAITING):
            submitter.chain.rpc("anvil_mine", ["0x1"])
    raise AssertionError(f"not done after {steps_max} steps: {outcomes}")


async def idle(outcome: Outcome) -> bool:
    return outcome == Outcome.IDLE


async def settled(outcome: Outcome) -> bool:
    return outcome == Outcome.SETTLED


def error_selector(contracts: Contracts, name: str) -> str:
    """Return the selector (0x and 4 bytes in hex) of the custom error `name` of the
    deployment's contracts."""
    for contract in (contracts.vault, contracts.gpu_hours, contracts.index_oracle):
        for entry in contract.abi:
            if entry["type"] == "error" and entry["name"] == name:
                types = ",".join(item["type"] for item in entry["inputs"])
                return "0x" + keccak(text=f"{name}({types})")[:4].hex()
    raise KeyError(name)


def assert_reverts(contracts: Contracts, call: ContractFunction, sender: str, name: str) -> None:
    """Check that `call` from `sender` reverts with custom error `name` (via eth_call)."""
    try:
        call.call({"from": sender})
    except ContractCustomError as error:
        data = error.data if isinstance(error.data, str) else error.args[0]
        assert str(data).startswith(error_selector(contracts, name)), (name, data)
        return
    raise AssertionError(f"the call did not revert with {name}")
