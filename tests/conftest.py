"""Root conftest: real Kafka, PostgreSQL and anvil for tests, each started lazily once.

Per service the endpoint comes from, in order: its env var (KAFKA_BOOTSTRAP,
DATABASE_URL, ETH_RPC_URL); testcontainers when a Docker engine answers; else a local
process from `harness`. A service that cannot be had fails the test under CI=true and
skips it elsewhere. `kafka_service`, `postgres_service` and `anvil_service` hand out the
local process (for kill/restart) and skip when the endpoint is external.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness.anvil import AnvilService
from harness.containers import (
    docker_engine_answers,
    start_anvil_container,
    start_kafka_container,
    start_postgres_container,
)
from harness.errors import ServiceError
from harness.kafka import KafkaService
from harness.postgres import PostgresService
from harness.service import Service, remove_run_dir

MARKER_BY_FIXTURE = {
    "kafka_bootstrap": "kafka",
    "kafka_service": "kafka",
    "database_url": "postgres",
    "postgres_service": "postgres",
    "eth_rpc_url": "chain",
    "anvil_service": "chain",
}


@dataclass(frozen=True)
class ProvidedService:
    """Where a service answers, and the local process behind it when we started one."""

    endpoint: str
    source: str  # "env", "container" or "local"
    service: Service | None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the services they use, so `-m "not kafka"` can leave them out."""
    for item in items:
        for fixture_name in getattr(item, "fixturenames", ()):
            marker = MARKER_BY_FIXTURE.get(fixture_name)
            if marker is not None:
                item.add_marker(marker)


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


_failed_services: list[str] = []  # their run dirs (and logs) are kept after the session


def _unavailable(name: str, reason: str) -> NoReturn:
    _failed_services.append(name)
    message = f"{name} is unavailable: {reason}"
    if _running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def services_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Hold the run dirs of local services; kept after failures or with $GPUX_SERVICES_DIR."""
    kept_dir = os.environ.get("GPUX_SERVICES_DIR", "").strip()
    if kept_dir:
        path = Path(kept_dir).absolute()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="gpux-services-"))
    path.chmod(0o755)  # when root, PostgreSQL runs as another user that must pass through
    yield path
    if not _failed_services and request.session.testsfailed == 0:
        shutil.rmtree(path, ignore_errors=True)


def _provide(
    request: pytest.FixtureRequest,
    run_dir: Path,
    env_var: str,
    start_container: Callable[[], tuple[str, Any]],
    make_service: Callable[[Path], Service],
) -> ProvidedService:
    endpoint = os.environ.get(env_var, "").strip()
    if endpoint:
        return ProvidedService(endpoint=endpoint, source="env", service=None)
    try:
        if docker_engine_answers():
            endpoint, container = start_container()
            request.addfinalizer(container.stop)
            return ProvidedService(endpoint=endpoint, source="container", service=None)
        remove_run_dir(run_dir)  # left by an earlier session in $GPUX_SERVICES_DIR
        service = make_service(run_dir)
        service.start()
    except Exception as error:  # noqa: BLE001 -- any failure to start is reported the same way
        reason = str(error) if isinstance(error, ServiceError) else repr(error)
    else:
        request.addfinalizer(service.stop)
        return ProvidedService(endpoint=service.endpoint, source="local", service=service)
    _unavailable(run_dir.name, reason)  # outside the except: no chained traceback


def _local_service(provided: ProvidedService, env_var: str) -> Service:
    if provided.service is None:
        pytest.skip(f"the service comes from {provided.source} ({env_var}); cannot kill it")
    return provided.service


@pytest.fixture(scope="session")
def _kafka(request: pytest.FixtureRequest, services_dir: Path) -> ProvidedService:
    return _provide(
        request, services_dir / "kafka", "KAFKA_BOOTSTRAP", start_kafka_container, KafkaService
    )


@pytest.fixture(scope="session")
def _postgres(request: pytest.FixtureRequest, services_dir: Path) -> ProvidedService:
    return _provide(
        request, services_dir / "postgres", "DATABASE_URL", start_postgres_container,
        PostgresService,
    )  # fmt: skip


@pytest.fixture(scope="session")
def _anvil(request: pytest.FixtureRequest, services_dir: Path) -> ProvidedService:
    return _provide(
        request, services_dir / "anvil", "ETH_RPC_URL", start_anvil_container, AnvilService
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka: ProvidedService) -> str:
    """Return "127.0.0.1:PORT" of a Kafka 4.x broker that supports transactions."""
    return _kafka.endpoint


@pytest.fixture(scope="session")
def database_url(_postgres: ProvidedService) -> str:
    """Return "postgresql://USER:PASS@127.0.0.1:PORT/DB" for a superuser."""
    return _postgres.endpoint


@pytest.fixture(scope="session")
def eth_rpc_url(_anvil: ProvidedService) -> str:
    """Return the JSON-RPC URL of an anvil node (chain id 31337, default dev accounts)."""
    return _anvil.endpoint


@pytest.fixture(scope="session")
def kafka_service(_kafka: ProvidedService) -> KafkaService:
    """Return the local Kafka process (kill/restart keep its data and port)."""
    service = _local_service(_kafka, "KAFKA_BOOTSTRAP")
    assert isinstance(service, KafkaService)
    return service


@pytest.fixture(scope="session")
def postgres_service(_postgres: ProvidedService) -> PostgresService:
    """Return the local PostgreSQL process (kill/restart keep its data and port)."""
    service = _local_service(_postgres, "DATABASE_URL")
    assert isinstance(service, PostgresService)
    return service


@pytest.fixture(scope="session")
def anvil_service(_anvil: ProvidedService) -> AnvilService:
    """Return the local anvil process (restart gives a fresh chain on the same port)."""
    service = _local_service(_anvil, "ETH_RPC_URL")
    assert isinstance(service, AnvilService)
    return service
