"""Token buckets refill over time, refuse with the wait until enough tokens, and charge
the IP and the key together."""

from __future__ import annotations

from gateway.config import RateLimit
from gateway.ratelimit import RateLimiter, TokenBucket

S = 1_000_000_000


def test_a_bucket_allows_its_burst_then_says_when_to_retry() -> None:
    bucket = TokenBucket(RateLimit(per_second=10, burst=5), now_ns=0)
    assert [bucket.take(1, 0) for _ in range(5)] == [0] * 5
    assert bucket.take(1, 0) == 100
    assert bucket.take(1, S // 10) == 0
    assert bucket.take(3, S // 10) == 300


def test_a_refused_request_costs_the_ip_nothing_and_keys_are_separate() -> None:
    limiter = RateLimiter(RateLimit(per_second=1, burst=3))
    key_limit = RateLimit(per_second=100, burst=100)
    charges = [limiter.charge(ip="1.2.3.4", principal="k1", limit=key_limit, cost=1, now_ns=0)
               for _ in range(4)]
    assert [c.retry_after_ms > 0 for c in charges] == [False, False, False, True]
    assert charges[-1].bucket == "ip:1.2.3.4"
    anonymous = RateLimit(per_second=1, burst=1)
    other = RateLimiter(RateLimit(per_second=100, burst=100))
    first = other.charge(ip="9.9.9.9", principal=None, limit=anonymous, cost=1, now_ns=0)
    second = other.charge(ip="9.9.9.9", principal=None, limit=anonymous, cost=1, now_ns=0)
    assert first.retry_after_ms == 0 and second.retry_after_ms == 1000
    assert second.bucket == "anon:9.9.9.9"
    keyed = other.charge(ip="9.9.9.9", principal="k2", limit=anonymous, cost=1, now_ns=0)
    assert keyed.retry_after_ms == 0 and keyed.remaining == 0


def test_idle_buckets_are_pruned() -> None:
    limiter = RateLimiter(RateLimit(per_second=10, burst=10))
    limiter.charge(ip="a", principal=None, limit=RateLimit(per_second=10, burst=10), cost=5,
                   now_ns=0)
    assert limiter.prune(now_ns=0) == 0
    assert limiter.prune(now_ns=10 * S) == 2


def test_a_request_costing_more_than_a_full_bucket_waits_for_a_full_one_and_empties_it() -> None:
    bucket = TokenBucket(RateLimit(per_second=10, burst=50), now_ns=0)
    assert bucket.take(10, 0) == 0
    assert bucket.take(168, 0) == 1000, "ready when the bucket is full again"
    assert bucket.take(168, S) == 0 and bucket.remaining() == 0
    limiter = RateLimiter(RateLimit(per_second=1, burst=1000))
    key = RateLimit(per_second=1, burst=5)
    charge = limiter.charge(ip="a", principal="k", limit=key, cost=168, now_ns=0)
    assert (charge.retry_after_ms, charge.remaining) == (0, 0)
    again = limiter.charge(ip="a", principal="k", limit=key, cost=168, now_ns=0)
    assert again.retry_after_ms == 5000
    rest = limiter.charge(ip="a", principal="k2", limit=RateLimit(per_second=1, burst=1000),
                          cost=1000 - 168, now_ns=0)
    assert rest.retry_after_ms == 0, "the refused strip's tokens went back to the IP"
