"""The price index in the gateway, with no I/O: the `index` feed of one class or of every
class (snapshot = the latest value, then each new one), what a subscription may name, and
`GET /index` and `/index/latest` over a stub store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.index import IndexBoard, QueryError, history_query, parse_instant
from gateway.indexhttp import GatewayHttp
from index.value import MINUTE_NS, IndexValue
from tests.unit.test_gateway_core import connect, make_core, replies, send

MINUTE0_NS = parse_instant("2026-12-05T11:02:00Z", "t")


def value(minute: int, last_seq: int, *, gpu: str = "H100", region: str = "eu",
          micro: int | None = 2_437_500) -> IndexValue:
    return IndexValue(
        gpu=gpu, region=region, minute_ns=MINUTE0_NS + minute * MINUTE_NS, value_micro=micro,
        source="trades" if micro is not None else "none", trade_count=3 if micro else 0,
        volume=24 if micro else 0, instrument_count=2 if micro else 0,
        sufficient=micro is not None, inputs_hash=bytes([minute]) * 32, last_seq=last_seq)


def frames(transport: Any, conn_id: int) -> list[dict[str, Any]]:
    return [f for f in transport.frames.get(conn_id, []) if f["type"] == "index"]


def test_the_index_feed_gives_the_latest_value_then_each_new_one_per_class_or_all() -> None:
    core, transport, _, auth = make_core()
    core.add_index([value(0, 10), value(0, 10, gpu="A100")])
    connect(core, auth, 1, None)
    send(core, 1, {"op": "subscribe", "req_id": 1, "channel": "index", "gpu": "H100",
                   "region": "eu"})
    send(core, 1, {"op": "subscribe", "req_id": 2, "channel": "index"})
    reply = replies(transport, 1)[1]
    assert reply["status"] == "ok" and reply["result"] == {
        "channel": "index", "instrument": None, "gpu": "H100", "region": "eu"}
    one, every = frames(transport, 1)
    assert (one["kind"], one["gpu"], one["region"]) == ("snapshot", "H100", "eu")
    assert one["values"] == [{
        "gpu": "H100", "region": "eu", "minute": "2026-12-05T11:02:00Z",
        "minute_ns": MINUTE0_NS, "value": "2.4375", "source": "trades", "sufficient": True,
        "trade_count": 3, "volume": 24, "instrument_count": 2, "inputs_hash": "00" * 32,
        "last_seq": 10}]
    assert "gpu" not in every and [(v["gpu"], v["region"]) for v in every["values"]] == [
        ("A100", "eu"), ("H100", "eu")]
    core.add_index([value(1, 15, gpu="A100"), value(1, 15, micro=None)])
    update_every, update_one = frames(transport, 1)[2:]
    assert update_one["kind"] == "update" and [
        (v["gpu"], v["value"], v["source"]) for v in update_one["values"]] == [
        ("H100", None, "none")]
    assert [v["gpu"] for v in update_every["values"]] == ["A100", "H100"]
    assert core.index.last_seq == 15
    assert [point.minute for point in core.index.latest_points()] == [
        "2026-12-05T11:03:00Z"] * 2


def test_an_index_subscription_names_one_listed_class_or_none() -> None:
    core, transport, _, auth = make_core()  # lists H100 in eu
    connect(core, auth, 1, None)
    cases = {
        1: ({"gpu": "H100"}, "$.region"),
        2: ({"region": "eu"}, "$.gpu"),
        3: ({"gpu": "H200", "region": "eu"}, "$.gpu"),
        4: ({"instrument": "H100.a"}, "$.instrument"),
    }
    for req_id, (fields, _) in cases.items():
        send(core, 1, {"op": "subscribe", "req_id": req_id, "channel": "index", **fields})
    send(core, 1, {"op": "subscribe", "req_id": 5, "channel": "book", "instrument": "H100.a",
                   "gpu": "H100"})
    send(core, 1, {"op": "subscribe", "req_id": 6, "channel": "index", "gpu": "H100",
                   "region": "eu"})
    answers = replies(transport, 1)
    for req_id, (_, field) in cases.items():
        assert answers[req_id]["error"]["code"] == "invalid_request", req_id
        assert answers[req_id]["error"]["field"] == field, req_id
    assert answers[5]["error"]["field"] == "$.gpu"
    assert answers[6]["status"] == "ok", "a listed class before any value is published"
    assert frames(transport, 1) == [{"type": "index", "kind": "snapshot", "gpu": "H100",
                                     "region": "eu", "values": []}]
    send(core, 1, {"op": "unsubscribe", "req_id": 7, "channel": "index", "gpu": "H100",
                   "region": "eu"})
    core.add_index([value(0, 3)])
    assert len(frames(transport, 1)) == 1, "no update after unsubscribing"


def test_values_out_of_last_seq_order_are_refused() -> None:
    board = IndexBoard()
    board.add([value(0, 10)], lambda channel, key: True)
    with pytest.raises(ValueError, match="last_seq 9 after 10"):
        board.add([value(1, 9)], lambda channel, key: True)


NOW_NS = parse_instant("2026-12-06T00:00:00Z", "t")


@pytest.mark.parametrize(("query", "problem"), [
    ("region=eu", "give gpu and region"),
    ("gpu=H100&region=eu&from=yesterday", "from is not an ISO 8601 time"),
    ("gpu=H100&region=eu&from=2026-12-05T12:00&to=2026-12-05T11:00", "from must be before"),
    ("gpu=H100&region=eu&limit=0", "limit must be a whole number from 1 to 1440"),
    ("gpu=H100&region=eu&limit=1441", "limit must be"),
    ("gpu=H100&gpu=A100&region=eu", "gpu is given 2 times"),
    ("gpu=H100&region=eu&size=3", "unknown parameter 'size'"),
    ("gpu=H100&region=eu&to=9999-01-01T00:00", "to is outside"),
])
def test_a_bad_history_query_says_what_is_wrong(query: str, problem: str) -> None:
    with pytest.raises(QueryError, match=problem):
        history_query(query, NOW_NS, 1440)


def test_a_history_query_defaults_to_the_day_up_to_now_and_reads_times_as_utc() -> None:
    assert history_query("gpu=H100-SXM-80GB&region=eu-west", NOW_NS, 1440) == \
        history_query(f"gpu=H100-SXM-80GB&region=eu-west&from=2026-12-05T00:00&limit=1440"
                      f"&to={'2026-12-06T01:00%2B01:00'}", NOW_NS, 1440)


class StubStore:
    """The store's history read: the values given, or the failure given."""

    def __init__(self, values: list[IndexValue], failure: Exception | None = None) -> None:
        self.values = values
        self.failure = failure
        self.queries: list[Any] = []

    async def history(self, query: Any) -> list[IndexValue]:
        self.queries.append(query)
        if self.failure is not None:
            raise self.failure
        return self.values


def get(site: GatewayHttp, path: str, upgrade: bool = False) -> Response | None:
    headers = Headers([("Upgrade", "websocket")] if upgrade else [])
    return asyncio.run(site.process_request(None, Request(path, headers)))  # type: ignore[arg-type]


def body(response: Response | None) -> Any:
    assert response is not None
    return json.loads(response.body)


def test_http_serves_the_latest_values_and_a_class_history_and_passes_the_rest_on() -> None:
    board = IndexBoard()
    board.add([value(0, 4), value(1, 5)], lambda channel, key: True)
    store = StubStore([value(0, 4), value(1, 5)])
    page = Response(200, "OK", Headers(), b"page")
    site = GatewayHttp(board, store, lambda connection, request: page,  # type: ignore[arg-type]
                       history_max=1440)
    latest = get(site, "/index/latest")
    assert latest is not None and latest.status_code == 200
    assert latest.headers["Access-Control-Allow-Origin"] == "*"
    assert [item["minute"] for item in body(latest)] == ["2026-12-05T11:03:00Z"]
    history = get(site, "/index?gpu=H100&region=eu&from=2026-12-05T11:00&to=2026-12-05T12:00")
    assert [item["last_seq"] for item in body(history)] == [4, 5]
    assert (store.queries[0].gpu, store.queries[0].from_ns) == ("H100", MINUTE0_NS - 2 * MINUTE_NS)
    bad = get(site, "/index?gpu=H100")
    assert bad is not None and bad.status_code == 400 and "region" in body(bad)["error"]
    assert get(site, "/") is page
    assert get(site, "/index", upgrade=True) is None, "a websocket handshake goes on"


def test_http_without_an_index_or_its_store_says_so() -> None:
    async def async_site(connection: Any, request: Any) -> None:
        return None

    none = GatewayHttp(IndexBoard(), None, async_site, history_max=10)
    missing = get(none, "/index/latest")
    assert missing is not None and missing.status_code == 404
    assert get(none, "/elsewhere") is None
    down = GatewayHttp(IndexBoard(), StubStore([], OSError("refused")),  # type: ignore[arg-type]
                       None, history_max=10)
    unavailable = get(down, "/index?gpu=H100&region=eu")
    assert unavailable is not None and unavailable.status_code == 503
    assert get(down, "/") is None
