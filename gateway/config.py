"""Configure the gateway: where it listens, what it allows, and the bound on every buffer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from eventlog.port import Isolation
from runtime.config import require_positive

# `delivery` is the venue's delivery service: it alone reports deliveries, and may do nothing
# that moves money or trades otherwise (wsapi.requests.DELIVERY_OPS).
ROLES: Final = ("trader", "operator", "market_maker", "admin", "delivery")
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `burst` tokens at most, refilled at `per_second` tokens per second."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")


def _default_role_limits() -> dict[str, RateLimit]:
    return {
        ANONYMOUS: RateLimit(per_second=5, burst=20),
        "trader": RateLimit(per_second=20, burst=50),
        "operator": RateLimit(per_second=20, burst=50),
        "market_maker": RateLimit(per_second=200, burst=500),
        "admin": RateLimit(per_second=100, burst=200),
        # one report per assignment, most of them just after each hour's delivery window
        "delivery": RateLimit(per_second=200, burst=1000),
    }


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Say where the gateway listens and bound everything a client can make it hold."""

    host: str = "127.0.0.1"
    port: int = 8765
    # Bind with SO_REUSEPORT, so several gateway processes share one port and the kernel
    # spreads new connections over them (each consumes the events on its own).
    reuse_port: bool = False
    topic_namespace: str = ""
    gateway_id: str = "gw"
    # A frame above this size closes the connection with 1009 (message too big).
    frame_bytes_max: int = 64 * 1024
    # Bytes buffered for one connection before it is dropped as a slow consumer.
    outbound_bytes_max: int = 4 * 1024 * 1024
    # Connections (gateway.admission): in all; per IP only as a backstop, since many traders
    # may share one behind a NAT; per IP before a login, the oldest closed to make room;
    # per account and per key once logged in.
    connections_max: int = 10_000
    connections_per_ip_max: int = 2_000
    anonymous_per_ip_max: int = 32
    anonymous_grace_ms: int = 2_000  # a connection this young is never closed for room
    connections_per_account_max: int = 64
    connections_per_key_max: int = 16
    # An anonymous connection that neither logs in nor subscribes by then is closed.
    login_deadline_ms: int = 5_000
    # Tokens per request are charged to the key (logged in) or to the IP (anonymous), and
    # every request from an IP is also charged to `ip_limit`. Logins are charged to buckets
    # of their own, per IP and per key, which no other traffic drains.
    role_limits: dict[str, RateLimit] = field(default_factory=_default_role_limits)
    ip_limit: RateLimit = RateLimit(per_second=500, burst=1000)
    login_ip_limit: RateLimit = RateLimit(per_second=10, burst=50)
    login_key_limit: RateLimit = RateLimit(per_second=2, burst=20)
    # Instruments per `instruments` reply at most (a cursor pages on).
    instruments_page_max: int = 500
    batch_size_max: int = 20
    mass_quote_size_max: int = 40
    pending_per_session_max: int = 500
    subscriptions_per_session_max: int = 200
    request_timeout_ms: int = 10_000
    # Orders a session tracks for cancel-on-disconnect (scope "session").
    session_orders_max: int = 10_000
    login_window_ms: int = 30_000
    # Used login nonces are kept this long (a login past its window is refused anyway),
    # pruned every `nonce_prune_interval_ms`.
    nonce_keep_ms: int = 24 * 3600 * 1000
    nonce_prune_interval_ms: int = 600_000
    eip712_chain_id: int = 1
    heartbeat_interval_ms: int = 5_000
    housekeeping_interval_ms: int = 100
    command_queue_max: int = 10_000
    send_batch_max: int = 1_000
    event_batch_max: int = 5_000
    # Live events are read before the engine commits them (acknowledgements do not wait for
    # the commit; a start catches up on committed events only); a copy of a seq already
    # applied, written again after an engine restart, is checked against the last
    # `event_check_window` seqs and dropped (gateway.sequencer). The engine bounds what one
    # crash can abort well inside it (EngineConfig.commit_events_max).
    events_isolation: Isolation = "read_uncommitted"
    event_check_window: int = 200_000
    candles_kept_max: int = 24 * 60
    candles_snapshot_max: int = 60
    trades_snapshot_max: int = 50
    fills_snapshot_max: int = 100  # an account's most recent fills, kept for its snapshot
    # An account's most recent delivery events, kept for its `deliveries` feed snapshot, and
    # its settled issues and assignments the `deliveries` request still lists.
    delivery_events_snapshot_max: int = 100
    deliveries_settled_kept_max: int = 1_000
    clock_interval_ms: int | None = None  # None: this gateway runs no clock
    key_cache_ttl_ms: int = 60_000
    # The GPU-hour price index (the `index` feed, GET /index): read from the index store in
    # this PostgreSQL every `index_poll_interval_ms`, `index_page_seqs_max` seqs of rows a
    # read at most; GET /index answers `index_history_max` values at most. None: no index.
    index_database_url: str | None = field(default=None, repr=False)
    index_poll_interval_ms: int = 1_000
    index_page_seqs_max: int = 1_000
    index_history_max: int = 1_440
    # Delivery (docs/delivery.md): the delivery service's PostgreSQL, where `register_node`,
    # `register_ssh_key` and `delivery_access` read and write, and whose reports the
    # `quality` feed and GET /quality follow, polled every `quality_poll_interval_ms`,
    # `quality_page_size` reports a read at most, the latest `quality_hours_kept_max` hours
    # kept. An account registers `ssh_keys_per_account_max` keys at most; `delivery_access`
    # lists `access_assignments_max` assignments at most, the latest windows first.
    # None: this gateway serves no delivery database.
    delivery_database_url: str | None = field(default=None, repr=False)
    quality_poll_interval_ms: int = 1_000
    quality_page_size: int = 1_000
    quality_hours_kept_max: int = 100_000
    ssh_keys_per_account_max: int = 10
    access_assignments_max: int = 200

    def __post_init__(self) -> None:
        require_positive(
            self, "frame_bytes_max", "outbound_bytes_max", "connections_max",
            "connections_per_ip_max", "anonymous_per_ip_max", "anonymous_grace_ms",
            "connections_per_account_max", "connections_per_key_max", "login_deadline_ms",
            "instruments_page_max", "batch_size_max", "mass_quote_size_max",
            "pending_per_session_max", "subscriptions_per_session_max", "request_timeout_ms",
            "session_orders_max", "login_window_ms", "nonce_keep_ms", "nonce_prune_interval_ms",
            "heartbeat_interval_ms", "housekeeping_interval_ms", "command_queue_max",
            "send_batch_max", "event_batch_max", "event_check_window", "candles_kept_max",
            "candles_snapshot_max",
            "trades_snapshot_max", "fills_snapshot_max", "delivery_events_snapshot_max",
            "deliveries_settled_kept_max", "key_cache_ttl_ms", "index_poll_interval_ms",
            "index_page_seqs_max", "index_history_max", "quality_poll_interval_ms",
            "quality_page_size", "quality_hours_kept_max", "ssh_keys_per_account_max",
            "access_assignments_max",
        )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.clock_interval_ms is not None and self.clock_interval_ms < 1:
            raise ValueError("clock_interval_ms must be >= 1 (or None for no clock)")
        missing = {ANONYMOUS, *ROLES} - set(self.role_limits)
        if missing:
            raise ValueError(f"role_limits lacks {sorted(missing)}")
        if not self.gateway_id or len(self.gateway_id) > 16:
            raise ValueError("gateway_id must be 1-16 characters")
