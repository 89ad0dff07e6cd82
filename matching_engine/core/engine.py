"""The matching engine: a deterministic state machine from commands to events.

No I/O, no clock, no randomness: time comes from the commands' `ts`. The same command
sequence gives the same events, byte for byte (PROTOCOL.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from matching_engine.core.book import Instrument, Order
from matching_engine.core.delivery import DeliveryFlow
from matching_engine.core.invariants import validate
from matching_engine.core.snapshot import capture, decode_snapshot, encode_snapshot, restore_into
from matching_engine.core.state import NEVER
from matching_engine.core.strips import StripFlow
from matching_engine.core.views import final_state
from protocol import (
    USDC,
    AmendOrder,
    AmendRejected,
    AnyCommand,
    AnyEvent,
    CancelOrder,
    CommandRejected,
    DeliveryReport,
    Deposit,
    Deposited,
    DepositRejected,
    InstrumentClosed,
    InstrumentListed,
    IssueCapacity,
    ListInstrument,
    MalformedCommand,
    MassCancel,
    NewOrder,
    NewStripOrder,
    OrderRejected,
    Tick,
    Withdraw,
    WithdrawalRejected,
    Withdrawn,
    format_micro,
    parse_token_amount,
)
from protocol import reasons as R
from protocol.commands import ACCOUNT_COMMANDS, COMMAND_TYPES, ORDER_COMMANDS
from protocol.errors import ProtocolError
from protocol.money import parse_micro, parse_positive_micro

FEE_BPS_MAX = 1000


class Engine(StripFlow, DeliveryFlow):
    """All books and all balances of the venue; `apply` one command at a time."""

    def __init__(self, check_invariants: bool = False) -> None:
        super().__init__()
        self.check_invariants = check_invariants
        self._handlers: dict[type, Callable[[Any], None]] = {
            NewOrder: self.on_new_order,
            CancelOrder: self.on_cancel_order,
            AmendOrder: self.on_amend_order,
            MassCancel: self.on_mass_cancel,
            Deposit: self.on_deposit,
            Withdraw: self.on_withdraw,
            ListInstrument: self.on_list_instrument,
            Tick: self.on_tick,
            IssueCapacity: self.on_issue_capacity,
            DeliveryReport: self.on_delivery_report,
            NewStripOrder: self.on_new_strip_order,
            MalformedCommand: self.on_malformed,
        }

    def apply(self, command: AnyCommand | MalformedCommand) -> list[AnyEvent]:
        """Apply one command and return the events it caused, in the order they happened."""
        events: list[AnyEvent] = []
        self.events = events
        ts = command.ts
        if ts is not None and ts > self.time:
            self.time = ts
        if self.expiries and self.expiries[0][0] <= self.time:
            self._expire_orders()
        if self.next_close_ns <= self.time:
            self._close_instruments()
        self._handlers[type(command)](command)
        if self.check_invariants:
            self.validate()
        return events

    def validate(self) -> None:
        """Check every internal invariant; raise InvariantError naming the first broken one."""
        validate(self)

    def final_state(self) -> dict[str, Any]:
        """Return balances and open orders in the replay final-state format."""
        return final_state(self)

    def snapshot(self) -> bytes:
        """Return the whole state, encoded; `Engine.restore` reads it back."""
        return encode_snapshot(capture(self))

    @classmethod
    def restore(cls, data: bytes, check_invariants: bool = False) -> Engine:
        """Build an engine from `snapshot()` bytes, as it was when they were taken."""
        engine = cls(check_invariants=check_invariants)
        restore_into(engine, decode_snapshot(data))
        if check_invariants:
            engine.validate()
        return engine

    # -- time ------------------------------------------------------------------------------

    def _expire_orders(self) -> None:
        due: list[Order] = []
        expiries = self.expiries
        while expiries and expiries[0][0] <= self.time:
            _, order_id, account, client_order_id = heapq.heappop(expiries)
            order = self.open_orders.get((account, client_order_id))
            if order is not None and order.order_id == order_id:
                due.append(order)
        due.sort(key=_order_id)
        for order in due:
            self.cancel(order, R.EXPIRED)

    def _close_instruments(self) -> None:
        for instrument in self.instruments.values():
            if not instrument.closed and instrument.delivery_start <= self.time:
                resting = [*instrument.bids.orders_in_priority(),
                           *instrument.asks.orders_in_priority()]
                resting.sort(key=_order_id)
                for order in resting:
                    self.cancel(order, R.INSTRUMENT_CLOSED)
                instrument.closed = True
                self.emit(InstrumentClosed(
                    seq=self.next_seq(), ts=self.time, symbol=instrument.symbol,
                ))
                if instrument.bond is not None:
                    self.redeem(instrument, instrument.bond)
        self.next_close_ns = min(
            (i.delivery_start for i in self.instruments.values() if not i.closed), default=NEVER
        )

    def on_tick(self, command: Tick) -> None:
        """Time already moved in `apply`; a tick has nothing else to do."""

    # -- instruments and money -------------------------------------------------------------

    def on_list_instrument(self, command: ListInstrument) -> None:
        if command.symbol in self.instruments:
            self._reject_command("list_instrument", R.DUPLICATE_INSTRUMENT)
            return
        try:
            tick = parse_positive_micro(command.tick_size, "tick_size")
            bond: int | None = None
            if command.bond_per_gpu_hour is not None:
                bond = parse_micro(command.bond_per_gpu_hour, "bond_per_gpu_hour")
        except ProtocolError:
            self._reject_command("list_instrument", R.INVALID_COMMAND)
            return
        if (
            command.symbol == USDC
            or command.maker_fee_bps > FEE_BPS_MAX
            or command.taker_fee_bps > FEE_BPS_MAX
            or command.delivery_start <= self.time
        ):
            self._reject_command("list_instrument", R.INVALID_COMMAND)
            return
        instrument = Instrument(
            symbol=command.symbol, gpu=command.gpu, region=command.region,
            delivery_start=command.delivery_start, delivery_hours=command.delivery_hours,
            tick=tick, max_order_quantity=command.max_order_quantity,
            maker_fee_bps=command.maker_fee_bps, taker_fee_bps=command.taker_fee_bps,
            bond=bond,
        )
        self.instruments[command.symbol] = instrument
        self.next_close_ns = min(self.next_close_ns, command.delivery_start)
        self.emit(instrument_listed(instrument, self.next_seq(), self.time))

    def on_deposit(self, command: Deposit) -> None:
        reason, amount = self._check_amount(command.asset, command.amount)
        if reason is None and command.deposit_id is not None:
            if command.deposit_id in self.deposit_ids:
                reason = R.DUPLICATE_DEPOSIT
        if reason is not None:
            self._refuse_transfer(DepositRejected, command, reason)
            return
        if command.deposit_id is not None:
            self.deposit_ids.add(command.deposit_id)
        self.wallet(command.account, command.asset)[0] += amount
        self.supply[command.asset] = self.supply.get(command.asset, 0) + amount
        self.emit(Deposited(
            seq=self.next_seq(), ts=self.time, account=command.account, asset=command.asset,
            amount=_wire_amount(command.asset, amount), deposit_id=command.deposit_id,
        ))

    def on_withdraw(self, command: Withdraw) -> None:
        reason, amount = self._check_amount(command.asset, command.amount)
        if reason is None and amount > self.available(command.account, command.asset):
            reason = R.INSUFFICIENT_FUNDS
        if reason is not None:
            self._refuse_transfer(WithdrawalRejected, command, reason)
            return
        self.wallet(command.account, command.asset)[0] -= amount
        self.supply[command.asset] -= amount
        self.emit(Withdrawn(
            seq=self.next_seq(), ts=self.time, account=command.account, asset=command.asset,
            amount=_wire_amount(command.asset, amount),
        ))

    def _refuse_transfer(self, event: type[DepositRejected] | type[WithdrawalRejected],
                         command: Deposit | Withdraw, reason: str) -> None:
        """Emit a deposit's or a withdrawal's refusal, echoing the command's amount."""
        self.emit(event(seq=self.next_seq(), ts=self.time, account=command.account,
                        asset=command.asset, amount=command.amount, reason=reason))

    def _check_amount(self, asset: str, amount: str | int) -> tuple[str | None, int]:
        """Return (reason, 0) for an unknown asset, the token of a deliverable instrument
        redeemed at its close, or a bad amount; else (None, amount)."""
        if asset != USDC:
            instrument = self.instruments.get(asset)
            if instrument is None:
                return R.UNKNOWN_ASSET, 0
            if instrument.closed and instrument.bond is not None:
                return R.INSTRUMENT_CLOSED, 0
        try:
            if asset == USDC:
                return None, parse_positive_micro(amount, "amount")
            return None, parse_token_amount(amount, "amount")
        except ProtocolError:
            return R.INVALID_AMOUNT, 0

    # -- rejections ------------------------------------------------------------------------

    def on_malformed(self, command: MalformedCommand) -> None:
        """Reject a command that did not decode, by the rules of docs/protocol-notes.md."""
        kind = command.type
        if (
            kind not in COMMAND_TYPES
            or command.ts is None
            or (kind in ACCOUNT_COMMANDS and command.account is None)
            or (kind in ORDER_COMMANDS and command.client_order_id is None)
        ):
            self._reject_command(kind, R.INVALID_COMMAND)
        elif kind == "new_order":
            assert command.account is not None and command.client_order_id is not None
            named = command.instrument if command.instrument in self.instruments else None
            self.emit(OrderRejected(
                seq=self.next_seq(), ts=self.time, account=command.account,
                client_order_id=command.client_order_id, reason=R.INVALID_ORDER,
                instrument=named,
            ))
        elif kind == "amend_order":
            assert command.account is not None and command.client_order_id is not None
            self.emit(AmendRejected(
                seq=self.next_seq(), ts=self.time, account=command.account,
                client_order_id=command.client_order_id, reason=R.INVALID_ORDER,
            ))
        elif kind == "new_strip_order":
            assert command.account is not None and command.client_order_id is not None
            self.reject_malformed_strip(command.account, command.client_order_id)
        else:
            self._reject_command(kind, R.INVALID_COMMAND)

    def _reject_command(self, kind: str, reason: str) -> None:
        self.emit(CommandRejected(seq=self.next_seq(), ts=self.time, command=kind, reason=reason))


def instrument_listed(instrument: Instrument, seq: int, ts: int) -> InstrumentListed:
    return InstrumentListed(
        seq=seq, ts=ts, symbol=instrument.symbol, gpu=instrument.gpu, region=instrument.region,
        delivery_start=instrument.delivery_start, delivery_hours=instrument.delivery_hours,
        tick_size=format_micro(instrument.tick),
        max_order_quantity=instrument.max_order_quantity,
        maker_fee_bps=instrument.maker_fee_bps, taker_fee_bps=instrument.taker_fee_bps,
        bond_per_gpu_hour=None if instrument.bond is None else format_micro(instrument.bond),
    )


def _wire_amount(asset: str, amount: int) -> str | int:
    return format_micro(amount) if asset == USDC else amount


def _order_id(order: Order) -> int:
    return order.order_id
