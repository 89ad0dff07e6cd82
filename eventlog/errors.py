"""Name the ways the event log fails, so callers can branch on a flag, not on text.

Every error the log raises is a `LogError`. Its `retriable` flag says whether the same call
may succeed if made again (a broker timeout, a coordinator moving); a caller that retries
must still bound its retries. Argument errors (a negative offset, an unknown isolation
level) are bugs and raise `ValueError` instead.
"""

from __future__ import annotations

from pathlib import Path

from runtime.errors import RetriableError

__all__ = [
    "CorruptRecordError",
    "FencedError",
    "LogClosedError",
    "LogError",
    "LogTimeoutError",
    "RecordError",
    "TopicError",
    "TornRecordError",
    "TransactionStateError",
]


class LogError(RetriableError):
    """Fail an event log operation; `retriable` says whether trying again may succeed."""


class LogTimeoutError(LogError):
    """Give up on an operation that did not finish within its time budget."""

    retriable = True


class LogClosedError(LogError):
    """Refuse an operation on a log, producer or consumer that was closed or never started."""


class FencedError(LogError):
    """Refuse a producer whose transactional id was taken over by a newer producer.

    The older producer can never write again: the process that owns it must stop, because
    another instance (the one that fenced it) now owns the transactional id.
    """


class TransactionStateError(LogError):
    """Refuse a transactional call made in the wrong state (commit without begin, ...)."""


class TopicError(LogError):
    """Refuse an unknown topic or partition, or a topic whose layout disagrees with its spec."""


class RecordError(LogError):
    """Report a stored record that cannot be read back as written."""

    def __init__(self, message: str, *, path: Path, position: int, offset: int | None) -> None:
        where = f"{path} at byte {position}"
        if offset is not None:
            where += f" (offset {offset})"
        super().__init__(f"{message}: {where}")
        self.reason = message
        self.path = path
        self.position = position
        self.offset = offset


class TornRecordError(RecordError):
    """Report an incomplete or checksum-failing frame at the very end of a log file.

    A crash during an append leaves such a tail; opening the log truncates it.
    """


class CorruptRecordError(RecordError):
    """Report a damaged frame followed by intact data: never repaired automatically."""
