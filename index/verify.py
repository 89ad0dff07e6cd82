"""Recompute the index from the events and compare it with the stored rows
(`gpux index verify`).

Anyone holding the public event log (a JSON Lines file of its events, or the Kafka topic)
recomputes every value with the same calculator the service runs; the values the
selection keeps (a class, a region, a minute) are compared field by field with
`index.values`: the value, its source, the flags, the inputs hash and the seq it follows.
A stored row in the recomputed range that the events do not produce, and a recomputed
value with no row, are differences too. Rows after the last minute the events released
are not compared: the service may have read further than the verifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import msgspec

from eventlog.port import EventLog, Record
from eventlog.reading import for_each_batch_until, settled_end_offset
from index import store
from index.calculator import new_calculator
from index.value import MINUTE_NS, IndexValue

__all__ = ["COMPARED_FIELDS", "ChainComparison", "Difference", "Selection", "compare",
           "compare_chain", "recompute_file", "recompute_log"]

BATCH_RECORDS = 10_000
READ_TIMEOUT_S = 3_600.0
COMPARED_FIELDS = ("value_micro", "source", "trade_count", "volume", "instrument_count",
                   "sufficient", "inputs_hash", "last_seq")


@dataclass(frozen=True)
class Selection:
    """Which values to keep: None keeps every class, region or minute."""

    gpu: str | None = None
    region: str | None = None
    minute_ns: int | None = None

    def __post_init__(self) -> None:
        if self.minute_ns is not None and self.minute_ns % MINUTE_NS:
            raise ValueError(f"minute {self.minute_ns} is not on a minute boundary")

    def keeps(self, value: IndexValue) -> bool:
        return ((self.gpu is None or value.gpu == self.gpu)
                and (self.region is None or value.region == self.region)
                and (self.minute_ns is None or value.minute_ns == self.minute_ns))


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One field of one value where the recomputation and the stored row disagree; a row
    missing on either side is the field "row" with "missing" on that side."""

    gpu: str
    region: str
    minute_ns: int
    field: str
    recomputed: str
    stored: str


def recompute_file(path: Path, selection: Selection, calculator_name: str | None = None
                   ) -> list[IndexValue]:
    """Recompute from a JSON Lines file of the whole event log, from seq 1, with the named
    calculator (`index.calculator.new_calculator`: the native one when built)."""
    calculator = new_calculator(calculator_name)
    kept: list[IndexValue] = []
    with path.open("rb") as lines:
        for batch in _batches(line.rstrip(b"\r\n") for line in lines):
            kept += [value for value in calculator.feed(batch) if selection.keeps(value)]
    return kept


def _batches(lines: Iterable[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        if line.strip():
            batch.append(line)
            if len(batch) == BATCH_RECORDS:
                yield batch
                batch = []
    if batch:
        yield batch


async def recompute_log(event_log: EventLog, topic: str, selection: Selection,
                        calculator_name: str | None = None) -> list[IndexValue]:
    """Recompute from the events topic, from its start to what is committed now."""
    calculator = new_calculator(calculator_name)
    end_offset = await settled_end_offset(event_log, topic)
    consumer = event_log.consumer(topic, isolation="read_committed", start="earliest")
    kept: list[IndexValue] = []

    def feed(records: Sequence[Record]) -> None:
        released = calculator.feed([record.value for record in records])
        kept.extend(value for value in released if selection.keeps(value))

    await consumer.start()
    try:
        await for_each_batch_until(consumer, end_offset, feed, batch_size_max=BATCH_RECORDS,
                                   timeout_s=READ_TIMEOUT_S)
    finally:
        await consumer.stop()
    return kept


async def compare(connection: asyncpg.Connection, recomputed: list[IndexValue]
                  ) -> list[Difference]:
    """Every difference between the recomputed values and the stored rows over the same
    classes and minutes, by class, then minute."""
    by_class: dict[tuple[str, str], list[IndexValue]] = defaultdict(list)
    for value in recomputed:
        by_class[(value.gpu, value.region)].append(value)
    found: list[Difference] = []
    for (gpu, region), values in sorted(by_class.items()):
        first = min(value.minute_ns for value in values)
        last = max(value.minute_ns for value in values)
        expected = {value.minute_ns: value for value in values}  # every minute in range
        stored = {row.minute_ns: row
                  for row in await _stored(connection, gpu, region, first, last + 1)}
        for minute_ns in sorted(expected.keys() | stored.keys()):
            found += _differences(expected.get(minute_ns), stored.get(minute_ns))
    return found


async def _stored(connection: asyncpg.Connection, gpu: str, region: str, from_ns: int,
                  to_ns: int) -> list[IndexValue]:
    """Every stored row of a class in [from_ns, to_ns), read page by page."""
    rows: list[IndexValue] = []
    while True:
        page = await store.values(connection, gpu, region, from_ns, to_ns, store.LIMIT_MAX)
        rows += page
        if len(page) < store.LIMIT_MAX:
            return rows
        from_ns = page[-1].minute_ns + MINUTE_NS


def _differences(recomputed: IndexValue | None, stored: IndexValue | None) -> list[Difference]:
    some = recomputed or stored
    assert some is not None
    if recomputed is None or stored is None:
        return [Difference(gpu=some.gpu, region=some.region, minute_ns=some.minute_ns,
                           field="row", recomputed="present" if recomputed else "missing",
                           stored="present" if stored else "missing")]
    return _field_differences(recomputed, stored, [
        field for field in COMPARED_FIELDS if getattr(recomputed, field) != getattr(stored, field)])


def _field_differences(recomputed: IndexValue, other: object, fields: Iterable[str]
                       ) -> list[Difference]:
    """One Difference per field named, with the recomputed value's and the other's."""
    return [Difference(gpu=recomputed.gpu, region=recomputed.region,
                       minute_ns=recomputed.minute_ns, field=field,
                       recomputed=_text(getattr(recomputed, field)),
                       stored=_text(getattr(other, field)))
            for field in fields]


class OnChainValue(Protocol):
    """What the verifier reads of a value on chain (`settlement.index_chain`)."""

    @property
    def value_micro(self) -> int | None: ...
    @property
    def source(self) -> str: ...
    @property
    def sufficient(self) -> bool: ...
    @property
    def inputs_hash(self) -> bytes: ...


# (gpu, region, minute_ns) -> the value on chain, None while that minute is not published
ChainReader = Callable[[str, str, int], OnChainValue | None]
# (recomputed value, the one on chain) -> the fields where they differ
ChainDifferences = Callable[[IndexValue, Any], list[str]]


@dataclass(frozen=True)
class ChainComparison:
    """The recomputed values checked against the IndexOracle: the differences, and how many
    values were compared and how many are not on chain yet (published after their batch)."""

    differences: list[Difference]
    compared: int
    unpublished: int


def compare_chain(recomputed: Iterable[IndexValue], read: ChainReader,
                  differences: ChainDifferences) -> ChainComparison:
    """Compare each recomputed value with the one the chain holds for its class and minute.

    A minute the oracle does not hold yet is counted, not a difference: the submitter
    publishes a value only after the batch that settles the seq it follows."""
    found: list[Difference] = []
    compared = unpublished = 0
    for value in recomputed:
        on_chain = read(value.gpu, value.region, value.minute_ns)
        if on_chain is None:
            unpublished += 1
            continue
        compared += 1
        found += _field_differences(value, on_chain, differences(value, on_chain))
    return ChainComparison(differences=found, compared=compared, unpublished=unpublished)


def _text(field: object) -> str:
    return field.hex() if isinstance(field, bytes) else str(field)
