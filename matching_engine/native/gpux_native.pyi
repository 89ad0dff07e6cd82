"""The native matching engine core (Rust): byte-identical to `matching_engine.core`."""

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
