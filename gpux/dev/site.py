"""The trading page as `gpux dev` serves it: gateway.static's site, plus `GET /proof/ID`.

A fill on the page links to `/proof/TRADE_ID`. Here that answers with the fill's settlement
proof as JSON (settlement.proofs: its batch, the settling transaction, the Merkle path, and
whether the root on chain and the Vault's own `verifyLeaf` accept it), or 404 with the
reason while the fill is not in a batch yet. Everything else goes to the static site, and
a websocket handshake goes on untouched.
"""

from __future__ import annotations

import email.utils
import http
import logging
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.static import StaticSite
from settlement.chain import Contracts
from settlement.errors import SettlementError
from settlement.proofs import prove

log = logging.getLogger("gpux.dev")

PROOF_PREFIX: Final = "/proof/"
TRADE_ID_CHARS_MAX: Final = 20


class DevSite:
    """Answer plain HTTP requests on the gateway's port: proofs, else the static page."""

    def __init__(self, site: StaticSite, pool: asyncpg.Pool, contracts: Contracts) -> None:
        self.site = site
        self.pool = pool
        self.contracts = contracts

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        """The websockets hook (it may be a coroutine): None lets a handshake go on."""
        path = request.path.split("?", 1)[0]
        if (path.startswith(PROOF_PREFIX)
                and "websocket" not in request.headers.get("Upgrade", "").lower()):
            return await self.proof(path[len(PROOF_PREFIX):])
        return self.site.process_request(connection, request)

    async def proof(self, trade_id: str) -> Response:
        if not trade_id.isdigit() or len(trade_id) > TRADE_ID_CHARS_MAX:
            return _json(http.HTTPStatus.NOT_FOUND, {"error": "no such trade id"})
        try:
            async with self.pool.acquire() as connection:
                proof = await prove(connection, self.contracts, trade_id)
        except SettlementError as error:
            status = (http.HTTPStatus.SERVICE_UNAVAILABLE if error.retriable
                      else http.HTTPStatus.NOT_FOUND)
            return _json(status, {"trade_id": trade_id, "settled": False, "reason": str(error)})
        body = msgspec.to_builtins(proof)
        body["verified"] = proof.verified
        return _json(http.HTTPStatus.OK, body)


def _json(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    payload = msgspec.json.format(msgspec.json.encode(body)) + b"\n"
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ])
    return Response(status.value, status.phrase, headers, payload)
