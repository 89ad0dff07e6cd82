"""The gateway's PostgreSQL schema: migrations are idempotent, `add-key` prints a key once
and stores only its public half, nonces are single use, wallets get a stored role."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from gateway.auth import Authenticator, new_nonce
from gateway.store import PostgresKeyStore, migrate
from sdk.signing import ApiKey
from wsapi.requests import Login

ROOT = Path(__file__).resolve().parents[2]


def gpux_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpux", "gateway", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_migrate_twice_then_add_key_prints_a_working_key_once(database_url: str) -> None:
    first = gpux_gateway("migrate", "--database-url", database_url)
    second = gpux_gateway("migrate", "--database-url", database_url)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "up to date" in second.stdout
    account = f"cli-{uuid.uuid4().hex[:6]}"
    added = gpux_gateway("add-key", "--database-url", database_url, "--account", account,
                         "--role", "market_maker")
    assert added.returncode == 0, added.stderr
    fields = dict(line.split(":", 1) for line in added.stdout.splitlines() if ":" in line)
    key = ApiKey(fields["key_id"].strip(), fields["private_key"].strip())
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT account, role, length(public_key) AS size FROM gateway.api_keys"
            " WHERE key_id = $1", key.key_id)
        text = await connection.fetchval("SELECT row_to_json(k)::text FROM gateway.api_keys k"
                                         " WHERE key_id = $1", key.key_id)
    finally:
        await connection.close()
    assert (row["account"], row["role"], row["size"]) == (account, "market_maker", 32)
    assert key.private_key not in text, "the server keeps no private key"
    store = await PostgresKeyStore.open(database_url)
    try:
        nonce = new_nonce()
        fields_signed = key.login_fields(nonce, 1)
        login = Login(req_id=1, key_id=key.key_id, timestamp_ms=1,
                      signature=fields_signed["signature"])
        principal = await Authenticator(store, chain_id=1, cache_ttl_ms=1).login(nonce, login)
        assert (principal.account, principal.role) == (account, "market_maker")
        assert not await store.use_nonce(nonce), "a used nonce is refused"
        assert await store.revoke_key(key.key_id)
        assert (await store.get_key(key.key_id)).revoked  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_wallet_accounts_start_as_traders_and_take_a_set_role(database_url: str) -> None:
    await migrate(database_url)
    wallet = "0x" + uuid.uuid4().hex[:8].upper() + "ab" * 16
    store = await PostgresKeyStore.open(database_url)
    try:
        assert await store.wallet_role(wallet) == "trader"
        result = gpux_gateway("set-role", "--database-url", database_url, "--account", wallet,
                              "--role", "operator")
        assert result.returncode == 0, result.stderr
        assert await store.wallet_role(wallet) == "operator"
    finally:
        await store.close()


async def test_the_gateway_prunes_used_nonces_past_their_keep(
    database_url: str, kafka_bootstrap: str
) -> None:
    """The nonce table grew for ever: `prune_nonces` existed and nothing called it."""
    from eventlog.kafka import KafkaConfig, KafkaLog
    from gateway.config import GatewayConfig
    from gpux.venue import Venue
    from tests.helpers import eventually

    await migrate(database_url)
    store = await PostgresKeyStore.open(database_url)
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    old, fresh = new_nonce(), new_nonce()
    config = GatewayConfig(port=0, nonce_keep_ms=60_000, nonce_prune_interval_ms=100)
    try:
        assert await store.use_nonce(old) and await store.use_nonce(fresh)
        await store.pool.execute("UPDATE gateway.login_nonces SET used_at = now() - "
                                 "interval '2 minutes' WHERE nonce = $1", old)
        async with Venue.running(event_log, namespace=f"nonce{uuid.uuid4().hex[:8]}.",
                                 key_store=store, gateway=config):

            async def pruned() -> bool:
                return await store.pool.fetchval(
                    "SELECT count(*) FROM gateway.login_nonces WHERE nonce = $1", old) == 0

            await eventually(pruned, timeout_s=30, interval_s=0.1,
                             message="the gateway pruned the old nonce")
        assert not await store.use_nonce(fresh), "a nonce within its keep is still refused"
    finally:
        await event_log.close()
        await store.close()
