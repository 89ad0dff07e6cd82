"""Fixtures the integration tests share; the services themselves come from tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from eventlog.kafka import KafkaConfig, KafkaLog
from runtime.postgres import drop_database
from tests.integration.ledger_db import LedgerDatabase, create_ledger_database

if TYPE_CHECKING:
    from harness.sshd import SshdService


@pytest.fixture
async def kafka_log(kafka_bootstrap: str) -> AsyncIterator[KafkaLog]:
    """A Kafka event log on the session's broker, closed after the test."""
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15_000))
    yield event_log
    await event_log.close()


@pytest.fixture
def namespace() -> str:
    """A topic namespace of the test's own ("t<random>."), so tests share no topic."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def ledger_db(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[LedgerDatabase]:
    """A fresh ledger database on the session's server, dropped after the test. Migrated in
    process; by `gpux ledger migrate` where the test parametrizes it indirectly with "cli"."""
    database = await create_ledger_database(
        database_url, migrate_by=getattr(request, "param", "library"))
    yield database
    await drop_database(database_url, database.name)


@pytest.fixture(scope="session")
def sshd_service(services_dir: Path) -> Iterator[SshdService]:
    """Debian's OpenSSH server (`harness.sshd`, the pinned .debs) on a loopback port for the
    session; a test that needs it fails, never skips, when it cannot start. It lets in the
    login user `sshd_service.login` (root under CI) by certificate only, and trusts nothing
    until a test calls `sshd_service.authorize(ca_key_lines, principals_lines)`: each test
    sets its own CA and principals (sshd reads them at every login)."""
    from harness.errors import ServiceError
    from harness.sshd import SshdService

    service = SshdService(services_dir / "sshd")
    try:
        service.start()
    except ServiceError as error:
        pytest.fail(f"sshd is unavailable: {error}", pytrace=False)
    yield service
    service.stop()
