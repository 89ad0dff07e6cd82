"""A PostgreSQL cluster (initdb + postgres) on a free loopback port.

The binaries are the `pgserver` wheel's, so uv.lock pins PostgreSQL to the byte like every
other dependency, and `gpux dev` and the tests run the same server ($GPUX_PG_BIN, then
Debian's, serve where the wheel is absent).

PostgreSQL refuses to run as root, so when we are root the cluster runs as the
unprivileged system user `gpux-pg` (created on demand). That user must reach the binaries
and the data dir, which a clone under /root or in a `mktemp -d` folder (mode 700) does not
let it: the binaries are then copied once to a root-owned dir under /var/cache/gpux, and
the data dir lives outside, linked from the run dir.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from glob import glob
from pathlib import Path
from typing import Any

from harness.errors import ServiceError
from harness.ports import LOOPBACK_HOST, free_port
from harness.service import Service

OS_USER_NAME = "gpux-pg"
USERADD_NAME_IN_USE = 9  # useradd(8)'s exit status
DEFAULT_USER = "gpux"
DEFAULT_PASSWORD = "gpux"
DEFAULT_DATABASE = "gpux"
TOOL_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 2
SERVER_SETTINGS = (
    f"listen_addresses={LOOPBACK_HOST}",
    "unix_socket_directories=",  # TCP only: no socket path-length or permission trouble
    "fsync=off",  # tests kill processes, not machines: the page cache survives a SIGKILL
    "max_connections=200",
)


SHARED_BINARIES_ROOT = Path("/var/cache/gpux")


def wheel_bin_dir() -> Path | None:
    """Return the bin dir of the `pgserver` wheel's PostgreSQL, without importing pgserver
    (its import sets up runtime dirs and locks we do not use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "initdb").is_file():
            return candidate
    return None


def postgres_bin_dir() -> Path | None:
    """Return the dir with initdb/postgres: $GPUX_PG_BIN, the wheel's, Debian's newest, PATH."""
    override = os.environ.get("GPUX_PG_BIN", "").strip()
    if override:
        return Path(override)
    wheel = wheel_bin_dir()
    if wheel is not None:
        return wheel
    debian = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    if debian:
        return Path(debian[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _major_version(initdb_path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", initdb_path)
    return int(match.group(1)) if match else 0


def require_bin_dir() -> Path:
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").is_file():
        raise ServiceError(
            "PostgreSQL binaries (initdb, postgres) not found: `make test` installs the"
            " pgserver wheel from uv.lock; or set GPUX_PG_BIN to a dir holding them"
        )
    return bin_dir


def bin_dir_for(bin_dir: Path, os_user: pwd.struct_passwd | None) -> Path:
    """Return a dir with the same binaries that `os_user` (None: ourselves) can run.

    An install below a dir closed to others is copied (see `_install_parts`) to a dir named
    by the server binary's digest, so each version is copied once and a changed one never
    reuses a stale copy.
    """
    bin_dir = bin_dir.resolve()
    if os_user is None or traversable_by_others(bin_dir):
        return bin_dir
    digest = hashlib.sha256((bin_dir / "postgres").read_bytes()).hexdigest()[:16]
    shared = SHARED_BINARIES_ROOT / f"postgres-{digest}"
    base, parts = _install_parts(bin_dir)
    if not (shared / "complete").is_file():
        _copy_parts(base, parts, shared)
    _require_root_owned(shared)
    return shared / bin_dir.relative_to(base)


def _install_parts(bin_dir: Path) -> tuple[Path, list[Path]]:
    """Return a base dir and the dirs below it that the binaries need, layout kept.

    The install (bin, lib, share: PostgreSQL finds them relative to its binaries), and for
    the wheel the shared libraries auditwheel put beside its package, which the binaries
    find through their RPATH `$ORIGIN/../../../pgserver.libs`.
    """
    install = bin_dir.parent
    package = install.parent
    wheel_libs = package.parent / f"{package.name}.libs"
    if wheel_libs.is_dir():
        return package.parent, [install, wheel_libs]
    return package, [install]


def _copy_parts(base: Path, parts: list[Path], target: Path) -> None:
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        for part in parts:
            shutil.copytree(part, staging / part.relative_to(base), symlinks=True)
        for directory, _, _ in os.walk(staging):
            os.chmod(directory, 0o755)  # mkdtemp and copied closed dirs: 0700
        (staging / "complete").touch()
        shutil.rmtree(target, ignore_errors=True)  # an earlier copy cut short
        try:
            staging.rename(target)
        except OSError:
            if not (target / "complete").is_file():  # not a concurrent copy that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_root_owned(path: Path) -> None:
    """Refuse binaries that anyone but root could have written: root starts them."""
    status = os.lstat(path)
    if status.st_uid != 0 or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServiceError(f"{path} must belong to root and be writable by root alone")


def ensure_os_user() -> pwd.struct_passwd:
    """Return the unprivileged user that runs PostgreSQL for root, creating it if missing."""
    try:
        return pwd.getpwnam(OS_USER_NAME)
    except KeyError:
        pass
    command = [
        "useradd", "--system", "--user-group", "--no-create-home",
        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", OS_USER_NAME,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode not in (0, USERADD_NAME_IN_USE):  # in use: a concurrent creator
        raise ServiceError(f"could not create OS user {OS_USER_NAME}: {result.stderr.strip()}")
    return pwd.getpwnam(OS_USER_NAME)


def traversable_by_others(path: Path) -> bool:
    """Tell whether every dir from / down to `path` lets other users pass through."""
    for directory in (path, *path.parents):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresService(Service):
    """A PostgreSQL cluster with one superuser and one database, reachable over TCP."""

    name = "postgres"
    # Where the data dir goes when root runs the cluster from a run dir others cannot reach.
    outside_data_root = Path(tempfile.gettempdir())
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit
    start_timeout_s = 60.0

    def __init__(
        self,
        run_dir: Path,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        super().__init__(run_dir)
        self.user = user
        self.password = password
        self.database = database
        self.port = 0
        self._bin_dir = Path("/nonexistent")
        self._os_user: pwd.struct_passwd | None = None

    @property
    def endpoint(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return (
            f"postgresql://{self.user}:{self.password}@{LOOPBACK_HOST}:{self.port}/{self.database}"
        )

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def _prepare(self) -> None:
        self._os_user = ensure_os_user() if os.geteuid() == 0 else None
        self._bin_dir = bin_dir_for(require_bin_dir(), self._os_user)
        self.port = free_port()
        self._make_data_dir()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()

    def _make_data_dir(self) -> None:
        """Create the data dir; for root, one the `gpux-pg` user owns and can reach."""
        if self.data_dir.is_symlink() and not self.data_dir.exists():
            self.data_dir.unlink()  # the dir it led to is gone (a cleaned /tmp): start afresh
        if self.data_dir.exists():
            return
        if self._os_user is None:
            self.data_dir.mkdir(mode=0o700)
            return
        if traversable_by_others(self.run_dir):
            self.data_dir.mkdir(mode=0o700)
        else:  # e.g. under /root: keep the data outside and link it from the run dir
            self.outside_data_root.mkdir(mode=0o755, parents=True, exist_ok=True)
            outside = tempfile.mkdtemp(prefix="gpux-pg-", dir=self.outside_data_root)
            self.data_dir.symlink_to(outside)
        os.chown(self.data_dir.resolve(), self._os_user.pw_uid, self._os_user.pw_gid)

    def _initdb(self) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="gpux-pg-pw-", encoding="utf-8") as pwfile:
            pwfile.write(self.password + "\n")
            pwfile.flush()
            if self._os_user is not None:  # initdb runs as that user and must read it
                os.chown(pwfile.name, self._os_user.pw_uid, self._os_user.pw_gid)
            command = [
                str(self._bin_dir / "initdb"), "--pgdata", str(self.data_dir.resolve()),
                "--username", self.user, "--pwfile", pwfile.name, "--auth-local", "trust",
                "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
                "--no-sync",
            ]  # fmt: skip
            self._run_tool(command, stdin_text="", what="initdb")

    def _run_tool(self, command: list[str], stdin_text: str, what: str) -> None:
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    command, input=stdin_text.encode(), stdout=log, stderr=subprocess.STDOUT,
                    timeout=TOOL_TIMEOUT_S, check=False, env=self._tool_env(),
                    **self._popen_options(),
                )  # fmt: skip
            except subprocess.TimeoutExpired as error:
                raise self._error(f"{what} took over {TOOL_TIMEOUT_S}s") from error
        if result.returncode != 0:
            raise self._error(f"{what} failed with code {result.returncode}")

    def _tool_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}

    def _popen_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"cwd": self.data_dir.resolve()}
        if self._os_user is not None:
            options.update(user=self._os_user.pw_uid, group=self._os_user.pw_gid, extra_groups=[])
        return options

    def _command(self) -> list[str]:
        settings = [argument for setting in SERVER_SETTINGS for argument in ("-c", setting)]
        postgres = str(self._bin_dir / "postgres")
        return [postgres, "-D", str(self.data_dir.resolve()), "-p", str(self.port), *settings]

    def _probe_ready(self) -> bool:
        command = [
            str(self._bin_dir / "pg_isready"), "-q", "-h", LOOPBACK_HOST, "-p", str(self.port),
            "-t", str(PROBE_TIMEOUT_S),
        ]  # fmt: skip
        try:
            result = subprocess.run(command, check=False, timeout=PROBE_TIMEOUT_S + 3)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _after_ready(self) -> None:
        """Create the database unless it exists (the data dir may be reused)."""
        literal = self.database.replace("'", "''")
        identifier = self.database.replace('"', '""')
        script = (
            f"SELECT 'CREATE DATABASE \"{identifier}\"' WHERE NOT EXISTS "
            f"(SELECT 1 FROM pg_database WHERE datname = '{literal}')\\gexec\n"
        )
        command = [
            str(self._bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", LOOPBACK_HOST, "-p", str(self.port), "-U", self.user, "-d", "postgres",
        ]  # fmt: skip
        self._run_tool(command, stdin_text=script, what="creating the database")

    def _state_extra(self) -> dict[str, object]:
        return {"port": self.port, "env": {"DATABASE_URL": self.url}}
