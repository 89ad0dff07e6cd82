"""Correlation: the oldest pending op a keyed event answers takes it, never an event older
than the op's command, and a fence closes what a mass cancel caused."""

from __future__ import annotations

from gateway.correlation import FENCE_ACCOUNT, Correlator, Group, PendingOp
from protocol import CancelRejected, OrderAccepted, OrderCanceled, OrderRejected


def group(ops: int) -> Group:
    return Group(conn_id=1, req_id=1, op="batch", deadline_ns=10**18, outcomes=[None] * ops,
                 waiting=ops)


def accepted(seq: int, ts: int, cid: str = "x", order_id: str = "1") -> OrderAccepted:
    return OrderAccepted(seq=seq, ts=ts, account="a", client_order_id=cid, order_id=order_id,
                         instrument="I", side="buy", order_type="limit", price="1", quantity=1,
                         time_in_force="gtc", post_only=False, stp="cancel_newest")


def test_an_answer_older_than_the_command_is_not_taken() -> None:
    correlator = Correlator()
    retry = group(1)
    correlator.register(retry, [PendingOp(group=retry, index=0, op="new_order", account="a",
                                          ts=200, client_order_id="x")])
    assert correlator.on_event(accepted(1, ts=150)) == [], "another gateway's earlier order"
    done = correlator.on_event(OrderRejected(seq=2, ts=201, account="a", client_order_id="x",
                                             reason="duplicate_client_order_id"))
    assert done == [retry] and retry.outcomes[0] is not None
    assert retry.outcomes[0].reason == "duplicate_client_order_id"


def test_new_then_cancel_of_one_id_and_a_mass_cancel_fence() -> None:
    correlator = Correlator()
    batch = group(3)
    correlator.register(batch, [
        PendingOp(group=batch, index=0, op="new_order", account="a", ts=5, client_order_id="x"),
        PendingOp(group=batch, index=1, op="cancel_order", account="a", ts=5,
                  client_order_id="x"),
        PendingOp(group=batch, index=2, op="mass_cancel", account="a", ts=5, fence_id="f1"),
    ])
    assert correlator.on_event(accepted(1, ts=5)) == []
    assert correlator.on_event(OrderCanceled(seq=2, ts=5, account="a", client_order_id="x",
                                             order_id="1", instrument="I", reason="user",
                                             canceled_quantity=1)) == []
    done = correlator.on_event(CancelRejected(seq=3, ts=5, account=FENCE_ACCOUNT,
                                              client_order_id="f1", reason="unknown_order"))
    assert done == [batch]
    assert [o.status for o in batch.outcomes if o] == ["accepted", "accepted", "accepted"]
    assert correlator.pending() == 0 and not correlator.by_key and not correlator.by_fence
