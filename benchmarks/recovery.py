"""Engine restart time after SIGKILL against command-log length, snapshots on and off.

    python -m benchmarks.recovery [--sizes 100000,1000000,10000000] [--kafka HOST:PORT]

For each size it writes that many commands (the `Workload` flow) to a fresh log, runs
`gpux engine` over them with snapshots every `--snapshot-every` commands, kills it with
SIGKILL, starts it again and times how long until `/healthz` answers 200 (process start,
snapshot load, re-applying the commands after the snapshot, the event-log seq check). The
baseline in the same run is the same restart with snapshots off (full replay), measured up
to `--baseline-max` commands. Embedded log by default; `--kafka` uses a real broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from eventlog.port import COMMANDS_TOPIC, EventLog, TopicSpec
from matching_engine.service import open_log
from matching_engine.workload import Workload
from protocol import encode

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 5.0
CHUNK = 50_000
HEALTH_TIMEOUT_S = 1800.0


def http_status(port: int, path: str) -> int | None:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return None


def metric(port: int, name: str) -> float:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/metrics")
    for line in connection.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    return 0.0


async def write_commands(event_log: EventLog, topic: str, count: int) -> None:
    workload = Workload(instruments=8, accounts=64, seed=1)
    await event_log.create_topics([TopicSpec(name=topic)])
    producer = event_log.producer()
    await producer.start()
    try:
        await producer.send_batch(topic, [encode(c) for c in workload.setup()])
        for start in range(0, count, CHUNK):
            flow = workload.flow(min(CHUNK, count - start), ts_start=10 + start)
            await producer.send_batch(topic, [encode(c) for c in flow])
    finally:
        await producer.stop()


class EngineProcess:
    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.args = args + ["--metrics-port", str(port)]
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the engine; return seconds until /healthz answers 200."""
        started = time.perf_counter()
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gpux", "engine", *self.args], cwd=ROOT,
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        while http_status(self.port, "/healthz") != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"engine exited; see {self.log_path}")
            if time.perf_counter() - started > HEALTH_TIMEOUT_S:
                raise RuntimeError(f"engine not healthy in {HEALTH_TIMEOUT_S} s")
            time.sleep(0.02)
        return time.perf_counter() - started

    def wait_applied(self, count: int) -> None:
        """Wait until the engine has applied `count` commands (setup commands aside)."""
        deadline = time.perf_counter() + HEALTH_TIMEOUT_S
        while metric(self.port, "gpux_engine_commands_total") < count or metric(
            self.port, "gpux_engine_consumer_lag_commands"
        ) > 0:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"engine did not apply {count} commands; see {self.log_path}")
            time.sleep(0.5)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def measure(size: int, kafka: str | None, snapshot_every: int | None, work: Path) -> float:
    """Fill a log with `size` commands, apply them, SIGKILL, restart; return restart seconds."""
    namespace = f"bench{uuid.uuid4().hex[:8]}."
    data_dir = work / namespace
    log_args = (["--log", "kafka", "--kafka", kafka] if kafka
                else ["--log", "embedded", "--data-dir", str(data_dir)])
    event_log = open_log("kafka" if kafka else "embedded", kafka=kafka, data_dir=data_dir)

    async def fill() -> None:
        try:
            await write_commands(event_log, namespace + COMMANDS_TOPIC, size)
        finally:
            await event_log.close()

    asyncio.run(fill())
    args = [*log_args, "--topic-namespace", namespace, "--transactional-id", namespace,
            "--group-id", namespace]
    if snapshot_every is not None:
        args += ["--snapshot-dir", str(data_dir / "snapshots"),
                 "--snapshot-every-commands", str(snapshot_every)]
    engine = EngineProcess(args, free_port(), work / f"{namespace}engine.log")
    engine.start()
    engine.wait_applied(size)
    engine.kill()
    restart_s = engine.start()
    engine.kill()
    return restart_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--snapshot-every", type=int, default=200_000)
    parser.add_argument("--baseline-max", type=int, default=1_000_000)
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP"))
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"log: {'kafka ' + args.kafka if args.kafka else 'embedded'}; snapshots every "
          f"{args.snapshot_every:,} commands; target < {TARGET_S} s at 10,000,000")
    print(f"{'commands':>12} {'restart, snapshots (s)':>24} {'restart, full replay (s)':>26}")
    with tempfile.TemporaryDirectory(prefix="gpux-recovery-") as work:
        for size in sizes:
            with_snapshots = measure(size, args.kafka, args.snapshot_every, Path(work))
            baseline = (f"{measure(size, args.kafka, None, Path(work)):26.2f}"
                        if size <= args.baseline_max else f"{'(not run)':>26}")
            print(f"{size:>12,} {with_snapshots:24.2f} {baseline}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
