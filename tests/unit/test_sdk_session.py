"""The SDK's sans-I/O session, fed frames as text with no socket and no event loop: which reply
answers which request, where a feed message goes, when a book resyncs; and the requests it
builds are the ones the gateway decodes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sdk.errors import ClientError
from sdk.requests import (
    Quote,
    amend_item,
    build_request,
    cancel_item,
    encode_request,
    mass_cancel_item,
    new_issue_id,
    new_order_item,
    order_request,
)
from sdk.session import (
    LOGIN_ATTEMPTS_MAX,
    Answered,
    Delivered,
    Note,
    Refused,
    Send,
    Session,
    login_retry_ms,
)
from sdk.signing import ApiKey
from wsapi import messages
from wsapi.checksum import book_checksum
from wsapi.requests import Ping, Subscribe, Unsubscribe, decode_request

HELLO = messages.Hello(api_version="1", gateway_id="g", nonce="n", server_time_ns=1,
                       frame_bytes_max=1024, heartbeat_interval_ms=1000, batch_size_max=10,
                       mass_quote_size_max=10)
SYMBOL = "H100.eu.1"


def frame(message: msgspec.Struct) -> str:
    return msgspec.json.encode(message).decode()


def reply(req_id: int, op: str = "ping", **fields: Any) -> str:
    return frame(messages.Reply(req_id=req_id, op=op, status=fields.pop("status", "ok"), **fields))


def book(kind: str, seq: int, prev_seq: int, bids: list[tuple[str, int]],
         asks: list[tuple[str, int]], checksum: int | None = None) -> str:
    return frame(messages.BookMessage(
        instrument=SYMBOL, kind=kind, seq=seq, prev_seq=prev_seq, ts=seq,  # type: ignore[arg-type]
        bids=bids, asks=asks, checksum=book_checksum(bids, asks) if checksum is None else checksum))


def trades(instrument: str) -> str:
    return frame(messages.TradesMessage(instrument=instrument, kind="update", trades=[
        messages.TradeItem(trade_id="t1", price="2.5", quantity=1, aggressor_side="buy", ts=1)]))


def ping(req_id: int) -> Ping:
    return Ping(req_id=req_id)


# -- requests and replies ---------------------------------------------------------------------

def test_requests_are_numbered_and_each_reply_goes_to_its_own_waiter() -> None:
    session: Session[str, str] = Session()
    first = session.begin(ping, "first")
    second = session.begin(ping, "second")
    assert (first.req_id, second.req_id) == (1, 2)
    assert session.pending_count == 2
    [answered] = session.receive(reply(2, result={"pong": 7}))
    assert isinstance(answered, Answered) and answered.waiter == "second"
    assert answered.reply.result == {"pong": 7}
    [answered] = session.receive(reply(1))
    assert isinstance(answered, Answered) and answered.waiter == "first"
    assert session.pending_count == 0
    assert session.receive(reply(1)) == [], "a second reply to a request answers no one"


def test_an_error_reply_refuses_the_request_with_the_gateways_code() -> None:
    session: Session[str, str] = Session()
    request = session.begin(ping, "caller")
    error = messages.ErrorInfo(code="rate_limited", message="slow down", retry_after_ms=40)
    [refused] = session.receive(reply(request.req_id, status="error", error=error))
    assert isinstance(refused, Refused) and refused.waiter == "caller"
    assert refused.reply.error == error
    assert session.pending_count == 0


def test_the_reply_to_a_forgotten_request_and_one_without_req_id_are_dropped() -> None:
    session: Session[str, str] = Session()
    request = session.begin(ping, "timed out")
    session.forget(request.req_id)
    assert session.receive(reply(request.req_id)) == []
    assert session.receive(frame(messages.Reply(req_id=None, op="?", status="error"))) == []


def test_a_lost_connection_hands_back_every_waiter_once() -> None:
    session: Session[str, str] = Session()
    session.begin(ping, "a")
    session.begin(ping, "b")
    assert sorted(session.connection_lost()) == ["a", "b"]
    assert session.connection_lost() == []
    assert session.begin(ping, "c").req_id == 3, "request ids are never reused"


def test_a_request_made_with_another_req_id_is_refused_before_it_is_noted() -> None:
    session: Session[str, str] = Session()
    with pytest.raises(ValueError, match="req_id"):
        session.begin(lambda req_id: Ping(req_id=req_id + 1), "waiter")
    assert session.pending_count == 0


# -- frames -----------------------------------------------------------------------------------

def test_the_first_frame_must_be_the_hello() -> None:
    session: Session[str, str] = Session()
    assert session.greet(frame(HELLO)) == HELLO and session.hello == HELLO
    with pytest.raises(ClientError, match="expected hello"):
        session.greet(frame(messages.Heartbeat(ts=1, event_seq=1)))


def test_heartbeats_and_notices_are_kept_and_unknown_types_ignored() -> None:
    session: Session[str, str] = Session(notices_kept_max=2)
    for index in range(3):
        notice = messages.Notice(code=f"n{index}", message="m", ts=index)
        assert session.receive(frame(notice)) == []
    assert [notice.code for notice in session.notices] == ["n1", "n2"]
    assert session.receive(frame(messages.Heartbeat(ts=5, event_seq=9))) == []
    assert session.last_heartbeat == messages.Heartbeat(ts=5, event_seq=9)
    assert session.receive('{"type":"status","state":"halted"}') == []
    with pytest.raises(msgspec.DecodeError):
        session.receive("not json")


# -- subscriptions ----------------------------------------------------------------------------

def test_feed_messages_go_to_the_subscribers_of_their_channel_and_instrument() -> None:
    session: Session[str, str] = Session()
    assert session.subscribe("trades", SYMBOL, "trades-1") is True
    assert session.subscribe("trades", SYMBOL, "trades-2") is False, "one subscription serves two"
    assert session.subscribe("trades", "other", "trades-other") is True
    assert session.subscribe("orders", None, "orders") is True
    [delivered] = session.receive(trades(SYMBOL))
    assert isinstance(delivered, Delivered)
    assert delivered.subscribers == ("trades-1", "trades-2")
    assert isinstance(delivered.message, messages.TradesMessage)
    [delivered] = session.receive(frame(messages.OrdersMessage(kind="snapshot", orders=[])))
    assert isinstance(delivered, Delivered) and delivered.subscribers == ("orders",)
    assert session.receive(frame(messages.TickerMessage(instrument=SYMBOL, ts=1))) == []


def test_delivery_events_go_to_the_subscribers_of_the_accounts_deliveries_feed() -> None:
    session: Session[str, str] = Session()
    assert session.subscribe("deliveries", None, "deliveries") is True
    event = messages.DeliveryEvent(event="delivery_assigned", issue_id="i1", seq=4, ts=9,
                                   instrument=SYMBOL, issuer="op1", holder="alice",
                                   quantity=5)
    [delivered] = session.receive(frame(messages.DeliveriesMessage(kind="update",
                                                                   events=[event])))
    assert isinstance(delivered, Delivered) and delivered.subscribers == ("deliveries",)
    assert isinstance(delivered.message, messages.DeliveriesMessage)
    assert delivered.message.events == [event]
    assert session.resubscriptions() == [("deliveries", None)]


def test_only_the_last_subscriber_gone_unsubscribes_and_an_abandoned_feed_is_forgotten() -> None:
    session: Session[str, str] = Session()
    session.subscribe("trades", SYMBOL, "a")
    session.subscribe("trades", SYMBOL, "b")
    assert session.unsubscribe("trades", SYMBOL, "a") is False
    assert session.unsubscribe("trades", SYMBOL, "b") is True
    assert session.receive(trades(SYMBOL)) == []
    session.subscribe("ticker", SYMBOL, "refused")
    session.abandon("ticker", SYMBOL)
    assert session.receive(frame(messages.TickerMessage(instrument=SYMBOL, ts=1))) == []
    assert session.resubscriptions() == []


def test_a_new_connection_resubscribes_every_feed_and_book_and_waits_for_snapshots() -> None:
    session: Session[str, str] = Session()
    session.subscribe("orders", None, "orders")
    session.subscribe("trades", SYMBOL, "trades")
    local, new = session.watch_book(SYMBOL)
    assert new and session.watch_book(SYMBOL) == (local, False)
    session.receive(book("snapshot", 1, 0, [("2.1", 3)], []))
    assert local.synced
    assert session.resubscriptions() == [("orders", None), ("trades", SYMBOL), ("book", SYMBOL)]
    assert not local.synced


# -- books ------------------------------------------------------------------------------------

def test_a_watched_book_follows_snapshot_and_updates_and_subscribers_see_them_too() -> None:
    session: Session[str, str] = Session()
    local, _ = session.watch_book(SYMBOL)
    session.subscribe("book", SYMBOL, "viewer")
    [delivered] = session.receive(book("snapshot", 5, 0, [("2.1", 3)], [("2.2", 4)]))
    assert isinstance(delivered, Delivered) and delivered.subscribers == ("viewer",)
    session.receive(book("update", 6, 5, [("2.1", 0), ("2.15", 1)], [],
                         checksum=book_checksum([("2.15", 1)], [("2.2", 4)])))
    assert local.seq == 6 and local.levels() == ([("2.15", 1)], [("2.2", 4)])


def test_a_checksum_mismatch_resubscribes_the_book_once_until_the_snapshot_comes() -> None:
    session: Session[str, str] = Session()
    local, _ = session.watch_book(SYMBOL)
    session.receive(book("snapshot", 1, 0, [("2.1", 3)], []))
    effects = session.receive(book("update", 2, 1, [("2.0", 1)], [], checksum=12345))
    assert [type(effect) for effect in effects] == [Note, Send]
    send = effects[1]
    assert isinstance(send, Send)
    unsubscribe, subscribe = send.requests
    assert isinstance(unsubscribe, Unsubscribe) and isinstance(subscribe, Subscribe)
    assert (subscribe.channel, subscribe.instrument) == ("book", SYMBOL)
    assert subscribe.req_id == unsubscribe.req_id + 1
    assert local.resyncs == 1 and not local.synced
    assert session.receive(book("update", 3, 2, [("2.0", 2)], [], checksum=1)) == [], \
        "updates before the fresh snapshot are skipped, and no second resync starts"
    assert session.receive(reply(unsubscribe.req_id, "unsubscribe")) == []
    assert session.receive(reply(subscribe.req_id, "subscribe")) == []
    session.receive(book("snapshot", 3, 0, [("2.0", 2)], []))
    assert local.synced and local.resyncs == 1
    assert session.pending_count == 0


def test_a_sequence_gap_resyncs_again_after_an_earlier_resync_completed() -> None:
    session: Session[str, str] = Session()
    local, _ = session.watch_book(SYMBOL)
    session.receive(book("snapshot", 1, 0, [], []))
    assert any(isinstance(e, Send) for e in session.receive(book("update", 9, 8, [], [])))
    session.receive(book("snapshot", 9, 0, [], []))
    effects = session.receive(book("update", 12, 10, [], []))
    assert any(isinstance(e, Note) and "seq" in e.text for e in effects)
    assert any(isinstance(e, Send) for e in effects)
    assert local.resyncs == 2


def test_a_refused_resync_request_is_a_note_not_an_answer() -> None:
    session: Session[str, str] = Session()
    session.watch_book(SYMBOL)
    session.receive(book("snapshot", 1, 0, [], []))
    send = [e for e in session.receive(book("update", 3, 2, [], [])) if isinstance(e, Send)][0]
    error = messages.ErrorInfo(code="unknown_instrument", message="gone")
    [note] = session.receive(reply(send.requests[1].req_id, "subscribe", status="error",
                                   error=error))
    assert isinstance(note, Note) and "unknown_instrument" in note.text


# -- login ------------------------------------------------------------------------------------

def login_refused(code: str, retry_after_ms: int | None = None) -> messages.Reply:
    error = messages.ErrorInfo(code=code, message="m", retry_after_ms=retry_after_ms)
    return messages.Reply(req_id=1, op="login", status="error", error=error)


def test_only_a_rate_limited_login_is_tried_again_a_few_times() -> None:
    assert login_retry_ms(login_refused("rate_limited", 250), 1) == 250
    assert login_retry_ms(login_refused("rate_limited", 250), LOGIN_ATTEMPTS_MAX) is None
    assert login_retry_ms(login_refused("rate_limited"), 1) == 100
    assert login_retry_ms(login_refused("auth_failed"), 1) is None


# -- the requests sent ------------------------------------------------------------------------

@pytest.mark.parametrize("item", [
    new_order_item(SYMBOL, "buy", 3, "2.15", client_order_id="c1"),
    new_order_item(SYMBOL, "sell", 2, client_order_id="c2", time_in_force="ioc",
                   post_only=True, stp="decrement"),
    cancel_item("c1"), amend_item("c1", new_price="2.2"), mass_cancel_item(),
], ids=["limit", "market", "cancel", "amend", "mass_cancel"])
def test_every_order_request_decodes_in_the_gateway_to_what_was_built(item: Any) -> None:
    request = order_request(item, 7)
    assert decode_request(encode_request(request)) == request


def test_batch_mass_quote_and_login_requests_decode_to_what_was_built() -> None:
    batch = build_request("batch", 1, {"orders": [
        new_order_item(SYMBOL, "buy", 1, "1", client_order_id="b1"),
        {"op": "cancel_order", "client_order_id": "b1"}]})
    quote = build_request("mass_quote", 2, {"instrument": SYMBOL, "quotes": [
        Quote("q1", "buy", "1.9", 10), Quote("q2", "sell", "2.1", 10, post_only=True)]})
    login = ApiKey("k" * 10, "A" * 43).login_request("n", 5, req_id=3,
                                                     cancel_on_disconnect="session")
    for request in (batch, quote, login):
        assert decode_request(encode_request(request)) == request
    assert '"post_only"' not in encode_request(order_request(cancel_item("x"), 1))
    assert "null" not in encode_request(build_request("open_orders", 4, {"instrument": None}))


def test_delivery_requests_decode_to_what_was_built_and_issue_ids_are_fresh() -> None:
    issue = build_request("issue_capacity", 1, {"issue_id": new_issue_id(), "instrument": SYMBOL,
                                                "node_id": "n-17", "quantity": 8})
    report = build_request("delivery_report", 2, {"issue_id": "i1", "holder": "alice",
                                                  "delivered_ppm": 950_000, "evidence": None})
    listing = build_request("list_instrument", 3, {
        "symbol": SYMBOL, "gpu": "H100", "region": "eu", "delivery_start": 10**18,
        "delivery_hours": 1, "tick_size": "0.01", "max_order_quantity": 10,
        "maker_fee_bps": 0, "taker_fee_bps": 0, "bond_per_gpu_hour": "0"})
    for request in (issue, report, listing, build_request("deliveries", 4, {})):
        assert decode_request(encode_request(request)) == request
    assert "evidence" not in encode_request(report)
    assert len({new_issue_id() for _ in range(1000)}) == 1000


def test_an_op_the_api_does_not_have_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="unknown op"):
        build_request("teleport", 1, {})
    with pytest.raises(TypeError):
        build_request("ping", 1, {"extra": 1})
