"""The transport's floor under the order path: two Kafka hops shaped like it, nothing else.

    python -m benchmarks.kafka_floor [--quick] [--rate 3400] [--json PATH]

An order travels gateway -> Kafka -> engine -> Kafka -> gateway. This benchmark keeps the
two hops and drops everything else (websockets, requests, matching, the projection):

- a *source* process, shaped like the gateway: records arrive at `--rate` per second
  (Poisson), are written to a commands topic as the gateway writes (one idempotent
  `send_batch` of everything queued, awaiting its acknowledgement before the next), and are
  read back from an events topic `read_uncommitted` with the gateway's fetch wait (5 ms);
- a *relay* process, shaped like the engine, copying each command to the events topic:
  - `transactional`: the engine's own loop (`eventlog.processor.TransactionalProcessor`,
    identity transform), batches as `gpux engine`'s, a transaction committed every 100 ms;
  - `untransacted`: the same read-ahead, but an idempotent producer that writes each batch
    without a transaction and without waiting for its acknowledgement (what an engine
    without per-batch transactions could do at best).

Latency is from a record's scheduled arrival to its return. The baseline, measured in the
same run on the same broker, is the end-to-end benchmark's plain one-hop round trip; the
ratios are printed beside issue 15's targets for a whole order (p50 <= 3x, p99 <= 4x), which
this floor is a lower bound of. The default rate is 20% of the single-order saturation of
the latest end-to-end runs (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.e2e_kafka import kafka_round_trips, warm_broker
from benchmarks.support import ChildProcess, Cpu, LatencyHistogram

MODES = ("transactional", "untransacted")
STAMP = struct.Struct(">q")
PAYLOAD_PADDING = b"x" * 150  # about a new_order command's size
RELAY_READY_S = 5.0
RETURN_TIMEOUT_S = 30.0  # after the last offer, for the records still on their way


async def relay(kafka: str, namespace: str, mode: str) -> None:
    """Copy every command to the events topic until killed."""
    from eventlog.kafka import KafkaConfig, KafkaLog
    from eventlog.processor import ProcessorConfig, TransactionalProcessor
    from matching_engine.config import EngineConfig

    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka))
    engine = EngineConfig()
    commands, events = namespace + "commands", namespace + "events"
    if mode == "transactional":
        processor = TransactionalProcessor(
            event_log,
            ProcessorConfig(commands, events, namespace + "relay", namespace + "relay",
                            batch_size_max=engine.batch_size_max,
                            batch_interval_ms=engine.batch_interval_ms,
                            commit_interval_ms=100),
            lambda records: [record.value for record in records])
        await processor.start()
        await processor.run(asyncio.Event())
        return
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    from eventlog.readahead import ReadAhead

    consumer = event_log.consumer(commands, start="earliest", isolation="read_committed")
    await consumer.start()
    reader = ReadAhead(consumer, records_max=2 * engine.batch_size_max)
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True,
                                linger_ms=0)
    await producer.start()
    unacknowledged: list[asyncio.Future[Any]] = []
    while True:
        records = await reader.take(engine.batch_size_max, engine.batch_interval_ms)
        if not records:
            continue
        batch = producer.create_batch()
        for record in records:
            batch.append(key=None, value=record.value, timestamp=None)
        unacknowledged.append(await producer.send_batch(batch, events, partition=0))
        for future in [f for f in unacknowledged if f.done()]:
            future.result()  # a failed write stops the relay
            unacknowledged.remove(future)


async def source(kafka: str, namespace: str, rate: float, warmup_s: float, seconds: float,
                 out: Path) -> None:
    """Offer records at `rate` for `warmup_s + seconds`; write to `out` (JSON) how many were
    offered in the last `seconds` and the latencies (µs) of those that came back."""
    from eventlog.kafka import KafkaConfig, KafkaLog

    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka, fetch_max_wait_ms=5))
    producer = event_log.producer(None)
    await producer.start()
    consumer = event_log.consumer(namespace + "events", start="latest",
                                  isolation="read_uncommitted")
    await consumer.start()
    queued: list[bytes] = []
    wake = asyncio.Event()
    latencies_us: list[int] = []
    measured_sent = 0
    record_from_ns = time.monotonic_ns() + int(warmup_s * 1e9)

    async def send() -> None:
        while True:
            await wake.wait()
            wake.clear()
            batch = queued[:]
            queued.clear()
            await producer.send_batch(namespace + "commands", batch)

    async def receive() -> None:
        while True:
            for record in await consumer.getmany(1000, 100):
                scheduled_ns = STAMP.unpack_from(record.value)[0]
                if scheduled_ns >= record_from_ns:
                    latencies_us.append((time.monotonic_ns() - scheduled_ns) // 1000)

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
    due_ns = time.monotonic_ns()
    end_ns = record_from_ns + int(seconds * 1e9)
    while due_ns < end_ns:
        due_ns += int(random.expovariate(rate) * 1e9)
        wait_ns = due_ns - time.monotonic_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        queued.append(STAMP.pack(due_ns) + PAYLOAD_PADDING)
        wake.set()
        measured_sent += due_ns >= record_from_ns
    deadline_s = time.monotonic() + RETURN_TIMEOUT_S
    while len(latencies_us) < measured_sent and time.monotonic() < deadline_s:
        await asyncio.sleep(0.05)
    for task in tasks:
        if task.done():
            task.result()  # a failed send or read fails the run
        task.cancel()
    out.write_text(json.dumps({"sent": measured_sent, "latencies_us": latencies_us}))
    await consumer.stop()
    await producer.stop()
    await event_log.close()


def measure(kafka: str, kafka_pid: int, work: Path, mode: str,
            args: argparse.Namespace) -> dict[str, Any]:
    from eventlog.kafka import KafkaConfig, KafkaLog
    from eventlog.port import TopicSpec

    namespace = f"floor{uuid.uuid4().hex[:8]}."

    async def create() -> None:
        event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka))
        try:
            await event_log.create_topics([TopicSpec(name=namespace + "commands"),
                                           TopicSpec(name=namespace + "events")])
        finally:
            await event_log.close()

    asyncio.run(create())
    this = [sys.executable, "-m", "benchmarks.kafka_floor"]
    relay_process = ChildProcess(f"relay-{mode}", [
        *this, "relay", "--kafka", kafka, "--namespace", namespace, "--mode", mode,
    ], work / f"relay-{mode}.log")
    out = work / f"latencies-{mode}.json"
    try:
        time.sleep(RELAY_READY_S)
        relay_process.check()
        source_process = ChildProcess(f"source-{mode}", [
            *this, "source", "--kafka", kafka, "--namespace", namespace,
            "--rate", str(args.rate), "--warmup-s", str(args.warmup_s),
            "--seconds", str(args.seconds), "--out", str(out),
        ], work / f"source-{mode}.log")
        cpu = Cpu({"kafka": [kafka_pid], "relay": [relay_process.pid],
                   "source": [source_process.pid]})
        time.sleep(args.warmup_s + 1)
        cpu.begin()
        time.sleep(args.seconds - 2)
        usage = cpu.end()
        if source_process.process.wait(args.seconds + 120) != 0:
            source_process.check()
    finally:
        relay_process.stop()
    outcome = json.loads(out.read_text())
    histogram = LatencyHistogram()
    for value_us in outcome["latencies_us"]:
        histogram.record_ns(value_us * 1000)
    return {"mode": mode, "sent": outcome["sent"], "returned": histogram.count,
            "latency": histogram.summary(), "cpu": usage}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from benchmarks.e2e_report import machine, without_histograms
    from harness.kafka import KAFKA_VERSION, KafkaService

    kafka_service = KafkaService(work / "kafka")
    print(f"starting Kafka {KAFKA_VERSION} (KRaft) ...", flush=True)
    kafka_service.start()
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                               "rate_per_s": args.rate}
    try:
        kafka = kafka_service.bootstrap_servers
        assert kafka_service.pid is not None
        print(f"warming the broker up for {args.broker_warmup_s:.0f} s ...", flush=True)
        asyncio.run(warm_broker(kafka, args.broker_warmup_s))
        figures["modes"] = []
        for mode in args.modes:
            print(f"{mode}: {args.rate:,.0f} records/s for {args.seconds:.0f} s ...", flush=True)
            figures["modes"].append(measure(kafka, kafka_service.pid, work, mode, args))
        print("baseline ...", flush=True)
        baseline = asyncio.run(kafka_round_trips(kafka, f"floor{uuid.uuid4().hex[:8]}.",
                                                 args.round_trips))
        figures["baseline_plain_hop"] = without_histograms(baseline["plain"])
    finally:
        kafka_service.stop()
    plain = figures["baseline_plain_hop"]
    for entry in figures["modes"]:
        entry["ratios"] = {"p50_vs_plain_hop": entry["latency"]["p50"] / plain["p50"],
                           "p99_vs_plain_hop": entry["latency"]["p99"] / plain["p99"]}
    return figures


def print_report(figures: dict[str, Any]) -> None:
    plain = figures["baseline_plain_hop"]
    print(f"\n=== two Kafka hops shaped like the order path, at {figures['rate_per_s']:,.0f} "
          f"records/s ===\n{figures['machine']}")
    print(f"baseline: plain one hop (produce -> read_uncommitted consume), same broker: "
          f"p50 {plain['p50']:.2f} ms, p99 {plain['p99']:.2f} ms")
    print(f"{'relay':<15}{'returned':>14}{'p50':>8}{'p99':>8}{'p99.9':>8}   {'p50/hop':>8}"
          f"{'p99/hop':>8}   cpu (cores)")
    for entry in figures["modes"]:
        latency, ratio = entry["latency"], entry["ratios"]
        returned = f"{entry['returned']:,}/{entry['sent']:,}"
        print(f"{entry['mode']:<15}{returned:>14}{latency['p50']:8.2f}{latency['p99']:8.2f}"
              f"{latency['p99.9']:8.2f}   {ratio['p50_vs_plain_hop']:7.2f}x"
              f"{ratio['p99_vs_plain_hop']:7.2f}x   {entry['cpu']}")
    print("issue 15's targets for a whole order at 20% load: p50 <= 3x, p99 <= 4x the plain "
          "hop; these two hops alone are a lower bound of an order's ratios.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role")
    relay_parser = sub.add_parser("relay")
    relay_parser.add_argument("--kafka", required=True)
    relay_parser.add_argument("--namespace", required=True)
    relay_parser.add_argument("--mode", choices=MODES, required=True)
    source_parser = sub.add_parser("source")
    source_parser.add_argument("--kafka", required=True)
    source_parser.add_argument("--namespace", required=True)
    source_parser.add_argument("--rate", type=float, required=True)
    source_parser.add_argument("--warmup-s", type=float, required=True)
    source_parser.add_argument("--seconds", type=float, required=True)
    source_parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="short phases (about 1.5 minutes)")
    parser.add_argument("--rate", type=float, default=3400.0, help="records per second")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"relays to measure, in order, of {', '.join(MODES)}")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.role is not None:
        import uvloop

        if args.role == "relay":
            uvloop.run(relay(args.kafka, args.namespace, args.mode))
        else:
            uvloop.run(source(args.kafka, args.namespace, args.rate, args.warmup_s,
                              args.seconds, args.out))
        return 0
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    args.seconds, args.warmup_s = (10.0, 4.0) if args.quick else (30.0, 10.0)
    args.broker_warmup_s = 20.0 if args.quick else 60.0
    args.round_trips = 300 if args.quick else 1000
    with tempfile.TemporaryDirectory(prefix="gpux-floor-") as work:
        figures = run(args, Path(work))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    print_report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
