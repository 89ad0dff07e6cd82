"""Debian's OpenSSH server on a free loopback port: a GPU node's sshd, for delivery tests.

The server is the one a Debian 12 node runs, pinned to the byte: `openssh-server` and the
`libwrap0` it links, each fetched with `apt-get download` at a fixed version, checked against
its sha256, unpacked with `dpkg-deb -x` into the harness cache and run from there with
`LD_LIBRARY_PATH` (nothing is installed on the machine). A version apt no longer offers, or a
different digest, fails with a message: never another sshd in its place.

Each service has its own host key, config and log in its run dir. It accepts public-key
logins only, for one login user: root when we are root (`PermitRootLogin
prohibit-password`; sshd then needs its privilege separation user `sshd` and dir
`/run/sshd`, made here when missing), else the current user. Which certificates it accepts
is the node's business: by default it trusts the CA keys and principals that `authorize()`
writes (sshd reads both files at every login, so tests change them without a restart);
`config_snippet` replaces those two lines by a node's own (`delivery.sshd_config`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness.errors import ServiceError
from harness.paths import cache_dir
from harness.ports import LOOPBACK_HOST, free_port
from harness.service import Service


@dataclass(frozen=True)
class PinnedDeb:
    """A Debian package at one version, known by the sha256 of its .deb."""

    name: str
    version: str
    sha256: str


OPENSSH_VERSION = "1:9.2p1-2+deb12u10"
DEB_ARCHITECTURE = "amd64"
PINNED_DEBS = (
    PinnedDeb(
        "openssh-server",
        OPENSSH_VERSION,
        "933cd92a2329f9bf26d22660a834ae18ebdbe8df9c6127e4d9fcb098dac9cf72",
    ),
    PinnedDeb(
        "libwrap0", "7.6.q-32", "cbce2669a3ba4d74cfdc52b14f38014893e23d85a33d109a3422c342eefc55f8"
    ),
)
PRIVSEP_USER = "sshd"
PRIVSEP_DIR = Path("/run/sshd")
USERADD_NAME_IN_USE = 9  # useradd(8)'s exit status
TOOL_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 1.0
COMPLETE_MARK = "complete"


def install_dir() -> Path:
    """Return where the pinned server is unpacked (one dir per version)."""
    safe_version = OPENSSH_VERSION.replace(":", "_").replace("+", "_")
    return cache_dir() / f"openssh-server-{safe_version}-{DEB_ARCHITECTURE}"


def sshd_binary() -> Path:
    return install_dir() / "root" / "usr" / "sbin" / "sshd"


def install_sshd() -> Path:
    """Fetch, check and unpack the pinned .debs unless done already; return sshd's path."""
    target = install_dir()
    if (target / COMPLETE_MARK).is_file() and sshd_binary().is_file():
        return sshd_binary()
    _require_platform()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".openssh-staging-", dir=target.parent))
    try:
        debs = staging / "debs"
        debs.mkdir()
        for pinned in PINNED_DEBS:
            deb = _download(pinned, debs)
            _require_digest(pinned, deb)
            _run_tool(["dpkg-deb", "-x", str(deb), str(staging / "root")], staging, "dpkg-deb -x")
        shutil.rmtree(debs)
        (staging / COMPLETE_MARK).touch()
        shutil.rmtree(target, ignore_errors=True)  # an earlier unpack cut short
        try:
            staging.rename(target)
        except OSError:
            if not (target / COMPLETE_MARK).is_file():  # not a concurrent install that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sshd_binary()


def _require_platform() -> None:
    if platform.system() != "Linux" or shutil.which("dpkg-deb") is None:
        raise ServiceError("the pinned OpenSSH server needs Debian's dpkg-deb and apt-get")
    architecture = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False,
        timeout=TOOL_TIMEOUT_S,
    ).stdout.strip()  # fmt: skip
    if architecture != DEB_ARCHITECTURE:
        raise ServiceError(
            f"the OpenSSH server .debs are pinned for {DEB_ARCHITECTURE}, this is {architecture}"
        )


def _download(pinned: PinnedDeb, directory: Path) -> Path:
    """Run `apt-get download NAME=VERSION` in `directory`; as root, refresh apt's lists once
    when apt does not know that version (a fresh machine has none)."""
    command = ["apt-get", "download", "-q", f"{pinned.name}={pinned.version}"]
    result = _apt(command, directory)
    if result.returncode != 0 and os.geteuid() == 0:
        _apt(["apt-get", "update", "-qq"], directory)
        result = _apt(command, directory)
    found = sorted(directory.glob(f"{pinned.name}_*.deb"))
    if result.returncode != 0 or len(found) != 1:
        raise ServiceError(
            f"apt-get download {pinned.name}={pinned.version} failed (code {result.returncode});"
            " the delivery tests need exactly this version (a Debian 12 bookworm apt source;"
            " run `apt-get update` first if apt's lists are old):\n"
            + (result.stderr or result.stdout).strip()[-2000:]
        )
    return found[0]


def _apt(command: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, cwd=directory, capture_output=True, text=True, check=False,
            timeout=TOOL_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceError(f"{' '.join(command)} could not run: {error}") from error


def _require_digest(pinned: PinnedDeb, deb: Path) -> None:
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    if digest != pinned.sha256:
        raise ServiceError(
            f"{deb.name} has sha256 {digest}, not the pinned {pinned.sha256}: refusing it"
        )


def _run_tool(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
    )
    if result.returncode != 0:
        raise ServiceError(f"{what} failed (code {result.returncode}): {result.stderr.strip()}")


def library_path(root: Path) -> str:
    """Return the LD_LIBRARY_PATH that finds the unpacked libraries (libwrap) first."""
    directories = sorted({str(library.parent) for library in root.glob("**/libwrap.so.0")})
    if not directories:
        raise ServiceError(f"no libwrap.so.0 under {root}: the OpenSSH install is incomplete")
    inherited = os.environ.get("LD_LIBRARY_PATH", "")
    return ":".join([*directories, inherited] if inherited else directories)


def ensure_privilege_separation() -> None:
    """Make what sshd needs to run as root: its unprivileged user and its empty chroot dir."""
    try:
        pwd.getpwnam(PRIVSEP_USER)
    except KeyError:
        command = [
            "useradd", "--system", "--no-create-home", "--home-dir", str(PRIVSEP_DIR),
            "--shell", "/usr/sbin/nologin", PRIVSEP_USER,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
        if result.returncode not in (0, USERADD_NAME_IN_USE):
            raise ServiceError(
                f"could not create the user {PRIVSEP_USER}: {result.stderr.strip()}"
            ) from None
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def login_user() -> str:
    """Return the account the service lets in: root when we are root, else ourselves."""
    return pwd.getpwuid(os.geteuid()).pw_name


class SshdService(Service):
    """OpenSSH's sshd on a free loopback port, with its own host key and config."""

    name = "sshd"
    start_timeout_s = 30.0

    def __init__(self, run_dir: Path, config_snippet: str | None = None) -> None:
        super().__init__(run_dir)
        self.host = LOOPBACK_HOST
        self.port = 0
        self.login = login_user()
        self.config_snippet = config_snippet
        self._binary = Path("/nonexistent")
        self._host_key_line = ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def host_key_line(self) -> str:
        """Return the server's host public key ("ssh-ed25519 <base64>")."""
        if not self._host_key_line:
            raise ServiceError("sshd has no host key before its first start")
        return self._host_key_line

    @property
    def config_path(self) -> Path:
        return self.run_dir / "sshd_config"

    @property
    def host_key_path(self) -> Path:
        return self.run_dir / "ssh_host_ed25519_key"

    @property
    def ca_keys_path(self) -> Path:
        return self.run_dir / "trusted_user_ca_keys"

    @property
    def principals_path(self) -> Path:
        return self.run_dir / "authorized_principals"

    def authorize(self, ca_public_keys: Sequence[str], principals: Sequence[str]) -> None:
        """Trust these CA key lines and accept these principals lines (authorized_keys option
        syntax allowed) from the next login on; an empty list accepts nothing."""
        for line in (*ca_public_keys, *principals):
            if "\n" in line or "\r" in line:
                raise ServiceError("a CA key or principals line must be one line")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_replacing(self.ca_keys_path, "".join(f"{line}\n" for line in ca_public_keys))
        _write_replacing(self.principals_path, "".join(f"{line}\n" for line in principals))

    def known_hosts_line(self) -> str:
        """Return a known_hosts line for this server (`[127.0.0.1]:PORT <host key>`)."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    def _prepare(self) -> None:
        binary = sshd_binary()
        self._binary = binary if binary.is_file() else install_sshd()
        if os.geteuid() == 0:
            ensure_privilege_separation()
        self.port = free_port()
        if not self.host_key_path.is_file():
            self._write_host_key()
        self._host_key_line = self._read_host_key_line()
        if not self.ca_keys_path.exists():
            self.authorize([], [])
        _write_replacing(self.config_path, self._config_text())
        self._check_config()

    def _write_host_key(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        descriptor = os.open(self.host_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)

    def _read_host_key_line(self) -> str:
        key = serialization.load_ssh_private_key(self.host_key_path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ServiceError(f"{self.host_key_path} is not an Ed25519 key")
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return public.decode()

    def _config_text(self) -> str:
        trust = self.config_snippet
        if trust is None:
            trust = (
                f"TrustedUserCAKeys {self.ca_keys_path}\n"
                f"AuthorizedPrincipalsFile {self.principals_path}\n"
            )
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.run_dir / 'sshd.pid'}",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "AuthorizedKeysFile none",  # certificates only: the user's own keys play no part
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.login}",
            "StrictModes no",  # the run dir may sit under a world-writable /tmp
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 100:30:200",  # tests open many sessions at once
            "LogLevel VERBOSE",
        ]
        return "".join(f"{line}\n" for line in lines) + trust

    def _check_config(self) -> None:
        """Run `sshd -t` so a bad config fails here with sshd's own words."""
        result = subprocess.run(
            [str(self._binary), "-t", "-f", str(self.config_path)], capture_output=True,
            text=True, check=False, timeout=TOOL_TIMEOUT_S, env=self._environment(),
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"sshd rejects its config {self.config_path}: {result.stderr.strip()}"
            )

    def _environment(self) -> dict[str, str]:
        root = install_dir() / "root"
        return {**os.environ, "LD_LIBRARY_PATH": library_path(root)}

    def _popen_options(self) -> dict[str, Any]:
        return {"env": self._environment()}

    def _command(self) -> list[str]:
        # -D: stay in the foreground (one process group the harness can stop); -e: log to
        # stderr, which the harness writes to the service's log.
        return [str(self._binary), "-D", "-e", "-f", str(self.config_path)]

    def _probe_ready(self) -> bool:
        """Ready when the port answers with an SSH identification line."""
        try:
            with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT_S) as c:
                c.settimeout(PROBE_TIMEOUT_S)
                return c.recv(8).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _state_extra(self) -> dict[str, object]:
        return {"port": self.port, "login": self.login, "host_key": self._host_key_line}


def _write_replacing(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)
    temporary.replace(path)
