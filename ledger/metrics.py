"""The projector's Prometheus metrics, in a registry of their own (or the caller's).

One `LedgerMetrics` per projector process: `gpux ledger run` serves its registry on
`--metrics-port`; `gpux dev`, which runs every service in one process, makes one and lists
its registry beside the engine's and the gateway's (the names differ: `gpux_ledger_*`).
Making the metric objects per instance, never at import, is what lets two of them live in
one process (a test, the dev venue) without duplicate-name errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LedgerMetrics"]

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
BATCH_SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class LedgerMetrics:
    """What the projector committed, how fast, how far behind the log, how often restarted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter("gpux_ledger_events", "Events applied to the journal (committed)",
                              registry=self.registry)
        self.entries = Counter("gpux_ledger_entries", "Journal entries committed",
                               registry=self.registry)
        self.batch_size = Histogram(
            "gpux_ledger_batch_size_events", "Events per committed batch",
            buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "gpux_ledger_batch_seconds",
            "Time from a batch's first COPY to its commit (waiting for the batch before)",
            buckets=BATCH_SECONDS_BUCKETS, registry=self.registry,
        )
        self.seq = Gauge("gpux_ledger_event_seq", "Seq of the last event committed",
                         registry=self.registry)
        self.lag = Gauge("gpux_ledger_consumer_lag_events",
                         "Events in the log not yet committed to the journal (refreshed at "
                         "most once a second)", registry=self.registry)
        self.restarts = Counter(
            "gpux_ledger_reconnects",
            "Projector restarts on new connections after a lost database or log connection",
            registry=self.registry,
        )
