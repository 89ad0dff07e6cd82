"""`gpux ledger COMMAND`: migrate, run the projector, verify, read, reconcile.

    gpux ledger migrate   --database-url URL [--service-password PW]
    gpux ledger run       --kafka HOST:PORT --database-url URL [--topic-namespace NS]
                          [--metrics-port PORT]
    gpux ledger verify    --database-url URL
    gpux ledger balances  --database-url URL [--account A] [--at-seq N]
    gpux ledger statement ACCOUNT --database-url URL [--asset X] [--csv]
    gpux ledger bonds     --database-url URL [--account ISSUER] [--at-seq N]
    gpux ledger fees      --database-url URL [--at-seq N]
    gpux ledger reconcile --database-url URL --kafka HOST:PORT [--topic-namespace NS]
                          [--at-seq N] [--snapshot-dir DIR]

`--database-url` defaults to $DATABASE_URL and `--kafka` to $KAFKA_BOOTSTRAP. Exit codes:
0 success, 1 a broken chain, a reconciliation difference or a ledger failure, 2 usage.

`run --metrics-port PORT` serves the projector's Prometheus metrics (`ledger.metrics`) on
http://127.0.0.1:PORT/metrics and `/healthz` (200 while a projector runs on open database
connections, else 503); 0 picks a free port (logged), -1 (the default) serves nothing.

An issue's bond is the account `@bond:ISSUE_ID`: `balances --account @bond:ID` and
`statement @bond:ID` show it, and `bonds --account ISSUER` lists an issuer's bonds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from eventlog.port import COMMANDS_TOPIC
from ledger import reads
from ledger.errors import LedgerError
from ledger.migrate import SERVICE_ROLE, apply_migrations, set_service_password
from ledger.projector import ProjectorConfig, ProjectorSupervisor
from ledger.reconcile import reconcile
from ledger.verify import verify_chain
from protocol import USDC, format_micro
from runtime.cli import run_until_signal
from runtime.postgres import connect

__all__ = ["main"]

log = logging.getLogger("gpux.ledger")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def format_amount(asset: str, amount: int) -> str:
    """Format an amount as the wire does: a USDC decimal string, or a whole token count."""
    return format_micro(amount) if asset == USDC else str(amount)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux ledger", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                         help="PostgreSQL URL (default: $DATABASE_URL)")
        return sub

    migrate = command("migrate", "create or upgrade the ledger schema")
    migrate.add_argument("--service-password", default=os.environ.get("GPUX_LEDGER_PASSWORD"),
                         help=f"let role {SERVICE_ROLE} log in with this password "
                              "(default: $GPUX_LEDGER_PASSWORD)")
    run = command("run", "project the events topic into the journal")
    add_log_flags(run)
    run.add_argument("--batch-size-max", type=int, default=ProjectorConfig.batch_size_max)
    run.add_argument("--batch-interval-ms", type=int,
                     default=ProjectorConfig.batch_interval_ms)
    run.add_argument("--writer-connections", type=int,
                     default=ProjectorConfig.writer_connections,
                     help="batches appended at once (they still commit in order)")
    run.add_argument("--database-role", default=SERVICE_ROLE,
                     help="role to act as after connecting ('' to keep the login role)")
    run.add_argument("--metrics-port", type=int, default=-1,
                     help="serve /metrics and /healthz here (0: any free port, -1: off)")
    command("verify", "walk the hash chain; report the first broken link")
    balances = command("balances", "print balances per account and asset")
    balances.add_argument("--account")
    balances.add_argument("--at-seq", type=int)
    statement = command("statement", "print an account's entries with running balances")
    statement.add_argument("account")
    statement.add_argument("--asset")
    statement.add_argument("--after-seq", type=int, default=0)
    statement.add_argument("--limit", type=int, default=10_000)
    statement.add_argument("--csv", action="store_true", help="CSV with a header line")
    bonds = command("bonds", "print the issues and their bonds, of one issuer or all")
    bonds.add_argument("--account", help="the issuer")
    bonds.add_argument("--at-seq", type=int)
    bonds.add_argument("--after-seq", type=int, default=0)
    bonds.add_argument("--limit", type=int, default=10_000)
    fees = command("fees", "print the fees earned, per instrument and in total")
    fees.add_argument("--at-seq", type=int)
    reconcile_parser = command("reconcile", "compare ledger balances with the engine state")
    add_log_flags(reconcile_parser)
    reconcile_parser.add_argument("--at-seq", type=int)
    reconcile_parser.add_argument("--snapshot-dir", type=Path,
                                  help="engine snapshots to start the replay from")
    return parser


async def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        applied = await apply_migrations(connection)
        if args.service_password:
            await set_service_password(connection, args.service_password)
    finally:
        await connection.close()
    for migration in applied:
        print(f"applied {migration.version:03d}_{migration.name}", file=out)
    if not applied:
        print("schema is up to date", file=out)
    return EXIT_OK


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    config = ProjectorConfig(
        batch_size_max=args.batch_size_max, batch_interval_ms=args.batch_interval_ms,
        writer_connections=args.writer_connections, database_role=args.database_role or None,
        topic_namespace=args.topic_namespace,
    )
    event_log = open_log_from(args)
    supervisor = ProjectorSupervisor(event_log, args.database_url, config)
    try:
        await run_until_signal(supervisor, supervisor.metrics.registry, args.metrics_port,
                               log)
    finally:
        await event_log.close()
    return EXIT_OK


async def _verify(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        report = await verify_chain(connection)
    finally:
        await connection.close()
    if report.broken is not None:
        print(f"BROKEN at entry seq {report.broken.seq}: {report.broken.reason} "
              f"({report.entries_checked} entries before it are sound)", file=out)
        return EXIT_FAILED
    print(f"ok: {report.entries_checked} entries, head seq {report.head_seq}, "
          f"head hash {report.head_hash}, {report.issues_checked} issues' bonds", file=out)
    return EXIT_OK


async def _balances(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        found = await reads.balances(connection, at_seq=args.at_seq, account=args.account)
    finally:
        await connection.close()
    for (account, asset), amount in sorted(found.items()):
        print(f"{account}\t{asset}\t{format_amount(asset, amount)}", file=out)
    return EXIT_OK


async def _statement(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        lines = await reads.statement(connection, args.account, asset=args.asset,
                                      after_seq=args.after_seq, limit=args.limit)
    finally:
        await connection.close()
    header = ("seq", "ts", "kind", "asset", "amount", "balance")
    rows = [
        (str(line.seq), str(line.ts), line.kind, line.asset,
         format_amount(line.asset, line.amount), format_amount(line.asset, line.balance))
        for line in lines
    ]
    if args.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    else:
        for row in [header, *rows]:
            print("\t".join(row), file=out)
    return EXIT_OK


async def _bonds(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        found = await reads.bonds(connection, issuer=args.account, at_seq=args.at_seq,
                                  after_seq=args.after_seq, limit=args.limit)
    finally:
        await connection.close()
    header = ("seq", "issue_id", "issuer", "instrument", "node_id", "quantity", "bond",
              "bonded_quantity", "account", "balance")
    print("\t".join(header), file=out)
    for bond in found:
        print("\t".join((
            str(bond.seq), bond.issue_id, bond.issuer, bond.instrument, bond.node_id,
            str(bond.quantity), format_micro(bond.bond), str(bond.bonded_quantity),
            bond.account, format_micro(bond.balance),
        )), file=out)
    return EXIT_OK


async def _fees(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        earned = await reads.fees_earned(connection, at_seq=args.at_seq)
    finally:
        await connection.close()
    for instrument, fees in earned.by_instrument_micro.items():
        print(f"{instrument}\t{format_micro(fees)}", file=out)
    print(f"total\t{format_micro(earned.total_micro)}", file=out)
    return EXIT_OK


async def _reconcile(args: argparse.Namespace, out: TextIO) -> int:
    from matching_engine.snapshots import SnapshotStore

    snapshots = SnapshotStore(args.snapshot_dir) if args.snapshot_dir is not None else None
    event_log = open_log_from(args)
    try:
        connection = await connect(args.database_url)
        try:
            report = await reconcile(connection, event_log, at_seq=args.at_seq,
                                     commands_topic=args.topic_namespace + COMMANDS_TOPIC,
                                     snapshots=snapshots)
        finally:
            await connection.close()
    finally:
        await event_log.close()
    for difference in report.differences:
        asset = difference.asset
        print(f"DIFF {difference.account}\t{asset}\tledger "
              f"{format_amount(asset, difference.ledger)}\tengine "
              f"{format_amount(asset, difference.engine)}", file=out)
    for left in report.unredeemed:
        print(f"UNREDEEMED {left.account}\t{left.asset}\tledger {left.ledger}\tengine "
              f"{left.engine}", file=out)
    print(f"seq {report.seq}: {report.balances_compared} balances compared, "
          f"{len(report.differences)} differences, {len(report.unredeemed)} unredeemed",
          file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Awaitable[int]]] = {
    "migrate": _migrate,
    "run": _run,
    "verify": _verify,
    "balances": _balances,
    "statement": _statement,
    "bonds": _bonds,
    "fees": _fees,
    "reconcile": _reconcile,
}


def main(argv: list[str]) -> int:
    """Run one `gpux ledger` subcommand; return the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.database_url:
        print("gpux ledger: --database-url URL (or $DATABASE_URL) is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run_loop(_COMMANDS[args.command](args, sys.stdout))
    except LogFlagsError as error:
        print(f"gpux ledger {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerError as error:
        print(f"gpux ledger {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED


def _run_loop(coroutine: Awaitable[int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]
