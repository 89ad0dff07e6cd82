"""Delivery (PROTOCOL.md v2) in the native core: the same bytes as the Python core.

Each test feeds the same command records to both cores, one at a time, and asserts after
every record the same event bytes, the same final state (keys in the same order) and the
same snapshot bytes: every rejection reason of `issue_capacity` and `delivery_report` and
their malformed forms, every step of the close of a deliverable instrument, a bond of 0,
an instrument listed without a bond, snapshots taken mid-life and restored in either core,
version-1 snapshots, and seeded random streams.

The native module must be built (`make native`); without it these tests fail, never skip.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from matching_engine.cores import NativeCore, PythonCore
from tests.engine_helpers import outcomes, run_both

SECOND = 1_000_000_000
CLOSE = 100 * SECOND


def command(kind: str, ts: int, **fields: Any) -> bytes:
    return msgspec.json.encode({"type": kind, "ts": ts, **fields})


def listing(symbol: str, bond: Any = None, delivery_start: int = CLOSE, **fields: Any) -> bytes:
    extra = {} if bond is None else {"bond_per_gpu_hour": bond}
    return command("list_instrument", 1, symbol=symbol, gpu="H100-SXM-80GB", region="eu",
                   delivery_start=delivery_start, delivery_hours=2, tick_size="0.01",
                   max_order_quantity=100, maker_fee_bps=0, taker_fee_bps=0, **extra, **fields)


def deposit(account: str, asset: str, amount: Any, ts: int = 2) -> bytes:
    return command("deposit", ts, account=account, asset=asset, amount=amount)


def issue(account: str, issue_id: str, instrument: Any, quantity: Any, ts: int = 3,
          node_id: str = "node-1") -> bytes:
    return command("issue_capacity", ts, account=account, issue_id=issue_id,
                   instrument=instrument, node_id=node_id, quantity=quantity)


def report(issue_id: str, holder: str, ppm: Any, ts: int = CLOSE + 1, **fields: Any) -> bytes:
    return command("delivery_report", ts, issue_id=issue_id, holder=holder,
                   delivered_ppm=ppm, **fields)


def order(account: str, client_order_id: str, instrument: str, side: str, price: str,
          quantity: int, ts: int = 5) -> bytes:
    return command("new_order", ts, account=account, client_order_id=client_order_id,
                   instrument=instrument, side=side, order_type="limit", price=price,
                   quantity=quantity)


def tick(ts: int) -> bytes:
    return command("tick", ts)


# ------------------------------------------------------------- commands and their checks

CHECKS = [
    listing("D-1", bond="3.000"),
    listing("D-0", bond="0"),
    listing("V-1"),
    listing("D-1", bond="1"),  # duplicate_instrument
    listing("B-1", bond="-1"),
    listing("B-2", bond=3),
    listing("B-3", bond="1.0000001"),
    listing("B-4", bond=None),
    command("list_instrument", 1, symbol="B-5", gpu="H100", region="eu", delivery_start=CLOSE,
            delivery_hours=1, tick_size="0.01", max_order_quantity=9, maker_fee_bps=0,
            taker_fee_bps=0, bond_per_gpu_hour=None),
    deposit("op", "USDC", "100"),
    deposit("poor", "USDC", "1"),
    issue("op", "i1", "D-1", 10),
    issue("op", "i1", "D-1", 1),  # duplicate_issue
    issue("op", "i2", "NOPE", 1),
    issue("op", "i2", "V-1", 1),  # not_deliverable
    issue("op", "i2", "D-1", 0),
    issue("op", "i2", "D-1", 101),
    issue("op", "i2", "D-1", -(10**30)),
    issue("poor", "i2", "D-1", 1),  # insufficient_funds: 3 > 1
    issue("nobody", "i2", "D-1", 1),
    issue("nobody", "i2", "D-0", 100),  # a bond of 0 always passes
    issue("op", "bad id", "D-1", 1),
    issue("op", "i3", "D-1", 1, node_id=""),
    issue("op", "i3", 7, 1),
    issue("op", "i3", "D-1", 1.0),
    issue("op", "i3", "D-1", "1"),
    command("issue_capacity", 3, account="op", issue_id="i3", instrument="D-1", node_id="n"),
    command("issue_capacity", 3, account="op", issue_id="i3", instrument="D-1", node_id="n",
            quantity=1, extra=True),
    report("i1", "op", 0, ts=4),  # not_assigned: still open
    report("nope", "op", 0, ts=4),
    tick(CLOSE),
    issue("op", "i4", "D-1", 1, ts=CLOSE),  # instrument_closed
    deposit("op", "D-1", "x", ts=CLOSE),  # instrument_closed before invalid_amount
    command("withdraw", CLOSE, account="op", asset="D-1", amount=1),
    deposit("op", "V-1", 1, ts=CLOSE),  # a v1 instrument's token: as in v1
    report("i2", "nobody", 0),  # the issuer's own: released, not assigned
    report("i1", "op", 2**63 - 1, evidence="x"),
    report("i1", "op", 2**63),
    report("i1", "op", -(2**63) - 1),
    report("i1", "op", 5, evidence="x" * 129),
    report("i1", "op", 5, evidence="é" * 128),
    report("i1", "op", 5, evidence=None),
    report("i1", "op", "5"),
    command("delivery_report", CLOSE, issue_id="i1", delivered_ppm=5),
    command("delivery_report", CLOSE, issue_id="i1", holder="bad holder", delivered_ppm=5),
]


def test_every_check_of_the_delivery_commands_gives_the_same_bytes() -> None:
    events = run_both(CHECKS)
    assert {
        ("issue_rejected", reason) for reason in (
            "duplicate_issue", "unknown_instrument", "not_deliverable", "instrument_closed",
            "invalid_quantity", "insufficient_funds")
    } | {
        ("report_rejected", "not_assigned"), ("report_rejected", "unknown_issue"),
        ("deposit_rejected", "instrument_closed"), ("withdrawal_rejected", "instrument_closed"),
        ("command_rejected", "invalid_command"), ("command_rejected", "duplicate_instrument"),
    } <= outcomes(events)
    listed = [event for event in events if event["type"] == "instrument_listed"]
    assert [event.get("bond_per_gpu_hour") for event in listed] == ["3", "0", None, None, None]


def test_reports_settle_once_and_reject_in_their_order() -> None:
    records = [
        listing("D-1", bond="2.5"),
        deposit("op", "USDC", "1000"),
        issue("op", "i1", "D-1", 30),
        command("withdraw", 4, account="op", asset="D-1", amount=30),
        deposit("holder", "D-1", 7, ts=4),
        tick(CLOSE),
        report("i1", "holder", 1_000_001),
        report("i1", "holder", -1),
        report("i1", "holder", 333_333, evidence='0xab"\\\n\u00e9'),
        report("i1", "holder", 1_000_001),  # already_reported comes before invalid_ppm
        report("i1", "other", 0),
    ]
    events = run_both(records)
    assert [event["reason"] for event in events if event["type"] == "report_rejected"] == [
        "invalid_ppm", "invalid_ppm", "already_reported", "not_assigned"]
    settled = next(event for event in events if event["type"] == "delivery_settled")
    assert settled["compensation"] == "11.666672"  # floor(17_500_000 * 666_667 / 1e6) micro


# ------------------------------------------------------------------------------- close

def test_each_step_of_the_close_gives_the_same_bytes() -> None:
    records = [
        listing("D-1", bond="1.5"),
        listing("D-2", bond="0", delivery_start=CLOSE + SECOND),
        *(deposit(account, "USDC", "500") for account in ("op-a", "op-b", "zed", "B", "a")),
        issue("op-a", "a1", "D-1", 10),
        issue("op-b", "b1", "D-1", 6, node_id="node-2"),
        issue("op-a", "a2", "D-1", 6),
        issue("op-b", "b2", "D-1", 5, node_id="node-2"),
        issue("op-a", "z1", "D-2", 4),
        order("op-a", "s1", "D-1", "sell", "2", 7),  # 6 sold, 1 rests until the close
        order("zed", "z", "D-1", "buy", "2", 3),
        order("B", "b", "D-1", "buy", "2", 2),
        order("a", "a", "D-1", "buy", "2", 1),
        command("withdraw", 6, account="op-b", asset="D-1", amount=3),
        deposit("a", "D-1", 2, ts=6),  # tokens never issued here
        order("op-b", "rest", "D-1", "sell", "9", 2, ts=7),
        order("a", "low", "D-1", "buy", "0.5", 4, ts=7),
        tick(CLOSE),
        tick(CLOSE + SECOND),
        *(report(issue_id, holder, ppm, ts=CLOSE + 2 * SECOND)
          for issue_id, holder, ppm in (("a2", "B", 0), ("a2", "a", 1), ("a2", "zed", 999_999),
                                        ("b2", "zed", 500_000), ("b1", "a", 0))),
    ]
    events = run_both(records)
    closing = [event for event in events if event["ts"] >= CLOSE
               and event["type"] not in ("order_canceled", "report_rejected")]
    assert [(event["type"], event.get("issue_id"), event.get("holder") or event.get("account"),
             event.get("quantity"), event.get("amount") or event.get("compensation"))
            for event in closing] == [
        ("instrument_closed", None, None, None, None),
        # the issuers' own tokens, oldest issue first: op-a's 10 settle a1, op-b's 8 settle
        # b1's 6 and 2 of b2
        ("bond_released", "a1", "op-a", 10, "15"),
        ("bond_released", "b1", "op-b", 6, "9"),
        ("bond_released", "b2", "op-b", 2, "3"),
        # the other holders in byte order ("B" < "a" < "zed"), oldest issue first
        ("delivery_assigned", "a2", "B", 2, None),
        ("delivery_assigned", "a2", "a", 3, None),
        ("delivery_assigned", "a2", "zed", 1, None),
        ("delivery_assigned", "b2", "zed", 2, None),
        # what nobody holds (withdrawn): released after the assignments
        ("bond_released", "b2", "op-b", 1, "1.5"),
        ("instrument_closed", None, None, None, None),
        ("bond_released", "z1", "op-a", 4, "0"),  # a bond of 0 is released all the same
        ("delivery_settled", "a2", "B", 2, "3"),
        ("bond_released", "a2", "op-a", 2, "0"),
        ("delivery_settled", "a2", "a", 3, "4.499995"),
        ("bond_released", "a2", "op-a", 3, "0.000005"),
        ("delivery_settled", "a2", "zed", 1, "0.000001"),
        ("bond_released", "a2", "op-a", 1, "1.499999"),
        ("delivery_settled", "b2", "zed", 2, "1.5"),
        ("bond_released", "b2", "op-b", 2, "1.5"),
    ]
    assert (events[-1]["type"], events[-1]["reason"]) == ("report_rejected", "not_assigned")


def test_an_instrument_listed_without_a_bond_closes_as_in_v1() -> None:
    records = [
        listing("V-1"),
        deposit("a", "V-1", 5),
        deposit("b", "USDC", "10"),
        order("a", "s", "V-1", "sell", "1", 5),
        order("b", "b", "V-1", "buy", "1", 2),
        tick(CLOSE),
        command("withdraw", CLOSE, account="b", asset="V-1", amount=2),
    ]
    events = run_both(records)
    assert [event["type"] for event in events][-3:] == [
        "order_canceled", "instrument_closed", "withdrawn"]
    assert "delivery_assigned" not in {event["type"] for event in events}


# --------------------------------------------------------------------------- snapshots

def life_of_a_deliverable_instrument() -> list[bytes]:
    """Issues, trades, a withdrawal, a close with every step, and reports."""
    return [
        listing("D-1", bond="1.5"),
        listing("V-1", delivery_start=CLOSE + SECOND),
        *(deposit(account, "USDC", "500") for account in ("op", "a", "b")),
        issue("op", "i1", "D-1", 10),
        issue("a", "i2", "D-1", 3),
        order("op", "s", "D-1", "sell", "2", 6),
        order("a", "b", "D-1", "buy", "2", 4),
        order("b", "b", "D-1", "buy", "2", 2),
        command("withdraw", 6, account="a", asset="D-1", amount=2),
        deposit("b", "V-1", 3, ts=6),
        tick(CLOSE),
        report("i1", "a", 250_000),
        report("i1", "b", 0, evidence="root"),
        report("i1", "b", 0),
        tick(CLOSE + SECOND),
    ]


def test_a_snapshot_taken_at_any_point_restores_in_either_core_and_goes_on_alike() -> None:
    records = life_of_a_deliverable_instrument()
    uninterrupted = PythonCore()
    expected = [uninterrupted.apply_records([record]) for record in records]
    final = uninterrupted.snapshot()
    for cut in range(len(records) + 1):
        python, native = PythonCore(), NativeCore()
        run_both(records[:cut], python, native)
        snapshot = python.snapshot()
        for restored in (PythonCore.restore(snapshot), NativeCore.restore(snapshot)):
            assert restored.snapshot() == snapshot, (cut, restored.name)
            went_on = [restored.apply_records([record]) for record in records[cut:]]
            assert went_on == expected[cut:], (cut, restored.name)
            assert restored.snapshot() == final, (cut, restored.name)
            assert restored.validate() is None


def version_1(snapshot: bytes) -> bytes:
    """A version-2 snapshot of a state without delivery, as version 1 wrote it."""
    document = msgspec.msgpack.decode(snapshot)
    assert document.pop("issues") == [] and document.pop("deliveries") == []
    for instrument in document["instruments"]:
        assert instrument.pop("bond") is None
    document["version"] = 1
    return msgspec.msgpack.encode(document)


def test_a_version_1_snapshot_restores_in_both_cores_and_goes_on_in_version_2() -> None:
    before = [listing("V-1"), deposit("a", "V-1", 5), deposit("b", "USDC", "9"),
              order("a", "s", "V-1", "sell", "1", 5), order("b", "b", "V-1", "buy", "1", 2)]
    python = PythonCore()
    python.apply_records(before)
    old = version_1(python.snapshot())
    later = [listing("D-1", bond="2", delivery_start=CLOSE + SECOND),
             issue("b", "i1", "D-1", 3), tick(CLOSE), tick(CLOSE + SECOND)]
    python_restored, native_restored = PythonCore.restore(old), NativeCore.restore(old)
    assert python_restored.snapshot() == native_restored.snapshot() == python.snapshot()
    events = run_both(later, python_restored, native_restored)
    assert ("bond_released", None) in outcomes(events)


@pytest.mark.parametrize(("damage", "words"), [
    (lambda d: d["issues"][0].__setitem__(2, "NOPE"), "not a listed instrument"),
    (lambda d: d["issues"][0].__setitem__(2, "V-1"), "not deliverable"),
    (lambda d: d["issues"].append(list(d["issues"][0])), "listed twice"),
    (lambda d: d["issues"][0].__setitem__(5, 1), "quantities"),
    (lambda d: d["deliveries"][0].__setitem__(0, "nope"), "which is not listed"),
    (lambda d: d["deliveries"].append(list(d["deliveries"][0])), "listed twice"),
    (lambda d: d["deliveries"][0].__setitem__(3, "yes"), r"reported: expected true or false"),
    (lambda d: d["issues"][0].pop(), "an array of 6 items where 7 belong"),
    (lambda d: d["instruments"][0].__setitem__("bond", -1), "has bond -1"),
    (lambda d: d["instruments"][0].__setitem__("bond", 2 * 10**6), "not conserved"),
    (lambda d: d.update(version=3), "version: 3, where this engine reads 1 to 2"),
])
def test_the_native_core_refuses_a_damaged_delivery_snapshot(damage: Any, words: str) -> None:
    python = PythonCore()
    python.apply_records(life_of_a_deliverable_instrument()[:-3])  # assigned, one reported
    document = msgspec.msgpack.decode(python.snapshot())
    assert document["issues"] and document["deliveries"]
    damage(document)
    with pytest.raises(ValueError, match=words):
        NativeCore.restore(msgspec.msgpack.encode(document))


# ------------------------------------------------------------------------ random streams

def random_stream(seed: int, count: int) -> list[bytes]:
    """Listings with and without a bond, then issues, orders, deposits, withdrawals, reports
    (well formed or not) and ticks at random; then every instrument closes and each issue is
    reported for each account, some twice."""
    rng = random.Random(seed)
    accounts = ["a", "b", "B", "op", "op-2", "fees"]
    bonds = {"D-1": "1.5", "D-2": "2.000001", "D-0": "0", "V-1": None}
    records = [listing(symbol, bond=bond, delivery_start=(20 + 15 * index) * SECOND)
               for index, (symbol, bond) in enumerate(bonds.items())]
    records += [deposit(account, "USDC", str(rng.randint(0, 300)), ts=1) for account in accounts]
    issue_ids: list[str] = ["i0"]
    ts = 1
    for index in range(count):
        ts += rng.randint(0, SECOND // 2)
        account, symbol = rng.choice(accounts), rng.choice([*bonds, "NOPE"])
        draw = rng.random()
        if draw < 0.2:
            issue_ids.append(rng.choice(issue_ids) if rng.random() < 0.1 else f"i{index}")
            records.append(issue(account, issue_ids[-1], symbol,
                                 rng.choice([0, 1, 2, 5, 10, 101, -3]), ts=ts,
                                 node_id=f"n{rng.randint(1, 3)}"))
        elif draw < 0.5:
            records.append(order(account, f"o{index}", symbol, rng.choice(["buy", "sell"]),
                                 rng.choice(["0.5", "1", "2"]), rng.randint(1, 8), ts=ts))
        elif draw < 0.62:
            records.append(deposit(account, rng.choice([*bonds, "USDC"]),
                                   rng.choice([1, 3, "5", "x"]), ts=ts))
        elif draw < 0.7:
            records.append(command("withdraw", ts, account=account,
                                   asset=rng.choice([*bonds, "USDC"]), amount=rng.choice([1, 3])))
        elif draw < 0.85:
            records.append(report(rng.choice(issue_ids), account,
                                  rng.choice([0, 500_000, 1_000_000, 1_000_001, -1]), ts=ts))
        elif draw < 0.92:
            ts += rng.randint(0, 3) * SECOND
            records.append(tick(ts))
        else:
            records.append(command(rng.choice(["issue_capacity", "delivery_report"]), ts,
                                   account=account, issue_id=rng.choice(["i1", 5, "bad id"]),
                                   holder=rng.choice(["a", None]), instrument=symbol,
                                   node_id="n", quantity=rng.choice([1, 1.5, "1"]),
                                   delivered_ppm=rng.choice([1, "1"])))
    ts += 200 * SECOND
    records.append(tick(ts))
    for issue_id in sorted(set(issue_ids)):
        for account in accounts:
            for _ in range(rng.choice([0, 1, 1, 2])):
                records.append(report(issue_id, account, rng.randint(0, 1_000_000), ts=ts,
                                      evidence=rng.choice(["", "0x9f", "\u00e9\n" * 64])))
    return records


def test_random_delivery_streams_give_the_same_bytes_in_both_cores() -> None:
    seen: set[tuple[str, str | None]] = set()
    for seed in range(40):
        seen |= outcomes(run_both(random_stream(seed, 120)))
    assert {("delivery_assigned", None), ("delivery_settled", None),
            ("report_rejected", "already_reported"), ("issue_rejected", "duplicate_issue"),
            ("deposit_rejected", "instrument_closed")} <= seen
