"""The native core against the Python core over strip orders (v2): byte-identical events.

Seeded streams where hours are listed one after the other in three series and close, and
strips go over runs of them among every other command and breakage
(`tests/property/streams.py`), a run long enough to reach every rejection reason of
`new_strip_order`, the fixed edge flow (168 and 169 legs, exact limits, notionals past 64
bits), strips as a log may carry them (escapes, ids at the length limit, legs of every JSON
type, repeated fields) and hypothesis flows, compared as `tests/property/differential.py`
does; and the replay CLI on either core.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.property.differential import (
    STRIP_LINES,
    STRIP_SETUP,
    assert_same,
    jsonl,
    outcomes_of,
    replay_on_both_cores,
)
from tests.property.streams import Generator
from tests.protocol_strategies import strip_edge_flow, strip_flows


@pytest.mark.parametrize("seed", range(8))
def test_generated_strip_streams_are_byte_identical(seed: int) -> None:
    assert_same(Generator(seed, strips=True).stream(3_000), chunks=1 + seed % 4)


def test_seeded_strip_run_is_byte_identical_and_covers_strips() -> None:
    data = Generator(20_251_206, strips=True).stream(40_000)
    seen = outcomes_of(assert_same(data, chunks=5))
    assert {("strip_accepted", None), ("strip_done", None)} <= seen
    assert {("strip_rejected", why) for why in (
        "invalid_order", "unknown_instrument", "instrument_closed", "invalid_quantity",
        "invalid_price", "insufficient_liquidity", "limit_exceeded",
        "insufficient_funds")} <= seen


def test_the_strip_edge_flow_is_byte_identical() -> None:
    """168 and 169 legs, limits and funds exact to the micro-USDC, notionals past 64 bits;
    one batch and one line at a time."""
    data = jsonl(strip_edge_flow())
    expected = assert_same(data)
    assert expected.count(b'"strip_done"') == 6
    assert_same(data, chunks=data.count(b"\n"))


def test_strip_edge_lines_are_byte_identical() -> None:
    for line in STRIP_LINES:
        assert_same(b"\n".join([*STRIP_SETUP, line]) + b"\n")
    assert_same(b"\n".join(STRIP_SETUP + STRIP_LINES) + b"\n")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strip_flows())
def test_hypothesis_strip_flows_are_byte_identical(lines: list[bytes]) -> None:
    assert_same(jsonl(lines), chunks=3)


def test_the_replay_cli_gives_the_same_bytes_on_either_core_over_strips(tmp_path: Path) -> None:
    later = 2 * 10**18  # after the generated stream's times
    outputs = replay_on_both_cores(Generator(17, strips=True).stream(10_000)
                                   + jsonl(strip_edge_flow(later)), tmp_path)
    assert outputs["native"] == outputs["python"]
    assert outputs["python"][0].count(b'"strip_done"') > 6
