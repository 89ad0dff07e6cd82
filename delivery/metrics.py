"""The delivery service's Prometheus metrics, in a registry of their own (or the caller's).

Made per instance, never at import, so `gpux dev` can hold one beside the other services'
(the names differ: `gpux_delivery_*`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["DeliveryMetrics"]


class DeliveryMetrics:
    """What the service took from the log, issued, measured and reported."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.seq = Gauge("gpux_delivery_event_seq", "Seq of the last event the service applied",
                         registry=self.registry)
        self.assignments = Counter("gpux_delivery_assignments_read",
                                   "delivery_assigned events read from the log (a restart "
                                   "reads none twice)", registry=self.registry)
        self.certificates = Counter("gpux_delivery_certificates_issued",
                                    "Holder certificates issued", registry=self.registry)
        self.samples = Counter("gpux_delivery_samples_written", "Signed samples written",
                               ["outcome"], registry=self.registry)
        self.probing = Gauge("gpux_delivery_assignments_probing",
                             "Assignments whose window is being probed now",
                             registry=self.registry)
        self.reports = Counter("gpux_delivery_reports_answered",
                               "Reports the engine answered", ["outcome"],
                               registry=self.registry)
        self.restarts = Counter("gpux_delivery_restarts",
                                "Service restarts after a lost database or log connection",
                                registry=self.registry)
