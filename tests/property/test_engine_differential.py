"""Differential tests: the real engine and the reference model must agree byte for byte.

Hypothesis draws random command sequences over a small market, delivery flows
(`tests.protocol_strategies.delivery_flows`: issuance, trading of the tokens, the close and
delivery reports) and strip flows (`strip_flows`: strips of every outcome over consecutive
hours, some closing); a seeded random stream of ~20,000 commands adds depth, seeded
delivery streams many closes, and the fixed strip edge flow the longest strips and exact
limits. After every command both implementations must have emitted
the same event bytes (`protocol.encode`) and (in the hypothesis tests) have the same final
state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from matching_engine.core import Engine
from tests.engine_helpers import MALFORMED_LINES, SECOND, T0, RandomStream
from tests.property.differential import STRIP_LINES, STRIP_SETUP, records_of
from tests.property.streams import Generator
from tests.protocol_strategies import (
    delivery_edge_flow,
    delivery_flows,
    strip_edge_flow,
    strip_flows,
)
from tests.reference_model import ReferenceEngine

ACCOUNTS = ("alice", "bob", "carol", "erin")  # erin is thin: funds run out
CLIENT_ORDER_IDS = tuple(f"c{n}" for n in range(1, 7))
# (symbol, tick, mid in ticks, maker bps, taker bps, delivery offset)
INSTRUMENTS = (
    ("FINE", "0.0001", 20_008, 3, 7, 10_000 * SECOND),
    ("COARSE", "0.05", 40, 17, 9, 90 * SECOND),  # closes during most runs
)
SYMBOLS = tuple(spec[0] for spec in INSTRUMENTS)


def setup_lines() -> list[dict[str, Any]]:
    """List the instruments and fund the accounts (erin thinly)."""
    lines: list[dict[str, Any]] = []
    for symbol, tick, _, maker, taker, delivery in INSTRUMENTS:
        lines.append({"type": "list_instrument", "ts": T0, "symbol": symbol, "gpu": "H100",
                      "region": "eu", "delivery_start": T0 + delivery, "delivery_hours": 1,
                      "tick_size": tick, "max_order_quantity": 40, "maker_fee_bps": maker,
                      "taker_fee_bps": taker})
    for account in ACCOUNTS:
        thin = account == "erin"
        lines.append({"type": "deposit", "ts": T0, "account": account, "asset": "USDC",
                      "amount": "6.0101" if thin else "2000"})
        for symbol in SYMBOLS:
            lines.append({"type": "deposit", "ts": T0, "account": account, "asset": symbol,
                          "amount": 3 if thin else 80})
    # A book to trade against: alice and carol bid below the mid, bob and carol offer above.
    for symbol, tick, mid, *_ in INSTRUMENTS:
        tick_micro = protocol.parse_micro(tick)
        for level in (1, 2, 3):
            for account, side, sign in (("alice", "buy", -1), ("bob", "sell", 1),
                                        ("carol", "buy", -1), ("carol", "sell", 1)):
                lines.append({
                    "type": "new_order", "ts": T0, "account": account,
                    "client_order_id": f"{symbol}-{side}-{level}", "instrument": symbol,
                    "side": side, "order_type": "limit", "quantity": level + 1,
                    "price": protocol.format_micro((mid + sign * level) * tick_micro),
                })
    return lines


SEEDED_ORDERS = tuple(
    (account, f"{symbol}-{side}-{level}")
    for symbol in SYMBOLS for level in (1, 2, 3)
    for account, side in (("alice", "buy"), ("bob", "sell"), ("carol", "buy"), ("carol", "sell"))
)

accounts = st.sampled_from(ACCOUNTS)
client_order_ids = st.sampled_from(CLIENT_ORDER_IDS)
instrument_index = st.integers(0, len(INSTRUMENTS) - 1)
# (account, client_order_id) of a cancel or an amend: often an order that exists.
order_keys = st.one_of(st.tuples(accounts, client_order_ids), st.sampled_from(SEEDED_ORDERS),
                       st.tuples(st.just("alice"), client_order_ids))


@st.composite
def prices(draw: st.DrawFn, index: int) -> str:
    _, tick, mid, *_ = INSTRUMENTS[index]
    tick_micro = protocol.parse_micro(tick)
    micro = (mid + draw(st.integers(-4, 4))) * tick_micro
    if draw(st.integers(0, 49)) == 0:
        micro += 1  # off the tick
    return protocol.format_micro(micro)


@st.composite
def new_orders(draw: st.DrawFn) -> dict[str, Any]:
    index = draw(instrument_index)
    order: dict[str, Any] = {
        "type": "new_order", "account": draw(accounts),
        "client_order_id": draw(client_order_ids),
        "instrument": draw(st.sampled_from((SYMBOLS[index],) * 9 + ("NOPE",))),
        "side": draw(st.sampled_from(("buy", "sell"))),
        "quantity": draw(st.sampled_from((1, 1, 2, 3, 4, 5, 7, 12) * 4 + (41, 0))),
    }
    order_type = draw(st.sampled_from(("limit", "limit", "limit", "market")))
    order["order_type"] = order_type
    if order_type == "market":
        tif = draw(st.sampled_from((None, None, "ioc", "fok", "fok") * 4 + ("gtc",)))
        if draw(st.integers(0, 29)) == 0:
            order["price"] = draw(prices(index))
    else:
        order["price"] = draw(prices(index))
        tif = draw(st.sampled_from((None, "gtc", "gtc", "ioc", "fok", "gtd", "gtd")))
        if tif in (None, "gtc", "gtd") and draw(st.integers(0, 4)) == 0:
            order["post_only"] = True
        elif draw(st.integers(0, 49)) == 0:
            order["post_only"] = True
    if tif is not None:
        order["time_in_force"] = tif
    if tif == "gtd":
        order["expire_at_offset"] = draw(st.sampled_from((1, SECOND, 20 * SECOND) * 5 + (0,)))
    elif draw(st.integers(0, 49)) == 0:
        order["expire_at_offset"] = SECOND
    stp = draw(st.sampled_from((None, "cancel_newest", "cancel_oldest", "cancel_both",
                                "decrement")))
    if stp is not None:
        order["stp"] = stp
    return order


@st.composite
def amends(draw: st.DrawFn) -> dict[str, Any]:
    account, client_order_id = draw(order_keys)
    fields: dict[str, Any] = {"type": "amend_order", "account": account,
                              "client_order_id": client_order_id}
    if draw(st.booleans()):
        fields["new_price"] = draw(prices(draw(instrument_index)))
    if draw(st.booleans()):
        fields["new_quantity"] = draw(st.integers(0, 14))
    return fields


# v2 cancel reasons (None: absent, as in a v1 log), each command's own and another's
cancels = st.builds(lambda key, why: {"type": "cancel_order", "account": key[0],
                                      "client_order_id": key[1],
                                      **({} if why is None else {"reason": why})},
                    order_keys, st.sampled_from((None, None, "user", "disconnect",
                                                 "mass_cancel")))
simple_commands = st.one_of(
    st.builds(lambda a, i, why: {"type": "mass_cancel", "account": a,
                                 **({} if i is None else {"instrument": i}),
                                 **({} if why is None else {"reason": why})},
              accounts, st.sampled_from((None, *SYMBOLS, "NOPE")),
              st.sampled_from((None, None, "mass_cancel", "disconnect", "dead_man_switch",
                               "user"))),
    st.builds(lambda a, asset, amount: {"type": "withdraw", "account": a, "asset": asset,
                                        "amount": amount},
              accounts, st.sampled_from(("USDC", *SYMBOLS, "ETH")),
              st.sampled_from(("1", "0.0001", "500", "0", "-1", "1.0000001", 2, 30))),
    st.builds(lambda a, asset, amount, deposit_id: {
        "type": "deposit", "account": a, "asset": asset, "amount": amount,
        **({} if deposit_id is None else {"deposit_id": deposit_id})},
        accounts, st.sampled_from(("USDC", *SYMBOLS, "BTC")),
        st.sampled_from(("3.5", "0", "x", 4, "4", 0)),
        st.sampled_from((None, "d1", "d2", "d3"))),
    st.just({"type": "tick"}),
    st.sampled_from(MALFORMED_LINES).map(lambda line: {"raw": line}),
)

commands = st.one_of(new_orders(), new_orders(), new_orders(), amends(), amends(), cancels,
                     simple_commands)


@st.composite
def command_streams(draw: st.DrawFn) -> list[bytes]:
    """JSON lines: the set-up, then random commands with a clock that mostly goes forward."""
    lines = [msgspec.json.encode(line) for line in setup_lines()]
    clock = T0
    for command in draw(st.lists(commands, min_size=20, max_size=80)):
        clock += draw(st.sampled_from((0, 0, 1, SECOND, 5 * SECOND, 30 * SECOND)))
        ts = clock - draw(st.sampled_from((0, 0, 0, 0, 3 * SECOND)))  # some arrive late
        lines.append(encode_command(command, ts))
    return lines


def encode_command(command: dict[str, Any], ts: int) -> bytes:
    if "raw" in command:
        line: bytes = command["raw"].replace(b"TS", str(ts).encode())
        return line
    fields = {**command, "ts": ts}
    offset = fields.pop("expire_at_offset", None)
    if offset is not None:
        fields["expire_at"] = ts + offset
    return msgspec.json.encode(fields)


def apply_both(engine: Engine, reference: ReferenceEngine, line: bytes) -> list[bytes]:
    """Apply one line to both; fail unless their events are the same bytes."""
    command = protocol.decode_command(line)
    engine_events = [protocol.encode(event) for event in engine.apply(command)]
    reference_events = [protocol.encode(event) for event in reference.apply(command)]
    assert engine_events == reference_events, (
        f"command {line.decode(errors='replace')}\n"
        f"engine:    {[e.decode() for e in engine_events]}\n"
        f"reference: {[e.decode() for e in reference_events]}")
    return engine_events


def assert_same_state(engine: Engine, reference: ReferenceEngine, where: str) -> None:
    engine_state = engine.final_state()
    reference_state = reference.final_state()
    assert json.dumps(engine_state) == json.dumps(reference_state), (
        f"final state differs {where}\nengine:    {engine_state}\nreference: {reference_state}")


def assert_agree_after_every_line(lines: Iterable[bytes]) -> None:
    """Apply each line to a fresh engine (its invariants checked) and reference model: the
    same events and the same final state after every line."""
    engine = Engine(check_invariants=True)
    reference = ReferenceEngine()
    for number, line in enumerate(lines):
        apply_both(engine, reference, line)
        assert_same_state(engine, reference, f"after command {number}: {line!r}")


def agree_over_stream(engine: Engine, lines: Iterable[bytes], state_every: int) -> list[str]:
    """Apply `lines` to `engine` and a fresh reference model, the same events after each;
    every `state_every` lines and at the end, validate the engine and compare the final
    states (a long stream compared after every line would take too long). Return the types
    of the events, in order."""
    reference = ReferenceEngine()
    types: list[str] = []
    for number, line in enumerate(lines):
        events = apply_both(engine, reference, line)
        types += [msgspec.json.decode(event)["type"] for event in events]
        if number % state_every == 0:
            engine.validate()
            assert_same_state(engine, reference, f"after command {number}")
    engine.validate()
    assert_same_state(engine, reference, "at the end")
    return types


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_streams())
def test_engine_and_reference_emit_the_same_events_and_state(lines: list[bytes]) -> None:
    assert_agree_after_every_line(lines)


def test_engine_and_reference_agree_over_a_long_seeded_stream() -> None:
    lines = RandomStream(seed=20_251_126).lines(20_000)
    assert len(agree_over_stream(Engine(check_invariants=False), lines, state_every=250)) > 20_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery_flows())
def test_engine_and_reference_agree_over_delivery_flows(lines: list[bytes]) -> None:
    assert_agree_after_every_line(lines)


def test_engine_and_reference_agree_over_the_delivery_edge_flow() -> None:
    assert_agree_after_every_line(delivery_edge_flow())


@pytest.mark.parametrize("seed", range(3))
def test_engine_and_reference_agree_over_seeded_delivery_streams(seed: int) -> None:
    """Many listings close with issues on them, among every kind of command and breakage."""
    records = records_of(Generator(31_000 + seed, delivery=True).stream(4_000))
    kinds = set(agree_over_stream(Engine(check_invariants=True), records, state_every=200))
    assert {"capacity_issued", "issue_rejected", "bond_released", "delivery_assigned",
            "report_rejected"} <= kinds


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strip_flows())
def test_engine_and_reference_agree_over_strip_flows(lines: list[bytes]) -> None:
    """Events after every command; the engine's invariants and the state after every strip
    (what it must leave as it was, or change by its trades alone) and at the end."""
    engine = Engine(check_invariants=False)
    reference = ReferenceEngine()
    for number, line in enumerate(lines):
        apply_both(engine, reference, line)
        if b"new_strip_order" in line:
            engine.validate()
            assert_same_state(engine, reference, f"after command {number}: {line!r}")
    engine.validate()
    assert_same_state(engine, reference, "at the end")


def test_engine_and_reference_agree_over_the_strip_edge_flow() -> None:
    engine = Engine(check_invariants=True)
    reference = ReferenceEngine()
    outcomes: list[str] = []
    for number, line in enumerate(strip_edge_flow()):
        events = [msgspec.json.decode(event) for event in apply_both(engine, reference, line)]
        outcomes += [event.get("reason", event["type"]) for event in events
                     if event["type"] in ("strip_accepted", "strip_rejected")]
        if number % 50 == 0:
            assert_same_state(engine, reference, f"after command {number}: {line!r}")
    assert_same_state(engine, reference, "at the end")
    assert outcomes == [
        "limit_exceeded", "strip_accepted", "insufficient_funds", "strip_accepted",
        "invalid_order", "insufficient_liquidity", "strip_accepted", "limit_exceeded",
        "insufficient_funds", "strip_accepted", "strip_accepted", "limit_exceeded",
        "invalid_price", "instrument_closed", "strip_accepted", "insufficient_liquidity",
    ]


def test_engine_and_reference_agree_over_strip_edge_lines() -> None:
    """Strips as a log may carry them: escapes, ids at 59 and 60 characters, legs of every
    JSON type, fields repeated, numbers at the edges of their types."""
    assert_agree_after_every_line(STRIP_SETUP + STRIP_LINES)


@pytest.mark.parametrize("seed", range(3))
def test_engine_and_reference_agree_over_seeded_strip_streams(seed: int) -> None:
    """Hours listed one after the other and closing, strips over runs of them, among every
    kind of command and breakage."""
    records = records_of(Generator(41_000 + seed, strips=True).stream(4_000))
    kinds = set(agree_over_stream(Engine(check_invariants=False), records, state_every=200))
    assert {"strip_accepted", "strip_done", "strip_rejected", "instrument_closed"} <= kinds
