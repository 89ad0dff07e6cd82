"""As root, PostgreSQL runs as the unprivileged `gpux-pg`, which must reach its binaries and
its data even when the clone lies below a dir closed to others (a home under /root, a
`mktemp -d` folder): `make dev` there once stopped at initdb with a PermissionError."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from harness.postgres import PostgresService, require_bin_dir, traversable_by_others

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user"),
]


async def count_rows(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS kept (id int)")
        await connection.execute("INSERT INTO kept VALUES (1)")
        rows: int = await connection.fetchval("SELECT count(*) FROM kept")
        return rows
    finally:
        await connection.close()


async def test_root_runs_postgres_from_binaries_and_data_in_a_closed_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    site_packages = closed / "clone" / ".venv" / "lib" / "site-packages"
    installed = require_bin_dir().resolve().parent.parent  # the wheel's pgserver package
    shutil.copytree(installed / "pginstall", site_packages / "pgserver" / "pginstall")
    shutil.copytree(installed.parent / "pgserver.libs", site_packages / "pgserver.libs")
    binaries = site_packages / "pgserver" / "pginstall" / "bin"
    monkeypatch.setenv("GPUX_PG_BIN", str(binaries))
    service = PostgresService(closed / "clone" / "var" / "dev" / "postgres")
    assert not traversable_by_others(binaries)
    try:
        service.start()
        assert await count_rows(service.url) == 1
        service.stop()
        service.start()  # the same cluster again, as a second `make dev` finds it
        assert await count_rows(service.url) == 2
    finally:
        service.stop()
        outside = service.data_dir.resolve()
        if outside != service.data_dir:
            shutil.rmtree(outside, ignore_errors=True)
    assert service.data_dir.is_symlink()
