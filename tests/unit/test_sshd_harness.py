"""The harness's pinned OpenSSH server: a .deb of another digest is refused, and the config
it writes lets in certificates alone, for one login user."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.errors import ServiceError
from harness.sshd import PINNED_DEBS, PinnedDeb, SshdService, _require_digest, library_path


def test_a_deb_with_another_digest_is_refused(tmp_path: Path) -> None:
    deb = tmp_path / "openssh-server_9.2p1_amd64.deb"
    deb.write_bytes(b"not the pinned package")
    with pytest.raises(ServiceError):
        _require_digest(PINNED_DEBS[0], deb)
    matching = PinnedDeb("x", "1", hashlib.sha256(deb.read_bytes()).hexdigest())
    _require_digest(matching, deb)


def test_every_pinned_deb_names_a_version_and_a_sha256() -> None:
    assert [deb.name for deb in PINNED_DEBS] == ["openssh-server", "libwrap0"]
    for deb in PINNED_DEBS:
        assert deb.version and len(bytes.fromhex(deb.sha256)) == 32


def test_an_install_without_libwrap_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ServiceError):
        library_path(tmp_path)
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "libwrap.so.0").touch()
    assert library_path(tmp_path).split(":")[0] == str(tmp_path / "usr" / "lib")


def test_the_config_allows_certificates_for_the_login_user_alone(tmp_path: Path) -> None:
    service = SshdService(tmp_path / "sshd")
    text = service._config_text()
    lines = text.splitlines()
    for line in ("UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AuthorizedKeysFile none", f"AllowUsers {service.login}",
                 f"TrustedUserCAKeys {service.ca_keys_path}",
                 f"AuthorizedPrincipalsFile {service.principals_path}"):  # fmt: skip
        assert line in lines
    service.config_snippet = "Match User nobody\n    TrustedUserCAKeys /x\nMatch all\n"
    assert service._config_text().endswith(service.config_snippet)
    assert f"TrustedUserCAKeys {service.ca_keys_path}" not in service._config_text()


def test_authorize_writes_the_trust_files_and_refuses_a_second_line_in_one(
    tmp_path: Path,
) -> None:
    service = SshdService(tmp_path / "sshd")
    service.authorize(["ssh-ed25519 AAAA ca"], ["gpux-node-a", "gpux-prober"])
    assert service.ca_keys_path.read_text() == "ssh-ed25519 AAAA ca\n"
    assert service.principals_path.read_text() == "gpux-node-a\ngpux-prober\n"
    with pytest.raises(ServiceError):
        service.authorize(["a\nb"], [])
    service.authorize([], [])
    assert service.principals_path.read_text() == ""
