"""The minute probe without SSH: its schedule, the GPUs an assignment needs, and every
outcome of `probe_minute` against hand-written clients that speak to an in-process
responder (honest, wrong rows, slow, silent, garbled) or fail to connect."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from delivery.challenge import Inventory, Responder, select_backend
from delivery.classes import ClassFloor
from delivery.prober import (
    LineChannel,
    MinuteOutcome,
    NodeAddress,
    gpus_required,
    plan_minutes,
    probe_minute,
)
from delivery.transport import ProbeError
from tests.delivery_probe_faults import FaultyResponder

T = TypeVar("T")
MS = 1_000_000
FLOOR = ClassFloor(gpu="H100-SXM-80GB", challenge_n=32, answer_ms_max=2_000,
                   gpu_memory_mib_min=80_000)
NODE = NodeAddress(host="node.example", port=2222, login="gpux", host_key="ssh-ed25519 AAAA")
INVENTORY = Inventory(gpu_count=8, gpu_memory_mib=81_559, device="test")
START_NS = 1_700_000_000 * 10**9
DEADLINE_NS = START_NS + 60_000 * MS


# ---- the schedule -------------------------------------------------------------------------


def test_plan_has_every_minute_once_with_minute_zero_challenged() -> None:
    plan = plan_minutes(START_NS, 60, 60_000, 3, random.Random(1))
    assert [planned.minute for planned in plan] == list(range(60))
    assert plan[0].challenge
    assert sum(planned.challenge for planned in plan) == 4


def test_plan_draws_challenges_per_hour_of_window() -> None:
    plan = plan_minutes(START_NS, 180, 1_000, 5, random.Random(2))
    assert sum(planned.challenge for planned in plan) == 1 + 15
    assert plan_minutes(START_NS, 60, 1_000, 0, random.Random(2))[0].challenge
    assert sum(p.challenge for p in plan_minutes(START_NS, 60, 1_000, 0, random.Random(2))) == 1


def test_plan_caps_challenges_at_every_minute() -> None:
    plan = plan_minutes(START_NS, 60, 250, 500, random.Random(3))
    assert all(planned.challenge for planned in plan)


def test_plan_puts_each_probe_in_the_first_half_of_its_minute() -> None:
    minute_ms = 250
    plan = plan_minutes(START_NS, 120, minute_ms, 4, random.Random(4))
    for planned in plan:
        minute_start_ns = START_NS + planned.minute * minute_ms * MS
        assert minute_start_ns <= planned.due_ns < minute_start_ns + minute_ms * MS // 2
    offsets = {planned.due_ns - START_NS - planned.minute * minute_ms * MS for planned in plan}
    assert len(offsets) > 60  # random, not one fixed instant a node could wait for


def test_plan_depends_on_the_pick_alone() -> None:
    first = plan_minutes(START_NS, 60, 60_000, 3, random.Random(5))
    again = plan_minutes(START_NS, 60, 60_000, 3, random.Random(5))
    other = plan_minutes(START_NS, 60, 60_000, 3, random.Random(6))
    assert first == again
    assert first != other


def test_plan_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError):
        plan_minutes(START_NS, 0, 60_000, 3, random.Random(7))


def test_gpus_required_spreads_the_gpu_hours_over_the_window() -> None:
    assert gpus_required(8, 1) == 8
    assert gpus_required(8, 2) == 4
    assert gpus_required(9, 2) == 5
    assert gpus_required(1, 4) == 1
    with pytest.raises(ValueError):
        gpus_required(0, 1)


# ---- stubs --------------------------------------------------------------------------------


class FakeClock:
    """A clock the test (and a stub node) moves by hand."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


class ResponderChannel:
    """The NDJSON exchange with an in-process responder. `answer_ms` moves the fake clock
    when a challenge is answered; `silent_after` lines are answered, then none."""

    def __init__(self, answer: Callable[[bytes], bytes], clock: FakeClock,
                 answer_ms: int = 5, silent_after: int | None = None) -> None:
        self.answer = answer
        self.clock = clock
        self.answer_ms = answer_ms
        self.silent_after = silent_after
        self.sent: list[bytes] = []
        self.replies: list[bytes] = []

    async def send_line(self, line: bytes) -> None:
        self.sent.append(line)
        if self.silent_after is not None and len(self.sent) > self.silent_after:
            return
        if b'"challenge"' in line:
            self.clock.now_ns += self.answer_ms * MS
        self.replies.append(self.answer(line))

    async def receive_line(self) -> bytes:
        if not self.replies:
            await asyncio.Event().wait()  # a node that never answers: the deadline ends it
        return self.replies.pop(0)


class StubClient:
    """A `ProbeClient` that runs the exchange on one given channel."""

    def __init__(self, channel: LineChannel) -> None:
        self.channel = channel
        self.probed: list[tuple[str, int, str, str]] = []

    async def probe(self, host: str, port: int, login: str, host_key_line: str,
                    exchange: Callable[[LineChannel], Awaitable[T]]) -> T:
        self.probed.append((host, port, login, host_key_line))
        return await exchange(self.channel)


class DownClient:
    """A node that cannot be reached: the transport's error."""

    async def probe(self, host: str, port: int, login: str, host_key_line: str,
                    exchange: Callable[[LineChannel], Awaitable[T]]) -> T:
        raise ProbeError(f"cannot log in to {host}:{port}")


class BreakingChannel(ResponderChannel):
    """A session that breaks off (the transport's error) after `silent_after` lines."""

    async def receive_line(self) -> bytes:
        if not self.replies:
            raise ProbeError("the node ended the session")
        return self.replies.pop(0)


def honest(inventory: Inventory = INVENTORY) -> Callable[[bytes], bytes]:
    return Responder(select_backend("numpy"), inventory).handle_line


async def probe(client: StubClient | DownClient, clock: FakeClock, challenge: bool = True,
                required: int = 8, deadline_ns: int | None = None) -> MinuteOutcome:
    return await probe_minute(client, NODE, FLOOR, required, challenge, random.Random(9),
                              deadline_ns if deadline_ns is not None else DEADLINE_NS, clock)


# ---- probe_minute -------------------------------------------------------------------------


async def test_a_healthy_node_delivers_and_passes_its_challenge() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock, answer_ms=123)
    client = StubClient(channel)
    found = await probe(client, clock)
    assert found.outcome == "delivered"
    assert (found.gpu_count, found.gpu_memory_mib) == (8, 81_559)
    assert found.challenge is not None
    assert found.challenge.passed and found.challenge.reason is None
    assert found.challenge.answer_ms == 123
    assert (found.challenge.n, found.challenge.rows_checked) == (32, 4)
    assert len(found.challenge.seed) == 64 and len(found.challenge.root) == 64
    assert client.probed == [("node.example", 2222, "gpux", "ssh-ed25519 AAAA")]
    assert [line.split(b'"type":"')[1].split(b'"')[0] for line in channel.sent] == [
        b"ping", b"challenge", b"open"]


async def test_each_challenge_has_a_fresh_seed() -> None:
    clock = FakeClock(START_NS)
    seeds = set()
    for _ in range(3):
        found = await probe(StubClient(ResponderChannel(honest(), clock)), clock)
        assert found.challenge is not None
        seeds.add(found.challenge.seed)
    assert len(seeds) == 3


async def test_a_minute_without_challenge_only_pings() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock)
    found = await probe(StubClient(channel), clock, challenge=False)
    assert found == MinuteOutcome(outcome="delivered", gpu_count=8, gpu_memory_mib=81_559,
                                  challenge=None)
    assert len(channel.sent) == 1


async def test_fewer_gpus_than_required_is_below_floor_without_a_challenge() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock)
    found = await probe(StubClient(channel), clock, required=9)
    assert found == MinuteOutcome(outcome="below_floor", gpu_count=8, gpu_memory_mib=81_559,
                                  challenge=None)
    assert len(channel.sent) == 1


async def test_less_memory_than_the_class_floor_is_below_floor() -> None:
    clock = FakeClock(START_NS)
    small = Inventory(gpu_count=8, gpu_memory_mib=40_000, device="test")
    found = await probe(StubClient(ResponderChannel(honest(small), clock)), clock)
    assert found.outcome == "below_floor"
    assert found.gpu_memory_mib == 40_000


async def test_an_unreachable_node_is_a_value() -> None:
    found = await probe(DownClient(), FakeClock(START_NS))
    assert found == MinuteOutcome(outcome="unreachable", gpu_count=None, gpu_memory_mib=None,
                                  challenge=None)


async def test_wrong_rows_fail_the_challenge() -> None:
    clock = FakeClock(START_NS)
    wrong = FaultyResponder("wrong_rows", INVENTORY).handle_line
    found = await probe(StubClient(ResponderChannel(wrong, clock)), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert (found.challenge.passed, found.challenge.reason) == (False, "wrong_rows")
    assert found.gpu_count == 8


async def test_an_answer_slower_than_the_class_allows_fails_too_slow() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock, answer_ms=FLOOR.answer_ms_max + 1)
    found = await probe(StubClient(channel), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert found.challenge.reason == "too_slow"
    assert found.challenge.answer_ms == FLOOR.answer_ms_max + 1


async def test_a_node_silent_after_the_challenge_fails_too_slow_by_the_deadline() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock, silent_after=1)
    found = await probe(StubClient(channel), clock, deadline_ns=START_NS + 50 * MS)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert (found.challenge.reason, found.challenge.rows_checked) == ("too_slow", 0)
    assert found.challenge.root == ""


async def test_a_node_silent_from_the_start_is_unreachable_by_the_deadline() -> None:
    clock = FakeClock(START_NS)
    channel = ResponderChannel(honest(), clock, silent_after=0)
    found = await probe(StubClient(channel), clock, deadline_ns=START_NS + 20 * MS)
    assert found.outcome == "unreachable"


async def test_a_deadline_already_passed_is_unreachable_at_once() -> None:
    clock = FakeClock(DEADLINE_NS + 1)
    found = await probe(StubClient(ResponderChannel(honest(), clock)), clock)
    assert found.outcome == "unreachable"


async def test_a_session_broken_after_the_challenge_fails_malformed() -> None:
    clock = FakeClock(START_NS)
    channel = BreakingChannel(honest(), clock, silent_after=1)
    found = await probe(StubClient(channel), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert found.challenge.reason == "malformed"


async def test_a_session_broken_after_the_commitment_fails_malformed_with_its_root() -> None:
    clock = FakeClock(START_NS)
    channel = BreakingChannel(honest(), clock, silent_after=2)
    found = await probe(StubClient(channel), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert found.challenge.reason == "malformed"
    assert len(found.challenge.root) == 64


async def test_garbage_for_a_pong_is_unreachable() -> None:
    clock = FakeClock(START_NS)
    found = await probe(StubClient(ResponderChannel(lambda line: b"not json\n", clock)), clock)
    assert found.outcome == "unreachable"


async def test_an_error_reply_to_the_challenge_fails_malformed() -> None:
    clock = FakeClock(START_NS)
    responder = honest()

    def refuse_challenges(line: bytes) -> bytes:
        if b'"challenge"' in line:
            return b'{"type":"error","reason":"no backend"}\n'
        return responder(line)

    found = await probe(StubClient(ResponderChannel(refuse_challenges, clock)), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert found.challenge.reason == "malformed"


async def test_garbled_rows_fail_malformed() -> None:
    clock = FakeClock(START_NS)
    responder = honest()

    def garble_rows(line: bytes) -> bytes:
        reply = responder(line)
        return b'{"type":"rows","rows":[]}\n' if b'"open"' in line else reply

    found = await probe(StubClient(ResponderChannel(garble_rows, clock)), clock)
    assert found.outcome == "challenge_failed"
    assert found.challenge is not None
    assert found.challenge.reason == "malformed"
