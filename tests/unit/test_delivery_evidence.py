"""Signed, hash-chained samples (delivery.evidence): the chain the service writes checks
sound, any single tampering with a stored sample is named, the ppm and the evidence root are
what the report carries, and the signing key file is created once, private."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.challenge import ChallengeResult
from delivery.errors import DeliveryError
from delivery.evidence import (
    ZERO_HASH,
    ChallengeRecord,
    Outcome,
    Sample,
    SampleChain,
    Signer,
    StoredSample,
    challenge_record,
    check_chain,
    decode_sample,
    delivered_ppm,
    encode_sample,
    evidence_root,
    sample_hash,
    signer_id_of,
    verify_signature,
)
from delivery.merkle import merkle_root

SIGNER = Signer.from_private_bytes(bytes(range(32)))
KEYS = {SIGNER.signer_id: SIGNER.public_key_raw}
OUTCOMES: list[Outcome] = [
    "delivered", "unreachable", "below_floor", "challenge_failed", "unmeasured"
]
RECORD = ChallengeRecord(
    n=256, seed="ab" * 32, root="cd" * 32, rows_checked=4, answer_ms=12, passed=True, reason=None
)


def new_chain(window_minutes: int = 6, last: StoredSample | None = None) -> SampleChain:
    return SampleChain(
        SIGNER, issue_id="iss-1", holder="bob", node_id="node-a",
        window_minutes=window_minutes, last=last,
    )


def build(outcomes: list[Outcome]) -> list[StoredSample]:
    chain = new_chain(len(outcomes))
    return [
        chain.append(
            probed_ns=1_000 + minute,
            outcome=outcome,
            gpu_count=None if outcome == "unreachable" else 2,
            gpu_memory_mib=None if outcome == "unreachable" else 81920,
            challenge=RECORD if minute == 0 else None,
        )
        for minute, outcome in enumerate(outcomes)
    ]


# --- the chain the service writes -------------------------------------------------------------


def test_a_chain_built_minute_by_minute_is_sound_and_linked() -> None:
    stored = build(["delivered", "unreachable", "delivered", "unmeasured"])
    assert check_chain(stored, KEYS, 4) == []
    assert stored[0].prev_hash == ZERO_HASH
    for previous, current in zip(stored, stored[1:], strict=False):
        assert current.prev_hash == previous.sample_hash
    for minute, item in enumerate(stored):
        sample = decode_sample(item.body)
        assert item.minute == sample.minute == minute
        assert item.sample_hash == sample_hash(item.body)
        assert sample.prev_hash == item.prev_hash.hex()
        assert item.signer_id == sample.signer_id == SIGNER.signer_id
        assert verify_signature(SIGNER.public_key_raw, item.sample_hash, item.signature)
    assert decode_sample(stored[0].body).challenge == RECORD


def test_a_chain_resumes_from_the_last_stored_sample() -> None:
    whole = build(["delivered"] * 5)
    chain = new_chain(5, last=whole[1])
    assert chain.next_minute == 2
    resumed = [chain.append(probed_ns=1_000 + minute, outcome="delivered",
                            gpu_count=2, gpu_memory_mib=81920) for minute in (2, 3, 4)]
    assert check_chain([*whole[:2], *resumed], KEYS, 5) == []
    assert chain.complete
    with pytest.raises(DeliveryError, match="all 5 minutes"):
        chain.append(probed_ns=1, outcome="delivered")


def test_minutes_missed_while_down_are_filled_as_unmeasured() -> None:
    chain = new_chain(6)
    first = chain.append(probed_ns=1, outcome="delivered", gpu_count=2, gpu_memory_mib=1)
    filled = chain.fill_unmeasured(4, probed_ns=99)
    assert [item.minute for item in filled] == [1, 2, 3]
    assert {decode_sample(item.body).outcome for item in filled} == {"unmeasured"}
    assert chain.fill_unmeasured(2, probed_ns=99) == []
    rest = chain.fill_unmeasured(100, probed_ns=99)
    assert [item.minute for item in rest] == [4, 5]
    assert check_chain([first, *filled, *rest], KEYS, 6) == []


def test_the_canonical_body_has_the_fields_in_declaration_order() -> None:
    (stored,) = build(["delivered"])
    keys = list(msgspec.json.decode(stored.body))
    assert keys == [
        "issue_id", "holder", "node_id", "minute", "window_minutes", "probed_ns", "outcome",
        "gpu_count", "gpu_memory_mib", "challenge", "prev_hash", "signer_id",
    ]
    sample = decode_sample(stored.body)
    assert encode_sample(sample) == stored.body
    assert stored.sample_hash == hashlib.sha256(b"gpux.sample" + stored.body).digest()


@settings(max_examples=60, deadline=None)
@given(
    outcome=st.sampled_from(OUTCOMES),
    minute=st.integers(min_value=0, max_value=10_000),
    probed_ns=st.integers(min_value=0, max_value=2**63 - 1),
    gpu_count=st.none() | st.integers(min_value=0, max_value=64),
    memory=st.none() | st.integers(min_value=0, max_value=1 << 20),
    passed=st.none() | st.booleans(),
    text=st.text(min_size=1, max_size=20),
)
def test_samples_round_trip_and_their_hash_is_stable(
    outcome: Outcome, minute: int, probed_ns: int, gpu_count: int | None, memory: int | None,
    passed: bool | None, text: str,
) -> None:
    record = None if passed is None else msgspec.structs.replace(
        RECORD, passed=passed, reason=None if passed else "wrong_rows")
    sample = Sample(
        issue_id=text, holder=text[::-1], node_id="n", minute=minute, window_minutes=60,
        probed_ns=probed_ns, outcome=outcome, gpu_count=gpu_count, gpu_memory_mib=memory,
        challenge=record, prev_hash="00" * 32, signer_id=SIGNER.signer_id,
    )
    body = encode_sample(sample)
    assert decode_sample(body) == sample
    assert encode_sample(decode_sample(body)) == body
    assert sample_hash(body) == sample_hash(encode_sample(sample))
    assert sample.delivered == (outcome in ("delivered", "unmeasured"))


def test_a_body_that_is_not_a_sample_is_refused() -> None:
    with pytest.raises(DeliveryError, match="not a sample"):
        decode_sample(b'{"issue_id": 1}')
    with pytest.raises(DeliveryError, match="exceeds"):
        decode_sample(b" " * 70_000)


# --- tampering --------------------------------------------------------------------------------


def replace(stored: list[StoredSample], index: int, **changes: object) -> list[StoredSample]:
    changed = list(stored)
    changed[index] = msgspec.structs.replace(stored[index], **changes)
    return changed


def resign(stored: StoredSample, **body_changes: object) -> StoredSample:
    """The same row with its body changed and its hash and signature redone by the signer."""
    sample = msgspec.structs.replace(decode_sample(stored.body), **body_changes)
    body = encode_sample(sample)
    digest = sample_hash(body)
    return msgspec.structs.replace(
        stored, body=body, sample_hash=digest, signature=SIGNER.sign(digest)
    )


def test_each_kind_of_problem_is_named() -> None:
    stored = build(["delivered", "delivered", "unreachable", "delivered"])
    other = Signer.generate()
    cases: dict[str, list[StoredSample]] = {
        "missing": stored[:2] + stored[3:],
        "stored twice": [*stored, stored[2]],
        "outside the window": [*stored, msgspec.structs.replace(stored[3], minute=9)],
        "does not match the body": replace(
            stored, 1, body=stored[1].body.replace(b'"delivered"', b'"unmeasured"')),
        "bad signature": replace(stored, 2, signature=other.sign(stored[2].sample_hash)),
        "unknown signer": replace(stored, 2, signer_id=other.signer_id),
        "does not link": replace(stored, 2, prev_hash=stored[0].sample_hash),
        "names assignment": [*stored[:3], resign(stored[3], issue_id="iss-2")],
        "says minute": [*stored[:3], resign(stored[3], minute=2)],
        "window_minutes": [*stored[:3], resign(stored[3], window_minutes=5)],
        "not a sample": replace(stored, 3, body=b"{}", sample_hash=sample_hash(b"{}")),
    }
    for expected, chain in cases.items():
        problems = check_chain(chain, KEYS, 4)
        assert problems, expected
        assert any(expected in problem for problem in problems), (expected, problems)


def test_the_expected_assignment_is_checked_when_given() -> None:
    stored = build(["delivered", "delivered"])
    assert check_chain(stored, KEYS, 2, issue_id="iss-1", holder="bob") == []
    problems = check_chain(stored, KEYS, 2, issue_id="iss-1", holder="carol")
    assert len(problems) == 2 and all("names assignment" in problem for problem in problems)


def test_an_incomplete_chain_is_sound_when_not_required_complete() -> None:
    stored = build(["delivered"] * 5)[:3]
    assert check_chain(stored, KEYS, 5, complete=False) == []
    assert len(check_chain(stored, KEYS, 5)) == 2


FIELDS = ["minute", "body", "sample_hash", "prev_hash", "signer_id", "signature"]


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=4),
    field=st.sampled_from(FIELDS),
    position=st.integers(min_value=0, max_value=10_000),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_single_tampering_with_a_stored_sample_is_detected(
    index: int, field: str, position: int, bit: int
) -> None:
    stored = build(["delivered", "unreachable", "below_floor", "challenge_failed", "delivered"])
    original = stored[index]
    value = getattr(original, field)
    tampered: object
    if field == "minute":
        tampered = value + 1 + position % 7
    elif field == "signer_id":
        tampered = value + "x"
    else:
        data = bytearray(value)
        data[position % len(data)] ^= 1 << bit
        tampered = bytes(data)
    changed = replace(stored, index, **{field: tampered})
    assert check_chain(changed, KEYS, 5) != []


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_resigned_change_is_still_caught_by_the_next_link(data: st.DataObject) -> None:
    # Even the signer cannot rewrite a past minute without rewriting every later one.
    stored = build(["delivered", "unreachable", "delivered", "delivered"])
    index = data.draw(st.integers(min_value=0, max_value=2))
    outcome = data.draw(st.sampled_from(["delivered", "unmeasured", "below_floor"]))
    probed_ns = data.draw(st.integers(min_value=0, max_value=999))
    changed = list(stored)
    changed[index] = resign(stored[index], outcome=outcome, probed_ns=probed_ns)
    assert any("does not link" in problem for problem in check_chain(changed, KEYS, 4))


def test_reordering_two_minutes_is_detected() -> None:
    stored = build(["delivered", "unreachable", "delivered"])
    swapped = [
        msgspec.structs.replace(stored[1], minute=2),
        msgspec.structs.replace(stored[2], minute=1),
        stored[0],
    ]
    assert check_chain(swapped, KEYS, 3) != []


def test_the_problem_list_is_bounded() -> None:
    assert len(check_chain([], KEYS, 1000)) == 100


# --- ppm and the evidence root ----------------------------------------------------------------


def test_delivered_ppm_counts_delivered_and_unmeasured_minutes_once() -> None:
    stored = build(["delivered", "unmeasured", "unreachable", "below_floor", "challenge_failed"])
    assert delivered_ppm(stored, 5) == 2 * 1_000_000 // 5
    samples = [decode_sample(item.body) for item in stored]
    assert delivered_ppm(samples, 5) == 400_000
    assert delivered_ppm([*samples, samples[0]], 5) == 400_000
    assert delivered_ppm(samples, 60) == 2 * 1_000_000 // 60
    assert delivered_ppm([], 60) == 0
    assert delivered_ppm(build(["delivered"] * 3), 3) == 1_000_000
    with pytest.raises(DeliveryError):
        delivered_ppm([], 0)


def test_the_evidence_root_is_the_merkle_root_of_sample_hashes_in_minute_order() -> None:
    stored = build(["delivered", "unreachable", "delivered"])
    expected = merkle_root([item.sample_hash for item in stored])
    assert evidence_root(stored) == expected
    assert evidence_root(list(reversed(stored))) == expected
    assert evidence_root(stored[:2]) != expected


def test_a_challenge_result_becomes_its_record() -> None:
    result = ChallengeResult(
        n=256, seed_hex="ab" * 32, root_hex="cd" * 32, rows_checked=4, answer_ms=12,
        passed=False, reason="too_slow",
    )
    assert challenge_record(result) == msgspec.structs.replace(
        RECORD, passed=False, reason="too_slow")


# --- the signer -------------------------------------------------------------------------------


def test_the_signer_id_names_the_public_key() -> None:
    assert SIGNER.signer_id == "ed25519:" + hashlib.sha256(SIGNER.public_key_raw).hexdigest()[:16]
    assert signer_id_of(SIGNER.public_key_raw) == SIGNER.signer_id
    assert len(SIGNER.public_key_raw) == 32
    assert Signer.from_private_bytes(SIGNER.private_bytes()).signer_id == SIGNER.signer_id
    assert Signer.generate().signer_id != SIGNER.signer_id


def test_signatures_verify_only_for_their_key_and_hash() -> None:
    digest = sample_hash(b"body")
    signature = SIGNER.sign(digest)
    assert len(signature) == 64
    assert verify_signature(SIGNER.public_key_raw, digest, signature)
    assert not verify_signature(SIGNER.public_key_raw, sample_hash(b"other"), signature)
    assert not verify_signature(Signer.generate().public_key_raw, digest, signature)
    assert not verify_signature(SIGNER.public_key_raw, digest, signature[:63])
    assert not verify_signature(SIGNER.public_key_raw[:31], digest, signature)


def test_a_seed_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(DeliveryError, match="32 bytes"):
        Signer.from_private_bytes(b"short")


def test_the_key_file_is_created_once_private_then_loaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "prober.key"
    created = Signer.load_or_create(path)
    assert path.read_bytes() == created.private_bytes() and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Signer.load_or_create(path)
    assert loaded.signer_id == created.signer_id


def test_a_corrupt_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "prober.key"
    path.write_bytes(b"not a key")
    with pytest.raises(DeliveryError):
        Signer.load_or_create(path)
    assert path.read_bytes() == b"not a key"
