"""Name the ways the index fails, so callers branch on a type or a flag, not on text.

`retriable` says whether running the same step again may succeed (a lost connection); an
event the index cannot read is not: the log is the index's only input, so the service stops
rather than publish values computed without it.
"""

from __future__ import annotations

__all__ = ["ConnectionLostError", "EventError", "PriceIndexError", "SeqGapError"]


class PriceIndexError(Exception):
    """Fail an index operation; `retriable` says whether trying again may succeed."""

    retriable: bool = False


class EventError(PriceIndexError):
    """Refuse an event that cannot be decoded or contradicts the log before it."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message if seq is None else f"event seq {seq}: {message}")
        self.seq = seq


class SeqGapError(PriceIndexError):
    """Refuse events whose seqs do not follow on from the last one: the index is a function
    of the whole log from seq 1, never of a log with a hole in it."""

    def __init__(self, expected_seq: int, got_seq: int) -> None:
        what = "a gap" if got_seq > expected_seq else "a repeated or backwards seq"
        super().__init__(f"event log has {what}: expected seq {expected_seq}, got {got_seq}")
        self.expected_seq = expected_seq
        self.got_seq = got_seq


class ConnectionLostError(PriceIndexError):
    """The database connection closed while the service waited for events: start again."""

    retriable = True
