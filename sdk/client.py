"""An async client for the gpux websocket API, with typed results and automatic reconnect.

    async with Client(url, credentials=ApiKey(key_id, private_key)) as client:
        book = await client.watch_book("H100.eu.20250101T10")
        result = await client.new_order("H100.eu.20250101T10", "buy", 3, price="2.15")

Every request gets one reply; a refusal by the gateway (bad field, rate limit, no login)
raises `RequestFailed`, while the engine's business rejections come back as values
(`OrderResult.status == "rejected"` with the engine's `reason`). When the connection drops
the client reconnects with backoff, logs in again and resubscribes; requests in flight fail
with `ConnectionLost` and are safe to retry with the same `client_order_id`.

Each method sends one typed `wsapi.requests` request (built in `sdk.requests`); the
connection and its protocol state live in `sdk.connection` and `sdk.session`.

Cancellation: every coroutine here may be cancelled; a cancelled request's reply is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from sdk.book import LocalBook
from sdk.connection import Connection, Subscription
from sdk.errors import ClientError, ConnectionLost, RequestFailed, SubscriptionOverflow
from sdk.requests import (
    Quote,
    RequestMaker,
    amend_item,
    batch_item,
    cancel_item,
    mass_cancel_item,
    new_issue_id,
    new_order_item,
    order_request,
    quote_body,
    subscribe_request,
    unsubscribe_request,
)
from sdk.signing import ApiKey, Wallet
from wsapi.messages import (
    Balance,
    DeliveriesResult,
    Instrument,
    MassQuoteResult,
    OrderReport,
    OrderResult,
    ServerTime,
)
from wsapi.requests import (
    Balances,
    BatchItem,
    BatchRequest,
    CancelAllAfter,
    Channel,
    Deliveries,
    DeliveryReportRequest,
    DepositRequest,
    Instruments,
    IssueCapacityRequest,
    ListInstrumentRequest,
    MassQuoteRequest,
    OpenOrders,
    OrderType,
    Ping,
    Side,
    Stp,
    Time,
    TimeInForce,
)

__all__ = [
    "ApiKey", "Client", "ClientError", "ConnectionLost", "Quote", "RequestFailed",
    "Subscription", "SubscriptionOverflow", "Wallet", "amend_item", "cancel_item",
    "mass_cancel_item", "new_order_item",
]


class Client(Connection):
    """Talk to one gateway: orders, queries and feeds; see the module docstring."""

    async def new_order(
        self, instrument: str, side: Side, quantity: int, price: str | None = None, *,
        client_order_id: str | None = None, order_type: OrderType | None = None,
        time_in_force: TimeInForce | None = None, expire_at: int | None = None,
        post_only: bool = False, stp: Stp | None = None,
    ) -> OrderResult:
        """Place an order: a limit order when `price` is given, else a market order."""
        return await self._order(new_order_item(
            instrument, side, quantity, price, client_order_id=client_order_id,
            order_type=order_type, time_in_force=time_in_force, expire_at=expire_at,
            post_only=post_only, stp=stp))

    async def cancel_order(self, client_order_id: str) -> OrderResult:
        return await self._order(cancel_item(client_order_id))

    async def amend_order(
        self, client_order_id: str, new_price: str | None = None, new_quantity: int | None = None
    ) -> OrderResult:
        return await self._order(amend_item(client_order_id, new_price, new_quantity))

    async def mass_cancel(self, instrument: str | None = None) -> OrderResult:
        """Cancel every open order of the account (on one instrument); `canceled` counts them."""
        return await self._order(mass_cancel_item(instrument))

    async def _order(self, item: BatchItem) -> OrderResult:
        reply = await self._call(lambda req_id: order_request(item, req_id))
        return msgspec.convert(reply.result, OrderResult)

    async def batch(self, orders: Sequence[BatchItem | Mapping[str, Any]]) -> list[OrderResult]:
        """Send up to `hello.batch_size_max` order commands (`new_order_item`, ...); each gets
        its own result."""
        items = [batch_item(order) for order in orders]
        reply = await self._call(lambda req_id: BatchRequest(req_id=req_id, orders=items))
        return msgspec.convert(reply.result["results"], list[OrderResult])

    async def mass_quote(self, instrument: str, quotes: Sequence[Quote]) -> MassQuoteResult:
        """Replace the account's orders on `instrument` with `quotes`, in one request."""
        bodies = [quote_body(quote) for quote in quotes]
        reply = await self._call(lambda req_id: MassQuoteRequest(
            req_id=req_id, instrument=instrument, quotes=bodies))
        return msgspec.convert(reply.result, MassQuoteResult)

    async def cancel_all_after(self, timeout_s: int) -> dict[str, Any]:
        """Arm (or with 0 disarm) the dead-man's switch; call again before it fires."""
        reply = await self._call(lambda req_id: CancelAllAfter(req_id=req_id, timeout_s=timeout_s))
        result: dict[str, Any] = reply.result
        return result

    async def instruments(
        self, status: Literal["open", "closed", "all"] = "open"
    ) -> list[Instrument]:
        """Every instrument with `status` ("open", "closed" or "all"), in listing order,
        following the gateway's pages."""
        listed: list[Instrument] = []
        cursor: str | None = None
        while True:
            result = (await self._call(_instruments_page(status, cursor))).result
            listed += msgspec.convert(result["instruments"], list[Instrument])
            cursor = result.get("next_cursor")
            if cursor is None:
                return listed

    async def server_time(self) -> ServerTime:
        reply = await self._call(lambda req_id: Time(req_id=req_id))
        return msgspec.convert(reply.result, ServerTime)

    async def ping(self) -> int:
        return int((await self._call(lambda req_id: Ping(req_id=req_id))).result["pong"])

    async def balances(self) -> dict[str, Balance]:
        reply = await self._call(lambda req_id: Balances(req_id=req_id))
        return msgspec.convert(reply.result["balances"], dict[str, Balance])

    async def open_orders(self, instrument: str | None = None) -> list[OrderReport]:
        reply = await self._call(lambda req_id: OpenOrders(req_id=req_id, instrument=instrument))
        return msgspec.convert(reply.result["orders"], list[OrderReport])

    async def list_instrument(self, **spec: Any) -> OrderResult:
        """List an instrument (admin role): the fields of `wsapi.requests.ListInstrumentRequest`."""
        reply = await self._call(lambda req_id: ListInstrumentRequest(req_id=req_id, **spec))
        return msgspec.convert(reply.result, OrderResult)

    async def deposit(
        self, account: str, asset: str, amount: str | int, deposit_id: str | None = None
    ) -> OrderResult:
        """Credit a test deposit (admin role)."""
        reply = await self._call(lambda req_id: DepositRequest(
            req_id=req_id, account=account, asset=asset, amount=amount, deposit_id=deposit_id))
        return msgspec.convert(reply.result, OrderResult)

    # -- delivery (PROTOCOL.md v2) ---------------------------------------------------------

    async def issue_capacity(
        self, instrument: str, node_id: str, quantity: int, issue_id: str | None = None
    ) -> OrderResult:
        """Bond `quantity` GPU-hours of `node_id` on a deliverable instrument and get as many
        tokens (roles operator, market_maker, admin). `issue_id` is made up when not given;
        to retry safely, pass the same one again: a second issue with it is rejected
        `duplicate_issue`."""
        chosen = issue_id or new_issue_id()
        reply = await self._call(lambda req_id: IssueCapacityRequest(
            req_id=req_id, issue_id=chosen, instrument=instrument, node_id=node_id,
            quantity=quantity))
        return msgspec.convert(reply.result, OrderResult)

    async def delivery_report(
        self, issue_id: str, holder: str, delivered_ppm: int, evidence: str | None = None
    ) -> OrderResult:
        """Report how much of an assignment was delivered (the delivery role only)."""
        reply = await self._call(lambda req_id: DeliveryReportRequest(
            req_id=req_id, issue_id=issue_id, holder=holder, delivered_ppm=delivered_ppm,
            evidence=evidence))
        return msgspec.convert(reply.result, OrderResult)

    async def deliveries(self) -> DeliveriesResult:
        """The account's issues and its assignments, as issuer and as holder."""
        reply = await self._call(lambda req_id: Deliveries(req_id=req_id))
        return msgspec.convert(reply.result, DeliveriesResult)

    # -- feeds -----------------------------------------------------------------------------

    async def subscribe(self, channel: Channel, instrument: str | None = None) -> Subscription:
        """Subscribe and return a queue that gets the snapshot, then the updates."""
        subscription = Subscription(channel, instrument, self.subscription_queue_max)
        if self.session.subscribe(channel, instrument, subscription):
            try:
                await self._call(subscribe_request(channel, instrument))
            except BaseException:
                self.session.abandon(channel, instrument)
                raise
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        channel, instrument = subscription.channel, subscription.instrument
        if self.session.unsubscribe(channel, instrument, subscription):
            await self._call(unsubscribe_request(channel, instrument))

    async def watch_book(self, instrument: str, timeout_s: float | None = None) -> LocalBook:
        """Keep a LocalBook of `instrument` in step (resyncing on a gap); return it synced."""
        book, new = self.session.watch_book(instrument)
        if new:
            await self._call(subscribe_request("book", instrument))
        deadline = time.monotonic() + (timeout_s or self.request_timeout_s)
        while not book.synced:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no book snapshot for {instrument}")
            await asyncio.sleep(0.005)
        return book


def _instruments_page(
    status: Literal["open", "closed", "all"], cursor: str | None
) -> RequestMaker:
    return lambda req_id: Instruments(req_id=req_id, status=status, cursor=cursor)
