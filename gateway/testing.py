"""Run a venue (engine and gateways) in this process, for tests, benchmarks and demos.

    async with Venue.start(event_log, namespace="t1.", store=store) as venue:
        url = venue.urls[0]

Each venue uses its own topic namespace, so many can share one Kafka cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from eventlog.port import EventLog, TopicSpec
from gateway.auth import KeyStore
from gateway.config import GatewayConfig
from gateway.service import GatewayService
from matching_engine.config import EngineConfig
from matching_engine.service import EngineService

READY_TIMEOUT_S = 60.0
_REFUSAL_CODES = frozenset({"invalid_request", "unknown_op", "invalid_json"})


@dataclass
class Venue:
    engine: EngineService
    gateways: list[GatewayService]
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"ws://{g.config.host}:{g.port}" for g in self.gateways]

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        event_log: EventLog,
        *,
        namespace: str,
        store: KeyStore | None = None,
        config: GatewayConfig | None = None,
        gateways: int = 1,
        engine_batch_interval_ms: int = 2,
    ) -> AsyncIterator[Venue]:
        """Run an engine and `gateways` gateways on `namespace` until the block exits."""
        base = config or GatewayConfig()
        engine = EngineService(event_log, EngineConfig(
            topic_namespace=namespace, transactional_id=f"{namespace}engine",
            group_id=f"{namespace}engine", batch_interval_ms=engine_batch_interval_ms,
        ))
        await event_log.create_topics([TopicSpec(name=engine.config.commands_topic),
                                       TopicSpec(name=engine.config.events_topic)])
        services = [
            GatewayService(event_log, dataclasses.replace(
                base, topic_namespace=namespace, port=0,
                gateway_id=f"{base.gateway_id}{index}",
                clock_interval_ms=base.clock_interval_ms if index == 0 else None,
            ), store)
            for index in range(gateways)
        ]
        venue = cls(engine=engine, gateways=services, stop=asyncio.Event())
        venue.tasks.append(asyncio.create_task(engine.run(venue.stop), name="venue-engine"))
        venue.tasks += [asyncio.create_task(g.run(venue.stop), name=f"venue-gateway{i}")
                        for i, g in enumerate(services)]
        try:
            await venue._wait_ready()
            yield venue
        finally:
            venue.stop.set()
            await asyncio.gather(*venue.tasks, return_exceptions=True)

    async def _wait_ready(self) -> None:
        """Return when the engine and every gateway are ready; raise if one of them died."""
        ready = asyncio.ensure_future(asyncio.gather(
            self.engine.ready.wait(), *(g.ready.wait() for g in self.gateways)))
        try:
            waited: list[asyncio.Future[Any]] = [ready, *self.tasks]
            await asyncio.wait(waited, timeout=READY_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not ready.done():
                ready.cancel()
        for task in self.tasks:
            if task.done():
                task.result()
                raise RuntimeError(f"{task.get_name()} stopped before it was ready")
        if not ready.done() or ready.cancelled():
            raise TimeoutError(f"venue not ready within {READY_TIMEOUT_S} s")


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
