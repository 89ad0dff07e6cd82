"""Logins: Ed25519 keys and EIP-712 wallets verify, replays and stale timestamps do not;
the SDK signs exactly what the gateway checks."""

from __future__ import annotations

import time

import pytest

from gateway.auth import (
    Authenticator,
    KeyRecord,
    check_timestamp,
    new_key_pair,
    new_nonce,
    sign_login,
)
from gateway.errors import AuthError
from sdk.signing import ApiKey, Wallet
from wsapi.requests import Login, LoginWallet


class MemoryStore:
    """A KeyStore in memory: a hand-written stub of gateway.store.PostgresKeyStore."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.nonces: set[str] = set()
        self.roles: dict[str, str] = {}

    def add(self, account: str, role: str) -> ApiKey:
        key_id, private_key, public_key = new_key_pair()
        self.keys[key_id] = KeyRecord(key_id=key_id, account=account, role=role,
                                      public_key=public_key)
        return ApiKey(key_id, private_key)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self.keys.get(key_id)

    async def use_nonce(self, nonce: str) -> bool:
        if nonce in self.nonces:
            return False
        self.nonces.add(nonce)
        return True

    async def wallet_role(self, account: str) -> str:
        return self.roles.setdefault(account, "trader")


def login_of(key: ApiKey, nonce: str, timestamp_ms: int | None = None) -> Login:
    fields = key.login_fields(nonce, timestamp_ms or time.time_ns() // 1_000_000)
    return Login(req_id=1, key_id=fields["key_id"], timestamp_ms=fields["timestamp_ms"],
                 signature=fields["signature"])


async def test_an_sdk_signed_key_login_verifies_once_and_a_replay_is_refused() -> None:
    store = MemoryStore()
    key = store.add("alice", "market_maker")
    authenticator = Authenticator(store, chain_id=1, cache_ttl_ms=1000)
    nonce = new_nonce()
    principal = await authenticator.login(nonce, login_of(key, nonce))
    assert (principal.account, principal.role) == ("alice", "market_maker")
    with pytest.raises(AuthError, match="used before"):
        await authenticator.login(nonce, login_of(key, nonce))


async def test_a_signature_over_another_nonce_or_by_another_key_is_refused() -> None:
    store = MemoryStore()
    alice, mallory = store.add("alice", "trader"), store.add("mallory", "trader")
    authenticator = Authenticator(store, chain_id=1, cache_ttl_ms=1000)
    with pytest.raises(AuthError):
        await authenticator.login(new_nonce(), login_of(alice, new_nonce()))
    nonce = new_nonce()
    forged = login_of(mallory, nonce)
    forged = Login(req_id=1, key_id=alice.key_id, timestamp_ms=forged.timestamp_ms,
                   signature=forged.signature)
    with pytest.raises(AuthError):
        await authenticator.login(nonce, forged)
    with pytest.raises(AuthError, match="unknown"):
        await authenticator.login(nonce, Login(req_id=1, key_id="knotakey000", timestamp_ms=1,
                                               signature="A" * 88))
    assert store.nonces == set(), "a refused login spends no nonce"


def test_the_gateway_signer_and_the_sdk_signer_agree() -> None:
    key_id, private_key, _ = new_key_pair()
    assert sign_login(private_key, "n", 5, key_id) == ApiKey(key_id, private_key).login_fields(
        "n", 5)["signature"]


def test_timestamps_outside_the_window_are_refused() -> None:
    now_ns = 1_700_000_000_000 * 1_000_000
    check_timestamp(1_700_000_000_000 + 29_000, now_ns, 30_000)
    with pytest.raises(AuthError, match="timestamp"):
        check_timestamp(1_700_000_000_000 - 31_000, now_ns, 30_000)


async def test_a_wallet_login_gives_the_checksummed_address_and_refuses_a_wrong_chain() -> None:
    store = MemoryStore()
    wallet = Wallet("0x" + "11" * 32, chain_id=31337)
    nonce = new_nonce()
    fields = wallet.login_fields(nonce, time.time_ns() // 1_000_000)
    request = LoginWallet(req_id=1, address=fields["address"].lower(),
                          timestamp_ms=fields["timestamp_ms"], signature=fields["signature"])
    principal = await Authenticator(store, chain_id=31337, cache_ttl_ms=1).login_wallet(
        nonce, request)
    assert principal.account == wallet.address and principal.role == "trader"
    with pytest.raises(AuthError):
        await Authenticator(MemoryStore(), chain_id=1, cache_ttl_ms=1).login_wallet(
            nonce, request)
