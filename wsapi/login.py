"""What a login signs (docs/asyncapi.yaml, Login): the gateway verifies, a client signs.

- API key: Ed25519 over the UTF-8 bytes of `gpux-login-v1\n{nonce}\n{timestamp_ms}\n{key_id}`;
  the private key is the 32-byte seed in base64url, as `gpux gateway add-key` prints it.
- Wallet: EIP-712 typed data `Login(address wallet,string nonce,uint64 timestamp)` in the
  domain {name: "gpux", version: "1", chainId} (`hello.eip712_chain_id`).
"""

from __future__ import annotations

from typing import Any, Final

LOGIN_PREFIX: Final = "gpux-login-v1"
EIP712_DOMAIN_NAME: Final = "gpux"
EIP712_DOMAIN_VERSION: Final = "1"


def login_payload(nonce: str, timestamp_ms: int, key_id: str) -> bytes:
    """Return the bytes an API-key login signs."""
    return f"{LOGIN_PREFIX}\n{nonce}\n{timestamp_ms}\n{key_id}".encode()


def wallet_typed_data(address: str, nonce: str, timestamp_ms: int, chain_id: int) -> dict[str, Any]:
    """Return the EIP-712 typed data a wallet login signs."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Login": [
                {"name": "wallet", "type": "address"},
                {"name": "nonce", "type": "string"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "Login",
        "domain": {"name": EIP712_DOMAIN_NAME, "version": EIP712_DOMAIN_VERSION,
                   "chainId": chain_id},
        "message": {"wallet": address, "nonce": nonce, "timestamp": timestamp_ms},
    }
