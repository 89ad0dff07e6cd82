"""Helpers shared by tests: wait for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout_s} s")
        await asyncio.sleep(interval_s)
