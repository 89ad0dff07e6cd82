"""Commands the matching engine consumes from the command log (PROTOCOL.md, Commands).

Each command is a frozen msgspec Struct tagged by `type`. The types here check the shape
of a command (JSON types, enumerations, identifier syntax); the engine checks everything
that needs its state (ticks, funds, open orders) and answers with a rejection event.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from protocol.message import Message

# `\Z`, not `$`: in Python `$` also matches before a trailing newline ("alice\n").
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9_.:\-]{1,64}\Z"
Identifier = Annotated[str, msgspec.Meta(pattern=IDENTIFIER_PATTERN)]
STRIP_CLIENT_ORDER_ID_PATTERN: Final = r"^[A-Za-z0-9_.:\-]{1,59}\Z"
StripClientOrderId = Annotated[str, msgspec.Meta(pattern=STRIP_CLIENT_ORDER_ID_PATTERN)]
STRIP_LEGS_MIN: Final = 2
STRIP_LEGS_MAX: Final = 168
Nanoseconds = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # a GPU class, a region
DeliveryHours = Annotated[int, msgspec.Meta(ge=1, le=24 * 366)]
MaxOrderQuantity = Annotated[int, msgspec.Meta(ge=1, le=10**9)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# A deposit or withdrawal amount as given: checked by the engine, echoed in rejections.
AmountInput = str | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["gtc", "ioc", "fok", "gtd"]
SelfTradePrevention = Literal["cancel_newest", "cancel_oldest", "cancel_both", "decrement"]
# Who asked for a cancel (PROTOCOL.md v2, Cancel reasons): the trader, or the venue for it.
CancelReason = Literal["user", "disconnect"]
MassCancelReason = Literal["mass_cancel", "disconnect", "dead_man_switch"]

USDC: Final = "USDC"
EVIDENCE_MAX_LENGTH: Final = 128
PPM: Final = 1_000_000  # delivered_ppm of a whole delivery
FEE_ACCOUNT: Final = "fees"


class Command(Message, frozen=True, kw_only=True):
    """Base of every command: `ts` is when it entered the log, in ns since the epoch."""

    ts: Nanoseconds


class ListInstrument(Command, tag="list_instrument", frozen=True, kw_only=True):
    symbol: Identifier
    gpu: Label
    region: Label
    delivery_start: Nanoseconds
    delivery_hours: DeliveryHours
    tick_size: str
    max_order_quantity: MaxOrderQuantity
    maker_fee_bps: NonNegativeInt
    taker_fee_bps: NonNegativeInt
    # v2, Delivery: a deliverable instrument's bond per GPU-hour, a USDC amount (>= 0)
    bond_per_gpu_hour: str | None = None


class Deposit(Command, tag="deposit", frozen=True, kw_only=True):
    account: Identifier
    asset: str
    amount: AmountInput
    deposit_id: str | None = None


class Withdraw(Command, tag="withdraw", frozen=True, kw_only=True):
    account: Identifier
    asset: str
    amount: AmountInput


class NewOrder(Command, tag="new_order", frozen=True, kw_only=True):
    account: Identifier
    client_order_id: Identifier
    instrument: str
    side: Side
    order_type: OrderType
    price: str | None = None
    quantity: int
    time_in_force: TimeInForce | None = None
    expire_at: Nanoseconds | None = None
    post_only: bool = False
    stp: SelfTradePrevention = "cancel_newest"


class CancelOrder(Command, tag="cancel_order", frozen=True, kw_only=True):
    account: Identifier
    client_order_id: Identifier
    reason: CancelReason = "user"  # the default is omitted: a v1 command encodes the same


class AmendOrder(Command, tag="amend_order", frozen=True, kw_only=True):
    account: Identifier
    client_order_id: Identifier
    new_price: str | None = None
    new_quantity: int | None = None


class MassCancel(Command, tag="mass_cancel", frozen=True, kw_only=True):
    account: Identifier
    instrument: str | None = None
    reason: MassCancelReason = "mass_cancel"


class Tick(Command, tag="tick", frozen=True, kw_only=True):
    pass


class IssueCapacity(Command, tag="issue_capacity", frozen=True, kw_only=True):
    """v2, Delivery: an operator bonds `quantity` GPU-hours of a node and gets the tokens."""

    account: Identifier
    issue_id: Identifier
    instrument: str
    node_id: Identifier
    quantity: int


class NewStripOrder(Command, tag="new_strip_order", frozen=True, kw_only=True):
    """v2, Strip orders: `quantity` GPU-hours in each of 2-168 consecutive hours, all or
    nothing, at a total price limit; never rests. `client_order_id` has at most 59
    characters, so that a leg's `CLIENT_ORDER_ID:LEG_INDEX` fits in 64."""

    account: Identifier
    client_order_id: StripClientOrderId
    side: Side
    instruments: list[str]
    quantity: int
    limit_total: str


class DeliveryReport(Command, tag="delivery_report", frozen=True, kw_only=True):
    """v2, Delivery: the delivery service's measure of one assignment (issue, holder)."""

    issue_id: Identifier
    holder: Identifier
    # a signed 64-bit integer, else malformed; outside 0..PPM is the engine's invalid_ppm
    delivered_ppm: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    evidence: Annotated[str, msgspec.Meta(max_length=EVIDENCE_MAX_LENGTH)] | None = None


AnyCommand = (
    ListInstrument | Deposit | Withdraw | NewOrder | CancelOrder | AmendOrder | MassCancel | Tick
    | IssueCapacity | DeliveryReport | NewStripOrder
)
COMMAND_TYPES: Final[dict[str, type[Command]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (ListInstrument, Deposit, Withdraw, NewOrder, CancelOrder, AmendOrder,
                MassCancel, Tick, IssueCapacity, DeliveryReport, NewStripOrder)
}
# Commands that name an account (and an order) whose malformation is `invalid_command`.
ACCOUNT_COMMANDS: Final = frozenset(
    {"deposit", "withdraw", "new_order", "cancel_order", "amend_order", "mass_cancel",
     "new_strip_order"}
)
ORDER_COMMANDS: Final = frozenset({"new_order", "cancel_order", "amend_order", "new_strip_order"})


class MalformedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A command that did not decode, with what could be salvaged for its rejection event.

    `type` is the type as given (or "" when absent); `account`, `client_order_id`, and
    `ts` are set only when they are well formed; `instrument`, `asset` and `amount` are
    echoed when they are strings (or an integer amount); `error` says which field is wrong
    and why.
    """

    type: str
    error: str
    ts: int | None = None
    account: str | None = None
    client_order_id: str | None = None
    instrument: str | None = None
    asset: str | None = None
    amount: str | int | None = None
