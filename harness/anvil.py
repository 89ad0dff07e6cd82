"""anvil, the EVM dev node of Foundry, from the npm package `@foundry-rs/anvil`.

npm brings the native binary as a platform package (`@foundry-rs/anvil-linux-amd64`,
...); the harness runs that binary directly rather than the `bin.mjs` wrapper, so a
SIGKILL reaches the node itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import urllib.request
from pathlib import Path

from harness.errors import ServiceError
from harness.paths import REPO_ROOT
from harness.ports import LOOPBACK_HOST, free_port
from harness.service import Service

NPM_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 1.0
NODE_MODULES = REPO_ROOT / "node_modules"
PACKAGE_LOCK = REPO_ROOT / "package-lock.json"
NPM_STAMP = NODE_MODULES / ".gpux-lock-sha256"
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


def _lock_digest() -> str:
    return hashlib.sha256(PACKAGE_LOCK.read_bytes()).hexdigest()


def npm_packages_current() -> bool:
    """Tell whether node_modules was installed from the current package-lock.json."""
    try:
        return NPM_STAMP.read_text(encoding="ascii").strip() == _lock_digest()
    except OSError:
        return False


def install_npm_packages() -> None:
    """Run `npm ci` in the repo root unless node_modules matches the lock file already."""
    if npm_packages_current():
        return
    if shutil.which("npm") is None:
        raise ServiceError("npm is not on PATH; it installs anvil (@foundry-rs/anvil)")
    command = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise ServiceError(f"`npm ci` in {REPO_ROOT} took over {NPM_TIMEOUT_S}s") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise ServiceError(f"`npm ci` in {REPO_ROOT} failed:\n{output}")
    NPM_STAMP.write_text(_lock_digest() + "\n", encoding="ascii")


def install_anvil() -> Path:
    """Make sure the anvil binary is installed; return its path."""
    install_npm_packages()
    binary = anvil_binary()
    if binary is None or not binary.is_file():
        raise ServiceError(f"npm ran but no anvil binary for {_platform_suffix()} is installed")
    return binary


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
        return [
            str(self._binary), "--host", LOOPBACK_HOST, "--port", str(self.port),
            "--chain-id", str(self.chain_id),
        ]  # fmt: skip

    def _probe_ready(self) -> bool:
        try:
            chain_id = json_rpc(self.url, "eth_chainId", [], PROBE_TIMEOUT_S)
        except (OSError, ValueError, ServiceError):  # URLError is an OSError
            return False
        return chain_id == hex(self.chain_id)

    def _state_extra(self) -> dict[str, object]:
        return {"port": self.port, "env": {"ETH_RPC_URL": self.url}}
