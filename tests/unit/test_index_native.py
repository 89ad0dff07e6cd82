"""Differential: the native index calculator (gpux_native, `make native`) against the Python
one, the reference. Fed the same records in the same batches they release the same values,
byte for byte, and refuse a log they cannot follow with the same error at the same event:
over the recompute benchmark's day (smaller), over engine logs with strips and delivery,
over those logs cut at drawn points, and over the same logs with events broken at the JSON
or the byte level. The calculator's rules themselves are tested on both calculators in
test_index_calculator.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import gpux_native
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.index_recompute import DayFlow
from index import cli
from index.calculator import (
    GAP_MINUTES_MAX,
    IndexCalculator,
    NativeIndexCalculator,
    default_calculator,
)
from index.errors import EventError, SeqGapError
from index.service import IndexServiceConfig
from index.value import MINUTE_NS, IndexValue
from tests.property.streams import Generator, json_pairs

Outcome = tuple[str, Any]


def outcome(calculator: IndexCalculator | NativeIndexCalculator,
            batches: Sequence[Sequence[bytes]]) -> Outcome:
    """The values released over the batches, or the error that stopped the calculator: its
    class, the event it names and, for a gap, the seqs."""
    values: list[IndexValue] = []
    try:
        for batch in batches:
            values += calculator.feed(batch)
    except SeqGapError as gap:
        return ("SeqGapError", (gap.expected_seq, gap.got_seq, len(values)))
    except EventError as error:
        return ("EventError", (error.seq, len(values)))
    return ("values", values)


def assert_same(batches: Sequence[Sequence[bytes]]) -> Outcome:
    expected = outcome(IndexCalculator(), batches)
    assert outcome(NativeIndexCalculator(), batches) == expected
    return expected


def cut(records: list[bytes], points: Sequence[int]) -> list[list[bytes]]:
    """The records in batches ending at the given points (in any order, repeats allowed)."""
    edges = sorted({0, len(records), *(point % (len(records) + 1) for point in points)})
    return [records[start:end] for start, end in zip(edges, edges[1:], strict=False)]


@cache
def engine_log(seed: int, commands: int = 3_000) -> list[bytes]:
    """The events of a generated stream of every command, strips and delivery included,
    broken ones too, as the engine writes them."""
    data = Generator(seed, delivery=True, strips=True).stream(commands)
    events: bytes = gpux_native.NativeEngine().apply_batch(data)
    return events.split(b"\n")[:-1]


def test_the_benchmark_day_gives_the_same_values() -> None:
    records = DayFlow(3_000, seed=11).run()
    for size in (10_000, 997):
        batches = [records[start:start + size] for start in range(0, len(records), size)]
        kind, values = assert_same(batches)
        assert kind == "values"
        assert len(values) == 3 * 24 * 60  # every minute of the day for the 3 classes
        assert "trades" in {value.source for value in values}


@pytest.mark.parametrize("seed", range(4))
def test_engine_logs_with_strips_and_delivery_give_the_same_values(seed: int) -> None:
    records = engine_log(seed)
    kind, values = assert_same([records])
    assert kind == "values"
    assert {"trades", "mid"} <= {value.source for value in values}
    assert assert_same([[record] for record in records]) == (kind, values)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 3), points=st.lists(st.integers(0, 10**6), max_size=12))
def test_logs_cut_anywhere_give_the_same_values(seed: int, points: list[int]) -> None:
    records = engine_log(seed)
    whole = outcome(IndexCalculator(), [records])
    assert assert_same(cut(records, points)) == whole


# -- broken events ------------------------------------------------------------------------

def with_field(record: bytes, key: str, value: Any) -> bytes:
    """The record with one field set (added last when absent), the rest as it was."""
    pairs = list(msgspec.json.decode(record).items())
    if key in dict(pairs):
        return json_pairs([(k, value if k == key else v) for k, v in pairs])
    return json_pairs([*pairs, (key, value)])


def without_field(record: bytes, key: str) -> bytes:
    return json_pairs([(k, v) for k, v in msgspec.json.decode(record).items() if k != key])


def duplicated(record: bytes, key: str, first: Any) -> bytes:
    """The record with `key` given twice: `first`, then its own value."""
    pairs = list(msgspec.json.decode(record).items())
    at = next((index for index, (k, _) in enumerate(pairs) if k == key), 0)
    return json_pairs([*pairs[:at], (key, first), *pairs[at:]])


def escaped_keys(record: bytes) -> bytes:
    """The record with every key's first letter written as a \\u escape."""
    pairs = msgspec.json.decode(record).items()
    return b"{" + b",".join(
        b'"\\u%04x' % ord(k[0]) + k[1:].encode() + b'":' + msgspec.json.encode(v)
        for k, v in pairs) + b"}"


# Integers only up to 2**64: the native calculator computes in i128 (see the last test).
ODD_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 1.5, 2**63, 2**64, -(2**64), "", "x", "0", "-1", "2.15", "1.1234567",
    "1e3", "é", "\u2028", [], [1, [2, {"a": None}]], {"k": "v"},
)
ODD_BYTES = b'"\\{}[],: \x00\x1f\x7f\xc3\xe9az09-.'
FIELDS = ("type", "seq", "ts", "symbol", "gpu", "region", "delivery_start", "instrument",
          "price", "quantity", "order_id", "order_type", "side", "time_in_force",
          "maker_order_id", "taker_order_id", "remaining_quantity")


def broken(record: bytes, rng: random.Random) -> bytes:
    """The record broken in one drawn way: a field's value, a field missing or twice, keys
    escaped, spaces, or bytes cut, added or changed (only those when it is no JSON object)."""
    try:
        fields = msgspec.json.decode(record)
    except msgspec.DecodeError:
        fields = None
    if not isinstance(fields, dict):
        return broken_bytes(record, rng)
    key = rng.choice(FIELDS)
    match rng.randrange(10):
        case 0 | 1:
            return with_field(record, key, rng.choice(ODD_VALUES))
        case 2:
            return without_field(record, key)
        case 3:
            return duplicated(record, key, rng.choice(ODD_VALUES))
        case 4:
            return escaped_keys(record)
        case 5:
            return msgspec.json.format(record, indent=rng.choice((0, 2)))
        case 6:
            seq = fields.get("seq")
            seq = seq if isinstance(seq, int) else 0
            return with_field(record, "seq", seq + rng.choice((-1, 1, 2)))
        case 7:
            ts = fields.get("ts")
            ts = ts if isinstance(ts, int) else 0
            step = rng.choice((-1, -(10**9), 61 * 10**9, (GAP_MINUTES_MAX + 1) * MINUTE_NS))
            return with_field(record, "ts", ts + step)
        case 8:
            return with_field(record, "type", rng.choice(
                ("trade", "order_accepted", "deposited", "no_such_event", "Trade")))
        case _:
            return broken_bytes(record, rng)


def broken_bytes(record: bytes, rng: random.Random) -> bytes:
    """The record with spaces around it, or cut, or a byte added or changed."""
    at = rng.randrange(len(record) + 1)
    match rng.randrange(4):
        case 0:
            return b" \t" + record + b"\r\n "
        case 1:
            return record[:at]
        case 2:
            return record[:at] + bytes([rng.choice(ODD_BYTES)]) + record[at:]
        case _:
            return record[:at] + bytes([rng.randrange(256)]) + record[at + 1:]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 3), breakage=st.integers(0, 2**32),
       breaks=st.integers(1, 3), points=st.lists(st.integers(0, 10**6), max_size=6))
def test_broken_events_give_the_same_error_at_the_same_event(
        seed: int, breakage: int, breaks: int, points: list[int]) -> None:
    rng = random.Random(breakage)
    records = list(engine_log(seed, 800))
    for _ in range(breaks):
        at = rng.randrange(len(records))
        records[at] = broken(records[at], rng)
    assert_same(cut(records, points))


@pytest.mark.parametrize("record", [
    b"", b"[]", b"null", b'"x"', b"{", b"{}", b'{"type":"deposited","seq":1,"ts":5} x',
    b'{"type":"deposited","seq":1,"ts":5,}', b'{"type":"deposited","seq":1.0,"ts":5}',
    b'{"type":"deposited","seq":1,"ts":"5"}', b'{"type":"\xff","seq":1,"ts":5}',
    b'{"type":"deposited","seq":1,"ts":5,"x":"\xff"}',
    b'{"type":"deposited","seq":1,"ts":5,"x":"\\ud800"}',
    b'{"type":"deposited","seq":1,"ts":5,"x":1e999}',
    b'{"type":"deposited","seq":1,"ts":5,"x":01}',
    b'{"type":"deposited","seq":99999999999999999999999999999999999999999,"ts":5}',
    b'{"type":"deposited","seq":1,"ts":1' + b"0" * 4300 + b"}",
    b'{"type":"deposited","seq":1,"ts":5,"x":1' + b"0" * 5000 + b"}",
    b'{"type":"deposited","seq":1,"ts":5,"x":' + b"[" * 400 + b"]" * 400 + b"}",
])
def test_a_first_record_is_refused_or_read_alike(record: bytes) -> None:
    assert_same([[record]])


def test_a_jump_beyond_the_gap_the_index_publishes_at_once_is_refused_alike() -> None:
    records = engine_log(0)
    last = msgspec.json.decode(records[-1])
    jump = {"type": "deposited", "seq": last["seq"] + 1, "account": "x", "asset": "USDC",
            "amount": "1"}
    for minutes, refused in ((7 * 24 * 60, False), (GAP_MINUTES_MAX + 1, True)):
        record = msgspec.json.encode({**jump, "ts": last["ts"] + minutes * MINUTE_NS})
        kind, _ = assert_same([records, [record]])
        assert (kind == "EventError") == refused


def test_after_an_error_the_native_calculator_refuses_every_feed() -> None:
    records = engine_log(0)
    calculator = NativeIndexCalculator()
    with pytest.raises(SeqGapError):
        calculator.feed(records[1:])
    for batch in (records, []):  # the Python calculator is then unusable, not refusing
        with pytest.raises(SeqGapError):
            calculator.feed(batch)
    assert calculator.seq == 0


def test_records_that_are_not_bytes_are_refused() -> None:
    with pytest.raises(TypeError):
        NativeIndexCalculator().feed(["{}"])  # type: ignore[list-item]


def test_integers_beyond_i128_that_the_index_computes_with_are_refused_natively() -> None:
    """Where the two may differ (NativeIndexCalculator): the Python calculator's integers
    are unbounded; the native one refuses an event whose used integers, or the sums and
    products it makes of them, leave i128. No log the engine writes comes near."""
    t = 29_000_000 * MINUTE_NS
    listed = {"type": "instrument_listed", "seq": 1, "ts": t, "symbol": "H-1", "gpu": "H100",
              "region": "eu-west", "delivery_start": t + 60 * MINUTE_NS}
    trade = {"type": "trade", "seq": 2, "ts": t, "instrument": "H-1", "price": "1000000",
             "quantity": 10**30, "maker_order_id": "m", "taker_order_id": "t"}
    later = {"type": "deposited", "seq": 3, "ts": t + MINUTE_NS}
    records = [msgspec.json.encode(event) for event in (listed, trade, later)]
    kind, values = outcome(IndexCalculator(), [records])
    assert kind == "values"
    assert values[0].volume == 10**30  # and its notional, 10**42 micro-USDC, beyond i128
    assert outcome(NativeIndexCalculator(), [records]) == ("EventError", (3, 0))


def test_verify_prints_the_same_values_with_either_calculator(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(engine_log(1)) + b"\n")
    printed = {}
    for name in ("python", "native"):
        assert cli.main(["verify", "--events", str(events), "--calculator", name]) == 0
        printed[name] = capsys.readouterr().out
    assert printed["native"] == printed["python"]
    assert len(printed["python"].splitlines()) > 100


def test_the_service_computes_natively_when_built_and_takes_either() -> None:
    assert default_calculator() == "native"  # `make test` builds it
    assert IndexServiceConfig().calculator == "native"
    assert IndexServiceConfig(calculator="python").calculator == "python"
    with pytest.raises(ValueError, match="calculator"):
        IndexServiceConfig(calculator="fortran")
