"""The minute probe (`delivery.prober.probe_minute`) over real SSH, on Debian's OpenSSH and
on the embedded node, with the prober's own certificate and `ProberClient`.

A healthy node delivers with a passed challenge; a node whose responder opens wrong rows, or
commits later than the class allows, fails its challenge (`wrong_rows`, `too_slow`); a node
showing fewer GPUs than the assignment needs is `below_floor`; a stopped node is
`unreachable`. On OpenSSH the faulty responders are the forced command of the principals
file (tests/delivery_probe_faults.py run as a script); on the embedded node, the same
responder in process.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from delivery.ca import PROBER_PRINCIPAL, CertificateAuthority, generate_user_key
from delivery.challenge import Inventory
from delivery.classes import ClassFloor
from delivery.embedded_ssh import EmbeddedNode
from delivery.prober import MinuteOutcome, NodeAddress, probe_minute
from delivery.sshd_config import principals_lines
from delivery.transport import ProberClient
from harness.sshd import SshdService
from tests.delivery_probe_faults import FaultyResponder, Mode, forced_command

NS_PER_S = 1_000_000_000
HOUR_NS = 3600 * NS_PER_S
NODE_ID = "node-a"
GPU_COUNT = 8
GPU_MEMORY_MIB = 81_559
FLOOR = ClassFloor(gpu="H100-SXM-80GB", challenge_n=256, answer_ms_max=1_500,
                   gpu_memory_mib_min=80_000)
SLOW_DELAY_MS = 2_500  # beyond answer_ms_max, well within the probe's deadline
PROBE_DEADLINE_S = 30

# (mode, delay_ms) -> a node speaking through that responder; the address to probe.
NodeFactory = Callable[[Mode, int], Awaitable[NodeAddress]]


@dataclass
class Prober:
    """The venue's CA and the prober's key and certificate, as the service holds them."""

    ca: CertificateAuthority
    client: ProberClient


@pytest.fixture
def prober(tmp_path: Path) -> Prober:
    ca = CertificateAuthority.generate()
    key_path = tmp_path / "prober_ed25519"
    now_ns = time.time_ns()
    certificate = ca.issue(generate_user_key(key_path), "prober", [PROBER_PRINCIPAL],
                           now_ns - NS_PER_S, now_ns + HOUR_NS, serial=1)
    return Prober(ca, ProberClient(key_path, certificate))


@pytest.fixture(params=["openssh", "embedded"])
async def make_node(request: pytest.FixtureRequest, prober: Prober) -> AsyncIterator[NodeFactory]:
    """Nodes of one kind: the session's OpenSSH (one node: its principals file is rewritten
    per call) or embedded nodes (each its own server, stopped at the end)."""
    embedded: list[EmbeddedNode] = []
    sshd: SshdService | None = (
        request.getfixturevalue("sshd_service") if request.param == "openssh" else None)

    async def openssh_node(mode: Mode, delay_ms: int) -> NodeAddress:
        assert sshd is not None
        command = forced_command(mode, GPU_COUNT, GPU_MEMORY_MIB, delay_ms)
        sshd.authorize([prober.ca.public_key_line()], principals_lines(NODE_ID, command))
        return NodeAddress(host=sshd.host, port=sshd.port, login=sshd.login,
                           host_key=sshd.host_key_line)

    async def embedded_node(mode: Mode, delay_ms: int) -> NodeAddress:
        inventory = Inventory(gpu_count=GPU_COUNT, gpu_memory_mib=GPU_MEMORY_MIB,
                              device="test")
        node = EmbeddedNode(prober.ca.public_key_line(), NODE_ID,
                            lambda: FaultyResponder(mode, inventory, delay_ms))
        await node.start()
        embedded.append(node)
        return NodeAddress(host=node.host, port=node.port, login=node.login,
                           host_key=node.host_key_line)

    if sshd is not None:
        yield openssh_node
        sshd.authorize([], [])
    else:
        yield embedded_node
        for node in embedded:
            await node.stop()


async def probe(prober: Prober, node: NodeAddress, gpus_required: int = GPU_COUNT,
                challenge: bool = True) -> MinuteOutcome:
    return await probe_minute(prober.client, node, FLOOR, gpus_required, challenge,
                              random.Random(), time.time_ns() + PROBE_DEADLINE_S * NS_PER_S,
                              time.time_ns)


async def test_a_healthy_node_delivers_with_a_passed_challenge(
    make_node: NodeFactory, prober: Prober
) -> None:
    node = await make_node("honest", 0)
    found = await probe(prober, node)
    assert found.outcome == "delivered", found
    assert (found.gpu_count, found.gpu_memory_mib) == (GPU_COUNT, GPU_MEMORY_MIB)
    assert found.challenge is not None
    assert found.challenge.passed and found.challenge.reason is None
    assert 0 <= found.challenge.answer_ms <= FLOOR.answer_ms_max
    assert found.challenge.rows_checked == 4
    pinged = await probe(prober, node, challenge=False)
    assert pinged == MinuteOutcome(outcome="delivered", gpu_count=GPU_COUNT,
                                   gpu_memory_mib=GPU_MEMORY_MIB, challenge=None)


async def test_a_node_opening_wrong_rows_fails_its_challenge(
    make_node: NodeFactory, prober: Prober
) -> None:
    found = await probe(prober, await make_node("wrong_rows", 0))
    assert found.outcome == "challenge_failed", found
    assert found.challenge is not None
    assert (found.challenge.passed, found.challenge.reason) == (False, "wrong_rows")


async def test_a_node_answering_too_slowly_fails_its_challenge(
    make_node: NodeFactory, prober: Prober
) -> None:
    found = await probe(prober, await make_node("slow", SLOW_DELAY_MS))
    assert found.outcome == "challenge_failed", found
    assert found.challenge is not None
    assert (found.challenge.passed, found.challenge.reason) == (False, "too_slow")
    assert found.challenge.answer_ms >= SLOW_DELAY_MS


async def test_a_node_showing_fewer_gpus_than_required_is_below_floor(
    make_node: NodeFactory, prober: Prober
) -> None:
    found = await probe(prober, await make_node("honest", 0), gpus_required=GPU_COUNT + 1)
    assert found == MinuteOutcome(outcome="below_floor", gpu_count=GPU_COUNT,
                                  gpu_memory_mib=GPU_MEMORY_MIB, challenge=None)


async def test_a_stopped_embedded_node_is_unreachable(prober: Prober) -> None:
    inventory = Inventory(gpu_count=GPU_COUNT, gpu_memory_mib=GPU_MEMORY_MIB, device="test")
    node = EmbeddedNode(prober.ca.public_key_line(), NODE_ID, inventory=inventory)
    await node.start()
    address = NodeAddress(host=node.host, port=node.port, login=node.login,
                          host_key=node.host_key_line)
    assert (await probe(prober, address)).outcome == "delivered"
    await node.pause()
    assert (await probe(prober, address)).outcome == "unreachable"
    node.resume()
    assert (await probe(prober, address)).outcome == "delivered"
    await node.stop()
    assert (await probe(prober, address)).outcome == "unreachable"


async def test_a_stopped_openssh_node_is_unreachable(prober: Prober, tmp_path: Path) -> None:
    sshd = SshdService(tmp_path / "sshd")
    sshd.authorize([prober.ca.public_key_line()],
                   principals_lines(NODE_ID, forced_command("honest", GPU_COUNT, GPU_MEMORY_MIB)))
    sshd.start()
    try:
        address = NodeAddress(host=sshd.host, port=sshd.port, login=sshd.login,
                              host_key=sshd.host_key_line)
        assert (await probe(prober, address)).outcome == "delivered"
    finally:
        sshd.stop()
    assert (await probe(prober, address)).outcome == "unreachable"
