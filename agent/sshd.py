"""Set up a node's OpenSSH server for the venue: the files, and what the operator adds.

`gpux operator agent --sshd-dir DIR` writes into DIR the CA keys file and the principals
file (delivery.sshd_config) and a profile file with the node's inventory, which the forced
command of the prober's principal, `gpux operator challenge --profile DIR/...`, reads at
every probe. The operator adds the printed sshd_config lines once (at the end of the file:
they are a `Match User` block) and reloads sshd; later runs only rewrite the files, which
sshd reads at every login.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent.inventory import Declared, Inventory
from delivery.sshd_config import NodeSshFiles, render_node_files, write_text_atomically

__all__ = ["PROFILE_FILE_NAME", "RELOAD_COMMAND", "NodeSetup", "instructions",
           "responder_command", "write_node_setup"]

PROFILE_FILE_NAME = "gpux_node_profile.json"
RELOAD_COMMAND = "sshd -t && systemctl reload ssh"


@dataclass(frozen=True)
class NodeSetup:
    """What the agent wrote for an OpenSSH node."""

    files: NodeSshFiles
    profile_path: Path
    responder_command: str


def responder_command(python: str, profile_path: Path, *, use_nvml: bool = True,
                      backend: str = "auto") -> str:
    """The command sshd forces for the prober: this Python running the challenge responder
    with the node's profile (quoted for the shell sshd runs it with)."""
    argv = [python, "-m", "gpux", "operator", "challenge", "--profile", str(profile_path)]
    if not use_nvml:
        argv.append("--no-nvml")
    if backend != "auto":
        argv += ["--backend", backend]
    return shlex.join(argv)


def profile_for_responder(inventory: Inventory) -> Declared:
    """The profile the responder reads: the whole declaration when the figures were
    declared; only the class when NVML measured them (the responder then measures again at
    every probe, so a GPU lost since registration shows in its `pong`)."""
    if inventory.source == "nvml":
        return Declared(gpu=inventory.gpu)
    return Declared(gpu=inventory.gpu, gpu_count=inventory.gpu_count,
                    gpu_memory_mib=inventory.gpu_memory_mib, device=inventory.device)


def write_node_setup(directory: Path, *, ca_public_key: str, node_id: str, login: str,
                     inventory: Inventory, python: str, use_nvml: bool = True,
                     backend: str = "auto") -> NodeSetup:
    """Write the profile, the CA keys file and the principals file into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # sshd's StrictModes refuses files in a group/world-writable dir
    profile_path = directory.absolute() / PROFILE_FILE_NAME
    profile = msgspec.json.encode(profile_for_responder(inventory))
    write_text_atomically(profile_path, profile.decode() + "\n")
    command = responder_command(python, profile_path, use_nvml=use_nvml, backend=backend)
    files = render_node_files(ca_public_key, node_id, command, directory.absolute(), login)
    return NodeSetup(files=files, profile_path=profile_path, responder_command=command)


def instructions(setup: NodeSetup) -> str:
    """What the operator does once: the sshd_config lines and the reload command."""
    return (
        "Add these lines at the end of /etc/ssh/sshd_config (a Match block ends the file's "
        "global part):\n\n"
        f"{setup.files.config_snippet}\n"
        f"then reload sshd:\n\n    {RELOAD_COMMAND}\n\n"
        "sshd reads the two files at every login: later runs of the agent need no reload.\n"
    )
