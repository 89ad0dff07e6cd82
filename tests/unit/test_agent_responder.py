"""`gpux operator challenge`: the node's side of the wire protocol, checked by the prober's
own `delivery.challenge.Checker`, in process over byte streams and as the subprocess sshd
runs (stdin/stdout, one session, exit at end of input)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from agent.config import ChallengeConfig
from agent.inventory import Declared, Inventory
from agent.responder import REQUEST_LINE_BYTES_MAX, make_responder, run_challenge, serve
from delivery import challenge
from delivery.classes import demo_floors

REPO = Path(__file__).resolve().parents[2]
FLOOR = demo_floors()["H100-SXM-80GB"]
INVENTORY = Inventory(source="profile", gpu="H100-SXM-80GB", gpu_count=8,
                      gpu_memory_mib=81_559, device="NVIDIA H100 80GB HBM3")
PROFILE = {"gpu": "H100-SXM-80GB", "gpu_count": 8, "gpu_memory_mib": 81_559,
           "device": "NVIDIA H100 80GB HBM3"}
SESSION_TIMEOUT_S = 60
PING = challenge.PingMessage()


def _lines(*messages: challenge.Message) -> bytes:
    return b"".join(challenge.encode_message(message) for message in messages)


def _replies(data: bytes) -> list[challenge.Message]:
    return [challenge.decode_message(line) for line in data.splitlines()]


def _checker(n: int, seed_byte: int = 7) -> challenge.Checker:
    rng = random.Random(seed_byte)
    return challenge.Checker(bytes([seed_byte]) * 32, n, rows_checked=4, pick=rng.randrange)


def test_a_session_answers_ping_challenge_and_open_so_the_checker_passes_it() -> None:
    responder = make_responder(INVENTORY, "numpy")
    checker = _checker(FLOOR.challenge_n)
    output = io.BytesIO()
    # one exchange at a time, as the prober speaks: the rows are picked after the commitment
    first = serve(responder, io.BytesIO(_lines(PING, checker.challenge_message())), output,
                  messages_max=16)
    assert first.how == "eof"
    pong, commitment = _replies(output.getvalue())
    assert pong == challenge.PongMessage(gpu_count=8, gpu_memory_mib=81_559,
                                  device="NVIDIA H100 80GB HBM3")
    assert isinstance(commitment, challenge.CommitmentMessage)
    opened = checker.open_message(commitment)
    output = io.BytesIO()
    serve(responder, io.BytesIO(_lines(opened)), output, messages_max=16)
    (rows,) = _replies(output.getvalue())
    verdict = checker.verdict(rows, answer_ms=1, floor=FLOOR)
    assert verdict.passed, verdict
    assert verdict.rows_checked == 4


def test_an_open_before_a_challenge_gets_an_error_line_and_the_session_goes_on() -> None:
    responder = make_responder(INVENTORY, "numpy")
    output = io.BytesIO()
    end = serve(responder, io.BytesIO(_lines(challenge.OpenMessage(rows=[0]), PING)),
                output, messages_max=16)
    error, pong = _replies(output.getvalue())
    assert isinstance(error, challenge.ErrorMessage)
    assert isinstance(pong, challenge.PongMessage)
    assert (end.how, end.exit_status) == ("eof", 0)


def test_a_line_that_is_not_a_message_gets_an_error_line() -> None:
    output = io.BytesIO()
    serve(make_responder(INVENTORY, "numpy"), io.BytesIO(b'{"type":"pong"}\nnot json\n\n'),
          output, messages_max=16)
    replies = _replies(output.getvalue())
    assert [type(reply) for reply in replies] == [challenge.ErrorMessage] * 2


def test_a_request_line_over_the_bound_ends_the_session_with_an_error() -> None:
    output = io.BytesIO()
    huge = b'{"type":"ping","pad":"' + b"x" * REQUEST_LINE_BYTES_MAX + b'"}\n'
    end = serve(make_responder(INVENTORY, "numpy"), io.BytesIO(huge + _lines(PING)), output,
                messages_max=16)
    assert (end.how, end.exit_status) == ("line_too_long", 1)
    (error,) = _replies(output.getvalue())
    assert isinstance(error, challenge.ErrorMessage)


def test_a_session_answers_at_most_messages_max_messages() -> None:
    output = io.BytesIO()
    responder = make_responder(INVENTORY, "numpy")
    end = serve(responder, io.BytesIO(_lines(*[PING] * 4)), output, messages_max=3)
    assert (end.how, end.messages, end.exit_status) == ("too_many_messages", 3, 1)
    kinds = [type(reply) for reply in _replies(output.getvalue())]
    assert kinds == [challenge.PongMessage] * 3 + [challenge.ErrorMessage]
    exactly = serve(responder, io.BytesIO(_lines(*[PING] * 3)), io.BytesIO(), messages_max=3)
    assert exactly.how == "eof"


def test_a_node_without_an_inventory_answers_one_error_line_and_exits_1() -> None:
    output = io.BytesIO()
    status = run_challenge(ChallengeConfig(use_nvml=False), io.BytesIO(_lines(PING)), output)
    assert status == 1
    (error,) = _replies(output.getvalue())
    assert isinstance(error, challenge.ErrorMessage)
    assert "--gpu-count" in error.reason


def test_the_declared_flags_answer_the_ping() -> None:
    output = io.BytesIO()
    config = ChallengeConfig(declared=Declared(gpu="L40S-48GB", gpu_count=2,
                                               gpu_memory_mib=46_068), use_nvml=False)
    assert run_challenge(config, io.BytesIO(_lines(PING)), output) == 0
    assert _replies(output.getvalue()) == [
        challenge.PongMessage(gpu_count=2, gpu_memory_mib=46_068, device="declared L40S-48GB")]


# ---- as a subprocess, the way sshd runs it -------------------------------------------------


def _start_challenge(profile: Path, *extra: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "gpux", "operator", "challenge", "--profile", str(profile),
         "--no-nvml", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        env=environment)


def _exchange(process: subprocess.Popen[bytes], message: challenge.Message) -> challenge.Message:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(challenge.encode_message(message))
    process.stdin.flush()
    return challenge.decode_message(process.stdout.readline())


def test_the_command_speaks_the_wire_protocol_and_exits_0_at_end_of_input(
        tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_bytes(msgspec.json.encode(PROFILE))
    process = _start_challenge(profile, "--backend", "numpy")
    try:
        assert _exchange(process, PING) == challenge.PongMessage(
            gpu_count=8, gpu_memory_mib=81_559, device="NVIDIA H100 80GB HBM3")
        checker = _checker(FLOOR.challenge_n, seed_byte=42)
        sent_ns = time.monotonic_ns()
        commitment = _exchange(process, checker.challenge_message())
        answer_ms = (time.monotonic_ns() - sent_ns) // 1_000_000
        assert isinstance(commitment, challenge.CommitmentMessage)
        rows = _exchange(process, checker.open_message(commitment))
        verdict = checker.verdict(rows, answer_ms=answer_ms, floor=FLOOR)
        assert verdict.passed, verdict
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=SESSION_TIMEOUT_S) == 0
    finally:
        process.kill()
        process.wait()


def test_the_command_with_a_broken_profile_answers_an_error_and_exits_1(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{"gpu": "H100-SXM-80GB"}')
    process = _start_challenge(profile)
    stdout, stderr = process.communicate(_lines(PING), timeout=SESSION_TIMEOUT_S)
    assert process.returncode == 1
    (error,) = _replies(stdout)
    assert isinstance(error, challenge.ErrorMessage)
    assert b"--gpu-count" in stderr
