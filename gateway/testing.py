"""Test support for the gateway: `ApiContract` checks frames against docs/asyncapi.yaml,
`MemoryKeyStore` keeps keys and nonces in memory. (A venue to test against is
`gpux.venue.Venue.running`.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REFUSAL_CODES = frozenset({"invalid_request", "unknown_op", "invalid_json"})


class ApiContract:
    """Check frames against docs/asyncapi.yaml and count which messages were seen.

    Needs `jsonschema` and `pyyaml` (test dependencies), imported only when used.
    """

    def __init__(self, path: str | None = None) -> None:
        import collections
        import pathlib

        import yaml  # type: ignore[import-untyped]

        doc_path = pathlib.Path(path) if path else (
            pathlib.Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml")
        self.document = yaml.safe_load(doc_path.read_text())
        self.components = self.document["components"]
        self.request_schema_by_op: dict[str, str] = {}
        self.message_schema_by_type: dict[str, str] = {}
        for message in self.components["messages"].values():
            name = message["payload"]["$ref"].rsplit("/", 1)[1]
            properties = self.components["schemas"][name].get("properties", {})
            if "type" not in properties:
                self.request_schema_by_op[properties["op"]["const"]] = name
            else:
                self.message_schema_by_type[properties["type"]["const"]] = name
        self._validators: dict[str, object] = {}
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self.violations: list[str] = []

    def _validator(self, name: str) -> object:
        from jsonschema import Draft7Validator  # type: ignore[import-untyped]

        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft7Validator(
                {"$ref": f"#/components/schemas/{name}", "components": self.components})
        return validator

    def hook(self) -> Callable[[str, str], None]:
        """Return a frame hook for one client: it pairs refused frames with their replies.

        A client frame the document refuses must be refused by the gateway too (an error
        reply with code invalid_request, unknown_op or invalid_json); such a frame is not a
        violation, any other answer to it is.
        """
        refused_by_document: dict[object, str] = {}

        def check(direction: str, text: str) -> None:
            import json

            frame = json.loads(text)
            problems = self.check(direction, text)
            if direction == "send" and problems:
                self.violations[-len(problems):] = []
                refused_by_document[frame.get("req_id")] = problems[0]
            elif direction == "recv" and frame.get("type") == "reply":
                problem = refused_by_document.pop(frame.get("req_id"), None)
                code = (frame.get("error") or {}).get("code")
                if problem is not None and code not in _REFUSAL_CODES:
                    self.violations.append(f"the gateway answered {code or frame['status']} "
                                           f"to a frame the document refuses: {problem}")

        return check

    def check(self, direction: str, text: str) -> list[str]:
        """Validate one frame sent ("send") or received ("recv"); return its violations."""
        import json

        frame = json.loads(text)
        if direction == "send":
            tag = frame.get("op")
            name = self.request_schema_by_op.get(tag)
        else:
            tag = frame.get("type")
            name = self.message_schema_by_type.get(tag)
        if name is None:
            problem = f"{direction}: no schema for {text[:200]}"
            self.violations.append(problem)
            return [problem]
        self.seen[(direction, tag)] += 1
        if direction == "recv" and tag == "reply":
            self.seen[("reply", f"{frame.get('op')}:{frame.get('status')}")] += 1
        errors = list(self._validator(name).iter_errors(frame))  # type: ignore[attr-defined]
        problems = []
        for error in errors[:3]:
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{direction} {name} at {path}: {error.message}: {text[:300]}")
        self.violations += problems
        return problems

    def unseen(self) -> list[str]:
        """Return the documented messages never seen in traffic."""
        names = [("send", op) for op in self.request_schema_by_op]
        names += [("recv", kind) for kind in self.message_schema_by_type]
        return [f"{direction}:{tag}" for direction, tag in names
                if self.seen[(direction, tag)] == 0]


class MemoryKeyStore:
    """A KeyStore held in memory (for benchmarks and demos without PostgreSQL)."""

    def __init__(self) -> None:
        from gateway.auth import KeyRecord

        self._records: dict[str, KeyRecord] = {}
        self._nonces: dict[str, float] = {}  # nonce -> when used (monotonic s)

    def add_key(self, account: str, role: str) -> tuple[str, str]:
        """Create a key; return (key id, private key) as `gpux gateway add-key` prints them."""
        from gateway.auth import KeyRecord, new_key_pair

        key_id, private_key, public_key = new_key_pair()
        self._records[key_id] = KeyRecord(key_id=key_id, account=account, role=role,
                                          public_key=public_key)
        return key_id, private_key

    def add_existing_key(self, account: str, role: str, key_id: str, private_key: str) -> None:
        """Hold a key another store made (`add_key`'s output), e.g. in a second gateway."""
        import base64

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from gateway.auth import KeyRecord

        private = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(private_key))
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._records[key_id] = KeyRecord(key_id=key_id, account=account, role=role,
                                          public_key=public)

    async def get_key(self, key_id: str) -> Any:
        return self._records.get(key_id)

    async def use_nonce(self, nonce: str) -> bool:
        import time

        if nonce in self._nonces:
            return False
        self._nonces[nonce] = time.monotonic()
        return True

    async def prune_nonces(self, keep_s: int) -> int:
        import time

        cutoff = time.monotonic() - keep_s
        old = [nonce for nonce, used in self._nonces.items() if used < cutoff]
        for nonce in old:
            del self._nonces[nonce]
        return len(old)

    async def wallet_role(self, account: str) -> str:
        return "trader"
