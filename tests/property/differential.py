"""What the differential tests of the two cores share.

`assert_same` feeds the same JSON Lines to `matching_engine.replay.replay_lines` with the
Python `Engine` and to `gpux_native.NativeEngine.apply_batch`, then asserts the same output
bytes and an equal final state; `replay_on_both_cores` does the same through the replay
CLI, final state file included. Beside them, the fixed inputs more than one test module
feeds: strips as a log may carry them (`STRIP_SETUP`, `STRIP_LINES`), hypothesis commands
over a funded v1 market (`commands`, `funded_prefix`), and good-till-date orders a tick
expires (`gtd_orders_then_expiry`).

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from hypothesis import strategies as st

from matching_engine.core import Engine
from matching_engine.replay import replay_lines
from protocol import encode
from tests.property.streams import HOUR, SECOND

try:
    import gpux_native
except ImportError as error:  # the test fails below, with how to build it
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None


def native_engine() -> Any:
    if IMPORT_ERROR is not None:
        pytest.fail(
            f"gpux_native is not built ({IMPORT_ERROR}); build it with `make native` "
            "(maturin develop --release -m matching_engine/native/Cargo.toml)",
            pytrace=False,
        )
    return gpux_native.NativeEngine()


def python_replay(data: bytes) -> tuple[bytes, dict[str, Any], Engine]:
    engine = Engine()
    events = b"".join(replay_lines(io.BytesIO(data), engine))
    return events, engine.final_state(), engine


def first_difference(expected: bytes, actual: bytes) -> str:
    for number, (want, got) in enumerate(
        zip(expected.split(b"\n"), actual.split(b"\n"), strict=False), start=1
    ):
        if want != got:
            return f"event line {number}:\n python: {want!r}\n native: {got!r}"
    return f"lengths differ: python {len(expected)} bytes, native {len(actual)} bytes"


def assert_same(data: bytes, chunks: int = 1) -> bytes:
    """Run both cores over `data` (the native one in `chunks` batches); compare everything."""
    expected, state, _ = python_replay(data)
    native = native_engine()
    actual = b"".join(native.apply_batch(chunk) for chunk in split_lines(data, chunks))
    assert actual == expected, first_difference(expected, actual)
    assert json.loads(native.final_state()) == state
    assert native.seq == expected.count(b"\n")
    assert native.validate() is None
    return expected


def split_lines(data: bytes, chunks: int) -> list[bytes]:
    """Split `data` at line ends into about `chunks` batches."""
    lines = data.splitlines(keepends=True)
    size = max(1, len(lines) // chunks)
    return [b"".join(lines[i:i + size]) for i in range(0, len(lines), size)] or [b""]


def lines_of(commands: list[Any]) -> bytes:
    return b"".join(encode(command) + b"\n" for command in commands)



def jsonl(lines: Iterable[bytes]) -> bytes:
    """JSON Lines: each line ended by a newline."""
    return b"".join(line + b"\n" for line in lines)


def records_of(data: bytes) -> list[bytes]:
    """The command records of JSON Lines, as replay reads them: blank lines dropped,
    trailing CRs stripped."""
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip(b" \t\r\x0b\x0c")]


def outcomes_of(events: bytes) -> set[tuple[str, str | None]]:
    """(type, reason) of each event of JSON Lines, reason None where it has none."""
    return {(event["type"], event.get("reason")) for event in map(json.loads, events.splitlines())}


def replay_on_both_cores(data: bytes, directory: Path) -> dict[str, tuple[bytes, bytes]]:
    """Replay `data` with the replay CLI (`python -m matching_engine.replay`) on each core;
    return each core's events and final state, as bytes."""
    path = directory / "commands.jsonl"
    path.write_bytes(data)
    outputs = {}
    for core in ("python", "native"):
        state = directory / f"{core}.json"
        result = subprocess.run(
            [sys.executable, "-m", "matching_engine.replay", str(path), "--core", core,
             "--final-state", str(state)], capture_output=True, check=True, timeout=300)
        outputs[core] = (result.stdout, state.read_bytes())
    return outputs


# Strips as a log may carry them: escapes, ids at 59 and 60 characters as escapes count
# them, legs of every JSON type, fields repeated, numbers at the edges of their types.
STRIP_SETUP: Final = [
    b'{"type":"list_instrument","ts":1,"symbol":"E%d","gpu":"H100","region":"eu",'
    b'"delivery_start":%d,"delivery_hours":1,"tick_size":"0.01","max_order_quantity":9,'
    b'"maker_fee_bps":3,"taker_fee_bps":7}' % (hour, HOUR * (hour + 1))
    for hour in range(2)
] + [
    b'{"type":"deposit","ts":1,"account":"m","asset":"E0","amount":50}',
    b'{"type":"deposit","ts":1,"account":"m","asset":"E1","amount":50}',
    b'{"type":"deposit","ts":1,"account":"a","asset":"USDC","amount":"100"}',
    b'{"type":"new_order","ts":1,"account":"m","client_order_id":"o0","instrument":"E0",'
    b'"side":"sell","order_type":"limit","price":"1.01","quantity":9}',
    b'{"type":"new_order","ts":1,"account":"m","client_order_id":"o1","instrument":"E1",'
    b'"side":"sell","order_type":"limit","price":"1.03","quantity":9}',
]
STRIP_LINES: Final = [
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"s","side":"buy",'
    b'"instruments":%s,"quantity":%s,"limit_total":%s}' % (legs, quantity, limit)
    for legs, quantity, limit in (
        (b'["E0","E1"]', b"1", b'"2.04"'),
        (b'["E\\u0030","\\u00451"]', b"1", b'"2.04"'),
        (b'["E0","E1"]', b"1", b'"2.0399999"'),
        (b'["E0","E1"]', b"1", b'"2.040000"'),
        (b'["E0","E1"]', b"1", b'"\\u0032.04"'),
        (b'["E0","E1"]', b"1", b'"\\u0662.04"'),
        (b'["E0","E1"]', b"1e0", b'"2.04"'),
        (b'["E0","E1"]', b"1.0", b'"2.04"'),
        (b'["E0","E1"]', b"-0", b'"2.04"'),
        (b'["E0","E1"]', b"9", b'"18.36"'),
        (b'["E0","E1"]', b"10", b'"30"'),
        (b'["E0","E1"]', b"18446744073709551615", b'"30"'),
        (b'["E0","E1"]', b"18446744073709551616", b'"30"'),
        (b'["E0","E1"]', b"-9223372036854775809", b'"30"'),
        (b'[["E0"],"E1"]', b"1", b'"3"'),
        (b'{"0":"E0"}', b"1", b'"3"'),
        (b'["E0",null]', b"1", b'"3"'),
        (b'["E0",1]', b"1", b'"3"'),
        (b'["E0",true]', b"1", b'"3"'),
        (b'["E0","E1",]', b"1", b'"3"'),
        (b'["E0" "E1"]', b"1", b'"3"'),
        (b'["E0","E0"]', b"1", b'"3"'),
        (b'["E0","E\\u0030"]', b"1", b'"3"'),
        (b'["E1","E0"]', b"1", b'"3"'),
        (b'["","E0"]', b"1", b'"3"'),
        (b'["E0","\\ud800"]', b"1", b'"3"'),
        (b'["E0","' + "é".encode() * 70 + b'"]', b"1", b'"3"'),
        (b"[" + b",".join(b'"L%d"' % index for index in range(168)) + b"]", b"1", b'"3"'),
        (b"[" + b",".join(b'"L%d"' % index for index in range(169)) + b"]", b"1", b'"3"'),
        (b"[" + b",".join(b'"L%d"' % index for index in range(5000)) + b"]", b"1", b'"3"'),
    )
] + [
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"%s","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3"}' % client_order_id
    for client_order_id in (b"x" * 59, b"x" * 60, b"x" * 58 + b"\\u0078", b"x" * 59 + b"\\u0078",
                            b"x" * 64, b"x" * 65, b"x" * 58 + b"\\u00e9", b"")
] + [
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"instruments":["E1"],"quantity":1,"limit_total":"3"}',
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3","limit_total":3}',
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"sell",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3","side":"buy"}',
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1}',
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3","price":"1"}',
    b'{"type":"new_strip_order","ts":2,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":null}',
    b'{"type":"new_strip_order","ts":2,"client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3"}',
    b'{"type":"new_strip_order","ts":2,"account":"a","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3"}',
    b'{"type":"new_strip_order","account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3"}',
    b'{"type":"new_strip_order","ts":%d,"account":"a","client_order_id":"d","side":"buy",'
    b'"instruments":["E0","E1"],"quantity":1,"limit_total":"3"}' % HOUR,
]



# ---------------------------------------------------------------- hypothesis, v1 commands

identifier = st.sampled_from(["a", "b", "fees", "0xAbC", "x" * 64, "", "x" * 65, "a b", "é"])
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
money = st.one_of(
    st.sampled_from(["1", "0.01", "1.5", "2.150", "0", "-1", "1e3", ".5", "1.0000001",
                     "1000000000000", "10", "0.99", "1.01", "100"]),
    st.integers(min_value=-5, max_value=10**19), st.text(alphabet="0123456789.", max_size=25),
)
quantity = st.one_of(st.integers(min_value=-2, max_value=40), st.sampled_from([1000, 1001, 2**64]))
symbol = st.sampled_from(["H-1", "H-2", "USDC", "NOPE"])


def command(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    optional = {key: value for key, value in fields.items() if key.startswith("opt_")}
    required = {key: value for key, value in fields.items() if not key.startswith("opt_")}
    return st.fixed_dictionaries(
        {"type": st.just(kind), "ts": st.integers(min_value=-1, max_value=400), **required},
        optional={key[4:]: value for key, value in optional.items()},
    )


commands = st.one_of(
    command("list_instrument", symbol=symbol, gpu=st.just("H100"), region=st.just("eu"),
            delivery_start=st.integers(min_value=0, max_value=500),
            delivery_hours=st.just(1), tick_size=st.sampled_from(["0.01", "1", "0", "0.5"]),
            max_order_quantity=st.sampled_from([1000, 5]),
            maker_fee_bps=st.sampled_from([0, 10, 1001]), taker_fee_bps=st.sampled_from([0, 20])),
    command("deposit", account=identifier, asset=symbol | st.just("USDC"), amount=money,
            opt_deposit_id=st.sampled_from(["d1", "d2", None])),
    command("withdraw", account=identifier, asset=symbol | st.just("USDC"), amount=money),
    command("new_order", account=identifier, client_order_id=st.sampled_from(["o1", "o2", "o3"]),
            instrument=symbol, side=st.sampled_from(["buy", "sell", "hold"]),
            order_type=st.sampled_from(["limit", "market"]), quantity=quantity,
            opt_price=money | st.none(),
            opt_time_in_force=st.sampled_from(["gtc", "ioc", "fok", "gtd", None, "day"]),
            opt_expire_at=st.integers(min_value=-1, max_value=500) | st.none(),
            opt_post_only=st.booleans(),
            opt_stp=st.sampled_from(["cancel_newest", "cancel_oldest", "cancel_both",
                                     "decrement"])),
    command("cancel_order", account=identifier, client_order_id=st.sampled_from(["o1", "o2"]),
            opt_reason=st.sampled_from(["user", "disconnect", "mass_cancel", "x"])),
    command("amend_order", account=identifier, client_order_id=st.sampled_from(["o1", "o2"]),
            opt_new_price=money | st.none(), opt_new_quantity=quantity | st.none()),
    command("mass_cancel", account=identifier, opt_instrument=symbol | st.none(),
            opt_reason=st.sampled_from(["mass_cancel", "disconnect", "dead_man_switch", "user"])),
    command("tick"),
    st.dictionaries(st.sampled_from(["type", "ts", "account", "x"]), json_scalar, max_size=4),
)


def funded_prefix() -> bytes:
    setup = [
        {"type": "list_instrument", "ts": 0, "symbol": "H-1", "gpu": "H100", "region": "eu",
         "delivery_start": 300, "delivery_hours": 1, "tick_size": "0.01",
         "max_order_quantity": 1000, "maker_fee_bps": 10, "taker_fee_bps": 20},
    ]
    for account in ("a", "b", "fees", "0xAbC"):
        setup.append({"type": "deposit", "ts": 0, "account": account, "asset": "USDC",
                      "amount": "100"})
        setup.append({"type": "deposit", "ts": 0, "account": account, "asset": "H-1",
                      "amount": 50})
    return b"".join(msgspec.json.encode(c) + b"\n" for c in setup)


def gtd_orders_then_expiry() -> list[bytes]:
    """Good-till-date orders resting (a few canceled again), then a tick that expires them."""
    start, now = 4 * 10**18, 2 * 10**18  # after the generated streams' times
    records = [
        b'{"type":"list_instrument","ts":1,"symbol":"GTD-1","gpu":"H100","region":"eu",'
        b'"delivery_start":%d,"delivery_hours":1,"tick_size":"0.01","max_order_quantity":100,'
        b'"maker_fee_bps":2,"taker_fee_bps":5}' % start,
        b'{"type":"deposit","ts":2,"account":"g1","asset":"USDC","amount":"100000"}',
    ]
    for index in range(12):
        records.append(
            b'{"type":"new_order","ts":%d,"account":"g1","client_order_id":"g%d",'
            b'"instrument":"GTD-1","side":"buy","order_type":"limit","price":"1.%02d",'
            b'"quantity":%d,"time_in_force":"gtd","expire_at":%d}'
            % (now + index, index, index % 5, 1 + index, now + SECOND + (index * 7) % 5))
        if index % 4 == 1:
            records.append(b'{"type":"cancel_order","ts":%d,"account":"g1","client_order_id":'
                           b'"g%d"}' % (now + index, index))
    records.append(b'{"type":"tick","ts":%d}' % (now + 2 * SECOND))
    return records
