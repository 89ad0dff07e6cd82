"""The transport-floor benchmark's relays copy every record, on the real broker: its figures
are latencies of records that all came back, in both relay shapes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.kafka_floor import MODES, measure
from harness.kafka import KafkaService


@pytest.mark.parametrize("mode", MODES)
def test_every_offered_record_comes_back(kafka_service: KafkaService, tmp_path: Path,
                                         mode: str) -> None:
    assert kafka_service.pid is not None
    args = argparse.Namespace(rate=400.0, warmup_s=1.0, seconds=3.0)
    figures = measure(kafka_service.bootstrap_servers, kafka_service.pid, tmp_path, mode, args)
    assert figures["mode"] == mode
    assert figures["sent"] > 400  # about 1,200 offered in the measured 3 s
    assert figures["returned"] == figures["sent"]
    assert figures["latency"]["count"] == figures["sent"]
    assert set(figures["cpu"]) == {"kafka", "relay", "source"}
