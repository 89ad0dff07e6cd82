"""The prober's signed, hash-chained samples: one per minute of an assignment's window.

A sample says what the prober saw in one minute (`outcome`), is encoded canonically
(`encode_sample`: msgspec JSON, fields in declaration order), hashed with a domain tag
(`sample_hash`), and signed with the prober's Ed25519 key (`Signer`). Each sample names
the previous minute's hash (`prev_hash`; 32 zero bytes for minute 0), so a stored chain
cannot lose, gain, reorder or alter a minute without `check_chain` saying so. The report's
evidence is the Merkle root (delivery.merkle) of the sample hashes in minute order, and its
`delivered_ppm` is the share of delivered minutes.

Outcomes: `unreachable` (no SSH session or no pong), `below_floor` (pong with fewer GPUs
than the assignment's quantity or less memory than the class floor), `challenge_failed`
(a challenge minute whose verdict failed), `delivered`, and `unmeasured` (the prober itself
could not probe that minute, e.g. it was down; it counts as delivered: the venue's outage is
not charged to the operator's bond).

`SampleChain` is the one place that builds the next sample of a chain; the service and the
prober use it. Everything here is pure except `Signer.load_or_create`, which reads or
writes the key file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from delivery.errors import DeliveryError
from delivery.keyfiles import create_private_file
from delivery.merkle import merkle_root

if TYPE_CHECKING:
    from delivery.challenge import ChallengeResult

__all__ = [
    "DELIVERED_OUTCOMES",
    "PPM",
    "ZERO_HASH",
    "ChallengeRecord",
    "Outcome",
    "Sample",
    "SampleChain",
    "Signer",
    "StoredSample",
    "challenge_record",
    "check_chain",
    "decode_sample",
    "delivered_ppm",
    "encode_sample",
    "evidence_root",
    "sample_hash",
    "signer_id_of",
    "verify_signature",
]

PPM: Final = 1_000_000
ZERO_HASH: Final = bytes(32)
SAMPLE_TAG: Final = b"gpux.sample"
SEED_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SAMPLE_BYTES_MAX: Final = 64 * 1024
PROBLEMS_MAX: Final = 100  # check_chain stops listing after this many

Outcome = Literal["delivered", "unreachable", "below_floor", "challenge_failed", "unmeasured"]
DELIVERED_OUTCOMES: Final[frozenset[str]] = frozenset({"delivered", "unmeasured"})


class ChallengeRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A challenge's verdict as the sample keeps it (seed and root as hex)."""

    n: int
    seed: str
    root: str
    rows_checked: int
    answer_ms: int
    passed: bool
    reason: str | None


def challenge_record(result: ChallengeResult) -> ChallengeRecord:
    """The sample's record of a checker's verdict."""
    return ChallengeRecord(
        n=result.n,
        seed=result.seed_hex,
        root=result.root_hex,
        rows_checked=result.rows_checked,
        answer_ms=result.answer_ms,
        passed=result.passed,
        reason=result.reason,
    )


class Sample(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the prober saw in one minute of one assignment's window."""

    issue_id: str
    holder: str
    node_id: str
    minute: int
    window_minutes: int
    probed_ns: int
    outcome: Outcome
    gpu_count: int | None
    gpu_memory_mib: int | None
    challenge: ChallengeRecord | None
    prev_hash: str  # hex; "00" * 32 for minute 0
    signer_id: str

    @property
    def delivered(self) -> bool:
        """Whether this minute counts as delivered (`delivered` or `unmeasured`)."""
        return self.outcome in DELIVERED_OUTCOMES


class StoredSample(msgspec.Struct, frozen=True, kw_only=True):
    """A sample as the `delivery.samples` table keeps it."""

    minute: int
    body: bytes
    sample_hash: bytes
    prev_hash: bytes
    signer_id: str
    signature: bytes


_SAMPLE_DECODER: Final = msgspec.json.Decoder(Sample)


def encode_sample(sample: Sample) -> bytes:
    """The canonical encoding of `sample` (the bytes that are hashed and stored)."""
    return msgspec.json.encode(sample)


def decode_sample(body: bytes) -> Sample:
    """The sample a stored body encodes; a `DeliveryError` when it is not one."""
    if len(body) > SAMPLE_BYTES_MAX:
        raise DeliveryError(f"sample body of {len(body)} bytes exceeds {SAMPLE_BYTES_MAX}")
    try:
        return _SAMPLE_DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DeliveryError(f"sample body is not a sample: {exc}") from exc


def sample_hash(body: bytes) -> bytes:
    """The hash a sample is chained and signed by: sha256(b"gpux.sample" + body)."""
    return hashlib.sha256(SAMPLE_TAG + body).digest()


def signer_id_of(public_key_raw: bytes) -> str:
    """`"ed25519:"` and the first 16 hex digits of sha256 of the raw public key."""
    return "ed25519:" + hashlib.sha256(public_key_raw).hexdigest()[:16]


class Signer:
    """The prober's Ed25519 sample-signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key_raw: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.signer_id: str = signer_id_of(self.public_key_raw)

    @classmethod
    def generate(cls) -> Signer:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Signer:
        """The key of a raw 32-byte Ed25519 seed."""
        if len(seed) != SEED_BYTES:
            raise DeliveryError(f"an Ed25519 seed has {SEED_BYTES} bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """The key in `path` (a raw 32-byte seed); create it (mode 0600) when absent."""
        try:
            return cls.from_private_bytes(path.read_bytes())
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DeliveryError(f"cannot read the signing key {path}: {exc}") from exc
        signer = cls.generate()
        try:
            create_private_file(path, signer.private_bytes())
        except FileExistsError:  # another process created it first: use theirs
            return cls.from_private_bytes(path.read_bytes())
        except OSError as exc:
            raise DeliveryError(f"cannot create the signing key {path}: {exc}") from exc
        return signer

    def private_bytes(self) -> bytes:
        """The raw 32-byte seed (for the key file only)."""
        return self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, hash_bytes: bytes) -> bytes:
        """The 64-byte Ed25519 signature of a sample hash."""
        return self._private_key.sign(hash_bytes)


def verify_signature(public_key_raw: bytes, hash_bytes: bytes, signature: bytes) -> bool:
    """Whether `signature` is the key's signature of `hash_bytes`."""
    if len(public_key_raw) != 32 or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, hash_bytes)
    except InvalidSignature:
        return False
    return True


def _as_sample(item: Sample | StoredSample) -> Sample:
    return item if isinstance(item, Sample) else decode_sample(item.body)


def delivered_ppm(samples: Iterable[Sample | StoredSample], window_minutes: int) -> int:
    """delivered minutes * 1,000,000 // window_minutes; each minute of the window counts once,
    a minute without a sample counts as not delivered."""
    if window_minutes < 1:
        raise DeliveryError(f"window_minutes={window_minutes} must be >= 1")
    delivered = {
        sample.minute
        for sample in map(_as_sample, samples)
        if sample.delivered and 0 <= sample.minute < window_minutes
    }
    return len(delivered) * PPM // window_minutes


def evidence_root(samples: Iterable[StoredSample]) -> bytes:
    """The Merkle root of the sample hashes in minute order (the report's evidence)."""
    ordered = sorted(samples, key=lambda stored: stored.minute)
    return merkle_root([stored.sample_hash for stored in ordered])


def _stored_problems(
    stored: StoredSample,
    sample: Sample,
    signer_keys: Mapping[str, bytes],
    window_minutes: int,
    assignment: tuple[str, str, str],
) -> list[str]:
    """The problems of one stored sample on its own (not its link to the previous one)."""
    minute = stored.minute
    problems: list[str] = []
    if sample_hash(stored.body) != stored.sample_hash:
        problems.append(f"minute {minute}: sample_hash does not match the body")
    if sample.minute != minute:
        problems.append(f"minute {minute}: the body says minute {sample.minute}")
    if sample.window_minutes != window_minutes:
        problems.append(
            f"minute {minute}: the body says window_minutes {sample.window_minutes}, "
            f"not {window_minutes}"
        )
    if (sample.issue_id, sample.holder, sample.node_id) != assignment:
        problems.append(
            f"minute {minute}: the body names assignment {sample.issue_id}/{sample.holder} "
            f"on node {sample.node_id}, not {assignment[0]}/{assignment[1]} on {assignment[2]}"
        )
    if sample.prev_hash != stored.prev_hash.hex():
        problems.append(f"minute {minute}: the body's prev_hash differs from the stored one")
    if sample.signer_id != stored.signer_id:
        problems.append(f"minute {minute}: the body's signer differs from the stored one")
    key = signer_keys.get(stored.signer_id)
    if key is None:
        problems.append(f"minute {minute}: unknown signer {stored.signer_id}")
    elif not verify_signature(key, stored.sample_hash, stored.signature):
        problems.append(f"minute {minute}: bad signature")
    return problems


def check_chain(
    stored: Sequence[StoredSample],
    signer_keys: Mapping[str, bytes],
    window_minutes: int,
    *,
    issue_id: str | None = None,
    holder: str | None = None,
    complete: bool = True,
) -> list[str]:
    """The problems of an assignment's stored samples; [] when the chain is sound.

    Problems: a missing (when `complete`), duplicate or out-of-window minute, a broken
    prev_hash link, a hash that does not match its body, a body that does not decode or
    disagrees with its row, an unknown signer or a bad signature, a body naming another
    assignment (`issue_id`/`holder` when given, else the first sample's; the node must be
    the same throughout). At most PROBLEMS_MAX problems are listed.
    """
    problems: list[str] = []
    ordered = sorted(stored, key=lambda item: item.minute)
    by_minute: dict[int, StoredSample] = {}
    for item in ordered:
        if item.minute in by_minute:
            problems.append(f"minute {item.minute}: stored twice")
        elif not 0 <= item.minute < window_minutes:
            problems.append(f"minute {item.minute}: outside the window of {window_minutes}")
        else:
            by_minute[item.minute] = item
    if complete:
        missing = [minute for minute in range(window_minutes) if minute not in by_minute]
        problems.extend(f"minute {minute}: missing" for minute in missing)
    assignment: tuple[str, str, str] | None = None
    for minute in sorted(by_minute):
        item = by_minute[minute]
        try:
            sample = decode_sample(item.body)
        except DeliveryError as exc:
            problems.append(f"minute {minute}: {exc}")
            continue
        if assignment is None:
            assignment = (
                issue_id if issue_id is not None else sample.issue_id,
                holder if holder is not None else sample.holder,
                sample.node_id,
            )
        problems.extend(_stored_problems(item, sample, signer_keys, window_minutes, assignment))
        previous = by_minute.get(minute - 1)
        expected_prev = ZERO_HASH if minute == 0 else previous.sample_hash if previous else None
        if expected_prev is not None and item.prev_hash != expected_prev:
            problems.append(f"minute {minute}: prev_hash does not link to minute {minute - 1}")
        if len(problems) >= PROBLEMS_MAX:
            break
    return problems[:PROBLEMS_MAX]


class SampleChain:
    """Build an assignment's next sample: the right minute and prev_hash, signed.

    Start it from the last stored sample (None for a new chain). `append` returns the
    `StoredSample` to insert and moves the chain on; if the insert fails, build a new
    SampleChain from what the table holds rather than reusing this one.
    """

    def __init__(
        self,
        signer: Signer,
        *,
        issue_id: str,
        holder: str,
        node_id: str,
        window_minutes: int,
        last: StoredSample | None,
    ) -> None:
        if window_minutes < 1:
            raise DeliveryError(f"window_minutes={window_minutes} must be >= 1")
        self.signer = signer
        self.issue_id = issue_id
        self.holder = holder
        self.node_id = node_id
        self.window_minutes = window_minutes
        self.next_minute = 0 if last is None else last.minute + 1
        self._prev_hash = ZERO_HASH if last is None else last.sample_hash

    @property
    def complete(self) -> bool:
        """Whether every minute of the window has its sample."""
        return self.next_minute >= self.window_minutes

    def append(
        self,
        *,
        probed_ns: int,
        outcome: Outcome,
        gpu_count: int | None = None,
        gpu_memory_mib: int | None = None,
        challenge: ChallengeRecord | None = None,
    ) -> StoredSample:
        """Sign the sample of the next minute and return it as a row to insert."""
        if self.complete:
            raise DeliveryError(
                f"{self.issue_id}/{self.holder}: all {self.window_minutes} minutes are sampled"
            )
        sample = Sample(
            issue_id=self.issue_id,
            holder=self.holder,
            node_id=self.node_id,
            minute=self.next_minute,
            window_minutes=self.window_minutes,
            probed_ns=probed_ns,
            outcome=outcome,
            gpu_count=gpu_count,
            gpu_memory_mib=gpu_memory_mib,
            challenge=challenge,
            prev_hash=self._prev_hash.hex(),
            signer_id=self.signer.signer_id,
        )
        body = encode_sample(sample)
        digest = sample_hash(body)
        stored = StoredSample(
            minute=sample.minute,
            body=body,
            sample_hash=digest,
            prev_hash=self._prev_hash,
            signer_id=self.signer.signer_id,
            signature=self.signer.sign(digest),
        )
        self.next_minute += 1
        self._prev_hash = digest
        return stored

    def fill_unmeasured(self, up_to_minute: int, probed_ns: int) -> list[StoredSample]:
        """`unmeasured` samples for every minute before `up_to_minute` not yet sampled (the
        minutes the prober missed while down), capped at the window."""
        end = min(up_to_minute, self.window_minutes)
        return [
            self.append(probed_ns=probed_ns, outcome="unmeasured")
            for _ in range(max(0, end - self.next_minute))
        ]
