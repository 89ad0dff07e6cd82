"""The native matching engine core (Rust): byte-identical to `matching_engine.core`."""

from typing import TypeAlias

# An order as `matching_engine.core.snapshot.OrderState`, field for field.
OrderTuple: TypeAlias = tuple[int, str, str, bool, int, int, int, str, int | None, bool, str]
# An instrument as `InstrumentState`, field for field.
InstrumentTuple: TypeAlias = tuple[
    str, str, str, int, int, int, int, int, int, bool, list[OrderTuple], list[OrderTuple]
]
# `EngineSnapshot` without its version: (time, seq, order_counter, trade_counter,
# instruments, balances as (account, asset, available, held) rows, expiries, deposit_ids,
# supply as (asset, amount) rows).
StateTuple: TypeAlias = tuple[
    int, int, int, int, list[InstrumentTuple], list[tuple[str, str, int, int]],
    list[tuple[int, int, str, str]], list[str], list[tuple[str, int]],
]

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
    def export_state(self) -> StateTuple:
        """The whole state in `StateTuple`'s shape (sorted rows)."""
    @staticmethod
    def restore(state: StateTuple) -> NativeEngine:
        """An engine holding `state`; ValueError names what in it is inconsistent."""
    @property
    def seq(self) -> int:
        """The seq of the last event (0 before any)."""
