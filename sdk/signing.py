"""Sign logins the way the gateway checks them (docs/asyncapi.yaml, Login and LoginWallet)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk.requests import wire_fields
from wsapi.login import login_payload, wallet_typed_data
from wsapi.requests import CancelOnDisconnect, Login, LoginWallet


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: its id and the base64url Ed25519 private key `gpux gateway add-key` printed."""

    key_id: str
    private_key: str

    def login_request(
        self, nonce: str, timestamp_ms: int, *, req_id: int,
        cancel_on_disconnect: CancelOnDisconnect = "off",
    ) -> Login:
        """Return the signed `login` request answering the hello's `nonce`."""
        payload = login_payload(nonce, timestamp_ms, self.key_id)
        seed = base64.urlsafe_b64decode(self.private_key + "=" * (-len(self.private_key) % 4))
        signature = Ed25519PrivateKey.from_private_bytes(seed).sign(payload)
        return Login(req_id=req_id, key_id=self.key_id, timestamp_ms=timestamp_ms,
                     signature=base64.b64encode(signature).decode(),
                     cancel_on_disconnect=cancel_on_disconnect)

    def login_fields(self, nonce: str, timestamp_ms: int) -> dict[str, Any]:
        """Return the `login` request's fields, `op` included, for a frame of one's own."""
        return _without_req_id(self.login_request(nonce, timestamp_ms, req_id=0))


@dataclass(frozen=True, slots=True)
class Wallet:
    """An Ethereum account that logs in with an EIP-712 signature (hex private key)."""

    private_key: str
    chain_id: int = 1

    @property
    def address(self) -> str:
        from eth_account import Account

        return str(Account.from_key(self.private_key).address)

    def login_request(
        self, nonce: str, timestamp_ms: int, *, req_id: int,
        cancel_on_disconnect: CancelOnDisconnect = "off",
    ) -> LoginWallet:
        """Return the signed `login_wallet` request answering the hello's `nonce`."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        address = self.address
        typed = wallet_typed_data(address, nonce, timestamp_ms, self.chain_id)
        signed = Account.sign_message(encode_typed_data(full_message=typed), self.private_key)
        signature = signed.signature.hex()
        if not signature.startswith("0x"):
            signature = "0x" + signature
        return LoginWallet(req_id=req_id, address=address, timestamp_ms=timestamp_ms,
                           signature=signature, cancel_on_disconnect=cancel_on_disconnect)

    def login_fields(self, nonce: str, timestamp_ms: int) -> dict[str, Any]:
        """Return the `login_wallet` request's fields, `op` included, for a frame of one's own."""
        return _without_req_id(self.login_request(nonce, timestamp_ms, req_id=0))


Credentials = ApiKey | Wallet


def _without_req_id(request: Login | LoginWallet) -> dict[str, Any]:
    fields = wire_fields(request)
    del fields["req_id"]
    return fields
