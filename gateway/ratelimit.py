"""Token buckets per API key and per IP; pure: the caller passes monotonic time in ns.

A request costs one token per engine command it carries (a batch of 5 costs 5), at least
one; a strip one per leg (wsapi.requests.request_cost). A bucket never charges more than it
holds when full, so a request costing more (a strip of 168 legs, a trader's burst being 50)
waits for a full bucket and empties it. A refused request is told how long until enough
tokens have refilled. Buckets idle long enough to be full again are dropped, so memory is
bounded by the active clients.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Final

import msgspec

from gateway.config import RateLimit

NS_PER_S: Final = 1_000_000_000


class TokenBucket:
    """Hold up to `burst` tokens, refilled continuously at `per_second`."""

    __slots__ = ("limit", "tokens", "updated_ns")

    def __init__(self, limit: RateLimit, now_ns: int) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated_ns = now_ns

    def take(self, cost: int, now_ns: int) -> int:
        """Take `cost` tokens (a full bucket at most) and return 0, or take none and return
        the ms until possible."""
        limit = self.limit
        elapsed_ns = now_ns - self.updated_ns
        if elapsed_ns > 0:  # refill; time never runs back
            tokens = self.tokens + elapsed_ns * limit.per_second / NS_PER_S
            self.tokens = tokens if tokens < limit.burst else float(limit.burst)
            self.updated_ns = now_ns
        if cost > limit.burst:
            cost = limit.burst
        if cost <= self.tokens:
            self.tokens -= cost
            return 0
        missing = cost - self.tokens
        return max(1, math.ceil(missing * 1000 / self.limit.per_second))

    def refund(self, cost: int) -> None:
        """Give back what `take(cost)` took."""
        self.tokens += min(cost, self.limit.burst)

    def remaining(self) -> int:
        return int(self.tokens)

    def full_at_ns(self) -> int:
        missing = self.limit.burst - self.tokens
        return self.updated_ns + int(missing * NS_PER_S / self.limit.per_second)


class Charge(msgspec.Struct, frozen=True, gc=False):
    """The outcome of charging a request: refused when `retry_after_ms` > 0. (A msgspec
    Struct: one is made per request, and a frozen dataclass costs several times more.)"""

    bucket: str
    remaining: int
    burst: int
    per_second: float
    retry_after_ms: int


class RateLimiter:
    """Keep the buckets of keys and IPs; at most `buckets_max` of them, least recent dropped."""

    def __init__(self, ip_limit: RateLimit, buckets_max: int = 100_000) -> None:
        if buckets_max < 1:
            raise ValueError("buckets_max must be >= 1")
        self.ip_limit = ip_limit
        self.buckets_max = buckets_max
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def charge(
        self, *, ip: str, principal: str | None, limit: RateLimit, cost: int, now_ns: int
    ) -> Charge:
        """Charge the IP bucket and the principal's (or the anonymous IP's) bucket."""
        ip_name, name = self.bucket_names(ip, principal)
        return self.charge_both((ip_name, self.ip_limit), (name, limit), cost, now_ns)

    @staticmethod
    def bucket_names(ip: str, principal: str | None) -> tuple[str, str]:
        """The names of the buckets `charge` takes from (a caller may keep them)."""
        return f"ip:{ip}", f"key:{principal}" if principal is not None else f"anon:{ip}"

    def charge_login(
        self, *, ip: str, key: str, ip_limit: RateLimit, key_limit: RateLimit, now_ns: int
    ) -> Charge:
        """Charge one login attempt to the login buckets of its IP and of its key, which
        nothing else drains."""
        return self.charge_both((f"login_ip:{ip}", ip_limit), (f"login_key:{key}", key_limit),
                                1, now_ns)

    def charge_both(
        self, outer: tuple[str, RateLimit], inner: tuple[str, RateLimit], cost: int, now_ns: int
    ) -> Charge:
        """Take `cost` from both buckets, or from neither; name the one that refused."""
        outer_bucket = self._bucket(*outer, now_ns)
        name, limit = inner
        bucket = self._bucket(name, limit, now_ns)
        wait_ms = outer_bucket.take(cost, now_ns)
        if wait_ms == 0:
            wait_ms = bucket.take(cost, now_ns)
            if wait_ms:
                outer_bucket.refund(cost)  # the request is refused as a whole
        else:
            name = outer[0]
            bucket = outer_bucket
        return Charge(bucket=name, remaining=bucket.remaining(), burst=bucket.limit.burst,
                      per_second=bucket.limit.per_second, retry_after_ms=wait_ms)

    def _bucket(self, name: str, limit: RateLimit, now_ns: int) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None or (bucket.limit is not limit and bucket.limit != limit):
            bucket = TokenBucket(limit, now_ns)
            self._buckets[name] = bucket
            while len(self._buckets) > self.buckets_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
        return bucket

    def prune(self, now_ns: int) -> int:
        """Drop buckets that are full again (they would be recreated full); return how many."""
        idle = [name for name, bucket in self._buckets.items() if bucket.full_at_ns() <= now_ns]
        for name in idle:
            del self._buckets[name]
        return len(idle)
