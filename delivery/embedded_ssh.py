"""A node's SSH server in process (asyncssh), with the policy a node's OpenSSH applies.

For `gpux dev`, `gpux operator agent --embedded` and fast tests where no OpenSSH runs. The
policy is the one `delivery.sshd_config` gives OpenSSH:
- only the login user, only certificates signed by the venue CA, only inside their validity
  (asyncssh checks valid_after <= now < valid_before at login, like OpenSSH);
- principal `gpux-node-<node_id>`: a holder's session, a tiny banner shell here (an embedded
  node has no machine to lend);
- principal `gpux-prober`: forced into the challenge responder whatever the client asks,
  no pty, no forwarding; each session gets a fresh responder from `responder_factory`
  (a `delivery.challenge.Responder` by default) and speaks NDJSON over stdin/stdout, the
  computation in a worker thread so other sessions keep being served; past
  RESPONDER_MESSAGES_MAX messages the session ends with exit status 1.

`pause()` makes the node unreachable (open sessions are closed, new connections are dropped
before authentication) while it keeps its port; `resume()` serves again: an outage to probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

import asyncssh

from delivery.ca import PROBER_PRINCIPAL, holder_principal, parse_public_key
from delivery.challenge import LINE_BYTES_MAX, Inventory, Responder, select_backend
from delivery.errors import DeliveryError
from delivery.keyfiles import create_private_file
from delivery.sshd_config import PROBER_RESTRICTIONS
from delivery.transport import LineReader, ProbeError

__all__ = ["EmbeddedNode", "LineResponder"]

RESPONDER_COMMAND: Final = "gpux-embedded-responder"
LOGIN_TIMEOUT_S: Final = 10.0
HOLDER_SHELL_LINES_MAX: Final = 1000
# A probe is ping, challenge, open: as `gpux operator challenge`, a session answers no more.
RESPONDER_MESSAGES_MAX: Final = 16
HOLDER_LINE_BYTES_MAX: Final = 4096
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
DEFAULT_LOGIN: Final = "gpux"
LOOPBACK_HOST: Final = "127.0.0.1"


class LineResponder(Protocol):
    """The node's side of the exchange: one NDJSON line in, one reply line out."""

    def handle_line(self, line: bytes) -> bytes: ...


def authorized_keys_text(ca_public_key: str, node_id: str) -> str:
    """Return the authorized_keys lines (cert-authority) that encode the node's policy."""
    ca_line, _ = parse_public_key(ca_public_key)
    holder = f'cert-authority,principals="{holder_principal(node_id)}" {ca_line}'
    prober = (
        f'cert-authority,principals="{PROBER_PRINCIPAL}",command="{RESPONDER_COMMAND}",'
        f"{PROBER_RESTRICTIONS} {ca_line}"
    )
    return f"{holder}\n{prober}\n"


class EmbeddedNode:
    """An SSH server on `host:port` (0: a free port) that lets in the venue's certificates."""

    def __init__(
        self,
        ca_public_key: str,
        node_id: str,
        responder_factory: Callable[[], LineResponder] | None = None,
        *,
        inventory: Inventory | None = None,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        login: str = DEFAULT_LOGIN,
        host_key_path: Path | None = None,
        line_bytes_max: int = LINE_BYTES_MAX,
    ) -> None:
        """`responder_factory` makes each prober session's responder; without one, a numpy
        `Responder` declaring `inventory`. `host_key_path`: an OpenSSH private key file,
        created (Ed25519, 0600) when missing; None: a fresh key in memory."""
        if responder_factory is None:
            if inventory is None:
                raise DeliveryError("an embedded node needs a responder_factory or an inventory")
            declared = inventory
            responder_factory = lambda: Responder(select_backend("numpy"), declared)  # noqa: E731
        if not 0 <= port < 65536:
            raise DeliveryError(f"port {port} is outside 0..65535")
        self.node_id = node_id
        self.host = host
        self.port = port
        self.login = login
        self._responder_factory = responder_factory
        self._authorized = asyncssh.import_authorized_keys(
            authorized_keys_text(ca_public_key, node_id)
        )
        self._host_key = _load_or_create_host_key(host_key_path)
        self._line_bytes_max = line_bytes_max
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._paused = False

    @property
    def host_key_line(self) -> str:
        """Return the host public key line ("ssh-ed25519 <base64>") to register."""
        exported = self._host_key.export_public_key("openssh").decode()
        key_type, encoded = exported.split()[:2]
        return f"{key_type} {encoded}"

    @property
    def paused(self) -> bool:
        return self._paused

    async def start(self) -> None:
        """Listen; afterwards `port` is the bound port."""
        if self._acceptor is not None:
            raise DeliveryError("the embedded node is already started")
        self._acceptor = await asyncssh.listen(
            self.host, self.port, server_factory=self._make_server,
            server_host_keys=[self._host_key], process_factory=self._serve_session,
            encoding=None, allow_scp=False, sftp_factory=None, agent_forwarding=False,
            x11_forwarding=False, login_timeout=LOGIN_TIMEOUT_S, keepalive_interval=0,
            config=None,
        )  # fmt: skip
        self.port = self._acceptor.get_port()

    async def stop(self) -> None:
        """Stop listening and close every open session."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            await acceptor.wait_closed()
        await self._close_connections()

    async def pause(self) -> None:
        """Become unreachable: close open sessions, drop new connections before login."""
        self._paused = True
        await self._close_connections()

    def resume(self) -> None:
        """Serve logins again after `pause()`."""
        self._paused = False

    async def __aenter__(self) -> EmbeddedNode:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _close_connections(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            try:
                async with asyncio.timeout(2.0):
                    await connection.wait_closed()
            except TimeoutError:
                connection.abort()
        self._connections.difference_update(connections)

    def _make_server(self) -> asyncssh.SSHServer:
        return _NodeServer(self)

    async def _serve_session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        connection = process.get_extra_info("connection")
        forced = connection.get_key_option("command") if connection is not None else None
        try:
            if forced == RESPONDER_COMMAND:
                await self._serve_responder(process)
            else:
                await self._serve_holder(process)
        except (asyncssh.Error, OSError, ProbeError):
            process.exit(EXIT_FAILED)
        else:
            process.exit(EXIT_OK)

    async def _serve_responder(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        responder = self._responder_factory()
        reader = LineReader(process.stdin, self._line_bytes_max)
        for _ in range(RESPONDER_MESSAGES_MAX):
            line = await reader.read_line()
            if line is None:
                return
            reply = await asyncio.to_thread(responder.handle_line, line)
            process.stdout.write(reply)
            await process.stdout.drain()
        if await reader.read_line() is not None:
            raise ProbeError(f"more than {RESPONDER_MESSAGES_MAX} messages in one session")

    async def _serve_holder(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        banner = (
            f"gpux embedded node {self.node_id}: your session is open; an embedded node runs"
            " no commands\n"
        )
        process.stdout.write(banner.encode())
        if process.command is not None:
            return
        reader = LineReader(process.stdin, HOLDER_LINE_BYTES_MAX)
        for _ in range(HOLDER_SHELL_LINES_MAX):
            line = await reader.read_line()
            if line is None or line.strip() in (b"exit", b"logout"):
                return
            process.stdout.write(b"embedded node: no commands here\n")
            await process.stdout.drain()


class _NodeServer(asyncssh.SSHServer):
    """One connection's policy: the login user alone, by the node's CA lines."""

    def __init__(self, node: EmbeddedNode) -> None:
        self._node = node
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn
        if self._node.paused:
            conn.close()
            return
        self._node._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._node._connections.discard(self._connection)

    def begin_auth(self, username: str) -> bool:
        if self._connection is not None and username == self._node.login:
            self._connection.set_authorized_keys(self._node._authorized)
        return True  # other users get no keys: every login attempt fails

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


def _load_or_create_host_key(path: Path | None) -> asyncssh.SSHKey:
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        try:
            create_private_file(path, key.export_private_key("openssh"))
            return key
        except FileExistsError:
            pass  # a concurrent creator won; load its key
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as error:
        raise DeliveryError(f"cannot read the node host key {path}: {error}") from error
