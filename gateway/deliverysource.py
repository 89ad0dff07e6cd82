"""The delivery database as the gateway uses it: the PostgreSQL adapter behind the delivery
requests (gateway.deliverydesk), the `quality` feed and `GET /quality` (the tables are the
delivery service's, read and written through `delivery.registry`).

The pool opens on first use and applies the delivery migrations
(`runtime.postgres.MigratedPool`), so the gateway may start before the delivery service.
`follow` polls the reports every `interval_ms` by `recorded_id`, as the index poller follows
`last_seq`, and hands the new hours to the core; a failed read is logged and tried again at
the next poll: the delivery database never stops the gateway.

A report's `recorded_id` comes from a sequence, so a row may commit after one with a higher
id: the reader reads from the lowest id it has not seen (`QualityCursor`), leaving out the
ids above it it has, and gives up a gap only once it stayed open `gap_polls_max` polls (an id
a rolled-back insert used).

Cancellation: `follow` runs until cancelled; every other coroutine may be cancelled with its
request (asyncpg gives the connection back to the pool).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from delivery import registry
from runtime.postgres import MigratedPool

log = logging.getLogger("gpux.gateway.delivery")

POOL_SIZE_MAX: Final = 4  # the poll and a few requests at a time
READ_TIMEOUT_S: Final = 10.0
# What a read or write may fail with: the database away, slow, or not yet migrated.
READ_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
T = TypeVar("T")


class QualityCursor:
    """Which reports have been read: every id up to `low`, and the ids above it seen since.
    Pure: `next_query` says where to read from, `take` filters what was read."""

    def __init__(self, gap_polls_max: int) -> None:
        if gap_polls_max < 1:
            raise ValueError("gap_polls_max must be >= 1")
        self.gap_polls_max = gap_polls_max
        self.low = 0
        self.seen: set[int] = set()
        self.gap_polls = 0

    def take(self, rows: list[registry.ReportRow]) -> list[registry.ReportRow]:
        """The rows not seen before, and advance `low` over every id now known."""
        fresh = [row for row in rows if row.recorded_id > self.low
                 and row.recorded_id not in self.seen]
        self.seen.update(row.recorded_id for row in fresh)
        self._advance()
        return fresh

    def poll_done(self) -> None:
        """One poll ended: a gap open for `gap_polls_max` polls is given up."""
        if not self.seen:
            self.gap_polls = 0
            return
        self.gap_polls += 1
        if self.gap_polls >= self.gap_polls_max:
            self.low = min(self.seen) - 1
            self.gap_polls = 0
            self._advance()

    def _advance(self) -> None:
        before = self.low
        while self.low + 1 in self.seen:
            self.low += 1
            self.seen.discard(self.low)
        if self.low != before:
            self.gap_polls = 0


class DeliverySource:
    """Reach the delivery database through a small pool, opened on first use."""

    def __init__(self, database_url: str, *, page_size: int, gap_polls_max: int = 30) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.database_url = database_url
        self.page_size = page_size
        self.cursor = QualityCursor(gap_polls_max)
        self.read_once = False  # a poll of the reports has succeeded
        self.failing = False  # the last poll failed
        self._pool = MigratedPool(database_url, registry.migrate, size_max=POOL_SIZE_MAX,
                                  timeout_s=READ_TIMEOUT_S)

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection."""
        return await self._pool.run(work)

    async def close(self) -> None:
        await self._pool.close()

    async def new_reports(self) -> list[registry.ReportRow]:
        """The reports not read before, in recorded_id order: a page at most per call."""
        low, seen = self.cursor.low, sorted(self.cursor.seen)
        rows = await self.run(lambda c: registry.reports_after(c, low, self.page_size, seen))
        return self.cursor.take(rows)

    def readable(self) -> bool:
        """Whether the reports have been read and the last poll succeeded."""
        return self.read_once and not self.failing

    async def follow(self, add: Callable[[list[registry.ReportRow]], None],
                     interval_ms: int) -> None:
        """Hand `add` every report, then every poll the new ones, until cancelled."""
        while True:
            try:
                while True:
                    rows = await self.new_reports()
                    if rows:
                        add(rows)
                    if len(rows) < self.page_size:
                        break
                self.cursor.poll_done()
            except READ_ERRORS as error:
                if not self.failing:
                    log.warning("cannot read the delivery reports (retrying every %d ms): %s",
                                interval_ms, error)
                self.failing = True
            else:
                if self.failing:
                    log.info("reading the delivery reports again")
                self.failing = False
                self.read_once = True
            await asyncio.sleep(interval_ms / 1000)


__all__ = ["READ_ERRORS", "DeliverySource", "QualityCursor"]
