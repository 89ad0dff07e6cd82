"""`gpux operator agent`: registration through a stub of the venue, the OpenSSH files it
writes (the responder command reads back the node's profile), restarts that change
nothing, bounded retries, and flags refused with the flag's name."""

from __future__ import annotations

import asyncio
import io
import shlex
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.cli import main
from agent.config import AgentConfig, ChallengeConfig, read_host_key_line
from agent.embedded import serve_embedded
from agent.errors import ConfigError, RegistrationError
from agent.inventory import Inventory, read_inventory
from agent.node import run_agent
from agent.registration import Registered, Registration, register_with_retries
from delivery import challenge
from delivery.ca import PROBER_PRINCIPAL, CertificateAuthority, holder_principal
from delivery.classes import demo_floors
from delivery.sshd_config import CA_KEYS_FILE_NAME, PRINCIPALS_FILE_NAME
from harness.ports import free_port
from tests.agent_helpers import probe_exchange, prober_client

CA = CertificateAuthority.generate()
INVENTORY = Inventory(source="profile", gpu="L40S-48GB", gpu_count=2, gpu_memory_mib=46_068,
                      device="declared L40S-48GB")
KEY = "k1:" + "ab" * 32


def _host_key_line() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()


class StubVenue:
    """Answers `register_node` as the gateway does, after `failures` retriable refusals."""

    def __init__(self, failures: int = 0, retriable: bool = True) -> None:
        self.failures = failures
        self.retriable = retriable
        self.received: list[Registration] = []

    async def register(self, registration: Registration) -> Registered:
        self.received.append(registration)
        if self.failures > 0:
            self.failures -= 1
            raise RegistrationError("venue unavailable", retriable=self.retriable)
        return Registered(node_id=registration.node_id, ca_public_key=CA.public_key_line(),
                          holder_principal=holder_principal(registration.node_id),
                          prober_principal=PROBER_PRINCIPAL)


def _config(tmp_path: Path, **changes: object) -> AgentConfig:
    fields: dict[str, object] = {
        "node_id": "node-7", "region": "eu-west", "host": "gpu7.example.net", "port": 22,
        "login": "gpux", "mode": "sshd", "sshd_dir": tmp_path / "sshd",
        "host_key_line": _host_key_line(),
        "challenge": ChallengeConfig(use_nvml=False), "python": "/opt/venv/bin/python"}
    fields.update(changes)
    return AgentConfig(**fields)  # type: ignore[arg-type]


async def test_the_sshd_setup_registers_the_node_and_writes_files_that_name_the_responder(
        tmp_path: Path) -> None:
    venue = StubVenue()
    config = _config(tmp_path)
    out = io.StringIO()
    assert await run_agent(config, INVENTORY, venue.register, out=out) == 0
    (registration,) = venue.received
    assert (registration.node_id, registration.gpu, registration.gpu_count,
            registration.gpu_memory_mib, registration.host, registration.port,
            registration.login) == ("node-7", "L40S-48GB", 2, 46_068, "gpu7.example.net", 22,
                                    "gpux")
    assert registration.host_key == config.host_key_line
    assert registration.inventory["source"] == "profile"
    directory = tmp_path / "sshd"
    assert (directory / CA_KEYS_FILE_NAME).read_text().strip() == CA.public_key_line()
    holder_line, prober_line = (directory / PRINCIPALS_FILE_NAME).read_text().splitlines()
    assert holder_line == "gpux-node-node-7"
    assert prober_line.endswith(f" {PROBER_PRINCIPAL}")
    command = prober_line[len('command="'):prober_line.index('",')]
    argv = shlex.split(command)
    assert argv[:5] == ["/opt/venv/bin/python", "-m", "gpux", "operator", "challenge"]
    profile = Path(argv[argv.index("--profile") + 1])
    assert "--no-nvml" in argv
    again = read_inventory(profile, use_nvml=False)
    assert (again.gpu, again.gpu_count, again.gpu_memory_mib, again.device) == (
        INVENTORY.gpu, INVENTORY.gpu_count, INVENTORY.gpu_memory_mib, INVENTORY.device)
    printed = out.getvalue()
    assert "Match User gpux" in printed
    assert f"TrustedUserCAKeys {directory / CA_KEYS_FILE_NAME}" in printed
    assert f"AuthorizedPrincipalsFile {directory / PRINCIPALS_FILE_NAME}" in printed
    assert "systemctl reload ssh" in printed


async def test_a_restart_registers_again_and_rewrites_the_same_files(tmp_path: Path) -> None:
    venue = StubVenue()
    config = _config(tmp_path)
    await run_agent(config, INVENTORY, venue.register, out=io.StringIO())
    directory = tmp_path / "sshd"
    first = {path.name: path.read_bytes() for path in directory.iterdir()}
    await run_agent(config, INVENTORY, venue.register, out=io.StringIO())
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == first
    assert venue.received[0] == venue.received[1]


async def test_a_node_measured_by_nvml_leaves_only_its_class_to_the_profile(
        tmp_path: Path) -> None:
    measured = Inventory(source="nvml", gpu="H100-SXM-80GB", gpu_count=8,
                         gpu_memory_mib=81_559, device="NVIDIA H100 80GB HBM3")
    config = _config(tmp_path, challenge=ChallengeConfig())
    await run_agent(config, measured, StubVenue().register, out=io.StringIO())
    principals = (tmp_path / "sshd" / PRINCIPALS_FILE_NAME).read_text()
    assert "--no-nvml" not in principals
    profile = tmp_path / "sshd" / "gpux_node_profile.json"
    assert profile.read_text().strip() == '{"gpu":"H100-SXM-80GB"}'


async def test_registration_is_tried_again_while_the_venue_is_unavailable() -> None:
    venue = StubVenue(failures=2)
    registration = Registration(node_id="n1", gpu="L40S-48GB", region="eu", gpu_count=1,
                                gpu_memory_mib=1, host="h", port=22, login="u",
                                host_key=_host_key_line(), inventory={})
    registered = await register_with_retries(venue.register, registration, backoff_s_first=0)
    assert registered.node_id == "n1"
    assert len(venue.received) == 3
    stubborn = StubVenue(failures=10)
    with pytest.raises(RegistrationError):
        await register_with_retries(stubborn.register, registration, attempts_max=4,
                                    backoff_s_first=0)
    assert len(stubborn.received) == 4
    refusing = StubVenue(failures=1, retriable=False)
    with pytest.raises(RegistrationError):
        await register_with_retries(refusing.register, registration, backoff_s_first=0)
    assert len(refusing.received) == 1


@pytest.mark.parametrize(("changes", "named"), [
    ({"node_id": "node 7"}, "--node-id"),
    ({"region": ""}, "--region"),
    ({"host": "gpu7 example"}, "--host"),
    ({"port": 0}, "--port"),
    ({"login": "-x"}, "--login"),
    ({"sshd_dir": None}, "--sshd-dir"),
    ({"host_key_line": None}, "--host-key"),
    ({"mode": "embedded"}, "--embedded-host-key"),
])
def test_a_bad_setting_is_refused_naming_its_flag(tmp_path: Path, changes: dict[str, object],
                                                  named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _config(tmp_path, **changes)


def test_a_host_key_file_is_read_as_one_public_key_line(tmp_path: Path) -> None:
    line = _host_key_line()
    good = tmp_path / "ssh_host_ed25519_key.pub"
    good.write_text(f"{line} root@node7\n")
    assert read_host_key_line(good) == line
    private = tmp_path / "ssh_host_ed25519_key"
    private.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="ssh_host_ed25519_key"):
        read_host_key_line(private)
    with pytest.raises(ConfigError, match="absent.pub"):
        read_host_key_line(tmp_path / "absent.pub")


def test_the_command_without_a_key_is_a_usage_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUX_KEY", raising=False)
    argv = ["agent", "--node-id", "n1", "--region", "eu", "--host", "h", "--port", "22",
            "--login", "u", "--sshd-dir", str(tmp_path)]
    assert main(argv) == 2
    assert main([*argv, "--key", "no-colon"]) == 2


def test_the_command_refuses_a_missing_inventory_before_calling_the_venue(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host_key = tmp_path / "host.pub"
    host_key.write_text(_host_key_line())
    # nothing listens on this url: the inventory check comes first and fails
    argv = ["agent", "--node-id", "n1", "--region", "eu", "--host", "h", "--port", "22",
            "--login", "u", "--sshd-dir", str(tmp_path / "d"), "--host-key", str(host_key),
            "--key", KEY, "--url", "ws://127.0.0.1:9", "--no-nvml", "--gpu-class", "L40S-48GB"]
    assert main(argv) == 1
    assert "--gpu-count" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


# ---- --embedded: the agent serves SSH itself ------------------------------------------------


async def test_the_embedded_node_registers_its_own_key_and_answers_the_prober(
        tmp_path: Path) -> None:
    venue = StubVenue()
    key_path = tmp_path / "node" / "host_key"
    config = _config(tmp_path, mode="embedded", sshd_dir=None, host_key_line=None,
                     embedded_key_path=key_path, listen_host="127.0.0.1", port=free_port(),
                     host="127.0.0.1")
    floor = demo_floors()[INVENTORY.gpu]
    for run in range(2):  # a restart serves and registers the same host key
        stop, started = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(serve_embedded(config, INVENTORY, venue.register,
                                                     out=io.StringIO(), stop=stop,
                                                     started=started))
        await asyncio.wait_for(started.wait(), timeout=30)
        registered_key = venue.received[run].host_key
        client = prober_client(CA, tmp_path / f"prober{run}")
        seen = await client.probe("127.0.0.1", config.port, config.login, registered_key,
                                  lambda session: probe_exchange(session, floor))
        stop.set()
        await asyncio.wait_for(serving, timeout=30)
        assert seen.pong == challenge.PongMessage(gpu_count=2, gpu_memory_mib=46_068,
                                                  device="declared L40S-48GB")
        assert seen.verdict.passed, seen.verdict
    assert venue.received[0] == venue.received[1]
    assert key_path.stat().st_mode & 0o777 == 0o600
