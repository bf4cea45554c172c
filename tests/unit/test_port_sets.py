"""The fence sets shipped as package data: they must load, be valid and carry their source and licence."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import shapely

from geofences import FenceIndex, FenceKind, available_ports, load_fence_set, load_port

# generous boxes around each port (lon_min, lat_min, lon_max, lat_max); the Santos one includes the
# anchorages offshore that belong to the organised-port polygon
PORT_BBOX = {
    "santos": (-46.45, -24.30, -46.05, -23.70),
    "callao": (-77.16, -12.07, -77.13, -12.04),
}


def test_available_ports() -> None:
    assert available_ports() == ["callao", "santos"]
    with pytest.raises(KeyError, match="available: callao, santos"):
        load_port("../../etc/passwd")


@pytest.mark.parametrize("port", sorted(PORT_BBOX))
def test_port_set_is_complete_and_valid(port: str) -> None:
    fs = load_port(port)
    assert fs.port == port
    assert fs.source.startswith("https://github.com/")
    assert fs.licence
    ids = [f.id for f in fs.fences]
    assert len(ids) == len(set(ids))
    assert fs.kinds() == set(FenceKind)
    assert any(f.kind is FenceKind.RESTRICTED for f in fs.fences)
    box = shapely.box(*PORT_BBOX[port])
    for f in fs.fences:
        assert f.geometry.geom_type in ("Polygon", "MultiPolygon"), f.id
        assert f.geometry.is_valid, (f.id, shapely.is_valid_reason(f.geometry))
        assert box.contains(f.geometry), f.id
        assert f.port == port
    FenceIndex(fs.fences)


@pytest.mark.parametrize("port", sorted(PORT_BBOX))
def test_port_file_is_wgs84_with_provenance_and_7_decimals(port: str) -> None:
    text = resources.files("geofences").joinpath("ports", f"{port}.geojson").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:OGC:1.3:CRS84"
    assert {"port", "name", "source", "licence"} <= doc.keys()
    coords = [
        c for f in doc["features"] for c in shapely.get_coordinates(shapely.from_geojson(json.dumps(f["geometry"])))
    ]
    assert all(round(float(v), 7) == float(v) for c in coords for v in c)
    assert len(text.encode()) < 500_000
    # derived fences say how they were made
    for f in doc["features"]:
        if f["properties"]["kind"] in ("gate", "inspection_area", "authorized_parking") and port == "santos":
            assert f["properties"].get("derived"), f["id"]
    assert load_fence_set(doc) == load_port(port)


def test_licences_match_provenance() -> None:
    assert load_port("callao").licence == "ODbL-1.0, (c) OpenStreetMap contributors"
    assert "PDZ, Portaria 77 MINFRA 2020" in load_port("santos").licence
