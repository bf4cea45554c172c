"""How much the grid index of ``World`` saves over scanning every device, at port scale.

Cross-device detectors ask "who is within 30 m of this fix" once per fix; with thousands of
devices in a port a full scan per fix would dominate the pipeline. This runner measures both
in the same process, on the same seeded devices and queries, so the ratio is meaningful even
on a noisy machine. Run: ``python bench/bench_world.py``; results go to bench/results/world.json.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from geofences import haversine_m, load_port
from tracker.core.model import DeviceKind
from tracker.core.world import Position, World

SEED = 20261123
SIZES = (1_000, 10_000)
QUERIES = 10_000
RADIUS_M = 30.0
REPEATS = 5
RESULTS = Path(__file__).resolve().parent / "results" / "world.json"
TS = datetime(2026, 11, 23, tzinfo=UTC)

Query = tuple[float, float]


def santos_bbox() -> tuple[float, float, float, float]:
    """The bounds of Santos' organized-port boundary, the area devices of that port move in."""
    fences = load_port("santos")
    boundary = next(f for f in fences if f.kind.value == "port_boundary")
    minx, miny, maxx, maxy = boundary.geometry.bounds
    return float(minx), float(miny), float(maxx), float(maxy)


def build(n: int, bbox: tuple[float, float, float, float], rng: random.Random) -> tuple[World, list[Position]]:
    world = World()
    positions = [
        Position(f"D{i:06d}", DeviceKind.TRUCK, TS, rng.uniform(bbox[0], bbox[2]), rng.uniform(bbox[1], bbox[3]))
        for i in range(n)
    ]
    for p in positions:
        world.update(p)
    return world, positions


def queries(positions: list[Position], rng: random.Random) -> list[Query]:
    """Half at a device (as when a device's own fix is evaluated), half anywhere near one."""
    out: list[Query] = []
    for i in range(QUERIES):
        p = rng.choice(positions)
        if i % 2:
            out.append((p.lon + rng.uniform(-0.0005, 0.0005), p.lat + rng.uniform(-0.0005, 0.0005)))
        else:
            out.append((p.lon, p.lat))
    return out


def brute_force(positions: list[Position], lon: float, lat: float, radius: float) -> list[tuple[float, Position]]:
    out = [(d, p) for p in positions if (d := haversine_m(lon, lat, p.lon, p.lat)) <= radius]
    out.sort(key=lambda item: (item[0], item[1].device_id))
    return out


def per_query_us(run: Callable[[Query], object], qs: list[Query]) -> float:
    start = time.perf_counter_ns()
    for q in qs:
        run(q)
    return (time.perf_counter_ns() - start) / len(qs) / 1_000


def measure(n: int, bbox: tuple[float, float, float, float]) -> dict[str, object]:
    rng = random.Random(SEED + n)
    world, positions = build(n, bbox, rng)
    qs = queries(positions, rng)
    # the baseline is slow at 10,000 devices: it runs on a fixed subset of the queries
    brute_qs = qs[: max(200, QUERIES * 1_000 // n // 5)]
    for lon, lat in brute_qs[:200]:
        grid = [p.device_id for _, p in world.near(lon, lat, RADIUS_M)]
        assert grid == [p.device_id for _, p in brute_force(positions, lon, lat, RADIUS_M)], "grid != brute force"

    def grid_query(q: Query) -> object:
        return world.near(q[0], q[1], RADIUS_M)

    def brute_query(q: Query) -> object:
        return brute_force(positions, q[0], q[1], RADIUS_M)

    grid_runs = [per_query_us(grid_query, qs) for _ in range(REPEATS)]
    brute_runs = [per_query_us(brute_query, brute_qs) for _ in range(REPEATS)]
    grid_med = statistics.median(grid_runs)
    brute_med = statistics.median(brute_runs)
    hits = sum(len(world.near(lon, lat, RADIUS_M)) for lon, lat in qs) / len(qs)
    return {
        "devices": n,
        "queries": len(qs),
        "baseline_queries": len(brute_qs),
        "radius_m": RADIUS_M,
        "mean_hits_per_query": round(hits, 3),
        "grid_us_per_query_median": round(grid_med, 3),
        "grid_us_per_query_runs": [round(v, 3) for v in grid_runs],
        "brute_us_per_query_median": round(brute_med, 3),
        "brute_us_per_query_runs": [round(v, 3) for v in brute_runs],
        "speedup": round(brute_med / grid_med, 1),
    }


def main() -> None:
    bbox = santos_bbox()
    rows = [measure(n, bbox) for n in SIZES]
    report = {
        "benchmark": "World.near vs brute-force scan",
        "bbox": list(bbox),
        "cell_m": World().cell_m,
        "repeats": REPEATS,
        "statistic": "median of repeats, microseconds per query",
        "seed": SEED,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{'devices':>8} {'grid µs/q':>10} {'brute µs/q':>11} {'speed-up':>9} {'hits/q':>7}")
    for r in rows:
        print(
            f"{r['devices']:>8} {r['grid_us_per_query_median']:>10} {r['brute_us_per_query_median']:>11} "
            f"{r['speedup']:>8}x {r['mean_hits_per_query']:>7}"
        )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
