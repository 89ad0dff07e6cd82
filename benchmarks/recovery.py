"""Engine restart time after SIGKILL against command-log length, snapshots on and off.

    python -m benchmarks.recovery [--sizes 100000,1000000,10000000] [--kafka HOST:PORT|start]

For each size it writes that many commands (the `Workload` flow) to a fresh log, runs
`gpux engine` over them with snapshots every `--snapshot-every` commands, kills it with
SIGKILL, starts it again and times how long until `/healthz` answers 200 (process start,
snapshot load, re-applying the commands after the snapshot, the event-log seq check). The
baseline in the same run is the same restart with snapshots off (full replay), measured up
to `--baseline-max` commands. Embedded log by default; `--kafka` uses a real broker
(`--kafka start`: a Kafka 4.1.1 broker of the harness's own, started for the run).

Each restart is also split: the engine's own recovery (`gpux_engine_recovery_seconds`:
committed offset, snapshot load, re-applying the commands after it, the seq check) and the
rest (interpreter start and imports, opening the log, the metrics server). The embedded
log indexes (and checks the CRC of) every frame of its files when it opens, so that rest
grows with the log; a Kafka broker serves the same offsets without such a scan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.support import ChildProcess, engine_metrics, http_text
from eventlog.flags import open_log
from eventlog.port import COMMANDS_TOPIC, EventLog, TopicSpec
from harness.ports import free_port
from matching_engine.config import EngineConfig
from matching_engine.cores import CORES
from matching_engine.workload import Workload
from protocol import encode

TARGET_S = 5.0
CHUNK = 50_000
HEALTH_TIMEOUT_S = 1800.0


def metric(port: int, name: str) -> float:
    return engine_metrics(port).get(name, 0.0)


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
    """`gpux engine` with these arguments, started, killed and started again."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.command = [sys.executable, "-m", "gpux", "engine", *args, "--metrics-port", str(port)]
        self.port = port
        self.log_path = log_path
        self.child: ChildProcess | None = None

    def start(self) -> float:
        """Start the engine; return seconds until /healthz answers 200."""
        started = time.perf_counter()
        child = self.child = ChildProcess("engine", self.command, self.log_path)
        while http_text(self.port, "/healthz") is None:  # None until it answers 200
            child.check()
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
        assert self.child is not None
        self.child.process.send_signal(signal.SIGKILL)
        self.child.process.wait()


def measure(size: int, kafka: str | None, snapshot_every: int | None, work: Path,
            core: str) -> tuple[float, float, str]:
    """Fill a log with `size` commands, apply them, SIGKILL, restart; return the seconds until
    healthy, the engine's own recovery seconds of that restart and its log line about it."""
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
            "--group-id", namespace, "--core", core]
    if snapshot_every is not None:
        args += ["--snapshot-dir", str(data_dir / "snapshots"),
                 "--snapshot-every-commands", str(snapshot_every)]
    engine = EngineProcess(args, free_port(), work / f"{namespace}engine.log")
    engine.start()
    engine.wait_applied(size)
    engine.kill()
    restart_s = engine.start()
    recovery_s = metric(engine.port, "gpux_engine_recovery_seconds")
    engine.kill()
    lines = [line for line in engine.log_path.read_text().splitlines() if "recovered:" in line]
    return restart_s, recovery_s, lines[-1].split("INFO ", 1)[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--snapshot-every", type=int,
                        default=EngineConfig.snapshot_every_commands)
    parser.add_argument("--baseline-max", type=int, default=1_000_000)
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP"),
                        help="bootstrap servers, or 'start' for a broker of this run's own")
    parser.add_argument("--core", choices=CORES, default=EngineConfig.core,
                        help="the engine's matching core")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"log: {'kafka ' + args.kafka if args.kafka else 'embedded'}; {args.core} core; "
          f"snapshots every "
          f"{args.snapshot_every:,} commands; target < {TARGET_S} s at 10,000,000")
    print("restart: seconds from exec to /healthz 200 (of which: the engine's own recovery)")
    print(f"{'commands':>12} {'restart, snapshots (s)':>24} {'restart, full replay (s)':>26}"
          f" {'target':>8}")
    with tempfile.TemporaryDirectory(prefix="gpux-recovery-") as work:
        broker = None
        if args.kafka == "start":
            from harness.kafka import KafkaService

            broker = KafkaService(Path(work) / "kafka")
            broker.start()
            args.kafka = broker.bootstrap_servers
        try:
            run_sizes(sizes, args, Path(work))
        finally:
            if broker is not None:
                broker.stop()
    return 0


def run_sizes(sizes: list[int], args: argparse.Namespace, work: Path) -> None:
    """Measure and print one row per size."""
    for size in sizes:
        restart_s, recovery_s, detail = measure(size, args.kafka, args.snapshot_every, work,
                                                 args.core)
        with_snapshots = f"{restart_s:.2f} ({recovery_s:.2f})"
        met = "met" if restart_s < TARGET_S else "NOT met"
        if size <= args.baseline_max:
            restart_s, recovery_s, _ = measure(size, args.kafka, None, work, args.core)
            baseline = f"{restart_s:.2f} ({recovery_s:.2f})"
        else:
            baseline = "(not run)"
        print(f"{size:>12,} {with_snapshots:>24} {baseline:>26} {met:>8}", flush=True)
        print(f"{'':>12} engine: {detail}", flush=True)

if __name__ == "__main__":
    raise SystemExit(main())
