"""The dashboard's page and files: public, fenced in by a strict Content-Security-Policy, nothing else served."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tracker.adapters.api import build_app
from tracker.adapters.api_web import csp
from tracker.config import Settings
from tracker.service import Service

TILES = "https://tiles.example.org/osm/{z}/{x}/{y}.png"


def test_the_policy_names_this_origin_only_and_the_tile_server_when_one_is_set() -> None:
    strict = csp("")
    assert "script-src 'self';" in strict and "style-src 'self';" in strict and "img-src 'self';" in strict
    assert "unsafe" not in strict and "http" not in strict
    assert "img-src 'self' https://tiles.example.org;" in csp(TILES)
    assert "connect-src 'self';" in csp(TILES)  # tiles are images: no data may go there


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "https://tiles.example.org/osm.png",  # no {z}: not a tile template
        "https://tiles.example.org/'; script-src *; /{z}/{x}/{y}.png",
        'https://tiles.example.org/{z}/{x}/{y}.png"><script>',
        "ftp://tiles.example.org/{z}/{x}/{y}.png",
    ],
)
def test_a_tile_url_that_could_widen_the_policy_or_break_the_page_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="TRACKER_DASHBOARD_TILE_URL"):
        Settings.from_env({"TRACKER_DASHBOARD_TILE_URL": url})


async def test_page_and_assets_are_public_with_the_policy_and_nothing_else_is_served() -> None:
    app = build_app(Service(Settings(dashboard_tile_url=TILES)))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.headers["Content-Security-Policy"] == csp(TILES)
        text = await page.text()
        assert f'<meta name="tracker-tile-url" content="{TILES}" data-tiles>' in text
        assert "<script>" not in text and "style=" not in text  # no inline script or style for the policy to allow
        for path, kind in [("/web/app.js", "text/javascript"), ("/web/vendor/leaflet/leaflet.css", "text/css"),
                           ("/web/vendor/leaflet/images/layers.png", "image/png")]:  # fmt: skip
            r = await client.get(path)
            assert (r.status, r.content_type) == (200, kind), path
            again = await client.get(path, headers={"If-None-Match": r.headers["ETag"]})
            assert again.status == 304
        refused = ["/web/index.html", "/web/__init__.py", "/web/app.js.map", "/web/.hidden.js", "/web/nope.js"]
        refused += ["/web/%2e%2e/config.py", "/web/vendor/../../adapters/api.py", "/web/vendor/leaflet/package.json"]
        for path in refused:
            r = await client.get(path)
            assert r.status == 404, path
            assert (await r.json())["error"] == "not_found"
