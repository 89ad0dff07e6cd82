"""Client requests: strict msgspec Structs tagged by `op`, decoded with errors naming the field.

Every request carries `req_id` (an integer the client chooses) and gets exactly one reply
with the same `req_id`. Unknown fields, wrong JSON types and out-of-range numbers are refused
before anything reaches the engine; the schema here is at least as strict as the engine's
own decoding (protocol.commands), so a request that decodes here always decodes there.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.commands import (
    EVIDENCE_MAX_LENGTH,
    PPM,
    STRIP_LEGS_MAX,
    STRIP_LEGS_MIN,
    DeliveryHours,
    Identifier,
    Label,
    MaxOrderQuantity,
    Nanoseconds,
)
from runtime.validation import invalid_path
from wsapi.errors import INVALID_JSON, INVALID_REQUEST, UNKNOWN_OP, RequestError

# Client order ids starting with this prefix are the gateway's own (fences): refused here.
RESERVED_PREFIX: Final = "gpux."

ReqId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
ClientOrderId = Annotated[str, msgspec.Meta(pattern=r"^(?!gpux\.)[A-Za-z0-9_.:\-]{1,64}\Z")]
# A strip's id names its legs `ID:LEG_INDEX`, which must fit in 64 characters.
StripClientOrderId = Annotated[str, msgspec.Meta(pattern=r"^(?!gpux\.)[A-Za-z0-9_.:\-]{1,59}\Z")]
Account = Annotated[str, msgspec.Meta(pattern=r"^(?!gpux\.)[A-Za-z0-9_.:\-]{1,64}\Z")]
# A positive or zero USDC amount with at most 6 decimals; the engine checks the tick.
Price = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?\Z")]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
TimestampMs = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Bps = Annotated[int, msgspec.Meta(ge=0, le=1000)]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["gtc", "ioc", "fok", "gtd"]
Stp = Literal["cancel_newest", "cancel_oldest", "cancel_both", "decrement"]
CancelOnDisconnect = Literal["off", "session", "account"]
Channel = Literal[
    "book", "trades", "ticker", "candles", "orders", "fills", "balances", "deliveries", "index",
    "quality"]
# Public channels keyed by an instrument; `index` is public too, keyed by GPU class and region.
PUBLIC_CHANNELS: Final = frozenset({"book", "trades", "ticker", "candles"})
INDEX_CHANNEL: Final = "index"
# The quality record of every operator (public, one feed, no key).
QUALITY_CHANNEL: Final = "quality"
PRIVATE_CHANNELS: Final = frozenset({"orders", "fills", "balances", "deliveries"})


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            omit_defaults=True):
    """Base of request bodies: frozen, keyword-only, unknown fields forbidden; a field at
    its default is left out when encoded (what the SDK sends)."""


class NewOrderBody(_Body, frozen=True, kw_only=True):
    client_order_id: ClientOrderId
    instrument: Identifier
    side: Side
    order_type: OrderType
    price: Price | None = None
    quantity: Quantity
    time_in_force: TimeInForce | None = None
    expire_at: Nanoseconds | None = None
    post_only: bool = False
    stp: Stp = "cancel_newest"


class CancelOrderBody(_Body, frozen=True, kw_only=True):
    client_order_id: ClientOrderId


class AmendOrderBody(_Body, frozen=True, kw_only=True):
    client_order_id: ClientOrderId
    new_price: Price | None = None
    new_quantity: Quantity | None = None


class MassCancelBody(_Body, frozen=True, kw_only=True):
    instrument: Identifier | None = None


# Items of a batch: the order-entry bodies, tagged by `op`, without a req_id of their own.
class BatchNewOrder(NewOrderBody, tag_field="op", tag="new_order", frozen=True, kw_only=True):
    pass


class BatchCancelOrder(
    CancelOrderBody, tag_field="op", tag="cancel_order", frozen=True, kw_only=True
):
    pass


class BatchAmendOrder(AmendOrderBody, tag_field="op", tag="amend_order", frozen=True, kw_only=True):
    pass


class BatchMassCancel(MassCancelBody, tag_field="op", tag="mass_cancel", frozen=True, kw_only=True):
    pass


BatchItem = BatchNewOrder | BatchCancelOrder | BatchAmendOrder | BatchMassCancel


class Quote(_Body, frozen=True, kw_only=True):
    """One order of a mass quote: always a limit gtc order."""

    client_order_id: ClientOrderId
    side: Side
    price: Price
    quantity: Quantity
    post_only: bool = False


class Request(_Body, tag_field="op", frozen=True, kw_only=True):
    req_id: ReqId


class Login(Request, tag="login", frozen=True, kw_only=True):
    key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{8,64}\Z")]
    timestamp_ms: TimestampMs
    signature: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/=_\-]{16,128}\Z")]
    cancel_on_disconnect: CancelOnDisconnect = "off"


class LoginWallet(Request, tag="login_wallet", frozen=True, kw_only=True):
    address: Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{40}\Z")]
    timestamp_ms: TimestampMs
    signature: Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{130}\Z")]
    cancel_on_disconnect: CancelOnDisconnect = "off"


class NewOrderRequest(
    NewOrderBody, tag_field="op", tag="new_order", frozen=True, kw_only=True
):
    req_id: ReqId


class CancelOrderRequest(
    CancelOrderBody, tag_field="op", tag="cancel_order", frozen=True, kw_only=True
):
    req_id: ReqId


class AmendOrderRequest(
    AmendOrderBody, tag_field="op", tag="amend_order", frozen=True, kw_only=True
):
    req_id: ReqId


class MassCancelRequest(
    MassCancelBody, tag_field="op", tag="mass_cancel", frozen=True, kw_only=True
):
    req_id: ReqId


class BatchRequest(Request, tag="batch", frozen=True, kw_only=True):
    orders: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=1000)]


class MassQuoteRequest(Request, tag="mass_quote", frozen=True, kw_only=True):
    instrument: Identifier
    quotes: Annotated[list[Quote], msgspec.Meta(max_length=1000)]


class CancelAllAfter(Request, tag="cancel_all_after", frozen=True, kw_only=True):
    timeout_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)]


class Subscribe(Request, tag="subscribe", frozen=True, kw_only=True):
    """A feed: an instrument's for the public channels, the account's for the private ones,
    and for `index` one GPU class in one region (`gpu` and `region`) or every one (neither)."""

    channel: Channel
    instrument: Identifier | None = None
    gpu: Label | None = None
    region: Label | None = None


class Unsubscribe(Request, tag="unsubscribe", frozen=True, kw_only=True):
    channel: Channel
    instrument: Identifier | None = None
    gpu: Label | None = None
    region: Label | None = None


class Instruments(Request, tag="instruments", frozen=True, kw_only=True):
    """Instruments in listing order: open ones by default; a page at most `limit` long
    (and never over the gateway's `instruments_page_max`); `cursor` is the previous page's
    `next_cursor`."""

    status: Literal["open", "closed", "all"] = "open"
    cursor: Identifier | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


class Time(Request, tag="time", frozen=True, kw_only=True):
    pass


class Ping(Request, tag="ping", frozen=True, kw_only=True):
    pass


class OpenOrders(Request, tag="open_orders", frozen=True, kw_only=True):
    instrument: Identifier | None = None


class Balances(Request, tag="balances", frozen=True, kw_only=True):
    pass


class ListInstrumentRequest(Request, tag="list_instrument", frozen=True, kw_only=True):
    symbol: Annotated[str, msgspec.Meta(pattern=r"^(?!gpux\.)(?!USDC\Z)[A-Za-z0-9_.:\-]{1,64}\Z")]
    gpu: Label
    region: Label
    delivery_start: Nanoseconds
    delivery_hours: DeliveryHours
    tick_size: Price
    max_order_quantity: MaxOrderQuantity
    maker_fee_bps: Bps
    taker_fee_bps: Bps
    # Delivery (v2): makes the instrument deliverable, its tokens bonded promises.
    bond_per_gpu_hour: Price | None = None


class DepositRequest(Request, tag="deposit", frozen=True, kw_only=True):
    account: Account
    asset: Identifier
    amount: Price | Annotated[int, msgspec.Meta(ge=1, le=2**53)]  # exact in any JSON reader
    deposit_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}\Z")] | None = None


class IssueCapacityRequest(Request, tag="issue_capacity", frozen=True, kw_only=True):
    """Bond `quantity` GPU-hours of a node of a deliverable instrument and get its tokens;
    the issuer is the session's account."""

    issue_id: Identifier
    instrument: Identifier
    node_id: Identifier
    quantity: Quantity


class DeliveryReportRequest(Request, tag="delivery_report", frozen=True, kw_only=True):
    """The delivery service's measure of one assignment: `delivered_ppm` of its GPU-hours
    were delivered (PROTOCOL.md v2); the engine pays the holder for the rest."""

    issue_id: Identifier
    holder: Identifier
    delivered_ppm: Annotated[int, msgspec.Meta(ge=0, le=PPM)]
    evidence: Annotated[str, msgspec.Meta(max_length=EVIDENCE_MAX_LENGTH)] | None = None


class Deliveries(Request, tag="deliveries", frozen=True, kw_only=True):
    """The account's issues and its assignments, as issuer and as holder."""


# -- delivery access and the quality record (docs/delivery.md) --------------------------------

# A host name, an IPv4 address or an IPv6 one (bare or in brackets).
Host = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.:\-\[\]]{1,253}\Z")]
LoginName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,31}\Z")]
# An OpenSSH public key line ("ssh-ed25519 AAAA... comment"); the gateway parses it.
PublicKeyLine = Annotated[str, msgspec.Meta(min_length=1, max_length=16_384)]
INVENTORY_ENTRIES_MAX: Final = 64
INVENTORY_BYTES_MAX: Final = 8_192  # the inventory object encoded as JSON, at most


class RegisterNode(Request, tag="register_node", frozen=True, kw_only=True):
    """Register (or update) a node of the session's account (roles operator, market_maker,
    admin): where the delivery service and the holders reach it over SSH, and what it has.
    `node_id` is the one `issue_capacity` names; one account owns it."""

    node_id: Identifier
    gpu: Label
    region: Label
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=65_536)]
    gpu_memory_mib: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # per GPU
    host: Host
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)]
    login: LoginName
    host_key: PublicKeyLine
    inventory: Annotated[dict[str, Any],
                         msgspec.Meta(max_length=INVENTORY_ENTRIES_MAX)] = msgspec.field(
        default_factory=dict)


class RegisterSshKey(Request, tag="register_ssh_key", frozen=True, kw_only=True):
    """Register an SSH public key of the session's account: the delivery service issues a
    certificate for it for every assignment the account holds. Idempotent."""

    public_key: PublicKeyLine


class DeliveryAccess(Request, tag="delivery_access", frozen=True, kw_only=True):
    """The account's assignments as a holder (one issue's with `issue_id`): each node's
    address and host key, the window, the certificates issued and the `ssh` line."""

    issue_id: Identifier | None = None


class QualityRequest(Request, tag="quality", frozen=True, kw_only=True):
    """The quality record of every operator (or of `operator`): public, no login needed."""

    operator: Account | None = None


StripLegs = Annotated[list[Identifier],
                      msgspec.Meta(min_length=STRIP_LEGS_MIN, max_length=STRIP_LEGS_MAX)]


class NewStripOrderRequest(Request, tag="new_strip_order", frozen=True, kw_only=True):
    """Buy or sell `quantity` GPU-hours in each of the consecutive hours `instruments` (in
    delivery order), all or nothing, for at most (a sell: at least) `limit_total` USDC of
    notional over every leg, fees excluded (PROTOCOL.md v2, Strip orders)."""

    client_order_id: StripClientOrderId
    side: Side
    instruments: StripLegs
    quantity: Quantity
    limit_total: Price


class StripQuoteRequest(Request, tag="strip_quote", frozen=True, kw_only=True):
    """What a `new_strip_order` of these fields would trade now, leg by leg, and the reason
    it would be refused, from the gateway's view of the books and the account; nothing is
    sent to the engine. Without `limit_total` no limit is checked."""

    side: Side
    instruments: StripLegs
    quantity: Quantity
    limit_total: Price | None = None


AnyRequest = (
    Login | LoginWallet | NewOrderRequest | CancelOrderRequest | AmendOrderRequest
    | MassCancelRequest | BatchRequest | MassQuoteRequest | CancelAllAfter | Subscribe
    | Unsubscribe | Instruments | Time | Ping | OpenOrders | Balances | ListInstrumentRequest
    | DepositRequest | IssueCapacityRequest | DeliveryReportRequest | Deliveries
    | NewStripOrderRequest | StripQuoteRequest | RegisterNode | RegisterSshKey
    | DeliveryAccess | QualityRequest
)
REQUEST_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    cls.__struct_config__.tag: cls
    for cls in AnyRequest.__args__
}
def request_cost(request: AnyRequest) -> int:
    """The rate-limit tokens a request costs: one per engine command it carries, at least 1;
    a strip one per leg, as many as the orders that would trade the same hours."""
    if isinstance(request, BatchRequest):
        return max(1, len(request.orders))
    if isinstance(request, MassQuoteRequest):
        return 1 + len(request.quotes)
    if isinstance(request, NewStripOrderRequest):
        return len(request.instruments)
    return 1


ADMIN_OPS: Final = frozenset({"list_instrument", "deposit"})
TRADING_OPS: Final = frozenset(
    {"new_order", "cancel_order", "amend_order", "mass_cancel", "batch", "mass_quote",
     "cancel_all_after", "open_orders", "balances", "issue_capacity", "deliveries",
     "new_strip_order", "strip_quote", "register_node", "register_ssh_key", "delivery_access"}
)
# Requests answered from the delivery database (gateway.deliverydesk), not by the engine.
DESK_OPS: Final = frozenset({"register_node", "register_ssh_key", "delivery_access"})
NODE_ROLES: Final = frozenset({"operator", "market_maker", "admin"})
MASS_QUOTE_ROLES: Final = frozenset({"market_maker", "operator", "admin"})
ISSUE_ROLES: Final = frozenset({"operator", "market_maker", "admin"})
# The delivery service's credential sends these and no other account operation; no other
# role sends them, admin included: a report moves bond money between two accounts.
DELIVERY_ROLE: Final = "delivery"
DELIVERY_OPS: Final = frozenset({"delivery_report"})

# msgspec recurses once per nesting level and has no depth limit: a frame deep enough
# overflows the C stack. No request needs more than a few dozen brackets.
BRACKETS_MAX: Final = 1024

_decoder: Final = msgspec.json.Decoder(AnyRequest)
_generic: Final = msgspec.json.Decoder()
# UnicodeError: invalid UTF-8 in bytes, or a lone surrogate in a str (msgspec encodes it).
_UNDECODABLE: Final = (msgspec.DecodeError, UnicodeError, RecursionError)


def decode_request(data: bytes | str) -> AnyRequest:
    """Decode one client frame; raise RequestError naming the field when it does not fit."""
    if _too_deep(data):
        raise RequestError(INVALID_REQUEST, f"more than {BRACKETS_MAX} brackets in one frame",
                           field="$")
    try:
        request: AnyRequest = _decoder.decode(data)
        return request
    except msgspec.ValidationError as error:
        raise _validation_error(data, str(error)) from None
    except _UNDECODABLE as error:
        raise RequestError(INVALID_JSON, f"not a JSON object: {error}") from None


class _ReqIdOnly(msgspec.Struct):
    """A frame read for its `req_id` alone: every other member is skipped unread, so a
    number out of range or a wrong type elsewhere does not hide a readable req_id."""

    req_id: Any = None


_req_id_decoder: Final = msgspec.json.Decoder(_ReqIdOnly)


def salvage_req_id(data: bytes | str) -> int | None:
    """Return the frame's `req_id` when it is a well-formed one, to echo in an error reply."""
    if _too_deep(data):
        return None
    try:
        value: Any = _req_id_decoder.decode(data).req_id
    except _UNDECODABLE:  # not JSON, not an object, or not UTF-8
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
        return value
    return None


def _too_deep(data: bytes | str) -> bool:
    if isinstance(data, str):
        return data.count("[") + data.count("{") > BRACKETS_MAX
    return data.count(b"[") + data.count(b"{") > BRACKETS_MAX


def _validation_error(data: bytes | str, message: str) -> RequestError:
    """Turn msgspec's message into a RequestError whose `field` is a JSON path."""
    path, text = invalid_path(message)
    if path == "$.op" or (path == "$" and "op" in text and "tag" in text.lower()):
        return RequestError(UNKNOWN_OP, _unknown_op_message(data), field="$.op")
    return RequestError(INVALID_REQUEST, text, field=path)


def _unknown_op_message(data: bytes | str) -> str:
    try:
        raw = _generic.decode(data)
    except _UNDECODABLE:
        return "missing or unknown op"
    if not isinstance(raw, dict):
        return "missing or unknown op"
    op = raw.get("op") if isinstance(raw, dict) else None
    if op is None:
        return "missing field op"
    return f"unknown op {op!r}; known: {', '.join(sorted(REQUEST_TYPES))}"
