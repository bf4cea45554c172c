"""The OpenAPI description of the HTTP API, served at ``/v1/openapi.json``.

Written by hand next to the routes (a test checks that every route is described), so
integrators of insurers' and security desks' systems can generate clients from it.
"""

from __future__ import annotations

from typing import Any

from tracker import __version__

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad parameter or body",
        401: "no or unknown token",
        403: "role not allowed",
        404: "not found (also for devices outside an insurer's scope)",
        409: "conflicting state",
        413: "body too large",
        415: "not JSON",
        422: "invalid field",
    }
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _params(*names: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [{"name": n, "in": where, "required": where == "path", "schema": {"type": t}} for n, where, t in names]


def document() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "port-tracker",
            "version": __version__,
            "description": "GPS tracking of trucks and containers in seaports, geofences and security alerts.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Inspection": {
                    "type": "object",
                    "required": ["container_no", "result", "ts"],
                    "properties": {
                        "container_no": {"type": "string", "description": "ISO 6346, check digit validated"},
                        "result": {"enum": ["cleared", "selected", "held", "loaded"]},
                        "ts": {"type": ["string", "number"], "description": "ISO-8601 or epoch s/ms"},
                        "facility": {"type": "string"},
                        "seal": {"type": "string"},
                        "inspection_id": {"type": "string"},
                    },
                },
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": _json("alive")}}},
            "/readyz": {
                "get": {
                    "summary": "broker and database reachable",
                    "responses": {"200": _json("ready"), "503": _json("not ready")},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}
            },
            "/": {"get": {"summary": "operators' dashboard", "responses": {"200": {"description": "HTML page"}}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": _json("OpenAPI")}}},
            "/v1/devices": {
                "post": {
                    "summary": "register a device (admin)",
                    "security": secured,
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"201": _json("registered"), **_errors(400, 401, 403, 413, 415, 422)},
                }
            },
            "/v1/devices/{device_id}/positions": {
                "get": {
                    "summary": "trip history as GeoJSON, GPX or CSV (insurers: devices in scope only)",
                    "security": secured,
                    "parameters": _params(
                        ("device_id", "path", "string"),
                        ("from", "query", "string"),
                        ("to", "query", "string"),
                        ("limit", "query", "integer"),
                        ("format", "query", "string"),
                    ),
                    "responses": {"200": _json("positions"), **_errors(400, 401, 403, 404)},
                }
            },
            "/v1/alerts": {
                "get": {
                    "summary": "stored alerts, newest first",
                    "security": secured,
                    "parameters": _params(
                        ("status", "query", "string"),
                        ("severity", "query", "string"),
                        ("since", "query", "string"),
                        ("device_id", "query", "string"),
                        ("limit", "query", "integer"),
                    ),
                    "responses": {"200": _json("alerts"), **_errors(400, 401, 403)},
                }
            },
            "/v1/alerts/stream": {
                "get": {
                    "summary": "server-sent events of alerts as they are announced",
                    "security": secured,
                    "parameters": _params(("min_severity", "query", "string")),
                    "responses": {"200": {"description": "text/event-stream"}, **_errors(400, 401, 403)},
                }
            },
            "/v1/alerts/{alert_id}/ack": {
                "post": {
                    "summary": "acknowledge (operator, admin)",
                    "security": secured,
                    "parameters": _params(("alert_id", "path", "string")),
                    "responses": {"200": _json("acknowledged"), **_errors(401, 403, 404, 409, 422)},
                }
            },
            "/v1/alerts/{alert_id}/resolve": {
                "post": {
                    "summary": "resolve with a note (operator, admin)",
                    "security": secured,
                    "parameters": _params(("alert_id", "path", "string")),
                    "responses": {"200": _json("resolved"), **_errors(401, 403, 404, 409, 422)},
                }
            },
            "/v1/inspections": {
                "post": {
                    "summary": "a customs decision (customs, admin); a clearance opens the access window",
                    "security": secured,
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Inspection"}}}
                    },
                    "responses": {"202": _json("accepted"), **_errors(400, 401, 403, 413, 415, 422)},
                }
            },
            "/v1/pairings": {
                "post": {
                    "summary": "pair a container tracker with its truck, or unpair with truck_id null",
                    "security": secured,
                    "responses": {"201": _json("paired"), **_errors(400, 401, 403, 413, 415, 422)},
                }
            },
            "/v1/dead-letters": {
                "get": {
                    "summary": "rejected payloads with their reasons and counts",
                    "security": secured,
                    "parameters": _params(("limit", "query", "integer")),
                    "responses": {"200": _json("dead letters"), **_errors(400, 401, 403)},
                }
            },
            "/v1/fences": {
                "get": {
                    "summary": "fence sets in force, as GeoJSON",
                    "security": secured,
                    "responses": {"200": _json("fence sets"), **_errors(401, 403)},
                }
            },
        },
    }
