"""Read a service's /metrics and /healthz (runtime.observability.MetricsServer) from a test."""

from __future__ import annotations

import asyncio

PROBE_TIMEOUT_S = 5.0


async def http_get(port: int, path: str) -> tuple[int, str] | None:
    """Return (status, body) of GET `path` on 127.0.0.1:`port`; None when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        await writer.drain()
        response = (await asyncio.wait_for(reader.read(), PROBE_TIMEOUT_S)).decode()
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


async def scrape(port: int) -> dict[str, float]:
    """Return every sample of /metrics by its name and labels as exposed, e.g.
    `gpux_settlement_gas_used_total{kind="batch"}`; empty when nothing answers."""
    answer = await http_get(port, "/metrics")
    if answer is None or answer[0] != 200:
        return {}
    samples = {}
    for line in answer[1].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def health(port: int) -> int | None:
    """Return the status of /healthz (200 or 503), None when nothing answers."""
    answer = await http_get(port, "/healthz")
    return None if answer is None else answer[0]
