"""Determinism and snapshots of the real engine.

- The same command stream gives the same event bytes and final state on every run.
- `Engine.restore(engine.snapshot())` and then going on is the same as never stopping:
  same events, byte for byte, and same final state, wherever the snapshot is taken,
  including mid-book with partly filled, amended and resting gtd orders.
- Taking a snapshot changes nothing in the engine it is taken from.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from matching_engine.core import Engine
from tests.engine_helpers import (
    DELIVERY,
    SECOND,
    SYMBOL,
    T0,
    RandomStream,
    amend,
    deposit,
    limit,
    listing,
    market,
    mass_cancel,
    tick,
)

Command = Any


def encoded_events(engine: Engine, command: Command) -> list[bytes]:
    return [protocol.encode(event) for event in engine.apply(command)]


def run(lines: list[bytes]) -> tuple[list[list[bytes]], Engine]:
    """Apply every line to a fresh engine; return the event bytes of each and the engine."""
    engine = Engine(check_invariants=False)
    per_command = [encoded_events(engine, protocol.decode_command(line)) for line in lines]
    return per_command, engine


def state_text(engine: Engine) -> str:
    return json.dumps(engine.final_state())


def snapshot_and_restore(engine: Engine) -> Engine:
    """Snapshot, restore, and check the restored engine starts where the original stood."""
    data = engine.snapshot()
    assert isinstance(data, bytes)
    restored = Engine.restore(data)
    restored.validate()
    assert state_text(restored) == state_text(engine)
    return restored


# --------------------------------------------------------------------- determinism


def test_two_runs_of_the_same_stream_give_identical_bytes() -> None:
    lines = list(RandomStream(seed=5_000).lines(5_000))
    first_events, first = run(lines)
    second_events, second = run(lines)
    assert first_events == second_events
    assert sum(len(events) for events in first_events) > 5_000
    assert state_text(first) == state_text(second)


def test_same_commands_through_msgpack_give_identical_bytes() -> None:
    lines = list(RandomStream(seed=77).lines(1_000))
    json_events, _ = run(lines)
    engine = Engine(check_invariants=False)
    msgpack_events = []
    for line in lines:
        command = protocol.decode_command(line)
        if not isinstance(command, protocol.MalformedCommand):
            command = protocol.decode_command(protocol.encode(command, "msgpack"), "msgpack")
        msgpack_events.append(encoded_events(engine, command))
    assert msgpack_events == json_events


# ------------------------------------------------------------------------ snapshots


def test_snapshot_changes_nothing_in_the_engine_it_is_taken_from() -> None:
    lines = list(RandomStream(seed=11).lines(2_000))
    expected, _ = run(lines)
    engine = Engine(check_invariants=True)
    for number, line in enumerate(lines):
        if number % 97 == 0:
            before = state_text(engine)
            engine.snapshot()
            assert state_text(engine) == before
        assert encoded_events(engine, protocol.decode_command(line)) == expected[number]


def test_restore_and_continue_equals_never_stopping_at_random_points() -> None:
    lines = list(RandomStream(seed=4_242).lines(4_000))
    expected, uninterrupted = run(lines)
    points = set(random.Random(4_242).sample(range(len(lines)), 60)) | {0, len(lines) - 1}
    engine = Engine(check_invariants=True)
    for number, line in enumerate(lines):
        if number in points:
            engine = snapshot_and_restore(engine)
        events = encoded_events(engine, protocol.decode_command(line))
        assert events == expected[number], f"after a restore, command {number}: {line!r}"
        engine.validate()
    assert state_text(engine) == state_text(uninterrupted)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), split=st.integers(0, 400))
def test_restore_at_any_point_of_any_stream_equals_never_stopping(seed: int, split: int
                                                                  ) -> None:
    lines = list(RandomStream(seed=seed).lines(500))
    expected, uninterrupted = run(lines)
    engine = Engine(check_invariants=True)
    for line in lines[:split]:
        engine.apply(protocol.decode_command(line))
    engine = snapshot_and_restore(engine)
    continued = [encoded_events(engine, protocol.decode_command(line)) for line in lines[split:]]
    assert continued == expected[split:]
    engine.validate()
    assert state_text(engine) == state_text(uninterrupted)


def mid_book_prefix() -> list[Command]:
    """A book with partly filled, amended, decremented and resting gtd orders on two books."""
    other = "A100-US-1"
    commands = [listing(), listing(other, delivery_start=DELIVERY + 600 * SECOND,
                                   tick_size="0.0001", maker_fee_bps=3, taker_fee_bps=7)]
    for account in ("alice", "bob", "carol"):
        commands += [deposit(account, "USDC", "5000", deposit_id=f"{account}-usdc"),
                     deposit(account, SYMBOL, 50), deposit(account, other, 50)]
    at = T0 + SECOND
    commands += [
        limit("alice", "a1", "buy", "1.98", 5, ts=at),
        limit("alice", "a2", "buy", "1.99", 4, ts=at, time_in_force="gtd",
              expire_at=T0 + 30 * SECOND),
        limit("carol", "c1", "buy", "1.99", 6, ts=at, time_in_force="gtd",
              expire_at=T0 + 10 * SECOND),
        limit("bob", "b1", "sell", "2.02", 7, ts=at, time_in_force="gtd",
              expire_at=T0 + 10 * SECOND),
        limit("bob", "b2", "sell", "2.01", 3, ts=at, post_only=True),
        limit("carol", "c2", "sell", "2.01", 5, ts=at),
        limit("bob", "b3", "sell", "1.99", 2, ts=at),  # partly fills alice's a2
        amend("alice", "a1", ts=at, new_price="1.99"),  # loses priority
        amend("carol", "c2", ts=at, new_quantity=4),  # keeps priority
        limit("alice", "a3", "sell", "2", 2, ts=at),
        limit("alice", "a4", "buy", "2.01", 1, ts=at, stp="decrement"),  # decrements a3
        limit("bob", "o1", "sell", "3.0001", 9, ts=at, instrument=other,
              time_in_force="gtd", expire_at=T0 + 20 * SECOND),
        limit("carol", "o2", "buy", "2.9999", 9, ts=at, instrument=other),
        market("alice", "o3", "buy", 2, ts=at, instrument=other),
    ]
    return commands


def mid_book_suffix() -> list[Command]:
    later = T0 + 5 * SECOND
    return [
        limit("carol", "c3", "buy", "2", 1, ts=later),
        market("carol", "c4", "buy", 4, ts=later),
        amend("bob", "b1", ts=later, new_price="2.01"),
        tick(T0 + 10 * SECOND),  # expires c1 and b1
        market("bob", "b4", "sell", 20, ts=T0 + 11 * SECOND),
        limit("alice", "a5", "buy", "2.5", 3, ts=T0 + 12 * SECOND),
        tick(T0 + 20 * SECOND),  # expires o1
        mass_cancel("carol", ts=T0 + 21 * SECOND),
        limit("bob", "b5", "sell", "2.9999", 1, ts=T0 + 22 * SECOND, instrument="A100-US-1"),
        tick(DELIVERY),  # closes SYMBOL
        limit("alice", "a6", "buy", "3", 1, ts=DELIVERY, instrument="A100-US-1"),
        tick(DELIVERY + 600 * SECOND),  # closes the other
    ]


def test_restore_mid_book_with_resting_gtd_orders_continues_identically() -> None:
    prefix, suffix = mid_book_prefix(), mid_book_suffix()
    never_stopped = Engine(check_invariants=True)
    for command in prefix:
        never_stopped.apply(command)
    open_orders = never_stopped.final_state()["open_orders"]
    assert len(open_orders) >= 6
    assert any(o["remaining_quantity"] < o["quantity"] for o in open_orders)
    expected = [encoded_events(never_stopped, command) for command in suffix]

    stopped = Engine(check_invariants=True)
    for command in prefix:
        stopped.apply(command)
    restored = snapshot_and_restore(stopped)
    continued = [encoded_events(restored, command) for command in suffix]
    assert continued == expected
    assert state_text(restored) == state_text(never_stopped)

    kinds = [(event["type"], event.get("reason"))
             for events in expected for event in map(msgspec.json.decode, events)]
    assert kinds.count(("order_canceled", "expired")) >= 3
    assert ("trade", None) in kinds
    assert kinds.count(("instrument_closed", None)) == 2


def test_restore_of_a_restored_engine_continues_identically() -> None:
    prefix, suffix = mid_book_prefix(), mid_book_suffix()
    never_stopped = Engine(check_invariants=True)
    for command in prefix:
        never_stopped.apply(command)
    expected = [encoded_events(never_stopped, command) for command in suffix]

    engine = Engine(check_invariants=True)
    for command in prefix:
        engine.apply(command)
    engine = snapshot_and_restore(snapshot_and_restore(engine))
    continued = []
    for command in suffix:
        continued.append(encoded_events(engine, command))
        engine = snapshot_and_restore(engine)
    assert continued == expected
