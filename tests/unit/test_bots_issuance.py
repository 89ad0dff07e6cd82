"""The bots issue the GPU-hours they sell (PROTOCOL.md, Delivery): the operator plans one
issue per deliverable hour of its window, nearest first, as many as its USDC bonds, under
ids that a restart makes again; it remembers what the engine answered; `gpux dev` lists
every hour deliverable with a bond of 1.5 reference prices."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import pytest

from gpux.dev.bots import node_name
from gpux.dev.market import GPU_CLASSES, bond_per_gpu_hour_micro, listing_commands
from protocol.commands import IDENTIFIER_PATTERN
from sdk.bots.operator_quoter import (
    Capacity,
    CapacityError,
    OperatorQuoter,
    PlannedIssue,
    issue_id,
    plan_issues,
    within_funds,
)
from sdk.client import Client
from wsapi.messages import Balance, DeliveriesResult, Instrument, Issue, LoginResult, OrderResult

HOUR_NS = 3600 * 10**9
NOW_NS = 100 * HOUR_NS
CAPACITY = """
region: eu-west
hours_ahead: 3
lead_minutes: 5
classes:
  H100-SXM-80GB: {gpus: 8, price: "2.40", node: h100-node-7}
  A100-SXM-80GB: {gpus: 16, price: "1.45"}
  L40S-48GB: {gpus: 0, price: "0.90"}
"""


def instrument(symbol: str, gpu: str, start_ns: int, bond: str | None = "3",
               status: str = "open", max_order_quantity: int = 1000) -> Instrument:
    return Instrument(symbol=symbol, gpu=gpu, region="eu-west", delivery_start=start_ns,
                      delivery_hours=1, tick_size="0.01", max_order_quantity=max_order_quantity,
                      maker_fee_bps=0, taker_fee_bps=0, status=status,  # type: ignore[arg-type]
                      bond_per_gpu_hour=bond)


def test_the_operator_plans_one_issue_per_deliverable_hour_of_its_window_nearest_first() -> None:
    capacity = Capacity.from_yaml(CAPACITY)
    specs = [
        instrument("H2", "H100-SXM-80GB", NOW_NS + 2 * HOUR_NS),
        instrument("A1", "A100-SXM-80GB", NOW_NS + HOUR_NS, bond="1.95",
                   max_order_quantity=10),
        instrument("H1", "H100-SXM-80GB", NOW_NS + HOUR_NS),
        instrument("Hplain", "H100-SXM-80GB", NOW_NS + HOUR_NS, bond=None),  # not deliverable
        instrument("H9", "H100-SXM-80GB", NOW_NS + 9 * HOUR_NS),         # beyond hours_ahead
        instrument("Hsoon", "H100-SXM-80GB", NOW_NS + 60 * 10**9),       # inside lead time
        instrument("Hgone", "H100-SXM-80GB", NOW_NS + HOUR_NS, status="closed"),
        instrument("L1", "L40S-48GB", NOW_NS + HOUR_NS),                  # 0 GPUs of it
        instrument("B1", "B200", NOW_NS + HOUR_NS),                       # not its class
    ]
    planned = plan_issues(capacity, specs, "op-1", NOW_NS)
    assert planned == [
        PlannedIssue(issue_id="op-1.A1.A100-SXM-80GB", instrument="A1", node_id="A100-SXM-80GB",
                     quantity=10, bond_micro=10 * 1_950_000),
        PlannedIssue(issue_id="op-1.H1.h100-node-7", instrument="H1", node_id="h100-node-7",
                     quantity=8, bond_micro=8 * 3_000_000),
        PlannedIssue(issue_id="op-1.H2.h100-node-7", instrument="H2", node_id="h100-node-7",
                     quantity=8, bond_micro=8 * 3_000_000),
    ]
    assert plan_issues(capacity, specs, "op-1", NOW_NS) == planned, "the same on every start"


def test_issues_are_made_nearest_first_while_the_usdc_bonds_them() -> None:
    def planned(name: str, bond_micro: int) -> PlannedIssue:
        return PlannedIssue(issue_id=name, instrument=name, node_id="n", quantity=1,
                            bond_micro=bond_micro)

    near, dear, cheap, free = planned("near", 60), planned("dear", 50), planned("cheap", 30), \
        planned("free", 0)
    assert within_funds([near, dear, cheap, free], 100) == ([near, cheap, free], [dear])
    assert within_funds([near, dear], 0) == ([], [near, dear])
    assert within_funds([], 5) == ([], [])


def test_an_issue_id_is_account_symbol_node_or_a_digest_when_that_is_too_long() -> None:
    assert issue_id("operator-1", "H100-SXM-80GB.eu-west.20250101T10", "op1-h100") == (
        "operator-1.H100-SXM-80GB.eu-west.20250101T10.op1-h100")
    long_one = issue_id("a" * 40, "H100-SXM-80GB.eu-west.20250101T10", "node")
    assert re.match(IDENTIFIER_PATTERN, long_one) and len(long_one) <= 64
    assert long_one == issue_id("a" * 40, "H100-SXM-80GB.eu-west.20250101T10", "node")
    assert long_one != issue_id("a" * 40, "H100-SXM-80GB.eu-west.20250101T10", "node2")


def test_a_node_that_is_not_an_identifier_is_refused_naming_the_class() -> None:
    with pytest.raises(CapacityError, match=r"classes\.H100\.node"):
        Capacity.from_yaml("region: r\nclasses:\n  H100: {gpus: 1, price: '1', node: 'a b'}\n")
    with pytest.raises(CapacityError, match=r"classes\.H 100\.node"):
        Capacity.from_yaml("region: r\nclasses:\n  H 100: {gpus: 1, price: '1'}\n")


class StubClient:
    """The few calls `OperatorQuoter.issue` makes, answered from a script of reasons."""

    def __init__(self, account: str, existing: list[str], answers: dict[str, str]) -> None:
        self.login = LoginResult(account=account, role="operator", cancel_on_disconnect="off")
        self.existing = existing
        self.answers = answers  # issue id -> reason (absent: accepted)
        self.sent: list[str] = []
        self.deliveries_read = 0

    async def deliveries(self) -> DeliveriesResult:
        self.deliveries_read += 1
        return DeliveriesResult(seq=1, assignments=[], issues=[
            Issue(issue_id=name, instrument="X", node_id="n", quantity=1, bonded_quantity=1,
                  bond="3", status="open") for name in self.existing])

    async def issue_capacity(self, instrument: str, node_id: str, quantity: int,
                             issue_id: str | None = None) -> OrderResult:
        assert issue_id is not None
        self.sent.append(issue_id)
        reason = self.answers.get(issue_id)
        if reason is None:
            return OrderResult(op="issue_capacity", status="accepted", issue_id=issue_id,
                               instrument=instrument, node_id=node_id, quantity=quantity,
                               bond="24")
        return OrderResult(op="issue_capacity", status="rejected", issue_id=issue_id,
                           reason=reason)


def test_the_operator_issues_what_is_not_yet_issued_and_goes_on_past_a_refusal() -> None:
    capacity = Capacity.from_yaml(CAPACITY)
    specs = [instrument(f"H{hour}", "H100-SXM-80GB", NOW_NS + hour * HOUR_NS)
             for hour in (1, 2, 3)] + [instrument("A1", "A100-SXM-80GB", NOW_NS + HOUR_NS)]
    stub = StubClient("op-1", existing=["op-1.H1.h100-node-7", "op-1.gone.h100-node-7"],
                      answers={"op-1.H2.h100-node-7": "instrument_closed",
                               "op-1.A1.A100-SXM-80GB": "insufficient_funds",
                               "op-1.H3.h100-node-7": "duplicate_issue"})
    quoter = OperatorQuoter(cast(Client, stub), capacity)
    rich = {"USDC": Balance(available="1000", held="0")}

    def issue(balances: dict[str, Balance]) -> Any:
        return asyncio.run(quoter.issue(specs, balances, NOW_NS))

    assert issue(rich) == 0, "nothing new was accepted"
    assert stub.sent == ["op-1.A1.A100-SXM-80GB", "op-1.H2.h100-node-7", "op-1.H3.h100-node-7"]
    assert quoter.issued == {"op-1.H1.h100-node-7", "op-1.H3.h100-node-7"}, \
        "read at start or refused as a duplicate: made; an hour gone from the window forgotten"
    assert quoter.refused == {"op-1.H2.h100-node-7": "instrument_closed"}

    # Next refresh: the closed hour is not tried again; the one short of USDC is, once funded.
    stub.sent.clear()
    assert issue({"USDC": Balance(available="1", held="0")}) == 0
    assert stub.sent == [] and quoter.waiting_for_usdc == 1
    del stub.answers["op-1.A1.A100-SXM-80GB"]
    assert issue(rich) == 1
    assert stub.sent == ["op-1.A1.A100-SXM-80GB"] and stub.deliveries_read == 1
    stub.sent.clear()
    assert issue(rich) == 0 and stub.sent == [], "everything wanted is issued"


def test_gpux_dev_lists_every_hour_deliverable_at_one_and_a_half_reference_prices() -> None:
    assert {gpu: bond_per_gpu_hour_micro(gpu) for gpu in GPU_CLASSES} == {
        "H100-SXM-80GB": 3_230_000,  # 1.5 x 2.15 = 3.225, rounded half up to the cent
        "A100-SXM-80GB": 1_950_000, "L40S-48GB": 1_200_000}
    listings = listing_commands([], NOW_NS)
    assert len(listings) == 72
    bonds = {(listing.gpu, listing.bond_per_gpu_hour) for listing in listings}
    assert bonds == {("H100-SXM-80GB", "3.23"), ("A100-SXM-80GB", "1.95"),
                     ("L40S-48GB", "1.2")}
    assert node_name("op1", "H100-SXM-80GB") == "op1-h100"
