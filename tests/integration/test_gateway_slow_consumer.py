"""A client that stops reading is dropped once its unsent bytes pass the bound; the gateway
holds no unbounded buffer for it and serves everyone else. (The embedded log: no engine
is needed, so this runs without Kafka.)"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed

from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from gateway.config import ANONYMOUS, ROLES, GatewayConfig, RateLimit
from gateway.service import GatewayService
from tests.helpers import eventually

OUTBOUND_BYTES_MAX = 64 * 1024
REQUESTS_MAX = 200_000


async def test_a_client_that_does_not_read_is_dropped_and_others_are_served(
    tmp_path: Path,
) -> None:
    limits = {role: RateLimit(per_second=10**6, burst=10**6) for role in (*ROLES, ANONYMOUS)}
    config = GatewayConfig(port=0, outbound_bytes_max=OUTBOUND_BYTES_MAX, role_limits=limits,
                           ip_limit=RateLimit(per_second=10**6, burst=10**6))
    event_log = EmbeddedLog.open(tmp_path / "log", EmbeddedConfig(fsync=False))
    service = GatewayService(event_log, config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.ready.wait(), 30)
        url = f"ws://127.0.0.1:{service.port}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", service.port))
        slow = await websockets.connect(url, sock=sock, compression=None, max_queue=1)
        sent = 0
        frame = json.dumps({"op": "instruments", "req_id": 1})
        try:
            while sent < REQUESTS_MAX and service.transport.slow_consumers_dropped == 0:
                await slow.send(frame)  # never read a reply
                sent += 1
                if sent % 500 == 0:
                    await asyncio.sleep(0)
        except (ConnectionClosed, OSError):
            pass
        await eventually(lambda: service.transport.slow_consumers_dropped == 1, timeout_s=10,
                         message="the slow consumer was dropped")
        assert sent < REQUESTS_MAX
        await eventually(lambda: not service.core.sessions, timeout_s=10,
                         message="the gateway forgot the dropped session")
        async with websockets.connect(url) as other:
            await other.recv()
            await other.send(json.dumps({"op": "ping", "req_id": 2}))
            reply = json.loads(await other.recv())
            while reply["type"] != "reply":
                reply = json.loads(await other.recv())
            assert reply["status"] == "ok"
        await slow.close()
    finally:
        stop.set()
        await task
        await event_log.close()
