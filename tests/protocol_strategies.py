"""What the protocol's property and fuzz tests share: the command and event classes, the wire
formats as a strategy, and the parts of a strategy from msgspec type information that do not
depend on how valid the values must be (int64 bounds; booleans, None, literals, unions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, get_args

import msgspec
import msgspec.inspect as inspect
from hypothesis import strategies as st

from protocol import FORMATS, AnyCommand, AnyEvent

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

COMMAND_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(AnyCommand)
EVENT_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(AnyEvent)
formats = st.sampled_from(FORMATS)


def int64_bounds(info: inspect.IntType) -> tuple[int, int]:
    """Return the lowest and highest value within the Meta bounds and within int64 (so that
    msgpack can carry them)."""
    low, high = INT64_MIN, INT64_MAX
    if info.ge is not None:
        low = max(low, info.ge)
    if info.gt is not None:
        low = max(low, info.gt + 1)
    if info.le is not None:
        high = min(high, info.le)
    if info.lt is not None:
        high = min(high, info.lt - 1)
    return low, high


def choice_values(
    info: inspect.Type, values_of: Callable[[inspect.Type], st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any] | None:
    """Return a strategy for a bool, None, literal or union field (a union's members drawn
    from `values_of`), or None for any other type."""
    if isinstance(info, inspect.BoolType):
        return st.booleans()
    if isinstance(info, inspect.NoneType):
        return st.none()
    if isinstance(info, inspect.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, inspect.UnionType):
        return st.one_of(*(values_of(member) for member in info.types))
    return None
