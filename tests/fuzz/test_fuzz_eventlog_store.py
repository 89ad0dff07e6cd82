"""Fuzz the embedded log's readers of its own files: partition files of record batches and the
commit log, damaged the ways a crash or a bad disk damages them.

Whatever the damage, opening either keeps a prefix of what was written (a torn tail is cut
off) or raises CorruptRecordError naming the file and position; it never raises anything
else, never hands back a record that was not written, and closes the file when it refuses.
A frame whose checksum holds but whose payload does not parse is refused the same way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.embedded_store import CommitEntry, CommitStore, Entry, PartitionStore, encode_batch
from eventlog.errors import CorruptRecordError
from eventlog.frames import encode_frame
from tests.fuzz.support import fuzz, mutated_bytes

FRAME_BYTES_MAX = 4096

entries = st.tuples(st.none() | st.binary(max_size=8), st.binary(max_size=40))
batches = st.lists(st.lists(entries, min_size=1, max_size=6), min_size=1, max_size=5)
commit_entries = st.builds(
    CommitEntry,
    seq=st.just(0),
    transactional_id=st.none() | st.text(max_size=8),
    writes=st.lists(st.tuples(st.text(max_size=4), st.integers(0, 3), st.integers(0, 99)),
                    max_size=3),
    offsets=st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4), st.integers(0, 3),
                               st.integers(0, 99)), max_size=3),
)


@contextmanager
def scratch_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gpux-fuzz-") as directory:
        yield Path(directory) / "0.log"


def open_partition(path: Path) -> PartitionStore:
    return PartitionStore.open(path, "t", 0, committed_seq=0, frame_bytes_max=FRAME_BYTES_MAX)


def write_partition(path: Path, written: list[list[Entry]]) -> list[Entry]:
    store = open_partition(path)
    for batch in written:
        store.publish(store.stage(batch, 0, frame_records_max=4,
                                  frame_bytes_max=FRAME_BYTES_MAX))
    store.close()
    return [entry for batch in written for entry in batch]


def read_all(path: Path) -> list[Entry]:
    """Reopen the partition and read every record; CorruptRecordError when it is refused."""
    store = open_partition(path)
    try:
        return store.read(0, store.end_offset)
    finally:
        store.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@fuzz(200)
@given(data=st.data(), written=batches)
def test_a_damaged_partition_file_keeps_a_prefix_or_is_refused(
    data: st.DataObject, written: list[list[Entry]]
) -> None:
    with scratch_file() as path:
        records = write_partition(path, written)
        path.write_bytes(data.draw(mutated_bytes(path.read_bytes())))
        try:
            kept = read_all(path)
        except CorruptRecordError as error:
            assert error.path == path and error.position >= 0
            return
        assert kept == records[: len(kept)]
        assert read_all(path) == kept, "opening again finds what the first open kept"


@fuzz(200)
@given(data=st.data(), written=batches, base_offset=st.integers(-2, 40),
       txn_seq=st.integers(-1, 2))
def test_a_frame_whose_checksum_holds_but_whose_batch_is_malformed_is_refused(
    data: st.DataObject, written: list[list[Entry]], base_offset: int, txn_seq: int
) -> None:
    with scratch_file() as path:
        records = write_partition(path, written)
        payload = encode_batch(base_offset, txn_seq, data.draw(st.lists(entries, max_size=3)))
        forged = encode_frame(data.draw(mutated_bytes(payload) | st.just(payload)))
        with path.open("ab") as file:
            file.write(forged)
        try:
            kept = read_all(path)
        except CorruptRecordError:
            return
        assert kept[: len(records)] == records


def commit_state(entries: list[CommitEntry]) -> tuple[object, object]:
    """The offsets and write ends a commit log of `entries` leaves, applied in order."""
    offsets: dict[tuple[str, str, int], int] = {}
    write_ends: dict[tuple[str, int], int] = {}
    for entry in entries:
        for topic, partition, end in entry.writes:
            write_ends[(topic, partition)] = max(write_ends.get((topic, partition), 0), end)
        for group_id, topic, partition, offset in entry.offsets:
            offsets[(group_id, topic, partition)] = offset
    return offsets, write_ends


@fuzz(200)
@given(data=st.data(), written=st.lists(commit_entries, min_size=1, max_size=4))
def test_a_damaged_commit_log_keeps_a_prefix_or_is_refused(
    data: st.DataObject, written: list[CommitEntry]
) -> None:
    """Damage leaves the state of a prefix of the entries written, or is refused. (A tail
    written twice replays entries already applied: the same state as the whole log.)"""
    with scratch_file() as path:
        path.write_bytes(b"".join(encode_frame(msgspec.msgpack.encode(e)) for e in written))
        path.write_bytes(data.draw(mutated_bytes(path.read_bytes())))
        store = refused_or_open(path)
        if store is not None:
            prefix_states = [commit_state(written[:end]) for end in range(len(written) + 1)]
            assert (store.offsets, store.write_ends) in prefix_states
            store.close()


@fuzz(200)
@given(written=st.lists(commit_entries, min_size=1, max_size=4), payload=st.binary(max_size=64))
def test_a_frame_appended_to_a_commit_log_is_applied_whole_or_refused(
    written: list[CommitEntry], payload: bytes
) -> None:
    with scratch_file() as path:
        frames = b"".join(encode_frame(msgspec.msgpack.encode(e)) for e in written)
        path.write_bytes(frames + encode_frame(payload))
        store = refused_or_open(path)
        if store is not None:
            appended = msgspec.msgpack.decode(payload, type=CommitEntry)
            assert (store.offsets, store.write_ends) == commit_state([*written, appended])
            assert store.entry_count == len(written) + 1
            store.close()


def refused_or_open(path: Path) -> CommitStore | None:
    """Open the commit log; None when it is refused as corrupt (and closed again)."""
    fds = open_fds()
    try:
        return CommitStore.open(path)
    except CorruptRecordError as error:
        assert error.path == path
        assert open_fds() == fds, "a refused commit log is closed"
        return None


def test_regression_a_commit_entry_with_invalid_utf8_is_refused_as_corrupt() -> None:
    """msgspec raised UnicodeDecodeError out of CommitStore.open: not a LogError, and it
    left the file open."""
    with scratch_file() as path:
        path.write_bytes(encode_frame(b"\x94\x01\xa2\xff\xfe\x90\x90"))
        fds = open_fds()
        with pytest.raises(CorruptRecordError, match="malformed commit entry"):
            CommitStore.open(path)
        assert open_fds() == fds


def test_regression_a_refused_partition_file_is_closed() -> None:
    """PartitionStore.open left its file descriptor open when it refused the file."""
    with scratch_file() as path:
        write_partition(path, [[(None, b"a")], [(None, b"b")]])
        data = bytearray(path.read_bytes())
        data[20] ^= 0xFF  # inside the first frame's payload: an intact frame follows
        path.write_bytes(bytes(data))
        fds = open_fds()
        with pytest.raises(CorruptRecordError):
            open_partition(path)
        assert open_fds() == fds


def test_regression_a_record_key_length_below_minus_one_is_refused() -> None:
    """-1 means no key; any other negative length was read as no key too."""
    with scratch_file() as path:
        payload = bytearray(encode_batch(0, 0, [(None, b"value")]))
        payload[20:24] = (-2).to_bytes(4, "little", signed=True)
        path.write_bytes(encode_frame(bytes(payload)) + encode_frame(encode_batch(1, 0, [])))
        with pytest.raises(CorruptRecordError, match="key length -2"):
            open_partition(path)
