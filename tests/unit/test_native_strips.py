"""Strip orders (PROTOCOL.md v2) in the native core: the same bytes as the Python core.

Each test feeds the same command records to both cores, one at a time, and asserts after
every record the same event bytes, the same final state (keys in the same order) and the
same snapshot bytes: every rejection reason of `new_strip_order` and its malformed forms,
the legs' trades and their names, fees, the account's own orders passed over, a strip of
168 legs, a rejected strip that leaves the state as it was, snapshots restored across the
cores, and seeded random streams.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from matching_engine.cores import NativeCore, PythonCore
from protocol.commands import STRIP_LEGS_MAX
from tests.engine_helpers import outcomes, run_both

SECOND = 1_000_000_000
HOUR = 3_600 * SECOND
START = 100 * SECOND  # the first delivery hour; instruments close when time reaches it


def command(kind: str, ts: int, **fields: Any) -> bytes:
    return msgspec.json.encode({"type": kind, "ts": ts, **fields})


def listing(symbol: str, hour: int, gpu: str = "H100", region: str = "eu",
            delivery_hours: int = 1, max_order_quantity: int = 100, maker_fee_bps: int = 10,
            taker_fee_bps: int = 25) -> bytes:
    return command("list_instrument", 1, symbol=symbol, gpu=gpu, region=region,
                   delivery_start=START + hour * HOUR, delivery_hours=delivery_hours,
                   tick_size="0.01", max_order_quantity=max_order_quantity,
                   maker_fee_bps=maker_fee_bps, taker_fee_bps=taker_fee_bps)


def deposit(account: str, asset: str, amount: Any, ts: int = 2) -> bytes:
    return command("deposit", ts, account=account, asset=asset, amount=amount)


def order(account: str, client_order_id: str, instrument: str, side: str, price: str,
          quantity: int, ts: int = 3) -> bytes:
    return command("new_order", ts, account=account, client_order_id=client_order_id,
                   instrument=instrument, side=side, order_type="limit", price=price,
                   quantity=quantity)


def strip(account: Any, client_order_id: Any, side: Any, instruments: Any, quantity: Any,
          limit_total: Any, ts: int = 4, **fields: Any) -> bytes:
    return command("new_strip_order", ts, account=account, client_order_id=client_order_id,
                   side=side, instruments=instruments, quantity=quantity,
                   limit_total=limit_total, **fields)


def hours(count: int, prefix: str = "H") -> list[str]:
    return [f"{prefix}-{hour}" for hour in range(count)]


def market(count: int = 4) -> list[bytes]:
    """`count` consecutive hours H-0.. of H100 in eu, an hour of another class and one of
    another region right after them, three funded accounts and asks from two of them."""
    records = [listing(symbol, hour) for hour, symbol in enumerate(hours(count))]
    records += [listing("A-next", count, gpu="A100"), listing("W-next", count, region="us")]
    for account in ("a", "b", "c"):
        records.append(deposit(account, "USDC", "1000"))
        records += [deposit(account, symbol, 50) for symbol in hours(count)]
    for symbol in hours(count):
        records += [order("b", f"{symbol}-b", symbol, "sell", "1.25", 3),
                    order("c", f"{symbol}-c", symbol, "sell", "1.5", 3),
                    order("c", f"{symbol}-cb", symbol, "buy", "1", 3)]
    return records


# ----------------------------------------------------------------------------- checks

CHECKS = [
    *market(),
    listing("X-0", 10, delivery_hours=2),  # X-0 then X-1: consecutive by X-0's two hours
    listing("X-1", 12),
    listing("X-1bis", 11),
    strip("a", "one-leg", "buy", ["H-0"], 1, "10"),
    strip("a", "too-many", "buy", [f"L-{i}" for i in range(STRIP_LEGS_MAX + 1)], 1, "10"),
    strip("a", "twice", "buy", ["H-0", "H-1", "H-0"], 1, "10"),
    strip("a", "twice-unknown", "buy", ["NOPE", "H-1", "NOPE"], 1, "10"),  # before unknown
    strip("a", "empty", "buy", [], 1, "10"),
    strip("a", "unknown", "buy", ["H-0", "NOPE"], 1, "10"),
    strip("a", "unknown-syntax", "buy", ["H-0", "not a symbol"], 1, "10"),
    strip("a", "gap", "buy", ["H-0", "H-2"], 1, "10"),
    strip("a", "backwards", "buy", ["H-1", "H-0"], 1, "10"),
    strip("a", "class", "buy", ["H-3", "A-next"], 1, "10"),
    strip("a", "region", "buy", ["H-3", "W-next"], 1, "10"),
    strip("a", "long-hours", "buy", ["X-0", "X-1bis"], 1, "10"),
    strip("a", "unknown-before-gap", "buy", ["H-0", "H-2", "NOPE"], 1, "10"),
    strip("a", "zero", "buy", ["H-0", "H-1"], 0, "10"),
    strip("a", "negative", "buy", ["H-0", "H-1"], -(10**30), "10"),
    strip("a", "too-much", "buy", ["H-0", "H-1"], 101, "10"),
    strip("a", "huge", "buy", ["H-0", "H-1"], 10**40, "10"),
    *(strip("a", f"price-{index}", "buy", ["H-0", "H-1"], 1, limit_total)
      for index, limit_total in enumerate(
          ["0", "0.0", "-1", "1.0000001", "abc", "1e3", "", " 1", "1000000000000.000001"])),
    strip("a", "quantity-before-price", "buy", ["H-0", "H-1"], 0, "x"),
    strip("a", "liquidity", "buy", ["H-0", "H-1"], 7, "1000"),  # 6 from others (a's own: 0)
    strip("c", "liquidity-own", "sell", ["H-0", "H-1"], 1, "0.01"),  # only c's own bids
    strip("a", "limit-buy", "buy", ["H-0", "H-1"], 4, "10.49"),  # 2 x (3.75 + 1.5) > 10.49
    strip("b", "limit-sell", "sell", ["H-0", "H-1"], 3, "6.01"),  # 6 < 6.01
    strip("nobody", "funds-unknown", "buy", ["H-0", "H-1"], 1, "10"),
    strip("nobody", "funds-sell", "sell", ["H-0", "H-1"], 1, "1"),
    strip("a", "liquidity-before-limit", "buy", ["H-0", "H-1"], 7, "0.01"),
    deposit("poor", "USDC", "5.012499"),  # 4 x 1.25 = 5, plus 0.0125 of fees: a micro short
    deposit("poor", "H-0", 3),
    strip("poor", "funds-buy", "buy", ["H-0", "H-1"], 2, "5"),
    strip("poor", "funds-sell-leg", "sell", ["H-0", "H-1"], 3, "1"),
    strip("a", "limit-buy-exact", "buy", ["H-2", "H-3"], 4, "10.5"),
    strip("b", "limit-sell-exact", "sell", ["H-0", "H-1"], 3, "6"),
    command("tick", START),  # H-0 closes
    strip("a", "closed", "buy", ["H-0", "H-1"], 1, "10", ts=START),
    strip("a", "closed-before-quantity", "buy", ["H-0", "H-1"], 0, "10", ts=START),
]


def test_every_check_of_a_strip_gives_the_same_bytes_in_both_cores() -> None:
    events = run_both(CHECKS)
    reasons = {event["client_order_id"]: event["reason"]
               for event in events if event["type"] == "strip_rejected"}
    assert reasons == {
        "one-leg": "invalid_order", "too-many": "invalid_order", "twice": "invalid_order",
        "twice-unknown": "invalid_order", "empty": "invalid_order",
        "unknown": "unknown_instrument", "unknown-syntax": "unknown_instrument",
        "gap": "invalid_order", "backwards": "invalid_order", "class": "invalid_order",
        "region": "invalid_order", "long-hours": "invalid_order",
        "unknown-before-gap": "unknown_instrument",
        "zero": "invalid_quantity", "negative": "invalid_quantity",
        "too-much": "invalid_quantity", "huge": "invalid_quantity",
        **{f"price-{index}": "invalid_price" for index in range(9)},
        "quantity-before-price": "invalid_quantity",
        "liquidity": "insufficient_liquidity", "liquidity-own": "insufficient_liquidity",
        "limit-buy": "limit_exceeded", "limit-sell": "limit_exceeded",
        "funds-unknown": "insufficient_funds", "funds-sell": "insufficient_funds",
        "liquidity-before-limit": "insufficient_liquidity",
        "funds-buy": "insufficient_funds", "funds-sell-leg": "insufficient_funds",
        "closed": "instrument_closed", "closed-before-quantity": "instrument_closed",
    }
    done = [event["client_order_id"] for event in events if event["type"] == "strip_done"]
    assert done == ["limit-buy-exact", "limit-sell-exact"]


def test_each_leg_follows_the_hours_of_the_leg_before_it() -> None:
    symbols = ["X-0", "X-1", "X-2"]
    records = [listing("X-0", 0, delivery_hours=2), listing("X-1", 2, delivery_hours=3),
               listing("X-2", 5), deposit("b", "USDC", "100")]
    records += [deposit("a", symbol, 1) for symbol in symbols]
    records += [order("a", f"ask-{symbol}", symbol, "sell", "1", 1) for symbol in symbols]
    events = run_both([*records, strip("b", "s", "buy", symbols, 1, "3")])
    assert events[-1]["type"] == "strip_done"


MALFORMED = [
    # command_rejected: the account or the order id is missing or not of their syntax
    strip("a", "x" * 60, "buy", ["H-0", "H-1"], 1, "10"),
    strip("a", "x" * 64, "buy", ["H-0", "H-1"], 1, "10"),
    strip("a", "x" * 65, "buy", ["H-0", "H-1"], 1, "10"),
    strip("a", "x" * 64, "buy", "H-0", 1, 10),  # too long wins over the rest
    strip("a", "bad id", "buy", ["H-0", "H-1"], 1, "10"),
    strip("bad account", "s", "buy", ["H-0", "H-1"], 1, "10"),
    strip(None, "s", "buy", ["H-0", "H-1"], 1, "10"),
    strip("a", 7, "buy", ["H-0", "H-1"], 1, "10"),
    command("new_strip_order", 4, account="a", side="buy", instruments=["H-0", "H-1"],
            quantity=1, limit_total="10"),
    b'{"type":"new_strip_order","account":"a","client_order_id":"no-ts","side":"buy",'
    b'"instruments":["H-0","H-1"],"quantity":1,"limit_total":"10"}',
    # strip_rejected invalid_order: any other field missing or of the wrong type
    strip("a", "x" * 59, "buy", ["H-0", 3], 1, "10"),
    strip("a", "side", "hold", ["H-0", "H-1"], 1, "10"),
    strip("a", "side-null", None, ["H-0", "H-1"], 1, "10"),
    strip("a", "str", "buy", "H-0,H-1", 1, "10"),
    strip("a", "null", "buy", None, 1, "10"),
    strip("a", "object", "buy", {"H-0": 1}, 1, "10"),
    strip("a", "nested", "buy", [["H-0"], "H-1"], 1, "10"),
    strip("a", "nulls", "buy", ["H-0", None], 1, "10"),
    strip("a", "float", "buy", ["H-0", "H-1"], 1.0, "10"),
    strip("a", "text-quantity", "buy", ["H-0", "H-1"], "1", "10"),
    strip("a", "bool", "buy", ["H-0", "H-1"], True, "10"),
    strip("a", "number-limit", "buy", ["H-0", "H-1"], 1, 10),
    strip("a", "null-limit", "buy", ["H-0", "H-1"], 1, None),
    strip("a", "extra", "buy", ["H-0", "H-1"], 1, "10", price="1"),
    command("new_strip_order", 4, account="a", client_order_id="missing", side="buy",
            instruments=["H-0", "H-1"], quantity=1),
    command("new_strip_order", 4, account="a", client_order_id="missing-legs", side="buy",
            quantity=1, limit_total="10"),
    # decoded alike however written: escapes, spaces, key order, duplicate keys
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"esc","side":"buy",'
    b'"instruments":["H\\u002d0","H-\\u0031"],"quantity":1,"limit_total":"96.50"}',
    b'{ "ts" : 5 , "instruments" : [ "H-0" , "H-1" ] , "type" : "new_strip_order" , '
    b'"quantity" : 1, "limit_total":"10.000000", "side":"buy", "account":"a", '
    b'"client_order_id":"spaced" }',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"dup","side":"buy",'
    b'"instruments":["NOPE"],"instruments":["H-2","H-3"],"quantity":1,"limit_total":"10"}',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"dup-bad","side":"buy",'
    b'"instruments":[1],"instruments":["H-2","H-3"],"quantity":1,"limit_total":"10"}',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"e\\u0301",'
    b'"side":"buy","instruments":["H-2","H-3"],"quantity":1,"limit_total":"10"}',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"bad-utf8","side":"buy",'
    b'"instruments":["H-2","\xff"],"quantity":1,"limit_total":"10"}',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"deep","side":"buy",'
    b'"instruments":["H-2","H-3",' + b"[" * 40 + b"]" * 40 + b'],"quantity":1,'
    b'"limit_total":"10"}',
    b'{"type":"new_strip_order","ts":5,"account":"a","client_order_id":"unicode","side":"buy",'
    b'"instruments":["H-2","\xc3\xa9"],"quantity":1,"limit_total":"10"}',
]


def test_every_malformed_strip_gives_the_same_bytes_in_both_cores() -> None:
    python, native = PythonCore(), NativeCore()
    run_both(market(), python, native)
    events = run_both(MALFORMED, python, native)
    kinds = [(event["type"], event.get("client_order_id"), event.get("reason"))
             for event in events if event["type"] not in ("trade", "strip_accepted")]
    assert kinds == [
        *[("command_rejected", None, "invalid_command")] * 10,
        ("strip_rejected", "x" * 59, "invalid_order"),
        *[("strip_rejected", name, "invalid_order") for name in (
            "side", "side-null", "str", "null", "object", "nested", "nulls", "float",
            "text-quantity", "bool", "number-limit", "null-limit", "extra", "missing",
            "missing-legs")],
        ("strip_done", "esc", None),
        ("strip_done", "spaced", None),
        ("strip_done", "dup", None),
        ("strip_rejected", "dup-bad", "invalid_order"),
        ("command_rejected", None, "invalid_command"),  # not an identifier
        ("command_rejected", None, "invalid_command"),  # not UTF-8: nothing salvaged
        ("command_rejected", None, "invalid_command"),  # nested past 32: nothing salvaged
        ("strip_rejected", "unicode", "unknown_instrument"),
    ]
    accepted = [event for event in events if event["type"] == "strip_accepted"]
    assert [(event["instruments"], event["limit_total"]) for event in accepted] == [
        (["H-0", "H-1"], "96.5"), (["H-0", "H-1"], "10"), (["H-2", "H-3"], "10")]


# -------------------------------------------------------------------------- execution

def test_leg_trades_name_their_legs_and_strip_done_sums_notional_and_taker_fees() -> None:
    records = [*market(), order("a", "s", "H-0", "buy", "0.5", 1),  # an open order named "s"
               strip("a", "s", "buy", ["H-0", "H-1", "H-2"], 4, "15.750")]
    events = run_both(records)
    accepted = next(event for event in events if event["type"] == "strip_accepted")
    order_ids = [int(event["order_id"]) for event in events if event["type"] == "order_accepted"]
    assert accepted["strip_id"] == str(max(order_ids) + 1)
    assert (accepted["instruments"], accepted["quantity"], accepted["limit_total"]) == (
        ["H-0", "H-1", "H-2"], 4, "15.75")
    trades = [event for event in events if event["type"] == "trade"]
    assert [(t["instrument"], t["price"], t["quantity"], t["taker_client_order_id"],
             t["maker_client_order_id"], t["taker_fee"], t["maker_fee"]) for t in trades] == [
        (f"H-{leg}", price, quantity, f"s:{leg}", f"H-{leg}-{maker}", taker_fee, maker_fee)
        for leg in range(3)
        for price, quantity, maker, taker_fee, maker_fee in (
            ("1.25", 3, "b", "0.009375", "0.00375"), ("1.5", 1, "c", "0.00375", "0.0015"))]
    assert {(t["taker_order_id"], t["taker_account"], t["aggressor_side"]) for t in trades} == {
        (accepted["strip_id"], "a", "buy")}
    done = events[-1]
    assert (done["type"], done["notional"], done["fees"]) == ("strip_done", "15.75", "0.039375")
    # b's asks, filled whole, leave the book with their trade (no cancel)
    assert "order_canceled" not in {event["type"] for event in events}


def test_a_sell_strip_takes_the_bids_and_pays_its_fees_out_of_the_proceeds() -> None:
    records = [*market(), order("b", "bid-b", "H-1", "buy", "1.2", 2),
               strip("a", "sell", "sell", ["H-0", "H-1"], 3, "5.5")]
    python = PythonCore()
    events = run_both(records, python)
    trades = [event for event in events if event["type"] == "trade"]
    assert [(t["instrument"], t["price"], t["quantity"], t["taker_client_order_id"])
            for t in trades] == [("H-0", "1", 3, "sell:0"), ("H-1", "1.2", 2, "sell:1"),
                                 ("H-1", "1", 1, "sell:1")]
    assert events[-1]["notional"] == "6.4" and events[-1]["fees"] == "0.016"
    balances = python.final_state()["accounts"]["a"]
    assert balances["USDC"] == {"available": "1006.384", "held": "0"}


def test_a_strip_passes_over_its_own_orders_without_a_self_trade_event() -> None:
    records = [*market(),
               order("a", "own-best", "H-0", "sell", "1.1", 5),  # the best ask
               order("a", "own-behind", "H-1", "sell", "1.25", 5),  # behind b's, before c's
               strip("a", "s", "buy", ["H-0", "H-1"], 5, "100")]
    python = PythonCore()
    events = run_both(records, python)
    strip_events = events[next(i for i, e in enumerate(events)
                               if e["type"] == "strip_accepted"):]
    assert [event["type"] for event in strip_events] == [
        "strip_accepted", "trade", "trade", "trade", "trade", "strip_done"]
    assert [(t["maker_account"], t["price"]) for t in strip_events if t["type"] == "trade"] == [
        ("b", "1.25"), ("c", "1.5")] * 2
    own = {(o["client_order_id"], o["remaining_quantity"])
           for o in python.final_state()["open_orders"] if o["account"] == "a"}
    assert own == {("own-best", 5), ("own-behind", 5)}


def test_a_strip_of_168_legs_fills_every_leg() -> None:
    count = STRIP_LEGS_MAX
    records = [listing(symbol, hour, max_order_quantity=10)
               for hour, symbol in enumerate(hours(count))]
    records += [deposit("maker", symbol, 5) for symbol in hours(count)]
    records += [deposit("taker", "USDC", "10000")]
    records += [order("maker", f"ask-{hour}", symbol, "sell", f"{1 + hour % 7}.5", 2)
                for hour, symbol in enumerate(hours(count))]
    records += [strip("taker", "s" * 59, "buy", hours(count), 2, "5000"),
                strip("taker", "too-many", "buy", [*hours(count), "H-168"], 1, "1")]
    events = run_both(records)
    trades = [event for event in events if event["type"] == "trade"]
    assert [t["taker_client_order_id"] for t in trades] == [
        f"{'s' * 59}:{leg}" for leg in range(count)]
    assert len(trades[-1]["taker_client_order_id"]) == 63
    assert (events[-1]["type"], events[-1]["reason"]) == ("strip_rejected", "invalid_order")


def without_seq(snapshot: bytes) -> tuple[int, dict[str, Any]]:
    document: dict[str, Any] = msgspec.msgpack.decode(snapshot)
    return document.pop("seq"), document


def test_a_rejected_strip_leaves_the_snapshot_as_it_was_but_for_its_event() -> None:
    python, native = PythonCore(), NativeCore()
    run_both(market(), python, native)
    rejected = [strip("a", f"r{index}", *fields, ts=3) for index, fields in enumerate([
        ("buy", ["H-0"], 1, "1"), ("buy", ["H-0", "NOPE"], 1, "1"),
        ("buy", ["H-0", "H-2"], 1, "1"), ("buy", ["H-0", "H-1"], 0, "1"),
        ("buy", ["H-0", "H-1"], 1, "0"), ("buy", ["H-0", "H-1"], 7, "100"),
        ("buy", ["H-0", "H-1"], 6, "1"), ("sell", ["H-0", "H-1"], 3, "7"),
    ])]
    rejected += [strip("a", "r-extra", "buy", ["H-0", "H-1"], 6, "1000", ts=3, extra=1),
                 strip("nobody", "r-funds", "buy", ["H-0", "H-1"], 6, "1000", ts=3),
                 strip("a", "x" * 60, "buy", ["H-0", "H-1"], 6, "1000", ts=3)]
    for record in rejected:
        seq, before = without_seq(python.snapshot())
        events = run_both([record], python, native)
        assert [event["type"] for event in events] in (["strip_rejected"],
                                                       ["command_rejected"]), record
        seq_after, after = without_seq(native.snapshot())
        assert (seq_after, after) == (seq + 1, before), record


def strip_records(count: int) -> list[bytes]:
    """Market of `count` hours, a few strips that trade, then a close."""
    return [*market(count),
            strip("a", "s1", "buy", hours(2), 2, "100"),
            order("a", "rest", "H-1", "sell", "2", 4),
            strip("b", "s2", "buy", hours(3), 2, "100", ts=5),
            strip("b", "s3", "sell", hours(3)[1:], 1, "1", ts=6),
            command("tick", START),
            strip("c", "s4", "buy", hours(3)[1:], 1, "100", ts=START + 1)]


def test_a_snapshot_taken_between_strips_restores_in_either_core_and_goes_on_alike() -> None:
    records = strip_records(3)
    uninterrupted = PythonCore()
    expected = [uninterrupted.apply_records([record]) for record in records]
    final = uninterrupted.snapshot()
    for cut in range(len(records) - 6, len(records) + 1):
        python, native = PythonCore(), NativeCore()
        run_both(records[:cut], python, native)
        snapshot = native.snapshot()
        for restored in (PythonCore.restore(snapshot), NativeCore.restore(snapshot)):
            went_on = [restored.apply_records([record]) for record in records[cut:]]
            assert went_on == expected[cut:], (cut, restored.name)
            assert restored.snapshot() == final, (cut, restored.name)
            assert restored.validate() is None


# ---------------------------------------------------------------------- random streams

def random_stream(seed: int, count: int) -> list[bytes]:
    """Two classes of consecutive hours (one with two-hour legs), deposits, books seeded with
    resting orders, then orders (most resting, some crossing), cancels, ticks that close the
    first hours, and strips of random legs, sides, quantities and limits, well formed or
    not, some from the fee account or from nobody."""
    rng = random.Random(seed)
    accounts = ["a", "b", "c", "fees"]
    symbols = hours(6) + hours(4, "L")
    records = [listing(symbol, hour, max_order_quantity=20, maker_fee_bps=rng.choice([0, 7]),
                       taker_fee_bps=rng.choice([0, 13, 1000]))
               for hour, symbol in enumerate(hours(6))]
    records += [listing(symbol, 2 * hour, gpu="L4", delivery_hours=2)
                for hour, symbol in enumerate(hours(4, "L"))]
    records += [deposit(account, "USDC", str(rng.randint(0, 400)), ts=1) for account in accounts]
    records += [deposit(account, symbol, rng.randint(1, 30), ts=1)
                for account in accounts for symbol in symbols if rng.random() < 0.7]
    records += [order(rng.choice(accounts), f"seed-{symbol}-{side}-{index}", symbol, side,
                      price, rng.randint(1, 8), ts=2)
                for symbol in symbols for index in range(2)
                for side, price in (("buy", "0.75"), ("sell", "1.5"))]
    ts = 2
    order_ids: list[tuple[str, str]] = []
    for index in range(count):
        ts += rng.randint(0, SECOND // 2)
        account = rng.choice(accounts)
        draw = rng.random()
        if draw < 0.6:
            side = rng.choice(["buy", "sell"])
            prices = ["0.5", "0.75", "1"] if side == "buy" else ["1.25", "1.5", "2"]
            price = rng.choice(prices) if rng.random() < 0.9 else "1.25"  # some cross
            order_ids.append((account, f"o{index}"))
            records.append(order(account, f"o{index}", rng.choice(symbols), side, price,
                                 rng.randint(1, 8), ts=ts))
        elif draw < 0.67 and order_ids:
            owner, client_order_id = rng.choice(order_ids)
            records.append(command("cancel_order", ts, account=owner,
                                   client_order_id=client_order_id))
        elif draw < 0.98:
            records.append(random_strip(rng, account, index, ts))
        else:
            ts += rng.choice([0, HOUR])  # the first hours close
            records.append(command("tick", ts))
    return records


def random_strip(rng: random.Random, account: str, index: int, ts: int) -> bytes:
    prefix, length = rng.choice([("H", 6), ("L", 4)])
    first = rng.randint(0, length - 2)
    legs = [f"{prefix}-{hour}" for hour in range(first, rng.randint(first + 2, length))]
    if rng.random() < 0.1:
        legs.insert(rng.randint(0, len(legs)), rng.choice(["H-0", "L-1", "NOPE", "H-6"]))
    client_order_id = rng.choice([f"s{index}"] * 6 + [f"o{index - 1}", "x" * 59, "x" * 60])
    fields: dict[str, Any] = {
        "side": rng.choice(["buy", "sell"]),
        "instruments": legs,
        "quantity": rng.choice([1, 1, 2, 3, 5, 0, 21]),
        "limit_total": rng.choice(["1", "5", "20", "60", "0.5", "1000", "0", "1.0000001"]),
    }
    if rng.random() < 0.05:
        fields[rng.choice(list(fields))] = rng.choice([None, 1, "1", [1]])
    owner = rng.choice([account, account, "nobody"])
    return strip(owner, client_order_id, ts=ts, **fields)


def test_random_streams_with_strips_give_the_same_bytes_in_both_cores() -> None:
    seen: set[tuple[str, str | None]] = set()
    for seed in range(20):
        seen |= outcomes(run_both(random_stream(seed, 150)))
    assert {("strip_done", None), ("strip_rejected", "invalid_order"),
            ("strip_rejected", "unknown_instrument"), ("strip_rejected", "instrument_closed"),
            ("strip_rejected", "invalid_quantity"), ("strip_rejected", "invalid_price"),
            ("strip_rejected", "insufficient_liquidity"), ("strip_rejected", "limit_exceeded"),
            ("strip_rejected", "insufficient_funds"),
            ("command_rejected", "invalid_command")} <= seen
