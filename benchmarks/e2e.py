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

It prints every figure beside its target, saves `benchmarks/e2e_latency.png` and
`benchmarks/e2e_stages.png`, and with `--json PATH` the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
TARGET_ORDERS_PER_S = 100_000
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
LEVELS = (0.10, 0.20, 0.50)
SYMBOLS = [f"H100-SXM-80GB.bench{index}" for index in range(8)]
START_TIMEOUT_S = 120.0
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# -- histograms ---------------------------------------------------------------------------

class LatencyHistogram:
    """Latencies in microseconds: an HDR histogram (hdrhistogram from PyPI) when installed,
    else log-spaced buckets of 2% width (so a percentile is within 2% of the true value)."""

    LOWEST_US = 1
    HIGHEST_US = 120_000_000

    def __init__(self) -> None:
        self.count = 0
        self.total_us = 0
        self.max_us = 0
        try:
            from hdrh.histogram import HdrHistogram

            self.hdr: Any = HdrHistogram(self.LOWEST_US, self.HIGHEST_US, 3)
            self.kind = "HDR (3 significant digits)"
        except ImportError:
            self.hdr = None
            self.kind = "log buckets (2%)"
            self.buckets: dict[int, int] = {}

    def record_ns(self, value_ns: int) -> None:
        value_us = min(max(self.LOWEST_US, value_ns // 1000), self.HIGHEST_US)
        self.count += 1
        self.total_us += value_us
        self.max_us = max(self.max_us, value_us)
        if self.hdr is not None:
            self.hdr.record_value(value_us)
        else:
            bucket = int(math.log(value_us) / math.log(1.02))
            self.buckets[bucket] = self.buckets.get(bucket, 0) + 1

    def percentile_ms(self, percentile: float) -> float:
        if self.count == 0:
            return float("nan")
        if self.hdr is not None:
            return float(self.hdr.get_value_at_percentile(percentile)) / 1000
        wanted = math.ceil(self.count * percentile / 100)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= wanted:
                return 1.02 ** (bucket + 1) / 1000
        return self.max_us / 1000

    def mean_ms(self) -> float:
        return self.total_us / self.count / 1000 if self.count else float("nan")

    def summary(self) -> dict[str, float]:
        figures = {f"p{p:g}": self.percentile_ms(p) for p in PERCENTILES}
        figures["mean"] = self.mean_ms()
        figures["max"] = self.max_us / 1000
        figures["count"] = self.count
        return figures

    def spectrum(self) -> tuple[list[float], list[float]]:
        """Return (percentile, ms) points for a percentile plot, up to the last value."""
        points = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
        points = [p for p in points if self.count * (1 - p / 100) >= 1]
        return points, [self.percentile_ms(p) for p in points]


# -- processes ----------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process (and its reaped children), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class ChildProcess:
    """A subprocess in its own session whose output goes to a log file."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; "
                               f"see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def http_text(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def engine_metrics(port: int) -> dict[str, float]:
    """Return the engine's metrics as name{labels} -> value."""
    text = http_text(port, "/metrics") or ""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@dataclass
class EngineWindow:
    """The engine's batches between two readings of its metrics."""

    batches: int
    commands: int
    seconds_total: float
    buckets: list[tuple[float, int]]  # (upper bound s, batches at or below)
    wait_seconds_total: float  # stamp of each batch's first command -> its batch's start
    wait_buckets: list[tuple[float, int]]

    @classmethod
    def between(cls, before: dict[str, float], after: dict[str, float]) -> EngineWindow:
        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        def buckets(histogram: str) -> list[tuple[float, int]]:
            prefix = histogram + '_bucket{le="'
            return sorted((float(name[len(prefix):-2]), int(delta(name)))
                          for name in after if name.startswith(prefix) and "+Inf" not in name)

        return cls(batches=int(delta("gpux_engine_batch_seconds_count")),
                   commands=int(delta("gpux_engine_batch_size_commands_sum")),
                   seconds_total=delta("gpux_engine_batch_seconds_sum"),
                   buckets=buckets("gpux_engine_batch_seconds"),
                   wait_seconds_total=delta("gpux_engine_command_wait_seconds_sum"),
                   wait_buckets=buckets("gpux_engine_command_wait_seconds"))

    def mean_ms(self, seconds_total: float) -> float:
        return seconds_total / self.batches * 1000 if self.batches else float("nan")

    def bound_ms(self, buckets: list[tuple[float, int]], fraction: float) -> float:
        """Return the bucket bound (ms) at or below which `fraction` of the batches fell."""
        for bound_s, count in buckets:
            if count >= fraction * self.batches:
                return bound_s * 1000
        return float("inf")

    def summary(self) -> dict[str, float]:
        return {"batches": self.batches, "commands": self.commands,
                "commands_per_batch": self.commands / self.batches if self.batches else 0,
                "batch_ms_mean": self.mean_ms(self.seconds_total),
                "batch_ms_p50_le": self.bound_ms(self.buckets, 0.5),
                "batch_ms_p99_le": self.bound_ms(self.buckets, 0.99),
                "wait_ms_mean": self.mean_ms(self.wait_seconds_total),
                "wait_ms_p50_le": self.bound_ms(self.wait_buckets, 0.5),
                "wait_ms_p99_le": self.bound_ms(self.wait_buckets, 0.99)}


@dataclass
class Cpu:
    """CPU seconds of the venue's processes, to tell which one a run saturated."""

    pids: dict[str, list[int]]
    start: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0

    def begin(self) -> None:
        self.start = {name: sum(map(cpu_seconds, pids)) for name, pids in self.pids.items()}
        self.started_at = time.monotonic()

    def end(self) -> dict[str, float]:
        wall = time.monotonic() - self.started_at
        return {name: round((sum(map(cpu_seconds, pids)) - self.start[name]) / wall, 2)
                for name, pids in self.pids.items()}


# -- the venue ----------------------------------------------------------------------------

@dataclass
class Venue:
    kafka: str
    namespace: str
    engine: ChildProcess
    engine_port: int
    gateway: ChildProcess
    url: str
    keys: dict[str, list[str]]
    taps_dir: Path
    kafka_pid: int | None
    taps_taken: int = 0

    def take_taps(self) -> dict[str, tuple[int, int]]:
        """Ask the gateway for its taps since the last call; return cid -> (ts, received)."""
        path = self.taps_dir / f"taps-{self.taps_taken}.msgpack"
        self.gateway.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not path.exists():
            self.gateway.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway wrote no taps")
            time.sleep(0.05)
        self.taps_taken += 1
        rows = msgspec.msgpack.decode(path.read_bytes())
        path.unlink()
        return {cid: (ts, received) for cid, ts, received in rows}


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
    taps_dir = work / "taps"
    taps_dir.mkdir()
    keys_path = work / "keys.json"
    gateway = ChildProcess("gateway", [
        sys.executable, "-m", "benchmarks.e2e_services", "gateway", "--kafka", kafka,
        "--namespace", namespace, "--accounts", str(len(accounts)),
        "--keys-out", str(keys_path), "--taps-dir", str(taps_dir),
        "--fetch-max-wait-ms", str(args.fetch_max_wait_ms),
    ], work / "gateway.log")
    while not keys_path.exists():
        gateway.check()
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.1)
    announced = json.loads(keys_path.read_text())
    return Venue(kafka=kafka, namespace=namespace, engine=engine, engine_port=engine_port,
                 gateway=gateway, url=f"ws://127.0.0.1:{announced['port']}",
                 keys=announced["keys"], taps_dir=taps_dir, kafka_pid=kafka_pid)


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
        while True:
            import socket

            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            echo.check()
            if time.monotonic() > deadline:
                raise RuntimeError("echo server did not start")
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{port}"
        outcomes = clients.run({"kind": "echo_saturate", "url": url,
                                "connections": args.connections, "window": args.window,
                                "duration_s": args.saturate_s, "warmup_s": args.warmup_s},
                               args.saturate_s + 60)
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
        return {"saturation_per_s": saturation, "rate_per_s": rate_per_s,
                "latency": histogram.summary(), "_histogram": histogram}
    finally:
        echo.stop()
        shutil.rmtree(work, ignore_errors=True)


async def kafka_round_trips(kafka: str, namespace: str, count: int) -> dict[str, Any]:
    """Time produce -> consume through the eventlog adapter, plain and transactional."""
    from eventlog.kafka import KafkaConfig, KafkaLog
    from eventlog.port import TopicSpec

    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka, fetch_max_wait_ms=5))
    results: dict[str, Any] = {}
    try:
        for mode in ("plain", "transactional"):
            topic = f"{namespace}baseline-{mode}"
            await event_log.create_topics([TopicSpec(name=topic)])
            transactional = mode == "transactional"
            producer = event_log.producer(f"{namespace}baseline" if transactional else None)
            await producer.start()
            consumer = event_log.consumer(
                topic, start="earliest",
                isolation="read_committed" if transactional else "read_uncommitted")
            await consumer.start()
            histogram = LatencyHistogram()

            async def read(expected: int, consumer: Any = consumer,
                           histogram: LatencyHistogram = histogram) -> None:
                seen = 0
                while seen < expected:
                    for record in await consumer.getmany(1000, 100):
                        histogram.record_ns(time.time_ns() - int(record.value))
                        seen += 1

            reader = asyncio.create_task(read(count))
            for _ in range(count):
                stamp = str(time.time_ns()).encode()
                if transactional:
                    await producer.begin()
                    await producer.send_batch(topic, [stamp])
                    await producer.commit()
                else:
                    await producer.send_batch(topic, [stamp])
                await asyncio.sleep(0.004)
            await asyncio.wait_for(reader, 60)
            await consumer.stop()
            await producer.stop()
            results[mode] = {**histogram.summary(), "_histogram": histogram}
    finally:
        await event_log.close()
    return results


async def warm_broker(kafka: str, seconds: float) -> dict[str, float]:
    """Run engine-shaped transactions back to back until the broker's JIT has warmed up.

    A fresh broker JVM spends several times the CPU per transaction of a warm one (13-29 ms
    against ~3 ms here), so a run against a cold broker measures the JIT, not the venue.
    Return the mean transaction time of the first and the last 100 transactions.
    """
    from eventlog.kafka import KafkaConfig, KafkaLog
    from eventlog.port import TopicSpec

    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka))
    namespace = f"warmup-{uuid.uuid4().hex[:8]}."
    topic, offsets_topic = f"{namespace}events", f"{namespace}commands"
    durations: list[float] = []
    try:
        await event_log.create_topics([TopicSpec(name=topic), TopicSpec(name=offsets_topic)])
        producer = event_log.producer(f"{namespace}engine")
        await producer.start()
        payloads = [b"x" * 200] * 50
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await producer.begin()
            await producer.send_batch(topic, payloads)
            await producer.send_offsets(f"{namespace}engine",
                                        {(offsets_topic, 0): len(durations) + 1})
            await producer.commit()
            durations.append(time.perf_counter() - started)
        await producer.stop()
    finally:
        await event_log.close()
    sample = min(100, len(durations))
    return {"seconds": seconds, "transactions": len(durations),
            "first_ms": sum(durations[:sample]) / sample * 1000,
            "last_ms": sum(durations[-sample:]) / sample * 1000}


def start_profiles(args: argparse.Namespace, pids: dict[str, int]
                   ) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """Sample the named processes with py-spy during the single-order saturation run."""
    if args.profile is None:
        return {}
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        print("--profile: py-spy is not installed in this environment (pip install py-spy)")
        return {}
    args.profile.mkdir(parents=True, exist_ok=True)
    profilers = {}
    for name, pid in pids.items():
        path = args.profile / f"{name}.collapsed"
        profilers[name] = (subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid),
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

def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value < target
    return "met" if met else "NOT met"


def print_report(figures: dict[str, Any]) -> None:
    print("\n=== end to end: SDK clients -> gateway -> Kafka -> engine -> Kafka -> gateway ===")
    print(f"{figures['machine']}; engine core: {figures['core']}; "
          f"{figures['connections']} connections in {figures['processes']} client processes")
    echo = figures["baseline_echo"]
    kafka = figures["baseline_kafka"]
    warmup = figures.get("broker_warmup")
    if warmup is not None:
        print(f"broker warm-up: {warmup['transactions']:,} transactions in "
              f"{warmup['seconds']:.0f} s; mean transaction {warmup['first_ms']:.1f} ms in the "
              f"first 100, {warmup['last_ms']:.1f} ms in the last 100")
    print("\nsaturation (closed loop, orders answered per second after warm-up)")
    for run in figures["saturation"]:
        label = "single new_order" if run["batch_size"] == 1 else f"batch of {run['batch_size']}"
        print(f"  {label:<18} {run['orders_per_s']:>10,.0f} orders/s   target >= "
              f"{TARGET_ORDERS_PER_S:,}  {verdict(run['orders_per_s'], TARGET_ORDERS_PER_S, True)}"
              f"   statuses {run['statuses']}")
        per_order = {name: round(cores / run["orders_per_s"] * 1e6)
                     for name, cores in run["cpu"].items()}
        print(f"  {'':<18} cpu (cores): {run['cpu']}; CPU per order (us): {per_order}")
        print(f"  {'':<18} engine: {run['engine']['commands_per_batch']:.0f} commands/batch, "
              f"{run['engine']['batch_ms_mean']:.2f} ms/batch")
    print(f"  baseline: websocket echo, same library, same clients: "
          f"{echo['saturation_per_s']:,.0f} round trips/s  (e2e single / echo = "
          f"{figures['saturation'][0]['orders_per_s'] / echo['saturation_per_s']:.2f})")
    for name, top in figures.get("profiles", {}).items():
        print(f"  profile of the {name} at saturation (py-spy, inclusive share of samples):")
        for frame, share in top[:25]:
            print(f"    {share:6.1%}  {frame[:110]}")
    print("\norder-to-acknowledgement latency (open loop, from scheduled send; ms)")
    print(f"  {'level':<6} {'offered/s':>10} {'answered/s':>10} {'p50':>7} {'p99':>7} "
          f"{'p99.9':>7} {'max':>7}  targets at 20%: p50 < {TARGET_P50_MS}, p99 < {TARGET_P99_MS}")
    for level in figures["levels"]:
        latency = level["latency"]
        note = ""
        if level["fraction"] == 0.20:
            note = (f"  p50 {verdict(latency['p50'], TARGET_P50_MS, False)}, "
                    f"p99 {verdict(latency['p99'], TARGET_P99_MS, False)}")
        print(f"  {level['fraction']:<6.0%} {level['offered_per_s']:>10,.0f} "
              f"{level['answered_per_s']:>10,.0f} {latency['p50']:>7.2f} {latency['p99']:>7.2f} "
              f"{latency['p99.9']:>7.2f} {latency['max']:>7.2f}{note}")
    print(f"  baseline: websocket echo at {echo['rate_per_s']:,.0f}/s: p50 "
          f"{echo['latency']['p50']:.2f}, p99 {echo['latency']['p99']:.2f}, p99.9 "
          f"{echo['latency']['p99.9']:.2f}")
    for mode, summary in kafka.items():
        print(f"  baseline: Kafka {mode} produce -> consume (one hop): p50 {summary['p50']:.2f}, "
              f"p99 {summary['p99']:.2f}, p99.9 {summary['p99.9']:.2f}")
    print("\nstages (ms: p50 / p99 / mean; percentiles of stages do not add up)")
    for level in figures["levels"]:
        print(f"  at {level['fraction']:.0%}:")
        for name, summary in level["stages"].items():
            print(f"    {name:<22} {summary['p50']:>7.3f} / {summary['p99']:>7.3f} / "
                  f"{summary['mean']:>7.3f}")
        engine = level["engine"]
        print(f"    {'stamp -> engine batch':<22} p50 <= {engine['wait_ms_p50_le']:.1f}, p99 <= "
              f"{engine['wait_ms_p99_le']:.1f}, mean {engine['wait_ms_mean']:.3f} (each "
              f"batch's first command: Kafka in and the wait for the batch before)")
        print(f"    {'engine (per batch)':<22} p50 <= {engine['batch_ms_p50_le']:.1f}, p99 <= "
              f"{engine['batch_ms_p99_le']:.1f}, mean {engine['batch_ms_mean']:.3f} (apply and "
              f"the Kafka transaction); {engine['commands_per_batch']:.1f} commands/batch")
        print(f"    cpu (cores): {level['cpu']}")


def plot(figures: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figure, axis = plt.subplots(figsize=(8, 5))
    for level in figures["levels"]:
        histogram: LatencyHistogram = level["_histogram"]
        points, values = histogram.spectrum()
        axis.plot([1 / (1 - p / 100) for p in points], values, marker="o",
                  label=f"{level['fraction']:.0%} ({level['offered_per_s']:,.0f} orders/s)")
    baselines = [(f"baseline: websocket echo at {figures['baseline_echo']['rate_per_s']:,.0f}/s",
                  figures["baseline_echo"]["_histogram"])]
    baselines += [(f"baseline: Kafka {mode} produce -> consume, one hop", summary["_histogram"])
                  for mode, summary in figures["baseline_kafka"].items()]
    for label, baseline in baselines:
        points, values = baseline.spectrum()
        axis.plot([1 / (1 - p / 100) for p in points], values, linestyle="--", marker=".",
                  label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    ticks = [50.0, 90.0, 99.0, 99.9, 99.99]
    axis.set_xticks([1 / (1 - p / 100) for p in ticks], [f"p{p:g}" for p in ticks])
    axis.axhline(TARGET_P50_MS, color="grey", linestyle=":", label="p50 target (at 20%)")
    axis.axhline(TARGET_P99_MS, color="grey", linestyle="--", label="p99 target (at 20%)")
    axis.set_xlabel("percentile")
    axis.set_ylabel("order to acknowledgement (ms)")
    axis.set_title(f"gpux end to end through Kafka, {figures['date']} ({figures['core']} core)")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.grid(True, which="both", alpha=0.3)
    path = directory / "e2e_latency.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    paths.append(path)

    figure, axis = plt.subplots(figsize=(8, 4))
    levels = figures["levels"]
    bottoms = [0.0] * len(levels)
    labels = [f"{level['fraction']:.0%}" for level in levels]
    for name, means in stage_means(levels).items():
        axis.bar(labels, means, bottom=bottoms, label=name)
        bottoms = [b + m for b, m in zip(bottoms, means, strict=True)]
    axis.set_xlabel("load (fraction of single-request saturation)")
    axis.set_ylabel("mean ms")
    axis.set_title("where an order's time goes (means per stage)")
    axis.legend()
    path = directory / "e2e_stages.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    paths.append(path)
    return paths


def stage_means(levels: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Return the mean ms per stage per level, the engine's batch time split out of the
    Kafka-engine-Kafka stage (a split of means: per order the two are not measured apart)."""
    means: dict[str, list[float]] = {}
    for level in levels:
        stages = level["stages"]
        through = stages["Kafka+engine+Kafka"]["mean"]
        engine_ms = min(level["engine"]["batch_ms_mean"], through)
        wait_ms = min(level["engine"]["wait_ms_mean"], through - engine_ms)
        split = {
            "client schedule lag": stages["client schedule lag"]["mean"],
            "gateway in": stages["gateway in"]["mean"],
            "Kafka in + wait for the batch before (first command)": wait_ms,
            "engine batch (apply + transaction)": engine_ms,
            "Kafka out to the gateway (rest)": through - engine_ms - wait_ms,
            "gateway out": stages["gateway out"]["mean"],
        }
        for name, value in split.items():
            means.setdefault(name, []).append(value)
    return means


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Python "
            f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")


def without_histograms(value: Any) -> Any:
    """Return `value` without the `_histogram` entries (for JSON)."""
    if isinstance(value, dict):
        return {k: without_histograms(v) for k, v in value.items() if k != "_histogram"}
    if isinstance(value, list):
        return [without_histograms(item) for item in value]
    return value


# -- main ---------------------------------------------------------------------------------

def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    kafka_service = None
    kafka = args.kafka
    kafka_pid = None
    if not kafka:
        from harness.kafka import KafkaService

        print("starting Kafka 4.1.1 (KRaft) ...", flush=True)
        kafka_service = KafkaService(work / "kafka")
        kafka_service.start()
        kafka = kafka_service.bootstrap_servers
        kafka_pid = kafka_service.pid
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                               "processes": args.processes,
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
        pids = {"engine": [venue.engine.pid], "gateway": [venue.gateway.pid],
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
    finally:
        if clients is not None:
            clients.stop()
        if venue is not None:
            venue.gateway.stop()
            venue.engine.stop()
        if kafka_service is not None:
            kafka_service.stop()
    return figures


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
