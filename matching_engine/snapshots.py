"""Engine snapshots on disk: the state with the command offset and event seq it reflects.

A snapshot file is written to a temporary name, fsynced, renamed into place and the
directory fsynced, so a crash leaves either the old set of snapshots or the new one. Each
file carries a SHA-256 of its body; one that fails the check is skipped (never trusted),
and recovery falls back to the one before it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

log = logging.getLogger("gpux.engine.snapshots")

SUFFIX = ".snapshot"
# A snapshot's name is its command offset, 20 digits so that names sort as offsets do.
_NAME = re.compile(r"[0-9]{20}" + re.escape(SUFFIX) + r"\Z")
# What msgspec raises on a damaged file besides DecodeError: bad UTF-8 in a string, and
# nesting past the recursion limit (in an unknown field, which msgspec skips recursively).
_UNREADABLE = (OSError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class SnapshotFile(msgspec.Struct, frozen=True):
    command_offset: int
    event_seq: int
    engine: bytes
    sha256: str


@dataclass(frozen=True)
class Snapshot:
    command_offset: int
    event_seq: int
    engine: bytes


class SnapshotStore:
    """A directory of snapshots named by the command offset they reflect."""

    def __init__(self, directory: Path, kept_max: int = 3) -> None:
        if kept_max < 1:
            raise ValueError(f"kept_max must be >= 1, got {kept_max}")
        self.directory = directory
        self.kept_max = kept_max
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, snapshot: Snapshot) -> Path:
        """Write a snapshot durably, then drop the oldest beyond `kept_max`."""
        body = SnapshotFile(
            command_offset=snapshot.command_offset, event_seq=snapshot.event_seq,
            engine=snapshot.engine, sha256=hashlib.sha256(snapshot.engine).hexdigest(),
        )
        path = self.directory / f"{snapshot.command_offset:020d}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            file.write(msgspec.msgpack.encode(body))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        for old in self._paths()[: -self.kept_max]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, command_offset_max: int) -> Snapshot | None:
        """Return the newest sound snapshot at or below `command_offset_max`."""
        for stray in sorted(set(self.directory.glob(f"*{SUFFIX}")) - set(self._paths())):
            log.warning("ignoring %s: not named <20-digit command offset>%s", stray, SUFFIX)
        for path in reversed(self._paths()):
            if _offset_of(path) > command_offset_max:
                continue
            snapshot = self._load(path)
            if snapshot is not None:
                return snapshot
        return None

    def _load(self, path: Path) -> Snapshot | None:
        """Read one snapshot file; None, with a warning saying why, when it is not sound."""
        try:
            body = msgspec.msgpack.decode(path.read_bytes(), type=SnapshotFile)
        except _UNREADABLE as error:
            log.warning("skipping unreadable snapshot %s: %s", path, error)
            return None
        if hashlib.sha256(body.engine).hexdigest() != body.sha256:
            log.warning("skipping snapshot %s: checksum mismatch", path)
            return None
        if body.command_offset != _offset_of(path) or body.event_seq < 0:
            log.warning("skipping snapshot %s: it records command offset %d, event seq %d",
                        path, body.command_offset, body.event_seq)
            return None
        return Snapshot(body.command_offset, body.event_seq, body.engine)

    def _paths(self) -> list[Path]:
        """Return the snapshot files, oldest first; files of other names are left alone."""
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if _NAME.match(p.name))


def _offset_of(path: Path) -> int:
    return int(path.name.removesuffix(SUFFIX))


_FD_LIMIT = os.sysconf("SC_OPEN_MAX")


class ForkedSnapshots:
    """Write snapshots from a forked child, so the engine's loop never waits for one.

    `fork()` hands the child a copy-on-write image of the engine as it is between two
    batches; the child captures and encodes it, writes the file (fsync included) and exits
    while the parent goes on applying commands, as Redis's BGSAVE does. Capturing a large
    state took the loop 0.2-0.5 s (Python core, 100k-500k commands of the e2e benchmark), a
    stall every order in flight waited for. One child at a time: a snapshot that comes due
    while the previous one is still being written is skipped, and the next batch asks again.

    A watcher thread waits for each child, so it is reaped the moment it exits (no zombie
    until the next snapshot is due) and its outcome and true duration are logged and handed
    to `on_done(ok, seconds)` (the engine's metrics) at once.
    """

    def __init__(self, store: SnapshotStore,
                 on_done: Callable[[bool, float], None] | None = None) -> None:
        self.store = store
        self.on_done = on_done
        self._watcher: threading.Thread | None = None
        self.child_pid: int | None = None  # the latest child's
        self.written = 0
        self.failed = 0

    def start(self, command_offset: int, event_seq: int,
              capture: Callable[[], bytes]) -> bool:
        """Fork a child writing the state `capture` returns; False while one is running."""
        if self.running():
            return False
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: capture, write, exit without running the parent's cleanup
            status = 1
            try:
                # Drop the parent's sockets and files (stdio kept): a child outliving a killed
                # parent must not hold its listening ports while a new engine binds them.
                os.closerange(3, _FD_LIMIT)
                # Capturing a large state takes a core for a second or more: let the engine,
                # the broker and the gateway have the CPU first (the e2e benchmark's p99 at
                # 50% load was that second on a 2-core machine).
                os.nice(19)
                self.store.save(Snapshot(command_offset, event_seq, capture()))
                status = 0
            except BaseException:  # noqa: BLE001 -- reported by the exit status and stderr
                traceback.print_exc()
            finally:
                os._exit(status)
        self.child_pid = pid
        self._watcher = threading.Thread(
            target=self._reap, args=(pid, command_offset, started),
            name=f"snapshot-child-{pid}", daemon=True)
        self._watcher.start()
        return True

    def running(self) -> bool:
        """Tell whether a child is still writing."""
        return self._watcher is not None and self._watcher.is_alive()

    def wait(self, timeout_s: float) -> None:
        """Wait for the running child, if any, at most `timeout_s`."""
        if self._watcher is not None:
            self._watcher.join(timeout_s)

    def _reap(self, pid: int, command_offset: int, started: float) -> None:
        _, status = os.waitpid(pid, 0)
        seconds = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.written += 1
            log.info("snapshot at command offset %d written in %.3f s (forked child)",
                     command_offset, seconds)
        else:
            self.failed += 1
            log.error("snapshot at command offset %d failed after %.3f s: the child exited "
                      "with %d", command_offset, seconds, code)
        if self.on_done is not None:
            self.on_done(code == 0, seconds)
