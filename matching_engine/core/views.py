"""Read-only views of the engine state: the replay final-state document."""

from __future__ import annotations

from typing import Any

from matching_engine.core.state import EngineState
from protocol import USDC, format_micro
from protocol.effects import bond


def final_state(state: EngineState) -> dict[str, Any]:
    """Return the final state as PROTOCOL.md's Replay section and protocol-notes.md say."""
    accounts: dict[str, Any] = {}
    for account in sorted(state.balances):
        assets = {
            asset: _balance(asset, available, held)
            for asset, (available, held) in sorted(state.balances[account].items())
            if available or held
        }
        if assets:
            accounts[account] = assets
    open_orders = [
        {
            "account": order.account,
            "client_order_id": order.client_order_id,
            "order_id": str(order.order_id),
            "instrument": order.instrument.symbol,
            "side": "buy" if order.is_buy else "sell",
            "price": format_micro(order.price),
            "quantity": order.quantity,
            "remaining_quantity": order.quantity - order.filled,
        }
        for instrument in state.instruments.values()
        for side in (instrument.bids, instrument.asks)
        for order in side.orders_in_priority()
    ]
    return {"accounts": accounts, "open_orders": open_orders, "issues": _issues(state),
            "deliveries": _deliveries(state)}


def _issues(state: EngineState) -> list[dict[str, Any]]:
    """Issues with GPU-hours still under bond, in the order issued, with those hours."""
    issues = []
    for issue in state.issues.values():
        if issue.bonded > 0:
            assert issue.instrument.bond is not None
            issues.append({
                "issue_id": issue.issue_id, "account": issue.account,
                "instrument": issue.instrument.symbol, "node_id": issue.node_id,
                "quantity": issue.bonded,
                "bond": format_micro(bond(issue.bonded, issue.instrument.bond)),
            })
    return issues


def _deliveries(state: EngineState) -> list[dict[str, Any]]:
    """Assignments not yet reported, in the order assigned."""
    return [
        {"issue_id": a.issue_id, "holder": a.holder, "quantity": a.quantity}
        for a in state.assignments.values()
        if not a.reported
    ]


def _balance(asset: str, available: int, held: int) -> dict[str, str | int]:
    if asset == USDC:
        return {"available": format_micro(available), "held": format_micro(held)}
    return {"available": available, "held": held}
