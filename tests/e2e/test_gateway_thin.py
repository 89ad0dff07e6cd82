"""The thinnest path: a raw websocket client places an order through the gateway and the engine.

Real Kafka, the engine and the gateway in this process on a fresh topic namespace; no SDK.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import websockets

from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import COMMANDS_TOPIC
from gpux.venue import Venue
from matching_engine.workload import DELIVERY_START_NS
from protocol import Deposit, ListInstrument, decode_command, encode


async def next_reply(ws: websockets.ClientConnection) -> dict[str, Any]:
    """Return the next reply, skipping heartbeats."""
    while True:
        message: dict[str, Any] = json.loads(await ws.recv())
        if message["type"] == "reply":
            return message


async def test_new_order_over_websocket_gets_the_engines_accept_and_reject(
    kafka_bootstrap: str,
) -> None:
    namespace = f"thin{uuid.uuid4().hex[:8]}."
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    try:
        async with Venue.running(event_log, namespace=namespace) as venue:
            producer = event_log.producer()
            await producer.start()
            await producer.send_batch(namespace + COMMANDS_TOPIC, [encode(c) for c in (
                ListInstrument(ts=1, symbol="H100.T", gpu="H100-SXM-80GB", region="eu",
                               delivery_start=DELIVERY_START_NS, delivery_hours=1,
                               tick_size="0.01", max_order_quantity=100, maker_fee_bps=0,
                               taker_fee_bps=0),
                Deposit(ts=1, account="alice", asset="USDC", amount="1000"),
            )])
            await producer.stop()
            # A test-only login: the core's session is bound to "alice" directly.
            async with websockets.connect(venue.urls[0]) as ws:
                hello = json.loads(await ws.recv())
                assert hello["type"] == "hello" and len(hello["nonce"]) == 32
                core = venue.gateways[0].core
                from gateway.auth import Principal

                session = next(iter(core.sessions.values()))
                session.principal = Principal(account="alice", role="trader", credential="t")
                await ws.send(json.dumps({
                    "op": "new_order", "req_id": 1, "client_order_id": "a1",
                    "instrument": "H100.T", "side": "buy", "order_type": "limit",
                    "price": "2.15", "quantity": 3,
                }))
                reply = await next_reply(ws)
                assert reply["req_id"] == 1 and reply["status"] == "accepted", reply
                assert reply["result"]["order_id"]
                await ws.send(json.dumps({
                    "op": "new_order", "req_id": 2, "client_order_id": "a2",
                    "instrument": "H100.T", "side": "buy", "order_type": "limit",
                    "price": "2000", "quantity": 3,
                }))
                reply = await next_reply(ws)
                assert reply["status"] == "rejected" and reply["reason"] == "insufficient_funds"
            consumer = event_log.consumer(namespace + COMMANDS_TOPIC, start="earliest")
            await consumer.start()
            records = await consumer.getmany(100, 1000)
            await consumer.stop()
            orders = [decode_command(r.value) for r in records][2:]
            assert all(command.ts > 10**18 for command in orders), "ts stamped from the clock"
    finally:
        await event_log.close()
