"""Serve the trading page (web/dist) over plain HTTP on the websocket's own port.

The gateway's websocket server hands every opening request to `StaticSite.process_request`
(websockets' `process_request` hook): a request asking for a websocket upgrade goes on to
the handshake untouched; any other GET is answered from the files loaded here, so the page
and the API share one origin and one port.

The site is read into memory once, at start: web/dist is a few hundred KiB, bounded by
`site_bytes_max` and `files_max`, and nothing on the request path touches the disk, so a
request cannot name a file outside the site (paths are looked up in a dict, never joined
to a directory). Responses carry an ETag (a conditional GET gets 304) and `Cache-Control:
no-cache`, so a browser revalidates and never runs a stale page; a Content-Security-Policy
keeps the page to its own scripts, styles and websocket.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

log = logging.getLogger("gpux.gateway.static")

SOURCE_SITE_DIR: Final = Path(__file__).resolve().parents[1] / "web" / "dist"
SITE_DIR_VARIABLE: Final = "GPUX_WEB_DIR"
SITE_BYTES_MAX: Final = 16 * 1024 * 1024
FILES_MAX: Final = 256
PATH_CHARS_MAX: Final = 512
INDEX: Final = "index.html"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
NOT_BUILT: Final = ("The trading page is not built here: run `npm ci && npm run build:web` "
                    "in the repository, then restart the gateway.\n")


class SiteError(Exception):
    """The site directory cannot be served (too big, too many files, unreadable)."""


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


class StaticSite:
    """Answer plain HTTP GETs from files held in memory; pass websocket upgrades through."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        if len(files) > FILES_MAX:
            raise SiteError(f"{len(files)} files, more than {FILES_MAX}")
        self.files = files
        self.requests_served = 0

    @classmethod
    def from_directory(
        cls, directory: Path | str | None = None, *, site_bytes_max: int = SITE_BYTES_MAX
    ) -> StaticSite:
        """Load every file under `directory` (default: $GPUX_WEB_DIR, else web/dist of the
        source tree); an absent directory gives an empty site that says how to build it."""
        root = Path(directory) if directory is not None else default_site_dir()
        if not root.is_dir():
            log.warning("no trading page at %s: `npm run build:web` builds it", root)
            return cls({})
        files: dict[str, StaticFile] = {}
        total_bytes = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if len(files) >= FILES_MAX:
                raise SiteError(f"{root} holds more than {FILES_MAX} files")
            body = path.read_bytes()
            total_bytes += len(body)
            if total_bytes > site_bytes_max:
                raise SiteError(f"{root} holds more than {site_bytes_max} bytes")
            name = "/" + path.relative_to(root).as_posix()
            content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[name] = StaticFile(body=body, content_type=content_type, etag=etag)
        log.info("trading page: %d files, %d bytes from %s", len(files), total_bytes, root)
        return cls(files)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The websockets hook: None lets a websocket handshake go on; else the response."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        self.requests_served += 1
        return self.respond(request.path, request.headers.get("If-None-Match"))

    def respond(self, target: str, if_none_match: str | None = None) -> Response:
        """Return the response to a GET of `target` (path and query)."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if len(path) > PATH_CHARS_MAX:
            return _text_response(http.HTTPStatus.REQUEST_URI_TOO_LONG, "path too long\n")
        if path == "/" or path.endswith("/"):
            path += INDEX
        found = self.files.get(path)
        if found is None:
            if not self.files:
                return _text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, NOT_BUILT)
            return _text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
        headers = common_headers()
        headers["ETag"] = found.etag
        headers["Cache-Control"] = "no-cache"
        if if_none_match is not None and found.etag in _etags(if_none_match):
            headers["Content-Length"] = "0"
            return Response(304, "Not Modified", headers, b"")
        headers["Content-Type"] = found.content_type
        headers["Content-Length"] = str(len(found.body))
        if found.content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return Response(200, "OK", headers, found.body)


def default_site_dir() -> Path:
    """Return $GPUX_WEB_DIR when set (an installed package has no source tree beside it),
    else the source tree's web/dist."""
    configured = os.environ.get(SITE_DIR_VARIABLE, "").strip()
    return Path(configured) if configured else SOURCE_SITE_DIR


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def common_headers() -> Headers:
    """The headers of every plain HTTP response of the gateway (the page's and the index's)."""
    return Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ])


def _text_response(status: http.HTTPStatus, text: str) -> Response:
    headers = common_headers()
    body = text.encode()
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    return Response(status.value, status.phrase, headers, body)
