"""The engine's Prometheus metrics and counters, and the command stamp its wait metric reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EngineMetrics", "EngineStats", "stamp_ns"]


@dataclass
class EngineStats:
    commands: int = 0
    events: int = 0
    batches: int = 0
    recovered_commands: int = 0
    recovery_s: float = 0.0


class EngineMetrics:
    """The engine's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.commands = Counter("gpux_engine_commands", "Commands applied",
                                registry=self.registry)
        self.events = Counter("gpux_engine_events", "Events published", registry=self.registry)
        self.batch_size = Histogram(
            "gpux_engine_batch_size_commands", "Commands per batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "gpux_engine_batch_seconds", "Time the core took to apply one batch",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
            registry=self.registry,
        )
        self.lag = Gauge("gpux_engine_consumer_lag_commands",
                         "Commands in the log not yet applied", registry=self.registry)
        self.seq = Gauge("gpux_engine_event_seq", "Seq of the last event published",
                         registry=self.registry)
        self.recovery_seconds = Gauge("gpux_engine_recovery_seconds",
                                      "Time the last recovery took", registry=self.registry)
        self.command_wait = Histogram(
            "gpux_engine_command_wait_seconds",
            "From the stamp (ts) of a batch's first command to the start of its batch: the "
            "way through the log and the wait for the batch before (wall clocks)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.snapshots = Counter("gpux_engine_snapshots", "Snapshots the forked children "
                                 "finished, by outcome", ["outcome"], registry=self.registry)
        self.snapshot_seconds = Gauge(
            "gpux_engine_snapshot_seconds", "From the fork to the child's exit, last snapshot",
            registry=self.registry)

    def snapshot_done(self, ok: bool, seconds: float) -> None:
        """Count a snapshot child that exited (called from its watcher thread)."""
        self.snapshots.labels("written" if ok else "failed").inc()
        self.snapshot_seconds.set(seconds)


_STAMP_DIGITS = re.compile(rb" *([0-9]{1,19})")
_STAMP_SEARCH_BYTES = 64


def stamp_ns(value: bytes) -> int | None:
    """Return a command record's `ts` for the wait metric, read without decoding the record
    (outside input: the codec alone bounds its nesting): the digits after the first `"ts":`
    near the start, as the gateway and msgspec write commands; None when there are none."""
    at = value.find(b'"ts":', 0, _STAMP_SEARCH_BYTES)
    if at < 0:
        return None
    digits = _STAMP_DIGITS.match(value, at + 5)
    return int(digits.group(1)) if digits else None
