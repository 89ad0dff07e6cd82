"""The minute probe: when to probe an assignment's node, and one probe of one minute.

The delivery service measures `delivered_ppm` by logging in to the node once a minute of the
window with the prober's certificate (one SSH session; the node's forced command is the
challenge responder). A minute's probe pings the node (how many GPUs, how much memory it
shows) and, at minute 0 and at random minutes, sets a compute challenge: the prober picks
the seed, measures the answer time from sending the challenge to receiving the commitment,
picks the rows to open only after the commitment, and checks them with `Checker`.

`plan_minutes` and `gpus_required` are pure. `probe_minute` does the I/O through the
`ProberClient` it is given; every failure ends as an outcome value (`unreachable`,
`below_floor`, `challenge_failed`), never as an exception, and the probe never outlasts its
minute. The randomness comes from the `pick` the caller passes (`secrets.SystemRandom` in
the service) so that a node cannot predict the instant of a probe or the challenge minutes.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Final, Literal, Protocol, TypeVar

import msgspec

from delivery.challenge import (
    SEED_BYTES,
    AnyMessage,
    Checker,
    CommitmentMessage,
    PingMessage,
    PongMessage,
    Reason,
    decode_message,
    encode_message,
)
from delivery.classes import ClassFloor
from delivery.errors import ChallengeError
from delivery.evidence import ChallengeRecord, challenge_record
from delivery.transport import ProbeError

__all__ = [
    "MinuteOutcome",
    "NodeAddress",
    "Outcome",
    "PlannedMinute",
    "gpus_required",
    "plan_minutes",
    "probe_minute",
]

NS_PER_MS: Final = 1_000_000
MINUTES_PER_HOUR: Final = 60
ROWS_CHECKED: Final = 4

Outcome = Literal["delivered", "unreachable", "below_floor", "challenge_failed"]
T = TypeVar("T")


class PlannedMinute(msgspec.Struct, frozen=True, kw_only=True):
    """A minute of the window: when its probe is due (ns, wall clock) and whether it sets a
    challenge."""

    minute: int
    due_ns: int
    challenge: bool


class NodeAddress(msgspec.Struct, frozen=True, kw_only=True):
    """Where the prober logs in: the node's registered host, port, login user and host key."""

    host: str
    port: int
    login: str
    host_key: str  # the node's OpenSSH host public key line, as registered


class MinuteOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one minute's probe found; the service turns it into a signed `Sample`."""

    outcome: Outcome
    gpu_count: int | None
    gpu_memory_mib: int | None
    challenge: ChallengeRecord | None


class LineChannel(Protocol):
    """The NDJSON exchange over the prober's SSH session (`delivery.transport`)."""

    async def send_line(self, line: bytes) -> None: ...

    async def receive_line(self) -> bytes: ...


class ProbeClient(Protocol):
    """What `probe_minute` needs of `delivery.transport.ProberClient`."""

    async def probe(
        self,
        host: str,
        port: int,
        login: str,
        host_key_line: str,
        exchange: Callable[[LineChannel], Awaitable[T]],
    ) -> T: ...


def gpus_required(quantity: int, delivery_hours: int) -> int:
    """How many GPUs a node must show for an assignment of `quantity` GPU-hours.

    A window of `delivery_hours` hours delivers `quantity` GPU-hours with
    `ceil(quantity / delivery_hours)` GPUs all along (a 1-hour window: `quantity` GPUs).
    """
    if quantity < 1 or delivery_hours < 1:
        raise ValueError(f"quantity {quantity} and delivery_hours {delivery_hours} must be >= 1")
    return math.ceil(quantity / delivery_hours)


def plan_minutes(
    window_start_ns: int,
    window_minutes: int,
    minute_ms: int,
    challenges_per_hour: int,
    pick: random.Random,
) -> list[PlannedMinute]:
    """Plan every minute of a window: its due instant and whether it sets a challenge.

    Minute 0 always sets a challenge; so do `challenges_per_hour` distinct random minutes
    per 60 minutes of window (at most every minute). A probe is due at the minute's
    start plus a random offset in the first half of the minute.
    """
    if window_minutes < 1 or minute_ms < 1 or challenges_per_hour < 0:
        raise ValueError(
            f"window_minutes {window_minutes}, minute_ms {minute_ms} and challenges_per_hour "
            f"{challenges_per_hour} out of range")
    minute_ns = minute_ms * NS_PER_MS
    extra_count = min(challenges_per_hour * window_minutes // MINUTES_PER_HOUR,
                      window_minutes - 1)
    challenged = {0, *pick.sample(range(1, window_minutes), extra_count)}
    planned = [
        PlannedMinute(
            minute=minute,
            due_ns=window_start_ns + minute * minute_ns + pick.randrange(minute_ns // 2),
            challenge=minute in challenged,
        )
        for minute in range(window_minutes)
    ]
    if len(challenged) != extra_count + 1:
        raise AssertionError("challenge minutes must be distinct")
    return planned


class _Progress:
    """What a probe learned before it ended: the outcome when a failure cuts it short."""

    def __init__(self) -> None:
        self.pong: PongMessage | None = None
        self.checker: Checker | None = None
        self.challenge_sent_ns: int | None = None
        self.answer_ms: int | None = None  # set when the commitment arrived
        self.outcome: MinuteOutcome | None = None


async def probe_minute(
    client: ProbeClient,
    node: NodeAddress,
    floor: ClassFloor,
    gpus_required: int,
    challenge: bool,
    pick: random.Random,
    deadline_ns: int,
    clock: Callable[[], int],
) -> MinuteOutcome:
    """Probe a node once, in one SSH session, and say what the minute counts as.

    `clock` gives ns on the time base of `deadline_ns` (the service: `time.time_ns`). No
    session or no pong: `unreachable`; fewer GPUs than `gpus_required` or less memory per
    GPU than the class floor: `below_floor`; on a challenge minute, a failed verdict, a
    malformed or missing answer, or an answer cut by the deadline: `challenge_failed`;
    otherwise `delivered`. Cancellation-safe: the SSH session is the client's to close.
    """
    progress = _Progress()
    remaining_ns = deadline_ns - clock()
    if remaining_ns <= 0:
        return _unreachable()

    async def exchange(channel: LineChannel) -> MinuteOutcome:
        outcome = await _exchange(channel, progress, floor, gpus_required, challenge, pick, clock)
        progress.outcome = outcome
        return outcome

    try:
        async with asyncio.timeout(remaining_ns / 1e9):
            return await client.probe(node.host, node.port, node.login, node.host_key, exchange)
    except TimeoutError:
        return _cut_short(progress, clock, timed_out=True)
    except (ProbeError, ChallengeError, OSError):
        return _cut_short(progress, clock, timed_out=False)


async def _exchange(
    channel: LineChannel,
    progress: _Progress,
    floor: ClassFloor,
    gpus_required: int,
    challenge: bool,
    pick: random.Random,
    clock: Callable[[], int],
) -> MinuteOutcome:
    """Speak the NDJSON exchange: ping, then on a challenge minute the challenge."""
    await channel.send_line(encode_message(PingMessage()))
    pong = decode_message(await channel.receive_line())
    if not isinstance(pong, PongMessage):
        return _unreachable()
    progress.pong = pong
    if pong.gpu_count < gpus_required or pong.gpu_memory_mib < floor.gpu_memory_mib_min:
        return _measured(pong, "below_floor", None)
    if not challenge:
        return _measured(pong, "delivered", None)
    checker = Checker(secrets.token_bytes(SEED_BYTES), floor.challenge_n,
                      rows_checked=ROWS_CHECKED, pick=pick.randrange)
    progress.checker = checker
    line = encode_message(checker.challenge_message())
    progress.challenge_sent_ns = clock()  # the answer clock starts as the challenge leaves
    await channel.send_line(line)
    commitment = await _receive_or_none(channel)
    answer_ms = (clock() - progress.challenge_sent_ns) // NS_PER_MS
    progress.answer_ms = answer_ms
    if not isinstance(commitment, CommitmentMessage):
        return _failed(pong, checker, answer_ms, "malformed")
    await channel.send_line(encode_message(checker.open_message(commitment)))
    rows = await _receive_or_none(channel)
    if rows is None:
        return _failed(pong, checker, answer_ms, "malformed")
    # The check draws A and B (n^2 each): in a worker thread, so other probes go on.
    verdict = await asyncio.to_thread(checker.verdict, rows, answer_ms, floor)
    record = challenge_record(verdict)
    return _measured(pong, "delivered" if record.passed else "challenge_failed", record)


async def _receive_or_none(channel: LineChannel) -> AnyMessage | None:
    """The node's next message, or None when it is not one (a malformed line)."""
    try:
        return decode_message(await channel.receive_line())
    except ChallengeError:
        return None


def _cut_short(progress: _Progress, clock: Callable[[], int], timed_out: bool) -> MinuteOutcome:
    """The outcome of a probe a failure or the deadline ended, from what it had learned:
    no pong, or no challenge sent yet on a challenge minute, is `unreachable`; a challenge
    without a full answer fails, `too_slow` when the deadline came before the commitment,
    else `malformed`."""
    if progress.outcome is not None:
        return progress.outcome
    pong, checker, sent_ns = progress.pong, progress.checker, progress.challenge_sent_ns
    if pong is None or checker is None or sent_ns is None:
        return _unreachable()
    if progress.answer_ms is None:
        answer_ms = (clock() - sent_ns) // NS_PER_MS
        return _failed(pong, checker, answer_ms, "too_slow" if timed_out else "malformed")
    return _failed(pong, checker, progress.answer_ms, "malformed")


def _failed(pong: PongMessage, checker: Checker, answer_ms: int, reason: Reason
            ) -> MinuteOutcome:
    """A challenge the node did not answer in full."""
    return _measured(pong, "challenge_failed", challenge_record(checker.result(answer_ms, reason)))


def _measured(
    pong: PongMessage, outcome: Outcome, record: ChallengeRecord | None
) -> MinuteOutcome:
    return MinuteOutcome(
        outcome=outcome, gpu_count=pong.gpu_count, gpu_memory_mib=pong.gpu_memory_mib,
        challenge=record)


def _unreachable() -> MinuteOutcome:
    return MinuteOutcome(outcome="unreachable", gpu_count=None, gpu_memory_mib=None,
                         challenge=None)
