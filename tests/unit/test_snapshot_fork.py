"""Snapshots written by a forked child: the loop goes on, one child at a time, failures told."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from matching_engine.core import Engine
from matching_engine.snapshots import ForkedSnapshots, SnapshotStore
from matching_engine.workload import Workload


def engine_after(commands: int) -> Engine:
    workload = Workload(instruments=2, accounts=6, seed=9)
    engine = Engine()
    for command in workload.setup() + workload.flow(commands):
        engine.apply(command)
    return engine


def capture_once_released(released: Path) -> Callable[[], bytes]:
    """A capture that holds its child until the test creates `released` (the child has
    closed every inherited fd, so a file is what it can wait on)."""
    def capture() -> bytes:
        deadline = time.monotonic() + 60
        while not released.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return b"state"

    return capture


def test_the_child_writes_the_state_as_of_the_fork(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    writer = ForkedSnapshots(store)
    engine = engine_after(2_000)
    expected = engine.snapshot()
    assert writer.start(2_010, engine.seq, engine.snapshot)
    for command in Workload(instruments=2, accounts=6, seed=10).flow(500):
        engine.apply(command)  # the parent goes on; the child holds its own copy
    writer.wait(timeout_s=60)
    snapshot = store.latest(2_010)
    assert snapshot is not None and snapshot.engine == expected
    assert (writer.written, writer.failed, writer.running()) == (1, 0, False)


def test_one_child_at_a_time(tmp_path: Path) -> None:
    store_dir, released = tmp_path / "snapshots", tmp_path / "released"
    writer = ForkedSnapshots(SnapshotStore(store_dir))
    capture = capture_once_released(released)

    assert writer.start(10, 1, capture)
    assert not writer.start(20, 2, capture), "a second child while the first runs"
    released.touch()
    writer.wait(timeout_s=60)
    assert writer.start(30, 3, capture)
    writer.wait(timeout_s=60)
    assert writer.written == 2
    assert [path.name for path in sorted(store_dir.glob("*.snapshot"))] == [
        f"{10:020d}.snapshot", f"{30:020d}.snapshot"]


def test_a_failing_child_is_counted_and_leaves_no_file(tmp_path: Path) -> None:
    writer = ForkedSnapshots(SnapshotStore(tmp_path))

    def broken_capture() -> bytes:
        raise RuntimeError("capture failed")

    assert writer.start(10, 1, broken_capture)
    writer.wait(timeout_s=60)
    assert (writer.written, writer.failed) == (0, 1)
    assert list(tmp_path.iterdir()) == []


def test_the_child_holds_none_of_the_parents_listening_ports(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    writer = ForkedSnapshots(SnapshotStore(tmp_path / "snapshots"))
    released = tmp_path / "released"
    assert writer.start(10, 1, capture_once_released(released))
    listener.close()  # as a killed engine's port is closed, while its child still writes
    bound_while_child_ran = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the child drops its copies first thing
        try:
            with socket.create_server(("127.0.0.1", port)):  # a new engine binds the port
                bound_while_child_ran = writer.running()
            break
        except OSError:
            time.sleep(0.01)
    released.touch()
    assert bound_while_child_ran
    writer.wait(timeout_s=60)
    assert writer.written == 1


def test_a_child_is_reaped_and_reported_as_soon_as_it_exits(tmp_path: Path) -> None:
    """The child stayed a zombie, and its outcome unlogged, until the next snapshot came
    due (14 minutes in `gpux dev`), and the log then gave those minutes as its duration."""
    outcomes: list[tuple[bool, float]] = []
    writer = ForkedSnapshots(SnapshotStore(tmp_path),
                             on_done=lambda ok, seconds: outcomes.append((ok, seconds)))
    started = time.monotonic()
    assert writer.start(10, 1, lambda: b"state")
    pid = writer.child_pid
    assert pid is not None
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # neither running() nor wait() is called: nobody asks
    assert not Path(f"/proc/{pid}").exists(), "the exited child was not reaped"
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.01)
    observed = time.monotonic() - started
    assert len(outcomes) == 1 and outcomes[0][0] is True
    assert 0 < outcomes[0][1] <= observed
    assert writer.written == 1
