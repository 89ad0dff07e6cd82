"""Fuzz the loading of engine snapshots: a damaged, forged or misnamed file is refused (skipped
with a warning, recovery falling back to the snapshot before it), never trusted, and never
an exception out of `SnapshotStore.latest`.

The checksum covers the engine state only: an `event_seq` damaged by itself is caught by
the engine service, which compares it with the seq of the state it restores.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from matching_engine.snapshots import SUFFIX, Snapshot, SnapshotStore
from tests.fuzz.support import fuzz, json_values, mutated_bytes, mutated_object

OLDER = Snapshot(command_offset=10, event_seq=7, engine=b"older state")
NEWER = Snapshot(command_offset=20, event_seq=9, engine=b"newer state")


def body_of(snapshot: Snapshot) -> dict[str, object]:
    return {"command_offset": snapshot.command_offset, "event_seq": snapshot.event_seq,
            "engine": snapshot.engine, "sha256": hashlib.sha256(snapshot.engine).hexdigest()}


def sound(snapshot: Snapshot | None) -> bool:
    """Whether `snapshot` is OLDER, or NEWER's state under NEWER's offset."""
    return snapshot == OLDER or (snapshot is not None and snapshot.engine == NEWER.engine
                                 and snapshot.command_offset == NEWER.command_offset)


def latest_after(damage: bytes) -> Snapshot | None:
    """Save OLDER and NEWER, replace NEWER's file with `damage`, and recover."""
    with tempfile.TemporaryDirectory(prefix="gpux-fuzz-") as directory:
        store = SnapshotStore(Path(directory))
        store.save(OLDER)
        store.save(NEWER).write_bytes(damage)
        return store.latest(command_offset_max=100)


@fuzz(200)
@given(data=st.data())
def test_a_damaged_snapshot_file_is_skipped_for_the_one_before(data: st.DataObject) -> None:
    damage = data.draw(mutated_bytes(msgspec.msgpack.encode(body_of(NEWER))))
    assert sound(latest_after(damage))


@fuzz(200)
@given(data=st.data(), extra=json_values)
def test_a_snapshot_body_broken_in_one_field_is_skipped(
    data: st.DataObject, extra: object
) -> None:
    changed, _, _ = data.draw(mutated_object(body_of(NEWER)))
    try:
        damage = msgspec.msgpack.encode(changed)
    except OverflowError:
        damage = msgspec.msgpack.encode(extra)
    assert sound(latest_after(damage))


def test_regression_a_snapshot_with_invalid_utf8_is_skipped() -> None:
    """msgspec raised UnicodeDecodeError, which escaped recovery."""
    damage = msgspec.msgpack.encode(body_of(NEWER)).replace(
        msgspec.msgpack.encode(body_of(NEWER)["sha256"]), b"\xa2\xff\xfe")
    assert latest_after(damage) == OLDER


def test_regression_a_snapshot_under_another_offset_is_skipped() -> None:
    """A file copied or renamed under another command offset was trusted: recovery would
    have replayed the commands from the name's offset onto the state of another."""
    assert latest_after(msgspec.msgpack.encode(body_of(OLDER))) == OLDER
    with tempfile.TemporaryDirectory(prefix="gpux-fuzz-") as directory:
        store = SnapshotStore(Path(directory))
        store.save(OLDER).rename(Path(directory) / f"{30:020d}{SUFFIX}")
        assert store.latest(command_offset_max=100) is None


def test_regression_a_stray_file_among_the_snapshots_is_ignored() -> None:
    """A file named "<not a number>.snapshot" made `latest` raise ValueError."""
    with tempfile.TemporaryDirectory(prefix="gpux-fuzz-") as directory:
        store = SnapshotStore(Path(directory))
        store.save(OLDER)
        (Path(directory) / f"copy{SUFFIX}").write_bytes(b"")
        (Path(directory) / f"5{SUFFIX}").write_bytes(b"")
        assert store.latest(command_offset_max=100) == OLDER
