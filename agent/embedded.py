"""`gpux operator agent --embedded`: serve SSH from the agent itself (delivery.embedded_ssh).

For a node without an OpenSSH server the venue's certificates can open (and for `gpux dev`):
the agent keeps its own Ed25519 host key in a file (created on first run, 0600) so the key
it registers stays the same across restarts, registers the node with that key, then serves
the venue's policy (the CA's certificates, the holder and prober principals, the prober
forced into the challenge responder) on `--listen-host`:`--port` until told to stop. The
inventory is the one read at start; a changed node is registered again by a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.inventory import Inventory
from agent.registration import Register, register_with_retries
from agent.responder import make_responder
from delivery import challenge
from delivery.embedded_ssh import EmbeddedNode
from delivery.keyfiles import create_private_file

__all__ = ["host_key_line_of", "serve_embedded"]

HOST_KEY_BYTES_MAX = 64 * 1024


def host_key_line_of(path: Path) -> str:
    """Return the public line of the Ed25519 host key in `path`, creating the key (0600,
    `delivery.keyfiles`) when the file does not exist. Raise ConfigError naming the file
    when it is unusable."""
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption())
        with contextlib.suppress(FileExistsError):  # a concurrent creator won: its key
            create_private_file(path, data)
    try:
        data = path.read_bytes()[:HOST_KEY_BYTES_MAX]
        loaded = serialization.load_ssh_private_key(data, password=None)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--embedded-host-key {path}: not an unencrypted OpenSSH private "
                          f"key ({error})") from error
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"--embedded-host-key {path}: not an Ed25519 key")
    public = loaded.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                              serialization.PublicFormat.OpenSSH)
    return public.decode()


async def serve_embedded(config: AgentConfig, inventory: Inventory, register: Register, *,
                         out: TextIO, stop: asyncio.Event,
                         started: asyncio.Event | None = None) -> EmbeddedNode:
    """Register the node with the embedded server's host key, serve until `stop` is set,
    then stop the server; `started` is set once it listens. Return the (stopped) node."""
    from agent.node import registration_of  # node imports this module lazily

    if config.embedded_key_path is None:
        raise ConfigError("--embedded needs --embedded-host-key FILE")
    host_key = host_key_line_of(config.embedded_key_path)
    registered = await register_with_retries(
        register, registration_of(config, inventory, host_key))
    responder = make_responder(inventory, config.challenge.backend)  # picks the backend once
    backend, declared = responder.backend, responder.inventory
    node = EmbeddedNode(
        registered.ca_public_key, config.node_id,
        lambda: challenge.Responder(backend, declared),
        host=config.listen_host, port=config.port, login=config.login,
        host_key_path=config.embedded_key_path)
    await node.start()
    try:
        if node.host_key_line != host_key:
            raise ConfigError(f"the embedded server serves another host key than "
                              f"{config.embedded_key_path} holds")
        out.write(f"registered node {config.node_id}: {inventory.gpu_count} x {inventory.gpu} "
                  f"({inventory.gpu_memory_mib} MiB each, from {inventory.source}) in "
                  f"{config.region}\nserving SSH for {config.login}@{config.host}:"
                  f"{config.port} on {config.listen_host}:{node.port} (backend "
                  f"{backend.name}) until SIGTERM\n")
        out.flush()
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await node.stop()
    return node
