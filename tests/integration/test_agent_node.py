"""The operator's agent on real parts: `gpux operator agent` (the command, as an operator runs
it) registers a node through a real gateway into the delivery database, and the files it
writes make Debian's OpenSSH server (harness.sshd) let the venue's certificates in: the
prober's certificate is forced into `gpux operator challenge`, whose commitment and rows the
prober's Checker accepts; a holder's certificate for the node gets a session, one for
another node does not. With `--embedded` the agent serves SSH itself until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery import challenge, registry
from delivery.ca import CertificateAuthority, generate_user_key, holder_principal
from delivery.classes import demo_floors
from delivery.sshd_config import CA_KEYS_FILE_NAME, PRINCIPALS_FILE_NAME, config_snippet
from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from gateway.config import GatewayConfig
from gateway.service import GatewayService
from gateway.store import PostgresKeyStore
from gateway.store import migrate as migrate_gateway
from harness.ports import free_port
from harness.sshd import SshdService
from runtime.postgres import create_database, drop_database
from tests.agent_helpers import HOUR_NS, probe_exchange, prober_client

ROOT = Path(__file__).resolve().parents[2]
OPERATOR, NODE, GPU = "op-agent", "agent-n1", "L40S-48GB"
FLOOR = demo_floors()[GPU]
COMMAND_TIMEOUT_S = 120
LOGIN_TIMEOUT_S = 20


@dataclass
class Venue:
    """A gateway serving `register_node` from a delivery database with a published CA."""

    url: str
    key: str  # the operator's API key, KEY_ID:PRIVATE_KEY
    ca: CertificateAuthority
    conn: asyncpg.Connection


@pytest.fixture
async def venue(database_url: str, tmp_path: Path) -> AsyncIterator[Venue]:
    name = f"agent_{uuid.uuid4().hex[:10]}"
    url = await create_database(database_url, name)
    conn = await asyncpg.connect(url)
    store: PostgresKeyStore | None = None
    stop = asyncio.Event()
    serving: asyncio.Task[None] | None = None
    try:
        await migrate_gateway(url)
        store = await PostgresKeyStore.open(url)
        key_id, private_key = await store.add_key(OPERATOR, "operator")
        await registry.migrate(conn)
        ca = CertificateAuthority.generate()
        await registry.publish_ca(conn, ca.public_key_line(), time.time_ns())
        event_log = EmbeddedLog.open(tmp_path / "log", EmbeddedConfig(fsync=False))
        gateway = GatewayService(event_log, GatewayConfig(port=0, delivery_database_url=url),
                                 store=store)
        serving = asyncio.create_task(gateway.run(stop))
        await asyncio.wait_for(gateway.ready.wait(), 30)
        yield Venue(url=f"ws://127.0.0.1:{gateway.port}", key=f"{key_id}:{private_key}",
                    ca=ca, conn=conn)
    finally:
        stop.set()
        if serving is not None:
            await asyncio.wait_for(serving, 30)
        if store is not None:
            await store.close()
        await conn.close()
        await drop_database(database_url, name)


def _write_host_key(path: Path) -> str:
    """Write an sshd host key where SshdService keeps its own; return its .pub line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def _responder_python(directory: Path) -> str:
    """The Python sshd runs the responder with: this one, through a wrapper naming the
    checkout when its install does not list the `agent` package (an editable install made
    before agent/ existed; `make` installs it again)."""
    found = subprocess.run([sys.executable, "-c", "import agent"], cwd="/", check=False,
                           capture_output=True, timeout=COMMAND_TIMEOUT_S)
    if found.returncode == 0:
        return sys.executable
    wrapper = directory / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def _agent(venue: Venue, *args: str) -> Ran:
    """Run `gpux operator agent` (without blocking the loop the gateway is served on)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpux", "operator", "agent", "--url", venue.url,
        "--key", venue.key, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


async def _holder_session(host: str, port: int, login: str, host_key_line: str,
                          key_path: Path, certificate: str) -> str:
    """Log in with a holder's key and certificate and run a command; return its output."""
    async with asyncssh.connect(
            host, port, username=login, config=None, agent_path=None,
            known_hosts=([asyncssh.import_public_key(host_key_line)], [], []),
            client_keys=[(asyncssh.read_private_key(key_path),
                          asyncssh.import_certificate(certificate))],
            preferred_auth="publickey", login_timeout=LOGIN_TIMEOUT_S) as connection:
        result = await connection.run("echo delivered", check=True, timeout=LOGIN_TIMEOUT_S)
    output = result.stdout
    assert isinstance(output, str)
    return output


async def test_the_agent_registers_the_node_and_its_files_let_openssh_serve_the_venue(
        venue: Venue, tmp_path: Path) -> None:
    files_dir = tmp_path / "node-ssh"
    run_dir = tmp_path / "sshd"
    sshd = SshdService(run_dir, config_snippet=None)
    host_key_line = _write_host_key(sshd.host_key_path)
    host_key_file = tmp_path / "ssh_host_ed25519_key.pub"
    host_key_file.write_text(f"{host_key_line} root@node\n")
    # the lines the operator adds to sshd_config: the agent prints them (checked below)
    sshd.config_snippet = config_snippet(files_dir / CA_KEYS_FILE_NAME,
                                         files_dir / PRINCIPALS_FILE_NAME, sshd.login)
    sshd.start()
    try:
        profile = tmp_path / "profile.json"
        profile.write_text(f'{{"gpu": "{GPU}", "gpu_count": 2, "gpu_memory_mib": 46068}}')
        agent_args = ("--node-id", NODE, "--region", "eu-west", "--host", sshd.host,
                      "--port", str(sshd.port), "--login", sshd.login, "--profile",
                      str(profile), "--no-nvml", "--backend", "numpy", "--sshd-dir",
                      str(files_dir), "--host-key", str(host_key_file),
                      "--responder-python", _responder_python(tmp_path))
        ran = await _agent(venue, *agent_args)
        assert ran.returncode == 0, ran.stderr
        assert sshd.config_snippet in ran.stdout

        node = await registry.node(venue.conn, NODE)
        assert node is not None
        assert (node.account, node.gpu, node.region, node.gpu_count, node.gpu_memory_mib,
                node.host, node.port, node.login, node.host_key) == (
            OPERATOR, GPU, "eu-west", 2, 46_068, sshd.host, sshd.port, sshd.login,
            host_key_line)
        assert node.inventory["source"] == "profile"

        client = prober_client(venue.ca, tmp_path)
        seen = await client.probe(sshd.host, sshd.port, sshd.login, node.host_key,
                                  lambda session: probe_exchange(session, FLOOR))
        assert seen.pong == challenge.PongMessage(gpu_count=2, gpu_memory_mib=46_068,
                                                  device=f"declared {GPU}")
        assert seen.verdict.passed, seen.verdict
        assert seen.verdict.rows_checked == 4

        holder_key = tmp_path / "holder_key"
        holder_line = generate_user_key(holder_key)
        now_ns = time.time_ns()
        for_node = venue.ca.issue(holder_line, "alice", [holder_principal(NODE)],
                                  now_ns - HOUR_NS, now_ns + HOUR_NS, 10)
        output = await _holder_session(sshd.host, sshd.port, sshd.login, node.host_key,
                                       holder_key, for_node)
        assert output == "delivered\n"
        for_other = venue.ca.issue(holder_line, "alice", [holder_principal("other-node")],
                                   now_ns - HOUR_NS, now_ns + HOUR_NS, 11)
        with pytest.raises(asyncssh.PermissionDenied):
            await _holder_session(sshd.host, sshd.port, sshd.login, node.host_key,
                                  holder_key, for_other)

        again = await _agent(venue, *agent_args)  # a restart registers again and changes nothing
        assert again.returncode == 0, again.stderr
        assert await registry.node(venue.conn, NODE) == node
    finally:
        sshd.stop()


async def test_the_embedded_agent_serves_the_prober_until_sigterm(venue: Venue,
                                                                  tmp_path: Path) -> None:
    port = free_port()
    key_file = tmp_path / "embedded_host_key"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpux", "operator", "agent", "--url", venue.url, "--key",
        venue.key, "--node-id", NODE, "--region", "eu-west", "--host", "127.0.0.1", "--port",
        str(port), "--login", "gpux", "--gpu-class", GPU, "--gpu-count", "1",
        "--gpu-memory-mib", "46068", "--no-nvml", "--embedded", "--embedded-host-key",
        str(key_file), "--listen-host", "127.0.0.1", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout is not None and process.stderr is not None
        printed = b""
        while b"serving SSH" not in printed:  # the agent says so once it listens
            line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT_S)
            assert line, (await process.stderr.read()).decode()
            printed += line
        node = await registry.node(venue.conn, NODE)
        assert node is not None
        assert (node.port, node.login, node.gpu_count) == (port, "gpux", 1)
        client = prober_client(venue.ca, tmp_path)
        seen = await client.probe("127.0.0.1", port, "gpux", node.host_key,
                                  lambda session: probe_exchange(session, FLOOR))
        assert seen.verdict.passed, seen.verdict
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
