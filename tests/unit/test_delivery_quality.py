"""Quality records (delivery.quality): one assignment's measured window, and every
operator's record of them: histogram buckets, nearest-rank percentiles, incidents, sums."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.classes import ClassFloor
from delivery.evidence import (
    ChallengeRecord,
    Outcome,
    Sample,
    SampleChain,
    Signer,
    check_chain,
    delivered_ppm,
)
from delivery.quality import (
    HISTOGRAM_BUCKETS,
    HourRecord,
    Incident,
    OperatorRecord,
    ThroughputPercentiles,
    delivered_share_bucket,
    hour_record,
    nearest_rank,
    operator_records,
)

FLOOR = ClassFloor(gpu="H100-SXM-80GB", challenge_n=256, answer_ms_max=2000, gpu_memory_mib_min=0)


def challenge(answer_ms: int, passed: bool = True, n: int = 256) -> ChallengeRecord:
    return ChallengeRecord(
        n=n, seed="ab" * 32, root="cd" * 32, rows_checked=4, answer_ms=answer_ms,
        passed=passed, reason=None if passed else "wrong_rows",
    )


def sample(minute: int, outcome: Outcome, record: ChallengeRecord | None = None) -> Sample:
    return Sample(
        issue_id="iss", holder="bob", node_id="n1", minute=minute, window_minutes=60,
        probed_ns=minute, outcome=outcome, gpu_count=1, gpu_memory_mib=1, challenge=record,
        prev_hash="00" * 32, signer_id="ed25519:0",
    )


def record(samples: list[Sample], window_minutes: int = 10, **fields: object) -> HourRecord:
    base: dict[str, object] = {
        "issue_id": "iss", "holder": "bob", "operator": "op", "node_id": "n1",
        "gpu": "H100-SXM-80GB", "region": "eu", "window_start_ns": 0, "quantity": 1,
    }
    base.update(fields)
    return hour_record(
        window_minutes=window_minutes, samples=samples, floor=FLOOR, **base  # type: ignore[arg-type]
    )


def test_an_hour_counts_minutes_challenges_and_incidents() -> None:
    outcomes: list[Outcome] = [
        "delivered", "delivered", "unreachable", "unreachable", "below_floor",
        "unmeasured", "delivered", "challenge_failed", "delivered",
    ]  # minute 9 missing
    samples = [sample(minute, outcome) for minute, outcome in enumerate(outcomes)]
    samples[0] = sample(0, "delivered", challenge(1000))
    samples[7] = sample(7, "challenge_failed", challenge(50, passed=False))
    hour = record(samples)
    assert hour.delivered_minutes == 5
    assert hour.unmeasured_minutes == 1
    assert hour.delivered_ppm == 500_000
    assert (hour.challenges_passed, hour.challenges_failed) == (1, 1)
    assert hour.throughput_ratios == [2.0]
    assert hour.incidents == [
        Incident(first_minute=2, last_minute=3, outcome="unreachable"),
        Incident(first_minute=4, last_minute=4, outcome="below_floor"),
        Incident(first_minute=7, last_minute=7, outcome="challenge_failed"),
        Incident(first_minute=9, last_minute=9, outcome="missing"),
    ]


def test_an_hour_reads_stored_samples_too() -> None:
    chain = SampleChain(Signer.generate(), issue_id="iss", holder="bob", node_id="n1",
                        window_minutes=3, last=None)
    stored = [chain.append(probed_ns=1, outcome="delivered") for _ in range(2)]
    stored.append(chain.append(probed_ns=1, outcome="unreachable"))
    hour = record(stored, window_minutes=3)  # type: ignore[arg-type]
    assert hour.delivered_ppm == 666_666
    assert hour.incidents == [Incident(first_minute=2, last_minute=2, outcome="unreachable")]


def test_duplicates_and_minutes_outside_the_window_are_ignored() -> None:
    samples = [sample(0, "delivered"), sample(0, "unreachable"), sample(5, "delivered")]
    hour = record(samples, window_minutes=2)
    assert hour.delivered_minutes == 1 and hour.delivered_ppm == 500_000
    assert hour.incidents == [Incident(first_minute=1, last_minute=1, outcome="missing")]


def test_the_throughput_ratio_compares_flops_with_the_floor() -> None:
    bigger = challenge(1000, n=512)  # 8x the work in half the floor's time: 16x
    hour = record([sample(0, "delivered", bigger), sample(1, "delivered", challenge(0))])
    assert hour.throughput_ratios[0] == 16.0
    assert hour.throughput_ratios[1] == 2000.0  # an answer under 1 ms counts as 1 ms


def test_the_hour_record_survives_json_as_the_reports_column_keeps_it() -> None:
    hour = record([sample(0, "delivered", challenge(700)), sample(1, "unreachable")])
    assert msgspec.json.decode(msgspec.json.encode(hour), type=HourRecord) == hour


@pytest.mark.parametrize(
    ("ppm", "bucket"),
    [
        (1_000_000, "100"), (999_999, "99-100"), (990_000, "99-100"), (989_999, "95-99"),
        (950_000, "95-99"), (949_999, "90-95"), (900_000, "90-95"), (899_999, "75-90"),
        (750_000, "75-90"), (749_999, "0-75"), (0, "0-75"),
    ],
)
def test_histogram_bucket_edges(ppm: int, bucket: str) -> None:
    assert delivered_share_bucket(ppm) == bucket


def test_nearest_rank_percentiles() -> None:
    values = [float(number) for number in range(1, 11)]
    assert nearest_rank(values, 10) == 1.0
    assert nearest_rank(values, 50) == 5.0
    assert nearest_rank(values, 90) == 9.0
    assert nearest_rank([3.5], 10) == nearest_rank([3.5], 90) == 3.5
    assert nearest_rank([], 50) is None
    assert nearest_rank([1.0, 2.0], 50) == 1.0 and nearest_rank([1.0, 2.0], 90) == 2.0


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50),
    percent=st.integers(min_value=1, max_value=100),
)
def test_nearest_rank_is_an_observed_value_with_enough_below(
    values: list[float], percent: int
) -> None:
    ordered = sorted(values)
    value = nearest_rank(ordered, percent)
    assert value in ordered
    assert value is not None
    at_or_below = sum(1 for item in ordered if item <= value)
    assert at_or_below >= math.ceil(percent * len(ordered) / 100)


def test_operator_records_sum_nodes_and_operators() -> None:
    full = [sample(minute, "delivered") for minute in range(10)]
    half = [sample(minute, "delivered" if minute < 5 else "unreachable") for minute in range(10)]
    ratios = [sample(0, "delivered", challenge(ms)) for ms in (500, 1000, 2000, 4000)]
    hours = [
        record(full, issue_id="a", quantity=2, window_start_ns=100),
        record(half, issue_id="b", quantity=3, window_start_ns=300, node_id="n2", gpu="L40S"),
        record(ratios[:1] + full[1:], issue_id="c", quantity=1, window_start_ns=200),
        record(ratios[1:2] + full[1:], issue_id="d", operator="alpha", window_start_ns=50),
        record(ratios[2:3] + full[1:], issue_id="e", operator="alpha", window_start_ns=60),
        record(ratios[3:4] + full[1:], issue_id="f", operator="alpha", window_start_ns=70),
    ]
    alpha, op = operator_records(hours)
    assert [alpha.operator, op.operator] == ["alpha", "op"]
    assert op.hours == 3 and op.gpu_hours_assigned == 6
    assert op.gpu_hours_delivered == 2 * 1_000_000 + 3 * 500_000 + 1 * 1_000_000
    assert op.delivered_share_ppm == op.gpu_hours_delivered // 6
    assert op.delivered_share_histogram == {
        "100": 2, "99-100": 0, "95-99": 0, "90-95": 0, "75-90": 0, "0-75": 1
    }
    assert list(op.delivered_share_histogram) == [name for name, _ in HISTOGRAM_BUCKETS]
    assert op.incidents_count == 1
    assert op.last_window_start_ns == 300
    assert op.throughput_ratio_percentiles == ThroughputPercentiles(p10=4.0, p50=4.0, p90=4.0)
    assert [node.node_id for node in op.nodes] == ["n1", "n2"]
    n1, n2 = op.nodes
    assert (n1.hours, n1.gpu_hours_assigned, n1.last_window_start_ns) == (2, 3, 200)
    assert n2.gpu == "L40S" and n2.throughput_ratio_percentiles is None
    assert n2.delivered_share_ppm == 500_000 and n2.incidents_count == 1
    assert alpha.throughput_ratio_percentiles == ThroughputPercentiles(p10=0.5, p50=1.0, p90=2.0)
    assert (alpha.challenges_passed, alpha.challenges_failed) == (3, 0)


def test_a_node_shows_its_latest_class_and_region() -> None:
    hours = [
        record([], issue_id="a", window_start_ns=200, gpu="new", region="us"),
        record([], issue_id="b", window_start_ns=100, gpu="old", region="eu"),
    ]
    (op,) = operator_records(hours)
    assert (op.nodes[0].gpu, op.nodes[0].region) == ("new", "us")


def test_no_hours_no_records_and_no_challenges_no_percentiles() -> None:
    assert operator_records([]) == []
    (op,) = operator_records([record([sample(0, "delivered")], window_minutes=1)])
    assert op.throughput_ratio_percentiles is None
    failed_only = record([sample(0, "challenge_failed", challenge(10, passed=False))])
    (op,) = operator_records([failed_only])
    assert op.throughput_ratio_percentiles is None and op.challenges_failed == 1


def test_records_encode_as_plain_json() -> None:
    (op,) = operator_records([record([sample(0, "delivered", challenge(700))])])
    assert msgspec.json.decode(msgspec.json.encode(op), type=OperatorRecord) == op


OUTCOME_LIST: list[Outcome] = [
    "delivered", "unreachable", "below_floor", "challenge_failed", "unmeasured"
]


@settings(max_examples=60, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(OUTCOME_LIST), min_size=1, max_size=90),
    kept=st.data(),
)
def test_the_hour_record_agrees_with_the_report_and_the_chain(
    outcomes: list[Outcome], kept: st.DataObject
) -> None:
    signer = Signer.generate()
    chain = SampleChain(signer, issue_id="iss", holder="bob", node_id="n1",
                        window_minutes=len(outcomes), last=None)
    stored = [chain.append(probed_ns=minute, outcome=outcome)
              for minute, outcome in enumerate(outcomes)]
    assert check_chain(stored, {signer.signer_id: signer.public_key_raw}, len(outcomes)) == []
    subset = kept.draw(st.lists(st.sampled_from(stored), unique_by=lambda item: item.minute))
    hour = record(subset, window_minutes=len(outcomes))  # type: ignore[arg-type]
    assert hour.delivered_ppm == delivered_ppm(subset, len(outcomes))
    not_delivered = sum(
        incident.last_minute - incident.first_minute + 1 for incident in hour.incidents
    )
    assert hour.delivered_minutes + not_delivered == len(outcomes)
    for left, right in zip(hour.incidents, hour.incidents[1:], strict=False):
        assert left.last_minute < right.first_minute
        assert left.last_minute + 1 < right.first_minute or left.outcome != right.outcome
