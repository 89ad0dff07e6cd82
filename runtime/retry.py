"""Bounded retries: how many attempts an outage gets and how long to wait between them,
and the one supervisor every long-running service runs under.

`RetryPolicy` bounds one outage; `Backoff` counts its failed attempts and waits twice as
long each time. `Supervisor` runs a service attempt after attempt: when an attempt fails
with an error its `is_retriable` accepts, a fresh attempt starts after the backoff; an
attempt that got ready ends the outage, so its failure starts a new count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Attempt", "Backoff", "RetryPolicy", "Supervisor", "describe_error"]

log = logging.getLogger("gpux.retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bound the retries of one outage: how many attempts, and the waits between them."""

    attempts_max: int = 30
    backoff_min_s: float = 0.2
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts_max < 1:
            raise ValueError(f"attempts_max must be >= 1, got {self.attempts_max}")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")


class Backoff:
    """Count the failed attempts of one outage and wait between them, twice as long each
    time up to `backoff_max_s`; `reset()` when a new outage begins. Each failure is logged
    to `logger` (the caller's) as "`what`: error; attempt N of M in S s"."""

    def __init__(self, policy: RetryPolicy, what: str, logger: logging.Logger = log) -> None:
        self.policy = policy
        self.what = what
        self.logger = logger
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def delay_s(self) -> float:
        """Return the wait after the failures counted so far."""
        doublings = max(self.failures - 1, 0)
        return min(self.policy.backoff_min_s * 2.0**doublings, self.policy.backoff_max_s)

    async def wait_after(self, error: BaseException, stop: asyncio.Event) -> bool:
        """Count `error` as a failed attempt, log it and wait before the next attempt.

        Raise `error` when it was the last attempt the policy allows; return False when
        `stop` is set during the wait (the caller gives up quietly), else True.
        """
        self.failures += 1
        if self.failures >= self.policy.attempts_max:
            raise error
        delay_s = self.delay_s()
        self.logger.warning("%s: %s; attempt %d of %d in %.1f s", self.what, describe_error(error),
                            self.failures + 1, self.policy.attempts_max, delay_s)
        try:
            await asyncio.wait_for(stop.wait(), delay_s)
        except TimeoutError:
            return True
        return False


def describe_error(error: BaseException) -> str:
    """The error's type and, when it has one, its message."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Attempt(Protocol):
    """One run of a service: `ready` is set once it has recovered; `healthy()` while it
    serves."""

    @property
    def ready(self) -> asyncio.Event: ...

    def healthy(self) -> bool: ...

    async def run(self, stop: asyncio.Event) -> None: ...


AttemptT = TypeVar("AttemptT", bound=Attempt)


class Supervisor(Generic[AttemptT]):
    """Run `start()`'s attempts until `stop`; after a retriable failure start a fresh one.

    A fresh attempt is how a service recovers: it resumes from what the log or the database
    holds, exactly as after a crash. A failure `is_retriable` refuses is raised, and so is
    the last retriable one the policy allows. `on_restart` is called before each new
    attempt (a metric, say). `current` is the attempt running now, None between attempts.
    """

    def __init__(self, start: Callable[[], AttemptT], *, what: str, policy: RetryPolicy,
                 is_retriable: Callable[[BaseException], bool],
                 on_restart: Callable[[], None] = lambda: None,
                 logger: logging.Logger = log) -> None:
        self.start = start
        self.what = what
        self.policy = policy
        self.is_retriable = is_retriable
        self.on_restart = on_restart
        self.logger = logger
        self.current: AttemptT | None = None

    def healthy(self) -> bool:
        """Tell whether an attempt is serving now (not recovering, not between attempts)."""
        current = self.current
        return current is not None and current.healthy()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.policy, self.what, self.logger)
        while not stop.is_set():
            attempt = self.current = self.start()
            try:
                await attempt.run(stop)
                return
            except Exception as error:
                if not self.is_retriable(error):
                    raise
                if attempt.ready.is_set():
                    backoff.reset()
                self.current = None
                if not await backoff.wait_after(error, stop):
                    return
                self.on_restart()
