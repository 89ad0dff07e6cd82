"""JSON and msgpack codecs of the protocol (PROTOCOL.md, Encoding; protocol-notes.md, Malformed
commands), v1 and v2's Delivery and Strip orders: round trips, byte-stable encoding, omitted
optional fields, and the salvage of malformed commands."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from protocol import (
    FORMATS,
    AmendOrder,
    AmendRejected,
    BondReleased,
    CancelOrder,
    CancelRejected,
    CapacityIssued,
    CommandRejected,
    DeliveryAssigned,
    DeliveryReport,
    DeliverySettled,
    Deposit,
    Deposited,
    DepositRejected,
    Format,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
    IssueRejected,
    ListInstrument,
    MalformedCommand,
    MassCancel,
    NewOrder,
    NewStripOrder,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    OrderRejected,
    ReportRejected,
    StripAccepted,
    StripDone,
    StripRejected,
    Tick,
    Trade,
    Withdraw,
    WithdrawalRejected,
    Withdrawn,
    decode_command,
    decode_event,
    encode,
)
from protocol.commands import COMMAND_TYPES
from protocol.events import EVENT_TYPES

SYMBOL = "H100-SXM-80GB:eu-west:2025-07-01T00"
NEXT_HOUR = "H100-SXM-80GB:eu-west:2025-07-01T01"
TS = 1_751_328_000_000_000_000
WALLET = "0xAbC0123456789dEf0123456789aBcDeF01234567"

COMMAND_EXAMPLES: list[msgspec.Struct] = [
    ListInstrument(
        ts=TS, symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
        delivery_start=TS + 86_400 * 10**9, delivery_hours=24, tick_size="0.01",
        max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5,
    ),
    Deposit(ts=TS, account="alice", asset="USDC", amount="1000.5", deposit_id="0xfeed:7"),
    Deposit(ts=TS, account=WALLET, asset=SYMBOL, amount=40),
    Withdraw(ts=TS, account="alice", asset="USDC", amount="12.345678"),
    Withdraw(ts=TS, account="alice", asset=SYMBOL, amount="3"),
    NewOrder(
        ts=TS, account="alice", client_order_id="a-1", instrument=SYMBOL, side="buy",
        order_type="limit", price="2.15", quantity=10,
    ),
    NewOrder(
        ts=TS, account="bob", client_order_id="b.2", instrument=SYMBOL, side="sell",
        order_type="limit", price="2.2", quantity=5, time_in_force="gtd",
        expire_at=TS + 60 * 10**9, post_only=True, stp="decrement",
    ),
    NewOrder(
        ts=TS, account="carol", client_order_id="c:3", instrument=SYMBOL, side="buy",
        order_type="market", quantity=7, time_in_force="fok", stp="cancel_both",
    ),
    CancelOrder(ts=TS, account="alice", client_order_id="a-1"),
    AmendOrder(ts=TS, account="alice", client_order_id="a-1", new_price="2.16"),
    AmendOrder(ts=TS, account="alice", client_order_id="a-1", new_quantity=12),
    AmendOrder(ts=TS, account="alice", client_order_id="a-1", new_price="2.1", new_quantity=3),
    MassCancel(ts=TS, account="alice"),
    MassCancel(ts=TS, account="alice", instrument=SYMBOL),
    Tick(ts=TS + 1),
    Tick(ts=0),
    ListInstrument(
        ts=TS, symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
        delivery_start=TS + 86_400 * 10**9, delivery_hours=24, tick_size="0.01",
        max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5, bond_per_gpu_hour="3.25",
    ),
    IssueCapacity(ts=TS, account=WALLET, issue_id="iss-1", instrument=SYMBOL,
                  node_id="node:eu-west.7", quantity=24),
    DeliveryReport(ts=TS, issue_id="iss-1", holder="alice", delivered_ppm=950_000,
                   evidence="9f" * 32),
    DeliveryReport(ts=TS, issue_id="iss-1", holder="bob", delivered_ppm=1_000_000),
    NewStripOrder(ts=TS, account="alice", client_order_id="strip-1", side="buy",
                  instruments=[SYMBOL, NEXT_HOUR], quantity=8, limit_total="96.5"),
    NewStripOrder(ts=TS, account=WALLET, client_order_id="s" * 59, side="sell",
                  instruments=[SYMBOL, NEXT_HOUR], quantity=1, limit_total="0.000001"),
]

EVENT_EXAMPLES: list[msgspec.Struct] = [
    InstrumentListed(
        seq=1, ts=TS, symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
        delivery_start=TS + 86_400 * 10**9, delivery_hours=24, tick_size="0.01",
        max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5,
    ),
    InstrumentClosed(seq=2, ts=TS, symbol=SYMBOL),
    Deposited(seq=3, ts=TS, account="alice", asset="USDC", amount="1000.5", deposit_id="0xfeed:7"),
    Deposited(seq=4, ts=TS, account="bob", asset=SYMBOL, amount=40),
    Withdrawn(seq=5, ts=TS, account="alice", asset="USDC", amount="12.345678"),
    WithdrawalRejected(
        seq=6, ts=TS, account="alice", asset="USDC", amount="1e3", reason="invalid_amount"
    ),
    OrderAccepted(
        seq=7, ts=TS, account="alice", client_order_id="a-1", order_id="1", instrument=SYMBOL,
        side="buy", order_type="limit", price="2.15", quantity=10, time_in_force="gtc",
        post_only=False, stp="cancel_newest",
    ),
    OrderAccepted(
        seq=8, ts=TS, account="bob", client_order_id="b.2", order_id="2", instrument=SYMBOL,
        side="sell", order_type="limit", price="2.2", quantity=5, time_in_force="gtd",
        post_only=True, stp="decrement", expire_at=TS + 60 * 10**9,
    ),
    OrderAccepted(
        seq=9, ts=TS, account="carol", client_order_id="c:3", order_id="3", instrument=SYMBOL,
        side="buy", order_type="market", quantity=7, time_in_force="ioc", post_only=False,
        stp="cancel_newest",
    ),
    OrderRejected(seq=10, ts=TS, account="dave", client_order_id="d", reason="invalid_order"),
    OrderRejected(
        seq=11, ts=TS, account="dave", client_order_id="d", reason="insufficient_funds",
        instrument=SYMBOL,
    ),
    Trade(
        seq=12, ts=TS, trade_id="1", instrument=SYMBOL, price="2.2", quantity=5,
        aggressor_side="buy", maker_account="bob", maker_client_order_id="b.2",
        maker_order_id="2", maker_fee="0.0022", taker_account="carol",
        taker_client_order_id="c:3", taker_order_id="3", taker_fee="0.0055",
    ),
    OrderCanceled(
        seq=13, ts=TS, account="carol", client_order_id="c:3", order_id="3", instrument=SYMBOL,
        reason="market", canceled_quantity=2,
    ),
    OrderAmended(
        seq=14, ts=TS, account="alice", client_order_id="a-1", order_id="1", instrument=SYMBOL,
        price="2.16", quantity=12, remaining_quantity=12,
    ),
    OrderReduced(
        seq=15, ts=TS, account="alice", client_order_id="a-1", order_id="1", instrument=SYMBOL,
        reason="stp", reduced_quantity=4, remaining_quantity=8,
    ),
    CancelRejected(seq=16, ts=TS, account="alice", client_order_id="zz", reason="unknown_order"),
    AmendRejected(
        seq=17, ts=TS, account="alice", client_order_id="a-1", reason="post_only_would_cross"
    ),
    DepositRejected(
        seq=18, ts=TS, account="alice", asset="USDC", amount="5", reason="duplicate_deposit"
    ),
    CommandRejected(seq=19, ts=TS, command="", reason="invalid_command"),
    CommandRejected(seq=20, ts=TS, command="list_instrument", reason="duplicate_instrument"),
    InstrumentListed(
        seq=21, ts=TS, symbol=SYMBOL, gpu="H100-SXM-80GB", region="eu-west",
        delivery_start=TS + 86_400 * 10**9, delivery_hours=24, tick_size="0.01",
        max_order_quantity=10_000, maker_fee_bps=2, taker_fee_bps=5, bond_per_gpu_hour="0",
    ),
    CapacityIssued(seq=22, ts=TS, issue_id="iss-1", account=WALLET, instrument=SYMBOL,
                   node_id="node:eu-west.7", quantity=24, bond="78"),
    IssueRejected(seq=23, ts=TS, issue_id="iss-2", account="alice", reason="not_deliverable"),
    DeliveryAssigned(seq=24, ts=TS, instrument=SYMBOL, issue_id="iss-1", issuer=WALLET,
                     node_id="node:eu-west.7", holder="alice", quantity=10),
    DeliverySettled(seq=25, ts=TS, instrument=SYMBOL, issue_id="iss-1", issuer=WALLET,
                    holder="alice", quantity=10, delivered_ppm=950_000, compensation="1.625",
                    evidence="9f" * 32),
    DeliverySettled(seq=26, ts=TS, instrument=SYMBOL, issue_id="iss-1", issuer=WALLET,
                    holder="bob", quantity=2, delivered_ppm=1_000_000, compensation="0"),
    BondReleased(seq=27, ts=TS, issue_id="iss-1", account=WALLET, quantity=10,
                 amount="30.875"),
    ReportRejected(seq=28, ts=TS, issue_id="iss-1", holder="alice", reason="already_reported"),
    StripAccepted(seq=29, ts=TS, account="alice", client_order_id="strip-1", strip_id="9",
                  side="buy", instruments=[SYMBOL, NEXT_HOUR], quantity=8, limit_total="96.5"),
    StripRejected(seq=30, ts=TS, account="alice", client_order_id="strip-2",
                  reason="insufficient_liquidity"),
    StripDone(seq=31, ts=TS, account="alice", client_order_id="strip-1", strip_id="9",
              notional="35.2", fees="0.0704"),
]


def _example_id(message: msgspec.Struct) -> str:
    return str(message.__struct_config__.tag)


def _raw(data: bytes, fmt: Format) -> Any:
    """Decode into plain dicts and lists, keeping the key order of the bytes."""
    if fmt == "json":
        return msgspec.json.decode(data)
    return msgspec.msgpack.decode(data)


def _wire(value: Any, fmt: Format) -> bytes:
    if fmt == "json":
        return msgspec.json.encode(value)
    return msgspec.msgpack.encode(value)


# --- round trips -------------------------------------------------------------------------------


def test_examples_cover_every_command_and_event_type() -> None:
    assert {_example_id(command) for command in COMMAND_EXAMPLES} == set(COMMAND_TYPES)
    assert {_example_id(event) for event in EVENT_EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("message", "decode"),
    [pytest.param(command, decode_command, id=_example_id(command))
     for command in COMMAND_EXAMPLES]
    + [pytest.param(event, decode_event, id=_example_id(event)) for event in EVENT_EXAMPLES],
)
def test_every_command_and_event_type_round_trips(
    message: msgspec.Struct, decode: Callable[[bytes, Format], Any], fmt: Format
) -> None:
    decoded = decode(encode(message, fmt), fmt)
    assert type(decoded) is type(message)
    assert decoded == message


def test_json_is_the_default_format() -> None:
    command = COMMAND_EXAMPLES[0]
    assert encode(command) == encode(command, "json")
    assert decode_command(encode(command)) == command
    assert decode_event(encode(EVENT_EXAMPLES[0])) == EVENT_EXAMPLES[0]


def test_decode_command_accepts_json_text_as_well_as_bytes() -> None:
    line = '{"type":"cancel_order","ts":5,"account":"alice","client_order_id":"a-1"}'
    assert decode_command(line) == decode_command(line.encode())
    assert decode_command(line) == CancelOrder(ts=5, account="alice", client_order_id="a-1")


def test_commands_written_by_hand_decode_with_their_defaults() -> None:
    line = (
        b'{"type":"new_order","ts":1,"account":"alice","client_order_id":"a-1",'
        b'"instrument":"X","side":"buy","order_type":"limit","price":"2.15","quantity":10}'
    )
    command = decode_command(line)
    assert isinstance(command, NewOrder)
    assert command.time_in_force is None
    assert command.expire_at is None
    assert command.post_only is False
    assert command.stp == "cancel_newest"


# --- deterministic encoding --------------------------------------------------------------------


def test_encoding_pins_the_exact_json_bytes() -> None:
    order = NewOrder(
        ts=7, account="alice", client_order_id="a-1", instrument="X", side="buy",
        order_type="limit", price="2.15", quantity=10,
    )
    assert encode(order) == (
        b'{"type":"new_order","ts":7,"account":"alice","client_order_id":"a-1",'
        b'"instrument":"X","side":"buy","order_type":"limit","price":"2.15","quantity":10}'
    )
    accepted = OrderAccepted(
        stp="cancel_newest", post_only=False, time_in_force="ioc", quantity=7,
        order_type="market", side="buy", instrument="X", order_id="3", client_order_id="c",
        account="carol", ts=9, seq=4,
    )
    assert encode(accepted) == (
        b'{"type":"order_accepted","seq":4,"ts":9,"account":"carol","client_order_id":"c",'
        b'"order_id":"3","instrument":"X","side":"buy","order_type":"market","quantity":7,'
        b'"time_in_force":"ioc","post_only":false,"stp":"cancel_newest"}'
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoding_is_the_same_for_equal_messages_however_they_were_built(fmt: Format) -> None:
    for message in COMMAND_EXAMPLES + EVENT_EXAMPLES:
        fields = msgspec.structs.asdict(message)
        rebuilt = type(message)(**dict(reversed(list(fields.items()))))
        assert encode(rebuilt, fmt) == encode(message, fmt)
        assert encode(message, fmt) == encode(message, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_field_order_is_type_then_declaration_order(fmt: Format) -> None:
    for message in COMMAND_EXAMPLES + EVENT_EXAMPLES:
        raw = _raw(encode(message, fmt), fmt)
        declared = [
            name for name in message.__struct_fields__ if name in raw
        ]
        assert list(raw) == ["type", *declared]
        assert raw["type"] == _example_id(message)


def test_events_start_with_type_seq_ts() -> None:
    for event in EVENT_EXAMPLES:
        assert list(_raw(encode(event), "json"))[:3] == ["type", "seq", "ts"]


def test_decoding_then_encoding_reproduces_the_bytes() -> None:
    for command in COMMAND_EXAMPLES:
        data = encode(command)
        assert encode(decode_command(data)) == data
    for event in EVENT_EXAMPLES:
        data = encode(event)
        assert encode(decode_event(data)) == data


# --- optional fields ---------------------------------------------------------------------------


def _accepted(**overrides: Any) -> OrderAccepted:
    fields: dict[str, Any] = {
        "seq": 1, "ts": 1, "account": "alice", "client_order_id": "a", "order_id": "1",
        "instrument": "X", "side": "buy", "order_type": "limit", "price": "2.15",
        "quantity": 1, "time_in_force": "gtc", "post_only": False, "stp": "cancel_newest",
    }
    fields.update(overrides)
    return OrderAccepted(**fields)


@pytest.mark.parametrize("fmt", FORMATS)
def test_order_accepted_omits_price_for_market_orders(fmt: Format) -> None:
    market = _raw(encode(_accepted(order_type="market", price=None, time_in_force="ioc"), fmt), fmt)
    assert "price" not in market
    assert _raw(encode(_accepted(), fmt), fmt)["price"] == "2.15"


@pytest.mark.parametrize("fmt", FORMATS)
def test_order_accepted_has_expire_at_only_for_gtd(fmt: Format) -> None:
    assert "expire_at" not in _raw(encode(_accepted(), fmt), fmt)
    gtd = _raw(encode(_accepted(time_in_force="gtd", expire_at=99), fmt), fmt)
    assert gtd["expire_at"] == 99


@pytest.mark.parametrize("fmt", FORMATS)
def test_order_accepted_always_carries_post_only_stp_and_time_in_force(fmt: Format) -> None:
    raw = _raw(encode(_accepted(), fmt), fmt)
    assert (raw["post_only"], raw["stp"], raw["time_in_force"]) == (False, "cancel_newest", "gtc")


@pytest.mark.parametrize("fmt", FORMATS)
def test_deposited_omits_deposit_id_unless_given(fmt: Format) -> None:
    without = Deposited(seq=1, ts=1, account="alice", asset="USDC", amount="5")
    assert "deposit_id" not in _raw(encode(without, fmt), fmt)
    with_id = Deposited(seq=1, ts=1, account="alice", asset="USDC", amount="5", deposit_id="tx:1")
    assert _raw(encode(with_id, fmt), fmt)["deposit_id"] == "tx:1"


def test_order_rejected_omits_instrument_unless_given() -> None:
    bare = OrderRejected(seq=1, ts=1, account="a", client_order_id="c", reason="invalid_order")
    assert "instrument" not in _raw(encode(bare), "json")
    named = OrderRejected(
        seq=1, ts=1, account="a", client_order_id="c", reason="invalid_order", instrument="X"
    )
    assert _raw(encode(named), "json")["instrument"] == "X"


def test_commands_omit_optional_fields_left_at_their_defaults() -> None:
    order = NewOrder(
        ts=1, account="a", client_order_id="c", instrument="X", side="buy",
        order_type="market", quantity=1,
    )
    raw = _raw(encode(order), "json")
    for absent in ("price", "time_in_force", "expire_at", "post_only", "stp"):
        assert absent not in raw
    assert "instrument" not in _raw(encode(MassCancel(ts=1, account="a")), "json")
    assert "deposit_id" not in _raw(
        encode(Deposit(ts=1, account="a", asset="USDC", amount="1")), "json"
    )
    assert _raw(encode(AmendOrder(ts=1, account="a", client_order_id="c", new_quantity=2)),
                "json") == {"type": "amend_order", "ts": 1, "account": "a",
                            "client_order_id": "c", "new_quantity": 2}


@pytest.mark.parametrize("fmt", FORMATS)
def test_bond_per_gpu_hour_is_absent_unless_the_listing_gives_it(fmt: Format) -> None:
    v1_listing, v1_listed = COMMAND_EXAMPLES[0], EVENT_EXAMPLES[0]
    assert isinstance(v1_listing, ListInstrument) and isinstance(v1_listed, InstrumentListed)
    assert "bond_per_gpu_hour" not in _raw(encode(v1_listing, fmt), fmt)
    assert "bond_per_gpu_hour" not in _raw(encode(v1_listed, fmt), fmt)
    bonded = msgspec.structs.replace(v1_listed, bond_per_gpu_hour="0")
    assert _raw(encode(bonded, fmt), fmt)["bond_per_gpu_hour"] == "0"
    assert list(_raw(encode(bonded, fmt), fmt))[-1] == "bond_per_gpu_hour"


@pytest.mark.parametrize("fmt", FORMATS)
def test_evidence_is_absent_unless_the_report_gives_it(fmt: Format) -> None:
    report = DeliveryReport(ts=1, issue_id="i", holder="h", delivered_ppm=0)
    assert _raw(encode(report, fmt), fmt) == {
        "type": "delivery_report", "ts": 1, "issue_id": "i", "holder": "h", "delivered_ppm": 0}
    settled = DeliverySettled(seq=1, ts=1, instrument="X", issue_id="i", issuer="op",
                              holder="h", quantity=1, delivered_ppm=0, compensation="2")
    assert "evidence" not in _raw(encode(settled, fmt), fmt)
    with_evidence = msgspec.structs.replace(settled, evidence="ab")
    assert _raw(encode(with_evidence, fmt), fmt)["evidence"] == "ab"


def test_delivery_encoding_pins_the_exact_json_bytes() -> None:
    issue = IssueCapacity(ts=7, account="op", issue_id="i1", instrument="X", node_id="n1",
                          quantity=3)
    assert encode(issue) == (
        b'{"type":"issue_capacity","ts":7,"account":"op","issue_id":"i1","instrument":"X",'
        b'"node_id":"n1","quantity":3}'
    )
    settled = DeliverySettled(seq=9, ts=7, instrument="X", issue_id="i1", issuer="op",
                              holder="bob", quantity=3, delivered_ppm=500_000,
                              compensation="4.5", evidence="ff")
    assert encode(settled) == (
        b'{"type":"delivery_settled","seq":9,"ts":7,"instrument":"X","issue_id":"i1",'
        b'"issuer":"op","holder":"bob","quantity":3,"delivered_ppm":500000,'
        b'"compensation":"4.5","evidence":"ff"}'
    )


def test_evidence_of_128_characters_is_well_formed_whatever_its_bytes() -> None:
    evidence = "\u00e9" * 128  # 256 bytes in UTF-8, 128 characters
    line = msgspec.json.encode({"type": "delivery_report", "ts": 1, "issue_id": "i",
                                "holder": "h", "delivered_ppm": 5, "evidence": evidence})
    assert decode_command(line) == DeliveryReport(ts=1, issue_id="i", holder="h",
                                                  delivered_ppm=5, evidence=evidence)


def test_delivered_ppm_bounds_are_those_of_a_signed_64_bit_integer() -> None:
    def report(ppm: int) -> bytes:
        return msgspec.json.encode({"type": "delivery_report", "ts": 1, "issue_id": "i",
                                    "holder": "h", "delivered_ppm": ppm})

    for ppm in (-(2**63), 2**63 - 1):
        assert decode_command(report(ppm)) == DeliveryReport(
            ts=1, issue_id="i", holder="h", delivered_ppm=ppm)
    for ppm in (-(2**63) - 1, 2**63):
        assert isinstance(decode_command(report(ppm)), MalformedCommand)


def test_strip_encoding_pins_the_exact_json_bytes() -> None:
    strip = NewStripOrder(ts=7, account="alice", client_order_id="s1", side="buy",
                          instruments=["X0", "X1"], quantity=8, limit_total="96.5")
    assert encode(strip) == (
        b'{"type":"new_strip_order","ts":7,"account":"alice","client_order_id":"s1",'
        b'"side":"buy","instruments":["X0","X1"],"quantity":8,"limit_total":"96.5"}'
    )
    done = StripDone(seq=9, ts=7, account="alice", client_order_id="s1", strip_id="4",
                     notional="35.2", fees="0.0704")
    assert encode(done) == (
        b'{"type":"strip_done","seq":9,"ts":7,"account":"alice","client_order_id":"s1",'
        b'"strip_id":"4","notional":"35.2","fees":"0.0704"}'
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_strip_client_order_id_of_60_characters_is_malformed_but_salvaged(
    fmt: Format,
) -> None:
    """60-64 characters fail the strip's schema (a leg's `CLIENT_ORDER_ID:LEG_INDEX` must fit
    in 64) but are an identifier still, so the salvage keeps the id; the engine then rejects
    the command by its length (docs/protocol-notes.md, Strip orders)."""
    for length in (59, 60, 64):
        client_order_id = "s" * length
        result = decode_command(_wire(_strip(client_order_id=client_order_id), fmt), fmt)
        if length == 59:
            assert isinstance(result, NewStripOrder)
            continue
        assert isinstance(result, MalformedCommand)
        assert "`$.client_order_id`" in result.error
        assert (result.type, result.account, result.client_order_id) == (
            "new_strip_order", "alice", client_order_id)


# --- malformed commands ------------------------------------------------------------------------


_ABSENT: Any = object()  # marks a field to leave out


def _new_order(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "new_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
        "instrument": SYMBOL, "side": "buy", "order_type": "limit", "price": "2.15",
        "quantity": 10,
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


def _cancel(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "cancel_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


def _deposit(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "deposit", "ts": 5, "account": "alice", "asset": "USDC", "amount": "10",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


def _issue(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "issue_capacity", "ts": 5, "account": "op", "issue_id": "i-1",
        "instrument": SYMBOL, "node_id": "n-1", "quantity": 8,
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


def _report(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "delivery_report", "ts": 5, "issue_id": "i-1", "holder": "alice",
        "delivered_ppm": 900_000,
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


def _strip(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "new_strip_order", "ts": 5, "account": "alice", "client_order_id": "s-1",
        "side": "buy", "instruments": [SYMBOL, NEXT_HOUR], "quantity": 8, "limit_total": "96",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _ABSENT}


TOO_LONG = "a" * 65

# (id, command as a Python value, the error must contain, salvaged fields that must match)
MALFORMED_CASES: list[tuple[str, Any, str, dict[str, Any]]] = [
    # not an object
    ("array", [1, 2], "object", {"type": ""}),
    ("string", "new_order", "object", {"type": ""}),
    ("number", 42, "object", {"type": ""}),
    ("null", None, "object", {"type": ""}),
    # type
    ("unknown_type", {"type": "buy_gpus", "ts": 5, "account": "alice"}, "`$.type`",
     {"type": "buy_gpus", "ts": 5, "account": "alice"}),
    ("type_not_a_string", {"type": 7, "ts": 5}, "`$.type`", {"type": "", "ts": 5}),
    ("missing_type", {"ts": 5, "account": "alice", "client_order_id": "a-1"}, "`type`",
     {"type": "", "ts": 5, "account": "alice", "client_order_id": "a-1"}),
    ("empty_object", {}, "`type`", {"type": "", "ts": None}),
    # ts
    ("missing_ts", _cancel(ts=_ABSENT), "`ts`",
     {"type": "cancel_order", "ts": None, "account": "alice", "client_order_id": "a-1"}),
    ("negative_ts", _cancel(ts=-1), "`$.ts`", {"ts": None, "account": "alice"}),
    ("float_ts", _cancel(ts=5.0), "`$.ts`", {"ts": None, "account": "alice"}),
    ("bool_ts", _cancel(ts=True), "`$.ts`", {"ts": None, "account": "alice"}),
    ("string_ts", _cancel(ts="5"), "`$.ts`", {"ts": None, "account": "alice"}),
    ("ts_above_int64", {"type": "tick", "ts": 2**63}, "`$.ts`", {"type": "tick", "ts": None}),
    ("negative_ts_on_tick", {"type": "tick", "ts": -5}, "`$.ts`", {"type": "tick", "ts": None}),
    # account
    ("missing_account", _cancel(account=_ABSENT), "`account`",
     {"type": "cancel_order", "ts": 5, "account": None, "client_order_id": "a-1"}),
    ("too_long_account", _cancel(account=TOO_LONG), "`$.account`",
     {"ts": 5, "account": None, "client_order_id": "a-1"}),
    ("empty_account", _cancel(account=""), "`$.account`", {"account": None}),
    ("account_with_space", _cancel(account="al ice"), "`$.account`", {"account": None}),
    ("account_with_slash", _cancel(account="alice/bob"), "`$.account`", {"account": None}),
    ("account_with_trailing_newline", _cancel(account="alice\n"), "`$.account`",
     {"account": None}),
    ("account_non_ascii", _cancel(account="\u00e5lice"), "`$.account`", {"account": None}),
    ("account_not_a_string", _cancel(account=17), "`$.account`", {"account": None}),
    ("deposit_bad_account", _deposit(account="al ice"), "`$.account`",
     {"type": "deposit", "account": None, "asset": "USDC", "amount": "10"}),
    ("mass_cancel_missing_account", {"type": "mass_cancel", "ts": 5}, "`account`",
     {"type": "mass_cancel", "account": None}),
    # client_order_id
    ("missing_client_order_id", _cancel(client_order_id=_ABSENT), "`client_order_id`",
     {"account": "alice", "client_order_id": None}),
    ("too_long_client_order_id", _new_order(client_order_id=TOO_LONG), "`$.client_order_id`",
     {"type": "new_order", "account": "alice", "client_order_id": None,
      "instrument": SYMBOL}),
    ("client_order_id_with_hash", _cancel(client_order_id="a#1"), "`$.client_order_id`",
     {"client_order_id": None}),
    ("client_order_id_not_a_string", _new_order(client_order_id=1), "`$.client_order_id`",
     {"client_order_id": None, "instrument": SYMBOL}),
    # unknown fields
    ("unknown_field_on_cancel", _cancel(note="user"), "`note`",
     {"type": "cancel_order", "ts": 5, "account": "alice", "client_order_id": "a-1"}),
    # v2 cancel reasons: only those PROTOCOL.md lists for the command
    ("cancel_reason_not_for_cancel_order", _cancel(reason="mass_cancel"), "reason",
     {"type": "cancel_order", "ts": 5, "account": "alice", "client_order_id": "a-1"}),
    ("cancel_reason_unknown_on_mass_cancel",
     {"type": "mass_cancel", "ts": 5, "account": "alice", "reason": "user"}, "reason",
     {"type": "mass_cancel", "ts": 5, "account": "alice"}),
    ("unknown_field_on_tick", {"type": "tick", "ts": 5, "account": "alice"}, "`account`",
     {"type": "tick", "ts": 5, "account": "alice"}),
    ("unknown_field_on_deposit", _deposit(memo="hi"), "`memo`",
     {"type": "deposit", "account": "alice", "asset": "USDC", "amount": "10"}),
    ("unknown_field_on_new_order", _new_order(leverage=10), "`leverage`",
     {"type": "new_order", "account": "alice", "client_order_id": "a-1",
      "instrument": SYMBOL}),
    # wrong JSON types
    ("quantity_as_string", _new_order(quantity="10"), "`$.quantity`",
     {"type": "new_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
      "instrument": SYMBOL}),
    ("quantity_as_whole_float", _new_order(quantity=10.0), "`$.quantity`",
     {"account": "alice", "instrument": SYMBOL}),
    ("quantity_as_fraction", _new_order(quantity=1.5), "`$.quantity`", {"account": "alice"}),
    ("quantity_as_bool", _new_order(quantity=True), "`$.quantity`", {"account": "alice"}),
    ("missing_quantity", _new_order(quantity=_ABSENT), "`quantity`", {"account": "alice"}),
    ("post_only_as_string", _new_order(post_only="true"), "`$.post_only`",
     {"account": "alice", "client_order_id": "a-1", "instrument": SYMBOL}),
    ("post_only_as_integer", _new_order(post_only=1), "`$.post_only`", {"account": "alice"}),
    ("price_as_number", _new_order(price=2.15), "`$.price`", {"instrument": SYMBOL}),
    ("expire_at_as_string", _new_order(time_in_force="gtd", expire_at="9"), "`$.expire_at`",
     {"instrument": SYMBOL}),
    ("instrument_as_number", _new_order(instrument=5), "`$.instrument`",
     {"account": "alice", "instrument": None}),
    ("amount_as_float", _deposit(amount=10.5), "`$.amount`",
     {"type": "deposit", "account": "alice", "asset": "USDC", "amount": None}),
    ("amount_as_bool", _deposit(amount=True), "`$.amount`", {"asset": "USDC", "amount": None}),
    ("asset_as_number", _deposit(asset=1), "`$.asset`", {"asset": None, "amount": "10"}),
    ("withdraw_amount_as_list",
     {"type": "withdraw", "ts": 5, "account": "alice", "asset": SYMBOL, "amount": [1]},
     "`$.amount`", {"type": "withdraw", "asset": SYMBOL, "amount": None}),
    ("new_quantity_as_string",
     {"type": "amend_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
      "new_quantity": "3"},
     "`$.new_quantity`", {"type": "amend_order", "account": "alice", "client_order_id": "a-1"}),
    ("new_price_as_number",
     {"type": "amend_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
      "new_price": 2.2},
     "`$.new_price`", {"client_order_id": "a-1"}),
    ("mass_cancel_instrument_as_number",
     {"type": "mass_cancel", "ts": 5, "account": "alice", "instrument": 3},
     "`$.instrument`", {"account": "alice", "instrument": None}),
    ("listing_fee_negative",
     {"type": "list_instrument", "ts": 5, "symbol": "X", "gpu": "H100", "region": "eu",
      "delivery_start": 10, "delivery_hours": 1, "tick_size": "0.01",
      "max_order_quantity": 10, "maker_fee_bps": -1, "taker_fee_bps": 0},
     "`$.maker_fee_bps`", {"type": "list_instrument", "ts": 5}),
    ("listing_bad_symbol",
     {"type": "list_instrument", "ts": 5, "symbol": "H100 eu", "gpu": "H100", "region": "eu",
      "delivery_start": 10, "delivery_hours": 1, "tick_size": "0.01",
      "max_order_quantity": 10, "maker_fee_bps": 0, "taker_fee_bps": 0},
     "`$.symbol`", {"type": "list_instrument"}),
    ("listing_tick_size_as_number",
     {"type": "list_instrument", "ts": 5, "symbol": "X", "gpu": "H100", "region": "eu",
      "delivery_start": 10, "delivery_hours": 1, "tick_size": 0.01,
      "max_order_quantity": 10, "maker_fee_bps": 0, "taker_fee_bps": 0},
     "`$.tick_size`", {"type": "list_instrument"}),
    # unknown enumeration values
    ("unknown_side", _new_order(side="long"), "`$.side`",
     {"type": "new_order", "ts": 5, "account": "alice", "client_order_id": "a-1",
      "instrument": SYMBOL}),
    ("side_in_capitals", _new_order(side="BUY"), "`$.side`", {"instrument": SYMBOL}),
    ("unknown_order_type", _new_order(order_type="stop"), "`$.order_type`",
     {"instrument": SYMBOL}),
    ("unknown_time_in_force", _new_order(time_in_force="day"), "`$.time_in_force`",
     {"instrument": SYMBOL}),
    ("unknown_stp", _new_order(stp="none"), "`$.stp`", {"instrument": SYMBOL}),
    ("missing_side", _new_order(side=_ABSENT), "`side`", {"instrument": SYMBOL}),
    # v2 Delivery
    ("listing_bond_as_number",
     {"type": "list_instrument", "ts": 5, "symbol": "X", "gpu": "H100", "region": "eu",
      "delivery_start": 10, "delivery_hours": 1, "tick_size": "0.01",
      "max_order_quantity": 10, "maker_fee_bps": 0, "taker_fee_bps": 0,
      "bond_per_gpu_hour": 3},
     "`$.bond_per_gpu_hour`", {"type": "list_instrument", "ts": 5}),
    ("issue_missing_account", _issue(account=_ABSENT), "`account`",
     {"type": "issue_capacity", "ts": 5, "account": None, "instrument": SYMBOL}),
    ("issue_bad_issue_id", _issue(issue_id="i 1"), "`$.issue_id`",
     {"type": "issue_capacity", "ts": 5, "account": "op"}),
    ("issue_too_long_issue_id", _issue(issue_id=TOO_LONG), "`$.issue_id`", {"account": "op"}),
    ("issue_missing_node_id", _issue(node_id=_ABSENT), "`node_id`", {"account": "op"}),
    ("issue_node_id_as_number", _issue(node_id=7), "`$.node_id`", {"account": "op"}),
    ("issue_instrument_as_number", _issue(instrument=7), "`$.instrument`",
     {"account": "op", "instrument": None}),
    ("issue_quantity_as_string", _issue(quantity="8"), "`$.quantity`", {"account": "op"}),
    ("issue_quantity_as_float", _issue(quantity=8.0), "`$.quantity`", {"account": "op"}),
    ("issue_unknown_field", _issue(bond="5"), "`bond`", {"type": "issue_capacity"}),
    ("report_missing_issue_id", _report(issue_id=_ABSENT), "`issue_id`",
     {"type": "delivery_report", "ts": 5}),
    ("report_bad_holder", _report(holder="al ice"), "`$.holder`",
     {"type": "delivery_report", "ts": 5, "account": None}),
    ("report_ppm_as_string", _report(delivered_ppm="900000"), "`$.delivered_ppm`",
     {"type": "delivery_report"}),
    ("report_ppm_as_float", _report(delivered_ppm=0.5), "`$.delivered_ppm`",
     {"type": "delivery_report"}),
    ("report_ppm_above_int64", _report(delivered_ppm=2**63), "`$.delivered_ppm`",
     {"type": "delivery_report", "ts": 5}),
    ("report_evidence_too_long", _report(evidence="e" * 129), "`$.evidence`",
     {"type": "delivery_report", "ts": 5}),
    ("report_evidence_as_number", _report(evidence=12), "`$.evidence`",
     {"type": "delivery_report"}),
    ("report_with_account", _report(account="alice"), "`account`",
     {"type": "delivery_report", "account": "alice"}),
    # v2 Strip orders
    ("strip_missing_account", _strip(account=_ABSENT), "`account`",
     {"type": "new_strip_order", "ts": 5, "account": None, "client_order_id": "s-1"}),
    ("strip_too_long_client_order_id", _strip(client_order_id=TOO_LONG),
     "`$.client_order_id`", {"account": "alice", "client_order_id": None}),
    ("strip_client_order_id_of_60", _strip(client_order_id="s" * 60), "`$.client_order_id`",
     {"account": "alice", "client_order_id": "s" * 60}),
    ("strip_unknown_side", _strip(side="long"), "`$.side`",
     {"type": "new_strip_order", "account": "alice", "client_order_id": "s-1"}),
    ("strip_instruments_as_string", _strip(instruments=SYMBOL), "`$.instruments`",
     {"account": "alice", "client_order_id": "s-1"}),
    ("strip_instrument_as_number", _strip(instruments=[SYMBOL, 7]), "`$.instruments[1]`",
     {"client_order_id": "s-1"}),
    ("strip_missing_instruments", _strip(instruments=_ABSENT), "`instruments`",
     {"client_order_id": "s-1"}),
    ("strip_quantity_as_string", _strip(quantity="8"), "`$.quantity`",
     {"client_order_id": "s-1"}),
    ("strip_quantity_as_float", _strip(quantity=8.0), "`$.quantity`",
     {"client_order_id": "s-1"}),
    ("strip_limit_total_as_number", _strip(limit_total=96), "`$.limit_total`",
     {"ts": 5, "client_order_id": "s-1"}),
    ("strip_missing_limit_total", _strip(limit_total=_ABSENT), "`limit_total`",
     {"client_order_id": "s-1"}),
    ("strip_unknown_field", _strip(time_in_force="gtc"), "`time_in_force`",
     {"type": "new_strip_order", "ts": 5, "account": "alice", "client_order_id": "s-1"}),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("value", "error_part", "salvaged"),
    [case[1:] for case in MALFORMED_CASES],
    ids=[case[0] for case in MALFORMED_CASES],
)
def test_malformed_command_salvages_what_is_well_formed(
    value: Any, error_part: str, salvaged: dict[str, Any], fmt: Format
) -> None:
    result = decode_command(_wire(value, fmt), fmt)
    assert isinstance(result, MalformedCommand)
    assert error_part in result.error
    for field, expected in salvaged.items():
        assert getattr(result, field) == expected, field


def test_malformed_command_carries_the_full_salvage() -> None:
    result = decode_command(msgspec.json.encode(_new_order(side="long", ts=9)))
    assert result == MalformedCommand(
        type="new_order",
        error="Invalid enum value 'long' - at `$.side`",
        ts=9,
        account="alice",
        client_order_id="a-1",
        instrument=SYMBOL,
    )


def test_malformed_deposit_echoes_string_and_integer_amounts() -> None:
    as_string = decode_command(msgspec.json.encode(_deposit(amount="1.5", note=1)))
    as_integer = decode_command(msgspec.json.encode(_deposit(asset=SYMBOL, amount=3, note=1)))
    assert isinstance(as_string, MalformedCommand)
    assert isinstance(as_integer, MalformedCommand)
    assert (as_string.asset, as_string.amount) == ("USDC", "1.5")
    assert (as_integer.asset, as_integer.amount) == (SYMBOL, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_identifiers_of_exactly_64_characters_are_well_formed(fmt: Format) -> None:
    longest = "A" * 32 + "z9_.:-" + "0" * 26
    assert len(longest) == 64
    command = decode_command(_wire(_cancel(account=longest, client_order_id=longest), fmt), fmt)
    assert command == CancelOrder(ts=5, account=longest, client_order_id=longest)


def test_a_wallet_address_is_a_valid_account() -> None:
    command = decode_command(msgspec.json.encode(_cancel(account=WALLET)))
    assert isinstance(command, CancelOrder)
    assert command.account == WALLET


def test_ts_bounds_are_zero_and_int64_max() -> None:
    assert decode_command(b'{"type":"tick","ts":0}') == Tick(ts=0)
    assert decode_command(msgspec.json.encode({"type": "tick", "ts": 2**63 - 1})) == Tick(
        ts=2**63 - 1
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"{", b'{"type":"tick","ts":1', b"{'type':'tick'}", b"\xff\xfe", b"[1,]"],
)
def test_bytes_that_are_not_json_decode_to_malformed_with_nothing_salvaged(data: bytes) -> None:
    result = decode_command(data)
    assert isinstance(result, MalformedCommand)
    assert result == MalformedCommand(type="", error=result.error)
    assert result.error.startswith("not json")


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\xa4type"])
def test_bytes_that_are_not_msgpack_decode_to_malformed(data: bytes) -> None:
    result = decode_command(data, "msgpack")
    assert isinstance(result, MalformedCommand)
    assert result == MalformedCommand(type="", error=result.error)
    assert result.error.startswith("not msgpack")


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b'"\x80"', "json"),
        (b'{"type":"tick","ts":1,"\x80":1}', "json"),
        (b'{"type":"deposit","ts":1,"account":"a","asset":"\xff","amount":"1"}', "json"),
        (b"\xa2\xff\xfe", "msgpack"),
        (b"\x82\xa4type\xa4tick\xa2ts\xa2\xff\xfe", "msgpack"),
        (b"\x81\xa2\xff\xfe\x01", "msgpack"),
    ],
)
def test_invalid_utf8_in_a_string_decodes_to_malformed(data: bytes, fmt: Format) -> None:
    result = decode_command(data, fmt)
    assert isinstance(result, MalformedCommand)


DEEP = 200_000


def _deep_json(where: str) -> bytes:
    nest = b"[" * DEEP + b"]" * DEEP
    if where == "first":
        return b'{"x":' + nest + b',"type":"tick","ts":1}'
    return b'{"type":"tick","ts":1,"x":' + nest + b"}"


def _deep_msgpack(where: str) -> bytes:
    nest = b"\x91" * DEEP + b"\x90"
    tick = msgspec.msgpack.encode("type") + msgspec.msgpack.encode("tick")
    if where == "first":
        return b"\x82" + msgspec.msgpack.encode("x") + nest + tick
    return b"\x82" + tick + msgspec.msgpack.encode("x") + nest


@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_deep_nesting_is_refused_whatever_the_recursion_limit(fmt: Format, where: str) -> None:
    """msgspec recurses in C up to the interpreter's recursion limit; with that limit raised,
    200k levels would overflow the C stack. Run in a child so a crash fails, not kills, pytest."""
    script = (
        "import sys; sys.setrecursionlimit(10**7)\n"
        "from tests.unit.test_protocol_codec import _deep_json, _deep_msgpack\n"
        "from protocol import decode_command\n"
        f"data = _deep_{fmt}({where!r})\n"
        f"print(decode_command(data, {fmt!r}).error)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "nested deeper than 32 levels"


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_nesting_up_to_the_cap_is_decoded_and_salvaged(fmt: Format) -> None:
    value: Any = 1
    for _ in range(31):
        value = [value]
    data = encode_value({"type": "tick", "ts": 5, "x": value}, fmt)
    result = decode_command(data, fmt)
    assert isinstance(result, MalformedCommand)
    assert result.ts == 5 and "x" in result.error


def encode_value(value: Any, fmt: Format) -> bytes:
    return msgspec.json.encode(value) if fmt == "json" else msgspec.msgpack.encode(value)


def test_duplicate_keys_keep_the_last_value() -> None:
    assert decode_command(b'{"type":"tick","ts":1,"ts":2}') == Tick(ts=2)


# --- malformed events --------------------------------------------------------------------------

_GOOD_EVENT = msgspec.structs.asdict(EVENT_EXAMPLES[1]) | {"type": "instrument_closed"}

MALFORMED_EVENTS: list[tuple[str, Any]] = [
    ("array", [1]),
    ("string", "instrument_closed"),
    ("missing_type", {k: v for k, v in _GOOD_EVENT.items() if k != "type"}),
    ("unknown_type", _GOOD_EVENT | {"type": "instrument_opened"}),
    ("missing_seq", {k: v for k, v in _GOOD_EVENT.items() if k != "seq"}),
    ("missing_symbol", {k: v for k, v in _GOOD_EVENT.items() if k != "symbol"}),
    ("unknown_field", _GOOD_EVENT | {"extra": 1}),
    ("seq_as_string", _GOOD_EVENT | {"seq": "1"}),
    ("ts_as_float", _GOOD_EVENT | {"ts": 1.0}),
    ("symbol_as_number", _GOOD_EVENT | {"symbol": 1}),
    ("command_as_a_name", {"type": "tick", "ts": 1}),
    ("post_only_as_string",
     msgspec.structs.asdict(EVENT_EXAMPLES[6]) | {"type": "order_accepted", "post_only": "no"}),
    ("quantity_as_string",
     msgspec.structs.asdict(EVENT_EXAMPLES[11]) | {"type": "trade", "quantity": "5"}),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "value", [case[1] for case in MALFORMED_EVENTS], ids=[case[0] for case in MALFORMED_EVENTS]
)
def test_decode_event_raises_validation_error_on_malformed_events(value: Any, fmt: Format) -> None:
    assert decode_event(_wire(_GOOD_EVENT, fmt), fmt) == EVENT_EXAMPLES[1]
    with pytest.raises(msgspec.ValidationError):
        decode_event(_wire(value, fmt), fmt)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(b"", "json"), (b"not json", "json"), (b'{"type":', "json"), (b"", "msgpack"),
     (b"\xc1", "msgpack")],
)
def test_decode_event_raises_decode_error_on_undecodable_bytes(data: bytes, fmt: Format) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(data, fmt)
