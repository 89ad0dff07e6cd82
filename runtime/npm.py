"""The repo's npm packages (anvil for the services, solc-js for the contracts), installed
with `npm ci` from package-lock.json: exactly the locked versions, checked by integrity."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

__all__ = ["NODE_MODULES", "NpmError", "install_npm_packages", "npm_packages_current",
           "run_in_repo"]

NPM_TIMEOUT_S = 600.0
REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO_ROOT / "node_modules"
PACKAGE_LOCK = REPO_ROOT / "package-lock.json"
NPM_STAMP = NODE_MODULES / ".gpux-lock-sha256"


class NpmError(RuntimeError):
    """npm is missing, or `npm ci` failed or took too long; the message says which."""


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
        raise NpmError("npm is not on PATH; it installs anvil and solc-js from package-lock.json")
    run_in_repo(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                timeout_s=NPM_TIMEOUT_S, what="`npm ci`")
    NPM_STAMP.write_text(_lock_digest() + "\n", encoding="ascii")


def run_in_repo(command: list[str], *, timeout_s: float, what: str) -> None:
    """Run a node tool in the repo root; NpmError says `what` timed out or failed, with the
    end of its output."""
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise NpmError(f"{what} in {REPO_ROOT} took over {timeout_s}s") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise NpmError(f"{what} in {REPO_ROOT} failed:\n{output}")
