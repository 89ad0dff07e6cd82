"""What the agent's tests share: a prober's certificate from a test CA, and one probe spoken
as the delivery service's prober speaks it (ping, challenge, open) and judged by its
`delivery.challenge.Checker`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from delivery import challenge
from delivery.ca import PROBER_PRINCIPAL, CertificateAuthority, generate_user_key
from delivery.classes import ClassFloor
from delivery.transport import LineSession, ProberClient

NS_PER_S = 1_000_000_000
HOUR_NS = 3_600 * NS_PER_S


@dataclass(frozen=True)
class Probe:
    """What one probe saw: the pong and the challenge's verdict."""

    pong: challenge.Message
    verdict: challenge.ChallengeResult


def prober_client(ca: CertificateAuthority, directory: Path, serial: int = 1) -> ProberClient:
    """A ProberClient whose key `ca` certified for the prober principal, valid this hour."""
    key_path = directory / "prober_key"
    public_line = generate_user_key(key_path)
    now_ns = time.time_ns()
    certificate = ca.issue(public_line, "prober", [PROBER_PRINCIPAL], now_ns - HOUR_NS,
                           now_ns + HOUR_NS, serial)
    return ProberClient(key_path, certificate)


async def probe_exchange(session: LineSession, floor: ClassFloor, seed_byte: int = 5) -> Probe:
    """Speak one probe over `session` and judge it; the answer is timed from the challenge
    sent to the commitment received, as the prober times it."""
    await session.send_line(challenge.encode_message(challenge.PingMessage()))
    pong = challenge.decode_message(await session.receive_line())
    pick = random.Random(seed_byte).randrange
    checker = challenge.Checker(bytes([seed_byte]) * 32, floor.challenge_n, pick=pick)
    sent_ns = time.monotonic_ns()
    await session.send_line(challenge.encode_message(checker.challenge_message()))
    commitment = challenge.decode_message(await session.receive_line())
    answer_ms = (time.monotonic_ns() - sent_ns) // 1_000_000
    if not isinstance(commitment, challenge.CommitmentMessage):
        return Probe(pong=pong, verdict=checker.result(answer_ms, "malformed"))
    await session.send_line(challenge.encode_message(checker.open_message(commitment)))
    rows = challenge.decode_message(await session.receive_line())
    return Probe(pong=pong, verdict=checker.verdict(rows, answer_ms, floor))
