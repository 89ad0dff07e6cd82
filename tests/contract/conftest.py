"""Fixtures for the event log contract: the same tests against every adapter.

`event_log` is a fresh log per test, parametrised over the embedded and the Kafka adapter.
`reopen_log` opens another instance over the same storage, as a restarted process would:
for the embedded adapter the first instance must be closed first (one process per data
directory), for Kafka it is just a new set of clients. Every log opened is closed at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from eventlog.embedded import EmbeddedLog
from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import EventLog

OpenLog = Callable[[], EventLog]


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLog:
    """Return a function that opens a log instance over this test's storage."""
    if request.param == "embedded":
        data_dir = tmp_path / "log"
        return lambda: EmbeddedLog.open(data_dir)
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    config = KafkaConfig(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    return lambda: KafkaLog(config)


@pytest.fixture
async def opened_logs() -> AsyncIterator[list[EventLog]]:
    logs: list[EventLog] = []
    yield logs
    for log in logs:
        await log.close()


@pytest.fixture
def reopen_log(open_log: OpenLog, opened_logs: list[EventLog]) -> OpenLog:
    """Return a function opening a new instance over the same storage, closed at teardown."""

    def reopen() -> EventLog:
        log = open_log()
        opened_logs.append(log)
        return log

    return reopen


@pytest.fixture
def event_log(reopen_log: OpenLog) -> EventLog:
    """Return a fresh log for this test."""
    return reopen_log()


@pytest.fixture
def topic() -> str:
    """Return a topic name no other test uses, so tests can share one broker."""
    return f"contract-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def name() -> Callable[[str], str]:
    """Return a function making unique names (topics, groups, transactional ids)."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"
