"""runtime.migrations on a real PostgreSQL: each package's numbered SQL files applied once,
recorded per schema; a database migrated by the older version-only runners adopted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import store as gateway_store
from runtime.migrations import MigrationError, apply_migrations, load_migrations
from runtime.postgres import connect, create_database, drop_database
from settlement import store as settlement_store


@pytest.fixture
async def fresh_url(database_url: str) -> AsyncIterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    url = await create_database(database_url, name)
    yield url
    await drop_database(database_url, name)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_each_file_applies_once_and_a_changed_one_is_refused(
    fresh_url: str, tmp_path: Path
) -> None:
    directory = write(tmp_path / "m", {
        "001_first.sql": "CREATE TABLE demo.a (x int);",
        "002_second.sql": "INSERT INTO demo.a VALUES (1);",
    })
    connection = await connect(fresh_url)
    try:
        applied = await apply_migrations(connection, "demo", load_migrations(directory))
        assert [m.version for m in applied] == [1, 2]
        assert await apply_migrations(connection, "demo", load_migrations(directory)) == []
        assert await connection.fetchval("SELECT count(*) FROM demo.a") == 1
        (directory / "002_second.sql").write_text("INSERT INTO demo.a VALUES (2);")
        with pytest.raises(MigrationError, match="002_second"):
            await apply_migrations(connection, "demo", load_migrations(directory))
    finally:
        await connection.close()


async def test_a_gap_a_stray_file_and_a_bad_schema_name_are_refused(
    fresh_url: str, tmp_path: Path
) -> None:
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(write(tmp_path / "gap", {"001_a.sql": "", "003_c.sql": ""}))
    with pytest.raises(MigrationError, match="notes.sql"):
        load_migrations(write(tmp_path / "stray", {"001_a.sql": "", "notes.sql": ""}))
    connection = await connect(fresh_url)
    try:
        with pytest.raises(MigrationError, match="schema name"):
            await apply_migrations(connection, "demo; DROP", [])
    finally:
        await connection.close()


async def test_databases_of_the_version_only_runners_are_adopted(fresh_url: str) -> None:
    """Before runtime.migrations the gateway recorded versions only and settlement created
    its tables without a record: both migrate now without failing or losing a row."""
    connection = await connect(fresh_url)
    try:
        await connection.execute(
            "CREATE SCHEMA gateway;"
            "CREATE TABLE gateway.schema_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            "INSERT INTO gateway.schema_migrations (version) VALUES (1);"
            "CREATE SCHEMA settlement;")
        gateway_sql = (gateway_store.MIGRATIONS_DIR / "001_keys.sql").read_text()
        settlement_sql = (settlement_store.MIGRATIONS_DIR / "001_settlement.sql").read_text()
        await connection.execute(gateway_sql + settlement_sql)
        await connection.execute(
            "INSERT INTO settlement.watchers (name, next_block) VALUES ('deposits', 7)")

        assert await gateway_store.migrate(fresh_url) == [2]  # 1 adopted, the later ones run
        await settlement_store.migrate(connection)

        recorded = await connection.fetch(
            "SELECT version, name, sha256 FROM gateway.schema_migrations")
        assert [(r["version"], r["name"]) for r in recorded] == [(1, "keys"), (2, "delivery_role")]
        assert recorded[0]["sha256"] == load_migrations(gateway_store.MIGRATIONS_DIR)[0].sha256
        assert await connection.fetchval(
            "SELECT next_block FROM settlement.watchers WHERE name = 'deposits'") == 7
        assert await connection.fetchval(
            "SELECT count(*) FROM settlement.schema_migrations") == len(
                load_migrations(settlement_store.MIGRATIONS_DIR))  # 1 adopted, the later run
    finally:
        await connection.close()
