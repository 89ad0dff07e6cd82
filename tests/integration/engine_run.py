"""An engine run in the test's own process on real Kafka, on a namespace of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import Producer
from matching_engine.config import EngineConfig
from matching_engine.service import EngineService
from protocol import ListInstrument, encode

READY_TIMEOUT_S = 60


@dataclass(frozen=True)
class EngineRun:
    event_log: KafkaLog
    producer: Producer  # writes to the commands topic, among others
    config: EngineConfig


@asynccontextmanager
async def engine_with_instrument(bootstrap: str, prefix: str, symbol: str
                                 ) -> AsyncIterator[EngineRun]:
    """Run the engine on a fresh `prefix`... namespace with `symbol` listed, deliverable in a
    day; stop it and close its log on the way out."""
    namespace = f"{prefix}{uuid.uuid4().hex[:8]}."
    config = EngineConfig(topic_namespace=namespace, transactional_id=f"{namespace}engine",
                          group_id=f"{namespace}engine")
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=bootstrap))
    service = EngineService(event_log, config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    producer = event_log.producer()
    await producer.start()
    try:
        await asyncio.wait_for(service.ready.wait(), READY_TIMEOUT_S)
        now = time.time_ns()
        await producer.send(config.commands_topic, encode(ListInstrument(
            ts=now, symbol=symbol, gpu="H100-SXM-80GB", region="eu-west",
            delivery_start=now + 86_400 * 10**9, delivery_hours=1, tick_size="0.01",
            max_order_quantity=1000, maker_fee_bps=0, taker_fee_bps=0,
        )))  # fmt: skip
        yield EngineRun(event_log, producer, config)
    finally:
        stop.set()
        await task
        await producer.stop()
        await event_log.close()
