"""An independent reference model of the matching engine, read straight from the spec.

`ReferenceEngine` implements PROTOCOL.md (v1, and v2's cancel reasons and Delivery) and
docs/protocol-notes.md for clarity, not speed: every open order sits in one plain list in
acceptance order, the book is found by a linear scan and sorted every time it is needed, a
hold is never stored but computed from the order it belongs to, an issue's bond is never
stored but computed from its bonded GPU-hours, and all money is integer micro-USDC. It
shares nothing with `matching_engine` (it neither imports nor was written from it): the
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
    Event,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
    IssueRejected,
    ListInstrument,
    MalformedCommand,
    MassCancel,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderReduced,
    OrderRejected,
    ProtocolError,
    ReportRejected,
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

BPS_PER_UNIT = 10_000
FEE_BPS_MAX = 1000
PPM_WHOLE = 1_000_000  # delivered_ppm of a delivery in full
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
class Issue:
    """An accepted issue_capacity. Its bond is `bonded` x the instrument's bond per hour."""

    issue_id: str
    account: str  # the issuer
    instrument: str
    node_id: str
    quantity: int  # as issued
    unassigned: int  # GPU-hours neither released nor assigned at close
    bonded: int  # GPU-hours still under bond: unassigned, or assigned and not reported


@dataclasses.dataclass
class Assignment:
    """A delivery_assigned: `quantity` GPU-hours of an issue owed to one holder."""

    issue_id: str
    holder: str
    quantity: int
    reported: bool = False


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
        self.issues: list[Issue] = []  # every accepted issue, in the order issued
        self.assignments: list[Assignment] = []  # every assignment, in the order assigned
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
                IssueCapacity: self._issue_capacity,
                DeliveryReport: self._delivery_report,
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
                for order in self._book(instrument.symbol, side):
                    open_orders.append({
                        "account": order.account,
                        "client_order_id": order.client_order_id,
                        "order_id": str(order.order_id),
                        "instrument": order.instrument,
                        "side": order.side,
                        "price": format_micro(self._price(order)),
                        "quantity": order.quantity,
                        "remaining_quantity": order.remaining,
                    })
        issues = [
            {"issue_id": issue.issue_id, "account": issue.account,
             "instrument": issue.instrument, "node_id": issue.node_id,
             "quantity": issue.bonded, "bond": format_micro(self._bond_of(issue, issue.bonded))}
            for issue in self.issues if issue.bonded > 0
        ]
        deliveries = [
            {"issue_id": assignment.issue_id, "holder": assignment.holder,
             "quantity": assignment.quantity}
            for assignment in self.assignments if not assignment.reported
        ]
        return {"accounts": accounts, "open_orders": open_orders, "issues": issues,
                "deliveries": deliveries}

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
            if self._instrument(order.instrument).closed:  # type: ignore[union-attr]
                raise ModelError(f"order {order.order_id} open on a closed instrument")
            if order.expire_at is not None and order.expire_at <= self.time:
                raise ModelError(f"order {order.order_id} open after it expired")
        for instrument in self.instruments:
            bids = self._book(instrument.symbol, BUY)
            asks = self._book(instrument.symbol, SELL)
            if bids and asks and self._price(bids[0]) >= self._price(asks[0]):
                raise ModelError(f"book {instrument.symbol} is crossed")
            if instrument.closed and instrument.bond_micro is not None:
                for (account, asset), amount in self.available.items():
                    if asset == instrument.symbol and amount != 0:
                        raise ModelError(f"{account} holds {amount} redeemed {asset}")
        self._validate_delivery()

    def _validate_delivery(self) -> None:
        """Each issue's GPU-hours add up: bonded = unassigned + assigned and not reported,
        and nothing is assigned before its instrument closes."""
        assigned: dict[str, int] = {}
        owed: dict[str, int] = {}
        for assignment in self.assignments:
            key = assignment.issue_id
            assigned[key] = assigned.get(key, 0) + assignment.quantity
            if not assignment.reported:
                owed[key] = owed.get(key, 0) + assignment.quantity
        for issue in self.issues:
            instrument = self._instrument(issue.instrument)
            if instrument is None or instrument.bond_micro is None:
                raise ModelError(f"issue {issue.issue_id} of a non-deliverable instrument")
            key = issue.issue_id
            if issue.bonded != issue.unassigned + owed.get(key, 0):
                raise ModelError(f"issue {key} bonds {issue.bonded} hours, {issue.unassigned} "
                                 f"unassigned + {owed.get(key, 0)} owed")
            if assigned.get(key, 0) + issue.unassigned > issue.quantity:
                raise ModelError(f"issue {key} assigned beyond its quantity")
            if not instrument.closed and issue.bonded != issue.quantity:
                raise ModelError(f"issue {key} assigned or released before close")
            if instrument.closed and issue.unassigned != 0:
                raise ModelError(f"issue {issue.issue_id} unassigned after close")

    # ------------------------------------------------------------------- small helpers

    def _emit(self, event_type: type[Event], **fields: Any) -> None:
        self.last_seq += 1
        self._events.append(event_type(seq=self.last_seq, ts=self.time, **fields))

    def _instrument(self, symbol: str | None) -> Instrument | None:
        for instrument in self.instruments:
            if instrument.symbol == symbol:
                return instrument
        return None

    def _listed_symbol(self, symbol: str | None) -> str | None:
        return symbol if self._instrument(symbol) is not None else None

    def _open_order(self, account: str, client_order_id: str) -> Order | None:
        for order in self.orders:
            if order.account == account and order.client_order_id == client_order_id:
                return order
        return None

    def _is_open(self, order: Order) -> bool:
        return any(open_order is order for open_order in self.orders)

    @staticmethod
    def _price(order: Order) -> int:
        if order.price_micro is None:
            raise ModelError(f"order {order.order_id} has no price")
        return order.price_micro

    def _book(self, symbol: str, side: str) -> list[Order]:
        """The open orders of one side of a book, in priority order."""
        orders = [o for o in self.orders if o.instrument == symbol and o.side == side]
        if side == BUY:
            return sorted(orders, key=lambda o: (-self._price(o), o.priority))
        return sorted(orders, key=lambda o: (self._price(o), o.priority))

    def _next_priority(self) -> int:
        self.last_priority += 1
        return self.last_priority

    def _balance(self, account: str, asset: str) -> int:
        return self.available.get((account, asset), 0)

    def _credit(self, account: str, asset: str, amount: int) -> None:
        self.available[(account, asset)] = self._balance(account, asset) + amount

    def _is_asset(self, asset: str) -> bool:
        return asset == USDC or self._instrument(asset) is not None

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
        instrument = self._instrument(order.instrument)
        assert instrument is not None
        return USDC, limit_buy_hold_micro(order.remaining, self._price(order),
                                          instrument.hold_fee_bps)

    def _open(self, order: Order) -> None:
        """Add an order to the open orders, moving its hold out of `available`."""
        asset, hold = self._hold(order)
        self._credit(order.account, asset, -hold)
        self.orders.append(order)

    def _change(self, order: Order, **changes: Any) -> None:
        """Change an open order; the difference of its hold moves to or from `available`."""
        asset, hold_before = self._hold(order)
        for name, value in changes.items():
            setattr(order, name, value)
        _, hold_after = self._hold(order)
        self._credit(order.account, asset, hold_before - hold_after)

    def _close(self, order: Order) -> None:
        """Remove an order from the open orders, returning its hold to `available`."""
        asset, hold = self._hold(order)
        self._credit(order.account, asset, hold)
        self.orders = [o for o in self.orders if o is not order]

    def _cancel(self, order: Order, why: str) -> None:
        self._emit(OrderCanceled, account=order.account, client_order_id=order.client_order_id,
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
            self._emit(InstrumentClosed, symbol=instrument.symbol)
            if instrument.bond_micro is not None:
                self._redeem(instrument)

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
        ):
            self._emit(CommandRejected, command=kind, reason=reason.INVALID_COMMAND)
        elif kind == "new_order":
            self._emit(OrderRejected, account=command.account,
                       client_order_id=command.client_order_id, reason=reason.INVALID_ORDER,
                       instrument=self._listed_symbol(command.instrument))
        elif kind == "amend_order":
            self._emit(AmendRejected, account=command.account,
                       client_order_id=command.client_order_id, reason=reason.INVALID_ORDER)
        else:
            self._emit(CommandRejected, command=kind, reason=reason.INVALID_COMMAND)

    # ---------------------------------------------------------------------- listings

    def _list_instrument(self, command: ListInstrument) -> None:
        if self._instrument(command.symbol) is not None:
            self._emit(CommandRejected, command="list_instrument",
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
            self._emit(CommandRejected, command="list_instrument",
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
        self._emit(InstrumentListed, symbol=instrument.symbol, gpu=instrument.gpu,
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
        instrument = self._instrument(asset)
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
            self._emit(DepositRejected, account=command.account, asset=command.asset,
                       amount=command.amount, reason=why)
            return
        if command.deposit_id is not None:
            self.deposit_ids.add(command.deposit_id)
        self._credit(command.account, command.asset, amount)
        self._emit(Deposited, account=command.account, asset=command.asset,
                   amount=self._wire_amount(command.asset, amount),
                   deposit_id=command.deposit_id)

    def _withdraw(self, command: Withdraw) -> None:
        amount, why = self._checked_amount(command.asset, command.amount)
        if why is None and amount is not None:
            if amount > self._balance(command.account, command.asset):
                why = reason.INSUFFICIENT_FUNDS
        if why is not None or amount is None:
            self._emit(WithdrawalRejected, account=command.account, asset=command.asset,
                       amount=command.amount, reason=why)
            return
        self._credit(command.account, command.asset, -amount)
        self._emit(Withdrawn, account=command.account, asset=command.asset,
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
        book = self._book(symbol, opposite(side))
        return bool(book) and crosses(side, price_micro, self._price(book[0]))

    def _new_order_rejection(self, command: NewOrder) -> str | None:
        """The first reason, in the order of PROTOCOL.md, to reject a new order."""
        if self._contradiction(command):
            return reason.INVALID_ORDER
        if self._open_order(command.account, command.client_order_id) is not None:
            return reason.DUPLICATE_CLIENT_ORDER_ID
        instrument = self._instrument(command.instrument)
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
            if command.quantity > self._balance(command.account, instrument.symbol):
                return reason.INSUFFICIENT_FUNDS
        elif price is not None:
            hold = limit_buy_hold_micro(command.quantity, price, instrument.hold_fee_bps)
            if hold > self._balance(command.account, USDC):
                return reason.INSUFFICIENT_FUNDS
        return None

    def _new_order(self, command: NewOrder) -> None:
        why = self._new_order_rejection(command)
        if why is not None:
            self._emit(OrderRejected, account=command.account,
                       client_order_id=command.client_order_id, reason=why,
                       instrument=self._listed_symbol(command.instrument))
            return
        instrument = self._instrument(command.instrument)
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
        self._emit(OrderAccepted, account=order.account, client_order_id=order.client_order_id,
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
        book = self._book(taker.instrument, opposite(taker.side))
        if book and crosses(taker.side, taker.price_micro, self._price(book[0])):
            return book[0]
        return None

    def _market_buy_cap(self, taker: Order, available_micro: int, price_micro: int,
                        quantity: int) -> int:
        """Cap a fill of a market buy at what its `available` USDC can pay."""
        if taker.side != BUY or taker.order_type != "market":
            return quantity
        instrument = self._instrument(taker.instrument)
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
            quantity = self._market_buy_cap(taker, self._balance(taker.account, USDC),
                                            self._price(maker), quantity)
            if quantity == 0:
                return
            self._trade(taker, maker, quantity)

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
                    self._emit(OrderReduced, account=order.account,
                               client_order_id=order.client_order_id,
                               order_id=str(order.order_id), instrument=order.instrument,
                               reason=reason.STP, reduced_quantity=decrement,
                               remaining_quantity=order.remaining)
        else:
            raise ModelError(f"unknown stp {taker.stp}")

    def _trade(self, taker: Order, maker: Order, quantity: int) -> None:
        instrument = self._instrument(taker.instrument)
        assert instrument is not None
        price = self._price(maker)
        notional = quantity * price
        maker_fee = fee_micro(notional, instrument.maker_fee_bps)
        taker_fee = fee_micro(notional, instrument.taker_fee_bps)
        self.last_trade_id += 1
        self._emit(Trade, trade_id=str(self.last_trade_id), instrument=instrument.symbol,
                   price=format_micro(price), quantity=quantity, aggressor_side=taker.side,
                   maker_account=maker.account, maker_client_order_id=maker.client_order_id,
                   maker_order_id=str(maker.order_id), maker_fee=format_micro(maker_fee),
                   taker_account=taker.account, taker_client_order_id=taker.client_order_id,
                   taker_order_id=str(taker.order_id), taker_fee=format_micro(taker_fee))
        # Filling recomputes both holds: the freed part returns to `available` ...
        self._change(maker, filled=maker.filled + quantity)
        self._change(taker, filled=taker.filled + quantity)
        # ... and the trade then settles from `available`.
        buyer, seller = (taker, maker) if taker.side == BUY else (maker, taker)
        buyer_fee = taker_fee if buyer is taker else maker_fee
        seller_fee = taker_fee if seller is taker else maker_fee
        self._credit(buyer.account, USDC, -(notional + buyer_fee))
        self._credit(seller.account, USDC, notional - seller_fee)
        self._credit(seller.account, instrument.symbol, -quantity)
        self._credit(buyer.account, instrument.symbol, quantity)
        self._credit(FEE_ACCOUNT, USDC, maker_fee + taker_fee)
        for order in (maker, taker):
            if order.remaining == 0:
                self._close(order)

    def _fills_whole(self, taker: Order) -> bool:
        """Run the taker's normal execution in the head: would it fill its whole quantity?"""
        needed = taker.remaining
        available = self._balance(taker.account, USDC)
        instrument = self._instrument(taker.instrument)
        assert instrument is not None
        for maker in self._book(taker.instrument, opposite(taker.side)):
            if needed == 0 or not crosses(taker.side, taker.price_micro, self._price(maker)):
                break
            if maker.account == taker.account:
                if taker.stp == "cancel_oldest":
                    continue  # it would be canceled, and matching would go on
                return False
            maker_left = maker.remaining
            while needed > 0 and maker_left > 0:  # the same maker again, as in _match
                quantity = self._market_buy_cap(taker, available, self._price(maker),
                                                min(needed, maker_left))
                if quantity == 0:
                    return False
                if taker.order_type == "market" and taker.side == BUY:
                    available -= limit_buy_hold_micro(quantity, self._price(maker),
                                                      instrument.taker_fee_bps)
                needed -= quantity
                maker_left -= quantity
        return needed == 0

    # ---------------------------------------------------------------- cancel, amend

    def _cancel_order(self, command: CancelOrder) -> None:
        order = self._open_order(command.account, command.client_order_id)
        if order is None:
            self._emit(CancelRejected, account=command.account,
                       client_order_id=command.client_order_id, reason=reason.UNKNOWN_ORDER)
            return
        self._cancel(order, command.reason)

    def _amend_order(self, command: AmendOrder) -> None:
        def reject(why: str) -> None:
            self._emit(AmendRejected, account=command.account,
                       client_order_id=command.client_order_id, reason=why)

        order = self._open_order(command.account, command.client_order_id)
        if order is None:
            return reject(reason.UNKNOWN_ORDER)
        if command.new_price is None and command.new_quantity is None:
            return reject(reason.INVALID_ORDER)
        instrument = self._instrument(order.instrument)
        assert instrument is not None
        price = self._price(order)
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
        if hold_after > self._balance(order.account, asset) + hold_now:
            return reject(reason.INSUFFICIENT_FUNDS)
        if order.post_only and self._crosses_book(order.instrument, order.side, price):
            return reject(reason.POST_ONLY_WOULD_CROSS)
        loses_priority = price != order.price_micro or quantity > order.quantity
        self._change(order, price_micro=price, quantity=quantity)
        if loses_priority:
            order.priority = self._next_priority()
        self._emit(OrderAmended, account=order.account, client_order_id=order.client_order_id,
                   order_id=str(order.order_id), instrument=order.instrument,
                   price=format_micro(price), quantity=order.quantity,
                   remaining_quantity=order.remaining)
        if loses_priority:
            self._match(order)  # what is left rests at the back of its new level
        return None

    def _mass_cancel(self, command: MassCancel) -> None:
        if command.instrument is not None and self._instrument(command.instrument) is None:
            self._emit(CommandRejected, command="mass_cancel", reason=reason.UNKNOWN_INSTRUMENT)
            return
        for order in sorted(self.orders, key=lambda o: o.order_id):
            if order.account == command.account and command.instrument in (None,
                                                                           order.instrument):
                self._cancel(order, command.reason)

    # --------------------------------------------------------------------- delivery

    def _bond_of(self, issue: Issue, hours: int) -> int:
        """The bond of `hours` GPU-hours of an issue, in micro-USDC."""
        instrument = self._instrument(issue.instrument)
        if instrument is None or instrument.bond_micro is None:
            raise ModelError(f"issue {issue.issue_id} of a non-deliverable instrument")
        return hours * instrument.bond_micro

    def _find_issue(self, issue_id: str) -> Issue | None:
        for issue in self.issues:
            if issue.issue_id == issue_id:
                return issue
        return None

    def _issue_rejection(self, command: IssueCapacity) -> str | None:
        """The first reason, in the order of PROTOCOL.md, to reject an issue."""
        if self._find_issue(command.issue_id) is not None:
            return reason.DUPLICATE_ISSUE
        instrument = self._instrument(command.instrument)
        if instrument is None:
            return reason.UNKNOWN_INSTRUMENT
        if instrument.bond_micro is None:
            return reason.NOT_DELIVERABLE
        if instrument.closed:
            return reason.INSTRUMENT_CLOSED
        if not 1 <= command.quantity <= instrument.max_order_quantity:
            return reason.INVALID_QUANTITY
        if command.quantity * instrument.bond_micro > self._balance(command.account, USDC):
            return reason.INSUFFICIENT_FUNDS
        return None

    def _issue_capacity(self, command: IssueCapacity) -> None:
        why = self._issue_rejection(command)
        if why is not None:
            # protocol-notes: a rejected issue does not use up its issue_id.
            self._emit(IssueRejected, issue_id=command.issue_id, account=command.account,
                       reason=why)
            return
        issue = Issue(issue_id=command.issue_id, account=command.account,
                      instrument=command.instrument, node_id=command.node_id,
                      quantity=command.quantity, unassigned=command.quantity,
                      bonded=command.quantity)
        self.issues.append(issue)
        bond = self._bond_of(issue, issue.quantity)
        self._credit(issue.account, USDC, -bond)
        self._credit(issue.account, issue.instrument, issue.quantity)
        self._emit(CapacityIssued, issue_id=issue.issue_id, account=issue.account,
                   instrument=issue.instrument, node_id=issue.node_id,
                   quantity=issue.quantity, bond=format_micro(bond))

    def _release(self, issue: Issue, hours: int, amount: int) -> None:
        """Give `amount` of the bond of `hours` GPU-hours back to the issuer."""
        issue.bonded -= hours
        self._credit(issue.account, USDC, amount)
        self._emit(BondReleased, issue_id=issue.issue_id, account=issue.account,
                   quantity=hours, amount=format_micro(amount))

    def _redeem(self, instrument: Instrument) -> None:
        """Redeem every token of a deliverable instrument at its close (protocol-notes,
        Delivery, Close): issuers' own tokens release their bonds, other holders are
        assigned deliveries, balances go to zero, what nobody holds is released."""
        issues = [issue for issue in self.issues if issue.instrument == instrument.symbol]
        tokens = {account: amount for (account, asset), amount in self.available.items()
                  if asset == instrument.symbol and amount > 0}
        for issue in issues:  # oldest first: the issuer's own tokens
            share = min(issue.unassigned, tokens.get(issue.account, 0))
            if share > 0:
                tokens[issue.account] -= share
                issue.unassigned -= share
                self._release(issue, share, self._bond_of(issue, share))
        for holder in sorted(tokens, key=str.encode):  # ascending byte order
            for issue in issues:
                taken = min(tokens[holder], issue.unassigned)
                if taken == 0:
                    continue
                tokens[holder] -= taken
                issue.unassigned -= taken
                self.assignments.append(Assignment(issue_id=issue.issue_id, holder=holder,
                                                   quantity=taken))
                self._emit(DeliveryAssigned, instrument=instrument.symbol,
                           issue_id=issue.issue_id, issuer=issue.account,
                           node_id=issue.node_id, holder=holder, quantity=taken)
        for account, asset in self.available:
            if asset == instrument.symbol:
                self.available[(account, asset)] = 0
        for issue in issues:  # what nobody holds at the venue
            if issue.unassigned > 0:
                left = issue.unassigned
                issue.unassigned = 0
                self._release(issue, left, self._bond_of(issue, left))

    def _find_assignment(self, issue_id: str, holder: str) -> Assignment | None:
        for assignment in self.assignments:
            if assignment.issue_id == issue_id and assignment.holder == holder:
                return assignment
        return None

    def _report_rejection(self, command: DeliveryReport) -> str | None:
        """The first reason, in the order of PROTOCOL.md, to reject a delivery report."""
        issue = self._find_issue(command.issue_id)
        if issue is None:
            return reason.UNKNOWN_ISSUE
        instrument = self._instrument(issue.instrument)
        assignment = self._find_assignment(command.issue_id, command.holder)
        if instrument is None or not instrument.closed or assignment is None:
            return reason.NOT_ASSIGNED
        if assignment.reported:
            return reason.ALREADY_REPORTED
        if not 0 <= command.delivered_ppm <= PPM_WHOLE:
            return reason.INVALID_PPM
        return None

    def _delivery_report(self, command: DeliveryReport) -> None:
        why = self._report_rejection(command)
        if why is not None:
            self._emit(ReportRejected, issue_id=command.issue_id, holder=command.holder,
                       reason=why)
            return
        issue = self._find_issue(command.issue_id)
        assignment = self._find_assignment(command.issue_id, command.holder)
        assert issue is not None and assignment is not None
        assignment.reported = True
        bond = self._bond_of(issue, assignment.quantity)
        compensation = bond * (PPM_WHOLE - command.delivered_ppm) // PPM_WHOLE
        self._credit(assignment.holder, USDC, compensation)
        self._emit(DeliverySettled, instrument=issue.instrument, issue_id=issue.issue_id,
                   issuer=issue.account, holder=assignment.holder,
                   quantity=assignment.quantity, delivered_ppm=command.delivered_ppm,
                   compensation=format_micro(compensation), evidence=command.evidence)
        self._release(issue, assignment.quantity, bond - compensation)
