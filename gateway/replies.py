"""The reply to an order-entry request, from the engine's answers to its commands."""

from __future__ import annotations

from gateway.correlation import Group
from gateway.ratelimit import Charge
from wsapi.messages import ErrorInfo, OrderResult, RateLimitUsage, Reply


def group_reply(group: Group, usage: RateLimitUsage | None) -> Reply:
    """One reply for a request's commands: a batch lists each result; a mass quote gives
    its cancel's count and each quote's result; a single command its own result (a strip's
    is a StripResult: its legs and totals)."""
    outcomes = [outcome for outcome in group.outcomes if outcome is not None]
    if group.op == "batch":
        return Reply(req_id=group.req_id, op=group.op, status="ok",
                     result={"results": outcomes}, rate_limit=usage)
    if group.op == "mass_quote":
        first, rest = outcomes[0], outcomes[1:]
        assert isinstance(first, OrderResult)
        failed = first.status == "error"
        return Reply(
            req_id=group.req_id, op=group.op, status="error" if failed else "ok",
            result={"canceled": first.canceled or 0, "results": rest},
            error=ErrorInfo(code=first.reason or "timeout",
                            message="the engine did not answer the cancel") if failed else None,
            rate_limit=usage)
    outcome = outcomes[0]
    error = (ErrorInfo(code=outcome.reason or "timeout", message="the engine did not answer")
             if outcome.status == "error" else None)
    return Reply(
        req_id=group.req_id, op=group.op, status=outcome.status,
        reason=outcome.reason if outcome.status == "rejected" else None, result=outcome,
        error=error, rate_limit=usage)


def rate_usage(charge: Charge | None) -> RateLimitUsage | None:
    """A reply's `rate_limit`: the kind of bucket charged and what is left in it."""
    if charge is None:
        return None
    return RateLimitUsage(bucket=charge.bucket.split(":", 1)[0], remaining=charge.remaining,
                          burst=charge.burst, per_second=charge.per_second)
