"""What a principal may see on the live feeds and webhooks: one call per alert event or position.

Every feed (SSE, WebSocket, webhooks) decides through these functions and nothing else, so the
organisation scope (``principal.scope``, tracker/adapters/scope.py) is applied in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

from tracker.adapters.api import PERMISSIONS, Principal
from tracker.adapters.store_webhooks import WebhookRow
from tracker.feeds import PositionItem


def may_read_alerts(who: Principal) -> bool:
    return who.role in PERMISSIONS["alerts:read"]


def may_read_positions(who: Principal) -> bool:
    return who.role in PERMISSIONS["positions:read"]


def sees_alert(who: Principal, alert: Mapping[str, object]) -> bool:
    """An alert (as GET /v1/alerts serialises it) on a feed of ``who``."""
    return may_read_alerts(who) and who.can_see(str(alert.get("device_id")))


def sees_position(who: Principal, item: PositionItem) -> bool:
    return may_read_positions(who) and who.can_see(item.device_id)


def webhook_principal(hook: WebhookRow) -> Principal:
    """Deliveries are judged with the scope of whoever registered the webhook, as it was then."""
    return Principal(hook.created_by, hook.role, hook.devices)


def webhook_owner(who: Principal) -> str | None:
    """The organisation a webhook belongs to; tokens without one own their webhooks by name."""
    return f"token:{who.name}"
