"""The delivery service's private keys, kept in files of one directory (`--keys-dir`).

- `ssh_ca`: the SSH certificate authority (OpenSSH Ed25519 private key, 0600); nodes trust
  its public key, published in `delivery.authority`.
- `sample_signer.key`: the raw 32-byte Ed25519 seed that signs samples (0600); its public
  key is published in `delivery.signers` under its signer id.
- `prober_ed25519`: the prober's own SSH key; `prober_ed25519-cert.pub` its current
  certificate (principal `gpux-prober`), written again when renewed.

Private keys never enter the database. Losing the directory loses nothing already measured
(the old signer stays published), but nodes must be given the new CA key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery.ca import PROBER_PRINCIPAL, CertificateAuthority, generate_user_key
from delivery.errors import DeliveryError
from delivery.evidence import Signer

__all__ = ["ProberCertificate", "VenueKeys"]

CA_FILE: Final = "ssh_ca"
SIGNER_FILE: Final = "sample_signer.key"
PROBER_KEY_FILE: Final = "prober_ed25519"
PROBER_CERTIFICATE_FILE: Final = "prober_ed25519-cert.pub"
NS_PER_S: Final = 10**9
BACKDATE_S: Final = 60  # a prober certificate is valid from a minute ago: clocks differ


@dataclass(frozen=True)
class ProberCertificate:
    """The prober's certificate line and the end of its validity."""

    line: str
    valid_before_ns: int


def _prober_public_key(path: Path) -> str:
    if not path.exists():
        try:
            return generate_user_key(path)
        except FileExistsError:
            pass
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DeliveryError(f"the prober key {path} must be Ed25519")
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class VenueKeys:
    """The CA, the sample signer and the prober's SSH key, loaded or created in `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.ca = CertificateAuthority.load_or_create(directory / CA_FILE)
        self.signer = Signer.load_or_create(directory / SIGNER_FILE)
        self.prober_key_path = directory / PROBER_KEY_FILE
        self.prober_public_key = _prober_public_key(self.prober_key_path)

    def issue_prober_certificate(self, now_ns: int, validity_s: int,
                                 serial: int) -> ProberCertificate:
        """Certify the prober's key (principal `gpux-prober`) from a minute ago for
        `validity_s`; write it next to the key and return it."""
        valid_before_ns = now_ns + validity_s * NS_PER_S
        line = self.ca.issue(self.prober_public_key, "gpux-prober", [PROBER_PRINCIPAL],
                             now_ns - BACKDATE_S * NS_PER_S, valid_before_ns, serial)
        path = self.directory / PROBER_CERTIFICATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(line + "\n")
        temporary.replace(path)
        return ProberCertificate(line=line, valid_before_ns=valid_before_ns)
