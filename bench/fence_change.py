"""What putting a new fence-set version in force costs, on the Santos set (295 fences).

A ``PUT /v1/fences/{id}`` or a set upload validates the whole new set in the HTTP handler
(``load_fence_set``) and the single writer then rebuilds the index (``FenceIndex`` with the service's
hysteresis and entry margin) in a thread before swapping it in: ingest of the next batch waits for
that build. This measures both steps for the shipped set, the set with one circle added (a typical
``PUT``), and the set with 200 circles of 50-500 m added (a large upload), plus the circle polygon
construction itself. Median of ``--repeat`` runs each.

    python bench/fence_change.py [--repeat 5] [--out bench/results/fence_change.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geofences import FenceIndex, circle_polygon, load_fence_set, load_port

REPO = Path(__file__).resolve().parents[1]
HYSTERESIS_M = 25.0
ENTRY_MARGIN_M = 10.0


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _with_circles(doc: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    minx, miny, maxx, maxy = -46.40, -24.00, -46.28, -23.90
    extra = [
        {
            "type": "Feature",
            "properties": {"id": f"bench-circle-{i}", "kind": "restricted", "radius_m": rng.uniform(50, 500)},
            "geometry": {"type": "Point", "coordinates": [rng.uniform(minx, maxx), rng.uniform(miny, maxy)]},
        }
        for i in range(n)
    ]
    return {**doc, "features": [*doc["features"], *extra]}


def run(repeat: int) -> dict[str, Any]:
    base = load_port("santos").to_geojson()
    cases = {
        "santos": base,
        "santos+1 circle": _with_circles(base, 1, 1),
        "santos+200 circles": _with_circles(base, 200, 2),
    }
    out: dict[str, Any] = {}
    for name, doc in cases.items():
        fs = load_fence_set(doc)
        validate = _median_s(functools.partial(load_fence_set, doc), repeat)
        build = _median_s(
            functools.partial(FenceIndex, fs.fences, hysteresis_m=HYSTERESIS_M, entry_margin_m=ENTRY_MARGIN_M), repeat
        )
        out[name] = {
            "fences": len(fs.fences),
            "validate_s": round(validate, 4),
            "index_build_s": round(build, 4),
            "total_s": round(validate + build, 4),
        }
    circle = _median_s(lambda: [circle_polygon(-46.3, -23.95, r) for r in (50.0, 500.0, 5000.0, 50_000.0)], repeat)
    out["circle_polygon_4_radii_s"] = round(circle, 6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fence_change.json")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    result = {
        "commit": commit,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "hysteresis_m": HYSTERESIS_M,
        "entry_margin_m": ENTRY_MARGIN_M,
        "cases": run(args.repeat),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
