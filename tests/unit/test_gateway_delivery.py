"""Delivery (PROTOCOL.md v2) in the gateway, with no I/O: who may issue capacity and report a
delivery, the replies correlated through their fences, the `deliveries` feed each party
reads, the request listing issues and assignments, and balances that follow the bond.

The engine's events are written out here as the engine emits them for the story told (an
issue, tokens passed on, a close, a report), so these tests hold whatever the cores do; the
end-to-end test (tests/e2e/test_gateway_sdk.py) runs the same story through the real engine.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.core import GatewayCore
from gateway.correlation import FENCE_ACCOUNT
from gateway.marketdata import ProjectionError
from gateway.projection import Projection
from protocol import (
    AnyEvent,
    BondReleased,
    CancelRejected,
    CapacityIssued,
    CommandRejected,
    DeliveryAssigned,
    DeliveryReport,
    DeliverySettled,
    Deposited,
    Event,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
    IssueRejected,
    ListInstrument,
    ReportRejected,
    Withdrawn,
    decode_command,
)
from tests.unit.test_gateway_core import (
    EngineSink,
    StubAuth,
    StubTransport,
    connect,
    replies,
    send,
)
from wsapi.errors import RequestError
from wsapi.requests import DeliveryReportRequest, IssueCapacityRequest, decode_request

NOW_NS = 1_700_000_000_000_000_000
START_NS = NOW_NS + 3600 * 10**9
SYMBOL = "H100.eu.h1"
ISSUE = {"op": "issue_capacity", "issue_id": "op1-h1-n17", "instrument": SYMBOL,
         "node_id": "n-17", "quantity": 8}
REPORT = {"op": "delivery_report", "issue_id": "op1-h1-n17", "holder": "alice",
          "delivered_ppm": 950_000, "evidence": "9f2c41d0"}


class Log:
    """Number events as the engine's log would: seq 1, 2, 3, ... at engine time `ts`."""

    def __init__(self) -> None:
        self.seq = 0
        self.ts = NOW_NS

    def __call__(self, kind: type[Event], **fields: Any) -> Any:
        self.seq += 1
        return kind(seq=self.seq, ts=self.ts, **fields)


def listed(log: Log, symbol: str = SYMBOL, bond: str | None = "3") -> InstrumentListed:
    listing: InstrumentListed = log(
        InstrumentListed, symbol=symbol, gpu="H100", region="eu", delivery_start=START_NS,
        delivery_hours=1, tick_size="0.01", max_order_quantity=100, maker_fee_bps=0,
        taker_fee_bps=0, bond_per_gpu_hour=bond)
    return listing


def story_until_close(log: Log) -> list[AnyEvent]:
    """op1 issues 8 GPU-hours at a bond of 3 USDC each, passes 5 tokens on to alice (a
    withdrawal and a deposit stand for a sale: the balances move the same), and the
    instrument closes: op1's own 3 release their bond, alice's 5 are assigned to her."""
    events = [
        listed(log),
        log(Deposited, account="op1", asset="USDC", amount="100"),
        log(Deposited, account="alice", asset="USDC", amount="10"),
        log(CapacityIssued, issue_id="op1-h1-n17", account="op1", instrument=SYMBOL,
            node_id="n-17", quantity=8, bond="24"),
        log(IssueRejected, issue_id="op1-h1-n18", account="op1", reason="insufficient_funds"),
        log(Withdrawn, account="op1", asset=SYMBOL, amount=5),
        log(Deposited, account="alice", asset=SYMBOL, amount=5),
    ]
    log.ts = START_NS
    return events + [
        log(InstrumentClosed, symbol=SYMBOL),
        log(BondReleased, issue_id="op1-h1-n17", account="op1", quantity=3, amount="9"),
        log(DeliveryAssigned, instrument=SYMBOL, issue_id="op1-h1-n17", issuer="op1",
            node_id="n-17", holder="alice", quantity=5),
    ]


def report_events(log: Log) -> list[AnyEvent]:
    """The delivery service reports 95% of alice's 5 GPU-hours delivered: she is paid
    floor(5 x 3 x 5%) = 0.75 USDC, and 14.25 goes back to op1."""
    return [
        log(DeliverySettled, instrument=SYMBOL, issue_id="op1-h1-n17", issuer="op1",
            holder="alice", quantity=5, delivered_ppm=950_000, compensation="0.75",
            evidence="9f2c41d0"),
        log(BondReleased, issue_id="op1-h1-n17", account="op1", quantity=5, amount="14.25"),
    ]


def balances(projection: Projection, account: str) -> dict[str, tuple[Any, Any]]:
    return {asset: (entry.available, entry.held)
            for asset, entry in projection.balances_message(account).balances.items()}


def make_core() -> tuple[GatewayCore, StubTransport, EngineSink, StubAuth]:
    transport, sink, auth = StubTransport(), EngineSink(), StubAuth()
    core = GatewayCore(GatewayConfig(), transport, sink, auth)
    auth.core = core
    return core, transport, sink, auth


def submitted(sink: EngineSink) -> list[Any]:
    commands = [decode_command(p) for s in sink.submissions for p in s.payloads]
    sink.submissions.clear()
    return commands


def answer(core: GatewayCore, log: Log, commands: list[Any], *answers: AnyEvent) -> None:
    """Apply the engine's answers to a fenced command, then its fence's rejection."""
    fence = commands[-1]
    assert fence.account == FENCE_ACCOUNT
    core.apply_events([*answers, log(CancelRejected, account=FENCE_ACCOUNT,
                                     client_order_id=fence.client_order_id,
                                     reason="unknown_order")])


# -- requests -----------------------------------------------------------------------------

def test_delivery_requests_decode_and_refusals_name_the_field() -> None:
    issue = decode_request(json.dumps({**ISSUE, "req_id": 1}))
    assert isinstance(issue, IssueCapacityRequest) and issue.quantity == 8
    report = decode_request(json.dumps({**REPORT, "req_id": 2}))
    assert isinstance(report, DeliveryReportRequest) and report.evidence == "9f2c41d0"
    for frame, field in (
        ({**ISSUE, "quantity": 0}, "$.quantity"),
        ({**ISSUE, "issue_id": "two words"}, "$.issue_id"),
        ({**ISSUE, "account": "op1"}, "$.account"),  # the account is the session's
        ({**REPORT, "delivered_ppm": 1_000_001}, "$.delivered_ppm"),
        ({**REPORT, "delivered_ppm": -1}, "$.delivered_ppm"),
        ({**REPORT, "evidence": "e" * 129}, "$.evidence"),
        ({k: v for k, v in REPORT.items() if k != "holder"}, "$.holder"),
        ({"op": "list_instrument", "symbol": SYMBOL, "gpu": "H100", "region": "eu",
          "delivery_start": START_NS, "delivery_hours": 1, "tick_size": "0.01",
          "max_order_quantity": 100, "maker_fee_bps": 0, "taker_fee_bps": 0,
          "bond_per_gpu_hour": "-3"}, "$.bond_per_gpu_hour"),
    ):
        with pytest.raises(RequestError) as refused:
            decode_request(json.dumps({**frame, "req_id": 3}))
        assert (refused.value.code, refused.value.field) == ("invalid_request", field)


def test_only_issuing_roles_issue_and_only_the_delivery_role_reports() -> None:
    core, transport, sink, auth = make_core()
    for conn_id, role in enumerate(("trader", "operator", "market_maker", "admin", "delivery"),
                                   1):
        connect(core, auth, conn_id, f"acct-{role}", role=role)
        send(core, conn_id, {**ISSUE, "req_id": 1, "issue_id": f"i-{role}"})
        send(core, conn_id, {**REPORT, "req_id": 2})
    sent = submitted(sink)
    issues = [c for c in sent if isinstance(c, IssueCapacity)]
    assert [(c.account, c.issue_id) for c in issues] == [
        ("acct-operator", "i-operator"), ("acct-market_maker", "i-market_maker"),
        ("acct-admin", "i-admin")], "the issuer is the session's account"
    assert [type(c) for c in sent].count(DeliveryReport) == 1
    refusals = {(conn_id, req_id): reply["error"]["code"]
                for conn_id in range(1, 6) for req_id, reply in replies(transport, conn_id).items()
                if reply["status"] == "error"}
    assert refusals == {(1, 1): "forbidden", (1, 2): "forbidden", (2, 2): "forbidden",
                        (3, 2): "forbidden", (4, 2): "forbidden", (5, 1): "forbidden"}
    assert "trader" in replies(transport, 1)[1]["error"]["message"]
    assert "admin" in replies(transport, 4)[2]["error"]["message"]


def test_the_delivery_role_may_send_nothing_that_moves_money_or_trades() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, "gpux.delivery", role="delivery")
    order = {"instrument": SYMBOL, "side": "buy", "order_type": "limit", "price": "1",
             "quantity": 1, "client_order_id": "d1"}
    frames: list[dict[str, Any]] = [
        {"op": "new_order", **order}, {"op": "cancel_order", "client_order_id": "d1"},
        {"op": "amend_order", "client_order_id": "d1", "new_quantity": 2},
        {"op": "mass_cancel"}, {"op": "batch", "orders": [{"op": "new_order", **order}]},
        {"op": "mass_quote", "instrument": SYMBOL, "quotes": []},
        {"op": "cancel_all_after", "timeout_s": 5}, ISSUE,
        {"op": "deposit", "account": "alice", "asset": "USDC", "amount": "5"},
        {"op": "list_instrument", "symbol": "X", "gpu": "g", "region": "r",
         "delivery_start": START_NS, "delivery_hours": 1, "tick_size": "1",
         "max_order_quantity": 1, "maker_fee_bps": 0, "taker_fee_bps": 0},
    ]
    for req_id, frame in enumerate(frames, 1):
        send(core, 1, {**frame, "req_id": req_id})
    answers = replies(transport, 1)
    assert [answers[req_id]["error"]["code"] for req_id in range(1, len(frames) + 1)] == [
        "forbidden"] * len(frames)
    assert sink.submissions == [] and core.dead_man == {}
    send(core, 1, {"op": "ping", "req_id": 50})
    assert replies(transport, 1)[50]["status"] == "ok", "public requests stay open to it"


def test_issue_and_report_replies_are_the_engines_answers_through_their_fences() -> None:
    core, transport, sink, auth = make_core()
    log = Log()
    core.apply_events([listed(log), log(Deposited, account="op1", asset="USDC", amount="30")])
    connect(core, auth, 1, "op1", role="operator")
    connect(core, auth, 2, "gpux.delivery", role="delivery")
    send(core, 1, {**ISSUE, "req_id": 1})
    answer(core, log, submitted(sink), log(
        CapacityIssued, issue_id="op1-h1-n17", account="op1", instrument=SYMBOL,
        node_id="n-17", quantity=8, bond="24"))
    send(core, 1, {**ISSUE, "req_id": 2, "issue_id": "op1-h1-n18"})
    answer(core, log, submitted(sink), log(
        IssueRejected, issue_id="op1-h1-n18", account="op1", reason="insufficient_funds"))
    send(core, 1, {**ISSUE, "req_id": 3, "issue_id": "op1-h1-n19"})
    answer(core, log, submitted(sink),  # an engine that does not know the command yet
           log(CommandRejected, command="issue_capacity", reason="invalid_command"))
    send(core, 2, {**REPORT, "req_id": 4})
    answer(core, log, submitted(sink), log(
        ReportRejected, issue_id="op1-h1-n17", holder="alice", reason="not_assigned"))
    op1 = replies(transport, 1)
    assert op1[1]["status"] == "accepted" and op1[1]["result"] == {
        "op": "issue_capacity", "status": "accepted", "issue_id": "op1-h1-n17",
        "instrument": SYMBOL, "node_id": "n-17", "quantity": 8, "bond": "24"}
    assert (op1[2]["status"], op1[2]["reason"]) == ("rejected", "insufficient_funds")
    assert (op1[3]["status"], op1[3]["reason"]) == ("rejected", "invalid_command")
    delivery = replies(transport, 2)[4]
    assert (delivery["status"], delivery["reason"]) == ("rejected", "not_assigned")
    assert delivery["result"]["holder"] == "alice"
    assert core.correlator.pending() == 0


def test_a_report_settles_and_every_party_reads_its_own_delivery_events() -> None:
    core, transport, sink, auth = make_core()
    log = Log()
    for conn_id, account in ((1, "op1"), (2, "alice"), (3, "bob")):
        connect(core, auth, conn_id, account, role="operator" if account == "op1" else "trader")
        send(core, conn_id, {"op": "subscribe", "req_id": 1, "channel": "deliveries"})
    connect(core, auth, 4, "gpux.delivery", role="delivery")
    core.apply_events(story_until_close(log))
    send(core, 4, {**REPORT, "req_id": 1})
    answer(core, log, submitted(sink), *report_events(log))
    settled = replies(transport, 4)[1]
    assert settled["status"] == "accepted" and settled["result"] == {
        "op": "delivery_report", "status": "accepted", "issue_id": "op1-h1-n17",
        "instrument": SYMBOL, "holder": "alice", "quantity": 5, "delivered_ppm": 950_000,
        "compensation": "0.75", "evidence": "9f2c41d0"}

    def seen(conn_id: int) -> list[tuple[str, ...]]:
        feed = [f for f in transport.frames[conn_id] if f["type"] == "deliveries"]
        assert feed[0]["kind"] == "snapshot" and feed[0]["events"] == []
        return [(e["event"], e.get("holder", ""), str(e.get("quantity", "")))
                for message in feed[1:] for e in message["events"]]

    assert seen(1) == [
        ("capacity_issued", "", "8"), ("issue_rejected", "", ""), ("bond_released", "", "3"),
        ("delivery_assigned", "alice", "5"), ("delivery_settled", "alice", "5"),
        ("bond_released", "", "5")]
    assert seen(2) == [("delivery_assigned", "alice", "5"), ("delivery_settled", "alice", "5")]
    assert seen(3) == []
    connect(core, auth, 5, "alice")  # a page opened later gets the latest events first
    send(core, 5, {"op": "subscribe", "req_id": 1, "channel": "deliveries"})
    snapshot = [f for f in transport.frames[5] if f["type"] == "deliveries"][0]
    assert [e["event"] for e in snapshot["events"]] == ["delivery_assigned", "delivery_settled"]
    assert snapshot["events"][1] == {
        "event": "delivery_settled", "issue_id": "op1-h1-n17", "seq": log.seq - 2,
        "ts": START_NS, "instrument": SYMBOL, "node_id": "n-17", "issuer": "op1",
        "holder": "alice", "quantity": 5, "delivered_ppm": 950_000, "compensation": "0.75",
        "evidence": "9f2c41d0"}


def test_balances_follow_the_bond_the_tokens_the_redemption_and_the_compensation() -> None:
    log = Log()
    projection = Projection()
    story = story_until_close(log)
    closing = next(i for i, e in enumerate(story) if isinstance(e, InstrumentClosed))
    for event in story[:closing]:
        projection.apply(event)
    assert balances(projection, "op1") == {"USDC": ("76", "0"), SYMBOL: (3, 0)}
    assert balances(projection, "alice") == {"USDC": ("10", "0"), SYMBOL: (5, 0)}
    for event in story[closing:]:
        projection.apply(event)
    assert balances(projection, "op1") == {"USDC": ("85", "0")}, "redeemed; 9 USDC released"
    assert balances(projection, "alice") == {"USDC": ("10", "0")}
    for event in report_events(log):
        projection.apply(event)
    assert balances(projection, "op1") == {"USDC": ("99.25", "0")}
    assert balances(projection, "alice") == {"USDC": ("10.75", "0")}
    updates = {(u.channel, u.key): json.loads(u.payload) for u in projection.flush()}
    assert updates[("balances", "alice")]["balances"] == {
        "USDC": {"available": "10.75", "held": "0"}, SYMBOL: {"available": 0, "held": 0}}


def test_an_instrument_without_a_bond_closes_with_its_balances_untouched() -> None:
    log = Log()
    projection = Projection()
    for event in (listed(log, bond=None), log(Deposited, account="bob", asset=SYMBOL, amount=4),
                  log(InstrumentClosed, symbol=SYMBOL)):
        projection.apply(event)
    assert balances(projection, "bob") == {SYMBOL: (4, 0)}
    assert projection.instrument_specs()[0].bond_per_gpu_hour is None


def test_the_deliveries_request_lists_issues_and_assignments_as_they_stand() -> None:
    core, transport, sink, auth = make_core()
    log = Log()
    connect(core, auth, 1, "op1", role="operator")
    connect(core, auth, 2, "alice")
    story = story_until_close(log)
    closing = next(i for i, e in enumerate(story) if isinstance(e, InstrumentClosed))
    core.apply_events(story[:closing])
    send(core, 1, {"op": "deliveries", "req_id": 1})
    before = replies(transport, 1)[1]["result"]
    assert before["issues"] == [{"issue_id": "op1-h1-n17", "instrument": SYMBOL,
                                 "node_id": "n-17", "quantity": 8, "bonded_quantity": 8,
                                 "bond": "24", "status": "open"}]
    assert before["assignments"] == []
    core.apply_events(story[closing:])
    send(core, 1, {"op": "deliveries", "req_id": 2})
    send(core, 2, {"op": "deliveries", "req_id": 2})
    issuer, holder = replies(transport, 1)[2]["result"], replies(transport, 2)[2]["result"]
    assert issuer["issues"][0]["status"] == "delivering"
    assert (issuer["issues"][0]["bonded_quantity"], issuer["issues"][0]["bond"]) == (5, "15")
    assignment = {"issue_id": "op1-h1-n17", "instrument": SYMBOL, "delivery_start": START_NS,
                  "node_id": "n-17", "issuer": "op1", "holder": "alice", "quantity": 5,
                  "status": "assigned"}
    assert issuer["assignments"] == holder["assignments"] == [assignment]
    assert holder["issues"] == [] and holder["seq"] == log.seq
    core.apply_events(report_events(log))
    send(core, 1, {"op": "deliveries", "req_id": 3})
    settled = replies(transport, 1)[3]["result"]
    assert settled["issues"][0] == {
        "issue_id": "op1-h1-n17", "instrument": SYMBOL, "node_id": "n-17", "quantity": 8,
        "bonded_quantity": 0, "bond": "0", "status": "settled"}
    assert settled["assignments"] == [assignment | {
        "status": "settled", "delivered_ppm": 950_000, "compensation": "0.75",
        "evidence": "9f2c41d0"}]
    send(core, 1, {"op": "instruments", "req_id": 4, "status": "all"})
    assert replies(transport, 1)[4]["result"]["instruments"][0]["bond_per_gpu_hour"] == "3"


def test_only_the_latest_settled_deliveries_are_kept_per_account() -> None:
    log = Log()
    projection = Projection(deliveries_settled_kept_max=2)
    projection.apply(listed(log))
    projection.apply(log(Deposited, account="op1", asset="USDC", amount="100"))
    for index in range(4):
        projection.apply(log(CapacityIssued, issue_id=f"i{index}", account="op1",
                             instrument=SYMBOL, node_id="n", quantity=1, bond="3"))
    log.ts = START_NS
    projection.apply(log(InstrumentClosed, symbol=SYMBOL))
    for index in range(4):
        projection.apply(log(BondReleased, issue_id=f"i{index}", account="op1", quantity=1,
                             amount="3"))
    assert [issue.issue_id for issue in projection.deliveries("op1")["issues"]] == ["i2", "i3"]
    assert projection.delivery.issues == {}


def test_amounts_that_disagree_with_the_bond_stop_the_projection() -> None:
    log = Log()
    projection = Projection()
    projection.apply(listed(log))
    with pytest.raises(ProjectionError):
        projection.apply(log(CapacityIssued, issue_id="i", account="op1", instrument=SYMBOL,
                             node_id="n", quantity=2, bond="5"))
    assert projection.balances == {}, "nothing moved before the check"


def test_a_listing_passes_its_bond_to_the_engine() -> None:
    core, transport, sink, auth = make_core()
    connect(core, auth, 1, "root", role="admin")
    send(core, 1, {"op": "list_instrument", "req_id": 1, "symbol": SYMBOL, "gpu": "H100",
                   "region": "eu", "delivery_start": START_NS, "delivery_hours": 1,
                   "tick_size": "0.01", "max_order_quantity": 100, "maker_fee_bps": 0,
                   "taker_fee_bps": 0, "bond_per_gpu_hour": "3.5"})
    listing = submitted(sink)[0]
    assert isinstance(listing, ListInstrument) and listing.bond_per_gpu_hour == "3.5"


# -- against the Python core ----------------------------------------------------------------

def delivery_workload(seed: int) -> list[Any]:
    """Commands of a random life of deliverable instruments (bonds of 3 and of 0) and one
    without a bond: deposits, issues (some refused), trades, token withdrawals, the close,
    then a report of every assignment (and a few that are refused)."""
    from protocol import Deposit, NewOrder, Tick, Withdraw

    rng = random.Random(seed)
    symbols = {"D3": "3", "D0": "0", "V1": None}
    traders = ["t1", "t2", "t3"]
    issuers = ["op1", "op2"]
    ts = NOW_NS
    commands: list[Any] = [
        ListInstrument(ts=ts, symbol=symbol, gpu="H100", region="eu", delivery_start=START_NS,
                       delivery_hours=1, tick_size="0.01", max_order_quantity=50,
                       maker_fee_bps=2, taker_fee_bps=5, bond_per_gpu_hour=bond)
        for symbol, bond in symbols.items()]
    for account in traders + issuers:
        commands.append(Deposit(ts=ts, account=account, asset="USDC",
                                amount=str(rng.randint(50, 400))))
    for step in range(120):
        ts += 10**9
        account = rng.choice(issuers + traders)
        symbol = rng.choice(list(symbols))
        roll = rng.random()
        if roll < 0.25:
            commands.append(IssueCapacity(ts=ts, account=account, issue_id=f"i{rng.randint(0, 40)}",
                                          instrument=symbol, node_id=f"n{step}",
                                          quantity=rng.randint(1, 60)))
        elif roll < 0.3:
            commands.append(Deposit(ts=ts, account=account, asset=symbol, amount=rng.randint(1, 5)))
        elif roll < 0.35:
            commands.append(Withdraw(ts=ts, account=account, asset=symbol,
                                     amount=rng.randint(1, 5)))
        else:
            commands.append(NewOrder(ts=ts, account=account, client_order_id=f"o{step}",
                                     instrument=symbol, side=rng.choice(("buy", "sell")),
                                     order_type="limit",
                                     price=f"{rng.randint(180, 220) / 100:.2f}",
                                     quantity=rng.randint(1, 10)))
    commands.append(Tick(ts=START_NS))
    return commands


def reports_of(events: list[AnyEvent], seed: int) -> list[DeliveryReport]:
    rng = random.Random(seed)
    assigned = [e for e in events if isinstance(e, DeliveryAssigned)]
    reports = [DeliveryReport(ts=START_NS + 1, issue_id=e.issue_id, holder=e.holder,
                              delivered_ppm=rng.choice((0, 333_333, 1_000_000,
                                                        rng.randint(0, 10**6))))
               for e in assigned]
    rng.shuffle(reports)
    return reports + reports[:2] + [DeliveryReport(ts=START_NS + 1, issue_id="nope",
                                                   holder="t1", delivered_ppm=1)]


def assert_projection_is_the_engines(projection: Projection, engine: Any) -> None:
    """The balances, the issues still under bond and the assignments awaiting a report the
    projection holds are the ones the engine's final state lists."""
    final = engine.final_state()
    shown = {account: {asset: {"available": b.available, "held": b.held}
                       for asset, b in projection.balances_message(account).balances.items()}
             for account in projection.balances}
    assert {account: assets for account, assets in shown.items() if assets} == final["accounts"]
    issues = [{"issue_id": view.issue_id, "account": issue.issuer,
               "instrument": view.instrument, "node_id": view.node_id,
               "quantity": view.bonded_quantity, "bond": view.bond}
              for issue in projection.delivery.issues.values() for view in [issue.view()]]
    assert issues == final["issues"]
    assert [{"issue_id": a.issue.issue_id, "holder": a.holder, "quantity": a.quantity}
            for a in projection.delivery.assignments.values()] == final["deliveries"]


@pytest.mark.parametrize("seed", range(6))
def test_the_projection_follows_the_python_core_through_issues_close_and_reports(
    seed: int,
) -> None:
    from matching_engine.core import Engine

    engine = Engine(check_invariants=True)
    projection = Projection()
    events = [e for c in delivery_workload(seed) for e in engine.apply(c)]
    for index, event in enumerate(events, 1):
        projection.apply(event)
        if index % 37 == 0:
            projection.flush()
    assert_projection_is_the_engines(projection, engine)
    assert projection.delivery.issues and projection.delivery.assignments
    reports = [e for c in reports_of(events, seed) for e in engine.apply(c)]
    for event in reports:
        projection.apply(event)
    projection.flush()
    assert_projection_is_the_engines(projection, engine)
    assert projection.delivery.issues == {} == projection.delivery.assignments
    kinds = {type(e).__name__ for e in events + reports}
    assert {"CapacityIssued", "IssueRejected", "DeliveryAssigned", "DeliverySettled",
            "BondReleased", "ReportRejected"} <= kinds, kinds


def test_add_key_gives_a_reserved_account_only_the_delivery_role(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.cli import main

    code = main(["add-key", "--database-url", "postgresql://nowhere.invalid/db",
                 "--account", "gpux.delivery", "--role", "trader"])
    assert code == 2 and "delivery" in capsys.readouterr().err
