"""runtime.retry.Supervisor, the one supervisor the engine and the ledger projector run
under: fresh attempts after retriable failures, bounded; refusals raised; an attempt that
got ready starts a new count; a stop during the wait ends it quietly."""

from __future__ import annotations

import asyncio

import pytest

from runtime.retry import RetryPolicy, Supervisor

FAST = RetryPolicy(attempts_max=3, backoff_min_s=0.001, backoff_max_s=0.002)


class Retriable(Exception):
    pass


class Attempt:
    """An attempt that fails with the next scripted error (None: run until stopped)."""

    def __init__(self, error: Exception | None, gets_ready: bool) -> None:
        self.error = error
        self.gets_ready = gets_ready
        self.ready = asyncio.Event()

    def healthy(self) -> bool:
        return self.ready.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        if self.gets_ready:
            self.ready.set()
        if self.error is not None:
            raise self.error
        await stop.wait()


def scripted(*steps: tuple[Exception | None, bool]
             ) -> tuple[list[Attempt], Supervisor[Attempt], list[int]]:
    """A supervisor over scripted attempts; the lists fill with the attempts started and,
    at each restart, how many had started."""
    started: list[Attempt] = []
    pending = list(steps)

    def start() -> Attempt:
        attempt = Attempt(*pending.pop(0))
        started.append(attempt)
        return attempt

    restarts: list[int] = []
    supervisor = Supervisor(start, what="test", policy=FAST,
                            is_retriable=lambda error: isinstance(error, Retriable),
                            on_restart=lambda: restarts.append(len(started)))
    return started, supervisor, restarts


async def test_retriable_failures_get_fresh_attempts_until_one_serves() -> None:
    started, supervisor, restarts = scripted(
        (Retriable("a"), False), (Retriable("b"), False), (None, True))
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    while not supervisor.healthy():
        await asyncio.sleep(0.001)
    assert len(started) == 3 and supervisor.current is started[2]
    assert restarts == [1, 2]
    stop.set()
    await task


async def test_a_refusal_is_raised_at_once_and_the_last_retriable_failure_too() -> None:
    started, supervisor, _ = scripted((Retriable("a"), False), (ValueError("refused"), False))
    with pytest.raises(ValueError, match="refused"):
        await supervisor.run(asyncio.Event())
    assert len(started) == 2

    started, supervisor, _ = scripted(*[(Retriable(str(n)), False) for n in range(3)])
    with pytest.raises(Retriable, match="2"):
        await supervisor.run(asyncio.Event())
    assert len(started) == FAST.attempts_max


async def test_an_attempt_that_got_ready_starts_a_new_count_of_attempts() -> None:
    steps = [(Retriable("a"), False), (Retriable("b"), True), (Retriable("c"), False),
             (Retriable("d"), False)]
    started, supervisor, _ = scripted(*steps)
    with pytest.raises(Retriable, match="d"):
        await supervisor.run(asyncio.Event())
    assert len(started) == 4  # without the reset, "c" would have been the last allowed


async def test_a_stop_while_waiting_to_retry_ends_quietly() -> None:
    slow = RetryPolicy(attempts_max=3, backoff_min_s=30.0, backoff_max_s=30.0)
    stop = asyncio.Event()
    supervisor = Supervisor(lambda: Attempt(Retriable("down"), False), what="test",
                            policy=slow, is_retriable=lambda error: True)
    task = asyncio.create_task(supervisor.run(stop))
    await asyncio.sleep(0.01)
    assert not supervisor.healthy() and supervisor.current is None
    stop.set()
    await asyncio.wait_for(task, 5)
