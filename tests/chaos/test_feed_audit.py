"""The client-feed audit finds what it is there to find: fed the frames a gateway sends one
client for a small committed log, it reports nothing; with one frame changed, dropped or
sent twice, it reports a divergence, a skipped seq or a repeated one. No services: the
frames come from `gateway.projection.Projection` over events the engine made."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from gateway.messages import encode as encode_message
from gateway.projection import Projection
from matching_engine.core import Engine
from protocol import AnyEvent, encode
from tests.chaos.feed_audit import FeedAudit, audit_feeds
from tests.chaos.feeds import FeedRecorder
from tests.engine_helpers import SYMBOL, T0, cancel, deposit, limit, listing, market
from wsapi.messages import FillsMessage, Heartbeat, Hello, OrdersMessage

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20
HELLO = encode_message(Hello(api_version="1", gateway_id="test", nonce="n", server_time_ns=0,
                             frame_bytes_max=1 << 20, heartbeat_interval_ms=5_000,
                             batch_size_max=20, mass_quote_size_max=20))
Frames = list[bytes]


def committed_log() -> list[AnyEvent]:
    """Orders of two accounts that rest, trade, are amended away and canceled."""
    engine = Engine()
    commands = [
        listing(), deposit(ALICE, "USDC", "1000"), deposit(BOB, SYMBOL, 100),
        deposit(BOB, "USDC", "1000"), limit(ALICE, "a1", "buy", "2.00", 5),
        limit(ALICE, "a2", "buy", "1.90", 3), limit(BOB, "b1", "sell", "2.00", 3),
        limit(BOB, "b2", "sell", "2.10", 4), market(ALICE, "a3", "buy", 2),
        limit(ALICE, "a4", "buy", "2.10", 2), cancel(ALICE, "a2"), limit(BOB, "b3", "sell",
                                                                          "1.95", 4),
        cancel(BOB, "b3"), limit(ALICE, "a5", "buy", "1.80", 1),
    ]
    return [event for index, command in enumerate(commands)
            for event in engine.apply(msgspec.structs.replace(command, ts=T0 + index))]


def gateway_frames(events: list[AnyEvent], subscribe_after: int, batch: int) -> Frames:
    """What a gateway sends a client of ALICE that subscribes to her balances, orders and
    fills and to the book after `subscribe_after` events, then gets each batch's updates
    and a heartbeat."""
    projection = Projection()
    feeds = {("balances", ALICE), ("orders", ALICE), ("fills", ALICE), ("book", SYMBOL)}
    frames = [HELLO]
    for event in events[:subscribe_after]:
        projection.apply(event)
    projection.flush(lambda channel, key: False)
    frames += [encode_message(projection.balances_message(ALICE)),
               encode_message(OrdersMessage(kind="snapshot",
                                            orders=projection.open_orders(ALICE))),
               encode_message(FillsMessage(kind="snapshot",
                                           fills=projection.recent_fills(ALICE))),
               encode_message(projection.book_snapshot(SYMBOL))]
    for start in range(subscribe_after, len(events), batch):
        for event in events[start:start + batch]:
            projection.apply(event)
        frames += [update.payload for update in projection.flush(
            lambda channel, key: (channel, key) in feeds)]
    frames.append(encode_message(Heartbeat(ts=0, event_seq=projection.event_seq)))
    return frames


def audited(connections: list[Frames], events: list[AnyEvent]) -> FeedAudit:
    recorder = FeedRecorder()
    recording = recorder.client("alice", ALICE)
    for frames in connections:
        for frame in frames:
            recording.hook("recv", frame.decode())
    return audit_feeds(recorder, [encode(event) for event in events], events)


def kinds(audit: FeedAudit) -> set[str]:
    return set(audit.by_kind)


def first_index(frames: Frames, prefix: bytes, after: int = 5) -> int:
    return next(index for index, frame in enumerate(frames)
                if index >= after and frame.startswith(prefix))


def test_frames_the_gateway_sends_match_the_log_they_come_from() -> None:
    events = committed_log()
    audit = audited([gateway_frames(events, 5, 2), gateway_frames(events, 9, 3)], events)
    assert audit.problems == []
    assert audit.counts["connections"] == 2
    assert audit.counts["items_checked"] >= 10
    assert audit.counts["states_checked"] >= 10


def changed(frames: Frames, index: int, change: Callable[[dict[str, object]], None]
            ) -> Frames:
    message = msgspec.json.decode(frames[index])
    change(message)
    return [*frames[:index], msgspec.json.encode(message), *frames[index + 1:]]


def test_a_report_the_log_does_not_hold_is_a_divergence() -> None:
    events = committed_log()
    frames = gateway_frames(events, 5, 2)
    index = first_index(frames, b'{"type":"orders"')

    def more_filled(message: dict[str, object]) -> None:
        report = message["orders"][0]  # type: ignore[index]
        report["remaining_quantity"] += 1

    audit = audited([changed(frames, index, more_filled)], events)
    assert "divergent" in kinds(audit), audit.problems
    assert f"at seq {msgspec.json.decode(frames[index])['orders'][0]['seq']}" in \
        audit.problems[0]


def test_a_lost_update_is_a_skipped_seq_on_every_feed() -> None:
    events = committed_log()
    frames = gateway_frames(events, 5, 1)
    for prefix in (b'{"type":"orders"', b'{"type":"fills"', b'{"type":"book"'):
        index = first_index(frames, prefix)
        audit = audited([[*frames[:index], *frames[index + 1:]]], events)
        assert "skipped seq" in kinds(audit), (prefix, audit.problems)
    # Balances carry no prev_seq: a lost update shows where the state is next compared, at
    # the next balances message or, for the last one, the heartbeat after it.
    index = max(i for i, frame in enumerate(frames) if frame.startswith(b'{"type":"balances"'))
    audit = audited([[*frames[:index], *frames[index + 1:]]], events)
    assert "skipped seq" in kinds(audit), audit.problems


def test_an_update_sent_twice_is_a_repeated_seq() -> None:
    events = committed_log()
    frames = gateway_frames(events, 5, 1)
    for prefix in (b'{"type":"orders"', b'{"type":"fills"', b'{"type":"book"',
                   b'{"type":"balances"'):
        index = first_index(frames, prefix)
        audit = audited([[*frames[:index + 1], *frames[index:]]], events)
        assert "repeated seq" in kinds(audit), (prefix, audit.problems)


def test_a_position_past_the_log_is_reported() -> None:
    events = committed_log()
    frames = gateway_frames(events, 5, 2)
    audit = audited([frames], events[:-2])
    assert "beyond the log" in kinds(audit), audit.problems


def test_an_orders_subscription_without_open_orders_is_checked_from_its_next_position(
) -> None:
    events = committed_log()
    frames = gateway_frames(events, 4, 1)  # before ALICE's first order: no seq to start at
    assert audited([frames], events).problems == []
    orders = [i for i, frame in enumerate(frames) if frame.startswith(b'{"type":"orders"')]
    audit = audited([[*frames[:orders[2]], *frames[orders[2] + 1:]]], events)
    assert "skipped seq" in kinds(audit), audit.problems
    assert audit.counts["orders_starts_bounded"] == 1
