"""An independent reference model of the matching engine, read straight from the spec.

`ReferenceEngine` implements PROTOCOL.md (v1, and v2's cancel reasons, Delivery and Strip
orders) and docs/protocol-notes.md for clarity, not speed: every open order sits in one plain
list in acceptance order, the book is found by a linear scan and sorted every time it is
needed, a hold is never stored but computed from the order it belongs to, and all money is
integer micro-USDC. Delivery lives in `tests.reference_delivery` and Strip orders in
`tests.reference_strips`; they reach the engine through its helpers without an underscore
(`emit`, `instrument`, `book`, `price`, `balance`, `credit`, `trade`). The model shares
nothing with `matching_engine` (it neither imports nor was written from it): the
differential tests run both and demand the same events, byte for byte, and the same final
state.

Where the spec leaves a point open beyond protocol-notes.md, the reading taken here is
marked "Reading:" in a comment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from protocol import (
    FEE_ACCOUNT,
    USDC,
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CancelRejected,
    CommandRejected,
    DeliveryReport,
    Deposit,
    Deposited,
    DepositRejected,
    Event,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
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
    ProtocolError,
    StripRejected,
    Tick,
    Trade,
    Withdraw,
    WithdrawalRejected,
    Withdrawn,
    format_micro,
    parse_micro,
    parse_token_amount,
)
from protocol import reasons as reason
from protocol.commands import ACCOUNT_COMMANDS, COMMAND_TYPES, ORDER_COMMANDS
from tests import reference_delivery, reference_strips

BPS_PER_UNIT = 10_000
FEE_BPS_MAX = 1000
BUY = "buy"
SELL = "sell"


class ModelError(Exception):
    """The reference model found its own state broken: a bug in the model (or the spec)."""


@dataclasses.dataclass
class Instrument:
    symbol: str
    gpu: str
    region: str
    delivery_start: int
    delivery_hours: int
    tick_micro: int
    max_order_quantity: int
    maker_fee_bps: int
    taker_fee_bps: int
    bond_micro: int | None  # bond per GPU-hour; None when the instrument is not deliverable
    closed: bool = False

    @property
    def hold_fee_bps(self) -> int:
        return max(self.maker_fee_bps, self.taker_fee_bps)


@dataclasses.dataclass
class Order:
    order_id: int
    account: str
    client_order_id: str
    instrument: str
    side: str
    order_type: str
    price_micro: int | None  # None for a market order
    quantity: int  # total, filled part included
    filled: int
    time_in_force: str
    post_only: bool
    stp: str
    expire_at: int | None
    priority: int  # time priority: smaller is older; renewed when an amend loses priority

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled


@dataclasses.dataclass(frozen=True)
class Taker:
    """The taker's side of a trade: an incoming order's, or a strip leg's."""

    account: str
    client_order_id: str
    order_id: int
    side: str

    @classmethod
    def of(cls, order: Order) -> Taker:
        return cls(account=order.account, client_order_id=order.client_order_id,
                   order_id=order.order_id, side=order.side)


def fee_micro(notional_micro: int, fee_bps: int) -> int:
    """A fee: floor(notional * bps / 10000)."""
    return notional_micro * fee_bps // BPS_PER_UNIT


def limit_buy_hold_micro(remaining: int, price_micro: int, fee_bps: int) -> int:
    """R*L + floor(R*L*b/10000)."""
    notional = remaining * price_micro
    return notional + fee_micro(notional, fee_bps)


def affordable_quantity(available_micro: int, price_micro: int, fee_bps: int, limit: int) -> int:
    """The largest q <= limit whose cost q*P + floor(q*P*bps/10000) fits in available."""
    low, high = 0, limit  # cost(low) fits; find the largest such low by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if limit_buy_hold_micro(middle, price_micro, fee_bps) <= available_micro:
            low = middle
        else:
            high = middle - 1
    return low


def crosses(side: str, limit_micro: int | None, maker_price_micro: int) -> bool:
    """Whether an order on `side` at `limit_micro` (None: market) meets a maker's price."""
    if limit_micro is None:
        return True
    if side == BUY:
        return maker_price_micro <= limit_micro
    return maker_price_micro >= limit_micro


def opposite(side: str) -> str:
    return SELL if side == BUY else BUY


class ReferenceEngine:
    """The engine of PROTOCOL.md, one linear scan at a time."""

    def __init__(self) -> None:
        self.time = 0
        self.last_seq = 0
        self.last_order_id = 0
        self.last_trade_id = 0
        self.last_priority = 0
        self.instruments: list[Instrument] = []  # in listing order
        self.orders: list[Order] = []  # every open order, in acceptance order
        self.available: dict[tuple[str, str], int] = {}  # (account, asset) -> amount
        self.deposit_ids: set[str] = set()
        self.delivery = reference_delivery.Delivery(self)  # the issues and assignments
        self._events: list[Event] = []

    # ----------------------------------------------------------------------------- API

    def apply(self, command: Any) -> list[Event]:
        """Apply one decoded command; return the events it caused."""
        self._events = []
        if isinstance(command, MalformedCommand):
            self._apply_malformed(command)
        else:
            self._advance_time(command.ts)
            handlers: dict[type, Callable[[Any], None]] = {
                ListInstrument: self._list_instrument,
                Deposit: self._deposit,
                Withdraw: self._withdraw,
                NewOrder: self._new_order,
                CancelOrder: self._cancel_order,
                AmendOrder: self._amend_order,
                MassCancel: self._mass_cancel,
                Tick: lambda _command: None,
                IssueCapacity: self.delivery.issue_capacity,
                DeliveryReport: self.delivery.delivery_report,
                NewStripOrder: lambda strip: reference_strips.new_strip_order(self, strip),
            }
            handlers[type(command)](command)
        self.validate()
        return self._events

    def final_state(self) -> dict[str, Any]:
        """The replay final-state document (protocol-notes.md, Final state)."""
        balances: dict[tuple[str, str], list[int]] = {}
        for key, amount in self.available.items():
            balances.setdefault(key, [0, 0])[0] += amount
        for order in self.orders:
            asset, held = self._hold(order)
            balances.setdefault((order.account, asset), [0, 0])[1] += held
        accounts: dict[str, Any] = {}
        for account, asset in sorted(balances):
            available, held = balances[(account, asset)]
            if available == 0 and held == 0:
                continue
            accounts.setdefault(account, {})[asset] = {
                "available": self._wire_amount(asset, available),
                "held": self._wire_amount(asset, held),
            }
        open_orders = []
        for instrument in self.instruments:
            for side in (BUY, SELL):
                for order in self.book(instrument.symbol, side):
                    open_orders.append({
                        "account": order.account,
                        "client_order_id": order.client_order_id,
                        "order_id": str(order.order_id),
                        "instrument": order.instrument,
                        "side": order.side,
                        "price": format_micro(self.price(order)),
                        "quantity": order.quantity,
                        "remaining_quantity": order.remaining,
                    })
        return {"accounts": accounts, "open_orders": open_orders,
                "issues": self.delivery.final_issues(),
                "deliveries": self.delivery.final_deliveries()}

    def validate(self) -> None:
        """Raise ModelError when the model's own state breaks a rule of the spec."""
        for (account, asset), amount in self.available.items():
            if amount < 0:
                raise ModelError(f"{account} has negative available {asset}: {amount}")
        seen: set[tuple[str, str]] = set()
        for order in self.orders:
            key = (order.account, order.client_order_id)
            if key in seen:
                raise ModelError(f"two open orders {key}")
            seen.add(key)
            if order.remaining <= 0 or order.order_type != "limit":
                raise ModelError(f"order {order.order_id} open with {order.remaining} left")
            if self.instrument(order.instrument).closed:  # type: ignore[union-attr]
                raise ModelError(f"order {order.order_id} open on a closed instrument")
            if order.expire_at is not None and order.expire_at <= self.time:
                raise ModelError(f"order {order.order_id} open after it expired")
        for instrument in self.instruments:
            bids = self.book(instrument.symbol, BUY)
            asks = self.book(instrument.symbol, SELL)
            if bids and asks and self.price(bids[0]) >= self.price(asks[0]):
                raise ModelError(f"book {instrument.symbol} is crossed")
        self.delivery.validate()

    # ------------------------------------------------------------------- small helpers

    def emit(self, event_type: type[Event], **fields: Any) -> None:
        self.last_seq += 1
        self._events.append(event_type(seq=self.last_seq, ts=self.time, **fields))

    def instrument(self, symbol: str | None) -> Instrument | None:
        for instrument in self.instruments:
            if instrument.symbol == symbol:
                return instrument
        return None

    def _listed_symbol(self, symbol: str | None) -> str | None:
        return symbol if self.instrument(symbol) is not None else None

    def _open_order(self, account: str, client_order_id: str) -> Order | None:
        for order in self.orders:
            if order.account == account and order.client_order_id == client_order_id:
                return order
        return None

    def _is_open(self, order: Order) -> bool:
        return any(open_order is order for open_order in self.orders)

    @staticmethod
    def price(order: Order) -> int:
        if order.price_micro is None:
            raise ModelError(f"order {order.order_id} has no price")
        return order.price_micro

    def book(self, symbol: str, side: str) -> list[Order]:
        """The open orders of one side of a book, in priority order."""
        orders = [o for o in self.orders if o.instrument == symbol and o.side == side]
        if side == BUY:
            return sorted(orders, key=lambda o: (-self.price(o), o.priority))
        return sorted(orders, key=lambda o: (self.price(o), o.priority))

    def _next_priority(self) -> int:
        self.last_priority += 1
        return self.last_priority

    def balance(self, account: str, asset: str) -> int:
        return self.available.get((account, asset), 0)

    def credit(self, account: str, asset: str, amount: int) -> None:
        self.available[(account, asset)] = self.balance(account, asset) + amount

    def _is_asset(self, asset: str) -> bool:
        return asset == USDC or self.instrument(asset) is not None

    @staticmethod
    def _parse_amount(asset: str, amount: object) -> int | None:
        """A positive amount of `asset` in its unit, or None when it is malformed."""
        try:
            if asset == USDC:
                micro = parse_micro(amount)
                return micro if micro > 0 else None
            return parse_token_amount(amount)
        except ProtocolError:
            return None

    @staticmethod
    def _wire_amount(asset: str, amount: int) -> str | int:
        return format_micro(amount) if asset == USDC else amount

    def _parse_price(self, instrument: Instrument, price: str) -> int | None:
        try:
            micro = parse_micro(price)
        except ProtocolError:
            return None
        if micro <= 0 or micro % instrument.tick_micro != 0:
            return None
        return micro

    # ------------------------------------------------------------------------- holds

    def _hold(self, order: Order) -> tuple[str, int]:
        """The asset and amount an open order holds, from its current state alone."""
        if order.side == SELL:
            return order.instrument, order.remaining
        if order.order_type == "market":
            return USDC, 0
        instrument = self.instrument(order.instrument)
        assert instrument is not None
        return USDC, limit_buy_hold_micro(order.remaining, self.price(order),
                                          instrument.hold_fee_bps)

    def _open(self, order: Order) -> None:
        """Add an order to the open orders, moving its hold out of `available`."""
        asset, hold = self._hold(order)
        self.credit(order.account, asset, -hold)
        self.orders.append(order)

    def _change(self, order: Order, **changes: Any) -> None:
        """Change an open order; the difference of its hold moves to or from `available`."""
        asset, hold_before = self._hold(order)
        for name, value in changes.items():
            setattr(order, name, value)
        _, hold_after = self._hold(order)
        self.credit(order.account, asset, hold_before - hold_after)

    def _close(self, order: Order) -> None:
        """Remove an order from the open orders, returning its hold to `available`."""
        asset, hold = self._hold(order)
        self.credit(order.account, asset, hold)
        self.orders = [o for o in self.orders if o is not order]

    def _cancel(self, order: Order, why: str) -> None:
        self.emit(OrderCanceled, account=order.account, client_order_id=order.client_order_id,
                  order_id=str(order.order_id), instrument=order.instrument, reason=why,
                  canceled_quantity=order.remaining)
        self._close(order)

    # -------------------------------------------------------------------------- time

    def _advance_time(self, ts: int) -> None:
        """Move time to max(time, ts); expire gtd orders, then close instruments."""
        self.time = max(self.time, ts)
        by_age = sorted(self.orders, key=lambda o: o.order_id)
        for order in by_age:
            if order.expire_at is not None and order.expire_at <= self.time:
                self._cancel(order, reason.EXPIRED)
        for instrument in self.instruments:
            if instrument.closed or instrument.delivery_start > self.time:
                continue
            for order in sorted(self.orders, key=lambda o: o.order_id):
                if order.instrument == instrument.symbol:
                    self._cancel(order, reason.INSTRUMENT_CLOSED)
            instrument.closed = True
            self.emit(InstrumentClosed, symbol=instrument.symbol)
            if instrument.bond_micro is not None:
                self.delivery.redeem(instrument)

    # --------------------------------------------------------------- malformed input

    def _apply_malformed(self, command: MalformedCommand) -> None:
        # Reading: a malformed command with a valid ts still moves time (and so expires
        # and closes) before it is rejected; only one without a valid ts does not.
        if command.ts is not None:
            self._advance_time(command.ts)
        kind = command.type
        if (
            kind not in COMMAND_TYPES
            or command.ts is None
            or (kind in ACCOUNT_COMMANDS and command.account is None)
            or (kind in ORDER_COMMANDS and command.client_order_id is None)
            or (kind == "new_strip_order" and not reference_strips.names_its_legs(command))
        ):
            self.emit(CommandRejected, command=kind, reason=reason.INVALID_COMMAND)
        elif kind == "new_order":
            self.emit(OrderRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=reason.INVALID_ORDER,
                      instrument=self._listed_symbol(command.instrument))
        elif kind == "amend_order":
            self.emit(AmendRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=reason.INVALID_ORDER)
        elif kind == "new_strip_order":
            self.emit(StripRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=reason.INVALID_ORDER)
        else:
            self.emit(CommandRejected, command=kind, reason=reason.INVALID_COMMAND)

    # ---------------------------------------------------------------------- listings

    def _list_instrument(self, command: ListInstrument) -> None:
        if self.instrument(command.symbol) is not None:
            self.emit(CommandRejected, command="list_instrument",
                      reason=reason.DUPLICATE_INSTRUMENT)
            return
        try:
            tick = parse_micro(command.tick_size, "tick_size")
        except ProtocolError:
            tick = 0
        bond: int | None = None
        if command.bond_per_gpu_hour is not None:
            try:
                bond = parse_micro(command.bond_per_gpu_hour, "bond_per_gpu_hour")
            except ProtocolError:
                bond = -1  # malformed: refused with a bad tick_size, below
        if (
            tick <= 0
            or (bond is not None and bond < 0)
            or command.maker_fee_bps > FEE_BPS_MAX
            or command.taker_fee_bps > FEE_BPS_MAX
            or command.symbol == USDC
            or command.delivery_start <= self.time
        ):
            self.emit(CommandRejected, command="list_instrument",
                      reason=reason.INVALID_COMMAND)
            return
        instrument = Instrument(
            symbol=command.symbol, gpu=command.gpu, region=command.region,
            delivery_start=command.delivery_start, delivery_hours=command.delivery_hours,
            tick_micro=tick, max_order_quantity=command.max_order_quantity,
            maker_fee_bps=command.maker_fee_bps, taker_fee_bps=command.taker_fee_bps,
            bond_micro=bond,
        )
        self.instruments.append(instrument)
        # Reading: tick_size goes out in the canonical form, like every USDC amount.
        self.emit(InstrumentListed, symbol=instrument.symbol, gpu=instrument.gpu,
                  region=instrument.region, delivery_start=instrument.delivery_start,
                  delivery_hours=instrument.delivery_hours,
                  tick_size=format_micro(instrument.tick_micro),
                  max_order_quantity=instrument.max_order_quantity,
                  maker_fee_bps=instrument.maker_fee_bps,
                  taker_fee_bps=instrument.taker_fee_bps,
                  bond_per_gpu_hour=None if bond is None else format_micro(bond))

    # ------------------------------------------------------------ deposits, withdrawals

    def _checked_amount(self, asset: str, given: object) -> tuple[int | None, str | None]:
        """Return a deposit's or withdrawal's amount and why it is refused, if it is: an
        unknown asset first, then the token of a deliverable instrument that has closed (its
        tokens are redeemed), then a malformed amount."""
        amount = self._parse_amount(asset, given)
        if not self._is_asset(asset):
            return amount, reason.UNKNOWN_ASSET
        instrument = self.instrument(asset)
        if instrument is not None and instrument.closed and instrument.bond_micro is not None:
            return amount, reason.INSTRUMENT_CLOSED
        if amount is None:
            return None, reason.INVALID_AMOUNT
        return amount, None

    def _deposit(self, command: Deposit) -> None:
        amount, why = self._checked_amount(command.asset, command.amount)
        seen = command.deposit_id is not None and command.deposit_id in self.deposit_ids
        if why is None and seen:
            why = reason.DUPLICATE_DEPOSIT
        if why is not None or amount is None:
            # Reading: a rejection echoes the amount as given; only an accepted deposit
            # records its deposit_id.
            self.emit(DepositRejected, account=command.account, asset=command.asset,
                      amount=command.amount, reason=why)
            return
        if command.deposit_id is not None:
            self.deposit_ids.add(command.deposit_id)
        self.credit(command.account, command.asset, amount)
        self.emit(Deposited, account=command.account, asset=command.asset,
                  amount=self._wire_amount(command.asset, amount),
                  deposit_id=command.deposit_id)

    def _withdraw(self, command: Withdraw) -> None:
        amount, why = self._checked_amount(command.asset, command.amount)
        if why is None and amount is not None:
            if amount > self.balance(command.account, command.asset):
                why = reason.INSUFFICIENT_FUNDS
        if why is not None or amount is None:
            self.emit(WithdrawalRejected, account=command.account, asset=command.asset,
                      amount=command.amount, reason=why)
            return
        self.credit(command.account, command.asset, -amount)
        self.emit(Withdrawn, account=command.account, asset=command.asset,
                  amount=self._wire_amount(command.asset, amount))

    # ----------------------------------------------------------------------- orders

    @staticmethod
    def _time_in_force(command: NewOrder) -> str:
        if command.time_in_force is not None:
            return command.time_in_force
        return "gtc" if command.order_type == "limit" else "ioc"

    def _contradiction(self, command: NewOrder) -> bool:
        """Whether a well-formed new_order contradicts itself (`invalid_order`)."""
        time_in_force = self._time_in_force(command)
        if command.order_type == "limit" and command.price is None:
            return True
        if command.order_type == "market" and (
            command.price is not None or command.post_only
            or time_in_force not in ("ioc", "fok")
        ):
            return True
        if command.post_only and time_in_force in ("ioc", "fok"):
            return True
        if time_in_force == "gtd":
            return command.expire_at is None or command.expire_at <= self.time
        return command.expire_at is not None

    def _crosses_book(self, symbol: str, side: str, price_micro: int) -> bool:
        """Whether a price on `side` crosses the best opposite price (whosever it is)."""
        book = self.book(symbol, opposite(side))
        return bool(book) and crosses(side, price_micro, self.price(book[0]))

    def _new_order_rejection(self, command: NewOrder) -> str | None:
        """The first reason, in the order of PROTOCOL.md, to reject a new order."""
        if self._contradiction(command):
            return reason.INVALID_ORDER
        if self._open_order(command.account, command.client_order_id) is not None:
            return reason.DUPLICATE_CLIENT_ORDER_ID
        instrument = self.instrument(command.instrument)
        if instrument is None:
            return reason.UNKNOWN_INSTRUMENT
        if instrument.closed:
            return reason.INSTRUMENT_CLOSED
        price = None
        if command.order_type == "limit":
            assert command.price is not None
            price = self._parse_price(instrument, command.price)
            if price is None:
                return reason.INVALID_PRICE
        if not 1 <= command.quantity <= instrument.max_order_quantity:
            return reason.INVALID_QUANTITY
        if command.post_only:
            assert price is not None
            if self._crosses_book(instrument.symbol, command.side, price):
                return reason.POST_ONLY_WOULD_CROSS
        if command.side == SELL:
            if command.quantity > self.balance(command.account, instrument.symbol):
                return reason.INSUFFICIENT_FUNDS
        elif price is not None:
            hold = limit_buy_hold_micro(command.quantity, price, instrument.hold_fee_bps)
            if hold > self.balance(command.account, USDC):
                return reason.INSUFFICIENT_FUNDS
        return None

    def _new_order(self, command: NewOrder) -> None:
        why = self._new_order_rejection(command)
        if why is not None:
            self.emit(OrderRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=why,
                      instrument=self._listed_symbol(command.instrument))
            return
        instrument = self.instrument(command.instrument)
        assert instrument is not None
        self.last_order_id += 1
        price = None
        if command.price is not None:
            price = self._parse_price(instrument, command.price)
        order = Order(
            order_id=self.last_order_id, account=command.account,
            client_order_id=command.client_order_id, instrument=instrument.symbol,
            side=command.side, order_type=command.order_type, price_micro=price,
            quantity=command.quantity, filled=0, time_in_force=self._time_in_force(command),
            post_only=command.post_only, stp=command.stp, expire_at=command.expire_at,
            priority=self._next_priority(),
        )
        self.emit(OrderAccepted, account=order.account, client_order_id=order.client_order_id,
                  order_id=str(order.order_id), instrument=order.instrument, side=order.side,
                  order_type=order.order_type,
                  price=None if price is None else format_micro(price),
                  quantity=order.quantity, time_in_force=order.time_in_force,
                  post_only=order.post_only, stp=order.stp, expire_at=order.expire_at)
        self._open(order)
        if order.time_in_force == "fok" and not self._fills_whole(order):
            self._cancel(order, reason.FOK)
            return
        self._match(order)
        if not self._is_open(order):
            return
        if order.order_type == "market":
            self._cancel(order, reason.MARKET)
        elif order.time_in_force == "ioc":
            self._cancel(order, reason.IOC)
        elif order.time_in_force == "fok":
            raise ModelError(f"fok order {order.order_id} left {order.remaining} after matching")
        # gtc and gtd limit orders rest with what is left.

    # --------------------------------------------------------------------- matching

    def _best_crossing_maker(self, taker: Order) -> Order | None:
        book = self.book(taker.instrument, opposite(taker.side))
        if book and crosses(taker.side, taker.price_micro, self.price(book[0])):
            return book[0]
        return None

    def _market_buy_cap(self, taker: Order, available_micro: int, price_micro: int,
                        quantity: int) -> int:
        """Cap a fill of a market buy at what its `available` USDC can pay."""
        if taker.side != BUY or taker.order_type != "market":
            return quantity
        instrument = self.instrument(taker.instrument)
        assert instrument is not None
        return affordable_quantity(available_micro, price_micro, instrument.taker_fee_bps,
                                   quantity)

    def _match(self, taker: Order) -> None:
        """Match the taker against the book while prices cross and it has quantity."""
        while self._is_open(taker) and taker.remaining > 0:
            maker = self._best_crossing_maker(taker)
            if maker is None:
                return
            if maker.account == taker.account:
                self._prevent_self_trade(taker, maker)
                continue
            quantity = min(taker.remaining, maker.remaining)
            # protocol-notes: the cap bounds each fill, and matching goes on (possibly with
            # the same maker) while available pays for a further fill.
            quantity = self._market_buy_cap(taker, self.balance(taker.account, USDC),
                                            self.price(maker), quantity)
            if quantity == 0:
                return
            # Filling frees the part of the taker's hold it no longer needs; the trade
            # then settles from `available`.
            self._change(taker, filled=taker.filled + quantity)
            self.trade(Taker.of(taker), maker, quantity)
            if taker.remaining == 0:
                self._close(taker)

    def _prevent_self_trade(self, taker: Order, maker: Order) -> None:
        if taker.stp == "cancel_newest":
            self._cancel(taker, reason.STP)
        elif taker.stp == "cancel_oldest":
            self._cancel(maker, reason.STP)
        elif taker.stp == "cancel_both":
            self._cancel(maker, reason.STP)
            self._cancel(taker, reason.STP)
        elif taker.stp == "decrement":
            decrement = min(taker.remaining, maker.remaining)
            for order in (maker, taker):  # resting order first
                if order.remaining == decrement:
                    self._cancel(order, reason.STP)
                else:
                    self._change(order, quantity=order.quantity - decrement)
                    self.emit(OrderReduced, account=order.account,
                              client_order_id=order.client_order_id,
                              order_id=str(order.order_id), instrument=order.instrument,
                              reason=reason.STP, reduced_quantity=decrement,
                              remaining_quantity=order.remaining)
        else:
            raise ModelError(f"unknown stp {taker.stp}")

    def trade(self, taker: Taker, maker: Order, quantity: int) -> None:
        """Trade `quantity` at the maker's price; the taker pays or delivers from
        `available` (what it held for the fill is back there already)."""
        instrument = self.instrument(maker.instrument)
        assert instrument is not None
        price = self.price(maker)
        notional = quantity * price
        maker_fee = fee_micro(notional, instrument.maker_fee_bps)
        taker_fee = fee_micro(notional, instrument.taker_fee_bps)
        self.last_trade_id += 1
        self.emit(Trade, trade_id=str(self.last_trade_id), instrument=instrument.symbol,
                  price=format_micro(price), quantity=quantity, aggressor_side=taker.side,
                  maker_account=maker.account, maker_client_order_id=maker.client_order_id,
                  maker_order_id=str(maker.order_id), maker_fee=format_micro(maker_fee),
                  taker_account=taker.account, taker_client_order_id=taker.client_order_id,
                  taker_order_id=str(taker.order_id), taker_fee=format_micro(taker_fee))
        # Filling recomputes the maker's hold: the freed part returns to `available` ...
        self._change(maker, filled=maker.filled + quantity)
        # ... and the trade then settles from `available`.
        buyer, seller = (taker.account, maker.account) if taker.side == BUY else (
            maker.account, taker.account)
        buyer_fee, seller_fee = (taker_fee, maker_fee) if taker.side == BUY else (
            maker_fee, taker_fee)
        self.credit(buyer, USDC, -(notional + buyer_fee))
        self.credit(seller, USDC, notional - seller_fee)
        self.credit(seller, instrument.symbol, -quantity)
        self.credit(buyer, instrument.symbol, quantity)
        self.credit(FEE_ACCOUNT, USDC, maker_fee + taker_fee)
        if maker.remaining == 0:
            self._close(maker)

    def _fills_whole(self, taker: Order) -> bool:
        """Run the taker's normal execution in the head: would it fill its whole quantity?"""
        needed = taker.remaining
        available = self.balance(taker.account, USDC)
        instrument = self.instrument(taker.instrument)
        assert instrument is not None
        for maker in self.book(taker.instrument, opposite(taker.side)):
            if needed == 0 or not crosses(taker.side, taker.price_micro, self.price(maker)):
                break
            if maker.account == taker.account:
                if taker.stp == "cancel_oldest":
                    continue  # it would be canceled, and matching would go on
                return False
            maker_left = maker.remaining
            while needed > 0 and maker_left > 0:  # the same maker again, as in _match
                quantity = self._market_buy_cap(taker, available, self.price(maker),
                                                min(needed, maker_left))
                if quantity == 0:
                    return False
                if taker.order_type == "market" and taker.side == BUY:
                    available -= limit_buy_hold_micro(quantity, self.price(maker),
                                                      instrument.taker_fee_bps)
                needed -= quantity
                maker_left -= quantity
        return needed == 0

    # ---------------------------------------------------------------- cancel, amend

    def _cancel_order(self, command: CancelOrder) -> None:
        order = self._open_order(command.account, command.client_order_id)
        if order is None:
            self.emit(CancelRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=reason.UNKNOWN_ORDER)
            return
        self._cancel(order, command.reason)

    def _amend_order(self, command: AmendOrder) -> None:
        def reject(why: str) -> None:
            self.emit(AmendRejected, account=command.account,
                      client_order_id=command.client_order_id, reason=why)

        order = self._open_order(command.account, command.client_order_id)
        if order is None:
            return reject(reason.UNKNOWN_ORDER)
        if command.new_price is None and command.new_quantity is None:
            return reject(reason.INVALID_ORDER)
        instrument = self.instrument(order.instrument)
        assert instrument is not None
        price = self.price(order)
        if command.new_price is not None:
            new_price = self._parse_price(instrument, command.new_price)
            if new_price is None:
                return reject(reason.INVALID_PRICE)
            price = new_price
        quantity = order.quantity
        if command.new_quantity is not None:
            if not 1 <= command.new_quantity <= instrument.max_order_quantity:
                return reject(reason.INVALID_QUANTITY)
            quantity = command.new_quantity
        if quantity <= order.filled:
            return self._cancel(order, reason.AMENDED)
        asset, hold_now = self._hold(order)
        after = dataclasses.replace(order, price_micro=price, quantity=quantity)
        _, hold_after = self._hold(after)
        if hold_after > self.balance(order.account, asset) + hold_now:
            return reject(reason.INSUFFICIENT_FUNDS)
        if order.post_only and self._crosses_book(order.instrument, order.side, price):
            return reject(reason.POST_ONLY_WOULD_CROSS)
        loses_priority = price != order.price_micro or quantity > order.quantity
        self._change(order, price_micro=price, quantity=quantity)
        if loses_priority:
            order.priority = self._next_priority()
        self.emit(OrderAmended, account=order.account, client_order_id=order.client_order_id,
                  order_id=str(order.order_id), instrument=order.instrument,
                  price=format_micro(price), quantity=order.quantity,
                  remaining_quantity=order.remaining)
        if loses_priority:
            self._match(order)  # what is left rests at the back of its new level
        return None

    def _mass_cancel(self, command: MassCancel) -> None:
        if command.instrument is not None and self.instrument(command.instrument) is None:
            self.emit(CommandRejected, command="mass_cancel", reason=reason.UNKNOWN_INSTRUMENT)
            return
        for order in sorted(self.orders, key=lambda o: o.order_id):
            if order.account == command.account and command.instrument in (None,
                                                                           order.instrument):
                self._cancel(order, command.reason)
