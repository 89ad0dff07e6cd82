"""Produce to and consume from the embedded log, behind the log port.

A transaction is buffered in the producer (`PendingTransaction`) and handed to the log
whole at commit; a consumer reads published records and waits on its partition's signal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventlog.embedded_store import Entry, PartitionStore
from eventlog.errors import LogClosedError, LogError, TransactionStateError
from eventlog.port import (
    Consumer,
    Producer,
    Record,
    StartPosition,
    TopicPartition,
    check_record_bytes,
)

if TYPE_CHECKING:
    from eventlog.embedded import EmbeddedConfig, EmbeddedLog

__all__ = ["EmbeddedConsumer", "EmbeddedProducer", "PendingTransaction"]


@dataclass(slots=True)
class PendingTransaction:
    """Buffer one transaction's records and offsets until commit."""

    records: dict[TopicPartition, list[Entry]] = field(default_factory=dict)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    record_count: int = 0


class EmbeddedProducer(Producer):
    """Append to an embedded log; buffer a transaction until it commits."""

    def __init__(self, log: EmbeddedLog, transactional_id: str | None) -> None:
        self.transactional_id = transactional_id
        self._log = log
        self._epoch = 0
        self._started = False
        self._stopped = False
        self._transaction: PendingTransaction | None = None

    async def start(self) -> None:
        if self._started:
            raise LogClosedError("producer already started")
        self._log.check_open()
        if self.transactional_id is not None:
            self._epoch = self._log.claim(self.transactional_id)
        self._started = True

    async def stop(self) -> None:
        self._stopped = True
        self._transaction = None

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int = 0
    ) -> int | None:
        check_record_bytes(value, key)
        return await self._write(topic, partition, [(key, value)])

    async def send_batch(
        self, topic: str, values: Sequence[bytes], *, partition: int = 0
    ) -> list[int] | None:
        if len(values) > self._log.config.send_batch_size_max:
            raise ValueError(f"batch of {len(values)} is over send_batch_size_max")
        for value in values:
            check_record_bytes(value, None)
        if not values:
            self._check_usable()
            return None if self._transaction is not None else []
        first_offset = await self._write(topic, partition, [(None, v) for v in values])
        if first_offset is None:
            return None
        return list(range(first_offset, first_offset + len(values)))

    async def _write(self, topic: str, partition: int, entries: list[Entry]) -> int | None:
        self._check_usable()
        self._log.store(topic, partition)
        if self._transaction is not None:
            _buffer(self._transaction, topic, partition, entries, self._log.config)
            return None
        if self.transactional_id is not None:
            raise TransactionStateError("a transactional producer sends only in a transaction")
        return self._log.append(topic, partition, entries)

    async def begin(self) -> None:
        self._check_usable()
        self._require_transactional_id()
        if self._transaction is not None:
            raise TransactionStateError("a transaction is already open")
        self._transaction = PendingTransaction()

    async def send_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._check_usable()
        transaction = self._open_transaction()
        for (topic, partition), offset in offsets.items():
            self._log.store(topic, partition)
            if offset < 0:
                raise ValueError(f"offset must be >= 0, got {offset}")
            transaction.offsets[(group_id, topic, partition)] = offset

    async def commit(self) -> None:
        self._check_usable()
        transaction = self._open_transaction()
        self._log.commit_transaction(self._require_transactional_id(), transaction)
        self._transaction = None

    async def abort(self) -> None:
        self._open_transaction()
        self._transaction = None

    def _require_transactional_id(self) -> str:
        if self.transactional_id is None:
            raise TransactionStateError("transactions need a producer with a transactional_id")
        return self.transactional_id

    def _open_transaction(self) -> PendingTransaction:
        if self._transaction is None:
            raise TransactionStateError("no transaction is open")
        return self._transaction

    def _check_usable(self) -> None:
        if not self._started or self._stopped:
            raise LogClosedError("producer is not running")
        self._log.check_open()
        if self.transactional_id is not None:
            self._log.check_epoch(self.transactional_id, self._epoch)


def _buffer(
    transaction: PendingTransaction,
    topic: str,
    partition: int,
    entries: list[Entry],
    config: EmbeddedConfig,
) -> None:
    """Add records to an open transaction, within its record limit."""
    limit = config.transaction_records_max
    if transaction.record_count + len(entries) > limit:
        raise LogError(f"transaction over transaction_records_max={limit} records")
    transaction.records.setdefault((topic, partition), []).extend(entries)
    transaction.record_count += len(entries)


class EmbeddedConsumer(Consumer):
    """Read one partition of an embedded log, woken by appends from this process."""

    def __init__(
        self,
        log: EmbeddedLog,
        topic: str,
        partition: int,
        group_id: str | None,
        start: StartPosition,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.group_id = group_id
        self._log = log
        self._start = start
        self._position: int | None = None
        self._stopped = False

    async def start(self) -> None:
        store = self._log.store(self.topic, self.partition)
        self._position = await self._resolve_start(store.end_offset)

    async def _resolve_start(self, end_offset: int) -> int:
        if isinstance(self._start, int):
            return self._start
        if self._start == "latest":
            return end_offset
        if self._start == "committed" and self.group_id is not None:
            committed = await self._log.committed_offset(self.group_id, self.topic, self.partition)
            if committed is not None:
                return committed
        return 0

    async def stop(self) -> None:
        self._stopped = True

    async def getmany(self, max_records: int, timeout_ms: int) -> list[Record]:
        if max_records < 1 or timeout_ms < 0:
            raise ValueError("max_records must be >= 1 and timeout_ms >= 0")
        position = self._current_position()
        deadline_s = time.monotonic() + timeout_ms / 1000
        store = self._log.store(self.topic, self.partition)
        while store.end_offset <= position:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return []
            await self._log.signal(self.topic, self.partition).wait(remaining_s)
            store = self._log.store(self.topic, self.partition)
            position = self._current_position()
        count = min(max_records, self._log.config.read_records_max, store.end_offset - position)
        entries = self._read(store, position, count)
        self._position = position + count
        return [
            Record(self.topic, self.partition, position + index, key, value)
            for index, (key, value) in enumerate(entries)
        ]

    def _read(self, store: PartitionStore, position: int, count: int) -> list[Entry]:
        try:
            return store.read(position, count)
        except OSError as exc:
            raise LogError(f"cannot read {store.file.path}: {exc}", retriable=True) from exc

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._current_position()
        self._position = offset

    async def position(self) -> int:
        return self._current_position()

    async def end_offset(self) -> int:
        self._current_position()
        return self._log.store(self.topic, self.partition).end_offset

    async def commit(self, offset: int) -> None:
        if self.group_id is None:
            raise ValueError("commit needs a consumer with a group_id")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._current_position()
        self._log.commit_offsets(self.group_id, {(self.topic, self.partition): offset})

    def _current_position(self) -> int:
        if self._position is None or self._stopped:
            raise LogClosedError(f"consumer of {self.topic}[{self.partition}] is not running")
        self._log.check_open()
        return self._position
