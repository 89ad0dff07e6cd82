"""Apply a package's SQL migrations in order, each once, each in its own transaction.

Each package that owns tables keeps its migrations as files `<package>/migrations/NNN_name.sql`
and records them in `<schema>.schema_migrations` with the SHA-256 of their text. Running
again applies only what is new; a recorded migration whose file changed since is refused
(`MigrationError`): history is not rewritten, a change is a new migration. An advisory lock
per schema makes concurrent runs take turns.

A migration recorded without a hash (by an older runner that kept only versions) is
adopted: its hash is filled in from the file of the same version.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

__all__ = ["Migration", "MigrationError", "apply_migrations", "load_migrations"]

MIGRATIONS_MAX = 999
_FILE_NAME = re.compile(r"(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LOCK_NAMESPACE = 0x6770_7578  # "gpux": the high half of each schema's advisory lock key


class MigrationError(Exception):
    """Refuse a migration set that disagrees with itself or with what the database recorded."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version, name, SQL text and the text's SHA-256."""

    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """Return the migrations in `directory` by version; refuse a gap or a stray file."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name} is not named NNN_name.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path.read_text()))
    if len(migrations) > MIGRATIONS_MAX:
        raise MigrationError(f"more than {MIGRATIONS_MAX} migrations in {directory}")
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3, ... without gaps: {versions}")
    return migrations


async def apply_migrations(connection: asyncpg.Connection, schema: str,
                           migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations of `schema` not yet recorded; return those applied by this call."""
    if _SCHEMA_NAME.fullmatch(schema) is None:
        raise MigrationError(f"schema name {schema!r} is not a plain lower-case identifier")
    lock_key = _LOCK_NAMESPACE << 32 | zlib.crc32(schema.encode())
    table = f"{schema}.schema_migrations"
    await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await connection.execute(
            f"CREATE SCHEMA IF NOT EXISTS {schema};"
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp());"
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS name text,"
            " ADD COLUMN IF NOT EXISTS sha256 text;"
        )
        rows = await connection.fetch(f"SELECT version, sha256 FROM {table}")
        recorded = {row["version"]: row["sha256"] for row in rows}
        _check_recorded(recorded, migrations)
        applied: list[Migration] = []
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] is None:
                    await connection.execute(
                        f"UPDATE {table} SET name = $2, sha256 = $3 WHERE version = $1",
                        migration.version, migration.name, migration.sha256)
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    f"INSERT INTO {table} (version, name, sha256) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.sha256,
                )
            applied.append(migration)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)


def _check_recorded(recorded: dict[int, str | None], migrations: list[Migration]) -> None:
    """Refuse when the database recorded a migration we lack or one whose text changed."""
    known = {migration.version: migration for migration in migrations}
    for version, sha256 in sorted(recorded.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:03d}, which this code does not know: "
                "it is newer than this code"
            )
        if sha256 is not None and migration.sha256 != sha256:
            raise MigrationError(
                f"migration {version:03d}_{migration.name} changed since it was applied; "
                "write a new migration instead"
            )
