"""Log clients in: Ed25519 API keys and Ethereum wallets (EIP-712), against a server nonce.

On connect the server sends a random `nonce` (in `hello`). A login signs that nonce and the
client's clock (`timestamp_ms`), which must be within `login_window_ms` of the server's. A
nonce serves one login attempt on its connection, and every nonce used is recorded in
PostgreSQL, so a captured login frame is refused on any gateway and at any later time.

- API key: the server stores only the Ed25519 public key. The signed bytes are the UTF-8 of
  "gpux-login-v1\\n{nonce}\\n{timestamp_ms}\\n{key_id}"; the signature goes base64.
- Wallet: an EIP-712 signature of `Login(address wallet,string nonce,uint64 timestamp)` in
  the domain `{name: "gpux", version: "1", chainId}`; the account is the checksummed
  address, the role the one stored for it (trader by default).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.errors import AuthError
from wsapi.login import login_payload, wallet_typed_data
from wsapi.requests import Login, LoginWallet

KEY_CACHE_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session acts for: the account, its role, and the credential used."""

    account: str
    role: str
    credential: str  # key id, or "wallet"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    account: str
    role: str
    public_key: bytes
    revoked: bool = False


class KeyStore(Protocol):
    """Where keys, wallet roles and used nonces live (gateway.store for PostgreSQL)."""

    def get_key(self, key_id: str) -> Awaitable[KeyRecord | None]: ...

    def use_nonce(self, nonce: str) -> Awaitable[bool]: ...

    def wallet_role(self, account: str) -> Awaitable[str]: ...

    def prune_nonces(self, keep_s: int) -> Awaitable[int]:
        """Forget the nonces used more than `keep_s` ago; return how many."""
        ...


def new_nonce() -> str:
    """Return a fresh challenge nonce: 128 random bits, hex."""
    return secrets.token_hex(16)


def new_key_pair() -> tuple[str, str, bytes]:
    """Return (key id, private key as base64url, raw public key) of a new Ed25519 key."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = "k" + secrets.token_hex(11)
    return key_id, base64.urlsafe_b64encode(seed).decode(), public


def sign_login(private_key_b64: str, nonce: str, timestamp_ms: int, key_id: str) -> str:
    """Sign a login with a base64url Ed25519 private key (what a client does)."""
    private = Ed25519PrivateKey.from_private_bytes(_b64decode(private_key_b64))
    return base64.b64encode(private.sign(login_payload(nonce, timestamp_ms, key_id))).decode()


def check_timestamp(timestamp_ms: int, now_ns: int, window_ms: int) -> None:
    """Refuse a login whose timestamp is further than `window_ms` from the server's clock."""
    skew_ms = abs(now_ns // 1_000_000 - timestamp_ms)
    if skew_ms > window_ms:
        raise AuthError(f"timestamp is {skew_ms} ms from the server clock (window {window_ms} ms)")


def verify_key_signature(record: KeyRecord, nonce: str, login: Login) -> None:
    """Raise AuthError unless the login's signature verifies under the key's public key."""
    try:
        signature = _b64decode(login.signature)
        Ed25519PublicKey.from_public_bytes(record.public_key).verify(
            signature, login_payload(nonce, login.timestamp_ms, login.key_id)
        )
    except (InvalidSignature, ValueError, binascii.Error) as error:
        raise AuthError("signature does not verify") from error


def recover_wallet(nonce: str, login: LoginWallet, chain_id: int) -> str:
    """Return the checksummed address that signed the login; raise AuthError if it is not
    the address the login names."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from eth_utils.address import to_checksum_address

    address = to_checksum_address(login.address)
    typed = wallet_typed_data(address, nonce, login.timestamp_ms, chain_id)
    try:
        signer = Account.recover_message(encode_typed_data(full_message=typed),
                                         signature=login.signature)
    except Exception as error:  # eth_account raises several types for a bad signature
        raise AuthError("wallet signature does not verify") from error
    if signer != address:
        raise AuthError("wallet signature is not by the address given")
    return address


def _b64decode(text: str) -> bytes:
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class Authenticator:
    """Verify logins against a KeyStore, caching key records for `cache_ttl_ms`."""

    def __init__(self, store: KeyStore, *, chain_id: int, cache_ttl_ms: int) -> None:
        self.store = store
        self.chain_id = chain_id
        self.cache_ttl_ns = cache_ttl_ms * 1_000_000
        self._cache: dict[str, tuple[int, KeyRecord | None]] = {}

    async def login(self, nonce: str, login: Login) -> Principal:
        record = await self._key(login.key_id)
        if record is None or record.revoked:
            raise AuthError("unknown or revoked key")
        verify_key_signature(record, nonce, login)
        await self._use_nonce(nonce)
        return Principal(account=record.account, role=record.role, credential=record.key_id)

    async def login_wallet(self, nonce: str, login: LoginWallet) -> Principal:
        address = recover_wallet(nonce, login, self.chain_id)
        await self._use_nonce(nonce)
        role = await self.store.wallet_role(address)
        return Principal(account=address, role=role, credential="wallet")

    async def _use_nonce(self, nonce: str) -> None:
        if not await self.store.use_nonce(nonce):
            raise AuthError("nonce was used before")

    async def _key(self, key_id: str) -> KeyRecord | None:
        now_ns = time.monotonic_ns()
        cached = self._cache.get(key_id)
        if cached is not None and now_ns - cached[0] < self.cache_ttl_ns:
            return cached[1]
        record = await self.store.get_key(key_id)
        if len(self._cache) >= KEY_CACHE_MAX:
            self._cache.clear()
        self._cache[key_id] = (now_ns, record)
        return record
