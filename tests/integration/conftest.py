"""Fixtures the integration tests share; the services themselves come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventlog.kafka import KafkaConfig, KafkaLog


@pytest.fixture
async def kafka_log(kafka_bootstrap: str) -> AsyncIterator[KafkaLog]:
    """A Kafka event log on the session's broker, closed after the test."""
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15_000))
    yield event_log
    await event_log.close()
