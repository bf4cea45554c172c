"""Signed webhook delivery for alert feeds (security desks, insurers' systems).

The signature covers a timestamp and the exact body (``t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``), so a receiver can reject both forged and replayed deliveries. Delivery
is driven by the outbox: a failed POST is retried with back-off and never dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time

import aiohttp

SIGNATURE_HEADER = "X-Tracker-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """What a receiver runs: the signature matches and is fresh (replays older than the tolerance fail)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def is_public(address: str) -> bool:
    """A globally routable unicast address: what a webhook may be delivered to (unless
    ``TRACKER_WEBHOOK_ALLOW_PRIVATE``), so a registration cannot reach the service's own network."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


class WebhookError(RuntimeError):
    pass


async def deliver(
    session: aiohttp.ClientSession, url: str, body: bytes, secret: str, *, timeout_s: float = 10.0
) -> None:
    """POST one alert; anything but a 2xx is a failure for the outbox to retry."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        "User-Agent": "port-tracker",
    }
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as resp:
            if not 200 <= resp.status < 300:
                raise WebhookError(f"{url} answered {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise WebhookError(f"{url}: {exc.__class__.__name__}: {exc}") from None
