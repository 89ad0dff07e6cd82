"""The embedded node (asyncssh) applies a node's access policy, and the prober's client
talks to it: certificates inside their window only, the node's own principal only, the
venue's CA only, the prober forced into the responder, pause/resume as an outage, and the
host key checked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from delivery.ca import (
    PROBER_PRINCIPAL,
    CertificateAuthority,
    generate_user_key,
    holder_principal,
)
from delivery.challenge import (
    Inventory,
    PingMessage,
    PongMessage,
    Responder,
    decode_message,
    encode_message,
    select_backend,
)
from delivery.classes import demo_floors
from delivery.embedded_ssh import RESPONDER_MESSAGES_MAX, EmbeddedNode
from delivery.errors import DeliveryError
from delivery.transport import LineReader, LineSession, ProbeError, ProberClient
from tests.delivery_probe_faults import honest_challenge

NS_PER_S = 1_000_000_000
HOUR_NS = 3600 * NS_PER_S
NODE_ID = "node-a"
INVENTORY = Inventory(gpu_count=8, gpu_memory_mib=81_559, device="embedded test")


@dataclass
class Keys:
    """A CA, one user key pair on disk (holder or prober), and a place for certificates."""

    ca: CertificateAuthority
    key_path: Path
    public_line: str

    def certificate(
        self,
        principals: list[str],
        after_ns: int,
        before_ns: int,
        ca: CertificateAuthority | None = None,
    ) -> str:
        return (ca or self.ca).issue(
            self.public_line, "test", principals, after_ns, before_ns, serial=1
        )


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    key_path = tmp_path / "id_ed25519"
    return Keys(CertificateAuthority.generate(), key_path, generate_user_key(key_path))


@pytest.fixture
async def node(keys: Keys) -> AsyncIterator[EmbeddedNode]:
    embedded = EmbeddedNode(keys.ca.public_key_line(), NODE_ID, inventory=INVENTORY)
    await embedded.start()
    yield embedded
    await embedded.stop()


async def ping(session: LineSession) -> PongMessage:
    await session.send_line(encode_message(PingMessage()))
    reply = decode_message(await session.receive_line())
    assert isinstance(reply, PongMessage)
    return reply


async def run_as_holder(
    node: EmbeddedNode, keys: Keys, certificate: str, command: str | None = "id",
    login: str | None = None,
) -> asyncssh.SSHCompletedProcess:
    """Log in with `certificate` and run `command`; raise what asyncssh raises."""
    connection = await asyncssh.connect(
        node.host, node.port, username=login or node.login, config=None,
        known_hosts=([asyncssh.import_public_key(node.host_key_line)], [], []),
        client_keys=[(asyncssh.read_private_key(keys.key_path),
                      asyncssh.import_certificate(certificate))],
        agent_path=None, preferred_auth="publickey",
    )  # fmt: skip
    async with connection:
        result = await connection.run(command, input="", check=False, timeout=10)
    return result


def now_ns() -> int:
    return time.time_ns()


async def test_a_holder_logs_in_inside_the_window_and_sees_the_banner(
    node: EmbeddedNode, keys: Keys
) -> None:
    certificate = keys.certificate(
        [holder_principal(NODE_ID)], now_ns() - 60 * NS_PER_S, now_ns() + HOUR_NS
    )
    result = await run_as_holder(node, keys, certificate)
    assert result.exit_status == 0
    assert NODE_ID in str(result.stdout)


async def test_a_holder_certificate_whose_window_has_passed_is_refused(
    node: EmbeddedNode, keys: Keys
) -> None:
    ended = keys.certificate(
        [holder_principal(NODE_ID)], now_ns() - HOUR_NS, now_ns() - 2 * NS_PER_S
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await run_as_holder(node, keys, ended)


async def test_a_holder_certificate_whose_window_has_not_begun_is_refused(
    node: EmbeddedNode, keys: Keys
) -> None:
    future = keys.certificate(
        [holder_principal(NODE_ID)], now_ns() + 5 * NS_PER_S, now_ns() + HOUR_NS
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await run_as_holder(node, keys, future)


async def test_a_certificate_for_another_nodes_principal_is_refused(
    node: EmbeddedNode, keys: Keys
) -> None:
    other_node = keys.certificate([holder_principal("node-b")], now_ns(), now_ns() + HOUR_NS)
    with pytest.raises(asyncssh.PermissionDenied):
        await run_as_holder(node, keys, other_node)


async def test_a_certificate_from_another_ca_is_refused(node: EmbeddedNode, keys: Keys) -> None:
    foreign = keys.certificate(
        [holder_principal(NODE_ID)], now_ns(), now_ns() + HOUR_NS,
        ca=CertificateAuthority.generate(),
    )  # fmt: skip
    with pytest.raises(asyncssh.PermissionDenied):
        await run_as_holder(node, keys, foreign)


async def test_only_the_login_user_is_let_in(node: EmbeddedNode, keys: Keys) -> None:
    certificate = keys.certificate([holder_principal(NODE_ID)], now_ns(), now_ns() + HOUR_NS)
    with pytest.raises(asyncssh.PermissionDenied):
        await run_as_holder(node, keys, certificate, login="root")


async def test_the_prober_is_forced_into_the_responder_whatever_it_asks(
    node: EmbeddedNode, keys: Keys
) -> None:
    certificate = keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    connection = await asyncssh.connect(
        node.host, node.port, username=node.login, config=None,
        known_hosts=([asyncssh.import_public_key(node.host_key_line)], [], []),
        client_keys=[(asyncssh.read_private_key(keys.key_path),
                      asyncssh.import_certificate(certificate))],
        agent_path=None,
    )  # fmt: skip
    async with connection:
        process = await connection.create_process("cat /etc/passwd", encoding=None)
        process.stdin.write(encode_message(PingMessage()))
        reply = decode_message(await process.stdout.readline())
        assert reply == PongMessage(
            gpu_count=INVENTORY.gpu_count, gpu_memory_mib=INVENTORY.gpu_memory_mib,
            device=INVENTORY.device,
        )  # fmt: skip
        process.close()
        with pytest.raises(asyncssh.ChannelOpenError):  # a pty: refused (no-pty)
            await connection.create_process(term_type="xterm")


async def test_the_prober_cannot_forward_ports(node: EmbeddedNode, keys: Keys) -> None:
    certificate = keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    connection = await asyncssh.connect(
        node.host, node.port, username=node.login, config=None,
        known_hosts=([asyncssh.import_public_key(node.host_key_line)], [], []),
        client_keys=[(asyncssh.read_private_key(keys.key_path),
                      asyncssh.import_certificate(certificate))],
        agent_path=None,
    )  # fmt: skip
    async with connection:
        with pytest.raises(asyncssh.ChannelOpenError):
            await connection.open_connection("127.0.0.1", node.port)


async def test_the_prober_client_runs_a_whole_challenge_on_the_node(
    node: EmbeddedNode, keys: Keys
) -> None:
    floor = demo_floors()["H100-SXM-80GB"]
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    )

    async def exchange(session: LineSession) -> bool:
        return await honest_challenge(session, floor)

    assert await client.probe(node.host, node.port, node.login, node.host_key_line, exchange)


async def test_the_prober_client_refuses_a_host_key_other_than_the_registered_one(
    node: EmbeddedNode, keys: Keys
) -> None:
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    )
    impostor = EmbeddedNode(keys.ca.public_key_line(), NODE_ID, inventory=INVENTORY)
    with pytest.raises(ProbeError) as refused:
        await client.probe(node.host, node.port, node.login, impostor.host_key_line, ping)
    assert not refused.value.retriable


async def test_the_prober_client_reports_a_refused_certificate_as_not_retriable(
    node: EmbeddedNode, keys: Keys
) -> None:
    expired = keys.certificate([PROBER_PRINCIPAL], now_ns() - HOUR_NS, now_ns() - NS_PER_S)
    client = ProberClient(keys.key_path, expired)
    with pytest.raises(ProbeError) as refused:
        await client.probe(node.host, node.port, node.login, node.host_key_line, ping)
    assert not refused.value.retriable


async def test_pause_makes_the_node_unreachable_and_resume_serves_again(
    node: EmbeddedNode, keys: Keys
) -> None:
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS),
        session_timeout_s=5.0,
    )  # fmt: skip
    address = (node.host, node.port, node.login, node.host_key_line)
    assert (await client.probe(*address, ping)).gpu_count == INVENTORY.gpu_count
    await node.pause()
    with pytest.raises(ProbeError) as unreachable:
        await client.probe(*address, ping)
    assert unreachable.value.retriable
    node.resume()
    assert (await client.probe(*address, ping)).gpu_count == INVENTORY.gpu_count


async def test_pause_ends_a_session_in_progress(node: EmbeddedNode, keys: Keys) -> None:
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS),
        session_timeout_s=5.0,
    )  # fmt: skip

    async def ping_pause_ping(session: LineSession) -> None:
        await ping(session)
        await node.pause()
        await ping(session)

    with pytest.raises(ProbeError):
        await client.probe(node.host, node.port, node.login, node.host_key_line, ping_pause_ping)
    node.resume()


async def test_a_stopped_node_is_a_retriable_probe_error(keys: Keys) -> None:
    stopped = EmbeddedNode(keys.ca.public_key_line(), NODE_ID, inventory=INVENTORY)
    await stopped.start()
    await stopped.stop()
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    )
    with pytest.raises(ProbeError) as unreachable:
        await client.probe(stopped.host, stopped.port, stopped.login, stopped.host_key_line, ping)
    assert unreachable.value.retriable


async def test_each_prober_session_gets_the_responder_the_factory_makes(keys: Keys) -> None:
    made: list[Responder] = []

    def factory() -> Responder:
        made.append(Responder(select_backend("numpy"), INVENTORY))
        return made[-1]

    async with EmbeddedNode(keys.ca.public_key_line(), NODE_ID, factory) as embedded:
        client = ProberClient(
            keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
        )
        address = (embedded.host, embedded.port, embedded.login, embedded.host_key_line)
        await client.probe(*address, ping)
        await client.probe(*address, ping)
    assert len(made) == 2


async def test_the_host_key_file_is_created_private_and_reused(
    keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "host_key"
    first = EmbeddedNode(keys.ca.public_key_line(), NODE_ID, inventory=INVENTORY,
                         host_key_path=path)  # fmt: skip
    again = EmbeddedNode(keys.ca.public_key_line(), NODE_ID, inventory=INVENTORY,
                         host_key_path=path)  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o600
    assert first.host_key_line == again.host_key_line


def test_a_node_without_responder_or_inventory_is_refused(keys: Keys) -> None:
    with pytest.raises(DeliveryError):
        EmbeddedNode(keys.ca.public_key_line(), NODE_ID)


def test_a_node_id_that_could_widen_a_principal_pattern_is_refused(keys: Keys) -> None:
    with pytest.raises(DeliveryError):
        EmbeddedNode(keys.ca.public_key_line(), "node-*", inventory=INVENTORY)


class _Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def read(self, n: int = -1) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def test_the_line_reader_splits_lines_across_chunks_and_bounds_them() -> None:
    reader = LineReader(_Chunks([b'{"a":', b'1}\n{"b"', b":2}\n"]), line_bytes_max=16)
    assert await reader.read_line() == b'{"a":1}\n'
    assert await reader.read_line() == b'{"b":2}\n'
    assert await reader.read_line() is None
    with pytest.raises(ProbeError):
        await LineReader(_Chunks([b"x" * 40]), line_bytes_max=16).read_line()
    with pytest.raises(ProbeError):
        await LineReader(_Chunks([b"half a line"]), line_bytes_max=16).read_line()


class _Endless:
    """A stream of `x` bytes without end that counts what it handed out."""

    def __init__(self) -> None:
        self.handed_out = 0

    async def read(self, n: int = -1) -> bytes:
        self.handed_out += n
        return b"x" * n


async def test_the_line_reader_reads_no_more_than_one_byte_past_its_bound() -> None:
    stream = _Endless()
    with pytest.raises(ProbeError):
        await LineReader(stream, line_bytes_max=100_000).read_line()
    assert stream.handed_out == 100_001


async def test_a_prober_session_answers_a_bounded_number_of_messages(
    node: EmbeddedNode, keys: Keys
) -> None:
    client = ProberClient(
        keys.key_path, keys.certificate([PROBER_PRINCIPAL], now_ns(), now_ns() + HOUR_NS)
    )

    async def exchange(session: LineSession) -> int:
        for _ in range(RESPONDER_MESSAGES_MAX):
            await ping(session)
        await session.send_line(encode_message(PingMessage()))
        await session.receive_line()  # the session ends instead
        return RESPONDER_MESSAGES_MAX + 1

    with pytest.raises(ProbeError):
        await client.probe(node.host, node.port, node.login, node.host_key_line, exchange)
    assert (await client.probe(node.host, node.port, node.login, node.host_key_line,
                               ping)).gpu_count == INVENTORY.gpu_count, "the next session is served"
