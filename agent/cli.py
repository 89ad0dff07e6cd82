"""`gpux operator COMMAND`: run an operator's node agent; answer the venue's challenges.

    gpux operator agent --node-id ID --region R --host HOST --port PORT --login USER
                        [--profile FILE | --gpu-class C --gpu-count N --gpu-memory-mib M]
                        [--no-nvml] [--url URL] [--key KEY_ID:PRIVATE_KEY]
                        (--sshd-dir DIR --host-key FILE [--responder-python PYTHON]
                         | --embedded [--embedded-host-key FILE] [--listen-host ADDRESS])
    gpux operator challenge [--profile FILE | --gpu-class ...] [--no-nvml] [--backend B]

`agent` reads the node's inventory (NVML when `nvidia-ml-py` is installed and a GPU answers,
else the declared profile: a JSON file or the flags), registers the node with the venue
(`register_node`, idempotent: it registers again at every start) and gets the venue CA's
public key. With `--sshd-dir DIR` it writes the OpenSSH files into DIR (the CA key, the
principals file forcing the prober into `gpux operator challenge`, the node's profile) and
prints the sshd_config lines to add and the reload command; `--host-key` is the node's sshd
host public key (e.g. /etc/ssh/ssh_host_ed25519_key.pub). With `--embedded` it runs its own
SSH server on `--port` until SIGTERM or SIGINT, with a host key kept in
`--embedded-host-key` (created on first run).

`challenge` is the command sshd forces for the prober: newline-delimited JSON on stdin and
stdout (delivery.challenge), one session, exits at end of input.

The API key is the operator's (`--key`, default $GPUX_KEY, as `gpux trade` takes it); the
gateway is `--url` (default $GPUX_URL or ws://127.0.0.1:8765).
Exit codes: 0 success, 1 a failure (printed), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from agent.config import AgentConfig, ChallengeConfig, read_host_key_line
from agent.errors import AgentError
from agent.inventory import Declared, read_inventory
from agent.responder import run_challenge

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
BACKENDS = ("auto", "numpy", "torch", "cupy")


def _add_inventory_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inventory (used when NVML cannot be read)")
    group.add_argument("--profile", type=Path, help="a JSON profile: {\"gpu\", \"gpu_count\", "
                                                    "\"gpu_memory_mib\", \"device\"}")
    group.add_argument("--gpu-class", dest="gpu", help="GPU class, e.g. H100-SXM-80GB")
    group.add_argument("--gpu-count", type=int, help="GPUs the node delivers")
    group.add_argument("--gpu-memory-mib", type=int, help="memory per GPU (MiB)")
    group.add_argument("--device", help="the GPUs' name, as the node's `pong` reports it")
    group.add_argument("--no-nvml", dest="use_nvml", action="store_false",
                       help="never read NVML, use the declared profile")
    group.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="where challenges are computed (auto: a GPU one if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux operator", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("agent", help="register the node and set up its SSH server")
    agent.add_argument("--node-id", required=True, help="the node id `issue_capacity` names")
    agent.add_argument("--region", required=True)
    agent.add_argument("--host", required=True, help="where holders and the prober reach it")
    agent.add_argument("--port", required=True, type=int, help="its SSH port")
    agent.add_argument("--login", required=True, help="the login user on the node")
    agent.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    agent.add_argument("--key", default=os.environ.get("GPUX_KEY"), metavar="KEY_ID:PRIVATE_KEY",
                       help="the operator's API key, as `gpux gateway add-key` prints it")
    serving = agent.add_mutually_exclusive_group(required=True)
    serving.add_argument("--sshd-dir", type=Path, help="write the OpenSSH files here")
    serving.add_argument("--embedded", action="store_true", help="run an SSH server here")
    agent.add_argument("--host-key", type=Path, help="the sshd's host public key file")
    agent.add_argument("--embedded-host-key", type=Path,
                       help="the embedded server's host key (created if absent)")
    agent.add_argument("--responder-python", default=sys.executable,
                       help="the Python sshd runs `-m gpux operator challenge` with "
                            "(default: this one)")
    agent.add_argument("--listen-host", default="0.0.0.0",  # noqa: S104 -- serves the network
                       help="the embedded server's listening address")
    _add_inventory_flags(agent)
    challenge = commands.add_parser("challenge", help="answer the prober on stdin/stdout")
    _add_inventory_flags(challenge)
    challenge.add_argument("--messages-max", type=int, default=16,
                           help="messages answered in one session at most")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "challenge":
            return _challenge(args)
        return _agent(args)
    except AgentError as error:
        print(f"gpux operator {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _declared(args: argparse.Namespace) -> Declared:
    return Declared(gpu=args.gpu, gpu_count=args.gpu_count,
                    gpu_memory_mib=args.gpu_memory_mib, device=args.device)


def _challenge_config(args: argparse.Namespace, messages_max: int = 16) -> ChallengeConfig:
    return ChallengeConfig(profile=args.profile, declared=_declared(args),
                           use_nvml=args.use_nvml, backend=args.backend,
                           messages_max=messages_max)


def _challenge(args: argparse.Namespace) -> int:
    config = _challenge_config(args, args.messages_max)
    return run_challenge(config, sys.stdin.buffer, sys.stdout.buffer)


def _agent(args: argparse.Namespace) -> int:
    if not args.key:
        print("gpux operator agent: give --key KEY_ID:PRIVATE_KEY (or set GPUX_KEY)",
              file=sys.stderr)
        return EXIT_USAGE
    key_id, _, private_key = args.key.partition(":")
    if not key_id or not private_key:
        print("gpux operator agent: --key takes KEY_ID:PRIVATE_KEY", file=sys.stderr)
        return EXIT_USAGE
    embedded_key = args.embedded_host_key
    if args.embedded and embedded_key is None:
        embedded_key = Path(f"gpux-node-{args.node_id}-host-key")
    config = AgentConfig(
        node_id=args.node_id, region=args.region, host=args.host, port=args.port,
        login=args.login, mode="embedded" if args.embedded else "sshd",
        sshd_dir=args.sshd_dir,
        host_key_line=read_host_key_line(args.host_key) if args.host_key else None,
        embedded_key_path=embedded_key, listen_host=args.listen_host,
        challenge=_challenge_config(args), python=args.responder_python)
    # imported here: the challenge, which sshd starts at every probe, needs neither
    from agent.node import run_agent
    from agent.registration import sdk_register
    from sdk.signing import ApiKey

    inventory = read_inventory(config.challenge.profile, declared=config.challenge.declared,
                               use_nvml=config.challenge.use_nvml)
    register = sdk_register(args.url, ApiKey(key_id, private_key))
    return asyncio.run(run_agent(config, inventory, register, out=sys.stdout))
