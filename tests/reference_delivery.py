"""Delivery (v2) in the reference model: issues, redemption at close, delivery reports.

A part of `tests.reference_model.ReferenceEngine`, read from PROTOCOL.md "Delivery (v2)" and
its readings in docs/protocol-notes.md, and as independent of `matching_engine` as the rest
of the model. `Delivery` owns what Delivery adds to the engine's state (the issues and the
assignments) and moves money only through the engine's `credit`. An issue's bond is never
stored but computed from its bonded GPU-hours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from protocol import (
    USDC,
    BondReleased,
    CapacityIssued,
    DeliveryAssigned,
    DeliveryReport,
    DeliverySettled,
    IssueCapacity,
    IssueRejected,
    ReportRejected,
    format_micro,
)
from protocol import reasons as reason
from tests import reference_model as model  # a cycle: the model builds its Delivery

PPM_WHOLE = 1_000_000  # delivered_ppm of a delivery in full


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


class Delivery:
    """The issues and assignments of one reference engine, and the rules that change them."""

    def __init__(self, engine: model.ReferenceEngine) -> None:
        self.engine = engine
        self.issues: list[Issue] = []  # every accepted issue, in the order issued
        self.assignments: list[Assignment] = []  # every assignment, in the order assigned

    # ----------------------------------------------------------------------------- API

    def issue_capacity(self, command: IssueCapacity) -> None:
        why = self._issue_rejection(command)
        if why is not None:
            # protocol-notes: a rejected issue does not use up its issue_id.
            self.engine.emit(IssueRejected, issue_id=command.issue_id, account=command.account,
                             reason=why)
            return
        issue = Issue(issue_id=command.issue_id, account=command.account,
                      instrument=command.instrument, node_id=command.node_id,
                      quantity=command.quantity, unassigned=command.quantity,
                      bonded=command.quantity)
        self.issues.append(issue)
        bond = self._bond_of(issue, issue.quantity)
        self.engine.credit(issue.account, USDC, -bond)
        self.engine.credit(issue.account, issue.instrument, issue.quantity)
        self.engine.emit(CapacityIssued, issue_id=issue.issue_id, account=issue.account,
                         instrument=issue.instrument, node_id=issue.node_id,
                         quantity=issue.quantity, bond=format_micro(bond))

    def delivery_report(self, command: DeliveryReport) -> None:
        why = self._report_rejection(command)
        if why is not None:
            self.engine.emit(ReportRejected, issue_id=command.issue_id, holder=command.holder,
                             reason=why)
            return
        issue = self._find_issue(command.issue_id)
        assignment = self._find_assignment(command.issue_id, command.holder)
        assert issue is not None and assignment is not None
        assignment.reported = True
        bond = self._bond_of(issue, assignment.quantity)
        compensation = bond * (PPM_WHOLE - command.delivered_ppm) // PPM_WHOLE
        self.engine.credit(assignment.holder, USDC, compensation)
        self.engine.emit(DeliverySettled, instrument=issue.instrument, issue_id=issue.issue_id,
                         issuer=issue.account, holder=assignment.holder,
                         quantity=assignment.quantity, delivered_ppm=command.delivered_ppm,
                         compensation=format_micro(compensation), evidence=command.evidence)
        self._release(issue, assignment.quantity, bond - compensation)

    def redeem(self, instrument: model.Instrument) -> None:
        """Redeem every token of a deliverable instrument at its close (protocol-notes,
        Delivery, Close): issuers' own tokens release their bonds, other holders are
        assigned deliveries, balances go to zero, what nobody holds is released."""
        available = self.engine.available
        issues = [issue for issue in self.issues if issue.instrument == instrument.symbol]
        tokens = {account: amount for (account, asset), amount in available.items()
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
                self.engine.emit(DeliveryAssigned, instrument=instrument.symbol,
                                 issue_id=issue.issue_id, issuer=issue.account,
                                 node_id=issue.node_id, holder=holder, quantity=taken)
        for account, asset in available:
            if asset == instrument.symbol:
                available[(account, asset)] = 0
        for issue in issues:  # what nobody holds at the venue
            if issue.unassigned > 0:
                left = issue.unassigned
                issue.unassigned = 0
                self._release(issue, left, self._bond_of(issue, left))

    def final_issues(self) -> list[dict[str, Any]]:
        """The final state's `issues`: those with GPU-hours still bonded, in the order issued."""
        return [
            {"issue_id": issue.issue_id, "account": issue.account,
             "instrument": issue.instrument, "node_id": issue.node_id,
             "quantity": issue.bonded, "bond": format_micro(self._bond_of(issue, issue.bonded))}
            for issue in self.issues if issue.bonded > 0
        ]

    def final_deliveries(self) -> list[dict[str, Any]]:
        """The final state's `deliveries`: the assignments not yet reported, in order."""
        return [
            {"issue_id": assignment.issue_id, "holder": assignment.holder,
             "quantity": assignment.quantity}
            for assignment in self.assignments if not assignment.reported
        ]

    def validate(self) -> None:
        """Raise ModelError unless each issue's GPU-hours add up (bonded = unassigned +
        assigned and not reported), nothing is assigned before its instrument closes, and
        the tokens of a closed deliverable instrument are all redeemed."""
        for instrument in self.engine.instruments:
            if instrument.closed and instrument.bond_micro is not None:
                for (account, asset), amount in self.engine.available.items():
                    if asset == instrument.symbol and amount != 0:
                        raise model.ModelError(f"{account} holds {amount} redeemed {asset}")
        assigned: dict[str, int] = {}
        owed: dict[str, int] = {}
        for assignment in self.assignments:
            key = assignment.issue_id
            assigned[key] = assigned.get(key, 0) + assignment.quantity
            if not assignment.reported:
                owed[key] = owed.get(key, 0) + assignment.quantity
        for issue in self.issues:
            issue_instrument = self.engine.instrument(issue.instrument)
            if issue_instrument is None or issue_instrument.bond_micro is None:
                raise model.ModelError(f"issue {issue.issue_id} of a non-deliverable instrument")
            key = issue.issue_id
            if issue.bonded != issue.unassigned + owed.get(key, 0):
                raise model.ModelError(f"issue {key} bonds {issue.bonded} hours, "
                                       f"{issue.unassigned} unassigned + {owed.get(key, 0)} owed")
            if assigned.get(key, 0) + issue.unassigned > issue.quantity:
                raise model.ModelError(f"issue {key} assigned beyond its quantity")
            if not issue_instrument.closed and issue.bonded != issue.quantity:
                raise model.ModelError(f"issue {key} assigned or released before close")
            if issue_instrument.closed and issue.unassigned != 0:
                raise model.ModelError(f"issue {issue.issue_id} unassigned after close")

    # ------------------------------------------------------------------------ rules

    def _bond_of(self, issue: Issue, hours: int) -> int:
        """The bond of `hours` GPU-hours of an issue, in micro-USDC."""
        instrument = self.engine.instrument(issue.instrument)
        if instrument is None or instrument.bond_micro is None:
            raise model.ModelError(f"issue {issue.issue_id} of a non-deliverable instrument")
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
        instrument = self.engine.instrument(command.instrument)
        if instrument is None:
            return reason.UNKNOWN_INSTRUMENT
        if instrument.bond_micro is None:
            return reason.NOT_DELIVERABLE
        if instrument.closed:
            return reason.INSTRUMENT_CLOSED
        if not 1 <= command.quantity <= instrument.max_order_quantity:
            return reason.INVALID_QUANTITY
        if command.quantity * instrument.bond_micro > self.engine.balance(command.account, USDC):
            return reason.INSUFFICIENT_FUNDS
        return None

    def _release(self, issue: Issue, hours: int, amount: int) -> None:
        """Give `amount` of the bond of `hours` GPU-hours back to the issuer."""
        issue.bonded -= hours
        self.engine.credit(issue.account, USDC, amount)
        self.engine.emit(BondReleased, issue_id=issue.issue_id, account=issue.account,
                         quantity=hours, amount=format_micro(amount))

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
        instrument = self.engine.instrument(issue.instrument)
        assignment = self._find_assignment(command.issue_id, command.holder)
        if instrument is None or not instrument.closed or assignment is None:
            return reason.NOT_ASSIGNED
        if assignment.reported:
            return reason.ALREADY_REPORTED
        if not 0 <= command.delivered_ppm <= PPM_WHOLE:
            return reason.INVALID_PPM
        return None
