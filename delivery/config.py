"""How the delivery service runs: its minute, its budgets, where its keys and the gateway are.

`minute_ms` is the prober's minute: 60,000 in production. Tests and `gpux dev` compress it
(a few hundred ms) so that an hour's 60 samples take seconds; certificates still cover the
real window, only the probe schedule is compressed. Every loop has an interval, every pass
a bound, every queue a size (STYLE.md: bound everything).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from delivery.classes import DEFAULT_FLOORS, ClassFloor
from eventlog.port import EVENTS_TOPIC
from runtime.config import require_positive
from runtime.postgres import ConnectionConfig
from runtime.retry import RetryPolicy

__all__ = ["ServiceConfig"]

MINUTE_MS_PRODUCTION = 60_000


@dataclass(frozen=True)
class ServiceConfig:
    """The delivery service's settings; validated when made."""

    keys_dir: Path
    minute_ms: int = MINUTE_MS_PRODUCTION
    # Challenge minutes per hour of window besides minute 0 (`delivery.prober.plan_minutes`).
    challenges_per_hour: int = 4
    floors: Mapping[str, ClassFloor] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    # The event log.
    topic_namespace: str = ""
    batch_size_max: int = 1_000
    poll_timeout_ms: int = 200
    # Certificates: a pass every interval, at most so many per pass.
    certificate_interval_ms: int = 2_000
    certificates_per_pass_max: int = 200
    # The prober's own certificate: valid this long, renewed when less than half is left.
    prober_certificate_validity_s: int = 24 * 3600
    # Probing: assignments looked for every interval, at most so many probed at once.
    schedule_interval_ms: int = 1_000
    assignments_active_max: int = 1_000
    probe_concurrency_max: int = 64
    # Reports: a pass every interval, at most so many per pass; each request's timeout.
    report_interval_ms: int = 2_000
    reports_per_pass_max: int = 100
    report_timeout_ms: int = 20_000
    gateway_url: str | None = None
    api_key: tuple[str, str] | None = None  # (key_id, private_key) of a `delivery` role key
    connection: ConnectionConfig = ConnectionConfig()
    pool_size_max: int = 16
    retry: RetryPolicy = RetryPolicy()

    @property
    def events_topic(self) -> str:
        return self.topic_namespace + EVENTS_TOPIC

    @property
    def minute_ns(self) -> int:
        return self.minute_ms * 1_000_000

    def __post_init__(self) -> None:
        require_positive(self, "minute_ms", "batch_size_max", "poll_timeout_ms",
                         "certificate_interval_ms", "certificates_per_pass_max",
                         "prober_certificate_validity_s", "schedule_interval_ms",
                         "assignments_active_max", "probe_concurrency_max",
                         "report_interval_ms", "reports_per_pass_max", "report_timeout_ms",
                         "pool_size_max")
        if self.minute_ms < 20:
            raise ValueError(f"minute_ms must be >= 20, got {self.minute_ms}")
        if self.challenges_per_hour < 0:
            raise ValueError("challenges_per_hour must be >= 0")
        if (self.gateway_url is None) != (self.api_key is None):
            raise ValueError("gateway_url and api_key go together: reports are sent with both")
