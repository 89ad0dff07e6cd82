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
connection and its protocol state live in `sdk.connection` and `sdk.session`. The price
index's history is read over HTTP from the gateway's port (`index_history`).

Cancellation: every coroutine here may be cancelled; a cancelled request's reply is dropped.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from sdk.book import LocalBook
from sdk.connection import Connection, Subscription
from sdk.errors import ClientError, ConnectionLost, RequestFailed, SubscriptionOverflow
from sdk.requests import (
    IndexClass,
    Quote,
    RequestMaker,
    amend_item,
    batch_item,
    cancel_item,
    mass_cancel_item,
    new_client_order_id,
    new_issue_id,
    new_order_item,
    order_request,
    quote_body,
    subscribe_request,
    unsubscribe_request,
)
from sdk.signing import ApiKey, Wallet
from wsapi.messages import (
    AccessItem,
    Balance,
    DeliveriesResult,
    DeliveryAccessResult,
    IndexPoint,
    Instrument,
    MassQuoteResult,
    OperatorQuality,
    OrderReport,
    OrderResult,
    QualityResult,
    RegisterNodeResult,
    ServerTime,
    SshKeyResult,
    StripQuoteResult,
    StripResult,
)
from wsapi.requests import (
    Balances,
    BatchItem,
    BatchRequest,
    CancelAllAfter,
    Channel,
    Deliveries,
    DeliveryAccess,
    DeliveryReportRequest,
    DepositRequest,
    Instruments,
    IssueCapacityRequest,
    ListInstrumentRequest,
    MassQuoteRequest,
    NewStripOrderRequest,
    OpenOrders,
    OrderType,
    Ping,
    QualityRequest,
    RegisterNode,
    RegisterSshKey,
    Side,
    Stp,
    StripQuoteRequest,
    Time,
    TimeInForce,
)

NS_PER_HOUR: Final = 3_600 * 10**9
INDEX_READ_TIMEOUT_S: Final = 15.0
INDEX_BYTES_MAX: Final = 16 * 1024 * 1024

__all__ = [
    "ApiKey", "Client", "ClientError", "ConnectionLost", "IndexClass", "Quote",
    "RequestFailed", "Subscription", "SubscriptionOverflow", "Wallet", "amend_item",
    "cancel_item", "consecutive_instruments", "mass_cancel_item", "new_order_item",
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

    # -- delivery access and the quality record (docs/delivery.md) ----------------------

    async def register_node(
        self, node_id: str, *, gpu: str, region: str, gpu_count: int, gpu_memory_mib: int,
        host: str, port: int, login: str, host_key: str,
        inventory: Mapping[str, Any] | None = None,
    ) -> RegisterNodeResult:
        """Register (or update) a node of this account (roles operator, market_maker,
        admin): where it is reached over SSH, its host key line and what it has. The result
        holds the venue CA's public key and the principals its sshd accepts. Raises
        RequestFailed `forbidden` for a node id of another account, `unavailable` (with
        retry_after_ms) while the delivery service has not published its CA."""
        fields = dict(inventory or {})
        reply = await self._call(lambda req_id: RegisterNode(
            req_id=req_id, node_id=node_id, gpu=gpu, region=region, gpu_count=gpu_count,
            gpu_memory_mib=gpu_memory_mib, host=host, port=port, login=login,
            host_key=host_key, inventory=fields))
        return msgspec.convert(reply.result, RegisterNodeResult)

    async def register_ssh_key(self, public_key: str) -> SshKeyResult:
        """Register an SSH public key line of this account (idempotent): the delivery
        service certifies it for each assignment the account holds."""
        reply = await self._call(lambda req_id: RegisterSshKey(req_id=req_id,
                                                                 public_key=public_key))
        return msgspec.convert(reply.result, SshKeyResult)

    async def delivery_access(self, issue_id: str | None = None) -> list[AccessItem]:
        """This account's assignments as a holder (one issue's with `issue_id`), the latest
        windows first: node, window, certificates and `ssh` line (sdk.access writes the
        files the line names)."""
        reply = await self._call(lambda req_id: DeliveryAccess(req_id=req_id,
                                                                 issue_id=issue_id))
        return msgspec.convert(reply.result, DeliveryAccessResult).assignments

    async def quality(self, operator: str | None = None) -> list[OperatorQuality]:
        """Every operator's quality record (or `operator`'s): public, no login needed."""
        reply = await self._call(lambda req_id: QualityRequest(req_id=req_id,
                                                                 operator=operator))
        return msgspec.convert(reply.result, QualityResult).operators

    async def quality_feed(self) -> Subscription:
        """Subscribe to every operator's record: a snapshot, then each operator's record
        again whenever hours of it are reported."""
        return await self.subscribe("quality")

    async def quality_http(self, operator: str | None = None) -> list[OperatorQuality]:
        """The records from the gateway's `GET /quality` (no websocket request)."""
        target = "/quality" + ("?" + urllib.parse.urlencode({"operator": operator})
                               if operator is not None else "")
        body = await asyncio.to_thread(_http_get, _http_url(self.url) + target)
        return msgspec.json.decode(body, type=list[OperatorQuality])

    # -- strips (PROTOCOL.md v2) -----------------------------------------------------------

    async def new_strip_order(
        self, instruments: Sequence[str], side: Side, quantity: int, limit_total: str, *,
        client_order_id: str | None = None,
    ) -> StripResult:
        """Buy (or sell) `quantity` GPU-hours in each of the consecutive `instruments`, all
        or nothing, for at most (a sell: at least) `limit_total` USDC of notional, fees
        excluded. The result is accepted with every leg's fills and the totals, or rejected
        with the engine's reason. Costs one rate-limit token per leg."""
        legs = list(instruments)
        chosen = client_order_id or new_client_order_id()
        reply = await self._call(lambda req_id: NewStripOrderRequest(
            req_id=req_id, client_order_id=chosen, side=side, instruments=legs,
            quantity=quantity, limit_total=limit_total))
        return msgspec.convert(reply.result, StripResult)

    async def strip_quote(
        self, instruments: Sequence[str], side: Side, quantity: int,
        limit_total: str | None = None,
    ) -> StripQuoteResult:
        """What `new_strip_order` would trade now, leg by leg, and the reason it would be
        refused (`reason`, None when it would execute), from the gateway's view: the order
        can still be refused, or trade at other prices, when it reaches the engine."""
        legs = list(instruments)
        reply = await self._call(lambda req_id: StripQuoteRequest(
            req_id=req_id, side=side, instruments=legs, quantity=quantity,
            limit_total=limit_total))
        return msgspec.convert(reply.result, StripQuoteResult)

    async def strip_instruments(self, gpu: str, region: str, start_ns: int,
                                hours: int) -> list[str]:
        """The `hours` consecutive open instruments of `gpu` in `region` from `start_ns`, in
        delivery order: a strip's legs (an hour each on hourly listings)."""
        return consecutive_instruments(await self.instruments(), gpu, region, start_ns, hours)

    # -- the price index -------------------------------------------------------------------

    async def index(self, gpu: str | None = None, region: str | None = None) -> Subscription:
        """Subscribe to the index of one class (`gpu` and `region`) or of every class
        (neither): a snapshot of the latest value(s), then each new value."""
        if (gpu is None) != (region is None):
            raise ValueError("give both gpu and region (one class), or neither (every class)")
        key = None if gpu is None or region is None else IndexClass(gpu, region)
        return await self.subscribe("index", key)

    async def index_history(self, gpu: str, region: str, from_ns: int | None = None,
                            to_ns: int | None = None, limit: int | None = None
                            ) -> list[IndexPoint]:
        """A class's index values with `from_ns <= minute < to_ns`, oldest first, from the
        gateway's `GET /index` (defaults: the day up to now; at most the gateway's limit, so
        ask again from the last minute on for more)."""
        query: dict[str, str | int] = {"gpu": gpu, "region": region}
        for name, value in (("from", from_ns), ("to", to_ns)):
            if value is not None:
                query[name] = _iso(value)
        if limit is not None:
            query["limit"] = limit
        return await self._index_get("/index?" + urllib.parse.urlencode(query))

    async def index_latest(self) -> list[IndexPoint]:
        """The latest index value of every class, from the gateway's `GET /index/latest`."""
        return await self._index_get("/index/latest")

    async def _index_get(self, target: str) -> list[IndexPoint]:
        url = _http_url(self.url) + target
        body = await asyncio.to_thread(_http_get, url)
        return msgspec.json.decode(body, type=list[IndexPoint])

    # -- feeds -----------------------------------------------------------------------------

    async def subscribe(self, channel: Channel,
                        instrument: str | IndexClass | None = None) -> Subscription:
        """Subscribe and return a queue that gets the snapshot, then the updates
        (`instrument`: an IndexClass for one class's `index` feed)."""
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


def consecutive_instruments(specs: Sequence[Instrument], gpu: str, region: str, start_ns: int,
                            hours: int) -> list[str]:
    """The `hours` consecutive open instruments of `gpu` in `region` from `start_ns` (each
    starting where the one before it ends; an hour each on hourly listings), in delivery
    order; ValueError names the first start no open instrument has."""
    if hours < 1:
        raise ValueError("hours must be >= 1")
    by_start = {spec.delivery_start: spec for spec in specs
                if spec.gpu == gpu and spec.region == region and spec.status == "open"}
    legs: list[str] = []
    start = start_ns
    while len(legs) < hours:
        spec = by_start.get(start)
        if spec is None:
            raise ValueError(f"no open {gpu} instrument in {region} delivers from "
                             f"{_iso(start)}: {len(legs)} of {hours} hours found")
        legs.append(spec.symbol)
        start += spec.delivery_hours * NS_PER_HOUR
    return legs


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_url(ws_url: str) -> str:
    """The gateway's HTTP origin, from its websocket URL (ws -> http, wss -> https)."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, "", "", ""))


def _http_get(url: str) -> bytes:
    """GET `url`; ClientError says what the gateway answered when it is not 200."""
    try:
        with urllib.request.urlopen(url, timeout=INDEX_READ_TIMEOUT_S) as response:  # noqa: S310
            body: bytes = response.read(INDEX_BYTES_MAX + 1)
    except urllib.error.HTTPError as error:
        detail = error.read(4096).decode(errors="replace").strip()
        raise ClientError(f"GET {url}: {error.code} {detail}") from None
    except (urllib.error.URLError, TimeoutError) as error:
        raise ClientError(f"GET {url}: {error}") from error
    if len(body) > INDEX_BYTES_MAX:
        raise ClientError(f"GET {url}: more than {INDEX_BYTES_MAX} bytes")
    return body


def _instruments_page(
    status: Literal["open", "closed", "all"], cursor: str | None
) -> RequestMaker:
    return lambda req_id: Instruments(req_id=req_id, status=status, cursor=cursor)
