"""Keep API keys, account roles and used login nonces in PostgreSQL (schema `gateway`).

Migrations are the files `gateway/migrations/NNN_name.sql`, applied by `runtime.migrations`
and recorded in `gateway.schema_migrations`; `gpux gateway migrate` runs them, and running
it again is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import asyncpg  # type: ignore[import-untyped]

from gateway.auth import KeyRecord, new_key_pair
from gateway.config import ROLES
from gateway.errors import StoreError
from runtime.migrations import apply_migrations, load_migrations
from runtime.postgres import connect

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"


async def migrate(database_url: str) -> list[int]:
    """Apply the migrations not yet applied; return the versions applied now."""
    try:
        connection = await connect(database_url, application_name="gpux-gateway")
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise StoreError(f"cannot connect to PostgreSQL: {error}", retriable=True) from error
    try:
        applied = await apply_migrations(connection, "gateway", load_migrations(MIGRATIONS_DIR))
    finally:
        await connection.close()
    return [migration.version for migration in applied]


class PostgresKeyStore:
    """Read and write keys, roles and nonces through a small asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, database_url: str, *, pool_size_max: int = 4) -> PostgresKeyStore:
        try:
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=pool_size_max,
                                             timeout=10, command_timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            raise StoreError(f"cannot connect to PostgreSQL: {error}", retriable=True) from error
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def add_key(self, account: str, role: str) -> tuple[str, str]:
        """Create a key for `account` (creating the account); return (key id, private key)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        key_id, private_key, public_key = new_key_pair()
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO gateway.accounts (account, role) VALUES ($1, $2)"
                " ON CONFLICT (account) DO NOTHING", account, role)
            await connection.execute(
                "INSERT INTO gateway.api_keys (key_id, account, role, public_key)"
                " VALUES ($1, $2, $3, $4)", key_id, account, role, public_key)
        return key_id, private_key

    async def set_role(self, account: str, role: str) -> None:
        """Set the role an account (a wallet, say) logs in with."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        await self.pool.execute(
            "INSERT INTO gateway.accounts (account, role) VALUES ($1, $2)"
            " ON CONFLICT (account) DO UPDATE SET role = excluded.role", account, role)

    async def revoke_key(self, key_id: str) -> bool:
        status = await self.pool.execute(
            "UPDATE gateway.api_keys SET revoked_at = now() WHERE key_id = $1"
            " AND revoked_at IS NULL", key_id)
        return bool(status.endswith(" 1"))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self.pool.fetchrow(
            "SELECT key_id, account, role, public_key, revoked_at IS NOT NULL AS revoked"
            " FROM gateway.api_keys WHERE key_id = $1", key_id)
        if row is None:
            return None
        return KeyRecord(key_id=row["key_id"], account=row["account"], role=row["role"],
                         public_key=bytes(row["public_key"]), revoked=row["revoked"])

    async def use_nonce(self, nonce: str) -> bool:
        """Record a nonce as used; False if it was used before."""
        row = await self.pool.fetchrow(
            "INSERT INTO gateway.login_nonces (nonce) VALUES ($1)"
            " ON CONFLICT DO NOTHING RETURNING nonce", nonce)
        return row is not None

    async def wallet_role(self, account: str) -> str:
        """Return the stored role of a wallet account, creating it as a trader."""
        row = await self.pool.fetchrow(
            "INSERT INTO gateway.accounts (account, role) VALUES ($1, 'trader')"
            " ON CONFLICT (account) DO UPDATE SET account = excluded.account RETURNING role",
            account)
        assert row is not None
        return str(row["role"])

    async def prune_nonces(self, keep_s: int) -> int:
        """Forget nonces used more than `keep_s` ago (a login older than its window is
        refused on its timestamp alone); return how many."""
        status = await self.pool.execute(
            "DELETE FROM gateway.login_nonces WHERE used_at < now() - make_interval(secs => $1)",
            float(keep_s))
        return int(status.split()[-1])
