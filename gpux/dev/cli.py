"""`gpux dev`: the whole venue in one process, alive, on embedded defaults; Ctrl-C stops it.

    gpux dev [--data-dir var/dev] [--port 8765] [--metrics-port 9100]
             [--delivery-minute-ms 1000] [--demo-lead-s 180] [--demo-interval-s 600]
    gpux dev --kafka HOST:PORT --database-url URL [--eth-rpc-url URL]     (real services)

By default the event log is the embedded one, and PostgreSQL and anvil run under the data
directory (gpux.dev.infra); `--kafka`, `--database-url` and `--eth-rpc-url` use real ones
instead. It deploys the contracts, lists the next 24 delivery hours of three GPU classes,
funds the demo accounts' USDC on chain (gpux.dev.lister), runs the engine, ledger, index,
settlement and gateway services as tasks of this process (gpux.venue, set up by
gpux.dev.venue) and the demo bots (gpux.dev.bots: the operator and the market maker issue
the GPU-hours they sell), then prints the trading page's URL with a demo login.

It also delivers what is sold (issue 17): the delivery service runs with the others on a
compressed minute (`--delivery-minute-ms`: an hour's 60 probes in its first 60 s by
default), the operator's and the market maker's nodes run as embedded SSH servers on
loopback (gpux.dev.nodes; the market maker's H100 node is down for 15 of each measured
hour's 60 minutes, so its buyers are compensated from its bond), and a demo H100 hour in
region `eu-west-demo` opens `--demo-lead-s` after the start and then every
`--demo-interval-s` (gpux.dev.market), issued and offered by the bots. The page account
has an SSH key under DATA_DIR/delivery, registered, so its access line works.

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
from datetime import UTC, datetime
from pathlib import Path

from delivery.keys import CA_FILE
from eventlog.port import EventLog
from gpux.dev.bots import DemoBots
from gpux.dev.chain import open_contracts
from gpux.dev.infra import Infrastructure
from gpux.dev.lister import DemoSchedule, Lister
from gpux.dev.market import (
    DEMO_GPU,
    PAGE_ACCOUNT,
    ApiKeyRecord,
    demo_keys,
    demo_symbol_for,
    page_url,
)
from gpux.dev.nodes import (
    OUTAGE_FIRST_MINUTE,
    OUTAGE_MINUTES,
    OUTAGE_NODE,
    SimulatedNodes,
    Window,
    page_identity,
    register_page_key,
)
from gpux.dev.status import StatusReporter
from gpux.dev.venue import DELIVERY_MINUTE_MS, delivery_keys_dir, dev_venue
from gpux.venue import Venue
from runtime.observability import JsonLogFormatter

log = logging.getLogger("gpux.dev")

DEFAULT_PORT = 8765
DEFAULT_METRICS_PORT = 9100
KEYS_FILE = "demo-keys.json"
DEMO_LEAD_S = 180.0
DEMO_INTERVAL_S = 600.0


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
    delivery_minute_ms: int = DELIVERY_MINUTE_MS
    demo_lead_s: float = DEMO_LEAD_S
    demo_interval_s: float = DEMO_INTERVAL_S


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
    parser.add_argument("--delivery-minute-ms", type=int, default=DELIVERY_MINUTE_MS,
                        help=f"the delivery prober's minute (default {DELIVERY_MINUTE_MS}: an "
                             "hour's 60 samples in its first 60 s; 60000 is real time)")
    parser.add_argument("--demo-lead-s", type=float, default=DEMO_LEAD_S,
                        help=f"the first demo delivery hour starts this long after the start "
                             f"(default {DEMO_LEAD_S:.0f})")
    parser.add_argument("--demo-interval-s", type=float, default=DEMO_INTERVAL_S,
                        help=f"then one every so long (default {DEMO_INTERVAL_S:.0f}, >= 60)")
    args = parser.parse_args(argv)
    if args.delivery_minute_ms < 20:
        parser.error("--delivery-minute-ms must be >= 20")
    if args.demo_lead_s < 0 or args.demo_interval_s < 60:
        parser.error("--demo-lead-s must be >= 0 and --demo-interval-s >= 60")
    return DevOptions(
        data_dir=args.data_dir.absolute(), host=args.host, port=args.port,
        metrics_port=args.metrics_port, kafka=args.kafka, database_url=args.database_url,
        eth_rpc_url=args.eth_rpc_url, duration_s=args.duration_s, bots=args.bots,
        verbose=args.verbose, json_logs=args.json_logs,
        delivery_minute_ms=args.delivery_minute_ms, demo_lead_s=args.demo_lead_s,
        demo_interval_s=args.demo_interval_s,
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


def utc_clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S UTC")


def delivery_lines(options: DevOptions, url: str, keys: dict[str, ApiKeyRecord],
                   demo: DemoSchedule, nodes: SimulatedNodes, identity: Path,
                   now_ns: int) -> list[str]:
    """What the banner says of delivery: the compressed minute, the nodes and their outage,
    the next demo hour, and the command that prints the page account's ssh line."""
    start = demo.next_start_ns(now_ns)
    gpux = Path(sys.executable).with_name("gpux")
    page = keys[PAGE_ACCOUNT]
    minute_s = options.delivery_minute_ms / 1000
    return [
        f"  delivery       probes every {options.delivery_minute_ms} ms (an hour's 60 samples "
        f"in its first {60 * minute_s:.0f} s); {nodes.describe()}; {OUTAGE_NODE} is down "
        f"minutes {OUTAGE_FIRST_MINUTE}-{OUTAGE_FIRST_MINUTE + OUTAGE_MINUTES - 1} of each "
        "measured hour (its buyers are compensated)",
        f"  demo hour      {demo_symbol_for(DEMO_GPU, start)} opens {utc_clock(start)} (then "
        f"every {demo.interval_ns / 60e9:g} min): buy it on the page (H100, region "
        "eu-west-demo); Deliveries shows the access line, Quality the measured hour",
        f"  ssh access     {gpux} trade --url {url} --key {page.key_id}:{page.private_key} "
        f"access --identity {identity}",
    ]


def banner(options: DevOptions, venue: Venue, infra: Infrastructure,
           keys: dict[str, ApiKeyRecord], startup_s: float,
           delivery: list[str] | None = None) -> str:
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
        *(delivery or []),
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
                metrics_port=options.metrics_port,
                delivery_minute_ms=options.delivery_minute_ms)
            # The nodes serve before the venue starts: a restarted delivery service probes
            # at once, and finds them on the ports they were registered with.
            nodes = SimulatedNodes(options.data_dir, delivery_keys_dir(options.data_dir) / CA_FILE,
                                   minute_ms=options.delivery_minute_ms,
                                   windows=lambda gpu: windows_of(venue, gpu),
                                   host=options.host)
            try:
                await nodes.listen()
                await venue.start()
                # The first demo hour counts from now, however long the services took to start.
                demo = DemoSchedule.from_start(time.time_ns(), options.demo_lead_s,
                                               options.demo_interval_s)
                lister = Lister(venue, demo)
                await lister.list_and_fund(fund_usdc=deployed)
                keys = await demo_keys(key_store, options.data_dir / KEYS_FILE)
                url = f"ws://{options.host}:{venue.port}"
                identity = page_identity(options.data_dir, PAGE_ACCOUNT)
                await asyncio.gather(nodes.register(url, keys),
                                     register_page_key(url, keys[PAGE_ACCOUNT], identity))
                delivery = delivery_lines(options, url, keys, demo, nodes, identity,
                                          time.time_ns())
                print(banner(options, venue, infra, keys, time.monotonic() - started,
                             delivery), flush=True)
                up.set()
                return await _serve(options, venue, lister, keys, stop, infra.database_url,
                                    nodes, demo)
            finally:
                await venue.stop()  # the prober stops before the nodes it probes
                await nodes.stop()
        finally:
            await event_log.close()
    finally:
        await infra.stop()
        print("gpux dev: stopped", flush=True)


def windows_of(venue: Venue, gpu: str) -> list[Window]:
    """The delivery windows of the engine's deliverable instruments of `gpu` (none while the
    engine recovers, or on the native core, whose state is in Rust)."""
    engine = venue.engine_state
    if engine is None:
        return []
    return [Window(start_ns=i.delivery_start, minutes=i.delivery_hours * 60)
            for i in list(engine.instruments.values()) if i.gpu == gpu]


async def _serve(options: DevOptions, venue: Venue, lister: Lister,
                 keys: dict[str, ApiKeyRecord], stop: asyncio.Event, database_url: str,
                 nodes: SimulatedNodes, demo: DemoSchedule) -> int:
    """Run the bots, the lister, the nodes' outages and the status line until `stop` or a
    service fails."""
    if options.duration_s is not None:
        asyncio.get_running_loop().call_later(options.duration_s, stop.set)

    def next_demo() -> str:
        start = demo.next_start_ns(time.time_ns())
        return f"next demo hour {utc_clock(start)} ({demo_symbol_for(DEMO_GPU, start)})"

    helpers: list[asyncio.Task[None]] = [
        asyncio.create_task(lister.run(stop), name="lister"),
        asyncio.create_task(nodes.run(stop), name="nodes"),
        asyncio.create_task(StatusReporter(
            database_url, lambda: venue.engine_state,
            lambda: len(venue.gateway.transport.connections) if venue.gateway else 0,
            delivery=next_demo,
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
