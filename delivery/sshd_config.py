"""The files a node's OpenSSH server needs to let the venue's certificates in.

Two files and a few sshd_config lines, nothing else on the node changes:
- the CA keys file (`TrustedUserCAKeys`): the venue CA's public key line;
- the principals file (`AuthorizedPrincipalsFile`) for the node's login user: the holder
  principal `gpux-node-<node_id>` (a holder gets an ordinary session for the window its
  certificate names), and the prober principal with a forced command (the challenge
  responder), no pty, no forwarding and no ~/.ssh/rc, so the prober's certificate can do
  nothing else;
- the config snippet naming both files, inside `Match User <login>` when the login user is
  given (then no other account of the machine accepts the venue's certificates).

sshd reads both files at every login, so a new CA key or node id needs no reload; a change
to the snippet does (`systemctl reload ssh`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from delivery.ca import PROBER_PRINCIPAL, holder_principal, parse_public_key
from delivery.errors import DeliveryError

CA_KEYS_FILE_NAME = "gpux_trusted_user_ca_keys"
PRINCIPALS_FILE_NAME = "gpux_authorized_principals"
# no-user-rc: a ~/.ssh/rc runs before the forced command, and what it prints would reach
# the prober ahead of the first reply line.
PROBER_RESTRICTIONS = ("no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,"
                       "no-user-rc")
RESPONDER_COMMAND_CHARS_MAX = 1024


class NodeSshFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where the two files were written, and the sshd_config lines that use them."""

    ca_keys_path: Path
    principals_path: Path
    config_snippet: str


def principals_lines(node_id: str, responder_command: str) -> list[str]:
    """Return the principals file's lines: the holder principal, then the prober's with its
    forced command and restrictions (authorized_keys option syntax)."""
    return [holder_principal(node_id), prober_principal_line(responder_command)]


def prober_principal_line(responder_command: str) -> str:
    """Return the principals line that forces the prober into `responder_command`."""
    if not responder_command.strip():
        raise DeliveryError("the responder command is empty")
    if len(responder_command) > RESPONDER_COMMAND_CHARS_MAX:
        raise DeliveryError(f"the responder command is over {RESPONDER_COMMAND_CHARS_MAX} chars")
    if any(character in responder_command for character in "\r\n\0"):
        raise DeliveryError("the responder command must be one line")
    if responder_command.endswith("\\"):  # it would escape the closing quote
        raise DeliveryError("the responder command must not end with a backslash")
    # sshd unescapes `\"` alone (auth-options.c opt_dequote); other backslashes stay as they are
    quoted = responder_command.replace('"', '\\"')
    return f'command="{quoted}",{PROBER_RESTRICTIONS} {PROBER_PRINCIPAL}'


def config_snippet(ca_keys_path: Path, principals_path: Path, login: str | None = None) -> str:
    """Return the sshd_config lines naming the two files (in a Match block for `login`)."""
    lines = [
        f"TrustedUserCAKeys {_config_path(ca_keys_path)}",
        f"AuthorizedPrincipalsFile {_config_path(principals_path)}",
    ]
    if login is None:
        return "".join(f"{line}\n" for line in lines)
    if not login or any(character.isspace() or character in '"*?!,' for character in login):
        raise DeliveryError(f"login user {login!r} cannot go into a Match block")
    return f"Match User {login}\n" + "".join(f"    {line}\n" for line in lines) + "Match all\n"


def _config_path(path: Path) -> str:
    text = str(path.absolute())
    if any(character.isspace() or character in '"%' for character in text):
        raise DeliveryError(f"sshd cannot be given the path {text!r} (space, quote or '%')")
    return text


def render_node_files(
    ca_public_key: str,
    node_id: str,
    responder_command: str,
    directory: Path,
    login: str | None = None,
) -> NodeSshFiles:
    """Write the CA keys file and the principals file into `directory` (mode 0644, each
    replaced atomically) and return their paths with the sshd_config snippet."""
    ca_line, _ = parse_public_key(ca_public_key)
    lines = principals_lines(node_id, responder_command)
    directory.mkdir(parents=True, exist_ok=True)
    ca_keys_path = directory / CA_KEYS_FILE_NAME
    principals_path = directory / PRINCIPALS_FILE_NAME
    write_text_atomically(ca_keys_path, ca_line + "\n")
    write_text_atomically(principals_path, "".join(f"{line}\n" for line in lines))
    return NodeSshFiles(
        ca_keys_path=ca_keys_path,
        principals_path=principals_path,
        config_snippet=config_snippet(ca_keys_path, principals_path, login),
    )


def write_text_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` in one rename, so sshd never reads half a file."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
