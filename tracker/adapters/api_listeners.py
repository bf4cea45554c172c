"""Serving the apps: the listeners' sockets, TLS, and JSON answers to what aiohttp's HTTP parser refuses.

Apart from the app factories (tracker/adapters/api.py) because none of this is about routes: it is the
socket-level behaviour every listener (API, ops, OsmAnd ingest) shares.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


class _JsonErrorHandler(RequestHandler):
    """aiohttp answers what its HTTP parser refuses (a URL over 8 KiB, an oversized header...)
    itself, in text/plain, before any middleware runs; this answers those in the API's JSON.

    aiohttp has no hook for it (aio-libs/aiohttp#3287), so the server's per-connection handler
    is replaced (see ``_json_parser_errors``); a test sends such requests to keep this honest.
    """

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling request from %s", request.remote, exc_info=exc)
        else:
            log.debug("refused malformed request from %s: %s", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        code = phrase.lower().replace(" ", "_") if status < 500 else "internal"
        text = phrase if status >= 500 else f"malformed HTTP request: {getattr(exc, 'message', None) or phrase}"
        body = json.dumps({"error": code, "message": text[:300]})
        resp = web.Response(status=status, text=body, content_type="application/json")
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


def _json_parser_errors(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: connections get ``_JsonErrorHandler`` (the server object is the
    protocol factory the sites hand to the event loop; only its class changes)."""
    server = runner.server
    assert server is not None and type(server) is web.Server
    server.__class__ = _JsonErrorServer


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server-side TLS 1.2+ with the certificate chain and key named in the settings."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class Listeners:
    """The service's HTTP listeners, started together and cleaned up together."""

    runners: list[web.AppRunner] = field(default_factory=list)
    api_port: int | None = None
    ops_port: int | None = None

    async def cleanup(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _serve(
    app: web.Application, host: str, port: int, listeners: Listeners, tls: ssl.SSLContext | None = None
) -> int:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    _json_parser_errors(runner)
    listeners.runners.append(runner)
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else port
