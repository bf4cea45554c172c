"""What a principal may see on the live feeds and webhooks: one call per alert event or position.

Every feed (SSE, WebSocket, webhooks) decides through these functions and nothing else, so the
organisation scope (``principal.scope``, tracker/adapters/scope.py) is applied in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tracker.adapters.api import PERMISSIONS, Principal, principal_for
from tracker.adapters.ports import ApiService
from tracker.adapters.scope import DEFAULT_ORG
from tracker.adapters.store import ApiToken
from tracker.adapters.store_webhooks import WebhookRow
from tracker.feeds import FeedEvent, PositionItem


def may_read_alerts(who: Principal) -> bool:
    return who.role in PERMISSIONS["alerts:read"]


def may_read_positions(who: Principal) -> bool:
    return who.role in PERMISSIONS["positions:read"]


def sees_alert(who: Principal, alert: Mapping[str, object]) -> bool:
    """An alert (as GET /v1/alerts serialises it) on a feed of ``who``."""
    return may_read_alerts(who) and who.scope.sees_alert(alert)


def sees_position(who: Principal, item: PositionItem) -> bool:
    """A fix of a device ``who`` sees at the fix's time (an insurer: inside its coverage dates)."""
    return may_read_positions(who) and who.scope.sees_device(item.device_id, item.ts)


def webhook_owner(who: Principal) -> str | None:
    """The organisation a webhook belongs to (None: the bootstrap admin token's)."""
    return who.org


async def webhook_judge(api: ApiService, hook: WebhookRow) -> Callable[[FeedEvent], bool]:
    """Deliveries are judged with the scope of the registering token's role and organisation as it is now
    (an organisation's ports, an insurer's coverage), not with a copy taken at registration."""
    token = ApiToken(hook.created_by, hook.role, hook.devices, org=hook.org or DEFAULT_ORG)
    who = await principal_for(api, token)
    return lambda event: sees_alert(who, event.alert)
