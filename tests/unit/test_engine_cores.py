"""The engine service on the native core: the same event bytes as the Python core, restart
from the snapshots of either core, and records that are not JSON lines (blank, with line
breaks) applied as the Python core applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlog.embedded import EmbeddedLog
from eventlog.port import EVENTS_TOPIC, EventLog
from matching_engine.config import EngineConfig
from matching_engine.cores import Core, NativeCore, PythonCore, equivalent_line
from matching_engine.service import EngineService
from tests.unit.test_engine_service_embedded import (
    append_commands_after_topics,
    replay,
    run_until_applied,
    workload_payloads,
)

gpux_native = pytest.importorskip("gpux_native")


async def read_all(event_log: EventLog, topic: str) -> list[bytes]:
    end = await event_log.end_offset(topic)
    consumer = event_log.consumer(topic, start="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        while await consumer.position() < end:
            values += [record.value for record in await consumer.getmany(1000, 200)]
    finally:
        await consumer.stop()
    return values

ODD_RECORDS = [
    b"", b" ", b"\n", b"\r\n", b"x", b"\x0b",
    b'{"type":"deposit",\n"ts":5,"account":"a","asset":"USDC","amount":"7"}',
    b'{"type":"deposit","ts":5,"account":"a","asset":"USDC","amount":"7"}\r',
    b'{"type":"deposit","ts":5,"account":"a\nb","asset":"USDC","amount":"7"}',
    b'  {"type":"tick","ts":9}',
    b'{"type":"new_order","ts":10,"account":"a","client_order_id":"c\r"}',
]


def test_native_core_applies_odd_records_as_the_python_core_does() -> None:
    payloads = workload_payloads(300)
    mixed = [record for index, payload in enumerate(payloads)
             for record in ([payload, ODD_RECORDS[index % len(ODD_RECORDS)]]
                            if index % 7 == 0 else [payload])]
    python, native = PythonCore(), NativeCore()
    for start in range(0, len(mixed), 97):
        batch = mixed[start:start + 97]
        assert native.apply_records(batch) == python.apply_records(batch)
    assert native.seq == python.seq


def test_equivalent_line_decodes_as_the_record() -> None:
    import msgspec

    from protocol import MalformedCommand, decode_command

    def as_applied(raw: bytes) -> object:
        command = decode_command(raw)
        if isinstance(command, MalformedCommand):
            return msgspec.structs.replace(command, error="")
        return command

    for record in ODD_RECORDS:
        line = equivalent_line(record)
        assert line.strip() and b"\n" not in line and b"\r" not in line
        assert as_applied(line) == as_applied(record)


async def test_each_core_recovers_from_the_snapshots_of_the_other(tmp_path: Path) -> None:
    payloads = workload_payloads(3000)
    half = len(payloads) // 2
    snapshot_dir = tmp_path / "snapshots"

    def config(core: str) -> EngineConfig:
        return EngineConfig(batch_size_max=64, snapshot_every_commands=400,
                            snapshot_dir=snapshot_dir, core=core)

    event_log = EmbeddedLog.open(tmp_path / "log")
    try:
        service = EngineService(event_log, config("native"))
        await append_commands_after_topics(event_log, service, payloads[:half])
        await run_until_applied(event_log, config("native"), half)
        python = await run_until_applied(event_log, config("python"), half)
        assert python.stats.recovered_commands < half  # from a native snapshot
        await append_commands_after_topics(event_log, service, payloads[half:])
        await run_until_applied(event_log, config("python"), len(payloads))
        native = await run_until_applied(event_log, config("native"), len(payloads))
        assert native.stats.recovered_commands < len(payloads) - half  # a Python one
        events = await read_all(event_log, EVENTS_TOPIC)
        assert native.core.seq == len(events)
    finally:
        await event_log.close()
    assert events == replay(payloads)


async def test_native_service_publishes_the_python_core_events_and_recovers(
    tmp_path: Path,
) -> None:
    payloads = workload_payloads(1500)
    config = EngineConfig(batch_size_max=64, core="native")
    event_log = EmbeddedLog.open(tmp_path / "log")
    try:
        await append_commands_after_topics(event_log, EngineService(event_log, config),
                                           payloads)
        await run_until_applied(event_log, config, len(payloads))
        again = await run_until_applied(event_log, config, len(payloads))
        assert again.stats.recovered_commands == len(payloads)
        events = await read_all(event_log, EVENTS_TOPIC)
        assert again.core.seq == len(events)
    finally:
        await event_log.close()
    assert events == replay(payloads)


def test_both_cores_answer_the_core_protocol_alike() -> None:
    """One contract, two cores: after the same records the same seq, final state, snapshot
    digest and invariants, and a snapshot of one restores into the other."""
    cores: list[Core] = [PythonCore(), NativeCore()]
    records = workload_payloads(3_000)
    for core in cores:
        core.apply_records(records[:2_000])
        core.replay(records[2_000:])
    python, native = cores
    assert python.seq == native.seq > 0
    assert python.final_state() == native.final_state()
    assert python.digest() == native.digest()
    assert python.validate() is None and native.validate() is None
    assert NativeCore.restore(python.snapshot()).digest() == python.digest()
    assert PythonCore.restore(native.snapshot()).digest() == native.digest()
