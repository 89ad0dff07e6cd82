"""`gpux settlement COMMAND`: build, deploy, register accounts, watch deposits, settle, prove.

  build                      compile the contracts (solc-js) into settlement/build/
  deploy                     deploy MockUSDC, GpuHourToken, Vault and IndexOracle; write the
                             deployment file
  register-account A ADDR    settle exchange account A to wallet ADDR (e.g. the `fees` account)
  deposits                   turn confirmed Vault deposits into `deposit` commands on Kafka
  run                        batch unsettled trades, delivery moves and delivery reports and
                             settle them on chain, pay withdrawals out (and watch deposits
                             too with --kafka)
  prove TRADE_ID             print a fill's batch, transaction and Merkle proof, verified on chain
  prove --move SEQ ACCOUNT ASSET
                             the same for the ledger's delivery posting (a bond, a
                             compensation, a release, tokens issued or redeemed), e.g.
                             `prove --move 42 @bond:issue-7 USDC`
  prove --evidence ISSUE HOLDER
                             the same for a delivery report: the evidence leaf (seq,
                             delivered_ppm, the evidence root) the ledger recorded for the
                             assignment, e.g. `prove --evidence op-1.h7.n-17 alice`
  index-status GPU REGION [--minute TIME]
                             the price index of a class as the IndexOracle holds it (its
                             latest minute, or TIME: ISO 8601 in UTC, or ns since the epoch),
                             beside the database's value when there is a database; exits 1
                             when they differ, e.g. `index-status H100-SXM-80GB eu-west`

Endpoints default to $ETH_RPC_URL, $DATABASE_URL, $KAFKA_BOOTSTRAP; the deployment file to
$GPUX_DEPLOYMENT or var/settlement/deployment.json; keys to $GPUX_DEPLOYER_KEY and
$GPUX_SETTLER_KEY, which default to anvil's dev account 0 on chain 31337 only.

`run` and `deposits` keep running through a restart of PostgreSQL: each loop replaces a
connection the database dropped (bounded backoff) and goes on from what the store holds.
With `--metrics-port PORT` they serve Prometheus metrics (`settlement.metrics`) on
http://127.0.0.1:PORT/metrics and `/healthz` (200 while every loop runs on an open database
connection, else 503); 0 picks a free port (logged), -1 (the default) serves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import msgspec
from eth_account import Account
from eth_account.signers.local import LocalAccount

from index import store as index_store
from index.value import MINUTE_NS, IndexValue
from runtime.observability import MetricsServer
from runtime.postgres import ConnectionOpener, close_quietly, connect
from settlement import store
from settlement.accounts import is_wallet_address
from settlement.artifacts import ARTIFACT_PATH, build
from settlement.chain import Chain, Contracts, Deployment, deploy, dev_account
from settlement.deposits import DepositWatcher, WatcherConfig
from settlement.errors import SettlementError
from settlement.index_chain import (
    OnChainIndexValue,
    differences,
    index_key,
    read_latest,
    read_value,
)
from settlement.metrics import SettlementMetrics
from settlement.proofs import (
    EvidenceProof,
    FillProof,
    MoveProof,
    prove,
    prove_evidence,
    prove_move,
)
from settlement.submitter import Submitter, SubmitterConfig

log = logging.getLogger("gpux.settlement")
DEFAULT_DEPLOYMENT = Path("var/settlement/deployment.json")
DEV_CHAIN_ID = 31337
APPLICATION_NAME = "gpux-settlement"  # how pg_stat_activity names our connections
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def main(argv: list[str]) -> int:
    """Run one subcommand; return the exit code."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    arguments = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = arguments.handler
    try:
        return handler(arguments)
    except SettlementError as error:
        print(f"gpux settlement: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux settlement", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("build", help="compile the contracts")
    command.set_defaults(handler=_build)

    command = commands.add_parser("deploy", help="deploy the contracts")
    _chain_options(command)
    command.add_argument("--settler", help="address given the SETTLER role (default: deployer)")
    command.add_argument("--minter", help="address given the MINTER role (default: deployer)")
    command.add_argument("--usdc", help="an existing USDC token (default: deploy MockUSDC)")
    command.set_defaults(handler=_deploy)

    command = commands.add_parser("register-account", help="set an account's wallet address")
    command.add_argument("account")
    command.add_argument("address")
    _database_option(command)
    command.set_defaults(handler=_register_account)

    command = commands.add_parser("deposits", help="watch Vault deposits")
    _chain_options(command)
    _database_option(command)
    _deposit_options(command, required=True)
    command.set_defaults(handler=_deposits)

    command = commands.add_parser("run", help="settle trades in batches")
    _chain_options(command)
    _database_option(command)
    _deposit_options(command, required=False)
    defaults = SubmitterConfig()
    command.add_argument("--batch-size-max", type=int, default=defaults.batch_size_max)
    command.add_argument("--batch-interval-ms", type=int, default=defaults.batch_interval_ms)
    command.add_argument("--poll-interval-ms", type=int, default=defaults.poll_interval_ms)
    command.add_argument("--stuck-after-ms", type=int, default=defaults.stuck_after_ms)
    command.add_argument("--fee-bump-percent", type=int, default=defaults.fee_bump_percent)
    command.add_argument("--index-values-max", type=int, default=defaults.index_values_max,
                         help="price index values per IndexOracle transaction")
    command.add_argument("--no-payouts", action="store_true",
                         help="settle trades only; leave ledger.withdrawals unpaid")
    command.set_defaults(handler=_run)

    command = commands.add_parser("prove",
                                  help="prove one fill, delivery move or report on chain")
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("trade_id", nargs="?", help="the trade id of a fill")
    which.add_argument("--move", nargs=3, metavar=("SEQ", "ACCOUNT", "ASSET"),
                       help="a delivery posting: its seq, ledger account and asset")
    which.add_argument("--evidence", nargs=2, metavar=("ISSUE", "HOLDER"),
                       help="a delivery report: its issue id and holder")
    _chain_options(command)
    _database_option(command)
    command.set_defaults(handler=_prove)

    command = commands.add_parser("index-status", help="read the price index on chain")
    command.add_argument("gpu")
    command.add_argument("region")
    command.add_argument("--minute", type=_minute_ns,
                         help="a minute boundary: ISO 8601 in UTC or ns (default: the latest)")
    _chain_options(command)
    _database_option(command)
    command.set_defaults(handler=_index_status)
    return parser


def _chain_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--rpc", default=os.environ.get("ETH_RPC_URL"),
                         help="JSON-RPC URL of the node (default: $ETH_RPC_URL)")
    command.add_argument("--deployment", type=Path,
                         default=Path(os.environ.get("GPUX_DEPLOYMENT", DEFAULT_DEPLOYMENT)),
                         help="deployment file (default: $GPUX_DEPLOYMENT or "
                              f"{DEFAULT_DEPLOYMENT})")
    command.add_argument("--confirmations", type=int, default=12,
                         help="blocks deep a deposit or a batch must be (default: 12)")


def _database_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                         help="PostgreSQL URL (default: $DATABASE_URL)")


def _deposit_options(command: argparse.ArgumentParser, *, required: bool) -> None:
    command.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP") if required else None,
                         help="bootstrap servers for deposit commands"
                              + (" (default: $KAFKA_BOOTSTRAP)" if required else ""))
    command.add_argument("--topic-namespace", default="", help="prefix of the commands topic")
    command.add_argument("--metrics-port", type=int, default=-1,
                         help="serve /metrics and /healthz here (0: any free port, -1: off)")


def _require(value: str | None, what: str) -> str:
    if not value:
        raise SettlementError(f"{what} is required")
    return value


def _key(variable: str, chain: Chain) -> LocalAccount:
    """Return the account of $variable, or anvil's dev account 0 on a dev chain."""
    key = os.environ.get(variable, "").strip()
    if key:
        account: LocalAccount = Account.from_key(key)
        return account
    if chain.chain_id() != DEV_CHAIN_ID:
        raise SettlementError(f"${variable} is required off the dev chain {DEV_CHAIN_ID}")
    return dev_account(0)


def _contracts(arguments: argparse.Namespace) -> Contracts:
    chain = Chain(_require(arguments.rpc, "--rpc (or $ETH_RPC_URL)"))
    contracts = Contracts(chain, Deployment.load(arguments.deployment))
    contracts.check()
    return contracts


def _build(arguments: argparse.Namespace) -> int:
    artifacts = build(ARTIFACT_PATH)
    print(f"{ARTIFACT_PATH}: {', '.join(artifacts.contracts)} (solc {artifacts.solc_version})")
    return 0


def _deploy(arguments: argparse.Namespace) -> int:
    chain = Chain(_require(arguments.rpc, "--rpc (or $ETH_RPC_URL)"))
    deployer = _key("GPUX_DEPLOYER_KEY", chain)
    deployment = deploy(chain, deployer, settler=arguments.settler or deployer.address,
                        minter=arguments.minter or deployer.address, usdc=arguments.usdc)
    deployment.save(arguments.deployment)
    print(json.dumps(msgspec.to_builtins(deployment), indent=2))
    print(f"written to {arguments.deployment}", file=sys.stderr)
    return 0


def _register_account(arguments: argparse.Namespace) -> int:
    if not is_wallet_address(arguments.address):
        raise SettlementError(f"{arguments.address!r} is not a wallet address (0x + 40 hex)")

    async def register(conn: asyncpg.Connection) -> int:
        await store.register_account(conn, arguments.account, arguments.address)
        print(f"{arguments.account} settles to {arguments.address}")
        return 0

    return _with_database(arguments, register)


def _opener(arguments: argparse.Namespace) -> ConnectionOpener:
    """Return how to open a connection to the database, now and after it dropped one."""
    url = _require(arguments.database_url, "--database-url (or $DATABASE_URL)")
    return partial(connect, url, application_name=APPLICATION_NAME)


def _with_database(arguments: argparse.Namespace,
                   body: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    open_connection = _opener(arguments)

    async def run() -> int:
        conn = await open_connection()
        try:
            await store.migrate(conn)
            return await body(conn)
        finally:
            await close_quietly(conn)

    return asyncio.run(run())


def _deposits(arguments: argparse.Namespace) -> int:
    _require(arguments.kafka, "--kafka (or $KAFKA_BOOTSTRAP)")
    contracts = _contracts(arguments)

    async def watch(conn: asyncpg.Connection) -> int:
        await _serve(arguments, contracts, None, SettlementMetrics())
        return 0

    return _with_database(arguments, watch)


def _run(arguments: argparse.Namespace) -> int:
    contracts = _contracts(arguments)
    config = SubmitterConfig(
        confirmations=arguments.confirmations, batch_size_max=arguments.batch_size_max,
        batch_interval_ms=arguments.batch_interval_ms,
        poll_interval_ms=arguments.poll_interval_ms, stuck_after_ms=arguments.stuck_after_ms,
        fee_bump_percent=arguments.fee_bump_percent, pay_withdrawals=not arguments.no_payouts,
        index_values_max=arguments.index_values_max,
    )  # fmt: skip
    signer = _key("GPUX_SETTLER_KEY", contracts.chain)

    async def run(conn: asyncpg.Connection) -> int:
        metrics = SettlementMetrics()
        submitter = Submitter(contracts, conn, signer, config, reopen=_opener(arguments),
                              metrics=metrics)
        try:
            await _serve(arguments, contracts, submitter, metrics)
        finally:
            await close_quietly(submitter.conn)  # a new one if it replaced a dropped one
        return 0

    return _with_database(arguments, run)


async def _serve(arguments: argparse.Namespace, contracts: Contracts,
                 submitter: Submitter | None, metrics: SettlementMetrics) -> None:
    """Run the submitter and/or the deposit watcher until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks: list[asyncio.Task[None]] = []
    loops: list[Submitter | DepositWatcher] = []
    event_log = None
    watcher = None
    metrics_server = None
    if submitter is not None:
        tasks.append(asyncio.create_task(submitter.run(stop)))
        loops.append(submitter)
    if arguments.kafka:
        from eventlog.kafka import KafkaConfig, KafkaLog

        event_log = KafkaLog(KafkaConfig(bootstrap_servers=arguments.kafka))
        producer = event_log.producer()
        await producer.start()
        # the watcher needs its own connection: asyncpg runs one query at a time per connection
        open_connection = _opener(arguments)
        config = WatcherConfig(confirmations=arguments.confirmations,
                               topic_namespace=arguments.topic_namespace)
        watcher = DepositWatcher(contracts, await open_connection(), producer, config,
                                 reopen=open_connection, metrics=metrics)
        tasks.append(asyncio.create_task(watcher.run(stop)))
        loops.append(watcher)

    def healthy() -> bool:
        return all(not task.done() for task in tasks) and all(each.healthy() for each in loops)

    try:
        if arguments.metrics_port >= 0:
            metrics_server = MetricsServer(metrics.registry, healthy, port=arguments.metrics_port)
            await metrics_server.start()
            log.info("metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        stop.set()
        if metrics_server is not None:
            await metrics_server.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        if event_log is not None:
            await producer.stop()
            if watcher is not None:
                await close_quietly(watcher.conn)  # a new one if it replaced a dropped one
            await event_log.close()


def _seq(text: str) -> int:
    if not text.isdigit():
        raise SettlementError(f"SEQ must be a positive integer, got {text!r}")
    return int(text)


def _prove(arguments: argparse.Namespace) -> int:
    contracts = _contracts(arguments)

    async def run(conn: asyncpg.Connection) -> int:
        proof: FillProof | MoveProof | EvidenceProof
        if arguments.evidence is not None:
            issue_id, holder = arguments.evidence
            what = f"the delivery report of {issue_id} for {holder}"
            proof = await prove_evidence(conn, contracts, issue_id, holder)
        elif arguments.move is None:
            what = f"trade {arguments.trade_id}"
            proof = await prove(conn, contracts, arguments.trade_id)
        else:
            seq, account, asset = arguments.move
            what = f"the posting of seq {seq} to {account} in {asset}"
            proof = await prove_move(conn, contracts, _seq(seq), account, asset)
        print(json.dumps(msgspec.to_builtins(proof), indent=2))
        if not proof.verified:
            print(f"{what}: the proof does NOT verify against the root on chain",
                  file=sys.stderr)
            return 1
        return 0

    return _with_database(arguments, run)


def _minute_ns(text: str) -> int:
    """Parse --minute: ns since the epoch, or an ISO 8601 time (UTC unless it says)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither ns nor an ISO 8601 time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def _index_status(arguments: argparse.Namespace) -> int:
    contracts = _contracts(arguments)
    gpu, region = arguments.gpu, arguments.region
    try:
        if arguments.minute is None:
            on_chain = read_latest(contracts, gpu, region)
        else:
            on_chain = read_value(contracts, gpu, region, arguments.minute)
    except ValueError as error:
        raise SettlementError(f"--minute: {error}") from error
    minute_ns = on_chain.minute_ns if on_chain is not None else arguments.minute
    status: dict[str, object] = {
        "gpu": gpu, "region": region, "key": "0x" + index_key(gpu, region).hex(),
        "minute_ns": minute_ns, "on_chain": _index_json(on_chain),
    }  # fmt: skip
    if not arguments.database_url or minute_ns is None:
        print(json.dumps(status, indent=2))
        return 0

    async def compare(conn: asyncpg.Connection) -> int:
        rows = await index_store.values(conn, gpu, region, minute_ns, minute_ns + MINUTE_NS, 1)
        stored = rows[0] if rows else None
        status["in_database"] = _index_json(stored)
        differing = (differences(stored, on_chain)
                     if stored is not None and on_chain is not None else [])
        status["differences"] = differing
        print(json.dumps(status, indent=2))
        if differing:
            print(f"{gpu} {region} at {minute_ns}: the chain and the database differ in "
                  f"{', '.join(differing)}", file=sys.stderr)
            return 1
        return 0

    return _with_database(arguments, compare)


def _index_json(value: IndexValue | OnChainIndexValue | None) -> dict[str, object] | None:
    if value is None:
        return None
    return {"value_micro": value.value_micro, "source": value.source,
            "sufficient": value.sufficient, "inputs_hash": "0x" + value.inputs_hash.hex()}
