"""OpenAPI entries of the live feeds and webhooks (tracker/adapters/api_feeds.py, api_webhooks.py)."""

from __future__ import annotations

from typing import Any

from tracker.adapters.openapi import (
    BODY_ERRORS,
    NULLABLE_STRING,
    SECURED_ERRORS,
    SEVERITIES,
    _body,
    _errors,
    _json,
    _limit,
    _obj,
    _param,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STRINGS = {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 64}}
FILTERS = _obj(
    {
        "ports": {**STRINGS, "description": "only alerts of these ports (empty: any)"},
        "severities": {"type": "array", "maxItems": 50, "items": {"enum": SEVERITIES}},
        "kinds": {**STRINGS, "description": "only these alert kinds (empty: any)"},
        "events": {"type": "array", "maxItems": 50, "items": {"enum": ["raised", "updated"]}, "minItems": 1},
    }
)

SCHEMAS: dict[str, Any] = {
    "WebhookNew": {
        **_obj(
            {
                "url": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "http(s) URL"},
                "ports": FILTERS["properties"]["ports"],
                "severities": FILTERS["properties"]["severities"],
                "kinds": FILTERS["properties"]["kinds"],
                "events": FILTERS["properties"]["events"],
            },
            ["url"],
        ),
        "additionalProperties": False,
    },
    "Webhook": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "url": {"type": "string"},
            "org": NULLABLE_STRING,
            "created_by": {"type": "string"},
            "created_at": {"type": "string"},
            "filters": _obj(
                {
                    "ports": {"type": "array", "items": {"type": "string"}},
                    "severities": {"type": "array", "items": {"type": "string"}},
                    "kinds": {"type": "array", "items": {"type": "string"}},
                    "events": {"type": "array", "items": {"type": "string"}},
                },
                ["ports", "severities", "kinds", "events"],
            ),
        },
        ["id", "url", "org", "created_by", "created_at", "filters"],
    ),
    "WebhookDelivery": _obj(
        {
            "id": {"type": "integer"},
            "event_id": {"type": "string"},
            "event": {"enum": ["raised", "updated"]},
            "alert_id": {"type": "string"},
            "status": {"enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "next_attempt_at": NULLABLE_STRING,
            "last_status": {"type": ["integer", "null"]},
            "last_error": NULLABLE_STRING,
            "created_at": {"type": "string"},
            "finished_at": NULLABLE_STRING,
            "attempt_log": {
                "type": "array",
                "items": _obj(
                    {
                        "at": {"type": "string"},
                        "http_status": {"type": ["integer", "null"]},
                        "error": NULLABLE_STRING,
                        "duration_ms": {"type": "integer"},
                    },
                    ["at", "http_status", "error", "duration_ms"],
                ),
            },
        },
        ["id", "event_id", "event", "alert_id", "status", "attempts", "created_at", "attempt_log"],
    ),
}
SCHEMAS["WebhookCreated"] = {
    **SCHEMAS["Webhook"],
    "properties": {
        **SCHEMAS["Webhook"]["properties"],
        "secret": {"type": "string", "description": "HMAC-SHA256 key of the signatures; shown only here, once"},
    },
    "required": [*SCHEMAS["Webhook"]["required"], "secret"],
}

WEBHOOK_ID = _param("webhook_id", "path", {"type": "string", "format": "uuid"})


def _paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "/v1/alerts/stream": {
            "get": {
                "summary": "server-sent events of alerts as they are announced; Last-Event-ID replays what was missed",
                "security": secured,
                "parameters": [
                    _param("min_severity", "query", {"enum": SEVERITIES, "default": "info"}),
                    _param(
                        "Last-Event-ID",
                        "header",
                        {"type": "string", "maxLength": 32},
                        "the id of the last event seen: what came after it is replayed first"
                        " (or an event 'reset' when more was missed than is kept)",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "an endless stream of 'alert' events (id: the event id), 'reset', and"
                        " 'error' (slow_consumer) before the server closes",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 403, *SECURED_ERRORS),
                },
            }
        },
        "/v1/stream": {
            "get": {
                "summary": "WebSocket live feed of alerts and positions (see README 'Live feeds')",
                "description": 'Token in the first message {"type":"auth","token":...} (or an Authorization'
                ' header, checked before the upgrade); then {"type":"subscribe","alerts":bool,"positions":'
                'bool,"port":null|str,"last_event_id":null|str}. Server messages: ready, alert, positions,'
                " reset, error; close codes 4001 unauthorized, 4003 forbidden, 4008 slow consumer.",
                "security": secured,
                "responses": {
                    "101": {"description": "switching to the WebSocket protocol"},
                    "426": _json("not a WebSocket upgrade", _ref("Error")),
                    **_errors(*SECURED_ERRORS),
                },
            }
        },
        "/v1/webhooks": {
            "post": {
                "summary": "register a webhook for the caller's organisation (the secret is shown once)",
                "security": secured,
                "requestBody": _body(_ref("WebhookNew")),
                "responses": {
                    "201": _json("registered", _ref("WebhookCreated")),
                    **_errors(*BODY_ERRORS, 403, 409, *SECURED_ERRORS),
                },
            },
            "get": {
                "summary": "the caller's organisation's webhooks (admin: all)",
                "security": secured,
                "responses": {
                    "200": _json(
                        "webhooks", _obj({"webhooks": {"type": "array", "items": _ref("Webhook")}}, ["webhooks"])
                    ),
                    **_errors(403, *SECURED_ERRORS),
                },
            },
        },
        "/v1/webhooks/{webhook_id}": {
            "delete": {
                "summary": "stop delivering to a webhook (its deliveries stay readable)",
                "security": secured,
                "parameters": [WEBHOOK_ID],
                "responses": {
                    "200": _json(
                        "deleted",
                        _obj({"id": {"type": "string"}, "deleted": {"const": True}}, ["id", "deleted"]),
                    ),
                    **_errors(403, 404, *SECURED_ERRORS),
                },
            }
        },
        "/v1/webhooks/{webhook_id}/deliveries": {
            "get": {
                "summary": "a webhook's deliveries, newest first, each with every attempt",
                "security": secured,
                "parameters": [WEBHOOK_ID, _limit(100, 1000)],
                "responses": {
                    "200": _json(
                        "deliveries",
                        _obj(
                            {
                                "webhook_id": {"type": "string"},
                                "deliveries": {"type": "array", "items": _ref("WebhookDelivery")},
                            },
                            ["webhook_id", "deliveries"],
                        ),
                    ),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
    }


PATHS = _paths([{"bearer": []}])
