"""`gpux dev`: the whole venue in one process, alive, on embedded defaults; Ctrl-C stops it.

    gpux dev [--data-dir var/dev] [--port 8765] [--metrics-port 9100]
    gpux dev --kafka HOST:PORT --database-url URL [--eth-rpc-url URL]     (real services)

By default the event log is the embedded one, and PostgreSQL and anvil run under the data
directory (gpux.dev.infra); `--kafka`, `--database-url` and `--eth-rpc-url` use real ones
instead. It deploys the contracts, lists the next 24 delivery hours of three GPU classes,
funds the demo accounts' USDC on chain (gpux.dev.lister), runs the engine, ledger, index,
settlement and gateway services as tasks of this process (gpux.venue, set up by
gpux.dev.venue) and the demo bots (gpux.dev.bots: the operator and the market maker issue
the GPU-hours they sell), then prints the trading page's URL with a demo login.
Starting it again on the same data directory resumes the same market: same log, database,
chain and keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eventlog.port import EventLog
from gpux.dev.bots import DemoBots
from gpux.dev.chain import open_contracts
from gpux.dev.infra import Infrastructure
from gpux.dev.lister import Lister
from gpux.dev.market import PAGE_ACCOUNT, ApiKeyRecord, demo_keys, page_url
from gpux.dev.status import StatusReporter
from gpux.dev.venue import dev_venue
from gpux.venue import Venue
from runtime.observability import JsonLogFormatter

log = logging.getLogger("gpux.dev")

DEFAULT_PORT = 8765
DEFAULT_METRICS_PORT = 9100
KEYS_FILE = "demo-keys.json"


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    host: str
    port: int
    metrics_port: int
    kafka: str | None
    database_url: str | None
    eth_rpc_url: str | None
    duration_s: float | None
    bots: bool
    verbose: bool
    json_logs: bool


def parse_args(argv: list[str]) -> DevOptions:
    parser = argparse.ArgumentParser(prog="gpux dev", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/dev"),
                        help="where the market lives between runs (default: var/dev)")
    parser.add_argument("--host", default="127.0.0.1", help="where the gateway listens")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the gateway's port: websocket API and page (default "
                             f"{DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help=f"/metrics and /healthz of every service (default "
                             f"{DEFAULT_METRICS_PORT}; 0: any free port; -1: off)")
    parser.add_argument("--kafka", help="use this Kafka cluster, not the embedded log")
    parser.add_argument("--database-url", help="use this PostgreSQL, not an embedded one")
    parser.add_argument("--eth-rpc-url", help="use this anvil, not an embedded one")
    parser.add_argument("--duration-s", type=float, help="stop this long after the start")
    parser.add_argument("--no-bots", dest="bots", action="store_false",
                        help="run no market maker, operator or taker")
    parser.add_argument("--verbose", action="store_true", help="log INFO to the terminal too")
    parser.add_argument("--json-logs", action="store_true",
                        help="write DATA_DIR/dev.log as JSON lines")
    args = parser.parse_args(argv)
    return DevOptions(
        data_dir=args.data_dir.absolute(), host=args.host, port=args.port,
        metrics_port=args.metrics_port, kafka=args.kafka, database_url=args.database_url,
        eth_rpc_url=args.eth_rpc_url, duration_s=args.duration_s, bots=args.bots,
        verbose=args.verbose, json_logs=args.json_logs,
    )


def configure_logging(options: DevOptions) -> Path:
    """Log INFO to DATA_DIR/dev.log and warnings (INFO with --verbose) to the terminal."""
    path = options.data_dir / "dev.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(JsonLogFormatter() if options.json_logs else logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(message)s"))
    to_terminal = logging.StreamHandler()
    to_terminal.setLevel(logging.INFO if options.verbose else logging.WARNING)
    to_terminal.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [to_file, to_terminal]
    root.setLevel(logging.INFO)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection
    return path


def open_event_log(options: DevOptions) -> EventLog:
    if options.kafka:
        from eventlog.kafka import KafkaConfig, KafkaLog

        # A short fetch wait: a read_committed fetch is woken by data, not by a commit.
        return KafkaLog(KafkaConfig(bootstrap_servers=options.kafka, client_id="gpux-dev",
                                    fetch_max_wait_ms=5))
    from eventlog.embedded import EmbeddedConfig, EmbeddedLog

    # Without fsync a write still survives a crash of this process, not of the machine.
    return EmbeddedLog.open(options.data_dir / "log", EmbeddedConfig(fsync=False))


def banner(options: DevOptions, venue: Venue, infra: Infrastructure,
           keys: dict[str, ApiKeyRecord], startup_s: float) -> str:
    host, port = options.host, venue.port
    lines = [
        f"gpux dev: the venue is up ({startup_s:.1f} s)",
        f"  trading page   {page_url(host, port, keys[PAGE_ACCOUNT])}",
        f"  websocket API  ws://{host}:{port}   (demo API keys: "
        f"{options.data_dir / KEYS_FILE})",
    ]
    if venue.metrics_server is not None:
        metrics = f"http://{host}:{venue.metrics_server.port}"
        lines.append(f"  metrics        {metrics}/metrics   health {metrics}/healthz")
    log_name = options.kafka or f"embedded, {options.data_dir / 'log'}"
    gpux = Path(sys.executable).with_name("gpux")  # the venv's, usable without activating it
    alice = keys[PAGE_ACCOUNT]
    lines += [
        f"  new API key    {gpux} gateway add-key --dev {options.data_dir} --account NAME "
        "--role trader",
        f"  CLI client     {gpux} trade --url ws://{host}:{port} "
        f"--key {alice.key_id}:{alice.private_key} balances",
        f"  services       log {log_name}; {infra.describe()}",
        f"Ctrl-C stops; running it again resumes this market ({options.data_dir}).",
    ]
    return "\n".join(lines)


async def run(options: DevOptions) -> int:
    """Bring the venue up, print its URL, run until Ctrl-C (or --duration-s), stop cleanly."""
    started = time.monotonic()
    up = asyncio.Event()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal() -> None:
        if up.is_set():
            stop.set()
        elif not stop.is_set():  # still starting: abandon the start, then clean up
            stop.set()
            main_task.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    infra = Infrastructure(options.data_dir, database_url=options.database_url,
                           rpc_url=options.eth_rpc_url)
    try:
        await infra.start()
        contracts, deployed = await asyncio.to_thread(
            open_contracts, infra.rpc_url, options.data_dir / "deployment.json")
        event_log = open_event_log(options)
        try:
            venue, key_store = await dev_venue(
                event_log, contracts, data_dir=options.data_dir,
                database_url=infra.database_url, host=options.host, port=options.port,
                metrics_port=options.metrics_port)
            try:
                await venue.start()
                lister = Lister(venue)
                await lister.list_and_fund(fund_usdc=deployed)
                keys = await demo_keys(key_store, options.data_dir / KEYS_FILE)
                print(banner(options, venue, infra, keys, time.monotonic() - started),
                      flush=True)
                up.set()
                return await _serve(options, venue, lister, keys, stop, infra.database_url)
            finally:
                await venue.stop()
        finally:
            await event_log.close()
    finally:
        await infra.stop()
        print("gpux dev: stopped", flush=True)


async def _serve(options: DevOptions, venue: Venue, lister: Lister,
                 keys: dict[str, ApiKeyRecord], stop: asyncio.Event, database_url: str) -> int:
    """Run the bots, the lister and the status line until `stop` or a service fails."""
    if options.duration_s is not None:
        asyncio.get_running_loop().call_later(options.duration_s, stop.set)
    helpers: list[asyncio.Task[None]] = [
        asyncio.create_task(lister.run(stop), name="lister"),
        asyncio.create_task(StatusReporter(
            database_url, lambda: venue.engine_state,
            lambda: len(venue.gateway.transport.connections) if venue.gateway else 0,
        ).run(stop), name="status"),
    ]
    if options.bots:
        bots = DemoBots(f"ws://{options.host}:{venue.port}", keys)
        helpers.append(asyncio.create_task(bots.run(stop), name="bots"))
    stopping = asyncio.create_task(stop.wait())
    failing = asyncio.create_task(venue.failed())
    done, _ = await asyncio.wait([stopping, failing, *helpers],
                                 return_when=asyncio.FIRST_COMPLETED)
    failure = None
    if failing in done:
        failure = failing.result()
    for task in helpers:
        if task in done and not task.cancelled() and task.exception() is not None:
            failure = f"{task.get_name()} failed: {task.exception()!r}"
    stop.set()  # the bots cancel their quotes while the gateway still runs
    await asyncio.wait(helpers, timeout=15)
    for pending in (*helpers, stopping, failing):
        pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*helpers, stopping, failing, return_exceptions=True)
    if failure is not None:
        print(f"gpux dev: {failure}; stopping", file=sys.stderr, flush=True)
        return 1
    return 0


def _run_loop(options: DevOptions) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(options))
    return uvloop.run(run(options))


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    # One gpux dev per data dir: a second would take the first one's services for stale.
    lock = (options.data_dir / "dev.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"gpux dev: another gpux dev runs on {options.data_dir}", file=sys.stderr)
        return 1
    log_path = configure_logging(options)
    try:
        return _run_loop(options)
    except asyncio.CancelledError:
        return 130  # interrupted while starting: everything started was stopped
    except Exception as error:
        log.exception("gpux dev failed")
        print(f"gpux dev: {error}\n(more in {log_path})", file=sys.stderr)
        return 1
