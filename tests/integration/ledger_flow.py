"""What the ledger's integration tests share: a workload with commands mixed in, a
`gpux ledger run` subprocess, and the check that the journal holds every event once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from eventlog.port import EventLog
from ledger.reconcile import ReconcileReport, reconcile
from matching_engine.core import Engine
from matching_engine.workload import Workload
from protocol import AnyCommand, decode_event

ROOT = Path(__file__).resolve().parents[2]
MONEY_TYPES = (b'"type":"deposited"', b'"type":"withdrawn"', b'"type":"trade"')


def workload_commands(workload: Workload, flow_commands: int,
                      mixed_in: Callable[[int, int], list[AnyCommand]]) -> list[AnyCommand]:
    """Return the workload's setup and `flow_commands` of its flow, each flow command followed
    by the commands `mixed_in(index, ts)` gives for it."""
    commands: list[AnyCommand] = list(workload.setup())
    for index, command in enumerate(workload.flow(flow_commands)):
        commands.append(command)
        commands.extend(mixed_in(index, command.ts))
    return commands


def replayed_seq(commands: list[AnyCommand]) -> int:
    """Return the seq of the last event a fresh engine core makes of the commands."""
    replay = Engine()
    for command in commands:
        replay.apply(command)
    return replay.seq


def start_projector(
    bootstrap: str, namespace: str, database_url: str, log_path: Path, *options: str
) -> subprocess.Popen[bytes]:
    """Start `gpux ledger run` on the namespace's topics, its output appended to `log_path`."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "ledger", "run", "--kafka", bootstrap,
             "--database-url", database_url, "--topic-namespace", namespace,
             "--batch-size-max", "50", "--batch-interval-ms", "5", *options],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


async def assert_journal_holds_each_event_once(
    connection: asyncpg.Connection, event_log: EventLog, events: list[bytes],
    commands_topic: str,
) -> ReconcileReport:
    """Check the journal against the whole event topic: one entry per money-moving event,
    each trade and withdrawal once, checkpoints covering every seq once, and a
    reconciliation with a replay of the command log without differences."""
    money_seqs = [decode_event(event).seq for event in events
                  if any(kind in event for kind in MONEY_TYPES)]
    entry_seqs = [row[0] for row in
                  await connection.fetch("SELECT seq FROM ledger.entries ORDER BY seq")]
    assert entry_seqs == money_seqs, "one entry per money-moving event, none doubled"
    assert await connection.fetchval("SELECT count(*) FROM ledger.trades") == sum(
        b'"type":"trade"' in event for event in events)
    assert await connection.fetchval("SELECT count(*) FROM ledger.withdrawals") == sum(
        b'"type":"withdrawn"' in event for event in events)
    covered = await connection.fetchval(
        "SELECT sum(last_seq - first_seq + 1) FROM ledger.checkpoints")
    assert covered == len(events)
    report = await reconcile(connection, event_log, commands_topic=commands_topic)
    assert (report.seq, report.differences) == (len(events), [])
    return report
