"""The PostgreSQL adapter of the index: schema `index`, its upserts and its reads.

`index.values` holds one row per (gpu, region, minute_ns) (`index.value.IndexValue`).
Rows are a function of the event log alone, so the service writes them by upsert on that
key: writing a row again with the same content changes nothing (the update is skipped), and
a service restarted from the start of the log ends with the same rows. Every row of one
`last_seq` (the values a single event's timestamp released) is written in one transaction,
which is what lets `values_after` hand them out by `last_seq` without cutting a group.

Migrations are the files `index/migrations/NNN_name.sql`, applied by `runtime.migrations`
and recorded in `index.schema_migrations`.

Every read takes an open asyncpg connection (any role with SELECT on schema index) and
returns `IndexValue`s; every list is bounded by a `limit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from index.value import IndexValue
from runtime.migrations import apply_migrations, load_migrations

__all__ = ["LIMIT_MAX", "latest", "migrate", "values", "values_after", "write_values"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
LIMIT_MAX: Final = 1_000_000
_COLUMNS: Final = (
    "gpu", "region", "minute_ns", "value_micro", "source", "trade_count", "volume",
    "instrument_count", "sufficient", "inputs_hash", "last_seq",
)  # fmt: skip
_SQL_TYPES: Final = (
    "text", "text", "bigint", "bigint", "text", "integer", "bigint", "integer", "boolean",
    "bytea", "bigint",
)  # fmt: skip
_SELECT: Final = "SELECT " + ", ".join(_COLUMNS) + " FROM index.values"
_UPSERT: Final = (
    "INSERT INTO index.values (" + ", ".join(_COLUMNS) + ") SELECT * FROM unnest("
    + ", ".join(f"${number}::{sql_type}[]" for number, sql_type in enumerate(_SQL_TYPES, 1))
    + ") ON CONFLICT (gpu, region, minute_ns) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in _COLUMNS[3:])
    + " WHERE (" + ", ".join(f"index.values.{column}" for column in _COLUMNS[3:])
    + ") IS DISTINCT FROM (" + ", ".join(f"EXCLUDED.{column}" for column in _COLUMNS[3:])
    + ")"
)


async def migrate(connection: asyncpg.Connection) -> None:
    """Apply the index's migrations not yet applied (`runtime.migrations`)."""
    await apply_migrations(connection, "index", load_migrations(MIGRATIONS_DIR))


async def write_values(connection: asyncpg.Connection, rows: Sequence[IndexValue]) -> None:
    """Upsert `rows` in one statement; a row equal to the stored one is left untouched.

    Call it inside a transaction holding every row of each `last_seq` in `rows`.
    """
    if not rows:
        return
    columns = [[getattr(row, column) for row in rows] for column in _COLUMNS]
    await connection.execute(_UPSERT, *columns)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIMIT_MAX}, got {limit}")


def _value(row: asyncpg.Record) -> IndexValue:
    return IndexValue(**dict(row))


async def values(
    connection: asyncpg.Connection, gpu: str, region: str, from_ns: int, to_ns: int, limit: int
) -> list[IndexValue]:
    """Return the class's values with `from_ns <= minute_ns < to_ns`, oldest first, at most
    `limit` of them (page on from the last one's minute + 1)."""
    _check_limit(limit)
    rows = await connection.fetch(
        _SELECT + " WHERE gpu = $1 AND region = $2 AND minute_ns >= $3 AND minute_ns < $4 "
        "ORDER BY minute_ns LIMIT $5",
        gpu, region, from_ns, to_ns, limit,
    )
    return [_value(row) for row in rows]


async def latest(connection: asyncpg.Connection) -> list[IndexValue]:
    """Return the newest value of every (gpu, region), ordered by gpu then region (byte
    order: the columns collate "C")."""
    rows = await connection.fetch(
        "SELECT DISTINCT ON (gpu, region) " + ", ".join(_COLUMNS) + " FROM index.values "
        "ORDER BY gpu, region, minute_ns DESC"
    )
    return [_value(row) for row in rows]


async def values_after(
    connection: asyncpg.Connection, last_seq: int, limit: int
) -> list[IndexValue]:
    """Return the values of the first `limit` last_seqs above `last_seq`, each last_seq's
    rows whole, ordered by last_seq, minute_ns, gpu, region.

    `limit` counts last_seqs, not rows: the rows one event released (every class, and every
    minute a quiet log passed at once) come together, so a reader that pages on with the
    last row's last_seq never skips part of a group.
    """
    _check_limit(limit)
    rows = await connection.fetch(
        _SELECT + " WHERE last_seq > $1 AND last_seq <= ("
        "SELECT max(last_seq) FROM (SELECT DISTINCT last_seq FROM index.values "
        "WHERE last_seq > $1 ORDER BY last_seq LIMIT $2) AS page) "
        "ORDER BY last_seq, minute_ns, gpu, region",
        last_seq, limit,
    )
    return [_value(row) for row in rows]
