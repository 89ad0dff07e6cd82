"""The private side of the projection: each account's open orders, balances, fills and
execution reports.

Pure, like `gateway.projection` that drives it. The balances follow PROTOCOL.md's holds
exactly (`protocol.effects`): `held` is the sum of the open orders' holds, `available` the
total less `held`. Order events also move the books' levels, through `MarketData.level`.
Delivery (v2) moves money too: an issue's bond leaves the issuer's USDC and its tokens come
in; releases and compensations come back in USDC; at the close of a deliverable instrument
every balance of its token is redeemed to 0.

A strip (v2) trades as a taker that is never an open order: between its strip_accepted and
its strip_done each leg's trades name the strip's id as their taker order, and the leg is
followed here as a market order of its own (`CLIENT_ORDER_ID:LEG_INDEX`), so its fills,
execution reports and balances are those of any trade.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.marketdata import (
    FeedUpdate,
    InstrumentState,
    LogPosition,
    MarketData,
    ProjectionError,
    Wanted,
)
from gateway.messages import encode
from protocol import USDC, AnyEvent, events, format_micro, parse_micro
from protocol.effects import order_hold, trade_moves, trade_sides
from wsapi.messages import (
    Balance,
    BalancesMessage,
    Fill,
    FillsMessage,
    OrderReport,
    OrdersMessage,
    TradeItem,
)
from wsapi.requests import RESERVED_PREFIX


class OpenOrder(msgspec.Struct, gc=False):
    """An order the engine accepted and has not closed.

    Untracked by the garbage collector (`gc=False`): a venue holds hundreds of thousands of
    these, and each full collection walked them all (70 ms per 200k orders, measured; in the
    e2e benchmark the gateway paused 50-300 ms every second or so, with nothing to collect).
    It refers only to its instrument, which never refers back, so it is in no cycle.
    """

    order_id: str
    account: str
    client_order_id: str
    instrument: InstrumentState
    is_buy: bool
    is_market: bool
    order_type: str
    price: int
    quantity: int
    filled: int = 0
    hold: int = 0

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled

    def required_hold(self) -> int:
        return order_hold(self.is_buy, self.is_market, self.remaining, self.price,
                          self.instrument.hold_fee_bps)


@dataclass(slots=True)
class StripInFlight:
    """A strip between its strip_accepted and its strip_done, and its leg trading now."""

    account: str
    is_buy: bool
    quantity: int
    leg: OpenOrder | None = None


class Accounts:
    """Apply the events of orders and money; hand out each account's state and reports."""

    def __init__(self, position: LogPosition, market: MarketData, *, fills_kept_max: int,
                 reports_wanted: Callable[[str], bool]) -> None:
        self.position = position
        self.market = market
        # Whether an account's execution reports have a reader: building one for nobody
        # took ~15% of applying events (a snapshot is built from the state, not from them).
        self.reports_wanted = reports_wanted
        self.fills_kept_max = fills_kept_max
        self.orders: dict[str, OpenOrder] = {}
        self.open_by_client: dict[tuple[str, str], OpenOrder] = {}
        self.by_account: dict[str, dict[str, OpenOrder]] = {}  # account -> order id -> order
        self.balances: dict[str, dict[str, list[int]]] = {}  # account -> asset -> [total, held]
        self.strips: dict[str, StripInFlight] = {}  # strip id -> the strip trading now
        self._reports: dict[str, list[OrderReport]] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._recent_fills: dict[str, deque[Fill]] = {}  # account -> its latest fills
        self._dirty_balances: dict[str, set[str]] = {}

    # -- applying events -------------------------------------------------------------------

    def handlers(self) -> dict[type[Any], Callable[[Any], None]]:
        """Return the method that applies each type of event these accounts follow."""
        return {
            events.Deposited: self.deposited, events.Withdrawn: self.withdrawn,
            events.OrderAccepted: self.accepted, events.OrderRejected: self.rejected,
            events.Trade: self.trade, events.OrderCanceled: self.canceled,
            events.OrderAmended: self.amended, events.OrderReduced: self.reduced,
            events.CancelRejected: self.cancel_rejected,
            events.AmendRejected: self.amend_rejected,
            events.CapacityIssued: self.issued, events.BondReleased: self.released,
            events.DeliverySettled: self.delivered, events.InstrumentClosed: self.redeem,
            events.StripAccepted: self.strip_accepted, events.StripRejected: self.strip_rejected,
            events.StripDone: self.strip_done,
        }

    def deposited(self, event: events.Deposited) -> None:
        self._add_total(event.account, event.asset, _amount(event.asset, event.amount))

    def withdrawn(self, event: events.Withdrawn) -> None:
        self._add_total(event.account, event.asset, -_amount(event.asset, event.amount))

    def issued(self, event: events.CapacityIssued) -> None:
        self._add_total(event.account, USDC, -parse_micro(event.bond))
        self._add_total(event.account, event.instrument, event.quantity)

    def released(self, event: events.BondReleased) -> None:
        self._add_total(event.account, USDC, parse_micro(event.amount))

    def delivered(self, event: events.DeliverySettled) -> None:
        """Pay the holder its compensation; the issuer's share comes as a bond_released."""
        self._add_total(event.holder, USDC, parse_micro(event.compensation))

    def redeem(self, event: events.InstrumentClosed) -> None:
        """Set every balance of a deliverable instrument's token to 0 (its orders were all
        canceled before, so nothing is held)."""
        symbol = event.symbol
        if self.market.instruments[symbol].spec.bond_per_gpu_hour is None:
            return
        for account, assets in self.balances.items():
            pair = assets.get(symbol)
            if pair is None or pair[0] == 0:
                continue
            if pair[1]:
                raise ProjectionError(f"{account} holds {pair[1]} {symbol} at its close")
            self._add_total(account, symbol, -pair[0])

    def accepted(self, event: events.OrderAccepted) -> None:
        instrument = self.market.instruments[event.instrument]
        is_market = event.order_type == "market"
        order = OpenOrder(
            order_id=event.order_id, account=event.account,
            client_order_id=event.client_order_id, instrument=instrument,
            is_buy=event.side == "buy", is_market=is_market, order_type=event.order_type,
            price=0 if is_market or event.price is None else parse_micro(event.price),
            quantity=event.quantity,
        )
        self.orders[order.order_id] = order
        self.open_by_client[(order.account, order.client_order_id)] = order
        self.by_account.setdefault(order.account, {})[order.order_id] = order
        self._set_hold(order)
        if not is_market:
            self._level(order, order.remaining)
        self._report(order, event, "accepted", "open")

    def rejected(self, event: events.OrderRejected) -> None:
        if self.reports_wanted(event.account):
            self._reports.setdefault(event.account, []).append(OrderReport(
                event="rejected", client_order_id=event.client_order_id, seq=event.seq,
                ts=event.ts, status="rejected", instrument=event.instrument,
                reason=event.reason,
            ))

    def trade(self, event: events.Trade) -> None:
        maker = self.orders[event.maker_order_id]
        taker = self.orders.get(event.taker_order_id)
        strip_leg = taker is None
        if taker is None:
            taker = self._strip_leg(event)
        instrument = maker.instrument
        price = parse_micro(event.price)
        quantity = event.quantity
        buyer, buyer_fee, seller, seller_fee = trade_sides(
            taker.is_buy, maker.account, parse_micro(event.maker_fee), taker.account,
            parse_micro(event.taker_fee))
        for order in (maker, taker):
            order.filled += quantity
            if not order.is_market:
                self._level(order, -quantity)
            self._set_hold(order)
        for account, asset, amount in trade_moves(buyer, buyer_fee, seller, seller_fee,
                                                  instrument.spec.symbol, quantity, price):
            self._add_total(account, asset, amount)
        item = TradeItem(trade_id=event.trade_id, price=event.price, quantity=quantity,
                         aggressor_side="buy" if event.aggressor_side == "buy" else "sell",
                         ts=event.ts)
        self.market.add_trade(instrument, item, price)
        for order, fee, liquidity in ((maker, event.maker_fee, "maker"),
                                      (taker, event.taker_fee, "taker")):
            fill = Fill(
                trade_id=event.trade_id, instrument=event.instrument,
                client_order_id=order.client_order_id, order_id=order.order_id,
                side="buy" if order.is_buy else "sell", price=event.price, quantity=quantity,
                fee=fee, liquidity=liquidity, seq=event.seq, ts=event.ts,  # type: ignore[arg-type]
            )
            self._fills.setdefault(order.account, []).append(fill)
            recent = self._recent_fills.get(order.account)
            if recent is None:
                recent = self._recent_fills[order.account] = deque(maxlen=self.fills_kept_max)
            recent.append(fill)
            status = "filled" if order.remaining == 0 else "open"
            self._report(order, event, "fill", status, fill_price=event.price,
                         fill_quantity=quantity)
            if order.remaining == 0 and not (strip_leg and order is taker):
                self._close(order)

    def strip_accepted(self, event: events.StripAccepted) -> None:
        self.strips[event.strip_id] = StripInFlight(
            account=event.account, is_buy=event.side == "buy", quantity=event.quantity)
        self._strip_report(event.account, OrderReport(
            event="strip_accepted", client_order_id=event.client_order_id, seq=event.seq,
            ts=event.ts, status="open", order_id=event.strip_id, side=event.side,
            quantity=event.quantity))

    def strip_rejected(self, event: events.StripRejected) -> None:
        self._strip_report(event.account, OrderReport(
            event="strip_rejected", client_order_id=event.client_order_id, seq=event.seq,
            ts=event.ts, status="rejected", reason=event.reason))

    def strip_done(self, event: events.StripDone) -> None:
        strip = self.strips.pop(event.strip_id, None)
        if strip is None:
            raise ProjectionError(f"strip_done of strip {event.strip_id}, never accepted")
        if strip.leg is not None and (strip.leg.remaining or strip.leg.hold):
            raise ProjectionError(f"strip {event.strip_id} done with leg "
                                  f"{strip.leg.client_order_id} unfilled")
        self._strip_report(event.account, OrderReport(
            event="strip_done", client_order_id=event.client_order_id, seq=event.seq,
            ts=event.ts, status="filled", order_id=event.strip_id))

    def _strip_leg(self, event: events.Trade) -> OpenOrder:
        """The taker of a strip's trade: its current leg, or the next leg, begun now."""
        strip = self.strips.get(event.taker_order_id)
        if strip is None:
            raise ProjectionError(f"trade {event.trade_id}: taker order "
                                  f"{event.taker_order_id} is neither open nor a strip")
        leg = strip.leg
        if leg is not None and leg.client_order_id == event.taker_client_order_id:
            return leg
        if leg is not None and leg.remaining:
            raise ProjectionError(f"strip {event.taker_order_id} left leg "
                                  f"{leg.client_order_id} with {leg.remaining} unfilled")
        leg = strip.leg = OpenOrder(
            order_id=event.taker_order_id, account=strip.account,
            client_order_id=event.taker_client_order_id,
            instrument=self.market.instruments[event.instrument], is_buy=strip.is_buy,
            is_market=True, order_type="market", price=0, quantity=strip.quantity)
        return leg

    def _strip_report(self, account: str, report: OrderReport) -> None:
        if self.reports_wanted(account):
            self._reports.setdefault(account, []).append(report)

    def canceled(self, event: events.OrderCanceled) -> None:
        order = self.orders[event.order_id]
        if order.remaining != event.canceled_quantity:
            raise ProjectionError(f"order {order.order_id} has {order.remaining} left, "
                                  f"canceled {event.canceled_quantity}")
        if not order.is_market:
            self._level(order, -order.remaining)
        self._report(order, event, "canceled", "canceled", reason=event.reason,
                     remaining_quantity=0)
        self._close(order)

    def amended(self, event: events.OrderAmended) -> None:
        order = self.orders[event.order_id]
        self._level(order, -order.remaining)
        order.price = parse_micro(event.price)
        order.quantity = event.quantity
        order.filled = event.quantity - event.remaining_quantity
        self._level(order, order.remaining)
        self._set_hold(order)
        self._report(order, event, "amended", "open")

    def reduced(self, event: events.OrderReduced) -> None:
        order = self.orders[event.order_id]
        if not order.is_market:
            self._level(order, -event.reduced_quantity)
        order.quantity -= event.reduced_quantity
        if order.remaining != event.remaining_quantity:
            raise ProjectionError(f"order {order.order_id} reduced to {order.remaining}, "
                                  f"event says {event.remaining_quantity}")
        self._set_hold(order)
        self._report(order, event, "reduced", "open", reason=event.reason)

    def cancel_rejected(self, event: events.CancelRejected) -> None:
        if (not event.client_order_id.startswith(RESERVED_PREFIX)
                and self.reports_wanted(event.account)):
            self._reports.setdefault(event.account, []).append(OrderReport(
                event="cancel_rejected", client_order_id=event.client_order_id, seq=event.seq,
                ts=event.ts, reason=event.reason,
            ))

    def amend_rejected(self, event: events.AmendRejected) -> None:
        if self.reports_wanted(event.account):
            self._reports.setdefault(event.account, []).append(OrderReport(
                event="amend_rejected", client_order_id=event.client_order_id, seq=event.seq,
                ts=event.ts, reason=event.reason,
            ))

    # -- state changes ---------------------------------------------------------------------

    def _level(self, order: OpenOrder, delta: int) -> None:
        self.market.level(order.instrument, order.is_buy, order.price, delta)

    def _set_hold(self, order: OpenOrder) -> None:
        hold = order.required_hold()
        delta = hold - order.hold
        if delta:
            asset = USDC if order.is_buy else order.instrument.spec.symbol
            self._wallet(order.account, asset)[1] += delta
            self._dirty_balances.setdefault(order.account, set()).add(asset)
            order.hold = hold

    def _close(self, order: OpenOrder) -> None:
        """Finish an order: its hold goes back to available and it is no longer open."""
        if order.hold:
            asset = USDC if order.is_buy else order.instrument.spec.symbol
            self._wallet(order.account, asset)[1] -= order.hold
            self._dirty_balances.setdefault(order.account, set()).add(asset)
            order.hold = 0
        del self.orders[order.order_id]
        del self.open_by_client[(order.account, order.client_order_id)]
        account_orders = self.by_account[order.account]
        del account_orders[order.order_id]
        if not account_orders:
            del self.by_account[order.account]

    def _add_total(self, account: str, asset: str, delta: int) -> None:
        self._wallet(account, asset)[0] += delta
        self._dirty_balances.setdefault(account, set()).add(asset)

    def _wallet(self, account: str, asset: str) -> list[int]:
        assets = self.balances.setdefault(account, {})
        pair = assets.get(asset)
        if pair is None:
            pair = assets[asset] = [0, 0]
        return pair

    def _report(
        self, order: OpenOrder, event: AnyEvent, kind: str, status: str, **extra: Any
    ) -> None:
        if not self.reports_wanted(order.account):
            return
        fields: dict[str, Any] = {
            "order_id": order.order_id, "instrument": order.instrument.spec.symbol,
            "side": "buy" if order.is_buy else "sell", "order_type": order.order_type,
            "price": format_micro(order.price) if not order.is_market else None,
            "quantity": order.quantity, "filled_quantity": order.filled,
            "remaining_quantity": order.remaining,
        }
        fields.update(extra)
        self._reports.setdefault(order.account, []).append(OrderReport(
            event=kind, client_order_id=order.client_order_id, seq=event.seq, ts=event.ts,
            status=status, **fields,
        ))

    # -- output ----------------------------------------------------------------------------

    def updates(self, wanted: Wanted) -> list[FeedUpdate]:
        """The orders, fills and balances messages of what changed since the last call."""
        updates: list[FeedUpdate] = []
        for account, reports in self._reports.items():
            if wanted("orders", account):
                updates.append(FeedUpdate("orders", account, encode(
                    OrdersMessage(kind="update", orders=reports))))
        for account, fills in self._fills.items():
            if wanted("fills", account):
                updates.append(FeedUpdate("fills", account, encode(
                    FillsMessage(kind="update", fills=fills))))
        for account, assets in self._dirty_balances.items():
            if wanted("balances", account):
                updates.append(FeedUpdate("balances", account, encode(BalancesMessage(
                    kind="update", seq=self.position.event_seq,
                    balances={asset: self._balance(account, asset) for asset in sorted(assets)},
                ))))
        self._reports = {}
        self._fills = {}
        self._dirty_balances = {}
        return updates

    # -- snapshots and queries -------------------------------------------------------------

    def recent_fills(self, account: str) -> list[Fill]:
        """The account's most recent fills (up to `fills_kept_max`), oldest first."""
        return list(self._recent_fills.get(account, ()))

    def balances_message(self, account: str) -> BalancesMessage:
        assets = self.balances.get(account, {})
        return BalancesMessage(kind="snapshot", seq=self.position.event_seq, balances={
            asset: self._balance(account, asset) for asset in sorted(assets)
            if assets[asset][0] or assets[asset][1]
        })

    def _balance(self, account: str, asset: str) -> Balance:
        total, held = self.balances[account][asset]
        if asset == USDC:
            return Balance(available=format_micro(total - held), held=format_micro(held))
        return Balance(available=total - held, held=held)

    def open_orders(self, account: str, instrument: str | None = None) -> list[OrderReport]:
        """Return the account's open orders as reports, oldest first."""
        orders = [
            order for order in self.by_account.get(account, {}).values()
            if instrument is None or order.instrument.spec.symbol == instrument
        ]
        orders.sort(key=lambda order: int(order.order_id))
        return [
            OrderReport(
                event="open", client_order_id=order.client_order_id,
                seq=self.position.event_seq, ts=self.position.time_ns, status="open",
                order_id=order.order_id, instrument=order.instrument.spec.symbol,
                side="buy" if order.is_buy else "sell", order_type=order.order_type,
                price=None if order.is_market else format_micro(order.price),
                quantity=order.quantity, filled_quantity=order.filled,
                remaining_quantity=order.remaining,
            )
            for order in orders
        ]


def _amount(asset: str, amount: str | int) -> int:
    if asset == USDC:
        return parse_micro(amount)
    return int(amount)
