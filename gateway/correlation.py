"""Match engine events to the requests that caused them; pure, no I/O, no clock.

Order commands are matched by (account, client_order_id): per key a FIFO of pending ops,
and an event answers the oldest op of the kind it answers (order_accepted/order_rejected a
new order, order_canceled with reason `user` or cancel_rejected a cancel, ...). The engine
applies commands in log order, so the oldest pending op is the one the event is about.

Commands that yield no event of their own when nothing happens (mass_cancel) or whose
rejection names no key (list_instrument, deposit; issue_capacity and delivery_report, which
an engine without Delivery, or a malformed one, answers with command_rejected) are
followed by a fence: a cancel of a
client order id that never exists, for the gateway's own account, which the engine always
answers with cancel_rejected. Everything such a command caused lies between it and its fence.

A strip (`new_strip_order`) is matched by (account, client_order_id) on its strip_accepted
or strip_rejected, in a queue of its own (an open order may carry the same id); once
accepted, by its strip id: the trades whose taker order it is make up its legs, and its
strip_done completes it.

An answer is never older than its command: the engine's time is the maximum `ts` it has
seen, so every event a command causes has `ts` >= that command's stamp, and an event with
an older `ts` is skipped. That keeps a gateway that lags behind the log from taking the
answer to another gateway's earlier command on the same key (a retry sent to a second
gateway) for its own. Known limit: two gateways whose clocks differ by more than the time
between two commands on the same account and client order id may still mix their answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from gateway.strips import StripProgress, rejected_strip
from protocol import AnyEvent, events
from wsapi.messages import OrderResult, StripResult

FENCE_ACCOUNT: Final = "gpux.gateway"
KEYED_OPS: Final = frozenset({"new_order", "cancel_order", "amend_order"})
FENCED_OPS: Final = frozenset(
    {"mass_cancel", "list_instrument", "deposit", "issue_capacity", "delivery_report"})
STRIP_OP: Final = "new_strip_order"
Outcome = OrderResult | StripResult


class Group(msgspec.Struct, kw_only=True, eq=False, gc=False):
    """One client request: one or more ops whose outcomes make up its single reply.

    Made per request (a Struct is cheaper to make than a dataclass), compared by identity,
    and untracked by the garbage collector: it refers to its outcomes and context only,
    which never refer back."""

    conn_id: int
    req_id: int
    op: str
    deadline_ns: int
    outcomes: list[Outcome | None]
    waiting: int
    context: Any = None  # what the reply needs besides the outcomes (the rate charge)
    done: bool = False


class PendingOp(msgspec.Struct, kw_only=True, eq=False, gc=False):
    """One engine command of a group, waiting for the event that answers it (a Struct, as
    Group: compared by identity, untracked, referring to nothing that refers back)."""

    group: Group
    index: int
    op: str
    account: str
    ts: int = 0  # the command's stamp: no answer to it is older
    client_order_id: str | None = None
    instrument: str | None = None
    asset: str | None = None
    deposit_id: str | None = None
    issue_id: str | None = None
    holder: str | None = None
    fence_id: str | None = None
    canceled: int = 0
    rejection: str | None = None
    listed: bool = False
    answer: OrderResult | None = None  # the engine's own answer, when it names the op
    strip: StripProgress | None = None  # an accepted strip's trades so far


@dataclass(slots=True)
class Correlator:
    """Hold pending ops; `on_event` returns the groups an event completed."""

    by_key: dict[tuple[str, str], deque[PendingOp]] = field(default_factory=dict)
    by_fence: dict[str, PendingOp] = field(default_factory=dict)
    by_strip_key: dict[tuple[str, str], deque[PendingOp]] = field(default_factory=dict)
    by_strip_id: dict[str, PendingOp] = field(default_factory=dict)  # accepted strips
    groups: dict[int, Group] = field(default_factory=dict)  # id(group) -> group

    def register(self, group: Group, ops: list[PendingOp]) -> None:
        if group.waiting != len(ops) or len(group.outcomes) != len(ops):
            raise ValueError("a group waits for exactly its ops")
        self.groups[id(group)] = group
        for op in ops:
            if op.op in KEYED_OPS:
                assert op.client_order_id is not None
                self.by_key.setdefault((op.account, op.client_order_id), deque()).append(op)
            elif op.op in FENCED_OPS:
                assert op.fence_id is not None
                self.by_fence[op.fence_id] = op
            elif op.op == STRIP_OP:
                assert op.client_order_id is not None
                self.by_strip_key.setdefault((op.account, op.client_order_id),
                                             deque()).append(op)
            else:
                raise ValueError(f"cannot correlate op {op.op!r}")

    def pending(self) -> int:
        return len(self.groups)

    def on_event(self, event: AnyEvent) -> list[Group]:
        """Resolve what `event` answers; return the groups that are now complete."""
        completed: list[Group] = []
        kind = type(event)
        if (kind is events.CancelRejected
                and event.account == FENCE_ACCOUNT):  # type: ignore[union-attr]
            op = self.by_fence.pop(event.client_order_id, None)  # type: ignore[union-attr]
            if op is not None:
                self._resolve(op, _fenced_outcome(op), completed)
            return completed
        if self.by_fence:
            self._watch_fenced(event)
        if self.by_strip_key or self.by_strip_id:
            self._watch_strips(event, completed)
        key_fields = _KEY_EVENTS.get(kind)
        if key_fields is not None:
            key = (event.account, event.client_order_id)  # type: ignore[union-attr]
            queue = self.by_key.get(key)
            if queue:
                for op in queue:
                    if event.ts < op.ts:
                        continue
                    outcome = _keyed_outcome(op, event)
                    if outcome is not None:
                        queue.remove(op)
                        if not queue:
                            del self.by_key[key]
                        self._resolve(op, outcome, completed)
                        break
        return completed

    def _watch_strips(self, event: AnyEvent, completed: list[Group]) -> None:
        """Follow a strip from its strip_accepted (or strip_rejected) to its strip_done."""
        if isinstance(event, events.Trade):
            op = self.by_strip_id.get(event.taker_order_id)
            if op is not None and op.strip is not None:
                op.strip.add(event)
        elif isinstance(event, events.StripDone):
            op = self.by_strip_id.pop(event.strip_id, None)
            if op is not None and op.strip is not None:
                self._resolve(op, op.strip.result(event), completed)
        elif isinstance(event, (events.StripAccepted, events.StripRejected)):
            op = self._take_strip((event.account, event.client_order_id), event.ts)
            if op is None:
                return
            if isinstance(event, events.StripRejected):
                self._resolve(op, rejected_strip(event), completed)
            else:
                op.strip = StripProgress(accepted=event)
                self.by_strip_id[event.strip_id] = op

    def _take_strip(self, key: tuple[str, str], ts: int) -> PendingOp | None:
        """Remove and return the oldest strip of `key` an event stamped `ts` may answer."""
        queue = self.by_strip_key.get(key)
        if queue is None:
            return None
        op = next((op for op in queue if ts >= op.ts), None)
        if op is not None:
            queue.remove(op)
            if not queue:
                del self.by_strip_key[key]
        return op

    def _watch_fenced(self, event: AnyEvent) -> None:
        """Note what a fenced op caused, for its outcome when its fence comes back."""
        for op in self.by_fence.values():
            if op.op == "mass_cancel":
                if (isinstance(event, events.OrderCanceled) and event.reason == "mass_cancel"
                        and event.account == op.account
                        and (op.instrument is None or event.instrument == op.instrument)):
                    op.canceled += 1
                elif isinstance(event, events.CommandRejected) and event.command == "mass_cancel":
                    op.rejection = op.rejection or event.reason
            elif op.op == "list_instrument":
                if isinstance(event, events.InstrumentListed) and event.symbol == op.instrument:
                    op.listed = True
                elif (isinstance(event, events.CommandRejected)
                      and event.command == "list_instrument"):
                    op.rejection = op.rejection or event.reason
            elif op.op == "deposit":
                if (isinstance(event, (events.Deposited, events.DepositRejected))
                        and event.account == op.account
                        and event.asset == op.asset
                        and (op.deposit_id is None
                             or getattr(event, "deposit_id", op.deposit_id) == op.deposit_id)):
                    if isinstance(event, events.Deposited):
                        op.listed = True
                    else:
                        op.rejection = event.reason
            elif op.op == "issue_capacity":
                if isinstance(event, (events.CapacityIssued, events.IssueRejected)):
                    if event.account == op.account and event.issue_id == op.issue_id:
                        op.answer = _issue_outcome(event)
                elif (isinstance(event, events.CommandRejected)
                      and event.command == "issue_capacity"):
                    op.rejection = op.rejection or event.reason
            elif op.op == "delivery_report":
                if isinstance(event, (events.DeliverySettled, events.ReportRejected)):
                    if event.issue_id == op.issue_id and event.holder == op.holder:
                        op.answer = _report_outcome(event)
                elif (isinstance(event, events.CommandRejected)
                      and event.command == "delivery_report"):
                    op.rejection = op.rejection or event.reason

    def _resolve(self, op: PendingOp, outcome: Outcome, completed: list[Group]) -> None:
        group = op.group
        if group.done or group.outcomes[op.index] is not None:
            return
        group.outcomes[op.index] = outcome
        group.waiting -= 1
        if group.waiting == 0:
            group.done = True
            self.groups.pop(id(group), None)
            completed.append(group)

    def expire(self, now_ns: int) -> list[Group]:
        """Give up on the groups past their deadline; their unanswered ops become errors."""
        expired = [group for group in self.groups.values() if group.deadline_ns <= now_ns]
        for group in expired:
            self._forget(group)
            group.outcomes = [
                outcome if outcome is not None
                else OrderResult(op=group.op, status="error", reason="timeout")
                for outcome in group.outcomes
            ]
            group.waiting = 0
            group.done = True
        return expired

    def fail(self, group: Group, reason: str) -> None:
        """Give up on a group whose commands could not be written."""
        self._forget(group)
        group.outcomes = [OrderResult(op=group.op, status="error", reason=reason)
                          if outcome is None else outcome for outcome in group.outcomes]
        group.waiting = 0
        group.done = True

    def _forget(self, group: Group) -> None:
        self.groups.pop(id(group), None)
        for key, queue in list(self.by_key.items()):
            kept = deque(op for op in queue if op.group is not group)
            if len(kept) != len(queue):
                if kept:
                    self.by_key[key] = kept
                else:
                    del self.by_key[key]
        for fence_id, op in list(self.by_fence.items()):
            if op.group is group:
                del self.by_fence[fence_id]
        for key, queue in list(self.by_strip_key.items()):
            kept = deque(op for op in queue if op.group is not group)
            if kept:
                self.by_strip_key[key] = kept
            else:
                del self.by_strip_key[key]
        for strip_id, op in list(self.by_strip_id.items()):
            if op.group is group:
                del self.by_strip_id[strip_id]


_KEY_EVENTS: Final[dict[type[Any], bool]] = {
    events.OrderAccepted: True, events.OrderRejected: True, events.OrderCanceled: True,
    events.OrderAmended: True, events.CancelRejected: True, events.AmendRejected: True,
}


def _keyed_outcome(op: PendingOp, event: AnyEvent) -> OrderResult | None:
    """Return the outcome `event` gives `op`, or None if the event does not answer it."""
    cid = op.client_order_id
    if op.op == "new_order":
        if isinstance(event, events.OrderAccepted):
            return OrderResult(op=op.op, status="accepted", client_order_id=cid,
                           order_id=event.order_id, instrument=event.instrument,
                           price=event.price, quantity=event.quantity)
        if isinstance(event, events.OrderRejected):
            return OrderResult(op=op.op, status="rejected", client_order_id=cid,
                           instrument=event.instrument, reason=event.reason)
    elif op.op == "cancel_order":
        if isinstance(event, events.OrderCanceled) and event.reason == "user":
            return OrderResult(op=op.op, status="accepted", client_order_id=cid,
                           order_id=event.order_id, instrument=event.instrument,
                           canceled_quantity=event.canceled_quantity)
        if isinstance(event, events.CancelRejected):
            return OrderResult(op=op.op, status="rejected", client_order_id=cid,
                           reason=event.reason)
    elif op.op == "amend_order":
        if isinstance(event, events.OrderAmended):
            return OrderResult(op=op.op, status="accepted", client_order_id=cid,
                           order_id=event.order_id, instrument=event.instrument,
                           price=event.price, quantity=event.quantity,
                           remaining_quantity=event.remaining_quantity)
        if isinstance(event, events.OrderCanceled) and event.reason == "amended":
            return OrderResult(op=op.op, status="accepted", client_order_id=cid,
                           order_id=event.order_id, instrument=event.instrument,
                           reason="amended", remaining_quantity=0,
                           canceled_quantity=event.canceled_quantity)
        if isinstance(event, events.AmendRejected):
            return OrderResult(op=op.op, status="rejected", client_order_id=cid,
                           reason=event.reason)
    return None


def _issue_outcome(event: events.CapacityIssued | events.IssueRejected) -> OrderResult:
    if isinstance(event, events.IssueRejected):
        return OrderResult(op="issue_capacity", status="rejected", issue_id=event.issue_id,
                           reason=event.reason)
    return OrderResult(op="issue_capacity", status="accepted", issue_id=event.issue_id,
                       instrument=event.instrument, node_id=event.node_id,
                       quantity=event.quantity, bond=event.bond)


def _report_outcome(event: events.DeliverySettled | events.ReportRejected) -> OrderResult:
    if isinstance(event, events.ReportRejected):
        return OrderResult(op="delivery_report", status="rejected", issue_id=event.issue_id,
                           holder=event.holder, reason=event.reason)
    return OrderResult(op="delivery_report", status="accepted", issue_id=event.issue_id,
                       instrument=event.instrument, holder=event.holder,
                       quantity=event.quantity, delivered_ppm=event.delivered_ppm,
                       compensation=event.compensation, evidence=event.evidence)


def _fenced_outcome(op: PendingOp) -> OrderResult:
    if op.answer is not None:
        return op.answer
    if op.op in ("issue_capacity", "delivery_report"):
        return OrderResult(op=op.op, status="rejected", issue_id=op.issue_id, holder=op.holder,
                           reason=op.rejection or "invalid_command")
    if op.op == "mass_cancel":
        if op.rejection is not None and op.canceled == 0:
            return OrderResult(op=op.op, status="rejected", instrument=op.instrument,
                           reason=op.rejection)
        return OrderResult(op=op.op, status="accepted", instrument=op.instrument,
                       canceled=op.canceled)
    if op.op == "list_instrument":
        if op.listed:
            return OrderResult(op=op.op, status="accepted", instrument=op.instrument)
        return OrderResult(op=op.op, status="rejected", instrument=op.instrument,
                       reason=op.rejection or "invalid_command")
    if op.listed:
        return OrderResult(op=op.op, status="accepted")
    return OrderResult(op=op.op, status="rejected", reason=op.rejection or "invalid_amount")
