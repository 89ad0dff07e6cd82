"""Replay a command file through the engine core and print its events (PROTOCOL.md, Replay).

    python -m matching_engine.replay COMMANDS.jsonl [--final-state STATE.json]

This is how anyone audits the venue: replaying the command log must reproduce the event
log, byte for byte. It runs the same core the service runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from matching_engine.core import Engine
from protocol import decode_command, encode


def replay_lines(lines: Iterable[bytes], engine: Engine) -> Iterator[bytes]:
    """Apply each non-blank JSON line as a command; yield each event as a JSON line."""
    for line in lines:
        if not line.strip():
            continue
        for event in engine.apply(decode_command(line.rstrip(b"\r\n"))):
            yield encode(event) + b"\n"


def run(commands: BinaryIO, out: BinaryIO, final_state_path: Path | None) -> Engine:
    engine = Engine()
    buffered: list[bytes] = []
    for event_line in replay_lines(commands, engine):
        buffered.append(event_line)
        if len(buffered) >= 4096:
            out.write(b"".join(buffered))
            buffered.clear()
    out.write(b"".join(buffered))
    out.flush()
    if final_state_path is not None:
        final_state_path.write_text(json.dumps(engine.final_state(), indent=1) + "\n")
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matching_engine.replay",
        description="Run the engine core over a JSON Lines command file; print its events.",
    )
    parser.add_argument("commands", type=Path, help="JSON Lines file of commands ('-': stdin)")
    parser.add_argument("--final-state", type=Path, help="write balances and open orders here")
    args = parser.parse_args(argv)
    if str(args.commands) == "-":
        run(sys.stdin.buffer, sys.stdout.buffer, args.final_state)
        return 0
    try:
        with args.commands.open("rb") as commands:
            run(commands, sys.stdout.buffer, args.final_state)
    except OSError as error:
        print(f"replay: cannot read {args.commands}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
