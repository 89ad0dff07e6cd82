"""Check one assignment's evidence: the logic behind `gpux delivery verify ISSUE HOLDER`.

Anyone with read access to the samples and the event log can redo the venue's measurement:
the samples' chain and signatures hold (`delivery.evidence.check_chain`), every minute of
the window is there exactly once and names this assignment, and the `delivered_ppm` and
Merkle root recomputed from the samples equal the ones the service stored as its report and
the ones the engine settled (`delivery_settled`: `delivered_ppm`, `evidence`). Pure: the
caller reads the rows and the event; this module names every disagreement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import msgspec

from delivery.errors import DeliveryError
from delivery.evidence import (
    Sample,
    StoredSample,
    check_chain,
    decode_sample,
    delivered_ppm,
    evidence_root,
)
from protocol.events import DeliverySettled

__all__ = ["AssignmentWindow", "ReportRow", "VerifyResult", "verify_assignment"]

NS_PER_MINUTE: Final = 60 * 10**9


class AssignmentWindow(Protocol):
    """What verification reads of an assignment (a `delivery.assignments` row)."""

    @property
    def issue_id(self) -> str: ...

    @property
    def holder(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    @property
    def window_start_ns(self) -> int: ...

    @property
    def window_end_ns(self) -> int: ...


class ReportRow(Protocol):
    """What verification reads of the service's report (a `delivery.reports` row)."""

    @property
    def delivered_ppm(self) -> int: ...

    @property
    def evidence_root(self) -> bytes: ...


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict: `ok` when `problems` is empty; `checked` says what was compared."""

    ok: bool
    delivered_ppm: int
    evidence_root_hex: str
    problems: list[str]
    checked: list[str]


def verify_assignment(
    assignment: AssignmentWindow,
    stored_samples: Sequence[StoredSample],
    signer_keys: Mapping[str, bytes],
    settled_event: DeliverySettled | None,
    report_row: ReportRow | None,
) -> VerifyResult:
    """Recompute an assignment's `delivered_ppm` and evidence root from its samples and
    name every way the samples, the report and the settlement disagree."""
    window_minutes = _window_minutes(assignment)
    ordered = sorted(stored_samples, key=lambda stored: stored.minute)
    problems = check_chain(ordered, signer_keys, window_minutes,
                           issue_id=assignment.issue_id, holder=assignment.holder)
    checked = [
        f"chain, hashes and signatures of {len(ordered)} samples",
        f"every minute of the {window_minutes}-minute window present once",
    ]
    samples = _decoded(ordered)
    problems += _node_problems(samples, assignment.node_id)
    checked.append(f"every sample names {assignment.issue_id}/{assignment.holder} on node "
                   f"{assignment.node_id}")
    ppm = delivered_ppm(samples, window_minutes)
    root_hex = evidence_root(ordered).hex()
    checked.append(f"recomputed delivered_ppm {ppm} and evidence root {root_hex}")
    problems += _report_problems(report_row, ppm, root_hex)
    checked.append("the service's stored report")
    problems += _settled_problems(settled_event, assignment, ppm, root_hex)
    checked.append("the delivery_settled event")
    return VerifyResult(ok=not problems, delivered_ppm=ppm, evidence_root_hex=root_hex,
                        problems=problems, checked=checked)


def _window_minutes(assignment: AssignmentWindow) -> int:
    span_ns = assignment.window_end_ns - assignment.window_start_ns
    if span_ns <= 0 or span_ns % NS_PER_MINUTE:
        raise DeliveryError(
            f"assignment {assignment.issue_id}/{assignment.holder}: a window of {span_ns} ns "
            "is not a whole number of minutes")
    return span_ns // NS_PER_MINUTE


def _decoded(ordered: Sequence[StoredSample]) -> list[Sample]:
    """The bodies that decode (`check_chain` names the others); one per minute, the first
    stored, so a duplicate cannot count a minute twice."""
    samples: dict[int, Sample] = {}
    for stored in ordered:
        try:
            sample = decode_sample(stored.body)
        except DeliveryError:
            continue
        samples.setdefault(stored.minute, sample)
    return list(samples.values())


def _node_problems(samples: Sequence[Sample], node_id: str) -> list[str]:
    """A sample that names another node than the assignment's (`check_chain` compares the
    samples with each other, this with the assignment)."""
    others = sorted({sample.node_id for sample in samples} - {node_id})
    return [f"samples name node {other}, not the assignment's {node_id}" for other in others]


def _report_problems(report_row: ReportRow | None, ppm: int, root_hex: str) -> list[str]:
    if report_row is None:
        return ["no report stored for this assignment"]
    problems = []
    if report_row.delivered_ppm != ppm:
        problems.append(f"the report's delivered_ppm {report_row.delivered_ppm} is not the "
                        f"recomputed {ppm}")
    if report_row.evidence_root.hex() != root_hex:
        problems.append(f"the report's evidence root {report_row.evidence_root.hex()} is not "
                        f"the recomputed {root_hex}")
    return problems


def _settled_problems(
    settled: DeliverySettled | None, assignment: AssignmentWindow, ppm: int, root_hex: str
) -> list[str]:
    if settled is None:
        return ["no delivery_settled event for this assignment in the log"]
    problems = []
    if (settled.issue_id, settled.holder) != (assignment.issue_id, assignment.holder):
        problems.append(f"the delivery_settled event is for {settled.issue_id}/"
                        f"{settled.holder}")
    if settled.delivered_ppm != ppm:
        problems.append(f"delivery_settled's delivered_ppm {settled.delivered_ppm} is not the "
                        f"recomputed {ppm}")
    if settled.evidence != root_hex:
        problems.append(f"delivery_settled's evidence {settled.evidence!r} is not the "
                        f"recomputed root {root_hex}")
    return problems
