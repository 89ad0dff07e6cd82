"""The native matching engine core (Rust): byte-identical to `matching_engine.core`; and
the price index calculator of `index.calculator`."""

from collections.abc import Iterable

class NativeEngine:
    """Commands in as JSON Lines bytes, events out as JSON Lines bytes.

    `apply_batch` gives, for any input, exactly the bytes that
    `matching_engine.replay.replay_lines` gives with the Python `Engine` over the same
    bytes; state carries over from one batch to the next.
    """

    def __init__(self) -> None: ...
    def apply_batch(self, commands: bytes) -> bytes:
        """Apply each non-blank line as a command; return the events' JSON Lines."""
    def final_state(self) -> str:
        """Balances and open orders as `Engine.final_state()`, a JSON document."""
    def validate(self) -> str | None:
        """Check every internal invariant; return the first broken one, or None."""
    def profile_batch(self, commands: bytes) -> tuple[float, float, int]:
        """`apply_batch` timed in parts: (decode seconds, apply seconds, event bytes)."""
    def snapshot(self) -> bytes:
        """The whole state in the format of `matching_engine.core.snapshot`, byte for byte
        what `Engine.snapshot()` gives for the same state; OverflowError when an amount is
        beyond what the format holds."""
    @staticmethod
    def restore(snapshot: bytes) -> NativeEngine:
        """An engine holding a snapshot's state (of either core); ValueError says what in
        it is wrong."""
    @property
    def seq(self) -> int:
        """The seq of the last event (0 before any)."""


class IndexSeqGapError(Exception):
    """A log whose seqs do not follow on: args (expected seq, got seq in decimal digits)."""

class IndexEventError(Exception):
    """An event the index cannot follow: args (message, seq or None)."""

IndexRow = tuple[str, str, int, int | None, str, int, int, int, bool, bytes, int]

class NativeIndexCalculator:
    """`index.calculator.IndexCalculator` in Rust: the same values and errors for the same
    records fed in the same batches."""

    def __init__(self, event_types: list[str], prefix_bytes: int) -> None: ...
    def feed(self, records: Iterable[bytes]) -> list[IndexRow]:
        """Apply the next encoded events; return the values released, as tuples in
        `index.value.IndexValue`'s field order."""
    @property
    def seq(self) -> int:
        """The seq of the last event fed (0 before any)."""
