"""The pure matching engine core: books, accounts, matching. No I/O, no clock.

| module | what it owns |
|---|---|
| `engine` | `Engine`: command dispatch, listings, deposits, withdrawals, ticks, closes |
| `orders` | new, cancel, amend and mass cancel; matching |
| `delivery` | issuing bonded capacity, redemption at close, delivery reports (v2) |
| `strips` | strip orders (v2): their checks, the simulation the gateway quotes, execution |
| `book` | one instrument's price levels |
| `state` | the mutable state and its primitive moves (balances, holds, events) |
| `views` | read-only views: the replay final-state document |
| `invariants` | the internal invariants, checked from scratch (tests switch this on) |
| `snapshot` | the snapshot format both cores read and write |
"""

from matching_engine.core.engine import Engine
from matching_engine.core.state import InvariantError

__all__ = ["Engine", "InvariantError"]
