"""Processes of the fault suite: the venue's services as `python -m gpux` subprocesses, a chain
node that keeps its chain across a SIGKILL, and a watchdog that restarts what dies by itself.

Each service is a `harness.service.Service`, so it leads its own process group (a SIGKILL
reaches every child), appends everything it prints to `<run dir>/<name>.log`, and waits
(bounded) for its readiness probe on every start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.anvil import AnvilService, dumped_chain, json_rpc
from harness.errors import ServiceError
from harness.paths import tail
from harness.service import Service

ROOT = Path(__file__).resolve().parents[2]
DUMP_TIMEOUT_S = 60.0
DUMP_ATTEMPTS_MAX = 10
WATCH_INTERVAL_S = 0.25
RESTART_BACKOFF_MIN_S = 0.5
RESTART_BACKOFF_MAX_S = 5.0

log = logging.getLogger("gpux.chaos")


class GpuxProcess(Service):
    """One venue service run as `python -m gpux ARGUMENTS...` from the repository root.

    Its log and state file are in `<services_dir>/<name>/`: services started at once
    must not share the state file a start writes (and renames into place).
    """

    start_timeout_s = 90.0

    def __init__(self, services_dir: Path, name: str, arguments: list[str],
                 env: dict[str, str], probe: Callable[[], bool] | None = None) -> None:
        super().__init__(services_dir / name)
        self.name = name  # type: ignore[misc]  # per instance: it names the log file
        self.arguments = arguments
        self.env = env
        self.probe = probe

    @property
    def endpoint(self) -> str:
        return f"gpux {self.name} (pid {self.pid})"

    def _prepare(self) -> None:
        """Need nothing: the venue created the databases, topics and contracts."""

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gpux", *self.arguments]

    def _probe_ready(self) -> bool:
        return self.probe() if self.probe is not None else True

    def _popen_options(self) -> dict[str, object]:
        return {"cwd": ROOT, "env": self.env}

    def exit_code(self) -> int | None:
        """Return the exit code of the process that ended by itself, None while it runs."""
        if self._process is None:
            return None
        return self._process.poll()


class DurableAnvil(AnvilService):
    """anvil whose chain outlives a SIGKILL, as a node that persists its blocks does.

    `crash()` freezes block production, saves the chain (blocks, state, hashes), then
    SIGKILLs the node: no mined block is lost, the mempool is (as in a real crash).
    Every later start loads the saved chain (`--load-state`), so no client ever sees an
    empty chain on this port.

    anvil's dump is not atomic with a block being mined at that moment: it can hold the
    state after block N with the block list only up to N - 1 (loaded, that chain keeps
    N's effects but loses its receipts and logs). So a dump counts only if the head did
    not move while it was taken and the dump's own head is that head.
    """

    def _head(self) -> int:
        return int(str(json_rpc(self.url, "eth_blockNumber", [], DUMP_TIMEOUT_S)), 16)

    def _consistent_dump(self) -> bytes:
        for _ in range(DUMP_ATTEMPTS_MAX):
            head = self._head()
            state = dumped_chain(json_rpc(self.url, "anvil_dumpState", [], DUMP_TIMEOUT_S))
            if json.loads(state).get("best_block_number") == head == self._head():
                return state
        raise ServiceError(f"no consistent dump of the chain in {DUMP_ATTEMPTS_MAX} tries")

    def crash(self) -> None:
        json_rpc(self.url, "evm_setAutomine", [False], DUMP_TIMEOUT_S)
        self.save_chain(self._consistent_dump(), self.run_dir / "chain.json")
        self.kill()


@dataclass(frozen=True)
class UnplannedExit:
    """A service that ended without being told to, and what the watchdog saw."""

    service: str
    code: int | None
    phase: str
    at_s: float


class Watchdog:
    """Restart a venue service that exits on its own, as compose's `restart: unless-stopped`.

    Every such exit is recorded with the phase it happened in. A fault that kills a service
    on purpose holds that service (`held`) so the watchdog leaves it alone meanwhile.
    """

    def __init__(self, services: list[GpuxProcess], phase: Callable[[], str],
                 started_s: float) -> None:
        self.services = services
        self.phase = phase
        self.exits: list[UnplannedExit] = []
        self.restart_failures: list[str] = []
        self._locks = {service.name: asyncio.Lock() for service in services}
        self._next_try_s = {service.name: 0.0 for service in services}
        self._backoff_s = {service.name: RESTART_BACKOFF_MIN_S for service in services}
        self._started_s = started_s  # time.monotonic() the run's timeline counts from

    @asynccontextmanager
    async def held(self, service: GpuxProcess) -> AsyncIterator[None]:
        async with self._locks[service.name]:
            yield

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for service in self.services:
                lock = self._locks[service.name]
                if lock.locked() or service.is_running():
                    continue
                if time.monotonic() < self._next_try_s[service.name]:
                    continue
                async with lock:
                    await self._restart(service)
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            except TimeoutError:
                pass

    async def _restart(self, service: GpuxProcess) -> None:
        if service.is_running():
            return
        name = service.name
        if service.pid is not None:  # it ran and ended; a failed restart leaves no pid
            self.exits.append(UnplannedExit(name, service.exit_code(), self.phase(),
                                            round(time.monotonic() - self._started_s, 1)))
            log.warning("watchdog: %s exited with %s; restarting", name, service.exit_code())
        try:
            await asyncio.to_thread(service.restart)
        except ServiceError as error:
            self.restart_failures.append(f"{name} in {self.phase()}: {str(error)[:200]}")
            self._next_try_s[name] = time.monotonic() + self._backoff_s[name]
            self._backoff_s[name] = min(self._backoff_s[name] * 2, RESTART_BACKOFF_MAX_S)
            return
        self._backoff_s[name] = RESTART_BACKOFF_MIN_S


def log_tails(services: list[Service], line_count: int = 60) -> str:
    """Return the last lines of every service's log, for a failure report."""
    parts = []
    for service in services:
        parts.append(f"===== {service.name}: {service.log_path}\n"
                     f"{tail(service.log_path, line_count)}")
    return "\n".join(parts)


def child_env(**variables: str) -> dict[str, str]:
    """Return this process's environment plus `variables`, with the repository importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **variables}
