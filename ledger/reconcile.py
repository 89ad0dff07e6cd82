"""Compare the ledger with the engine at the same seq (`gpux ledger reconcile`).

The engine state comes from replaying the commands topic through `matching_engine.core`
(from an engine snapshot when one is given) up to the command whose events end at the
seq. For every account and asset the ledger balance (sum of postings) must equal the
engine's total (available + held); each issue's bond account must hold the bond the
engine's final state lists for it (`issues[].bond`), and nothing once the issue is off that
list; the external chain account must equal minus what the engine's accounts and bonds hold
together, per asset. Each mismatch is a `Difference`. After a deliverable instrument's
close no account may hold its token, in the ledger or the engine (the chain account
included, as every token came from it): each such balance is listed in `unredeemed`.
Neither list holding anything is the healthy state.

A seq inside one command's events has no engine state of its own; `reconcile` then
compares at the last command boundary before it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from eventlog.errors import LogTimeoutError
from eventlog.port import COMMANDS_TOPIC, EventLog
from ledger.errors import ReconcileError, SeqNotAtCommandBoundaryError
from ledger.journal import CHAIN_ACCOUNT, bond_account
from ledger.reads import balances, last_checkpoint, redeemed_instruments
from matching_engine.core import Engine
from matching_engine.snapshots import Snapshot, SnapshotStore
from protocol import USDC, decode_command, parse_micro

__all__ = [
    "Difference",
    "ReconcileReport",
    "compare_balances",
    "engine_at_seq",
    "engine_balances",
    "reconcile",
    "unredeemed_balances",
]

FETCH_RECORDS_MAX = 5_000
POLL_TIMEOUT_MS = 200
REPLAY_TIMEOUT_S = 300.0

Balances = Mapping[tuple[str, str], int]


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One account and asset where the ledger and the engine disagree."""

    account: str
    asset: str
    ledger: int
    engine: int


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    """The seq compared at, how many balances were compared, every difference, and every
    balance of a redeemed token left (in the ledger or the engine)."""

    seq: int
    balances_compared: int
    differences: list[Difference]
    unredeemed: list[Difference] = []

    @property
    def ok(self) -> bool:
        return not self.differences and not self.unredeemed


def engine_balances(engine: Engine) -> dict[tuple[str, str], int]:
    """Return the engine's non-zero totals (available + held) per (account, asset), and
    each issue's bond left on its bond account.

    Read from the public final-state view; the chain account gets minus the sum of all
    accounts and bonds per asset, as the ledger books every deposit, withdrawal and issued
    token against it.
    """
    totals: dict[tuple[str, str], int] = {}
    outside: dict[str, int] = {}
    state = engine.final_state()
    for account, assets in state["accounts"].items():
        for asset, balance in assets.items():
            amount = _units(asset, balance["available"]) + _units(asset, balance["held"])
            if amount:
                totals[(account, asset)] = amount
                outside[asset] = outside.get(asset, 0) - amount
    for issue in state["issues"]:
        bond = parse_micro(issue["bond"], "bond")
        if bond:
            totals[(bond_account(issue["issue_id"]), USDC)] = bond
            outside[USDC] = outside.get(USDC, 0) - bond
    for asset, amount in outside.items():
        if amount:
            totals[(CHAIN_ACCOUNT, asset)] = amount
    return totals


def _units(asset: str, amount: str | int) -> int:
    if asset == USDC:
        return parse_micro(amount, "balance")
    if not isinstance(amount, int):
        raise ReconcileError(f"engine token balance {amount!r} is not an integer")
    return amount


def compare_balances(ledger: Balances, engine: Balances) -> list[Difference]:
    """Return every (account, asset) whose amounts differ, sorted; zero counts as absent."""
    keys = sorted(set(ledger) | set(engine))
    return [
        Difference(account=account, asset=asset, ledger=ledger.get((account, asset), 0),
                   engine=engine.get((account, asset), 0))
        for account, asset in keys
        if ledger.get((account, asset), 0) != engine.get((account, asset), 0)
    ]


def unredeemed_balances(
    redeemed: Iterable[str], ledger: Balances, engine: Balances
) -> list[Difference]:
    """Return every balance of a redeemed token that is not 0 in the ledger or the engine,
    sorted."""
    assets = set(redeemed)
    keys = sorted(key for key in set(ledger) | set(engine) if key[1] in assets)
    return [
        Difference(account=account, asset=asset, ledger=ledger.get((account, asset), 0),
                   engine=engine.get((account, asset), 0))
        for account, asset in keys
        if ledger.get((account, asset), 0) or engine.get((account, asset), 0)
    ]


def _starting_point(snapshots: SnapshotStore | None, seq: int) -> Snapshot | None:
    """Return the newest sound snapshot whose event seq is at or below `seq`."""
    if snapshots is None:
        return None
    offset_max = 2**63 - 1
    for _ in range(1_000):  # a store keeps a handful of snapshots
        snapshot = snapshots.latest(offset_max)
        if snapshot is None or snapshot.event_seq <= seq:
            return snapshot
        offset_max = snapshot.command_offset - 1
    return None


async def engine_at_seq(
    event_log: EventLog,
    seq: int,
    *,
    commands_topic: str = COMMANDS_TOPIC,
    snapshots: SnapshotStore | None = None,
    timeout_s: float = REPLAY_TIMEOUT_S,
) -> Engine:
    """Return the engine as it was right after the command whose events end at `seq`.

    Raise SeqNotAtCommandBoundaryError if `seq` falls inside one command's events, and
    ReconcileError if the commands topic ends before the engine reaches `seq`.
    """
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    snapshot = _starting_point(snapshots, seq)
    engine = Engine() if snapshot is None else Engine.restore(snapshot.engine)
    if engine.seq == seq:
        return engine
    consumer = event_log.consumer(commands_topic, isolation="read_committed",
                                  start=0 if snapshot is None else snapshot.command_offset)
    await consumer.start()
    try:
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            records = await consumer.getmany(FETCH_RECORDS_MAX, POLL_TIMEOUT_MS)
            for record in records:
                before = engine.seq
                engine.apply(decode_command(record.value))
                if engine.seq == seq:
                    return engine
                if engine.seq > seq:
                    raise SeqNotAtCommandBoundaryError(seq, before, engine.seq)
            if not records and await consumer.position() >= await consumer.end_offset():
                raise ReconcileError(
                    f"the commands topic {commands_topic} ends with the engine at seq "
                    f"{engine.seq}, before seq {seq}"
                )
    finally:
        await consumer.stop()
    raise LogTimeoutError(f"replay did not reach seq {seq} within {timeout_s} s")


async def reconcile(
    connection: asyncpg.Connection,
    event_log: EventLog,
    *,
    at_seq: int | None = None,
    commands_topic: str = COMMANDS_TOPIC,
    snapshots: SnapshotStore | None = None,
) -> ReconcileReport:
    """Compare ledger and engine balances at `at_seq` (default: the ledger's last seq).

    When that seq falls inside one command's events, compare at the boundary before it.
    """
    checkpoint = await last_checkpoint(connection)
    ledger_seq = 0 if checkpoint is None else checkpoint.last_seq
    if at_seq is None:
        at_seq = ledger_seq
    if at_seq > ledger_seq:
        raise ReconcileError(f"the ledger is at seq {ledger_seq}, not yet at seq {at_seq}")
    try:
        engine = await engine_at_seq(event_log, at_seq, commands_topic=commands_topic,
                                     snapshots=snapshots)
    except SeqNotAtCommandBoundaryError as error:
        at_seq = error.seq_before
        engine = await engine_at_seq(event_log, at_seq, commands_topic=commands_topic,
                                     snapshots=snapshots)
    ledger = await balances(connection, at_seq=at_seq)
    expected = engine_balances(engine)
    redeemed = await redeemed_instruments(connection, at_seq=at_seq)
    return ReconcileReport(seq=at_seq, balances_compared=len(set(ledger) | set(expected)),
                           differences=compare_balances(ledger, expected),
                           unredeemed=unredeemed_balances(redeemed, ledger, expected))
