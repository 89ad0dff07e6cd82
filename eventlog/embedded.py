"""Run the event log inside one process on plain files: for `gpux dev` and fast tests.

Layout under `data_dir` (file formats in `eventlog.embedded_store` and `eventlog.frames`):

    LOCK                              held with flock: one process per data directory
    commits.log                       transaction commits and group offsets
    topics/<topic>/topic.json         the topic's TopicSpec; written last, so it marks creation
    topics/<topic>/<partition>.log    the partition's record batches

Durability (the fsync policy): with `fsync=True`, the default, every call that appends
returns only after fsync: `send`, `send_batch`, `Consumer.commit` and a transaction's
`commit` (partition files first, then the commit log, whose entry is the commit point).
With `fsync=False` appends still reach the OS page cache before the call returns, so they
survive a crash of the process, though not of the machine.

Transactions are buffered in the producer's memory and written at commit, so nothing
uncommitted ever reaches a reader: `read_uncommitted` reads the same as `read_committed`,
and a producer that dies mid-transaction leaves nothing. A crash during the commit itself
leaves batches without a commit entry, which the next open truncates.

Opening also truncates a torn tail (a partial or checksum-failing last frame), logging a
warning, and refuses a damaged frame that has intact data after it (`CorruptRecordError`
naming the file, byte position and offset): a good record is never dropped silently.

Retention and cleanup policies are recorded but not enforced: records are kept forever.
File I/O is blocking and runs on the event loop thread, in calls bounded by the frame and
read limits of `EmbeddedConfig`. Consumers in the same process are woken when records are
published.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from eventlog.embedded_clients import EmbeddedConsumer, EmbeddedProducer, PendingTransaction
from eventlog.embedded_store import CommitEntry, CommitStore, Entry, PartitionStore, StagedWrite
from eventlog.errors import (
    CorruptRecordError,
    FencedError,
    LogClosedError,
    LogError,
    TopicError,
)
from eventlog.frames import fsync_directory, write_file_atomically
from eventlog.port import (
    EventLog,
    Isolation,
    StartPosition,
    TopicPartition,
    TopicSpec,
    validate_isolation,
)
from runtime.config import require_positive

__all__ = ["EmbeddedConfig", "EmbeddedConsumer", "EmbeddedLog", "EmbeddedProducer"]

_COMMITS_FILE = "commits.log"
_LOCK_FILE = "LOCK"
_TOPICS_DIR = "topics"
_SPEC_FILE = "topic.json"


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    """Tune the embedded log; every limit bounds one batch, frame or read."""

    fsync: bool = True
    frame_records_max: int = 10_000
    frame_bytes_max: int = 16 << 20
    transaction_records_max: int = 1_000_000
    send_batch_size_max: int = 100_000
    read_records_max: int = 10_000
    commit_entries_compact_min: int = 10_000

    def __post_init__(self) -> None:
        require_positive(
            self, "frame_records_max", "frame_bytes_max", "transaction_records_max",
            "send_batch_size_max", "read_records_max", "commit_entries_compact_min",
        )
        if self.frame_bytes_max < 1024:
            raise ValueError("frame_bytes_max must be >= 1024")


class _AppendSignal:
    """Wake the consumers waiting for new records on one partition."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, timeout_s: float) -> None:
        """Return at the next `fire()` or after `timeout_s`, whichever comes first."""
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._waiter], timeout=timeout_s)

    def fire(self) -> None:
        """Wake every waiter."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None


class EmbeddedLog(EventLog):
    """Serve topics from files under one data directory, for one process."""

    def __init__(
        self,
        data_dir: Path,
        config: EmbeddedConfig,
        lock_fd: int,
        commits: CommitStore,
        partitions: dict[TopicPartition, PartitionStore],
        specs: dict[str, TopicSpec],
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self._lock_fd = lock_fd
        self._commits = commits
        self._partitions = partitions
        self._specs = specs
        self._signals = {tp: _AppendSignal() for tp in partitions}
        self._epochs: dict[str, int] = {}
        self._next_seq = 1 + max(
            [commits.last_seq, *(store.txn_seq_max for store in partitions.values())]
        )
        self._closed = False

    @classmethod
    def open(cls, data_dir: Path | str, config: EmbeddedConfig | None = None) -> EmbeddedLog:
        """Open (creating if needed) the log in `data_dir`, recovering from any crash."""
        config = config or EmbeddedConfig()
        data_dir = Path(data_dir)
        (data_dir / _TOPICS_DIR).mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(data_dir / _LOCK_FILE)
        try:
            commits = _open_commits(data_dir / _COMMITS_FILE, config)
            specs = _read_specs(data_dir / _TOPICS_DIR)
            partitions = _open_partitions(data_dir / _TOPICS_DIR, specs, commits, config)
            _check_write_ends(commits, partitions)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(data_dir, config, lock_fd, commits, partitions, specs)

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        self._check_open()
        for spec in specs:
            existing = self._specs.get(spec.name)
            if existing is None:
                self._create_topic(spec)
            elif existing.partitions != spec.partitions:
                raise TopicError(
                    f"topic {spec.name} exists with {existing.partitions} partitions, "
                    f"spec asks for {spec.partitions}"
                )

    def _create_topic(self, spec: TopicSpec) -> None:
        directory = self.data_dir / _TOPICS_DIR / spec.name
        directory.mkdir(exist_ok=True)
        stores = {
            (spec.name, partition): PartitionStore.open(
                directory / f"{partition}.log",
                spec.name,
                partition,
                committed_seq=self._commits.last_seq,
                frame_bytes_max=self.config.frame_bytes_max,
            )
            for partition in range(spec.partitions)
        }
        write_file_atomically(directory / _SPEC_FILE, msgspec.json.encode(spec))
        fsync_directory(directory.parent)
        self._specs[spec.name] = spec
        self._partitions.update(stores)
        self._signals.update({tp: _AppendSignal() for tp in stores})

    def _new_producer(self, transactional_id: str | None) -> EmbeddedProducer:
        return EmbeddedProducer(self, transactional_id)

    def _new_consumer(self, topic: str, partition: int, group_id: str | None,
                      isolation: Isolation, start: StartPosition) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, topic, partition, group_id, start)

    async def end_offset(
        self, topic: str, partition: int = 0, *, isolation: Isolation = "read_committed"
    ) -> int:
        validate_isolation(isolation)
        return self.store(topic, partition).end_offset

    async def committed_offset(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        self._check_open()
        return self._commits.offsets.get((group_id, topic, partition))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for signal in self._signals.values():
            signal.fire()
        for store in self._partitions.values():
            store.close()
        self._commits.close()
        os.close(self._lock_fd)

    # The methods below serve this module's producers and consumers.

    def store(self, topic: str, partition: int) -> PartitionStore:
        """Return the store of an existing topic-partition."""
        self._check_open()
        store = self._partitions.get((topic, partition))
        if store is None:
            raise TopicError(f"unknown topic-partition {topic}[{partition}]")
        return store

    def signal(self, topic: str, partition: int) -> _AppendSignal:
        """Return the signal fired when records are published to a topic-partition."""
        return self._signals[(topic, partition)]

    def append(self, topic: str, partition: int, entries: Sequence[Entry]) -> int:
        """Append records outside any transaction; return the first one's offset."""
        store = self.store(topic, partition)
        first_offset = store.end_offset
        staged = self._stage(store, entries, txn_seq=0)
        try:
            if self.config.fsync:
                store.file.sync()
        except OSError as exc:
            self._roll_back([staged])
            raise LogError(f"cannot sync {store.file.path}: {exc}", retriable=True) from exc
        self._publish([staged])
        return first_offset

    def commit_transaction(self, transactional_id: str, transaction: PendingTransaction) -> None:
        """Write a transaction's records, then its commit entry: the commit point."""
        stores = [self.store(topic, partition) for topic, partition in transaction.records]
        if not stores and not transaction.offsets:
            return
        staged: list[StagedWrite] = []
        seq = self._next_seq
        try:
            for store in stores:
                entries = transaction.records[(store.topic, store.partition)]
                staged.append(self._stage(store, entries, txn_seq=seq))
            self._sync(stores)
            entry = CommitEntry(
                seq=seq,
                transactional_id=transactional_id,
                writes=[(s.store.topic, s.store.partition, s.end_offset) for s in staged],
                offsets=[(g, t, p, o) for (g, t, p), o in transaction.offsets.items()],
            )
            self._commits.append(entry, fsync=self.config.fsync)
        except Exception as exc:
            self._roll_back(staged)
            if isinstance(exc, OSError):
                raise LogError(f"cannot commit transaction {seq}: {exc}", retriable=True) from exc
            raise
        self._next_seq = seq + 1
        self._publish(staged)

    def commit_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Store a group's next offsets outside any transaction."""
        self._check_open()
        entry = CommitEntry(
            seq=0,
            transactional_id=None,
            writes=[],
            offsets=[(group_id, t, p, o) for (t, p), o in offsets.items()],
        )
        try:
            self._commits.append(entry, fsync=self.config.fsync)
        except OSError as exc:
            raise LogError(f"cannot commit offsets of {group_id}: {exc}", retriable=True) from exc

    def claim(self, transactional_id: str) -> int:
        """Take over a transactional id: return the new epoch, fencing older holders."""
        self._check_open()
        epoch = self._epochs.get(transactional_id, 0) + 1
        self._epochs[transactional_id] = epoch
        return epoch

    def check_epoch(self, transactional_id: str, epoch: int) -> None:
        """Raise FencedError if a newer producer took over `transactional_id`."""
        if self._epochs.get(transactional_id) != epoch:
            raise FencedError(f"producer {transactional_id!r} epoch {epoch} was fenced")

    def check_open(self) -> None:
        """Raise LogClosedError once the log is closed."""
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"embedded log at {self.data_dir} is closed")

    def _stage(self, store: PartitionStore, entries: Sequence[Entry], txn_seq: int) -> StagedWrite:
        try:
            return store.stage(
                entries,
                txn_seq,
                frame_records_max=self.config.frame_records_max,
                frame_bytes_max=self.config.frame_bytes_max,
            )
        except OSError as exc:
            raise LogError(f"cannot write {store.file.path}: {exc}", retriable=True) from exc

    def _sync(self, stores: Sequence[PartitionStore]) -> None:
        if self.config.fsync:
            for store in stores:
                store.file.sync()

    def _roll_back(self, staged: Sequence[StagedWrite]) -> None:
        try:
            for write in staged:
                write.store.rollback(write)
        except OSError as exc:
            self._closed = True
            raise LogError(f"cannot roll back a failed write, log closed: {exc}") from exc

    def _publish(self, staged: Sequence[StagedWrite]) -> None:
        for write in staged:
            write.store.publish(write)
            self._signals[(write.store.topic, write.store.partition)].fire()


def _lock(path: Path) -> int:
    """Hold an exclusive lock on `path` for as long as the returned descriptor is open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LogError(f"{path.parent} is in use by another embedded log") from exc
    return fd


def _open_commits(path: Path, config: EmbeddedConfig) -> CommitStore:
    """Open the commit log, rewriting it as one entry when it has grown long."""
    commits = CommitStore.open(path)
    if commits.entry_count < config.commit_entries_compact_min:
        return commits
    compacted = commits.compacted()
    commits.close()
    write_file_atomically(path, compacted)
    return CommitStore.open(path)


def _read_specs(topics_dir: Path) -> dict[str, TopicSpec]:
    """Read the spec of every created topic; a directory without one was never created."""
    specs: dict[str, TopicSpec] = {}
    for spec_path in sorted(topics_dir.glob(f"*/{_SPEC_FILE}")):
        spec = msgspec.json.decode(spec_path.read_bytes(), type=TopicSpec)
        if spec.name != spec_path.parent.name:
            raise LogError(f"{spec_path} names topic {spec.name!r}")
        specs[spec.name] = spec
    return specs


def _open_partitions(
    topics_dir: Path, specs: Mapping[str, TopicSpec], commits: CommitStore, config: EmbeddedConfig
) -> dict[TopicPartition, PartitionStore]:
    """Open and recover every partition file of every topic."""
    partitions: dict[TopicPartition, PartitionStore] = {}
    try:
        for spec in specs.values():
            for partition in range(spec.partitions):
                partitions[(spec.name, partition)] = PartitionStore.open(
                    topics_dir / spec.name / f"{partition}.log",
                    spec.name,
                    partition,
                    committed_seq=commits.last_seq,
                    frame_bytes_max=config.frame_bytes_max,
                )
    except BaseException:
        for store in partitions.values():
            store.close()
        commits.close()
        raise
    return partitions


def _check_write_ends(
    commits: CommitStore, partitions: Mapping[TopicPartition, PartitionStore]
) -> None:
    """Fail when a partition holds fewer records than the commit log says were committed."""
    for (topic, partition), end_offset in commits.write_ends.items():
        store = partitions.get((topic, partition))
        if store is None:
            raise TopicError(f"committed topic-partition {topic}[{partition}] is missing")
        if store.end_offset < end_offset:
            raise CorruptRecordError(
                f"commit log says offsets below {end_offset} were committed, the file ends",
                path=store.file.path,
                position=store.file.size,
                offset=store.end_offset,
            )
