"""The asyncio side of the SDK: one websocket to a gateway, the futures that wait for
replies, timeouts, reconnects and the queues of subscriptions. Every protocol decision
(request ids, which reply answers which request, where a feed message goes, when a book
resyncs) is `sdk.session.Session`'s; this module only does what it says.

When the connection drops, the connection reconnects with backoff (at most
`reconnect_attempts_max` times), logs in again and resubscribes; requests in flight fail
with `ConnectionLost`.

Cancellation: every coroutine here may be cancelled; a cancelled request's reply is dropped
when it comes. `close` cancels the background tasks (reconnect, a book's resync).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sdk.book import LocalBook
from sdk.errors import ClientError, ConnectionLost, RequestFailed, SubscriptionOverflow
from sdk.requests import (
    FeedKey,
    RequestMaker,
    build_request,
    encode_request,
    subscribe_request,
)
from sdk.session import (
    LOGIN_ATTEMPTS_MAX,
    Answered,
    Delivered,
    Effect,
    Note,
    Refused,
    Send,
    Session,
    login_retry_ms,
)
from sdk.signing import Credentials
from wsapi.messages import Heartbeat, Hello, LoginResult, Notice, Reply
from wsapi.requests import AnyRequest, CancelOnDisconnect, Channel

log = logging.getLogger("gpux.sdk")

FrameHook = Callable[[Literal["send", "recv"], str], None]


class Subscription:
    """A bounded queue of one feed's messages; iterate it with `async for`. `instrument` is
    the feed's key: an instrument, an `IndexClass` for one class's index, or None."""

    def __init__(self, channel: Channel, instrument: FeedKey, size_max: int) -> None:
        self.channel = channel
        self.instrument = instrument
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size_max)
        self.overflowed = False

    def _put(self, message: Any) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self, timeout_s: float | None = None) -> Any:
        if self.overflowed:
            raise SubscriptionOverflow(f"{self.channel} {self.instrument or ''}: queue full")
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        return await self.get()


class Connection:
    """Keep one connection to a gateway open and act on what the session decides; the
    typed requests are `sdk.client.Client`'s."""

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        cancel_on_disconnect: CancelOnDisconnect = "off",
        reconnect: bool = True,
        reconnect_attempts_max: int = 20,
        reconnect_backoff_max_s: float = 5.0,
        request_timeout_s: float = 15.0,
        subscription_queue_max: int = 10_000,
        notices_kept_max: int = 100,
        frame_bytes_max: int = 16 * 1024 * 1024,
        on_frame: FrameHook | None = None,
        local_address: tuple[str, int] | None = None,
    ) -> None:
        if reconnect_attempts_max < 0 or request_timeout_s <= 0 or subscription_queue_max < 1:
            raise ValueError("bounds must be positive")
        self.url = url
        self.credentials = credentials
        self.cancel_on_disconnect = cancel_on_disconnect
        self.reconnect = reconnect
        self.reconnect_attempts_max = reconnect_attempts_max
        self.reconnect_backoff_max_s = reconnect_backoff_max_s
        self.request_timeout_s = request_timeout_s
        self.subscription_queue_max = subscription_queue_max
        self.frame_bytes_max = frame_bytes_max
        self.on_frame = on_frame
        self.local_address = local_address
        self.session: Session[asyncio.Future[Reply], Subscription] = Session(
            notices_kept_max=notices_kept_max)
        self.login: LoginResult | None = None
        self.reconnects = 0
        self.frames_undecodable = 0
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- connection ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, read the server's hello and log in when the client has credentials."""
        self._closing = False
        await self._open()

    async def close(self) -> None:
        """Close the connection for good; pending requests fail with ConnectionLost."""
        self._closing = True
        for task in (self._reconnector, *self._tasks):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_pending()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def hello(self) -> Hello | None:
        """The hello of the current (or last) connection."""
        return self.session.hello

    @property
    def last_heartbeat(self) -> Heartbeat | None:
        return self.session.last_heartbeat

    @property
    def notices(self) -> deque[Notice]:
        """The latest notices, oldest first (`notices_kept_max` of them)."""
        return self.session.notices

    @property
    def books(self) -> dict[str, LocalBook]:
        """The books `watch_book` keeps, by instrument."""
        return self.session.books

    async def _open(self) -> None:
        options: dict[str, Any] = {}
        if self.local_address is not None:
            options["local_addr"] = self.local_address
        ws = await websockets.connect(self.url, compression=None, max_size=self.frame_bytes_max,
                                      open_timeout=10, close_timeout=2, **options)
        try:
            received = await asyncio.wait_for(ws.recv(), self.request_timeout_s)
            first = received if isinstance(received, str) else received.decode()
            self._hook("recv", first)
            hello = self.session.greet(first)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="gpux-sdk-reader")
        try:
            if self.credentials is not None:
                self.login = await self._login(self.credentials, hello)
        except BaseException:
            self._ws = None  # so the reader's exit does not start a reconnect of its own
            await ws.close()
            raise
        await self._resubscribe()
        self._connected.set()

    async def _resubscribe(self) -> None:
        """Subscribe again to everything subscribed before a reconnect."""
        for channel, instrument in self.session.resubscriptions():
            try:
                await self._request_now(subscribe_request(channel, instrument))
            except RequestFailed as error:
                log.warning("could not resubscribe to %s %s: %s", channel, instrument, error)

    async def _login(self, credentials: Credentials, hello: Hello) -> LoginResult:
        """Log in, waiting out a rate limit as `sdk.session.login_retry_ms` says."""
        for attempt in range(1, LOGIN_ATTEMPTS_MAX + 1):
            try:
                reply = await self._request_now(self._login_request(credentials, hello))
                return msgspec.convert(reply.result, LoginResult)
            except RequestFailed as error:
                retry_ms = login_retry_ms(error.reply, attempt)
                if retry_ms is None:
                    raise
                await asyncio.sleep(retry_ms / 1000)
        raise AssertionError("unreachable")

    def _login_request(self, credentials: Credentials, hello: Hello) -> RequestMaker:
        timestamp_ms = time.time_ns() // 1_000_000
        return lambda req_id: credentials.login_request(
            hello.nonce, timestamp_ms, req_id=req_id,
            cancel_on_disconnect=self.cancel_on_disconnect)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                try:
                    text = frame if isinstance(frame, str) else frame.decode()
                    self._hook("recv", text)
                    self._dispatch(text)
                except (msgspec.DecodeError, UnicodeDecodeError) as error:
                    # One bad frame must not end the reader and every subscription with it.
                    self.frames_undecodable += 1
                    log.warning("ignored a frame the client cannot decode: %s: %.200r",
                                error, frame)
        except ConnectionClosed:
            pass
        finally:
            self._lost(ws)

    def _lost(self, ws: ClientConnection) -> None:
        if self._ws is not ws:
            return
        self._connected.clear()
        self._ws = None
        self._fail_pending()
        if self.reconnect and not self._closing:
            self._reconnector = asyncio.create_task(self._reconnect(), name="gpux-sdk-reconnect")

    async def _reconnect(self) -> None:
        delay_s = 0.05
        for attempt in range(1, self.reconnect_attempts_max + 1):
            try:
                await self._open()
                self.reconnects += 1
                log.info("reconnected to %s (attempt %d)", self.url, attempt)
                return
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError,
                    ClientError) as error:
                log.info("reconnect attempt %d failed: %s", attempt, error)
                if self._ws is not None:
                    await self._ws.close()
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.reconnect_backoff_max_s)
        log.error("gave up reconnecting to %s after %d attempts", self.url,
                  self.reconnect_attempts_max)

    def _fail_pending(self) -> None:
        for future in self.session.connection_lost():
            if not future.done():
                future.set_exception(ConnectionLost("the connection dropped before the reply"))

    def _hook(self, direction: Literal["send", "recv"], text: str) -> None:
        if self.on_frame is not None:
            self.on_frame(direction, text)

    # -- incoming --------------------------------------------------------------------------

    def _dispatch(self, text: str) -> None:
        """Act on one frame as the session decides (raise msgspec.DecodeError if not JSON)."""
        for effect in self.session.receive(text):
            self._act(effect)

    def _act(self, effect: Effect[asyncio.Future[Reply], Subscription]) -> None:
        if isinstance(effect, Delivered):
            for subscription in effect.subscribers:
                subscription._put(effect.message)
        elif isinstance(effect, Answered):
            if not effect.waiter.done():
                effect.waiter.set_result(effect.reply)
        elif isinstance(effect, Refused):
            if not effect.waiter.done():
                effect.waiter.set_exception(RequestFailed(effect.reply))
        elif isinstance(effect, Send):
            self._spawn(self._send_all(effect.requests))
        elif isinstance(effect, Note):
            log.warning("%s", effect.text)

    async def _send_all(self, requests: Sequence[AnyRequest]) -> None:
        """Write the session's own requests in order; a lost connection drops them (the
        reconnect subscribes again)."""
        ws = self._ws
        if ws is None:
            return
        try:
            for request in requests:
                await self._write(ws, request)
        except ConnectionClosed:
            pass

    async def _write(self, ws: ClientConnection, request: AnyRequest) -> None:
        text = encode_request(request)
        self._hook("send", text)
        await ws.send(text)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests --------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> Reply:
        """Send request `op` with `fields` (None ones left out) and return its reply; raise
        RequestFailed on status "error", ValueError for an op the API does not have and
        TypeError for a field the request does not have."""
        return await self._call(lambda req_id: build_request(op, req_id, fields))

    async def _call(self, make: RequestMaker) -> Reply:
        """Send a request once connected (waiting up to `request_timeout_s` for that)."""
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), self.request_timeout_s)
            except TimeoutError:
                raise ConnectionLost(f"not connected to {self.url}") from None
        return await self._request_now(make)

    async def _request_now(self, make: RequestMaker) -> Reply:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        request = self.session.begin(make, future)
        try:
            await self._write(ws, request)
            return await asyncio.wait_for(future, self.request_timeout_s)
        except ConnectionClosed as error:
            raise ConnectionLost(str(error)) from error
        finally:
            self.session.forget(request.req_id)
