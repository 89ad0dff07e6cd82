"""Replies to the requests anyone may make without a login: time, ping, instruments."""

from __future__ import annotations

from typing import Any

from gateway.projection import Projection
from wsapi.errors import INVALID_REQUEST, RequestError
from wsapi.messages import Instrument
from wsapi.requests import Instruments, Ping, Time


def public_result(projection: Projection, request: Time | Ping | Instruments, now_ns: int,
                  page_max: int) -> dict[str, Any]:
    """Return the `result` of a public request."""
    if isinstance(request, Time):
        return {"server_time_ns": now_ns, "engine_time_ns": projection.time_ns,
                "event_seq": projection.event_seq}
    if isinstance(request, Ping):
        return {"pong": now_ns}
    return instruments_page(projection.instrument_specs(), request, page_max)


def instruments_page(listed: list[Instrument], request: Instruments,
                     page_max: int) -> dict[str, Any]:
    """One page of the instruments with the requested status, in listing order, after the
    instrument the cursor names; `next_cursor` when more may follow."""
    start = 0
    if request.cursor is not None:
        symbols = [spec.symbol for spec in listed]
        if request.cursor not in symbols:
            raise RequestError(INVALID_REQUEST, f"the cursor {request.cursor!r} names no "
                               "listed instrument", field="$.cursor")
        start = symbols.index(request.cursor) + 1
    limit = min(request.limit or page_max, page_max)
    wanted = [spec for spec in listed[start:]
              if request.status == "all" or spec.status == request.status]
    page = wanted[:limit]
    result: dict[str, Any] = {"instruments": page}
    if len(wanted) > limit:
        result["next_cursor"] = page[-1].symbol
    return result
