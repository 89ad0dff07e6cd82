"""The SDK's strips and index, with no gateway: the legs a strip's range resolves to, the
index feeds a session routes messages to and subscribes again, the requests the client
sends (they decode in the gateway), and the CLI's limit flags."""

from __future__ import annotations

import argparse
import json

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from sdk.cli import _strip_limit, build_parser
from sdk.client import Client, consecutive_instruments
from sdk.requests import IndexClass, subscribe_request, unsubscribe_request
from sdk.session import Delivered, Session
from wsapi import messages
from wsapi.requests import decode_request

HOUR_NS = 3600 * 10**9
START_NS = 1_796_472_000_000_000_000  # 2026-12-05T12:00Z


def spec(symbol: str, start_ns: int, *, gpu: str = "H100-SXM-80GB", region: str = "eu-west",
         hours: int = 1, status: str = "open") -> messages.Instrument:
    return messages.Instrument(
        symbol=symbol, gpu=gpu, region=region, delivery_start=start_ns, delivery_hours=hours,
        tick_size="0.01", max_order_quantity=100, maker_fee_bps=0, taker_fee_bps=0,
        status=status)  # type: ignore[arg-type]


def test_a_range_resolves_to_the_consecutive_open_instruments_of_the_class() -> None:
    specs = [spec(f"h{i}", START_NS + i * HOUR_NS) for i in range(4)]
    specs += [spec("two-hours", START_NS + 4 * HOUR_NS, hours=2),
              spec("h6", START_NS + 6 * HOUR_NS),
              spec("other-region", START_NS, region="us-east"),
              spec("other-gpu", START_NS + HOUR_NS, gpu="A100")]
    assert consecutive_instruments(specs, "H100-SXM-80GB", "eu-west", START_NS + HOUR_NS,
                                   5) == ["h1", "h2", "h3", "two-hours", "h6"]
    assert consecutive_instruments(specs, "H100-SXM-80GB", "eu-west", START_NS, 6) == [
        "h0", "h1", "h2", "h3", "two-hours", "h6"]
    closed = [*specs[:2], spec("h2", START_NS + 2 * HOUR_NS, status="closed")]
    with pytest.raises(ValueError, match="from 2026-12-05T14:00:00Z: 2 of 3 hours found"):
        consecutive_instruments(closed, "H100-SXM-80GB", "eu-west", START_NS, 3)


def test_index_messages_go_to_their_class_feed_or_to_the_feed_of_every_class() -> None:
    session: Session[str, str] = Session()
    h100 = IndexClass("H100-SXM-80GB", "eu-west")
    assert session.subscribe("index", h100, "one") is True
    assert session.subscribe("index", None, "every") is True
    point = messages.IndexPoint(
        gpu=h100.gpu, region=h100.region, minute="2026-12-05T11:02:00Z",
        minute_ns=START_NS - 58 * 60 * 10**9, value="2.4375", source="trades", sufficient=True,
        trade_count=3, volume=24, instrument_count=2, inputs_hash="ab" * 32, last_seq=9)
    one = messages.IndexMessage(kind="update", gpu=h100.gpu, region=h100.region,
                                values=[point])
    every = messages.IndexMessage(kind="update", values=[point])
    [to_one] = session.receive(msgspec.json.encode(one))
    [to_every] = session.receive(msgspec.json.encode(every))
    assert isinstance(to_one, Delivered) and to_one.subscribers == ("one",)
    assert isinstance(to_every, Delivered) and to_every.subscribers == ("every",)
    assert to_one.message == one
    feeds = session.resubscriptions()
    assert feeds == [("index", h100), ("index", None)]
    requests = [subscribe_request(channel, key)(n) for n, (channel, key) in enumerate(feeds)]
    decoded = [decode_request(msgspec.json.encode(request)) for request in requests]
    assert [(r.channel, r.gpu, r.region) for r in decoded] == [  # type: ignore[union-attr]
        ("index", h100.gpu, h100.region), ("index", None, None)]
    unsubscribe = decode_request(msgspec.json.encode(unsubscribe_request("index", h100)(7)))
    assert (unsubscribe.gpu, unsubscribe.region) == h100  # type: ignore[union-attr]


def test_the_cli_takes_a_buys_max_total_and_a_sells_min_total() -> None:
    parser = build_parser()

    def args(*extra: str) -> argparse.Namespace:
        return parser.parse_args(["strip", "--gpu", "H100-SXM-80GB", "--region", "eu-west",
                                  "--from", "2026-12-05T12:00", "--hours", "6",
                                  "--quantity", "8", *extra])

    buy = args("--max-total", "96")
    assert buy.start == START_NS and _strip_limit(buy) == "96"
    assert _strip_limit(args("--quote")) is None
    assert _strip_limit(args("--side", "sell", "--min-total", "40")) == "40"
    for wrong, message in ((args(), "a buy needs --max-total"),
                           (args("--side", "sell", "--max-total", "9"),
                            "a sell takes --min-total, not --max-total")):
        with pytest.raises(SystemExit, match=message):
            _strip_limit(wrong)
    with pytest.raises(SystemExit):
        parser.parse_args(["strip", "--gpu", "g", "--region", "r", "--from", "noon",
                           "--hours", "2", "--quantity", "1"])


async def test_the_client_sends_strips_the_gateway_decodes_and_reads_their_results() -> None:
    sent: list[dict[str, object]] = []

    async def gateway(ws: ServerConnection) -> None:
        hello = messages.Hello(api_version="1", gateway_id="g", nonce="n", server_time_ns=1,
                               frame_bytes_max=65536, heartbeat_interval_ms=1000,
                               batch_size_max=10, mass_quote_size_max=10)
        await ws.send(msgspec.json.encode(hello).decode())
        async for frame in ws:
            request = decode_request(frame)
            sent.append(json.loads(frame))
            leg = messages.StripLeg(instrument="h0", filled=8, notional="19.2", fees="0.0096",
                                    fills=[messages.StripFill(price="2.4", quantity=8,
                                                              fee="0.0096")])
            result: msgspec.Struct = messages.StripQuoteResult(
                seq=4, side="buy", quantity=8, legs=[leg, leg], notional="38.4",
                fees="0.0192", total="38.4192", reason="limit_exceeded")
            status = "ok"
            if request.__struct_config__.tag == "new_strip_order":
                result = messages.StripResult(op="new_strip_order", status="rejected",
                                              client_order_id="run-7",
                                              reason="insufficient_liquidity")
                status = "rejected"
            await ws.send(msgspec.json.encode(messages.Reply(
                req_id=request.req_id, op=str(request.__struct_config__.tag),
                status=status, result=result)).decode())  # type: ignore[arg-type]

    async with serve(gateway, "127.0.0.1", 0) as listener:
        port = listener.sockets[0].getsockname()[1]
        async with Client(f"ws://127.0.0.1:{port}", reconnect=False) as client:
            quote = await client.strip_quote(["h0", "h1"], "buy", 8, "30")
            strip = await client.new_strip_order(["h0", "h1"], "buy", 8, "30",
                                                 client_order_id="run-7")
    assert not quote.executable and quote.reason == "limit_exceeded"
    assert quote.legs[1].fills[0].price == "2.4"
    assert not strip.accepted and strip.reason == "insufficient_liquidity"
    assert [frame["op"] for frame in sent] == ["strip_quote", "new_strip_order"]
    assert sent[1]["client_order_id"] == "run-7" and sent[1]["limit_total"] == "30"
