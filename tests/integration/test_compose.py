"""The production-shaped compose file stays valid (checked by the compose client alone)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str]:
    """Return `docker compose` when the plugin is there, else Debian's `docker-compose`."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("neither 'docker compose' nor 'docker-compose' is installed "
                    "(.ci/run installs it)")
    return [legacy]


def test_compose_file_is_valid_and_names_every_service() -> None:
    result = subprocess.run(
        [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"kafka", "postgres", "anvil", "engine"} <= services
