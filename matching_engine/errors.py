"""The ways the engine service refuses to run."""

from __future__ import annotations

__all__ = ["EngineStateError"]


class EngineStateError(Exception):
    """The engine's recovered state disagrees with the event log: refuse to publish."""
