"""`gpux index COMMAND`: publish the GPU-hour price index; recompute and verify it.

    gpux index migrate --database-url URL
    gpux index run     --kafka HOST:PORT --database-url URL [--topic-namespace NS]
                       [--metrics-port PORT] [--calculator python|native]
    gpux index verify  (--events FILE.jsonl | --kafka HOST:PORT [--topic-namespace NS])
                       [--gpu G] [--region R] [--minute TIME] [--database-url URL]
                       [--rpc URL --deployment FILE] [--calculator python|native]

`run` recomputes the index from the start of the events topic at every start, then follows
it, upserting one row per GPU class, region and minute (docs/index-methodology.md). With
`--metrics-port PORT` it serves Prometheus metrics (`index.metrics`) on
http://127.0.0.1:PORT/metrics and `/healthz`; 0 picks a free port (logged), -1 (the default)
serves nothing.

`verify` recomputes the values from the public events, a JSON Lines file of the whole log
or the topic itself, keeping those of a class, a region or a minute (TIME: ISO 8601, UTC
unless it says otherwise, e.g. 2026-12-05T12:34, or ns since the epoch). Without
`--database-url` it prints them; with it, it compares them with the stored rows; with `--rpc`
(and the settlement deployment file), with the values the IndexOracle holds on chain (a
minute not published yet is counted, not a difference). It prints each difference and exits
1 if there is any.

Both compute with the native calculator when it is built (`make native`), else the Python
one, its reference; `--calculator` chooses (the values are the same).

`--database-url` of migrate and run defaults to $DATABASE_URL, `--kafka` to $KAFKA_BOOTSTRAP.
Exit codes: 0 success, 1 a difference or a failure, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from eventlog.errors import LogError
from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from eventlog.port import EVENTS_TOPIC
from index import store
from index.calculator import CALCULATORS, default_calculator
from index.errors import PriceIndexError
from index.service import IndexServiceConfig, IndexSupervisor
from index.value import MINUTE_NS, IndexValue
from index.verify import (
    ChainComparison,
    Difference,
    Selection,
    compare,
    compare_chain,
    recompute_file,
    recompute_log,
)
from protocol import format_micro
from runtime.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    migrate_schema,
    run_command,
    run_until_signal,
)
from runtime.postgres import connect

__all__ = ["format_minute", "main", "parse_minute"]

log = logging.getLogger("gpux.index")

VALUE_COLUMNS = ("minute", "gpu", "region", "value", "source", "trade_count", "volume",
                 "instrument_count", "sufficient", "inputs_hash", "last_seq")


def parse_minute(text: str) -> int:
    """Return a minute boundary in ns from ISO 8601 (UTC when no offset is given) or ns."""
    if text.isdigit():
        minute_ns = int(text)
    else:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        minute_ns = int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
    if minute_ns % MINUTE_NS:
        raise ValueError(f"{text} is not on a minute boundary")
    return minute_ns


def format_minute(minute_ns: int) -> str:
    return datetime.fromtimestamp(minute_ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def value_line(value: IndexValue) -> str:
    """One value as a tab-separated line of VALUE_COLUMNS."""
    price = "" if value.value_micro is None else format_micro(value.value_micro)
    return "\t".join((
        format_minute(value.minute_ns), value.gpu, value.region, price, value.source,
        str(value.trade_count), str(value.volume), str(value.instrument_count),
        str(value.sufficient).lower(), value.inputs_hash.hex(), str(value.last_seq),
    ))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux index", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade the index schema")
    migrate.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    run = commands.add_parser("run", help="recompute the index from the log, then follow it")
    add_log_flags(run)
    run.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    run.add_argument("--batch-size-max", type=int, default=IndexServiceConfig.batch_size_max)
    run.add_argument("--metrics-port", type=int, default=-1,
                     help="serve /metrics and /healthz here (0: any free port, -1: off)")
    _add_calculator_flag(run)
    verify = commands.add_parser("verify", help="recompute values from the events; compare")
    add_log_flags(verify)
    verify.add_argument("--events", type=Path, help="a JSON Lines file of the whole event log")
    verify.add_argument("--gpu")
    verify.add_argument("--region")
    verify.add_argument("--minute", help="ISO 8601 (UTC by default) or ns since the epoch")
    verify.add_argument("--database-url", help="compare with this database's rows")
    verify.add_argument("--rpc", help="compare with the IndexOracle on this chain node")
    verify.add_argument("--deployment", type=Path,
                        default=Path(os.environ.get("GPUX_DEPLOYMENT",
                                                    "var/settlement/deployment.json")),
                        help="the settlement deployment file naming the IndexOracle "
                             "(default: $GPUX_DEPLOYMENT or var/settlement/deployment.json)")
    _add_calculator_flag(verify)
    return parser


def _add_calculator_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calculator", choices=CALCULATORS, default=default_calculator(),
                        help="which calculator recomputes the index (default: native when "
                             "built, else python)")


async def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    return await migrate_schema(args.database_url, "index", store.migrate, out)


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    config = IndexServiceConfig(batch_size_max=args.batch_size_max,
                                topic_namespace=args.topic_namespace,
                                calculator=args.calculator)
    event_log = open_log_from(args)
    supervisor = IndexSupervisor(event_log, args.database_url, config)
    try:
        await run_until_signal(supervisor, supervisor.metrics.registry, args.metrics_port,
                               log)
    finally:
        await event_log.close()
    return EXIT_OK


async def _verify(args: argparse.Namespace, out: TextIO) -> int:
    selection = Selection(gpu=args.gpu, region=args.region,
                          minute_ns=None if args.minute is None else parse_minute(args.minute))
    if args.events is not None:
        recomputed = recompute_file(args.events, selection, args.calculator)
    else:
        event_log = open_log_from(args)
        try:
            recomputed = await recompute_log(event_log, args.topic_namespace + EVENTS_TOPIC,
                                             selection, args.calculator)
        finally:
            await event_log.close()
    if not recomputed:
        print("the events release no value of that selection", file=out)
        return EXIT_FAILED
    if args.database_url is None and args.rpc is None:
        print("\t".join(VALUE_COLUMNS), file=out)
        for value in recomputed:
            print(value_line(value), file=out)
        return EXIT_OK
    classes = len({(value.gpu, value.region) for value in recomputed})
    print(f"{len(recomputed)} values of {classes} classes recomputed", file=out)
    failed = False
    if args.database_url is not None:
        connection = await connect(args.database_url)
        try:
            differences = await compare(connection, recomputed)
        finally:
            await connection.close()
        _print_differences(differences, "stored", out)
        print(f"database: {len(differences)} differences", file=out)
        failed = bool(differences)
    if args.rpc is not None:
        chain = _compare_chain(args.rpc, args.deployment, recomputed)
        _print_differences(chain.differences, "on chain", out)
        print(f"chain: {chain.compared} values compared, {chain.unpublished} not published "
              f"yet, {len(chain.differences)} differences", file=out)
        failed = failed or bool(chain.differences)
    return EXIT_FAILED if failed else EXIT_OK


def _compare_chain(rpc_url: str, deployment: Path, recomputed: list[IndexValue]
                   ) -> ChainComparison:
    """Compare with the IndexOracle of the settlement deployment (settlement imported here
    only: the rest of `gpux index` needs no chain)."""
    from settlement.chain import Chain, Contracts, Deployment
    from settlement.index_chain import differences, read_value

    contracts = Contracts(Chain(rpc_url), Deployment.load(deployment))
    contracts.check()
    return compare_chain(recomputed, partial(read_value, contracts), differences)


def _print_differences(differences: list[Difference], where: str, out: TextIO) -> None:
    for difference in differences:
        print(f"DIFF {format_minute(difference.minute_ns)}\t{difference.gpu}\t"
              f"{difference.region}\t{difference.field}\trecomputed {difference.recomputed}\t"
              f"{where} {difference.stored}", file=out)


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "migrate": _migrate,
    "run": _run,
    "verify": _verify,
}


def main(argv: list[str]) -> int:
    """Run one `gpux index` subcommand; return the process exit code."""
    args = _parser().parse_args(argv)
    if args.command != "verify" and not args.database_url:
        print(f"gpux index {args.command}: --database-url URL (or $DATABASE_URL) is required",
              file=sys.stderr)
        return EXIT_USAGE
    return run_command(f"gpux index {args.command}",
                       _COMMANDS[args.command](args, sys.stdout),
                       usage_errors=(LogFlagsError, ValueError),
                       failure_errors=(PriceIndexError, LogError, OSError))
