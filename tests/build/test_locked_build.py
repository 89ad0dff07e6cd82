"""A new machine builds exactly what we tested: the venv equals uv.lock, and the pins of the
bootstrap installer and of Kafka's jars are complete and checked.

Not in `make test-latest`, whose venv differs from the lock on purpose.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from harness.errors import ServiceError
from harness.kafka import KAFKA_VERSION, check_jars, install_kafka, pinned_jar_digests
from harness.paths import REPO_ROOT

# Built from this repository, not fetched: the project itself and its Rust core.
OWN_DISTRIBUTIONS = {"gpux", "gpux-native"}
UV = Path(sys.executable).with_name("uv")


def locked_for_this_interpreter() -> dict[str, str]:
    """Return {name: version} of what uv.lock installs here, markers evaluated."""
    export = subprocess.run(
        [str(UV), "export", "--frozen", "--extra", "dev", "--no-hashes", "--no-emit-project",
         "--no-header", "--no-annotate"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    locked: dict[str, str] = {}
    for line in export.stdout.splitlines():
        requirement, _, marker = line.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", requirement.strip())
        if match is None:
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        locked[canonicalize_name(match.group(1))] = match.group(2)
    return locked


def installed() -> dict[str, str]:
    return {
        canonicalize_name(distribution.metadata["Name"]): distribution.version
        for distribution in importlib.metadata.distributions()
    }


def test_the_venv_holds_exactly_the_locked_versions() -> None:
    locked = locked_for_this_interpreter()
    present = {name: version for name, version in installed().items()
               if name not in OWN_DISTRIBUTIONS}
    assert locked, "uv export listed nothing"
    assert present == locked


def test_the_bootstrap_uv_is_the_locked_uv_with_hashes() -> None:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text(encoding="utf-8"))
    locked_uv = next(package["version"] for package in lock["package"]
                     if package["name"] == "uv")
    pin = (REPO_ROOT / "requirements" / "uv.txt").read_text(encoding="utf-8")
    assert re.search(rf"^uv=={re.escape(locked_uv)} \\$", pin, re.MULTILINE), pin[:200]
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", pin)) >= 2


def test_the_kafka_pin_names_the_broker_jar() -> None:
    pinned = pinned_jar_digests()
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in pinned
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pinned.values())


def test_kafka_jars_that_differ_from_the_pin_are_refused_by_name(tmp_path: Path) -> None:
    broker_jar = f"kafka_2.13-{KAFKA_VERSION}.jar"
    absent = next(name for name in pinned_jar_digests() if name != broker_jar)
    for name in pinned_jar_digests().keys() - {absent}:
        (tmp_path / name).write_bytes(b"not the pinned bytes")
    (tmp_path / "extra-1.0.jar").write_bytes(b"")
    with pytest.raises(ServiceError) as refused:
        check_jars(tmp_path)
    message = str(refused.value)
    assert f"missing {absent}" in message
    assert "not pinned extra-1.0.jar" in message
    assert f"sha256 of {broker_jar} is " in message


def test_kafka_jars_equal_to_the_pin_pass(tmp_path: Path) -> None:
    """The check passes the jars the harness installed (fetched by `make test`)."""
    check_jars(install_kafka())
