"""The index store as the gateway reads it: the PostgreSQL adapter behind the `index` feed and
`GET /index` (the rows are the index service's, `index.store`).

`follow` polls every `interval_ms`: the first read takes the latest value of every class, each
later one the rows written since the last `last_seq` seen, a page of `page_seqs_max` seqs at
a time, and hands them to the core, which updates the feed's readers. A failed read is
logged and tried again at the next poll: the index never stops the gateway. The pool opens
on first use and applies the index's migrations (`runtime.postgres.MigratedPool`), so the
gateway may start before the index service.

Cancellation: `follow` runs until cancelled; `history` may be cancelled with its request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from gateway.index import HistoryQuery
from index import store
from index.value import IndexValue
from runtime.postgres import MigratedPool

log = logging.getLogger("gpux.gateway.index")

POOL_SIZE_MAX: Final = 2  # one poll and one history read at a time
READ_TIMEOUT_S: Final = 10.0
# What a read of the store may fail with: the database away, slow, or not yet migrated.
READ_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError,
                      asyncpg.InterfaceError)


class IndexSource:
    """Read the index store through a small pool, opened on first use."""

    def __init__(self, database_url: str, *, page_seqs_max: int) -> None:
        if page_seqs_max < 1:
            raise ValueError("page_seqs_max must be >= 1")
        self.database_url = database_url
        self.page_seqs_max = page_seqs_max
        self._pool = MigratedPool(database_url, store.migrate, size_max=POOL_SIZE_MAX,
                                  timeout_s=READ_TIMEOUT_S)

    async def latest(self) -> list[IndexValue]:
        """The newest value of every class, in last_seq order."""
        values: list[IndexValue] = await self._pool.run(store.latest)
        return sorted(values, key=lambda value: (value.last_seq, value.minute_ns))

    async def after(self, last_seq: int) -> list[IndexValue]:
        """The rows of the first `page_seqs_max` last_seqs above `last_seq`, in order."""
        values: list[IndexValue] = await self._pool.run(
            lambda connection: store.values_after(connection, last_seq, self.page_seqs_max))
        return values

    async def history(self, query: HistoryQuery) -> list[IndexValue]:
        values: list[IndexValue] = await self._pool.run(lambda connection: store.values(
            connection, query.gpu, query.region, query.from_ns, query.to_ns, query.limit))
        return values

    async def close(self) -> None:
        await self._pool.close()

    async def follow(self, board_last_seq: Callable[[], int],
                     add: Callable[[list[IndexValue]], None], interval_ms: int) -> None:
        """Hand `add` the latest value of every class, then every poll the rows after
        `board_last_seq()`, until cancelled."""
        started = failing = False
        while True:
            try:
                if not started:
                    add(await self.latest())
                    started = True
                while True:
                    values = await self.after(board_last_seq())
                    add(values)
                    if len({value.last_seq for value in values}) < self.page_seqs_max:
                        break
            except READ_ERRORS as error:
                if not failing:
                    log.warning("cannot read the index store (retrying every %d ms): %s",
                                interval_ms, error)
                failing = True
            else:
                if failing:
                    log.info("reading the index store again")
                failing = False
            await asyncio.sleep(interval_ms / 1000)
