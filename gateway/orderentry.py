"""Turn order-entry requests into engine commands and the ops that await their answers.

Pure: the caller passes the account, the `ts` to stamp and the request's `Group`, which the
ops are made for (no intermediate op description: an order's hot path makes one pending op
and one command). A mass cancel (alone, in a batch
or in a mass quote), a listing, a deposit, an issue and a delivery report are each followed
by a fence (see gateway.correlation), so their outcome is known when the fence comes back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from gateway.correlation import FENCE_ACCOUNT, Group, PendingOp
from protocol import (
    AmendOrder,
    AnyCommand,
    CancelOrder,
    DeliveryReport,
    Deposit,
    IssueCapacity,
    ListInstrument,
    MassCancel,
    NewOrder,
    NewStripOrder,
)
from protocol.commands import MassCancelReason
from wsapi.errors import INVALID_REQUEST, RequestError
from wsapi.requests import (
    RESERVED_PREFIX,
    AmendOrderBody,
    BatchRequest,
    CancelOrderBody,
    DeliveryReportRequest,
    DepositRequest,
    IssueCapacityRequest,
    ListInstrumentRequest,
    MassCancelBody,
    MassQuoteRequest,
    NewOrderBody,
    NewStripOrderRequest,
    Quote,
)

OrderBody = NewOrderBody | CancelOrderBody | AmendOrderBody | MassCancelBody
FENCE_PREFIX: Final = RESERVED_PREFIX + "fence"


@dataclass(slots=True)
class Plan:
    """A request's commands, in log order, and the ops of `group` that await answers."""

    group: Group
    ts: int
    commands: list[AnyCommand]
    ops: list[PendingOp]

    def op(self, op: str, account: str, **fields: Any) -> None:
        """Add the next op of the group (see correlation.PendingOp for the fields)."""
        self.ops.append(PendingOp(group=self.group, index=len(self.ops), op=op,
                                  account=account, ts=self.ts, **fields))


class Planner:
    """Build engine commands; fence ids are unique to this planner (random run token)."""

    def __init__(self, gateway_id: str) -> None:
        self._fence_base = f"{FENCE_PREFIX}.{gateway_id}.{secrets.token_hex(4)}."
        self._fences = 0

    def _fence(self, ts: int) -> tuple[str, CancelOrder]:
        self._fences += 1
        fence_id = f"{self._fence_base}{self._fences}"
        return fence_id, CancelOrder(ts=ts, account=FENCE_ACCOUNT, client_order_id=fence_id)

    def single(self, body: OrderBody, account: str, ts: int, group: Group) -> Plan:
        plan = Plan(group, ts, [], [])
        self._add(plan, body, account, ts)
        return plan

    def batch(self, request: BatchRequest, account: str, ts: int, size_max: int,
              group: Group) -> Plan:
        """Plan a whole batch, or refuse it whole: nothing of a refused batch is sent."""
        _refuse_items("batch", "orders", size_max, [
            item.client_order_id if isinstance(item, NewOrderBody) else None
            for item in request.orders])
        plan = Plan(group, ts, [], [])
        for item in request.orders:
            self._add(plan, item, account, ts)
        return plan

    def mass_quote(self, request: MassQuoteRequest, account: str, ts: int, size_max: int,
                   group: Group) -> Plan:
        """Plan a mass cancel of the account's orders on the instrument, then the quotes."""
        _refuse_items("mass quote", "quotes", size_max,
                      [quote.client_order_id for quote in request.quotes])
        plan = Plan(group, ts, [], [])
        self._add(plan, MassCancelBody(instrument=request.instrument), account, ts)
        for quote in request.quotes:
            plan.commands.append(_quote_order(quote, request.instrument, account, ts))
            plan.op("new_order", account, client_order_id=quote.client_order_id,
                    instrument=request.instrument)
        return plan

    def list_instrument(self, request: ListInstrumentRequest, account: str, ts: int,
                        group: Group) -> Plan:
        fence_id, fence = self._fence(ts)
        command = ListInstrument(
            ts=ts, symbol=request.symbol, gpu=request.gpu, region=request.region,
            delivery_start=request.delivery_start, delivery_hours=request.delivery_hours,
            tick_size=request.tick_size, max_order_quantity=request.max_order_quantity,
            maker_fee_bps=request.maker_fee_bps, taker_fee_bps=request.taker_fee_bps,
            bond_per_gpu_hour=request.bond_per_gpu_hour,
        )
        plan = Plan(group, ts, [command, fence], [])
        plan.op("list_instrument", account, instrument=request.symbol, fence_id=fence_id)
        return plan

    def deposit(self, request: DepositRequest, ts: int, group: Group) -> Plan:
        fence_id, fence = self._fence(ts)
        command = Deposit(ts=ts, account=request.account, asset=request.asset,
                          amount=request.amount, deposit_id=request.deposit_id)
        plan = Plan(group, ts, [command, fence], [])
        plan.op("deposit", request.account, asset=request.asset,
                deposit_id=request.deposit_id, fence_id=fence_id)
        return plan

    def issue_capacity(self, request: IssueCapacityRequest, account: str, ts: int,
                       group: Group) -> Plan:
        fence_id, fence = self._fence(ts)
        command = IssueCapacity(ts=ts, account=account, issue_id=request.issue_id,
                                instrument=request.instrument, node_id=request.node_id,
                                quantity=request.quantity)
        plan = Plan(group, ts, [command, fence], [])
        plan.op("issue_capacity", account, instrument=request.instrument,
                issue_id=request.issue_id, fence_id=fence_id)
        return plan

    def delivery_report(self, request: DeliveryReportRequest, account: str, ts: int,
                        group: Group) -> Plan:
        """Plan a report of the delivery service (`account`); the report names the holder."""
        fence_id, fence = self._fence(ts)
        command = DeliveryReport(ts=ts, issue_id=request.issue_id, holder=request.holder,
                                 delivered_ppm=request.delivered_ppm, evidence=request.evidence)
        plan = Plan(group, ts, [command, fence], [])
        plan.op("delivery_report", account, issue_id=request.issue_id,
                holder=request.holder, fence_id=fence_id)
        return plan

    def new_strip_order(self, request: NewStripOrderRequest, account: str, ts: int,
                        group: Group) -> Plan:
        """Plan a strip: one command, answered by its strip_accepted ... strip_done or its
        strip_rejected (no fence: both name the account and the client order id)."""
        command = NewStripOrder(ts=ts, account=account, client_order_id=request.client_order_id,
                                side=request.side, instruments=list(request.instruments),
                                quantity=request.quantity, limit_total=request.limit_total)
        plan = Plan(group, ts, [command], [])
        plan.op("new_strip_order", account, client_order_id=request.client_order_id)
        return plan

    def mass_cancel_command(self, account: str, ts: int, reason: MassCancelReason) -> MassCancel:
        """Return an unanswered mass cancel the venue makes for `account` (`reason`:
        cancel-on-disconnect or the dead-man's switch)."""
        return MassCancel(ts=ts, account=account, reason=reason)

    def _add(self, plan: Plan, body: OrderBody, account: str, ts: int) -> None:
        if isinstance(body, NewOrderBody):
            plan.commands.append(new_order_command(body, account, ts))
            plan.op("new_order", account, client_order_id=body.client_order_id,
                    instrument=body.instrument)
        elif isinstance(body, CancelOrderBody):
            plan.commands.append(CancelOrder(ts=ts, account=account,
                                             client_order_id=body.client_order_id))
            plan.op("cancel_order", account, client_order_id=body.client_order_id)
        elif isinstance(body, AmendOrderBody):
            plan.commands.append(AmendOrder(ts=ts, account=account,
                                            client_order_id=body.client_order_id,
                                            new_price=body.new_price,
                                            new_quantity=body.new_quantity))
            plan.op("amend_order", account, client_order_id=body.client_order_id)
        else:
            fence_id, fence = self._fence(ts)
            plan.commands += [MassCancel(ts=ts, account=account, instrument=body.instrument),
                              fence]
            plan.op("mass_cancel", account, instrument=body.instrument, fence_id=fence_id)


def new_order_command(body: NewOrderBody, account: str, ts: int) -> NewOrder:
    """The engine command of a new order request (or batch item) of `account`."""
    return NewOrder(
        ts=ts, account=account, client_order_id=body.client_order_id,
        instrument=body.instrument, side=body.side, order_type=body.order_type,
        price=body.price, quantity=body.quantity, time_in_force=body.time_in_force,
        expire_at=body.expire_at, post_only=body.post_only, stp=body.stp,
    )


def _quote_order(quote: Quote, instrument: str, account: str, ts: int) -> NewOrder:
    return NewOrder(
        ts=ts, account=account, client_order_id=quote.client_order_id, instrument=instrument,
        side=quote.side, order_type="limit", price=quote.price, quantity=quote.quantity,
        time_in_force="gtc", post_only=quote.post_only,
    )


def _refuse_items(request: str, name: str, size_max: int, new_ids: list[str | None]) -> None:
    """Refuse a request's list `name` (its items' new-order client order ids, None for an
    item that is no new order) when it is over `size_max` long or two new orders share an id."""
    if len(new_ids) > size_max:
        raise RequestError(INVALID_REQUEST, f"a {request} holds at most {size_max} {name}",
                           field=f"$.{name}")
    seen: set[str] = set()
    for index, client_order_id in enumerate(new_ids):
        if client_order_id is None:
            continue
        if client_order_id in seen:
            raise RequestError(INVALID_REQUEST, f"client_order_id {client_order_id!r} is used by "
                               "two new orders of one request",
                               field=f"$.{name}[{index}].client_order_id")
        seen.add(client_order_id)
