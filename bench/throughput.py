"""Throughput of the hot path, one sub-benchmark per stage, all in bench/results/throughput.json.

``python bench/throughput.py geofence`` measures fence membership against 2,000 fences: the real
Santos and Callao fences plus synthetic ones, on 200,000 points spread over the two ports. In one
run, on the same points and fences:

* ``ours_batch``: ``FenceIndex.membership_batch`` (hysteresis and entry margin included, each point
  with a previous membership), the geofence stage as the pipeline needs it; the ratios use this one;
* ``ours_batch_raw``: ``FenceIndex.fences_at`` (raw membership, what every other method computes);
* ``ours_per_point``: ``FenceIndex.membership`` called point by point (a subsample, per point);
* ``strtree_predicate`` and ``strtree_bbox_intersects_xy``: the two plain shapely 2 ways the grid was
  measured against (``STRtree.query(points, predicate="intersects")``; bounding-box query then
  ``intersects_xy`` on the pairs);
* ``naive_loop``: ``polygon.contains(Point(x, y))`` for every fence, unprepared polygons, on a
  subsample of the points (reported per point, i.e. extrapolated);
* ``geopandas_sjoin``: ``geopandas.sjoin(points, fences, predicate="intersects")``, building the points'
  GeoDataFrame included (every method starts from coordinates);
* ``postgis``: ``ST_Contains`` joining a points table with a fences table that has a GiST index, the
  plan PostgreSQL picks (a nested loop over points, an index scan per point), pairs fetched by the client;
  ``postgis_points_indexed``: the same join driven from the fences through a GiST index on the points as
  well, which lets PostGIS reuse each prepared fence across many points; it needs the points stored and
  indexed first, so it is reported with and without that index build. Loading the tables is not timed.

Each measurement is repeated and the median taken; every method's answer is compared with ours.
PostGIS runs in a throwaway PostgreSQL started through ``deploy/stack.sh infra`` in a temporary
directory on free loopback ports (destroyed afterwards), unless ``--dsn`` names one, or
``--no-postgis`` skips it. Other stages add their own sub-command and key; this runner rewrites only
its own key of the result file.

``core`` replays the default simulator traffic in process through the detection benchmark's replay
(median of ``--runs``, ``--profile`` for the share per stage), ``state`` sizes DeviceState serialized and in
memory (bench/hotpath.py), and ``e2e`` measures MQTT publish to database commit against ``tracker run``
with the broker alone, a backlog drain and alert latency in the same run (bench/e2e.py). Each also
redraws results/throughput_hotpath.png from the keys present.

``history`` measures the 30-day history of one container (~250k fixes) read back from PostgreSQL and the
storage insert rate (the ingest path's COPY + INSERT, and a direct COPY) in one run (bench/history.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import hotpath
from bench.e2e import add_args as e2e_args
from bench.e2e import run as e2e_run
from bench.history import add_args as history_args
from bench.history import run as history_run
from geofences import DEFAULT_CELL_DEG, Fence, FenceIndex, FenceKind, LocalProjection, buffer_m, load_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "throughput.json"
PLOT = REPO / "bench" / "results" / "throughput_geofence.png"
PLOT_HOTPATH = REPO / "bench" / "results" / "throughput_hotpath.png"
SEED = 20261201
TARGET_POINTS_PER_S = 1_000_000
TARGET_VS_NAIVE = 100.0
TARGET_VS_POSTGIS = 20.0

T = TypeVar("T")
FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------------------------------- world


def operational_area(fences: Sequence[Fence]) -> tuple[float, float, float, float]:
    """Where a port's trucks drive: the bounds of its fences other than the port boundary, plus 300 m.

    (Santos' legal port boundary also spans estuary and mangrove kilometres away from any terminal.)
    """
    ops = [f.geometry for f in fences if f.kind is not FenceKind.PORT_BOUNDARY]
    minx, miny, maxx, maxy = buffer_m(shapely.box(*shapely.total_bounds(ops)), 300.0).bounds
    return float(minx), float(miny), float(maxx), float(maxy)


def make_world(n_fences: int, n_points: int, seed: int) -> tuple[list[Fence], FloatArray, FloatArray, dict[str, Any]]:
    """The real fences of both ports, synthetic ones up to ``n_fences``, and ``n_points`` points.

    Synthetic fence: a copy of a random real fence of the port (not its boundary), rotated by a random
    angle about its centroid, scaled by 0.2-0.6 and moved to a uniform random spot of the port's
    operational area; 90 % go to Santos, 10 % to Callao. So they have real shapes, vertex counts and
    kinds, and overlap the real fences and each other as densely packed port areas do.
    Points: a third uniform over the ports' operational areas (90/10), two thirds uniform in the
    bounding box, grown by about 50 m, of a random non-boundary fence (trucks are where the fences are).
    """
    rng = np.random.default_rng(seed)
    ports = [load_port("santos"), load_port("callao")]
    real = [f for p in ports for f in p.fences]
    n_syn = max(0, n_fences - len(real))
    share = (0.9, 0.1)
    syn: list[Fence] = []
    for k in range(n_syn):
        port = ports[0] if k < n_syn * share[0] else ports[1]
        sources = [f for f in port.fences if f.kind is not FenceKind.PORT_BOUNDARY]
        src = sources[int(rng.integers(len(sources)))]
        minx, miny, maxx, maxy = operational_area(port.fences)
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        c = src.geometry.centroid
        g = shapely.affinity.rotate(src.geometry, float(rng.uniform(0.0, 360.0)), origin=c)
        s = float(rng.uniform(0.2, 0.6))
        g = shapely.affinity.scale(g, s, s, origin=c)
        g = shapely.affinity.translate(g, x - c.x, y - c.y)
        syn.append(Fence(f"synthetic-{k:04d}", f"synthetic {k}", src.kind, port.port, g))
    fences = real + syn
    parts = []
    for port, sh in zip(ports, share, strict=True):
        minx, miny, maxx, maxy = operational_area(port.fences)
        n = int(n_points * sh) // 3
        parts.append(np.column_stack([rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)]))
    small = [f for f in fences if f.kind is not FenceKind.PORT_BOUNDARY]
    boxes = shapely.bounds(np.array([f.geometry for f in small], dtype=object))
    pad = 0.0005
    rest = n_points - sum(len(p) for p in parts)
    pick = rng.integers(len(small), size=rest)
    parts.append(
        np.column_stack(
            [
                rng.uniform(boxes[pick, 0] - pad, boxes[pick, 2] + pad),
                rng.uniform(boxes[pick, 1] - pad, boxes[pick, 3] + pad),
            ]
        )
    )
    xy = np.vstack(parts)[rng.permutation(n_points)]
    info = {
        "fences": len(fences),
        "real_fences": {p.port: len(p.fences) for p in ports},
        "synthetic_fences": n_syn,
        "synthetic_method": (
            "copies of random real non-boundary fences of the port, rotated uniformly about the centroid, "
            "scaled 0.2-0.6, moved to a uniform random point of the port's operational area (bounds of its "
            "non-boundary fences + 300 m); 90 % Santos, 10 % Callao"
        ),
        "points": n_points,
        "points_method": (
            "1/3 uniform over the operational areas (90 % Santos, 10 % Callao), 2/3 uniform in the bounding "
            "box (+0.0005 deg) of a random non-boundary fence"
        ),
        "seed": seed,
    }
    return fences, np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]), info


def previous_memberships(index: FenceIndex, x: FloatArray, y: FloatArray, seed: int) -> list[frozenset[str]]:
    """Each point's previous membership: the raw membership of a point ~30 m away (the previous fix)."""
    rng = np.random.default_rng(seed + 1)
    lat0 = float(np.mean(y))
    proj = LocalProjection(0.0, lat0)
    kx = 1.0 / proj.to_xy(1.0, lat0)[0]  # degrees of longitude per metre at the mean latitude
    ky = 1.0 / proj.to_xy(0.0, lat0 + 1.0)[1]
    dx, dy = rng.normal(0.0, 30.0, len(x)), rng.normal(0.0, 30.0, len(x))
    return index.fences_at(x + dx * float(kx), y + dy * float(ky))


# ------------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], T], repeats: int) -> tuple[list[float], T]:
    """Wall-clock seconds of each repeat, and the last result; CPU seconds of this process in ``_cpu``."""
    runs: list[float] = []
    _cpu.clear()
    result: T | None = None
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
        _cpu.append(time.process_time() - c0)
    assert result is not None
    return runs, result


_cpu: list[float] = []


def rate(points: int, runs: Sequence[float], *, cpu: bool = True, **extra: Any) -> dict[str, Any]:
    """Points/s from the median wall-clock repeat; for work done in this process also from its CPU time
    (less disturbed by other processes on a shared machine; the ratios use wall-clock throughout)."""
    med = statistics.median(runs)
    out = {
        "points": points,
        "points_per_s": round(points / med),
        "median_s": round(med, 6),
        "runs_s": [round(r, 6) for r in runs],
    }
    if cpu and _cpu:
        out["cpu_points_per_s"] = round(points / statistics.median(_cpu))
    return {**out, **extra}


def pairs_of(sets: Sequence[frozenset[str]], offset: int = 0) -> set[tuple[int, str]]:
    return {(i + offset, f) for i, s in enumerate(sets) for f in s}


def fresh(geoms: Sequence[Any]) -> list[Any]:
    """Copies of the fence geometries that are not prepared (FenceIndex prepares its own in place)."""
    return list(shapely.from_wkb(shapely.to_wkb(np.array(geoms, dtype=object))))


# ------------------------------------------------------------------------------------------ postgis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack(command: str, env: dict[str, str], *extra: str) -> None:
    subprocess.run(["bash", str(REPO / "deploy/stack.sh"), command, *extra], env=env, check=True, capture_output=True)


_DROP = "DROP TABLE IF EXISTS bench_fence, bench_point, bench_fence_wkb, bench_point_xy"


async def postgis(dsn: str, fences: Sequence[Fence], x: FloatArray, y: FloatArray, repeats: int) -> dict[str, Any]:
    """Both PostGIS plans on the same fences and points, pair sets returned for the comparison."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        have = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'")
        if not have:
            return {"skipped": "the postgis extension is not enabled in this database"}
        # ordinary tables, not temporary ones: PostgreSQL never scans a temporary table in parallel
        await conn.execute(_DROP)
        await conn.execute(
            "CREATE TABLE bench_fence_wkb (id int, wkb bytea);"
            "CREATE TABLE bench_point_xy (id int, lon float8, lat float8);"
        )
        await conn.copy_records_to_table(
            "bench_fence_wkb", records=[(i, shapely.to_wkb(f.geometry)) for i, f in enumerate(fences)]
        )
        await conn.copy_records_to_table(
            "bench_point_xy", records=list(zip(range(len(x)), x.tolist(), y.tolist(), strict=True))
        )
        await conn.execute(
            "CREATE TABLE bench_fence AS SELECT id, ST_SetSRID(ST_GeomFromWKB(wkb), 4326) AS geom"
            " FROM bench_fence_wkb;"
            "ALTER TABLE bench_fence ADD PRIMARY KEY (id);"
            "CREATE INDEX bench_fence_gist ON bench_fence USING gist (geom);"
            "CREATE TABLE bench_point AS SELECT id, ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS geom"
            " FROM bench_point_xy;"
            "ALTER TABLE bench_point ADD PRIMARY KEY (id);"
            "ANALYZE bench_fence; ANALYZE bench_point"
        )
        query = "SELECT p.id, f.id FROM bench_point p JOIN bench_fence f ON ST_Contains(f.geom, p.geom)"
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query))
        runs, rows = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = await conn.fetch(query)
            runs.append(time.perf_counter() - t0)
        point_driven = {(int(r[0]), int(r[1])) for r in rows}
        t0 = time.perf_counter()
        await conn.execute("CREATE INDEX bench_point_gist ON bench_point USING gist (geom); ANALYZE bench_point")
        index_s = time.perf_counter() - t0
        lateral = (
            "SELECT p.id, f.id FROM bench_fence f JOIN LATERAL"
            " (SELECT id FROM bench_point p WHERE ST_Contains(f.geom, p.geom) OFFSET 0) p ON true"
        )
        lateral_plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + lateral))
        lruns = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = await conn.fetch(lateral)
            lruns.append(time.perf_counter() - t0)
        fence_driven = {(int(r[0]), int(r[1])) for r in rows}
        settings = {
            k: await conn.fetchval(f"SHOW {k}")
            for k in ("jit", "max_parallel_workers_per_gather", "shared_buffers", "work_mem")
        }
        version = await conn.fetchval("SELECT version()")
        postgis_version = await conn.fetchval("SELECT postgis_full_version()")
    finally:
        try:
            await conn.execute(_DROP)
        finally:
            await conn.close()
    n = len(x)
    med = statistics.median(lruns)
    return {
        "postgis": rate(n, runs, cpu=False, plan=plan, pairs=len(point_driven), _pairs=point_driven),
        "postgis_points_indexed": rate(
            n,
            lruns,
            cpu=False,
            plan=lateral_plan,
            pairs=len(fence_driven),
            points_gist_build_s=round(index_s, 3),
            points_per_s_with_index_build=round(n / (med + index_s)),
            _pairs=fence_driven,
        ),
        "server": {"version": version, "postgis": postgis_version, "settings": settings},
    }


async def postgis_throwaway(fences: Sequence[Fence], x: FloatArray, y: FloatArray, repeats: int) -> dict[str, Any]:
    stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-throughput-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres user must reach it when run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(free_port()), TRACKER_PG_PORT=str(free_port()))
    await asyncio.to_thread(stack, "infra", env)
    try:
        # the schema owner's DSN: the service's own role may not create tables in the schema (least privilege),
        # and the benchmark's tables are scratch tables of a throwaway database
        text = (stack_dir / "owner.env").read_text()
        secrets = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return await postgis(secrets["TRACKER_DB_OWNER_DSN"], fences, x, y, repeats)
    finally:
        await asyncio.to_thread(stack, "destroy", env, "--yes")
        shutil.rmtree(stack_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------- geofence


def geofence(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    fences, x, y, world = make_world(args.fences, args.points, args.seed)
    n = len(x)
    build0 = time.perf_counter()
    index = FenceIndex(fences, hysteresis_m=25.0, entry_margin_m=10.0)
    build_s = time.perf_counter() - build0
    prev = previous_memberships(index, x, y, args.seed)
    print(f"world: {len(fences)} fences, {n} points ({time.perf_counter() - t0:.1f} s); index {build_s:.2f} s")
    methods: dict[str, dict[str, Any]] = {}

    runs, stage = timed(lambda: index.membership_batch(x, y, prev), args.repeats)
    methods["ours_batch"] = rate(n, runs, pairs=sum(len(s) for s in stage))
    runs, raw = timed(lambda: index.fences_at(x, y), args.repeats)
    ours_pairs = pairs_of(raw)
    methods["ours_batch_raw"] = rate(n, runs, pairs=len(ours_pairs))
    changed = sum(1 for a, b in zip(raw, stage, strict=True) if a != b)
    world["hits_per_point"] = round(len(ours_pairs) / n, 3)
    world["points_where_hysteresis_changes_the_answer"] = changed
    print(
        f"ours batch {methods['ours_batch']['points_per_s']:,}/s, raw {methods['ours_batch_raw']['points_per_s']:,}/s"
    )

    m = min(n, args.per_point)
    xl, yl = x[:m].tolist(), y[:m].tolist()
    runs, one = timed(
        lambda: [index.membership(a, b, q) for a, b, q in zip(xl, yl, prev[:m], strict=True)], max(1, args.repeats // 2)
    )
    methods["ours_per_point"] = rate(m, runs, agrees_with_batch=one == stage[:m])

    geoms = np.array(fresh([f.geometry for f in fences]), dtype=object)
    ids = [f.id for f in fences]
    tree_geoms = np.array(fresh(list(geoms)), dtype=object)
    shapely.prepare(tree_geoms)
    tree = shapely.STRtree(tree_geoms)

    def tree_predicate() -> tuple[Any, Any]:
        pi, fi = tree.query(shapely.points(x, y), predicate="intersects")
        return pi, fi

    def tree_bbox() -> tuple[Any, Any]:
        pi, fi = tree.query(shapely.points(x, y))
        ok = shapely.intersects_xy(tree_geoms[fi], x[pi], y[pi])
        return pi[ok], fi[ok]

    for name, fn in (("strtree_predicate", tree_predicate), ("strtree_bbox_intersects_xy", tree_bbox)):
        runs, (pi, fi) = timed(fn, args.repeats)
        got = {(int(p), ids[int(f)]) for p, f in zip(pi.tolist(), fi.tolist(), strict=True)}
        methods[name] = rate(n, runs, pairs=len(got), agrees_with_ours=got == ours_pairs)
        print(f"{name} {methods[name]['points_per_s']:,}/s")

    k = min(n, args.naive_points)
    naive_geoms = list(geoms)

    def naive() -> list[frozenset[str]]:
        out = []
        for a, b in zip(x[:k].tolist(), y[:k].tolist(), strict=True):
            pt = shapely.Point(a, b)
            out.append(frozenset(ids[j] for j, g in enumerate(naive_geoms) if g.contains(pt)))
        return out

    runs, naive_sets = timed(naive, max(1, args.repeats // 2))
    methods["naive_loop"] = rate(
        k, runs, extrapolated_from_points=k, agrees_with_ours=naive_sets == raw[:k], fences_tested_per_point=len(fences)
    )
    print(f"naive {methods['naive_loop']['points_per_s']:,}/s")

    import geopandas as gpd

    fences_gdf = gpd.GeoDataFrame({"fence": ids}, geometry=list(fresh(list(geoms))), crs="EPSG:4326")

    def sjoin() -> Any:
        pts = gpd.GeoDataFrame({"point": np.arange(n)}, geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")
        return gpd.sjoin(pts, fences_gdf, predicate="intersects", how="inner")

    runs, joined = timed(sjoin, args.repeats)
    got = set(zip(joined["point"].tolist(), joined["fence"].tolist(), strict=True))
    methods["geopandas_sjoin"] = rate(n, runs, pairs=len(got), agrees_with_ours=got == ours_pairs)
    print(f"sjoin {methods['geopandas_sjoin']['points_per_s']:,}/s")

    server: dict[str, Any] | None = None
    if args.no_postgis:
        methods["postgis"] = {"skipped": "--no-postgis"}
    else:
        pg_repeats = max(1, args.postgis_repeats)
        if args.dsn:
            res = asyncio.run(postgis(args.dsn, fences, x, y, pg_repeats))
        else:
            res = asyncio.run(postgis_throwaway(fences, x, y, pg_repeats))
        if "skipped" in res:
            methods["postgis"] = res
        else:
            server = res.pop("server")
            by_id = {f: i for i, f in enumerate(ids)}
            ours_ix = {(p, by_id[f]) for p, f in ours_pairs}
            for name, r in res.items():
                pg_pairs = r.pop("_pairs")
                # ST_Contains leaves out points exactly on a fence's edge; on random points there are none
                r["agrees_with_ours"] = pg_pairs == ours_ix
                methods[name] = r
                print(f"{name} {r['points_per_s']:,}/s")

    ours = methods["ours_batch"]["points_per_s"]

    def ratio(name: str) -> float | None:
        other = methods.get(name, {}).get("points_per_s")
        return round(ours / other, 1) if other else None

    pg_best = max(
        (
            methods[k]["points_per_s"]
            for k in ("postgis", "postgis_points_indexed")
            if "points_per_s" in methods.get(k, {})
        ),
        default=None,
    )
    out: dict[str, Any] = {
        "benchmark": "geofence membership throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join(["python", "bench/throughput.py", *sys.argv[1:]]),
        "statistic": f"median wall-clock of {args.repeats} repeats (PostGIS {args.postgis_repeats}); "
        "points/s = points / median; cpu_points_per_s from this process's CPU time (not for PostGIS)",
        "machine": machine(load_start),
        "world": world,
        "index": {
            "build_s": round(build_s, 3),
            "cell_deg": DEFAULT_CELL_DEG,
            "hysteresis_m": 25.0,
            "entry_margin_m": 10.0,
            "grid_entries": len(index.grid),
            "grid_cells": index.grid.cells,
            "fences_outside_grid": index.grid.direct,
        },
        "methods": methods,
        "geofence_points_per_s": ours,
        "geofence_ratio_vs_naive": ratio("naive_loop"),
        "geofence_ratio_vs_postgis": ratio("postgis"),
        "geofence_ratio_vs_postgis_points_indexed": ratio("postgis_points_indexed"),
        "geofence_ratio_vs_postgis_best": round(ours / pg_best, 1) if pg_best else None,
        "geofence_ratio_vs_sjoin": ratio("geopandas_sjoin"),
        "targets": {
            "points_per_s": TARGET_POINTS_PER_S,
            "vs_naive": TARGET_VS_NAIVE,
            "vs_postgis": TARGET_VS_POSTGIS,
        },
    }
    if server is not None:
        out["postgis_server"] = server
    out["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    vs_pg = out["geofence_ratio_vs_postgis"]
    out["targets_met"] = {
        "points_per_s": ours >= TARGET_POINTS_PER_S,
        "vs_naive": (out["geofence_ratio_vs_naive"] or 0) >= TARGET_VS_NAIVE,
        "vs_postgis": None if vs_pg is None else vs_pg >= TARGET_VS_POSTGIS,
    }
    return out


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import geopandas

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "shapely": shapely.__version__,
        "geos": ".".join(str(v) for v in shapely.geos_version),
        "geopandas": geopandas.__version__,
        "loadavg_start": [round(v, 2) for v in load_start],
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    )
    return f"{commit}+dirty" if commit and dirty.stdout.strip() else commit or None


def plot(res: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'port-tracker[bench]'): plot skipped"
    labels = {
        "ours_batch": "ours, batch\n(hysteresis)",
        "ours_batch_raw": "ours, batch\n(raw)",
        "ours_per_point": "ours,\nper point",
        "strtree_bbox_intersects_xy": "STRtree bbox\n+ intersects_xy",
        "strtree_predicate": "STRtree\npredicate",
        "geopandas_sjoin": "geopandas\nsjoin",
        "postgis_points_indexed": "PostGIS, GiST\non both tables",
        "postgis": "PostGIS, GiST\non fences",
        "naive_loop": "naive\ncontains loop",
    }
    rows = [(labels[k], v["points_per_s"]) for k, v in res["methods"].items() if "points_per_s" in v and k in labels]
    fig, ax = plt.subplots(figsize=(11, 5))
    colours = ["#1f77b4" if lab.startswith("ours") else "#999999" for lab, _ in rows]
    bars = ax.bar([r[0] for r in rows], [r[1] for r in rows], color=colours)
    ax.set_yscale("log")
    ax.set_ylabel("points per second (log scale)")
    w = res["world"]
    ax.set_title(
        f"Fence membership, {w['fences']:,} fences, {w['points']:,} points "
        f"(median of repeats, {res['date'][:10]}, {res['commit'] or ''})"
    )
    for bar, (_, v) in zip(bars, rows, strict=True):
        ax.annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def plot_hotpath(data: dict[str, Any], path: Path) -> str:
    """One figure of the hot path's stages that have run: core, end to end, broker only, drain (pings/s)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'port-tracker[bench]'): plot skipped"
    rows: list[tuple[str, float, str]] = []
    core = data.get("core", {})
    if "core_pings_per_s" in core:
        rows.append(("core in process\n(simulator traffic)", core["core_pings_per_s"], "#1f77b4"))
        rows.append(("core target", core["target_pings_per_s"], "#cccccc"))
    e2e = data.get("e2e", {})
    if "e2e_pings_per_s" in e2e:
        rows.append(("service, MQTT\nto commit", e2e["e2e_pings_per_s"], "#1f77b4"))
        rows.append(("backlog drain", e2e["drain_pings_per_s"], "#1f77b4"))
        rows.append(("broker only\n(same generator)", e2e["broker_only_msgs_per_s"], "#999999"))
    if not rows:
        return "nothing to plot"
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("pings per second (log scale)")
    title = "Hot path throughput (shared 2-core machine)"
    if "p99_alert_latency_ms" in e2e:
        title += f"; alert p99 {e2e['p99_alert_latency_ms']} ms at {e2e['alert_latency']['background_rate_target']:g}/s"
    ax.set_title(title, fontsize=10)
    for bar, (_, v, _c) in zip(bars, rows, strict=True):
        ax.annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def merge(path: Path, key: str, value: dict[str, Any]) -> None:
    """Rewrite only ``key`` of the result file; other stages' results stay as they are."""
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="stage", required=True)
    g = sub.add_parser("geofence", help="fence membership: ours vs STRtree, naive loop, geopandas, PostGIS")
    g.add_argument("--fences", type=int, default=2000)
    g.add_argument("--points", type=int, default=200_000)
    g.add_argument("--repeats", type=int, default=7)
    g.add_argument("--postgis-repeats", type=int, default=3)
    g.add_argument("--per-point", type=int, default=20_000, help="subsample for the one-point API")
    g.add_argument("--naive-points", type=int, default=1_000, help="subsample for the naive loop")
    g.add_argument("--seed", type=int, default=SEED)
    g.add_argument("--dsn", default=None, help="use this PostgreSQL (with postgis) instead of a throwaway one")
    g.add_argument("--no-postgis", action="store_true")
    g.add_argument("--out", type=Path, default=RESULTS)
    g.add_argument("--plot", type=Path, default=PLOT)
    g.add_argument("--no-plot", action="store_true")
    c = sub.add_parser("core", help="the whole core in process on simulator traffic: pings/s, µs per ping")
    c.add_argument("--trucks", type=int, default=100)
    c.add_argument("--hours", type=float, default=2.0)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--runs", type=int, default=3, help="replays; the median is reported")
    c.add_argument("--profile", action="store_true", help="one more replay under cProfile: share per stage")
    c.add_argument("--out", type=Path, default=RESULTS)
    s = sub.add_parser("state", help="DeviceState size, serialized and in memory, per device")
    s.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000])
    s.add_argument("--fixes", type=int, default=3, help="fixes replayed per synthetic device")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--sim-trucks", type=int, default=100, help="also size the states after a simulator replay (0: no)")
    s.add_argument("--sim-hours", type=float, default=2.0)
    s.add_argument("--out", type=Path, default=RESULTS)
    e = sub.add_parser("e2e", help="MQTT publish to database commit against a real service process")
    e2e_args(e)
    h = sub.add_parser("history", help="30-day history of one container (< 200 ms target) and storage insert rows/s")
    history_args(h)
    h.add_argument("--out", type=Path, default=RESULTS)
    for q in (c, s, e):
        q.add_argument("--plot", type=Path, default=PLOT_HOTPATH)
        q.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.stage == "geofence":
        res = geofence(args)
        merge(args.out, "geofence", res)
        print(f"wrote {args.out}")
        if not args.no_plot:
            print(plot(res, args.plot))
        print(
            f"geofence stage {res['geofence_points_per_s']:,} points/s; "
            f"x{res['geofence_ratio_vs_naive']} naive, x{res['geofence_ratio_vs_postgis']} PostGIS "
            f"(x{res['geofence_ratio_vs_postgis_best']} vs its faster plan), x{res['geofence_ratio_vs_sjoin']} sjoin"
        )
    elif args.stage == "history":
        res = run_stage(args)
        merge(args.out, "history", res)
        print(f"wrote {args.out}")
        print(
            f"history {res['history']['rows']:,} fixes in {res['history']['median_ms']} ms median"
            f" (primary key only: {res['history']['primary_key_only_median_ms']} ms,"
            f" fetch: {res['history']['fetch_records_median_ms']} ms);"
            f" insert path {res['insert']['rows_per_s']:,} rows/s,"
            f" COPY {res['insert']['copy_direct_rows_per_s']:,} rows/s"
        )
    elif args.stage in ("core", "state", "e2e"):
        res = run_stage(args)
        merge(args.out, args.stage, res)
        print(f"wrote {args.out}")
        if not args.no_plot:
            print(plot_hotpath(json.loads(args.out.read_text()), args.plot))
    return 0


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    """One of the hot path's stages, with the machine and its load before and after (a shared machine)."""
    load_start = os.getloadavg()
    began = time.perf_counter()
    if args.stage == "core":
        body = hotpath.core(args.trucks, args.hours, args.seed, args.runs, args.profile)
        print(
            f"core {body['core_pings_per_s']:,} pings/s, {body['us_per_ping']} µs per ping (median of {body['runs']})"
        )
    elif args.stage == "state":
        sim = hotpath.scenario_of(args.sim_trucks, args.sim_hours, args.seed)[0] if args.sim_trucks else None
        body = hotpath.state(args.devices, args.fixes, args.seed, sim)
    elif args.stage == "history":
        body = asyncio.run(history_run(args, stack))
    else:
        body = asyncio.run(e2e_run(args))
    out: dict[str, Any] = {
        "benchmark": f"hot path: {args.stage}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join(["python", "bench/throughput.py", *sys.argv[1:]]),
        "machine": machine(load_start),
        "took_s": 0.0,
        **body,
    }
    out["took_s"] = round(time.perf_counter() - began, 1)
    out["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["machine"]["shared"] = "2 cores shared with other work: figures are indicative, compare within one run"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
