"""One hand-written case per rule of PROTOCOL.md's "Strip orders (v2)" and its readings in
docs/protocol-notes.md: malformed strips, the checks in their order, the simulation (own
orders passed over, fees per fill), execution (leg ids, maker holds, totals), buy and sell,
2 and 168 legs, and a rejected strip that changes nothing.

The rule tests run, like tests/unit/test_engine_rules.py, against every implementation in
STRIP_IMPLEMENTATIONS (the Python engine with its invariants checked after each command,
the native Rust core and the independent reference model) and assert the exact events. The
snapshot test drives both cores through `matching_engine.cores`; the last tests call the
Python core's simulation as the gateway's quote does, on a view of the books of its own.

The default market (`hours_market`): HOURS[0], HOURS[1], ... deliver one hour each, one
after the other from DELIVERY, H100-SXM-80GB in eu-west, tick 0.01, maker 10 / taker 20
bps, max order quantity 1000; alice, bob and carol hold 10000 USDC and 100 tokens of each.
Orders placed after it get order ids "1", "2", ...
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import pytest

from matching_engine.core.snapshot import decode_snapshot, encode_snapshot
from matching_engine.core.strips import Fill, StripLeg, simulate_strip, strip_refusal
from matching_engine.cores import NativeCore, PythonCore
from tests.engine_helpers import (
    DELIVERY,
    IMPLEMENTATIONS,
    SECOND,
    T0,
    Command,
    Driver,
    cmd,
    command_line,
    deposit,
    limit,
    listing,
    raw,
)
from tests.unit.test_engine_rules import accepted, command_rejected, ev, trade

HOUR = 3_600 * SECOND
HOURS = [f"H100-EU-{index:03d}" for index in range(170)]
ACCOUNTS = ("alice", "bob", "carol")
STRIP_IMPLEMENTATIONS = sorted(IMPLEMENTATIONS)


@pytest.fixture(params=STRIP_IMPLEMENTATIONS)
def ex(request: pytest.FixtureRequest) -> Driver:
    """A fresh exchange: the Python engine, the native core or the reference model."""
    return Driver(IMPLEMENTATIONS[request.param]())


def hours_market(ex: Driver, hours: int = 2, **listing_fields: Any) -> None:
    for index in range(hours):
        ex.run(hour_listing(index, **listing_fields))
    fund(ex, hours)


def fund(ex: Driver, hours: int) -> None:
    """10000 USDC and 100 tokens of each of the first `hours` hours to every account."""
    for account in ACCOUNTS:
        ex.run(deposit(account, "USDC", "10000"),
               *[deposit(account, HOURS[index], 100) for index in range(hours)])


def hour_listing(index: int, **fields: Any) -> Command:
    return listing(HOURS[index], **{"delivery_start": DELIVERY + index * HOUR,
                                    "delivery_hours": 1, **fields})


# ---------------------------------------------------------------------- commands


def strip(account: str = "alice", cid: str = "s1", side: str = "buy",
          legs: list[str] | None = None, quantity: int = 4, limit_total: str = "1000",
          ts: int = T0, **extra: Any) -> Command:
    return cmd("new_strip_order", ts=ts, account=account, client_order_id=cid, side=side,
               instruments=HOURS[:2] if legs is None else legs, quantity=quantity,
               limit_total=limit_total, **extra)


def strip_dict(**overrides: Any) -> dict[str, Any]:
    """A valid strip as a JSON object, for malformed variants (`None` leaves a field out)."""
    fields: dict[str, Any] = {
        "type": "new_strip_order", "ts": T0, "account": "alice", "client_order_id": "s1",
        "side": "buy", "instruments": HOURS[:2], "quantity": 4, "limit_total": "1000",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not None}


def asks(account: str, price: str, quantity: int, legs: range, first_cid: int = 1) -> list[Any]:
    """One limit sell of `account` on each leg, client order ids a1, a2, ..."""
    return [limit(account, f"a{first_cid + n}", "sell", price, quantity, instrument=HOURS[i])
            for n, i in enumerate(legs)]


# ------------------------------------------------------------------------ events


def strip_accepted(strip_id: str, legs: list[str], quantity: int, limit_total: str,
                   side: str = "buy", account: str = "alice", cid: str = "s1",
                   ts: int = T0) -> dict[str, Any]:
    return ev("strip_accepted", ts, account=account, client_order_id=cid, strip_id=strip_id,
              side=side, instruments=legs, quantity=quantity, limit_total=limit_total)


def strip_rejected(reason: str, account: str = "alice", cid: str = "s1",
                   ts: int = T0) -> dict[str, Any]:
    return ev("strip_rejected", ts, account=account, client_order_id=cid, reason=reason)


def strip_done(strip_id: str, notional: str, fees: str, account: str = "alice",
               cid: str = "s1", ts: int = T0) -> dict[str, Any]:
    return ev("strip_done", ts, account=account, client_order_id=cid, strip_id=strip_id,
              notional=notional, fees=fees)


def rejects_unchanged(ex: Driver, command: Command, reason: str, **event: Any) -> None:
    """The strip is rejected for `reason` and the final state is as before it."""
    before = ex.state()
    assert ex.apply(command) == [strip_rejected(reason, **event)]
    assert ex.state() == before


# --------------------------------------------------------------------- malformed


@pytest.mark.parametrize("fields", [
    {"account": None}, {"account": "al ice"}, {"client_order_id": None},
    {"client_order_id": "s#1"}, {"client_order_id": "s" * 65}, {"ts": None},
], ids=["no_account", "bad_account", "no_id", "bad_id", "id_of_65", "no_ts"])
def test_a_strip_without_a_valid_account_id_or_ts_is_command_rejected(
    ex: Driver, fields: dict[str, Any]
) -> None:
    hours_market(ex)
    assert ex.apply(raw(msgspec.json.encode(strip_dict(**fields)))) == [
        command_rejected("new_strip_order")]


@pytest.mark.parametrize("length", [60, 64])
def test_a_strip_id_too_long_to_name_its_legs_is_command_rejected(ex: Driver,
                                                                   length: int) -> None:
    """60-64 characters are an identifier, but `ID:167` would not fit in 64."""
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    before = ex.state()
    assert ex.apply(strip(cid="s" * length)) == [command_rejected("new_strip_order")]
    assert ex.apply(raw(msgspec.json.encode(strip_dict(client_order_id="s" * length,
                                                       quantity="4")))) == [
        command_rejected("new_strip_order")]
    assert ex.state() == before


@pytest.mark.parametrize("fields", [
    {"side": "long"}, {"side": None}, {"instruments": HOURS[0]}, {"instruments": [HOURS[0], 7]},
    {"instruments": None}, {"quantity": "4"}, {"quantity": 4.0}, {"quantity": None},
    {"limit_total": 96}, {"limit_total": None}, {"time_in_force": "ioc"},
], ids=["bad_side", "no_side", "legs_as_string", "leg_as_number", "no_legs",
        "quantity_as_string", "quantity_as_float", "no_quantity", "limit_as_number",
        "no_limit", "unknown_field"])
def test_any_other_malformed_strip_is_invalid_order(ex: Driver, fields: dict[str, Any]) -> None:
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    rejects_unchanged(ex, raw(msgspec.json.encode(strip_dict(**fields))), "invalid_order")


def test_a_strip_id_of_59_characters_names_its_legs_in_64(ex: Driver) -> None:
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    cid = "s" * 59
    events = ex.apply(strip(cid=cid))
    assert events[0] == strip_accepted("3", HOURS[:2], 4, "1000", cid=cid)
    assert [e["taker_client_order_id"] for e in events[1:-1]] == [f"{cid}:0", f"{cid}:1"]


# ------------------------------------------------------------ checks, in order


def checks_market(ex: Driver) -> None:
    """HOURS[0..3] (HOURS[2] takes at most 5 per order), the hour of HOURS[1] for another
    GPU class and in another region, and bob's asks of 5 at 2.5 on HOURS[0..3]."""
    for index in range(4):
        ex.run(hour_listing(index, max_order_quantity=5 if index == 2 else 1_000))
    fund(ex, 4)
    ex.run(listing("A100-EU-001", gpu="A100-SXM-80GB", delivery_start=DELIVERY + HOUR,
                   delivery_hours=1),
           listing("H100-US-001", region="us-east", delivery_start=DELIVERY + HOUR,
                   delivery_hours=1))
    ex.run(*asks("bob", "2.5", 5, range(4)))


@pytest.mark.parametrize(("legs", "quantity", "limit_total", "reason"), [
    ([HOURS[0]], 4, "1000", "invalid_order"),
    ([], 4, "1000", "invalid_order"),
    ([f"NOPE-{i}" for i in range(169)], 4, "1000", "invalid_order"),
    ([HOURS[0], HOURS[1], HOURS[0]], 4, "1000", "invalid_order"),
    ([HOURS[0], "NOPE", "NOPE"], 0, "0", "invalid_order"),
    ([HOURS[0], "NOPE"], 0, "0", "unknown_instrument"),
    ([HOURS[0], HOURS[2], "NOPE"], 0, "0", "unknown_instrument"),
    ([HOURS[0], HOURS[2]], 0, "0", "invalid_order"),
    ([HOURS[1], HOURS[0]], 4, "1000", "invalid_order"),
    ([HOURS[0], "A100-EU-001"], 4, "1000", "invalid_order"),
    ([HOURS[0], "H100-US-001"], 4, "1000", "invalid_order"),
    ([HOURS[0], HOURS[1]], 0, "0", "invalid_quantity"),
    ([HOURS[0], HOURS[1]], -1, "1000", "invalid_quantity"),
    ([HOURS[0], HOURS[1]], 1_001, "1000", "invalid_quantity"),
    ([HOURS[1], HOURS[2]], 6, "0", "invalid_quantity"),
    ([HOURS[0], HOURS[1]], 6, "0", "invalid_price"),
    ([HOURS[0], HOURS[1]], 6, "1", "insufficient_liquidity"),
    ([HOURS[0], HOURS[1]], 4, "19.99", "limit_exceeded"),
], ids=["one_leg", "no_leg", "169_unknown_legs", "leg_twice", "leg_twice_before_unknown",
        "unknown", "unknown_before_gap", "gap_before_quantity", "out_of_order", "other_gpu",
        "other_region", "quantity_0_before_price", "quantity_negative",
        "quantity_above_max", "quantity_above_a_legs_max", "price_before_liquidity",
        "liquidity_before_limit", "limit"])
def test_strip_checks_come_in_protocol_order(ex: Driver, legs: list[str], quantity: int,
                                             limit_total: str, reason: str) -> None:
    """Each strip fails the check named and, where it can, every later one too."""
    checks_market(ex)
    rejects_unchanged(ex, strip(legs=legs, quantity=quantity, limit_total=limit_total),
                      reason)


@pytest.mark.parametrize("limit_total", ["0", "0.000000", "-1", "1.0000001", "1e3", ".5", "",
                                         "abc", " 1", "1000000000000.000001"])
def test_a_limit_total_that_is_not_a_positive_usdc_amount_is_invalid_price(
    ex: Driver, limit_total: str
) -> None:
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    rejects_unchanged(ex, strip(limit_total=limit_total), "invalid_price")


def test_the_max_order_quantity_of_every_leg_bounds_the_quantity(ex: Driver) -> None:
    hours_market(ex, hours=1)
    ex.run(hour_listing(1, max_order_quantity=5), deposit("bob", HOURS[1], 10))
    ex.run(*asks("bob", "2.5", 5, range(2)))
    rejects_unchanged(ex, strip(quantity=6), "invalid_quantity")
    assert ex.apply(strip(quantity=5))[-1] == strip_done("3", "25", "0.05")


def test_consecutive_legs_follow_the_previous_legs_delivery_hours(ex: Driver) -> None:
    """Two-hour legs: the next starts two hours later, so a leg an hour later is not next
    after one; after a one-hour leg it is."""
    for index, start in enumerate((0, 2, 4)):
        ex.run(hour_listing(index, delivery_start=DELIVERY + start * HOUR, delivery_hours=2))
    ex.run(hour_listing(3, delivery_start=DELIVERY + HOUR))
    for index in range(4):
        ex.run(deposit("bob", HOURS[index], 5))
    ex.run(deposit("alice", "USDC", "100"), *asks("bob", "1", 5, range(4)))
    rejects_unchanged(ex, strip(legs=[HOURS[0], HOURS[3]], quantity=1), "invalid_order")
    assert ex.apply(strip(legs=HOURS[:3], quantity=1))[-1] == strip_done("5", "3", "0.006")
    assert ex.apply(strip(legs=[HOURS[3], HOURS[1]], quantity=1, cid="s2"))[-1] == (
        strip_done("6", "2", "0.004", cid="s2"))


def test_a_closed_leg_is_instrument_closed_before_quantity(ex: Driver) -> None:
    """HOURS[0] closes at DELIVERY; a strip at that time sees the close first."""
    hours_market(ex, hours=3)
    ex.run(*asks("bob", "2.5", 10, range(1, 3)))
    assert ex.apply(strip(quantity=0, limit_total="0", ts=DELIVERY)) == [
        ev("instrument_closed", DELIVERY, symbol=HOURS[0]),
        strip_rejected("instrument_closed", ts=DELIVERY)]
    rejects_unchanged(ex, strip(legs=[HOURS[0], HOURS[2]], quantity=0, ts=DELIVERY),
                      "invalid_order", ts=DELIVERY)
    assert ex.apply(strip(legs=HOURS[1:3], ts=DELIVERY))[-1] == strip_done(
        "3", "20", "0.04", ts=DELIVERY)


# -------------------------------------------------------------------- simulation


def test_a_leg_short_of_quantity_is_insufficient_liquidity(ex: Driver) -> None:
    hours_market(ex, hours=3)
    ex.run(*asks("bob", "2.5", 10, range(2)), limit("carol", "c1", "sell", "2.5", 3,
                                                     instrument=HOURS[2]))
    rejects_unchanged(ex, strip(legs=HOURS[:3], quantity=4), "insufficient_liquidity")
    rejects_unchanged(ex, strip(legs=HOURS[1:3], quantity=4, side="sell"),
                      "insufficient_liquidity")


def test_the_strips_own_orders_are_no_liquidity(ex: Driver) -> None:
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(1)), *asks("alice", "2", 10, range(1, 2)))
    rejects_unchanged(ex, strip(), "insufficient_liquidity")


def test_a_buy_strip_above_limit_total_is_limit_exceeded_fees_excluded(ex: Driver) -> None:
    """Notional 20, fees 0.04: a limit of 20 passes, 19.999999 does not."""
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    rejects_unchanged(ex, strip(limit_total="19.999999"), "limit_exceeded")
    assert ex.apply(strip(limit_total="20"))[-1] == strip_done("3", "20", "0.04")


def test_a_sell_strip_below_limit_total_is_limit_exceeded(ex: Driver) -> None:
    hours_market(ex)
    ex.run(*[limit("bob", f"b{i}", "buy", "2", 10, instrument=HOURS[i]) for i in range(2)])
    rejects_unchanged(ex, strip(side="sell", limit_total="16.000001"), "limit_exceeded")
    assert ex.apply(strip(side="sell", limit_total="16"))[-1] == strip_done("3", "16", "0.032")


def test_limit_exceeded_comes_before_insufficient_funds(ex: Driver) -> None:
    hours_market(ex)
    ex.run(deposit("dan", "USDC", "1"), *asks("bob", "2.5", 10, range(2)))
    rejects_unchanged(ex, strip(account="dan", limit_total="19"), "limit_exceeded",
                      account="dan")


def test_a_buy_strip_pays_notional_and_fees_from_available_usdc(ex: Driver) -> None:
    """Notional 20 plus fees 0.04; dan's resting bid holds 10.02 of his 30.06 USDC."""
    hours_market(ex, hours=3)
    ex.run(deposit("dan", "USDC", "30.06"), *asks("bob", "2.5", 10, range(2)),
           limit("dan", "d1", "buy", "2", 5, instrument=HOURS[2]))
    assert ex.balance("dan", "USDC") == ("20.04", "10.02")
    ex.run(limit("dan", "d2", "buy", "0.01", 1, instrument=HOURS[2]))
    rejects_unchanged(ex, strip(account="dan"), "insufficient_funds", account="dan")
    ex.run(deposit("dan", "USDC", "0.010019"))
    rejects_unchanged(ex, strip(account="dan"), "insufficient_funds", account="dan")
    ex.run(deposit("dan", "USDC", "0.000001"))
    assert ex.apply(strip(account="dan"))[-1] == strip_done("5", "20", "0.04", account="dan")
    assert ex.balance("dan", "USDC") == ("0", "10.03002")


def test_a_sell_strip_needs_each_legs_tokens_available(ex: Driver) -> None:
    """erin has 4 of each hour, but 1 of HOURS[1] is held by her own resting ask."""
    hours_market(ex)
    ex.run(*[limit("bob", f"b{i}", "buy", "2", 10, instrument=HOURS[i]) for i in range(2)])
    ex.run(deposit("erin", HOURS[0], 4), deposit("erin", HOURS[1], 4),
           limit("erin", "e1", "sell", "9", 1, instrument=HOURS[1]))
    rejects_unchanged(ex, strip(account="erin", side="sell", limit_total="1"),
                      "insufficient_funds", account="erin")
    assert ex.apply(strip(account="erin", side="sell", quantity=3, limit_total="1"))[-1] == (
        strip_done("4", "12", "0.024", account="erin"))
    assert ex.balance("erin", "USDC") == ("11.976", "0")
    assert ex.balance("erin", HOURS[1]) == (0, 1)


# --------------------------------------------------------------------- execution


def test_a_buy_strip_takes_each_leg_best_price_first_then_oldest(ex: Driver) -> None:
    hours_market(ex)
    ex.run(limit("bob", "b1", "sell", "2.5", 10, instrument=HOURS[0]),
           limit("carol", "c1", "sell", "2.6", 10, instrument=HOURS[1]),
           limit("bob", "b2", "sell", "2.4", 3, instrument=HOURS[1]),
           limit("carol", "c2", "sell", "2.4", 5, instrument=HOURS[1]))
    assert ex.apply(strip(limit_total="19.60")) == [
        strip_accepted("5", HOURS[:2], 4, "19.6"),
        trade("1", "2.5", 4, "buy", ("bob", "b1", "1"), "0.01", ("alice", "s1:0", "5"), "0.02",
              instrument=HOURS[0]),
        trade("2", "2.4", 3, "buy", ("bob", "b2", "3"), "0.0072", ("alice", "s1:1", "5"),
              "0.0144", instrument=HOURS[1]),
        trade("3", "2.4", 1, "buy", ("carol", "c2", "4"), "0.0024", ("alice", "s1:1", "5"),
              "0.0048", instrument=HOURS[1]),
        strip_done("5", "19.6", "0.0392"),
    ]
    assert ex.balance("alice", "USDC") == ("9980.3608", "0")
    assert [ex.balance("alice", symbol) for symbol in HOURS[:2]] == [(104, 0), (104, 0)]
    assert ex.balance("bob", HOURS[0]) == (90, 6)
    assert ex.balance("bob", HOURS[1]) == (97, 0)
    assert ex.open_orders() == [("bob", "b1", "2.5", 6), ("carol", "c2", "2.4", 4),
                                ("carol", "c1", "2.6", 10)]


def test_a_sell_strip_shrinks_the_bids_holds(ex: Driver) -> None:
    hours_market(ex)
    ex.run(limit("bob", "b1", "buy", "2", 5, instrument=HOURS[0]),
           limit("carol", "c1", "buy", "1.9", 2, instrument=HOURS[1]),
           limit("bob", "b2", "buy", "1.8", 10, instrument=HOURS[1]))
    assert ex.apply(strip(side="sell", quantity=3, limit_total="11.6")) == [
        strip_accepted("4", HOURS[:2], 3, "11.6", side="sell"),
        trade("1", "2", 3, "sell", ("bob", "b1", "1"), "0.006", ("alice", "s1:0", "4"), "0.012",
              instrument=HOURS[0]),
        trade("2", "1.9", 2, "sell", ("carol", "c1", "2"), "0.0038", ("alice", "s1:1", "4"),
              "0.0076", instrument=HOURS[1]),
        trade("3", "1.8", 1, "sell", ("bob", "b2", "3"), "0.0018", ("alice", "s1:1", "4"),
              "0.0036", instrument=HOURS[1]),
        strip_done("4", "11.6", "0.0232"),
    ]
    assert ex.balance("alice", "USDC") == ("10011.5768", "0")
    assert [ex.balance("alice", symbol) for symbol in HOURS[:2]] == [(97, 0), (97, 0)]
    # holds left: 2 at 2 and 9 at 1.8, each with 20 bps
    assert ex.balance("bob", "USDC") == ("9971.9518", "20.2404")
    assert ex.balance("carol", "USDC") == ("9996.1962", "0")
    assert ex.open_orders() == [("bob", "b1", "2", 2), ("bob", "b2", "1.8", 9)]


def test_a_strip_passes_over_its_own_orders_without_self_trade_events(ex: Driver) -> None:
    hours_market(ex)
    ex.run(limit("alice", "own", "sell", "2", 5, instrument=HOURS[0]),
           *asks("bob", "2.5", 10, range(2)))
    assert ex.apply(strip()) == [
        strip_accepted("4", HOURS[:2], 4, "1000"),
        trade("1", "2.5", 4, "buy", ("bob", "a1", "2"), "0.01", ("alice", "s1:0", "4"), "0.02",
              instrument=HOURS[0]),
        trade("2", "2.5", 4, "buy", ("bob", "a2", "3"), "0.01", ("alice", "s1:1", "4"), "0.02",
              instrument=HOURS[1]),
        strip_done("4", "20", "0.04"),
    ]
    assert ex.open_orders()[0] == ("alice", "own", "2", 5)
    assert ex.balance("alice", HOURS[0]) == (99, 5)


def test_an_open_order_may_carry_the_strips_client_order_id(ex: Driver) -> None:
    hours_market(ex)
    ex.run(limit("alice", "s1", "buy", "1", 5, instrument=HOURS[0]),
           *asks("bob", "2.5", 10, range(2)))
    assert ex.apply(strip())[-1] == strip_done("4", "20", "0.04")
    assert ex.open_orders()[0] == ("alice", "s1", "1", 5)


def test_each_fill_pays_its_own_floored_fee(ex: Driver) -> None:
    """Taker 7 bps at 0.0199: a fill of 1 pays 0.000013 (13.93 floored), a fill of 2
    0.000027 (27.86 floored): two makers of 1 cost more than one of 2."""
    hours_market(ex, tick_size="0.0001", maker_fee_bps=10, taker_fee_bps=7)
    ex.run(limit("bob", "b1", "sell", "0.0199", 1, instrument=HOURS[0]),
           limit("carol", "c1", "sell", "0.0199", 1, instrument=HOURS[0]),
           limit("bob", "b2", "sell", "0.0199", 2, instrument=HOURS[1]))
    assert ex.apply(strip(quantity=2)) == [
        strip_accepted("4", HOURS[:2], 2, "1000"),
        trade("1", "0.0199", 1, "buy", ("bob", "b1", "1"), "0.000019",
              ("alice", "s1:0", "4"), "0.000013", instrument=HOURS[0]),
        trade("2", "0.0199", 1, "buy", ("carol", "c1", "2"), "0.000019",
              ("alice", "s1:0", "4"), "0.000013", instrument=HOURS[0]),
        trade("3", "0.0199", 2, "buy", ("bob", "b2", "3"), "0.000039",
              ("alice", "s1:1", "4"), "0.000027", instrument=HOURS[1]),
        strip_done("4", "0.0796", "0.000053"),
    ]


def test_a_strip_takes_one_order_id_and_a_rejected_one_none(ex: Driver) -> None:
    hours_market(ex)
    ex.run(*asks("bob", "2.5", 10, range(2)))
    ex.apply(strip(quantity=11))
    assert ex.apply(strip())[0] == strip_accepted("3", HOURS[:2], 4, "1000")
    assert ex.apply(limit("carol", "c1", "buy", "1", 1, instrument=HOURS[0])) == [
        accepted("carol", "c1", "4", "buy", 1, "1", instrument=HOURS[0])]


def test_a_strip_of_168_legs_trades_every_hour(ex: Driver) -> None:
    legs = HOURS[:168]
    for index in range(168):
        ex.run(hour_listing(index), deposit("bob", legs[index], 1))
    ex.run(deposit("alice", "USDC", "168.336"), *asks("bob", "1", 1, range(168)))
    cid = "s" * 59
    events = ex.apply(strip(legs=legs, quantity=1, limit_total="168", cid=cid))
    assert events[0] == strip_accepted("169", legs, 1, "168", cid=cid)
    assert events[1:-1] == [
        trade(str(i + 1), "1", 1, "buy", ("bob", f"a{i + 1}", str(i + 1)), "0.001",
              ("alice", f"{cid}:{i}", "169"), "0.002", instrument=legs[i])
        for i in range(168)]
    assert events[-1] == strip_done("169", "168", "0.336", cid=cid)
    assert ex.balance("alice", "USDC") == ("0", "0")
    assert ex.open_orders() == []


def test_169_listed_consecutive_legs_are_invalid_order(ex: Driver) -> None:
    for index in range(169):
        ex.run(hour_listing(index))
    rejects_unchanged(ex, strip(legs=HOURS[:169], quantity=1), "invalid_order")


# ------------------------------------------------------------------ no trace left


# (strip, its account, the reason) against `walk_market`
REJECTED_AFTER_A_WALK = [
    (strip(quantity=11), "alice", "insufficient_liquidity"),
    (strip(limit_total="19.99"), "alice", "limit_exceeded"),
    (strip(account="dan"), "dan", "insufficient_funds"),
    (strip(side="sell", limit_total="1000"), "alice", "limit_exceeded"),
    (strip(account="dan", side="sell", quantity=1, limit_total="1"), "dan",
     "insufficient_funds"),
]
WALK_IDS = [f"{command.side}_{account}_{reason}"
            for command, account, reason in REJECTED_AFTER_A_WALK]


def walk_market() -> list[Command]:
    """Asks and bids of bob and carol and alice's own orders on both hours; dan has 10 USDC
    (a buy of 4 a leg costs him 17.034: alice's orders are his best) and no tokens."""
    commands = [hour_listing(0), hour_listing(1)]
    for account in ACCOUNTS:
        commands += [deposit(account, "USDC", "10000"), deposit(account, HOURS[0], 100),
                     deposit(account, HOURS[1], 100)]
    commands.append(deposit("dan", "USDC", "10"))
    for index, symbol in enumerate(HOURS[:2]):
        commands += [limit("alice", f"own{index}", "sell", "2", 3, instrument=symbol),
                     limit("bob", f"a{index}", "sell", "2.5", 6, instrument=symbol),
                     limit("carol", f"a{index}", "sell", "2.5", 4, instrument=symbol),
                     limit("bob", f"b{index}", "buy", "1", 6, instrument=symbol),
                     limit("alice", f"ownb{index}", "buy", "1.5", 2, instrument=symbol)]
    return commands


@pytest.mark.parametrize(("command", "account", "reason"), REJECTED_AFTER_A_WALK,
                         ids=WALK_IDS)
def test_a_strip_rejected_by_its_simulation_leaves_the_state_unchanged(
    ex: Driver, command: Command, account: str, reason: str
) -> None:
    ex.run(*walk_market())
    rejects_unchanged(ex, command, reason, account=account)
    assert ex.apply(strip())[-1] == strip_done("11", "20", "0.04")


@pytest.mark.parametrize("core_class", [PythonCore, NativeCore], ids=["python", "native"])
@pytest.mark.parametrize(("command", "account", "reason"), REJECTED_AFTER_A_WALK,
                         ids=WALK_IDS)
def test_a_rejected_strip_leaves_the_snapshot_byte_identical(
    core_class: type[PythonCore] | type[NativeCore], command: Command, account: str,
    reason: str,
) -> None:
    """The same bytes before and after, but for `seq`: the rejection is an event."""
    core = core_class()
    core.apply_records([command_line(c) for c in walk_market()])
    before = core.snapshot()
    events = core.apply_records([command_line(command)])
    assert [msgspec.json.decode(e)["reason"] for e in events] == [reason]
    after = decode_snapshot(core.snapshot())
    assert after.seq == decode_snapshot(before).seq + 1
    assert encode_snapshot(msgspec.structs.replace(after, seq=after.seq - 1)) == before


# ------------------------------------------------------- the simulation as a function


class ViewMaker(NamedTuple):
    """A maker as a view of the books other than the engine's (the gateway's) holds it."""

    price: int
    remaining: int
    account: str


VIEW = {
    ("A", True): [ViewMaker(2_000_000, 3, "me"), ViewMaker(2_500_000, 3, "bob"),
                  ViewMaker(2_600_000, 5, "carol")],
    ("B", True): [ViewMaker(3_000_000, 1, "bob"), ViewMaker(3_100_000, 9, "me")],
    ("B", False): [ViewMaker(2_900_000, 9, "bob")],
}
VIEW_LEGS = [StripLeg("A", 20), StripLeg("B", 7)]


def view_makers(symbol: str, is_buy: bool) -> list[ViewMaker]:
    return VIEW.get((symbol, is_buy), [])


def test_simulate_strip_quotes_a_views_makers_leg_by_leg_and_changes_none() -> None:
    """Own orders passed over; a short leg still shows what it would get; fees per fill."""
    before = {key: list(makers) for key, makers in VIEW.items()}
    quote = simulate_strip(view_makers, "me", True, VIEW_LEGS, 4)
    assert VIEW == before
    bob_a, carol_a, bob_b = VIEW[("A", True)][1], VIEW[("A", True)][2], VIEW[("B", True)][0]
    assert [leg.fills for leg in quote.legs] == [
        [Fill(bob_a, 3, 15_000), Fill(carol_a, 1, 5_200)], [Fill(bob_b, 1, 2_100)]]
    assert [(leg.symbol, leg.filled, leg.notional, leg.taker_fees) for leg in quote.legs] == [
        ("A", 4, 10_100_000, 20_200), ("B", 1, 3_000_000, 2_100)]
    assert (quote.notional, quote.taker_fees) == (13_100_000, 22_300)
    assert not quote.fills_every_leg()
    assert strip_refusal(quote, True, 10**18, lambda asset: 10**18) == "insufficient_liquidity"


def test_strip_refusal_checks_the_limit_then_the_funds() -> None:
    """Buy 1 a leg: 2.5 + 3 = 5.5 USDC notional, fees 0.005 + 0.0021."""
    buy = simulate_strip(view_makers, "me", True, VIEW_LEGS, 1)
    assert (buy.notional, buy.taker_fees) == (5_500_000, 7_100)
    assert strip_refusal(buy, True, 5_499_999, lambda asset: 0) == "limit_exceeded"
    assert strip_refusal(buy, True, 5_500_000, lambda asset: 5_507_099) == "insufficient_funds"
    assert strip_refusal(buy, True, 5_500_000, lambda asset: 5_507_100) is None
    sell = simulate_strip(view_makers, "me", False, [StripLeg("B", 7), StripLeg("C", 7)], 1)
    assert not sell.fills_every_leg()
    sell = simulate_strip(view_makers, "me", False, [StripLeg("B", 7)], 2)
    tokens = {"B": 1}
    assert strip_refusal(sell, False, 5_800_001, tokens.__getitem__) == "limit_exceeded"
    assert strip_refusal(sell, False, 5_800_000, tokens.__getitem__) == "insufficient_funds"
    assert strip_refusal(sell, False, 5_800_000, {"B": 2}.__getitem__) is None
