"""Client requests are decoded strictly, and every refusal names the field at fault."""

from __future__ import annotations

import json

import pytest

from wsapi.errors import RequestError
from wsapi.requests import (
    BatchRequest,
    NewOrderRequest,
    NewStripOrderRequest,
    StripQuoteRequest,
    Subscribe,
    decode_request,
    request_cost,
    salvage_req_id,
)

ORDER = {"op": "new_order", "req_id": 1, "client_order_id": "a1", "instrument": "H100.x",
         "side": "buy", "order_type": "limit", "price": "2.15", "quantity": 3}


def refusal(frame: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        decode_request(json.dumps(frame) if not isinstance(frame, bytes) else frame)
    return caught.value


def test_a_valid_order_decodes_to_its_struct() -> None:
    request = decode_request(json.dumps(ORDER))
    assert isinstance(request, NewOrderRequest) and request.quantity == 3


@pytest.mark.parametrize(("change", "field", "code"), [
    ({"quantity": "3"}, "$.quantity", "invalid_request"),
    ({"quantity": 0}, "$.quantity", "invalid_request"),
    ({"quantity": 2**70}, "$.quantity", "invalid_request"),
    ({"price": "2.1234567"}, "$.price", "invalid_request"),
    ({"price": 2.15}, "$.price", "invalid_request"),
    ({"side": "long"}, "$.side", "invalid_request"),
    ({"client_order_id": "gpux.fence.1"}, "$.client_order_id", "invalid_request"),
    ({"surprise": 1}, "$.surprise", "invalid_request"),
    ({"op": "launch"}, "$.op", "unknown_op"),
    ({"req_id": -1}, "$.req_id", "invalid_request"),
])
def test_refusals_name_the_field(change: dict[str, object], field: str, code: str) -> None:
    error = refusal({**ORDER, **change})
    assert (error.code, error.field) == (code, field)


def test_missing_fields_and_batch_items_are_named_by_path() -> None:
    without = {k: v for k, v in ORDER.items() if k != "instrument"}
    assert refusal(without).field == "$.instrument"
    batch = {"op": "batch", "req_id": 2, "orders": [
        {k: v for k, v in ORDER.items() if k != "req_id"},
        {"op": "cancel_order", "client_order_id": "a b"}]}
    assert refusal(batch).field == "$.orders[1].client_order_id"
    batch["orders"] = batch["orders"][:1]  # type: ignore[index]
    assert isinstance(decode_request(json.dumps(batch)), BatchRequest)


def test_not_json_and_not_objects_are_refused() -> None:
    assert refusal(b"\xff{").code == "invalid_json"
    assert refusal([1, 2]).code == "invalid_request"
    assert refusal({"req_id": 5}).code == "unknown_op"
    assert salvage_req_id(b'{"req_id": 5, "op": 3}') == 5
    assert salvage_req_id(b'{"req_id": true}') is None


def test_deep_nesting_is_refused_before_parsing() -> None:
    deep = '{"op": "ping", "req_id": 1, "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
    assert refusal(deep.encode()).code == "invalid_request"
    assert salvage_req_id(deep) is None


STRIP = {"op": "new_strip_order", "req_id": 3, "client_order_id": "run-7", "side": "buy",
         "instruments": ["H100.h0", "H100.h1"], "quantity": 8, "limit_total": "96"}


@pytest.mark.parametrize(("change", "field"), [
    ({"instruments": ["H100.h0"]}, "$.instruments"),
    ({"instruments": [f"H100.h{i}" for i in range(169)]}, "$.instruments"),
    ({"instruments": ["H100.h0", "not a symbol"]}, "$.instruments[1]"),
    ({"client_order_id": "x" * 60}, "$.client_order_id"),
    ({"client_order_id": "gpux.fence"}, "$.client_order_id"),
    ({"limit_total": 96}, "$.limit_total"),
    ({"limit_total": "96.1234567"}, "$.limit_total"),
    ({"quantity": 0}, "$.quantity"),
    ({"side": "both"}, "$.side"),
])
def test_strip_refusals_name_the_field(change: dict[str, object], field: str) -> None:
    assert refusal({**STRIP, **change}).field == field


def test_a_strip_costs_a_token_per_leg_and_its_quote_one() -> None:
    legs = [f"H100.h{i}" for i in range(168)]
    strip = decode_request(json.dumps({**STRIP, "instruments": legs,
                                       "client_order_id": "x" * 59}))
    assert isinstance(strip, NewStripOrderRequest) and request_cost(strip) == 168
    quote = decode_request(json.dumps({"op": "strip_quote", "req_id": 4, "side": "sell",
                                       "instruments": legs[:6], "quantity": 8}))
    assert isinstance(quote, StripQuoteRequest) and quote.limit_total is None
    assert request_cost(quote) == 1


def test_the_index_channel_takes_a_gpu_and_a_region() -> None:
    request = decode_request(json.dumps({"op": "subscribe", "req_id": 1, "channel": "index",
                                         "gpu": "H100-SXM-80GB", "region": "eu-west"}))
    assert isinstance(request, Subscribe) and (request.gpu, request.region) == (
        "H100-SXM-80GB", "eu-west")
    assert refusal({"op": "subscribe", "req_id": 1, "channel": "index",
                    "gpu": ""}).field == "$.gpu"
