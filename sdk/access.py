"""Write what a holder needs to log in to its assigned nodes, from `delivery_access`.

For each assignment with a certificate, `write_access` writes the certificate of the holder's
key (the one whose fingerprint matches `identity`'s public key) next to the identity file,
under the name the gateway gave it, and the node's host key as a known_hosts file beside it;
it returns the `ssh` line using them: `-i IDENTITY -o CertificateFile=... -o
UserKnownHostsFile=... -o StrictHostKeyChecking=yes`, so the node's host key is checked
against the registered one and no other key is offered first.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from wsapi.messages import AccessItem


@dataclass(frozen=True, slots=True)
class AccessLine:
    """An assignment's `ssh` line (None with a reason while it cannot be given)."""

    issue_id: str
    node_id: str
    window_start: int
    window_end: int
    ssh_command: str | None
    waiting_for: str | None


def fingerprint(public_key_line: str) -> str:
    """The "SHA256:..." fingerprint of an OpenSSH public key line (as ssh-keygen -l)."""
    parts = public_key_line.split()
    if len(parts) < 2:
        raise ValueError("an SSH public key line is '<type> <base64> [comment]'")
    digest = hashlib.sha256(base64.b64decode(parts[1], validate=True)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def ssh_line(login: str, host: str, port: int, identity: Path, certificate: Path,
             known_hosts: Path) -> str:
    return shlex.join([
        "ssh", "-i", str(identity), "-o", f"CertificateFile={certificate}",
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-p", str(port), f"{login}@{host}"])


def write_access(items: list[AccessItem], identity: Path) -> list[AccessLine]:
    """Write the certificates of `identity`'s key and the nodes' known_hosts files next to
    `identity` (its public half at `identity.pub`); return each assignment's line."""
    key_fingerprint = fingerprint(identity.with_name(identity.name + ".pub").read_text())
    directory = identity.parent
    lines = []
    for item in items:
        mine = [c for c in item.certificates if c.fingerprint == key_fingerprint]
        reason = None
        if item.host is None or item.port is None or item.login is None or not item.host_key:
            reason = f"node {item.node_id} is not registered yet"
        elif not mine:
            reason = ("no certificate of this key yet (register it with `gpux trade "
                      "ssh-key add`; the delivery service issues one within seconds)")
        if reason is not None:
            lines.append(AccessLine(item.issue_id, item.node_id, item.window_start,
                                    item.window_end, None, reason))
            continue
        assert item.host is not None and item.port is not None and item.login is not None
        certificate = directory / _plain(mine[0].file)
        certificate.write_text(mine[0].certificate.strip() + "\n")
        known_hosts = directory / _plain(item.known_hosts_file
                                         or f"gpux-{item.node_id}.known_hosts")
        name = item.host if item.port == 22 else f"[{item.host}]:{item.port}"
        known_hosts.write_text(f"{name} {item.host_key}\n")
        lines.append(AccessLine(item.issue_id, item.node_id, item.window_start,
                                item.window_end, ssh_line(item.login, item.host, item.port,
                                                          identity, certificate, known_hosts),
                                None))
    return lines


def _plain(name: str) -> str:
    """A file name the gateway gave, refused when it would leave the identity's folder."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"the gateway named a file {name[:80]!r}: not a plain file name")
    return name


__all__ = ["AccessLine", "fingerprint", "ssh_line", "write_access"]
