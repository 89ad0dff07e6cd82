"""The audit tool's speed: `python -m matching_engine.replay` over a command file, timed as a
whole process (start, decode, engine, encode, write), on each core.

    python -m benchmarks.replay [--commands 200000]

The commands are the `Workload` mix (orders, cancels, amends, deposits on 8 instruments).
The native core's figure is printed beside the Python core's, measured in the same run on
the same file, and both outputs (events and final state) must be the same bytes. Target:
>= 300,000 commands/s for the native core.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from matching_engine.workload import Workload
from protocol import encode

TARGET_PER_S = 300_000


def write_commands(path: Path, count: int) -> None:
    workload = Workload(instruments=8, accounts=200, seed=7)
    with path.open("wb") as out:
        for command in workload.setup() + workload.flow(count):
            out.write(encode(command) + b"\n")


def replay(path: Path, core: str, state: Path) -> tuple[float, str, bytes]:
    """Run the replay CLI; return (seconds, digest of its events, its final state)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "matching_engine.replay", str(path), "--core", core,
         "--final-state", str(state)], capture_output=True, check=True)
    seconds = time.perf_counter() - started
    return seconds, hashlib.sha256(result.stdout).hexdigest(), state.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__)
    parser.add_argument("--commands", type=int, default=200_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpux-replay-") as directory:
        path = Path(directory) / "commands.jsonl"
        write_commands(path, args.commands)
        lines = path.read_bytes().count(b"\n")
        runs = {core: replay(path, core, Path(directory) / f"{core}.json")
                for core in ("python", "native")}
    native_s, python_s = runs["native"][0], runs["python"][0]
    same = runs["native"][1:] == runs["python"][1:]
    print(f"replay of {lines:,} commands, whole process (python -m matching_engine.replay):")
    print(f"  native core  {lines / native_s:>12,.0f} commands/s  ({native_s:.2f} s)  "
          f"target >= {TARGET_PER_S:,}")
    print(f"  python core  {lines / python_s:>12,.0f} commands/s  ({python_s:.2f} s)  "
          f"baseline, same run")
    print(f"  ratio        {python_s / native_s:>12.1f}x")
    print(f"  outputs      {'byte-identical' if same else 'DIFFERENT'} (events and final state)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
