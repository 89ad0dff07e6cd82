"""Helpers shared by tests: wait for a condition instead of sleeping; stream payloads to a
topic and read a whole topic back; stop a service's process cleanly, or kill it after a
failure."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eventlog.port import EventLog
from eventlog.reading import read_until, settled_end_offset
from harness.paths import tail

STOP_TIMEOUT_S = 30
FEED_CHUNK = 20


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def feed(event_log: EventLog, topic: str, payloads: list[bytes], pause_s: float = 0.0,
               chunk_size: int = FEED_CHUNK) -> None:
    """Send the payloads as a stream of batches of `chunk_size`, `pause_s` apart."""
    producer = event_log.producer()
    await producer.start()
    try:
        for start in range(0, len(payloads), chunk_size):
            await producer.send_batch(topic, payloads[start:start + chunk_size])
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def read_topic(event_log: EventLog, topic: str, partition: int = 0) -> list[bytes]:
    """Return the values of every committed record of a partition, from its start.

    Reads up to the settled end (eventlog.reading): on Kafka a transaction committed just
    before is then visible in full, markers included."""
    end_offset = await settled_end_offset(event_log, topic, partition)
    consumer = event_log.consumer(topic, partition=partition, start="earliest")
    await consumer.start()
    try:
        return [record.value for record in await read_until(consumer, end_offset)]
    finally:
        await consumer.stop()


def stop_cleanly(process: subprocess.Popen[Any], log_path: Path) -> None:
    """Ask the process to stop (SIGTERM) and check it exits with 0; fail with its log's tail."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0, tail(log_path, 40)


def kill_if_running(process: subprocess.Popen[Any]) -> None:
    """Kill and reap the process if it still runs: the cleanup after a test failed early."""
    if process.poll() is None:
        process.kill()
        process.wait()
