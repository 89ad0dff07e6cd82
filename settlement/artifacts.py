"""Load the compiled contracts, building them with solc-js when missing or stale.

The artifact `settlement/build/contracts.json` (git-ignored) records the hash of what it
was built from: the contract sources, `build.mjs`, and the installed versions of `solc` and
`@openzeppelin/contracts`. `load()` rebuilds when that hash differs from the sources at
hand, so no separate install step is needed; `python -m settlement build` forces a build.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import msgspec

from runtime.npm import NpmError, install_npm_packages, run_in_repo
from settlement.errors import BuildError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
CONTRACTS_DIR = PACKAGE_DIR / "contracts"
BUILD_SCRIPT = PACKAGE_DIR / "build.mjs"
ARTIFACT_PATH = PACKAGE_DIR / "build" / "contracts.json"
NODE_PACKAGES = ("solc", "@openzeppelin/contracts")
BUILD_TIMEOUT_S = 300.0


class ContractArtifact(msgspec.Struct, frozen=True):
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


class Artifacts(msgspec.Struct, frozen=True):
    solc_version: str
    source_hash: str
    contracts: dict[str, ContractArtifact]

    def contract(self, name: str) -> ContractArtifact:
        try:
            return self.contracts[name]
        except KeyError as error:
            raise BuildError(f"no contract {name!r} in the build artifact") from error


def _installed_version(package: str) -> str:
    manifest = REPO_ROOT / "node_modules" / package / "package.json"
    try:
        version: str = json.loads(manifest.read_text("utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return "missing"
    return version


def source_hash() -> str:
    """Return the sha256 of everything the build depends on."""
    digest = hashlib.sha256()
    for path in sorted(CONTRACTS_DIR.glob("*.sol")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(BUILD_SCRIPT.read_bytes())
    for package in NODE_PACKAGES:
        digest.update(f"\0{package}@{_installed_version(package)}".encode())
    return digest.hexdigest()


def _ensure_node_packages() -> None:
    if all(_installed_version(package) != "missing" for package in NODE_PACKAGES):
        return
    try:
        install_npm_packages()  # `npm ci` from the repo's lock file
    except NpmError as error:
        raise BuildError(str(error)) from error


def build(path: Path = ARTIFACT_PATH) -> Artifacts:
    """Compile the contracts with solc-js and write the artifact to `path`."""
    if shutil.which("node") is None:
        raise BuildError("node is not on PATH; the contracts are compiled by solc-js")
    _ensure_node_packages()
    try:
        run_in_repo(["node", str(BUILD_SCRIPT), str(path), source_hash()],
                    timeout_s=BUILD_TIMEOUT_S, what="compiling the contracts (solc-js)")
    except NpmError as error:
        raise BuildError(str(error)) from error
    return _read(path)


def _read(path: Path) -> Artifacts:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Artifacts)
    except (OSError, msgspec.DecodeError) as error:
        raise BuildError(f"cannot read the build artifact {path}: {error}") from error


_cache: dict[Path, Artifacts] = {}


def load(path: Path = ARTIFACT_PATH) -> Artifacts:
    """Return the compiled contracts, building them first when missing or stale."""
    cached = _cache.get(path)
    if cached is not None:
        return cached
    wanted = source_hash()
    artifacts = _read(path) if path.is_file() else None
    if artifacts is None or artifacts.source_hash != wanted:
        artifacts = build(path)
    if artifacts.source_hash != wanted:
        raise BuildError(f"{path} was built from other sources than those at hand")
    _cache[path] = artifacts
    return artifacts
