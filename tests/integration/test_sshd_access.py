"""Real OpenSSH (Debian's sshd from the pinned .debs) applies the venue's access policy.

The node is configured as `delivery.sshd_config` says (the CA key, the holder principal,
the prober's forced responder); logins are made with the system `ssh` client, running the
exact line `delivery.ca.ssh_command_line` gives (what `gpux delivery access` prints), and
with asyncssh / the prober's `ProberClient`.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from delivery.ca import (
    PROBER_PRINCIPAL,
    CertificateAuthority,
    generate_user_key,
    holder_principal,
    known_hosts_line,
    ssh_command_line,
)
from delivery.challenge import (
    PingMessage,
    PongMessage,
    decode_message,
    encode_message,
)
from delivery.classes import demo_floors
from delivery.sshd_config import principals_lines, render_node_files
from delivery.transport import LineSession, ProbeError, ProberClient
from harness.sshd import SshdService
from tests.delivery_probe_faults import forced_command, honest_challenge
from tests.helpers import eventually

NS_PER_S = 1_000_000_000
HOUR_NS = 3600 * NS_PER_S
NODE_ID = "node-a"
GPU_COUNT = 8
GPU_MEMORY_MIB = 81_559
SSH_TIMEOUT_S = 20.0
SSH_FAILED = 255  # ssh's exit status when it cannot log in
RESPONDER_COMMAND = forced_command("honest", GPU_COUNT, GPU_MEMORY_MIB)


@dataclass
class Node:
    """The session's sshd set up as one node of the venue, and a user's key pair."""

    sshd: SshdService
    ca: CertificateAuthority
    directory: Path
    key_path: Path
    public_line: str

    def certificate(
        self, principals: list[str], after_ns: int, before_ns: int,
        ca: CertificateAuthority | None = None,
    ) -> Path:  # fmt: skip
        """Issue a certificate for the user's key and write it next to the key."""
        line = (ca or self.ca).issue(
            self.public_line, "test", principals, after_ns, before_ns, serial=1
        )
        path = self.key_path.with_name(self.key_path.name + "-cert.pub")
        path.write_text(line + "\n")
        return path

    def ssh_line(self, certificate_path: Path) -> str:
        known_hosts = self.directory / "known_hosts"
        known_hosts.write_text(
            known_hosts_line(self.sshd.host, self.sshd.port, self.sshd.host_key_line) + "\n"
        )
        return ssh_command_line(self.sshd.login, self.sshd.host, self.sshd.port,
                                self.key_path, certificate_path, known_hosts)  # fmt: skip


@pytest.fixture
def node(sshd_service: SshdService, tmp_path: Path) -> Iterator[Node]:
    ca = CertificateAuthority.generate()
    sshd_service.authorize([ca.public_key_line()], principals_lines(NODE_ID, RESPONDER_COMMAND))
    key_path = tmp_path / "id_ed25519"
    yield Node(sshd_service, ca, tmp_path, key_path, generate_user_key(key_path))
    sshd_service.authorize([], [])


def run_ssh(line: str, *extra: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run the ssh line as a shell would, with `extra` words (e.g. a remote command)."""
    return subprocess.run(
        f"{line} {shlex.join(extra)}" if extra else line, shell=True, input=stdin,
        capture_output=True, timeout=SSH_TIMEOUT_S, check=False,
    )  # fmt: skip


async def run_with_asyncssh(node: Node, certificate_path: Path, command: str) -> str:
    """Log in with asyncssh and run `command`; return its output (raise when refused)."""
    connection = await asyncssh.connect(
        node.sshd.host, node.sshd.port, username=node.sshd.login, config=None,
        known_hosts=([asyncssh.import_public_key(node.sshd.host_key_line)], [], []),
        client_keys=[(asyncssh.read_private_key(node.key_path),
                      asyncssh.import_certificate(certificate_path.read_text()))],
        agent_path=None, preferred_auth="publickey",
    )  # fmt: skip
    async with connection:
        result = await connection.run(command, check=True, timeout=SSH_TIMEOUT_S)
    return str(result.stdout)


async def test_a_holder_is_let_in_inside_the_window_and_refused_once_it_has_passed(
    node: Node,
) -> None:
    now_ns = time.time_ns()
    end_ns = now_ns + 8 * NS_PER_S  # room for two logins on a loaded machine
    certificate = node.certificate([holder_principal(NODE_ID)], now_ns - NS_PER_S, end_ns)
    line = node.ssh_line(certificate)

    inside = run_ssh(line, "echo", "inside-the-window")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == b"inside-the-window\n"
    assert await run_with_asyncssh(node, certificate, "echo asyncssh") == "asyncssh\n"

    window_end_s = -(-end_ns // NS_PER_S)  # the certificate's valid_before
    await eventually(lambda: time.time() >= window_end_s, timeout_s=15,
                     message="the window's end")  # fmt: skip
    after = run_ssh(line, "echo", "after-the-window")
    assert after.returncode == SSH_FAILED
    assert after.stdout == b""
    with pytest.raises(asyncssh.PermissionDenied):
        await run_with_asyncssh(node, certificate, "echo asyncssh")


async def test_a_holder_certificate_whose_window_has_not_begun_is_refused(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate(
        [holder_principal(NODE_ID)], now_ns + 120 * NS_PER_S, now_ns + HOUR_NS
    )
    refused = run_ssh(node.ssh_line(certificate), "echo", "too-early")
    assert refused.returncode == SSH_FAILED
    with pytest.raises(asyncssh.PermissionDenied):
        await run_with_asyncssh(node, certificate, "echo too-early")


async def test_a_certificate_for_another_nodes_principal_is_refused(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate([holder_principal("node-b")], now_ns, now_ns + HOUR_NS)
    assert run_ssh(node.ssh_line(certificate), "true").returncode == SSH_FAILED
    with pytest.raises(asyncssh.PermissionDenied):
        await run_with_asyncssh(node, certificate, "true")


async def test_a_certificate_from_another_ca_is_refused(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate(
        [holder_principal(NODE_ID)], now_ns, now_ns + HOUR_NS, ca=CertificateAuthority.generate()
    )
    assert run_ssh(node.ssh_line(certificate), "true").returncode == SSH_FAILED
    with pytest.raises(asyncssh.PermissionDenied):
        await run_with_asyncssh(node, certificate, "true")


def test_the_ssh_line_refuses_a_node_showing_another_host_key(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate([holder_principal(NODE_ID)], now_ns, now_ns + HOUR_NS)
    line = node.ssh_line(certificate)
    impostor = CertificateAuthority.generate().public_key_line()  # any other Ed25519 key
    (node.directory / "known_hosts").write_text(
        known_hosts_line(node.sshd.host, node.sshd.port, impostor) + "\n"
    )
    assert run_ssh(line, "true").returncode == SSH_FAILED


def test_the_prober_gets_the_responder_from_the_printed_ssh_line(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate([PROBER_PRINCIPAL], now_ns, now_ns + HOUR_NS)
    line = node.ssh_line(certificate)
    ping = encode_message(PingMessage())
    expected = PongMessage(gpu_count=GPU_COUNT, gpu_memory_mib=GPU_MEMORY_MIB, device="test")

    answered = run_ssh(line, stdin=ping)  # the line exactly as printed: no command asked
    assert answered.returncode == 0, answered.stderr
    assert decode_message(answered.stdout) == expected
    # a command of its own: replaced by the responder
    forced = run_ssh(line, "echo", "GOT-A-SHELL", stdin=ping)
    assert decode_message(forced.stdout) == expected
    # a terminal (no-pty) or a subsystem: refused, and ssh gives up
    for extra in (["-tt", "echo", "GOT-A-SHELL"], ["-s", "sftp"]):
        refused = run_ssh(line, *extra, stdin=ping)
        assert refused.returncode == SSH_FAILED
        assert b"GOT-A-SHELL" not in refused.stdout


async def test_the_prober_cannot_get_a_pty_or_forward_ports(node: Node) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate([PROBER_PRINCIPAL], now_ns, now_ns + HOUR_NS)
    connection = await asyncssh.connect(
        node.sshd.host, node.sshd.port, username=node.sshd.login, config=None,
        known_hosts=([asyncssh.import_public_key(node.sshd.host_key_line)], [], []),
        client_keys=[(asyncssh.read_private_key(node.key_path),
                      asyncssh.import_certificate(certificate.read_text()))],
        agent_path=None,
    )  # fmt: skip
    async with connection:
        with pytest.raises(asyncssh.ChannelOpenError):
            await connection.create_process(term_type="xterm")
        with pytest.raises(asyncssh.ChannelOpenError):
            await connection.open_connection(node.sshd.host, node.sshd.port)


async def test_the_prober_client_runs_a_challenge_through_sshd_and_checks_the_host_key(
    node: Node,
) -> None:
    now_ns = time.time_ns()
    certificate = node.certificate([PROBER_PRINCIPAL], now_ns, now_ns + HOUR_NS)
    client = ProberClient(node.key_path, certificate.read_text())
    floor = demo_floors()["H100-SXM-80GB"]

    async def exchange(session: LineSession) -> bool:
        return await honest_challenge(session, floor)

    sshd = node.sshd
    assert await client.probe(sshd.host, sshd.port, sshd.login, sshd.host_key_line, exchange)
    impostor = CertificateAuthority.generate().public_key_line()
    with pytest.raises(ProbeError) as refused:
        await client.probe(sshd.host, sshd.port, sshd.login, impostor, exchange)
    assert not refused.value.retriable


def test_the_node_files_an_operator_installs_work_in_sshd(tmp_path: Path) -> None:
    """A separate sshd configured by the snippet of `render_node_files` (Match User)."""
    ca = CertificateAuthority.generate()
    service = SshdService(tmp_path / "sshd")
    files = render_node_files(ca.public_key_line(), NODE_ID, RESPONDER_COMMAND,
                              tmp_path / "gpux", login=service.login)  # fmt: skip
    service.config_snippet = files.config_snippet
    key_path = tmp_path / "id_ed25519"
    public_line = generate_user_key(key_path)
    now_ns = time.time_ns()
    certificate_path = tmp_path / "id_ed25519-cert.pub"
    known_hosts = tmp_path / "known_hosts"
    service.start()
    try:
        known_hosts.write_text(known_hosts_line(service.host, service.port,
                                                service.host_key_line) + "\n")  # fmt: skip
        line = ssh_command_line(service.login, service.host, service.port, key_path,
                                certificate_path, known_hosts)  # fmt: skip
        for principal, stdin, expected in (
            (holder_principal(NODE_ID), b"", b"holder\n"),
            (PROBER_PRINCIPAL, encode_message(PingMessage()), None),
        ):
            certificate_path.write_text(ca.issue(public_line, "t", [principal], now_ns,
                                                 now_ns + HOUR_NS, serial=1) + "\n")  # fmt: skip
            result = run_ssh(line, "echo", "holder", stdin=stdin)
            assert result.returncode == 0, result.stderr
            if expected is not None:
                assert result.stdout == expected
            else:
                assert isinstance(decode_message(result.stdout), PongMessage)
    finally:
        service.stop()
