"""The GPU-hour price index at the gateway: the latest value of every class, the `index` feed's
snapshots and updates, and the query of `GET /index`; pure, like the projection.

The values are the index service's (`index.store`, one row per GPU class, region and minute);
the gateway's service polls them (gateway.indexsource) and hands the new rows to
`IndexBoard.add`, which returns the feed messages for their readers. A feed is of one class
(key `class_key(gpu, region)`) or of every class (key `ALL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import parse_qs

import msgspec

from gateway.marketdata import FeedUpdate, Wanted
from gateway.messages import encode
from index.value import IndexValue
from protocol import format_micro
from wsapi.messages import IndexMessage, IndexPoint
from wsapi.requests import INDEX_CHANNEL

ALL: Final = ""  # the key of the feed of every class: no class key is empty
NS_PER_S: Final = 10**9
DAY_NS: Final = 86_400 * NS_PER_S
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
GpuClass = tuple[str, str]  # (gpu, region)


def class_key(gpu: str, region: str) -> str:
    """The feed key of one class: its two labels as a JSON array, so no two classes share
    one whatever characters the labels hold."""
    return msgspec.json.encode([gpu, region]).decode()


def gpu_class_of(key: str) -> GpuClass:
    """The class a `class_key` names."""
    gpu, region = msgspec.json.decode(key, type=tuple[str, str])
    return gpu, region


def point(value: IndexValue) -> IndexPoint:
    """A stored value as the API shows it: USDC as a decimal string, the minute as ISO 8601
    and ns, the inputs hash as hex."""
    return IndexPoint(
        gpu=value.gpu, region=value.region, minute=iso_minute(value.minute_ns),
        minute_ns=value.minute_ns,
        value=None if value.value_micro is None else format_micro(value.value_micro),
        source=value.source, sufficient=value.sufficient, trade_count=value.trade_count,
        volume=value.volume, instrument_count=value.instrument_count,
        inputs_hash=value.inputs_hash.hex(), last_seq=value.last_seq)


def iso_minute(minute_ns: int) -> str:
    return datetime.fromtimestamp(minute_ns // NS_PER_S, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IndexBoard:
    """Hold the latest value of every class and the last `last_seq` read from the store."""

    def __init__(self) -> None:
        self.latest: dict[GpuClass, IndexValue] = {}
        self.last_seq = 0

    def add(self, values: list[IndexValue], wanted: Wanted) -> list[FeedUpdate]:
        """Take values newer than `last_seq`, in last_seq order; return the update of the
        feed of every class and of each class's feed that `wanted` names."""
        if not values:
            return []
        by_class: dict[GpuClass, list[IndexValue]] = {}
        for value in values:
            if value.last_seq < self.last_seq:
                raise ValueError(f"index value of last_seq {value.last_seq} after "
                                 f"{self.last_seq}: the store must hand them out in order")
            self.last_seq = value.last_seq
            gpu_class = (value.gpu, value.region)
            known = self.latest.get(gpu_class)
            if known is None or value.minute_ns >= known.minute_ns:
                self.latest[gpu_class] = value
            by_class.setdefault(gpu_class, []).append(value)
        updates = []
        if wanted(INDEX_CHANNEL, ALL):
            updates.append(FeedUpdate(INDEX_CHANNEL, ALL, encode(IndexMessage(
                kind="update", values=[point(value) for value in values]))))
        for (gpu, region), class_values in by_class.items():
            key = class_key(gpu, region)
            if wanted(INDEX_CHANNEL, key):
                updates.append(FeedUpdate(INDEX_CHANNEL, key, encode(IndexMessage(
                    kind="update", gpu=gpu, region=region,
                    values=[point(value) for value in class_values]))))
        return updates

    def snapshot(self, gpu_class: GpuClass | None) -> IndexMessage:
        """The latest value of one class (none yet: an empty list), or of every class."""
        if gpu_class is None:
            return IndexMessage(kind="snapshot", values=self.latest_points())
        latest = self.latest.get(gpu_class)
        return IndexMessage(kind="snapshot", gpu=gpu_class[0], region=gpu_class[1],
                            values=[] if latest is None else [point(latest)])

    def latest_points(self) -> list[IndexPoint]:
        """The latest value of every class, by gpu then region."""
        return [point(self.latest[gpu_class]) for gpu_class in sorted(self.latest)]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """`GET /index`: the class's values with `from_ns <= minute_ns < to_ns`, oldest first,
    at most `limit` of them."""

    gpu: str
    region: str
    from_ns: int
    to_ns: int
    limit: int


class QueryError(ValueError):
    """A query of `GET /index` the gateway cannot answer; the message says what is wrong."""


def history_query(query: str, now_ns: int, limit_max: int) -> HistoryQuery:
    """Read `gpu=G&region=R[&from=ISO][&to=ISO][&limit=N]`: `to` defaults to now, `from` to
    a day before `to`, `limit` to (and at most) `limit_max`."""
    try:
        fields = parse_qs(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        raise QueryError("too many parameters") from None
    unknown = sorted(set(fields) - {"gpu", "region", "from", "to", "limit"})
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r}: give gpu, region, from, to, limit")
    once = {name: _once(fields, name) for name in fields}
    gpu, region = once.get("gpu"), once.get("region")
    if not gpu or not region:
        raise QueryError("give gpu and region, e.g. /index?gpu=H100-SXM-80GB&region=eu-west")
    to_ns = parse_instant(once["to"], "to") if "to" in once else now_ns
    from_ns = parse_instant(once["from"], "from") if "from" in once else to_ns - DAY_NS
    if from_ns >= to_ns:
        raise QueryError("from must be before to")
    limit = limit_max
    if "limit" in once:
        text = once["limit"]
        if not text.isdigit() or not 1 <= int(text) <= limit_max:
            raise QueryError(f"limit must be a whole number from 1 to {limit_max}")
        limit = int(text)
    return HistoryQuery(gpu=gpu, region=region, from_ns=from_ns, to_ns=to_ns, limit=limit)


def parse_instant(text: str, name: str) -> int:
    """An ISO 8601 date and time (UTC when it names no zone) as ns since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} is not an ISO 8601 time like 2026-12-05T12:00Z: "
                         f"{text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    instant_ns = (moment - EPOCH) // timedelta(microseconds=1) * 1000
    if not 0 <= instant_ns < 2**63:
        raise QueryError(f"{name} is outside 1970-01-01 .. 2262-04-11")
    return instant_ns


def _once(fields: dict[str, list[str]], name: str) -> str:
    values = fields[name]
    if len(values) != 1:
        raise QueryError(f"{name} is given {len(values)} times")
    return values[0]


__all__ = ["ALL", "HistoryQuery", "IndexBoard", "QueryError", "class_key",
           "gpu_class_of", "history_query", "iso_minute", "parse_instant", "point"]
