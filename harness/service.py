"""The shape every harnessed service shares: start, stop, kill, restart, and a state file.

A service runs as one process leading its own process group (so a kill reaches its
children too), writes everything it prints to `log_path`, and keeps its data under
`run_dir`, so `restart()` after `kill()` finds the data it had.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from harness.errors import ServiceError
from harness.paths import tail

POLL_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 10.0
STATE_FILE_NAME = "service.json"


@dataclass(frozen=True)
class ProcessRecord:
    """A process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    start_ticks: int


def _read_stat_fields(pid: int) -> list[str] | None:
    """Return /proc/<pid>/stat's fields after the command name (state is first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def record_of(pid: int) -> ProcessRecord | None:
    """Return the record of a live process, or None when there is none with that pid."""
    fields = _read_stat_fields(pid)
    if fields is None:
        return None
    return ProcessRecord(pid=pid, start_ticks=int(fields[19]))


def record_is_alive(record: ProcessRecord) -> bool:
    """Tell whether the recorded process still runs (a zombie counts as gone)."""
    fields = _read_stat_fields(record.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == record.start_ticks


def group_members(group_id: int) -> list[int]:
    """Return the pids of live (non-zombie) processes in a process group."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _read_stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == group_id:
            members.append(int(entry.name))
    return members


def _signal_group(group_id: int, signal_number: signal.Signals) -> None:
    try:
        os.killpg(group_id, signal_number)
    except ProcessLookupError:
        pass


def stop_recorded(
    record: ProcessRecord,
    stop_signal: signal.Signals,
    timeout_s: float = STOP_TIMEOUT_S,
    child: subprocess.Popen[bytes] | None = None,
) -> None:
    """Stop a service's process group: `stop_signal` first, SIGKILL if it outlives `timeout_s`.

    `record` must lead its own group (services start with start_new_session=True).
    """
    if not record_is_alive(record):
        _kill_group_and_wait(record.pid, child, KILL_TIMEOUT_S)
        return
    try:
        os.kill(record.pid, stop_signal)
    except ProcessLookupError:
        pass  # it exited on its own since the check above
    if _wait_group_gone(record.pid, child, timeout_s):
        return
    _kill_group_and_wait(record.pid, child, KILL_TIMEOUT_S)


def _kill_group_and_wait(
    group_id: int, child: subprocess.Popen[bytes] | None, timeout_s: float
) -> None:
    _signal_group(group_id, signal.SIGKILL)
    if not _wait_group_gone(group_id, child, timeout_s):
        raise ServiceError(f"process group {group_id} survived SIGKILL for {timeout_s}s")


def _wait_group_gone(
    group_id: int, child: subprocess.Popen[bytes] | None, timeout_s: float
) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if child is not None:
            child.poll()  # reap our own child so it does not linger as a zombie
        if not group_members(group_id):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


class Service(abc.ABC):
    """One local service process with a run dir, a log, and a bounded readiness wait."""

    name: ClassVar[str] = "service"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout_s: ClassVar[float] = 60.0

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.absolute()
        self._process: subprocess.Popen[bytes] | None = None
        self._record: ProcessRecord | None = None
        self._prepared = False

    # --- what subclasses provide -------------------------------------------------------

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Return the address clients use (a URL or host:port)."""

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Do the one-time setup: binaries, ports, config, an initialised data dir."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """Return the command line that runs the service in the foreground."""

    @abc.abstractmethod
    def _probe_ready(self) -> bool:
        """Make one short readiness check (a real request); never block for long."""

    def _after_ready(self) -> None:  # noqa: B027 -- an optional hook, empty by default
        """Do what needs the running service once (e.g. create a database)."""

    def _popen_options(self) -> dict[str, Any]:
        """Return extra subprocess.Popen keyword arguments (e.g. a user to run as)."""
        return {}

    def _state_extra(self) -> dict[str, Any]:
        """Return extra facts for the state file (ports, URLs)."""
        return {}

    # --- the public shape --------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE_NAME

    @property
    def pid(self) -> int | None:
        return self._record.pid if self._record is not None else None

    def is_running(self) -> bool:
        if self._process is not None:
            self._process.poll()
        return self._record is not None and record_is_alive(self._record)

    def start(self, timeout_s: float | None = None) -> None:
        """Set up (first time only), launch, and wait until the service answers."""
        if self.is_running():
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self._prepared:
            self._prepare()
            self._prepared = True
        self._launch_and_wait(timeout_s)
        try:
            self._after_ready()
        except BaseException:
            self.kill()
            raise
        self._write_state()

    def restart(self, timeout_s: float | None = None) -> None:
        """Stop if running, start again on the same ports with the same data."""
        if not self._prepared:
            raise ServiceError(f"{self.name} was never started, so it cannot be restarted")
        if self.is_running():
            self.stop()
        self._launch_and_wait(timeout_s)
        self._write_state()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop gracefully, then SIGKILL the process group if it outlives `timeout_s`."""
        if self._record is None:
            return
        stop_recorded(self._record, self.stop_signal, timeout_s, self._process)
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would; keep the data."""
        if self._record is None:
            return
        _kill_group_and_wait(self._record.pid, self._process, KILL_TIMEOUT_S)
        self._forget_process()

    def log_tail(self, line_count: int = 40) -> str:
        return tail(self.log_path, line_count)

    # --- internals ---------------------------------------------------------------------

    def _launch_and_wait(self, timeout_s: float | None) -> None:
        budget_s = self.start_timeout_s if timeout_s is None else timeout_s
        self._launch()
        try:
            self._await_ready(time.monotonic() + budget_s, budget_s)
        except BaseException:
            self.kill()
            raise

    def _launch(self) -> None:
        command = self._command()
        options: dict[str, Any] = {"cwd": self.run_dir, **self._popen_options()}
        with self.log_path.open("ab") as log:
            _write_banner(log, command)
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **options,
                )
            except OSError as error:
                raise self._error(f"could not run {command[0]}: {error}") from error
        self._record = record_of(self._process.pid) or ProcessRecord(self._process.pid, -1)

    def _await_ready(self, deadline: float, budget_s: float) -> None:
        while True:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                raise self._error(f"{self.name} exited with code {code} while starting")
            if self._probe_ready():
                return
            if time.monotonic() >= deadline:
                raise self._error(f"{self.name} was not ready within {budget_s:.0f}s")
            time.sleep(POLL_INTERVAL_S)

    def _forget_process(self) -> None:
        self._process = None
        self._record = None
        self.state_path.unlink(missing_ok=True)

    def _write_state(self) -> None:
        if self._record is None:
            raise ServiceError(f"{self.name} has no process to record")
        state = {
            "name": self.name,
            "pid": self._record.pid,
            "start_ticks": self._record.start_ticks,
            "stop_signal": self.stop_signal.name,
            "endpoint": self.endpoint,
            "log_path": str(self.log_path),
            **self._state_extra(),
        }
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.state_path)

    def _error(self, message: str) -> ServiceError:
        """Build a ServiceError that names the log and carries its tail."""
        return ServiceError(
            f"{message}; log: {self.log_path}\n--- last lines ---\n{self.log_tail()}",
            log_path=self.log_path,
        )


def _write_banner(log: IO[bytes], command: list[str]) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    log.write(f"=== gpux harness {stamp}: {' '.join(command)}\n".encode())
    log.flush()


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """Return the state file a running service wrote in `run_dir`, or None."""
    try:
        state: dict[str, Any] = json.loads((run_dir / STATE_FILE_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state


def recorded_process(state: dict[str, Any]) -> ProcessRecord:
    return ProcessRecord(pid=int(state["pid"]), start_ticks=int(state["start_ticks"]))


def remove_run_dir(run_dir: Path) -> None:
    """Remove a stopped service's run dir, including a data dir it links to elsewhere."""
    data_link = run_dir / "data"
    if data_link.is_symlink():
        shutil.rmtree(data_link.resolve(), ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
