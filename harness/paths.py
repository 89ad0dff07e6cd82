"""Where the harness keeps its downloads and finds the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Return gpux's cache dir: `$XDG_CACHE_HOME/gpux`, else `~/.cache/gpux`."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg_cache) if xdg_cache else Path.home() / ".cache"
    return base / "gpux"


def tail(path: Path, line_count: int = 40) -> str:
    """Return the last `line_count` lines of a text file, or a note that it is missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size_bytes = handle.tell()
            handle.seek(max(0, size_bytes - 64 * 1024))
            data = handle.read()
    except OSError as error:
        return f"(no log at {path}: {error.strerror})"
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-line_count:])
