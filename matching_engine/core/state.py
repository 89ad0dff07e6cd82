"""The engine's mutable state and the primitive moves on it (balances, holds, events)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from matching_engine.core.book import Instrument, Order
from protocol import USDC, OrderCanceled
from protocol.events import Event

if TYPE_CHECKING:
    from matching_engine.core.delivery import Assignment, Issue

NEVER = 2**63


class InvariantError(Exception):
    """An internal invariant of the engine is broken: a bug, never a business outcome."""


class EngineState:
    """Books, balances and counters; the handlers in `Engine` change them."""

    def __init__(self) -> None:
        self.time = 0
        self.seq = 0
        self.order_counter = 0
        self.trade_counter = 0
        self.instruments: dict[str, Instrument] = {}
        # account -> asset -> [available, held]
        self.balances: dict[str, dict[str, list[int]]] = {}
        self.open_orders: dict[tuple[str, str], Order] = {}
        # account -> order_id -> order, in acceptance order
        self.account_orders: dict[str, dict[int, Order]] = {}
        # (expire_at, order_id, account, client_order_id) of gtd orders, a heap
        self.expiries: list[tuple[int, int, str, str]] = []
        self.deposit_ids: set[str] = set()
        # asset -> deposited + issued - withdrawn - redeemed, for the conservation invariant
        self.supply: dict[str, int] = {}
        # every issue ever accepted, in the order issued (v2, Delivery)
        self.issues: dict[str, Issue] = {}
        # (issue_id, holder) -> assignment, in the order assigned at close
        self.assignments: dict[tuple[str, str], Assignment] = {}
        self.next_close_ns = NEVER
        self.events: list[Any] = []

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def wallet(self, account: str, asset: str) -> list[int]:
        """Return the [available, held] pair of an account's asset, creating it at zero."""
        assets = self.balances.get(account)
        if assets is None:
            assets = self.balances[account] = {}
        pair = assets.get(asset)
        if pair is None:
            pair = assets[asset] = [0, 0]
        return pair

    def available(self, account: str, asset: str) -> int:
        assets = self.balances.get(account)
        if assets is None:
            return 0
        pair = assets.get(asset)
        return 0 if pair is None else pair[0]

    def set_hold(self, order: Order, hold: int) -> None:
        """Move the difference between the order's hold and `hold` into or out of held."""
        delta = hold - order.hold
        if delta:
            asset = USDC if order.is_buy else order.instrument.symbol
            pair = self.wallet(order.account, asset)
            pair[0] -= delta
            pair[1] += delta
            order.hold = hold

    def push_expiry(self, order: Order) -> None:
        assert order.expire_at is not None
        heapq.heappush(
            self.expiries, (order.expire_at, order.order_id, order.account, order.client_order_id)
        )

    def register(self, order: Order) -> None:
        """Make an accepted order open (findable by client order id, counted as held)."""
        self.open_orders[(order.account, order.client_order_id)] = order
        orders = self.account_orders.get(order.account)
        if orders is None:
            orders = self.account_orders[order.account] = {}
        orders[order.order_id] = order

    def replace(self, order: Order) -> None:
        """Point the registrations of an order at a requeued copy of it."""
        self.open_orders[(order.account, order.client_order_id)] = order
        self.account_orders[order.account][order.order_id] = order

    def close(self, order: Order) -> None:
        """Finish an order: off the book, hold released, no longer open."""
        if order.resting:
            order.instrument.side(order.is_buy).remove(order)
        self.set_hold(order, 0)
        del self.open_orders[(order.account, order.client_order_id)]
        del self.account_orders[order.account][order.order_id]
        order.open = False

    def cancel(self, order: Order, reason: str) -> None:
        self.emit(OrderCanceled(
            seq=self.next_seq(), ts=self.time, account=order.account,
            client_order_id=order.client_order_id, order_id=str(order.order_id),
            instrument=order.instrument.symbol, reason=reason,
            canceled_quantity=order.quantity - order.filled,
        ))
        self.close(order)
