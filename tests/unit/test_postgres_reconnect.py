"""The shared reconnect helpers of `runtime.postgres`: which failures mean a lost connection, the
bounded backoff, and replacing a dropped connection (with hand-written stub connections)."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from runtime.postgres import close_quietly, is_connection_failure, reconnect
from runtime.retry import Backoff, RetryPolicy

FAST = RetryPolicy(attempts_max=4, backoff_min_s=0.001, backoff_max_s=0.004)


@pytest.mark.parametrize("error", [
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
    ConnectionResetError("Connection reset by peer"),
    ConnectionRefusedError("Connect call failed"),
    ConnectionError("unexpected connection_lost() call"),
    TimeoutError(),
], ids=lambda error: type(error).__name__)
def test_every_sign_of_a_lost_connection_is_a_connection_failure(error: Exception) -> None:
    assert is_connection_failure(error)


@pytest.mark.parametrize("error", [
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.InvalidPasswordError("password authentication failed"),
    asyncpg.UndefinedTableError('relation "ledger.trades" does not exist'),
    ValueError("a bug"),
], ids=lambda error: type(error).__name__)
def test_a_refusal_or_a_bug_is_not_a_connection_failure(error: Exception) -> None:
    assert not is_connection_failure(error)


async def test_backoff_doubles_up_to_its_cap_and_raises_after_the_last_attempt() -> None:
    stopped = asyncio.Event()
    stopped.set()  # every wait ends at once: only the counting is under test
    backoff = Backoff(FAST, "test")
    error = ConnectionRefusedError("down")
    delays_s = []
    for _ in range(FAST.attempts_max - 1):
        assert not await backoff.wait_after(error, stopped)
        delays_s.append(backoff.delay_s())
    assert delays_s == [0.001, 0.002, 0.004]
    with pytest.raises(ConnectionRefusedError):
        await backoff.wait_after(error, stopped)
    backoff.reset()
    assert backoff.failures == 0 and backoff.delay_s() == 0.001


class StubConnection:
    """Stand in for an asyncpg connection that records how it was closed."""

    def __init__(self, close_error: Exception | None = None) -> None:
        self.close_error = close_error
        self.closed = False
        self.terminated = False

    async def close(self) -> None:
        if self.close_error is not None:
            raise self.close_error
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True


class StubOpener:
    """Fail with each of `failures` in turn, then hand out a new stub connection."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> StubConnection:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return StubConnection()


async def test_close_quietly_drops_a_connection_that_cannot_close() -> None:
    broken = StubConnection(close_error=asyncpg.InternalClientError("cannot switch to state"))
    await close_quietly(broken)
    assert broken.terminated


async def test_reconnect_closes_the_broken_connection_and_retries_until_the_server_is_back(
) -> None:
    broken = StubConnection()
    opener = StubOpener([ConnectionRefusedError("down"),
                         asyncpg.CannotConnectNowError("the database system is starting up")])
    connection = await reconnect(broken, ConnectionResetError("lost"), opener, asyncio.Event(),
                                 what="test", policy=FAST)
    assert isinstance(connection, StubConnection) and connection is not broken
    assert broken.closed and opener.calls == 3


async def test_reconnect_raises_a_refusal_at_once() -> None:
    opener = StubOpener([asyncpg.InvalidPasswordError("password authentication failed")])
    with pytest.raises(asyncpg.InvalidPasswordError):
        await reconnect(StubConnection(), ConnectionResetError("lost"), opener, asyncio.Event(),
                        what="test", policy=FAST)
    assert opener.calls == 1


async def test_reconnect_gives_up_after_the_policy_s_attempts() -> None:
    opener = StubOpener([ConnectionRefusedError(f"down {n}") for n in range(10)])
    with pytest.raises(ConnectionRefusedError, match="down 3"):
        await reconnect(StubConnection(), ConnectionResetError("lost"), opener, asyncio.Event(),
                        what="test", policy=FAST)
    assert opener.calls == FAST.attempts_max


async def test_reconnect_returns_nothing_once_stopped() -> None:
    stopped = asyncio.Event()
    stopped.set()
    opener = StubOpener([])
    assert await reconnect(StubConnection(), ConnectionResetError("lost"), opener, stopped,
                           what="test", policy=FAST) is None
    assert opener.calls == 0
