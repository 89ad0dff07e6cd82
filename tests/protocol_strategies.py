"""What the protocol's property and fuzz tests share: the command and event classes, the wire
formats as a strategy, the parts of a strategy from msgspec type information that do not
depend on how valid the values must be (int64 bounds; booleans, None, literals, unions), and
the Delivery (v2) and Strip orders (v2) commands and flows the differential tests of the
cores and the reference model run.

A delivery flow is a command log in which delivery matters: deliverable instruments (and one
that is not), USDC deposits, issuance by a few operators (one too thin for most of its
issues, ids repeated and unknown), trading of the tokens (so holders differ from issuers and
issuers keep some of their own), tokens withdrawn before close and tokens deposited but never
issued here, the close, then delivery reports of every kind, with malformed lines among them.

A strip flow is a command log in which strips matter: consecutive hours of one class and
region (a gap after them, the same hours of a second class, and hours of a second region,
the first of them 2 hours long), books on every hour with the strip accounts' own orders
among the makers, then strips that fill, lack liquidity in a leg, pass their limit, lack
funds or tokens, buy and sell, among strips broken in every field, more makers, cancels,
withdrawals and market orders, while the first hours close. `strip_edge_flow` adds the
edges a random flow seldom reaches: 168 and 169 legs, limits and funds exact to the
micro-USDC with fees floored per fill, and notionals past 64 bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, get_args

import msgspec
import msgspec.inspect as inspect
from hypothesis import strategies as st

from protocol import FORMATS, AnyCommand, AnyEvent, format_micro, parse_micro

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


# ------------------------------------------------------------------------ Strip orders (v2)

HOUR: Final = 3600 * SECOND
STRIP_T0: Final = 1_750_000_000 * SECOND
STRIP_FIRST_CLOSE: Final = 100 * SECOND  # the first hour's delivery starts (and trading closes)
# Hours of H100-SXM-80GB in eu-west, one after the other from STRIP_T0 + STRIP_FIRST_CLOSE;
# E6 is never listed, so E5 and E7 are not consecutive. E0 is deliverable (its tokens are
# redeemed when it closes); E3 takes at most 20 GPU-hours an order, the others 40.
EU_HOURS: Final = ("E0", "E1", "E2", "E3", "E4", "E5")
EU_AFTER_GAP: Final = "E7"
# A100-SXM-80GB in eu-west at the times of E0 and E1: a strip mixing them is of two classes.
A100_HOURS: Final = ("A0", "A1")
# H100-SXM-80GB in us-east: U0 lasts 2 hours (from E0's start), so U1 follows 2 hours later.
US_HOURS: Final = ("U0", "U1", "U2")
STRIP_SYMBOLS: Final = EU_HOURS + (EU_AFTER_GAP,) + A100_HOURS + US_HOURS
MAKERS: Final = ("mm1", "mm2")
# amy and bob rest orders of their own that their strips pass over; bob holds tokens of the
# first three hours only; erin is thin; ghost never deposits; fees is the exchange's account.
STRIP_TRADERS: Final = ("amy", "bob", "erin", "ghost", "fees")
STRIP_CLIENT_ORDER_IDS: Final = ("s1", "s2", "c1", "x" * 59)  # c1 is also an order's id


def strip_listings(start: int) -> list[dict[str, Any]]:
    """The listings of a strip flow (no ts) whose first hour starts at `start`."""
    listings = []
    for index, symbol in enumerate(EU_HOURS):
        listings.append(listing_fields(
            symbol, start + index * HOUR, "1.5" if index == 0 else None,
            taker_fee_bps=20 + 5 * index, max_order_quantity=20 if symbol == "E3" else 40))
    listings.append(listing_fields(EU_AFTER_GAP, start + 7 * HOUR, None))
    for index, symbol in enumerate(A100_HOURS):
        listings.append(listing_fields(symbol, start + index * HOUR, None, gpu="A100-SXM-80GB"))
    us_starts = (start, start + 2 * HOUR, start + 3 * HOUR)
    for symbol, us_start in zip(US_HOURS, us_starts, strict=True):
        listings.append(listing_fields(symbol, us_start, None, region="us-east",
                                       delivery_hours=2 if symbol == "U0" else 1,
                                       maker_fee_bps=0, taker_fee_bps=0))
    return listings


def strip_funding() -> list[dict[str, Any]]:
    """USDC for every strip account but ghost (erin thinly), and tokens to sell."""
    usdc = {"mm1": "10000", "mm2": "10000", "amy": "500", "bob": "500", "erin": "3",
            "fees": "50"}
    moves: list[dict[str, Any]] = [
        {"type": "deposit", "account": account, "asset": "USDC", "amount": amount}
        for account, amount in usdc.items()]
    for symbol in STRIP_SYMBOLS:
        for account, amount in (("mm1", 30), ("mm2", 30), ("amy", 10)):
            moves.append({"type": "deposit", "account": account, "asset": symbol,
                          "amount": amount})
    for symbol in EU_HOURS[:3]:
        moves.append({"type": "deposit", "account": "bob", "asset": symbol, "amount": 6})
    return moves


@st.composite
def strip_books(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Books on every hour: the makers offer at 2 and 2.5 and bid at 1 and 0.8, and on some
    hours amy, whose own strips pass over them, offers at 1.5 and bids at 1.2."""
    orders = []
    for symbol in STRIP_SYMBOLS:
        levels = [("mm1", "sell", "2"), ("mm2", "sell", "2.5"), ("mm1", "buy", "1"),
                  ("mm2", "buy", "0.8")]
        if draw(st.booleans()):
            levels += [("amy", "sell", "1.5"), ("amy", "buy", "1.2")]
        for account, side, price in levels:
            orders.append({"type": "new_order", "account": account,
                           "client_order_id": f"{symbol}-{side}", "instrument": symbol,
                           "side": side, "order_type": "limit", "price": price,
                           "quantity": draw(st.integers(1, 8))})
    return orders


@st.composite
def strip_makers(draw: st.DrawFn) -> dict[str, Any]:
    """A limit order resting on one of the hours: mostly the makers', often amy's or bob's
    (which their own strips must pass over); bids below offers, sometimes crossing."""
    side = draw(st.sampled_from(("buy", "sell")))
    prices = ("1", "1.5", "2", "2.5") if side == "sell" else ("0.5", "0.8", "1", "1.2")
    return {
        "type": "new_order", "account": draw(st.sampled_from(MAKERS * 2 + ("amy", "bob"))),
        "client_order_id": draw(st.sampled_from(CLIENT_ORDER_IDS)),
        "instrument": draw(st.sampled_from(STRIP_SYMBOLS)), "side": side,
        "order_type": "limit", "price": draw(st.sampled_from(prices)),
        "quantity": draw(st.integers(1, 10)),
    }


@st.composite
def strip_legs(draw: st.DrawFn) -> list[str]:
    """A run of consecutive hours of one class and region: the strip's legs."""
    hours = draw(st.sampled_from((EU_HOURS,) * 4 + (US_HOURS,)))
    first = draw(st.integers(0, len(hours) - 2))
    count = draw(st.integers(2, len(hours) - first))
    return list(hours[first:first + count])


@st.composite
def strip_orders(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed strip over consecutive hours, buy or sell, with a total limit of a
    price per GPU-hour from low to high: it fills, or lacks liquidity in a leg, passes its
    limit, or lacks funds or tokens."""
    legs = draw(strip_legs())
    side = draw(st.sampled_from(("buy", "buy", "sell")))
    quantity = draw(st.sampled_from((1, 1, 2, 3, 5, 8)))
    per_hour = ("1", "2", "2.5", "3", "5") if side == "buy" else ("0.5", "0.8", "1", "2")
    per_hour_micro = parse_micro(draw(st.sampled_from(per_hour)))
    limit_micro = per_hour_micro * quantity * len(legs) + draw(st.sampled_from((0, 0, 1, -1)))
    return {
        "type": "new_strip_order",
        "account": draw(st.sampled_from(("amy", "bob") * 3 + STRIP_TRADERS + MAKERS)),
        "client_order_id": draw(st.sampled_from(STRIP_CLIENT_ORDER_IDS)), "side": side,
        "instruments": legs, "quantity": quantity, "limit_total": format_micro(limit_micro),
    }


# A field of a strip replaced (or, with None here, left out): malformed, refused by a check
# before the simulation, or valid at an edge (59 characters, 2 and 168 legs, 40 GPU-hours).
STRIP_FIELD_BREAKS: Final[dict[str, tuple[Any, ...]]] = {
    "client_order_id": ("y" * 59, "y" * 60, "y" * 64, "y" * 65, "bad id", "", None, 7),
    "account": ("bad id", None, "x" * 65),
    "side": ("hold", "BUY", None, 1),
    "instruments": (
        ["E0"], [], "E0", [1, 2], None, ["E0", "E1", "E0"], ["E1", "E1"], ["E0", "NOPE"],
        ["USDC", "E0"], ["E1", "E0"], ["E4", "E5", "E7"], ["E5", "E7"], ["E0", "A1"],
        ["A0", "A1"], ["U0", "U1", "U2"], ["U0", "E1"], ["E0", "E2"], ["E3", "E4", "E5"],
        [f"X{index}" for index in range(168)], [f"X{index}" for index in range(169)],
        ["E0", "E1", 2], ["E0", None]),
    "quantity": (0, -1, 40, 41, 21, 20, "5", 1.5, None, 2**63, 2**64, -(2**63)),
    "limit_total": ("0", "-1", "1.0000001", "1e3", ".5", "", 12, None, "1000000000000",
                    "1000000000000.000001", " 1", "0.000001", "2.500000"),
    "stp": ("decrement",),  # an unknown field
    "price": ("1",),
}


@st.composite
def broken_strips(draw: st.DrawFn) -> dict[str, Any]:
    """A strip with one field replaced, left out or added (STRIP_FIELD_BREAKS)."""
    strip = draw(strip_orders())
    field = draw(st.sampled_from(sorted(STRIP_FIELD_BREAKS)))
    value = draw(st.sampled_from(STRIP_FIELD_BREAKS[field]))
    if value is None and draw(st.booleans()):
        strip.pop(field, None)
    else:
        strip[field] = value
    return strip


def as_market_order(order: dict[str, Any]) -> dict[str, Any]:
    """The same order at the market: it takes from the hours the strips take from."""
    market = {**order, "order_type": "market"}
    del market["price"]
    return market


@st.composite
def strip_cancels(draw: st.DrawFn) -> dict[str, Any]:
    """A cancel of an order that may rest, or a withdrawal of tokens a sell strip needs."""
    account = draw(st.sampled_from(MAKERS + ("amy", "bob")))
    if draw(st.booleans()):
        return {"type": "cancel_order", "account": account,
                "client_order_id": draw(st.sampled_from(CLIENT_ORDER_IDS))}
    return {"type": "withdraw", "account": account, "asset": draw(st.sampled_from(EU_HOURS)),
            "amount": draw(st.sampled_from((1, 5, 10)))}


@st.composite
def strip_flows(draw: st.DrawFn) -> list[bytes]:
    """A strip flow as JSON lines, times going forward: the hours listed and funded, makers
    resting on them, then strips well formed and broken among more makers, cancels,
    withdrawals and market orders; the first hour closes (and maybe the second), and strips
    go on, some naming a closed hour."""
    lines: list[bytes] = []
    clock = STRIP_T0
    first_hour = STRIP_T0 + STRIP_FIRST_CLOSE

    def send(command: dict[str, Any], ts: int) -> None:
        lines.append(msgspec.json.encode({**command, "ts": ts}))

    for command in strip_listings(first_hour) + strip_funding() + draw(strip_books()):
        send(command, clock)
    for command in draw(st.lists(strip_makers(), max_size=15)):
        send(command, clock)
    trading = st.one_of(strip_orders(), strip_orders(), strip_orders(), strip_orders(),
                        broken_strips(), broken_strips(), strip_makers(), strip_makers(),
                        strip_cancels(), strip_makers().map(as_market_order),
                        st.just({"type": "tick"}))
    for command in draw(st.lists(trading, min_size=5, max_size=40)):
        clock += draw(st.sampled_from((0, 0, SECOND)))
        send(command, clock)
    closes = draw(st.sampled_from((1, 1, 2)))  # hours that close: E0 (with A0 and U0), E1
    for hour in range(closes):
        clock = first_hour + hour * HOUR + draw(st.sampled_from((0, 1)))
        send(draw(st.one_of(st.just({"type": "tick"}), strip_orders())), clock)
        for command in draw(st.lists(trading, min_size=2, max_size=15)):
            send(command, clock)
    return lines


# A day and a week of hours in ap-south: S000..S167 make the longest strip, S168 one too many.
WEEK_HOURS: Final = tuple(f"S{index:03d}" for index in range(169))
# Four hours in which a GPU-hour is bid at the largest price, so that a strip's notional
# passes 64 bits (signed) while every trade's stays below.
BIG_HOURS: Final = ("B0", "B1", "B2", "B3")
BIG_PRICE: Final = "1000000000000"


def week_price_micro(index: int) -> int:
    """The maker's offer on hour `index`: a price whose fees do not come out whole."""
    return 1_000_007 + 1_000 * (index % 9)


def week_taker_fee_bps(index: int) -> int:
    return 333 * (index % 4)


def strip_cost_micro(quantity: int, hours: range) -> tuple[int, int]:
    """Notional and taker fees of buying `quantity` of each of `hours` at the week's offers,
    one fill a leg, each fee floored on its own (as the protocol charges them)."""
    notional = fees = 0
    for index in hours:
        fill = quantity * week_price_micro(index)
        notional += fill
        fees += fill * week_taker_fee_bps(index) // 10_000
    return notional, fees


def strip_edge_flow(start: int = STRIP_T0) -> list[bytes]:
    """A fixed strip flow at the edges, as JSON lines, times from `start`: the 168-leg strip
    with a limit one micro-USDC below its notional (limit_exceeded), then at it (filled,
    passing over the account's own better offers, under an id its open order has too);
    the 168 legs again by an account one micro-USDC short of notional plus fees floored per
    fill, then with that micro-USDC (filled: the makers' orders end with their trades); the
    169 legs (invalid_order) and the week with its offers gone (insufficient_liquidity);
    sell strips over two bid levels passing over the account's own better bid, exactly at
    their limit, then above it, then one token short; a sell strip whose notional passes
    2^63 micro-USDC, and buys of the same hours above the largest limit and with a limit
    beyond the largest amount; at the close of the first hour a strip naming it
    (instrument_closed) and one starting after it."""
    first_hour = start + 1_000 * SECOND
    week = WEEK_HOURS[:168]
    commands: list[dict[str, Any]] = []

    def order(account: str, client_order_id: str, symbol: str, side: str,
              price: str, quantity: int) -> None:
        commands.append({"type": "new_order", "account": account,
                         "client_order_id": client_order_id, "instrument": symbol,
                         "side": side, "order_type": "limit", "price": price,
                         "quantity": quantity})

    def deposit(account: str, asset: str, amount: str | int) -> None:
        commands.append({"type": "deposit", "account": account, "asset": asset,
                         "amount": amount})

    def strip(account: str, client_order_id: str, side: str, legs: tuple[str, ...],
              quantity: int, limit_micro: int) -> None:
        commands.append({"type": "new_strip_order", "account": account,
                         "client_order_id": client_order_id, "side": side,
                         "instruments": list(legs), "quantity": quantity,
                         "limit_total": format_micro(limit_micro)})

    for index, symbol in enumerate(WEEK_HOURS):
        commands.append(listing_fields(
            symbol, first_hour + index * HOUR, None, region="ap-south", tick_size="0.000001",
            max_order_quantity=1000, maker_fee_bps=5, taker_fee_bps=week_taker_fee_bps(index)))
    for index, symbol in enumerate(BIG_HOURS):
        commands.append(listing_fields(symbol, first_hour + index * HOUR, None, region="big",
                                       tick_size="1", maker_fee_bps=0, taker_fee_bps=1))
    deposit("mm1", "USDC", "100000")
    deposit("amy", "USDC", "10000")
    for index, symbol in enumerate(week):
        deposit("mm1", symbol, 3)
        order("mm1", f"a{index}", symbol, "sell", format_micro(week_price_micro(index)), 3)
    for index in range(0, 168, 12):  # amy's own offers, better than the maker's
        deposit("amy", WEEK_HOURS[index], 5)
        order("amy", f"o{index}", WEEK_HOURS[index], "sell",
              format_micro(week_price_micro(index) - 1), 5)

    notional, _ = strip_cost_micro(2, range(168))
    strip("amy", "o12", "buy", week, 2, notional - 1)
    strip("amy", "o12", "buy", week, 2, notional)
    commands.append({"type": "mass_cancel", "account": "amy"})
    notional, fees = strip_cost_micro(1, range(168))
    deposit("exact", "USDC", format_micro(notional + fees - 1))
    strip("exact", "all-week", "buy", week, 1, notional)
    deposit("exact", "USDC", "0.000001")
    strip("exact", "all-week", "buy", week, 1, notional)
    strip("exact", "x" * 59, "buy", WEEK_HOURS, 1, notional)
    strip("exact", "x" * 59, "buy", WEEK_HOURS[1:], 1, notional)

    # Sells into the maker's two bid levels (and amy's better bid) on the first four hours.
    for index, symbol in enumerate(WEEK_HOURS[:4]):
        price = week_price_micro(index)
        order("mm1", f"b1-{index}", symbol, "buy", format_micro(price - 2), 2)
        order("mm1", f"b2-{index}", symbol, "buy", format_micro(price - 3), 3)
        order("amy", f"b0-{index}", symbol, "buy", format_micro(price - 1), 4)
        deposit("amy", symbol, 4)
        deposit("seller", symbol, 4)
    sold = sum(2 * (week_price_micro(index) - 2) + 2 * (week_price_micro(index) - 3)
               for index in range(4))
    strip("amy", "sell-4", "sell", WEEK_HOURS[:4], 4, sold)
    sold = sum(4 * (week_price_micro(index) - 1) for index in range(4))  # amy's bids now
    strip("seller", "sell-4", "sell", WEEK_HOURS[:4], 4, sold + 1)
    commands.append({"type": "withdraw", "account": "seller", "asset": WEEK_HOURS[3],
                     "amount": 1})
    strip("seller", "sell-4", "sell", WEEK_HOURS[:4], 4, sold)
    strip("seller", "sell-3", "sell", WEEK_HOURS[:3], 4, 1)

    # Past 64 bits: four hours bid at the largest price, three GPU-hours each.
    for _ in range(13):
        deposit("whale", "USDC", BIG_PRICE)
    for symbol in BIG_HOURS:
        order("whale", f"{symbol}-bid", symbol, "buy", BIG_PRICE, 3)
        deposit("seller", symbol, 3)
    largest = parse_micro(BIG_PRICE)
    strip("seller", "big", "sell", BIG_HOURS, 3, largest)
    for symbol in BIG_HOURS:
        deposit("whale", symbol, 1)
        order("whale", f"{symbol}-offer", symbol, "sell", BIG_PRICE, 1)
    strip("amy", "big", "buy", BIG_HOURS, 1, largest)
    strip("amy", "big", "buy", BIG_HOURS, 1, largest * 4)
    lines = [msgspec.json.encode({**command, "ts": start}) for command in commands]

    commands = []
    for index, symbol in enumerate(WEEK_HOURS[1:3], start=1):
        deposit("mm1", symbol, 1)
        order("mm1", f"late-{index}", symbol, "sell", format_micro(week_price_micro(index)), 1)
    strip("amy", "late", "buy", WEEK_HOURS[:2], 1, notional)
    strip("amy", "late", "buy", WEEK_HOURS[1:3], 1, notional)
    strip("amy", "late", "sell", BIG_HOURS[1:], 1, 1)
    lines += [msgspec.json.encode({**command, "ts": first_hour}) for command in commands]
    return lines
