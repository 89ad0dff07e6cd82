"""Order entry and matching: new, cancel, amend, mass cancel; trades, fees, self-trade."""

from __future__ import annotations

from matching_engine.core.book import Instrument, Order
from matching_engine.core.state import EngineState
from protocol import (
    USDC,
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelRejected,
    CommandRejected,
    MassCancel,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderReduced,
    OrderRejected,
    Trade,
    format_micro,
)
from protocol import reasons as R
from protocol.effects import BPS, buy_cost, fee, trade_moves, trade_sides
from protocol.errors import ProtocolError
from protocol.money import parse_positive_micro

MARKET_TIME_IN_FORCE = ("ioc", "fok")
PRICE_CACHE_SIZE_MAX = 4096
GTD = "gtd"


class OrderFlow(EngineState):
    """The order handlers; `Engine` adds the rest of the commands and time."""

    # -- new order -------------------------------------------------------------------------

    def on_new_order(self, command: NewOrder) -> None:
        reason, instrument, price = self._check_new_order(command)
        if reason is not None:
            named = command.instrument if command.instrument in self.instruments else None
            self.emit(OrderRejected(
                seq=self.next_seq(), ts=self.time, account=command.account,
                client_order_id=command.client_order_id, reason=reason, instrument=named,
            ))
            return
        assert instrument is not None
        is_market = command.order_type == "market"
        order = Order(
            order_id=self.order_counter + 1, account=command.account,
            client_order_id=command.client_order_id, instrument=instrument,
            is_buy=command.side == "buy", is_market=is_market, price=price,
            quantity=command.quantity,
            time_in_force=command.time_in_force or ("ioc" if is_market else "gtc"),
            expire_at=command.expire_at, post_only=command.post_only, stp=command.stp,
        )
        self.order_counter += 1
        self.emit(OrderAccepted(
            seq=self.next_seq(), ts=self.time, account=order.account,
            client_order_id=order.client_order_id, order_id=str(order.order_id),
            instrument=instrument.symbol, side=command.side, order_type=command.order_type,
            price=None if is_market else format_micro(price), quantity=order.quantity,
            time_in_force=order.time_in_force, post_only=order.post_only, stp=order.stp,
            expire_at=order.expire_at,
        ))
        self.register(order)
        self.set_hold(order, order.required_hold())
        if order.time_in_force == "fok" and not self._fills_whole(order):
            self.cancel(order, R.FOK)
            return
        if order.time_in_force == GTD:
            self.push_expiry(order)
        self._execute(order)

    def _check_new_order(self, command: NewOrder) -> tuple[str | None, Instrument | None, int]:
        """Return the first failing check's reason, else the instrument and the price."""
        if not self._well_formed(command):
            return R.INVALID_ORDER, None, 0
        if (command.account, command.client_order_id) in self.open_orders:
            return R.DUPLICATE_CLIENT_ORDER_ID, None, 0
        instrument = self.instruments.get(command.instrument)
        if instrument is None:
            return R.UNKNOWN_INSTRUMENT, None, 0
        if instrument.closed:
            return R.INSTRUMENT_CLOSED, None, 0
        price = 0
        if command.price is not None:
            price = self.parse_price(command.price, instrument)
            if price == 0:
                return R.INVALID_PRICE, None, 0
        if not 1 <= command.quantity <= instrument.max_order_quantity:
            return R.INVALID_QUANTITY, None, 0
        is_buy = command.side == "buy"
        if command.post_only and instrument.opposite(is_buy).crosses(is_buy, price):
            return R.POST_ONLY_WOULD_CROSS, None, 0
        if self._hold_for(command, instrument, price) > self.available(
            command.account, USDC if is_buy else instrument.symbol
        ):
            return R.INSUFFICIENT_FUNDS, None, 0
        return None, instrument, price

    def _well_formed(self, command: NewOrder) -> bool:
        time_in_force = command.time_in_force
        if command.order_type == "market":
            if command.price is not None or command.post_only:
                return False
            if time_in_force is not None and time_in_force not in MARKET_TIME_IN_FORCE:
                return False
        elif command.price is None:
            return False
        if command.post_only and time_in_force in MARKET_TIME_IN_FORCE:
            return False
        if time_in_force == GTD:
            return command.expire_at is not None and command.expire_at > self.time
        return command.expire_at is None

    @staticmethod
    def _hold_for(command: NewOrder, instrument: Instrument, price: int) -> int:
        if command.side == "sell":
            return command.quantity
        return buy_cost(command.quantity, price, instrument.hold_fee_bps)

    @staticmethod
    def parse_price(text: str, instrument: Instrument) -> int:
        """Return the price in micro-USDC, or 0 when it is not a positive multiple of the tick."""
        prices = instrument.parsed_prices
        price = prices.get(text)
        if price is None:
            try:
                price = parse_positive_micro(text, "price")
            except ProtocolError:
                price = 0
            if price % instrument.tick:
                price = 0
            if len(prices) >= PRICE_CACHE_SIZE_MAX:
                prices.clear()
            prices[text] = price
        return price

    # -- execution -------------------------------------------------------------------------

    def _execute(self, order: Order) -> None:
        """Match an incoming (or repriced) order, then rest or cancel what is left."""
        if not self._match(order):
            return
        if order.quantity == order.filled:
            self.close(order)
        elif order.is_market:
            self.cancel(order, R.MARKET)
        elif order.time_in_force == "ioc":
            self.cancel(order, R.IOC)
        else:
            order.instrument.side(order.is_buy).add(order)

    def _match(self, taker: Order) -> bool:
        """Trade the taker against the opposite side; False when self-trade prevention ended it."""
        instrument = taker.instrument
        opposite = instrument.opposite(taker.is_buy)
        is_buy = taker.is_buy
        while taker.quantity > taker.filled:
            level = opposite.best()
            if level is None:
                return True
            if not taker.is_market and (
                level.price > taker.price if is_buy else level.price < taker.price
            ):
                return True
            maker = level.front()
            if maker.account == taker.account:
                if not self._prevent_self_trade(taker, maker):
                    return False
                continue
            quantity = min(taker.quantity - taker.filled, maker.quantity - maker.filled)
            if taker.is_market and is_buy:
                quantity = _affordable(
                    quantity, self.available(taker.account, USDC), maker.price,
                    instrument.taker_fee_bps,
                )
                if quantity == 0:
                    return True
            self._trade(maker, taker, quantity)
        return True

    def _trade(self, maker: Order, taker: Order, quantity: int) -> None:
        instrument = maker.instrument
        price = maker.price
        notional = quantity * price
        maker_fee = fee(notional, instrument.maker_fee_bps)
        taker_fee = fee(notional, instrument.taker_fee_bps)
        maker.filled += quantity
        taker.filled += quantity
        buyer, buyer_fee, seller, seller_fee = trade_sides(
            taker.is_buy, maker, maker_fee, taker, taker_fee)
        self.set_hold(buyer, buyer.required_hold())
        self.set_hold(seller, seller.required_hold())
        wallet = self.wallet
        for account, asset, amount in trade_moves(buyer.account, buyer_fee, seller.account,
                                                  seller_fee, instrument.symbol, quantity, price):
            wallet(account, asset)[0] += amount
        self.trade_counter += 1
        self.emit(Trade(
            seq=self.next_seq(), ts=self.time, trade_id=str(self.trade_counter),
            instrument=instrument.symbol, price=format_micro(price), quantity=quantity,
            aggressor_side="buy" if taker.is_buy else "sell", maker_account=maker.account,
            maker_client_order_id=maker.client_order_id, maker_order_id=str(maker.order_id),
            maker_fee=format_micro(maker_fee), taker_account=taker.account,
            taker_client_order_id=taker.client_order_id, taker_order_id=str(taker.order_id),
            taker_fee=format_micro(taker_fee),
        ))
        if maker.quantity == maker.filled:
            self.close(maker)

    def _prevent_self_trade(self, taker: Order, maker: Order) -> bool:
        """Apply the taker's STP mode; False when the taker is finished."""
        mode = taker.stp
        if mode == "cancel_newest":
            self.cancel(taker, R.STP)
            return False
        if mode == "cancel_oldest":
            self.cancel(maker, R.STP)
            return True
        if mode == "cancel_both":
            self.cancel(maker, R.STP)
            self.cancel(taker, R.STP)
            return False
        decrement = min(taker.quantity - taker.filled, maker.quantity - maker.filled)
        self._decrement(maker, decrement)
        return self._decrement(taker, decrement)

    def _decrement(self, order: Order, quantity: int) -> bool:
        """Reduce an order by `quantity` without a trade; False when that finishes it."""
        remaining = order.quantity - order.filled - quantity
        if remaining == 0:
            self.cancel(order, R.STP)
            return False
        order.quantity -= quantity
        self.set_hold(order, order.required_hold())
        self.emit(OrderReduced(
            seq=self.next_seq(), ts=self.time, account=order.account,
            client_order_id=order.client_order_id, order_id=str(order.order_id),
            instrument=order.instrument.symbol, reason=R.STP, reduced_quantity=quantity,
            remaining_quantity=remaining,
        ))
        return True

    def _fills_whole(self, taker: Order) -> bool:
        """Run the normal execution in the head: would it fill the whole quantity?"""
        needed = taker.quantity - taker.filled
        instrument = taker.instrument
        budget = self.available(taker.account, USDC)
        for level in instrument.opposite(taker.is_buy).levels_in_priority():
            if not taker.is_market and (
                level.price > taker.price if taker.is_buy else level.price < taker.price
            ):
                return False
            for maker in level.resting_orders():
                if maker.account == taker.account:
                    if taker.stp == "cancel_oldest":
                        continue
                    return False
                maker_remaining = maker.quantity - maker.filled
                while maker_remaining and needed:
                    quantity = min(needed, maker_remaining)
                    if taker.is_market and taker.is_buy:
                        bps = instrument.taker_fee_bps
                        quantity = _affordable(quantity, budget, level.price, bps)
                        if quantity == 0:
                            return False
                        budget -= buy_cost(quantity, level.price, bps)
                    needed -= quantity
                    maker_remaining -= quantity
                if needed == 0:
                    return True
        return False

    # -- cancel, amend, mass cancel --------------------------------------------------------

    def on_cancel_order(self, command: CancelOrder) -> None:
        order = self.open_orders.get((command.account, command.client_order_id))
        if order is None:
            self.emit(CancelRejected(
                seq=self.next_seq(), ts=self.time, account=command.account,
                client_order_id=command.client_order_id, reason=R.UNKNOWN_ORDER,
            ))
            return
        self.cancel(order, command.reason)

    def on_mass_cancel(self, command: MassCancel) -> None:
        if command.instrument is not None and command.instrument not in self.instruments:
            self.emit(CommandRejected(
                seq=self.next_seq(), ts=self.time, command="mass_cancel",
                reason=R.UNKNOWN_INSTRUMENT,
            ))
            return
        orders = self.account_orders.get(command.account, {})
        for order in list(orders.values()):
            if command.instrument is None or order.instrument.symbol == command.instrument:
                self.cancel(order, command.reason)

    def on_amend_order(self, command: AmendOrder) -> None:
        order = self.open_orders.get((command.account, command.client_order_id))
        reason, price, quantity = self._check_amend(command, order)
        if reason is not None:
            self.emit(AmendRejected(
                seq=self.next_seq(), ts=self.time, account=command.account,
                client_order_id=command.client_order_id, reason=reason,
            ))
            return
        assert order is not None
        if quantity <= order.filled:
            self.cancel(order, R.AMENDED)
            return
        loses_priority = price != order.price or quantity > order.quantity
        if loses_priority:
            order.instrument.side(order.is_buy).remove(order)
            order = order.requeued()
            self.replace(order)
        order.price = price
        order.quantity = quantity
        self.set_hold(order, order.required_hold())
        self.emit(OrderAmended(
            seq=self.next_seq(), ts=self.time, account=order.account,
            client_order_id=order.client_order_id, order_id=str(order.order_id),
            instrument=order.instrument.symbol, price=format_micro(price), quantity=quantity,
            remaining_quantity=quantity - order.filled,
        ))
        if loses_priority:
            self._execute(order)

    def _check_amend(self, command: AmendOrder, order: Order | None) -> tuple[str | None, int, int]:
        """Return the first failing check's reason, else the new price and total quantity."""
        if order is None:
            return R.UNKNOWN_ORDER, 0, 0
        if command.new_price is None and command.new_quantity is None:
            return R.INVALID_ORDER, 0, 0
        instrument = order.instrument
        price = order.price
        if command.new_price is not None:
            price = self.parse_price(command.new_price, instrument)
            if price == 0:
                return R.INVALID_PRICE, 0, 0
        quantity = order.quantity if command.new_quantity is None else command.new_quantity
        if not 1 <= quantity <= instrument.max_order_quantity:
            return R.INVALID_QUANTITY, 0, 0
        if quantity <= order.filled:
            return None, price, quantity
        if _hold_after(order, price, quantity) - order.hold > self.available(
            order.account, USDC if order.is_buy else instrument.symbol
        ):
            return R.INSUFFICIENT_FUNDS, 0, 0
        if order.post_only and instrument.opposite(order.is_buy).crosses(order.is_buy, price):
            return R.POST_ONLY_WOULD_CROSS, 0, 0
        return None, price, quantity


def _affordable(wanted: int, budget: int, price: int, fee_bps: int) -> int:
    """Largest quantity up to `wanted` whose notional plus fee (floored) `budget` pays."""
    if buy_cost(wanted, price, fee_bps) <= budget:
        return wanted
    quantity = budget * BPS // (price * (BPS + fee_bps))
    while quantity < wanted and buy_cost(quantity + 1, price, fee_bps) <= budget:
        quantity += 1
    return quantity


def _hold_after(order: Order, price: int, quantity: int) -> int:
    remaining = quantity - order.filled
    if not order.is_buy:
        return remaining
    return buy_cost(remaining, price, order.instrument.hold_fee_bps)
