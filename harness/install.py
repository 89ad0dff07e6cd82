"""Fetch everything the services need ahead of time; fast and silent when all is cached.

Each at the version the repo pins: Kafka's jars through Maven (harness/maven/pom.xml, every
jar checked against harness/maven/jars.sha256), anvil through `npm ci` (package-lock.json),
PostgreSQL from the `pgserver` wheel of uv.lock, and Debian's OpenSSH server from its two
.debs pinned by sha256 in harness/sshd.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from harness.anvil import install_anvil
from harness.kafka import KAFKA_VERSION, install_kafka
from harness.postgres import bin_dir_for, ensure_os_user, require_bin_dir
from harness.sshd import OPENSSH_VERSION, install_sshd


def install_all(report: Callable[[str], None] = print) -> None:
    """Install Kafka, anvil, PostgreSQL and sshd; report each step with its duration."""
    _timed(report, f"kafka {KAFKA_VERSION} jars", lambda: str(install_kafka()))
    _timed(report, "anvil", lambda: str(install_anvil()))
    _timed(report, "postgresql binaries", lambda: str(ensure_postgres()))
    _timed(report, f"openssh-server {OPENSSH_VERSION}", lambda: str(install_sshd()))


def _timed(report: Callable[[str], None], what: str, step: Callable[[], str]) -> None:
    started = time.monotonic()
    where = step()
    report(f"{what}: {where} ({time.monotonic() - started:.1f}s)")


def ensure_postgres() -> str:
    """Find the locked PostgreSQL binaries and, for root, the OS user that runs them and a
    copy of the binaries it can reach; return the bin dir the cluster will use."""
    os_user = ensure_os_user() if os.geteuid() == 0 else None
    return str(bin_dir_for(require_bin_dir(), os_user))
