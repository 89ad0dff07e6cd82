"""Strips (PROTOCOL.md v2) in the gateway, with no I/O, the pure Python engine behind it: who
may send them, what they cost, the reply made of strip_accepted, the leg trades and
strip_done (or of strip_rejected), the feeds that see the leg trades, and `strip_quote`,
the engine's simulation over the gateway's books less the account's own orders."""

from __future__ import annotations

from typing import Any

from gateway.config import GatewayConfig, RateLimit
from gateway.core import GatewayCore
from protocol import Deposit, ListInstrument, NewOrder, parse_micro
from tests.unit.test_gateway_core import (
    NOW_NS,
    EngineSink,
    StubAuth,
    StubTransport,
    connect,
    replies,
    send,
)

HOUR_NS = 3600 * 10**9
START_NS = NOW_NS + 86_400 * 10**9
LEGS = ["H100.eu.h0", "H100.eu.h1", "H100.eu.h2"]
TAKER_FEE_BPS = 5


def listing(symbol: str, start_ns: int, gpu: str = "H100", region: str = "eu"
            ) -> ListInstrument:
    return ListInstrument(ts=NOW_NS, symbol=symbol, gpu=gpu, region=region,
                          delivery_start=start_ns, delivery_hours=1, tick_size="0.01",
                          max_order_quantity=100, maker_fee_bps=2,
                          taker_fee_bps=TAKER_FEE_BPS)


def make_venue(**config: Any) -> tuple[GatewayCore, StubTransport, EngineSink, StubAuth]:
    """Three consecutive hours of H100 in eu (and one hour of another class); alice has USDC
    and tokens of the first hour, bob and carol tokens of every hour."""
    transport, sink, auth = StubTransport(), EngineSink(), StubAuth()
    core = GatewayCore(GatewayConfig(**config), transport, sink, auth)
    auth.core = core
    setup: list[Any] = [listing(symbol, START_NS + index * HOUR_NS)
                        for index, symbol in enumerate(LEGS)]
    setup += [listing("A100.eu.h3", START_NS + 3 * HOUR_NS, gpu="A100"),
              Deposit(ts=NOW_NS, account="alice", asset="USDC", amount="1000"),
              Deposit(ts=NOW_NS, account="alice", asset=LEGS[0], amount=10)]
    setup += [Deposit(ts=NOW_NS, account=seller, asset=symbol, amount=50)
              for seller in ("bob", "carol") for symbol in LEGS]
    core.apply_events([e for command in setup for e in sink.engine.apply(command)])
    return core, transport, sink, auth


def rest(sink: EngineSink, core: GatewayCore, account: str, symbol: str, side: str,
         price: str, quantity: int, client_order_id: str) -> None:
    """Rest a limit order straight through the engine, as another gateway's client would."""
    command = NewOrder(ts=NOW_NS, account=account, client_order_id=client_order_id,
                       instrument=symbol, side=side, order_type="limit", price=price,
                       quantity=quantity)
    core.apply_events(sink.engine.apply(command))


def asks(sink: EngineSink, core: GatewayCore) -> None:
    """bob asks 5 at 2.40 and carol 3 at 2.45 in the first hour; bob asks 8 at 2.50 and
    carol 4 at 2.50 in the second; bob asks 10 at 2.55 in the third."""
    rest(sink, core, "bob", LEGS[0], "sell", "2.40", 5, "b0")
    rest(sink, core, "carol", LEGS[0], "sell", "2.45", 3, "c0")
    rest(sink, core, "bob", LEGS[1], "sell", "2.50", 8, "b1")
    rest(sink, core, "carol", LEGS[1], "sell", "2.50", 4, "c1")
    rest(sink, core, "bob", LEGS[2], "sell", "2.55", 10, "b2")


STRIP = {"op": "new_strip_order", "side": "buy", "instruments": LEGS, "quantity": 8}
QUOTE = {"op": "strip_quote", "side": "buy", "instruments": LEGS, "quantity": 8}


def balances(core: GatewayCore, account: str) -> dict[str, tuple[Any, Any]]:
    message = core.projection.balances_message(account)
    return {asset: (entry.available, entry.held) for asset, entry in message.balances.items()}


def engine_balances(sink: EngineSink, account: str) -> dict[str, list[int]]:
    return {asset: pair for asset, pair in sink.engine.balances.get(account, {}).items()
            if pair != [0, 0]}


def gateway_balances(core: GatewayCore, account: str) -> dict[str, list[int]]:
    return {asset: [total - held, held] for asset, (total, held)
            in core.projection.balances.get(account, {}).items() if [total, held] != [0, 0]}


def test_a_strip_is_answered_with_every_legs_fills_and_the_totals() -> None:
    core, transport, sink, auth = make_venue()
    asks(sink, core)
    connect(core, auth, 1, "alice")
    for req_id, channel in enumerate(("orders", "fills", "balances"), start=1):
        send(core, 1, {"op": "subscribe", "req_id": req_id, "channel": channel})
    send(core, 1, {**STRIP, "req_id": 9, "client_order_id": "run-7", "limit_total": "70"})
    assert 9 not in replies(transport, 1), "no reply before the engine answers"
    sink.run(core)
    reply = replies(transport, 1)[9]
    assert reply["status"] == "accepted" and "reason" not in reply
    result = reply["result"]
    notional = 5 * 2.40 + 3 * 2.45 + 8 * 2.50 + 8 * 2.55
    assert parse_micro(result["notional"]) == round(notional * 10**6)
    assert [(leg["instrument"], leg["client_order_id"], leg["filled"]) for leg in
            result["legs"]] == [(LEGS[0], "run-7:0", 8), (LEGS[1], "run-7:1", 8),
                                (LEGS[2], "run-7:2", 8)]
    assert [[(f["price"], f["quantity"]) for f in leg["fills"]] for leg in result["legs"]] == [
        [("2.4", 5), ("2.45", 3)], [("2.5", 8)], [("2.55", 8)]]
    fees = sum(parse_micro(f["fee"]) for leg in result["legs"] for f in leg["fills"])
    assert parse_micro(result["fees"]) == fees == sum(
        parse_micro(leg["fees"]) for leg in result["legs"])
    assert parse_micro(result["total"]) == parse_micro(result["notional"]) + fees
    assert result["strip_id"].isdigit()
    assert (result["side"], result["quantity"], result["limit_total"]) == ("buy", 8, "70")
    frames = transport.frames[1]
    fills = [fill for f in frames if f["type"] == "fills" and f["kind"] == "update"
             for fill in f["fills"]]
    assert [(f["client_order_id"], f["order_id"], f["liquidity"]) for f in fills] == [
        ("run-7:0", result["strip_id"], "taker"), ("run-7:0", result["strip_id"], "taker"),
        ("run-7:1", result["strip_id"], "taker"), ("run-7:2", result["strip_id"], "taker")]
    assert [f["trade_id"] for f in fills] == [
        fill["trade_id"] for leg in result["legs"] for fill in leg["fills"]]
    reports = [(r["event"], r["client_order_id"], r.get("status")) for f in frames
               if f["type"] == "orders" and f["kind"] == "update" for r in f["orders"]]
    assert reports == [("strip_accepted", "run-7", "open"), ("fill", "run-7:0", "open"),
                       ("fill", "run-7:0", "filled"), ("fill", "run-7:1", "filled"),
                       ("fill", "run-7:2", "filled"), ("strip_done", "run-7", "filled")]
    for account in ("alice", "bob", "carol", "gpux.fees"):
        assert gateway_balances(core, account) == engine_balances(sink, account), account
    assert balances(core, "alice")[LEGS[1]] == (8, 0)
    assert core.projection.accounts.strips == {}, "nothing of the strip stays behind"
    assert [o.client_order_id for o in core.projection.open_orders("carol")] == ["c1"]


def test_a_sell_strip_releases_the_tokens_of_each_leg_and_the_seller_gets_notional_less_fees(
) -> None:
    core, transport, sink, auth = make_venue()
    rest(sink, core, "alice", LEGS[0], "buy", "2.00", 4, "a0")
    rest(sink, core, "alice", LEGS[1], "buy", "2.10", 4, "a1")
    connect(core, auth, 1, "bob")
    send(core, 1, {**STRIP, "instruments": LEGS[:2], "side": "sell", "quantity": 4,
                   "req_id": 3, "client_order_id": "sell-1", "limit_total": "16"})
    sink.run(core)
    result = replies(transport, 1)[3]["result"]
    assert result["status"] == "accepted" and result["notional"] == "16.4"
    assert parse_micro(result["total"]) == parse_micro("16.4") - parse_micro(result["fees"])
    for account in ("alice", "bob"):
        assert gateway_balances(core, account) == engine_balances(sink, account), account
    assert balances(core, "bob")[LEGS[0]] == (46, 0)


def test_a_rejected_strip_answers_the_engines_reason_and_changes_nothing() -> None:
    core, transport, sink, auth = make_venue()
    asks(sink, core)
    connect(core, auth, 1, "alice")
    send(core, 1, {"op": "subscribe", "req_id": 1, "channel": "orders"})
    before = (balances(core, "alice"), core.projection.book_snapshot(LEGS[2]).asks)
    send(core, 1, {**STRIP, "req_id": 2, "client_order_id": "big", "quantity": 11,
                   "limit_total": "1000"})
    send(core, 1, {**STRIP, "req_id": 3, "client_order_id": "cheap", "limit_total": "50"})
    send(core, 1, {**STRIP, "req_id": 4, "client_order_id": "gap",
                   "instruments": [LEGS[0], LEGS[2]], "limit_total": "50"})
    sink.run(core)
    answers = replies(transport, 1)
    assert [(answers[i]["status"], answers[i]["reason"]) for i in (2, 3, 4)] == [
        ("rejected", "insufficient_liquidity"), ("rejected", "limit_exceeded"),
        ("rejected", "invalid_order")]
    assert answers[3]["result"] == {"op": "new_strip_order", "status": "rejected",
                                    "client_order_id": "cheap", "reason": "limit_exceeded"}
    assert (balances(core, "alice"), core.projection.book_snapshot(LEGS[2]).asks) == before
    reports = [(r["event"], r["client_order_id"], r["reason"]) for f in transport.frames[1]
               if f["type"] == "orders" and f["kind"] == "update" for r in f["orders"]]
    assert reports == [("strip_rejected", "big", "insufficient_liquidity"),
                       ("strip_rejected", "cheap", "limit_exceeded"),
                       ("strip_rejected", "gap", "invalid_order")]


def test_a_quote_is_the_engines_simulation_passing_over_the_accounts_own_orders() -> None:
    core, transport, sink, auth = make_venue()
    asks(sink, core)
    rest(sink, core, "alice", LEGS[0], "sell", "2.00", 6, "mine")  # cheapest, but alice's
    connect(core, auth, 1, "alice")
    send(core, 1, {**QUOTE, "req_id": 1, "limit_total": "70"})
    assert sink.submissions == [], "a quote sends nothing to the engine"
    quote = replies(transport, 1)[1]
    assert quote["status"] == "ok" and "reason" not in quote["result"]
    result = quote["result"]
    assert result["seq"] == core.projection.event_seq
    assert [[(f["price"], f["quantity"]) for f in leg["fills"]] for leg in result["legs"]] == [
        [("2.4", 5), ("2.45", 3)], [("2.5", 8)], [("2.55", 8)]]
    send(core, 1, {**STRIP, "req_id": 2, "client_order_id": "s", "limit_total": "70"})
    sink.run(core)
    traded = replies(transport, 1)[2]["result"]
    assert traded["status"] == "accepted"
    assert result["notional"] == traded["notional"]
    # The second hour's level of 2.50 holds two makers (bob 8, carol 4): the quote floors its
    # fee once, the engine once per maker's fill: the quote is never low, at most a micro high
    # per maker.
    quoted_fees, traded_fees = parse_micro(result["fees"]), parse_micro(traded["fees"])
    assert traded_fees <= quoted_fees <= traded_fees + len(LEGS)
    assert [o.client_order_id for o in core.projection.open_orders("alice")] == ["mine"]


def test_quotes_give_the_reason_the_strip_would_be_refused() -> None:
    core, transport, sink, auth = make_venue()
    asks(sink, core)
    connect(core, auth, 1, "alice")
    connect(core, auth, 2, "dave")  # no money
    cases = {
        1: {**QUOTE, "quantity": 11},
        2: {**QUOTE, "limit_total": "50"},
        3: QUOTE,  # no limit: none checked
        4: {**QUOTE, "instruments": [LEGS[0], "H100.eu.nope"]},
        5: {**QUOTE, "instruments": [LEGS[0], LEGS[2]]},
        6: {**QUOTE, "instruments": [LEGS[2], "A100.eu.h3"]},
        7: {**QUOTE, "quantity": 101},
        8: {**QUOTE, "limit_total": "0"},
        9: {**QUOTE, "instruments": [LEGS[0], LEGS[0]]},
        10: {**QUOTE, "side": "sell", "instruments": LEGS[:2], "quantity": 1},
    }
    for req_id, frame in cases.items():
        send(core, 1, {**frame, "req_id": req_id})
    send(core, 2, {**QUOTE, "req_id": 1})
    answers = {req_id: r["result"] for req_id, r in replies(transport, 1).items() if req_id}
    reasons = {req_id: result.get("reason") for req_id, result in answers.items()}
    assert reasons == {1: "insufficient_liquidity", 2: "limit_exceeded", 3: None,
                       4: "unknown_instrument", 5: "invalid_order", 6: "invalid_order",
                       7: "invalid_quantity", 8: "invalid_price", 9: "invalid_order",
                       10: "insufficient_liquidity"}
    assert [leg["filled"] for leg in answers[1]["legs"]] == [8, 11, 10], \
        "every leg is walked, a short one included"
    assert answers[4]["legs"] == [] and answers[4]["notional"] == "0"
    assert replies(transport, 2)[1]["result"]["reason"] == "insufficient_funds"
    rest(sink, core, "alice", LEGS[0], "buy", "2.00", 5, "ab0")
    rest(sink, core, "alice", LEGS[1], "buy", "2.00", 5, "ab1")
    send(core, 2, {**QUOTE, "req_id": 2, "side": "sell", "instruments": LEGS[:2],
                   "quantity": 1})
    assert replies(transport, 2)[2]["result"]["reason"] == "insufficient_funds", \
        "dave holds no tokens to sell"
    assert sink.submissions == []


def test_strips_are_for_logged_in_trading_roles_and_cost_a_token_per_leg() -> None:
    limits = dict(GatewayConfig().role_limits)
    limits["trader"] = RateLimit(per_second=1, burst=5)
    core, transport, sink, auth = make_venue(role_limits=limits)
    asks(sink, core)
    connect(core, auth, 1, None)
    connect(core, auth, 2, "gpux.delivery", role="delivery")
    connect(core, auth, 3, "alice")
    send(core, 1, {**QUOTE, "req_id": 1})
    send(core, 2, {**STRIP, "req_id": 1, "client_order_id": "x", "limit_total": "1"})
    send(core, 2, {**QUOTE, "req_id": 2})
    assert replies(transport, 1)[1]["error"]["code"] == "unauthenticated"
    assert [replies(transport, 2)[i]["error"]["code"] for i in (1, 2)] == ["forbidden"] * 2
    send(core, 3, {**QUOTE, "req_id": 1})
    send(core, 3, {**STRIP, "req_id": 2, "client_order_id": "s", "limit_total": "70"})
    sink.run(core)
    answers = replies(transport, 3)
    assert answers[0]["rate_limit"]["remaining"] == 5, "a login costs the key nothing"
    assert answers[1]["rate_limit"]["remaining"] == 4, "a quote costs 1"
    assert answers[2]["rate_limit"]["remaining"] == 1, "a strip of 3 legs costs 3"
    wide = [f"H100.eu.w{index}" for index in range(6)]
    core.apply_events([e for index, symbol in enumerate(wide) for e in sink.engine.apply(
        listing(symbol, START_NS + (10 + index) * HOUR_NS))])
    send(core, 3, {**STRIP, "req_id": 3, "client_order_id": "w", "instruments": wide,
                   "limit_total": "70"}, mono_ns=2 * 10**9)
    waited = replies(transport, 3)[3]
    assert waited["error"]["code"] == "rate_limited"
    assert waited["error"]["retry_after_ms"] == 2000, "6 legs wait for a full bucket of 5"
    send(core, 3, {**STRIP, "req_id": 4, "client_order_id": "w", "instruments": wide,
                   "limit_total": "70"}, mono_ns=4 * 10**9)
    sink.run(core)
    passed = replies(transport, 3)[4]
    assert passed["status"] == "rejected" and passed["reason"] == "insufficient_liquidity"
    assert passed["rate_limit"]["remaining"] == 0, "and empties it"


def test_strips_of_one_id_are_answered_in_order_and_a_timed_out_one_answers_once() -> None:
    core, transport, sink, auth = make_venue(request_timeout_ms=1000)
    asks(sink, core)
    connect(core, auth, 1, "alice")
    send(core, 1, {**STRIP, "req_id": 1, "client_order_id": "same", "quantity": 4,
                   "limit_total": "70"})
    send(core, 1, {**STRIP, "req_id": 2, "client_order_id": "same", "quantity": 4,
                   "limit_total": "70"})
    send(core, 1, {**STRIP, "req_id": 3, "client_order_id": "same", "quantity": 4,
                   "limit_total": "70"})
    sink.run(core)
    answers = replies(transport, 1)
    assert [answers[i]["status"] for i in (1, 2, 3)] == ["accepted", "accepted", "rejected"]
    assert answers[1]["result"]["legs"][0]["fills"] == [
        {"price": "2.4", "quantity": 4, "fee": "0.0048",
         "trade_id": answers[1]["result"]["legs"][0]["fills"][0]["trade_id"]}]
    assert answers[2]["result"]["legs"][0]["fills"][0]["price"] == "2.4"
    send(core, 1, {**STRIP, "req_id": 4, "client_order_id": "late", "quantity": 1,
                   "limit_total": "70"})
    core.housekeeping(NOW_NS, 2 * 10**9)
    assert replies(transport, 1)[4]["error"]["code"] == "timeout"
    sink.run(core)  # the late answer finds nothing pending
    assert len([f for f in transport.frames[1] if f.get("req_id") == 4]) == 1
    assert core.correlator.by_strip_key == {} and core.correlator.by_strip_id == {}
