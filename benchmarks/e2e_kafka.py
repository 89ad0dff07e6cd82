"""The end-to-end benchmark's Kafka baselines: one plain and one transactional hop through
the eventlog adapter, and engine-shaped transactions that warm a fresh broker's JIT first."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from benchmarks.support import LatencyHistogram


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
