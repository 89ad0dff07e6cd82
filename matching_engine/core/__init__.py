"""The pure matching engine core: books, accounts, matching. No I/O, no clock."""

from matching_engine.core.engine import Engine
from matching_engine.core.state import InvariantError

__all__ = ["Engine", "InvariantError"]
