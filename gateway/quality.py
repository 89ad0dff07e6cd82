"""Every operator's quality record at the gateway: the `quality` request and feed, and
`GET /quality`; pure, like the projection.

The delivery service writes one report per assignment with its measured hour
(`delivery.quality.HourRecord`, the reports' `quality` column); the gateway's service polls
them (gateway.deliverysource) and hands the new rows to `QualityBoard.add`, which
aggregates each operator's hours again (`delivery.quality.operator_records`) and returns the
feed update for its readers. The feed has one key (`ALL`): a snapshot of every operator, then
the records of the operators whose hours came in, whole.

The board keeps the latest `hours_kept_max` hours (reports in the order read); an operator's
record covers its hours among them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from delivery.quality import HourRecord, OperatorRecord, operator_records
from delivery.registry import ReportRow
from gateway.marketdata import FeedUpdate, Wanted
from gateway.messages import encode
from wsapi.messages import OperatorQuality, QualityMessage
from wsapi.requests import QUALITY_CHANNEL

ALL: Final = ""  # the one key of the quality feed
Key = tuple[str, str]  # (issue_id, holder)


def wire(record: OperatorRecord) -> OperatorQuality:
    """An operator's record as the API carries it."""
    return msgspec.convert(msgspec.to_builtins(record), OperatorQuality)


class QualityBoard:
    """Hold the hours read so far and every operator's record of them."""

    def __init__(self, hours_kept_max: int) -> None:
        if hours_kept_max < 1:
            raise ValueError("hours_kept_max must be >= 1")
        self.hours_kept_max = hours_kept_max
        self.hours: dict[Key, HourRecord] = {}  # in the order read
        self.by_operator: dict[str, dict[Key, HourRecord]] = {}
        self.records: dict[str, OperatorQuality] = {}
        self.rows_read = 0
        self.rows_refused = 0
        self.last_refusal: str | None = None

    def add(self, rows: Iterable[ReportRow], wanted: Wanted) -> list[FeedUpdate]:
        """Take new report rows; return the feed's update when `wanted` names it. A row
        whose quality does not decode is counted in `rows_refused` and left out."""
        touched: set[str] = set()
        for row in rows:
            self.rows_read += 1
            try:
                hour = msgspec.json.decode(row.quality, type=HourRecord)
            except msgspec.DecodeError as error:
                self.rows_refused += 1
                self.last_refusal = f"report {row.issue_id}/{row.holder}: {error}"
                continue
            touched.add(hour.operator)
            touched.update(self._keep((row.issue_id, row.holder), hour))
        if not touched:
            return []
        for operator in touched:
            self._aggregate(operator)
        if not wanted(QUALITY_CHANNEL, ALL):
            return []
        changed = [self.records[name] for name in sorted(touched) if name in self.records]
        return [FeedUpdate(QUALITY_CHANNEL, ALL, encode(QualityMessage(
            kind="update", operators=changed)))]

    def _keep(self, key: Key, hour: HourRecord) -> list[str]:
        """Keep `hour` (replacing one of the same assignment); return the operators whose
        hours were dropped to stay within `hours_kept_max`."""
        old = self.hours.pop(key, None)
        if old is not None:
            self.by_operator[old.operator].pop(key, None)
        self.hours[key] = hour
        self.by_operator.setdefault(hour.operator, {})[key] = hour
        dropped = []
        while len(self.hours) > self.hours_kept_max:
            oldest = next(iter(self.hours))
            gone = self.hours.pop(oldest)
            self.by_operator[gone.operator].pop(oldest, None)
            dropped.append(gone.operator)
        return dropped

    def _aggregate(self, operator: str) -> None:
        hours = self.by_operator.get(operator, {})
        if not hours:
            self.by_operator.pop(operator, None)
            self.records.pop(operator, None)
            return
        (record,) = operator_records(hours.values())
        self.records[operator] = wire(record)

    def operators(self, operator: str | None = None) -> list[OperatorQuality]:
        """Every operator's record by name, or the one of `operator` (none: empty)."""
        if operator is not None:
            record = self.records.get(operator)
            return [] if record is None else [record]
        return [self.records[name] for name in sorted(self.records)]

    def snapshot(self) -> QualityMessage:
        return QualityMessage(kind="snapshot", operators=self.operators())


__all__ = ["ALL", "QualityBoard", "wire"]
