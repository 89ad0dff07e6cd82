"""The engine's internal invariants, checked from scratch (tests switch this on)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matching_engine.core.book import BookSide, Instrument
from matching_engine.core.state import InvariantError
from protocol import USDC
from protocol.effects import bond

if TYPE_CHECKING:
    from matching_engine.core.state import EngineState


def check(condition: bool, message: str) -> None:
    """Raise InvariantError when `condition` is false; unlike `assert`, never stripped."""
    if not condition:
        raise InvariantError(message)


def validate(state: EngineState) -> None:
    """Check balances, holds, issues, conservation and books; raise on the first broken
    invariant."""
    _check_balances(state)
    _check_holds(state)
    _check_issues(state)
    _check_conservation(state)
    for instrument in state.instruments.values():
        _check_book(state, instrument)


def _check_balances(state: EngineState) -> None:
    for account, assets in state.balances.items():
        for asset, (available, held) in assets.items():
            check(available >= 0, f"{account} {asset} available {available} < 0")
            check(held >= 0, f"{account} {asset} held {held} < 0")


def _check_holds(state: EngineState) -> None:
    expected: dict[tuple[str, str], int] = {}
    for (account, client_order_id), order in state.open_orders.items():
        check(order.open and order.resting, f"open order {order.order_id} is not resting")
        check(order.client_order_id == client_order_id, f"order {order.order_id} misfiled")
        check(state.account_orders[account].get(order.order_id) is order,
              f"order {order.order_id} missing from its account's orders")
        check(order.hold == order.required_hold(), f"order {order.order_id} hold is stale")
        check(0 <= order.filled < order.quantity, f"order {order.order_id} quantities")
        asset = USDC if order.is_buy else order.instrument.symbol
        expected[(account, asset)] = expected.get((account, asset), 0) + order.hold
    check(sum(len(orders) for orders in state.account_orders.values()) == len(state.open_orders),
          "account orders and open orders disagree")
    for account, assets in state.balances.items():
        for asset, (_, held) in assets.items():
            wanted = expected.pop((account, asset), 0)
            check(held == wanted, f"{account} {asset} held {held} != holds of orders {wanted}")
    check(not expected, f"holds without balances: {sorted(expected)}")


def _check_issues(state: EngineState) -> None:
    """An issue's hours are bonded until released or reported, and assigned only at close:
    its bonded hours are its unassigned ones plus its assignments not yet reported."""
    awaiting_report: dict[str, int] = {}
    for (issue_id, holder), assignment in state.assignments.items():
        check((assignment.issue_id, assignment.holder) == (issue_id, holder),
              f"assignment ({issue_id}, {holder}) misfiled")
        check(issue_id in state.issues, f"assignment ({issue_id}, {holder}) of no issue")
        check(assignment.quantity > 0, f"assignment ({issue_id}, {holder}) of nothing")
        if not assignment.reported:
            awaiting_report[issue_id] = awaiting_report.get(issue_id, 0) + assignment.quantity
    for issue_id, issue in state.issues.items():
        instrument = issue.instrument
        check(state.instruments.get(instrument.symbol) is instrument,
              f"issue {issue_id} of an unlisted instrument")
        check(instrument.bond is not None, f"issue {issue_id} of an undeliverable instrument")
        check(0 <= issue.unassigned <= issue.bonded <= issue.quantity,
              f"issue {issue_id}: unassigned {issue.unassigned}, bonded {issue.bonded}, "
              f"quantity {issue.quantity}")
        if instrument.closed:
            check(issue.unassigned == 0, f"issue {issue_id} unassigned after close")
        else:
            check(issue.bonded == issue.quantity, f"issue {issue_id} released before close")
        awaiting = awaiting_report.get(issue_id, 0)
        check(issue.bonded == issue.unassigned + awaiting,
              f"issue {issue_id}: bonded {issue.bonded} != unassigned {issue.unassigned} "
              f"+ unreported assignments {awaiting}")


def _check_conservation(state: EngineState) -> None:
    """Every asset's supply is in the balances, except the USDC held as bonds."""
    totals: dict[str, int] = {}
    for assets in state.balances.values():
        for asset, (available, held) in assets.items():
            totals[asset] = totals.get(asset, 0) + available + held
    bonds = sum(bond(issue.bonded, issue.instrument.bond)
                for issue in state.issues.values() if issue.instrument.bond is not None)
    check(totals.get(USDC, 0) + bonds == state.supply.get(USDC, 0),
          f"USDC: balances {totals.get(USDC, 0)} + bonds {bonds} != deposits - withdrawals "
          f"{state.supply.get(USDC, 0)}")
    for asset in (set(totals) | set(state.supply)) - {USDC}:
        check(totals.get(asset, 0) == state.supply.get(asset, 0),
              f"{asset}: balances {totals.get(asset, 0)} != deposits + issues - withdrawals "
              f"- redemptions {state.supply.get(asset, 0)}")
    for instrument in state.instruments.values():
        if instrument.closed and instrument.bond is not None:
            check(totals.get(instrument.symbol, 0) == 0,
                  f"{instrument.symbol} has tokens after its redemption")


def _check_book(state: EngineState, instrument: Instrument) -> None:
    for side in (instrument.bids, instrument.asks):
        _check_side(state, instrument, side)
    best_bid = instrument.bids.best_price()
    best_ask = instrument.asks.best_price()
    if best_bid is not None and best_ask is not None:
        check(best_bid < best_ask, f"{instrument.symbol} is crossed: {best_bid} >= {best_ask}")
    if instrument.closed:
        check(not instrument.bids.keys and not instrument.asks.keys,
              f"closed {instrument.symbol} has resting orders")


def _check_side(state: EngineState, instrument: Instrument, side: BookSide) -> None:
    check(side.keys == sorted(set(side.keys)), f"{instrument.symbol} levels not sorted")
    prices = {-key if side.is_buy else key for key in side.keys}
    check(prices == set(side.levels), f"{instrument.symbol} level index disagrees")
    for price, level in side.levels.items():
        resting = list(level.resting_orders())
        check(len(resting) == level.live > 0, f"{instrument.symbol} level {price} count")
        for order in resting:
            check(order.price == price and order.is_buy == side.is_buy,
                  f"order {order.order_id} on the wrong level")
            check(order.instrument is instrument, f"order {order.order_id} on the wrong book")
            check(state.open_orders.get((order.account, order.client_order_id)) is order,
                  f"resting order {order.order_id} is not open")
