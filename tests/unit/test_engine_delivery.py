"""One hand-written case per rule of PROTOCOL.md's "Delivery (v2)" and its readings in
docs/protocol-notes.md: listings with a bond, issuance, redemption at close, delivery
reports, the final state and the version-2 snapshot.

The rule tests run, like tests/unit/test_engine_rules.py, against the Python engine (its
invariants checked after each command, the conservation of USDC with bonds included), the
native Rust core and the independent reference model, and assert the exact events. The
snapshot tests drive the Python engine itself.

The default market (`bonded_market`): SYMBOL is deliverable with a bond of 3 USDC per
GPU-hour, tick 0.01, maker 10 / taker 20 bps, max order quantity 1000, delivery at
DELIVERY; the operators `op` and `op2` and the traders `alice` and `bob` hold 100 USDC each.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import protocol
from matching_engine.core import Engine, InvariantError
from matching_engine.core.snapshot import decode_snapshot
from tests.engine_helpers import (
    DELIVERY,
    IMPLEMENTATIONS,
    SECOND,
    SYMBOL,
    T0,
    Driver,
    cmd,
    deposit,
    limit,
    listing,
    raw,
    tick,
    withdraw,
)
from tests.unit.test_engine_rules import LISTED, accepted, canceled, command_rejected, ev, trade

OTHER = "A100-US-1"  # listed without a bond: closes as in v1
EARLY = "H100-EU-0"  # deliverable, delivers a minute after T0
EARLY_DELIVERY = T0 + 60 * SECOND
CLOSED = ev("instrument_closed", DELIVERY, symbol=SYMBOL)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def ex(request: pytest.FixtureRequest) -> Driver:
    """A fresh exchange: the Python engine, the native core or the reference model."""
    return Driver(IMPLEMENTATIONS[request.param]())


def bonded_market(ex: Driver, bond: str = "3") -> None:
    ex.run(listing(bond_per_gpu_hour=bond))
    for account in ("op", "op2", "alice", "bob"):
        ex.run(deposit(account, "USDC", "100"))


# ---------------------------------------------------------------------- commands


def issue(account: str, issue_id: str, quantity: int, instrument: str = SYMBOL,
          node_id: str = "n-1", ts: int = T0) -> Any:
    return cmd("issue_capacity", ts=ts, account=account, issue_id=issue_id,
               instrument=instrument, node_id=node_id, quantity=quantity)


def report(issue_id: str, holder: str, delivered_ppm: int, ts: int = DELIVERY,
           **extra: Any) -> Any:
    return cmd("delivery_report", ts=ts, issue_id=issue_id, holder=holder,
               delivered_ppm=delivered_ppm, **extra)


def transfer(source: str, target: str, quantity: int) -> list[Any]:
    """Tokens moved outside the venue: withdrawn by one account, deposited by another."""
    return [withdraw(source, SYMBOL, quantity), deposit(target, SYMBOL, quantity)]


# ------------------------------------------------------------------------ events


def issued(issue_id: str, account: str, quantity: int, bond: str, node_id: str = "n-1",
           ts: int = T0, instrument: str = SYMBOL) -> dict[str, Any]:
    return ev("capacity_issued", ts, issue_id=issue_id, account=account,
              instrument=instrument, node_id=node_id, quantity=quantity, bond=bond)


def issue_rejected(issue_id: str, account: str, reason: str, ts: int = T0) -> dict[str, Any]:
    return ev("issue_rejected", ts, issue_id=issue_id, account=account, reason=reason)


def released(issue_id: str, account: str, quantity: int, amount: str,
             ts: int = DELIVERY) -> dict[str, Any]:
    return ev("bond_released", ts, issue_id=issue_id, account=account, quantity=quantity,
              amount=amount)


def assigned(issue_id: str, issuer: str, holder: str, quantity: int, node_id: str = "n-1",
             ts: int = DELIVERY) -> dict[str, Any]:
    return ev("delivery_assigned", ts, instrument=SYMBOL, issue_id=issue_id, issuer=issuer,
              node_id=node_id, holder=holder, quantity=quantity)


def settled(issue_id: str, issuer: str, holder: str, quantity: int, delivered_ppm: int,
            compensation: str, evidence: str | None = None,
            ts: int = DELIVERY) -> dict[str, Any]:
    return ev("delivery_settled", ts, instrument=SYMBOL, issue_id=issue_id, issuer=issuer,
              holder=holder, quantity=quantity, delivered_ppm=delivered_ppm,
              compensation=compensation, evidence=evidence)


def report_rejected(issue_id: str, holder: str, reason: str,
                    ts: int = DELIVERY) -> dict[str, Any]:
    return ev("report_rejected", ts, issue_id=issue_id, holder=holder, reason=reason)


def token_total(ex: Driver) -> int:
    """Tokens of SYMBOL in every account, available and held."""
    return sum(assets.get(SYMBOL, {}).get(kind, 0)
               for assets in ex.state()["accounts"].values()
               for kind in ("available", "held"))


# ----------------------------------------------------------------------- listing


def test_listing_with_a_bond_echoes_it_canonical(ex: Driver) -> None:
    assert ex.apply(listing(bond_per_gpu_hour="3.000")) == [
        {**LISTED, "bond_per_gpu_hour": "3"}]


def test_listing_with_a_bond_of_zero_is_deliverable(ex: Driver) -> None:
    assert ex.apply(listing(bond_per_gpu_hour="0.000")) == [
        {**LISTED, "bond_per_gpu_hour": "0"}]
    assert ex.apply(issue("op", "i1", 5)) == [issued("i1", "op", 5, "0")]


def test_listing_without_a_bond_echoes_none_as_in_v1(ex: Driver) -> None:
    assert ex.apply(listing()) == [LISTED]
    assert "bond_per_gpu_hour" not in ex.apply(listing(OTHER))[0]


@pytest.mark.parametrize("bond", ["-1", "1.0000001", "1e3", ".5", "", "abc", 3, 0.5, True])
def test_listing_with_a_bad_bond_is_invalid_command(ex: Driver, bond: Any) -> None:
    assert ex.apply(listing(bond_per_gpu_hour=bond)) == [command_rejected("list_instrument")]
    assert ex.apply(issue("op", "i1", 1)) == [issue_rejected("i1", "op", "unknown_instrument")]


def test_listing_checks_the_taken_symbol_before_the_bond(ex: Driver) -> None:
    ex.run(listing())
    assert ex.apply(listing(bond_per_gpu_hour="-1")) == [
        command_rejected("list_instrument", "duplicate_instrument")]


# ------------------------------------------------------------------------- issue


def test_issue_moves_the_bond_out_of_available_and_credits_the_tokens(ex: Driver) -> None:
    bonded_market(ex, bond="2.5")
    assert ex.apply(issue("op", "i1", 10, node_id="node:eu.7")) == [
        issued("i1", "op", 10, "25", node_id="node:eu.7")]
    assert ex.balance("op", "USDC") == ("75", "0")
    assert ex.balance("op", SYMBOL) == (10, 0)
    assert ex.state()["issues"] == [{"issue_id": "i1", "account": "op", "instrument": SYMBOL,
                                     "node_id": "node:eu.7", "quantity": 10, "bond": "25"}]
    assert ex.state()["deliveries"] == []


def test_issued_tokens_trade_like_deposited_ones(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 4))
    assert ex.run(limit("op", "s1", "sell", "2", 4), limit("alice", "b1", "buy", "2", 4)) == [
        accepted("op", "s1", "1", "sell", 4, "2"),
        accepted("alice", "b1", "2", "buy", 4, "2"),
        trade("1", "2", 4, "buy", ("op", "s1", "1"), "0.008", ("alice", "b1", "2"), "0.016"),
    ]
    assert ex.balance("alice", SYMBOL) == (4, 0)
    assert ex.apply(withdraw("alice", SYMBOL, 1)) == [
        ev("withdrawn", account="alice", asset=SYMBOL, amount=1)]


def test_issue_checks_come_in_protocol_order(ex: Driver) -> None:
    """Each command fails the check named and every later one: the first failure wins."""
    bonded_market(ex)
    ex.run(listing(OTHER), listing(EARLY, delivery_start=EARLY_DELIVERY, bond_per_gpu_hour="1"))
    assert ex.apply(issue("op", "i1", 10)) == [issued("i1", "op", 10, "30")]
    assert ex.run(
        issue("op", "i1", 0, instrument="NOPE"),
        issue("op", "i2", 0, instrument="NOPE"),
        issue("op", "i2", 0, instrument=OTHER),
    ) == [
        issue_rejected("i1", "op", "duplicate_issue"),
        issue_rejected("i2", "op", "unknown_instrument"),
        issue_rejected("i2", "op", "not_deliverable"),
    ]
    assert ex.apply(tick(EARLY_DELIVERY)) == [
        ev("instrument_closed", EARLY_DELIVERY, symbol=EARLY)]
    at = EARLY_DELIVERY
    assert ex.run(
        issue("op", "i2", 0, instrument=EARLY, ts=at),
        issue("op", "i2", 0, ts=at),
        issue("op", "i2", 1_001, ts=at),
        issue("op", "i2", 24, ts=at),
    ) == [
        issue_rejected("i2", "op", "instrument_closed", ts=at),
        issue_rejected("i2", "op", "invalid_quantity", ts=at),
        issue_rejected("i2", "op", "invalid_quantity", ts=at),
        issue_rejected("i2", "op", "insufficient_funds", ts=at),
    ]
    assert ex.balance("op", "USDC") == ("70", "0")


def test_a_rejected_issue_does_not_use_up_its_id(ex: Driver) -> None:
    bonded_market(ex)
    assert ex.run(issue("op", "i1", 34), issue("op", "i1", 33)) == [
        issue_rejected("i1", "op", "insufficient_funds"), issued("i1", "op", 33, "99")]


def test_an_issue_id_stays_taken_after_its_issue_is_settled(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(listing(EARLY, delivery_start=EARLY_DELIVERY, bond_per_gpu_hour="1"),
           issue("op", "i1", 2, instrument=EARLY), tick(EARLY_DELIVERY))
    assert ex.state()["issues"] == []
    assert ex.apply(issue("op", "i1", 1, ts=EARLY_DELIVERY)) == [
        issue_rejected("i1", "op", "duplicate_issue", ts=EARLY_DELIVERY)]
    assert ex.apply(issue("op2", "i1", 1, ts=EARLY_DELIVERY)) == [
        issue_rejected("i1", "op2", "duplicate_issue", ts=EARLY_DELIVERY)]


def test_issue_quantity_bounds_are_1_and_max_order_quantity(ex: Driver) -> None:
    ex.run(listing(bond_per_gpu_hour="0"))
    assert ex.run(issue("op", "i1", -1), issue("op", "i1", 1), issue("op", "i2", 1_000)) == [
        issue_rejected("i1", "op", "invalid_quantity"), issued("i1", "op", 1, "0"),
        issued("i2", "op", 1_000, "0")]


def test_the_bond_is_paid_from_available_usdc_only(ex: Driver) -> None:
    bonded_market(ex)
    # holds 50 + 0.1 fee of op's 100 USDC
    assert ex.apply(limit("op", "b1", "buy", "5", 10))[0]["type"] == "order_accepted"
    assert ex.run(issue("op", "i1", 17), issue("op", "i1", 16)) == [
        issue_rejected("i1", "op", "insufficient_funds"), issued("i1", "op", 16, "48")]
    assert ex.balance("op", "USDC") == ("1.9", "50.1")


def test_a_bond_of_exactly_the_available_usdc_passes(ex: Driver) -> None:
    ex.run(listing(bond_per_gpu_hour="0.25"), deposit("op", "USDC", "1.75"))
    assert ex.apply(issue("op", "i1", 7)) == [issued("i1", "op", 7, "1.75")]
    assert ex.balance("op", "USDC") == ("0", "0")


def test_a_bond_of_zero_needs_no_usdc_and_releases_zero(ex: Driver) -> None:
    ex.run(listing(bond_per_gpu_hour="0"))
    assert ex.apply(issue("op", "i1", 5)) == [issued("i1", "op", 5, "0")]
    ex.run(*transfer("op", "alice", 2))
    assert ex.state()["issues"] == [{"issue_id": "i1", "account": "op", "instrument": SYMBOL,
                                     "node_id": "n-1", "quantity": 5, "bond": "0"}]
    assert ex.apply(tick(DELIVERY)) == [
        CLOSED, released("i1", "op", 3, "0"), assigned("i1", "op", "alice", 2)]
    assert ex.state()["issues"] == [{"issue_id": "i1", "account": "op", "instrument": SYMBOL,
                                     "node_id": "n-1", "quantity": 2, "bond": "0"}]
    assert ex.apply(report("i1", "alice", 0)) == [
        settled("i1", "op", "alice", 2, 0, "0"), released("i1", "op", 2, "0")]
    assert ex.state()["issues"] == []
    assert ex.state()["accounts"] == {}


# --------------------------------------------------------------------- malformed


@pytest.mark.parametrize(("line", "command"), [
    (b'{"type":"issue_capacity","ts":5,"account":"op","issue_id":"i 1","instrument":"X",'
     b'"node_id":"n","quantity":1}', "issue_capacity"),
    (b'{"type":"issue_capacity","ts":5,"account":"op","issue_id":"i1","instrument":"X",'
     b'"quantity":1}', "issue_capacity"),
    (b'{"type":"issue_capacity","ts":5,"account":"op","issue_id":"i1","instrument":7,'
     b'"node_id":"n","quantity":1}', "issue_capacity"),
    (b'{"type":"issue_capacity","ts":5,"account":"op","issue_id":"i1","instrument":"X",'
     b'"node_id":"n","quantity":"1"}', "issue_capacity"),
    (b'{"type":"issue_capacity","ts":5,"issue_id":"i1","instrument":"X","node_id":"n",'
     b'"quantity":1}', "issue_capacity"),
    (b'{"type":"delivery_report","ts":5,"issue_id":"i1","holder":"al ice",'
     b'"delivered_ppm":1}', "delivery_report"),
    (b'{"type":"delivery_report","ts":5,"issue_id":"i1","holder":"alice",'
     b'"delivered_ppm":1.5}', "delivery_report"),
    (b'{"type":"delivery_report","ts":5,"issue_id":"i1","holder":"alice",'
     b'"delivered_ppm":9223372036854775808}', "delivery_report"),
    (b'{"type":"delivery_report","ts":5,"issue_id":"i1","holder":"alice",'
     b'"delivered_ppm":1,"evidence":7}', "delivery_report"),
    (b'{"type":"delivery_report","ts":5,"holder":"alice","delivered_ppm":1}',
     "delivery_report"),
], ids=["bad-issue-id", "no-node-id", "instrument-number", "quantity-string", "no-account",
        "bad-holder", "ppm-float", "ppm-above-int64", "evidence-number", "no-issue-id"])
def test_malformed_delivery_commands_are_invalid_command(ex: Driver, line: bytes,
                                                         command: str) -> None:
    ex.run(listing(bond_per_gpu_hour="1"))
    assert ex.apply(raw(line.replace(b'"X"', f'"{SYMBOL}"'.encode()))) == [
        command_rejected(command)]
    assert ex.state()["issues"] == []


def test_evidence_longer_than_128_characters_is_invalid_command(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 1), *transfer("op", "alice", 1), tick(DELIVERY))
    assert ex.apply(report("i1", "alice", 5, evidence="e" * 129)) == [
        command_rejected("delivery_report", ts=DELIVERY)]
    assert ex.apply(report("i1", "alice", 5, evidence="e" * 128)) == [
        settled("i1", "op", "alice", 1, 5, "2.999985", evidence="e" * 128),
        released("i1", "op", 1, "0.000015")]


def test_a_malformed_report_without_ts_is_rejected_at_the_engine_time(ex: Driver) -> None:
    ex.run(listing(bond_per_gpu_hour="1"))
    assert ex.apply(raw(b'{"type":"delivery_report","issue_id":"i1","holder":"a",'
                        b'"delivered_ppm":1}')) == [command_rejected("delivery_report")]


# ---------------------------------------------------------- deposits after close


def test_deposit_and_withdraw_of_a_redeemed_token_are_instrument_closed(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(deposit("alice", SYMBOL, 5), tick(DELIVERY))
    at = DELIVERY
    assert ex.run(
        deposit("alice", SYMBOL, 5, ts=at), deposit("alice", SYMBOL, "x", ts=at),
        withdraw("alice", SYMBOL, 1, ts=at), withdraw("alice", SYMBOL, 0, ts=at),
        deposit("alice", "ETH", 5, ts=at), withdraw("alice", "USDC", "1", ts=at),
    ) == [
        ev("deposit_rejected", at, account="alice", asset=SYMBOL, amount=5,
           reason="instrument_closed"),
        ev("deposit_rejected", at, account="alice", asset=SYMBOL, amount="x",
           reason="instrument_closed"),
        ev("withdrawal_rejected", at, account="alice", asset=SYMBOL, amount=1,
           reason="instrument_closed"),
        ev("withdrawal_rejected", at, account="alice", asset=SYMBOL, amount=0,
           reason="instrument_closed"),
        ev("deposit_rejected", at, account="alice", asset="ETH", amount=5,
           reason="unknown_asset"),
        ev("withdrawn", at, account="alice", asset="USDC", amount="1"),
    ]


def test_an_instrument_listed_without_a_bond_closes_as_in_v1(ex: Driver) -> None:
    ex.run(listing(), deposit("alice", SYMBOL, 5), limit("alice", "s1", "sell", "2", 2))
    assert ex.apply(issue("alice", "i1", 1)) == [issue_rejected("i1", "alice", "not_deliverable")]
    assert ex.apply(tick(DELIVERY)) == [
        canceled("alice", "s1", "1", "instrument_closed", 2, ts=DELIVERY), CLOSED]
    assert ex.balance("alice", SYMBOL) == (5, 0)
    at = DELIVERY
    assert ex.run(withdraw("alice", SYMBOL, 1, ts=at), deposit("bob", SYMBOL, 2, ts=at)) == [
        ev("withdrawn", at, account="alice", asset=SYMBOL, amount=1),
        ev("deposited", at, account="bob", asset=SYMBOL, amount=2)]
    assert (ex.state()["issues"], ex.state()["deliveries"]) == ([], [])


# ------------------------------------------------------------------------- close


def test_close_releases_the_bond_of_tokens_the_issuer_still_holds(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 5), issue("op", "i2", 3, node_id="n-2"),
           limit("op", "s1", "sell", "4", 6))
    assert ex.balance("op", "USDC") == ("76", "0")
    assert ex.apply(tick(DELIVERY)) == [
        canceled("op", "s1", "1", "instrument_closed", 6, ts=DELIVERY), CLOSED,
        released("i1", "op", 5, "15"), released("i2", "op", 3, "9")]
    assert ex.balance("op", "USDC") == ("100", "0")
    assert ex.balance("op", SYMBOL) == (0, 0)
    assert (ex.state()["issues"], ex.state()["deliveries"]) == ([], [])


def test_close_assigns_holders_in_byte_order_from_the_oldest_issue(ex: Driver) -> None:
    """op's own 2 tokens settle 2 hours of its i1; op2's 5 cover its own i2 (4) with 1
    left; then Zed, alice, bob, op2 (byte order: capitals first) take i1's 3 hours and
    i3's 3, so op2 takes delivery from op's issue."""
    bonded_market(ex)
    ex.run(issue("op", "i1", 5), issue("op2", "i2", 4, node_id="n-2"),
           issue("op", "i3", 3, node_id="n-3"),
           *transfer("op", "bob", 2), *transfer("op", "Zed", 1), *transfer("op", "op2", 3),
           *transfer("op2", "alice", 2))
    assert ex.apply(tick(DELIVERY)) == [
        CLOSED,
        released("i1", "op", 2, "6"),
        released("i2", "op2", 4, "12"),
        assigned("i1", "op", "Zed", 1),
        assigned("i1", "op", "alice", 2),
        assigned("i3", "op", "bob", 2, node_id="n-3"),
        assigned("i3", "op", "op2", 1, node_id="n-3"),
    ]
    state = ex.state()
    assert state["issues"] == [
        {"issue_id": "i1", "account": "op", "instrument": SYMBOL, "node_id": "n-1",
         "quantity": 3, "bond": "9"},
        {"issue_id": "i3", "account": "op", "instrument": SYMBOL, "node_id": "n-3",
         "quantity": 3, "bond": "9"},
    ]
    assert state["deliveries"] == [
        {"issue_id": "i1", "holder": "Zed", "quantity": 1},
        {"issue_id": "i1", "holder": "alice", "quantity": 2},
        {"issue_id": "i3", "holder": "bob", "quantity": 2},
        {"issue_id": "i3", "holder": "op2", "quantity": 1},
    ]
    assert ex.balance("op", "USDC") == ("82", "0")
    assert ex.balance("op2", "USDC") == ("100", "0")
    assert token_total(ex) == 0


def test_close_assigns_tokens_bought_on_the_book(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 6), limit("op", "s1", "sell", "2", 4),
           limit("bob", "b1", "buy", "2", 3), limit("alice", "b2", "buy", "2", 1),
           limit("alice", "b3", "buy", "1", 1))
    assert ex.apply(tick(DELIVERY)) == [
        canceled("alice", "b3", "4", "instrument_closed", 1, ts=DELIVERY), CLOSED,
        released("i1", "op", 2, "6"),
        assigned("i1", "op", "alice", 1),
        assigned("i1", "op", "bob", 3),
    ]
    assert ex.balance("alice", "USDC") == ("97.996", "0")


def test_what_nobody_holds_at_close_is_released_after_the_assignments(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 10), issue("op2", "i2", 2, node_id="n-2"),
           *transfer("op", "alice", 4), withdraw("alice", SYMBOL, 1), withdraw("op", SYMBOL, 2),
           withdraw("op2", SYMBOL, 2))
    assert ex.apply(tick(DELIVERY)) == [
        CLOSED,
        released("i1", "op", 4, "12"),
        assigned("i1", "op", "alice", 3),
        released("i1", "op", 3, "9"),
        released("i2", "op2", 2, "6", ts=DELIVERY),
    ]
    assert ex.state()["deliveries"] == [{"issue_id": "i1", "holder": "alice", "quantity": 3}]
    assert ex.balance("op", "USDC") == ("91", "0")
    assert ex.balance("op2", "USDC") == ("100", "0")


def test_tokens_deposited_but_never_issued_are_redeemed_like_issued_ones(ex: Driver) -> None:
    """Tokens are fungible: ann's deposited tokens come first in byte order and take the
    issue's hours; bob's, bought from the issuer, are redeemed with no delivery."""
    bonded_market(ex)
    ex.run(issue("op", "i1", 3), *transfer("op", "bob", 2), deposit("ann", SYMBOL, 5))
    assert token_total(ex) == 8
    assert ex.apply(tick(DELIVERY)) == [
        CLOSED, released("i1", "op", 1, "3"), assigned("i1", "op", "ann", 2)]
    assert token_total(ex) == 0
    assert ex.state()["deliveries"] == [{"issue_id": "i1", "holder": "ann", "quantity": 2}]


def test_close_of_a_deliverable_instrument_without_issues_redeems_deposits(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(deposit("alice", SYMBOL, 5), limit("alice", "s1", "sell", "2", 5))
    assert ex.apply(tick(DELIVERY)) == [
        canceled("alice", "s1", "1", "instrument_closed", 5, ts=DELIVERY), CLOSED]
    assert ex.balance("alice", SYMBOL) == (0, 0)


def test_instruments_closing_together_redeem_in_listing_order(ex: Driver) -> None:
    later = DELIVERY + SECOND
    ex.run(listing(EARLY, delivery_start=later, bond_per_gpu_hour="1"),
           listing(bond_per_gpu_hour="2"), deposit("op", "USDC", "10"),
           issue("op", "e1", 1, instrument=EARLY), issue("op", "i1", 1))
    assert ex.apply(tick(later)) == [
        ev("instrument_closed", later, symbol=EARLY),
        released("e1", "op", 1, "1", ts=later),
        ev("instrument_closed", later, symbol=SYMBOL),
        released("i1", "op", 1, "2", ts=later),
    ]


def test_close_comes_before_the_command_that_moved_time(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 2), *transfer("op", "alice", 2))
    assert ex.apply(report("i1", "alice", 0)) == [
        CLOSED, assigned("i1", "op", "alice", 2),
        settled("i1", "op", "alice", 2, 0, "6"), released("i1", "op", 2, "0")]


# ----------------------------------------------------------------------- reports


def test_report_pays_floored_compensation_and_releases_the_rest(ex: Driver) -> None:
    ex.run(listing(bond_per_gpu_hour="0.000007"), deposit("op", "USDC", "1"),
           issue("op", "i1", 3), *transfer("op", "alice", 3), tick(DELIVERY))
    # 3 * 7 * (1,000,000 - 333,334) / 1,000,000 = 13.999986 micro-USDC
    assert ex.apply(report("i1", "alice", 333_334, evidence="ab12")) == [
        settled("i1", "op", "alice", 3, 333_334, "0.000013", evidence="ab12"),
        released("i1", "op", 3, "0.000008")]
    assert ex.balance("alice", "USDC") == ("0.000013", "0")
    assert ex.balance("op", "USDC") == ("0.999987", "0")
    assert (ex.state()["issues"], ex.state()["deliveries"]) == ([], [])


@pytest.mark.parametrize(("delivered_ppm", "compensation", "rest"), [
    (0, "12", "0"), (1_000_000, "0", "12"), (500_000, "6", "6"), (999_999, "0.000012", "11.999988"),
])
def test_report_splits_the_bond_by_the_share_delivered(ex: Driver, delivered_ppm: int,
                                                       compensation: str, rest: str) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 4), *transfer("op", "alice", 4), tick(DELIVERY))
    assert ex.apply(report("i1", "alice", delivered_ppm)) == [
        settled("i1", "op", "alice", 4, delivered_ppm, compensation),
        released("i1", "op", 4, rest)]


def test_each_assignment_is_reported_on_its_own(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 5), *transfer("op", "alice", 2), *transfer("op", "bob", 3),
           tick(DELIVERY))
    assert ex.apply(report("i1", "bob", 0)) == [
        settled("i1", "op", "bob", 3, 0, "9"), released("i1", "op", 3, "0")]
    assert ex.state()["issues"] == [{"issue_id": "i1", "account": "op", "instrument": SYMBOL,
                                     "node_id": "n-1", "quantity": 2, "bond": "6"}]
    assert ex.state()["deliveries"] == [{"issue_id": "i1", "holder": "alice", "quantity": 2}]
    assert ex.apply(report("i1", "alice", 1_000_000)) == [
        settled("i1", "op", "alice", 2, 1_000_000, "0"), released("i1", "op", 2, "6")]
    assert ex.balance("op", "USDC") == ("91", "0")
    assert ex.balance("bob", "USDC") == ("109", "0")


def test_report_checks_come_in_protocol_order(ex: Driver) -> None:
    """Each report fails the check named and every later one: the first failure wins."""
    bonded_market(ex)
    ex.run(issue("op", "i1", 4), *transfer("op", "alice", 2))
    assert ex.run(report("nope", "alice", -1, ts=T0), report("i1", "alice", -1, ts=T0)) == [
        report_rejected("nope", "alice", "unknown_issue", ts=T0),
        report_rejected("i1", "alice", "not_assigned", ts=T0)]
    ex.run(tick(DELIVERY))
    assert ex.run(
        report("i1", "bob", 2_000_000),
        report("i1", "op", 5),
        report("i1", "alice", -1),
        report("i1", "alice", 1_000_001),
    ) == [
        report_rejected("i1", "bob", "not_assigned"),
        report_rejected("i1", "op", "not_assigned"),
        report_rejected("i1", "alice", "invalid_ppm"),
        report_rejected("i1", "alice", "invalid_ppm"),
    ]
    assert ex.state()["deliveries"] == [{"issue_id": "i1", "holder": "alice", "quantity": 2}]
    assert ex.apply(report("i1", "alice", 1_000_000)) == [
        settled("i1", "op", "alice", 2, 1_000_000, "0"), released("i1", "op", 2, "6")]
    assert ex.run(report("i1", "alice", -5), report("i1", "alice", 0)) == [
        report_rejected("i1", "alice", "already_reported"),
        report_rejected("i1", "alice", "already_reported")]
    assert ex.balance("op", "USDC") == ("100", "0")


def test_a_rejected_report_moves_nothing(ex: Driver) -> None:
    bonded_market(ex)
    ex.run(issue("op", "i1", 2), *transfer("op", "alice", 2), tick(DELIVERY))
    before = ex.state()
    ex.run(report("i1", "alice", -1), report("i1", "bob", 0), report("i2", "alice", 0))
    assert ex.state() == before


# --------------------------------------------------------------------- snapshots


def life_prefix() -> list[Any]:
    """Issues, trades, a withdrawal, resting orders: everything before the close."""
    return [
        listing(bond_per_gpu_hour="1.5"), listing(OTHER, delivery_start=DELIVERY + SECOND),
        deposit("op", "USDC", "100"), deposit("op2", "USDC", "100"),
        deposit("alice", "USDC", "100"), deposit("bob", "USDC", "100"),
        issue("op", "i1", 6), issue("op2", "i2", 4, node_id="n-2"), issue("op", "i3", 2),
        limit("op", "s1", "sell", "2", 5), limit("bob", "b1", "buy", "2", 3),
        limit("alice", "b2", "buy", "2.01", 1), limit("alice", "b3", "buy", "1", 2),
        withdraw("op2", SYMBOL, 1), deposit("carol", SYMBOL, 2),
    ]


def life_suffix() -> list[Any]:
    return [
        limit("op2", "s2", "sell", "1", 2, ts=T0 + SECOND),
        tick(DELIVERY),
        report("i1", "alice", 250_000, ts=DELIVERY + 1),
        report("i2", "bob", 0, ts=DELIVERY + 2, evidence="cafe"),
        deposit("bob", SYMBOL, 1, ts=DELIVERY + 3),
        report("i2", "bob", 5, ts=DELIVERY + 4),
        issue("op", "i4", 1, instrument=OTHER, ts=DELIVERY + 5),
        tick(DELIVERY + SECOND),
    ]


def encoded_events(engine: Engine, command: Any) -> list[bytes]:
    return [protocol.encode(event) for event in engine.apply(command)]


def test_restore_mid_life_then_close_and_report_equals_never_stopping() -> None:
    prefix, suffix = life_prefix(), life_suffix()
    never_stopped = Engine(check_invariants=True)
    for command in prefix:
        never_stopped.apply(command)
    expected = [encoded_events(never_stopped, command) for command in suffix]
    kinds = {msgspec.json.decode(event)["type"] for events in expected for event in events}
    assert {"delivery_assigned", "delivery_settled", "bond_released",
            "report_rejected", "deposit_rejected"} <= kinds

    engine = Engine(check_invariants=True)
    for command in prefix:
        engine.apply(command)
    continued = []
    for command in suffix:
        engine = Engine.restore(engine.snapshot(), check_invariants=True)
        continued.append(encoded_events(engine, command))
    assert continued == expected
    assert engine.final_state() == never_stopped.final_state()
    assert engine.snapshot() == never_stopped.snapshot()


def test_a_version_2_snapshot_lays_out_delivery_as_the_readings_say() -> None:
    engine = Engine(check_invariants=True)
    for command in [*life_prefix(), *life_suffix()[:3]]:
        engine.apply(command)
    snapshot = msgspec.msgpack.decode(engine.snapshot())
    assert snapshot["version"] == 2
    assert list(snapshot)[-3:] == ["supply", "issues", "deliveries"]
    bonded, unbonded = snapshot["instruments"]
    assert list(bonded)[-3:] == ["bids", "asks", "bond"]
    assert (bonded["bond"], unbonded["bond"]) == (1_500_000, None)
    # At close op holds 4 (i1 releases 4), op2 1 (i2 releases 1); then alice 3, bob 3 and
    # carol 2 take i1's 2, i2's 3 and i3's 2, oldest first; alice's i1 is reported.
    assert snapshot["issues"] == [["i1", "op", SYMBOL, "n-1", 6, 0, 0],
                                  ["i2", "op2", SYMBOL, "n-2", 4, 0, 3],
                                  ["i3", "op", SYMBOL, "n-1", 2, 0, 2]]
    assert snapshot["deliveries"] == [
        ["i1", "alice", 2, True], ["i2", "alice", 1, False], ["i2", "bob", 2, False],
        ["i3", "bob", 1, False], ["i3", "carol", 1, False]]
    assert snapshot["supply"][SYMBOL] == 0


def test_a_version_1_snapshot_restores_with_no_issue_and_no_bond() -> None:
    commands = [listing(), deposit("alice", "USDC", "100"), deposit("alice", SYMBOL, 5),
                limit("alice", "s1", "sell", "2", 2)]
    engine = Engine(check_invariants=True)
    for command in commands:
        engine.apply(command)
    version_1 = msgspec.msgpack.decode(engine.snapshot())
    version_1["version"] = 1
    del version_1["issues"], version_1["deliveries"]
    for instrument in version_1["instruments"]:
        del instrument["bond"]
    data = msgspec.msgpack.encode(version_1)

    assert decode_snapshot(data).version == 1
    restored = Engine.restore(data, check_invariants=True)
    assert restored.final_state() == engine.final_state()
    close = tick(DELIVERY)
    assert encoded_events(restored, close) == encoded_events(engine, close)
    assert restored.final_state()["accounts"]["alice"][SYMBOL] == {"available": 5, "held": 0}
    assert restored.snapshot() == engine.snapshot()


def test_a_snapshot_of_an_unknown_version_is_refused() -> None:
    data = msgspec.msgpack.decode(Engine().snapshot())
    data["version"] = 3
    with pytest.raises(ValueError, match="version 3"):
        decode_snapshot(msgspec.msgpack.encode(data))


def test_a_snapshot_whose_issue_names_no_listed_instrument_is_refused() -> None:
    engine = Engine()
    for command in (listing(bond_per_gpu_hour="1"), deposit("op", "USDC", "5"),
                    issue("op", "i1", 2)):
        engine.apply(command)
    data = msgspec.msgpack.decode(engine.snapshot())
    data["issues"][0][2] = "NOPE"
    with pytest.raises(ValueError, match="i1"):
        Engine.restore(msgspec.msgpack.encode(data))


# -------------------------------------------------------------------- invariants


def test_the_invariants_count_bonds_in_the_usdc_supply() -> None:
    engine = Engine(check_invariants=True)
    for command in (listing(bond_per_gpu_hour="1"), deposit("op", "USDC", "5"),
                    issue("op", "i1", 2)):
        engine.apply(command)
    engine.validate()
    engine.balances["op"]["USDC"][0] += 2_000_000  # the bond paid back, yet still held
    with pytest.raises(InvariantError, match="bonds 2000000"):
        engine.validate()


def test_the_invariants_find_tokens_left_after_a_redemption() -> None:
    engine = Engine(check_invariants=True)
    for command in (listing(bond_per_gpu_hour="1"), deposit("op", SYMBOL, 2), tick(DELIVERY)):
        engine.apply(command)
    engine.balances["op"][SYMBOL][0] = 2
    engine.supply[SYMBOL] = 2
    with pytest.raises(InvariantError, match="redemption"):
        engine.validate()
