"""gateway.sequencer: events read before their commit come through once each, in seq order;
a copy written again after an engine restart is dropped only when it is the same event."""

from __future__ import annotations

import pytest

from eventlog.port import Record
from gateway.sequencer import DivergenceError, EventSequencer
from protocol import Deposited, encode


def event_bytes(seq: int, amount: str = "1") -> bytes:
    return encode(Deposited(seq=seq, ts=seq, account="alice", asset="USDC", amount=amount))


def records(*values: bytes, first_offset: int = 0) -> list[Record]:
    return [Record("events", 0, first_offset + index, None, value)
            for index, value in enumerate(values)]


def test_each_seq_comes_through_once_and_in_order() -> None:
    sequencer = EventSequencer(window=10)
    first = sequencer.fresh(records(event_bytes(1), event_bytes(2), event_bytes(3)))
    assert [event.seq for event in first] == [1, 2, 3]
    # an aborted transaction held 2 and 3; the restarted engine writes them again, then 4
    again = sequencer.fresh(records(event_bytes(2), event_bytes(3), event_bytes(4),
                                    first_offset=3))
    assert [event.seq for event in again] == [4]
    assert sequencer.duplicates == 2 and sequencer.last_seq == 4


def test_a_different_event_at_an_applied_seq_is_a_divergence() -> None:
    sequencer = EventSequencer(window=10)
    sequencer.fresh(records(event_bytes(1), event_bytes(2)))
    with pytest.raises(DivergenceError, match="seq 2 .*differs"):
        sequencer.fresh(records(event_bytes(2, amount="2"), first_offset=2))


def test_a_skipped_seq_is_a_divergence() -> None:
    sequencer = EventSequencer(window=10)
    sequencer.fresh(records(event_bytes(1)))
    with pytest.raises(DivergenceError, match="skips a seq"):
        sequencer.fresh(records(event_bytes(3), first_offset=1))


def test_a_copy_older_than_the_window_cannot_be_checked_and_is_refused() -> None:
    sequencer = EventSequencer(window=2)
    sequencer.fresh(records(*(event_bytes(seq) for seq in range(1, 6))))
    assert sequencer.fresh(records(event_bytes(4), event_bytes(5), first_offset=5)) == []
    with pytest.raises(DivergenceError, match="beyond the 2"):
        sequencer.fresh(records(event_bytes(3), first_offset=7))
