"""The base of the errors a service branches on by flag rather than by text."""

from __future__ import annotations

__all__ = ["RetriableError"]


class RetriableError(Exception):
    """A failure whose `retriable` flag says whether trying again may succeed; a subclass
    sets its default, a raiser may override it for one instance."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
