"""Checks every service's settings share."""

from __future__ import annotations

__all__ = ["require_positive"]


def require_positive(config: object, *names: str) -> None:
    """Refuse `config` when one of the named fields is below 1; ValueError names it."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
