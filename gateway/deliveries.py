"""The delivery side of the projection (PROTOCOL.md v2, Delivery): each account's issues and
assignments, and the delivery events its `deliveries` feed carries.

Pure, like `gateway.projection` that drives it. The money an issue, a release or a report
moves is `gateway.accounts`' (balances); here are the promises: what each issue still has
under bond, who is to receive which GPU-hours, and how each delivery was settled. The
amounts the events carry are checked against `protocol.effects`, so a gateway that disagrees
with the engine on a bond stops instead of showing a wrong one.

An issue or an assignment is live until nothing more can happen to it (no GPU-hour left
under bond; a report settled it). Live ones are all kept; of the settled ones each account
keeps its `settled_kept_max` latest, which bounds what an account that issues every hour for
years makes the gateway hold and the `deliveries` request send.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.marketdata import (
    FeedUpdate,
    InstrumentState,
    LogPosition,
    MarketData,
    ProjectionError,
    Wanted,
)
from gateway.messages import encode
from protocol import events, format_micro, parse_micro
from protocol.effects import bond, compensation
from wsapi.messages import Assignment, DeliveriesMessage, DeliveryEvent, Issue

AssignmentKey = tuple[str, str]  # (issue_id, holder)
DeliveryEngineEvent = (
    events.CapacityIssued | events.IssueRejected | events.BondReleased
    | events.DeliveryAssigned | events.DeliverySettled
)


@dataclass(slots=True)
class IssueState:
    seq: int  # of its capacity_issued: the order issues were made in
    issue_id: str
    issuer: str
    instrument: InstrumentState
    node_id: str
    quantity: int
    bonded: int  # GPU-hours still under bond: neither released nor settled

    @property
    def bond_per_gpu_hour(self) -> int:
        return instrument_bond(self.instrument)

    def view(self) -> Issue:
        status: Literal["open", "delivering", "settled"] = "settled"
        if not self.instrument.closed:
            status = "open"
        elif self.bonded:
            status = "delivering"
        return Issue(issue_id=self.issue_id, instrument=self.instrument.spec.symbol,
                     node_id=self.node_id, quantity=self.quantity, bonded_quantity=self.bonded,
                     bond=format_micro(bond(self.bonded, self.bond_per_gpu_hour)),
                     status=status)


@dataclass(slots=True)
class AssignmentState:
    seq: int  # of its delivery_assigned
    issue: IssueState
    holder: str
    quantity: int
    delivered_ppm: int | None = None
    compensation: int | None = None
    evidence: str | None = None

    def view(self) -> Assignment:
        issue = self.issue
        return Assignment(
            issue_id=issue.issue_id, instrument=issue.instrument.spec.symbol,
            delivery_start=issue.instrument.spec.delivery_start, node_id=issue.node_id,
            issuer=issue.issuer, holder=self.holder, quantity=self.quantity,
            status="assigned" if self.delivered_ppm is None else "settled",
            delivered_ppm=self.delivered_ppm,
            compensation=None if self.compensation is None else format_micro(self.compensation),
            evidence=self.evidence)


@dataclass(slots=True)
class AccountDeliveries:
    """One account's live issues and assignments (as issuer or holder), and its latest
    settled ones."""

    issues: dict[str, IssueState] = field(default_factory=dict)
    assignments: dict[AssignmentKey, AssignmentState] = field(default_factory=dict)
    settled: deque[IssueState | AssignmentState] = field(default_factory=deque)


def instrument_bond(instrument: InstrumentState) -> int:
    """The instrument's bond per GPU-hour in micro-USDC; ProjectionError when it has none."""
    listed = instrument.spec.bond_per_gpu_hour
    if listed is None:
        raise ProjectionError(f"{instrument.spec.symbol} is not deliverable")
    return parse_micro(listed)


class Deliveries:
    """Apply the events of Delivery; hand out each account's issues, assignments and
    delivery events."""

    def __init__(self, position: LogPosition, market: MarketData, *, events_kept_max: int,
                 settled_kept_max: int) -> None:
        self.position = position
        self.market = market
        self.events_kept_max = events_kept_max
        self.settled_kept_max = settled_kept_max
        self.issues: dict[str, IssueState] = {}  # live ones, by issue_id
        self.assignments: dict[AssignmentKey, AssignmentState] = {}  # live ones
        self.accounts: dict[str, AccountDeliveries] = {}
        self._events: dict[str, list[DeliveryEvent]] = {}  # since the last `updates`
        self._recent: dict[str, deque[DeliveryEvent]] = {}  # account -> its latest events

    def handlers(self) -> dict[type[Any], Callable[[Any], None]]:
        """Return the method that applies each type of event of Delivery."""
        return {
            events.CapacityIssued: self.issued, events.IssueRejected: self.issue_rejected,
            events.BondReleased: self.released, events.DeliveryAssigned: self.assigned,
            events.DeliverySettled: self.settled,
        }

    # -- applying events -------------------------------------------------------------------

    def issued(self, event: events.CapacityIssued) -> None:
        instrument = self.market.instruments[event.instrument]
        if parse_micro(event.bond) != bond(event.quantity, instrument_bond(instrument)):
            raise ProjectionError(f"issue {event.issue_id} bonds {event.bond} USDC for "
                                  f"{event.quantity} GPU-hours of {event.instrument}")
        issue = IssueState(seq=event.seq, issue_id=event.issue_id, issuer=event.account,
                           instrument=instrument, node_id=event.node_id,
                           quantity=event.quantity, bonded=event.quantity)
        self.issues[issue.issue_id] = issue
        self._account(issue.issuer).issues[issue.issue_id] = issue
        self._note((issue.issuer,), event, "capacity_issued", issue, quantity=event.quantity,
                   bond=event.bond)

    def issue_rejected(self, event: events.IssueRejected) -> None:
        self._note((event.account,), event, "issue_rejected", None, issuer=event.account,
                   reason=event.reason)

    def released(self, event: events.BondReleased) -> None:
        issue = self._issue(event.issue_id)
        if (event.account != issue.issuer or not 0 < event.quantity <= issue.bonded
                or parse_micro(event.amount) > bond(event.quantity, issue.bond_per_gpu_hour)):
            raise ProjectionError(f"bond_released of {event.amount} USDC for {event.quantity} "
                                  f"GPU-hours of issue {issue.issue_id} to {event.account}: "
                                  f"{issue.bonded} bonded, issuer {issue.issuer}")
        issue.bonded -= event.quantity
        self._note((issue.issuer,), event, "bond_released", issue, quantity=event.quantity,
                   amount=event.amount)
        if issue.bonded == 0:
            del self.issues[issue.issue_id]
            self._settle((issue.issuer,), issue)

    def assigned(self, event: events.DeliveryAssigned) -> None:
        issue = self._issue(event.issue_id)
        key = (event.issue_id, event.holder)
        if key in self.assignments:
            raise ProjectionError(f"issue {event.issue_id} assigned twice to {event.holder}")
        assignment = AssignmentState(seq=event.seq, issue=issue, holder=event.holder,
                                     quantity=event.quantity)
        self.assignments[key] = assignment
        parties = _parties(issue.issuer, event.holder)
        for account in parties:
            self._account(account).assignments[key] = assignment
        self._note(parties, event, "delivery_assigned", issue, holder=event.holder,
                   quantity=event.quantity)

    def settled(self, event: events.DeliverySettled) -> None:
        key = (event.issue_id, event.holder)
        assignment = self.assignments.pop(key, None)
        if assignment is None:
            raise ProjectionError(f"delivery_settled of {key}, which is not assigned")
        issue = assignment.issue
        paid = compensation(event.quantity, issue.bond_per_gpu_hour, event.delivered_ppm)
        if event.quantity != assignment.quantity or parse_micro(event.compensation) != paid:
            raise ProjectionError(f"delivery_settled of {key}: {event.quantity} GPU-hours "
                                  f"and {event.compensation} USDC, assigned "
                                  f"{assignment.quantity} (compensation {format_micro(paid)})")
        assignment.delivered_ppm = event.delivered_ppm
        assignment.compensation = paid
        assignment.evidence = event.evidence
        parties = _parties(issue.issuer, event.holder)
        self._note(parties, event, "delivery_settled", issue, holder=event.holder,
                   quantity=event.quantity, delivered_ppm=event.delivered_ppm,
                   compensation=event.compensation, evidence=event.evidence)
        self._settle(parties, assignment)

    # -- state changes ---------------------------------------------------------------------

    def _issue(self, issue_id: str) -> IssueState:
        issue = self.issues.get(issue_id)
        if issue is None:
            raise ProjectionError(f"issue {issue_id} has nothing under bond")
        return issue

    def _account(self, account: str) -> AccountDeliveries:
        deliveries = self.accounts.get(account)
        if deliveries is None:
            deliveries = self.accounts[account] = AccountDeliveries(
                settled=deque(maxlen=self.settled_kept_max))
        return deliveries

    def _settle(self, parties: tuple[str, ...], item: IssueState | AssignmentState) -> None:
        """Move a settled issue or assignment from its parties' live ones to their latest
        settled ones (the oldest settled beyond the bound is forgotten)."""
        for account in parties:
            deliveries = self._account(account)
            if isinstance(item, IssueState):
                del deliveries.issues[item.issue_id]
            else:
                del deliveries.assignments[(item.issue.issue_id, item.holder)]
            deliveries.settled.append(item)

    def _note(self, parties: tuple[str, ...], event: DeliveryEngineEvent, kind: str,
              issue: IssueState | None, **fields: Any) -> None:
        """Add a delivery event to the feeds of `parties`."""
        if issue is not None:
            fields.update(instrument=issue.instrument.spec.symbol, node_id=issue.node_id,
                          issuer=issue.issuer)
        item = DeliveryEvent(event=kind, issue_id=event.issue_id, seq=event.seq, ts=event.ts,
                             **fields)
        for account in parties:
            self._events.setdefault(account, []).append(item)
            recent = self._recent.get(account)
            if recent is None:
                recent = self._recent[account] = deque(maxlen=self.events_kept_max)
            recent.append(item)

    # -- output ----------------------------------------------------------------------------

    def updates(self, wanted: Wanted) -> list[FeedUpdate]:
        """The deliveries messages of the events since the last call."""
        updates = [
            FeedUpdate("deliveries", account, encode(
                DeliveriesMessage(kind="update", events=account_events)))
            for account, account_events in self._events.items() if wanted("deliveries", account)
        ]
        self._events = {}
        return updates

    def recent_events(self, account: str) -> list[DeliveryEvent]:
        """The account's latest delivery events (up to `events_kept_max`), oldest first."""
        return list(self._recent.get(account, ()))

    def result(self, account: str) -> dict[str, Any]:
        """The `deliveries` result: the account's issues and assignments, live and recently
        settled, each in the order made."""
        deliveries = self.accounts.get(account, AccountDeliveries())
        issues = [*deliveries.issues.values(),
                  *(item for item in deliveries.settled if isinstance(item, IssueState))]
        assignments = [*deliveries.assignments.values(),
                       *(item for item in deliveries.settled
                         if isinstance(item, AssignmentState))]
        issues.sort(key=lambda issue: issue.seq)
        assignments.sort(key=lambda assignment: assignment.seq)
        return {"seq": self.position.event_seq,
                "issues": [issue.view() for issue in issues],
                "assignments": [assignment.view() for assignment in assignments]}


def _parties(issuer: str, holder: str) -> tuple[str, ...]:
    """The accounts an assignment concerns: its issuer and its holder (once if the same)."""
    return (issuer,) if issuer == holder else (issuer, holder)
