"""Produce to and consume from Kafka through aiokafka, behind the log port.

Producers are idempotent (`enable_idempotence=True`, `acks="all"`); with a transactional
id they write records and consumer offsets in Kafka transactions. Consumers read one
assigned partition with `enable_auto_commit=False`; they never join a consumer group, the
group id only names whose committed offsets they read and write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import aiokafka.producer.sender  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced  # type: ignore[import-untyped]

from eventlog.errors import (
    FencedError,
    LogClosedError,
    LogError,
    TopicError,
    TransactionStateError,
)
from eventlog.kafka_support import (
    KafkaConfig,
    bounded,
    new_consumer,
    start_consumer,
    start_or_close,
    translated,
)
from eventlog.port import (
    ISOLATIONS,
    Consumer,
    Isolation,
    Producer,
    Record,
    StartPosition,
    TopicPartition,
    check_record_bytes,
)

__all__ = ["KafkaConsumer", "KafkaProducer"]

# The broker writes a transaction's markers after answering EndTxn; a transaction begun
# before they are written is refused CONCURRENT_TRANSACTIONS (KAFKA-5477), and aiokafka
# retries after BACKOFF_OVERRIDE (20 ms). An engine committing back to back met that wait
# in most batches (~25 ms a batch, measured by benchmarks/e2e.py); markers take about a
# millisecond here, so retry after 1 ms. The retries stay bounded by the request timeouts.
TRANSACTION_RETRY_BACKOFF_S = 0.001
aiokafka.producer.sender.BACKOFF_OVERRIDE = TRANSACTION_RETRY_BACKOFF_S


class KafkaProducer(Producer):
    """Send through an idempotent (optionally transactional) aiokafka producer.

    Inside a transaction, sends only queue records; `commit` waits for every record to be
    acknowledged and then commits, so a transaction is never committed without one of its
    records. A send raises the failure of any earlier send of the transaction that has
    failed by then, so the caller aborts instead of writing past it. After `FencedError`
    the producer is dead; after a timeout from `commit` its state is unknown: stop it and
    start a new one, which aborts what was left open.
    """

    def __init__(self, config: KafkaConfig, transactional_id: str | None) -> None:
        self.transactional_id = transactional_id
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        self._stopped = False
        self._fenced = False
        self._in_transaction = False
        # one future per queued record batch of the open transaction, and its record count
        self._pending: list[asyncio.Future[Any]] = []
        self._pending_records = 0
        self._partitions: dict[str, frozenset[int]] = {}

    async def start(self) -> None:
        if self._producer is not None or self._stopped:
            raise LogClosedError("a producer starts once")
        producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=f"{self._config.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self._config.transaction_timeout_ms,
            request_timeout_ms=self._config.request_timeout_ms,
            linger_ms=self._config.linger_ms,
            retry_backoff_ms=self._config.producer_retry_backoff_ms,
            max_batch_size=self._config.producer_batch_bytes_max,
            max_request_size=self._config.request_bytes_max,
        )
        await start_or_close(producer.start(), producer.stop, self._config.start_timeout_ms,
                             "start producer")
        self._producer = producer

    async def stop(self) -> None:
        self._stopped = True
        self._in_transaction = False
        self._drop_pending()
        if self._producer is not None:
            await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int = 0
    ) -> int | None:
        check_record_bytes(value, key)
        futures = await self._enqueue(topic, partition, [(key, value)])
        if futures is None:
            return None
        offsets = await self._acknowledged(futures, f"send to {topic}[{partition}]")
        return offsets[0]

    async def send_batch(
        self, topic: str, values: Sequence[bytes], *, partition: int = 0
    ) -> list[int] | None:
        if len(values) > self._config.send_batch_size_max:
            raise ValueError(f"batch of {len(values)} is over send_batch_size_max")
        for value in values:
            check_record_bytes(value, None)
        futures = await self._enqueue(topic, partition, [(None, value) for value in values])
        if futures is None:
            return None
        return await self._acknowledged(futures, f"send batch to {topic}[{partition}]")

    async def _enqueue(
        self, topic: str, partition: int, entries: list[tuple[bytes | None, bytes]]
    ) -> list[tuple[asyncio.Future[Any], int]] | None:
        """Queue records in order as record batches; return each batch's future and record
        count (inside a transaction keep the futures and return None).

        One aiokafka `BatchBuilder` takes many records per call into its C builder, where
        `send()` per record costs ~7 µs of Python each (measured: 2,000 records in 13 ms
        against 1-2 ms), which the engine paid per event.
        """
        producer = self._running()
        if self.transactional_id is not None and not self._in_transaction:
            raise TransactionStateError("a transactional producer sends only in a transaction")
        await self._check_partition(producer, topic, partition)
        if self._in_transaction:
            self._raise_failed_sends()
            limit = self._config.transaction_records_max
            if self._pending_records + len(entries) > limit:
                raise LogError(f"transaction over transaction_records_max={limit} records")
        batches: list[tuple[asyncio.Future[Any], int]] = []
        with self._fencing_noted(), translated(f"send to {topic}[{partition}]"):
            builder, count = producer.create_batch(), 0
            for key, value in entries:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    batches.append(await self._send_built(producer, builder, count, topic,
                                                          partition))
                    builder, count = producer.create_batch(), 0
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        raise LogError(f"a record of {len(value)} bytes fits no batch")
                count += 1
            if count:
                batches.append(await self._send_built(producer, builder, count, topic, partition))
        if self._in_transaction:
            self._pending.extend(future for future, _ in batches)
            self._pending_records += len(entries)
            return None
        return batches

    @staticmethod
    async def _send_built(producer: AIOKafkaProducer, builder: Any, count: int, topic: str,
                          partition: int) -> tuple[asyncio.Future[Any], int]:
        future: asyncio.Future[Any] = await producer.send_batch(builder, topic,
                                                                partition=partition)
        return future, count

    def _raise_failed_sends(self) -> None:
        """Raise the failure of a record batch of the open transaction that has failed, so
        no later record follows it into the partition; forget the batches already
        acknowledged (the commit waits for the others)."""
        unacknowledged = []
        with self._fencing_noted(), translated("earlier send in the transaction"):
            for future in self._pending:
                if future.done():
                    future.result()
                else:
                    unacknowledged.append(future)
        self._pending = unacknowledged

    async def _acknowledged(
        self, batches: list[tuple[asyncio.Future[Any], int]], action: str
    ) -> list[int]:
        """Wait for every batch's acknowledgement and return its records' offsets."""
        with self._fencing_noted(), translated(action):
            metadata = await asyncio.gather(*(future for future, _ in batches))
        return [int(item.offset) + index
                for item, (_, count) in zip(metadata, batches, strict=True)
                for index in range(count)]

    async def _check_partition(
        self, producer: AIOKafkaProducer, topic: str, partition: int
    ) -> None:
        known = self._partitions.get(topic)
        if known is None or partition not in known:
            with translated(f"metadata of {topic}"):
                known = frozenset(await producer.partitions_for(topic))
            self._partitions[topic] = known
        if partition not in known:
            raise TopicError(f"unknown topic-partition {topic}[{partition}]")

    async def begin(self) -> None:
        producer = self._running()
        if self.transactional_id is None:
            raise TransactionStateError("begin needs a producer with a transactional_id")
        if self._in_transaction:
            raise TransactionStateError("a transaction is already open")
        await self._bounded_transactional(producer.begin_transaction(), "begin transaction")
        self._in_transaction = True
        self._pending = []
        self._pending_records = 0

    async def send_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        producer = self._running()
        self._require_transaction()
        kafka_offsets = {KafkaTopicPartition(t, p): o for (t, p), o in offsets.items()}
        if any(offset < 0 for offset in kafka_offsets.values()):
            raise ValueError(f"offsets must be >= 0, got {dict(offsets)}")
        await self._bounded_transactional(
            producer.send_offsets_to_transaction(kafka_offsets, group_id), "send offsets"
        )

    async def commit(self) -> None:
        producer = self._running()
        self._require_transaction()
        with self._fencing_noted(), translated("deliver transaction records"):
            await asyncio.gather(*self._pending)
        await self._bounded_transactional(producer.commit_transaction(), "commit transaction")
        self._in_transaction = False
        self._pending = []
        self._pending_records = 0

    async def abort(self) -> None:
        self._require_transaction()
        self._in_transaction = False
        self._drop_pending()
        if self._fenced or self._producer is None or self._stopped:
            return  # nothing to tell the broker: it aborts a fenced producer's transaction
        await self._bounded_transactional(self._producer.abort_transaction(), "abort transaction")

    async def _bounded_transactional(self, awaitable: Awaitable[None], action: str) -> None:
        """Run a transaction step within the transaction timeout, translating its errors."""
        try:
            with self._fencing_noted():
                await bounded(awaitable, self._config.transaction_timeout_ms, action)
        except AssertionError as exc:  # aiokafka asserts on an invalid state transition
            raise TransactionStateError(
                f"{action}: refused in the producer's state, after an earlier failure; "
                "stop it and start a new one"
            ) from exc

    @contextmanager
    def _fencing_noted(self) -> Iterator[None]:
        """Remember a FencedError (or aiokafka's fencing) so later calls fail fast."""
        try:
            yield
        except (FencedError, ProducerFenced, InvalidProducerEpoch):
            self._fenced = True
            raise

    def _require_transaction(self) -> None:
        if not self._in_transaction:
            raise TransactionStateError("no transaction is open")

    def _running(self) -> AIOKafkaProducer:
        if self._fenced:
            raise FencedError(f"producer {self.transactional_id!r} was fenced")
        if self._producer is None or self._stopped:
            raise LogClosedError("producer is not running")
        return self._producer

    def _drop_pending(self) -> None:
        """Forget queued records' futures, retrieving any error so none goes unreported."""
        for future in self._pending:
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.add_done_callback(_retrieve_exception)
        self._pending = []
        self._pending_records = 0


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class KafkaConsumer(Consumer):
    """Read one assigned partition; never joins a consumer group or auto-commits."""

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        partition: int,
        group_id: str | None,
        isolation: Isolation,
        start: StartPosition,
        partitions_of: Callable[[str], Awaitable[frozenset[int]]],
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {isolation!r}")
        self.topic = topic
        self.partition = partition
        self.group_id = group_id
        self._config = config
        self._isolation = isolation
        self._start = start
        self._partitions_of = partitions_of
        self._tp = KafkaTopicPartition(topic, partition)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopped = False

    async def start(self) -> None:
        if self._consumer is not None or self._stopped:
            raise LogClosedError("a consumer starts once")
        if self.partition not in await self._partitions_of(self.topic):
            raise TopicError(f"unknown topic-partition {self.topic}[{self.partition}]")
        consumer = new_consumer(self._config, group_id=self.group_id, isolation=self._isolation)
        await start_consumer(consumer, self._config)
        try:
            consumer.assign([self._tp])
            await self._seek_start(consumer)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def _seek_start(self, consumer: AIOKafkaConsumer) -> None:
        timeout_ms = self._config.request_timeout_ms
        if isinstance(self._start, int):
            consumer.seek(self._tp, self._start)
        elif self._start == "latest":
            await bounded(consumer.seek_to_end(self._tp), timeout_ms, "seek to end")
        elif self._start == "earliest":
            await bounded(consumer.seek_to_beginning(self._tp), timeout_ms, "seek to beginning")
        else:
            committed = await bounded(consumer.committed(self._tp), timeout_ms, "committed")
            if committed is None:
                await bounded(consumer.seek_to_beginning(self._tp), timeout_ms, "seek")
            else:
                consumer.seek(self._tp, committed)

    async def stop(self) -> None:
        self._stopped = True
        if self._consumer is not None:
            await self._consumer.stop()

    async def getmany(self, max_records: int, timeout_ms: int) -> list[Record]:
        if max_records < 1 or timeout_ms < 0:
            raise ValueError("max_records must be >= 1 and timeout_ms >= 0")
        consumer = self._running()
        with translated(f"fetch from {self._tp}"):
            batches = await consumer.getmany(
                self._tp, timeout_ms=timeout_ms, max_records=max_records
            )
        return [
            Record(
                self.topic,
                self.partition,
                message.offset,
                message.key,
                message.value if message.value is not None else b"",
            )
            for message in batches.get(self._tp, ())
        ]

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._running().seek(self._tp, offset)

    async def position(self) -> int:
        consumer = self._running()
        position = await bounded(
            consumer.position(self._tp), self._config.request_timeout_ms, "position"
        )
        return int(position)

    async def end_offset(self) -> int:
        consumer = self._running()
        offsets = await bounded(
            consumer.end_offsets([self._tp]), self._config.request_timeout_ms, "end offset"
        )
        return int(offsets[self._tp])

    async def commit(self, offset: int) -> None:
        if self.group_id is None:
            raise ValueError("commit needs a consumer with a group_id")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        consumer = self._running()
        await bounded(
            consumer.commit({self._tp: offset}), self._config.request_timeout_ms, "commit"
        )

    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None or self._stopped:
            raise LogClosedError(f"consumer of {self._tp} is not running")
        return self._consumer
