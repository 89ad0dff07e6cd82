"""`gpux delivery COMMAND`: run the delivery service; verify a measured hour.

    gpux delivery migrate --database-url URL
    gpux delivery run     --kafka HOST:PORT --database-url URL --keys-dir DIR
                          [--gateway-url WS_URL --key KEY_ID:PRIVATE_KEY]
                          [--minute-ms MS] [--challenges-per-hour N]
                          [--floors demo|FILE.json] [--topic-namespace NS]
                          [--metrics-port PORT]
    gpux delivery verify  ISSUE HOLDER --database-url URL
                          (--events FILE.jsonl | --kafka HOST:PORT [--topic-namespace NS])
                          [--rpc URL --deployment FILE]
    gpux delivery access  HOLDER [--issue ID] [--identity ~/.ssh/id_ed25519]
                          [--url WS_URL] [--key KEY_ID:PRIVATE_KEY]

`run` follows the events topic (read committed), issues holder certificates for each
assignment's window, probes each assignment's node once a `--minute-ms` (60000: a real
minute; less compresses the probe schedule, never the certificates), writes signed,
hash-chained samples, and at the window's end sends `delivery_report` through the gateway
with a `delivery`-role key (`gpux gateway add-key --account gpux.delivery --role delivery`;
$GPUX_URL and $GPUX_KEY are the defaults). Its private keys live in `--keys-dir` (default
var/delivery/keys); their public halves are published in the database at every start.

`verify` recomputes an assignment's `delivered_ppm` and evidence root from the stored
samples, checks their chain and signatures against the published signers, and compares
them with the service's report and with the `delivery_settled` event of the log; with
`--rpc` also with the evidence leaf settlement put on chain. It prints what it checked and
every problem, and exits 0 only when everything agrees.

`access` asks the gateway (`delivery_access`, with the holder's own API key, as `gpux trade`)
for the holder's assignments, writes the certificates of `--identity`'s key and the nodes'
known_hosts files next to it, and prints the `ssh` line of each assignment.

`--database-url` defaults to $DATABASE_URL, `--kafka` to $KAFKA_BOOTSTRAP.
Exit codes: 0 success, 1 a problem or a failure, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

import msgspec

from delivery import store
from delivery.classes import DEFAULT_FLOORS, ClassFloor, demo_floors, load_floors
from delivery.config import MINUTE_MS_PRODUCTION, ServiceConfig
from delivery.errors import DeliveryError
from delivery.service import DeliverySupervisor
from delivery.verify import VerifyResult, verify_assignment
from eventlog.errors import LogError
from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from eventlog.port import EVENTS_TOPIC, EventLog
from eventlog.reading import for_each_batch_until, settled_end_offset
from protocol.events import DeliverySettled
from runtime.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    migrate_schema,
    run_command,
    run_until_signal,
)
from runtime.postgres import connect

__all__ = ["main"]

log = logging.getLogger("gpux.delivery")

_SETTLED = b'"delivery_settled"'
_settled_decoder = msgspec.json.Decoder(DeliverySettled)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux delivery", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade the delivery schema")
    migrate.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    run = commands.add_parser("run", help="certify, probe, report delivered hours")
    add_log_flags(run)
    run.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    run.add_argument("--keys-dir", type=Path, default=Path("var/delivery/keys"))
    run.add_argument("--gateway-url", default=os.environ.get("GPUX_URL"))
    run.add_argument("--key", default=os.environ.get("GPUX_KEY"), metavar="KEY_ID:PRIVATE_KEY",
                     help="the delivery-role API key reports are sent with")
    run.add_argument("--minute-ms", type=int, default=MINUTE_MS_PRODUCTION)
    run.add_argument("--challenges-per-hour", type=int,
                     default=ServiceConfig.challenges_per_hour)
    run.add_argument("--floors", default="default",
                     help="class floors: default, demo (numpy-on-CPU nodes) or a JSON file")
    run.add_argument("--metrics-port", type=int, default=-1,
                     help="serve /metrics and /healthz here (0: any free port, -1: off)")
    verify = commands.add_parser("verify", help="recompute an assignment's report; compare")
    add_log_flags(verify)
    verify.add_argument("issue_id", metavar="ISSUE")
    verify.add_argument("holder", metavar="HOLDER")
    verify.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    verify.add_argument("--events", type=Path, help="a JSON Lines file of the whole event log")
    verify.add_argument("--rpc", help="also check the evidence leaf on this chain node")
    verify.add_argument("--deployment", type=Path,
                        default=Path(os.environ.get("GPUX_DEPLOYMENT",
                                                    "var/settlement/deployment.json")))
    verify.add_argument("--settlement-database-url",
                        help="where settlement's leaves are (default: --database-url)")
    access = commands.add_parser("access", help="certificates and ssh lines of a holder")
    access.add_argument("holder", metavar="HOLDER")
    access.add_argument("--issue", help="only this issue id's assignment")
    access.add_argument("--identity", type=Path, default=Path("~/.ssh/id_ed25519"))
    access.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    access.add_argument("--key", default=os.environ.get("GPUX_KEY"),
                        metavar="KEY_ID:PRIVATE_KEY", help="the holder's API key")
    return parser


def _floors(choice: str) -> dict[str, ClassFloor]:
    if choice == "default":
        return dict(DEFAULT_FLOORS)
    if choice == "demo":
        return demo_floors()
    return load_floors(Path(choice))


def _api_key(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    key_id, _, private_key = text.partition(":")
    if not key_id or not private_key:
        raise ValueError("--key takes KEY_ID:PRIVATE_KEY")
    return key_id, private_key


async def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    return await migrate_schema(args.database_url, "delivery", store.migrate, out)


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    api_key = _api_key(args.key)
    config = ServiceConfig(
        keys_dir=args.keys_dir, minute_ms=args.minute_ms,
        challenges_per_hour=args.challenges_per_hour, floors=_floors(args.floors),
        topic_namespace=args.topic_namespace,
        gateway_url=args.gateway_url if api_key is not None else None, api_key=api_key)
    if api_key is None:
        log.warning("no --key: reports are measured and stored but not sent")
    event_log = open_log_from(args)
    supervisor = DeliverySupervisor(event_log, args.database_url, config)
    try:
        await run_until_signal(supervisor, supervisor.metrics.registry, args.metrics_port, log)
    finally:
        await event_log.close()
    return EXIT_OK


def settled_in_file(path: Path, issue_id: str, holder: str) -> DeliverySettled | None:
    """The assignment's `delivery_settled` in a JSON Lines file of the event log."""
    with path.open("rb") as lines:
        for line in lines:
            settled = _settled_of(line.strip(), issue_id, holder)
            if settled is not None:
                return settled
    return None


async def settled_in_log(event_log: EventLog, topic: str, issue_id: str, holder: str
                         ) -> DeliverySettled | None:
    """The assignment's `delivery_settled` in the topic, read up to what is committed now."""
    end_offset = await settled_end_offset(event_log, topic)
    consumer = event_log.consumer(topic, isolation="read_committed", start="earliest")
    found: list[DeliverySettled] = []

    def apply(records: Any) -> None:
        for record in records:
            settled = _settled_of(record.value, issue_id, holder)
            if settled is not None:
                found.append(settled)

    await consumer.start()
    try:
        await for_each_batch_until(consumer, end_offset, apply)
    finally:
        await consumer.stop()
    return found[0] if found else None


def _settled_of(value: bytes, issue_id: str, holder: str) -> DeliverySettled | None:
    if _SETTLED not in value:
        return None
    settled = _settled_decoder.decode(value)
    return settled if (settled.issue_id, settled.holder) == (issue_id, holder) else None


async def _verify(args: argparse.Namespace, out: TextIO) -> int:
    connection = await connect(args.database_url)
    try:
        assignment = await store.assignment(connection, args.issue_id, args.holder)
        if assignment is None:
            print(f"no assignment {args.issue_id}/{args.holder} in the database", file=out)
            return EXIT_FAILED
        samples = await store.samples(connection, args.issue_id, args.holder)
        keys = await store.signer_keys(connection)
        report = await store.report(connection, args.issue_id, args.holder)
    finally:
        await connection.close()
    if args.events is not None:
        settled = settled_in_file(args.events, args.issue_id, args.holder)
    else:
        event_log = open_log_from(args)
        try:
            settled = await settled_in_log(event_log, args.topic_namespace + EVENTS_TOPIC,
                                           args.issue_id, args.holder)
        finally:
            await event_log.close()
    result = verify_assignment(assignment, samples, keys, settled, report)
    problems = list(result.problems)
    checked = list(result.checked)
    if args.rpc is not None:
        problems += await _on_chain(args, result)
        checked.append("the evidence leaf settlement committed on chain")
    for line in checked:
        print(f"checked: {line}", file=out)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=out)
    verdict = "agrees" if not problems else f"{len(problems)} problems"
    print(f"{args.issue_id}/{args.holder}: delivered_ppm {result.delivered_ppm}, evidence "
          f"{result.evidence_root_hex}: {verdict}", file=out)
    return EXIT_OK if not problems else EXIT_FAILED


async def _on_chain(args: argparse.Namespace, result: VerifyResult) -> list[str]:
    """The settlement helper's check of the evidence leaf (imported here only: the rest of
    `gpux delivery` needs no chain)."""
    from settlement.evidence import check_on_chain

    database_url = args.settlement_database_url or args.database_url
    return await check_on_chain(args.rpc, args.deployment, database_url, args.issue_id,
                                args.holder, result.delivered_ppm, result.evidence_root_hex)


async def _access(args: argparse.Namespace, out: TextIO) -> int:
    """The holder's access through the SDK (sdk.access writes the files)."""
    from sdk.access import write_access
    from sdk.client import ApiKey, Client

    api_key = _api_key(args.key)
    if api_key is None:
        raise ValueError("--key KEY_ID:PRIVATE_KEY (or $GPUX_KEY) of the holder is required")
    async with Client(args.url, credentials=ApiKey(*api_key)) as client:
        account = client.login.account if client.login is not None else None
        if account != args.holder:
            raise ValueError(f"the key logs in as {account!r}, not as the holder "
                             f"{args.holder!r}: a holder's access needs the holder's own key")
        items = await client.delivery_access(args.issue)
    if not items:
        print(f"{args.holder}: no assignments", file=out)
        return EXIT_OK
    for line in write_access(items, args.identity.expanduser()):
        print(f"# {line.issue_id} node {line.node_id}", file=out)
        print(line.ssh_command or f"# {line.waiting_for}", file=out)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]] = {
    "migrate": _migrate,
    "run": _run,
    "verify": _verify,
    "access": _access,
}


def main(argv: list[str]) -> int:
    """Run one `gpux delivery` subcommand; return the process exit code."""
    args = _parser().parse_args(argv)
    if args.command != "access" and not args.database_url:
        print(f"gpux delivery {args.command}: --database-url URL (or $DATABASE_URL) is "
              "required", file=sys.stderr)
        return EXIT_USAGE
    return run_command(f"gpux delivery {args.command}",
                       _COMMANDS[args.command](args, sys.stdout),
                       usage_errors=(LogFlagsError, ValueError),
                       failure_errors=(DeliveryError, LogError, OSError))
