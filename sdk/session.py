"""The SDK's protocol state machine: which reply answers which request, where a feed message
goes, and when a local book must be resynchronised; no I/O.

`Session` never awaits, reads no clock and holds no socket. The asyncio client
(`sdk.client.Client`) asks it for each request to send (`begin` numbers it and keeps its
waiter), feeds it every frame received (`receive`) and acts on what comes back, in order:

- `Answered(waiter, reply)`: the reply to a request; `Refused(waiter, reply)` when the
  gateway refused it (status "error");
- `Delivered(subscribers, message)`: a feed message for the subscribers of its feed;
- `Send(requests)`: requests the session made itself (a book's resync), to write in order;
- `Note(text)`: something worth a warning in the log.

Waiters and subscribers are the client's own objects (a future, a queue): the session keeps
them and hands them back, and never touches them.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from sdk.book import BookError, LocalBook
from sdk.errors import ClientError
from sdk.requests import (
    FeedKey,
    IndexClass,
    RequestMaker,
    subscribe_request,
    unsubscribe_request,
)
from wsapi.errors import RATE_LIMITED
from wsapi.messages import (
    BalancesMessage,
    BookMessage,
    CandlesMessage,
    DeliveriesMessage,
    FeedMessage,
    FillsMessage,
    Heartbeat,
    Hello,
    IndexMessage,
    Notice,
    OrdersMessage,
    QualityMessage,
    Reply,
    TickerMessage,
    TradesMessage,
    decode_message,
)
from wsapi.requests import AnyRequest, Channel

Waiter = TypeVar("Waiter")
Subscriber = TypeVar("Subscriber")
Feed = tuple[Channel, FeedKey]  # (channel, instrument, index class or None)

LOGIN_ATTEMPTS_MAX: Final = 5
LOGIN_RETRY_MS_DEFAULT: Final = 100
_INSTRUMENT_CHANNELS: Final[dict[type[FeedMessage], Channel]] = {
    BookMessage: "book", TradesMessage: "trades", TickerMessage: "ticker",
    CandlesMessage: "candles",
}
_ACCOUNT_CHANNELS: Final[dict[type[FeedMessage], Channel]] = {
    OrdersMessage: "orders", FillsMessage: "fills", BalancesMessage: "balances",
    DeliveriesMessage: "deliveries",
}


@dataclass(frozen=True, slots=True)
class Answered(Generic[Waiter]):
    waiter: Waiter
    reply: Reply


@dataclass(frozen=True, slots=True)
class Refused(Generic[Waiter]):
    waiter: Waiter
    reply: Reply


@dataclass(frozen=True, slots=True)
class Delivered(Generic[Subscriber]):
    subscribers: tuple[Subscriber, ...]
    message: FeedMessage


@dataclass(frozen=True, slots=True)
class Send:
    requests: tuple[AnyRequest, ...]


@dataclass(frozen=True, slots=True)
class Note:
    text: str


Effect = Answered[Waiter] | Refused[Waiter] | Delivered[Subscriber] | Send | Note


def login_retry_ms(reply: Reply, attempt: int) -> int | None:
    """Return how long to wait before login attempt `attempt + 1` after `reply` refused
    attempt `attempt` (from 1), or None to give up: only a rate limit is waited out, and
    only a few times (a refused login spends no nonce)."""
    error = reply.error
    if error is None or error.code != RATE_LIMITED or attempt >= LOGIN_ATTEMPTS_MAX:
        return None
    return error.retry_after_ms or LOGIN_RETRY_MS_DEFAULT


class Session(Generic[Waiter, Subscriber]):
    """Hold request ids, the requests awaiting replies, the feeds' subscribers and the books."""

    def __init__(self, *, notices_kept_max: int = 100) -> None:
        if notices_kept_max < 0:
            raise ValueError("notices_kept_max must be >= 0")
        self.hello: Hello | None = None
        self.last_heartbeat: Heartbeat | None = None
        self.notices: deque[Notice] = deque(maxlen=notices_kept_max)
        self.books: dict[str, LocalBook] = {}
        self._req_ids = itertools.count(1)
        # req_id -> what waits for its reply; None for the session's own requests
        self._pending: dict[int, Waiter | None] = {}
        self._feeds: dict[Feed, list[Subscriber]] = {}
        self._resyncing: set[str] = set()

    # -- requests --------------------------------------------------------------------------

    def begin(self, make: RequestMaker, waiter: Waiter) -> AnyRequest:
        """Number a request, note `waiter` as waiting for its reply, and return it to send."""
        return self._begin(make, waiter)

    def forget(self, req_id: int) -> None:
        """Stop waiting for a reply (the request timed out, was cancelled or was answered)."""
        self._pending.pop(req_id, None)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def connection_lost(self) -> list[Waiter]:
        """Forget every request in flight; return their waiters, whose replies will not come."""
        pending, self._pending = self._pending, {}
        return [waiter for waiter in pending.values() if waiter is not None]

    def _begin(self, make: RequestMaker, waiter: Waiter | None) -> AnyRequest:
        req_id = next(self._req_ids)
        request = make(req_id)
        if request.req_id != req_id:
            raise ValueError(f"a request made for req_id {req_id} carries {request.req_id}")
        self._pending[req_id] = waiter
        return request

    # -- frames ----------------------------------------------------------------------------

    def greet(self, text: str | bytes) -> Hello:
        """Read the first frame of a connection, which must be the gateway's hello."""
        hello = decode_message(text)
        if not isinstance(hello, Hello):
            raise ClientError(f"expected hello, got {type(hello).__name__}")
        self.hello = hello
        return hello

    def receive(self, text: str | bytes) -> list[Effect[Waiter, Subscriber]]:
        """Take one frame from the gateway; return what to do about it.

        Raise msgspec.DecodeError for a frame that is not a server message (the caller skips
        it and reads on). A message of a type unknown here, and a reply no one waits for
        (its request timed out or was cancelled), are ignored.
        """
        message = decode_message(text)
        if isinstance(message, Reply):
            return self._reply(message)
        if isinstance(message, BookMessage):
            return [*self._on_book(message), *self._deliver(message)]
        if isinstance(message, (TradesMessage, TickerMessage, CandlesMessage, OrdersMessage,
                                FillsMessage, BalancesMessage, DeliveriesMessage,
                                IndexMessage, QualityMessage)):
            return self._deliver(message)
        if isinstance(message, Heartbeat):
            self.last_heartbeat = message
        elif isinstance(message, Notice):
            self.notices.append(message)
        return []

    def _reply(self, reply: Reply) -> list[Effect[Waiter, Subscriber]]:
        if reply.req_id is None or reply.req_id not in self._pending:
            return []
        waiter = self._pending.pop(reply.req_id)
        if waiter is None:
            if reply.status != "error":
                return []
            return [Note(f"the gateway refused {reply.op}: "
                         f"{reply.error.code if reply.error else 'error'}")]
        if reply.status == "error":
            return [Refused(waiter, reply)]
        return [Answered(waiter, reply)]

    def _deliver(self, message: FeedMessage) -> list[Effect[Waiter, Subscriber]]:
        subscribers = self._feeds.get(feed_of(message))
        return [Delivered(tuple(subscribers), message)] if subscribers else []

    # -- books -----------------------------------------------------------------------------

    def watch_book(self, instrument: str) -> tuple[LocalBook, bool]:
        """Return the local book of `instrument` and whether it is new (to subscribe to)."""
        book = self.books.get(instrument)
        if book is not None:
            return book, False
        book = self.books[instrument] = LocalBook(instrument)
        return book, True

    def _on_book(self, message: BookMessage) -> list[Effect[Waiter, Subscriber]]:
        book = self.books.get(message.instrument)
        if book is None:
            return []
        if message.kind == "update" and not book.synced:
            return []  # a resync is on its way; wait for its snapshot
        try:
            book.apply(message)
        except BookError as error:
            return self._resync(book, str(error))
        self._resyncing.discard(message.instrument)
        return []

    def _resync(self, book: LocalBook, reason: str) -> list[Effect[Waiter, Subscriber]]:
        """Decide a book can no longer be trusted: subscribe again for a fresh snapshot, once
        until that snapshot comes."""
        instrument = book.instrument
        if instrument in self._resyncing:
            return []
        self._resyncing.add(instrument)
        book.resyncs += 1
        unsubscribe = self._begin(unsubscribe_request("book", instrument), None)
        subscribe = self._begin(subscribe_request("book", instrument), None)
        return [Note(f"book {instrument}: {reason}; resynchronising"),
                Send((unsubscribe, subscribe))]

    # -- feeds -----------------------------------------------------------------------------

    def subscribe(self, channel: Channel, instrument: FeedKey, subscriber: Subscriber) -> bool:
        """Add a subscriber to a feed; return whether the feed is new (to subscribe to)."""
        subscribers = self._feeds.setdefault((channel, instrument), [])
        subscribers.append(subscriber)
        return len(subscribers) == 1

    def abandon(self, channel: Channel, instrument: FeedKey) -> None:
        """Forget a feed whose subscription the gateway refused, with its subscribers."""
        self._feeds.pop((channel, instrument), None)

    def unsubscribe(
        self, channel: Channel, instrument: FeedKey, subscriber: Subscriber
    ) -> bool:
        """Remove a subscriber; return whether the feed has none left (to unsubscribe from)."""
        feed = (channel, instrument)
        subscribers = self._feeds.get(feed, [])
        if subscriber in subscribers:
            subscribers.remove(subscriber)
        if subscribers:
            return False
        self._feeds.pop(feed, None)
        return True

    def resubscriptions(self) -> list[Feed]:
        """Return the feeds to subscribe to again on a new connection: every feed with
        subscribers, then every book watched; the books wait for a fresh snapshot."""
        for book in self.books.values():
            book.reset()
        return [*self._feeds, *(("book", instrument) for instrument in self.books)]


def feed_of(message: FeedMessage) -> Feed:
    """Return the feed a message belongs to."""
    if isinstance(message, (OrdersMessage, FillsMessage, BalancesMessage, DeliveriesMessage)):
        return _ACCOUNT_CHANNELS[type(message)], None
    if isinstance(message, QualityMessage):
        return "quality", None
    if isinstance(message, IndexMessage):
        if message.gpu is None or message.region is None:
            return "index", None
        return "index", IndexClass(message.gpu, message.region)
    return _INSTRUMENT_CHANNELS[type(message)], message.instrument
