"""The gateway's Prometheus metrics: connections, frames in and out, order-to-ack latency,
rate-limit refusals.

`GatewayService` takes a `GatewayMetrics` and wires it in at its edges, leaving the core
(gateway.core) free of metrics: frames are counted where the service reads them and where
the transport writes them; latency is observed when the correlator completes a request
(the time from the frame's arrival to the engine's answer reaching the gateway, which is
what a client waits for less the network); refusals for rate are counted by the limiter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.config import RateLimit
from gateway.correlation import Correlator, Group
from gateway.ratelimit import Charge, RateLimiter

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class GatewayMetrics:
    """The gateway's metrics, in the given registry (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        self.connections_opened = counter(
            "gpux_gateway_connections_opened", "Websocket connections accepted")
        self.connections_refused = counter(
            "gpux_gateway_connections_refused", "Websocket connections refused (over a limit)")
        self.connections = gauge("gpux_gateway_connections", "Websocket connections open")
        self.frames_in = counter("gpux_gateway_frames_in", "Frames received from clients")
        self.frames_out = counter(
            "gpux_gateway_frames_out", "Frames written to clients (one per connection)")
        self.request_seconds = Histogram(
            "gpux_gateway_order_ack_seconds",
            "From a request's frame to the engine's answer reaching the gateway",
            ["op"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.limits_bit = counter(
            "gpux_gateway_connection_limits", "Connections refused or closed by a limit, by "
            "limit (gateway.admission names)", ["limit"])
        self.rate_limited = counter(
            "gpux_gateway_rate_limited", "Requests refused for a rate limit, by bucket kind",
            ["bucket"])
        self.requests_refused = gauge(
            "gpux_gateway_requests_refused", "Requests refused for any reason")
        self.commands_queued = gauge("gpux_gateway_command_queue", "Submissions not yet sent")
        self.slow_consumers_dropped = gauge(
            "gpux_gateway_slow_consumers_dropped", "Connections dropped as slow consumers")
        self.event_seq = gauge("gpux_gateway_event_seq", "Seq of the last event applied")
        self.events_repeated = gauge(
            "gpux_gateway_events_repeated", "Events read again at a seq already applied (an "
            "engine's aborted transaction written again), checked and dropped")

    def watch(self, connections: Callable[[], int], refused: Callable[[], int],
              queued: Callable[[], int], slow_dropped: Callable[[], int],
              event_seq: Callable[[], int], events_repeated: Callable[[], int]) -> None:
        """Read the gauges from the service's own state when scraped."""
        self.connections.set_function(connections)
        self.requests_refused.set_function(refused)
        self.commands_queued.set_function(queued)
        self.slow_consumers_dropped.set_function(slow_dropped)
        self.event_seq.set_function(event_seq)
        self.events_repeated.set_function(events_repeated)


class TimedCorrelator(Correlator):
    """A correlator that observes each completed request's latency."""

    # Set right after construction (a slots dataclass takes no extra __init__ arguments).
    __slots__ = ("metrics", "timeout_ns")
    metrics: GatewayMetrics
    timeout_ns: int

    def on_event(self, event: Any) -> list[Group]:
        completed = super().on_event(event)
        if completed:
            now_ns = time.monotonic_ns()
            for group in completed:
                # A group's deadline is its arrival plus the request timeout.
                started_ns = group.deadline_ns - self.timeout_ns
                self.metrics.request_seconds.labels(group.op).observe(
                    (now_ns - started_ns) / 1e9)
        return completed


def timed_correlator(metrics: GatewayMetrics, timeout_ms: int) -> TimedCorrelator:
    correlator = TimedCorrelator()
    correlator.metrics = metrics
    correlator.timeout_ns = timeout_ms * 1_000_000
    return correlator


class CountingRateLimiter(RateLimiter):
    """A rate limiter that counts its refusals by the kind of bucket that refused."""

    def __init__(self, ip_limit: RateLimit, metrics: GatewayMetrics) -> None:
        super().__init__(ip_limit)
        self.metrics = metrics

    def charge_both(
        self, outer: tuple[str, RateLimit], inner: tuple[str, RateLimit], cost: int, now_ns: int
    ) -> Charge:
        charge = super().charge_both(outer, inner, cost, now_ns)
        if charge.retry_after_ms:
            self.metrics.rate_limited.labels(charge.bucket.split(":", 1)[0]).inc()
        return charge
