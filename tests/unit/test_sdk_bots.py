"""The bots' planners: the market maker skews against inventory; the operator quotes its
capacity for the coming delivery hours of its region and classes."""

from __future__ import annotations

import pytest

from sdk.bots.market_maker import MarketMakerConfig, plan_quotes
from sdk.bots.operator_quoter import (
    Capacity,
    CapacityError,
    plan_asks,
    quote_id,
    resting_matches,
)
from wsapi.messages import Balance, Instrument, OrderReport

HOUR_NS = 3600 * 10**9
CAPACITY = """
region: eu-west
hours_ahead: 3
lead_minutes: 5
classes:
  H100-SXM-80GB: {gpus: 8, price: "2.40"}
  A100-SXM-80GB: {gpus: 16, price: "1.45"}
"""


def test_market_maker_quotes_symmetric_when_flat_and_skews_with_inventory() -> None:
    config = MarketMakerConfig(instrument="X", spread_ticks=4, levels=2, skew_ticks_per_unit=0.5)
    flat = plan_quotes(config, reference_micro=2_000_000, tick_micro=10_000, inventory=0)
    assert [(q.side, q.price) for q in flat] == [
        ("buy", "1.98"), ("buy", "1.97"), ("sell", "2.02"), ("sell", "2.03")]
    long = plan_quotes(config, reference_micro=2_000_000, tick_micro=10_000, inventory=4)
    assert [q.price for q in long][0] == "1.96" and [q.price for q in long][2] == "2"
    capped = plan_quotes(MarketMakerConfig(instrument="X", inventory_max=10), 2_000_000,
                         10_000, inventory=10)
    assert {q.side for q in capped} == {"sell"}


def instrument(symbol: str, gpu: str, start_ns: int, region: str = "eu-west") -> Instrument:
    return Instrument(symbol=symbol, gpu=gpu, region=region, delivery_start=start_ns,
                      delivery_hours=1, tick_size="0.01", max_order_quantity=1000,
                      maker_fee_bps=0, taker_fee_bps=0, status="open")


def test_operator_plans_one_ask_per_hour_in_the_window_capped_by_tokens() -> None:
    capacity = Capacity.from_yaml(CAPACITY)
    now = 100 * HOUR_NS
    specs = [
        instrument("H1", "H100-SXM-80GB", now + HOUR_NS),
        instrument("H2", "H100-SXM-80GB", now + 2 * HOUR_NS),
        instrument("H9", "H100-SXM-80GB", now + 9 * HOUR_NS),        # beyond hours_ahead
        instrument("Hsoon", "H100-SXM-80GB", now + 60 * 10**9),      # inside lead time
        instrument("A1", "A100-SXM-80GB", now + HOUR_NS),
        instrument("L1", "L40S-48GB", now + HOUR_NS),                 # not our class
        instrument("Hus", "H100-SXM-80GB", now + HOUR_NS, "us-east"),  # not our region
    ]
    balances = {"H1": Balance(available=5, held=3), "H2": Balance(available=100, held=0)}
    plan = plan_asks(capacity, specs, balances, now)
    assert set(plan) == {"H1", "H2", "A1"}
    assert plan["H1"] is not None and plan["H1"].quantity == 8 and plan["H1"].price == "2.40"
    assert plan["H2"] is not None and plan["H2"].quantity == 8
    assert plan["A1"] is None, "no tokens, no ask"
    ask = plan["H1"]
    resting = [OrderReport(event="open", client_order_id=quote_id("H1"), seq=1, ts=1,
                           instrument="H1", price="2.4", remaining_quantity=8)]
    assert resting_matches(ask, resting) and not resting_matches(ask, [])
    assert resting_matches(None, [])


def test_a_malformed_capacity_file_names_the_field() -> None:
    with pytest.raises(CapacityError, match="classes.H100"):
        Capacity.from_yaml("region: r\nclasses:\n  H100: {gpus: -1, price: '1'}\n")
    with pytest.raises(CapacityError, match="region"):
        Capacity.from_yaml("classes:\n  H100: {gpus: 1, price: '1'}\n")
