"""A reader's lag behind a partition's end, for a metrics gauge."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from eventlog.errors import LogError
from eventlog.port import EventLog

__all__ = ["LagGauge"]

log = logging.getLogger("gpux.eventlog.lag")


class Settable(Protocol):
    def set(self, value: float) -> None: ...


class LagGauge:
    """Set `gauge` to the records between a reader's next offset and `topic`'s end, at most
    once per `interval_s` (each reading costs a request to the log). A log that does not
    answer leaves the gauge as it was: the reader itself meets the failure if it lasts."""

    def __init__(self, event_log: EventLog, topic: str, gauge: Settable,
                 interval_s: float = 1.0) -> None:
        self.log = event_log
        self.topic = topic
        self.gauge = gauge
        self.interval_s = interval_s
        self._checked_at = float("-inf")

    async def refresh(self, next_offset: int) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.interval_s:
            return
        self._checked_at = now
        try:
            end = await self.log.end_offset(self.topic)
        except LogError as error:
            log.debug("lag of %s not refreshed: %s", self.topic, error)
            return
        self.gauge.set(max(0, end - next_offset))
