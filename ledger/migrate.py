"""Apply the ledger's SQL migrations in order, each once, each in its own transaction.

Migrations are the files `ledger/migrations/NNN_name.sql`, applied by version number and
recorded in `ledger.schema_migrations` with the SHA-256 of their text. Running again
applies only what is new; a recorded migration whose file changed since is refused
(`MigrationError`): history is not rewritten, a change is a new migration. An advisory
lock makes concurrent runs take turns.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from ledger.db import SERVICE_ROLE
from ledger.errors import MigrationError

__all__ = ["MIGRATIONS_DIR", "Migration", "apply_migrations", "load_migrations",
           "set_service_password"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATIONS_MAX = 999
_FILE_NAME = re.compile(r"(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql")
# Any fixed number: it only has to differ from the other advisory locks of the database.
_MIGRATION_LOCK_KEY = 0x6770_7578_4D49_47  # "gpuxMIG"

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS ledger;
CREATE TABLE IF NOT EXISTS ledger.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version, name, SQL text and the text's SHA-256."""

    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations in `directory` by version; refuse a gap or a stray file."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name} is not named NNN_name.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path.read_text()))
    if len(migrations) > MIGRATIONS_MAX:
        raise MigrationError(f"more than {MIGRATIONS_MAX} migrations")
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3, ... without gaps: {versions}")
    return migrations


async def apply_migrations(
    connection: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply the migrations not yet recorded; return those applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await connection.execute(_BOOTSTRAP)
        rows = await connection.fetch("SELECT version, sha256 FROM ledger.schema_migrations")
        recorded = {row["version"]: row["sha256"] for row in rows}
        _check_recorded(recorded, migrations)
        applied: list[Migration] = []
        for migration in migrations:
            if migration.version in recorded:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO ledger.schema_migrations (version, name, sha256) "
                    "VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.sha256,
                )
            applied.append(migration)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)


def _check_recorded(recorded: dict[int, str], migrations: list[Migration]) -> None:
    """Refuse when the database recorded a migration we lack or one whose text changed."""
    known = {migration.version: migration for migration in migrations}
    for version, sha256 in sorted(recorded.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:03d}, which this code does not know: "
                "it is newer than this code"
            )
        if migration.sha256 != sha256:
            raise MigrationError(
                f"migration {version:03d}_{migration.name} changed since it was applied; "
                "write a new migration instead"
            )


async def set_service_password(connection: asyncpg.Connection, password: str) -> None:
    """Let the service role log in with `password` (roles are cluster-wide)."""
    if not password:
        raise ValueError("the service password must not be empty")
    statement = await connection.fetchval(
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
        SERVICE_ROLE, password,
    )
    await connection.execute(statement)
