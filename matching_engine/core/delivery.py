"""Delivery (PROTOCOL.md v2): bonded issuance, redemption at close, delivery reports.

A token of a deliverable instrument is its issuer's promise of one GPU-hour. The bond that
backs it leaves the issuer's balance at issue and is held by the engine, outside every
balance, until the promise is released (the issuer's own tokens, hours nobody holds) or
settled by a delivery report (compensation to the holder, the rest to the issuer). The
close follows docs/protocol-notes.md, "Delivery (v2)", step by step: both cores and the
reference model must give the same events in the same order.
"""

from __future__ import annotations

from collections import deque

from matching_engine.core.book import Instrument
from matching_engine.core.state import EngineState
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
from protocol import reasons as R
from protocol.commands import PPM
from protocol.effects import bond, compensation


class Issue:
    """One accepted `issue_capacity`. Of its `quantity` GPU-hours, `unassigned` are neither
    released nor assigned at close, and `bonded` are still under bond (released hours leave
    both; assigned hours leave `unassigned` at close and `bonded` at their report)."""

    __slots__ = ("issue_id", "account", "instrument", "node_id", "quantity", "unassigned",
                 "bonded")

    def __init__(self, *, issue_id: str, account: str, instrument: Instrument, node_id: str,
                 quantity: int, unassigned: int, bonded: int) -> None:
        self.issue_id = issue_id
        self.account = account
        self.instrument = instrument
        self.node_id = node_id
        self.quantity = quantity
        self.unassigned = unassigned
        self.bonded = bonded


class Assignment:
    """GPU-hours of one issue due to one holder, made at close; `reported` once its delivery
    report has settled it."""

    __slots__ = ("issue_id", "holder", "quantity", "reported")

    def __init__(self, *, issue_id: str, holder: str, quantity: int, reported: bool) -> None:
        self.issue_id = issue_id
        self.holder = holder
        self.quantity = quantity
        self.reported = reported


class DeliveryFlow(EngineState):
    """The delivery handlers and the redemption of a deliverable instrument at its close."""

    # -- issue -----------------------------------------------------------------------------

    def on_issue_capacity(self, command: IssueCapacity) -> None:
        reason, instrument = self._check_issue(command)
        if reason is not None:
            self.emit(IssueRejected(seq=self.next_seq(), ts=self.time,
                                    issue_id=command.issue_id, account=command.account,
                                    reason=reason))
            return
        assert instrument is not None and instrument.bond is not None
        amount = bond(command.quantity, instrument.bond)
        self.wallet(command.account, USDC)[0] -= amount
        self.wallet(command.account, instrument.symbol)[0] += command.quantity
        self.supply[instrument.symbol] = self.supply.get(instrument.symbol, 0) + command.quantity
        self.issues[command.issue_id] = Issue(
            issue_id=command.issue_id, account=command.account, instrument=instrument,
            node_id=command.node_id, quantity=command.quantity, unassigned=command.quantity,
            bonded=command.quantity,
        )
        self.emit(CapacityIssued(
            seq=self.next_seq(), ts=self.time, issue_id=command.issue_id,
            account=command.account, instrument=instrument.symbol, node_id=command.node_id,
            quantity=command.quantity, bond=format_micro(amount),
        ))

    def _check_issue(self, command: IssueCapacity) -> tuple[str | None, Instrument | None]:
        """Return the first failing check's reason (PROTOCOL.md's order), else the instrument."""
        if command.issue_id in self.issues:
            return R.DUPLICATE_ISSUE, None
        instrument = self.instruments.get(command.instrument)
        if instrument is None:
            return R.UNKNOWN_INSTRUMENT, None
        if instrument.bond is None:
            return R.NOT_DELIVERABLE, None
        if instrument.closed:
            return R.INSTRUMENT_CLOSED, None
        if not 1 <= command.quantity <= instrument.max_order_quantity:
            return R.INVALID_QUANTITY, None
        if bond(command.quantity, instrument.bond) > self.available(command.account, USDC):
            return R.INSUFFICIENT_FUNDS, None
        return None, instrument

    # -- close -----------------------------------------------------------------------------

    def redeem(self, instrument: Instrument, bond_per_gpu_hour: int) -> None:
        """Redeem every token of a deliverable instrument that just closed (its orders are
        canceled, so every token is in an `available` balance): the issuers' own tokens
        release their bonds, the other holders are assigned deliveries, and the bond of
        hours nobody holds is released."""
        holdings = self._take_tokens(instrument.symbol)
        issues = [issue for issue in self.issues.values() if issue.instrument is instrument]
        for issue in issues:
            own = min(issue.unassigned, holdings.get(issue.account, 0))
            if own > 0:
                holdings[issue.account] -= own
                issue.unassigned -= own
                self._release(issue, own, bond(own, bond_per_gpu_hour))
        self._assign(instrument, issues, holdings)
        for issue in issues:
            if issue.unassigned > 0:
                left = issue.unassigned
                issue.unassigned = 0
                self._release(issue, left, bond(left, bond_per_gpu_hour))

    def _take_tokens(self, symbol: str) -> dict[str, int]:
        """Set every balance of the token to 0 (entries stay), drop the supply by as much,
        and return what each holder had, by account."""
        holdings: dict[str, int] = {}
        for account, assets in self.balances.items():
            pair = assets.get(symbol)
            if pair is not None and pair[0] > 0:
                holdings[account] = pair[0]
                pair[0] = 0
        redeemed = sum(holdings.values())
        if redeemed:
            self.supply[symbol] -= redeemed
        return holdings

    def _assign(self, instrument: Instrument, issues: list[Issue],
                holdings: dict[str, int]) -> None:
        """Holders in ascending byte order take the unassigned hours, oldest issue first.
        An issuer's own issues are fully taken by then, so nobody is assigned its own."""
        open_issues = deque(issue for issue in issues if issue.unassigned > 0)
        for holder in sorted(holdings):
            tokens = holdings[holder]
            while tokens > 0 and open_issues:
                issue = open_issues[0]
                quantity = min(tokens, issue.unassigned)
                tokens -= quantity
                issue.unassigned -= quantity
                if issue.unassigned == 0:
                    open_issues.popleft()
                self.assignments[(issue.issue_id, holder)] = Assignment(
                    issue_id=issue.issue_id, holder=holder, quantity=quantity, reported=False,
                )
                self.emit(DeliveryAssigned(
                    seq=self.next_seq(), ts=self.time, instrument=instrument.symbol,
                    issue_id=issue.issue_id, issuer=issue.account, node_id=issue.node_id,
                    holder=holder, quantity=quantity,
                ))
            if not open_issues:
                return

    def _release(self, issue: Issue, quantity: int, amount: int) -> None:
        """Take `quantity` GPU-hours of the issue off bond, paying `amount` to its issuer."""
        issue.bonded -= quantity
        self.wallet(issue.account, USDC)[0] += amount
        self.emit(BondReleased(seq=self.next_seq(), ts=self.time, issue_id=issue.issue_id,
                               account=issue.account, quantity=quantity,
                               amount=format_micro(amount)))

    # -- report ----------------------------------------------------------------------------

    def on_delivery_report(self, command: DeliveryReport) -> None:
        reason, issue, assignment = self._check_report(command)
        if reason is not None:
            self.emit(ReportRejected(seq=self.next_seq(), ts=self.time,
                                     issue_id=command.issue_id, holder=command.holder,
                                     reason=reason))
            return
        assert issue is not None and assignment is not None
        bond_per_gpu_hour = issue.instrument.bond
        assert bond_per_gpu_hour is not None
        quantity = assignment.quantity
        paid = compensation(quantity, bond_per_gpu_hour, command.delivered_ppm)
        assignment.reported = True
        self.wallet(command.holder, USDC)[0] += paid
        self.emit(DeliverySettled(
            seq=self.next_seq(), ts=self.time, instrument=issue.instrument.symbol,
            issue_id=issue.issue_id, issuer=issue.account, holder=command.holder,
            quantity=quantity, delivered_ppm=command.delivered_ppm,
            compensation=format_micro(paid), evidence=command.evidence,
        ))
        self._release(issue, quantity, bond(quantity, bond_per_gpu_hour) - paid)

    def _check_report(self, command: DeliveryReport
                      ) -> tuple[str | None, Issue | None, Assignment | None]:
        """Return the first failing check's reason (PROTOCOL.md's order), else the issue
        and the assignment the report settles."""
        issue = self.issues.get(command.issue_id)
        if issue is None:
            return R.UNKNOWN_ISSUE, None, None
        assignment = self.assignments.get((command.issue_id, command.holder))
        if assignment is None or not issue.instrument.closed:
            return R.NOT_ASSIGNED, None, None
        if assignment.reported:
            return R.ALREADY_REPORTED, None, None
        if not 0 <= command.delivered_ppm <= PPM:
            return R.INVALID_PPM, None, None
        return None, issue, assignment
