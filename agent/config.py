"""The agent's configuration, checked once when made: where the node is reached, how its SSH
server is set up, and how the node's inventory is read.

Two ways to serve SSH: `sshd` writes the files an OpenSSH server needs into a directory
(the operator adds two lines to sshd_config and reloads it; its host key is the node's
sshd host key), `embedded` runs an SSH server in the agent itself (its own host key, kept
in a file so the registered key stays the same across restarts).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.errors import ConfigError
from agent.inventory import Declared
from delivery.ca import parse_public_key, require_node_id
from delivery.errors import DeliveryError

__all__ = ["AgentConfig", "ChallengeConfig", "read_host_key_line"]

REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
HOST = re.compile(r"[A-Za-z0-9.:\-\[\]]{1,253}")
LOGIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
HOST_KEY_BYTES_MAX = 16 * 1024
MESSAGES_MAX_CEILING = 1_000


@dataclass(frozen=True, kw_only=True)
class ChallengeConfig:
    """How `gpux operator challenge` reads the inventory and bounds one session."""

    profile: Path | None = None
    declared: Declared | None = None
    use_nvml: bool = True
    backend: Literal["auto", "numpy", "torch", "cupy"] = "auto"
    messages_max: int = 16  # a probe is ping + challenge + open; a session never needs more

    def __post_init__(self) -> None:
        if not 1 <= self.messages_max <= MESSAGES_MAX_CEILING:
            raise ConfigError(f"messages_max {self.messages_max} is outside "
                              f"1..{MESSAGES_MAX_CEILING}")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """What `gpux operator agent` registers and serves."""

    node_id: str
    region: str
    host: str  # where holders and the prober reach the node
    port: int
    login: str  # the node's login user for holders and the prober
    mode: Literal["sshd", "embedded"]
    sshd_dir: Path | None = None  # mode sshd: where the OpenSSH files go
    host_key_line: str | None = None  # mode sshd: the node's sshd host public key
    embedded_key_path: Path | None = None  # mode embedded: its host key (created once)
    listen_host: str = "0.0.0.0"  # noqa: S104 -- the embedded server serves the network
    challenge: ChallengeConfig = ChallengeConfig()
    python: str = sys.executable  # runs `-m gpux operator challenge` under sshd

    def __post_init__(self) -> None:
        try:
            require_node_id(self.node_id)
        except DeliveryError as error:
            raise ConfigError(f"--node-id: {error}") from error
        _require(REGION.fullmatch(self.region) is not None,
                 f"--region {self.region!r}: 1-64 characters [A-Za-z0-9_.:-]")
        _require(HOST.fullmatch(self.host) is not None,
                 f"--host {self.host!r}: a host name or address (1-253 characters)")
        _require(1 <= self.port <= 65_535, f"--port {self.port}: outside 1..65535")
        _require(LOGIN.fullmatch(self.login) is not None,
                 f"--login {self.login!r}: a user name (1-32 characters)")
        if self.mode == "sshd":
            _require(self.sshd_dir is not None, "--sshd-dir DIR is needed without --embedded")
            _require(self.host_key_line is not None,
                     "--host-key FILE (the sshd's host public key) is needed without "
                     "--embedded")
        else:
            _require(self.embedded_key_path is not None,
                     "--embedded needs a file for its host key (--embedded-host-key FILE)")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def read_host_key_line(path: Path) -> str:
    """Read an OpenSSH host public key file (`ssh_host_ed25519_key.pub`); return its line
    without the comment. Raise ConfigError naming the file and what is wrong."""
    try:
        with path.open("rb") as file:
            data = file.read(HOST_KEY_BYTES_MAX + 1)
    except OSError as error:
        raise ConfigError(f"--host-key {path}: cannot read it ({error.strerror})") from error
    if len(data) > HOST_KEY_BYTES_MAX:
        raise ConfigError(f"--host-key {path}: larger than {HOST_KEY_BYTES_MAX} bytes")
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) != 1:
        raise ConfigError(f"--host-key {path}: {len(lines)} lines; give one public key "
                          "(the .pub file, not the private key)")
    try:
        canonical, _fingerprint = parse_public_key(lines[0])
    except DeliveryError as error:
        raise ConfigError(f"--host-key {path}: {error}") from error
    return canonical
