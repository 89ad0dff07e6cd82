"""`gpux operator challenge`: answer the venue's prober on stdin/stdout, then exit.

A node's sshd forces this command for the prober's certificate (principal `gpux-prober`):
each probe is one SSH session speaking newline-delimited JSON (delivery.challenge): `ping`
is answered with the node's inventory (`pong`), `challenge` with the Merkle root of the
product's rows (`commitment`), `open` with the rows asked and their proofs (`rows`). A
message the node cannot answer gets an `error` line. The session ends at end of input.

Bounds: a request line is at most `REQUEST_LINE_BYTES_MAX` (requests are small; only the
node's `rows` reply is large), and a session answers at most `messages_max` messages; past
either bound the node writes one `error` line and exits 1. Nothing but replies is written
to stdout (sshd carries it to the prober); diagnostics go to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import BinaryIO, Literal

from agent.config import ChallengeConfig
from agent.errors import InventoryError
from agent.inventory import Inventory, PynvmlModule, read_inventory
from delivery import challenge
from delivery.errors import ChallengeError

__all__ = ["REQUEST_LINE_BYTES_MAX", "SessionEnd", "make_responder", "run_challenge", "serve"]

REQUEST_LINE_BYTES_MAX = 64 * 1024
ERROR_REASON_CHARS_MAX = 512


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended: at end of input, or past a bound (then exit status 1)."""

    how: Literal["eof", "line_too_long", "too_many_messages"]
    messages: int  # messages answered

    @property
    def exit_status(self) -> int:
        return 0 if self.how == "eof" else 1


def make_responder(inventory: Inventory, backend_name: str = "auto") -> challenge.Responder:
    """A Responder answering with `inventory`'s figures on the chosen backend (`auto`: a
    GPU one when torch or CuPy sees a GPU, else numpy)."""
    backend = challenge.select_backend(None if backend_name == "auto" else backend_name)
    return challenge.Responder(backend, challenge.Inventory(
        gpu_count=inventory.gpu_count, gpu_memory_mib=inventory.gpu_memory_mib,
        device=inventory.device))


def serve(responder: challenge.Responder, reader: BinaryIO, writer: BinaryIO, *,
          messages_max: int, line_bytes_max: int = REQUEST_LINE_BYTES_MAX) -> SessionEnd:
    """Answer line after line until end of input or a bound; flush each reply at once (the
    prober times the commitment from the challenge it sent)."""
    for answered in range(messages_max):
        line = reader.readline(line_bytes_max + 1)
        if not line:
            return SessionEnd("eof", answered)
        if len(line) > line_bytes_max:
            _write_error(writer, f"request line longer than {line_bytes_max} bytes")
            return SessionEnd("line_too_long", answered)
        if not line.strip():
            continue  # a blank line is no message; it still counts against the bound
        writer.write(responder.handle_line(line))
        writer.flush()
    if reader.readline(1):
        _write_error(writer, f"more than {messages_max} messages in one session")
        return SessionEnd("too_many_messages", messages_max)
    return SessionEnd("eof", messages_max)


def _write_error(writer: BinaryIO, reason: str) -> None:
    writer.write(challenge.encode_message(
        challenge.ErrorMessage(reason=reason[:ERROR_REASON_CHARS_MAX])))
    writer.flush()


def run_challenge(config: ChallengeConfig, reader: BinaryIO, writer: BinaryIO, *,
                  nvml: PynvmlModule | None = None) -> int:
    """Read the inventory, then serve one session; return the exit status.

    An inventory that cannot be read, or a backend that is not there, is answered with one
    `error` line (the prober records the minute as not delivered) and exit status 1.
    """
    try:
        inventory = read_inventory(config.profile, declared=config.declared, nvml=nvml,
                                   use_nvml=config.use_nvml)
        responder = make_responder(inventory, config.backend)
    except (InventoryError, ChallengeError) as error:
        print(f"gpux operator challenge: {error}", file=sys.stderr)
        _write_error(writer, f"node cannot answer: {error}")
        return 1
    end = serve(responder, reader, writer, messages_max=config.messages_max)
    if end.exit_status:
        print(f"gpux operator challenge: session ended: {end.how} after {end.messages} "
              "messages", file=sys.stderr)
    return end.exit_status
