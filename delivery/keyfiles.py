"""Create a private key file once, whole or not at all.

Every key the delivery layer keeps on disk (the venue's CA, the sample signer, the prober's
SSH key, a node's host key) is made on first use and never replaced. `create_private_file`
writes the bytes to a temporary file beside `path` (mode 0600, flushed to disk) and then
links it to `path`: a process killed midway leaves no empty or half-written key behind for
the next start to trip over, and of two creators at once the first one's key stays (the
other gets FileExistsError, as with O_EXCL, and reads that key).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private_file"]


def create_private_file(path: Path, data: bytes) -> None:
    """Write `data` to the new file `path`, readable by its owner alone; raise
    FileExistsError, leaving it untouched, when `path` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
