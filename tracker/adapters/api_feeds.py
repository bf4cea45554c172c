"""Live feeds over HTTP: SSE ``/v1/alerts/stream`` and the WebSocket ``/v1/stream``.

Both carry alert events numbered by ``feed_events.seq`` (tracker/adapters/store_feeds.py). A viewer
reconnecting with the last id it saw (SSE ``Last-Event-ID``, WebSocket ``last_event_id``) first
gets what it missed from the store, then the live events: it subscribes before reading the store
and skips live events the replay already covered, so the switch-over has neither a gap nor a
duplicate. More missed than is kept (``TRACKER_STREAM_REPLAY_MAX`` events or
``TRACKER_STREAM_REPLAY_S``) is said with a ``reset`` event: reload ``GET /v1/alerts``, then live.

The WebSocket also carries device positions, in batches at most every
``TRACKER_STREAM_POSITIONS_INTERVAL_S``. Browsers cannot set headers on a WebSocket, so its token is
the first message (``{"type":"auth","token":...}``), never the URL; other clients may send
``Authorization: Bearer``. A viewer whose queue overflows (it does not read fast enough) gets an
``error`` ``slow_consumer`` and the connection is closed (WebSocket code 4008), counted in
``tracker_feed_slow_consumers``; nothing is silently skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable
from typing import Any

from aiohttp import WSMsgType, web

from tracker.adapters.api import SERVICE, Principal, _known_query, authenticate, error, require
from tracker.adapters.feed_scope import may_read_alerts, may_read_positions, sees_alert, sees_position
from tracker.adapters.ports import ApiService
from tracker.feeds import FeedEvent, PositionItem, Subscriber

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
AUTH_TIMEOUT_S = 10.0
SUBSCRIBE_TIMEOUT_S = 30.0
KEEPALIVE_S = 15.0
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_BAD_REQUEST = 4000
CLOSE_SLOW = 4008
CLOSE_UNAVAILABLE = 1013  # "try again later": the store did not answer the replay in time


def _svc(request: web.Request) -> ApiService:
    return request.app[SERVICE]


class _ClosingError(Exception):
    """End the WebSocket with an error message and a close code."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


async def _replay(request: web.Request, sub: Subscriber, last_event_id: str) -> tuple[list[FeedEvent], int, str | None]:
    """(events the viewer missed and may see, the id live events must come after, reset reason)."""
    svc = _svc(request)
    store = svc.feeds.feed_store
    if store is None:
        raise error(503, "unavailable", "the service is starting")
    s = svc.settings
    try:
        after = int(last_event_id)
        if after < 0:
            raise ValueError(last_event_id)
    except ValueError:
        after = 2**62  # not an id we gave: told to reset, like an id from another database
    replay = await asyncio.wait_for(
        store.replay(after, max_events=s.stream_replay_max, max_age_s=s.stream_replay_s), s.api_db_timeout_s
    )
    if replay.reset is not None:
        svc.feeds.hub.resets.inc()
        return [], replay.latest, replay.reset
    events = [e for e in replay.events if sub.sees_alert(e)]
    svc.feeds.hub.replayed.inc(len(events))
    return events, max(replay.latest, after), None


def _live(sub: Subscriber, watermark: int) -> list[FeedEvent]:
    """Queued live events after ``watermark`` (those at or below it were replayed)."""
    out = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        if event.seq > watermark:
            out.append(event)
    return out


async def _wait(sub: Subscriber, timeout: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sub.wake.wait(), timeout)


# ---- SSE -----------------------------------------------------------------------------------------


def _sse_alert(event: FeedEvent) -> bytes:
    """``data`` is the alert as GET /v1/alerts lists it, with ``event`` (and ``update``/``change``)."""
    body: dict[str, Any] = {**event.alert, "event": event.event, **event.details()}
    return f"id: {event.id}\nevent: alert\ndata: {json.dumps(body, default=str)}\n\n".encode()


async def alert_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events of alerts (``min_severity`` filters); ``Last-Event-ID`` replays what was missed."""
    who = await require(request, "alerts:read")
    floor = request.query.get("min_severity", "info")
    if floor not in SEVERITY_RANK:
        raise error(
            400, "bad_parameter", "min_severity must be info|low|medium|high|critical", parameter="min_severity"
        )
    svc = _svc(request)
    s = svc.settings
    hub = svc.feeds.hub

    def sees(event: FeedEvent) -> bool:
        return SEVERITY_RANK.get(str(event.alert.get("severity")), 0) >= SEVERITY_RANK[floor] and sees_alert(
            who, event.alert
        )

    sub = Subscriber("sse", s.stream_queue, 1, alerts=True, positions=False, sees_alert=sees)
    last = request.headers.get("Last-Event-ID")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    with hub.subscribe(sub):
        replayed, watermark, reset = await _replay(request, sub, last) if last is not None else ([], 0, None)
        await response.prepare(request)
        _bound_send_buffer(request, s.stream_send_buffer)

        async def write() -> None:
            nonlocal watermark
            if reset is not None:
                note = json.dumps({"reason": reset, "id": str(watermark)})
                await response.write(f"id: {watermark}\nevent: reset\ndata: {note}\n\n".encode())
            for event in replayed:
                await response.write(_sse_alert(event))
            while sub.slow is None:
                sub.wake.clear()
                events = _live(sub, watermark)
                for event in events:
                    await response.write(_sse_alert(event))
                    watermark = event.seq
                if not events:
                    await _wait(sub, KEEPALIVE_S)
                    if not sub.wake.is_set():
                        await response.write(b": keep-alive\n\n")

        try:
            await _until_slow(sub, write())
            if sub.slow is not None:
                note = json.dumps({"error": "slow_consumer", "message": f"disconnected: {sub.slow}"})
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(_last_words(response, f"event: error\ndata: {note}\n\n".encode()), 2.0)
                log.warning("SSE client %s disconnected as a slow consumer: %s", request.remote, sub.slow)
                if request.transport is not None:
                    request.transport.close()
        except ConnectionError:
            # the viewer went away (closed tab, dropped link): the normal end of a stream, not an error
            log.debug("SSE client %s disconnected", request.remote)
    return response


async def _last_words(response: web.StreamResponse, note: bytes) -> None:
    """The error event, then the chunked body's end: a stream cut without its end is a payload error
    to HTTP clients, and some (aiohttp's among them) then drop what they had received but not yet
    read, the error event included, so the viewer would never learn why it was disconnected."""
    await response.write(note)
    await response.write_eof()


async def _until_slow(sub: Subscriber, work: Awaitable[None]) -> None:
    """Run ``work`` until it ends or the viewer turns slow (then it is cancelled, even mid-write)."""
    task = asyncio.ensure_future(work)
    slow = asyncio.ensure_future(sub.turned_slow.wait())
    try:
        await asyncio.wait({task, slow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, slow):
            t.cancel()
        await asyncio.gather(task, slow, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        assert exc is not None
        raise exc


# ---- WebSocket -----------------------------------------------------------------------------------


async def _ws_principal(request: web.Request, ws: web.WebSocketResponse) -> Principal:
    """The token from the first message; any failure closes with 4001."""
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        raise _ClosingError(
            "unauthenticated", f'send {{"type":"auth","token":...}} within {AUTH_TIMEOUT_S:.0f} s', CLOSE_UNAUTHORIZED
        ) from None
    body = _message(msg)
    token = body.get("token") if body.get("type") == "auth" else None
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise _ClosingError(
            "unauthenticated", 'the first message must be {"type":"auth","token":"..."}', CLOSE_UNAUTHORIZED
        )
    try:
        return await authenticate(request.clone(headers={**request.headers, "Authorization": f"Bearer {token}"}))
    except web.HTTPException as exc:
        try:
            detail = json.loads(exc.text or "{}")
        except ValueError:
            detail = {}
        raise _ClosingError(
            str(detail.get("error", "unauthenticated")), str(detail.get("message", exc.reason)), CLOSE_UNAUTHORIZED
        ) from None


def _message(msg: Any) -> dict[str, Any]:
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        raise ConnectionResetError("closed by the client")
    if msg.type != WSMsgType.TEXT:
        raise _ClosingError("bad_message", "messages are JSON text", CLOSE_BAD_REQUEST)
    try:
        body = json.loads(msg.data)
    except (ValueError, RecursionError):
        raise _ClosingError("bad_message", "messages are JSON objects", CLOSE_BAD_REQUEST) from None
    if not isinstance(body, dict):
        raise _ClosingError("bad_message", "messages are JSON objects", CLOSE_BAD_REQUEST)
    return body


def _subscription(who: Principal, body: dict[str, Any]) -> tuple[bool, bool, str | None, str | None]:
    if body.get("type") != "subscribe":
        raise _ClosingError("bad_message", 'expected {"type":"subscribe",...}', CLOSE_BAD_REQUEST)
    alerts, positions = body.get("alerts", True), body.get("positions", False)
    port, last = body.get("port"), body.get("last_event_id")
    if not isinstance(alerts, bool) or not isinstance(positions, bool):
        raise _ClosingError("bad_message", "alerts and positions are booleans", CLOSE_BAD_REQUEST)
    if port is not None and (not isinstance(port, str) or not 0 < len(port) <= 64):
        raise _ClosingError("bad_message", "port is null or a port name", CLOSE_BAD_REQUEST)
    if last is not None and (not isinstance(last, str) or len(last) > 32):
        raise _ClosingError("bad_message", "last_event_id is null or an event id (a string)", CLOSE_BAD_REQUEST)
    if alerts and not may_read_alerts(who):
        raise _ClosingError("forbidden", f"role {who.role!r} may not alerts:read", CLOSE_FORBIDDEN)
    if positions and not may_read_positions(who):
        raise _ClosingError("forbidden", f"role {who.role!r} may not positions:read", CLOSE_FORBIDDEN)
    return alerts, positions, port, last


async def stream(request: web.Request) -> web.StreamResponse:
    """The WebSocket live feed (alerts and positions); see the module docstring and README "Live feeds"."""
    # its query is checked as every route's (400 for an unknown, empty or repeated name; it declares none), and
    # before the upgrade: a misspelt option must not open a feed that silently ignores it
    _known_query(request)
    svc = _svc(request)
    s = svc.settings
    # no permessage-deflate: it costs the service CPU per viewer, and its background compression tasks
    # would let a stalled viewer's backlog hide in memory instead of showing as a full queue
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024, timeout=5.0, compress=False)
    if not ws.can_prepare(request).ok:
        return web.json_response(
            {"error": "upgrade_required", "message": "a WebSocket endpoint: connect with Upgrade: websocket"},
            status=426,
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    header_auth = await authenticate(request) if "Authorization" in request.headers else None  # HTTP 401/429
    await ws.prepare(request)
    _bound_send_buffer(request, s.stream_send_buffer)
    try:
        who = header_auth or await _ws_principal(request, ws)
        await ws.send_json({"type": "ready", "role": who.role, "org": who.org, "name": who.name})
        try:
            first = await ws.receive(timeout=SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            raise _ClosingError("bad_message", "no subscribe message", CLOSE_BAD_REQUEST) from None
        alerts, positions, port, last = _subscription(who, _message(first))

        def sees_event(event: FeedEvent) -> bool:
            return (port is None or event.alert.get("port") == port) and sees_alert(who, event.alert)

        def sees_fix(item: PositionItem) -> bool:
            return (port is None or item.port == port) and sees_position(who, item)

        sub = Subscriber(
            "ws",
            s.stream_queue,
            s.stream_max_positions,
            alerts=alerts,
            positions=positions,
            sees_alert=sees_event,
            sees_position=sees_fix,
        )
        with svc.feeds.hub.subscribe(sub):
            replayed, watermark, reset = await _replay(request, sub, last) if last is not None else ([], 0, None)
            await _serve_ws(ws, sub, replayed, watermark, reset, s.stream_positions_interval_s)
            if sub.slow is not None:
                log.warning("WebSocket client %s disconnected as a slow consumer: %s", request.remote, sub.slow)
                raise _ClosingError("slow_consumer", f"disconnected: {sub.slow}", CLOSE_SLOW)
    except _ClosingError as exc:
        await _close(ws, exc)
    except ConnectionError:
        log.debug("WebSocket client %s disconnected", request.remote)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
    except asyncio.CancelledError:  # the service is stopping: say so to the viewer, then stop
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"service stopping"), 1.0)
        raise
    except Exception as exc:  # the store away during the token lookup or the replay: retry later
        log.warning("WebSocket stream for %s ended: %s", request.remote, type(exc).__name__)
        await _close(ws, _ClosingError("unavailable", "the database is unavailable; retry later", CLOSE_UNAVAILABLE))
    return ws


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """The kernel would otherwise buffer megabytes for a viewer that stopped reading (autotuned up to
    tcp_wmem's maximum): memory per viewer, and a slow viewer noticed only once all of it is full."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and size > 0:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _close(ws: web.WebSocketResponse, exc: _ClosingError) -> None:
    """The error message, then the close frame; both bounded in time (a stalled viewer gets a reset)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.send_json({"type": "error", "error": exc.code, "message": exc.message}), 2.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=exc.close_code, message=exc.code.encode()[:100]), 5.0)


async def _serve_ws(
    ws: web.WebSocketResponse,
    sub: Subscriber,
    replayed: list[FeedEvent],
    watermark: int,
    reset: str | None,
    interval_s: float,
) -> None:
    loop = asyncio.get_running_loop()

    async def send() -> None:
        nonlocal watermark
        if reset is not None:
            await ws.send_json({"type": "reset", "id": str(watermark), "reason": reset})
        for event in replayed:
            await ws.send_json(event.to_json())
        next_batch = 0.0
        while sub.slow is None:
            sub.wake.clear()
            for event in _live(sub, watermark):
                await ws.send_json(event.to_json())
                watermark = event.seq
            timeout: float | None = None
            if sub.pending_positions:
                now = loop.time()
                if now >= next_batch:
                    items = sub.take_positions()
                    await ws.send_json({"type": "positions", "items": [p.to_json() for p in items]})
                    next_batch = now + interval_s
                    continue
                timeout = next_batch - now
            if sub.queue.empty():
                await _wait(sub, timeout)

    async def receive() -> None:
        """Client messages after the subscription: pings are answered, anything else refused; a close ends."""
        async for msg in ws:
            body = _message(msg)
            if body.get("type") == "ping":
                await ws.send_json({"type": "pong"})
            else:
                await ws.send_json({"type": "error", "error": "bad_message", "message": "only ping is accepted"})
        raise ConnectionResetError("closed by the client")

    sender = asyncio.ensure_future(send())
    reader = asyncio.ensure_future(receive())
    slow = asyncio.ensure_future(sub.turned_slow.wait())
    tasks = {sender, reader, slow}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in (sender, reader):
        if t in done and not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            assert exc is not None
            raise exc


def add_routes(app: web.Application) -> None:
    """The feed routes on the API app (tracker/adapters/api.py ``build_app``)."""
    app.router.add_get("/v1/alerts/stream", alert_stream)
    app.router.add_get("/v1/stream", stream)
