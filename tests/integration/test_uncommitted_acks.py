"""Events read before the engine commits them, on real Kafka: what a gateway reads
read_uncommitted before an engine crash is, seq for seq and byte for byte, what the
restarted engine commits; the gateway's sequencer drops the copies and finds no divergence.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from eventlog.kafka import KafkaLog
from eventlog.port import Isolation, Record, TopicSpec
from eventlog.reading import read_until
from gateway.sequencer import EventSequencer
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.replay import replay_lines
from matching_engine.service import EngineService
from matching_engine.workload import Workload
from protocol import encode
from tests.helpers import eventually, feed, read_topic

READY_TIMEOUT_S = 60


async def read_now(event_log: KafkaLog, topic: str, isolation: Isolation) -> list[bytes]:
    """Every record of the partition a reader at `isolation` sees now, not waiting for open
    transactions (read_uncommitted: aborted ones too)."""
    end = await event_log.end_offset(topic, isolation=isolation)
    async with event_log.consumer(topic, start="earliest", isolation=isolation) as consumer:
        return [record.value for record in await read_until(consumer, end)]


@pytest.mark.parametrize("snapshots", [False, True], ids=["replay", "snapshot"])
async def test_events_read_before_an_engine_crash_are_what_the_restarted_engine_commits(
    kafka_log: KafkaLog, namespace: str, tmp_path: Path, snapshots: bool
) -> None:
    """With `snapshots`, the crashed engine commits every 100 commands and snapshots every
    150: the restarted one restores a snapshot, replays to the last commit and writes the
    open transaction's events again from there."""
    config = EngineConfig(topic_namespace=namespace, transactional_id=f"{namespace}engine",
                          group_id=f"{namespace}engine", commit_interval_ms=3_600_000,
                          commit_records_max=100 if snapshots else 1_000_000,
                          snapshot_dir=tmp_path / "snapshots" if snapshots else None,
                          snapshot_every_commands=150, batch_size_max=10)
    await kafka_log.create_topics([TopicSpec(name=config.commands_topic),
                                   TopicSpec(name=config.events_topic)])
    workload = Workload(instruments=2, accounts=8, seed=3)
    commands = [encode(c) for c in [*workload.setup(), *workload.flow(400)]]
    event_count = len(list(replay_lines(commands, Engine())))

    crashed = EngineService(kafka_log, config)
    task = asyncio.create_task(crashed.run(asyncio.Event()))
    await asyncio.wait_for(crashed.ready.wait(), READY_TIMEOUT_S)
    await feed(kafka_log, config.commands_topic, commands)
    seen_before: list[bytes] = []

    async def all_events_visible_uncommitted() -> bool:
        seen_before[:] = await read_now(kafka_log, config.events_topic, "read_uncommitted")
        return crashed.core.seq == event_count and len(seen_before) >= event_count

    await eventually(all_events_visible_uncommitted, timeout_s=60,
                     message="the crashing engine's events, read uncommitted")
    committed_before = await kafka_log.committed_offset(config.group_id,
                                                        config.commands_topic) or 0
    committed_events_before = await read_now(kafka_log, config.events_topic, "read_committed")
    assert committed_before < len(commands)  # the last transaction is open
    assert (committed_before > 0) == snapshots
    task.cancel()  # no commit: the transaction stays open until the next engine fences it
    await asyncio.gather(task, return_exceptions=True)

    restarted = EngineService(kafka_log, dataclasses.replace(config, commit_interval_ms=0))
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    await asyncio.wait_for(restarted.ready.wait(), READY_TIMEOUT_S)
    if snapshots:
        assert restarted.snapshots is not None
        snapshot = restarted.snapshots.latest(committed_before)
        assert snapshot is not None and snapshot.command_offset > 0

    async def committed_all() -> bool:
        return restarted.next_offset == len(commands)

    await eventually(committed_all, timeout_s=60, message="the restarted engine's commit")
    stop.set()
    await task

    committed = await read_topic(kafka_log, config.events_topic)
    assert committed[:len(seen_before)] == seen_before  # the replies given were the truth
    everything = await read_now(kafka_log, config.events_topic, "read_uncommitted")
    sequencer = EventSequencer(window=100_000)
    applied = sequencer.fresh([Record(config.events_topic, 0, offset, None, value)
                               for offset, value in enumerate(everything)])
    assert [encode(event) for event in applied] == committed
    assert sequencer.duplicates == len(seen_before) - len(committed_events_before)
