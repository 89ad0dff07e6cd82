"""An async client for the gpux websocket API, with typed results and automatic reconnect.

    async with Client(url, credentials=ApiKey(key_id, private_key)) as client:
        book = await client.watch_book("H100.eu.20250101T10")
        result = await client.new_order("H100.eu.20250101T10", "buy", 3, price="2.15")

Every request gets one reply; a refusal by the gateway (bad field, rate limit, no login)
raises `RequestFailed`, while the engine's business rejections come back as values
(`OrderResult.status == "rejected"` with the engine's `reason`). When the connection drops
the client reconnects with backoff, logs in again and resubscribes; requests in flight fail
with `ConnectionLost` and are safe to retry with the same `client_order_id`.

Cancellation: every coroutine here may be cancelled; a cancelled request's reply is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sdk.book import BookError, LocalBook
from sdk.signing import ApiKey, Credentials, Wallet
from wsapi.messages import (
    Balance,
    BalancesMessage,
    BookMessage,
    CandlesMessage,
    FillsMessage,
    Heartbeat,
    Hello,
    Instrument,
    LoginResult,
    MassQuoteResult,
    Notice,
    OrderReport,
    OrderResult,
    OrdersMessage,
    Reply,
    ServerTime,
    TickerMessage,
    TradesMessage,
    decode_message,
)

log = logging.getLogger("gpux.sdk")

Side = Literal["buy", "sell"]
Channel = Literal["book", "trades", "ticker", "candles", "orders", "fills", "balances"]
FrameHook = Callable[[Literal["send", "recv"], str], None]
_encoder = msgspec.json.Encoder()
LOGIN_ATTEMPTS_MAX = 5

__all__ = [
    "ApiKey", "Client", "ClientError", "ConnectionLost", "Quote", "RequestFailed",
    "Subscription", "SubscriptionOverflow", "Wallet", "amend_item", "cancel_item",
    "mass_cancel_item", "new_order_item",
]


class ClientError(Exception):
    """Base of the SDK's errors; `retriable` says whether the same call may succeed later."""

    retriable = False


class RequestFailed(ClientError):
    """The gateway refused a request (status "error"): see `code`, `field`, `retry_after_ms`."""

    def __init__(self, reply: Reply) -> None:
        error = reply.error
        self.code = error.code if error else "error"
        self.field = error.field if error else None
        self.retry_after_ms = error.retry_after_ms if error else None
        self.reply = reply
        self.retriable = self.retry_after_ms is not None
        message = error.message if error else "request failed"
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{reply.op}: {self.code}{where}: {message}")


class ConnectionLost(ClientError):
    """The connection dropped before the reply came; retry (client_order_id keeps it safe)."""

    retriable = True


class SubscriptionOverflow(ClientError):
    """The subscription's queue filled up because it was not read fast enough."""


@dataclass(frozen=True, slots=True)
class Quote:
    """One order of a mass quote (a limit gtc order)."""

    client_order_id: str
    side: Side
    price: str
    quantity: int
    post_only: bool = False


def new_order_item(
    instrument: str, side: Side, quantity: int, price: str | None = None, *,
    client_order_id: str | None = None, order_type: str | None = None,
    time_in_force: str | None = None, expire_at: int | None = None, post_only: bool = False,
    stp: str | None = None,
) -> dict[str, Any]:
    """Return a `new_order` item for `Client.batch` (and the fields of `Client.new_order`)."""
    return _clean({
        "op": "new_order", "client_order_id": client_order_id or _new_client_order_id(),
        "instrument": instrument, "side": side,
        "order_type": order_type or ("limit" if price is not None else "market"),
        "price": price, "quantity": quantity, "time_in_force": time_in_force,
        "expire_at": expire_at, "post_only": post_only or None, "stp": stp,
    })


def cancel_item(client_order_id: str) -> dict[str, Any]:
    return {"op": "cancel_order", "client_order_id": client_order_id}


def amend_item(
    client_order_id: str, new_price: str | None = None, new_quantity: int | None = None
) -> dict[str, Any]:
    return _clean({"op": "amend_order", "client_order_id": client_order_id,
                   "new_price": new_price, "new_quantity": new_quantity})


def mass_cancel_item(instrument: str | None = None) -> dict[str, Any]:
    return _clean({"op": "mass_cancel", "instrument": instrument})


class Subscription:
    """A bounded queue of one channel's messages; iterate it with `async for`."""

    def __init__(self, channel: str, instrument: str | None, size_max: int) -> None:
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


class Client:
    """Talk to one gateway; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        cancel_on_disconnect: Literal["off", "session", "account"] = "off",
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
        self.hello: Hello | None = None
        self.login: LoginResult | None = None
        self.last_heartbeat: Heartbeat | None = None
        self.notices: deque[Notice] = deque(maxlen=notices_kept_max)
        self.reconnects = 0
        self.frames_undecodable = 0
        self.books: dict[str, LocalBook] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._subscriptions: dict[tuple[str, str | None], list[Subscription]] = {}
        self._resyncing: set[str] = set()
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
            hello = decode_message(first)
            if not isinstance(hello, Hello):
                raise ClientError(f"expected hello, got {type(hello).__name__}")
        except BaseException:
            await ws.close()
            raise
        self.hello = hello
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="gpux-sdk-reader")
        try:
            if self.credentials is not None:
                self.login = await self._login(hello)
        except BaseException:
            self._ws = None  # so the reader's exit does not start a reconnect of its own
            await ws.close()
            raise
        await self._resubscribe()
        self._connected.set()

    async def _resubscribe(self) -> None:
        """Subscribe again to everything subscribed before a reconnect."""
        keys = [(channel, instrument) for channel, instrument in self._subscriptions]
        keys += [("book", instrument) for instrument in self.books]
        for book in self.books.values():
            book.reset()
        for channel, instrument in keys:
            try:
                await self._request_now("subscribe", _clean({"channel": channel,
                                                             "instrument": instrument}))
            except RequestFailed as error:
                log.warning("could not resubscribe to %s %s: %s", channel, instrument, error)

    async def _login(self, hello: Hello) -> LoginResult:
        """Log in, waiting out a rate limit a few times (a refused login spends no nonce)."""
        op = "login" if isinstance(self.credentials, ApiKey) else "login_wallet"
        for attempt in range(LOGIN_ATTEMPTS_MAX):
            try:
                reply = await self._request_now(op, self._login_fields(hello))
                return msgspec.convert(reply.result, LoginResult)
            except RequestFailed as error:
                if error.code != "rate_limited" or attempt + 1 == LOGIN_ATTEMPTS_MAX:
                    raise
                await asyncio.sleep((error.retry_after_ms or 100) / 1000)
        raise AssertionError("unreachable")

    def _login_fields(self, hello: Hello) -> dict[str, Any]:
        assert self.credentials is not None
        fields = self.credentials.login_fields(hello.nonce, time.time_ns() // 1_000_000)
        fields.pop("op")
        fields["cancel_on_disconnect"] = self.cancel_on_disconnect
        return fields

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
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("the connection dropped before the reply"))

    def _hook(self, direction: Literal["send", "recv"], text: str) -> None:
        if self.on_frame is not None:
            self.on_frame(direction, text)

    # -- incoming --------------------------------------------------------------------------

    def _dispatch(self, text: str) -> None:
        message = decode_message(text)
        if isinstance(message, Reply):
            future = self._pending.pop(message.req_id, None) if message.req_id is not None else None
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, BookMessage):
            self._on_book(message)
            self._deliver(("book", message.instrument), message)
        elif isinstance(message, (TradesMessage, TickerMessage, CandlesMessage)):
            channel = {TradesMessage: "trades", TickerMessage: "ticker",
                       CandlesMessage: "candles"}[type(message)]
            self._deliver((channel, message.instrument), message)
        elif isinstance(message, (OrdersMessage, FillsMessage, BalancesMessage)):
            channel = {OrdersMessage: "orders", FillsMessage: "fills",
                       BalancesMessage: "balances"}[type(message)]
            self._deliver((channel, None), message)
        elif isinstance(message, Heartbeat):
            self.last_heartbeat = message
        elif isinstance(message, Notice):
            self.notices.append(message)

    def _deliver(self, key: tuple[str, str | None], message: Any) -> None:
        for subscription in self._subscriptions.get(key, ()):
            subscription._put(message)

    def _on_book(self, message: BookMessage) -> None:
        book = self.books.get(message.instrument)
        if book is None:
            return
        if message.kind == "update" and not book.synced:
            return  # a resync is on its way; wait for its snapshot
        try:
            book.apply(message)
            self._resyncing.discard(message.instrument)
        except BookError as error:
            log.warning("book %s: %s; resynchronising", message.instrument, error)
            self._resync(book)

    def _resync(self, book: LocalBook) -> None:
        if book.instrument in self._resyncing:
            return
        self._resyncing.add(book.instrument)
        book.resyncs += 1

        async def resubscribe() -> None:
            await self.request("unsubscribe", channel="book", instrument=book.instrument)
            await self.request("subscribe", channel="book", instrument=book.instrument)

        self._spawn(resubscribe())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests --------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> Reply:
        """Send one request and return its reply; raise RequestFailed on status "error"."""
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), self.request_timeout_s)
            except TimeoutError:
                raise ConnectionLost(f"not connected to {self.url}") from None
        return await self._request_now(op, _clean(fields))

    async def _request_now(self, op: str, fields: dict[str, Any]) -> Reply:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        req_id = next(self._req_ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        text = _encoder.encode({"op": op, "req_id": req_id, **fields}).decode()
        try:
            self._hook("send", text)
            await ws.send(text)
            reply = await asyncio.wait_for(future, self.request_timeout_s)
        except ConnectionClosed as error:
            raise ConnectionLost(str(error)) from error
        finally:
            self._pending.pop(req_id, None)
        if reply.status == "error":
            raise RequestFailed(reply)
        return reply

    async def new_order(
        self, instrument: str, side: Side, quantity: int, price: str | None = None, *,
        client_order_id: str | None = None, order_type: str | None = None,
        time_in_force: str | None = None, expire_at: int | None = None,
        post_only: bool = False, stp: str | None = None,
    ) -> OrderResult:
        """Place an order: a limit order when `price` is given, else a market order."""
        fields = new_order_item(
            instrument, side, quantity, price, client_order_id=client_order_id,
            order_type=order_type, time_in_force=time_in_force, expire_at=expire_at,
            post_only=post_only, stp=stp)
        fields.pop("op")
        return _order_result(await self.request("new_order", **fields))

    async def cancel_order(self, client_order_id: str) -> OrderResult:
        return _order_result(await self.request("cancel_order", client_order_id=client_order_id))

    async def amend_order(
        self, client_order_id: str, new_price: str | None = None, new_quantity: int | None = None
    ) -> OrderResult:
        return _order_result(await self.request(
            "amend_order", client_order_id=client_order_id, new_price=new_price,
            new_quantity=new_quantity))

    async def mass_cancel(self, instrument: str | None = None) -> OrderResult:
        """Cancel every open order of the account (on one instrument); `canceled` counts them."""
        return _order_result(await self.request("mass_cancel", instrument=instrument))

    async def batch(self, orders: list[dict[str, Any]]) -> list[OrderResult]:
        """Send up to `hello.batch_size_max` order commands; each gets its own result."""
        reply = await self.request("batch", orders=orders)
        return msgspec.convert(reply.result["results"], list[OrderResult])

    async def mass_quote(self, instrument: str, quotes: list[Quote]) -> MassQuoteResult:
        """Replace the account's orders on `instrument` with `quotes`, in one request."""
        reply = await self.request("mass_quote", instrument=instrument, quotes=[
            _clean({"client_order_id": q.client_order_id, "side": q.side, "price": q.price,
                    "quantity": q.quantity, "post_only": q.post_only or None})
            for q in quotes])
        return msgspec.convert(reply.result, MassQuoteResult)

    async def cancel_all_after(self, timeout_s: int) -> dict[str, Any]:
        """Arm (or with 0 disarm) the dead-man's switch; call again before it fires."""
        result: dict[str, Any] = (await self.request("cancel_all_after",
                                                     timeout_s=timeout_s)).result
        return result

    async def instruments(self, status: str = "open") -> list[Instrument]:
        """Every instrument with `status` ("open", "closed" or "all"), in listing order,
        following the gateway's pages."""
        listed: list[Instrument] = []
        cursor: str | None = None
        while True:
            result = (await self.request("instruments", status=status, cursor=cursor)).result
            listed += msgspec.convert(result["instruments"], list[Instrument])
            cursor = result.get("next_cursor")
            if cursor is None:
                return listed

    async def server_time(self) -> ServerTime:
        return msgspec.convert((await self.request("time")).result, ServerTime)

    async def ping(self) -> int:
        return int((await self.request("ping")).result["pong"])

    async def balances(self) -> dict[str, Balance]:
        reply = await self.request("balances")
        return msgspec.convert(reply.result["balances"], dict[str, Balance])

    async def open_orders(self, instrument: str | None = None) -> list[OrderReport]:
        reply = await self.request("open_orders", instrument=instrument)
        return msgspec.convert(reply.result["orders"], list[OrderReport])

    async def list_instrument(self, **spec: Any) -> OrderResult:
        """List an instrument (admin role)."""
        return _order_result(await self.request("list_instrument", **spec))

    async def deposit(
        self, account: str, asset: str, amount: str | int, deposit_id: str | None = None
    ) -> OrderResult:
        """Credit a test deposit (admin role)."""
        return _order_result(await self.request("deposit", account=account, asset=asset,
                                                amount=amount, deposit_id=deposit_id))

    # -- feeds -----------------------------------------------------------------------------

    async def subscribe(self, channel: Channel, instrument: str | None = None) -> Subscription:
        """Subscribe and return a queue that gets the snapshot, then the updates."""
        subscription = Subscription(channel, instrument, self.subscription_queue_max)
        key = (channel, instrument)
        first = key not in self._subscriptions
        self._subscriptions.setdefault(key, []).append(subscription)
        if first:
            try:
                await self.request("subscribe", channel=channel, instrument=instrument)
            except BaseException:
                self._subscriptions.pop(key, None)
                raise
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        key = (subscription.channel, subscription.instrument)
        subscriptions = self._subscriptions.get(key, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
        if not subscriptions:
            self._subscriptions.pop(key, None)
            await self.request("unsubscribe", channel=subscription.channel,
                               instrument=subscription.instrument)

    async def watch_book(self, instrument: str, timeout_s: float | None = None) -> LocalBook:
        """Keep a LocalBook of `instrument` in step (resyncing on a gap); return it synced."""
        book = self.books.get(instrument)
        if book is None:
            book = self.books[instrument] = LocalBook(instrument)
            await self.request("subscribe", channel="book", instrument=instrument)
        deadline = time.monotonic() + (timeout_s or self.request_timeout_s)
        while not book.synced:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no book snapshot for {instrument}")
            await asyncio.sleep(0.005)
        return book


def _order_result(reply: Reply) -> OrderResult:
    return msgspec.convert(reply.result, OrderResult)


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


_client_order_ids = itertools.count(1)
_client_order_prefix = secrets.token_hex(3)


def _new_client_order_id() -> str:
    return f"c{_client_order_prefix}-{next(_client_order_ids)}"
