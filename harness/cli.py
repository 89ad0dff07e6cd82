"""`gpux services up|down|status|install [--dir DIR]`: the local stack, for people.

`up` starts Kafka, PostgreSQL and anvil detached (they outlive the command), prints the
env lines clients need and writes them to DIR/env; `down` stops what the state files in
DIR name; `status` shows it (exit code 0 when all run, 3 otherwise). `install` fetches the
pinned versions of all three, and of the OpenSSH server the delivery tests run as a node's
sshd (`harness.sshd`; not part of `up`); `pin-kafka` fetches Kafka's jars afresh and pins
their digests.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from pathlib import Path

from harness.anvil import AnvilService
from harness.errors import ServiceError
from harness.install import install_all
from harness.kafka import KafkaService, write_pinned_jar_digests
from harness.postgres import PostgresService
from harness.service import (
    Service,
    read_state,
    record_is_alive,
    recorded_process,
    remove_run_dir,
    stop_recorded,
)

DEFAULT_DIR = Path("var/services")
SERVICE_FACTORIES: dict[str, Callable[[Path], Service]] = {
    "kafka": KafkaService,
    "postgres": PostgresService,
    "anvil": AnvilService,
}
EXIT_NOT_RUNNING = 3


def main(argv: list[str]) -> int:
    """Run one subcommand; return the process exit code."""
    arguments = _parser().parse_args(argv)
    state_dir: Path = arguments.dir.absolute()
    try:
        if arguments.command == "up":
            return _up(state_dir)
        if arguments.command == "down":
            return _down(state_dir)
        if arguments.command == "status":
            return _status(state_dir)
        if arguments.command == "pin-kafka":
            print(f"pinned: {write_pinned_jar_digests()}")
            return 0
        install_all()
        return 0
    except ServiceError as error:
        print(f"error: {error}")
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpux services", description="Local Kafka, PostgreSQL and anvil for gpux."
    )
    parser.add_argument("command", choices=("up", "down", "status", "install", "pin-kafka"))
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"state dir (default: {DEFAULT_DIR})"
    )
    return parser


def _running_names(state_dir: Path) -> list[str]:
    names = []
    for name in SERVICE_FACTORIES:
        state = read_state(state_dir / name)
        if state is not None and record_is_alive(recorded_process(state)):
            names.append(name)
    return names


def _up(state_dir: Path) -> int:
    running = _running_names(state_dir)
    if running:
        print(f"already running in {state_dir}: {', '.join(running)}; run `down` first")
        return 1
    started: list[Service] = []
    try:
        for name, factory in SERVICE_FACTORIES.items():
            remove_run_dir(state_dir / name)  # a fresh stack each time
            service = factory(state_dir / name)
            service.start()
            started.append(service)
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    env_lines = [_env_line(service) for service in started]
    (state_dir / "env").write_text("".join(f"{line}\n" for line in env_lines), "utf-8")
    print("\n".join(env_lines))
    return 0


def _env_line(service: Service) -> str:
    env_var = {"kafka": "KAFKA_BOOTSTRAP", "postgres": "DATABASE_URL", "anvil": "ETH_RPC_URL"}
    return f"{env_var[service.name]}={service.endpoint}"


def _down(state_dir: Path) -> int:
    for name in reversed(list(SERVICE_FACTORIES)):
        state = read_state(state_dir / name)
        if state is None:
            print(f"{name}: not running")
            continue
        stop_signal = signal.Signals[str(state.get("stop_signal", "SIGTERM"))]
        stop_recorded(recorded_process(state), stop_signal)
        (state_dir / name / "service.json").unlink(missing_ok=True)
        print(f"{name}: stopped (pid {state['pid']})")
    (state_dir / "env").unlink(missing_ok=True)
    return 0


def _status(state_dir: Path) -> int:
    all_running = True
    for name in SERVICE_FACTORIES:
        state = read_state(state_dir / name)
        if state is None or not record_is_alive(recorded_process(state)):
            all_running = False
            print(f"{name:<9} down")
            continue
        print(f"{name:<9} up   pid {state['pid']:<7} {state['endpoint']}  log {state['log_path']}")
    return 0 if all_running else EXIT_NOT_RUNNING
