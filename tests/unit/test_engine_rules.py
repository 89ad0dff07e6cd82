"""One hand-written case per rule of PROTOCOL.md v1 (and docs/protocol-notes.md).

Every test runs against the Python engine (`Engine(check_invariants=True)`), the native
Rust core (`gpux_native`, its invariants checked after each command) and the independent
reference model, and asserts the exact events (their JSON form, `seq` checked
for continuity by the driver) and, where it matters, the exact balances in micro-USDC.

The default market (`open_market`): instrument SYMBOL, tick 0.01, maker 10 bps, taker
20 bps (a limit buy holds R*L + floor(R*L*20/10000)); alice, bob and carol each hold
10000 USDC and 100 tokens. Orders placed after it get order ids "1", "2", ...
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine_helpers import (
    DELIVERY,
    IMPLEMENTATIONS,
    SECOND,
    SYMBOL,
    T0,
    Driver,
    amend,
    cancel,
    cmd,
    deposit,
    limit,
    listing,
    market,
    mass_cancel,
    raw,
    tick,
    withdraw,
)

OTHER = "A100-US-1"


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def ex(request: pytest.FixtureRequest) -> Driver:
    """A fresh exchange: the Python engine, the native core or the reference model."""
    return Driver(IMPLEMENTATIONS[request.param]())


# What open_market deposits in each account, none of it held.
OPENING_FUNDS = {SYMBOL: {"available": 100, "held": 0}, "USDC": {"available": "10000", "held": "0"}}


def open_market(ex: Driver, **listing_fields: Any) -> None:
    ex.run(listing(**listing_fields))
    for account in ("alice", "bob", "carol"):
        ex.run(deposit(account, "USDC", "10000"), deposit(account, SYMBOL, 100))


# ---------------------------------------------------------------- expected events


def ev(event_type: str, ts: int = T0, **fields: Any) -> dict[str, Any]:
    """An expected event; fields that are None are absent on the wire."""
    return {"type": event_type, "ts": ts, **{k: v for k, v in fields.items() if v is not None}}


def accepted(account: str, coid: str, order_id: str, side: str, quantity: int,
             price: str | None = None, *, order_type: str = "limit", tif: str | None = None,
             post_only: bool = False, stp: str = "cancel_newest", expire_at: int | None = None,
             ts: int = T0, instrument: str = SYMBOL) -> dict[str, Any]:
    tif = tif or ("gtc" if order_type == "limit" else "ioc")
    return ev("order_accepted", ts, account=account, client_order_id=coid, order_id=order_id,
              instrument=instrument, side=side, order_type=order_type, price=price,
              quantity=quantity, time_in_force=tif, post_only=post_only, stp=stp,
              expire_at=expire_at)


def canceled(account: str, coid: str, order_id: str, reason: str, quantity: int,
             ts: int = T0, instrument: str = SYMBOL) -> dict[str, Any]:
    return ev("order_canceled", ts, account=account, client_order_id=coid, order_id=order_id,
              instrument=instrument, reason=reason, canceled_quantity=quantity)


def reduced(account: str, coid: str, order_id: str, quantity: int, remaining: int,
            ts: int = T0) -> dict[str, Any]:
    return ev("order_reduced", ts, account=account, client_order_id=coid, order_id=order_id,
              instrument=SYMBOL, reason="stp", reduced_quantity=quantity,
              remaining_quantity=remaining)


def order_rejected(account: str, coid: str, reason: str, instrument: str | None = SYMBOL,
                   ts: int = T0) -> dict[str, Any]:
    return ev("order_rejected", ts, account=account, client_order_id=coid, reason=reason,
              instrument=instrument)


def amended(account: str, coid: str, order_id: str, price: str, quantity: int, remaining: int,
            ts: int = T0) -> dict[str, Any]:
    return ev("order_amended", ts, account=account, client_order_id=coid, order_id=order_id,
              instrument=SYMBOL, price=price, quantity=quantity, remaining_quantity=remaining)


def trade(trade_id: str, price: str, quantity: int, aggressor: str,
          maker: tuple[str, str, str], maker_fee: str, taker: tuple[str, str, str],
          taker_fee: str, ts: int = T0, instrument: str = SYMBOL) -> dict[str, Any]:
    """`maker` and `taker` are (account, client_order_id, order_id)."""
    return ev("trade", ts, trade_id=trade_id, instrument=instrument, price=price,
              quantity=quantity, aggressor_side=aggressor, maker_account=maker[0],
              maker_client_order_id=maker[1], maker_order_id=maker[2], maker_fee=maker_fee,
              taker_account=taker[0], taker_client_order_id=taker[1], taker_order_id=taker[2],
              taker_fee=taker_fee)


def command_rejected(command: str, reason: str = "invalid_command",
                     ts: int = T0) -> dict[str, Any]:
    return ev("command_rejected", ts, command=command, reason=reason)


LISTED = ev("instrument_listed", symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
            delivery_start=DELIVERY, delivery_hours=24, tick_size="0.01",
            max_order_quantity=1_000, maker_fee_bps=10, taker_fee_bps=20)


# ------------------------------------------------------------------------ listing


def test_listing_emits_instrument_listed_with_the_listing_fields(ex: Driver) -> None:
    assert ex.apply(listing()) == [LISTED]


def test_listing_writes_tick_size_in_canonical_form(ex: Driver) -> None:
    assert ex.apply(listing(tick_size="0.010")) == [LISTED]


def test_listing_a_taken_symbol_is_duplicate_instrument(ex: Driver) -> None:
    ex.run(listing())
    assert ex.apply(listing(gpu="other")) == [command_rejected("list_instrument",
                                                               "duplicate_instrument")]


def test_listing_the_symbol_of_a_closed_instrument_is_still_duplicate(ex: Driver) -> None:
    ex.run(listing(), tick(DELIVERY))
    assert ex.apply(listing(ts=DELIVERY, delivery_start=DELIVERY + SECOND)) == [
        command_rejected("list_instrument", "duplicate_instrument", ts=DELIVERY)]


def test_listing_checks_the_taken_symbol_before_the_fields(ex: Driver) -> None:
    ex.run(listing())
    assert ex.apply(listing(tick_size="0", maker_fee_bps=5000)) == [
        command_rejected("list_instrument", "duplicate_instrument")]


@pytest.mark.parametrize("overrides", [
    {"tick_size": "0"},
    {"tick_size": "0.0000001"},
    {"tick_size": "-0.01"},
    {"tick_size": "1e-2"},
    {"tick_size": "abc"},
    {"maker_fee_bps": 1001},
    {"taker_fee_bps": 1001},
    {"symbol": "USDC"},
    {"delivery_start": T0},
    {"delivery_start": T0 - 1},
], ids=lambda overrides: "-".join(f"{k}={v}" for k, v in overrides.items()))
def test_listing_with_a_bad_field_is_invalid_command(ex: Driver, overrides: dict[str, Any]
                                                      ) -> None:
    assert ex.apply(listing(**overrides)) == [command_rejected("list_instrument")]


@pytest.mark.parametrize("fields", [
    {"ts": T0, "symbol": SYMBOL},
    {"ts": T0, "symbol": "bad symbol", "gpu": "g", "region": "r",
     "delivery_start": DELIVERY, "delivery_hours": 1, "tick_size": "0.01",
     "max_order_quantity": 1, "maker_fee_bps": 0, "taker_fee_bps": 0},
    {"ts": T0, "symbol": SYMBOL, "gpu": "g", "region": "r",
     "delivery_start": DELIVERY, "delivery_hours": 1, "tick_size": "0.01",
     "max_order_quantity": 1, "maker_fee_bps": -1, "taker_fee_bps": 0},
], ids=["missing-fields", "bad-symbol", "negative-fee"])
def test_listing_that_does_not_decode_is_invalid_command(ex: Driver, fields: dict[str, Any]
                                                          ) -> None:
    assert ex.apply(cmd("list_instrument", **fields)) == [command_rejected("list_instrument")]


def test_listing_accepts_fees_of_exactly_1000_bps(ex: Driver) -> None:
    events = ex.apply(listing(maker_fee_bps=1000, taker_fee_bps=1000))
    assert events == [{**LISTED, "maker_fee_bps": 1000, "taker_fee_bps": 1000}]


# ----------------------------------------------------------------------- deposits


def test_deposit_credits_available_in_canonical_usdc(ex: Driver) -> None:
    ex.run(listing())
    assert ex.apply(deposit("alice", "USDC", "2.150", deposit_id="0xabc:1")) == [
        ev("deposited", account="alice", asset="USDC", amount="2.15", deposit_id="0xabc:1")]
    assert ex.balance("alice", "USDC") == ("2.15", "0")


def test_deposit_of_tokens_takes_an_integer_or_a_string_of_digits(ex: Driver) -> None:
    ex.run(listing())
    assert ex.run(deposit("bob", SYMBOL, 5), deposit("bob", SYMBOL, "7")) == [
        ev("deposited", account="bob", asset=SYMBOL, amount=5),
        ev("deposited", account="bob", asset=SYMBOL, amount=7),
    ]
    assert ex.balance("bob", SYMBOL) == (12, 0)


def test_deposit_with_a_deposit_id_seen_before_is_duplicate_deposit(ex: Driver) -> None:
    ex.run(listing(), deposit("alice", "USDC", "1", deposit_id="tx-1"))
    assert ex.apply(deposit("bob", "USDC", "3", deposit_id="tx-1")) == [
        ev("deposit_rejected", account="bob", asset="USDC", amount="3",
           reason="duplicate_deposit")]
    assert ex.balance("bob", "USDC") == ("0", "0")


def test_deposits_without_a_deposit_id_are_never_duplicates(ex: Driver) -> None:
    ex.run(listing())
    events = ex.run(deposit("alice", "USDC", "1"), deposit("alice", "USDC", "1"))
    assert [e["type"] for e in events] == ["deposited", "deposited"]
    assert ex.balance("alice", "USDC") == ("2", "0")


def test_a_rejected_deposit_does_not_use_up_its_deposit_id(ex: Driver) -> None:
    # Reading beyond protocol-notes: only a deposit that happened has "been seen".
    ex.run(listing(), deposit("alice", "USDC", "0", deposit_id="tx-9"))
    assert ex.apply(deposit("alice", "USDC", "1", deposit_id="tx-9")) == [
        ev("deposited", account="alice", asset="USDC", amount="1", deposit_id="tx-9")]


def test_deposit_of_an_unknown_asset_is_rejected_before_its_amount(ex: Driver) -> None:
    ex.run(listing(), deposit("alice", "USDC", "1", deposit_id="tx-1"))
    assert ex.apply(deposit("alice", "ETH", "-1", deposit_id="tx-1")) == [
        ev("deposit_rejected", account="alice", asset="ETH", amount="-1",
           reason="unknown_asset")]


def test_deposit_checks_the_amount_before_the_deposit_id(ex: Driver) -> None:
    ex.run(listing(), deposit("alice", "USDC", "1", deposit_id="tx-1"))
    assert ex.apply(deposit("alice", "USDC", "0", deposit_id="tx-1")) == [
        ev("deposit_rejected", account="alice", asset="USDC", amount="0",
           reason="invalid_amount")]


@pytest.mark.parametrize(("asset", "amount"), [
    ("USDC", "0"), ("USDC", "-1"), ("USDC", "1e3"), ("USDC", ".5"), ("USDC", "2.1234567"),
    ("USDC", ""), ("USDC", 5), (SYMBOL, 0), (SYMBOL, -3), (SYMBOL, "x"), (SYMBOL, "1.5"),
    (SYMBOL, "0"),
])
def test_deposit_with_a_bad_amount_is_invalid_amount(ex: Driver, asset: str,
                                                      amount: str | int) -> None:
    ex.run(listing())
    assert ex.apply(deposit("alice", asset, amount)) == [
        ev("deposit_rejected", account="alice", asset=asset, amount=amount,
           reason="invalid_amount")]
    assert ex.state()["accounts"] == {}


def test_deposit_accepts_six_decimals_and_the_token_of_a_closed_instrument(ex: Driver
                                                                          ) -> None:
    ex.run(listing(), tick(DELIVERY))
    assert ex.run(deposit("alice", "USDC", "0.000001", ts=DELIVERY),
                  deposit("alice", SYMBOL, 3, ts=DELIVERY)) == [
        ev("deposited", DELIVERY, account="alice", asset="USDC", amount="0.000001"),
        ev("deposited", DELIVERY, account="alice", asset=SYMBOL, amount=3),
    ]


def test_deposit_that_does_not_decode_is_invalid_command(ex: Driver) -> None:
    assert ex.run(
        cmd("deposit", ts=T0, account="alice", asset="USDC", amount=1.5),
        cmd("deposit", ts=T0, account="alice", amount="1"),
        cmd("deposit", ts=T0, account="alice", asset="USDC", amount="1", deposit_id=7),
    ) == [command_rejected("deposit")] * 3


# -------------------------------------------------------------------- withdrawals


def test_withdraw_debits_available(ex: Driver) -> None:
    ex.run(listing(), deposit("alice", "USDC", "10"), deposit("alice", SYMBOL, 4))
    assert ex.run(withdraw("alice", "USDC", "2.5"), withdraw("alice", SYMBOL, "4")) == [
        ev("withdrawn", account="alice", asset="USDC", amount="2.5"),
        ev("withdrawn", account="alice", asset=SYMBOL, amount=4),
    ]
    assert ex.state()["accounts"] == {"alice": {"USDC": {"available": "7.5", "held": "0"}}}


def test_withdraw_of_more_than_available_is_insufficient_funds(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "1", 1000))  # holds 1000 + 2 of her 10000
    assert ex.run(withdraw("alice", "USDC", "8998.000001"), withdraw("dave", "USDC", "1"),
                  withdraw("alice", "USDC", "8998")) == [
        ev("withdrawal_rejected", account="alice", asset="USDC", amount="8998.000001",
           reason="insufficient_funds"),
        ev("withdrawal_rejected", account="dave", asset="USDC", amount="1",
           reason="insufficient_funds"),
        ev("withdrawn", account="alice", asset="USDC", amount="8998"),
    ]
    assert ex.balance("alice", "USDC") == ("0", "1002")


def test_withdraw_of_an_unknown_asset_or_bad_amount_is_rejected_in_that_order(ex: Driver
                                                                             ) -> None:
    ex.run(listing(), deposit("alice", "USDC", "10"))
    assert ex.run(withdraw("alice", "ETH", "x"), withdraw("alice", "USDC", "0"),
                  withdraw("alice", "USDC", "1.0000001"), withdraw("alice", SYMBOL, 0)) == [
        ev("withdrawal_rejected", account="alice", asset="ETH", amount="x",
           reason="unknown_asset"),
        ev("withdrawal_rejected", account="alice", asset="USDC", amount="0",
           reason="invalid_amount"),
        ev("withdrawal_rejected", account="alice", asset="USDC", amount="1.0000001",
           reason="invalid_amount"),
        ev("withdrawal_rejected", account="alice", asset=SYMBOL, amount=0,
           reason="invalid_amount"),
    ]


# --------------------------------------------------------------- new_order checks


@pytest.mark.parametrize("fields", [
    {"order_type": "limit"},
    {"order_type": "market", "price": "2"},
    {"order_type": "market", "post_only": True},
    {"order_type": "market", "time_in_force": "gtc"},
    {"order_type": "market", "time_in_force": "gtd", "expire_at": T0 + SECOND},
    {"order_type": "limit", "price": "2", "post_only": True, "time_in_force": "ioc"},
    {"order_type": "limit", "price": "2", "post_only": True, "time_in_force": "fok"},
    {"order_type": "limit", "price": "2", "time_in_force": "gtd"},
    {"order_type": "limit", "price": "2", "time_in_force": "gtd", "expire_at": T0},
    {"order_type": "limit", "price": "2", "expire_at": T0 + SECOND},
    {"order_type": "limit", "price": "2", "time_in_force": "ioc", "expire_at": T0 + SECOND},
    {"order_type": "market", "time_in_force": "fok", "expire_at": T0 + SECOND},
], ids=lambda fields: "-".join(f"{k}={v}" for k, v in fields.items()))
def test_new_order_that_contradicts_itself_is_invalid_order(ex: Driver,
                                                             fields: dict[str, Any]) -> None:
    open_market(ex)
    command = cmd("new_order", ts=T0, account="alice", client_order_id="o1",
                  instrument=SYMBOL, side="buy", quantity=1, **fields)
    assert ex.apply(command) == [order_rejected("alice", "o1", "invalid_order")]


@pytest.mark.parametrize(("fields", "instrument"), [
    ({"side": "up"}, SYMBOL),
    ({"order_type": "stop"}, SYMBOL),
    ({"time_in_force": "day"}, SYMBOL),
    ({"stp": "none"}, SYMBOL),
    ({"quantity": 1.5}, SYMBOL),
    ({"quantity": "1"}, SYMBOL),
    ({"price": 2}, SYMBOL),
    ({"post_only": "yes"}, SYMBOL),
    ({"expire_at": -1, "time_in_force": "gtd"}, SYMBOL),
    ({"colour": "red"}, SYMBOL),
    ({"side": "up", "instrument": "NOPE"}, None),
    ({"instrument": 7}, None),
], ids=lambda value: str(value))
def test_new_order_that_does_not_decode_is_invalid_order(ex: Driver, fields: dict[str, Any],
                                                          instrument: str | None) -> None:
    open_market(ex)
    order = {"ts": T0, "account": "alice", "client_order_id": "o1", "instrument": SYMBOL,
             "side": "buy", "order_type": "limit", "price": "2", "quantity": 1, **fields}
    assert ex.apply(cmd("new_order", **order)) == [
        order_rejected("alice", "o1", "invalid_order", instrument=instrument)]


# Each command fails its own check and every later one; the first check decides.
CHECK_ORDER_CASES = [
    ("invalid_order", dict(client_order_id="live", order_type="market", price="2.001",
                           quantity=0, instrument=SYMBOL), SYMBOL),
    ("duplicate_client_order_id", dict(client_order_id="live", instrument="NOPE",
                                       price="2.001", quantity=0), None),
    ("unknown_instrument", dict(instrument="NOPE", price="2.001", quantity=0), None),
    ("instrument_closed", dict(instrument=OTHER, price="2.001", quantity=0), OTHER),
    ("invalid_price", dict(price="2.001", quantity=0), SYMBOL),
    ("invalid_quantity", dict(price="11", quantity=1001, post_only=True), SYMBOL),
    ("post_only_would_cross", dict(price="11", quantity=1000, post_only=True), SYMBOL),
    ("insufficient_funds", dict(price="11", quantity=1000), SYMBOL),
]


@pytest.mark.parametrize(("reason", "fields", "instrument"), CHECK_ORDER_CASES,
                         ids=[case[0] for case in CHECK_ORDER_CASES])
def test_new_order_checks_run_in_the_protocol_order(ex: Driver, reason: str,
                                                    fields: dict[str, Any],
                                                    instrument: str | None) -> None:
    open_market(ex)
    ex.run(listing(OTHER, delivery_start=T0 + SECOND), tick(T0 + SECOND))
    ex.run(limit("alice", "live", "buy", "1", 1, ts=T0 + SECOND),
           limit("bob", "ask", "sell", "2.5", 1, ts=T0 + SECOND))
    order = {"ts": T0 + SECOND, "account": "alice", "client_order_id": "o9",
             "instrument": SYMBOL, "side": "buy", "order_type": "limit", **fields}
    assert ex.apply(cmd("new_order", **order)) == [
        order_rejected("alice", order["client_order_id"], reason, instrument=instrument,
                       ts=T0 + SECOND)]


@pytest.mark.parametrize("price", ["2.001", "0", "0.00", "-2", "2.0000001", "abc", "", "1e1"])
def test_new_order_with_a_price_off_the_tick_or_malformed_is_invalid_price(
        ex: Driver, price: str) -> None:
    open_market(ex)
    assert ex.apply(limit("alice", "o1", "buy", price, 1)) == [
        order_rejected("alice", "o1", "invalid_price")]


def test_new_order_accepts_a_price_with_trailing_zeros_and_writes_it_canonical(ex: Driver
                                                                              ) -> None:
    open_market(ex)
    assert ex.apply(limit("alice", "o1", "buy", "2.150", 1)) == [
        accepted("alice", "o1", "1", "buy", 1, "2.15")]


@pytest.mark.parametrize("quantity", [0, -1, 1001])
def test_new_order_with_a_quantity_out_of_range_is_invalid_quantity(ex: Driver,
                                                                    quantity: int) -> None:
    open_market(ex)
    assert ex.apply(limit("alice", "o1", "buy", "1", quantity)) == [
        order_rejected("alice", "o1", "invalid_quantity")]


def test_new_order_of_max_order_quantity_is_accepted(ex: Driver) -> None:
    open_market(ex)
    assert ex.apply(limit("alice", "o1", "buy", "1", 1000)) == [
        accepted("alice", "o1", "1", "buy", 1000, "1")]


def test_limit_buy_is_accepted_when_its_hold_equals_available(ex: Driver) -> None:
    ex.run(listing(), deposit("erin", "USDC", "10.02"))
    # 5 * 2.00 = 10, plus floor(10 * 20 / 10000) = 0.02: exactly what erin has.
    assert ex.apply(limit("erin", "o1", "buy", "2", 5)) == [
        accepted("erin", "o1", "1", "buy", 5, "2")]
    assert ex.balance("erin", "USDC") == ("0", "10.02")


def test_limit_buy_whose_hold_exceeds_available_is_insufficient_funds(ex: Driver) -> None:
    ex.run(listing(), deposit("erin", "USDC", "10.019999"))
    assert ex.apply(limit("erin", "o1", "buy", "2", 5)) == [
        order_rejected("erin", "o1", "insufficient_funds")]


def test_limit_buy_hold_uses_the_larger_of_maker_and_taker_bps(ex: Driver) -> None:
    ex.run(listing(maker_fee_bps=30, taker_fee_bps=5), deposit("erin", "USDC", "10.03"))
    assert ex.run(limit("erin", "o1", "buy", "2", 5),
                  limit("erin", "o2", "buy", "0.01", 1)) == [
        accepted("erin", "o1", "1", "buy", 5, "2"),
        order_rejected("erin", "o2", "insufficient_funds"),
    ]
    assert ex.balance("erin", "USDC") == ("0", "10.03")


def test_sell_needs_its_quantity_of_tokens_available(ex: Driver) -> None:
    open_market(ex)
    assert ex.run(limit("alice", "s1", "sell", "2", 60), limit("alice", "s2", "sell", "2", 41),
                  market("alice", "s3", "sell", 41), limit("alice", "s4", "sell", "2", 40)) == [
        accepted("alice", "s1", "1", "sell", 60, "2"),
        order_rejected("alice", "s2", "insufficient_funds"),
        order_rejected("alice", "s3", "insufficient_funds"),
        accepted("alice", "s4", "2", "sell", 40, "2"),
    ]
    assert ex.balance("alice", SYMBOL) == (0, 100)


def test_market_buy_is_never_rejected_for_funds(ex: Driver) -> None:
    ex.run(listing(), deposit("bob", SYMBOL, 5), limit("bob", "s1", "sell", "2", 5))
    assert ex.apply(market("erin", "m1", "buy", 3)) == [
        accepted("erin", "m1", "2", "buy", 3, order_type="market"),
        canceled("erin", "m1", "2", "market", 3),
    ]


def test_client_order_id_is_unique_per_account_among_open_orders(ex: Driver) -> None:
    open_market(ex)
    assert ex.run(limit("alice", "o1", "buy", "1", 1), limit("alice", "o1", "sell", "3", 1),
                  limit("bob", "o1", "buy", "1", 1), cancel("alice", "o1"),
                  limit("alice", "o1", "buy", "1.5", 1)) == [
        accepted("alice", "o1", "1", "buy", 1, "1"),
        order_rejected("alice", "o1", "duplicate_client_order_id"),
        accepted("bob", "o1", "2", "buy", 1, "1"),
        canceled("alice", "o1", "1", "user", 1),
        accepted("alice", "o1", "3", "buy", 1, "1.5"),
    ]


def test_client_order_id_of_a_filled_order_can_be_reused(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "o1", "buy", "2", 1), limit("bob", "s1", "sell", "2", 1))
    assert ex.apply(limit("alice", "o1", "buy", "2", 1)) == [
        accepted("alice", "o1", "3", "buy", 1, "2")]


def test_order_and_trade_ids_count_from_one_and_rejections_take_none(ex: Driver) -> None:
    open_market(ex)
    assert ex.run(limit("alice", "x", "buy", "2.001", 1), limit("bob", "s1", "sell", "2", 1),
                  limit("alice", "b1", "buy", "2", 1)) == [
        order_rejected("alice", "x", "invalid_price"),
        accepted("bob", "s1", "1", "sell", 1, "2"),
        accepted("alice", "b1", "2", "buy", 1, "2"),
        trade("1", "2", 1, "buy", ("bob", "s1", "1"), "0.002", ("alice", "b1", "2"), "0.004"),
    ]


# ------------------------------------------------------------------------ matching


def test_trades_match_best_price_first_then_oldest_at_the_maker_price(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2.01", 2), limit("carol", "s2", "sell", "2", 2),
           limit("bob", "s3", "sell", "2", 2), limit("carol", "s4", "sell", "2.02", 2))
    assert ex.apply(limit("alice", "b1", "buy", "2.01", 5)) == [
        accepted("alice", "b1", "5", "buy", 5, "2.01"),
        trade("1", "2", 2, "buy", ("carol", "s2", "2"), "0.004", ("alice", "b1", "5"),
              "0.008"),
        trade("2", "2", 2, "buy", ("bob", "s3", "3"), "0.004", ("alice", "b1", "5"), "0.008"),
        trade("3", "2.01", 1, "buy", ("bob", "s1", "1"), "0.00201", ("alice", "b1", "5"),
              "0.00402"),
    ]
    assert ex.open_orders() == [("bob", "s1", "2.01", 1), ("carol", "s4", "2.02", 2)]


def test_trade_moves_tokens_and_usdc_and_pays_both_fees(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 5))
    assert ex.apply(limit("alice", "b1", "buy", "2.1", 3)) == [
        accepted("alice", "b1", "2", "buy", 3, "2.1"),
        trade("1", "2", 3, "buy", ("bob", "s1", "1"), "0.006", ("alice", "b1", "2"), "0.012"),
    ]
    # alice pays 6 + 0.012 at bob's price, not her limit; bob gets 6 - 0.006.
    assert ex.state()["accounts"] == {
        "alice": {SYMBOL: {"available": 103, "held": 0},
                  "USDC": {"available": "9993.988", "held": "0"}},
        "bob": {SYMBOL: {"available": 95, "held": 2},
                "USDC": {"available": "10005.994", "held": "0"}},
        "carol": OPENING_FUNDS,
        "fees": {"USDC": {"available": "0.018", "held": "0"}},
    }


def test_fees_and_holds_floor_to_the_micro_usdc(ex: Driver) -> None:
    open_market(ex, tick_size="0.0001", maker_fee_bps=3, taker_fee_bps=7)
    # Hold of 3 @ 2.1501: 6.4503 + floor(6450300 * 7 / 10000 = 4515.21) micro = 6.454815.
    ex.run(limit("alice", "b1", "buy", "2.1501", 3))
    assert ex.balance("alice", "USDC") == ("9993.545185", "6.454815")
    # bob sells 2 into it at 2.1501: notional 4.3002; alice (maker) pays
    # floor(4300200 * 3 / 10000 = 1290.06) = 1290 micro, bob (taker) floor(3010.14) = 3010.
    assert ex.apply(limit("bob", "s1", "sell", "2.15", 2)) == [
        accepted("bob", "s1", "2", "sell", 2, "2.15"),
        trade("1", "2.1501", 2, "sell", ("alice", "b1", "1"), "0.00129", ("bob", "s1", "2"),
              "0.00301"),
    ]
    # alice's hold for 1 left: 2.1501 + floor(1505.07) micro = 2.151605; she paid
    # 4.3002 + 0.00129 from available after the freed 4.30321 came back.
    assert ex.balance("alice", "USDC") == ("9993.546905", "2.151605")
    assert ex.balance("bob", "USDC") == ("10004.29719", "0")
    assert ex.balance("fees", "USDC") == ("0.0043", "0")
    assert ex.balance("alice", SYMBOL) == (102, 0)
    assert ex.balance("bob", SYMBOL) == (98, 0)


def test_limit_remainder_rests_after_a_partial_fill(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 10))
    assert ex.apply(limit("bob", "s1", "sell", "1.99", 4)) == [
        accepted("bob", "s1", "2", "sell", 4, "1.99"),
        trade("1", "2", 4, "sell", ("alice", "b1", "1"), "0.008", ("bob", "s1", "2"), "0.016"),
    ]
    assert ex.state()["open_orders"] == [
        {"account": "alice", "client_order_id": "b1", "order_id": "1", "instrument": SYMBOL,
         "side": "buy", "price": "2", "quantity": 10, "remaining_quantity": 6}]
    # alice (maker, 10 bps) paid 8 + 0.008; 6 left hold 12 + 0.024.
    assert ex.balance("alice", "USDC") == ("9979.968", "12.024")


def test_limit_that_does_not_cross_rests_without_trading(ex: Driver) -> None:
    open_market(ex)
    assert ex.run(limit("bob", "s1", "sell", "2.01", 1), limit("alice", "b1", "buy", "2", 1)
                  ) == [accepted("bob", "s1", "1", "sell", 1, "2.01"),
                        accepted("alice", "b1", "2", "buy", 1, "2")]
    assert ex.open_orders() == [("alice", "b1", "2", 1), ("bob", "s1", "2.01", 1)]


def test_ioc_cancels_its_remainder(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 2))
    assert ex.run(limit("alice", "b1", "buy", "2", 5, time_in_force="ioc"),
                  limit("alice", "b2", "buy", "2", 5, time_in_force="ioc")) == [
        accepted("alice", "b1", "2", "buy", 5, "2", tif="ioc"),
        trade("1", "2", 2, "buy", ("bob", "s1", "1"), "0.004", ("alice", "b1", "2"), "0.008"),
        canceled("alice", "b1", "2", "ioc", 3),
        accepted("alice", "b2", "3", "buy", 5, "2", tif="ioc"),
        canceled("alice", "b2", "3", "ioc", 5),
    ]
    assert ex.balance("alice", "USDC") == ("9995.992", "0")


def test_fok_that_cannot_fill_whole_is_canceled_with_no_effect(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 2), limit("carol", "s2", "sell", "2.05", 2))
    before = ex.state()
    assert ex.run(limit("alice", "b1", "buy", "2.05", 5, time_in_force="fok"),
                  limit("alice", "b2", "buy", "2.04", 4, time_in_force="fok")) == [
        accepted("alice", "b1", "3", "buy", 5, "2.05", tif="fok"),
        canceled("alice", "b1", "3", "fok", 5),
        accepted("alice", "b2", "4", "buy", 4, "2.04", tif="fok"),
        canceled("alice", "b2", "4", "fok", 4),
    ]
    assert ex.state() == before


def test_fok_that_can_fill_whole_executes_normally(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 2), limit("carol", "s2", "sell", "2.05", 2))
    assert ex.apply(limit("alice", "b1", "buy", "2.05", 4, time_in_force="fok")) == [
        accepted("alice", "b1", "3", "buy", 4, "2.05", tif="fok"),
        trade("1", "2", 2, "buy", ("bob", "s1", "1"), "0.004", ("alice", "b1", "3"), "0.008"),
        trade("2", "2.05", 2, "buy", ("carol", "s2", "2"), "0.0041", ("alice", "b1", "3"),
              "0.0082"),
    ]
    assert ex.open_orders() == []


def test_market_order_sweeps_without_limit_and_cancels_its_remainder(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 2), limit("carol", "s2", "sell", "9", 2))
    assert ex.apply(market("alice", "m1", "buy", 5)) == [
        accepted("alice", "m1", "3", "buy", 5, order_type="market"),
        trade("1", "2", 2, "buy", ("bob", "s1", "1"), "0.004", ("alice", "m1", "3"), "0.008"),
        trade("2", "9", 2, "buy", ("carol", "s2", "2"), "0.018", ("alice", "m1", "3"),
              "0.036"),
        canceled("alice", "m1", "3", "market", 1),
    ]


def test_market_sell_hits_the_best_bids(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "b1", "buy", "1.5", 1), limit("carol", "b2", "buy", "1.6", 1))
    assert ex.apply(market("alice", "m1", "sell", 2, time_in_force="fok")) == [
        accepted("alice", "m1", "3", "sell", 2, order_type="market", tif="fok"),
        trade("1", "1.6", 1, "sell", ("carol", "b2", "2"), "0.0016", ("alice", "m1", "3"),
              "0.0032"),
        trade("2", "1.5", 1, "sell", ("bob", "b1", "1"), "0.0015", ("alice", "m1", "3"),
              "0.003"),
    ]
    assert ex.balance("alice", SYMBOL) == (98, 0)


def test_market_order_on_an_empty_book_is_canceled(ex: Driver) -> None:
    open_market(ex)
    assert ex.apply(market("alice", "m1", "sell", 3)) == [
        accepted("alice", "m1", "1", "sell", 3, order_type="market"),
        canceled("alice", "m1", "1", "market", 3),
    ]
    assert ex.balance("alice", SYMBOL) == (100, 0)


def test_market_buy_fill_is_capped_at_what_available_usdc_pays(ex: Driver) -> None:
    ex.run(listing(), deposit("bob", SYMBOL, 5), deposit("erin", "USDC", "5"),
           limit("bob", "s1", "sell", "2", 5))
    # cost(q) = q * 2 + floor(q * 2 * 20 / 10000): cost(2) = 4.008 <= 5 < cost(3) = 6.012;
    # after it, 0.992 pays for nothing more.
    assert ex.apply(market("erin", "m1", "buy", 5)) == [
        accepted("erin", "m1", "2", "buy", 5, order_type="market"),
        trade("1", "2", 2, "buy", ("bob", "s1", "1"), "0.004", ("erin", "m1", "2"), "0.008"),
        canceled("erin", "m1", "2", "market", 3),
    ]
    assert ex.balance("erin", "USDC") == ("0.992", "0")


def test_market_buy_keeps_filling_while_available_pays_for_another_fill(ex: Driver) -> None:
    # protocol-notes: the cap bounds each fill, and matching goes on while available pays
    # for a further fill. Fees floor per trade, so two fills of 1 can cost less than one of 2.
    # Price 2.0008, taker 7 bps: cost(1) = 2.0008 + floor(1400.56) micro = 2.0022;
    # cost(2) = 4.0016 + floor(2801.12) micro = 4.004401 > 4.0044 = 2 * cost(1).
    ex.run(listing(tick_size="0.0001", maker_fee_bps=0, taker_fee_bps=7),
           deposit("bob", SYMBOL, 5), deposit("erin", "USDC", "4.0044"),
           limit("bob", "s1", "sell", "2.0008", 5))
    assert ex.apply(market("erin", "m1", "buy", 5)) == [
        accepted("erin", "m1", "2", "buy", 5, order_type="market"),
        trade("1", "2.0008", 1, "buy", ("bob", "s1", "1"), "0", ("erin", "m1", "2"),
              "0.0014"),
        trade("2", "2.0008", 1, "buy", ("bob", "s1", "1"), "0", ("erin", "m1", "2"),
              "0.0014"),
        canceled("erin", "m1", "2", "market", 3),
    ]
    assert ex.balance("erin", "USDC") == ("0", "0")


def test_market_fok_buy_simulation_counts_fills_that_per_trade_fee_floors_make_affordable(
        ex: Driver) -> None:
    # As above: 4.0044 pays for 1 + 1 at 2.0008 (2.0022 each) though not for 2 at once.
    ex.run(listing(tick_size="0.0001", maker_fee_bps=0, taker_fee_bps=7),
           deposit("bob", SYMBOL, 5), deposit("erin", "USDC", "4.0044"),
           limit("bob", "s1", "sell", "2.0008", 5))
    assert ex.run(market("erin", "m1", "buy", 3, time_in_force="fok"),
                  market("erin", "m2", "buy", 2, time_in_force="fok")) == [
        accepted("erin", "m1", "2", "buy", 3, order_type="market", tif="fok"),
        canceled("erin", "m1", "2", "fok", 3),
        accepted("erin", "m2", "3", "buy", 2, order_type="market", tif="fok"),
        trade("1", "2.0008", 1, "buy", ("bob", "s1", "1"), "0", ("erin", "m2", "3"),
              "0.0014"),
        trade("2", "2.0008", 1, "buy", ("bob", "s1", "1"), "0", ("erin", "m2", "3"),
              "0.0014"),
    ]


def test_market_fok_buy_that_funds_cannot_fill_whole_is_canceled(ex: Driver) -> None:
    ex.run(listing(), deposit("bob", SYMBOL, 5), deposit("erin", "USDC", "5"),
           limit("bob", "s1", "sell", "2", 5))
    assert ex.apply(market("erin", "m1", "buy", 3, time_in_force="fok")) == [
        accepted("erin", "m1", "2", "buy", 3, order_type="market", tif="fok"),
        canceled("erin", "m1", "2", "fok", 3),
    ]
    assert ex.balance("erin", "USDC") == ("5", "0")


# ----------------------------------------------------------------------- post-only


def test_post_only_that_would_cross_is_rejected(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 1), limit("bob", "b1", "buy", "1.5", 1))
    assert ex.run(limit("alice", "p1", "buy", "2", 1, post_only=True),
                  limit("alice", "p2", "sell", "1.5", 1, post_only=True)) == [
        order_rejected("alice", "p1", "post_only_would_cross"),
        order_rejected("alice", "p2", "post_only_would_cross"),
    ]


def test_post_only_that_would_cross_its_own_order_is_rejected(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "s1", "sell", "2", 1))
    assert ex.apply(limit("alice", "p1", "buy", "2.5", 1, post_only=True, stp="decrement")) == [
        order_rejected("alice", "p1", "post_only_would_cross")]


def test_post_only_that_does_not_cross_rests(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 1))
    assert ex.apply(limit("alice", "p1", "buy", "1.99", 1, post_only=True,
                          time_in_force="gtd", expire_at=T0 + SECOND)) == [
        accepted("alice", "p1", "2", "buy", 1, "1.99", post_only=True, tif="gtd",
                 expire_at=T0 + SECOND)]
    assert ex.open_orders() == [("alice", "p1", "1.99", 1), ("bob", "s1", "2", 1)]


# ----------------------------------------------------------- self-trade prevention


def stp_book(ex: Driver) -> None:
    """alice's sell 3 @ 2 (order 1) rests ahead of bob's sell 2 @ 2 (order 2)."""
    open_market(ex)
    ex.run(limit("alice", "s1", "sell", "2", 3), limit("bob", "s2", "sell", "2", 2))


def test_stp_cancel_newest_cancels_the_taker(ex: Driver) -> None:
    stp_book(ex)
    assert ex.apply(limit("alice", "b1", "buy", "2", 5)) == [
        accepted("alice", "b1", "3", "buy", 5, "2"),
        canceled("alice", "b1", "3", "stp", 5),
    ]
    assert ex.open_orders() == [("alice", "s1", "2", 3), ("bob", "s2", "2", 2)]
    assert ex.balance("alice", "USDC") == ("10000", "0")


def test_stp_cancel_newest_after_trading_with_others_cancels_the_remainder(ex: Driver
                                                                          ) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 2), limit("alice", "s2", "sell", "2", 3))
    assert ex.apply(limit("alice", "b1", "buy", "2", 5, stp="cancel_newest")) == [
        accepted("alice", "b1", "3", "buy", 5, "2", stp="cancel_newest"),
        trade("1", "2", 2, "buy", ("bob", "s1", "1"), "0.004", ("alice", "b1", "3"), "0.008"),
        canceled("alice", "b1", "3", "stp", 3),
    ]


def test_stp_cancel_oldest_cancels_the_resting_order_and_goes_on(ex: Driver) -> None:
    stp_book(ex)
    assert ex.apply(limit("alice", "b1", "buy", "2", 5, stp="cancel_oldest")) == [
        accepted("alice", "b1", "3", "buy", 5, "2", stp="cancel_oldest"),
        canceled("alice", "s1", "1", "stp", 3),
        trade("1", "2", 2, "buy", ("bob", "s2", "2"), "0.004", ("alice", "b1", "3"), "0.008"),
    ]
    assert ex.open_orders() == [("alice", "b1", "2", 3)]
    assert ex.balance("alice", SYMBOL) == (102, 0)


def test_stp_cancel_both_cancels_the_resting_order_then_the_taker(ex: Driver) -> None:
    stp_book(ex)
    assert ex.apply(limit("alice", "b1", "buy", "2", 5, stp="cancel_both")) == [
        accepted("alice", "b1", "3", "buy", 5, "2", stp="cancel_both"),
        canceled("alice", "s1", "1", "stp", 3),
        canceled("alice", "b1", "3", "stp", 5),
    ]
    assert ex.open_orders() == [("bob", "s2", "2", 2)]
    assert ex.balance("alice", SYMBOL) == (100, 0)


def test_stp_decrement_cancels_the_smaller_reduces_the_larger_and_goes_on(ex: Driver
                                                                         ) -> None:
    stp_book(ex)
    assert ex.apply(limit("alice", "b1", "buy", "2", 5, stp="decrement")) == [
        accepted("alice", "b1", "3", "buy", 5, "2", stp="decrement"),
        canceled("alice", "s1", "1", "stp", 3),
        reduced("alice", "b1", "3", 3, 2),
        trade("1", "2", 2, "buy", ("bob", "s2", "2"), "0.004", ("alice", "b1", "3"), "0.008"),
    ]
    assert ex.open_orders() == []
    assert ex.balance("alice", "USDC") == ("9995.992", "0")
    assert ex.balance("alice", SYMBOL) == (102, 0)


def test_stp_decrement_reduces_the_resting_order_and_recomputes_its_hold(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 5))  # holds 10.02
    assert ex.apply(limit("alice", "s1", "sell", "2", 2, stp="decrement")) == [
        accepted("alice", "s1", "2", "sell", 2, "2", stp="decrement"),
        reduced("alice", "b1", "1", 2, 3),
        canceled("alice", "s1", "2", "stp", 2),
    ]
    assert ex.state()["open_orders"] == [
        {"account": "alice", "client_order_id": "b1", "order_id": "1", "instrument": SYMBOL,
         "side": "buy", "price": "2", "quantity": 3, "remaining_quantity": 3}]
    assert ex.balance("alice", "USDC") == ("9993.988", "6.012")
    assert ex.balance("alice", SYMBOL) == (100, 0)


def test_stp_decrement_of_equal_quantities_cancels_both_resting_first(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "s1", "sell", "2", 4))
    assert ex.apply(limit("alice", "b1", "buy", "2", 4, stp="decrement")) == [
        accepted("alice", "b1", "2", "buy", 4, "2", stp="decrement"),
        canceled("alice", "s1", "1", "stp", 4),
        canceled("alice", "b1", "2", "stp", 4),
    ]
    assert ex.state()["accounts"]["alice"] == OPENING_FUNDS


def test_fok_meeting_its_own_order_under_cancel_newest_cannot_fill(ex: Driver) -> None:
    stp_book(ex)
    before = ex.state()
    assert ex.run(limit("alice", "b1", "buy", "2", 2, time_in_force="fok"),
                  limit("alice", "b2", "buy", "2", 2, time_in_force="fok", stp="decrement"),
                  limit("alice", "b3", "buy", "2", 2, time_in_force="fok",
                        stp="cancel_both")) == [
        accepted("alice", "b1", "3", "buy", 2, "2", tif="fok"),
        canceled("alice", "b1", "3", "fok", 2),
        accepted("alice", "b2", "4", "buy", 2, "2", tif="fok", stp="decrement"),
        canceled("alice", "b2", "4", "fok", 2),
        accepted("alice", "b3", "5", "buy", 2, "2", tif="fok", stp="cancel_both"),
        canceled("alice", "b3", "5", "fok", 2),
    ]
    assert ex.state() == before


def test_fok_under_cancel_oldest_skips_its_own_order_and_cancels_it_only_if_it_fills(
        ex: Driver) -> None:
    stp_book(ex)
    assert ex.run(limit("alice", "b1", "buy", "2", 3, time_in_force="fok", stp="cancel_oldest"),
                  limit("alice", "b2", "buy", "2", 2, time_in_force="fok",
                        stp="cancel_oldest")) == [
        accepted("alice", "b1", "3", "buy", 3, "2", tif="fok", stp="cancel_oldest"),
        canceled("alice", "b1", "3", "fok", 3),
        accepted("alice", "b2", "4", "buy", 2, "2", tif="fok", stp="cancel_oldest"),
        canceled("alice", "s1", "1", "stp", 3),
        trade("1", "2", 2, "buy", ("bob", "s2", "2"), "0.004", ("alice", "b2", "4"), "0.008"),
    ]


# -------------------------------------------------------------------------- cancel


def test_cancel_releases_the_hold(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 5), limit("alice", "s1", "sell", "3", 7))
    assert ex.run(cancel("alice", "b1"), cancel("alice", "s1")) == [
        canceled("alice", "b1", "1", "user", 5),
        canceled("alice", "s1", "2", "user", 7),
    ]
    assert ex.state()["accounts"]["alice"] == OPENING_FUNDS


def test_cancel_of_a_partly_filled_order_cancels_what_is_left(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 5), limit("bob", "s1", "sell", "2", 2))
    assert ex.apply(cancel("alice", "b1")) == [canceled("alice", "b1", "1", "user", 3)]


def test_cancel_of_no_open_order_is_unknown_order(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 1), limit("bob", "s1", "sell", "2", 1),
           limit("alice", "b2", "buy", "2", 1))
    assert ex.run(cancel("alice", "nope"), cancel("alice", "b1"), cancel("bob", "b2")) == [
        ev("cancel_rejected", account="alice", client_order_id="nope", reason="unknown_order"),
        ev("cancel_rejected", account="alice", client_order_id="b1", reason="unknown_order"),
        ev("cancel_rejected", account="bob", client_order_id="b2", reason="unknown_order"),
    ]


# --------------------------------------------------------------------------- amend


def amend_book(ex: Driver) -> None:
    """bob's sell 5 @ 2 (order 1) rests ahead of carol's sell 5 @ 2 (order 2)."""
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "2", 5), limit("carol", "s2", "sell", "2", 5))


def first_maker(ex: Driver) -> str:
    """Who a 1-lot market buy trades with."""
    events = ex.apply(market("alice", "probe", "buy", 1))
    return str(events[1]["maker_account"])


def test_amend_decreasing_quantity_keeps_time_priority(ex: Driver) -> None:
    amend_book(ex)
    assert ex.apply(amend("bob", "s1", new_quantity=3)) == [amended("bob", "s1", "1", "2", 3, 3)]
    assert ex.balance("bob", SYMBOL) == (97, 3)
    assert first_maker(ex) == "bob"


def test_amend_that_changes_nothing_keeps_priority_and_is_still_amended(ex: Driver) -> None:
    amend_book(ex)
    assert ex.apply(amend("bob", "s1", new_price="2.00", new_quantity=5)) == [
        amended("bob", "s1", "1", "2", 5, 5)]
    assert first_maker(ex) == "bob"


def test_amend_increasing_quantity_loses_time_priority(ex: Driver) -> None:
    amend_book(ex)
    assert ex.apply(amend("bob", "s1", new_quantity=6)) == [amended("bob", "s1", "1", "2", 6, 6)]
    assert ex.balance("bob", SYMBOL) == (94, 6)
    assert first_maker(ex) == "carol"


def test_amend_changing_price_loses_time_priority_even_back_to_the_same_level(ex: Driver
                                                                             ) -> None:
    amend_book(ex)
    assert ex.run(amend("bob", "s1", new_price="2.01"), amend("bob", "s1", new_price="2")) == [
        amended("bob", "s1", "1", "2.01", 5, 5), amended("bob", "s1", "1", "2", 5, 5)]
    assert first_maker(ex) == "carol"
    assert ex.open_orders() == [("carol", "s2", "2", 4), ("bob", "s1", "2", 5)]


def test_amend_that_crosses_trades_as_taker_and_rests_the_rest(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "1.98", 5), limit("bob", "s1", "sell", "2", 3))
    assert ex.apply(amend("alice", "b1", new_price="2")) == [
        amended("alice", "b1", "1", "2", 5, 5),
        trade("1", "2", 3, "buy", ("bob", "s1", "2"), "0.006", ("alice", "b1", "1"), "0.012"),
    ]
    assert ex.open_orders() == [("alice", "b1", "2", 2)]
    assert ex.balance("alice", "USDC") == ("9989.98", "4.008")


def test_amend_that_crosses_uses_the_order_own_stp(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "s1", "sell", "2", 2),
           limit("alice", "b1", "buy", "1.99", 3, stp="cancel_oldest"))
    assert ex.apply(amend("alice", "b1", new_price="2")) == [
        amended("alice", "b1", "2", "2", 3, 3),
        canceled("alice", "s1", "1", "stp", 2),
    ]
    assert ex.open_orders() == [("alice", "b1", "2", 3)]


def test_amend_of_a_post_only_order_that_would_cross_is_rejected_unchanged(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "1.98", 5, post_only=True),
           limit("bob", "s1", "sell", "2", 3))
    before = ex.state()
    assert ex.apply(amend("alice", "b1", new_price="2", new_quantity=4)) == [
        ev("amend_rejected", account="alice", client_order_id="b1",
           reason="post_only_would_cross")]
    assert ex.state() == before


def test_amend_to_at_or_below_the_filled_quantity_cancels_with_amended(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 10), limit("bob", "s1", "sell", "2", 4),
           limit("alice", "s2", "sell", "2.5", 10), limit("carol", "c1", "buy", "2.5", 4))
    assert ex.run(amend("alice", "b1", new_quantity=4),
                  amend("alice", "s2", new_price="3", new_quantity=3)) == [
        canceled("alice", "b1", "1", "amended", 6),
        canceled("alice", "s2", "3", "amended", 6),
    ]
    assert ex.state()["accounts"]["alice"] == {
        SYMBOL: {"available": 100, "held": 0},
        "USDC": {"available": "10001.982", "held": "0"}}


def test_amend_above_the_filled_quantity_keeps_the_fill(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "b1", "buy", "2", 10), limit("bob", "s1", "sell", "2", 4))
    assert ex.apply(amend("alice", "b1", new_quantity=5)) == [
        amended("alice", "b1", "1", "2", 5, 1)]
    assert ex.balance("alice", "USDC") == ("9989.988", "2.004")


def test_amend_whose_new_hold_exceeds_what_the_account_can_hold_is_rejected(ex: Driver
                                                                           ) -> None:
    ex.run(listing(), deposit("erin", "USDC", "10.02"), limit("erin", "b1", "buy", "2", 5))
    # Raising the price needs 10.05 + 0.0201 > 10.02 (available 0 + her own hold 10.02).
    assert ex.apply(amend("erin", "b1", new_price="2.01")) == [
        ev("amend_rejected", account="erin", client_order_id="b1",
           reason="insufficient_funds")]
    assert ex.balance("erin", "USDC") == ("0", "10.02")
    # 4 @ 2.5 holds 10 + 0.02: exactly available (2.004) plus her own hold (8.016).
    assert ex.run(amend("erin", "b1", new_quantity=4),
                  amend("erin", "b1", new_price="2.5")) == [
        amended("erin", "b1", "1", "2", 4, 4), amended("erin", "b1", "1", "2.5", 4, 4)]
    assert ex.balance("erin", "USDC") == ("0", "10.02")


def test_amend_of_a_sell_counts_its_own_held_tokens(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "s1", "sell", "3", 60))
    assert ex.run(amend("bob", "s1", new_quantity=101), amend("bob", "s1", new_quantity=100)) == [
        ev("amend_rejected", account="bob", client_order_id="s1", reason="insufficient_funds"),
        amended("bob", "s1", "1", "3", 100, 100),
    ]
    assert ex.balance("bob", SYMBOL) == (0, 100)


def test_amend_insufficient_funds_is_checked_before_post_only_would_cross(ex: Driver) -> None:
    ex.run(listing(), deposit("erin", "USDC", "2.004"), deposit("bob", SYMBOL, 1),
           limit("bob", "s1", "sell", "2", 1),
           limit("erin", "b1", "buy", "1", 2, post_only=True))
    assert ex.apply(amend("erin", "b1", new_price="2.5")) == [
        ev("amend_rejected", account="erin", client_order_id="b1",
           reason="insufficient_funds")]


@pytest.mark.parametrize(("client_order_id", "fields", "reason"), [
    ("nope", {"new_price": "2.001", "new_quantity": 0}, "unknown_order"),
    ("s1", {}, "invalid_order"),
    ("s1", {"new_price": "2.001", "new_quantity": 0}, "invalid_price"),
    ("s1", {"new_price": "0"}, "invalid_price"),
    ("s1", {"new_quantity": 0}, "invalid_quantity"),
    ("s1", {"new_quantity": 1001}, "invalid_quantity"),
    ("s1", {"new_quantity": "many"}, "invalid_order"),
    ("s1", {"new_price": 2}, "invalid_order"),
])
def test_amend_rejections_come_in_the_protocol_order(ex: Driver, client_order_id: str,
                                                     fields: dict[str, Any],
                                                     reason: str) -> None:
    amend_book(ex)
    before = ex.state()
    assert ex.apply(amend("bob", client_order_id, **fields)) == [
        ev("amend_rejected", account="bob", client_order_id=client_order_id, reason=reason)]
    assert ex.state() == before


def test_amend_of_another_account_order_is_unknown_order(ex: Driver) -> None:
    amend_book(ex)
    assert ex.apply(amend("carol", "s1", new_quantity=1)) == [
        ev("amend_rejected", account="carol", client_order_id="s1", reason="unknown_order")]


# --------------------------------------------------------------------- mass cancel


def mass_cancel_book(ex: Driver) -> None:
    open_market(ex)
    ex.run(listing(OTHER), deposit("alice", OTHER, 10))
    ex.run(limit("alice", "a1", "buy", "1", 1), limit("alice", "a2", "sell", "3", 2,
                                                       instrument=OTHER),
           limit("bob", "b1", "buy", "1", 1), limit("alice", "a3", "sell", "3", 3))


def test_mass_cancel_cancels_every_open_order_of_the_account_oldest_first(ex: Driver) -> None:
    mass_cancel_book(ex)
    assert ex.apply(mass_cancel("alice")) == [
        canceled("alice", "a1", "1", "mass_cancel", 1),
        canceled("alice", "a2", "2", "mass_cancel", 2, instrument=OTHER),
        canceled("alice", "a3", "4", "mass_cancel", 3),
    ]
    assert ex.open_orders() == [("bob", "b1", "1", 1)]


def test_mass_cancel_with_an_instrument_cancels_only_there(ex: Driver) -> None:
    mass_cancel_book(ex)
    assert ex.apply(mass_cancel("alice", instrument=SYMBOL)) == [
        canceled("alice", "a1", "1", "mass_cancel", 1),
        canceled("alice", "a3", "4", "mass_cancel", 3),
    ]


def test_mass_cancel_oldest_first_means_in_acceptance_order_even_after_an_amend(ex: Driver
                                                                               ) -> None:
    # Reading beyond protocol-notes: an amend that loses priority does not make an order
    # "newer"; oldest first is the order of order_accepted.
    mass_cancel_book(ex)
    ex.run(amend("alice", "a1", new_price="1.01"))
    assert [e["client_order_id"] for e in ex.apply(mass_cancel("alice"))] == ["a1", "a2", "a3"]


def test_mass_cancel_of_an_instrument_never_listed_is_unknown_instrument(ex: Driver) -> None:
    mass_cancel_book(ex)
    assert ex.apply(mass_cancel("alice", instrument="NOPE")) == [
        command_rejected("mass_cancel", "unknown_instrument")]


def test_mass_cancel_with_nothing_open_emits_nothing(ex: Driver) -> None:
    mass_cancel_book(ex)
    assert ex.run(mass_cancel("carol"), mass_cancel("dave", instrument=OTHER)) == []


# ------------------------------------------------------------------ time and expiry


def test_engine_time_is_the_largest_ts_so_far(ex: Driver) -> None:
    ex.run(listing())
    assert ex.run(deposit("alice", "USDC", "1", ts=T0 + 10 * SECOND),
                  deposit("alice", "USDC", "1", ts=T0 + 5)) == [
        ev("deposited", T0 + 10 * SECOND, account="alice", asset="USDC", amount="1"),
        ev("deposited", T0 + 10 * SECOND, account="alice", asset="USDC", amount="1"),
    ]


def test_gtd_expire_at_must_be_after_the_engine_time_not_the_command_ts(ex: Driver) -> None:
    open_market(ex)
    ex.run(tick(T0 + 10 * SECOND))
    late = T0 + 10 * SECOND
    assert ex.run(limit("alice", "g1", "buy", "1", 1, ts=T0, time_in_force="gtd",
                        expire_at=T0 + 5 * SECOND),
                  limit("alice", "g2", "buy", "1", 1, ts=T0, time_in_force="gtd",
                        expire_at=late + 1)) == [
        order_rejected("alice", "g1", "invalid_order", ts=late),
        accepted("alice", "g2", "1", "buy", 1, "1", tif="gtd", expire_at=late + 1, ts=late),
    ]


def test_gtd_orders_expire_oldest_first_once_time_reaches_expire_at(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "g1", "buy", "1", 1, time_in_force="gtd", expire_at=T0 + 10 * SECOND),
           limit("bob", "g2", "sell", "3", 2, time_in_force="gtd", expire_at=T0 + 5 * SECOND),
           limit("carol", "g3", "buy", "1", 4, time_in_force="gtd", expire_at=T0 + 11 * SECOND))
    assert ex.apply(tick(T0 + 4 * SECOND)) == []
    assert ex.apply(tick(T0 + 10 * SECOND)) == [
        canceled("alice", "g1", "1", "expired", 1, ts=T0 + 10 * SECOND),
        canceled("bob", "g2", "2", "expired", 2, ts=T0 + 10 * SECOND),
    ]
    assert ex.open_orders() == [("carol", "g3", "1", 4)]
    assert ex.balance("alice", "USDC") == ("10000", "0")
    assert ex.balance("bob", SYMBOL) == (100, 0)


def test_expiry_happens_before_the_command_that_moves_time(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "g1", "sell", "2", 1, time_in_force="gtd", expire_at=T0 + SECOND))
    at = T0 + SECOND
    assert ex.apply(limit("alice", "b1", "buy", "2", 1, ts=at)) == [
        canceled("bob", "g1", "1", "expired", 1, ts=at),
        accepted("alice", "b1", "2", "buy", 1, "2", ts=at),
    ]


def test_a_late_command_does_not_expire_anything(ex: Driver) -> None:
    open_market(ex)
    ex.run(tick(T0 + SECOND),
           limit("bob", "g1", "sell", "2", 1, time_in_force="gtd", expire_at=T0 + 2 * SECOND))
    assert ex.apply(limit("alice", "b1", "buy", "2", 1, ts=T0)) == [
        accepted("alice", "b1", "2", "buy", 1, "2", ts=T0 + SECOND),
        trade("1", "2", 1, "buy", ("bob", "g1", "1"), "0.002", ("alice", "b1", "2"), "0.004",
              ts=T0 + SECOND),
    ]


# ---------------------------------------------------------------- instrument close


def test_instruments_close_at_delivery_start_in_listing_order(ex: Driver) -> None:
    open_market(ex)
    ex.run(listing(OTHER, delivery_start=DELIVERY - SECOND), deposit("bob", OTHER, 5))
    ex.run(limit("alice", "a1", "buy", "1", 1), limit("bob", "o1", "sell", "3", 5,
                                                       instrument=OTHER),
           limit("bob", "b1", "sell", "3", 2), limit("alice", "a2", "buy", "1.5", 3))
    assert ex.apply(tick(DELIVERY + 7)) == [
        canceled("alice", "a1", "1", "instrument_closed", 1, ts=DELIVERY + 7),
        canceled("bob", "b1", "3", "instrument_closed", 2, ts=DELIVERY + 7),
        canceled("alice", "a2", "4", "instrument_closed", 3, ts=DELIVERY + 7),
        ev("instrument_closed", DELIVERY + 7, symbol=SYMBOL),
        canceled("bob", "o1", "2", "instrument_closed", 5, ts=DELIVERY + 7, instrument=OTHER),
        ev("instrument_closed", DELIVERY + 7, symbol=OTHER),
    ]
    assert ex.state()["open_orders"] == []
    assert ex.balance("bob", OTHER) == (5, 0)


def test_an_instrument_closes_exactly_at_delivery_start_before_the_command(ex: Driver) -> None:
    open_market(ex)
    assert ex.run(limit("alice", "a1", "buy", "1", 1, ts=DELIVERY),
                  cancel("alice", "a0", ts=DELIVERY - 1)) == [
        ev("instrument_closed", DELIVERY, symbol=SYMBOL),
        order_rejected("alice", "a1", "instrument_closed", ts=DELIVERY),
        ev("cancel_rejected", DELIVERY, account="alice", client_order_id="a0",
           reason="unknown_order"),
    ]


def test_expiry_comes_before_instrument_close(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "a1", "buy", "1", 1),
           limit("bob", "g1", "sell", "3", 2, time_in_force="gtd", expire_at=DELIVERY))
    assert ex.apply(tick(DELIVERY)) == [
        canceled("bob", "g1", "2", "expired", 2, ts=DELIVERY),
        canceled("alice", "a1", "1", "instrument_closed", 1, ts=DELIVERY),
        ev("instrument_closed", DELIVERY, symbol=SYMBOL),
    ]


def test_a_closed_instrument_rejects_orders_and_has_no_open_orders(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("alice", "a1", "buy", "1", 1), tick(DELIVERY))
    assert ex.run(cancel("alice", "a1", ts=DELIVERY), market("alice", "m1", "buy", 1),
                  amend("alice", "a1", new_quantity=2)) == [
        ev("cancel_rejected", DELIVERY, account="alice", client_order_id="a1",
           reason="unknown_order"),
        order_rejected("alice", "m1", "instrument_closed", ts=DELIVERY),
        ev("amend_rejected", DELIVERY, account="alice", client_order_id="a1",
           reason="unknown_order"),
    ]


# ---------------------------------------------------------------- malformed input


MALFORMED_CASES = [
    (b"not json", ""),
    (b"[1, 2]", ""),
    (b'"tick"', ""),
    (b"{}", ""),
    (b'{"type": 5, "ts": 1}', ""),
    (b'{"type": "launch_rocket", "ts": 1}', "launch_rocket"),
    (b'{"type": "tick"}', "tick"),
    (b'{"type": "tick", "ts": -1}', "tick"),
    (b'{"type": "tick", "ts": "1"}', "tick"),
    (b'{"type": "tick", "ts": 1.5}', "tick"),
    (b'{"type": "tick", "ts": 1, "extra": true}', "tick"),
    (b'{"type": "cancel_order", "ts": 1, "account": "bad account", "client_order_id": "c"}',
     "cancel_order"),
    (b'{"type": "cancel_order", "ts": 1, "account": "alice"}', "cancel_order"),
    (b'{"type": "new_order", "ts": 1, "client_order_id": "c", "instrument": "H100-EU-1",'
     b' "side": "buy", "order_type": "limit", "price": "1", "quantity": 1}', "new_order"),
    (b'{"type": "new_order", "ts": 1, "account": "alice", "client_order_id": "' + b"x" * 65
     + b'", "instrument": "H100-EU-1", "side": "buy", "order_type": "limit", "price": "1",'
     b' "quantity": 1}', "new_order"),
    (b'{"type": "amend_order", "ts": 1, "account": "alice", "client_order_id": ""}',
     "amend_order"),
    (b'{"type": "mass_cancel", "ts": 1, "account": "alice", "instrument": 7}', "mass_cancel"),
    (b'{"type": "mass_cancel", "ts": 1}', "mass_cancel"),
    (b'{"type": "withdraw", "ts": 1, "account": "alice", "asset": "USDC", "amount": null}',
     "withdraw"),
    (b'{"type": "list_instrument", "ts": 1, "symbol": "X"}', "list_instrument"),
]


@pytest.mark.parametrize(("line", "command"), MALFORMED_CASES,
                         ids=[case[0].decode()[:60] for case in MALFORMED_CASES])
def test_malformed_command_is_invalid_command_with_the_type_as_given(ex: Driver, line: bytes,
                                                                     command: str) -> None:
    open_market(ex)
    assert ex.apply(raw(line)) == [command_rejected(command)]


def test_malformed_command_without_a_valid_ts_does_not_move_time(ex: Driver) -> None:
    open_market(ex)
    ex.run(limit("bob", "g1", "sell", "2", 1, time_in_force="gtd", expire_at=T0 + SECOND))
    later = T0 + 9 * SECOND
    assert ex.run(raw(b'{"type": "tick", "ts": -1}'),
                  raw(b'{"type": "tick", "ts": "%d"}' % later)) == [
        command_rejected("tick"), command_rejected("tick")]
    assert ex.open_orders() == [("bob", "g1", "2", 1)]


def test_malformed_command_with_a_valid_ts_moves_time_before_its_rejection(ex: Driver) -> None:
    # Reading beyond protocol-notes: only a command *without* a valid ts leaves time alone.
    open_market(ex)
    ex.run(limit("bob", "g1", "sell", "2", 1, time_in_force="gtd", expire_at=T0 + SECOND))
    later = T0 + 9 * SECOND
    assert ex.apply(raw(b'{"type": "launch_rocket", "ts": %d}' % later)) == [
        canceled("bob", "g1", "1", "expired", 1, ts=later),
        command_rejected("launch_rocket", ts=later),
    ]
    assert ex.apply(deposit("alice", "USDC", "1")) == [
        ev("deposited", later, account="alice", asset="USDC", amount="1")]


def test_malformed_amend_is_amend_rejected_invalid_order(ex: Driver) -> None:
    amend_book(ex)
    assert ex.apply(raw(b'{"type": "amend_order", "ts": %d, "account": "bob",'
                        b' "client_order_id": "s1", "new_price": "2", "colour": 1}' % T0)) == [
        ev("amend_rejected", account="bob", client_order_id="s1", reason="invalid_order")]


# -------------------------------------------------------------------- final state


def test_final_state_lists_nonzero_balances_sorted_and_orders_in_book_order(ex: Driver) -> None:
    ex.run(listing(), listing(OTHER, tick_size="0.5"),
           deposit("zed", "USDC", "100"), deposit("zed", OTHER, 3),
           deposit("amy", "USDC", "50"), deposit("amy", SYMBOL, 9),
           deposit("kim", "USDC", "1"), withdraw("kim", "USDC", "1"))
    ex.run(limit("zed", "z1", "buy", "1", 1, instrument=OTHER),
           limit("amy", "m1", "sell", "3", 2), limit("zed", "z2", "buy", "1.5", 1),
           limit("zed", "z3", "buy", "1.5", 2), limit("amy", "m2", "sell", "2.5", 3),
           limit("zed", "z4", "sell", "4", 3, instrument=OTHER),
           limit("amy", "m3", "sell", "2.5", 1), limit("zed", "z5", "buy", "1.49", 1))
    state = ex.state()
    assert list(state) == ["accounts", "open_orders", "issues", "deliveries"]
    assert (state["issues"], state["deliveries"]) == ([], [])
    assert state["accounts"] == {
        "amy": {SYMBOL: {"available": 3, "held": 6},
                "USDC": {"available": "50", "held": "0"}},
        "zed": {OTHER: {"available": 0, "held": 3},
                "USDC": {"available": "92.99602", "held": "7.00398"}},
    }
    assert list(state["accounts"]) == sorted(state["accounts"])
    assert all(list(assets) == sorted(assets) for assets in state["accounts"].values())
    assert [(o["instrument"], o["client_order_id"]) for o in state["open_orders"]] == [
        (SYMBOL, "z2"), (SYMBOL, "z3"), (SYMBOL, "z5"), (SYMBOL, "m2"), (SYMBOL, "m3"),
        (SYMBOL, "m1"), (OTHER, "z1"), (OTHER, "z4")]
    assert state["open_orders"][0] == {
        "account": "zed", "client_order_id": "z2", "order_id": "3", "instrument": SYMBOL,
        "side": "buy", "price": "1.5", "quantity": 1, "remaining_quantity": 1}
