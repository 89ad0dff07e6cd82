"""The engine on real Kafka, killed with SIGKILL again and again under a steady stream.

Afterwards the event topic (read_committed) must equal, event for event, `replay` over the
command topic: no gap, no duplicate seq, no lost fill.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from eventlog.errors import LogError
from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, EventLog, TopicSpec
from matching_engine.core import Engine
from matching_engine.replay import replay_lines
from matching_engine.workload import Workload
from protocol import decode_event, encode
from tests.helpers import eventually, feed, read_topic

ROOT = Path(__file__).resolve().parents[2]
KILLS = 4
FLOW_COMMANDS = 6000
FEED_CHUNK = 40


def start_engine(
    bootstrap: str, namespace: str, snapshot_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "engine", "--log", "kafka", "--kafka", bootstrap,
             "--topic-namespace", namespace, "--transactional-id", f"{namespace}engine",
             "--group-id", f"{namespace}engine", "--snapshot-dir", str(snapshot_dir),
             "--snapshot-every-commands", "900", "--batch-size-max", "40",
             "--metrics-port", "0"],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def recoveries(log_path: Path) -> int:
    """How many engines have logged their recovery so far."""
    return log_path.read_text().count("recovered: snapshot at")


async def committed(event_log: EventLog, group: str, topic: str) -> int:
    """The group's committed offset; 0 while the group coordinator is still coming up."""
    try:
        return await event_log.committed_offset(group, topic) or 0
    except LogError as error:
        if error.retriable:
            return 0
        raise


async def test_engine_killed_repeatedly_publishes_exactly_the_replay(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    commands_topic, events_topic = namespace + COMMANDS_TOPIC, namespace + EVENTS_TOPIC
    group = f"{namespace}engine"
    workload = Workload(instruments=4, accounts=16, seed=5)
    payloads = [encode(c) for c in workload.setup() + workload.flow(FLOW_COMMANDS)]
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    log_path = tmp_path / "engine.log"
    rng = random.Random(3)
    engine = None
    try:
        await event_log.create_topics([TopicSpec(name=commands_topic),
                                       TopicSpec(name=events_topic)])
        feeder = asyncio.create_task(feed(event_log, commands_topic, payloads, pause_s=0.005,
                                      chunk_size=FEED_CHUNK))
        engine = start_engine(kafka_bootstrap, namespace, tmp_path / "snapshots", log_path)
        for kill in range(KILLS):
            progress = (kill + 1) * len(payloads) // (KILLS + 2)

            async def reached(target: int = progress, starts: int = kill + 1) -> bool:
                """The engine started last has recovered, and the log is at `target`."""
                return (recoveries(log_path) >= starts
                        and await committed(event_log, group, commands_topic) >= target)

            await eventually(reached, timeout_s=120, message=f"engine reached offset {progress}")
            await asyncio.sleep(rng.uniform(0, 0.05))
            engine.send_signal(signal.SIGKILL)
            engine.wait(timeout=30)
            engine = start_engine(kafka_bootstrap, namespace, tmp_path / "snapshots", log_path)
        await feeder

        async def done() -> bool:
            """Every command committed, by an engine that recovered after the last kill."""
            return recoveries(log_path) >= KILLS + 1 and await committed(
                event_log, group, commands_topic) >= len(payloads)

        await eventually(done, timeout_s=180, message="engine applied every command")
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=30) == 0
        engine = None
        commands = await read_topic(event_log, commands_topic)
        events = await read_topic(event_log, events_topic)
    finally:
        if engine is not None:
            engine.kill()
            engine.wait()
        await event_log.close()
    assert commands == payloads
    replayed = [line.rstrip(b"\n") for line in replay_lines(commands, Engine())]
    seqs = [decode_event(event).seq for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), "event seq has a gap or a duplicate"
    assert len(events) == len(replayed)
    assert events == replayed, f"event log differs from replay; engine log: {log_path}"
    assert recoveries(log_path) == KILLS + 1
