"""Name the ways the ledger fails, so callers branch on a type or a flag, not on text.

Every error the ledger raises on purpose is a `LedgerError`. `retriable` says whether
running the same step again may succeed (a lost database connection, a lock still held by
an instance that is shutting down); a caller that retries must still bound its retries.
"""

from __future__ import annotations

__all__ = [
    "EventError",
    "LedgerError",
    "LedgerStateError",
    "LockTimeoutError",
    "ReconcileError",
    "SeqGapError",
    "SeqNotAtCommandBoundaryError",
]


class LedgerError(Exception):
    """Fail a ledger operation; `retriable` says whether trying again may succeed."""

    retriable: bool = False


class SeqGapError(LedgerError):
    """Refuse an event whose seq is not the one after the last applied: never skip one."""

    def __init__(self, expected_seq: int, got_seq: int, offset: int) -> None:
        what = "a gap" if got_seq > expected_seq else "a repeated or backwards seq"
        super().__init__(
            f"event log has {what}: expected seq {expected_seq}, "
            f"got seq {got_seq} at offset {offset}"
        )
        self.expected_seq = expected_seq
        self.got_seq = got_seq
        self.offset = offset


class EventError(LedgerError):
    """Refuse an event that cannot be decoded or carries an impossible amount."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (offset {offset})")
        self.offset = offset


class LockTimeoutError(LedgerError):
    """Give up waiting for another projector to release the ledger's writer lock."""

    retriable = True


class ConnectionLostError(LedgerError):
    """A database connection closed while the projector waited for events: start again."""

    retriable = True


class ReconcileError(LedgerError):
    """Fail to build the engine state a reconciliation compares the ledger with."""


class SeqNotAtCommandBoundaryError(ReconcileError):
    """Report that a seq falls inside one command's events, where no engine state exists.

    `seq_before` is the last seq at a command boundary below it; `seq_after` the first
    boundary above it.
    """

    def __init__(self, seq: int, seq_before: int, seq_after: int) -> None:
        super().__init__(
            f"seq {seq} falls inside one command's events (boundaries at {seq_before} "
            f"and {seq_after})"
        )
        self.seq = seq
        self.seq_before = seq_before
        self.seq_after = seq_after


class LedgerStateError(LedgerError):
    """Report a journal that disagrees with itself (an entry beyond the checkpoint, ...)."""
