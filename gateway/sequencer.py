"""Each event once, in seq order, from a log read before its transactions commit.

The gateway reads the events topic read_uncommitted, so an order's acknowledgement does not
wait for the engine's commit. A crash of the engine aborts its open transaction after the
gateway may have read it; the engine then recovers from the committed offset and, being a
deterministic function of the command log, writes the same events with the same seqs again,
byte for byte (docs/exactly-once.md). The sequencer lets each seq through once and drops
the copies, checking that each copy is the very event already applied. A copy that differs,
or a seq that skips ahead, means the log and what the gateway told its clients disagree:
`DivergenceError`, and the gateway stops rather than go on with a second truth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from eventlog.port import Record
from protocol import AnyEvent, decode_event

__all__ = ["DivergenceError", "EventSequencer"]


class DivergenceError(Exception):
    """The events topic holds two different events at one seq, or skips a seq."""


class EventSequencer:
    """Let each seq through once, in order; `window` seqs back, a copy is checked."""

    def __init__(self, window: int, last_seq: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.last_seq = last_seq
        self.duplicates = 0
        self._hashes: deque[int] = deque(maxlen=window)  # of seqs last_seq - len + 1 ..

    def fresh(self, records: Sequence[Record]) -> list[AnyEvent]:
        """Decode `records`; return the events not applied yet, in order."""
        events: list[AnyEvent] = []
        hashes = self._hashes
        for record in records:
            event = decode_event(record.value)
            seq = event.seq
            if seq == self.last_seq + 1:
                self.last_seq = seq
                hashes.append(hash(record.value))
                events.append(event)
            elif seq <= self.last_seq:
                self._check_copy(seq, hash(record.value), record)
            else:
                raise DivergenceError(
                    f"event seq {seq} at offset {record.offset} after seq {self.last_seq}: "
                    "the events topic skips a seq")
        return events

    def _check_copy(self, seq: int, value_hash: int, record: Record) -> None:
        back = self.last_seq - seq
        hashes = self._hashes
        if back >= len(hashes):
            raise DivergenceError(
                f"event seq {seq} at offset {record.offset} came again {back} seqs back, "
                f"beyond the {hashes.maxlen} the gateway can check")
        if hashes[len(hashes) - 1 - back] != value_hash:
            raise DivergenceError(
                f"event seq {seq} at offset {record.offset} differs from the event the "
                "gateway applied at that seq")
        self.duplicates += 1
