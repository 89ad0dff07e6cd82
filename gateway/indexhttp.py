"""Plain HTTP on the gateway's port: the GPU-hour price index and the operators' quality record
here, anything else to the site the gateway was given (the trading page, `gpux dev`'s proofs);
a websocket handshake goes on untouched.

    GET /index/latest                                   the latest value of every class
    GET /index?gpu=G&region=R[&from=ISO][&to=ISO][&limit=N]     a class's values, oldest first
    GET /quality[?operator=A]                           every operator's record (or A's)

`/quality` answers a JSON list of wsapi.messages.OperatorQuality, the `quality` feed's state:
404 when the gateway serves no delivery database, 503 while it has not read the reports
yet because the database cannot be read, 400 naming a bad query.

Both answer a JSON list of the values as the `index` feed carries them (wsapi.messages.IndexPoint).
`/index/latest` is the feed's own state (what a new subscriber's snapshot holds); `/index`
reads the store: the values with `from <= minute < to` (`to` defaults to now, `from` to a day
before it), at most `limit` (default and at most the gateway's `index_history_max`); a full
list may have more after it: ask again from its last minute plus one minute. A bad query is
400 with `{"error": ...}` saying what is wrong; a gateway that serves no index answers 404,
one whose store cannot be read 503. The values are public: any origin may read them.
"""

from __future__ import annotations

import http
import inspect
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from gateway.index import IndexBoard, QueryError, history_query, point
from gateway.indexsource import READ_ERRORS, IndexSource
from gateway.quality import QualityBoard
from gateway.static import PATH_CHARS_MAX, common_headers

log = logging.getLogger("gpux.gateway.http")

INDEX_PATH: Final = "/index"
LATEST_PATH: Final = "/index/latest"
QUALITY_PATH: Final = "/quality"
OPERATOR_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")


class GatewayHttp:
    """Answer `/index` and `/index/latest`; hand every other plain request to `site`."""

    def __init__(self, board: IndexBoard, source: IndexSource | None, site: Any,
                 history_max: int, quality: QualityBoard | None = None,
                 quality_readable: Callable[[], bool] | None = None) -> None:
        """`site` is a websockets `process_request` hook (sync or async) or None; `source`
        None: this gateway serves no index; `quality` None: no delivery database, else
        `quality_readable()` says whether the reports have been read."""
        self.board = board
        self.source = source
        self.site = site
        self.history_max = history_max
        self.quality = quality
        self.quality_readable = quality_readable or (lambda: True)

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        """The websockets hook: None lets a websocket handshake go on; else the response."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        path, _, query = request.path.partition("?")
        if path in (INDEX_PATH, LATEST_PATH):
            return await self.index(path, query)
        if path == QUALITY_PATH:
            return self.quality_record(query)
        if self.site is None:
            return None
        response = self.site(connection, request)
        if inspect.isawaitable(response):
            response = await response
        return response  # type: ignore[no-any-return]

    async def index(self, path: str, query: str) -> Response:
        if self.source is None:
            return _json(http.HTTPStatus.NOT_FOUND, {"error": "this gateway serves no index"})
        if path == LATEST_PATH:
            return _json(http.HTTPStatus.OK, self.board.latest_points())
        if len(query) > PATH_CHARS_MAX:
            return _json(http.HTTPStatus.REQUEST_URI_TOO_LONG, {"error": "query too long"})
        try:
            wanted = history_query(query, time.time_ns(), self.history_max)
        except QueryError as error:
            return _json(http.HTTPStatus.BAD_REQUEST, {"error": str(error)})
        try:
            values = await self.source.history(wanted)
        except READ_ERRORS as error:
            log.warning("GET /index: cannot read the index store: %s", error)
            return _json(http.HTTPStatus.SERVICE_UNAVAILABLE,
                         {"error": "the index store cannot be read now; try again"})
        return _json(http.HTTPStatus.OK, [point(value) for value in values])


    def quality_record(self, query: str) -> Response:
        if self.quality is None:
            return _json(http.HTTPStatus.NOT_FOUND,
                         {"error": "this gateway serves no delivery database"})
        if len(query) > PATH_CHARS_MAX:
            return _json(http.HTTPStatus.REQUEST_URI_TOO_LONG, {"error": "query too long"})
        try:
            operator = quality_query(query)
        except QueryError as error:
            return _json(http.HTTPStatus.BAD_REQUEST, {"error": str(error)})
        if not self.quality_readable():
            return _json(http.HTTPStatus.SERVICE_UNAVAILABLE,
                         {"error": "the delivery reports cannot be read now; try again"})
        return _json(http.HTTPStatus.OK, self.quality.operators(operator))


def quality_query(query: str) -> str | None:
    """Read `[operator=A]`: the operator whose record is asked for, None for every one."""
    try:
        fields = parse_qs(query, keep_blank_values=True, max_num_fields=4)
    except ValueError:
        raise QueryError("too many parameters") from None
    unknown = sorted(set(fields) - {"operator"})
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r}: give operator or nothing")
    values = fields.get("operator")
    if values is None:
        return None
    if len(values) != 1:
        raise QueryError(f"operator is given {len(values)} times")
    if not OPERATOR_PATTERN.match(values[0]):
        raise QueryError("operator must be an account: 1-64 of A-Z a-z 0-9 _ . : -")
    return values[0]


def _json(status: http.HTTPStatus, body: object) -> Response:
    payload = msgspec.json.encode(body) + b"\n"
    headers = common_headers()
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(payload))
    headers["Cache-Control"] = "no-store"
    headers["Access-Control-Allow-Origin"] = "*"
    return Response(status.value, status.phrase, headers, payload)
