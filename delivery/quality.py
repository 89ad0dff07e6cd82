"""Every operator's measured delivery record, from the samples of its assignments.

`hour_record` sums one assignment's window (an "hour" record, though a window may span
several hours): delivered and unmeasured minutes, `delivered_ppm` (as in the report),
challenges passed and failed, each passed challenge's throughput ratio, and the incidents
(runs of consecutive not-delivered minutes with the same outcome; a minute with no sample
counts as `missing`). `operator_records` groups hour records by operator and node.

Throughput ratio of a passed challenge: its throughput `2 n^3 / answer_s` over the class
floor's `2 n_floor^3 / (answer_ms_max / 1000)`; above 1 means faster than the floor.
Failed challenges have no ratio (their time says nothing about the compute).

Delivered-share histogram: each hour record falls into one bucket by its delivered_ppm:
`"100"` (exactly 1,000,000), `"99-100"` (990,000..999,999), `"95-99"` (950,000..989,999),
`"90-95"` (900,000..949,999), `"75-90"` (750,000..899,999), `"0-75"` (0..749,999). Every
bucket is always present, in that order.

Percentiles (p10, p50, p90) of the throughput ratios of all passed challenges in the group
are nearest-rank: the p-th is the value at 1-based rank ceil(p/100 * N) of the N sorted
ratios (never interpolated, so always an observed ratio). With no passed challenge (hours
that had none, or only failed ones) `throughput_ratio_percentiles` is None.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from delivery.classes import ClassFloor, floor_throughput_flops, throughput_flops
from delivery.evidence import PPM, Sample, StoredSample, decode_sample

__all__ = [
    "HISTOGRAM_BUCKETS",
    "HourRecord",
    "Incident",
    "NodeRecord",
    "OperatorRecord",
    "ThroughputPercentiles",
    "delivered_share_bucket",
    "hour_record",
    "nearest_rank",
    "operator_records",
]

# (name, lowest delivered_ppm in the bucket), highest first.
HISTOGRAM_BUCKETS: Final = (
    ("100", PPM),
    ("99-100", 990_000),
    ("95-99", 950_000),
    ("90-95", 900_000),
    ("75-90", 750_000),
    ("0-75", 0),
)
RATIO_DIGITS: Final = 6
MISSING: Final = "missing"


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """A run of consecutive not-delivered minutes with the same outcome."""

    first_minute: int
    last_minute: int
    outcome: str


class HourRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One assignment's measured window."""

    issue_id: str
    holder: str
    operator: str
    node_id: str
    gpu: str
    region: str
    window_start_ns: int
    quantity: int
    window_minutes: int
    delivered_minutes: int
    unmeasured_minutes: int
    delivered_ppm: int
    challenges_passed: int
    challenges_failed: int
    throughput_ratios: list[float]
    incidents: list[Incident]


class ThroughputPercentiles(msgspec.Struct, frozen=True, kw_only=True):
    """Nearest-rank percentiles of the passed challenges' throughput ratios."""

    p10: float
    p50: float
    p90: float


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One node's figures over the hour records given.

    gpu_hours_assigned is the sum of quantities (GPU-hours); gpu_hours_delivered is
    ppm-weighted, the sum of quantity * delivered_ppm (divide by 1,000,000 for GPU-hours, so
    it stays an exact integer); delivered_share_ppm is their ratio. The percentiles are None
    when no challenge passed.
    """

    node_id: str
    gpu: str
    region: str
    hours: int
    gpu_hours_assigned: int
    gpu_hours_delivered: int
    delivered_share_ppm: int
    delivered_share_histogram: dict[str, int]
    challenges_passed: int
    challenges_failed: int
    throughput_ratio_percentiles: ThroughputPercentiles | None
    incidents_count: int
    last_window_start_ns: int


class OperatorRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One operator's figures over all its nodes, and each node's (sorted by node_id)."""

    operator: str
    nodes: list[NodeRecord]
    hours: int
    gpu_hours_assigned: int
    gpu_hours_delivered: int
    delivered_share_ppm: int
    delivered_share_histogram: dict[str, int]
    challenges_passed: int
    challenges_failed: int
    throughput_ratio_percentiles: ThroughputPercentiles | None
    incidents_count: int
    last_window_start_ns: int


def _incidents(outcomes: Sequence[str | None]) -> list[Incident]:
    """Runs of not-delivered minutes; `outcomes[m]` is minute m's outcome, None = delivered."""
    incidents: list[Incident] = []
    start = 0
    for minute in range(1, len(outcomes) + 1):
        if minute < len(outcomes) and outcomes[minute] == outcomes[start]:
            continue
        if outcomes[start] is not None:
            incidents.append(
                Incident(first_minute=start, last_minute=minute - 1, outcome=str(outcomes[start]))
            )
        start = minute
    return incidents


def hour_record(
    *,
    issue_id: str,
    holder: str,
    operator: str,
    node_id: str,
    gpu: str,
    region: str,
    window_start_ns: int,
    quantity: int,
    window_minutes: int,
    samples: Iterable[Sample | StoredSample],
    floor: ClassFloor,
) -> HourRecord:
    """Sum one assignment's samples (one per minute; a later duplicate of a minute and a
    minute outside the window are ignored) against its class floor."""
    by_minute: dict[int, Sample] = {}
    for item in samples:
        sample = item if isinstance(item, Sample) else decode_sample(item.body)
        if 0 <= sample.minute < window_minutes:
            by_minute.setdefault(sample.minute, sample)
    floor_flops = floor_throughput_flops(floor)
    outcomes: list[str | None] = []
    passed = failed = delivered = unmeasured = 0
    ratios: list[float] = []
    for minute in range(window_minutes):
        found = by_minute.get(minute)
        if found is None:
            outcomes.append(MISSING)
            continue
        outcomes.append(None if found.delivered else found.outcome)
        delivered += found.delivered
        unmeasured += found.outcome == "unmeasured"
        challenge = found.challenge
        if challenge is None:
            continue
        if challenge.passed:
            passed += 1
            ratio = throughput_flops(challenge.n, challenge.answer_ms) / floor_flops
            ratios.append(round(ratio, RATIO_DIGITS))
        else:
            failed += 1
    return HourRecord(
        issue_id=issue_id,
        holder=holder,
        operator=operator,
        node_id=node_id,
        gpu=gpu,
        region=region,
        window_start_ns=window_start_ns,
        quantity=quantity,
        window_minutes=window_minutes,
        delivered_minutes=delivered,
        unmeasured_minutes=unmeasured,
        delivered_ppm=delivered * PPM // window_minutes,
        challenges_passed=passed,
        challenges_failed=failed,
        throughput_ratios=ratios,
        incidents=_incidents(outcomes),
    )


def delivered_share_bucket(delivered_ppm: int) -> str:
    """The histogram bucket of a delivered_ppm."""
    for name, lowest in HISTOGRAM_BUCKETS:
        if delivered_ppm >= lowest:
            return name
    return HISTOGRAM_BUCKETS[-1][0]


def nearest_rank(ordered: Sequence[float], percent: int) -> float | None:
    """The nearest-rank `percent`-th percentile of sorted values; None when there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent * len(ordered) / 100))
    return ordered[rank - 1]


class _Totals:
    """Running sums over hour records (shared by the node and operator figures)."""

    def __init__(self) -> None:
        self.hours = 0
        self.assigned = 0
        self.delivered = 0
        self.histogram = {name: 0 for name, _ in HISTOGRAM_BUCKETS}
        self.passed = 0
        self.failed = 0
        self.ratios: list[float] = []
        self.incidents = 0
        self.last_window_start_ns = 0

    def add(self, hour: HourRecord) -> None:
        self.hours += 1
        self.assigned += hour.quantity
        self.delivered += hour.quantity * hour.delivered_ppm
        self.histogram[delivered_share_bucket(hour.delivered_ppm)] += 1
        self.passed += hour.challenges_passed
        self.failed += hour.challenges_failed
        self.ratios.extend(hour.throughput_ratios)
        self.incidents += len(hour.incidents)
        self.last_window_start_ns = max(self.last_window_start_ns, hour.window_start_ns)

    def share_ppm(self) -> int:
        return self.delivered // self.assigned if self.assigned else 0

    def percentiles(self) -> ThroughputPercentiles | None:
        ordered = sorted(self.ratios)
        if not ordered:
            return None
        return ThroughputPercentiles(
            p10=_rank(ordered, 10), p50=_rank(ordered, 50), p90=_rank(ordered, 90)
        )

    def figures(self) -> dict[str, Any]:
        """The fields a NodeRecord and an OperatorRecord share, by name."""
        return {
            "hours": self.hours,
            "gpu_hours_assigned": self.assigned,
            "gpu_hours_delivered": self.delivered,
            "delivered_share_ppm": self.share_ppm(),
            "delivered_share_histogram": dict(self.histogram),
            "challenges_passed": self.passed,
            "challenges_failed": self.failed,
            "throughput_ratio_percentiles": self.percentiles(),
            "incidents_count": self.incidents,
            "last_window_start_ns": self.last_window_start_ns,
        }


def _rank(ordered: Sequence[float], percent: int) -> float:
    value = nearest_rank(ordered, percent)
    if value is None:
        raise ValueError("no values to rank")
    return value


def operator_records(hours: Iterable[HourRecord]) -> list[OperatorRecord]:
    """Each operator's record, sorted by operator; its nodes sorted by node_id. A node's gpu
    and region are those of its latest window."""
    operators: dict[str, _Totals] = {}
    nodes: dict[str, dict[str, tuple[_Totals, HourRecord]]] = {}
    for hour in hours:
        operators.setdefault(hour.operator, _Totals()).add(hour)
        per_node = nodes.setdefault(hour.operator, {})
        totals, latest = per_node.get(hour.node_id, (_Totals(), hour))
        totals.add(hour)
        if hour.window_start_ns >= latest.window_start_ns:
            latest = hour
        per_node[hour.node_id] = (totals, latest)
    records: list[OperatorRecord] = []
    for operator in sorted(operators):
        node_records = [
            NodeRecord(node_id=node_id, gpu=latest.gpu, region=latest.region,
                       **node_totals.figures())
            for node_id, (node_totals, latest) in sorted(nodes[operator].items())
        ]
        records.append(OperatorRecord(operator=operator, nodes=node_records,
                                      **operators[operator].figures()))
    return records
