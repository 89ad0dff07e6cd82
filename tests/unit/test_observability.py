"""Metrics and health: the engine's counters reach /metrics; /healthz follows readiness."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from eventlog.embedded import EmbeddedLog
from matching_engine.config import EngineConfig
from matching_engine.metrics import EngineMetrics
from matching_engine.service import EngineService
from runtime.observability import MetricsServer
from tests.helpers import eventually
from tests.unit.test_engine_service_embedded import append_commands_after_topics, workload_payloads


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    status_line, _, rest = response.partition("\r\n")
    return int(status_line.split(" ")[1]), rest.partition("\r\n\r\n")[2]


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_engine_metrics_count_what_it_applied(tmp_path: Path) -> None:
    payloads = workload_payloads(500)
    event_log = EmbeddedLog.open(tmp_path / "log")
    metrics = EngineMetrics()
    service = EngineService(event_log, EngineConfig(batch_size_max=50), metrics)
    server = MetricsServer(metrics.registry, service.ready.is_set)
    await server.start()
    stop = asyncio.Event()
    try:
        assert (await http_get(server.port, "/healthz"))[0] == 503
        await append_commands_after_topics(event_log, service, payloads)
        task = asyncio.create_task(service.run(stop))
        await eventually(lambda: task.done() or service.next_offset >= len(payloads))
        status, health = await http_get(server.port, "/healthz")
        assert (status, health) == (200, "ok\n")
        status, text = await http_get(server.port, "/metrics")
        assert status == 200
        assert sample(text, "gpux_engine_commands_total") == len(payloads)
        assert sample(text, "gpux_engine_events_total") == service.engine.seq
        assert sample(text, "gpux_engine_event_seq") == service.engine.seq
        assert sample(text, "gpux_engine_batch_size_commands_count") == service.stats.batches
        stop.set()
        await task
    finally:
        stop.set()
        await server.stop()
        await event_log.close()


async def test_metrics_server_refuses_what_it_does_not_serve() -> None:
    registry = CollectorRegistry()
    Counter("gpux_test_things", "Things", registry=registry).inc(3)
    server = MetricsServer(registry, lambda: True)
    await server.start()
    try:
        assert (await http_get(server.port, "/nope"))[0] == 404
        status, text = await http_get(server.port, "/metrics")
        assert status == 200 and sample(text, "gpux_test_things_total") == 3
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /metrics HTTP/1.1\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 405")
        writer.close()
    finally:
        await server.stop()
