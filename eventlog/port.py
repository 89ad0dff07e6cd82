"""Define the log port: the small API every service uses to write and read the event log.

Records are opaque bytes to the log; callers encode commands and events themselves. Two
adapters implement the port: `eventlog.kafka` (Apache Kafka through aiokafka) and
`eventlog.embedded` (an append-only file log for one process). Both pass the same contract
tests, so a service written against this module runs on either.

Semantics both adapters share:
- A topic has a fixed number of partitions; a record is addressed by (topic, partition,
  offset) and offsets within a partition grow by one per record. Producers name the
  partition explicitly (default 0), so placement never depends on a hash.
- A transactional producer writes records and consumer-group offsets atomically: a
  `read_committed` consumer sees all of a committed transaction or none of it, and never
  sees an aborted one. A newer producer with the same transactional id fences the older.
- Offsets inside a transaction are only known once it commits, so `send` returns None
  there; outside a transaction it returns the record's offset.
- A consumer reads one partition. "Caught up" means `position() >= end_offset()`, never
  "the last record's offset + 1 == end": Kafka's end offset counts transaction markers.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal, Self

import msgspec

from eventlog.errors import LogError

__all__ = [
    "COMMANDS_TOPIC",
    "EVENTS_TOPIC",
    "Consumer",
    "EventLog",
    "Isolation",
    "Producer",
    "Record",
    "StartPosition",
    "TopicPartition",
    "TopicSpec",
    "check_record_bytes",
    "default_topic_specs",
    "Startable",
    "validate_start",
]

COMMANDS_TOPIC = "gpux.commands"
EVENTS_TOPIC = "gpux.events"

Isolation = Literal["read_committed", "read_uncommitted"]
StartPosition = Literal["committed", "earliest", "latest"] | int
TopicPartition = tuple[str, int]

ISOLATIONS: tuple[Isolation, ...] = ("read_committed", "read_uncommitted")
_START_NAMES = ("committed", "earliest", "latest")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_CLEANUP_POLICIES = ("delete", "compact")


class Record(msgspec.Struct, frozen=True, gc=False):
    """Hold one record as read back from the log: where it is and its opaque bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Describe a topic to create: its layout and the retention configs set explicitly.

    `retention_ms=-1` keeps records forever, which the command and event logs need: they
    are the source of truth that replay and audits read from the start.
    """

    name: str
    partitions: int = 1
    replication_factor: int = 1
    retention_ms: int = -1
    min_insync_replicas: int = 1
    cleanup_policy: str = "delete"

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise ValueError(f"invalid topic name {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, got {self.replication_factor}")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ValueError("min_insync_replicas must be within 1..replication_factor")
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ValueError(f"retention_ms must be -1 or positive, got {self.retention_ms}")
        if self.cleanup_policy not in _CLEANUP_POLICIES:
            raise ValueError(f"cleanup_policy must be one of {_CLEANUP_POLICIES}")

    def configs(self) -> dict[str, str]:
        """Return the topic-level configs to set on creation, as Kafka names them."""
        return {
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(self.min_insync_replicas),
            "cleanup.policy": self.cleanup_policy,
        }


def default_topic_specs(
    *,
    commands_partitions: int = 1,
    events_partitions: int = 1,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
) -> list[TopicSpec]:
    """Return the specs of the venue's two topics; v1 runs one partition of each."""
    return [
        TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
        )
        for name, partitions in (
            (COMMANDS_TOPIC, commands_partitions),
            (EVENTS_TOPIC, events_partitions),
        )
    ]


def validate_start(start: StartPosition, group_id: str | None) -> None:
    """Reject a start position that cannot be resolved (an unknown name, a negative offset)."""
    if isinstance(start, bool):
        raise ValueError(f"invalid start position {start!r}")
    if isinstance(start, int):
        if start < 0:
            raise ValueError(f"start offset must be >= 0, got {start}")
        return
    if start not in _START_NAMES:
        raise ValueError(f"start must be an offset or one of {_START_NAMES}, got {start!r}")
    if start == "committed" and group_id is None:
        raise ValueError("start='committed' needs a group_id")


def check_record_bytes(value: object, key: object) -> None:
    """Reject a value or key that is not bytes: the log stores opaque bytes only."""
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, got {type(value).__name__}")
    if key is not None and not isinstance(key, bytes):
        raise TypeError(f"key must be bytes or None, got {type(key).__name__}")


def validate_isolation(isolation: str) -> None:
    """Reject an isolation level other than read_committed or read_uncommitted."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")


class Startable(abc.ABC):
    """Something started before use and stopped after: `async with` does both."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the connection."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


class Producer(Startable):
    """Write records; with a transactional id, write records and offsets atomically.

    Use as `async with log.producer(...) as producer:` or call `start()` and `stop()`.
    Starting a transactional producer fences every older producer with the same id and
    completes (aborts) any transaction the older one left open. Stopping flushes what was
    sent; an open transaction is lost.
    """

    transactional_id: str | None

    @abc.abstractmethod
    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int = 0
    ) -> int | None:
        """Append one record; return its offset, or None inside a transaction."""

    @abc.abstractmethod
    async def send_batch(
        self, topic: str, values: Sequence[bytes], *, partition: int = 0
    ) -> list[int] | None:
        """Append records in order; return their offsets, or None inside a transaction."""

    @abc.abstractmethod
    async def begin(self) -> None:
        """Open a transaction; later sends and `send_offsets` belong to it."""

    @abc.abstractmethod
    async def send_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit `group_id`'s next offsets as part of the open transaction."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the open transaction's records and offsets visible, all at once."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Discard the open transaction: no read_committed consumer will ever see it."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Self]:
        """Run the body in a transaction: commit on success; abort when the body or the
        commit fails (an abort that fails too is noted on the error raised)."""
        await self.begin()
        try:
            yield self
            await self.commit()
        except BaseException as exc:
            try:
                await self.abort()
            except LogError as abort_error:
                exc.add_note(f"aborting the transaction also failed: {abort_error!r}")
            raise


class Consumer(Startable):
    """Read one partition of one topic in offset order, from a chosen start position.

    The start position ("committed" falls back to "earliest" when the group has no
    committed offset) is resolved by `start()`. Consumers never commit by themselves.
    """

    topic: str
    partition: int
    group_id: str | None

    @abc.abstractmethod
    async def getmany(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Return up to `max_records` next records, waiting up to `timeout_ms` for the first."""

    @abc.abstractmethod
    def seek(self, offset: int) -> None:
        """Move so the next record returned is the one at `offset`."""

    @abc.abstractmethod
    async def position(self) -> int:
        """Return the offset of the next record this consumer will return."""

    @abc.abstractmethod
    async def end_offset(self) -> int:
        """Return the end of the partition as this consumer's isolation level sees it."""

    @abc.abstractmethod
    async def commit(self, offset: int) -> None:
        """Store `offset` as the group's next offset, outside any transaction."""


class EventLog(Startable):
    """Create topics and hand out producers and consumers of one log."""

    @abc.abstractmethod
    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics; one that exists with the same partition count is fine."""

    def producer(self, transactional_id: str | None = None) -> Producer:
        """Return an unstarted producer, transactional when given an id."""
        if transactional_id is not None and not transactional_id:
            raise ValueError("transactional_id must be a non-empty string or None")
        return self._new_producer(transactional_id)

    def consumer(
        self,
        topic: str,
        *,
        partition: int = 0,
        group_id: str | None = None,
        isolation: Isolation = "read_committed",
        start: StartPosition = "committed",
    ) -> Consumer:
        """Return an unstarted consumer of one partition."""
        validate_isolation(isolation)
        validate_start(start, group_id)
        return self._new_consumer(topic, partition, group_id, isolation, start)

    @abc.abstractmethod
    def _new_producer(self, transactional_id: str | None) -> Producer:
        """The adapter's producer, its arguments checked."""

    @abc.abstractmethod
    def _new_consumer(self, topic: str, partition: int, group_id: str | None,
                      isolation: Isolation, start: StartPosition) -> Consumer:
        """The adapter's consumer, its arguments checked."""

    @abc.abstractmethod
    async def end_offset(
        self, topic: str, partition: int = 0, *, isolation: Isolation = "read_committed"
    ) -> int:
        """Return the offset after the last record visible at `isolation`."""

    @abc.abstractmethod
    async def committed_offset(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        """Return the group's committed next offset, or None if it never committed.

        Kafka writes a transaction's markers after the commit returns, so right after a
        commit this may still show the previous offset for a moment. To read a stable value
        after a crash, start the producer with the crashed one's transactional id first:
        that completes whatever transaction the crashed producer left.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource the log holds."""

    async def start(self) -> None:
        """Nothing to do: a log connects when it is first used."""

    async def stop(self) -> None:
        """The same as `close()`: `async with` a log closes it at the end."""
        await self.close()
