"""The simulated operator nodes of `gpux dev`, and the page account's SSH key.

The demo's GPU-hours are issued on node ids (gpux.dev.bots.node_name: `op1-h100`,
`mm1-l40s`, ...). Each of them runs here as an embedded SSH server on a free loopback port
(delivery.embedded_ssh.EmbeddedNode: no OpenSSH needed) answering the prober's challenge
with numpy, and is registered through the gateway with its account's key, as
`gpux operator agent --embedded` does (the agent's registration, host key file and
responder are reused). A node declares the GPUs its account issues of an hour (the
operator's OPERATOR_GPUS, the market maker's MAKER_GPU_HOURS), so the ping of any holder's
assignment finds enough; host keys and ports live under DATA_DIR/delivery/nodes, so a
restart serves the same keys on the same ports (while free) before the delivery service
resumes probing, then registers again.

One node fails part of its hours: OUTAGE_NODE (the market maker's H100 node) is paused
(connections refused) during minutes OUTAGE_FIRST_MINUTE to OUTAGE_FIRST_MINUTE +
OUTAGE_MINUTES - 1 of every measured hour of a window of its class, in the prober's
compressed minutes (`minute_ms`). Its buyers' reports say 45 of 60 minutes
(delivered_ppm 750000), and the bond pays them the rest. The windows come from the
engine's instruments of that class; the pause and resume happen at the exact instants
(timers on the next change, the instrument list looked at every RESCAN_S). With
`minute_ms` at most 1,000 the measured hours of two windows starting at different minutes
never overlap, so an outage meant for one window never costs another.

The page account (PAGE_ACCOUNT) gets an Ed25519 key pair at DATA_DIR/delivery/<account>_ed25519
(made once, 0600), registered with the gateway at every start (idempotent), so the
delivery service certifies it for each hour the account holds and `gpux trade access
--identity` prints a working `ssh` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.config import AgentConfig, ChallengeConfig
from agent.embedded import host_key_line_of
from agent.inventory import Inventory
from agent.node import registration_of
from agent.registration import register_with_retries, sdk_register
from agent.responder import make_responder
from delivery import challenge
from delivery.ca import CertificateAuthority, parse_public_key
from delivery.embedded_ssh import DEFAULT_LOGIN, EmbeddedNode
from gpux.dev.bots import MAKER_GPU_HOURS, OPERATOR_GPUS, node_name
from gpux.dev.market import DEMO_GPU, GPU_CLASSES, REGION, ApiKeyRecord
from harness.ports import free_port
from sdk.client import Client
from sdk.signing import ApiKey

__all__ = ["OUTAGE_NODE", "NodeSpec", "SimulatedNodes", "Window", "demo_nodes",
           "next_change_ns", "outage_intervals", "page_identity", "paused_at",
           "register_page_key"]

log = logging.getLogger("gpux.dev.nodes")

OUTAGE_NODE: Final = node_name("mm1", DEMO_GPU)
OUTAGE_FIRST_MINUTE: Final = 30
OUTAGE_MINUTES: Final = 15
RESCAN_S: Final = 1.0
START_ATTEMPTS_MAX: Final = 3  # a port taken between the pick and the bind: pick again
PORTS_FILE: Final = "ports.json"  # node id -> the port it served on last
# Memory per GPU each simulated node declares (MiB): the classes' real figures.
GPU_MEMORY_MIB: Final = {"H100-SXM-80GB": 81_559, "A100-SXM-80GB": 81_920, "L40S-48GB": 46_068}
HOUR_MINUTES: Final = 60


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A simulated node: its id, the account that issues on it, its class and GPU count."""

    node_id: str
    account: str
    gpu: str
    gpu_count: int


def demo_nodes() -> list[NodeSpec]:
    """The nodes the demo's operator and market maker issue on, one per GPU class each."""
    nodes = []
    for gpu in GPU_CLASSES:
        nodes.append(NodeSpec(node_name("op1", gpu), "operator-1", gpu, OPERATOR_GPUS))
        nodes.append(NodeSpec(node_name("mm1", gpu), "mm-1", gpu, MAKER_GPU_HOURS))
    return nodes


@dataclass(frozen=True, slots=True)
class Window:
    """A delivery window as the prober measures it: its start and its length in minutes."""

    start_ns: int
    minutes: int


def outage_intervals(windows: Iterable[Window], minute_ns: int) -> list[tuple[int, int]]:
    """The [start, end) instants OUTAGE_NODE is down: minutes OUTAGE_FIRST_MINUTE.. of each
    measured hour of each window, in the prober's minutes of `minute_ns`. Pure."""
    intervals = []
    for window in windows:
        for hour in range(max(window.minutes // HOUR_MINUTES, 1)):
            first = window.start_ns + (hour * HOUR_MINUTES + OUTAGE_FIRST_MINUTE) * minute_ns
            intervals.append((first, first + OUTAGE_MINUTES * minute_ns))
    return sorted(set(intervals))


def paused_at(now_ns: int, intervals: Sequence[tuple[int, int]]) -> bool:
    return any(start <= now_ns < end for start, end in intervals)


def next_change_ns(now_ns: int, intervals: Sequence[tuple[int, int]]) -> int | None:
    """The next instant after `now_ns` at which an interval begins or ends, if any."""
    later = [edge for interval in intervals for edge in interval if edge > now_ns]
    return min(later, default=None)


def page_identity(data_dir: Path, account: str) -> Path:
    """The page account's private key file (an OpenSSH Ed25519 key, its public half beside it
    as `.pub`), made on the first call (0600) as the agent makes a host key; a `.pub` that
    a kill left unwritten is written again from the key."""
    path = data_dir / "delivery" / f"{account}_ed25519"
    public = path.with_name(path.name + ".pub")
    line = host_key_line_of(path)
    if not public.exists():
        public.write_text(f"{line} {account}@gpux-dev\n")
    return path


async def register_page_key(url: str, key: ApiKeyRecord, identity: Path) -> str:
    """Register the identity's public key for `key`'s account; return its fingerprint."""
    public = identity.with_name(identity.name + ".pub").read_text().strip()
    async with Client(url, credentials=ApiKey(key.key_id, key.private_key),
                      reconnect=False) as client:
        return (await client.register_ssh_key(public)).fingerprint


class SimulatedNodes:
    """The demo's nodes: served on loopback and registered until `stop`; one with outages.

    `listen()` starts the servers before the venue (so that after a restart the delivery
    service, probing at once, finds them where they were registered: each node keeps its
    port, in PORTS_FILE, while it is free); they trust the venue CA's key from the dev's
    delivery keys directory. `register()` then registers each through the gateway and
    checks that the CA key the venue answers is the one the node trusts."""

    def __init__(self, data_dir: Path, ca_path: Path, *,
                 minute_ms: int, windows: Callable[[str], list[Window]],
                 host: str = "127.0.0.1", specs: list[NodeSpec] | None = None) -> None:
        """`ca_path`: the delivery service's CA key file (made here when missing, as the
        service would); `windows(gpu)`: the delivery windows of a GPU class's instruments
        (the outage node's class is asked)."""
        self.key_dir = data_dir / "delivery" / "nodes"
        self.ca_path = ca_path
        self.minute_ns = minute_ms * 1_000_000
        self.windows = windows
        self.host = host
        self.specs = specs if specs is not None else demo_nodes()
        self.nodes: dict[str, EmbeddedNode] = {}
        self.registered: set[str] = set()
        self.trusted_ca_key: str | None = None  # the CA key line the nodes trust, once listening

    def _inventory(self, spec: NodeSpec) -> Inventory:
        return Inventory(source="profile", gpu=spec.gpu, gpu_count=spec.gpu_count,
                         gpu_memory_mib=GPU_MEMORY_MIB.get(spec.gpu, 0),
                         device=f"simulated {spec.gpu}")

    def _host_key_path(self, spec: NodeSpec) -> Path:
        return self.key_dir / f"{spec.node_id}_host_key"

    async def listen(self) -> None:
        """Start every node's server: on its former port while that is free."""
        ca_line = CertificateAuthority.load_or_create(self.ca_path).public_key_line()
        self.trusted_ca_key = parse_public_key(ca_line)[0]
        kept = _read_ports(self.key_dir / PORTS_FILE)
        try:
            for spec in self.specs:
                self.nodes[spec.node_id] = await self._listen(spec, ca_line,
                                                              kept.get(spec.node_id))
        except BaseException:
            await self.stop()
            raise
        _write_ports(self.key_dir / PORTS_FILE,
                     {node_id: node.port for node_id, node in self.nodes.items()})

    async def _listen(self, spec: NodeSpec, ca_line: str, port: int | None) -> EmbeddedNode:
        host_key_line_of(self._host_key_path(spec))  # made once, 0600, the agent's way
        responder = make_responder(self._inventory(spec), "numpy")
        backend, declared = responder.backend, responder.inventory
        for attempt in range(1, START_ATTEMPTS_MAX + 1):
            node = EmbeddedNode(ca_line, spec.node_id,
                                lambda: challenge.Responder(backend, declared),
                                host=self.host, port=port or free_port(self.host),
                                login=DEFAULT_LOGIN, host_key_path=self._host_key_path(spec))
            try:
                await node.start()
            except OSError:  # the port was taken: another one
                if attempt == START_ATTEMPTS_MAX:
                    raise
                port = None
                continue
            return node
        raise AssertionError("unreachable: the loop returns or raises")

    async def register(self, url: str, keys: dict[str, ApiKeyRecord]) -> None:
        """Register every listening node through the gateway at `url` with its account's
        key (all at once)."""
        results = await asyncio.gather(*(self._register(url, keys[spec.account], spec)
                                         for spec in self.specs), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]

    async def _register(self, url: str, key: ApiKeyRecord, spec: NodeSpec) -> None:
        node = self.nodes[spec.node_id]
        config = AgentConfig(node_id=spec.node_id, region=REGION, host=self.host,
                             port=node.port, login=node.login, mode="embedded",
                             embedded_key_path=self._host_key_path(spec),
                             listen_host=self.host, challenge=ChallengeConfig(backend="numpy"))
        inventory = self._inventory(spec)
        registered = await register_with_retries(
            sdk_register(url, ApiKey(key.key_id, key.private_key)),
            registration_of(config, inventory, node.host_key_line))
        if parse_public_key(registered.ca_public_key)[0] != self.trusted_ca_key:
            raise RuntimeError(f"the venue's CA is not the one node {spec.node_id} trusts "
                               f"({self.ca_path})")
        self.registered.add(spec.node_id)
        log.info("node %s of %s registered, serving SSH on %s:%d (%d x %s)", spec.node_id,
                 spec.account, self.host, node.port, spec.gpu_count, spec.gpu)

    def describe(self) -> str:
        return f"{len(self.registered)} simulated nodes on {self.host} (embedded SSH)"

    async def run(self, stop: asyncio.Event) -> None:
        """Pause OUTAGE_NODE during its outages, until `stop`."""
        node = self.nodes.get(OUTAGE_NODE)
        if node is None:
            await stop.wait()
            return
        gpu = next(spec.gpu for spec in self.specs if spec.node_id == OUTAGE_NODE)
        while not stop.is_set():
            now_ns = time.time_ns()
            intervals = outage_intervals(self.windows(gpu), self.minute_ns)
            if paused_at(now_ns, intervals) != node.paused:
                if node.paused:
                    node.resume()
                    log.info("node %s serves again", OUTAGE_NODE)
                else:
                    await node.pause()
                    log.info("node %s is down (its simulated outage)", OUTAGE_NODE)
            wait_s = RESCAN_S
            change = next_change_ns(now_ns, intervals)
            if change is not None:
                wait_s = min(wait_s, max(0.0, (change - time.time_ns()) / 1e9))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    async def stop(self) -> None:
        nodes, self.nodes = list(self.nodes.values()), {}
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)


def _read_ports(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int) and 0 < v < 65_536}


def _write_ports(path: Path, ports: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
