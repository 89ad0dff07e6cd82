"""`gpux dev` brings a live market up, stops cleanly, and resumes it from its data dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eventlog.embedded import EmbeddedLog
from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC
from matching_engine.core import Engine
from matching_engine.replay import replay_lines
from tests.unit.test_engine_service_embedded import read_all

ROOT = Path(__file__).resolve().parents[2]


def run_dev(data_dir: Path, duration_s: float) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpux", "dev", "--data-dir", str(data_dir),
         "--duration-s", str(duration_s), "--rate", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


async def test_dev_runs_a_live_market_and_resumes_it(tmp_path: Path) -> None:
    run_dev(tmp_path, 3)
    run_dev(tmp_path, 3)
    event_log = EmbeddedLog.open(tmp_path / "log")
    try:
        commands = await read_all(event_log, COMMANDS_TOPIC)
        events = await read_all(event_log, EVENTS_TOPIC)
    finally:
        await event_log.close()
    engine = Engine()
    assert [line.rstrip(b"\n") for line in replay_lines(commands, engine)] == events
    assert len(engine.instruments) >= 72, "the second start listed nothing twice"
    assert b'"duplicate_instrument"' not in b"".join(events)
    assert engine.trade_counter > 0, "the demo flow traded"
