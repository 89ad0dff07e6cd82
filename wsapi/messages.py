"""Typed server messages and results: the gateway encodes them, the SDK decodes them.

These mirror docs/asyncapi.yaml and are the single definition of the messages' shapes (the
gateway leaves optional fields out when absent). Unknown fields are ignored, and a
message of an unknown `type` decodes to `UnknownMessage`, so a newer server does not break
an older client.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.codec import json_nesting_exceeds

Kind = Literal["snapshot", "update"]
# A book level's price as docs/asyncapi.yaml (Price) has it, and a quantity (0 removes).
LevelPrice = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?\Z")]
LevelQuantity = Annotated[int, msgspec.Meta(ge=0)]
# No server message nests deeper than a few levels; a frame may. msgspec recurses in C per
# level and trusts the interpreter's recursion limit, which a host may have raised past what
# the C stack holds, so nesting is capped before msgspec sees the frame.
NESTING_MAX: Final = 32


class _Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every server message."""


class RateLimitSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A token bucket: `burst` tokens at most, refilled at `per_second`."""

    per_second: float
    burst: int


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway holds a client to, as `hello` announces it (docs/asyncapi.yaml)."""

    connections_max: int
    connections_per_ip_max: int
    anonymous_per_ip_max: int
    anonymous_grace_ms: int
    login_deadline_ms: int
    connections_per_account_max: int
    connections_per_key_max: int
    subscriptions_per_session_max: int
    pending_per_session_max: int
    request_timeout_ms: int
    instruments_page_max: int
    # per role ("anonymous", "trader", ...), and "ip", "login_ip", "login_key"
    rate_limits: dict[str, RateLimitSpec]


class Hello(_Message, tag="hello", frozen=True, kw_only=True):
    api_version: str
    gateway_id: str
    nonce: str
    server_time_ns: int
    frame_bytes_max: int
    heartbeat_interval_ms: int
    batch_size_max: int
    mass_quote_size_max: int
    # Optional for clients of older gateways, which do not send them.
    eip712_chain_id: int | None = None
    login_window_ms: int | None = None
    limits: Limits | None = None


class RateLimitUsage(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    remaining: int
    burst: int
    per_second: float


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: str
    message: str
    field: str | None = None
    retry_after_ms: int | None = None


class Reply(_Message, tag="reply", frozen=True, kw_only=True):
    req_id: int | None
    op: str
    status: Literal["ok", "accepted", "rejected", "error"]
    reason: str | None = None
    result: Any = None
    error: ErrorInfo | None = None
    rate_limit: RateLimitUsage | None = None


class Notice(_Message, tag="notice", frozen=True, kw_only=True):
    code: str
    message: str
    ts: int


class Heartbeat(_Message, tag="heartbeat", frozen=True, kw_only=True):
    ts: int
    event_seq: int


class BookMessage(_Message, tag="book", frozen=True, kw_only=True):
    instrument: str
    kind: Kind
    seq: int
    prev_seq: int
    ts: int
    bids: list[tuple[LevelPrice, LevelQuantity]]
    asks: list[tuple[LevelPrice, LevelQuantity]]
    checksum: int


class TradeItem(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    price: str
    quantity: int
    aggressor_side: Literal["buy", "sell"]
    ts: int


class TradesMessage(_Message, tag="trades", frozen=True, kw_only=True):
    instrument: str
    kind: Kind
    trades: list[TradeItem]


class TickerMessage(_Message, tag="ticker", frozen=True, kw_only=True):
    instrument: str
    ts: int
    bid: str | None = None
    bid_quantity: int = 0
    ask: str | None = None
    ask_quantity: int = 0
    last: str | None = None
    volume_24h: int = 0
    high_24h: str | None = None
    low_24h: str | None = None


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    start_ns: int
    open: str
    high: str
    low: str
    close: str
    volume: int
    trades: int


class CandlesMessage(_Message, tag="candles", frozen=True, kw_only=True):
    instrument: str
    interval: str
    kind: Kind
    candles: list[Candle]


class OrderReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One execution report: what happened to an order of the account, and its state now."""

    event: str
    client_order_id: str
    seq: int
    ts: int
    status: str | None = None
    order_id: str | None = None
    instrument: str | None = None
    side: str | None = None
    order_type: str | None = None
    price: str | None = None
    quantity: int | None = None
    filled_quantity: int | None = None
    remaining_quantity: int | None = None
    fill_price: str | None = None
    fill_quantity: int | None = None
    reason: str | None = None


class OrdersMessage(_Message, tag="orders", frozen=True, kw_only=True):
    kind: Kind
    orders: list[OrderReport]


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    instrument: str
    client_order_id: str
    order_id: str
    side: Literal["buy", "sell"]
    price: str
    quantity: int
    fee: str
    liquidity: Literal["maker", "taker"]
    seq: int
    ts: int


class FillsMessage(_Message, tag="fills", frozen=True, kw_only=True):
    kind: Kind
    fills: list[Fill]


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    available: str | int
    held: str | int


class BalancesMessage(_Message, tag="balances", frozen=True, kw_only=True):
    kind: Kind
    seq: int
    balances: dict[str, Balance]


class DeliveryEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One engine event of Delivery (PROTOCOL.md v2) that concerns the account, named by
    `event`: capacity_issued, issue_rejected, bond_released (to the issuer), delivery_assigned
    or delivery_settled (to the issuer and the holder). `issuer` is the event's `account`
    where it has one; `instrument` is filled in for every event but issue_rejected."""

    event: str
    issue_id: str
    seq: int
    ts: int
    instrument: str | None = None
    node_id: str | None = None
    issuer: str | None = None
    holder: str | None = None
    quantity: int | None = None
    bond: str | None = None  # capacity_issued: the USDC bonded
    amount: str | None = None  # bond_released: the USDC released to the issuer
    delivered_ppm: int | None = None
    compensation: str | None = None  # delivery_settled: the USDC paid to the holder
    evidence: str | None = None
    reason: str | None = None  # issue_rejected


class DeliveriesMessage(_Message, tag="deliveries", frozen=True, kw_only=True):
    kind: Kind
    events: list[DeliveryEvent]


class IndexPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One value of the GPU-hour price index (docs/index-methodology.md): the class `gpu` in
    `region` at the minute starting `minute` (ISO 8601, UTC; `minute_ns` the same in ns).
    `value` is USDC per GPU-hour, null when `source` is "none"; `source` says where it came
    from (trades, else the mid of the best bid and ask, else the last value); `sufficient`
    whether its trades (`trade_count`, `volume` GPU-hours, over `instrument_count`
    instruments) meet the methodology's minimums; `inputs_hash` (64 hex digits) commits to
    its exact inputs; `last_seq` is the engine event it follows."""

    gpu: str
    region: str
    minute: str
    minute_ns: int
    value: str | None
    source: Literal["trades", "mid", "last", "none"]
    sufficient: bool
    trade_count: int
    volume: int
    instrument_count: int
    inputs_hash: str
    last_seq: int


class IndexMessage(_Message, tag="index", frozen=True, kw_only=True):
    """The `index` feed: of one class (`gpu` and `region` given) or of every class (neither).
    A snapshot holds the latest value of each class the feed covers, an update the values
    published since, oldest first."""

    kind: Kind
    values: list[IndexPoint]
    gpu: str | None = None
    region: str | None = None


class RatioPercentiles(msgspec.Struct, frozen=True, kw_only=True):
    """Nearest-rank percentiles of the passed challenges' throughput over the class floor's
    (1.0: at the floor; above: faster)."""

    p10: float
    p50: float
    p90: float


class NodeQuality(msgspec.Struct, frozen=True, kw_only=True):
    """One node's measured record (delivery.quality.NodeRecord): the figures of
    OperatorQuality over the hours delivered from this node."""

    node_id: str
    gpu: str
    region: str
    hours: int
    gpu_hours_assigned: int
    gpu_hours_delivered: int
    delivered_share_ppm: int
    delivered_share_histogram: dict[str, int]
    challenges_passed: int
    challenges_failed: int
    throughput_ratio_percentiles: RatioPercentiles | None
    incidents_count: int
    last_window_start_ns: int


class OperatorQuality(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's public record of measured delivery (delivery.quality.OperatorRecord):
    over its `hours` (assignments measured), the GPU-hours assigned and delivered
    (`gpu_hours_delivered` ppm-weighted: the sum of quantity x delivered_ppm, so divide by
    1,000,000 for GPU-hours), their ratio (`delivered_share_ppm`), how many hours fell in
    each delivered-share bucket ("100", "99-100", "95-99", "90-95", "75-90", "0-75",
    percent), the challenges passed and failed with their throughput against the class
    floor (null while none passed), the runs of undelivered minutes (`incidents_count`),
    and each node's figures."""

    operator: str
    nodes: list[NodeQuality]
    hours: int
    gpu_hours_assigned: int
    gpu_hours_delivered: int
    delivered_share_ppm: int
    delivered_share_histogram: dict[str, int]
    challenges_passed: int
    challenges_failed: int
    throughput_ratio_percentiles: RatioPercentiles | None
    incidents_count: int
    last_window_start_ns: int


class QualityMessage(_Message, tag="quality", frozen=True, kw_only=True):
    """The `quality` feed: a snapshot holds every operator's record, an update the records
    of the operators whose hours were reported since, whole."""

    kind: Kind
    operators: list[OperatorQuality]


ServerMessage = (
    Hello | Reply | Notice | Heartbeat | BookMessage | TradesMessage | TickerMessage
    | CandlesMessage | OrdersMessage | FillsMessage | BalancesMessage | DeliveriesMessage
    | IndexMessage | QualityMessage
)
FeedMessage = (
    BookMessage | TradesMessage | TickerMessage | CandlesMessage | OrdersMessage
    | FillsMessage | BalancesMessage | DeliveriesMessage | IndexMessage | QualityMessage
)


# -- results of requests ------------------------------------------------------------------

class OrderResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The engine's answer to one order, admin or delivery command: `status` accepted,
    rejected or error. An accepted `issue_capacity` is the engine's capacity_issued (with
    `issue_id`, `instrument`, `node_id`, `quantity`, `bond`), a rejected one its
    issue_rejected; an accepted `delivery_report` is delivery_settled (with `holder`,
    `delivered_ppm`, `compensation`, `evidence`), a rejected one report_rejected."""

    op: str
    status: Literal["accepted", "rejected", "error"]
    client_order_id: str | None = None
    order_id: str | None = None
    instrument: str | None = None
    reason: str | None = None
    price: str | None = None
    quantity: int | None = None
    remaining_quantity: int | None = None
    canceled_quantity: int | None = None
    canceled: int | None = None
    issue_id: str | None = None
    node_id: str | None = None
    bond: str | None = None
    holder: str | None = None
    delivered_ppm: int | None = None
    compensation: str | None = None
    evidence: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class MassQuoteResult(msgspec.Struct, frozen=True, kw_only=True):
    canceled: int
    results: list[OrderResult]


class StripFill(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fill of a strip's leg: `quantity` GPU-hours at the maker's `price` and the
    strip's taker `fee` on it (USDC); `trade_id` once traded (a quote's fills are not)."""

    price: str
    quantity: int
    fee: str
    trade_id: str | None = None


class StripLeg(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One leg of a strip, its fills in the order they happen: `filled` GPU-hours (below the
    strip's quantity only in a quote the book cannot fill), their `notional` and taker
    `fees` (USDC). A traded leg names its taker order `client_order_id` (ID:LEG_INDEX)."""

    instrument: str
    filled: int
    notional: str
    fees: str
    fills: list[StripFill]
    client_order_id: str | None = None


class StripResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The engine's answer to a `new_strip_order`: accepted (strip_accepted, every leg's
    trades, strip_done: `strip_id`, the legs and the totals) or rejected (strip_rejected,
    `reason`). `notional` and `fees` are strip_done's; `total` is what the account pays
    (a buy: notional plus fees) or receives (a sell: notional less fees), in USDC."""

    op: str
    status: Literal["accepted", "rejected", "error"]
    client_order_id: str | None = None
    reason: str | None = None
    strip_id: str | None = None
    side: Literal["buy", "sell"] | None = None
    quantity: int | None = None
    limit_total: str | None = None
    notional: str | None = None
    fees: str | None = None
    total: str | None = None
    legs: list[StripLeg] = msgspec.field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class StripQuoteResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a strip would trade now, as the gateway sees the books and the account at event
    `seq`: every leg's fills, `notional`, taker `fees` and `total` (as in StripResult), and
    `reason`, the refusal the strip would meet now, absent when it would execute. The
    engine decides on the books as they are when the order reaches it: the order can
    still be refused, or trade at other prices."""

    seq: int
    side: Literal["buy", "sell"]
    quantity: int
    legs: list[StripLeg]
    notional: str
    fees: str
    total: str
    limit_total: str | None = None
    reason: str | None = None

    @property
    def executable(self) -> bool:
        return self.reason is None


class Instrument(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    symbol: str
    gpu: str
    region: str
    delivery_start: int
    delivery_hours: int
    tick_size: str
    max_order_quantity: int
    maker_fee_bps: int
    taker_fee_bps: int
    status: Literal["open", "closed"]
    # Delivery (v2): present for a deliverable instrument, the USDC bond per GPU-hour.
    bond_per_gpu_hour: str | None = None


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    """One issue of the account: `bonded_quantity` GPU-hours (and `bond` USDC) still under
    bond. `status`: open (the instrument trades), delivering (closed, reports awaited) or
    settled (nothing bonded)."""

    issue_id: str
    instrument: str
    node_id: str
    quantity: int
    bonded_quantity: int
    bond: str
    status: Literal["open", "delivering", "settled"]


class Assignment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """GPU-hours of an issue assigned to a holder at close: `delivery_start` is the hour's
    start (ns). `delivered_ppm` and `compensation` (USDC) once settled by a report."""

    issue_id: str
    instrument: str
    delivery_start: int
    node_id: str
    issuer: str
    holder: str
    quantity: int
    status: Literal["assigned", "settled"]
    delivered_ppm: int | None = None
    compensation: str | None = None
    evidence: str | None = None


class DeliveriesResult(msgspec.Struct, frozen=True, kw_only=True):
    """The `deliveries` request's result, as of event `seq`: every issue and assignment of
    the account still open, and its most recently settled ones, each in the order made."""

    seq: int
    issues: list[Issue]
    assignments: list[Assignment]


class RegisterNodeResult(msgspec.Struct, frozen=True, kw_only=True):
    """A node registered: the venue CA's public key its sshd trusts (`TrustedUserCAKeys`)
    and the two principals it accepts (`AuthorizedPrincipalsFile`): a holder's and the
    delivery service's prober's (with the challenge responder as its forced command)."""

    node_id: str
    ca_public_key: str
    holder_principal: str
    prober_principal: str


class SshKeyResult(msgspec.Struct, frozen=True, kw_only=True):
    """An SSH public key registered (or known already): its SHA256 fingerprint."""

    fingerprint: str
    added: bool


class AccessCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """An OpenSSH user certificate for the holder's key `fingerprint`, valid for the window;
    `file` is the name the SDK writes it under (next to the identity file)."""

    fingerprint: str
    certificate: str
    file: str


class AccessItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One assignment as its holder reaches it: the node (`host`, `port`, `login`, its
    `host_key`; null while no node of that id is registered), the window (ns), the
    certificates issued so far and the `ssh` line using them. `pending` is true while none
    is issued (no key registered yet, or the delivery service has not reached it)."""

    issue_id: str
    instrument: str
    node_id: str
    issuer: str
    quantity: int
    window_start: int
    window_end: int
    certificates: list[AccessCertificate]
    pending: bool
    host: str | None = None
    port: int | None = None
    login: str | None = None
    host_key: str | None = None
    known_hosts_file: str | None = None
    ssh_command: str | None = None


class DeliveryAccessResult(msgspec.Struct, frozen=True, kw_only=True):
    assignments: list[AccessItem]


class QualityResult(msgspec.Struct, frozen=True, kw_only=True):
    operators: list[OperatorQuality]


class ServerTime(msgspec.Struct, frozen=True, kw_only=True):
    server_time_ns: int
    engine_time_ns: int
    event_seq: int


class LoginResult(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    role: str
    cancel_on_disconnect: str


class UnknownMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message of a `type` this SDK does not know (from a newer server): to be ignored."""

    type: str


_decoder = msgspec.json.Decoder(ServerMessage)
_generic = msgspec.json.Decoder()
_TYPES: Final = frozenset(cls.__struct_config__.tag for cls in ServerMessage.__args__)


def decode_message(data: bytes | str) -> ServerMessage | UnknownMessage:
    """Decode one server frame into its typed message.

    Raise msgspec.ValidationError, naming the field at fault, when a known message does not
    fit its schema, and msgspec.DecodeError (its base) when the frame is not JSON, not
    UTF-8 or nested deeper than NESTING_MAX levels.
    """
    try:
        text = data if isinstance(data, str) else data.decode()
        raw = data if isinstance(data, bytes) else text.encode("utf-8", "surrogatepass")
        if json_nesting_exceeds(raw, NESTING_MAX):
            raise msgspec.DecodeError(f"nested deeper than {NESTING_MAX} levels")
        message: ServerMessage = _decoder.decode(text)
        return message
    except msgspec.ValidationError:
        unknown = _unknown_type(text)
        if unknown is None:
            raise
        return UnknownMessage(type=unknown)
    except (UnicodeError, RecursionError) as error:  # not UTF-8; past the recursion limit
        raise msgspec.DecodeError(f"not a JSON message: {error}") from error


def _unknown_type(text: str) -> str | None:
    """The frame's `type` when it is an object whose `type` names no message known here."""
    raw = _generic.decode(text)
    kind = raw.get("type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) and kind not in _TYPES else None
