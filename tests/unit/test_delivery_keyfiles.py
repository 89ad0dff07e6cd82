"""A private key file is created once, whole, mode 0600, and never replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delivery.keyfiles import create_private_file


def test_a_key_file_is_created_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ssh_ca"
    create_private_file(path, b"first key")
    assert path.read_bytes() == b"first key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["ssh_ca"], "no temporary file left"


def test_an_existing_key_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ssh_ca"
    create_private_file(path, b"first key")
    with pytest.raises(FileExistsError):
        create_private_file(path, b"second key")
    assert path.read_bytes() == b"first key"
    assert os.listdir(tmp_path) == ["ssh_ca"]


def test_a_write_that_fails_leaves_no_key_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    path = tmp_path / "sample_signer.key"
    with pytest.raises(OSError):
        create_private_file(path, b"a seed")
    assert os.listdir(tmp_path) == [], "neither a half key nor a temporary file"
