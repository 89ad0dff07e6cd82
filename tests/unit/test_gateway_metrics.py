"""Gateway metrics: a completed request's latency lands in the histogram under its op, and
rate-limit refusals are counted by the kind of bucket that refused."""

from __future__ import annotations

import time

from gateway.config import RateLimit
from gateway.correlation import Group, PendingOp
from gateway.metrics import CountingRateLimiter, GatewayMetrics, timed_correlator
from protocol import OrderAccepted

TIMEOUT_MS = 10_000


def sample(metrics: GatewayMetrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_completed_order_is_timed_from_its_arrival() -> None:
    metrics = GatewayMetrics()
    correlator = timed_correlator(metrics, TIMEOUT_MS)
    arrived_ns = time.monotonic_ns() - 3_000_000  # arrived 3 ms ago
    group = Group(conn_id=1, req_id=1, op="new_order",
                  deadline_ns=arrived_ns + TIMEOUT_MS * 1_000_000, outcomes=[None], waiting=1)
    correlator.register(group, [PendingOp(group=group, index=0, op="new_order", account="a",
                                          ts=5, client_order_id="x")])
    done = correlator.on_event(OrderAccepted(
        seq=1, ts=5, account="a", client_order_id="x", order_id="1", instrument="I",
        side="buy", order_type="limit", price="1", quantity=1, time_in_force="gtc",
        post_only=False, stp="cancel_newest"))
    assert done == [group]
    labels = {"op": "new_order"}
    assert sample(metrics, "gpux_gateway_order_ack_seconds_count", labels) == 1
    assert sample(metrics, "gpux_gateway_order_ack_seconds_sum", labels) >= 0.003
    assert sample(metrics, "gpux_gateway_order_ack_seconds_bucket",
                  {"op": "new_order", "le": "0.002"}) == 0


def test_refusals_are_counted_by_the_bucket_that_refused() -> None:
    metrics = GatewayMetrics()
    limiter = CountingRateLimiter(RateLimit(per_second=1000, burst=1000), metrics)
    key_limit = RateLimit(per_second=1, burst=2)
    charges = [limiter.charge(ip="1.2.3.4", principal="k:a", limit=key_limit, cost=1, now_ns=0)
               for _ in range(5)]
    assert [bool(c.retry_after_ms) for c in charges] == [False, False, True, True, True]
    assert sample(metrics, "gpux_gateway_rate_limited_total", {"bucket": "key"}) == 3
    assert sample(metrics, "gpux_gateway_rate_limited_total", {"bucket": "ip"}) == 0
