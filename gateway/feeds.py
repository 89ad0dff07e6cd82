"""Subscriptions: who reads which feed, and the snapshot a new reader gets first.

A feed is a (channel, key) pair: a public channel keyed by instrument, a private one
(`orders`, `fills`, `balances`, `deliveries`) keyed by the session's account, or `index`
keyed by a GPU class and region (gateway.index.class_key) or by `ALL`, or `quality`, one feed
keyed by `gateway.quality.ALL`. Pure, like the core.
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.index import ALL, IndexBoard, class_key, gpu_class_of
from gateway.messages import encode
from gateway.projection import Projection
from gateway.quality import ALL as QUALITY_ALL
from gateway.quality import QualityBoard
from gateway.session import Session
from wsapi.errors import (
    INVALID_REQUEST,
    SUBSCRIPTION_LIMIT,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNKNOWN_INSTRUMENT,
    RequestError,
)
from wsapi.messages import DeliveriesMessage, FillsMessage, OrdersMessage
from wsapi.requests import (
    INDEX_CHANNEL,
    PRIVATE_CHANNELS,
    QUALITY_CHANNEL,
    Subscribe,
    Unsubscribe,
)

Feed = tuple[str, str]  # (channel, instrument or account)


class Feeds:
    """Hold the readers of every feed; check and apply (un)subscriptions."""

    def __init__(self, config: GatewayConfig, projection: Projection, index: IndexBoard,
                 quality: QualityBoard | None = None, *, quality_served: bool = False) -> None:
        self.config = config
        self.projection = projection
        self.index = index
        self.quality = quality or QualityBoard(config.quality_hours_kept_max)
        self.quality_served = quality_served
        self.subscribers: dict[Feed, set[int]] = {}

    def feed_of(self, session: Session, request: Subscribe | Unsubscribe) -> Feed:
        """The feed a request names; RequestError says what is wrong with it."""
        channel = request.channel
        if channel == INDEX_CHANNEL:
            return self._index_feed(request)
        if channel == QUALITY_CHANNEL:
            return self._quality_feed(request)
        if request.gpu is not None or request.region is not None:
            field = "$.gpu" if request.gpu is not None else "$.region"
            raise RequestError(INVALID_REQUEST, f"the {channel} channel takes no gpu or region",
                               field=field)
        if channel in PRIVATE_CHANNELS:
            if session.principal is None:
                raise RequestError(UNAUTHENTICATED, f"the {channel} channel needs a login")
            if request.instrument is not None:
                raise RequestError(INVALID_REQUEST, f"the {channel} channel takes no instrument",
                                   field="$.instrument")
            return channel, session.principal.account
        if request.instrument is None:
            raise RequestError(INVALID_REQUEST, f"the {channel} channel needs an instrument",
                               field="$.instrument")
        if request.instrument not in self.projection.instruments:
            raise RequestError(UNKNOWN_INSTRUMENT, f"no instrument {request.instrument!r}",
                               field="$.instrument")
        return channel, request.instrument

    def _index_feed(self, request: Subscribe | Unsubscribe) -> Feed:
        """The index of one class (`gpu` and `region`, of some instrument listed or some
        value published) or of every class (neither)."""
        if request.instrument is not None:
            raise RequestError(INVALID_REQUEST, "the index channel takes a gpu and a region, "
                               "not an instrument", field="$.instrument")
        gpu, region = request.gpu, request.region
        if gpu is None and region is None:
            return INDEX_CHANNEL, ALL
        if gpu is None or region is None:
            raise RequestError(INVALID_REQUEST, "the index channel takes both gpu and region "
                               "(one class) or neither (every class)",
                               field="$.gpu" if gpu is None else "$.region")
        gpu_class = (gpu, region)
        if gpu_class not in self.index.latest and not any(
                (i.spec.gpu, i.spec.region) == gpu_class
                for i in self.projection.instruments.values()):
            raise RequestError(INVALID_REQUEST, f"no instrument of gpu {gpu!r} in region "
                               f"{region!r} is listed", field="$.gpu")
        return INDEX_CHANNEL, class_key(gpu, region)

    def _quality_feed(self, request: Subscribe | Unsubscribe) -> Feed:
        """Every operator's record: the channel takes no instrument and no class."""
        if (request.instrument is not None or request.gpu is not None
                or request.region is not None):
            field = ("$.instrument" if request.instrument is not None
                     else "$.gpu" if request.gpu is not None else "$.region")
            raise RequestError(INVALID_REQUEST, "the quality channel takes no instrument, gpu "
                               "or region", field=field)
        if not self.quality_served:
            raise RequestError(UNAVAILABLE, "this gateway serves no delivery database")
        return QUALITY_CHANNEL, QUALITY_ALL

    def subscribe(self, session: Session, feed: Feed) -> bytes | None:
        """Add the session to the feed's readers; return the snapshot it gets first."""
        if (feed not in session.subscriptions
                and len(session.subscriptions) >= self.config.subscriptions_per_session_max):
            raise RequestError(SUBSCRIPTION_LIMIT, "too many subscriptions on this session")
        session.subscriptions.add(feed)
        self.subscribers.setdefault(feed, set()).add(session.conn_id)
        return self._snapshot(*feed)

    def unsubscribe(self, session: Session, feed: Feed) -> None:
        session.subscriptions.discard(feed)
        self._forget(session.conn_id, feed)

    def drop(self, session: Session) -> None:
        """Forget a closed session's subscriptions."""
        for feed in session.subscriptions:
            self._forget(session.conn_id, feed)

    def _forget(self, conn_id: int, feed: Feed) -> None:
        conns = self.subscribers.get(feed)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self.subscribers[feed]

    def _snapshot(self, channel: str, key: str) -> bytes | None:
        projection = self.projection
        if channel == "book":
            return encode(projection.book_snapshot(key))
        if channel == "trades":
            return encode(projection.trades_snapshot(key))
        if channel == "ticker":
            return encode(projection.ticker(key))
        if channel == "candles":
            return encode(projection.candles_snapshot(key, self.config.candles_snapshot_max))
        if channel == "orders":
            return encode(OrdersMessage(kind="snapshot", orders=projection.open_orders(key)))
        if channel == "balances":
            return encode(projection.balances_message(key))
        if channel == "fills":
            return encode(FillsMessage(kind="snapshot", fills=projection.recent_fills(key)))
        if channel == "deliveries":
            return encode(DeliveriesMessage(kind="snapshot",
                                            events=projection.recent_delivery_events(key)))
        if channel == INDEX_CHANNEL:
            return encode(self.index.snapshot(None if key == ALL else gpu_class_of(key)))
        if channel == QUALITY_CHANNEL:
            return encode(self.quality.snapshot())
        return None
