"""The operations dashboard's page and static files (tracker/web), served without a token.

The page holds no data: everything on it comes from the API with the token the operator types in
(kept in sessionStorage, sent in the Authorization header and as the WebSocket's first message,
never in a URL). So the page and its scripts can be public, and must be unable to run anything
else: every response carries a Content-Security-Policy allowing only this origin's own scripts and
styles (no inline script, no eval, no CDN), connections back to this origin only, and images from
this origin (plus the tile server's origin when ``TRACKER_DASHBOARD_TILE_URL`` names one).
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from tracker.adapters.ports import ApiService

ASSET_RE = re.compile(r"^(?:[a-z0-9][a-z0-9_.-]*/){0,3}[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:js|css|png|svg)\Z")
"""What ``/web/`` serves: scripts, styles and images of the package, never the HTML template, Python
files or anything outside tracker/web (no ``..``, no absolute path, no hidden file)."""
VENDOR_TEXT = frozenset({"vendor/leaflet/LICENSE", "vendor/leaflet/VERSION"})
"""The vendored library's licence and provenance are served too, as its licence asks to pass them on."""

TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}


def csp(tile_url: str) -> str:
    """The policy of the page and of every asset; the tile server's origin is the one exception."""
    img = "'self'"
    if tile_url:
        parts = urlsplit(tile_url)
        img += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _headers(tile_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(tile_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


@cache
def _asset(path: str) -> tuple[bytes, str] | None:
    """Bytes and ETag of a packaged file (read once: the package does not change while it runs)."""
    node = resources.files("tracker.web")
    for part in path.split("/"):
        node = node.joinpath(part)
    if not node.is_file():
        return None
    body = node.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _service(request: web.Request) -> ApiService:
    from tracker.adapters.api import SERVICE

    return request.app[SERVICE]


async def dashboard(request: web.Request) -> web.Response:
    """The page; the tile URL (an operator's setting, validated in Settings) is the only thing filled in."""
    tile_url = _service(request).settings.dashboard_tile_url
    found = _asset("index.html")
    assert found is not None, "tracker/web/index.html is missing from the package"
    page = found[0].decode().replace('content="" data-tiles', f'content="{html.escape(tile_url)}" data-tiles', 1)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_headers(tile_url))


async def static(request: web.Request) -> web.Response:
    from tracker.adapters.api import error

    path = request.match_info["path"]
    if not (ASSET_RE.match(path) or path in VENDOR_TEXT) or ".." in path:
        raise error(404, "not_found", "no such file")
    found = _asset(path)
    if found is None:
        raise error(404, "not_found", "no such file")
    body, etag = found
    headers = _headers(_service(request).settings.dashboard_tile_url) | {"ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    suffix = path[path.rfind(".") :]
    content_type = TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "text/plain"
    return web.Response(body=body, content_type=content_type, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/web/{path:.+}", static)
