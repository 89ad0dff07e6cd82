"""End to end: SDK clients -> gateway -> Kafka -> engine -> Kafka -> gateway -> clients.

    python -m benchmarks.e2e [--quick] [--kafka HOST:PORT] [--core native|python]

Starts its own Kafka 4.1.1 broker (KRaft, the harness's) unless `--kafka` names one, then
`gpux engine` (snapshots on) and the gateway service (`benchmarks.e2e_services gateway`:
the gateway service with an in-memory key store and lifted rate limits) as processes, and
client processes of SDK clients (`benchmarks.e2e_clients`), each connection logged in
with an API key of its own account. It measures:

1. saturation: every connection keeps requests in flight (closed loop), once with single
   `new_order` requests and once with `batch` requests of 20 orders; the figure is the
   orders answered per second after a warm-up;
2. order-to-acknowledgement latency at 10%, 20% and 50% of the single-request saturation
   rate (open loop, one `new_order` per request, latency from each order's scheduled send
   time to its answer, kept in an HDR histogram), split by stage with the timestamps the
   path carries: client send, the gateway's command stamp `ts` (the event's `ts` too), the
   time the gateway received the answering event, client receive; the engine's own share
   comes from its batch-time histogram (apply plus the Kafka transaction);
3. baselines in the same run: a websocket echo server on the same library and options
   (saturation and round trip at the 20% rate), and Kafka round trips through the same
   adapter (an idempotent produce to a read_uncommitted consumer; a transactional produce
   to a read_committed consumer, as the engine writes and the gateway reads).

It prints every figure beside its target, the ratios of issue 15 (json `ratios.*`) with the
most the saturation ratios could be were the gateway as cheap as the echo server per frame
(json `gateway_as_echo_bound`), saves `benchmarks/e2e_latency.png` and
`benchmarks/e2e_stages.png`, and with `--json PATH` the figures as JSON. Its transport floor,
the two Kafka hops alone, is `benchmarks.kafka_floor`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.e2e_kafka import kafka_round_trips, warm_broker
from benchmarks.e2e_report import machine, plot, print_report, without_histograms
from benchmarks.support import (
    ROOT,
    ChildProcess,
    Cpu,
    EngineWindow,
    LatencyHistogram,
    engine_metrics,
)
from harness.ports import free_port, port_is_open

LEVELS = (0.10, 0.20, 0.50)
SYMBOLS = [f"H100-SXM-80GB.bench{index}" for index in range(8)]
START_TIMEOUT_S = 120.0


# -- the venue ----------------------------------------------------------------------------

@dataclass
class Venue:
    kafka: str
    namespace: str
    engine: ChildProcess
    engine_port: int
    gateways: list[ChildProcess]  # one, or several on one port (SO_REUSEPORT)
    url: str
    keys: dict[str, list[str]]
    taps_dirs: list[Path]
    kafka_pid: int | None
    taps_taken: int = 0

    @property
    def gateway(self) -> ChildProcess:
        return self.gateways[0]

    def take_taps(self) -> dict[str, tuple[int, int]]:
        """Ask the gateways for their taps since the last call; return cid -> (ts, received)."""
        for gateway in self.gateways:
            gateway.process.send_signal(signal.SIGUSR2)
        taps: dict[str, tuple[int, int]] = {}
        for gateway, taps_dir in zip(self.gateways, self.taps_dirs, strict=True):
            path = taps_dir / f"taps-{self.taps_taken}.msgpack"
            deadline = time.monotonic() + 60
            while not path.exists():
                gateway.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway wrote no taps")
                time.sleep(0.05)
            rows = msgspec.msgpack.decode(path.read_bytes())
            path.unlink()
            # Every gateway sees every event; the answer's reader is the client's gateway:
            # keep the earliest receipt of each order (the stages are an estimate with N > 1).
            for cid, ts, received in rows:
                if cid not in taps or received < taps[cid][1]:
                    taps[cid] = (ts, received)
        self.taps_taken += 1
        return taps


async def write_setup(kafka: str, namespace: str, accounts: list[str]) -> int:
    """List the instruments and fund every account; return how many commands that was."""
    from eventlog.kafka import KafkaConfig, KafkaLog
    from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, TopicSpec
    from protocol import Deposit, ListInstrument, encode

    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka))
    now = time.time_ns()
    commands: list[Any] = [
        ListInstrument(ts=now, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
                       delivery_start=now + 10 * 86_400 * 10**9, delivery_hours=1,
                       tick_size="0.01", max_order_quantity=1000, maker_fee_bps=0,
                       taker_fee_bps=0)
        for symbol in SYMBOLS]
    for account in accounts:
        commands.append(Deposit(ts=now, account=account, asset="USDC", amount="1000000000"))
        commands += [Deposit(ts=now, account=account, asset=symbol, amount=10**9)
                     for symbol in SYMBOLS]
    try:
        await event_log.create_topics([TopicSpec(name=namespace + COMMANDS_TOPIC),
                                       TopicSpec(name=namespace + EVENTS_TOPIC)])
        producer = event_log.producer()
        await producer.start()
        try:
            await producer.send_batch(namespace + COMMANDS_TOPIC, [encode(c) for c in commands])
        finally:
            await producer.stop()
    finally:
        await event_log.close()
    return len(commands)


def start_venue(kafka: str, kafka_pid: int | None, work: Path, args: argparse.Namespace
                ) -> Venue:
    namespace = f"e2e{uuid.uuid4().hex[:8]}."
    accounts = [f"bench{index:04d}" for index in range(args.processes * args.connections)]
    setup_count = asyncio.run(write_setup(kafka, namespace, accounts))
    engine_port = free_port()
    snapshots = ["--snapshot-dir", str(work / "snapshots")]  # as in production
    engine = ChildProcess("engine", [
        sys.executable, "-m", "gpux", "engine", "--log", "kafka", "--kafka", kafka,
        "--topic-namespace", namespace, "--transactional-id", f"{namespace}engine",
        "--group-id", f"{namespace}engine", "--core", args.core, *snapshots,
        "--metrics-port", str(engine_port), *args.engine_args.split(),
    ], work / "engine.log")
    deadline = time.monotonic() + START_TIMEOUT_S
    while engine_metrics(engine_port).get("gpux_engine_commands_total", 0) < setup_count:
        engine.check()
        if time.monotonic() > deadline:
            raise RuntimeError("the engine did not apply the setup commands")
        time.sleep(0.1)
    keys_path = work / "keys.json"
    gateways: list[ChildProcess] = []
    taps_dirs: list[Path] = []
    port = 0
    for index in range(args.gateways):
        taps_dir = work / f"taps-{index}"
        taps_dir.mkdir()
        announce = keys_path if index == 0 else work / f"keys-{index}.json"
        extra = ["--reuse-port", "--gateway-id", f"bench{index}"] if args.gateways > 1 else []
        if index > 0:
            extra += ["--keys-in", str(keys_path)]
        gateway = ChildProcess(f"gateway{index or ''}", [
            sys.executable, "-m", "benchmarks.e2e_services", "gateway", "--kafka", kafka,
            "--namespace", namespace, "--accounts", str(len(accounts)), "--port", str(port),
            "--keys-out", str(announce), "--taps-dir", str(taps_dir),
            "--fetch-max-wait-ms", str(args.fetch_max_wait_ms), *extra,
        ], work / f"gateway{index or ''}.log")
        gateways.append(gateway)
        taps_dirs.append(taps_dir)
        while not announce.exists():
            gateway.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)
        port = json.loads(announce.read_text())["port"]
    announced = json.loads(keys_path.read_text())
    return Venue(kafka=kafka, namespace=namespace, engine=engine, engine_port=engine_port,
                 gateways=gateways, url=f"ws://127.0.0.1:{announced['port']}",
                 keys=announced["keys"], taps_dirs=taps_dirs, kafka_pid=kafka_pid)


async def wait_instruments(url: str, key: list[str]) -> None:
    from sdk.client import ApiKey, Client

    async with Client(url, credentials=ApiKey(*key)) as client:
        deadline = time.monotonic() + START_TIMEOUT_S
        while {i.symbol for i in await client.instruments()} < set(SYMBOLS):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway never saw the instruments")
            await asyncio.sleep(0.1)


class Clients:
    """The client processes and the queues that drive them."""

    def __init__(self, venue: Venue, processes: int, connections: int) -> None:
        from benchmarks.e2e_clients import client_process

        context = multiprocessing.get_context("spawn")
        self.results: Any = context.Queue()
        self.commands = [context.Queue() for _ in range(processes)]
        accounts = sorted(venue.keys)
        self.workers = []
        for index in range(processes):
            share = accounts[index * connections:(index + 1) * connections]
            keys = [(account, *venue.keys[account]) for account in share]
            worker = context.Process(target=client_process, args=(
                index, venue.url, keys, SYMBOLS, self.commands[index], self.results))
            worker.start()
            self.workers.append(worker)
        for _ in self.workers:
            kind, _index, _count = self.results.get(timeout=START_TIMEOUT_S)
            assert kind == "ready"

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if worker.pid is not None]

    def run(self, phase: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
        for queue in self.commands:
            queue.put(phase)
        outcomes = []
        for _ in self.workers:
            kind, _index, outcome = self.results.get(timeout=timeout_s)
            assert kind == phase["kind"], kind
            outcomes.append(outcome)
        return outcomes

    def stop(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for worker in self.workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()


# -- measurements -------------------------------------------------------------------------

def saturate(clients: Clients, venue: Venue, cpu: Cpu, args: argparse.Namespace,
             batch_size: int, tag: str) -> dict[str, Any]:
    window = args.window if batch_size == 1 else args.batch_window
    before = engine_metrics(venue.engine_port)
    cpu.begin()
    outcomes = clients.run({"kind": "saturate", "tag": tag, "batch_size": batch_size,
                            "window": window, "duration_s": args.saturate_s,
                            "warmup_s": args.warmup_s}, args.saturate_s + 120)
    usage = cpu.end()
    engine = EngineWindow.between(before, engine_metrics(venue.engine_port))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        for status, count in outcome["counts"].items():
            counts[status] = counts.get(status, 0) + count
    seconds = max(outcome["seconds"] for outcome in outcomes)
    return {"batch_size": batch_size, "window_per_connection": window,
            "orders_per_s": sum(counts.values()) / seconds, "statuses": counts,
            "seconds": seconds, "cpu": usage, "engine": engine.summary()}


def latency_level(clients: Clients, venue: Venue, cpu: Cpu, args: argparse.Namespace,
                  fraction: float, rate_per_s: float) -> dict[str, Any]:
    tag = f"{int(fraction * 100)}"
    before = engine_metrics(venue.engine_port)
    cpu.begin()
    outcomes = clients.run({"kind": "rate", "tag": tag,
                            "rate_per_s": rate_per_s / len(clients.workers),
                            "duration_s": args.level_s}, args.level_s + 120)
    usage = cpu.end()
    engine = EngineWindow.between(before, engine_metrics(venue.engine_port))
    taps = venue.take_taps()
    total, from_send = LatencyHistogram(), LatencyHistogram()
    stages = {name: LatencyHistogram() for name in
              ("client schedule lag", "gateway in", "Kafka+engine+Kafka", "gateway out")}
    statuses: dict[str, int] = {}
    rows = [row for outcome in outcomes for row in outcome["rows"]]
    first_scheduled = min(row[1] for row in rows)
    last_answered = max(row[3] for row in rows)
    for cid, scheduled_ns, sent_ns, received_ns, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
        total.record_ns(received_ns - scheduled_ns)
        from_send.record_ns(received_ns - sent_ns)
        tap = taps.get(cid)
        if tap is None:
            continue
        stamp_ns, event_seen_ns = tap
        stages["client schedule lag"].record_ns(sent_ns - scheduled_ns)
        stages["gateway in"].record_ns(stamp_ns - sent_ns)
        stages["Kafka+engine+Kafka"].record_ns(event_seen_ns - stamp_ns)
        stages["gateway out"].record_ns(received_ns - event_seen_ns)
    return {"fraction": fraction, "offered_per_s": rate_per_s,
            "answered_per_s": len(rows) / ((last_answered - first_scheduled) / 1e9),
            "statuses": statuses, "latency": total.summary(), "from_send": from_send.summary(),
            "stages": {name: h.summary() for name, h in stages.items()},
            "engine": engine.summary(), "cpu": usage, "histogram": total.kind,
            "_histogram": total}


def echo_baseline(clients: Clients, args: argparse.Namespace, rate_per_s: float
                  ) -> dict[str, Any]:
    """Run the websocket echo baseline: saturation, then the round trip at `rate_per_s`."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="gpux-e2e-echo-"))
    echo = ChildProcess("echo", [sys.executable, "-m", "benchmarks.e2e_services", "echo",
                                 "--port", str(port)], work / "echo.log")
    try:
        deadline = time.monotonic() + 30
        while not port_is_open(port):
            echo.check()
            if time.monotonic() > deadline:
                raise RuntimeError("echo server did not start")
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{port}"
        cpu = Cpu({"echo": [echo.pid], "clients": clients.pids})
        cpu.begin()
        outcomes = clients.run({"kind": "echo_saturate", "url": url,
                                "connections": args.connections, "window": args.window,
                                "duration_s": args.saturate_s, "warmup_s": args.warmup_s},
                               args.saturate_s + 60)
        usage = cpu.end()
        seconds = max(outcome["seconds"] for outcome in outcomes)
        saturation = sum(outcome["answered"] for outcome in outcomes) / seconds
        outcomes = clients.run({"kind": "echo_rate", "url": url,
                                "connections": args.connections,
                                "rate_per_s": rate_per_s / len(clients.workers),
                                "duration_s": args.level_s}, args.level_s + 60)
        histogram = LatencyHistogram()
        for outcome in outcomes:
            for value in outcome["latencies_ns"]:
                histogram.record_ns(value)
        return {"saturation_per_s": saturation, "cpu": usage, "rate_per_s": rate_per_s,
                "latency": histogram.summary(), "_histogram": histogram}
    finally:
        echo.stop()
        shutil.rmtree(work, ignore_errors=True)


def start_profiles(args: argparse.Namespace, pids: dict[str, int]
                   ) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """Sample the named processes with py-spy during the single-order saturation run."""
    if args.profile is None:
        return {}
    found = Path(sys.executable).parent / "py-spy"
    py_spy = str(found) if found.exists() else shutil.which("py-spy")
    if py_spy is None:
        print("--profile: py-spy is neither in this environment nor on PATH (pip install "
              "py-spy)")
        return {}
    args.profile.mkdir(parents=True, exist_ok=True)
    profilers = {}
    for name, pid in pids.items():
        path = args.profile / f"{name}.collapsed"
        profilers[name] = (subprocess.Popen(
            [py_spy, "record", "--pid", str(pid),
             "--duration", str(int(args.saturate_s)), "--rate", "200", "--format", "raw",
             "--nonblocking", "-o", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    return profilers


def finish_profiles(profilers: dict[str, tuple[subprocess.Popen[bytes], Path]]
                    ) -> dict[str, list[tuple[str, float]]]:
    """Return each profile's functions by inclusive share of samples (top 25)."""
    shares = {}
    for name, (process, path) in profilers.items():
        process.wait(120)
        inclusive: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            total += count
            for frame in set(stack.split(";")):
                inclusive[frame] = inclusive.get(frame, 0) + count
        top = sorted(inclusive.items(), key=lambda item: -item[1])[:25]
        shares[name] = [(frame, round(count / max(1, total), 3)) for frame, count in top]
    return shares


# -- report -------------------------------------------------------------------------------

def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    kafka_service = None
    kafka = args.kafka
    kafka_pid = None
    if not kafka:
        from harness.kafka import KAFKA_VERSION, KafkaService

        print(f"starting Kafka {KAFKA_VERSION} (KRaft) ...", flush=True)
        kafka_service = KafkaService(work / "kafka")
        kafka_service.start()
        kafka = kafka_service.bootstrap_servers
        kafka_pid = kafka_service.pid
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                               "gateways": args.gateways, "processes": args.processes,
                               "connections": args.processes * args.connections}
    venue = None
    clients = None
    try:
        if kafka_service is not None:
            print(f"warming the broker up for {args.broker_warmup_s:.0f} s ...", flush=True)
            figures["broker_warmup"] = asyncio.run(warm_broker(kafka, args.broker_warmup_s))
        venue = start_venue(kafka, kafka_pid, work, args)
        figures["core"] = args.core
        asyncio.run(wait_instruments(venue.url, next(iter(venue.keys.values()))))
        clients = Clients(venue, args.processes, args.connections)
        pids = {"engine": [venue.engine.pid],
                "gateway": [gateway.pid for gateway in venue.gateways],
                "clients": clients.pids}
        if kafka_pid is not None:
            pids["kafka"] = [kafka_pid]
        cpu = Cpu(pids)
        print("saturation ...", flush=True)
        profilers = start_profiles(args, {"engine": venue.engine.pid,
                                          "gateway": venue.gateway.pid})
        figures["saturation"] = [saturate(clients, venue, cpu, args, 1, "1")]
        figures["profiles"] = finish_profiles(profilers)
        figures["saturation"].append(saturate(clients, venue, cpu, args, 20, "20"))
        base_rate = figures["saturation"][0]["orders_per_s"]
        figures["levels"] = []
        for fraction in LEVELS:
            print(f"latency at {fraction:.0%} of {base_rate:,.0f} orders/s ...", flush=True)
            figures["levels"].append(latency_level(clients, venue, cpu, args, fraction,
                                                   fraction * base_rate))
        print("baselines ...", flush=True)
        figures["baseline_echo"] = echo_baseline(clients, args, 0.20 * base_rate)
        figures["baseline_kafka"] = asyncio.run(
            kafka_round_trips(kafka, venue.namespace, args.kafka_round_trips))
        figures["ratios"] = ratios(figures)
        figures["gateway_as_echo_bound"] = gateway_as_echo_bound(figures)
    finally:
        if clients is not None:
            clients.stop()
        if venue is not None:
            for gateway in venue.gateways:
                gateway.stop()
            venue.engine.stop()
        if kafka_service is not None:
            kafka_service.stop()
    return figures


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """The issue-15 targets' ratios, each against a baseline of the same run: order-to-ack
    at 20% load against one plain Kafka hop, saturation against the websocket echo."""
    at_20 = next(level["latency"] for level in figures["levels"] if level["fraction"] == 0.20)
    plain = figures["baseline_kafka"]["plain"]
    echo_per_s = figures["baseline_echo"]["saturation_per_s"]
    single, batch = figures["saturation"][0], figures["saturation"][1]
    return {
        "p50_vs_plain_hop": at_20["p50"] / plain["p50"],
        "p99_vs_plain_hop": at_20["p99"] / plain["p99"],
        "single_vs_echo": single["orders_per_s"] / echo_per_s,
        "batch_vs_echo": batch["orders_per_s"] / echo_per_s,
    }


def gateway_as_echo_bound(figures: dict[str, Any]) -> dict[str, float]:
    """The most each saturation ratio could be on this machine's cores if the gateway cost
    only what the echo server costs per frame, every other process (clients, broker,
    engine) the CPU per order it used in this run."""
    cores = os.cpu_count() or 1
    echo = figures["baseline_echo"]
    echo_server_s_per_frame = echo["cpu"]["echo"] / echo["saturation_per_s"]
    bounds = {}
    for run, name in zip(figures["saturation"], ("single_vs_echo", "batch_vs_echo"),
                         strict=True):
        others_s_per_order = sum(cores_used for process, cores_used in run["cpu"].items()
                                 if process != "gateway") / run["orders_per_s"]
        s_per_order = others_s_per_order + echo_server_s_per_frame / run["batch_size"]
        bounds[name] = cores / s_per_order / echo["saturation_per_s"]
    return bounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (about 2 minutes)")
    parser.add_argument("--kafka", help="use this broker instead of starting one")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=8, help="connections per process")
    parser.add_argument("--window", type=int, default=256,
                        help="single-order requests in flight per connection at saturation "
                             "(the gateway allows 500 pending per session)")
    parser.add_argument("--batch-window", type=int, default=16,
                        help="batch requests (of 20 orders) in flight per connection")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=5,
                        help="the gateway's Kafka fetch wait (as gpux gateway's default)")
    parser.add_argument("--gateways", type=int, default=1,
                        help="gateway processes on one port (SO_REUSEPORT), each consuming "
                             "the events; the kernel spreads the connections over them")
    parser.add_argument("--core", choices=("python", "native"), default="python",
                        help="the engine's matching core")
    parser.add_argument("--engine-args", default="",
                        help="extra arguments of gpux engine, e.g. '--batch-size-max 500'")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--profile", type=Path,
                        help="py-spy the engine and the gateway during single-order "
                             "saturation; collapsed stacks go to this directory")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    args.saturate_s, args.warmup_s, args.level_s = (8.0, 2.0, 6.0) if args.quick else \
        (30.0, 5.0, 20.0)
    args.kafka_round_trips = 300 if args.quick else 1000
    args.broker_warmup_s = 20.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="gpux-e2e-") as work:
        figures = run(args, Path(work))
    if args.json is not None:
        args.json.write_text(json.dumps(without_histograms(figures), indent=2))
    print_report(figures)
    if not args.no_plots:
        for path in plot(figures, Path(__file__).resolve().parent):
            print(f"plot: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
