"""What the benchmarks share: a latency histogram, child processes with their logs, CPU
seconds per process, and the engine's Prometheus metrics read between two points."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LatencyHistogram:
    """Latencies in microseconds: an HDR histogram (hdrhistogram from PyPI) when installed,
    else log-spaced buckets of 2% width (so a percentile is within 2% of the true value)."""

    LOWEST_US = 1
    HIGHEST_US = 120_000_000

    def __init__(self) -> None:
        self.count = 0
        self.total_us = 0
        self.max_us = 0
        try:
            from hdrh.histogram import HdrHistogram

            self.hdr: Any = HdrHistogram(self.LOWEST_US, self.HIGHEST_US, 3)
            self.kind = "HDR (3 significant digits)"
        except ImportError:
            self.hdr = None
            self.kind = "log buckets (2%)"
            self.buckets: dict[int, int] = {}

    def record_ns(self, value_ns: int) -> None:
        value_us = min(max(self.LOWEST_US, value_ns // 1000), self.HIGHEST_US)
        self.count += 1
        self.total_us += value_us
        self.max_us = max(self.max_us, value_us)
        if self.hdr is not None:
            self.hdr.record_value(value_us)
        else:
            bucket = int(math.log(value_us) / math.log(1.02))
            self.buckets[bucket] = self.buckets.get(bucket, 0) + 1

    def percentile_ms(self, percentile: float) -> float:
        if self.count == 0:
            return float("nan")
        if self.hdr is not None:
            return float(self.hdr.get_value_at_percentile(percentile)) / 1000
        wanted = math.ceil(self.count * percentile / 100)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= wanted:
                return 1.02 ** (bucket + 1) / 1000
        return self.max_us / 1000

    def mean_ms(self) -> float:
        return self.total_us / self.count / 1000 if self.count else float("nan")

    def summary(self) -> dict[str, float]:
        figures = {f"p{p:g}": self.percentile_ms(p) for p in PERCENTILES}
        figures["mean"] = self.mean_ms()
        figures["max"] = self.max_us / 1000
        figures["count"] = self.count
        return figures

    def spectrum(self) -> tuple[list[float], list[float]]:
        """Return (percentile, ms) points for a percentile plot, up to the last value."""
        points = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
        points = [p for p in points if self.count * (1 - p / 100) >= 1]
        return points, [self.percentile_ms(p) for p in points]


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process (and its reaped children), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class ChildProcess:
    """A subprocess in its own session whose output goes to a log file."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; "
                               f"see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def http_text(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def engine_metrics(port: int) -> dict[str, float]:
    """Return the engine's metrics as name{labels} -> value."""
    text = http_text(port, "/metrics") or ""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@dataclass
class EngineWindow:
    """The engine's batches between two readings of its metrics."""

    batches: int
    commands: int
    seconds_total: float
    buckets: list[tuple[float, int]]  # (upper bound s, batches at or below)
    wait_seconds_total: float  # stamp of each batch's first command -> its batch's start
    wait_buckets: list[tuple[float, int]]

    @classmethod
    def between(cls, before: dict[str, float], after: dict[str, float]) -> EngineWindow:
        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        def buckets(histogram: str) -> list[tuple[float, int]]:
            prefix = histogram + '_bucket{le="'
            return sorted((float(name[len(prefix):-2]), int(delta(name)))
                          for name in after if name.startswith(prefix) and "+Inf" not in name)

        return cls(batches=int(delta("gpux_engine_batch_seconds_count")),
                   commands=int(delta("gpux_engine_batch_size_commands_sum")),
                   seconds_total=delta("gpux_engine_batch_seconds_sum"),
                   buckets=buckets("gpux_engine_batch_seconds"),
                   wait_seconds_total=delta("gpux_engine_command_wait_seconds_sum"),
                   wait_buckets=buckets("gpux_engine_command_wait_seconds"))

    def mean_ms(self, seconds_total: float) -> float:
        return seconds_total / self.batches * 1000 if self.batches else float("nan")

    def bound_ms(self, buckets: list[tuple[float, int]], fraction: float) -> float:
        """Return the bucket bound (ms) at or below which `fraction` of the batches fell."""
        for bound_s, count in buckets:
            if count >= fraction * self.batches:
                return bound_s * 1000
        return float("inf")

    def summary(self) -> dict[str, float]:
        return {"batches": self.batches, "commands": self.commands,
                "commands_per_batch": self.commands / self.batches if self.batches else 0,
                "batch_ms_mean": self.mean_ms(self.seconds_total),
                "batch_ms_p50_le": self.bound_ms(self.buckets, 0.5),
                "batch_ms_p99_le": self.bound_ms(self.buckets, 0.99),
                "wait_ms_mean": self.mean_ms(self.wait_seconds_total),
                "wait_ms_p50_le": self.bound_ms(self.wait_buckets, 0.5),
                "wait_ms_p99_le": self.bound_ms(self.wait_buckets, 0.99)}


@dataclass
class Cpu:
    """CPU seconds of the venue's processes, to tell which one a run saturated."""

    pids: dict[str, list[int]]
    start: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0

    def begin(self) -> None:
        self.start = {name: sum(map(cpu_seconds, pids)) for name, pids in self.pids.items()}
        self.started_at = time.monotonic()

    def end(self) -> dict[str, float]:
        wall = time.monotonic() - self.started_at
        return {name: round((sum(map(cpu_seconds, pids)) - self.start[name]) / wall, 2)
                for name, pids in self.pids.items()}
