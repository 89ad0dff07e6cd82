"""Faulty nodes for the probe tests: a `Responder` that opens wrong rows or answers slowly.

Importable (the unit tests and the embedded node take a `FaultyResponder` in process) and
runnable as the forced command of a test OpenSSH:

    python tests/delivery_probe_faults.py MODE GPU_COUNT GPU_MEMORY_MIB [DELAY_MS]

MODE is `honest`, `wrong_rows` (every opened row's first value off by one, proofs kept) or
`slow` (each commitment sent `DELAY_MS` after the challenge arrived). It answers NDJSON on
stdin/stdout until its input ends. An honest one is the responder of every test OpenSSH node
(`forced_command`); the operator's real command is `gpux operator challenge` (package
`agent`), which these tests keep out of the way. `honest_challenge` is the prober's side of
one challenge, for the tests of the SSH transport alone.
"""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from delivery.challenge import (  # noqa: E402
    LINE_BYTES_MAX,
    ChallengeMessage,
    Checker,
    CommitmentMessage,
    ErrorMessage,
    Inventory,
    PingMessage,
    PongMessage,
    Responder,
    RowOpening,
    RowsMessage,
    decode_message,
    encode_message,
    select_backend,
)
from delivery.classes import ClassFloor  # noqa: E402
from delivery.errors import ChallengeError  # noqa: E402

if TYPE_CHECKING:  # the script a node runs per probe session need not import asyncssh
    from delivery.transport import LineSession

Mode = Literal["honest", "wrong_rows", "slow"]
MODES: Final = ("honest", "wrong_rows", "slow")
SCRIPT: Final = Path(__file__).resolve()


class FaultyResponder:
    """A numpy `Responder` with one fault: wrong rows, or a commitment held back."""

    def __init__(self, mode: Mode, inventory: Inventory, delay_ms: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.delay_ms = delay_ms
        self.responder = Responder(select_backend("numpy"), inventory)

    def handle_line(self, line: bytes) -> bytes:
        """The reply line to `line`, faulty as the mode says; an `error` line on a refusal."""
        try:
            message = decode_message(line)
            reply = self.responder.handle(message)
        except ChallengeError as exc:
            return encode_message(ErrorMessage(reason=str(exc)[:512]))
        if self.mode == "slow" and isinstance(message, ChallengeMessage):
            time.sleep(self.delay_ms / 1000)  # the node's own slowness, not a test's wait
        if self.mode == "wrong_rows" and isinstance(reply, RowsMessage):
            reply = RowsMessage(rows=[
                RowOpening(index=row.index, values=[row.values[0] + 1, *row.values[1:]],
                           proof=row.proof)
                for row in reply.rows])
        return encode_message(reply)


def forced_command(mode: Mode, gpu_count: int, gpu_memory_mib: int, delay_ms: int = 0) -> str:
    """The principals file's forced command that runs this script as a node's responder
    under this Python (through `sh -c "..."`, so the principals file's quoting reaches sshd
    intact)."""
    words = [sys.executable, str(SCRIPT), mode, str(gpu_count), str(gpu_memory_mib),
             str(delay_ms)]
    return f'/bin/sh -c "exec {shlex.join(words)}"'


async def honest_challenge(session: LineSession, floor: ClassFloor) -> bool:
    """Ping the node, set it a challenge of the floor's size and check its rows: whether
    the answer passed (the time is not judged)."""
    await session.send_line(encode_message(PingMessage()))
    if not isinstance(decode_message(await session.receive_line()), PongMessage):
        return False
    checker = Checker(secrets.token_bytes(32), floor.challenge_n, pick=secrets.randbelow)
    await session.send_line(encode_message(checker.challenge_message()))
    commitment = decode_message(await session.receive_line())
    if not isinstance(commitment, CommitmentMessage):
        return False
    await session.send_line(encode_message(checker.open_message(commitment)))
    rows = decode_message(await session.receive_line())
    return checker.verdict(rows, answer_ms=1, floor=floor).passed


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode not in MODES:
        return 2
    inventory = Inventory(gpu_count=int(argv[1]), gpu_memory_mib=int(argv[2]), device="test")
    delay_ms = int(argv[3]) if len(argv) > 3 else 0
    responder = FaultyResponder(cast(Mode, mode), inventory, delay_ms)
    for line in sys.stdin.buffer:
        if len(line) > LINE_BYTES_MAX:
            return 2
        sys.stdout.buffer.write(responder.handle_line(line))
        sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
