"""The venue's SSH certificate authority: who may log in to a node, as whom, and when.

A node trusts one CA key (`TrustedUserCAKeys`) and accepts two principals for its login user
(`AuthorizedPrincipalsFile`, see `delivery.sshd_config`): `gpux-node-<node_id>` for the
holders of an assignment on that node, and `gpux-prober` for the venue's prober, whose session
the node forces into the challenge responder. The CA signs each holder's own public key with
the holder principal for exactly the delivery window (whole seconds: the window's start
rounded down, its end rounded up), so the node itself refuses a login before or after it;
no per-login call to the venue is needed.

The CA key is Ed25519 in an OpenSSH private key file (mode 0600). Certificates are OpenSSH
user certificates made with `cryptography`'s `SSHCertificateBuilder`. No clock is read here:
callers pass the window in nanoseconds.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh

from delivery.errors import DeliveryError
from delivery.keyfiles import create_private_file

PROBER_PRINCIPAL = "gpux-prober"
HOLDER_PRINCIPAL_PREFIX = "gpux-node-"
# A node id goes into a principal name, a file name and sshd/asyncssh principal patterns
# (where `*`, `?`, `,` and `!` mean something): letters, digits and `._-` only.
# The protocol's node id syntax ([A-Za-z0-9_.:-]{1,64}) starting with a letter or digit, so that
# no node id is a path component like ".." or reads as an option ("-x").
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
RSA_BITS_MIN = 2048
NS_PER_S = 1_000_000_000
PUBLIC_KEY_LINE_CHARS_MAX = 16_384
# What a holder's session may do; the prober's certificate carries none of these (its
# session is forced into the responder by the node's principals file anyway).
HOLDER_EXTENSIONS = (
    b"permit-agent-forwarding",
    b"permit-port-forwarding",
    b"permit-pty",
    b"permit-user-rc",
)
ACCEPTED_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


def holder_principal(node_id: str) -> str:
    """Return the principal a holder's certificate carries for `node_id`."""
    require_node_id(node_id)
    return HOLDER_PRINCIPAL_PREFIX + node_id


def require_node_id(node_id: str) -> None:
    """Raise DeliveryError unless `node_id` is safe in principals, patterns and file names."""
    if not NODE_ID_PATTERN.fullmatch(node_id):
        raise DeliveryError(
            f"node id {node_id!r} must be 1-64 letters, digits, '.', ':', '_' or '-',"
            " starting with a letter or digit"
        )


def parse_public_key(line: str) -> tuple[str, str]:
    """Return (the key line without its comment, its "SHA256:..." fingerprint).

    Accepts ssh-ed25519, ecdsa-sha2-nistp256/384/521 and ssh-rsa of at least 2048 bits, the
    forms a holder's `~/.ssh/id_*.pub` has; anything else raises DeliveryError naming what is
    wrong (certificates, DSA, security keys, a short RSA key, a damaged line).
    """
    text = line.strip()
    if not text:
        raise DeliveryError("the SSH public key is empty")
    if len(text) > PUBLIC_KEY_LINE_CHARS_MAX:
        raise DeliveryError(f"the SSH public key is over {PUBLIC_KEY_LINE_CHARS_MAX} chars")
    parts = text.split()
    if len(parts) < 2:
        raise DeliveryError("an SSH public key line is '<type> <base64> [comment]'")
    key_type, encoded = parts[0], parts[1]
    if key_type not in ACCEPTED_KEY_TYPES:
        raise DeliveryError(
            f"SSH key type {key_type[:40]!r} is not accepted; use one of "
            + ", ".join(ACCEPTED_KEY_TYPES)
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
        key = ssh.load_ssh_public_key(f"{key_type} {encoded}".encode())
    except (ValueError, UnsupportedAlgorithm) as error:
        raise DeliveryError(f"the {key_type} public key does not decode: {error}") from error
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_BITS_MIN:
        raise DeliveryError(
            f"an RSA key needs {RSA_BITS_MIN} bits or more, this one has {key.key_size}"
        )
    canonical = f"{key_type} {base64.b64encode(blob).decode()}"
    return canonical, fingerprint_of_blob(blob)


def fingerprint_of_blob(blob: bytes) -> str:
    """Return OpenSSH's SHA256 fingerprint of a public key blob (`ssh-keygen -l`'s form)."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def ssh_command_line(
    login: str,
    host: str,
    port: int,
    identity_path: Path | str,
    certificate_path: Path | str,
    known_hosts_path: Path | str | None = None,
) -> str:
    """Return the `ssh` command that logs in to a node with a holder's key and certificate.

    `IdentitiesOnly` keeps ssh from offering other keys first (a node counts failed tries);
    with `known_hosts_path` (a file holding the node's registered host key) the host key is
    checked strictly against it instead of the user's own known_hosts.
    """
    words = [
        "ssh", "-i", str(identity_path), "-o", f"CertificateFile={certificate_path}",
        "-o", "IdentitiesOnly=yes", "-p", str(port),
    ]  # fmt: skip
    if known_hosts_path is not None:
        words += [
            "-o", f"UserKnownHostsFile={known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
        ]  # fmt: skip
    words.append(f"{login}@{host}")
    return shlex.join(words)


def known_hosts_line(host: str, port: int, host_key_line: str) -> str:
    """Return a known_hosts line for a node's host key (`[host]:port` unless port is 22)."""
    canonical, _ = parse_public_key(host_key_line)
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {canonical}"


def generate_user_key(path: Path) -> str:
    """Write a new Ed25519 private key (OpenSSH format, mode 0600) to `path`; return the
    public key line. For the prober's own key and for tests; holders bring their own."""
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(path, key)
    return public_key_line_of(key)


def public_key_line_of(key: ed25519.Ed25519PrivateKey) -> str:
    """Return the "ssh-ed25519 <base64>" line of a private key's public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _write_private(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    """Write `key` to a new file readable by its owner alone; never replace an existing one."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    create_private_file(path, data)


class CertificateAuthority:
    """An Ed25519 SSH CA that signs holder and prober certificates."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> CertificateAuthority:
        """Return a CA with a fresh key held in memory only (tests)."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> CertificateAuthority:
        """Load the CA key from `path`, or create it there (mode 0600) when absent."""
        if not path.exists():
            try:
                _write_private(path, ed25519.Ed25519PrivateKey.generate())
            except FileExistsError:
                pass  # a concurrent creator won; load its key
        try:
            key = ssh.load_ssh_private_key(path.read_bytes(), password=None)
        except (ValueError, UnsupportedAlgorithm) as error:
            raise DeliveryError(f"the CA key {path} is not an OpenSSH private key") from error
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DeliveryError(f"the CA key {path} must be Ed25519")
        return cls(key)

    def private_bytes(self) -> bytes:
        """Return the CA key as an OpenSSH private key file's bytes (for storing it)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_bytes(cls, data: bytes) -> CertificateAuthority:
        """Return the CA whose OpenSSH private key file's bytes are `data`."""
        try:
            key = ssh.load_ssh_private_key(data, password=None)
        except (ValueError, UnsupportedAlgorithm) as error:
            raise DeliveryError("the CA key is not an OpenSSH private key") from error
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DeliveryError("the CA key must be Ed25519")
        return cls(key)

    def public_key_line(self) -> str:
        """Return the CA's public key line, what a node puts in `TrustedUserCAKeys`."""
        return public_key_line_of(self._key)

    def issue(
        self,
        public_key_line: str,
        key_id: str,
        principals: Sequence[str],
        valid_after_ns: int,
        valid_before_ns: int,
        serial: int,
        force_command: str | None = None,
    ) -> str:
        """Sign `public_key_line` into an OpenSSH user certificate line.

        Valid from `valid_after_ns` rounded down to the second to `valid_before_ns` rounded
        up. A certificate naming the prober principal gets no extensions (no pty, no
        forwarding); a holder's gets HOLDER_EXTENSIONS. `force_command` sets the critical
        option of that name.
        """
        if not principals:
            raise DeliveryError("a certificate needs at least one principal")
        if not 0 <= serial < 2**64:
            raise DeliveryError(f"certificate serial {serial} is outside 0..2^64-1")
        valid_after_s = valid_after_ns // NS_PER_S
        valid_before_s = -(-valid_before_ns // NS_PER_S)
        if valid_after_s < 0 or valid_before_s <= valid_after_s:
            raise DeliveryError(
                f"certificate window [{valid_after_ns}, {valid_before_ns}) ns is empty"
            )
        canonical, _ = parse_public_key(public_key_line)
        subject = ssh.load_ssh_public_key(canonical.encode())
        if not isinstance(
            subject, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
        ):
            raise DeliveryError("the subject key cannot be certified")
        builder = (
            ssh.SSHCertificateBuilder()
            .public_key(subject)
            .type(ssh.SSHCertificateType.USER)
            .serial(serial)
            .key_id(key_id.encode())
            .valid_principals([principal.encode() for principal in principals])
            .valid_after(valid_after_s)
            .valid_before(valid_before_s)
        )
        if force_command is not None:
            builder = builder.add_critical_option(b"force-command", force_command.encode())
        if PROBER_PRINCIPAL not in principals:
            for extension in HOLDER_EXTENSIONS:
                builder = builder.add_extension(extension, b"")
        certificate = builder.sign(self._key)
        return certificate.public_bytes().decode()
