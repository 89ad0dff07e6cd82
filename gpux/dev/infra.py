"""What `gpux dev` embeds under its data directory: a PostgreSQL cluster and an anvil node.

PostgreSQL runs from the `pgserver` wheel's binaries: a PyPI package that `make dev`
installs from uv.lock with everything else, so a fresh machine with Python, Node and Java
needs no `apt-get` and no root for it. The cluster itself is the harness's
(harness.postgres), the same the tests run: initdb once, then `postgres` on a free loopback
port with a password, as an unprivileged user when we are root (pgserver's own server
manager would listen on a unix socket only and, as root, open every parent dir of the data
to all users).

anvil comes from npm (harness.anvil: `npm ci` from the repo's lock file, which also brings
solc-js and OpenZeppelin for the contracts, so Node is needed either way). It runs with
`--state FILE`: it loads the chain from that file on start and writes it back when stopped
with SIGTERM, so a restart resumes the same chain, blocks and all. There is no in-process
EVM fallback (eth-tester): the contracts are compiled by solc-js from the same `npm ci`, so
a machine that can build them can run anvil too.

Each service leads its own process group, so a Ctrl-C in the terminal reaches `gpux dev`
alone, which stops the services after everything that uses them. A run killed without
stopping them leaves them running: the next start finds them by their state files and
stops them first (anvil writes its state as it stops), then starts them afresh.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from harness import postgres as harness_postgres
from harness.anvil import AnvilService
from harness.errors import ServiceError
from harness.service import (
    STATE_FILE_NAME,
    Service,
    read_state,
    record_is_alive,
    recorded_process,
    stop_recorded,
)
from runtime.npm import install_npm_packages

log = logging.getLogger("gpux.dev")

STOP_TIMEOUT_S = 20.0


class DevPostgres(harness_postgres.PostgresService):
    """The harness's PostgreSQL cluster; for root, its data kept where a reboot leaves it."""

    outside_data_root = Path("/var/lib/gpux")


class DevAnvil(AnvilService):
    """anvil that loads its chain from `chain_state_path` on start and writes it there when
    stopped."""

    @property
    def chain_state_path(self) -> Path:
        return self.run_dir / "chain-state.json"

    def _command(self) -> list[str]:
        return [*super()._command(), "--state", str(self.chain_state_path)]


def stop_stale(run_dir: Path, name: str) -> None:
    """Stop a service that a killed `gpux dev` left running in `run_dir`, if any."""
    state = read_state(run_dir)
    if state is None:
        return
    record = recorded_process(state)
    if record_is_alive(record):
        log.warning("stopping the %s (pid %d) an earlier run left behind", name, record.pid)
        stop_recorded(record, signal.Signals[str(state.get("stop_signal", "SIGTERM"))],
                      STOP_TIMEOUT_S)
    (run_dir / STATE_FILE_NAME).unlink(missing_ok=True)


class Infrastructure:
    """The embedded PostgreSQL and anvil `gpux dev` needs; either may come from outside."""

    def __init__(self, data_dir: Path, *, database_url: str | None,
                 rpc_url: str | None) -> None:
        self.postgres = DevPostgres(data_dir / "postgres") if database_url is None else None
        self.anvil = DevAnvil(data_dir / "chain") if rpc_url is None else None
        self._database_url = database_url
        self._rpc_url = rpc_url

    @property
    def database_url(self) -> str:
        return self.postgres.url if self.postgres is not None else str(self._database_url)

    @property
    def rpc_url(self) -> str:
        return self.anvil.url if self.anvil is not None else str(self._rpc_url)

    def describe(self) -> str:
        parts = [
            f"PostgreSQL {'embedded' if self.postgres else 'at'} {self.database_url}",
            f"chain {'anvil' if self.anvil else 'at'} {self.rpc_url}",
        ]
        return ", ".join(parts)

    async def start(self) -> None:
        """Start what is embedded, both at once (each waits until it answers)."""
        if self.anvil is not None:
            await asyncio.to_thread(install_npm_packages)  # anvil, and solc for the contracts
        starts = [asyncio.to_thread(self._start, service)
                  for service in (self.postgres, self.anvil) if service is not None]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    @staticmethod
    def _start(service: Service) -> None:
        stop_stale(service.run_dir, service.name)
        service.start()

    async def stop(self) -> None:
        """Stop anvil (it writes its state) and PostgreSQL (a fast shutdown)."""
        for service in (self.anvil, self.postgres):
            if service is not None:
                try:
                    await asyncio.to_thread(service.stop, STOP_TIMEOUT_S)
                except ServiceError as error:
                    log.error("stopping %s: %s", service.name, error)
