"""`gpux gateway`: serve the websocket API, apply the key store's migrations, add API keys.

    gpux gateway serve --kafka HOST:PORT --database-url URL --port 8765 [--clock] [--reuse-port]
    gpux gateway --kafka ... --database-url ... --port ...      (serve is the default)
    gpux gateway migrate --database-url URL
    gpux gateway add-key --database-url URL --account A --role trader
    gpux gateway add-key --dev [DATA_DIR] --account A --role trader   (a running `gpux dev`)
    gpux gateway add-key --database-url URL --account gpux.delivery --role delivery
    gpux gateway set-role --database-url URL --account 0xAbC... --role market_maker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from eventlog.flags import LogFlagsError, add_log_flags, open_log_from
from gateway.config import ROLES, GatewayConfig

SUBCOMMANDS = ("serve", "migrate", "add-key", "set-role")
# A fetch is woken when data arrives; one of read_committed events (--events-isolation) is
# not woken when a transaction commits, only by data or the end of the wait: keep it short.
KAFKA_FETCH_MAX_WAIT_MS = 5
_DEFAULTS = GatewayConfig()
DEV_DATA_DIR = Path("var/dev")
# The limits `serve` takes as flags (--connections-per-ip-max ...), all announced in `hello`.
LIMIT_FLAGS = (
    "frame_bytes_max", "connections_max", "connections_per_ip_max", "anonymous_per_ip_max",
    "anonymous_grace_ms",
    "connections_per_account_max", "connections_per_key_max", "login_deadline_ms",
    "subscriptions_per_session_max", "pending_per_session_max", "instruments_page_max",
    "eip712_chain_id",
)


def _database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL URL (default: $DATABASE_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux gateway", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the websocket gateway")
    add_log_flags(serve)
    _database_url(serve)  # the key store's, and the index store's (the `index` feed)
    serve.add_argument("--delivery-database-url",
                       default=os.environ.get("GPUX_DELIVERY_DATABASE_URL"),
                       help="the delivery service's PostgreSQL (register_node, "
                            "register_ssh_key, delivery_access, the quality record; default: "
                            "$GPUX_DELIVERY_DATABASE_URL, else --database-url; '' for none)")
    serve.add_argument("--host", default=_DEFAULTS.host)
    serve.add_argument("--port", type=int, default=_DEFAULTS.port)
    serve.add_argument("--gateway-id", default=_DEFAULTS.gateway_id)
    serve.add_argument("--reuse-port", action="store_true",
                       help="bind with SO_REUSEPORT: start several gateway processes on one "
                            "port (each with its own --gateway-id, --clock on one only) and "
                            "the kernel spreads connections over them")
    serve.add_argument("--clock", action="store_true",
                       help="send a tick command every --clock-interval-ms (one gateway only)")
    serve.add_argument("--clock-interval-ms", type=int, default=1000)
    for name in LIMIT_FLAGS:
        serve.add_argument(f"--{name.replace('_', '-')}", type=int,
                           default=getattr(_DEFAULTS, name))
    serve.add_argument("--fetch-max-wait-ms", type=int, default=KAFKA_FETCH_MAX_WAIT_MS,
                       help="how long a Kafka fetch of events may wait for data")
    serve.add_argument("--events-isolation", choices=("read_uncommitted", "read_committed"),
                       default=_DEFAULTS.events_isolation,
                       help="read events before the engine commits them (replies do not wait "
                            "for the commit; docs/exactly-once.md) or only after")
    serve.add_argument("--metrics-port", type=int, default=-1,
                       help="serve /metrics and /healthz here (0: any free port; default off)")
    migrate = commands.add_parser("migrate", help="create or upgrade the gateway schema")
    _database_url(migrate)
    add_key = commands.add_parser("add-key", help="create an API key; prints it once")
    _database_url(add_key)
    add_key.add_argument(
        "--dev", nargs="?", const=DEV_DATA_DIR, type=Path, metavar="DATA_DIR",
        help=f"use the database of the `gpux dev` running on DATA_DIR (default {DEV_DATA_DIR})")
    add_key.add_argument("--account", required=True)
    add_key.add_argument("--role", required=True, choices=ROLES)
    set_role = commands.add_parser("set-role", help="set the role an account logs in with")
    _database_url(set_role)
    set_role.add_argument("--account", required=True)
    set_role.add_argument("--role", required=True, choices=ROLES)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*SUBCOMMANDS, "-h", "--help"):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if getattr(args, "dev", None) is not None:
        args.database_url = dev_database_url(args.dev)
        if args.database_url is None:
            print(f"gpux gateway: no running `gpux dev` on {args.dev} (start it with `make dev`)",
                  file=sys.stderr)
            return 2
    if not args.database_url and args.command != "serve":
        print("gpux gateway: --database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return asyncio.run(_migrate(args.database_url))
    if args.command == "add-key":
        return asyncio.run(_add_key(args.database_url, args.account, args.role))
    if args.command == "set-role":
        return asyncio.run(_set_role(args.database_url, args.account, args.role))
    return _serve(args)


async def _migrate(database_url: str) -> int:
    from gateway.store import migrate

    applied = await migrate(database_url)
    print(f"gateway schema: applied {applied or 'nothing (up to date)'}")
    return 0


async def _add_key(database_url: str, account: str, role: str) -> int:
    from gateway.store import PostgresKeyStore, migrate
    from wsapi.requests import DELIVERY_ROLE, RESERVED_PREFIX

    if account.startswith(RESERVED_PREFIX) and role != DELIVERY_ROLE:
        print(f"gpux gateway: accounts starting with {RESERVED_PREFIX!r} are reserved for the "
              f"venue's own services (the {DELIVERY_ROLE} role)", file=sys.stderr)
        return 2
    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    try:
        key_id, private_key = await store.add_key(account, role)
    finally:
        await store.close()
    print("New API key (the private key is shown once; the server keeps only the public key)")
    print(f"account:     {account}")
    print(f"role:        {role}")
    print(f"key_id:      {key_id}")
    print(f"private_key: {private_key}")
    print(f"login:       {key_id}:{private_key}   (the page's login, or `gpux trade --key`)")
    return 0


def dev_database_url(data_dir: Path) -> str | None:
    """Return the URL of the PostgreSQL a running `gpux dev` on `data_dir` embeds (its port
    changes at every start), from the state file its service keeps there; None when none."""
    try:
        state = json.loads((data_dir / "postgres" / "service.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = state.get("env", {}).get("DATABASE_URL") if isinstance(state, dict) else None
    return url if isinstance(url, str) else None


async def _set_role(database_url: str, account: str, role: str) -> int:
    from gateway.store import PostgresKeyStore, migrate

    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    try:
        await store.set_role(account, role)
    finally:
        await store.close()
    print(f"{account}: {role}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = GatewayConfig(
        host=args.host, port=args.port, reuse_port=args.reuse_port,
        topic_namespace=args.topic_namespace,
        gateway_id=args.gateway_id, events_isolation=args.events_isolation,
        clock_interval_ms=args.clock_interval_ms if args.clock else None,
        index_database_url=args.database_url or None,
        delivery_database_url=(args.database_url if args.delivery_database_url is None
                               else args.delivery_database_url) or None,
        **{name: getattr(args, name) for name in LIMIT_FLAGS},
    )
    try:
        import uvloop

        uvloop.run(_run(args, config))
    except ImportError:
        asyncio.run(_run(args, config))
    return 0


async def _run(args: argparse.Namespace, config: GatewayConfig) -> None:
    from gateway.metrics import GatewayMetrics
    from gateway.service import GatewayService
    from gateway.static import StaticSite
    from gateway.store import PostgresKeyStore, migrate
    from runtime.observability import MetricsServer

    logging.getLogger("websockets.server").setLevel(logging.WARNING)  # one line per connection
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    store = None
    if args.database_url:
        await migrate(args.database_url)
        store = await PostgresKeyStore.open(args.database_url)
    else:
        logging.getLogger("gpux.gateway").warning("no --database-url: logins are refused")
    try:
        event_log = open_log_from(args, client_id=f"gpux-{config.gateway_id}",
                                  fetch_max_wait_ms=args.fetch_max_wait_ms)
    except LogFlagsError as error:
        raise SystemExit(f"gpux gateway: {error}") from None
    metrics_server = None
    try:
        site = StaticSite.from_directory()
        metrics = GatewayMetrics()
        service = GatewayService(event_log, config, store, process_request=site.process_request,
                                 metrics=metrics, tune_gc=True)
        if args.metrics_port >= 0:
            metrics_server = MetricsServer(metrics.registry, service.ready.is_set,
                                           port=args.metrics_port)
            await metrics_server.start()
            logging.getLogger("gpux.gateway").info(
                "metrics on http://127.0.0.1:%d/metrics", metrics_server.port)
        await service.run(stop)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
        await event_log.close()
        if store is not None:
            await store.close()
