"""What the ledger's integration tests share: a `gpux ledger run` subprocess and a feeder
that streams commands to the engine in small batches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from eventlog.port import EventLog

ROOT = Path(__file__).resolve().parents[2]
FEED_CHUNK = 20
MONEY_TYPES = (b'"type":"deposited"', b'"type":"withdrawn"', b'"type":"trade"')


def start_projector(
    bootstrap: str, namespace: str, database_url: str, log_path: Path, *options: str
) -> subprocess.Popen[bytes]:
    """Start `gpux ledger run` on the namespace's topics, its output appended to `log_path`."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gpux", "ledger", "run", "--kafka", bootstrap,
             "--database-url", database_url, "--topic-namespace", namespace,
             "--batch-size-max", "50", "--batch-interval-ms", "5", *options],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


async def feed(event_log: EventLog, topic: str, payloads: list[bytes],
               pause_s: float = 0.0) -> None:
    """Send the commands as a stream of small batches, `pause_s` apart."""
    producer = event_log.producer()
    await producer.start()
    try:
        for start in range(0, len(payloads), FEED_CHUNK):
            await producer.send_batch(topic, payloads[start:start + FEED_CHUNK])
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await producer.stop()
