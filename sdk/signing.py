"""Sign logins the way the gateway checks them (docs/asyncapi.yaml, Login and LoginWallet)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wsapi.login import login_payload, wallet_typed_data


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: its id and the base64url Ed25519 private key `gpux gateway add-key` printed."""

    key_id: str
    private_key: str

    def login_fields(self, nonce: str, timestamp_ms: int) -> dict[str, Any]:
        payload = login_payload(nonce, timestamp_ms, self.key_id)
        seed = base64.urlsafe_b64decode(self.private_key + "=" * (-len(self.private_key) % 4))
        signature = Ed25519PrivateKey.from_private_bytes(seed).sign(payload)
        return {"op": "login", "key_id": self.key_id, "timestamp_ms": timestamp_ms,
                "signature": base64.b64encode(signature).decode()}


@dataclass(frozen=True, slots=True)
class Wallet:
    """An Ethereum account that logs in with an EIP-712 signature (hex private key)."""

    private_key: str
    chain_id: int = 1

    @property
    def address(self) -> str:
        from eth_account import Account

        return str(Account.from_key(self.private_key).address)

    def login_fields(self, nonce: str, timestamp_ms: int) -> dict[str, Any]:
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        address = self.address
        typed = wallet_typed_data(address, nonce, timestamp_ms, self.chain_id)
        signed = Account.sign_message(encode_typed_data(full_message=typed), self.private_key)
        signature = signed.signature.hex()
        if not signature.startswith("0x"):
            signature = "0x" + signature
        return {"op": "login_wallet", "address": address, "timestamp_ms": timestamp_ms,
                "signature": signature}


Credentials = ApiKey | Wallet
