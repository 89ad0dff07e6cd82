"""The ledger's schema: its migrations (`ledger/migrations/NNN_name.sql`, applied by
`runtime.migrations` and recorded in `ledger.schema_migrations`) and its service role.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from runtime import migrations as runtime_migrations
from runtime.migrations import Migration

__all__ = ["MIGRATIONS_DIR", "SERVICE_ROLE", "Migration", "apply_migrations", "load_migrations",
           "set_service_password"]

SERVICE_ROLE = "gpux_ledger"  # the role the migrations create; services write as it
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the ledger's migrations by version."""
    return runtime_migrations.load_migrations(directory)


async def apply_migrations(
    connection: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply the ledger's migrations not yet recorded; return those applied by this call."""
    return await runtime_migrations.apply_migrations(
        connection, "ledger", load_migrations() if migrations is None else migrations)


async def set_service_password(connection: asyncpg.Connection, password: str) -> None:
    """Let the service role log in with `password` (roles are cluster-wide)."""
    if not password:
        raise ValueError("the service password must not be empty")
    statement = await connection.fetchval(
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
        SERVICE_ROLE, password,
    )
    await connection.execute(statement)
