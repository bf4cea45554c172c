"""Rebuild the fence sets shipped in ``geofences/ports`` from the public source layers.

The built files are committed so the service and its tests never need the source data; this script is
how anyone can check that they are what the sources say (same input, same output, byte for byte) and
how they get refreshed when the port authority publishes a new zoning plan.

    python scripts/build_port_fences.py [--data /work/shared/data] [--out geofences/ports]

Fence kinds the sources do not map directly (gates, inspection areas, parking) are derived from real
geometry and say how in their ``derived`` property, so nobody mistakes them for surveyed areas.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
import shapely.ops
from shapely.geometry import LineString, MultiLineString, Point, mapping, shape
from shapely.geometry.base import BaseGeometry

from geofences.fence import load_fence_set
from geofences.geo import LocalProjection, buffer_m

DEFAULT_DATA = Path("/work/shared/data")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "geofences" / "ports"
PRECISION = 1e-7  # 7 decimals: ~1 cm, well below any fence edge's real accuracy
SIMPLIFY_M = 1.0
SIMPLIFY_ABOVE_VERTICES = 60
CRS84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}

SANTOS_REPO = "Planos-de-Desenvolvimento-e-Zoneamento/Santos"
SANTOS_COMMIT = "e7d815c18afe705e722fd694572640506c27bd50"
SANTOS_LICENCE = (
    "Santos port authority public zoning plan (PDZ, Portaria 77 MINFRA 2020); "
    "no licence file in the republishing repository"
)
CALLAO_REPO = "luiscano95/tutorial.sumo"
CALLAO_COMMIT = "84bc4d9b618ec6e76ce55e32950287280d5d513b"
CALLAO_LICENCE = "ODbL-1.0, (c) OpenStreetMap contributors"
PARKING_ROAD_CLEAR_M = 15.0
"""How far beyond a road's carriageway the derived Callao car park starts."""
BERTH_DEPTH_M = 30.0
"""How deep the derived Callao berth reaches into its terminal from the waterfront edge."""

SANTOS_LAYERS = {
    "boundary": "PoligonaldareadoPortoOrganizadodeSantos_86",
    "leased": "reasAfetassOperaesPorturiasArrendadasSituaoAtual_55",
    "customs": "reaseInstalaesAlfandegadas_27",
    "berths": "AcostagemSituaoAtual_39",
    "roads": "AcessosRodoviriosInternosSituaoAtual_25",
    "available": "reasAfetassOperaesPorturiasDisponveisparaArrendamentoSituaoAtual_51",
}


@dataclass
class Builder:
    """Collects features for one port and refuses duplicate ids while doing so."""

    port: str
    features: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def add(self, fid: str, name: str, kind: str, geom: BaseGeometry, props: dict[str, Any] | None = None) -> None:
        if fid in self.ids:
            raise ValueError(f"duplicate id {fid}")
        self.ids.add(fid)
        p: dict[str, Any] = {"id": fid, "name": name, "kind": kind}
        p.update(props or {})
        if isinstance(geom, LineString | MultiLineString):
            g = shapely.set_precision(geom, PRECISION)
        else:
            g = clean_polygonal(geom, f"{fid} ({name})")
        self.features.append({"type": "Feature", "id": fid, "properties": p, "geometry": _round(g)})


def _round(geom: BaseGeometry) -> dict[str, Any]:
    def walk(obj: Any) -> Any:
        if isinstance(obj, list | tuple):
            if obj and isinstance(obj[0], float | int):
                return [round(float(v), 7) for v in obj[:2]]
            return [walk(o) for o in obj]
        return obj

    m = mapping(geom)
    return {"type": m["type"], "coordinates": walk(m["coordinates"])}


def clean_polygonal(geom: BaseGeometry, label: str) -> BaseGeometry:
    """Simplify big polygons in metres, repair invalid ones, keep only areas, snap to the output grid."""
    geom = shapely.force_2d(geom)
    if shapely.get_num_coordinates(geom) > SIMPLIFY_ABOVE_VERTICES:
        proj = LocalProjection.around(geom)
        geom = proj.unproject(shapely.simplify(proj.project(geom), SIMPLIFY_M, preserve_topology=True))
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    geom = _polygonal_part(geom)
    # set_precision snaps to the grid and returns a valid result, unlike rounding coordinates afterwards
    geom = _polygonal_part(shapely.set_precision(geom, PRECISION))
    if geom.is_empty or not geom.is_valid:
        raise ValueError(f"{label}: no valid polygon left after cleaning")
    return geom


def _polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys: list[BaseGeometry] = []
    for p in parts:
        polys.extend(p.geoms if p.geom_type == "MultiPolygon" else [p])
    return shapely.MultiPolygon(polys) if len(polys) > 1 else (polys[0] if polys else shapely.Polygon())


def slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return s[:limit].rstrip("-") or "x"


def read_layer(path: Path) -> Iterator[tuple[int, dict[str, Any], BaseGeometry]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    for i, ft in enumerate(doc["features"]):
        yield i, dict(ft.get("properties") or {}), shape(ft["geometry"])


def check_provenance(data: Path, *needles: str) -> None:
    """Fail loudly if the data directory is not the one the recorded source/commit describe."""
    text = (data / "PROVENANCE.md").read_text(encoding="utf-8")
    missing = [n for n in needles if n not in text]
    if missing:
        raise SystemExit(f"PROVENANCE.md does not mention {missing}; refusing to build from unknown data")


# --------------------------------------------------------------------------------------------- Santos


def build_santos(data: Path) -> dict[str, Any]:
    check_provenance(data, SANTOS_REPO, SANTOS_COMMIT, *SANTOS_LAYERS.values())
    src = data / "ports" / "santos"

    def layer(key: str) -> list[tuple[int, dict[str, Any], BaseGeometry]]:
        return list(read_layer(src / f"{SANTOS_LAYERS[key]}.geojson"))

    b = Builder("santos")
    for i, props, geom in layer("boundary"):
        b.add(
            f"santos-port-boundary-{i + 1}",
            "Porto Organizado de Santos (poligonal da área do porto organizado)",
            "port_boundary",
            geom,
            {"legal_instrument": props.get("Inst.Legal"), "annex": props.get("Anexo")},
        )

    leased = layer("leased")
    inspection_geoms: list[BaseGeometry] = []
    for i, props, geom in leased:
        operator = str(props.get("Arrend.", "")).strip()
        extra = {
            "operator": operator,
            "contract": props.get("Nº Cont."),
            "lease_start": props.get("D. Inicio"),
            "lease_end": props.get("D. Term"),
            "cargo_profile": props.get("Perfil"),
            "area_m2": props.get("Area"),
        }
        if "Inspeç" in operator:
            # the only lessee whose business is cargo inspection: its leased area is where inspections
            # happen, so it becomes the port's inspection area rather than a terminal
            # The lease itself is a sliver (about 1,400 m2, at most 14 m wide): the trucks waiting for
            # inspection stand around it, so the inspection area is the lease grown by 25 m.
            extra["derived"] = (
                "leased area of a cargo-inspection company grown by 25 m (where trucks wait), mapped to inspection_area"
            )
            fid = f"santos-inspection-{i + 1:02d}"
            inspection_geoms.append(buffer_m(geom, 25.0))
            b.add(fid, f"Área de inspeção – {operator}", "inspection_area", inspection_geoms[-1], extra)
        else:
            b.add(f"santos-terminal-{i + 1:02d}", f"Terminal – {operator}", "terminal", geom, extra)

    leased_geoms = shapely.union_all([g for _, _, g in leased])
    customs = layer("customs")
    largest_customs: tuple[float, str, BaseGeometry] | None = None
    for i, props, geom in customs:
        owner = _largest_overlap(geom, [(str(p.get("Arrend.", "")).strip(), g) for _, p, g in leased])
        act = props.get("Inst Legal")
        label = f"Recinto alfandegado – {owner}" if owner else f"Recinto alfandegado nº {i + 1}"
        fid = f"santos-customs-{i + 1:02d}"
        extra = {"customs_act": act, "overlaps_lease_of": owner}
        b.add(fid, f"{label} (ADE {act})", "customs_yard", geom, extra)
        area = float(LocalProjection.around(geom).project(geom).area)
        if largest_customs is None or area > largest_customs[0]:
            largest_customs = (area, f"{label} (ADE {act})", geom)

    for i, props, geom in layer("berths"):
        quay = str(props.get("Id. Cais", "")).strip()
        berth = str(props.get("Id. Berço", "")).strip()
        b.add(
            f"santos-quay-{i + 1:02d}",
            f"{quay} – berço {berth}",
            "quay",
            buffer_m(geom, 40.0),
            {
                "length_m": props.get("Comp."),
                "depth_m": props.get("Profund."),
                "draught_m": props.get("Calado"),
                "cargo_profile": props.get("Per.Carga"),
                "derived": "berth line from the PDZ buffered 40 m on both sides (apron and water)",
            },
        )

    road_areas: list[BaseGeometry] = []
    for i, props, geom in layer("roads"):
        name = str(props.get("Ident.", "")).strip()
        lanes = int(str(props.get("Nº Pistas", "1")).strip() or 1)
        # the carriageway plus a shoulder: trucks driving the port's roads are never in a restricted zone
        road_areas.append(buffer_m(geom, (18.0 + 12.0 * (min(lanes, 3) - 1)) / 2 + 15.0))
        if "gate" in name.lower():
            # short PDZ road stubs named "Acesso Gate - …" are the truck gates into the terminal zones
            b.add(
                f"santos-gate-{i + 1:03d}",
                f"Gate – {name}",
                "gate",
                buffer_m(geom, 15.0),
                {"derived": "internal road segment named as a gate access, buffered 15 m", "lanes": lanes},
            )
            continue
        b.add(
            f"santos-road-{i + 1:03d}",
            name,
            "corridor",
            geom,
            {"width_m": 18.0 + 12.0 * (min(lanes, 3) - 1), "lanes": lanes},
        )

    roads_union = shapely.union_all(road_areas)
    inspection_union = shapely.union_all(inspection_geoms) if inspection_geoms else shapely.Polygon()
    for i, props, geom in layer("available"):
        nm = str(props.get("Nome", "")).strip()
        # The PDZ lists some areas both as leased (with an operator) and as available for lease, and
        # draws vacant lots across the roads that serve them. A truck entering a working terminal or
        # driving a port road must not raise a high-severity alarm, so what the leased layer covers
        # stays leased and the roads (with shoulders) are cut out; only the vacant remainder is restricted.
        vacant = shapely.make_valid(geom.difference(leased_geoms).difference(roads_union).difference(inspection_union))
        vacant = shapely.union_all([g for g in shapely.get_parts(vacant) if g.geom_type in ("Polygon", "MultiPolygon")])
        # drop the slivers roads leave behind: a restricted fence a truck could clip at a bend is noise
        parts = [p for p in shapely.get_parts(vacant) if float(LocalProjection.around(p).project(p).area) > 2000.0]
        vacant = shapely.union_all(parts) if parts else shapely.Polygon()
        if vacant.is_empty or float(vacant.area) < 0.3 * float(geom.area):
            continue
        geom = vacant
        b.add(
            f"santos-restricted-{i + 1:02d}",
            f"Área disponível para arrendamento {nm} (sem operador)",
            "restricted",
            geom,
            {
                "area_m2": props.get("Area"),
                "cargo_profile": props.get("Perfil"),
                "reason": "unleased port area: no operator, so no truck or container has business there",
            },
        )

    assert largest_customs is not None
    _, customs_name, customs_geom = largest_customs
    rep = customs_geom.representative_point()
    parking = shapely.intersection(customs_geom, buffer_m(rep, 60.0))
    b.add(
        "santos-parking-01",
        f"Pátio de espera de caminhões – {customs_name}",
        "authorized_parking",
        parking,
        {"derived": "part of the largest customs-bonded area within 60 m of its representative point"},
    )

    return _collection(
        b,
        name="Porto de Santos (PDZ zoning layers)",
        source=(
            f"https://github.com/{SANTOS_REPO} @ {SANTOS_COMMIT}, "
            + ", ".join(f"layers/{v}.js" for v in SANTOS_LAYERS.values())
        ),
        licence=SANTOS_LICENCE,
    )


def _largest_overlap(geom: BaseGeometry, candidates: Iterable[tuple[str, BaseGeometry]]) -> str | None:
    best: tuple[float, str] | None = None
    for name, g in candidates:
        a = shapely.intersection(geom, g).area
        if a > 0 and (best is None or a > best[0]):
            best = (a, name)
    return best[1] if best else None


# --------------------------------------------------------------------------------------------- Callao


OsmElement = tuple[str, str, dict[str, str], list[str]]  # (tag, id, tags, node refs)


def _osm(path: Path) -> tuple[dict[str, tuple[float, float]], list[OsmElement]]:
    # The file is the pinned, provenance-checked OSM extract, not untrusted input.
    root = ET.parse(path).getroot()  # noqa: S314
    nodes = {n.get("id", ""): (float(n.get("lon", "nan")), float(n.get("lat", "nan"))) for n in root.iter("node")}
    elements: list[OsmElement] = []
    for el in root:
        if el.tag not in ("node", "way"):
            continue
        tags = {t.get("k", ""): t.get("v", "") for t in el.findall("tag")}
        refs = [nd.get("ref", "") for nd in el.findall("nd")]
        elements.append((el.tag, el.get("id", ""), tags, refs))
    return nodes, elements


def build_callao(data: Path) -> dict[str, Any]:
    check_provenance(data, CALLAO_REPO, CALLAO_COMMIT, "callao_port_related_osm.geojson")
    src = data / "ports" / "callao"
    feats = list(read_layer(src / "callao_port_related_osm.geojson"))
    nodes, elements = _osm(src / "callao_2017_osm_extract.osm")
    by_name = {str(p.get("name")): (p, g) for _, p, g in feats if p.get("name")}

    def osm_props(p: dict[str, Any]) -> dict[str, Any]:
        return {"osm": f"{p['osm_type']}/{p['osm_id']}", "osm_timestamp": p.get("osm_timestamp")}

    b = Builder("callao")
    dpw: list[BaseGeometry] = []
    for gate_name in ("Puerta 1", "Puerta 2"):
        p, g = by_name[gate_name]
        dpw.append(g)
        b.add(
            f"callao-terminal-dpw-{slug(gate_name)}",
            f"DP World Callao – zona {gate_name}",
            "terminal",
            g,
            {"operator": p.get("operator"), **osm_props(p)},
        )

    # barrier=gate nodes on the DP World perimeter are the truck gates
    dpw_union = shapely.union_all(dpw)
    gate_no = 0
    for tag, oid, tags, _ in elements:
        if tag == "node" and tags.get("barrier") == "gate":
            pt = Point(nodes[oid])
            if _metres(dpw_union, pt) <= 200.0:
                gate_no += 1
                b.add(
                    f"callao-gate-dpw-{gate_no}",
                    f"DP World Callao – gate {gate_no} (OSM node {oid})",
                    "gate",
                    buffer_m(pt, 20.0),
                    {"osm": f"node/{oid}", "derived": "OSM barrier=gate node near DP World, buffered 20 m"},
                )

    p, g = by_name["Neptunia"]
    b.add(
        "callao-customs-neptunia",
        "Neptunia (depósito temporal)",
        "customs_yard",
        g,
        {**osm_props(p), "derived": "Neptunia operates bonded warehouses at Callao; mapped to customs_yard"},
    )

    piers: list[BaseGeometry] = []
    for _, p, g in feats:
        if p.get("man_made") == "pier":
            piers.append(g)
            b.add(
                f"callao-quay-{p['osm_id']}",
                f"Muelle (OSM way {p['osm_id']})",
                "quay",
                buffer_m(g, 20.0),
                {**osm_props(p), "derived": "OSM man_made=pier line buffered 20 m"},
            )

    # The 2017 extract has no quay line at DP World: its container berth (Muelle Sur) is the waterfront end of the
    # Puerta 2 zone, the short edge farthest from the city street the zone's gates open onto
    p, g = by_name["Puerta 2"]
    street = shapely.union_all(
        [
            LineString([nodes[r] for r in refs])
            for tag, _, tags, refs in elements
            if tag == "way" and tags.get("name") == "Calle Manco Capac"
        ]
    )
    ring = list(g.exterior.coords)
    edges = [LineString([a, c]) for a, c in itertools.pairwise(ring)]
    waterfront = max(edges, key=lambda e: _metres(street, e.centroid))
    berth = buffer_m(waterfront, BERTH_DEPTH_M).intersection(g)
    b.add(
        "callao-quay-dpw-muelle-sur",
        "DP World Callao – Muelle Sur berth",
        "quay",
        berth,
        {
            "operator": p.get("operator"),
            **osm_props(p),
            "derived": (
                f"not mapped in the 2017 OSM extract: the {BERTH_DEPTH_M:g} m strip inside DP World zona Puerta 2 "
                "along its waterfront edge (the edge farthest from Calle Manco Capac)"
            ),
        },
    )

    for _, p, g in feats:
        if p.get("landuse") == "military":
            b.add(
                f"callao-restricted-{slug(str(p.get('name', p['osm_id'])))}",
                str(p.get("name", f"Zona militar {p['osm_id']}")),
                "restricted",
                g,
                {**osm_props(p), "reason": "military land (OSM landuse=military)"},
            )

    for _, p, g in feats:
        if p.get("name") == "Intendencia de Aduana Maritima del Callao":
            b.add(
                "callao-inspection-aduana",
                "Intendencia de Aduana Marítima del Callao – inspección",
                "inspection_area",
                buffer_m(g, 30.0),
                {**osm_props(p), "derived": "customs office point (OSM) buffered 30 m"},
            )

    parkings = [
        (oid, tags, shapely.Polygon([nodes[r] for r in refs]))
        for tag, oid, tags, refs in elements
        if tag == "way" and tags.get("amenity") == "parking" and len(refs) >= 4 and refs[0] == refs[-1]
    ]
    parkings = [(oid, tags, poly) for oid, tags, poly in parkings if _metres(dpw_union, poly) <= 0.0]

    roads: dict[str, list[LineString]] = {}
    for tag, _oid, tags, refs in elements:
        if tag == "way" and tags.get("highway") in ("primary", "secondary") and tags.get("name"):
            roads.setdefault(tags["name"], []).append(LineString([nodes[r] for r in refs]))
    for name in sorted(roads):
        merged = shapely.line_merge(shapely.MultiLineString(roads[name]))
        if _metres(dpw_union, merged) > 300.0:
            continue
        b.add(f"callao-road-{slug(name)}", name, "corridor", merged, {"width_m": 20.0})

    # the terminals' own roads: without them no truck reaches the berth or the far end of the yard
    for tag, oid, tags, refs in elements:
        if tag == "way" and tags.get("highway") == "service" and len(refs) >= 2:
            line = LineString([nodes[r] for r in refs])
            if _metres(dpw_union, line) <= 0.0:
                b.add(
                    f"callao-road-dpw-service-{oid}",
                    f"DP World Callao – internal road (OSM way {oid})",
                    "corridor",
                    line,
                    {
                        "osm": f"way/{oid}",
                        "width_m": 12.0,
                        "derived": "OSM highway=service way touching the DP World zones, a port road 12 m wide",
                    },
                )

    corridors = [f for f in b.features if f["properties"]["kind"] == "corridor"]
    keep_out = [
        shape(f["geometry"]) for f in b.features if f["properties"]["kind"] in ("authorized_parking", "restricted")
    ]
    keep_out += [poly for _, _, poly in parkings]
    for i, (a, c) in enumerate(_yard_connectors(corridors, keep_out)):
        b.add(
            f"callao-road-dpw-yard-link-{i + 1}",
            f"DP World Callao – yard link {i + 1}",
            "corridor",
            LineString([a, c]),
            {
                "width_m": 12.0,
                "derived": (
                    "straight drive across the paved yard from the end of an OSM service way that joins no other "
                    "road to the nearest road of the rest of the network (OSM maps the yard lanes, not the yard)"
                ),
            },
        )

    # a car park drawn to the kerb of the road along it would be entered by every noisy fix of a truck driving by
    roads = shapely.union_all(
        [
            buffer_m(shape(f["geometry"]), f["properties"]["width_m"] / 2 + PARKING_ROAD_CLEAR_M)
            for f in b.features
            if f["properties"]["kind"] == "corridor"
        ]
    )
    for oid, tags, poly in parkings:
        b.add(
            f"callao-parking-{oid}",
            f"DP World Callao – estacionamiento (OSM way {oid})",
            "authorized_parking",
            poly.difference(roads),
            {
                "osm": f"way/{oid}",
                "access": tags.get("access"),
                "derived": (
                    f"OSM amenity=parking way less {PARKING_ROAD_CLEAR_M:g} m beyond the carriageway of the roads "
                    "along it (three GPS sigmas: a truck driving by is not parking)"
                ),
            },
        )

    # gates and the customs inspection area sit on the port's edge: a boundary that left them out would put the
    # gate queue and every inspection outside the port
    edge = [f["geometry"] for f in b.features if f["properties"]["kind"] in ("gate", "inspection_area", "quay")]
    core = shapely.union_all([*dpw, *piers, by_name["Neptunia"][1], *(shape(g) for g in edge)])
    boundary = buffer_m(shapely.convex_hull(core), 30.0)
    b.add(
        "callao-port-boundary",
        "Terminal Portuario del Callao (zona portuaria)",
        "port_boundary",
        boundary,
        {"derived": "convex hull of the DP World zones, piers, berth, Neptunia, gates and inspection area, grown 30 m"},
    )

    return _collection(
        b,
        name="Puerto del Callao (OpenStreetMap 2017 extract)",
        source=(
            f"https://github.com/{CALLAO_REPO} @ {CALLAO_COMMIT}, SUMO/callao.osm "
            "(with its port-related GeoJSON subset)"
        ),
        licence=CALLAO_LICENCE,
    )


def _yard_connectors(
    features: list[dict[str, Any]], keep_out: list[BaseGeometry]
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Links that join every group of corridor lines to the one holding the longest road, shortest link first.

    A link never crosses ``keep_out`` (parking, restricted land), grown by the fence hysteresis: a road drawn
    through a car park would send every cleared box into a zone it has no business entering.

    Lines within :data:`tracker.sim.roads.SNAP_M` of each other already form one group (the road graph snaps
    them); a group further away is joined by a straight link from one of its end points to the nearest point of
    another group, which is how a truck leaves a yard lane that stops short of the next one.
    """
    snap_m = 15.0
    proj = LocalProjection.around(shapely.union_all([shape(f["geometry"]) for f in features]))
    lines: list[LineString] = []
    for f in features:
        g = proj.project(shape(f["geometry"]))
        lines.extend(g.geoms if isinstance(g, MultiLineString) else [g])
    group = list(range(len(lines)))
    avoid = shapely.union_all([proj.project(g) for g in keep_out]).buffer(25.0) if keep_out else Point()

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, a in enumerate(lines):
        for j in range(i + 1, len(lines)):
            if a.distance(lines[j]) <= snap_m:
                group[root(i)] = root(j)
    out: list[tuple[tuple[float, float], tuple[float, float]]] = []  # lon/lat end points
    while True:
        members: dict[int, list[int]] = {}
        for i in range(len(lines)):
            members.setdefault(root(i), []).append(i)
        if len(members) <= 1:
            return out
        main = max(members.values(), key=lambda m: sum(lines[i].length for i in m))
        main_lines = shapely.union_all([lines[i] for i in main])
        best: tuple[float, Point, Point, int] | None = None
        for r, m in members.items():
            if m is main:
                continue
            for i in m:
                for end in (Point(lines[i].coords[0]), Point(lines[i].coords[-1])):
                    # the nearest point of the main group, else its vertices nearest first, clear of keep_out
                    targets = [shapely.ops.nearest_points(main_lines, end)[0]]
                    targets += sorted((Point(c) for j in main for c in lines[j].coords), key=lambda q: q.distance(end))
                    for q in targets:
                        if LineString([end, q]).intersects(avoid):
                            continue
                        d = end.distance(q)
                        if best is None or d < best[0]:
                            best = (d, end, q, r)
                        break
        if best is None:
            raise ValueError(
                "a group of corridor lines cannot be linked without crossing a parking or restricted fence"
            )
        _, end, q, r = best
        link = proj.unproject(LineString([end, q]))
        out.append((link.coords[0], link.coords[-1]))
        group[r] = root(main[0])


def _metres(a: BaseGeometry, b: BaseGeometry) -> float:
    proj = LocalProjection.around(a)
    return float(shapely.distance(proj.project(a), proj.project(b)))


# ----------------------------------------------------------------------------------------------- output


def _collection(b: Builder, *, name: str, source: str, licence: str) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "port": b.port,
        "name": name,
        "source": source,
        "licence": licence,
        "crs": CRS84,
        "features": b.features,
    }


def dumps(doc: dict[str, Any]) -> str:
    """One feature per line: compact, yet a rebuild shows up in a diff feature by feature."""
    head = {k: v for k, v in doc.items() if k != "features"}
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in doc["features"]]
    head_json = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
    return head_json[:-1] + ',"features":[\n' + ",\n".join(lines) + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    for port, build in (("santos", build_santos), ("callao", build_callao)):
        doc = build(args.data)
        fence_set = load_fence_set(doc)  # the shipped file must pass the same validation as any other
        text = dumps(doc)
        load_fence_set(json.loads(text))
        path = args.out / f"{port}.geojson"
        path.write_text(text, encoding="utf-8")
        counts: dict[str, int] = {}
        for f in fence_set.fences:
            counts[f.kind.value] = counts.get(f.kind.value, 0) + 1
        size = len(text.encode())
        print(f"{path}: {len(fence_set.fences)} fences, {size} bytes, {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
