"""What the protocol's property and fuzz tests share: the command and event classes, the wire
formats as a strategy, the parts of a strategy from msgspec type information that do not
depend on how valid the values must be (int64 bounds; booleans, None, literals, unions), and
the Delivery (v2) commands and flows the differential tests of the cores and the reference
model run.

A delivery flow is a command log in which delivery matters: deliverable instruments (and one
that is not), USDC deposits, issuance by a few operators (one too thin for most of its
issues, ids repeated and unknown), trading of the tokens (so holders differ from issuers and
issuers keep some of their own), tokens withdrawn before close and tokens deposited but never
issued here, the close, then delivery reports of every kind, with malformed lines among them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, get_args

import msgspec
import msgspec.inspect as inspect
from hypothesis import strategies as st

from protocol import FORMATS, AnyCommand, AnyEvent

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

COMMAND_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(AnyCommand)
EVENT_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(AnyEvent)
formats = st.sampled_from(FORMATS)


def int64_bounds(info: inspect.IntType) -> tuple[int, int]:
    """Return the lowest and highest value within the Meta bounds and within int64 (so that
    msgpack can carry them)."""
    low, high = INT64_MIN, INT64_MAX
    if info.ge is not None:
        low = max(low, info.ge)
    if info.gt is not None:
        low = max(low, info.gt + 1)
    if info.le is not None:
        high = min(high, info.le)
    if info.lt is not None:
        high = min(high, info.lt - 1)
    return low, high


def choice_values(
    info: inspect.Type, values_of: Callable[[inspect.Type], st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any] | None:
    """Return a strategy for a bool, None, literal or union field (a union's members drawn
    from `values_of`), or None for any other type."""
    if isinstance(info, inspect.BoolType):
        return st.booleans()
    if isinstance(info, inspect.NoneType):
        return st.none()
    if isinstance(info, inspect.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, inspect.UnionType):
        return st.one_of(*(values_of(member) for member in info.types))
    return None


# ------------------------------------------------------------------------- Delivery (v2)

SECOND: Final = 1_000_000_000
DELIVERY_T0: Final = 1_700_000_000 * SECOND
DELIVERABLE: Final = "D-1"  # closes at DELIVERY_T0 + FIRST_CLOSE, with PLAIN
PLAIN: Final = "PLAIN"  # listed without a bond: closes as in v1
LATER: Final = "D-2"  # deliverable, closes at DELIVERY_T0 + SECOND_CLOSE
FIRST_CLOSE: Final = 100 * SECOND
SECOND_CLOSE: Final = 200 * SECOND
OPERATORS: Final = ("op1", "op2", "op3")  # op3 is thin: most of its bonds are refused
# Byte order is not case-insensitive order: "0xAbC" < "Zed" < "amy" < "bob" < "op1".
TRADERS: Final = ("0xAbC", "Zed", "amy", "bob")
DELIVERY_ACCOUNTS: Final = OPERATORS + TRADERS
ISSUE_IDS: Final = ("i1", "i2", "i3", "i4", "i5", "i6")
NODE_IDS: Final = ("n1", "n2", "rack-7:gpu.3")
CLIENT_ORDER_IDS: Final = ("c1", "c2", "c3", "c4")

# A bond per GPU-hour as the venue lists it: canonical or not, zero, a micro-USDC, one so
# large that a compensation's q x B x ppm no longer fits in 64 bits, and the largest USDC
# amount, whose bond passes 64 bits from 19 GPU-hours on.
bonds = st.sampled_from(("3", "3.000", "0", "1.5", "0.000001", "2.333333", "1000000000",
                         "1000000000000"))
# Listings whose bond makes them malformed (`null` is no bond: a v1 listing).
BAD_BOND_LISTINGS: Final = tuple(
    b'{"type":"list_instrument","ts":TS,"symbol":"BAD-%d","gpu":"H100","region":"eu",'
    b'"delivery_start":%d,"delivery_hours":1,"tick_size":"0.1","max_order_quantity":40,'
    b'"maker_fee_bps":10,"taker_fee_bps":20,"bond_per_gpu_hour":%s}'
    % (number, DELIVERY_T0 + SECOND_CLOSE, bond)
    for number, bond in enumerate((b'"-1"', b'"1.0000001"', b'""', b'"1e3"', b"3", b"null",
                                   b'"1000000000000.000001"'))
)
# issue_capacity and delivery_report lines that are malformed, or valid at an edge of the
# schema (evidence of 128 characters that are 2 or 4 bytes each; a null evidence; a
# delivered_ppm at the edge of signed 64 bits).
DELIVERY_EDGE_LINES: Final = (
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":"D-1"}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"bad id",'
    b'"instrument":"D-1","node_id":"n1","quantity":1}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":"D-1",'
    b'"node_id":"n1","quantity":"5"}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":"D-1",'
    b'"node_id":"n1","quantity":1.0}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":7,'
    b'"node_id":"n1","quantity":1}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":"D-1",'
    b'"node_id":null,"quantity":1}',
    b'{"type":"issue_capacity","ts":TS,"issue_id":"i1","instrument":"D-1","node_id":"n1",'
    b'"quantity":1}',
    b'{"type":"issue_capacity","ts":TS,"account":"op1","issue_id":"i1","instrument":"D-1",'
    b'"node_id":"n1","quantity":1,"bond":"3"}',
    b'{"type":"issue_capacity","ts":TS,"account":"op2","issue_id":"i6","instrument":"D-1",'
    b'"node_id":"n2","quantity":18446744073709551616}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy","delivered_ppm":"5"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy",'
    b'"delivered_ppm":9223372036854775808}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy",'
    b'"delivered_ppm":-9223372036854775809}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy",'
    b'"delivered_ppm":9223372036854775807}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy",'
    b'"delivered_ppm":-9223372036854775808}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy","delivered_ppm":1.0}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","delivered_ppm":5}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"' + b"i" * 65 + b'","holder":"amy",'
    b'"delivered_ppm":5}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy","delivered_ppm":5,'
    b'"evidence":"' + b"e" * 129 + b'"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy","delivered_ppm":5,'
    b'"evidence":5}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"amy","delivered_ppm":5,'
    b'"evidence":"' + b"\\u00e9" * 128 + b'"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i2","holder":"bob","delivered_ppm":5,'
    b'"evidence":"' + "\u00e9".encode() * 129 + b'"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"Zed","delivered_ppm":7,'
    b'"evidence":"' + "\U0001f600".encode() * 128 + b'"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i2","holder":"bob","delivered_ppm":7,'
    b'"evidence":"' + b"\\ud83d\\ude00" * 128 + b'"}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i1","holder":"0xAbC","delivered_ppm":0,'
    b'"evidence":null}',
    b'{"type":"delivery_report","ts":TS,"issue_id":"i3","holder":"amy","delivered_ppm":9,'
    b'"evidence":""}',
)


def listing_fields(symbol: str, delivery_start: int, bond: str | None,
                   **overrides: Any) -> dict[str, Any]:
    """A list_instrument command's fields (no ts); deliverable when `bond` is given."""
    fields: dict[str, Any] = {
        "type": "list_instrument", "symbol": symbol, "gpu": "H100-SXM-80GB",
        "region": "eu-west", "delivery_start": delivery_start, "delivery_hours": 1,
        "tick_size": "0.1", "max_order_quantity": 40, "maker_fee_bps": 10,
        "taker_fee_bps": 20, **overrides,
    }
    if bond is not None:
        fields["bond_per_gpu_hour"] = bond
    return fields


issue_quantities = st.sampled_from((1, 1, 2, 3, 5, 8, 12) * 3 + (40, 0, 41, -1, 2**63, 2**64 - 1))


@st.composite
def issue_capacities(draw: st.DrawFn, instruments: tuple[str, ...]) -> dict[str, Any]:
    """An issue_capacity, mostly by an operator on a deliverable instrument; the ids repeat
    (duplicate_issue), and some name another account, the plain or an unknown instrument."""
    return {
        "type": "issue_capacity",
        "account": draw(st.sampled_from(OPERATORS * 4 + TRADERS)),
        "issue_id": draw(st.sampled_from(ISSUE_IDS)),
        "instrument": draw(st.sampled_from(instruments * 4 + (PLAIN, "NOPE", "USDC"))),
        "node_id": draw(st.sampled_from(NODE_IDS)),
        "quantity": draw(issue_quantities),
    }


delivered_ppms = st.one_of(
    st.sampled_from((0, 1_000_000, 1, 999_999, 500_000, 1_000_001, -1)),
    st.integers(0, 1_000_000),
)


@st.composite
def delivery_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A delivery_report: an (issue, holder) pair that is often assigned, sometimes not or
    unknown, with a delivered share at the ends, in between or out of range."""
    report: dict[str, Any] = {
        "type": "delivery_report",
        "issue_id": draw(st.sampled_from(ISSUE_IDS[:3] * 3 + ISSUE_IDS[3:] + ("nope",))),
        "holder": draw(st.sampled_from(TRADERS * 3 + OPERATORS + ("nobody",))),
        "delivered_ppm": draw(delivered_ppms),
    }
    if draw(st.booleans()):
        report["evidence"] = draw(st.sampled_from(("", "0xabc123", "r" * 128)))
    return report


@st.composite
def delivery_orders(draw: st.DrawFn, instruments: tuple[str, ...]) -> dict[str, Any]:
    """An order on a deliverable instrument at one of three prices, so that they cross:
    mostly issuers sell their tokens and traders buy them, and sometimes the other way."""
    side = draw(st.sampled_from(("buy", "sell")))
    sellers, buyers = OPERATORS * 3 + TRADERS, TRADERS * 3 + OPERATORS
    order: dict[str, Any] = {
        "type": "new_order",
        "account": draw(st.sampled_from(sellers if side == "sell" else buyers)),
        "client_order_id": draw(st.sampled_from(CLIENT_ORDER_IDS)),
        "instrument": draw(st.sampled_from(instruments)),
        "side": side,
        "quantity": draw(st.integers(1, 6)),
    }
    if draw(st.integers(0, 4)) == 0:
        order["order_type"] = "market"
    else:
        order["order_type"] = "limit"
        prices = ("0.9", "1", "1.1") if side == "sell" else ("1", "1.1", "1.1")
        order["price"] = draw(st.sampled_from(prices))
    return order


@st.composite
def token_moves(draw: st.DrawFn, instruments: tuple[str, ...]) -> dict[str, Any]:
    """A deposit or withdrawal of a deliverable token (refused once it has closed)."""
    kind = draw(st.sampled_from(("deposit", "withdraw", "withdraw")))
    return {"type": kind, "account": draw(st.sampled_from(OPERATORS * 2 + TRADERS)),
            "asset": draw(st.sampled_from(instruments)),
            "amount": draw(st.sampled_from((1, 2, 5, 0, "x")))}


def raw_lines(lines: tuple[bytes, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """One of `lines` as is (its TS replaced by the time it is sent)."""
    return st.sampled_from(lines).map(lambda line: {"raw": line})


@st.composite
def delivery_flows(draw: st.DrawFn) -> list[bytes]:
    """A delivery flow as JSON lines (see the module docstring), times going forward:
    listed and funded, issued and traded before the first close, reported on after it and
    again after the second close."""
    lines: list[bytes] = []
    clock = DELIVERY_T0

    def send(command: dict[str, Any], ts: int) -> None:
        if "raw" in command:
            lines.append(command["raw"].replace(b"TS", str(ts).encode()))
        else:
            lines.append(msgspec.json.encode({**command, "ts": ts}))

    first_close, second_close = DELIVERY_T0 + FIRST_CLOSE, DELIVERY_T0 + SECOND_CLOSE
    fees = draw(st.sampled_from(({}, {"maker_fee_bps": 0, "taker_fee_bps": 0})))
    send(listing_fields(DELIVERABLE, first_close, draw(bonds), **fees), clock)
    send(listing_fields(PLAIN, first_close, None), clock)
    send(listing_fields(LATER, second_close, draw(bonds)), clock)
    for line in draw(st.lists(st.sampled_from(BAD_BOND_LISTINGS), max_size=2, unique=True)):
        send({"raw": line}, clock)
    usdc = {"op1": draw(st.sampled_from(("1000", "1000000000000"))), "op2": "300", "op3": "2"}
    for account in DELIVERY_ACCOUNTS:
        send({"type": "deposit", "account": account, "asset": "USDC",
              "amount": usdc.get(account, "1000")}, clock)
    for account in draw(st.lists(st.sampled_from(TRADERS), max_size=2, unique=True)):
        send({"type": "deposit", "account": account, "asset": DELIVERABLE,
              "amount": draw(st.integers(1, 4))}, clock)  # tokens never issued here

    # Most flows open with each operator issuing on the first deliverable instrument and
    # offering part of it, which traders buy: the close then has holders besides issuers.
    for number, operator in enumerate(OPERATORS, start=1):
        if draw(st.integers(0, 3)) > 0:
            quantity = draw(st.integers(1, 12))
            send({"type": "issue_capacity", "account": operator, "issue_id": f"i{number}",
                  "instrument": DELIVERABLE, "node_id": NODE_IDS[number - 1],
                  "quantity": quantity}, clock)
            send({"type": "new_order", "account": operator, "client_order_id": "offer",
                  "instrument": DELIVERABLE, "side": "sell", "order_type": "limit",
                  "price": draw(st.sampled_from(("0.9", "1"))),
                  "quantity": draw(st.integers(1, quantity))}, clock)
    for trader in draw(st.lists(st.sampled_from(TRADERS), min_size=1, max_size=4)):
        send({"type": "new_order", "account": trader, "client_order_id": "bid",
              "instrument": DELIVERABLE, "side": "buy", "order_type": "market",
              "quantity": draw(st.integers(1, 8))}, clock)

    both = (DELIVERABLE, LATER)
    before_close = st.one_of(
        issue_capacities(both), issue_capacities(both), issue_capacities(both),
        delivery_orders(both), delivery_orders(both), delivery_orders(both),
        delivery_orders(both), token_moves(both), delivery_reports(), st.just({"type": "tick"}),
        raw_lines(DELIVERY_EDGE_LINES),
    )
    for command in draw(st.lists(before_close, min_size=8, max_size=45)):
        clock += draw(st.sampled_from((0, 0, SECOND)))
        send(command, clock)

    # The first close comes with whichever command first carries a later ts.
    after_first = st.one_of(
        delivery_reports(), delivery_reports(), delivery_reports(), delivery_reports(),
        issue_capacities(both), delivery_orders((LATER,)), token_moves(both),
        raw_lines(DELIVERY_EDGE_LINES),
    )
    closer = draw(st.one_of(st.just({"type": "tick"}), after_first))
    clock = first_close + draw(st.sampled_from((0, 1, SECOND)))
    send(closer, clock)
    for command in draw(st.lists(after_first, min_size=4, max_size=25)):
        clock += draw(st.sampled_from((0, SECOND)))
        send(command, clock)
    # Reports on the pairs the opening is likely to have assigned, some more than once.
    pairs = [(issue_id, holder) for issue_id in ISSUE_IDS[:3] for holder in TRADERS]
    for issue_id, holder in draw(st.lists(st.sampled_from(pairs), max_size=8)):
        send({"type": "delivery_report", "issue_id": issue_id, "holder": holder,
              "delivered_ppm": draw(delivered_ppms)}, clock)

    clock = second_close
    send({"type": "tick"}, clock)
    after_second = st.one_of(delivery_reports(), raw_lines(DELIVERY_EDGE_LINES))
    for command in draw(st.lists(after_second, max_size=15)):
        send(command, clock)
    return lines


def delivery_edge_flow(start: int = DELIVERY_T0) -> list[bytes]:
    """A fixed delivery flow at the edges, as JSON lines: a bond so large that q x B x ppm
    passes 64 bits, the largest bond (an issue of it past 64 bits is refused, one of 2 hours
    is not), a bond of 0 (its issue stays listed while assigned), issuers left with
    some of their tokens, tokens deposited but never issued, a holder served by two issues
    and tokens beyond every issue; after the first close every line of DELIVERY_EDGE_LINES
    and BAD_BOND_LISTINGS, then more reports, before and after the second close. Times
    begin at `start`."""
    first_close, second_close = start + FIRST_CLOSE, start + SECOND_CLOSE
    big, whale = "1000000000", "1000000000000"  # per GPU-hour; 10^18 micro-USDC
    largest = "LARGEST"
    commands: list[tuple[int, dict[str, Any]]] = [
        (0, listing_fields(DELIVERABLE, first_close, big)),
        (0, listing_fields(PLAIN, first_close, None)),
        (0, listing_fields(LATER, second_close, "0")),
        (0, listing_fields(largest, first_close, whale)),
        *((0, {"type": "deposit", "account": account, "asset": "USDC",
               "amount": whale if account in OPERATORS[:2] else "1000"})
          for account in DELIVERY_ACCOUNTS),
        *((0, {"type": "deposit", "account": "whale", "asset": "USDC", "amount": whale})
          for _ in range(2)),
        *((0, {"type": "issue_capacity", "account": "whale", "issue_id": "w1",
               "instrument": largest, "node_id": "n1", "quantity": quantity})
          for quantity in (40, 19, 2)),
        (0, {"type": "new_order", "account": "whale", "client_order_id": "offer",
             "instrument": largest, "side": "sell", "order_type": "limit", "price": "1",
             "quantity": 1}),
        (0, {"type": "new_order", "account": "bob", "client_order_id": "bid",
             "instrument": largest, "side": "buy", "order_type": "limit", "price": "1",
             "quantity": 1}),
        (0, {"type": "issue_capacity", "account": "op1", "issue_id": "i1",
             "instrument": DELIVERABLE, "node_id": "n1", "quantity": 40}),
        (0, {"type": "issue_capacity", "account": "op2", "issue_id": "i2",
             "instrument": DELIVERABLE, "node_id": "n2", "quantity": 10}),
        (0, {"type": "issue_capacity", "account": "op3", "issue_id": "i3",
             "instrument": LATER, "node_id": "n1", "quantity": 5}),
        (0, {"type": "new_order", "account": "op1", "client_order_id": "offer",
             "instrument": DELIVERABLE, "side": "sell", "order_type": "limit",
             "price": "0.9", "quantity": 20}),
        (0, {"type": "new_order", "account": "op2", "client_order_id": "offer",
             "instrument": DELIVERABLE, "side": "sell", "order_type": "limit",
             "price": "1", "quantity": 10}),
        (0, {"type": "new_order", "account": "op3", "client_order_id": "offer",
             "instrument": LATER, "side": "sell", "order_type": "limit", "price": "1",
             "quantity": 3}),
        *((0, {"type": "new_order", "account": account, "client_order_id": "bid",
               "instrument": DELIVERABLE, "side": "buy", "order_type": "market",
               "quantity": quantity})
          for account, quantity in (("amy", 12), ("Zed", 8), ("0xAbC", 6), ("bob", 4))),
        (0, {"type": "new_order", "account": "amy", "client_order_id": "bid",
             "instrument": LATER, "side": "buy", "order_type": "market", "quantity": 3}),
        (0, {"type": "deposit", "account": "amy", "asset": DELIVERABLE, "amount": 2}),
        (0, {"type": "delivery_report", "issue_id": "i1", "holder": "amy",
             "delivered_ppm": 0}),
        (FIRST_CLOSE, {"type": "tick"}),
    ]
    after_close = str(first_close).encode()
    lines = [msgspec.json.encode({**command, "ts": start + at}) for at, command in commands]
    lines += [line.replace(b"TS", after_close) for line in DELIVERY_EDGE_LINES]
    lines += [line.replace(b"TS", after_close) for line in BAD_BOND_LISTINGS]
    commands = [
        (FIRST_CLOSE, {"type": "delivery_report", "issue_id": "i2", "holder": "amy",
                       "delivered_ppm": 1, "evidence": "0xabc123"}),
        (FIRST_CLOSE, {"type": "delivery_report", "issue_id": "i1", "holder": "Zed",
                       "delivered_ppm": 999_999}),
        (FIRST_CLOSE, {"type": "delivery_report", "issue_id": "w1", "holder": "bob",
                       "delivered_ppm": 1}),
        (FIRST_CLOSE, {"type": "issue_capacity", "account": "op1", "issue_id": "i4",
                       "instrument": DELIVERABLE, "node_id": "n1", "quantity": 1}),
        (FIRST_CLOSE, {"type": "deposit", "account": "amy", "asset": DELIVERABLE,
                       "amount": "x"}),
        (FIRST_CLOSE, {"type": "withdraw", "account": "amy", "asset": PLAIN, "amount": 1}),
    ]
    lines += [msgspec.json.encode({**command, "ts": start + at}) for at, command in commands]
    lines += [msgspec.json.encode({"type": "tick", "ts": second_close})]
    lines += [msgspec.json.encode({"type": "delivery_report", "ts": second_close,
                                   "issue_id": "i3", "holder": holder, "delivered_ppm": 0})
              for holder in ("amy", "amy", "op3")]
    return lines
