"""The requests the SDK sends: the typed `wsapi.requests` Structs the gateway decodes, and their
encoding.

A request is built with its `req_id` by a `RequestMaker` (the session numbers requests), and
encoded as the gateway's schema has it with every field at its default left out, as
`msgspec`'s `omit_defaults` would: a field left out decodes to that same default. Nothing is
validated here: the gateway checks every field and names the one at fault in its reply.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, cast, get_args

import msgspec

from wsapi.requests import (
    REQUEST_TYPES,
    AmendOrderRequest,
    AnyRequest,
    BatchAmendOrder,
    BatchCancelOrder,
    BatchItem,
    BatchMassCancel,
    BatchNewOrder,
    BatchRequest,
    CancelOrderRequest,
    Channel,
    MassCancelRequest,
    MassQuoteRequest,
    NewOrderRequest,
    OrderType,
    Side,
    Stp,
    Subscribe,
    TimeInForce,
    Unsubscribe,
)
from wsapi.requests import Quote as QuoteBody

RequestMaker = Callable[[int], AnyRequest]  # req_id -> the request carrying it


class IndexClass(NamedTuple):
    """The key of one class's `index` feed: a GPU class in a region."""

    gpu: str
    region: str


# What a feed is of besides its channel: an instrument (public channels), an IndexClass
# (one class's index), or None (the account's channels, the index of every class).
FeedKey = str | IndexClass | None

_encoder: Final = msgspec.json.Encoder()
_ITEM_TYPES: Final[dict[str, type[BatchItem]]] = {
    cls.__struct_config__.tag: cls for cls in get_args(BatchItem)
}
_REQUEST_OF_ITEM: Final[dict[type[msgspec.Struct], type[msgspec.Struct]]] = {
    BatchNewOrder: NewOrderRequest, BatchCancelOrder: CancelOrderRequest,
    BatchAmendOrder: AmendOrderRequest, BatchMassCancel: MassCancelRequest,
}


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
    client_order_id: str | None = None, order_type: OrderType | None = None,
    time_in_force: TimeInForce | None = None, expire_at: int | None = None,
    post_only: bool = False, stp: Stp | None = None,
) -> BatchNewOrder:
    """Return a `new_order` item for `Client.batch`: a limit order when `price` is given,
    else a market order; a client order id is made up when none is given."""
    item = BatchNewOrder(
        client_order_id=client_order_id or new_client_order_id(), instrument=instrument,
        side=side, order_type=order_type or ("limit" if price is not None else "market"),
        price=price, quantity=quantity, time_in_force=time_in_force, expire_at=expire_at,
        post_only=post_only)
    return item if stp is None else msgspec.structs.replace(item, stp=stp)


def cancel_item(client_order_id: str) -> BatchCancelOrder:
    return BatchCancelOrder(client_order_id=client_order_id)


def amend_item(
    client_order_id: str, new_price: str | None = None, new_quantity: int | None = None
) -> BatchAmendOrder:
    return BatchAmendOrder(client_order_id=client_order_id, new_price=new_price,
                           new_quantity=new_quantity)


def mass_cancel_item(instrument: str | None = None) -> BatchMassCancel:
    return BatchMassCancel(instrument=instrument)


def order_request(item: BatchItem, req_id: int) -> AnyRequest:
    """Return the single request of one order-entry item (`new_order` for a new order...)."""
    kind = _REQUEST_OF_ITEM[type(item)]
    return cast(AnyRequest, kind(req_id=req_id, **msgspec.structs.asdict(item)))


def subscribe_request(channel: Channel, key: FeedKey) -> RequestMaker:
    if isinstance(key, IndexClass):
        return lambda req_id: Subscribe(req_id=req_id, channel=channel, gpu=key.gpu,
                                        region=key.region)
    return lambda req_id: Subscribe(req_id=req_id, channel=channel, instrument=key)


def unsubscribe_request(channel: Channel, key: FeedKey) -> RequestMaker:
    if isinstance(key, IndexClass):
        return lambda req_id: Unsubscribe(req_id=req_id, channel=channel, gpu=key.gpu,
                                          region=key.region)
    return lambda req_id: Unsubscribe(req_id=req_id, channel=channel, instrument=key)


def batch_item(item: BatchItem | Mapping[str, Any]) -> BatchItem:
    """Return `item` as a typed batch item; a mapping names its kind in `op`."""
    if not isinstance(item, Mapping):
        return item
    fields = {name: value for name, value in item.items() if value is not None}
    kind = _ITEM_TYPES.get(fields.pop("op", None))
    if kind is None:
        raise ValueError(f"a batch item needs an op of {', '.join(sorted(_ITEM_TYPES))}")
    return kind(**fields)


def quote_body(quote: Quote | QuoteBody | Mapping[str, Any]) -> QuoteBody:
    """Return one order of a mass quote as the request carries it."""
    if isinstance(quote, QuoteBody):
        return quote
    if isinstance(quote, Quote):
        return QuoteBody(client_order_id=quote.client_order_id, side=quote.side,
                         price=quote.price, quantity=quote.quantity, post_only=quote.post_only)
    return QuoteBody(**{name: value for name, value in quote.items() if value is not None})


def build_request(op: str, req_id: int, fields: Mapping[str, Any]) -> AnyRequest:
    """Return the typed request `op` with `fields` (None values left out); a batch's orders and
    a mass quote's quotes may be mappings. Raise ValueError for an op the API does not have
    and TypeError for a field the request does not have."""
    kind = REQUEST_TYPES.get(op)
    if kind is None:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(sorted(REQUEST_TYPES))}")
    given = {name: value for name, value in fields.items() if value is not None}
    if kind is BatchRequest and "orders" in given:
        given["orders"] = [batch_item(order) for order in given["orders"]]
    if kind is MassQuoteRequest and "quotes" in given:
        given["quotes"] = [quote_body(quote) for quote in given["quotes"]]
    return cast(AnyRequest, kind(req_id=req_id, **given))


def wire_fields(value: msgspec.Struct) -> dict[str, Any]:
    """Return a request (or one of its items) as the JSON object sent: its tag, then every
    field not at its default."""
    fields: dict[str, Any] = msgspec.to_builtins(value)
    return fields


def encode_request(request: AnyRequest) -> str:
    """Return the text frame of one request."""
    return _encoder.encode(request).decode()



_client_order_ids = itertools.count(1)
_client_order_prefix = secrets.token_hex(3)


def new_client_order_id() -> str:
    """Return a client order id unique to this process (a random prefix and a counter)."""
    return f"c{_client_order_prefix}-{next(_client_order_ids)}"


def new_issue_id() -> str:
    """Return a fresh issue id: 128 random bits, since an issue id is unique for all time
    (across processes and restarts, unlike a client order id)."""
    return f"i{secrets.token_hex(16)}"
