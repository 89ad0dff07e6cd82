"""The engine service on the embedded log: batches, snapshots, restart, replay equality."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from eventlog.embedded import EmbeddedLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC, EventLog
from matching_engine.config import EngineConfig
from matching_engine.core import Engine
from matching_engine.errors import EngineStateError
from matching_engine.service import EngineService
from matching_engine.workload import Workload
from protocol import encode
from tests.helpers import eventually, read_topic


async def append_commands(event_log: EventLog, payloads: list[bytes]) -> None:
    producer = event_log.producer()
    await producer.start()
    try:
        await producer.send_batch(COMMANDS_TOPIC, payloads)
    finally:
        await producer.stop()


def replay(commands: list[bytes]) -> list[bytes]:
    from protocol import decode_command

    engine = Engine()
    return [encode(e) for command in commands for e in engine.apply(decode_command(command))]


async def run_until_applied(event_log: EventLog, config: EngineConfig, count: int) -> EngineService:
    service = EngineService(event_log, config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await eventually(
            lambda: task.done() or service.next_offset >= count,
            message=f"engine applied {count} commands",
        )
    finally:
        stop.set()
        await task
    return service


def workload_payloads(count: int) -> list[bytes]:
    workload = Workload(instruments=3, accounts=8, seed=11)
    return [encode(command) for command in workload.setup() + workload.flow(count)]


async def test_restart_from_snapshot_publishes_each_event_exactly_once(tmp_path: Path) -> None:
    payloads = workload_payloads(3000)
    half = len(payloads) // 2
    config = EngineConfig(batch_size_max=64, snapshot_every_commands=400,
                          snapshot_dir=tmp_path / "snapshots")
    event_log = EmbeddedLog.open(tmp_path / "log")
    try:
        await event_log.create_topics([])
        first = EngineService(event_log, config)
        await append_commands_after_topics(event_log, first, payloads[:half])
        await run_until_applied(event_log, config, half)
        await append_commands(event_log, payloads[half:])
        second = await run_until_applied(event_log, config, len(payloads))
        # A snapshot comes due every 400 commands, but one due while the last is still being
        # written is skipped: recovery starts from some snapshot, not from the log's start.
        assert second.stats.recovered_commands < half, "recovery started from a snapshot"
        events = await read_topic(event_log, EVENTS_TOPIC)
    finally:
        await event_log.close()
    assert events == replay(payloads)


async def append_commands_after_topics(
    event_log: EventLog, service: EngineService, payloads: list[bytes]
) -> None:
    from eventlog.port import TopicSpec

    await event_log.create_topics([TopicSpec(name=service.config.commands_topic),
                                   TopicSpec(name=service.config.events_topic)])
    await append_commands(event_log, payloads)


@asynccontextmanager
async def applied_log(tmp_path: Path, payloads: list[bytes],
                      config: EngineConfig) -> AsyncIterator[EmbeddedLog]:
    """An embedded log holding the payloads as commands, all applied by one run of the
    engine; closed on the way out."""
    event_log = EmbeddedLog.open(tmp_path / "log")
    try:
        await append_commands_after_topics(event_log, EngineService(event_log, config), payloads)
        await run_until_applied(event_log, config, len(payloads))
        yield event_log
    finally:
        await event_log.close()


async def test_recovery_without_snapshots_replays_the_whole_log(tmp_path: Path) -> None:
    payloads = workload_payloads(800)
    config = EngineConfig(batch_size_max=50)
    async with applied_log(tmp_path, payloads, config) as event_log:
        again = await run_until_applied(event_log, config, len(payloads))
        assert again.stats.recovered_commands == len(payloads)
        assert again.engine.seq == len(await read_topic(event_log, EVENTS_TOPIC))


async def test_engine_refuses_to_run_when_the_event_log_disagrees(tmp_path: Path) -> None:
    config = EngineConfig(batch_size_max=50)
    async with applied_log(tmp_path, workload_payloads(200), config) as event_log:
        producer = event_log.producer()
        await producer.start()
        await producer.send(EVENTS_TOPIC, b'{"type":"command_rejected","seq":999999,"ts":1,'
                                          b'"command":"x","reason":"invalid_command"}')
        await producer.stop()
        service = EngineService(event_log, config)
        stop = asyncio.Event()
        try:
            await service.run(stop)
        except EngineStateError as error:
            assert "999999" in str(error)
        else:
            raise AssertionError("the engine ran on an event log it disagrees with")
