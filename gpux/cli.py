"""The `gpux` command: one entry point, a subcommand per service."""

from __future__ import annotations

import importlib
import sys
from typing import Final

# subcommand -> (module with `main(argv) -> int`, one-line help)
SUBCOMMANDS: Final = {
    "dev": ("gpux.dev", "run the whole venue in one process on embedded defaults"),
    "engine": ("matching_engine.cli", "run the matching engine on Kafka or the embedded log"),
    "replay": ("matching_engine.replay", "replay a command file through the engine core"),
    "gateway": ("gateway.cli", "run the websocket gateway (API, feeds, trading page)"),
    "trade": ("sdk.cli", "trade from the command line over the websocket API"),
    "ledger": ("ledger.cli", "project events into the PostgreSQL journal; verify, reconcile"),
    "settlement": ("settlement.cli", "settle fills on chain, watch deposits, pay withdrawals"),
    "index": ("index.cli", "publish the GPU-hour price index; recompute and verify it"),
    "delivery": ("delivery.cli", "certify access, probe delivered hours, report and verify them"),
    "operator": ("agent.cli", "run an operator's node agent; answer the venue's challenges"),
    "services": ("harness.cli", "start/stop real Kafka, PostgreSQL and anvil for local work"),
}


def usage() -> str:
    lines = ["usage: gpux COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "Run 'gpux COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"gpux: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv[0] = f"gpux {name}"
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
