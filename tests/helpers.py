"""Helpers shared by tests: wait for a condition instead of sleeping; read a whole topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from eventlog.port import EventLog
from eventlog.reading import read_until, settled_end_offset


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
