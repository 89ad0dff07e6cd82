"""Fetch everything the services need ahead of time; fast and silent when all is cached.

Kafka's jars come through Maven, anvil through npm (the repo's package.json), and the
PostgreSQL binaries from Debian's `postgresql` package when missing and we are root.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from harness.anvil import install_anvil
from harness.errors import ServiceError
from harness.kafka import KAFKA_VERSION, install_kafka
from harness.postgres import ensure_os_user, postgres_bin_dir

APT_TIMEOUT_S = 900.0


def install_all(report: Callable[[str], None] = print) -> None:
    """Install Kafka, anvil and PostgreSQL; report each step with its duration."""
    _timed(report, f"kafka {KAFKA_VERSION} jars", lambda: str(install_kafka()))
    _timed(report, "anvil", lambda: str(install_anvil()))
    _timed(report, "postgresql binaries", lambda: str(ensure_postgres()))


def _timed(report: Callable[[str], None], what: str, step: Callable[[], str]) -> None:
    started = time.monotonic()
    where = step()
    report(f"{what}: {where} ({time.monotonic() - started:.1f}s)")


def ensure_postgres() -> str:
    """Make sure initdb/postgres exist (apt-get when root) and, for root, the OS user."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.geteuid() != 0:
            raise ServiceError(
                "PostgreSQL binaries are missing; install Debian's `postgresql` package"
                " or set GPUX_PG_BIN to the dir holding initdb"
            )
        _apt_install("postgresql")
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError("apt-get installed postgresql but initdb is still missing")
    if os.geteuid() == 0:
        ensure_os_user()
    return str(bin_dir)


def _apt_install(package: str) -> None:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if _run_quietly(install, environment) == 0:
        return
    _run_quietly(["apt-get", "update"], environment)  # the package lists may be stale
    if _run_quietly(install, environment) != 0:
        raise ServiceError(f"`{' '.join(install)}` failed")


def _run_quietly(command: list[str], environment: dict[str, str]) -> int:
    try:
        result = subprocess.run(
            command, env=environment, capture_output=True, timeout=APT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ServiceError(f"`{' '.join(command)}` took over {APT_TIMEOUT_S}s") from error
    return result.returncode
