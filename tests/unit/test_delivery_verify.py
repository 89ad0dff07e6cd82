"""`gpux delivery verify`'s logic (delivery.verify): a sound assignment agrees everywhere,
and each tampering (a byte of a body, a dropped minute, two minutes swapped, a wrong signer,
a settlement or report with another ppm or root) is named as a problem."""

from __future__ import annotations

import msgspec
import pytest

from delivery.errors import DeliveryError
from delivery.evidence import (
    ChallengeRecord,
    Outcome,
    SampleChain,
    Signer,
    StoredSample,
    evidence_root,
    sample_hash,
)
from delivery.verify import VerifyResult, verify_assignment
from protocol.events import DeliverySettled

MINUTE_NS = 60 * 10**9
START_NS = 1_800_000_000 * 10**9
SIGNER = Signer.from_private_bytes(bytes(range(32)))
OTHER_SIGNER = Signer.from_private_bytes(bytes(range(1, 33)))
KEYS = {SIGNER.signer_id: SIGNER.public_key_raw}
RECORD = ChallengeRecord(n=256, seed="ab" * 32, root="cd" * 32, rows_checked=4, answer_ms=12,
                         passed=True, reason=None)
# 60 minutes: 45 delivered (3 of them unmeasured), 15 not: 750,000 ppm
RUNS: list[tuple[Outcome, int]] = [
    ("delivered", 20), ("unreachable", 10), ("unmeasured", 3), ("below_floor", 2),
    ("delivered", 20), ("challenge_failed", 3), ("delivered", 2),
]  # fmt: skip
OUTCOMES: list[Outcome] = [outcome for outcome, count in RUNS for _ in range(count)]
PPM = 750_000


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    issue_id: str = "iss-1"
    holder: str = "bob"
    node_id: str = "node-a"
    window_start_ns: int = START_NS
    window_end_ns: int = START_NS + 60 * MINUTE_NS


class Report(msgspec.Struct, frozen=True, kw_only=True):
    delivered_ppm: int
    evidence_root: bytes


ASSIGNMENT = Assignment()


def samples(signer: Signer = SIGNER, node_id: str = "node-a") -> list[StoredSample]:
    chain = SampleChain(signer, issue_id="iss-1", holder="bob", node_id=node_id,
                        window_minutes=len(OUTCOMES), last=None)
    return [
        chain.append(probed_ns=START_NS + minute * MINUTE_NS + 1_000, outcome=outcome,
                     gpu_count=8, gpu_memory_mib=81_559,
                     challenge=RECORD if minute in (0, 17, 41) else None)
        for minute, outcome in enumerate(OUTCOMES)
    ]


def settled(ppm: int, evidence: str | None, holder: str = "bob") -> DeliverySettled:
    return DeliverySettled(seq=9, ts=START_NS + 61 * MINUTE_NS, instrument="H100-1",
                           issue_id="iss-1", issuer="op", holder=holder, quantity=8,
                           delivered_ppm=ppm, compensation="12.5", evidence=evidence)


def verify(stored: list[StoredSample], settled_event: DeliverySettled | None = None,
           report: Report | None = None, use_defaults: bool = True,
           assignment: Assignment = ASSIGNMENT) -> VerifyResult:
    """Verify `stored` against a report and settlement made from the sound chain (unless
    given, or `use_defaults` is False and they are None)."""
    sound_root = evidence_root(samples())
    if use_defaults:
        settled_event = settled_event or settled(PPM, sound_root.hex())
        report = report or Report(delivered_ppm=PPM, evidence_root=sound_root)
    return verify_assignment(assignment, stored, KEYS, settled_event, report)


def test_a_sound_assignment_agrees_everywhere() -> None:
    result = verify(samples())
    assert result.problems == []
    assert result.ok
    assert result.delivered_ppm == PPM
    assert result.evidence_root_hex == evidence_root(samples()).hex()
    assert len(result.checked) >= 4


def test_the_order_rows_arrive_in_does_not_matter() -> None:
    assert verify(list(reversed(samples()))).ok


def test_one_changed_byte_of_a_body_is_named() -> None:
    stored = samples()
    body = bytearray(stored[30].body)
    body[body.index(b"unmeasured")] = ord("U")
    stored[30] = msgspec.structs.replace(stored[30], body=bytes(body))
    result = verify(stored)
    assert not result.ok
    assert any("minute 30" in problem for problem in result.problems)


def test_a_body_rewritten_to_delivered_with_a_fresh_hash_breaks_the_chain_and_the_signature(
) -> None:
    stored = samples()
    body = stored[25].body.replace(b'"unreachable"', b'"delivered"')
    stored[25] = msgspec.structs.replace(stored[25], body=body, sample_hash=sample_hash(body))
    result = verify(stored)
    assert not result.ok
    assert any("minute 25" in problem and "signature" in problem for problem in result.problems)
    assert any("minute 26" in problem for problem in result.problems)  # its link broke
    assert result.delivered_ppm == PPM + 1_000_000 // 60  # what the forgery claims...
    assert any("report" in problem for problem in result.problems)  # ...disagrees


def test_a_dropped_minute_is_named() -> None:
    stored = samples()
    del stored[12]
    result = verify(stored)
    assert not result.ok
    assert any("minute 12" in problem and "missing" in problem for problem in result.problems)


def test_two_swapped_minutes_are_named() -> None:
    stored = samples()
    first, second = stored[3], stored[40]
    stored[3] = msgspec.structs.replace(second, minute=3)
    stored[40] = msgspec.structs.replace(first, minute=40)
    result = verify(stored)
    assert not result.ok
    assert any("minute 3" in problem for problem in result.problems)
    assert any("minute 40" in problem for problem in result.problems)


def test_a_duplicated_minute_is_named_and_counted_once() -> None:
    stored = samples()
    stored.append(stored[5])
    result = verify(stored)
    assert not result.ok
    assert any("minute 5" in problem for problem in result.problems)
    assert result.delivered_ppm == PPM


def test_a_wrong_signer_is_named() -> None:
    result = verify(samples(signer=OTHER_SIGNER))
    assert not result.ok
    assert any("unknown signer" in problem for problem in result.problems)


def test_a_signature_by_another_key_under_the_right_signer_id_is_named() -> None:
    stored = [msgspec.structs.replace(item, signature=OTHER_SIGNER.sign(item.sample_hash))
              if item.minute == 7 else item for item in samples()]
    result = verify(stored)
    assert not result.ok
    assert any("minute 7" in problem and "signature" in problem for problem in result.problems)


def test_samples_of_another_node_are_named() -> None:
    result = verify(samples(node_id="node-b"))
    assert not result.ok
    assert any("node-b" in problem for problem in result.problems)


def test_a_settlement_with_another_ppm_is_named() -> None:
    root_hex = evidence_root(samples()).hex()
    result = verify(samples(), settled_event=settled(1_000_000, root_hex))
    assert not result.ok
    assert [problem for problem in result.problems if "delivery_settled" in problem]
    assert result.delivered_ppm == PPM


def test_a_settlement_with_another_evidence_is_named() -> None:
    result = verify(samples(), settled_event=settled(PPM, "00" * 32))
    assert not result.ok
    assert any("evidence" in problem for problem in result.problems)


def test_a_settlement_without_evidence_is_named() -> None:
    result = verify(samples(), settled_event=settled(PPM, None))
    assert not result.ok


def test_a_settlement_of_another_holder_is_named() -> None:
    root_hex = evidence_root(samples()).hex()
    result = verify(samples(), settled_event=settled(PPM, root_hex, holder="carol"))
    assert not result.ok
    assert any("carol" in problem for problem in result.problems)


def test_a_report_with_another_ppm_or_root_is_named() -> None:
    root = evidence_root(samples())
    result = verify(samples(), report=Report(delivered_ppm=PPM + 1, evidence_root=root))
    assert not result.ok and len(result.problems) == 1
    result = verify(samples(), report=Report(delivered_ppm=PPM, evidence_root=bytes(32)))
    assert not result.ok and len(result.problems) == 1


def test_no_report_and_no_settlement_are_named() -> None:
    result = verify(samples(), use_defaults=False)
    assert not result.ok
    assert len(result.problems) == 2
    assert result.delivered_ppm == PPM


def test_no_samples_at_all_names_every_minute_missing() -> None:
    result = verify([])
    assert not result.ok
    assert result.delivered_ppm == 0


def test_a_window_not_of_whole_minutes_is_refused() -> None:
    with pytest.raises(DeliveryError):
        verify(samples(), assignment=Assignment(window_end_ns=START_NS + 90 * 10**9))
