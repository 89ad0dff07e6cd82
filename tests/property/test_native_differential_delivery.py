"""The native core against the Python core over Delivery (v2): byte-identical events.

Seeded streams where most listings carry a bond, accounts issue capacity and report on
deliveries among every other command and breakage (`tests/property/streams.py`), a run long
enough to reach every rejection reason of `issue_capacity` and `delivery_report`, the fixed
edge flow (amounts past 64 bits, evidence of multi-byte characters) and hypothesis flows,
compared as `tests/property/differential.py` does; and the replay CLI on either core, the
final state's issues and deliveries included.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.property.differential import assert_same, jsonl, outcomes_of, replay_on_both_cores
from tests.property.streams import Generator
from tests.protocol_strategies import delivery_edge_flow, delivery_flows


@pytest.mark.parametrize("seed", range(8))
def test_generated_delivery_streams_are_byte_identical(seed: int) -> None:
    assert_same(Generator(seed, delivery=True).stream(3_000), chunks=1 + seed % 4)


def test_seeded_delivery_run_is_byte_identical_and_covers_delivery() -> None:
    data = Generator(20_251_205, delivery=True).stream(40_000)
    seen = outcomes_of(assert_same(data, chunks=5))
    assert {("capacity_issued", None), ("delivery_assigned", None), ("delivery_settled", None),
            ("bond_released", None), ("deposit_rejected", "instrument_closed"),
            ("withdrawal_rejected", "instrument_closed")} <= seen
    assert {("issue_rejected", why) for why in (
        "duplicate_issue", "unknown_instrument", "not_deliverable", "instrument_closed",
        "invalid_quantity", "insufficient_funds")} <= seen
    assert {("report_rejected", why) for why in (
        "unknown_issue", "not_assigned", "invalid_ppm")} <= seen


def test_the_delivery_edge_flow_is_byte_identical() -> None:
    """Bonds and compensations past 64 bits, a bond of 0, evidence of 128 characters of 2
    and 4 bytes, delivered_ppm at the edges of 64 bits; one batch and one line at a time."""
    data = jsonl(delivery_edge_flow())
    expected = assert_same(data)
    assert b'"delivery_settled"' in expected
    assert_same(data, chunks=data.count(b"\n"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery_flows())
def test_hypothesis_delivery_flows_are_byte_identical(lines: list[bytes]) -> None:
    assert_same(jsonl(lines), chunks=3)


def test_the_replay_cli_gives_the_same_bytes_on_either_core_over_delivery(
    tmp_path: Path,
) -> None:
    """The final state's issues and deliveries too, byte for byte."""
    later = 2 * 10**18  # after the generated stream's times
    outputs = replay_on_both_cores(Generator(13, delivery=True).stream(10_000)
                                   + jsonl(delivery_edge_flow(later)), tmp_path)
    assert outputs["native"] == outputs["python"]
    assert "\U0001f600".encode() * 128 in outputs["python"][0]  # the edge flow's evidence
    final_state = json.loads(outputs["python"][1])
    assert list(final_state) == ["accounts", "open_orders", "issues", "deliveries"]
    assert final_state["issues"] and final_state["deliveries"]
