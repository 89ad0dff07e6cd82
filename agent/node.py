"""Run the agent: register the node, then set up OpenSSH's files or serve SSH itself.

The steps are the same at every start (registration is idempotent, the files are
rewritten whole), so restarting the agent is how a changed inventory, host or key reaches
the venue and the node.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TextIO

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.inventory import Inventory, inventory_document
from agent.registration import Register, Registered, Registration, register_with_retries
from agent.sshd import instructions, write_node_setup
from delivery.ca import parse_public_key

__all__ = ["registration_of", "run_agent", "run_sshd_setup"]


def registration_of(config: AgentConfig, inventory: Inventory, host_key: str) -> Registration:
    """The `register_node` request for this node."""
    return Registration(node_id=config.node_id, gpu=inventory.gpu, region=config.region,
                        gpu_count=inventory.gpu_count, gpu_memory_mib=inventory.gpu_memory_mib,
                        host=config.host, port=config.port, login=config.login,
                        host_key=host_key, inventory=inventory_document(inventory))


def _describe(config: AgentConfig, inventory: Inventory, registered: Registered) -> str:
    _, ca_fingerprint = parse_public_key(registered.ca_public_key)
    return (f"registered node {config.node_id}: {inventory.gpu_count} x {inventory.gpu} "
            f"({inventory.gpu_memory_mib} MiB each, from {inventory.source}) in "
            f"{config.region}, at {config.login}@{config.host}:{config.port}\n"
            f"venue CA {ca_fingerprint}; principals {registered.holder_principal} (holders), "
            f"{registered.prober_principal} (the prober)\n")


async def run_sshd_setup(config: AgentConfig, inventory: Inventory, register: Register, *,
                         out: TextIO) -> Registered:
    """Register the node with its sshd's host key and write the OpenSSH files."""
    if config.sshd_dir is None or config.host_key_line is None:
        raise ConfigError("the sshd setup needs --sshd-dir and --host-key")
    registered = await register_with_retries(
        register, registration_of(config, inventory, config.host_key_line))
    setup = write_node_setup(
        config.sshd_dir, ca_public_key=registered.ca_public_key, node_id=config.node_id,
        login=config.login, inventory=inventory, python=config.python,
        use_nvml=config.challenge.use_nvml, backend=config.challenge.backend)
    out.write(_describe(config, inventory, registered))
    out.write(f"wrote {setup.files.ca_keys_path}, {setup.files.principals_path} and "
              f"{setup.profile_path}\n\n{instructions(setup)}")
    out.flush()
    return registered


async def run_agent(config: AgentConfig, inventory: Inventory, register: Register, *,
                    out: TextIO, stop: asyncio.Event | None = None) -> int:
    """Run the agent's mode; the embedded server serves until `stop` is set (or, when no
    event is given, until SIGTERM or SIGINT). Return the exit status."""
    if config.mode == "sshd":
        await run_sshd_setup(config, inventory, register, out=out)
        return 0
    from agent.embedded import serve_embedded  # asyncssh is needed only here

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    await serve_embedded(config, inventory, register, out=out, stop=stop)
    return 0
