"""The OpenAPI description of the HTTP API, served at ``/v1/openapi.json``.

Written by hand next to the routes (a test checks that every route is described), so
integrators of insurers' and security desks' systems can generate clients from it. It is
also the contract a schemathesis run checks the running service against (tests/integration/
test_api_fuzz.py): every status code, content type and response body the API can produce is
listed here, and every input the document calls invalid the API refuses with a 4xx.
What JSON Schema cannot say (ISO 6346 check digits, the time grammar) the API checks on top.
"""

from __future__ import annotations

from typing import Any

from tracker import __version__

ERROR = {"$ref": "#/components/schemas/Error"}
DEVICE_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,63}$"}
SEVERITIES = ["info", "low", "medium", "high", "critical"]
TIME = {"type": "string", "description": "ISO-8601 (naive is UTC) or epoch seconds/milliseconds, 1970-9000"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}

ERROR_TEXT = {
    400: "bad, unknown or repeated query parameter, or bad body",
    401: "no, malformed or unknown token",
    403: "role not allowed",
    404: "not found (also for anything outside the token's scope)",
    405: "method not allowed",
    409: "conflicting state",
    413: "body too large",
    415: "not JSON",
    422: "invalid field",
    429: "too many failed authentications from this address",
    503: "database unavailable, or a write not confirmed in time",
}


def _errors(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in codes:
        response: dict[str, Any] = {"description": ERROR_TEXT[c], "content": {"application/json": {"schema": ERROR}}}
        if c in (429, 503):
            response["headers"] = RETRY_AFTER
        out[str(c)] = response
    return out


SECURED_ERRORS = (401, 429, 503)
"""Any authenticated route: no/bad token, rate limited, token lookup with the database away."""
BODY_ERRORS = (400, 413, 415, 422)
"""Any route reading a JSON body."""


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        out["description"] = description
    return out


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def _limit(default: int, high: int) -> dict[str, Any]:
    return _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": high, "default": default})


NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string"}, "message": {"type": "string"}}, ["error", "message"]),
    "Ready": _obj(
        {
            "ready": {"type": "boolean"},
            "checks": _obj(
                {"database": {"type": "boolean"}, "broker": {"type": "boolean"}, "ingest": {"type": "boolean"}},
                ["database", "broker", "ingest"],
            ),
        },
        ["ready", "checks"],
    ),
    "Inspection": _obj(
        {
            "container_no": {"type": "string", "description": "ISO 6346, check digit validated"},
            "result": {"enum": ["cleared", "selected", "held", "loaded"]},
            "ts": {**TIME, "type": ["string", "number"]},
            "facility": {"type": "string", "maxLength": 64},
            "seal": {"type": "string", "maxLength": 64},
            "inspection_id": {"type": "string", "maxLength": 64, "description": "makes a retry idempotent"},
        },
        ["container_no", "result", "ts"],
    ),
    "InspectionAccepted": _obj(
        {
            "container_no": {"type": "string"},
            "result": {"type": "string"},
            "ts": {"type": "string"},
            "devices": {"type": "array", "items": {"type": "string"}},
        },
        ["container_no", "result", "ts", "devices"],
    ),
    "Device": _obj(
        {
            "device_id": DEVICE_ID,
            "kind": {"enum": ["truck", "container", "seal"], "default": "truck"},
            "name": {"type": ["string", "null"], "maxLength": 200},
            "container_no": {"type": ["string", "null"], "description": "ISO 6346, check digit validated"},
            "org": {"type": ["string", "null"], "maxLength": 64, "description": "owning organisation (default: kept)"},
        },
        ["device_id"],
    ),
    "DeviceRegistered": _obj(
        {
            "device_id": {"type": "string"},
            "kind": {"type": "string"},
            "container_no": NULLABLE_STRING,
            "org": NULLABLE_STRING,
        },
        ["device_id", "kind", "container_no"],
    ),
    "Pairing": _obj(
        {
            "container_id": {"type": "string", "description": "a registered container tracker"},
            "truck_id": {"type": ["string", "null"], "description": "a registered device, or null to unpair"},
        },
        ["container_id"],
    ),
    "Paired": _obj(
        {"container_id": {"type": "string"}, "truck_id": NULLABLE_STRING, "by": {"type": "string"}},
        ["container_id", "truck_id", "by"],
    ),
    "Positions": _obj(
        {
            "type": {"const": "FeatureCollection"},
            "device_id": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "truncated": {"type": "boolean"},
            "features": {
                "type": "array",
                "items": _obj(
                    {
                        "type": {"const": "Feature"},
                        "geometry": _obj(
                            {
                                "type": {"const": "Point"},
                                "coordinates": {"type": "array", "items": {"type": "number"}},
                            }
                        ),
                        "properties": _obj(
                            {
                                "ts": {"type": "string"},
                                "speed": NULLABLE_NUMBER,
                                "heading": NULLABLE_NUMBER,
                                "accuracy": NULLABLE_NUMBER,
                                "events": {"type": "array", "items": {"type": "string"}},
                                "flags": {"type": "array", "items": {"type": "string"}},
                                "source": {"type": "string"},
                            }
                        ),
                    },
                    ["type", "geometry", "properties"],
                ),
            },
        },
        ["type", "device_id", "from", "to", "truncated", "features"],
    ),
    "DeadLetters": _obj(
        {
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "dead_letters": {
                "type": "array",
                "items": _obj(
                    {
                        "id": {"type": "integer"},
                        "received_at": {"type": "string"},
                        "source": {"type": "string"},
                        "topic": NULLABLE_STRING,
                        "device_id": NULLABLE_STRING,
                        "reason": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                    ["id", "received_at", "source", "reason", "detail"],
                ),
            },
        },
        ["counts", "dead_letters"],
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document() -> dict[str, Any]:
    """The whole document: the routes described here and those the area modules describe next to their handlers."""
    from tracker.adapters import api_alerts, api_inspections, api_orgs, api_trips, openapi_feeds, openapi_fences

    doc = _core_document()
    for module in (api_alerts, api_orgs, openapi_fences, api_inspections, api_trips, openapi_feeds):
        doc["components"]["schemas"].update(module.SCHEMAS)
        for path, ops in module.PATHS.items():
            doc["paths"].setdefault(path, {}).update(ops)
    return doc


def _core_document() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "port-tracker",
            "version": __version__,
            "description": "GPS tracking of trucks and containers in seaports, geofences and security alerts. "
            "/metrics and /readyz are served here unless the service runs a separate ops listener "
            "(TRACKER_OPS_PORT). A query parameter an operation does not list, or one given twice, is "
            "answered 400 (error unknown_parameter or repeated_parameter) on every route but the dashboard's "
            "page and files.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(SCHEMAS),
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "liveness",
                    "responses": {
                        "200": _json("alive", _obj({"status": {"const": "ok"}}, ["status"])),
                        **_errors(400),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "broker and database reachable",
                    "responses": {
                        "200": _json("ready", _ref("Ready")),
                        "503": _json("not ready", _ref("Ready")),
                        **_errors(400),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(400),
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "operators' dashboard",
                    "responses": {
                        "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
                    },
                }
            },
            "/web/{path}": {
                "get": {
                    "summary": "the dashboard's scripts, styles, images and vendored map library (no token)",
                    "parameters": [_param("path", "path", {"type": "string"})],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {
                                "text/javascript": {"schema": {"type": "string"}},
                                "text/css": {"schema": {"type": "string"}},
                                "image/png": {"schema": {"type": "string"}},
                                "image/svg+xml": {"schema": {"type": "string"}},
                                "text/plain": {"schema": {"type": "string"}},
                            },
                        },
                        "304": {"description": "unchanged (If-None-Match)"},
                        **_errors(404),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "this document", "responses": {"200": _json("OpenAPI"), **_errors(400)}}
            },
            "/v1/devices": {
                "post": {
                    "summary": "register a device (admin)",
                    "security": secured,
                    "requestBody": _body(_ref("Device")),
                    "responses": {
                        "201": _json("registered", _ref("DeviceRegistered")),
                        **_errors(*BODY_ERRORS, *SECURED_ERRORS, 403),
                    },
                }
            },
            "/v1/devices/{device_id}/positions": {
                "get": {
                    "summary": "trip history as GeoJSON, GPX or CSV (insurers: devices in scope only)",
                    "security": secured,
                    "parameters": [
                        _param("device_id", "path", DEVICE_ID),
                        _param("from", "query", TIME, "default: 24 h before 'to'"),
                        _param("to", "query", TIME, "default: now; at most 31 days after 'from'"),
                        _limit(10_000, 50_000),
                        _param("format", "query", {"enum": ["geojson", "gpx", "csv"], "default": "geojson"}),
                    ],
                    "responses": {
                        "200": {
                            "description": "positions",
                            "content": {
                                "application/json": {"schema": _ref("Positions")},
                                "application/gpx+xml": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 403, 404, *SECURED_ERRORS),
                    },
                }
            },
            "/v1/inspections": {
                "post": {
                    "summary": "a customs decision (customs, admin); a clearance opens the access window",
                    "security": secured,
                    "requestBody": _body(_ref("Inspection")),
                    "responses": {
                        "202": _json("stored", _ref("InspectionAccepted")),
                        **_errors(*BODY_ERRORS, 403, *SECURED_ERRORS),
                    },
                }
            },
            "/v1/pairings": {
                "post": {
                    "summary": "pair a container tracker with its truck, or unpair with truck_id null",
                    "security": secured,
                    "parameters": [_param("at", "query", TIME, "default: now; at most 5 s ahead of now")],
                    "requestBody": _body(_ref("Pairing")),
                    "responses": {
                        "201": _json("paired", _ref("Paired")),
                        **_errors(*BODY_ERRORS, 403, *SECURED_ERRORS),
                    },
                }
            },
            "/v1/dead-letters": {
                "get": {
                    "summary": "rejected payloads with their reasons and counts",
                    "security": secured,
                    "parameters": [_limit(100, 1000)],
                    "responses": {
                        "200": _json("dead letters", _ref("DeadLetters")),
                        **_errors(400, 403, *SECURED_ERRORS),
                    },
                }
            },
            "/v1/fences": {
                "get": {
                    "summary": "fence sets in force, as GeoJSON",
                    "security": secured,
                    "responses": {
                        "200": _json(
                            "fence sets",
                            _obj(
                                {
                                    "ports": {"type": "object", "additionalProperties": {"type": "object"}},
                                    "versions": {"type": "object", "additionalProperties": {"type": "object"}},
                                },
                                ["ports", "versions"],
                            ),
                        ),
                        **_errors(403, *SECURED_ERRORS),
                    },
                }
            },
            **_exports_paths(),
        },
    }
    return doc


def _exports_paths() -> dict[str, Any]:
    from tracker.adapters.openapi_exports import paths

    return paths()


OPS_PATHS = ("/metrics", "/readyz")


def document_for(ops_routes: bool) -> dict[str, Any]:
    """The document of one API listener: without the ops paths when they live on their own listener."""
    doc = document()
    if not ops_routes:
        for path in OPS_PATHS:
            doc["paths"].pop(path)
    return doc
