"""Events the matching engine emits to the event log (PROTOCOL.md, Events).

Money fields hold canonical decimal strings (`protocol.money.format_micro`); token
amounts are integers. Optional fields are omitted from the encoding when absent.
"""

from __future__ import annotations

from typing import Final

from protocol.message import Message


class Event(Message, frozen=True, kw_only=True):
    """Base of every event: `seq` numbers the whole log from 1 without gaps; `ts` is the
    engine time at which it happened."""

    seq: int
    ts: int


class InstrumentListed(Event, tag="instrument_listed", frozen=True, kw_only=True):
    symbol: str
    gpu: str
    region: str
    delivery_start: int
    delivery_hours: int
    tick_size: str
    max_order_quantity: int
    maker_fee_bps: int
    taker_fee_bps: int
    bond_per_gpu_hour: str | None = None  # v2: present when the instrument is deliverable


class InstrumentClosed(Event, tag="instrument_closed", frozen=True, kw_only=True):
    symbol: str


class AssetEvent(Event, frozen=True, kw_only=True):
    """Base of the events of an amount of an asset moving into or out of an account, or
    refused: `amount` a decimal string for USDC, an integer for a token (as given when
    refused)."""

    account: str
    asset: str
    amount: str | int


class Deposited(AssetEvent, tag="deposited", frozen=True, kw_only=True):
    deposit_id: str | None = None


class Withdrawn(AssetEvent, tag="withdrawn", frozen=True, kw_only=True):
    pass


class WithdrawalRejected(AssetEvent, tag="withdrawal_rejected", frozen=True, kw_only=True):
    reason: str


class OrderAccepted(Event, tag="order_accepted", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    order_id: str
    instrument: str
    side: str
    order_type: str
    price: str | None = None
    quantity: int
    time_in_force: str
    post_only: bool
    stp: str
    expire_at: int | None = None


class OrderCommandRejected(Event, frozen=True, kw_only=True):
    """Base of the rejections of a command about an order, which name it by the account's
    client order id."""

    account: str
    client_order_id: str
    reason: str


class OrderRejected(OrderCommandRejected, tag="order_rejected", frozen=True, kw_only=True):
    instrument: str | None = None


class Trade(Event, tag="trade", frozen=True, kw_only=True):
    trade_id: str
    instrument: str
    price: str
    quantity: int
    aggressor_side: str
    maker_account: str
    maker_client_order_id: str
    maker_order_id: str
    maker_fee: str
    taker_account: str
    taker_client_order_id: str
    taker_order_id: str
    taker_fee: str


class OrderCanceled(Event, tag="order_canceled", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    order_id: str
    instrument: str
    reason: str
    canceled_quantity: int


class OrderAmended(Event, tag="order_amended", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    order_id: str
    instrument: str
    price: str
    quantity: int
    remaining_quantity: int


class OrderReduced(Event, tag="order_reduced", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    order_id: str
    instrument: str
    reason: str
    reduced_quantity: int
    remaining_quantity: int


class CancelRejected(OrderCommandRejected, tag="cancel_rejected", frozen=True, kw_only=True):
    pass


class AmendRejected(OrderCommandRejected, tag="amend_rejected", frozen=True, kw_only=True):
    pass


class DepositRejected(AssetEvent, tag="deposit_rejected", frozen=True, kw_only=True):
    reason: str


class CommandRejected(Event, tag="command_rejected", frozen=True, kw_only=True):
    command: str
    reason: str


class CapacityIssued(Event, tag="capacity_issued", frozen=True, kw_only=True):
    issue_id: str
    account: str
    instrument: str
    node_id: str
    quantity: int
    bond: str


class IssueRejected(Event, tag="issue_rejected", frozen=True, kw_only=True):
    issue_id: str
    account: str
    reason: str


class DeliveryAssigned(Event, tag="delivery_assigned", frozen=True, kw_only=True):
    instrument: str
    issue_id: str
    issuer: str
    node_id: str
    holder: str
    quantity: int


class DeliverySettled(Event, tag="delivery_settled", frozen=True, kw_only=True):
    instrument: str
    issue_id: str
    issuer: str
    holder: str
    quantity: int
    delivered_ppm: int
    compensation: str
    evidence: str | None = None


class BondReleased(Event, tag="bond_released", frozen=True, kw_only=True):
    issue_id: str
    account: str
    quantity: int
    amount: str


class ReportRejected(Event, tag="report_rejected", frozen=True, kw_only=True):
    issue_id: str
    holder: str
    reason: str


class StripAccepted(Event, tag="strip_accepted", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    strip_id: str
    side: str
    instruments: list[str]
    quantity: int
    limit_total: str


class StripRejected(OrderCommandRejected, tag="strip_rejected", frozen=True, kw_only=True):
    pass


class StripDone(Event, tag="strip_done", frozen=True, kw_only=True):
    account: str
    client_order_id: str
    strip_id: str
    notional: str
    fees: str


AnyEvent = (
    InstrumentListed | InstrumentClosed | Deposited | Withdrawn | WithdrawalRejected
    | OrderAccepted | OrderRejected | Trade | OrderCanceled | OrderAmended | OrderReduced
    | CancelRejected | AmendRejected | DepositRejected | CommandRejected
    | CapacityIssued | IssueRejected | DeliveryAssigned | DeliverySettled | BondReleased
    | ReportRejected | StripAccepted | StripRejected | StripDone
)
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (InstrumentListed, InstrumentClosed, Deposited, Withdrawn, WithdrawalRejected,
                OrderAccepted, OrderRejected, Trade, OrderCanceled, OrderAmended, OrderReduced,
                CancelRejected, AmendRejected, DepositRejected, CommandRejected,
                CapacityIssued, IssueRejected, DeliveryAssigned, DeliverySettled, BondReleased,
                ReportRejected, StripAccepted, StripRejected, StripDone)
}
