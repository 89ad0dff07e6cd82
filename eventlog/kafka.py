"""Run the event log on Apache Kafka through aiokafka.

Producers are idempotent (`enable_idempotence=True`, `acks="all"`); with a transactional
id they write records and consumer offsets in Kafka transactions. Starting a transactional
producer runs InitProducerId, which fences older producers with the same id and completes
(aborts) a transaction a crashed one left open. Consumers read one assigned partition with
`enable_auto_commit=False`, by default at `read_committed`; they never join a group, the
group id only names whose committed offsets they read and write.

A read_committed consumer's end offset is the last stable offset: it counts transaction
markers, so "caught up" is `position() >= end_offset()`, and it stops short of a transaction
still open. Every wait on the broker is bounded by the timeouts in `KafkaConfig`. Errors
from aiokafka surface as `eventlog.errors` types with aiokafka's `retriable` flag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import TopicAlreadyExistsError, for_code  # type: ignore[import-untyped]

from eventlog.errors import LogClosedError, LogTimeoutError, TopicError
from eventlog.kafka_clients import KafkaConsumer, KafkaProducer
from eventlog.kafka_support import (
    KafkaConfig,
    bounded,
    new_consumer,
    retried,
    start_consumer,
    start_or_close,
)
from eventlog.port import (
    EventLog,
    Isolation,
    StartPosition,
    TopicSpec,
    validate_isolation,
)

__all__ = ["KafkaConfig", "KafkaConsumer", "KafkaLog", "KafkaProducer"]

_POLL_INTERVAL_S = 0.05


class KafkaLog(EventLog):
    """Hand out aiokafka-backed producers and consumers of one Kafka cluster."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._admin: AIOKafkaAdminClient | None = None
        self._offset_readers: dict[Isolation, AIOKafkaConsumer] = {}
        self._closed = False

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = await self._admin_client()
        new_topics = [
            NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in specs
        ]

        async def create() -> None:
            response = await admin.create_topics(
                new_topics, timeout_ms=self.config.request_timeout_ms
            )
            for topic_error in response.topic_errors:
                _raise_unless_created(topic_error[0], topic_error[1])

        await retried(create, self.config.request_timeout_ms, "create topics")
        await self._wait_topics_ready(admin, specs)

    async def _wait_topics_ready(
        self, admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]
    ) -> None:
        """Wait until every topic has its partitions, each with a leader."""
        deadline_s = time.monotonic() + self.config.topic_ready_timeout_ms / 1000
        names = [spec.name for spec in specs]
        while True:
            topics = await retried(
                lambda: admin.describe_topics(names),
                self.config.request_timeout_ms,
                "describe topics",
            )
            if _topics_ready(topics, specs):
                return
            if time.monotonic() >= deadline_s:
                raise LogTimeoutError(f"topics {names} not ready after creation")
            await asyncio.sleep(_POLL_INTERVAL_S)

    async def describe_topic_config(self, topic: str) -> dict[str, str]:
        """Return the broker's view of a topic's configs, name to value."""
        admin = await self._admin_client()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        responses = await retried(
            lambda: admin.describe_configs([resource]),
            self.config.request_timeout_ms,
            f"describe configs of {topic}",
        )
        configs: dict[str, str] = {}
        for response in responses:
            for error_code, error_message, _type, _name, entries in response.resources:
                if error_code != 0:
                    raise TopicError(f"cannot describe {topic}: {error_message}")
                configs.update({entry[0]: entry[1] for entry in entries})
        return configs

    def _new_producer(self, transactional_id: str | None) -> KafkaProducer:
        self._check_open()
        return KafkaProducer(self.config, transactional_id)

    def _new_consumer(self, topic: str, partition: int, group_id: str | None,
                      isolation: Isolation, start: StartPosition) -> KafkaConsumer:
        self._check_open()
        return KafkaConsumer(
            self.config, topic, partition, group_id, isolation, start, self._partitions_of
        )

    async def end_offset(
        self, topic: str, partition: int = 0, *, isolation: Isolation = "read_committed"
    ) -> int:
        validate_isolation(isolation)
        reader = await self._offset_reader(isolation)
        tp = KafkaTopicPartition(topic, partition)
        offsets = await bounded(
            reader.end_offsets([tp]), self.config.request_timeout_ms, f"end offset of {tp}"
        )
        return int(offsets[tp])

    async def committed_offset(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        admin = await self._admin_client()
        tp = KafkaTopicPartition(topic, partition)
        offsets = await retried(
            lambda: admin.list_consumer_group_offsets(group_id, partitions=[tp]),
            self.config.request_timeout_ms,
            f"committed offset of {group_id} on {tp}",
        )
        committed = offsets.get(tp)
        if committed is None or committed.offset < 0:
            return None
        return int(committed.offset)

    async def _partitions_of(self, topic: str) -> frozenset[int]:
        """Return the partition ids of `topic`, empty when the topic does not exist."""
        admin = await self._admin_client()
        topics = await retried(
            lambda: admin.describe_topics([topic]),
            self.config.request_timeout_ms,
            f"describe {topic}",
        )
        return frozenset(
            int(partition["partition"])
            for described in topics
            if described["topic"] == topic and described["error_code"] == 0
            for partition in described["partitions"]
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        readers = list(self._offset_readers.values())
        self._offset_readers.clear()
        for reader in readers:
            await reader.stop()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("Kafka log is closed")

    async def _admin_client(self) -> AIOKafkaAdminClient:
        self._check_open()
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id=f"{self.config.client_id}-admin",
                request_timeout_ms=self.config.request_timeout_ms,
            )
            await start_or_close(admin.start(), admin.close, self.config.start_timeout_ms,
                                 "start admin client")
            self._admin = admin
        return self._admin

    async def _offset_reader(self, isolation: Isolation) -> AIOKafkaConsumer:
        """Return a group-less consumer used only to ask for end offsets at `isolation`."""
        self._check_open()
        reader = self._offset_readers.get(isolation)
        if reader is None:
            reader = new_consumer(self.config, group_id=None, isolation=isolation)
            await start_consumer(reader, self.config)
            self._offset_readers[isolation] = reader
        return reader


def _raise_unless_created(topic: str, error_code: int) -> None:
    """Accept a topic that was created or already existed; raise for any other outcome."""
    error_type = for_code(error_code)
    if error_code == 0 or error_type is TopicAlreadyExistsError:
        return
    raise TopicError(
        f"cannot create topic {topic}: {error_type.__name__}",
        retriable=bool(error_type.retriable),
    )


def _topics_ready(topics: Sequence[dict[str, Any]], specs: Sequence[TopicSpec]) -> bool:
    """Tell whether metadata shows every spec'd topic with all partitions led.

    Raise TopicError when a topic exists with another partition count than its spec.
    """
    by_name = {topic["topic"]: topic for topic in topics}
    for spec in specs:
        topic = by_name.get(spec.name)
        if topic is None or topic["error_code"] != 0:
            return False
        partitions = topic["partitions"]
        if partitions and len(partitions) != spec.partitions:
            raise TopicError(
                f"topic {spec.name} exists with {len(partitions)} partitions, "
                f"spec asks for {spec.partitions}"
            )
        if not partitions or any(p["error_code"] != 0 or p["leader"] < 0 for p in partitions):
            return False
    return True
