"""The SDK client keeps reading after a frame it cannot decode: one bad frame from a server
(or a proxy in between) must not end the reader and every subscription with it."""

from __future__ import annotations

import msgspec
from websockets.asyncio.server import ServerConnection, serve

from sdk.client import Client
from tests.helpers import eventually
from wsapi.messages import Heartbeat, Hello

HELLO = Hello(api_version="1", gateway_id="g", nonce="n", server_time_ns=1, frame_bytes_max=1024,
              heartbeat_interval_ms=1000, batch_size_max=10, mass_quote_size_max=10)


async def test_undecodable_frames_are_counted_and_reading_goes_on() -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.send(msgspec.json.encode(HELLO).decode())
        await ws.send(b"\xff\xfe not utf-8")
        await ws.send("not json")
        await ws.send('{"type":"book","instrument":"X"}')
        await ws.send(msgspec.json.encode(Heartbeat(ts=7, event_seq=3)).decode())
        await ws.wait_closed()

    async with serve(server, "127.0.0.1", 0) as listener:
        port = listener.sockets[0].getsockname()[1]
        client = Client(f"ws://127.0.0.1:{port}", reconnect=False)
        await client.connect()
        try:
            await eventually(lambda: client.last_heartbeat is not None)
            assert client.last_heartbeat == Heartbeat(ts=7, event_seq=3)
            assert client.frames_undecodable == 3
            assert client.connected
        finally:
            await client.close()
