"""Sign logins the way the gateway checks them (docs/asyncapi.yaml, Login and LoginWallet)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: its id and the base64url Ed25519 private key `gpux gateway add-key` printed."""

    key_id: str
    private_key: str

    def login_fields(self, nonce: str, timestamp_ms: int) -> dict[str, Any]:
        payload = f"gpux-login-v1\n{nonce}\n{timestamp_ms}\n{self.key_id}".encode()
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
        typed = {
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"},
                                 {"name": "version", "type": "string"},
                                 {"name": "chainId", "type": "uint256"}],
                "Login": [{"name": "wallet", "type": "address"},
                          {"name": "nonce", "type": "string"},
                          {"name": "timestamp", "type": "uint64"}],
            },
            "primaryType": "Login",
            "domain": {"name": "gpux", "version": "1", "chainId": self.chain_id},
            "message": {"wallet": address, "nonce": nonce, "timestamp": timestamp_ms},
        }
        signed = Account.sign_message(encode_typed_data(full_message=typed), self.private_key)
        signature = signed.signature.hex()
        if not signature.startswith("0x"):
            signature = "0x" + signature
        return {"op": "login_wallet", "address": address, "timestamp_ms": timestamp_ms,
                "signature": signature}


Credentials = ApiKey | Wallet
