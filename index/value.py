"""One published value of the GPU-hour price index, as the calculator makes it and the
store keeps it (`docs/index-methodology.md` defines every field)."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["MINUTE_NS", "SOURCES", "IndexValue", "Source"]

MINUTE_NS: Final = 60 * 10**9
Source = Literal["trades", "mid", "last", "none"]
SOURCES: Final[tuple[Source, ...]] = ("trades", "mid", "last", "none")


class IndexValue(msgspec.Struct, frozen=True, kw_only=True):
    """The index of one GPU class in one region at the minute boundary `minute_ns`.

    `value_micro` is micro-USDC per GPU-hour (None when `source` is "none"); `trade_count`,
    `volume` (GPU-hours) and `instrument_count` describe the trades it came from (all 0
    unless `source` is "trades"); `sufficient` says whether they meet the methodology's
    minimums; `inputs_hash` (32 bytes) commits to the exact inputs; `last_seq` is the seq of
    the last event before `minute_ns`, the point of the log the value is a function of.
    """

    gpu: str
    region: str
    minute_ns: int
    value_micro: int | None
    source: Source
    trade_count: int
    volume: int
    instrument_count: int
    sufficient: bool
    inputs_hash: bytes
    last_seq: int
