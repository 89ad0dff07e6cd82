"""Share what the Kafka adapter's modules need: config, error translation, bounded waits.

aiokafka ships no type information, so its names are typed Any in this package.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
)

from eventlog.errors import FencedError, LogError, LogTimeoutError, TransactionStateError
from eventlog.port import Isolation
from runtime.config import require_positive

__all__ = [
    "KafkaConfig",
    "bounded",
    "new_consumer",
    "retried",
    "start_consumer",
    "translated",
]

T = TypeVar("T")

_RETRIES_MAX = 100
_RETRY_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Say where the brokers are and bound every wait, batch and buffer of the clients."""

    bootstrap_servers: str
    client_id: str = "gpux"
    request_timeout_ms: int = 30_000
    start_timeout_ms: int = 60_000
    transaction_timeout_ms: int = 60_000
    topic_ready_timeout_ms: int = 30_000
    linger_ms: int = 0
    # How long a producer waits before retrying a refused request. Inside a transaction the
    # broker refuses a produce with NOT_ENOUGH_REPLICAS (its answer to old clients for
    # CONCURRENT_TRANSACTIONS, KIP-890) in ~4% of back-to-back transactions, and aiokafka's
    # default of 100 ms made the mean transaction 11 ms against a p50 of 5 ms (measured
    # with 1,000 transactions on an idle broker: 11.3 ms at 100 ms, 5.2 ms at 5 ms).
    producer_retry_backoff_ms: int = 5
    producer_batch_bytes_max: int = 512 << 10
    request_bytes_max: int = 1 << 20
    fetch_max_wait_ms: int = 100
    partition_fetch_bytes_max: int = 1 << 20
    send_batch_size_max: int = 100_000
    transaction_records_max: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one broker")
        require_positive(
            self, "request_timeout_ms", "start_timeout_ms", "transaction_timeout_ms",
            "topic_ready_timeout_ms", "producer_batch_bytes_max", "request_bytes_max",
            "fetch_max_wait_ms", "partition_fetch_bytes_max", "send_batch_size_max",
            "transaction_records_max", "producer_retry_backoff_ms",
        )
        if self.linger_ms < 0:
            raise ValueError("linger_ms must be >= 0")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise aiokafka's errors (and timeouts) as this package's errors."""
    try:
        yield
    except (ProducerFenced, InvalidProducerEpoch) as exc:
        raise FencedError(f"{action}: fenced by a newer producer ({exc})") from exc
    except IllegalOperation as exc:
        raise TransactionStateError(f"{action}: {exc}") from exc
    except (KafkaTimeoutError, TimeoutError) as exc:
        raise LogTimeoutError(f"{action}: timed out ({exc})") from exc
    except KafkaError as exc:
        raise LogError(f"{action}: {exc}", retriable=bool(exc.retriable)) from exc


async def bounded(awaitable: Awaitable[T], timeout_ms: int, action: str) -> T:
    """Await `awaitable` within `timeout_ms`, translating errors and the timeout."""
    with translated(action):
        return await asyncio.wait_for(awaitable, timeout_ms / 1000)


async def start_or_close(start: Awaitable[None], close: Callable[[], Awaitable[object]],
                         timeout_ms: int, action: str) -> None:
    """Await a client's `start` within `timeout_ms`; on any failure close the client, so a
    half-started one holds no connection, and raise."""
    try:
        await bounded(start, timeout_ms, action)
    except BaseException:
        await close()
        raise


async def retried(make: Callable[[], Awaitable[T]], timeout_ms: int, action: str) -> T:
    """Await `make()` again while it fails with a retriable error, within `timeout_ms`.

    For admin requests, which aiokafka does not retry: a broker that has just started
    answers COORDINATOR_NOT_AVAILABLE until its internal topics exist.
    """
    deadline_s = time.monotonic() + timeout_ms / 1000
    for _ in range(_RETRIES_MAX):
        remaining_ms = max(1, int((deadline_s - time.monotonic()) * 1000))
        try:
            return await bounded(make(), remaining_ms, action)
        except LogError as exc:
            if not exc.retriable or time.monotonic() + _RETRY_BACKOFF_S >= deadline_s:
                raise
        await asyncio.sleep(_RETRY_BACKOFF_S)
    raise LogTimeoutError(f"{action}: still failing after {_RETRIES_MAX} tries")


def new_consumer(
    config: KafkaConfig, *, group_id: str | None, isolation: Isolation
) -> AIOKafkaConsumer:
    """Return an unstarted aiokafka consumer that never auto-commits."""
    return AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id}-consumer",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        request_timeout_ms=config.request_timeout_ms,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        max_partition_fetch_bytes=config.partition_fetch_bytes_max,
    )


async def start_consumer(consumer: AIOKafkaConsumer, config: KafkaConfig) -> None:
    """Start `consumer` within the start timeout; stop it again if starting fails."""
    await start_or_close(consumer.start(), consumer.stop, config.start_timeout_ms,
                         "start consumer")
