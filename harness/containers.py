"""The same three services from Docker images via testcontainers, where an engine answers.

Unused on machines without a Docker engine (the local processes of this package serve
there); kept short. testcontainers' KafkaContainer drives Confluent images only, so the
official `apache/kafka` image runs as a generic container with a fixed host port, which it
must know to advertise.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from harness.anvil import json_rpc
from harness.errors import ServiceError
from harness.kafka import KAFKA_VERSION, broker_answers_metadata
from harness.ports import LOOPBACK_HOST, free_port

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE = "postgres:16.2-alpine"  # the pgserver wheel's version
FOUNDRY_IMAGE = "ghcr.io/foundry-rs/foundry:v1.7.1"  # package-lock.json's anvil
DOCKER_PROBE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 120.0


@functools.cache
def docker_engine_answers() -> bool:
    """Tell (once per process) whether a Docker engine answers the docker client."""
    if shutil.which("docker") is None:
        return False
    command = ["docker", "version", "--format", "{{.Server.Version}}"]
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=DOCKER_PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} was not ready within {timeout_s:.0f}s")
        time.sleep(0.5)


def start_kafka_container() -> tuple[str, Any]:
    """Start apache/kafka (KRaft combined mode); return (bootstrap servers, container)."""
    from testcontainers.core.container import DockerContainer

    host_port = free_port()
    settings = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{LOOPBACK_HOST}:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, host_port)
    container.with_envs(**settings).start()
    bootstrap = f"{LOOPBACK_HOST}:{host_port}"
    _wait_until(lambda: broker_answers_metadata(bootstrap, 5.0), f"container {KAFKA_IMAGE}")
    return bootstrap, container


def start_postgres_container() -> tuple[str, Any]:
    """Start PostgreSQL; return (postgresql:// URL, container)."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the "community" split
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username="gpux", password="gpux", dbname="gpux", driver=None
    ).start()
    return str(container.get_connection_url()), container


def start_anvil_container() -> tuple[str, Any]:
    """Start anvil from Foundry's image; return (JSON-RPC URL, container)."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(FOUNDRY_IMAGE).with_command("anvil --host 0.0.0.0")
    container.with_exposed_ports(8545).start()
    host = container.get_container_host_ip()
    url = f"http://{host}:{container.get_exposed_port(8545)}"
    _wait_until(lambda: _anvil_answers(url), f"container {FOUNDRY_IMAGE}")
    return url, container


def _anvil_answers(url: str) -> bool:
    try:
        json_rpc(url, "eth_chainId", [], 1.0)
    except (OSError, ValueError, ServiceError):
        return False
    return True
