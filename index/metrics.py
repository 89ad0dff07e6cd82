"""The index service's Prometheus metrics, in a registry of their own (or the caller's).

One `IndexMetrics` per service: `gpux index run` serves its registry on `--metrics-port`;
`gpux dev` lists it beside the other services' (the names differ: `gpux_index_*`). The
metric objects are made per instance, never at import, so two can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["IndexMetrics"]


class IndexMetrics:
    """What the service wrote, how far behind the log it is, how often it restarted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.values = Counter("gpux_index_values_written",
                              "Index values written (upserted; a restart writes them again)",
                              registry=self.registry)
        self.seq = Gauge("gpux_index_event_seq", "Seq of the last event the index read",
                         registry=self.registry)
        self.minute = Gauge("gpux_index_minute_seconds",
                            "The newest minute boundary written, in seconds since the epoch",
                            registry=self.registry)
        self.lag = Gauge("gpux_index_consumer_lag_events",
                         "Events in the log the index has not read yet (refreshed at most "
                         "once a second)", registry=self.registry)
        self.restarts = Counter(
            "gpux_index_restarts",
            "Service restarts (recomputing from the start of the log) after a lost "
            "database or log connection", registry=self.registry)
