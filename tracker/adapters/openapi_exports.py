"""OpenAPI entries of the export and custody routes (merged into tracker/adapters/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from tracker.adapters.openapi import DEVICE_ID, SECURED_ERRORS, TIME, _errors, _param

FORMAT = _param(
    "format",
    "query",
    {"enum": ["geojson", "gpx", "kml", "csv"]},
    "wins over Accept; without both: GeoJSON",
)
RANGE = [
    _param("from", "query", TIME, "default: 24 h before 'to'"),
    _param("to", "query", TIME, "default: now; at most 31 days after 'from'"),
]
CONTAINER_NO = {"type": "string", "description": "ISO 6346 container number (check digit validated)"}
NOT_ACCEPTABLE = {
    "406": {
        "description": "Accept names none of the export formats",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
}
NULLABLE_NUMBER = {"type": ["number", "null"]}
FEATURE = {
    "type": "object",
    "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"const": "Feature"},
        "geometry": {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {
                "type": {"const": "Point"},
                "coordinates": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            },
        },
        "properties": {
            "type": "object",
            "required": ["device_id", "ts", "speed", "heading", "accuracy", "events", "flags", "source"],
            "properties": {
                "device_id": {"type": "string"},
                "ts": {"type": "string"},
                "speed": NULLABLE_NUMBER,
                "heading": NULLABLE_NUMBER,
                "accuracy": NULLABLE_NUMBER,
                "events": {"type": "array", "items": {"type": "string"}},
                "flags": {"type": "array", "items": {"type": "string"}},
                "source": {"type": "string"},
            },
        },
    },
}
GEOJSON_EXPORT = {
    "type": "object",
    "required": ["type", "subject", "device_ids", "from", "to", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "subject": {"type": "string"},
        "device_ids": {"type": "array", "items": {"type": "string"}},
        "from": {"type": "string"},
        "to": {"type": "string"},
        "features": {"type": "array", "items": FEATURE},
    },
}
EXPORT_CONTENT = {
    "application/geo+json": {"schema": GEOJSON_EXPORT},
    "application/gpx+xml": {"schema": {"type": "string"}},
    "application/vnd.google-earth.kml+xml": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
}

SIGNED_REPORT = {
    "type": "object",
    "required": ["report", "signature"],
    "properties": {
        "report": {
            "type": "object",
            "required": ["type", "v", "container_no", "from", "to", "alerts", "checkpoint"],
            "properties": {
                "type": {"const": "port-tracker/custody-report"},
                "v": {"const": 1},
                "container_no": {"type": "string"},
                "alerts": {"type": "array", "items": {"type": "object"}},
                "checkpoint": {"type": ["object", "null"]},
            },
        },
        "signature": {
            "type": "object",
            "required": ["alg", "key_id", "value"],
            "properties": {"alg": {"const": "Ed25519"}, "key_id": {"type": "string"}, "value": {"type": "string"}},
        },
    },
}


def _export(summary: str, key: dict[str, Any], ranged: bool = True) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [key, *(RANGE if ranged else []), FORMAT],
            "responses": {
                "200": {"description": "the fixes, streamed (chunked), by device then time", "content": EXPORT_CONTENT},
                **_errors(400, 403, 404, *SECURED_ERRORS),
                **NOT_ACCEPTABLE,
            },
        }
    }


def paths() -> dict[str, Any]:
    return {
        "/v1/devices/{device_id}/export": _export(
            "a device's fixes as GeoJSON, GPX (speed, course), KML or CSV, streamed (insurers: in scope only)",
            _param("device_id", "path", DEVICE_ID),
        ),
        "/v1/containers/{container_no}/custody": {
            "get": {
                "summary": "signed custody report of one container (insurer, operator, admin): HTML, PDF or JSON",
                "description": "Evidence of the range (stops, alerts with their resolution and signed links, customs"
                " decisions, fences involved, the track) signed with the service's Ed25519 key, with the alert-log"
                " checkpoint covering its alerts. Check it offline: tracker custody verify FILE --public-key KEY.",
                "security": [{"bearer": []}],
                "parameters": [
                    _param("container_no", "path", CONTAINER_NO),
                    _param("from", "query", TIME, "default: 24 h before 'to'"),
                    _param("to", "query", TIME, "default: now; at most 62 days after 'from'"),
                    _param("format", "query", {"enum": ["html", "pdf", "json"]}, "wins over Accept; default HTML"),
                ],
                "responses": {
                    "200": {
                        "description": "the signed report",
                        "content": {
                            "text/html": {"schema": {"type": "string"}},
                            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": SIGNED_REPORT},
                        },
                    },
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
        "/v1/trips/{trip_id}/export": _export(
            "one trip's fixes (its device, start to end) as GeoJSON, GPX, KML or CSV, streamed",
            _param("trip_id", "path", {"type": "string", "format": "uuid"}),
            ranged=False,
        ),
        "/v1/containers/{container_no}/export": _export(
            "a container's fixes (its trackers') as GeoJSON, GPX, KML or CSV, streamed",
            _param("container_no", "path", CONTAINER_NO),
        ),
    }
