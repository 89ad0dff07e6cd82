"""Keep the embedded log's files: one per topic-partition, and one commit log.

Partition file: frames (see `eventlog.frames`) whose payload is a record batch,
`base_offset i64 | txn_seq i64 | record_count u32`, then per record
`key_length i32 (-1 = no key) | value_length u32 | key | value`. `txn_seq` is 0 for a
record appended outside a transaction, else the sequence number of its transaction.

Commit log: frames whose payload is a msgpack `CommitEntry`. Appending a transaction's
entry is the transaction's commit point: its batches are written (and synced) to the
partition files first, its entry last. Opening the log therefore treats a partition frame
whose `txn_seq` is above the last committed sequence as an unfinished transaction, which
can only sit at a file's tail, and truncates it. Group offsets live in the same entries, so
a transaction's records and its consumer offsets become durable in the same append.

Everything here is blocking file I/O without asyncio; `eventlog.embedded` drives it.
"""

from __future__ import annotations

import logging
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from eventlog.errors import CorruptRecordError, TornRecordError
from eventlog.frames import FRAME_HEADER, FrameFile, encode_frame

__all__ = ["BATCH_HEADER", "CommitEntry", "CommitStore", "PartitionStore", "StagedWrite"]

log = logging.getLogger("eventlog.embedded")

BATCH_HEADER = struct.Struct("<qqI")
RECORD_HEADER = struct.Struct("<iI")
_PAYLOAD_START = FRAME_HEADER.size + BATCH_HEADER.size
_COMMIT_FRAME_BYTES_MAX = 64 << 20

Entry = tuple[bytes | None, bytes]
GroupKey = tuple[str, str, int]


def encode_batch(base_offset: int, txn_seq: int, entries: Sequence[Entry]) -> bytes:
    """Return the payload of one record batch."""
    parts = [BATCH_HEADER.pack(base_offset, txn_seq, len(entries))]
    for key, value in entries:
        key_length = -1 if key is None else len(key)
        parts.append(RECORD_HEADER.pack(key_length, len(value)))
        if key is not None:
            parts.append(key)
        parts.append(value)
    return b"".join(parts)


def entry_bytes(entry: Entry) -> int:
    """Return how many bytes `entry` takes inside a batch payload."""
    key, value = entry
    return RECORD_HEADER.size + (0 if key is None else len(key)) + len(value)


def _record_positions(payload: bytes, frame_position: int) -> tuple[int, int, list[int]]:
    """Return a batch's base offset, txn_seq and the file position of each of its records.

    Raise ValueError when the record headers disagree with the payload's length.
    """
    base_offset, txn_seq, count = BATCH_HEADER.unpack_from(payload, 0)
    positions: list[int] = []
    cursor = BATCH_HEADER.size
    for _ in range(count):
        if cursor + RECORD_HEADER.size > len(payload):
            raise ValueError("record header past the end of its batch")
        key_length, value_length = RECORD_HEADER.unpack_from(payload, cursor)
        if key_length < -1:
            raise ValueError(f"record key length {key_length}")
        positions.append(frame_position + FRAME_HEADER.size + cursor)
        cursor += RECORD_HEADER.size + max(key_length, 0) + value_length
    if cursor != len(payload):
        raise ValueError(f"batch of {count} records ends at {cursor}, payload is {len(payload)}")
    return base_offset, txn_seq, positions


def decode_records(chunk: bytes, relative_positions: Iterable[int]) -> list[Entry]:
    """Decode the records that start at `relative_positions` within `chunk`."""
    entries: list[Entry] = []
    for start in relative_positions:
        key_length, value_length = RECORD_HEADER.unpack_from(chunk, start)
        cursor = start + RECORD_HEADER.size
        key = None if key_length < 0 else chunk[cursor : cursor + key_length]
        cursor += max(key_length, 0)
        if cursor + value_length > len(chunk):
            raise ValueError(f"record at {start} runs past the chunk read for it")
        entries.append((key, chunk[cursor : cursor + value_length]))
    return entries


@dataclass(frozen=True, slots=True)
class StagedWrite:
    """Describe batches written to a partition file but not yet visible to readers."""

    store: PartitionStore
    size_before: int
    positions: list[int]

    @property
    def end_offset(self) -> int:
        """Return the partition's end offset once this write is published."""
        return self.store.end_offset + len(self.positions)


class PartitionStore:
    """Own one topic-partition file and its offset index (file position per record)."""

    def __init__(self, topic: str, partition: int, file: FrameFile) -> None:
        self.topic = topic
        self.partition = partition
        self.file = file
        self.positions = array("q")
        self.published_size = 0
        self.txn_seq_max = 0
        self._staged = False

    @property
    def end_offset(self) -> int:
        """Return the offset the next published record will get."""
        return len(self.positions)

    @classmethod
    def open(
        cls, path: Path, topic: str, partition: int, *, committed_seq: int, frame_bytes_max: int
    ) -> PartitionStore:
        """Open the file, drop a torn tail or an unfinished transaction, and index it."""
        store = cls(topic, partition, FrameFile.open(path))
        try:
            keep_bytes = store._index(committed_seq, frame_bytes_max)
            if keep_bytes < store.file.size:
                store.file.truncate(keep_bytes)
        except BaseException:
            store.close()
            raise
        store.published_size = store.file.size
        return store

    def _index(self, committed_seq: int, frame_bytes_max: int) -> int:
        """Index every committed record; return how many bytes of the file to keep."""
        uncommitted_at: int | None = None
        uncommitted_seq = 0
        try:
            for position, payload in self.file.scan(frame_bytes_max):
                base_offset, txn_seq, positions = self._parse(payload, position)
                self.txn_seq_max = max(self.txn_seq_max, txn_seq)
                if uncommitted_at is None and txn_seq > committed_seq:
                    uncommitted_at, uncommitted_seq = position, txn_seq
                if uncommitted_at is None:
                    self._check_contiguous(base_offset, position)
                    self.positions.extend(positions)
                elif txn_seq != uncommitted_seq:
                    raise self._corrupt("other data after an unfinished transaction", position)
        except TornRecordError as torn:
            log.warning("truncating torn tail of %s at byte %d", self.file.path, torn.position)
            return torn.position if uncommitted_at is None else uncommitted_at
        except CorruptRecordError as corrupt:
            if corrupt.offset is not None:
                raise
            raise self._corrupt(corrupt.reason, corrupt.position) from corrupt
        if uncommitted_at is not None:
            log.warning(
                "dropping unfinished transaction %d from %s at byte %d",
                uncommitted_seq,
                self.file.path,
                uncommitted_at,
            )
            return uncommitted_at
        return self.file.size

    def _parse(self, payload: bytes, position: int) -> tuple[int, int, list[int]]:
        try:
            return _record_positions(payload, position)
        except (ValueError, struct.error) as exc:
            raise self._corrupt(f"malformed record batch ({exc})", position) from exc

    def _check_contiguous(self, base_offset: int, position: int) -> None:
        if base_offset != self.end_offset:
            raise self._corrupt(
                f"batch starts at offset {base_offset}, expected {self.end_offset}", position
            )

    def _corrupt(self, message: str, position: int) -> CorruptRecordError:
        return CorruptRecordError(
            message, path=self.file.path, position=position, offset=self.end_offset
        )

    def stage(
        self,
        entries: Sequence[Entry],
        txn_seq: int,
        *,
        frame_records_max: int,
        frame_bytes_max: int,
    ) -> StagedWrite:
        """Append `entries` as one or more batches, invisible to readers until published."""
        if self._staged:
            raise RuntimeError(f"{self.file.path} already has an unpublished write")
        frames: list[bytes] = []
        positions: list[int] = []
        next_position = self.file.size
        for chunk in _split(entries, frame_records_max, frame_bytes_max - BATCH_HEADER.size):
            base_offset = self.end_offset + len(positions)
            frame = encode_frame(encode_batch(base_offset, txn_seq, chunk))
            record_position = next_position + _PAYLOAD_START
            for entry in chunk:
                positions.append(record_position)
                record_position += entry_bytes(entry)
            frames.append(frame)
            next_position += len(frame)
        size_before = self.file.size
        self.file.append(b"".join(frames))
        self._staged = True
        self.txn_seq_max = max(self.txn_seq_max, txn_seq)
        return StagedWrite(store=self, size_before=size_before, positions=positions)

    def publish(self, staged: StagedWrite) -> None:
        """Make a staged write visible to readers."""
        if staged.store is not self or not self._staged:
            raise RuntimeError(f"no staged write to publish on {self.file.path}")
        self.positions.extend(staged.positions)
        self.published_size = self.file.size
        self._staged = False

    def rollback(self, staged: StagedWrite) -> None:
        """Remove a staged write from the file, as if it was never made."""
        self._staged = False
        self.file.truncate(staged.size_before)

    def read(self, offset: int, count: int) -> list[Entry]:
        """Return the published records at offsets `offset` .. `offset + count - 1`."""
        if not (0 <= offset and count >= 0 and offset + count <= self.end_offset):
            raise ValueError(f"read of {count} at {offset} outside 0..{self.end_offset}")
        if count == 0:
            return []
        start = self.positions[offset]
        stop = offset + count
        end = self.positions[stop] if stop < self.end_offset else self.published_size
        chunk = self.file.read(start, end - start)
        return decode_records(chunk, (self.positions[i] - start for i in range(offset, stop)))

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def _split(entries: Sequence[Entry], records_max: int, bytes_max: int) -> Iterable[Sequence[Entry]]:
    """Cut `entries` into runs of at most `records_max` records and `bytes_max` bytes."""
    start = 0
    while start < len(entries):
        stop = start
        size = 0
        while stop < len(entries) and stop - start < records_max:
            size += entry_bytes(entries[stop])
            if size > bytes_max and stop > start:
                break
            if size > bytes_max:
                raise ValueError(f"record of {size} bytes is over the {bytes_max} byte limit")
            stop += 1
        yield entries[start:stop]
        start = stop


class CommitEntry(msgspec.Struct, array_like=True, frozen=True):
    """Record one commit: a transaction's writes and offsets, or a plain offset commit.

    `seq` is the transaction's sequence number, or 0 for an offset commit outside one.
    `writes` holds (topic, partition, end offset after the write).
    `offsets` holds (group id, topic, partition, next offset).
    """

    seq: int
    transactional_id: str | None
    writes: list[tuple[str, int, int]]
    offsets: list[tuple[str, str, int, int]]


_commit_encoder = msgspec.msgpack.Encoder()
_commit_decoder = msgspec.msgpack.Decoder(CommitEntry)


class CommitStore:
    """Own the commit log: the last committed transaction and every group's offsets."""

    def __init__(self, file: FrameFile) -> None:
        self.file = file
        self.last_seq = 0
        self.entry_count = 0
        self.offsets: dict[GroupKey, int] = {}
        self.write_ends: dict[tuple[str, int], int] = {}

    @classmethod
    def open(cls, path: Path) -> CommitStore:
        """Open the commit log, truncating a torn last entry (an unfinished commit)."""
        store = cls(FrameFile.open(path))
        try:
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def _recover(self) -> None:
        """Apply every entry in the file; truncate a torn last entry (an unfinished commit)."""
        path = self.file.path
        try:
            for position, payload in self.file.scan(_COMMIT_FRAME_BYTES_MAX):
                entry = self._decode(payload, position)
                if entry.seq != 0 and entry.seq <= self.last_seq:
                    raise CorruptRecordError(
                        f"commit seq {entry.seq} after {self.last_seq}",
                        path=path,
                        position=position,
                        offset=None,
                    )
                self._apply(entry)
        except TornRecordError as torn:
            log.warning("truncating torn tail of %s at byte %d", path, torn.position)
            self.file.truncate(torn.position)

    def _decode(self, payload: bytes, position: int) -> CommitEntry:
        try:
            return _commit_decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8 in a string
            raise CorruptRecordError(
                f"malformed commit entry ({exc})",
                path=self.file.path,
                position=position,
                offset=None,
            ) from exc

    def _apply(self, entry: CommitEntry) -> None:
        if entry.seq != 0:
            if entry.seq <= self.last_seq:
                raise ValueError(f"commit seq {entry.seq} after {self.last_seq}")
            self.last_seq = entry.seq
        for topic, partition, end_offset in entry.writes:
            previous = self.write_ends.get((topic, partition), 0)
            self.write_ends[(topic, partition)] = max(previous, end_offset)
        for group_id, topic, partition, offset in entry.offsets:
            self.offsets[(group_id, topic, partition)] = offset
        self.entry_count += 1

    def append(self, entry: CommitEntry, *, fsync: bool) -> None:
        """Append `entry` durably (when `fsync`); the commit it records is then final."""
        payload = _commit_encoder.encode(entry)
        if len(payload) > _COMMIT_FRAME_BYTES_MAX:
            raise ValueError(f"commit entry of {len(payload)} bytes is over the limit")
        position = self.file.append(encode_frame(payload))
        if fsync:
            try:
                self.file.sync()
            except OSError:
                self.file.truncate(position)
                raise
        self._apply(entry)

    def compacted(self) -> bytes:
        """Return a one-entry commit log holding the same last seq, write ends and offsets."""
        entry = CommitEntry(
            seq=self.last_seq,
            transactional_id=None,
            writes=[(t, p, end) for (t, p), end in sorted(self.write_ends.items())],
            offsets=[(g, t, p, o) for (g, t, p), o in sorted(self.offsets.items())],
        )
        return encode_frame(_commit_encoder.encode(entry))

    def close(self) -> None:
        """Close the file."""
        self.file.close()
