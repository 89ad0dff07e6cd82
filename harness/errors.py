"""Errors raised by the service harness."""

from __future__ import annotations

from pathlib import Path


class ServiceError(Exception):
    """A service could not be installed, started, reached or stopped.

    The message says what failed; `log_path` (when known) points at the service's log,
    and the message carries its last lines.
    """

    def __init__(self, message: str, *, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path
