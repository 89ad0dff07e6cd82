"""The two matching cores behind one face for the engine service: log records in, event bytes out.

`PythonCore` runs `matching_engine.core.Engine`, one `decode_command` per record, and can
snapshot and restore. `NativeCore` runs the Rust core (`gpux_native.NativeEngine`, built by
`make native`), which `tests/property/test_native_differential.py` holds byte-identical to
the Python core over JSON Lines; a batch of records goes in as one buffer and the events
come back as one, so per command only the Rust code runs. Both cores write and read the
same snapshot format (`matching_engine.core.snapshot`, which the Rust core implements in
`snapshot.rs`), byte for byte the same for the same state, so a venue can change its core
and keep its snapshots.

A log record is one command; JSON Lines are not quite records: the native core splits on
`\\n`, skips blank lines and strips a trailing `\\r`, where the service decodes a record
whole. A record that is blank or holds `\\r` or `\\n` (nothing the gateway writes) is
therefore handed to the native core as a line that decodes to the same command or
`MalformedCommand` as the record (its `error` text aside, which no event carries), checked
with the Python decoder; when no such line is found the core raises `CoreError` rather
than diverge from the Python core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

import msgspec

from matching_engine.core import Engine
from matching_engine.core.snapshot import snapshot_digest
from matching_engine.core.state import InvariantError
from protocol import AnyCommand, MalformedCommand, decode_command, encode

if TYPE_CHECKING:
    from gpux_native import NativeEngine

CORES: Final = ("python", "native")
_NOTHING_SALVAGED: Final = b"x"


class CoreError(Exception):
    """The native core cannot apply a record exactly as the Python core would."""


class Core(Protocol):
    """What the engine service, replay and the tests ask of a matching core; both cores
    give the same answers to the same records (tests/property/test_native_differential)."""

    @property
    def name(self) -> str:
        """"python" or "native"."""
        ...

    @property
    def seq(self) -> int:
        """The seq of the last event (0 before any)."""
        ...

    def apply_records(self, values: Sequence[bytes]) -> list[bytes]:
        """Apply each record as one command; return the events' encoded payloads."""
        ...

    def replay(self, values: Sequence[bytes]) -> None:
        """Apply commands whose events were published already; build no payloads."""
        ...

    def snapshot(self) -> bytes:
        """The whole state in the snapshot format both cores read."""
        ...

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A core holding a snapshot's state (of either core); ValueError names a fault."""
        ...

    def validate(self) -> str | None:
        """Check every internal invariant; return the first broken one, or None."""
        ...

    def final_state(self) -> dict[str, Any]:
        """Balances and open orders in the replay final-state format."""
        ...

    def digest(self) -> str:
        """A digest of the whole state: equal across cores when their states are."""
        ...


class PythonCore:
    """The pure-Python engine core; snapshots supported."""

    name: Final = "python"
    snapshots = True

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else Engine()

    @property
    def seq(self) -> int:
        return self.engine.seq

    def apply_records(self, values: Sequence[bytes]) -> list[bytes]:
        """Apply each record as one command; return the events' encoded payloads."""
        apply = self.engine.apply
        return [encode(event) for value in values for event in apply(decode_command(value))]

    def replay(self, values: Sequence[bytes]) -> None:
        """Apply commands whose events were published already; build no payloads."""
        apply = self.engine.apply
        for value in values:
            apply(decode_command(value))

    def snapshot(self) -> bytes:
        return self.engine.snapshot()

    @classmethod
    def restore(cls, data: bytes) -> Self:
        return cls(Engine.restore(data))

    def validate(self) -> str | None:
        try:
            self.engine.validate()
        except InvariantError as broken:
            return str(broken)
        return None

    def final_state(self) -> dict[str, Any]:
        return self.engine.final_state()

    def digest(self) -> str:
        return snapshot_digest(self.snapshot())


class NativeCore:
    """The Rust engine core (gpux_native); it writes and reads snapshots itself, in the
    Python core's format."""

    name: Final = "native"
    snapshots = True

    def __init__(self, engine: NativeEngine | None = None) -> None:
        self.engine = engine if engine is not None else _native_module().NativeEngine()

    @property
    def seq(self) -> int:
        return int(self.engine.seq)

    def apply_records(self, values: Sequence[bytes]) -> list[bytes]:
        """Apply each record as one command; return the events' encoded payloads."""
        events: bytes = self.engine.apply_batch(b"\n".join([_as_line(v) for v in values]))
        if not events:
            return []
        payloads = events.split(b"\n")
        payloads.pop()  # the empty piece after the last event's newline
        return payloads

    def replay(self, values: Sequence[bytes]) -> None:
        self.engine.apply_batch(b"\n".join([_as_line(value) for value in values]))

    def snapshot(self) -> bytes:
        return self.engine.snapshot()

    def validate(self) -> str | None:
        return self.engine.validate()

    def final_state(self) -> dict[str, Any]:
        state: dict[str, Any] = msgspec.json.decode(self.engine.final_state())
        return state

    def digest(self) -> str:
        return snapshot_digest(self.snapshot())

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Build the core from a snapshot of either core; ValueError names what is wrong."""
        return cls(_native_module().NativeEngine.restore(data))


def _native_module() -> Any:
    try:
        import gpux_native
    except ImportError as error:
        raise CoreError("the native core is not built: run `make native`") from error
    return gpux_native


def _as_line(value: bytes) -> bytes:
    """Return `value` as a JSON line that the native core reads as the same command."""
    if value[:1] == b"{" and b"\n" not in value and b"\r" not in value:
        return value
    return equivalent_line(value)


def equivalent_line(value: bytes) -> bytes:
    """Find a line without `\\r`/`\\n`, not blank, that decodes as `value` decodes."""
    target = as_applied(decode_command(value))
    candidates = [value.replace(b"\r", b" ").replace(b"\n", b" ")]
    if not isinstance(target, MalformedCommand):
        candidates.append(encode(target))
    candidates.append(_NOTHING_SALVAGED)
    for candidate in candidates:
        if candidate.strip() and as_applied(decode_command(candidate)) == target:
            return candidate
    raise CoreError(f"no JSON line decodes as the record {value[:80]!r} does; "
                    "run the engine with --core python")


def as_applied(command: AnyCommand | MalformedCommand) -> AnyCommand | MalformedCommand:
    """Return the command as the engine sees it: a malformed one's `error` text unused."""
    if isinstance(command, MalformedCommand):
        return msgspec.structs.replace(command, error="")
    return command


def new_core(name: str) -> Core:
    if name == "python":
        return PythonCore()
    if name == "native":
        return NativeCore()
    raise ValueError(f"core must be one of {CORES}, got {name!r}")
