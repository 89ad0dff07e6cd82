"""The node's sshd files: what the CA keys and principals files hold, how the prober's
forced command is quoted, and the config lines (in a Match block for the login user)."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.ca import CertificateAuthority
from delivery.errors import DeliveryError
from delivery.sshd_config import (
    PROBER_RESTRICTIONS,
    prober_principal_line,
    render_node_files,
)


def test_the_files_hold_the_ca_key_and_both_principals(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    files = render_node_files(
        ca.public_key_line() + " venue-ca", "node-a", "/usr/bin/gpux operator challenge",
        tmp_path / "gpux",
    )  # fmt: skip
    assert files.ca_keys_path.read_text() == ca.public_key_line() + "\n"
    assert files.principals_path.read_text().splitlines() == [
        "gpux-node-node-a",
        f'command="/usr/bin/gpux operator challenge",{PROBER_RESTRICTIONS} gpux-prober',
    ]
    for path in (files.ca_keys_path, files.principals_path):
        assert path.stat().st_mode & 0o777 == 0o644
    assert files.config_snippet == (
        f"TrustedUserCAKeys {files.ca_keys_path}\n"
        f"AuthorizedPrincipalsFile {files.principals_path}\n"
    )


def test_the_snippet_confines_the_venue_to_the_login_user(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    files = render_node_files(ca.public_key_line(), "n1", "responder", tmp_path, login="gpu")
    assert files.config_snippet.splitlines() == [
        "Match User gpu",
        f"    TrustedUserCAKeys {files.ca_keys_path}",
        f"    AuthorizedPrincipalsFile {files.principals_path}",
        "Match all",
    ]


def test_rendering_again_replaces_the_files(tmp_path: Path) -> None:
    first, second = CertificateAuthority.generate(), CertificateAuthority.generate()
    render_node_files(first.public_key_line(), "n1", "responder", tmp_path)
    files = render_node_files(second.public_key_line(), "n2", "responder", tmp_path)
    assert files.ca_keys_path.read_text() == second.public_key_line() + "\n"
    assert files.principals_path.read_text().startswith("gpux-node-n2\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [files.ca_keys_path.name, files.principals_path.name]
    )


def test_the_forced_command_escapes_its_quotes() -> None:
    # sshd reads `\"` as a quote inside the value and leaves other backslashes alone
    # (sshd running such a command is in tests/integration/test_sshd_access.py)
    line = prober_principal_line('sh -c "echo \\$HOME"')
    assert line == f'command="sh -c \\"echo \\$HOME\\"",{PROBER_RESTRICTIONS} gpux-prober'


@pytest.mark.parametrize("command", ["", "   ", "a\nb", "a\rb", "x" * 2000, "ends\\"])
def test_a_forced_command_that_cannot_be_one_safe_line_is_refused(command: str) -> None:
    with pytest.raises(DeliveryError):
        prober_principal_line(command)


def test_a_bad_ca_key_node_id_or_login_is_refused(tmp_path: Path) -> None:
    ca_line = CertificateAuthority.generate().public_key_line()
    with pytest.raises(DeliveryError):
        render_node_files("ssh-ed25519 AAAA", "n1", "responder", tmp_path)
    with pytest.raises(DeliveryError):
        render_node_files(ca_line, "n*", "responder", tmp_path)
    with pytest.raises(DeliveryError):
        render_node_files(ca_line, "n1", "responder", tmp_path, login="a b")
    with pytest.raises(DeliveryError):
        render_node_files(ca_line, "n1", "responder", tmp_path / "with space")
