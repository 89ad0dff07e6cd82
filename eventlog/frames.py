"""Store checksummed frames in an append-only file, and find where a crash tore one.

A frame is `magic u32 | payload_length u32 | crc32(payload) u32 | payload`, little endian.
The magic lets a scan tell a frame header from noise; the CRC (zlib.crc32) tells an intact
payload from a torn or damaged one.

Opening a file scans it from the start. A damaged frame (short header, wrong magic, length
past the end of the file, CRC mismatch) is a *torn tail* when no intact frame follows it:
a crash during the last append leaves exactly that, so the caller truncates it. When an
intact frame does follow, the damage is in the middle of the log and nothing is dropped:
the scan raises `CorruptRecordError` naming the file and byte position.

The functions here do blocking file I/O and know nothing of asyncio or of what the payloads
mean; `eventlog.embedded_store` gives the payloads their meaning.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from eventlog.errors import CorruptRecordError, TornRecordError

__all__ = [
    "FRAME_HEADER",
    "FrameFile",
    "encode_frame",
    "fsync_directory",
    "scan_frames",
    "write_file_atomically",
]

MAGIC = 0x58555047  # b"GPUX" read as a little-endian u32
FRAME_HEADER = struct.Struct("<III")
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_READ_BYTES_MAX = 1 << 30


def encode_frame(payload: bytes) -> bytes:
    """Return `payload` framed with its length and checksum, ready to append."""
    header = FRAME_HEADER.pack(MAGIC, len(payload), zlib.crc32(payload))
    return header + payload


def _damage_error(
    data: bytes | mmap.mmap, path: Path, position: int, reason: str, frame_bytes_max: int
) -> TornRecordError | CorruptRecordError:
    """Classify the damaged frame at `position`: torn tail, or corruption with data after it."""
    candidate = data.find(_MAGIC_BYTES, position + 1)
    while candidate != -1:
        if _frame_damage(data, candidate, frame_bytes_max) is None:
            return CorruptRecordError(
                f"{reason}, followed by an intact frame at byte {candidate}",
                path=path,
                position=position,
                offset=None,
            )
        candidate = data.find(_MAGIC_BYTES, candidate + 1)
    return TornRecordError(reason, path=path, position=position, offset=None)


def _frame_damage(data: bytes | mmap.mmap, position: int, frame_bytes_max: int) -> str | None:
    """Say what is wrong with the frame at `position`, or None if it is intact."""
    size = len(data)
    if size - position < FRAME_HEADER.size:
        return "partial frame header"
    magic, length, crc = FRAME_HEADER.unpack_from(data, position)
    if magic != MAGIC:
        return "bad frame magic"
    if length > frame_bytes_max:
        return f"frame length {length} over the maximum {frame_bytes_max}"
    end = position + FRAME_HEADER.size + length
    if end > size:
        return "frame extends past the end of the file"
    if zlib.crc32(data[position + FRAME_HEADER.size : end]) != crc:
        return "frame checksum mismatch"
    return None


def scan_frames(
    data: bytes | mmap.mmap, path: Path, frame_bytes_max: int
) -> Iterator[tuple[int, bytes]]:
    """Yield `(position, payload)` of each intact frame in order.

    Raise `TornRecordError` (position = where to truncate) after the last intact frame if
    the file ends in a torn frame, or `CorruptRecordError` if damage has data after it.
    """
    position = 0
    size = len(data)
    while position < size:
        reason = _frame_damage(data, position, frame_bytes_max)
        if reason is not None:
            raise _damage_error(data, path, position, reason, frame_bytes_max)
        _, length, _ = FRAME_HEADER.unpack_from(data, position)
        start = position + FRAME_HEADER.size
        yield position, data[start : start + length]
        position = start + length


class FrameFile:
    """Own one append-only file of frames: scan, truncate, append, sync and read it."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.size = size
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> FrameFile:
        """Open (creating if missing) the file at `path` for appending and reading."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        return cls(path, fd, size)

    def scan(self, frame_bytes_max: int) -> Iterator[tuple[int, bytes]]:
        """Yield every intact frame; see `scan_frames` for how damage is reported."""
        if self.size == 0:
            return
        with mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ) as data:
            yield from scan_frames(data, self.path, frame_bytes_max)

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes and make the cut durable."""
        if not 0 <= size <= self.size:
            raise ValueError(f"cannot truncate {self.path} of {self.size} bytes to {size}")
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def append(self, data: bytes) -> int:
        """Write `data` at the end of the file; return the position it starts at."""
        position = self.size
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], position + written)
        except OSError:
            self._cut_quietly(position)
            raise
        self.size = position + len(data)
        return position

    def _cut_quietly(self, size: int) -> None:
        """Remove a partly written append so the next one does not land after garbage."""
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            return  # the next open finds the partial frame as a torn tail

    def sync(self) -> None:
        """Flush appended data to stable storage."""
        os.fsync(self._fd)

    def read(self, position: int, length: int) -> bytes:
        """Return `length` bytes from `position`, which must lie within the file."""
        if position < 0 or length < 0 or position + length > self.size:
            raise ValueError(f"read of {length} bytes at {position} outside {self.path}")
        if length > _READ_BYTES_MAX:
            raise ValueError(f"read of {length} bytes is over the {_READ_BYTES_MAX} limit")
        chunks: list[bytes] = []
        done = 0
        while done < length:
            chunk = os.pread(self._fd, length - done, position + done)
            if not chunk:
                raise OSError(f"unexpected end of {self.path} at byte {position + done}")
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the file descriptor; the object is unusable afterwards."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def fsync_directory(path: Path) -> None:
    """Make the creation, rename or removal of entries in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new content."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)
