"""The SDK's local book: snapshots, updates, gaps and checksum mismatches; its checksum is
the gateway's, computed independently from the documented format."""

from __future__ import annotations

import pytest

from sdk.book import BookGap, ChecksumMismatch, LocalBook, price_micro
from wsapi.checksum import book_checksum
from wsapi.messages import BookMessage


def message(kind: str, seq: int, prev_seq: int, bids: list[tuple[str, int]],
            asks: list[tuple[str, int]], book_after: LocalBook | None = None) -> BookMessage:
    if book_after is None:
        total = book_checksum(sorted(bids, key=lambda level: -price_micro(level[0]))[:10],
                              sorted(asks, key=lambda level: price_micro(level[0]))[:10])
    else:
        total = book_after.checksum()
    return BookMessage(instrument="X", kind=kind, seq=seq, prev_seq=prev_seq,  # type: ignore[arg-type]
                       ts=1, bids=bids, asks=asks, checksum=total)


def test_snapshot_then_updates_keep_the_book_and_verify_the_checksum() -> None:
    book = LocalBook("X")
    book.apply(message("snapshot", 4, 4, [("2.15", 10), ("2.1", 4)], [("2.2", 3)]))
    assert book.checksum() == book_checksum([("2.15", 10), ("2.1", 4)], [("2.2", 3)])
    expected = LocalBook("X")
    expected.apply(message("snapshot", 0, 0, [("2.15", 10)], [("2.2", 3), ("2.3", 1)]))
    book.apply(message("update", 6, 4, [("2.1", 0)], [("2.3", 1)], book_after=expected))
    assert book.levels() == ([("2.15", 10)], [("2.2", 3), ("2.3", 1)])
    assert book.best_bid() == ("2.15", 10) and book.best_ask() == ("2.2", 3)


def test_a_gap_or_a_wrong_checksum_resets_the_book() -> None:
    book = LocalBook("X")
    book.apply(message("snapshot", 4, 4, [("1", 1)], []))
    with pytest.raises(BookGap):
        book.apply(message("update", 9, 7, [("1", 2)], []))
    assert not book.synced
    book.apply(message("snapshot", 9, 9, [("1", 1)], []))
    wrong = BookMessage(instrument="X", kind="update", seq=10, prev_seq=9, ts=1,
                        bids=[("1", 5)], asks=[], checksum=123)
    with pytest.raises(ChecksumMismatch):
        book.apply(wrong)
    assert not book.synced


def test_only_the_top_ten_levels_are_checksummed() -> None:
    bids = [(f"{100 - n}", n + 1) for n in range(15)]
    book = LocalBook("X")
    book.apply(message("snapshot", 1, 1, bids, []))
    assert book.checksum() == book_checksum(bids[:10], [])
