"""Engine snapshots of the two cores, byte for byte.

The Rust core writes and reads the snapshot format of `matching_engine.core.snapshot`
itself (`snapshot.rs` in matching_engine/native). After the same commands both cores write
the same bytes (maps in the order first filled, the expiry heap in `heapq`'s layout with
the entries of closed orders); each restores the other's snapshot; restored, both go on
to the same events and the same snapshots. The same holds through Delivery (v2) and Strip
orders (v2): seeded streams and hypothesis flows, cut and restored anywhere, in either core,
any number of times, go on as if never stopped; and a rejected strip leaves the snapshot as
it was, byte for byte, in both cores (but for `seq`, which its rejection takes). The native
core refuses a damaged snapshot with ValueError, in its own words, naming the field or the
fault.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching_engine.core.snapshot import decode_snapshot
from matching_engine.cores import Core, NativeCore, PythonCore
from tests.property.differential import (
    STRIP_LINES,
    STRIP_SETUP,
    commands,
    funded_prefix,
    gtd_orders_then_expiry,
    native_engine,
)
from tests.property.streams import SECOND, T0, Generator
from tests.protocol_strategies import (
    delivery_edge_flow,
    delivery_flows,
    strip_edge_flow,
    strip_flows,
)


def records_of(data: bytes) -> list[bytes]:
    """The command records of JSON Lines (blank lines dropped, trailing CRs stripped)."""
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip(b" \t\r\x0b\x0c")]


def snapshot_or_overflow(core: Core) -> bytes | type[OverflowError]:
    """The core's snapshot, or OverflowError when an amount is beyond what it holds."""
    try:
        return core.snapshot()
    except OverflowError:
        return OverflowError


def generated(seed: int, count: int) -> list[bytes]:
    return records_of(Generator(seed).stream(count)) + gtd_orders_then_expiry()


# ------------------------------------------------------------------ the same bytes


@pytest.mark.parametrize("seed", range(8))
def test_both_cores_write_the_same_snapshot_bytes_after_every_batch(seed: int) -> None:
    native_engine()
    records = generated(9_000 + seed, 2_500)
    python, native = PythonCore(), NativeCore()
    for start in range(0, len(records), 211):
        batch = records[start:start + 211]
        assert native.apply_records(batch) == python.apply_records(batch)
        assert snapshot_or_overflow(native) == snapshot_or_overflow(python), start


def test_expiries_of_closed_orders_are_kept_in_the_heap_order_of_the_python_core() -> None:
    native_engine()
    records = [
        b'{"type":"list_instrument","ts":%d,"symbol":"G-1","gpu":"H100","region":"eu",'
        b'"delivery_start":%d,"delivery_hours":1,"tick_size":"0.01",'
        b'"max_order_quantity":100,"maker_fee_bps":2,"taker_fee_bps":5}' % (T0, T0 + 99 * SECOND),
        b'{"type":"deposit","ts":%d,"account":"g","asset":"USDC","amount":"1000"}' % T0,
    ]
    for index in range(20):
        records.append(
            b'{"type":"new_order","ts":%d,"account":"g","client_order_id":"o%d",'
            b'"instrument":"G-1","side":"buy","order_type":"limit","price":"0.%02d",'
            b'"quantity":1,"time_in_force":"gtd","expire_at":%d}'
            % (T0 + index, index, 10 + index, T0 + (10 + index * 7 % 13) * SECOND))
        if index % 3 == 0:
            records.append(b'{"type":"cancel_order","ts":%d,"account":"g","client_order_id":'
                           b'"o%d"}' % (T0 + index, index))
    python, native = PythonCore(), NativeCore()
    for tick_at in (0, 12, 16, 30):
        records.append(b'{"type":"tick","ts":%d}' % (T0 + tick_at * SECOND))
        assert native.apply_records(records) == python.apply_records(records)
        records = []
        snapshot = python.snapshot()
        assert native.snapshot() == snapshot, tick_at
        if tick_at == 0:
            expiries = decode_snapshot(snapshot).expiries
            assert len(expiries) == 20  # the canceled orders' entries included
            assert [entry[1] for entry in expiries] != sorted(entry[1] for entry in expiries)


def test_an_amount_beyond_the_format_overflows_in_both_cores() -> None:
    native_engine()
    deposit = b'{"type":"deposit","ts":1,"account":"whale","asset":"USDC","amount":"1000000000000"}'
    python, native = PythonCore(), NativeCore()
    for count in (18, 1):  # 18 x 1e18 micro-USDC fits in 2^64 - 1; 19 do not
        records = [deposit] * count
        assert native.apply_records(records) == python.apply_records(records)
    with pytest.raises(OverflowError):
        python.snapshot()
    with pytest.raises(OverflowError, match="beyond"):
        native.snapshot()


# ---------------------------------------------------------- restored in the other core


def restored_everywhere(snapshots: dict[str, bytes]) -> dict[str, Core]:
    """Each snapshot restored in each core, by (taker, restorer)."""
    return {f"{taken_by} in {core.name}": core.restore(snapshot)
            for taken_by, snapshot in snapshots.items() for core in (PythonCore, NativeCore)}


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_restores_in_either_core_and_both_go_on_to_the_same_bytes(seed: int) -> None:
    native_engine()
    records = generated(9_500 + seed, 3_000)
    cut = len(records) * (seed + 2) // 9 if seed else len(records) - 1
    assert_restored_cores_go_on_alike(records, cut)


def assert_restored_cores_go_on_alike(records: list[bytes], cut: int) -> None:
    """Both cores snapshot the same bytes after `records[:cut]`; each snapshot, restored in
    each core, goes on to the events and snapshot of the core that never stopped."""
    python, native = PythonCore(), NativeCore()
    assert native.apply_records(records[:cut]) == python.apply_records(records[:cut])
    snapshots = {"python": python.snapshot(), "native": native.snapshot()}
    assert snapshots["native"] == snapshots["python"]
    restored = restored_everywhere(snapshots)
    for name, core in restored.items():
        assert core.snapshot() == snapshots["python"], name
        assert core.seq == python.seq
    expected = python.apply_records(records[cut:])
    final = snapshot_or_overflow(python)
    for name, core in restored.items():
        assert core.apply_records(records[cut:]) == expected, name
        assert snapshot_or_overflow(core) == final, name
        assert core.validate() is None, name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=40), st.integers(min_value=0, max_value=40))
def test_hypothesis_streams_snapshot_and_restore_alike(
    stream: list[dict[str, Any]], cut: int,
) -> None:
    records = records_of(funded_prefix()) + [msgspec.json.encode(c) for c in stream]
    cut = len(records) - len(stream) + min(cut, len(stream))
    python, native = PythonCore(), NativeCore()
    assert native.apply_records(records[:cut]) == python.apply_records(records[:cut])
    snapshot = python.snapshot()
    assert native.snapshot() == snapshot
    expected = python.apply_records(records[cut:])
    for name, core in restored_everywhere({"python": snapshot}).items():
        assert core.apply_records(records[cut:]) == expected, name
        assert core.snapshot() == python.snapshot(), name


# ---------------------------------------------------------------------- delivery (v2)


def delivery_records(seed: int, count: int) -> list[bytes]:
    """A seeded delivery stream, then the delivery edge flow after its times."""
    later = 2 * 10**18
    return records_of(Generator(seed, delivery=True).stream(count)) + delivery_edge_flow(later)


@pytest.mark.parametrize("seed", range(4))
def test_both_cores_write_the_same_snapshot_bytes_through_delivery_streams(seed: int) -> None:
    native_engine()
    records = delivery_records(9_200 + seed, 2_500)
    python, native = PythonCore(), NativeCore()
    for start in range(0, len(records), 97):
        batch = records[start:start + 97]
        assert native.apply_records(batch) == python.apply_records(batch)
        assert snapshot_or_overflow(native) == snapshot_or_overflow(python), start
    document = decode_snapshot(python.snapshot())
    assert document.issues and document.deliveries


@pytest.mark.parametrize("seed", range(4))
def test_a_delivery_snapshot_restores_in_either_core_and_goes_on_alike(seed: int) -> None:
    native_engine()
    records = delivery_records(9_600 + seed, 3_000)
    assert_restored_cores_go_on_alike(records, len(records) * (seed + 2) // 7)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery_flows(), st.data())
def test_hypothesis_delivery_flows_restored_anywhere_go_on_as_never_stopped(
    lines: list[bytes], data: st.DataObject,
) -> None:
    assert_cut_anywhere_goes_on_as_never_stopped(lines, data)


def assert_cut_anywhere_goes_on_as_never_stopped(lines: list[bytes],
                                                 data: st.DataObject) -> None:
    """At each cut both cores snapshot the same bytes and trade places: the Python core goes
    on from the native core's snapshot and the native core from the Python core's."""
    native_engine()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(lines)), min_size=1, max_size=3)))
    uninterrupted = PythonCore()
    expected = uninterrupted.apply_records(lines)
    python: Core = PythonCore()
    native: Core = NativeCore()
    events: list[bytes] = []
    done = 0
    for cut in [*cuts, len(lines)]:
        segment = python.apply_records(lines[done:cut])
        assert native.apply_records(lines[done:cut]) == segment
        events += segment
        snapshots = {"python": python.snapshot(), "native": native.snapshot()}
        assert snapshots["native"] == snapshots["python"], cut
        python = PythonCore.restore(snapshots["native"])
        native = NativeCore.restore(snapshots["python"])
        done = cut
    assert events == expected
    assert python.snapshot() == uninterrupted.snapshot()
    assert native.final_state() == python.final_state() == uninterrupted.final_state()


# ------------------------------------------------------------------- strip orders (v2)


def strip_records(seed: int, count: int) -> list[bytes]:
    """A seeded strip stream, then the strip edge flow after its times."""
    later = 2 * 10**18
    return records_of(Generator(seed, strips=True).stream(count)) + strip_edge_flow(later)


@pytest.mark.parametrize("seed", range(4))
def test_both_cores_write_the_same_snapshot_bytes_through_strip_streams(seed: int) -> None:
    native_engine()
    records = strip_records(9_300 + seed, 2_500)
    python, native = PythonCore(), NativeCore()
    for start in range(0, len(records), 97):
        batch = records[start:start + 97]
        assert native.apply_records(batch) == python.apply_records(batch)
        assert snapshot_or_overflow(native) == snapshot_or_overflow(python), start


@pytest.mark.parametrize("seed", range(4))
def test_a_strip_snapshot_restores_in_either_core_and_goes_on_alike(seed: int) -> None:
    native_engine()
    records = strip_records(9_700 + seed, 3_000)
    assert_restored_cores_go_on_alike(records, len(records) * (seed + 2) // 7)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strip_flows(), st.data())
def test_hypothesis_strip_flows_restored_anywhere_go_on_as_never_stopped(
    lines: list[bytes], data: st.DataObject,
) -> None:
    assert_cut_anywhere_goes_on_as_never_stopped(lines, data)


def ts_of(line: bytes) -> int | None:
    """The line's ts when it has a valid one (else the line moves no time)."""
    try:
        ts = msgspec.json.decode(line).get("ts")
    except (msgspec.DecodeError, AttributeError):
        return None
    return ts if type(ts) is int and 0 <= ts < 2**63 else None


def with_seq(snapshot: bytes, seq: int) -> bytes:
    """The snapshot with `seq` replaced, every other byte in its place."""
    document = msgspec.msgpack.decode(snapshot)
    document["seq"] = seq
    return msgspec.msgpack.encode(document)


def assert_rejected_strips_change_nothing(core_type: type[Core], lines: list[bytes]) -> int:
    """Run `lines` through a fresh core, each strip after a tick at its ts (so that the
    strip itself moves no time); a strip refused with one event must leave the snapshot as
    it was but for `seq`, one further. Return how many strips were refused."""
    core = core_type()
    refused = 0
    for line in lines:
        if b"new_strip_order" not in line:
            core.apply_records([line])
            continue
        ts = ts_of(line)
        if ts is not None:
            core.apply_records([b'{"type":"tick","ts":%d}' % ts])
        before = core.snapshot()
        events = [msgspec.json.decode(event) for event in core.apply_records([line])]
        if [event["type"] for event in events] in (["strip_rejected"], ["command_rejected"]):
            after = core.snapshot()
            assert decode_snapshot(after).seq == decode_snapshot(before).seq + 1
            assert with_seq(after, 0) == with_seq(before, 0), (core.name, line, events)
            refused += 1
    return refused


@pytest.mark.parametrize("core_type", [PythonCore, NativeCore], ids=["python", "native"])
def test_a_rejected_strip_leaves_the_state_byte_identical_at_the_edges(
    core_type: type[Core],
) -> None:
    native_engine()
    refused = assert_rejected_strips_change_nothing(core_type, strip_edge_flow())
    refused += assert_rejected_strips_change_nothing(core_type, STRIP_SETUP + STRIP_LINES)
    assert refused >= 40


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strip_flows())
def test_a_rejected_strip_leaves_the_state_byte_identical(lines: list[bytes]) -> None:
    """In both cores, whatever refused it: malformed, a check, or the simulation."""
    native_engine()
    for core_type in (PythonCore, NativeCore):
        assert_rejected_strips_change_nothing(core_type, lines)


# ---------------------------------------------------------------- damaged snapshots


@pytest.fixture(scope="module")
def good_snapshot() -> bytes:
    native_engine()
    core = PythonCore()
    core.apply_records(records_of(Generator(9_900).stream(1_000)))  # orders resting
    return core.snapshot()


def edited(data: bytes, edit: Any) -> bytes:
    """The snapshot with `edit` applied to its generic (dict and list) form."""
    document = msgspec.msgpack.decode(data)
    edit(document)
    return msgspec.msgpack.encode(document)


def first_order(document: dict[str, Any]) -> list[Any]:
    return next(side[0] for instrument in document["instruments"]
                for side in (instrument["bids"], instrument["asks"]) if side)


DAMAGES: dict[str, tuple[Any, str]] = {
    "cut short": (lambda data: data[:-1], r"snapshot deliveries\S*: the data is cut short"),
    "bytes after its end": (lambda data: data + b"\xc0\xc0", "2 bytes follow the end"),
    "another version": (
        lambda data: edited(data, lambda d: d.update(version=3)),
        "snapshot version: 3, where this engine reads 1 to 2"),
    "a field missing": (
        lambda data: edited(data, lambda d: d.pop("supply")),
        "snapshot: the field supply is missing"),
    "a field of the wrong type": (
        lambda data: edited(data, lambda d: d.update(seq="7")),
        "snapshot seq: expected an integer, found a string"),
    "an order of the wrong length": (
        lambda data: edited(data, lambda d: first_order(d).append(1)),
        r"snapshot instruments\[\d+\]\.(bids|asks)\[0\]: an array of 12 items where 11 belong"),
    "an unknown time in force": (
        lambda data: edited(data, lambda d: first_order(d).__setitem__(7, "forever")),
        r"\[0\]\.time_in_force: unknown name \"forever\""),
    "a price out of range": (
        lambda data: edited(data, lambda d: first_order(d).__setitem__(4, 2**64 - 1)),
        r"snapshot instruments\[\d+\]\.(bids|asks)\[0\]\.price: 18446744073709551615 is "
        "out of range"),
    "an order on the wrong side": (
        lambda data: edited(data, lambda d: first_order(d).__setitem__(3, not first_order(d)[3])),
        r"lists a (buy|sell) order \d+ among its (bids|asks)"),
    "a balance of an unknown asset": (
        lambda data: edited(data, lambda d: next(iter(d["balances"].values())).update(NOPE=[1, 0])),
        "asset \"NOPE\" is neither USDC nor a listed instrument"),
    "not a snapshot at all": (lambda data: b"\x93\x01\x02\x03", "expected a map, found an array"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_the_native_core_refuses_a_damaged_snapshot_saying_what_is_wrong(
    good_snapshot: bytes, damage: str,
) -> None:
    damaged, words = DAMAGES[damage]
    NativeCore.restore(good_snapshot)  # the snapshot is good before the damage
    with pytest.raises(ValueError) as refused:
        NativeCore.restore(damaged(good_snapshot))
    assert refused.type is ValueError  # the native core's own, not a decoder's subclass
    assert re.search(words, str(refused.value)), str(refused.value)
