"""Metrics, health and structured logs shared by every service.

Each service registers its Prometheus metrics in its own `CollectorRegistry` and serves
`GET /metrics` (Prometheus text format) and `GET /healthz` (200 when its health check
passes, else 503) from a small asyncio HTTP server on its own port. `gpux dev`, which runs
every service in one process, serves all their registries on one port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUEST_BYTES_MAX = 8192
REQUEST_TIMEOUT_S = 5.0


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields."""

    _standard = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._standard})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(json_logs: bool, level: int = logging.INFO) -> None:
    """Log to stderr, as JSON lines for machines or plain text for people."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter() if json_logs
        else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class MetricsServer:
    """Serve /metrics and /healthz on 127.0.0.1:`port` (0: any free port) for one registry,
    or several (their metric names must differ)."""

    def __init__(
        self, registry: CollectorRegistry | Sequence[CollectorRegistry],
        healthy: Callable[[], bool], host: str = "127.0.0.1", port: int = 0,
    ) -> None:
        self.registries = (
            [registry] if isinstance(registry, CollectorRegistry) else list(registry)
        )
        if not self.registries:
            raise ValueError("MetricsServer needs at least one registry")
        self.healthy = healthy
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            status, content_type, body = self._respond(head[:REQUEST_BYTES_MAX])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or parts[0] != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            body = b"".join(generate_latest(registry) for registry in self.registries)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if path == "/healthz":
            if self.healthy():
                return "200 OK", "text/plain", b"ok\n"
            return "503 Service Unavailable", "text/plain", b"unhealthy\n"
        return "404 Not Found", "text/plain", b"not found\n"
