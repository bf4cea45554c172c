"""OpenAPI entries of run-time fence management (tracker/adapters/api_fences.py).

Next to the handlers' module rather than in it, as the feeds' and exports' are: the document is read
by clients and the fuzzer, the handlers by whoever changes what a fence change does. The patterns and
limits come from the handlers' module, so the document cannot promise other ones.
"""

from __future__ import annotations

from typing import Any

from geofences import FenceKind
from geofences.circle import MAX_RADIUS_M, MIN_RADIUS_M
from geofences.fence import SEVERITIES
from tracker.adapters.api_fences import (
    FENCE_ID_TEXT,
    MAX_FENCES,
    PORT_TEXT,
)
from tracker.adapters.openapi import (
    BODY_ERRORS,
    NULLABLE_STRING,
    SECURED_ERRORS,
    _body,
    _errors,
    _json,
    _limit,
    _obj,
    _param,
    _ref,
)


def _schemas() -> dict[str, Any]:
    kinds = [k.value for k in FenceKind]
    stamp = {
        "type": ["object", "null"],
        "properties": {"version": {"type": ["integer", "null"]}, "sha256": {"type": "string"}},
    }
    feature_members = {
        "type": {"const": "Feature"},
        "id": {"type": "string"},
        "properties": {"type": "object"},
        "geometry": {"type": "object"},
    }
    feature_out = _obj(feature_members, ["type", "id", "properties", "geometry"])
    version = _obj(
        {
            "port": {"type": "string"},
            "version": {"type": ["integer", "null"], "description": "null: the set comes from a fence file"},
            "sha256": {"type": "string", "description": "of the canonical JSON of the stored set"},
            "author": {"type": "string"},
            "created_at": NULLABLE_STRING,
            "change": {"enum": ["upload", "put", "delete", "import", "migrated", "file"]},
            "fence_id": NULLABLE_STRING,
            "fences": {"type": "integer"},
        },
        ["port", "version", "sha256", "author", "created_at", "change", "fence_id", "fences"],
    )
    circle = _obj(
        {
            "type": {"const": "Circle"},
            "id": {"type": "string"},
            "port": {"type": "string", "pattern": PORT_TEXT},
            "name": {"type": "string", "maxLength": 200},
            "kind": {"enum": kinds},
            "center": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "radius_m": {"type": "number", "minimum": MIN_RADIUS_M, "maximum": MAX_RADIUS_M},
            "severity": {"enum": list(SEVERITIES)},
            "windows": {"type": "array"},
            "properties": {"type": "object"},
        },
        ["type", "kind", "center", "radius_m"],
    )
    feature_in = _obj(
        {
            "type": {"const": "Feature"},
            "id": {"type": ["string", "number", "null"]},
            "port": {"type": "string", "pattern": PORT_TEXT},
            "properties": {"type": ["object", "null"]},
            "geometry": {"type": ["object", "null"]},
        },
        ["type"],
    )
    return {
        "FenceStamp": stamp,
        "FenceOut": _obj(
            {**feature_members, "port": {"type": "string"}, "fence_set": stamp},
            ["type", "id", "properties", "geometry", "port", "fence_set"],
        ),
        "FenceIn": {
            "description": "a GeoJSON Feature (a Point with properties.radius_m is a circle), or a circle",
            "oneOf": [feature_in, circle],
        },
        "FenceSaved": _obj(
            {
                "fence": feature_out,
                "port": {"type": "string"},
                "version": {"type": "integer"},
                "sha256": {"type": "string"},
            },
            ["fence", "port", "version", "sha256"],
        ),
        "FenceDeleted": _obj(
            {
                "id": {"type": "string"},
                "port": {"type": "string"},
                "version": {"type": "integer"},
                "sha256": {"type": "string"},
                "deleted": {"const": True},
            },
            ["id", "port", "version", "sha256", "deleted"],
        ),
        "FenceSetIn": _obj(
            {
                "type": {"const": "FeatureCollection"},
                "port": {"type": "string"},
                "name": {"type": "string", "maxLength": 1000},
                "source": {"type": "string", "maxLength": 1000},
                "licence": {"type": "string", "maxLength": 1000},
                "features": {"type": "array", "items": {"type": "object"}, "maxItems": MAX_FENCES},
            },
            ["type", "features"],
        ),
        "FenceSetSaved": _obj(
            {
                "port": {"type": "string"},
                "version": {"type": "integer"},
                "sha256": {"type": "string"},
                "fences": {"type": "integer"},
            },
            ["port", "version", "sha256", "fences"],
        ),
        "FenceVersion": version,
        "FenceVersions": _obj(
            {
                "port": {"type": "string"},
                "current": {"oneOf": [version, {"type": "null"}]},
                "versions": {"type": "array", "items": version},
            },
            ["port", "current", "versions"],
        ),
        "FenceSetVersion": _obj({"version": version, "geojson": {"type": "object"}}, ["version", "geojson"]),
    }


def _paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    fence_id = _param("fence_id", "path", {"type": "string", "pattern": FENCE_ID_TEXT})
    port = _param("port", "path", {"type": "string", "pattern": PORT_TEXT})
    return {
        "/v1/fences/{fence_id}": {
            "get": {
                "summary": "one fence in force, with its port and the version of its set",
                "security": secured,
                "parameters": [fence_id],
                "responses": {
                    "200": _json("the fence", _ref("FenceOut")),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            },
            "put": {
                "summary": "create or replace a fence (admin): a new version of its port's set",
                "security": secured,
                "parameters": [fence_id],
                "requestBody": _body(_ref("FenceIn")),
                "responses": {
                    "200": _json("replaced", _ref("FenceSaved")),
                    "201": _json("created", _ref("FenceSaved")),
                    **_errors(*BODY_ERRORS, 403, 404, 409, *SECURED_ERRORS),
                },
            },
            "delete": {
                "summary": "delete a fence (admin): a new version of its port's set without it",
                "security": secured,
                "parameters": [fence_id],
                "responses": {
                    "200": _json("deleted", _ref("FenceDeleted")),
                    **_errors(400, 403, 404, 409, 422, *SECURED_ERRORS),
                },
            },
        },
        "/v1/fence-sets/{port}": {
            "post": {
                "summary": "upload a port's whole fence set (admin), validated; it becomes a new version",
                "security": secured,
                "parameters": [
                    port,
                    _param(
                        "base_version",
                        "query",
                        {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                        "only if the set is still at this version (0: the port has none)",
                    ),
                ],
                "requestBody": _body(_ref("FenceSetIn")),
                "responses": {
                    "201": _json("stored and in force", _ref("FenceSetSaved")),
                    **_errors(*BODY_ERRORS, 403, 404, 409, *SECURED_ERRORS),
                },
            }
        },
        "/v1/fence-sets/{port}/versions": {
            "get": {
                "summary": "a port's fence-set versions, newest first",
                "security": secured,
                "parameters": [port, _limit(100, 1000)],
                "responses": {
                    "200": _json("versions", _ref("FenceVersions")),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
        "/v1/fence-sets/{port}/versions/{version}": {
            "get": {
                "summary": "one stored version of a port's set, as GeoJSON",
                "security": secured,
                "parameters": [
                    port,
                    _param("version", "path", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}),
                ],
                "responses": {
                    "200": _json("the version", _ref("FenceSetVersion")),
                    **_errors(400, 403, 404, *SECURED_ERRORS),
                },
            }
        },
    }


SCHEMAS: dict[str, Any] = _schemas()
PATHS: dict[str, Any] = _paths()
