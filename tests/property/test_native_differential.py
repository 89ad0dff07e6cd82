"""The native core (gpux_native, Rust) against the Python core over v1 logs: byte-identical
events.

Every test feeds the same JSON Lines to `matching_engine.replay.replay_lines` with the
Python `Engine` and to `gpux_native.NativeEngine.apply_batch`, then asserts the same output
bytes and an equal final state (`tests/property/differential.py`). The streams come from the
benchmark workload, from a seeded generator that covers every command, time in force,
self-trade mode, expiry, instrument close, deposit and withdrawal rule, and from a mutator
that breaks valid lines the ways a log can be broken (types, duplicates, unknown fields,
escapes, bytes, nesting) (`tests/property/streams.py`). Snapshots of either core restore in
either, and the replay CLI gives the same bytes on both. Delivery and strip orders (v2) have
modules of their own: `test_native_differential_delivery.py`, `..._strips.py`.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching_engine import replay
from matching_engine.workload import Workload
from protocol import encode
from protocol.codec import NESTING_MAX
from tests.property.differential import (
    assert_same,
    commands,
    funded_prefix,
    gtd_orders_then_expiry,
    jsonl,
    lines_of,
    native_engine,
    python_replay,
    records_of,
    replay_on_both_cores,
)
from tests.property.streams import Generator


def test_native_module_is_built() -> None:
    native_engine()


def test_workload_flow_is_byte_identical() -> None:
    workload = Workload(instruments=8, accounts=64, seed=11)
    data = lines_of(workload.setup() + workload.flow(20_000))
    assert_same(data)


@pytest.mark.parametrize("seed", range(12))
def test_generated_streams_are_byte_identical(seed: int) -> None:
    assert_same(Generator(seed).stream(3_000), chunks=1 + seed % 4)


def test_seeded_100k_command_run_is_byte_identical() -> None:
    data = Generator(20_240_601).stream(100_000)
    events = assert_same(data, chunks=7)
    kinds = {json.loads(line)["type"] for line in events.splitlines()}
    # The run exercises every event type of the protocol.
    assert kinds == {
        "instrument_listed", "instrument_closed", "deposited", "withdrawn",
        "withdrawal_rejected", "order_accepted", "order_rejected", "trade", "order_canceled",
        "order_amended", "order_reduced", "cancel_rejected", "amend_rejected",
        "deposit_rejected", "command_rejected",
    }
    reasons = {json.loads(line).get("reason") for line in events.splitlines()}
    assert {"stp", "fok", "ioc", "market", "expired", "instrument_closed", "amended",
            "mass_cancel", "user", "disconnect", "dead_man_switch", "invalid_command",
            "post_only_would_cross", "insufficient_funds", "duplicate_deposit",
            "duplicate_client_order_id", "duplicate_instrument",
            "invalid_price", "invalid_quantity", "unknown_asset", "invalid_amount"} <= reasons


# The sha256 of the events the Python core gave for Generator(20_240_601).stream(20_000)
# before Delivery (v2) existed (commit cbc32c1): a v1 log replays to the same bytes.
V1_EVENTS_SHA256 = "e9eac0494f98d79586db1530e5be9cadc8d973d846705296978ba8f0790e211d"


def test_a_v1_log_replays_to_the_bytes_it_gave_before_delivery() -> None:
    events = assert_same(Generator(20_240_601).stream(20_000))
    assert hashlib.sha256(events).hexdigest() == V1_EVENTS_SHA256


def test_workload_100k_commands_is_byte_identical() -> None:
    workload = Workload(instruments=8, accounts=64, seed=7)
    assert_same(lines_of(workload.setup() + workload.flow(100_000)), chunks=3)


# ------------------------------------------------------------------------- lines at the edges

EDGE_LINES: list[bytes] = [
    b'{"type":"tick","ts":1,"x":1e400}',
    b'{"type":"tick","ts":1,"x":-1e400}',
    b'{"type":"tick","ts":1,"x":1.7976931348623157e308}',
    b'{"type":"tick","ts":1,"x":1.7976931348623159e308}',
    b'{"type":"tick","ts":1,"x":0.' + b"0" * 400 + b'1e400}',
    b'{"type":"tick","ts":1,"x":' + b"9" * 309 + b'.0}',
    b'{"type":"tick","ts":1,"x":' + b"9" * 308 + b'.0}',
    b'{"type":"tick","ts":1,"x":1e99999999}',
    b'{"type":"tick","ts":1,"x":1e-99999999}',
    b'{"type":"tick","ts":1,"x":' + b"1" * 4300 + b"}",
    b'{"type":"tick","ts":1,"x":' + b"1" * 4301 + b"}",
    b'{"type":"tick","ts":1,"x":-' + b"1" * 4299 + b"}",
    b'{"type":"tick","ts":1,"x":-' + b"1" * 4300 + b"}",
    b'{"type":"tick","ts":1,"ts":2}',
    b'{"ts":3,"type":"tick","type":"tick"}',
    b'{"ts":4,"type":"tick","type":"deposit"}',
    b'{"type":"tick","ts":5,"type":1}',
    b'{"type":"tick","ts":6,"type":"tick","type":null}',
    b'{"type":"tick","ts":"7","ts":7}',
    b'{"type":"tick","ts":7.0}',
    b'{"type":"tick","ts":01}',
    b'{"type":"tick","ts":-0}',
    b'{"type":"tick","ts":NaN}',
    b'{"type":"tick","ts":Infinity}',
    b'{"type":"tick","ts":9223372036854775807}',
    b'{"type":"tick","ts":9223372036854775808}',
    b'{"type":"tick","ts":18446744073709551616}',
    b'{"type":"tick","ts":true}',
    b' \t{"type":"tick","ts":8} \r\t',
    b'{"type":"tick","ts":9}\x0c',
    b'\xef\xbb\xbf{"type":"tick","ts":10}',
    b'{"type":"t\xffick","ts":11}',
    b'{"type":"tick","ts":12,"q":"a\x01b"}',
    b'{"type":"tick","ts":13,"q":"a\x7fb"}',
    b'{"type":"list_instrument","ts":20,"symbol":"X-1","gpu":"' + "é".encode() * 64
    + b'","region":"r\\u00e9\\ud83d\\ude00\\u0001\\u001f\\"\\\\\\/\\b\\f\\n\\r\\t",'
    b'"delivery_start":1000000000000,"delivery_hours":1,"tick_size":"0.010","max_order_quantity":10,'
    b'"maker_fee_bps":1,"taker_fee_bps":2}',
    b'{"type":"list_instrument","ts":20,"symbol":"X-2","gpu":"' + "é".encode() * 65
    + b'","region":"r","delivery_start":1000000000000,"delivery_hours":1,"tick_size":"1",'
    b'"max_order_quantity":10,"maker_fee_bps":1,"taker_fee_bps":2}',
    b'{"type":"deposit","ts":21,"account":"a","asset":"USDC","amount":100000000000000000000000}',
    b'{"type":"deposit","ts":21,"account":"a","asset":"X-1","amount":-' + b"7" * 60 + b"}",
    b'{"type":"deposit","ts":21,"account":"a","asset":"X-1","amount":-0}',
    b'{"type":"deposit","ts":21,"account":"a","asset":"X\\u0001\\u007f\\u00e9\\ud83d\\ude00",'
    b'"amount":1}',
    b'{"type":"deposit","ts":22,"account":"a","asset":"\\ud800","amount":1}',
    b'{"type":"deposit","ts":22,"account":"a","asset":"\\udc00x","amount":1}',
    b'{"type":"deposit","ts":22,"account":"a","asset":"\\ud800\\u0041","amount":1}',
    b'{"type":"deposit","ts":22,"account":"a","asset":"\xed\xa0\x80","amount":1}',
    b'{"type":"deposit","ts":23,"account":"a","asset":"USDC","amount":"1",'
    b'"deposit_id":"\\/\\b\\f\\n\\r\\t\\"\\\\\x7f"}',
    b'{"type":"deposit","ts":23,"account":"a","asset":"USDC","amount":"1","deposit_id":null}',
    b'{"type":"deposit","ts":23,"account":"\\u0061","asset":"USDC","amount":"1.000000"}',
    b'{"type":"deposit","ts":23,"account":"a\\n","asset":"USDC","amount":"1"}',
    b'{"type":"deposit","ts":23,"account":"' + b"a" * 65 + b'","asset":"USDC","amount":"1"}',
    b'{"type":"deposit","ts":23,"account":"a","asset":"X-1","amount":"0000000000000000001"}',
    b'{"type":"deposit","ts":23,"account":"a","asset":"X-1","amount":"00000000000000000001"}',
    b'{"type":"deposit","ts":23,"account":"a","asset":"X-1","amount":1000000000000000000}',
    b'{"type":"withdraw","ts":24,"account":"a","asset":"X-1","amount":"1"}',
    b'{"type":"withdraw","ts":24,"account":"a","asset":"USDC","amount":"1e3"}',
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"side":"buy","order_type":"limit","price":"1","quantity":1,"post_only":null}',
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"side":"buy","order_type":"limit","price":"0.01","quantity":' + b"9" * 50 + b"}",
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"side":"buy","order_type":"limit","price":"0.01","quantity":1.0}',
    # Nesting is capped at protocol.codec.NESTING_MAX (see test_nesting_cap_is_the_same).
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"x":' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"x":{"y":' + b"[{}," * 100 + b"1" + b"]" * 100 + b"}}",
    b'{"type":"new_order","ts":30,"account":"a","client_order_id":"b","instrument":"X-1",'
    b'"x":' + b"[" * 1500 + b"]" * 1500 + b"}",
    b"[" * 1500 + b"]" * 1500,
    b'{"type":"new_order","ts":31,"account":"a","client_order_id":"c","instrument":"X-1"}',
    b'{"type":"amend_order","ts":32,"account":"a","client_order_id":"c","new_price":1}',
    b'{"type":"cancel_order","ts":33,"account":"a","client_order_id":"c","x":1}',
    b'{"type":"mass_cancel","ts":34,"account":"a","instrument":"NOPE"}',
    b'{"type":"mass_cancel","ts":34,"account":"a","instrument":null}',
    b'{"type":"tick","t\\u0073":36}',
    b'{"\\u0074ype":"tic\\u006b","ts":37}',
    b'{"ts":38,"\\u0074ype":"tick","type":"tick"}',
    b'{"type":"cancel_order","ts":39,"account":"\\u0061","client_order_id":"\\/x"}',
    b'{"type":"nope","ts":35}',
    b'{"type":"","ts":35}',
    b'{"type":"a\\"b\\u0000","ts":35}',
    b"[1,2]",
    b'"tick"',
    b"{}",
    b"{,}",
    b'{"a":1,}',
    b'{"a" 1}',
    b'{"a":[1,]}',
    b'{"a":[,1]}',
    b'{"a":tru}',
    b'{"a":"\\x"}',
    b'{"a":"\\u12"}',
    b'{"a":-}',
    b'{"a":1.}',
    b'{"a":.5}',
    b'{"a":+1}',
    b'{"a":1e}',
    b'{"a":1e+}',
    b'{"a":1}x',
    b'{"a":1}{}',
    b"\x00",
    b"\r{}\r",
    b"\x0b",
    b"",
]


def test_edge_lines_are_byte_identical() -> None:
    for line in EDGE_LINES:
        assert_same(line + b"\n")
    assert_same(b"\n".join(EDGE_LINES) + b"\n")


def test_nesting_cap_is_the_same(tmp_path: Any) -> None:
    """Both cores refuse nesting past NESTING_MAX the same way, through the replay CLI too,
    whatever the interpreter's recursion limit."""
    lines = [
        b'{"type":"new_order","ts":5,"account":"a","client_order_id":"d%d","x":' % depth
        + b"[" * depth + b"]" * depth + b"}"
        for depth in range(NESTING_MAX - 3, NESTING_MAX + 3)
    ] + [b"[" * depth + b"]" * depth for depth in range(NESTING_MAX - 1, NESTING_MAX + 2)]
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    replay = subprocess.run(
        [sys.executable, "-m", "matching_engine.replay", str(path), "--core", "python"],
        capture_output=True, check=True, timeout=120,
    )
    assert native_engine().apply_batch(path.read_bytes()) == replay.stdout
    assert_same(path.read_bytes())
    salvaged = [line for line in replay.stdout.splitlines() if b"order_rejected" in line]
    assert len(salvaged) == 3, "up to the cap the order is salvaged; deeper, nothing is"


def test_batches_split_anywhere_at_line_ends_give_the_same_bytes() -> None:
    data = Generator(5).stream(2_000)
    expected, _, _ = python_replay(data)
    lines = data.splitlines(keepends=True)
    rng = random.Random(3)
    native = native_engine()
    out, start = [], 0
    while start < len(lines):
        end = start + rng.randint(0, 40)
        out.append(native.apply_batch(b"".join(lines[start:end])))
        start = end
    assert b"".join(out) == expected


# -------------------------------------------------------------------------- hypothesis


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=40))
def test_hypothesis_command_streams_are_byte_identical(stream: list[dict[str, Any]]) -> None:
    data = funded_prefix() + b"".join(msgspec.json.encode(c) + b"\n" for c in stream)
    assert_same(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.text(max_size=30).map(str.encode), max_size=10))
def test_hypothesis_garbage_lines_are_byte_identical(lines: list[bytes]) -> None:
    assert_same(funded_prefix() + b"\n".join(lines))


# ----------------------------------------------------------------- snapshots across cores


def snapshot_fields(data: bytes) -> dict[str, Any]:
    """A snapshot's fields; expiries as a sorted set, since a core may keep stale ones."""
    from matching_engine.core.snapshot import decode_snapshot

    snapshot = decode_snapshot(data)
    fields = {name: getattr(snapshot, name) for name in snapshot.__struct_fields__}
    fields.pop("expiries")
    return fields


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_of_either_core_restores_in_either_and_goes_on_identically(
    seed: int,
) -> None:
    from matching_engine.cores import NativeCore, PythonCore

    native_engine()
    data = Generator(7_000 + seed).stream(4_000)
    records = records_of(data) + gtd_orders_then_expiry()
    cut = len(records) * (seed + 2) // 9 if seed else len(records) - 1
    uninterrupted = PythonCore()
    uninterrupted.apply_records(records[:cut])
    expected = uninterrupted.apply_records(records[cut:])
    python, native = PythonCore(), NativeCore()
    assert native.apply_records(records[:cut]) == python.apply_records(records[:cut])
    snapshots = {"python": python.snapshot(), "native": native.snapshot()}
    assert snapshot_fields(snapshots["native"]) == snapshot_fields(snapshots["python"])
    for taken_by, snapshot in snapshots.items():
        for core in (PythonCore, NativeCore):
            restored = core.restore(snapshot)
            assert restored.seq == python.seq
            assert restored.apply_records(records[cut:]) == expected, (taken_by, core.name)


def test_native_restore_names_what_is_wrong_in_a_snapshot() -> None:
    from matching_engine.core.snapshot import decode_snapshot, encode_snapshot
    from matching_engine.cores import NativeCore, PythonCore

    native_engine()
    workload = Workload(instruments=2, accounts=6, seed=5)
    python = PythonCore()
    python.apply_records([encode(c) for c in workload.setup() + workload.flow(500)])
    snapshot = decode_snapshot(python.snapshot())
    account = next(iter(snapshot.balances))
    unknown_asset = msgspec.structs.replace(
        snapshot, balances={**snapshot.balances, account: {"NOPE": (1, 0)}})
    with pytest.raises(ValueError, match="NOPE"):
        NativeCore.restore(encode_snapshot(unknown_asset))
    no_holds = msgspec.structs.replace(snapshot, balances={
        name: {asset: (available + held, 0) for asset, (available, held) in assets.items()}
        for name, assets in snapshot.balances.items()})
    with pytest.raises(ValueError, match="hold|held"):
        NativeCore.restore(encode_snapshot(no_holds))


def test_the_replay_cli_gives_the_same_bytes_on_either_core(tmp_path: Path) -> None:
    """The audit tool: events and final state byte for byte, whichever core replays."""
    outputs = replay_on_both_cores(Generator(11).stream(20_000) + jsonl(EDGE_LINES), tmp_path)
    assert outputs["native"][0].count(b"\n") > 20_000
    assert outputs["native"] == outputs["python"]


def test_native_replay_reads_blocks_cut_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "NATIVE_BLOCK_BYTES", 97)
    data = Generator(12).stream(2_000)
    expected, _, _ = python_replay(data)
    for lines in (data, data.rstrip(b"\n")):  # the last line with and without its newline
        out = io.BytesIO()
        replay.run_native(io.BytesIO(lines), out, None)
        assert out.getvalue() == expected
