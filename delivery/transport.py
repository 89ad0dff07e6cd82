"""The prober's SSH transport: one certificate-authenticated session per probe.

`ProberClient.probe` logs in to a node as its login user with the prober's key and its
`gpux-prober` certificate, checks the node's host key against the one registered for it
(no known_hosts file, no trust on first use: another key is refused), opens one session
(the node forces it into the challenge responder, whatever the client asks for: the client
asks for `true`, so a node that forces nothing ends the session at once instead of running
a shell), and hands the caller a `LineSession` to speak the newline-delimited JSON exchange
(`delivery.challenge`). The same client works against Debian's OpenSSH and the embedded
node (`delivery.embedded_ssh`).

Bounds: the TCP connect, the login and the whole session each have a timeout; a line is at
most `LINE_BYTES_MAX` bytes. Every transport failure (refused, reset, timed out, host key
mismatch, certificate refused, the session ending early, a line too long) raises
`ProbeError`; its `retriable` flag is False only for what retrying cannot mend (the host
key differs from the registered one, the node refuses the certificate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import asyncssh

from delivery.challenge import LINE_BYTES_MAX
from delivery.errors import DeliveryError

__all__ = [
    "LineReader",
    "LineSession",
    "ProbeError",
    "ProberClient",
]

T = TypeVar("T")
REQUESTED_COMMAND: Final = "true"  # the node forces its responder in its place
CONNECT_TIMEOUT_S: Final = 5.0
LOGIN_TIMEOUT_S: Final = 10.0
SESSION_TIMEOUT_S: Final = 55.0  # within a production minute; a caller may bound it tighter
CLOSE_TIMEOUT_S: Final = 2.0
READ_CHUNK_BYTES: Final = 64 * 1024


class ProbeError(DeliveryError):
    """A probe's SSH session could not be had or broke off; `retriable` unless retrying
    cannot help (host key mismatch, certificate refused)."""

    retriable = True


class ByteStream(Protocol):
    """What `LineReader` reads: an asyncssh stream (or any reader) of bytes."""

    async def read(self, n: int = -1) -> bytes: ...


class LineReader:
    """Read newline-terminated lines from a byte stream, never holding more than
    `line_bytes_max` + 1 bytes of an unfinished line."""

    def __init__(self, stream: ByteStream, line_bytes_max: int = LINE_BYTES_MAX) -> None:
        if line_bytes_max < 1:
            raise ValueError(f"line_bytes_max must be positive, got {line_bytes_max}")
        self._stream = stream
        self._line_bytes_max = line_bytes_max
        self._buffer = bytearray()

    async def read_line(self) -> bytes | None:
        """Return the next line with its newline; None at a clean end of stream. Raise
        ProbeError for a line over the limit or a stream that ends mid-line."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self._line_bytes_max:
                raise ProbeError(f"a line exceeds {self._line_bytes_max} bytes", retriable=False)
            # No more than one byte past the bound: enough to tell a line is too long.
            room = self._line_bytes_max + 1 - len(self._buffer)
            chunk = await self._stream.read(min(READ_CHUNK_BYTES, room))
            if not chunk:
                if self._buffer:
                    raise ProbeError("the stream ended in the middle of a line")
                return None
            self._buffer += chunk


class LineSession:
    """The NDJSON exchange over one SSH session: what a probe's `exchange` is given."""

    def __init__(
        self, process: asyncssh.SSHClientProcess[bytes], line_bytes_max: int = LINE_BYTES_MAX
    ) -> None:
        self._process = process
        self._reader = LineReader(process.stdout, line_bytes_max)

    async def send_line(self, line: bytes) -> None:
        """Send one line (a newline is added when missing) and wait until it is written."""
        data = line if line.endswith(b"\n") else line + b"\n"
        try:
            self._process.stdin.write(data)
            await self._process.stdin.drain()
        except (asyncssh.Error, OSError, BrokenPipeError) as error:
            raise ProbeError(f"sending to the node failed: {error}") from error

    async def receive_line(self) -> bytes:
        """Return the node's next line; ProbeError when the session ends first."""
        try:
            line = await self._reader.read_line()
        except (asyncssh.Error, OSError) as error:
            raise ProbeError(f"reading from the node failed: {error}") from error
        if line is None:
            raise ProbeError("the node ended the session")
        return line


class ProberClient:
    """The prober's SSH client: its private key and its `gpux-prober` certificate."""

    def __init__(
        self,
        key_path: Path,
        certificate_line: str,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        login_timeout_s: float = LOGIN_TIMEOUT_S,
        session_timeout_s: float = SESSION_TIMEOUT_S,
        line_bytes_max: int = LINE_BYTES_MAX,
    ) -> None:
        if min(connect_timeout_s, login_timeout_s, session_timeout_s) <= 0:
            raise ValueError("every timeout must be positive")
        try:
            self._key = asyncssh.read_private_key(key_path)
        except (OSError, asyncssh.KeyImportError) as error:
            raise DeliveryError(f"cannot read the prober key {key_path}: {error}") from error
        self._certificate = _import_certificate(certificate_line)
        self.connect_timeout_s = connect_timeout_s
        self.login_timeout_s = login_timeout_s
        self.session_timeout_s = session_timeout_s
        self.line_bytes_max = line_bytes_max

    async def probe(
        self,
        host: str,
        port: int,
        login: str,
        host_key_line: str,
        exchange: Callable[[LineSession], Awaitable[T]],
    ) -> T:
        """Open one session on the node, run `exchange` over it, close it; return what
        `exchange` returns. Raise ProbeError for any transport failure; what `exchange`
        raises itself passes through. Cancellation closes the connection."""
        host_key = _import_host_key(host_key_line)
        try:
            async with asyncio.timeout(self.session_timeout_s):
                return await self._session(host, port, login, host_key, exchange)
        except TimeoutError as error:
            raise ProbeError(
                f"the probe of {host}:{port} took over {self.session_timeout_s} s"
            ) from error

    async def _session(
        self,
        host: str,
        port: int,
        login: str,
        host_key: asyncssh.SSHKey,
        exchange: Callable[[LineSession], Awaitable[T]],
    ) -> T:
        connection = await self._connect(host, port, login, host_key)
        try:
            try:
                process = await connection.create_process(
                    REQUESTED_COMMAND, encoding=None, term_type=None
                )
            except (asyncssh.Error, OSError) as error:
                raise ProbeError(f"{host}:{port} refused the session: {error}") from error
            try:
                return await exchange(LineSession(process, self.line_bytes_max))
            finally:
                process.close()
        finally:
            connection.close()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await connection.wait_closed()
            except TimeoutError:
                connection.abort()

    async def _connect(
        self, host: str, port: int, login: str, host_key: asyncssh.SSHKey
    ) -> asyncssh.SSHClientConnection:
        try:
            return await asyncssh.connect(
                host, port, username=login, config=None, known_hosts=([host_key], [], []),
                client_keys=[(self._key, self._certificate)], agent_path=None,
                preferred_auth="publickey", connect_timeout=self.connect_timeout_s,
                login_timeout=self.login_timeout_s, x509_trusted_certs=None,
                keepalive_interval=0,
            )  # fmt: skip
        except asyncssh.HostKeyNotVerifiable as error:
            raise ProbeError(
                f"{host}:{port} showed a host key other than the registered one",
                retriable=False,
            ) from error
        except asyncssh.PermissionDenied as error:
            raise ProbeError(
                f"{host}:{port} refused the prober certificate for {login}", retriable=False
            ) from error
        except (asyncssh.Error, OSError, TimeoutError) as error:
            raise ProbeError(f"cannot log in to {host}:{port}: {error}") from error


def _import_certificate(certificate_line: str) -> asyncssh.SSHCertificate:
    try:
        return asyncssh.import_certificate(certificate_line.strip())
    except (asyncssh.KeyImportError, ValueError) as error:
        raise DeliveryError(f"the prober certificate does not parse: {error}") from error


def _import_host_key(host_key_line: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(host_key_line.strip())
    except (asyncssh.KeyImportError, ValueError) as error:
        raise ProbeError(f"the registered host key does not parse: {error}", retriable=False) \
            from error
