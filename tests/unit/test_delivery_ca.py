"""The venue's SSH CA: its key file, the certificates it signs (read back with asyncssh, an
independent implementation), the public keys it accepts, and the ssh line holders run."""

from __future__ import annotations

import base64
import shlex
import struct
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh

from delivery.ca import (
    HOLDER_EXTENSIONS,
    PROBER_PRINCIPAL,
    CertificateAuthority,
    generate_user_key,
    holder_principal,
    known_hosts_line,
    parse_public_key,
    ssh_command_line,
)
from delivery.errors import DeliveryError

NS_PER_S = 1_000_000_000
WINDOW_START_NS = 1_800_000_000 * NS_PER_S + 250_000_000  # not on a whole second
WINDOW_END_NS = WINDOW_START_NS + 3600 * NS_PER_S


def public_line(key: object) -> str:
    public = key.public_key() if hasattr(key, "public_key") else key
    assert isinstance(
        public, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    )
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_the_ca_key_file_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "ca" / "ca_key"
    created = CertificateAuthority.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert CertificateAuthority.load_or_create(path).public_key_line() == (
        created.public_key_line()
    )
    restored = CertificateAuthority.from_private_bytes(created.private_bytes())
    assert restored.public_key_line() == created.public_key_line()


def test_a_ca_key_file_that_is_not_an_ed25519_openssh_key_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a key")
    with pytest.raises(DeliveryError):
        CertificateAuthority.load_or_create(garbage)
    ecdsa = tmp_path / "ecdsa"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ))  # fmt: skip
    with pytest.raises(DeliveryError):
        CertificateAuthority.load_or_create(ecdsa)


def read_certificate(line: str) -> ssh.SSHCertificate:
    certificate = ssh.load_ssh_public_identity(line.encode())
    assert isinstance(certificate, ssh.SSHCertificate)
    certificate.verify_cert_signature()
    return certificate


def test_a_holder_certificate_covers_the_window_in_whole_seconds(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    holder_line = generate_user_key(tmp_path / "id")
    line = ca.issue(holder_line, "holder-7/issue-3", [holder_principal("node-a")],
                    WINDOW_START_NS, WINDOW_END_NS, serial=42)  # fmt: skip
    certificate = read_certificate(line)
    assert certificate.type == ssh.SSHCertificateType.USER
    assert certificate.serial == 42
    assert certificate.valid_principals == [b"gpux-node-node-a"]
    assert certificate.key_id == b"holder-7/issue-3"
    assert certificate.valid_after == WINDOW_START_NS // NS_PER_S  # rounded down
    assert certificate.valid_before == WINDOW_END_NS // NS_PER_S + 1  # rounded up
    assert public_line(certificate.signature_key()) == ca.public_key_line()
    assert public_line(certificate.public_key()) == holder_line
    assert set(certificate.extensions) == set(HOLDER_EXTENSIONS)
    assert certificate.critical_options == {}
    # asyncssh, another implementation, reads the extensions as permissions
    options = asyncssh.import_certificate(line).options  # type: ignore[attr-defined]
    assert options["permit-pty"] is True and "force-command" not in options


def test_a_window_on_whole_seconds_is_not_widened(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    start_ns = 1_800_000_000 * NS_PER_S
    line = ca.issue(generate_user_key(tmp_path / "id"), "h", [holder_principal("n")],
                    start_ns, start_ns + 60 * NS_PER_S, serial=1)  # fmt: skip
    certificate = read_certificate(line)
    assert (certificate.valid_after, certificate.valid_before) == (
        start_ns // NS_PER_S, start_ns // NS_PER_S + 60
    )


def test_the_prober_certificate_has_no_extensions_and_may_force_a_command(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.generate()
    line = ca.issue(generate_user_key(tmp_path / "id"), "prober", [PROBER_PRINCIPAL],
                    WINDOW_START_NS, WINDOW_END_NS, serial=1,
                    force_command="gpux operator challenge")  # fmt: skip
    certificate = read_certificate(line)
    assert certificate.valid_principals == [PROBER_PRINCIPAL.encode()]
    assert certificate.extensions == {}
    options = asyncssh.import_certificate(line).options  # type: ignore[attr-defined]
    assert options == {"force-command": "gpux operator challenge"}


@pytest.mark.parametrize(
    ("principals", "after_ns", "before_ns", "serial"),
    [
        ([], WINDOW_START_NS, WINDOW_END_NS, 1),
        (["gpux-node-a"], WINDOW_END_NS, WINDOW_START_NS, 1),
        (["gpux-node-a"], -NS_PER_S, WINDOW_START_NS, 1),
        (["gpux-node-a"], WINDOW_START_NS, WINDOW_END_NS, -1),
        (["gpux-node-a"], WINDOW_START_NS, WINDOW_END_NS, 2**64),
    ],
)
def test_a_certificate_without_principal_window_or_valid_serial_is_refused(
    tmp_path: Path, principals: list[str], after_ns: int, before_ns: int, serial: int
) -> None:
    ca = CertificateAuthority.generate()
    with pytest.raises(DeliveryError):
        ca.issue(generate_user_key(tmp_path / "id"), "h", principals, after_ns, before_ns, serial)


@pytest.mark.parametrize(
    "key",
    [
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["ed25519", "nistp256", "nistp384", "nistp521", "rsa2048"],
)
def test_holder_key_types_are_accepted_with_openssh_fingerprints(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> None:
    line = public_line(key)
    canonical, fingerprint = parse_public_key(f"  {line} someone@laptop \n")
    assert canonical == line
    assert fingerprint == asyncssh.import_public_key(line).get_fingerprint("sha256")
    CertificateAuthority.generate().issue(
        canonical, "h", ["gpux-node-a"], WINDOW_START_NS, WINDOW_END_NS, serial=1
    )


def test_keys_that_are_not_accepted_are_refused_by_name(tmp_path: Path) -> None:
    short_rsa = public_line(rsa.generate_private_key(65537, 1024))
    ed_line = public_line(ed25519.Ed25519PrivateKey.generate())
    ed_blob = ed_line.split()[1]
    dss_blob = base64.b64encode(ssh_string(b"ssh-dss") + ssh_string(b"\x01") * 4).decode()
    ca = CertificateAuthority.generate()
    certificate = ca.issue(ed_line, "h", ["p"], WINDOW_START_NS, WINDOW_END_NS, serial=1)
    refused = [
        "",
        "ssh-ed25519",
        short_rsa,
        f"ssh-dss {dss_blob}",
        certificate,
        f"sk-ssh-ed25519@openssh.com {ed_blob}",
        f"ssh-rsa {ed_blob}",  # the blob says ssh-ed25519
        "ssh-ed25519 !!!notbase64",
        "ssh-ed25519 " + "A" * 20_000,
    ]
    for line in refused:
        with pytest.raises(DeliveryError):
            parse_public_key(line)


def test_holder_principal_names_the_node_and_refuses_pattern_characters() -> None:
    assert holder_principal("rack1-node.07_a") == "gpux-node-rack1-node.07_a"
    assert holder_principal("eu:rack1:7") == "gpux-node-eu:rack1:7"  # the protocol allows ":"
    for bad in ("", "a b", "node*", "n?", "a,b", "!a", "-a", "a/b", "x" * 65):
        with pytest.raises(DeliveryError):
            holder_principal(bad)


def test_the_ssh_line_names_key_certificate_port_and_pinned_host_key() -> None:
    line = ssh_command_line("gpu user", "node.example", 2222, Path("/home/h/.ssh/id ed25519"),
                            Path("/home/h/.ssh/c-cert.pub"), Path("/tmp/known hosts"))  # fmt: skip
    assert shlex.split(line) == [
        "ssh", "-i", "/home/h/.ssh/id ed25519", "-o", "CertificateFile=/home/h/.ssh/c-cert.pub",
        "-o", "IdentitiesOnly=yes", "-p", "2222", "-o", "UserKnownHostsFile=/tmp/known hosts",
        "-o", "StrictHostKeyChecking=yes", "gpu user@node.example",
    ]  # fmt: skip
    plain = shlex.split(ssh_command_line("root", "10.0.0.1", 22, "id", "id-cert.pub"))
    assert "StrictHostKeyChecking=yes" not in plain
    assert plain[-1] == "root@10.0.0.1"


def test_the_known_hosts_line_brackets_a_port_other_than_22() -> None:
    host_key = public_line(ed25519.Ed25519PrivateKey.generate())
    assert known_hosts_line("127.0.0.1", 2200, host_key + " comment") == (
        f"[127.0.0.1]:2200 {host_key}"
    )
    assert known_hosts_line("node", 22, host_key) == f"node {host_key}"
