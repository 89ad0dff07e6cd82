"""Every example docs/asyncapi.yaml gives fits the schema it illustrates, and the requests
among them decode in the gateway: a reader who copies one gets what the document says."""

from __future__ import annotations

import json

from gateway.testing import ApiContract
from wsapi.requests import decode_request


def test_every_example_fits_its_schema_and_example_requests_decode() -> None:
    contract = ApiContract()
    examples = [(name, example["name"], example["payload"])
                for name, message in contract.components["messages"].items()
                for example in message.get("examples", [])]
    assert len(examples) >= 9, "the Delivery messages are illustrated"
    for name, example, payload in examples:
        direction = "recv" if "type" in payload else "send"
        assert contract.check(direction, json.dumps(payload)) == [], (name, example)
        if direction == "send":
            assert decode_request(json.dumps(payload)).req_id == payload["req_id"]


def test_the_contract_refuses_a_frame_that_does_not_fit() -> None:
    contract = ApiContract()
    report = {"op": "delivery_report", "req_id": 1, "issue_id": "i1", "holder": "alice",
              "delivered_ppm": 1_000_001}
    assert contract.check("send", json.dumps(report)) != []
    settled = {"type": "reply", "req_id": 1, "op": "deliveries", "status": "ok",
               "result": {"issues": [], "assignments": []}}
    assert contract.check("recv", json.dumps(settled)) != [], "seq is required"
