"""Import fences from whatever a port's GIS team hands over (GeoPackage, Shapefile, KML, GeoJSON).

Those files come in local projected CRSs (Santos uses SIRGAS 2000 / UTM 23S) and with the fence kind in
some attribute of their own naming. This module is the one place that knows about GDAL and pyproj: it
reprojects to WGS84, maps the attributes onto the fence-set format and then runs the same validation the
service runs at start-up, so a bad drawing is rejected here, with the feature named, instead of at
deploy time.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.geometry import mapping

from geofences import load_fence_set

__all__ = ["import_fences"]

_RESERVED = frozenset({"id", "name", "kind", "width_m", "severity", "windows"})


def _jsonable(value: Any) -> Any:
    """Attribute tables carry numpy scalars, NaN for nulls and timestamps; JSON needs plain values."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def import_fences(
    path: str | Path,
    *,
    port: str,
    kind_field: str | None = None,
    kind_map: Mapping[str, str] | None = None,
    default_kind: str | None = None,
    id_field: str | None = None,
    name_field: str | None = None,
    layer: str | None = None,
    assume_crs: str | None = None,
    set_name: str | None = None,
    source: str | None = None,
    licence: str = "",
) -> dict[str, Any]:
    """Read a GIS file and return a validated fence-set GeoJSON document for ``port``.

    The kind of each feature is ``kind_map[value]`` (or the value itself without a map) of
    ``kind_field``, falling back to ``default_kind`` when the field is absent, empty or not in the map.
    Ids default to ``{port}-{n}`` (1-based row number) so a file without an id column still imports, but
    then ids change when rows are reordered: pass ``id_field`` for anything long-lived.

    A file without a CRS is refused rather than guessed, unless ``assume_crs`` says what it is: reading
    UTM metres as degrees would put every fence in the wrong hemisphere or nowhere at all.
    """
    path = Path(path)
    gdf = gpd.read_file(path, engine="pyogrio", layer=layer)
    if gdf.crs is None:
        if assume_crs is None:
            raise ValueError(f"{path}: the file has no CRS; pass assume_crs (e.g. 'EPSG:31983') if you know what it is")
        gdf = gdf.set_crs(assume_crs)
    gdf = gdf.to_crs("EPSG:4326")
    geom_col = gdf.geometry.name
    columns = [c for c in gdf.columns if c != geom_col]
    for wanted, label in ((kind_field, "kind_field"), (id_field, "id_field"), (name_field, "name_field")):
        if wanted is not None and wanted not in columns:
            raise ValueError(f"{path}: {label} {wanted!r} is not a column (columns: {', '.join(columns)})")

    features: list[dict[str, Any]] = []
    for n, (_, row) in enumerate(gdf.iterrows(), start=1):
        attrs = {c: _jsonable(row[c]) for c in columns}
        fid = str(attrs[id_field]) if id_field is not None and attrs[id_field] is not None else f"{port}-{n}"
        name = str(attrs[name_field]) if name_field is not None and attrs[name_field] is not None else fid
        kind: str | None = None
        raw_kind = attrs.get(kind_field) if kind_field is not None else None
        if raw_kind is not None and raw_kind != "":
            kind = kind_map.get(str(raw_kind)) if kind_map is not None else str(raw_kind)
        if kind is None:
            kind = default_kind
        if kind is None:
            raise ValueError(
                f"{path}: row {n} (id={fid!r} name={name!r}): no fence kind "
                f"({kind_field}={raw_kind!r} is not mapped and no default_kind was given)"
            )
        props: dict[str, Any] = {k: v for k, v in attrs.items() if k not in _RESERVED}
        props.update({"id": fid, "name": name, "kind": kind})
        for passthrough in ("width_m", "severity"):
            if attrs.get(passthrough) is not None:
                props[passthrough] = attrs[passthrough]
        geom = row[geom_col]
        geometry = None if geom is None or geom.is_empty else mapping(geom)
        features.append({"type": "Feature", "id": fid, "properties": props, "geometry": geometry})

    doc: dict[str, Any] = {
        "type": "FeatureCollection",
        "port": port,
        "name": set_name or path.stem,
        "source": source or path.name,
        "licence": licence,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": features,
    }
    load_fence_set(doc)  # raises FenceError naming the feature if anything is unusable
    return doc
