"""Name the ways the agent fails, so the command prints one clear line and callers branch on a
type, not on text.

`retriable` says whether running the same step again may succeed (the venue unreachable); a
wrong profile or flag is not: the operator has to fix it.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "InventoryError", "RegistrationError"]


class AgentError(Exception):
    """Fail an agent step; `retriable` says whether trying again may succeed."""

    retriable: bool = False


class InventoryError(AgentError):
    """Refuse an inventory that cannot be read or does not describe one GPU class."""


class ConfigError(AgentError):
    """Refuse an agent configuration (a flag, a file or a key) that cannot work."""


class RegistrationError(AgentError):
    """The venue refused the node, or could not be reached to register it."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
