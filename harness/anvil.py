"""anvil, the EVM dev node of Foundry, from the npm package `@foundry-rs/anvil`.

npm brings the native binary as a platform package (`@foundry-rs/anvil-linux-amd64`,
...); the harness runs that binary directly rather than the `bin.mjs` wrapper, so a
SIGKILL reaches the node itself.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import urllib.request
from pathlib import Path

from harness.errors import ServiceError
from harness.ports import LOOPBACK_HOST, free_port
from harness.service import Service
from runtime.npm import NODE_MODULES, NpmError, install_npm_packages

PROBE_TIMEOUT_S = 1.0
PLATFORM_SUFFIXES = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
    ("Darwin", "arm64"): "darwin-arm64",
}


def _platform_suffix() -> str:
    key = (platform.system(), platform.machine())
    suffix = PLATFORM_SUFFIXES.get(key)
    if suffix is None:
        raise ServiceError(f"@foundry-rs/anvil ships no binary for {key[0]} {key[1]}")
    return suffix


def anvil_binary() -> Path | None:
    """Return the anvil binary: $GPUX_ANVIL_BIN, the repo's node_modules, else PATH."""
    override = os.environ.get("GPUX_ANVIL_BIN", "").strip()
    if override:
        return Path(override)
    package = NODE_MODULES / "@foundry-rs" / f"anvil-{_platform_suffix()}"
    candidate = package / "bin" / "anvil"
    if candidate.is_file():
        return candidate
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def install_anvil() -> Path:
    """Make sure the anvil binary is installed; return its path."""
    try:
        install_npm_packages()
    except NpmError as error:
        raise ServiceError(str(error)) from error
    binary = anvil_binary()
    if binary is None or not binary.is_file():
        raise ServiceError(f"npm ran but no anvil binary for {_platform_suffix()} is installed")
    return binary


def dumped_chain(dumped: object) -> bytes:
    """The chain an `anvil_dumpState` answered (0x-hex, gzip or not) as the JSON that
    `--load-state` reads."""
    if not isinstance(dumped, str) or not dumped.startswith("0x"):
        raise ServiceError(f"anvil_dumpState returned {str(dumped)[:100]!r}")
    raw = bytes.fromhex(dumped[2:])
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def json_rpc(url: str, method: str, params: list[object], timeout_s: float) -> object:
    """Make one JSON-RPC call and return its result; raise ServiceError on an RPC error."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise ServiceError(f"{method} at {url} failed: {reply['error']}")
    return reply["result"]


class AnvilService(Service):
    """An anvil node on a free loopback port, with anvil's default dev accounts."""

    name = "anvil"
    start_timeout_s = 30.0

    def __init__(self, run_dir: Path, chain_id: int = 31337) -> None:
        super().__init__(run_dir)
        self.chain_id = chain_id
        self.port = 0
        self._binary = Path("/nonexistent")
        # a chain saved by `save_chain` (an anvil_dumpState, uncompressed) that a start loads
        self.chain_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    def _prepare(self) -> None:
        binary = anvil_binary()
        self._binary = binary if binary is not None and binary.is_file() else install_anvil()
        self.port = free_port()

    def _command(self) -> list[str]:
        command = [
            str(self._binary), "--host", LOOPBACK_HOST, "--port", str(self.port),
            "--chain-id", str(self.chain_id),
        ]  # fmt: skip
        if self.chain_path is not None and self.chain_path.is_file():
            command += ["--load-state", str(self.chain_path)]
        return command

    def save_chain(self, state: bytes, path: Path) -> None:
        """Keep a chain (`dumped_chain`) in `path` for every later start to load
        (`--load-state`): a node whose chain outlives its process. The state goes over as a
        file, not back through `anvil_loadState`, whose request grows with the chain and
        outgrows what the node accepts."""
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(state)
        temporary.replace(path)
        self.chain_path = path

    def _probe_ready(self) -> bool:
        try:
            chain_id = json_rpc(self.url, "eth_chainId", [], PROBE_TIMEOUT_S)
        except (OSError, ValueError, ServiceError):  # URLError is an OSError
            return False
        return chain_id == hex(self.chain_id)

    def _state_extra(self) -> dict[str, object]:
        return {"port": self.port, "env": {"ETH_RPC_URL": self.url}}
