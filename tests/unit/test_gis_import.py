"""Importing what GIS teams hand over: projected CRSs, odd attribute names, missing .prj files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from geofences import FenceError, FenceKind, haversine_m, load_fence_set
from tracker.gis_import import import_fences

# SIRGAS 2000 / UTM 23S coordinates of a spot in the Santos port area (metres)
E0, N0 = 366_000.0, 7_350_000.0
TO_WGS84 = Transformer.from_crs("EPSG:31983", "EPSG:4326", always_xy=True)


def _frame(crs: str | None) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "codigo": ["T-01", "G-01", "R-01"],
            "nome": ["Terminal Teste", "Portão 1", "Via interna"],
            "tipo": ["TERMINAL", "PORTAO", "VIA"],
            "area_m2": [40_000.0, 400.0, None],
        },
        geometry=[
            shapely.box(E0, N0, E0 + 200, N0 + 200),
            shapely.box(E0 + 200, N0 + 90, E0 + 220, N0 + 110),
            shapely.LineString([(E0 + 220, N0 + 100), (E0 + 800, N0 + 100)]),
        ],
        crs=crs,
    )


KIND_MAP = {"TERMINAL": "terminal", "PORTAO": "gate", "VIA": "corridor"}


def _assert_lands_where_expected(doc: dict[str, Any]) -> None:
    fs = load_fence_set(doc)
    term = fs.by_id("T-01")
    assert term.kind is FenceKind.TERMINAL
    assert term.name == "Terminal Teste"
    assert term.properties["area_m2"] == 40_000.0
    assert fs.by_id("G-01").kind is FenceKind.GATE
    if "R-01" in {f.id for f in fs.fences}:
        assert fs.by_id("R-01").centerline is not None
    got = shapely.get_coordinates(term.geometry).tolist()
    for e, n in [(E0, N0), (E0 + 200, N0), (E0 + 200, N0 + 200), (E0, N0 + 200)]:
        exp_lon, exp_lat = TO_WGS84.transform(e, n)
        assert min(haversine_m(lon, lat, exp_lon, exp_lat) for lon, lat in got) < 1.0
    assert fs.port == "santos"


def test_geopackage_in_sirgas_utm23s(tmp_path: Path) -> None:
    path = tmp_path / "santos.gpkg"
    _frame("EPSG:31983").to_file(path, layer="cercas", driver="GPKG", engine="pyogrio")
    doc = import_fences(
        path,
        port="santos",
        kind_field="tipo",
        kind_map=KIND_MAP,
        id_field="codigo",
        name_field="nome",
        layer="cercas",
    )
    _assert_lands_where_expected(doc)


def test_shapefile_and_missing_crs(tmp_path: Path) -> None:
    path = tmp_path / "cercas.shp"
    _frame("EPSG:31983").iloc[:2].to_file(path, engine="pyogrio")  # a shapefile holds one geometry type
    doc = import_fences(path, port="santos", kind_field="tipo", kind_map=KIND_MAP, id_field="codigo", name_field="nome")
    _assert_lands_where_expected(doc)

    bare = tmp_path / "bare.shp"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        _frame(None).iloc[:2].to_file(bare, engine="pyogrio")
    with pytest.raises(ValueError, match="no CRS"):
        import_fences(bare, port="santos", kind_field="tipo", kind_map=KIND_MAP)
    doc = import_fences(
        bare,
        port="santos",
        kind_field="tipo",
        kind_map=KIND_MAP,
        id_field="codigo",
        name_field="nome",
        assume_crs="EPSG:31983",
    )
    _assert_lands_where_expected(doc)


def test_default_kind_ids_and_unmapped_kinds(tmp_path: Path) -> None:
    path = tmp_path / "s.gpkg"
    _frame("EPSG:31983").iloc[:2].to_file(path, driver="GPKG", engine="pyogrio")
    doc = import_fences(path, port="santos", default_kind="restricted")
    fs = load_fence_set(doc)
    assert [f.id for f in fs.fences] == ["santos-1", "santos-2"]
    assert fs.kinds() == {FenceKind.RESTRICTED}
    with pytest.raises(ValueError, match=r"row 2 \(id='santos-2'.*PORTAO"):
        import_fences(path, port="santos", kind_field="tipo", kind_map={"TERMINAL": "terminal"})
    with pytest.raises(FenceError, match=r"feature #0 id='T-01' name='Terminal Teste'.*unknown kind 'TERMINAL'"):
        import_fences(path, port="santos", kind_field="tipo", id_field="codigo", name_field="nome")
    with pytest.raises(ValueError, match="kind_field 'type' is not a column"):
        import_fences(path, port="santos", kind_field="type")
