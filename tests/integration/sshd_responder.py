"""The challenge responder a test sshd forces for the prober: NDJSON on stdin/stdout.

Run as `python tests/integration/sshd_responder.py GPU_COUNT GPU_MEMORY_MIB`; it answers
with `delivery.challenge.Responder` (numpy) until its input ends. The operator's real
command is `gpux operator challenge` (package `agent`); this one keeps the SSH tests
independent of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from delivery.challenge import LINE_BYTES_MAX, Inventory, Responder, select_backend  # noqa: E402


def main(argv: list[str]) -> int:
    inventory = Inventory(gpu_count=int(argv[0]), gpu_memory_mib=int(argv[1]), device="test")
    responder = Responder(select_backend("numpy"), inventory)
    for line in sys.stdin.buffer:
        if len(line) > LINE_BYTES_MAX:
            return 2
        sys.stdout.buffer.write(responder.handle_line(line))
        sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
